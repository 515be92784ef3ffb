"""Wiring: the python-telegram-bot Application, the store, the vendor
registry, the engine and the HTTP server, started and stopped in order."""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
from telegram import BotCommand, Update
from telegram.ext import Application, ApplicationBuilder

from bot.background import Background
from bot.config import Settings
from bot.engine import Engine
from bot.handlers import register_all
from bot.i18n import LANGUAGES, t
from bot.keyboards import CallbackCodec
from bot.polling import UpdatePoller
from bot.services import SERVICES_KEY, Services
from bot.telegram_http import AiohttpRequest
from bot.telegram_limits import TelegramRateLimiter
from bot.web import WebServer, build_web_app
from providers.base import DEFAULT_TIMEOUT
from providers.registry import Registry
from storage import Store

log = logging.getLogger(__name__)

MENU_COMMANDS = (
    "imagine", "edit", "upscale", "faceswap", "anime", "removebg", "describe", "blend",
    "tasks", "task", "cancel", "settings", "providers", "help",
)
LONG_POLL_SECONDS = 10
SEEN_UPDATES = 2048  # webhook redeliveries are recognised by update_id
BACKGROUND_STOP_SECONDS = 10.0  # for status messages still queued when asked to stop


def webhook_secret(settings: Settings) -> str:
    """Derived from the bot token, so no extra setting is needed and it
    changes when the token does."""
    return hmac.new(settings.token.encode(), b"drawbridge-webhook", hashlib.sha256).hexdigest()


def build_application(settings: Settings) -> Application:  # type: ignore[type-arg]
    builder = (
        ApplicationBuilder()
        .token(settings.token)
        .base_url(f"{settings.telegram_api_url}/bot")
        .base_file_url(f"{settings.telegram_api_url}/file/bot")
        .rate_limiter(TelegramRateLimiter(max_retries=3))
        .concurrent_updates(True)
        .request(AiohttpRequest(connect_timeout=5, read_timeout=15, media_write_timeout=30))
        # PTB adds the long poll's own timeout to this read timeout.
        .get_updates_request(AiohttpRequest(connection_pool_size=2, connect_timeout=5, read_timeout=10))
    )
    # Our own UpdatePoller replaces PTB's Updater (see bot/polling.py).
    application = builder.updater(None).build()
    register_all(application)
    return application


class Drawbridge:
    """The running bot. ``start`` brings everything up; ``stop`` takes it
    down in reverse order. Used by ``python -m bot`` and by in-process tests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.application = build_application(settings)
        self.store: Store | None = None
        self.http: httpx.AsyncClient | None = None
        self.engine: Engine | None = None
        self.web: WebServer | None = None
        self.poller: UpdatePoller | None = None
        self._seen_updates: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.background = Background()

    async def start(self) -> None:
        settings = self.settings
        self.store = await Store.open(settings.sqlite_path)
        self.http = httpx.AsyncClient(timeout=DEFAULT_TIMEOUT, follow_redirects=False)
        registry = Registry.from_settings(settings, self.http)
        codec = CallbackCodec(settings.token.encode())
        bot = self.application.bot
        self.engine = Engine(
            self.store, registry, bot, codec, self.http,
            public_base_url=settings.public_base_url, allow_private_urls=settings.allow_private_urls,
            admin_ids=settings.admin_user_ids,
        )
        self.application.bot_data[SERVICES_KEY] = Services(
            settings, self.store, registry, self.engine, codec, self.http, self.background.spawn
        )

        await self.application.initialize()  # getMe: fails fast on a bad token
        await self._set_commands()
        webhook_path = None
        if settings.telegram_webhook_url:
            webhook_path = urlsplit(settings.telegram_webhook_url).path or "/"
        self.web = WebServer(
            build_web_app(
                self.store, self.engine, bot,
                webhook_path=webhook_path, webhook_secret=webhook_secret(settings), on_update=self._on_webhook_update,
            ),
            settings.http_host,
            settings.http_port,
        )
        await self.web.start()
        await self.engine.start()
        await self.application.start()
        if settings.telegram_webhook_url:
            await bot.set_webhook(
                settings.telegram_webhook_url, secret_token=webhook_secret(settings), allowed_updates=Update.ALL_TYPES
            )
        else:
            await bot.delete_webhook()
            self.poller = UpdatePoller(self.application, LONG_POLL_SECONDS)
            self.poller.start()
        log.info(
            "Drawbridge is running as @%s with vendors: %s",
            bot.username, ", ".join(registry.providers),
        )

    async def stop(self) -> None:
        if self.poller is not None:
            await self.poller.stop()
        if self.application.running:
            await self.application.stop()
        if self.engine is not None:
            await self.engine.stop()
        if self.web is not None:
            await self.web.stop()
        # No update comes in any more (polling or webhook): what handlers
        # left running still needs the bot and the store.
        await self.background.drain(BACKGROUND_STOP_SECONDS)
        await self.application.shutdown()
        if self.http is not None:
            await self.http.aclose()
        if self.store is not None:
            await self.store.close()

    async def _on_webhook_update(self, data: dict[str, Any]) -> None:
        update_id = data.get("update_id")
        if not isinstance(update_id, int) or update_id in self._seen_updates:
            return
        self._seen_updates[update_id] = None
        while len(self._seen_updates) > SEEN_UPDATES:
            self._seen_updates.popitem(last=False)
        # Handled before we answer 200: Telegram resends if we die first.
        await self.application.process_update(Update.de_json(data, self.application.bot))

    async def _set_commands(self) -> None:
        bot = self.application.bot
        for language in LANGUAGES:
            commands = [BotCommand(name, t(language, f"cmd_{name}")) for name in MENU_COMMANDS]
            await bot.set_my_commands(commands, language_code=None if language == "en" else language)
