"""The one websocket a bot process keeps to a ComfyUI (GET /ws?clientId=).

ComfyUI sends a prompt's events to the client id it was submitted with:

    status {status: {exec_info: {queue_remaining}}}     (to everyone) the queue moved
    execution_start {prompt_id}                          it started
    progress {value, max, prompt_id, node}               a sampler step
    executing {node: null, prompt_id}                    it ended (the history has it)
    binary: 4-byte event (1 = preview: 4-byte format, image;
            4 = preview with metadata: 4-byte length, JSON with prompt_id, image)

From these the prompts this process submitted get their states told to the
engine's listener at once: queue places (one GET /queue for all when the
queue moves), progress and previews (at most one report a second each), and
the end (from the history). The socket reconnects with back-off; after a
gap, the followed prompts are looked up once, so no end is missed. Prompts
of an earlier process (another client id) are polled instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from providers.errors import JobNotFound, ProviderError
from providers.inprocess import JobListener
from providers.types import JobState, JobStatus

log = logging.getLogger("providers")

REPORT_EVERY_SECONDS = 1.0  # progress and previews of one prompt, at most this often
CONNECT_WAIT_SECONDS = 2.0  # a submit waits this long for the socket, then goes without
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA = 1, 4
MAX_FOLLOWED = 10_000  # prompts whose end never came (a server wiped): forgotten beyond this

# prompt ids → their states now (one GET /queue, the history for the ended).
States = Callable[[list[str]], Awaitable[Mapping[str, JobState | ProviderError]]]


@dataclass
class Followed:
    started: bool = False
    progress: float | None = None
    place: int | None = None
    latest: JobState | None = None  # waiting to be reported
    reported_at: float = 0.0
    reporter: asyncio.Task[None] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # cuts a progress pause short


class Events:
    def __init__(self, base_url: str, headers: Mapping[str, str], states: States) -> None:
        self.url = base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws"
        self.headers = dict(headers)
        self.states = states
        self.client_id = uuid.uuid4().hex  # one per process: its prompts' events come here
        self.listener: JobListener | None = None
        # Called when the socket drops: the engine polls this vendor's jobs now.
        self.on_lost: Callable[[], Awaitable[None]] | None = None
        self.connections = 0  # sockets opened (the bench counts them)
        self._followed: dict[str, Followed] = {}
        self._current: str | None = None  # the prompt running now, for previews without metadata
        self._connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queue_dirty = False
        self._queue_refresh: asyncio.Task[None] | None = None
        self._failures = 0  # connection attempts failed in a row

    # ---- what the adapter asks -------------------------------------------------

    def follows(self, prompt_id: str) -> bool:
        """Whether this socket is up and hears ``prompt_id``'s events."""
        return self._connected.is_set() and prompt_id in self._followed

    def follow(self, prompt_id: str) -> None:
        """From now on (a rerun under the same id starts afresh)."""
        if len(self._followed) >= MAX_FOLLOWED:
            self._followed.pop(next(iter(self._followed)))
        self._followed[prompt_id] = Followed()

    def unfollow(self, prompt_id: str) -> None:
        self._followed.pop(prompt_id, None)

    def running_state(self, prompt_id: str) -> JobState:
        followed = self._followed.get(prompt_id)
        return JobState(status=JobStatus.RUNNING, progress=followed.progress if followed else None)

    async def connect(self) -> None:
        """Start the socket (once per process) and give its first attempt a
        moment to open. After a failed attempt nobody waits: the jobs are
        polled until it is back (a proxy that refuses websockets)."""
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="comfyui-events")
        if self._failures == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), CONNECT_WAIT_SECONDS)

    async def aclose(self) -> None:
        tasks = [t for t in (self._runner, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- the socket ------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                if self._session is None:
                    self._session = aiohttp.ClientSession()
                async with self._session.ws_connect(
                    f"{self.url}?clientId={self.client_id}", headers=self.headers, heartbeat=20.0,
                    max_msg_size=64 * 1024 * 1024,
                ) as ws:
                    self.connections += 1
                    # Previews then carry their prompt's id.
                    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
                    self._connected.set()
                    if self._failures:
                        log.info("comfyui: websocket back after %d failed attempt(s)", self._failures)
                    self._failures = 0
                    self._spawn(self._catch_up())  # what ended while we were away
                    async for message in ws:
                        if message.type == aiohttp.WSMsgType.TEXT:
                            self._on_text(message.data)
                        elif message.type == aiohttp.WSMsgType.BINARY:
                            self._on_binary(message.data)
                        else:
                            break
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                if self._failures % 20 == 0:  # the first, then about every ten minutes
                    log.warning("comfyui: no websocket (%s, %d attempt(s)); polling meanwhile",
                                type(exc).__name__, self._failures + 1)
            except Exception:  # a bug in our reading must not end the socket for good
                log.exception("comfyui: websocket reader crashed; reconnecting")
            finally:
                if self._connected.is_set():
                    self._connected.clear()
                    if self._followed and self.on_lost is not None:
                        self._spawn(self.on_lost())  # what was pushed must be polled now
            await asyncio.sleep(RECONNECT_DELAYS[min(self._failures, len(RECONNECT_DELAYS) - 1)])
            self._failures += 1

    def _on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
            return
        event, data = message.get("type"), message["data"]
        prompt_id = data.get("prompt_id")
        if event == "status":
            self.queue_moved()
        elif event == "execution_start" and isinstance(prompt_id, str):
            self._current = prompt_id
            followed = self._followed.get(prompt_id)
            if followed is not None:
                followed.started = True
                self._offer(prompt_id, JobState(status=JobStatus.RUNNING))
        elif event == "executing" and isinstance(prompt_id, str):
            if data.get("node") is None:
                if self._current == prompt_id:
                    self._current = None
                if prompt_id in self._followed:
                    self._spawn(self._ended(prompt_id))
            else:
                self._current = prompt_id
        elif event == "progress" and isinstance(prompt_id, str):
            value, maximum = data.get("value"), data.get("max")
            followed = self._followed.get(prompt_id)
            if followed is not None and isinstance(value, int | float) and isinstance(maximum, int | float) and maximum > 0:
                followed.started = True
                followed.progress = max(0.0, min(1.0, value / maximum))
                pending = followed.latest
                preview = pending.preview if pending is not None and pending.status is JobStatus.RUNNING else None
                self._offer(prompt_id, JobState(status=JobStatus.RUNNING, progress=followed.progress, preview=preview))

    def _on_binary(self, frame: bytes) -> None:
        if len(frame) < 8:
            return
        event, word = struct.unpack(">II", frame[:8])
        prompt_id = self._current
        if event == PREVIEW_IMAGE:
            image = frame[8:]
        elif event == PREVIEW_IMAGE_WITH_METADATA:
            try:
                metadata = json.loads(frame[8:8 + word])
            except ValueError:
                return
            if isinstance(metadata, dict) and isinstance(metadata.get("prompt_id"), str):
                prompt_id = metadata["prompt_id"]
            image = frame[8 + word:]
        else:
            return
        followed = self._followed.get(prompt_id) if prompt_id else None
        if followed is None or not image or prompt_id is None:
            return
        self._offer(prompt_id, JobState(status=JobStatus.RUNNING, progress=followed.progress, preview=image))

    # ---- from events to states ---------------------------------------------------

    def queue_moved(self) -> None:  # also the adapter's, for a prompt it follows late
        """Queue places of our waiting prompts: one GET /queue, however many."""
        self._queue_dirty = True
        if self._queue_refresh is None or self._queue_refresh.done():
            self._queue_refresh = self._spawn(self._refresh_places())

    async def _refresh_places(self) -> None:
        while self._queue_dirty:
            self._queue_dirty = False
            waiting = [pid for pid, f in self._followed.items() if not f.started]
            if waiting:
                await self._look_up(waiting)

    async def _catch_up(self) -> None:
        if self._followed:
            await self._look_up(list(self._followed))

    async def _ended(self, prompt_id: str) -> None:
        await self._look_up([prompt_id])

    async def _look_up(self, prompt_ids: list[str]) -> None:
        try:
            states = await self.states(prompt_ids)
        except ProviderError as exc:  # the poller is the safety net
            log.info("comfyui: could not look up %d prompt(s): %s", len(prompt_ids), exc.kind)
            return
        for prompt_id, state in states.items():
            followed = self._followed.get(prompt_id)
            if followed is None:
                continue
            if isinstance(state, ProviderError):
                if isinstance(state, JobNotFound):
                    self.unfollow(prompt_id)  # lost at the server: the poller finds out and runs it again
                continue
            if state.status is JobStatus.QUEUED:
                if state.queue_position == followed.place:
                    continue
                followed.place = state.queue_position
            elif state.status is JobStatus.RUNNING:
                if followed.started:
                    continue  # the socket's own progress says more
                followed.started = True
            self._offer(prompt_id, state)

    def _offer(self, prompt_id: str, state: JobState) -> None:
        """Report ``state`` soon: the end at once; progress at most once a
        second (a newer state replaces one not reported yet)."""
        followed = self._followed.get(prompt_id)
        if followed is None or self.listener is None:
            return
        followed.latest = state
        if state.finished:
            followed.ended.set()
        if followed.reporter is None or followed.reporter.done():
            followed.reporter = self._spawn(self._report(prompt_id, followed))

    async def _report(self, prompt_id: str, followed: Followed) -> None:
        assert self.listener is not None
        while followed.latest is not None:
            wait = followed.reported_at + REPORT_EVERY_SECONDS - time.monotonic()
            if wait > 0 and not followed.latest.finished:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(followed.ended.wait(), wait)
                continue  # maybe replaced meanwhile (by the end: at once)
            state, followed.latest = followed.latest, None
            followed.reported_at = time.monotonic()
            if state.finished:
                self._followed.pop(prompt_id, None)  # the poller takes over if this report fails
            try:
                await self.listener(prompt_id, state)
            except Exception:
                log.exception("comfyui: could not report prompt %s", prompt_id[:16])
            if state.finished:
                return

    def _spawn(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
