"""What every benchmark needs: the fakes served on loopback in this process,
the bot (or the echo bot) in a subprocess whose CPU and RSS psutil reads,
a tracker of what the bot sent to the fake Telegram, and paced injection.

Clocks: FakeTelegram's ``ApiCall.timestamp`` and FakeZhiqite's job times are
both ``time.monotonic()`` in this process (no clock offsets are used here),
so "vendor result ready" and "request reached Telegram" are comparable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Self

import psutil
from PIL import Image, ImageDraw

from bot.telegram_limits import is_message_method
from tests.fakes.server import serve
from tests.fakes.telegram import ApiCall, FakeTelegram
from tests.fakes.zhiqite import FakeJob, FakeZhiqite

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TOKEN = "123456789:AAE2eBenchTokenForDrawbridgeBot_abcdefg"
APP_CODE = "bench-app-code"

# Prompts carry the chat id and the job's length at the vendor, so the fake
# vendor can be told per job how long to take and results can be matched.
PROMPT_CHAT = re.compile(r"\bc(\d+)\b")
PROMPT_SECONDS = re.compile(r"\bvt(\d+(?:\.\d+)?)\b")

SEND_METHODS = frozenset({"sendMessage", "sendPhoto", "sendDocument", "sendMediaGroup"})
# What the user sees at once: the bot's first message, or its reaction on the
# request (the bot reacts 👀 when Telegram's message limit holds messages back).
ACK_METHODS = SEND_METHODS | {"setMessageReaction"}


def prompt(chat: int, vendor_seconds: float) -> str:
    return f"/imagine bench c{chat} vt{vendor_seconds:g}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks; inf values sort last."""
    if not values:
        return math.nan
    data = sorted(values)
    k = (len(data) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if data[hi] == math.inf:
        return math.inf if k > lo or data[lo] == math.inf else data[lo]
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


# --------------------------------------------------------------------------- #
# The vendor fake, with per-job durations
# --------------------------------------------------------------------------- #

_RENDERED: dict[tuple[int, int, int], bytes] = {}


def _cached_render(width: int, height: int, index: int) -> bytes:
    """One picture per size: rendering a fresh PNG per job would make the
    harness, not the bot, the busy process."""
    key = (width, height, index)
    if key not in _RENDERED:
        rng = random.Random(hash(key))
        img = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = rng.randrange(width), rng.randrange(height)
            draw.ellipse((x0, y0, x0 + width // 3, y0 + height // 3), fill=tuple(rng.randrange(256) for _ in range(3)))
        out = io.BytesIO()
        img.save(out, format="PNG", compress_level=1)
        _RENDERED[key] = out.getvalue()
    return _RENDERED[key]


class BenchZhiqite(FakeZhiqite):
    """FakeZhiqite whose jobs take as long as their prompt says (``vt30`` =
    30 s: 10 % queued, 85 % running, 5 % uploading), whose callbacks leave
    the moment the job is done (the parent checks every 5 ms per job), and
    which serves one cached picture per size."""

    def durations(self, job: FakeJob) -> tuple[float, float, float]:
        match = PROMPT_SECONDS.search(str(job.body.get("prompt", "")))
        if match is None:
            return self.queue_seconds, self.run_seconds, self.upload_seconds
        total = float(match.group(1))
        return 0.10 * total, 0.85 * total, 0.05 * total

    def ready_at(self, job: FakeJob) -> float:
        """When the result can be had (the fake's clock = time.monotonic())."""
        return job.created_at + sum(self.durations(job))

    def _phase(self, job: FakeJob) -> tuple[str, float]:
        if job.forced_done:
            return "done", 1.0
        queue, run, upload = self.durations(job)
        elapsed = self.now() - job.created_at
        if elapsed < queue:
            return "queued", 0.0
        elapsed -= queue
        if elapsed < run:
            return "running", min(0.99, elapsed / run) if run else 0.0
        if elapsed < run + upload:
            return "uploading", 1.0
        return "done", 1.0

    def _ensure_outputs(self, job: FakeJob) -> None:
        if job.kind == "sd" and not job.outputs:
            rng = random.Random(job.vendor_id)
            for index in range(job.count):
                name = f"sd-{job.vendor_id}-{index}.png"
                self.files[name] = (_cached_render(job.width, job.height, index), self.now())
                job.outputs.append(name)
                job.seeds.append(rng.randrange(2**31))
            return
        super()._ensure_outputs(job)

    async def _deliver(self, key: str) -> None:
        job = self.jobs[key]
        while not self._done(job):
            await asyncio.sleep(max(0.001, self.ready_at(job) - self.now()))
        await super()._deliver(key)

    def sd_jobs(self) -> list[FakeJob]:
        return [job for job in self.jobs.values() if job.kind == "sd"]

    def queries_by_job(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for request in self.requests:
            if request.path.endswith("queryTaskInfo") and isinstance(request.body, dict):
                counts[str(request.body.get("businessTaskId"))] += 1
        return counts


def job_chat(job: FakeJob) -> int | None:
    match = PROMPT_CHAT.search(str(job.body.get("prompt", "")))
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------- #
# What the bot sent to Telegram
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class Sent:
    at: float  # when the request reached the fake (monotonic)
    method: str
    chat: int | None
    ok: bool
    result_photo: bool  # a finished image (carries the result keyboard)


class CallTracker:
    """Reads FakeTelegram.requests as they complete (a long poll stays open
    for seconds, so completed calls are picked up out of order)."""

    def __init__(self, telegram: FakeTelegram) -> None:
        self.telegram = telegram
        self._cursor = 0
        self._open: list[ApiCall] = []
        self.calls: list[Sent] = []
        self.first_reply: dict[int, float] = {}  # chat → first message or reaction
        self.first_message: dict[int, float] = {}  # chat → first message
        self.results: dict[int, float] = {}
        self.result_order: list[tuple[float, int]] = []

    def scan(self) -> list[tuple[float, int]]:
        """Take up newly completed calls; returns new result photos (at, chat)."""
        requests = self.telegram.requests
        fresh = requests[self._cursor:]
        self._cursor = len(requests)
        still_open, new_results = [], []
        for call in self._open + fresh:
            if call.status == 0:
                still_open.append(call)
                continue
            chat = call.chat_id if isinstance(call.chat_id, int) else None
            # A result: a photo or file with its buttons, sent or edited into the
            # status message (a preview edit carries no buttons), or an album.
            result = (
                call.ok and call.method in ("sendPhoto", "sendDocument", "sendMediaGroup", "editMessageMedia")
                and ("reply_markup" in call.params or call.method == "sendMediaGroup")
            )
            self.calls.append(Sent(call.timestamp, call.method, chat, call.ok, result))
            if chat is None or not call.ok:
                continue
            if call.method in ACK_METHODS and chat not in self.first_reply:
                self.first_reply[chat] = call.timestamp
            if call.method in SEND_METHODS and chat not in self.first_message:
                self.first_message[chat] = call.timestamp
            if result and chat not in self.results:
                self.results[chat] = call.timestamp
                self.result_order.append((call.timestamp, chat))
                new_results.append((call.timestamp, chat))
        self._open = still_open
        return new_results

    def counts(self, start: float = -math.inf, end: float = math.inf) -> Counter[str]:
        return Counter(c.method for c in self.calls if start <= c.at < end and c.method != "getUpdates")

    def limited_calls(self, start: float = -math.inf, end: float = math.inf) -> int:
        """Calls to a chat (messages, and reactions, which are not metered)."""
        return sum(1 for c in self.calls if start <= c.at < end and c.chat is not None)

    def messages(self, start: float = -math.inf, end: float = math.inf) -> int:
        """Calls Telegram counts against its 30 messages/s (and the bot meters)."""
        return sum(1 for c in self.calls if start <= c.at < end and c.chat is not None and is_message_method(c.method))

    def errors(self) -> Counter[str]:
        return Counter(c.method for c in self.calls if not c.ok and c.method != "getUpdates")


# --------------------------------------------------------------------------- #
# Processes
# --------------------------------------------------------------------------- #


class Proc:
    """A subprocess we started, measured with psutil, stopped by its pid."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.argv, self.env, self.cwd, self.log_path = argv, env, cwd, log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: psutil.Process | None = None
        self.spawned_at = 0.0
        self.peak_rss = 0
        self._log: Any = None
        self._sampler: asyncio.Task[None] | None = None
        self.samples: list[tuple[float, float, int]] = []  # (monotonic, cpu seconds, rss)

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: ASYNC230, SIM115 - held for the process's life
        self.spawned_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, cwd=self.cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log, stderr=self._log,
        )
        self.ps = psutil.Process(self.proc.pid)
        self._sampler = asyncio.create_task(self._sample())

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def cpu(self) -> float:
        """User + system CPU seconds of the process (all its threads)."""
        assert self.ps is not None
        times = self.ps.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        assert self.ps is not None
        rss = self.ps.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    async def _sample(self) -> None:
        with contextlib.suppress(psutil.Error, asyncio.CancelledError):
            while self.alive:
                self.samples.append((time.monotonic(), self.cpu(), self.rss()))
                await asyncio.sleep(0.25)

    async def stop(self, timeout: float = 20.0, *, grace: float = 0.0, sig: int = signal.SIGTERM) -> int | None:
        """Wait ``grace`` seconds for it to end by itself, then ``sig``, then
        SIGKILL if it has not ended within ``timeout``."""
        if self.proc is None:
            return None
        if grace and self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), grace)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        await self._close()
        return self.proc.returncode

    async def kill(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        await self._close()

    async def _close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self._log is not None:
            self._log.close()
            self._log = None


def base_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if name in os.environ}
    env["PYTHONPATH"] = str(REPO)
    return env


# Set by ``python -m bench --diagnose``: every bot runs under bench.botwrap
# with these variables (instruments for investigating, not for the figures).
DIAGNOSE_ENV: dict[str, str] = {}


def bot_argv(profile: Path | None = None) -> list[str]:
    """``python -m bot``; under cProfile when asked (it writes on SIGTERM exit)."""
    if profile is not None:
        return [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "bot"]
    return [sys.executable, "-m", "bot"]


async def start_py_spy(pid: int, output: Path) -> Proc:
    """Sample the bot with py-spy (collapsed stacks, one line per stack) until
    it exits. Needs ``pip install py-spy`` and ptrace rights."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = [py_spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--threads", "--gil",
            "--nonblocking", "--output", str(output)]
    proc = Proc(argv, base_env(), RESULTS, output.with_suffix(".log"))
    await proc.start()
    return proc


# --------------------------------------------------------------------------- #
# A rig: fresh fakes + one bot
# --------------------------------------------------------------------------- #


class Rig:
    """Fresh FakeTelegram + BenchZhiqite on loopback, and the bot in a
    subprocess pointed at them (polling, or callbacks with PUBLIC_BASE_URL)."""

    def __init__(
        self,
        name: str,
        *,
        callbacks: bool = False,
        workdir: Path | None = None,
        database: Path | None = None,
        extra_env: dict[str, str] | None = None,
        argv: list[str] | None = None,
        profile: str = "",
    ) -> None:
        self.name = name
        self.callbacks = callbacks
        self.telegram = FakeTelegram(TOKEN)
        self.vendor = BenchZhiqite(app_code=APP_CODE, queue_seconds=0.2, run_seconds=1.5, upload_seconds=0.1)
        self.tracker = CallTracker(self.telegram)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir = workdir
        self.database = database
        self.extra_env = extra_env or {}
        self.argv = argv
        self.profile = profile
        self.profilers: list[Proc] = []
        self.bot: Proc | None = None
        self.injected: dict[int, float] = {}
        self._stack = contextlib.AsyncExitStack()
        self.telegram_url = self.vendor_url = ""
        self.http_port = 0

    async def __aenter__(self) -> Self:
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"bench-{self.name}-")
            self.workdir = Path(self._tmp.name)
        if self.database is None:
            self.database = self.workdir / "drawbridge.db"
        self.telegram_url = await self._stack.enter_async_context(self.telegram.serve())
        self.vendor_url = await self._stack.enter_async_context(serve(self.vendor.app))
        self.http_port = free_port()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.bot is not None:
            # A bot with a backlog in its rate limiter takes long to drain; the
            # figures are taken, so it gets 5 s unless a profile must be written.
            await self.bot.stop(timeout=30 if (self.profile or DIAGNOSE_ENV) else 5)
        for profiler in self.profilers:
            await profiler.stop(timeout=30, grace=15, sig=signal.SIGINT)
        self.telegram.close()
        await self._stack.aclose()
        await self.vendor.aclose()
        if self._tmp is not None:
            self._tmp.cleanup()

    def env(self) -> dict[str, str]:
        assert self.database is not None
        env = base_env()
        env.update(
            TELEGRAM_BOT_TOKEN=TOKEN,
            TELEGRAM_API_URL=self.telegram_url,
            DATABASE_URL=f"sqlite:///{self.database}",
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(self.http_port),
            ZHIQITE_APP_CODE=APP_CODE,
            ZHIQITE_BASE_URL=self.vendor_url,
            ALLOW_PRIVATE_URLS="true",
            LOG_LEVEL="INFO",
        )
        if self.callbacks:
            env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{self.http_port}"
        env.update(self.extra_env)
        return env

    async def start_bot(self, label: str = "", timeout: float = 30.0) -> Proc:
        """Start ``python -m bot`` and wait for its first getUpdates."""
        assert self.workdir is not None
        polls_before = sum(1 for c in self.telegram.requests if c.method == "getUpdates")
        tag = f"{self.name}{'-' + label if label else ''}"
        pstats = RESULTS / "profiles" / f"{tag}.pstats" if self.profile == "cprofile" else None
        (RESULTS / "profiles").mkdir(parents=True, exist_ok=True)
        argv = self.argv or bot_argv(pstats)
        env = self.env()
        if DIAGNOSE_ENV:
            argv = [sys.executable, "-m", "bench.botwrap"]
            env.update({k: v.replace("{tag}", tag) for k, v in DIAGNOSE_ENV.items()})
        self.bot = Proc(argv, env, self.workdir, RESULTS / "logs" / f"{tag}.log")
        await self.bot.start()
        if self.profile == "py-spy":
            self.profilers.append(await start_py_spy(self.bot.pid, RESULTS / "profiles" / f"{tag}.txt"))
        deadline = time.monotonic() + timeout
        while sum(1 for c in self.telegram.requests if c.method == "getUpdates") <= polls_before:
            if not self.bot.alive:
                raise RuntimeError(f"the bot exited during start-up; see {self.bot.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bot did not start within {timeout} s; see {self.bot.log_path}")
            await asyncio.sleep(0.005)
        return self.bot

    def inject(self, chat: int, vendor_seconds: float) -> float:
        """A user in private chat ``chat`` sends /imagine; returns when."""
        self.telegram.user_message(chat, chat, prompt(chat, vendor_seconds))
        at = time.monotonic()
        self.injected[chat] = at
        return at

    async def wait_until(self, done: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.tracker.scan()
            if done():
                return True
            if time.monotonic() > deadline:
                return False
            if self.bot is not None and not self.bot.alive:
                raise RuntimeError(f"the bot died; see {self.bot.log_path}")
            await asyncio.sleep(step)

    def lag_and_queries(self) -> list[dict[str, Any]]:
        """Per finished vendor job: its length, result-ready → sendPhoto lag,
        and how many times the bot queried the vendor about it."""
        queries = self.vendor.queries_by_job()
        rows = []
        for job in self.vendor.sd_jobs():
            chat = job_chat(job)
            if chat is None:
                continue
            sent = self.tracker.results.get(chat)
            rows.append({
                "chat": chat,
                "vendor_seconds": round(sum(self.vendor.durations(job)), 3),
                "lag": (sent - self.vendor.ready_at(job)) if sent is not None else math.inf,
                "queries": queries.get(job.vendor_id, 0),
                "callbacks": sum(1 for cb in self.vendor.callbacks if cb.job_id == f"sd:{job.vendor_id}"),
            })
        return rows


async def paced(count: int, rate: float, action: Callable[[int], None], *, stop: Callable[[], bool] = lambda: False) -> None:
    """Call ``action(i)`` ``count`` times at ``rate`` per second (catching up
    in bursts if this loop falls behind)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(count):
        if stop():
            return
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        action(i)


def db_rows(database: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the bot's database from outside (WAL: readers do not block it)."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as conn:
        return conn.execute(sql, params).fetchall()


class SelfCpu:
    """This process's (the harness's: fakes + load) CPU use over a window."""

    def __init__(self) -> None:
        self.ps = psutil.Process()
        self.start_cpu = self._cpu()
        self.start_wall = time.monotonic()

    def _cpu(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def cores(self) -> float:
        wall = time.monotonic() - self.start_wall
        return (self._cpu() - self.start_cpu) / wall if wall > 0 else 0.0


@contextlib.asynccontextmanager
async def rig(name: str, **kwargs: Any) -> AsyncIterator[Rig]:
    async with Rig(name, **kwargs) as r:
        yield r
