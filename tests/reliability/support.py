"""Tools for the fault-injection tests: request timing, a gate that answers
chosen requests with a chosen HTTP error, a TCP forwarder that resets chosen
connections, a server that comes up late on a known port, hostile images,
and small waits on the task table."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import uvicorn
from PIL import Image

from bot.app import Drawbridge
from storage.models import Task
from tests.e2e.conftest import free_port, make_settings, running_bot
from tests.fakes.telegram import FakeTelegram

# --------------------------------------------------------------------------- #
# Running the bot
# --------------------------------------------------------------------------- #


@contextlib.asynccontextmanager
async def bot_with(
    tmp_path: Path, telegram: FakeTelegram, *, public: bool = True, **settings: Any
) -> AsyncIterator[Drawbridge]:
    """The real bot on its own port; with ``public`` its HTTP server is the
    PUBLIC_BASE_URL, so vendors fetch /media links and send callbacks."""
    port = free_port()
    values: dict[str, Any] = {"http_port": port}
    if public:
        values["public_base_url"] = f"http://127.0.0.1:{port}"
    values.update(settings)
    async with running_bot(make_settings(tmp_path, telegram, **values)) as bot:
        yield bot


async def final_task(bot: Drawbridge, user_id: int, timeout: float = 15.0, count: int = 1) -> list[Task]:
    """The user's ``count`` newest tasks once all are final (delivered /
    failed / cancelled) and failures have been told (delivery moves a told
    failure's next_run_at far into the future)."""
    assert bot.store is not None
    deadline = time.monotonic() + timeout
    while True:
        tasks = await bot.store.tasks.recent(user_id, limit=50)
        done = len(tasks) >= count and all(
            t.status.final and (t.status.value != "failed" or t.next_run_at > 1e14) for t in tasks
        )
        if done:
            return tasks
        if time.monotonic() > deadline:
            raise AssertionError(f"tasks not final after {timeout} s: {[(t.id, t.status, t.error_kind) for t in tasks]}")
        await asyncio.sleep(0.05)


def texts(telegram: FakeTelegram, chat_id: int) -> list[str]:
    """Every text or caption the bot has in the chat now (edits applied)."""
    return [m.content for m in telegram.bot_messages(chat_id)]


# --------------------------------------------------------------------------- #
# Timing requests, and answering chosen ones with an error
# --------------------------------------------------------------------------- #


@dataclass
class Arrival:
    at: float  # time.monotonic()
    method: str
    path: str
    body: bytes = b""


class Arrivals(list[Arrival]):
    def at(self, path_part: str, marker: str | None = None) -> list[float]:
        """Arrival times of requests to ``path_part`` (whose body holds ``marker``)."""
        return [
            a.at for a in self
            if path_part in a.path and (marker is None or marker.encode() in a.body)
        ]


def timed(app: Any, arrivals: Arrivals) -> Any:
    """ASGI wrapper noting when each HTTP request arrives, and its body."""

    async def wrapper(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        arrival = Arrival(time.monotonic(), scope["method"], scope["path"])
        arrivals.append(arrival)

        async def recording_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                arrival.body += message.get("body", b"")
            return message

        await app(scope, recording_receive, send)

    return wrapper


@dataclass
class _Canned:
    path_part: str
    status: int
    headers: dict[str, str]
    body: bytes
    times: int
    marker: bytes = b""


@dataclass
class Gate:
    """ASGI wrapper that answers the next matching requests itself (e.g. a
    429 with an exact Retry-After), before the fake behind it sees them."""

    app: Any
    canned: list[_Canned] = field(default_factory=list)
    answered: list[tuple[float, str]] = field(default_factory=list)

    def answer_next(
        self, path_part: str, status: int, headers: dict[str, str] | None = None, body: bytes = b"",
        times: int = 1, marker: str = "",
    ) -> None:
        """The next ``times`` requests to ``path_part`` (whose body holds
        ``marker``) get this answer instead of reaching the app."""
        self.canned.append(_Canned(path_part, status, headers or {}, body, times, marker.encode()))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not any(c.times > 0 and c.path_part in scope["path"] for c in self.canned):
            await self.app(scope, receive, send)
            return
        body, replay = await _read_all(receive)
        for canned in self.canned:
            if canned.times > 0 and canned.path_part in scope["path"] and canned.marker in body:
                canned.times -= 1
                self.answered.append((time.monotonic(), scope["path"]))
                headers = [(k.lower().encode(), v.encode()) for k, v in canned.headers.items()]
                headers.append((b"content-length", str(len(canned.body)).encode()))
                await send({"type": "http.response.start", "status": canned.status, "headers": headers})
                await send({"type": "http.response.body", "body": canned.body})
                return
        await self.app(scope, replay, send)


async def _read_all(receive: Any) -> tuple[bytes, Any]:
    """The request body, and a ``receive`` that hands it out again."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


@contextlib.asynccontextmanager
async def serve_on(app: Any, port: int) -> AsyncIterator[str]:
    """Serve ``app`` on a given loopback port (tests.fakes.server.serve picks
    its own): lets a test point the bot at a port that is closed at first."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, timeout=5)
        sock.close()


# --------------------------------------------------------------------------- #
# Connection resets
# --------------------------------------------------------------------------- #


class ResetProxy:
    """A loopback HTTP/1.1 forwarder. Requests whose path contains a string
    given to ``reset_next`` are read in full and then answered with a TCP
    reset (SO_LINGER 0 + abort): the client sees the connection die without
    a response, as on a flaky network. Everything else is passed through to
    ``upstream`` (one upstream connection per request)."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._rules: list[list[Any]] = []  # [path part, times left, body marker]
        self.resets: list[tuple[float, str, bytes]] = []  # (when, path, body)
        self.forwarded: list[tuple[float, str]] = []
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.url = ""

    def reset_next(self, path_part: str, times: int = 1, marker: str = "") -> None:
        self._rules.append([path_part, times, marker.encode()])

    def _take(self, path: str, body: bytes) -> bool:
        for rule in self._rules:
            if rule[1] > 0 and rule[0] in path and rule[2] in body:
                rule[1] -= 1
                return True
        return False

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        body = await _read_body(reader, head)
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        path = request_line.split(" ")[1] if " " in request_line else ""
        if self._take(path, body):
            self.resets.append((time.monotonic(), path, body))
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        self.forwarded.append((time.monotonic(), path))
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        try:
            up_writer.write(_with_connection_close(head) + body)
            await up_writer.drain()
            response = await up_reader.read()  # the upstream closes after answering
        finally:
            up_writer.close()
        writer.write(response)
        await writer.drain()


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            chunks += size_line + data
            if size == 0:
                return chunks
    length = int(headers.get(b"content-length", b"0") or 0)
    return await reader.readexactly(length) if length else b""


def _with_connection_close(head: bytes) -> bytes:
    lines = [line for line in head.rstrip(b"\r\n").split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


# --------------------------------------------------------------------------- #
# Hostile images
# --------------------------------------------------------------------------- #


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def decompression_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid, tiny PNG that declares ``width``×``height`` (1-bit grey, all
    black): ~110 KB on disk, 900 megapixels once decoded. Written by hand,
    row by row, because Pillow would need the whole bitmap in memory to save
    it."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * 1000) for _ in range(height // 1000)]
    parts.append(compressor.compress(row * (height % 1000)))
    parts.append(compressor.flush())
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")


def corrupt_png() -> bytes:
    """The PNG signature and a plausible IHDR, then garbage."""
    header = struct.pack(">IIBBBBB", 320, 240, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + b"\x00\x00\x10\x00IDAT" + bytes(range(256)) * 16


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def oversized_document() -> bytes:
    """A real PNG padded past Telegram's 20 MB bot download limit (the fake
    reports file_size = the bytes it holds)."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue() + b"\x00" * (21 * 1024 * 1024)


def no_secrets_in(requests: list[Any], *secrets: str) -> list[str]:
    """Recorded vendor requests that carry a secret or a Telegram file URL."""
    bad = []
    for request in requests:
        text = repr(request) + repr(getattr(request, "raw", b""))
        if any(secret in text for secret in secrets if secret) or "/file/bot" in text:
            bad.append(text[:300])
    return bad


async def wait_task(bot: Drawbridge, user_id: int, predicate: Callable[[Task], bool], timeout: float = 5.0) -> Task:
    """The user's newest task once ``predicate`` holds for it."""
    assert bot.store is not None
    deadline = time.monotonic() + timeout
    while True:
        tasks = await bot.store.tasks.recent(user_id, limit=1)
        if tasks and predicate(tasks[0]):
            return tasks[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"task never got there: {[(t.id, t.status, t.attempts, t.error_kind) for t in tasks]}")
        await asyncio.sleep(0.02)
