"""The task engine: dispatcher, poller and delivery loops over the tasks
table, plus the entry point for vendor callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
from telegram import Bot

from bot.engine.delivery import Delivery
from bot.engine.dispatcher import Dispatcher
from bot.engine.outcomes import Outcomes
from bot.engine.poller import Poller
from bot.engine.progress import StatusReporter
from bot.engine.ratelimit import VendorGate
from bot.keyboards import CallbackCodec
from providers.base import Provider
from providers.errors import ProviderError
from providers.registry import Registry
from providers.types import InputImage
from storage import Store
from storage.models import Task

log = logging.getLogger(__name__)

MEDIA_TTL_SECONDS = 3600.0


class CallbackRejected(Exception):
    """A vendor callback we will not act on; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Engine:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        bot: Bot,
        codec: CallbackCodec,
        http: httpx.AsyncClient,
        *,
        public_base_url: str,
        allow_private_urls: bool,
    ) -> None:
        self.store = store
        self.registry = registry
        self.bot = bot
        self.public_base_url = public_base_url
        self.reporter = StatusReporter(bot)
        gate = VendorGate()
        self.outcomes = Outcomes(store.tasks, registry, self.reporter, wake_delivery=self._wake_delivery)
        self.dispatcher = Dispatcher(
            store.tasks, registry, self.outcomes, gate, self._resolve_inputs, self._callback_url,
            wake_poller=self._wake_poller,
        )
        self.poller = Poller(store.tasks, registry, self.outcomes, gate)
        self.delivery = Delivery(store.tasks, self.outcomes, bot, codec, http, allow_private_urls)
        self._runners: list[asyncio.Task[None]] = []

    def _wake_poller(self) -> None:
        self.poller.wake()

    def _wake_delivery(self) -> None:
        self.delivery.wake()

    def wake_dispatcher(self) -> None:
        self.dispatcher.wake()

    async def start(self) -> None:
        self._runners = [
            asyncio.create_task(stage.run(), name=stage.name)
            for stage in (self.dispatcher, self.poller, self.delivery)
        ]

    async def stop(self) -> None:
        for runner in self._runners:
            runner.cancel()
        for runner in self._runners:
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._runners = []

    def _callback_url(self, task: Task, provider: Provider) -> str | None:
        if not (provider.supports_callbacks and self.public_base_url and task.callback_token):
            return None
        return f"{self.public_base_url}/callbacks/{provider.id}/{task.callback_token}"

    async def _resolve_inputs(self, task: Task, provider: Provider) -> tuple[InputImage, ...]:
        """Input images as bytes, plus an expiring /media link when vendors
        can reach us. The Telegram file URL itself is never handed out."""
        images = []
        for item in task.inputs:
            telegram_file = await self.bot.get_file(item["file_id"])
            data = bytes(await telegram_file.download_as_bytearray())
            url = None
            if self.public_base_url:
                media = await self.store.media.create(
                    item["file_id"], item.get("mime", "image/jpeg"), MEDIA_TTL_SECONDS, task.id
                )
                url = f"{self.public_base_url}/media/{media.token}"
            images.append(InputImage(data=data, mime=item.get("mime", "image/jpeg"), url=url))
        return tuple(images)

    async def on_callback(self, vendor_id: str, token: str, payload: Any) -> dict[str, Any]:
        """Apply a vendor callback. The per-task token authenticates it."""
        task = await self.store.tasks.by_callback_token(token)
        provider = self.registry.get(vendor_id)
        if task is None or provider is None or task.provider != vendor_id:
            raise CallbackRejected(404, "unknown callback")
        if not isinstance(payload, dict):
            raise CallbackRejected(400, "callback body is not a JSON object")
        try:
            job_id, state = provider.parse_callback(payload)
        except ProviderError as exc:
            raise CallbackRejected(400, f"unreadable callback: {exc.kind}") from None
        if task.status.final or task.status.value == "succeeded":
            return provider.callback_answer  # a repeat; already handled
        if job_id != task.provider_job_id:
            # Possibly faster than our own bookkeeping of the submit: ask the
            # vendor to try again (it retries on anything but success).
            raise CallbackRejected(409, "callback for a job not (yet) recorded")
        await self.outcomes.apply(task, provider, state, lease_token=None)
        return provider.callback_answer
