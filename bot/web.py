"""The bot's own HTTP server: vendor callbacks, input images for vendors,
the Telegram webhook, and a health check."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from telegram import Bot
from telegram.error import TelegramError

from bot.engine import CallbackRejected, Engine
from storage import Store

log = logging.getLogger(__name__)

MAX_CALLBACK_BYTES = 2 * 1024 * 1024
MEDIA_CACHE_ITEMS = 32

UpdateSink = Callable[[dict[str, Any]], Awaitable[None]]


class _MediaCache:
    """Vendors may fetch an input image more than once; keep a few."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        if key in self.items:
            self.items.move_to_end(key)
        return self.items.get(key)

    def put(self, key: str, data: bytes) -> None:
        self.items[key] = data
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


def build_web_app(
    store: Store,
    engine: Engine,
    bot: Bot,
    *,
    webhook_path: str | None = None,
    webhook_secret: str | None = None,
    on_update: UpdateSink | None = None,
) -> Starlette:
    media_cache = _MediaCache(MEDIA_CACHE_ITEMS)

    async def healthz(request: Request) -> Response:
        try:
            await store.db.fetchone("SELECT 1")
        except Exception:
            return JSONResponse({"ok": False, "database": "unavailable"}, status_code=503)
        return JSONResponse({"ok": True})

    async def vendor_callback(request: Request) -> Response:
        vendor, token = request.path_params["vendor"], request.path_params["token"]
        body = await request.body()
        if len(body) > MAX_CALLBACK_BYTES:
            return JSONResponse({"error": "too large"}, status_code=413)
        try:
            payload = json.loads(body)
        except ValueError:
            return JSONResponse({"error": "not JSON"}, status_code=400)
        try:
            answer = await engine.on_callback(vendor, token, payload)
        except CallbackRejected as exc:
            log.info("callback for %s rejected: %s", vendor, exc)
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        return JSONResponse(answer)

    async def media(request: Request) -> Response:
        item = await store.media.valid(request.path_params["token"])
        if item is None:
            return Response(status_code=404)
        data = item.data or media_cache.get(item.file_id or "")
        if data is None and item.file_id is not None:
            try:
                telegram_file = await bot.get_file(item.file_id)
                data = bytes(await telegram_file.download_as_bytearray())
            except TelegramError as exc:
                log.warning("media %s: Telegram file unavailable: %s", item.token[:6], type(exc).__name__)
                return Response(status_code=502)
            media_cache.put(item.file_id, data)
        assert data is not None
        return Response(data, media_type=item.mime, headers={"Cache-Control": "private, max-age=300"})

    async def webhook(request: Request) -> Response:
        given = request.headers.get("x-telegram-bot-api-secret-token", "")
        if not webhook_secret or not hmac.compare_digest(given, webhook_secret):
            return Response(status_code=403)
        try:
            update = await request.json()
        except ValueError:
            return Response(status_code=400)
        if on_update is not None and isinstance(update, dict):
            await on_update(update)
        return Response(status_code=200)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/callbacks/{vendor}/{token}", vendor_callback, methods=["POST"]),
        Route("/media/{token}", media, methods=["GET"]),
    ]
    if webhook_path:
        routes.append(Route(webhook_path, webhook, methods=["POST"]))
    return Starlette(routes=routes)


class WebServer:
    """uvicorn inside our event loop, started and stopped with the bot."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self.host, self.requested_port = host, port
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=3
        )
        self.server = uvicorn.Server(config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # We bind the socket ourselves: uvicorn would sys.exit() on a taken port.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP explicitly, or asyncio leaves Nagle on (~40 ms per answer).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {self.host}:{self.requested_port} ({exc.strerror})") from None
        self._socket = sock
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        assert self._socket is not None
        return self._socket.getsockname()[1]

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, timeout=5)
        self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
