"""Diagnostics only: run ``python -m bot`` with instruments that the bot does
not have. Never used for the headline figures.

BENCH_NO_LIMITER=1      the AIORateLimiter switched off, to tell the bot's own
                        latency apart from the queue in front of Telegram's
                        30 messages/s.
BENCH_HTTPX_TRANSPORT=1 Telegram over PTB's own httpx transport instead of
                        bot/telegram_http.py's aiohttp one (before/after).
BENCH_SQL_STATS=<path>  every call aiosqlite runs on its worker thread,
                        counted and timed (seconds on that thread), per SQL
                        statement; written as JSON to <path> at exit.
BENCH_LOOP_STATS=<path> per engine stage: how many scheduler ticks it ran
                        and how many tasks they leased; JSON at exit.

(The what-ifs this file once patched in, each statement in one database
trip, a loop that does not spin when full, and an immediate poll once a job
is uploading, are in the source now.)
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import threading
import time
from collections import defaultdict
from typing import Any


def _limiter_off() -> None:
    import bot.app
    from bot.telegram_limits import TelegramRateLimiter

    def unlimited(max_retries: int = 0) -> TelegramRateLimiter:
        return TelegramRateLimiter(overall_max_rate=0, group_max_rate=0, max_retries=max_retries)

    bot.app.TelegramRateLimiter = unlimited  # type: ignore[assignment,misc]


def _httpx_transport() -> None:
    from telegram.request import HTTPXRequest

    import bot.app

    def httpx_request(*, connection_pool_size: int = 256, read_timeout: float = 15.0, connect_timeout: float = 5.0,
                      media_write_timeout: float = 30.0) -> HTTPXRequest:
        return HTTPXRequest(connection_pool_size=connection_pool_size, read_timeout=read_timeout,
                            connect_timeout=connect_timeout, media_write_timeout=media_write_timeout)

    bot.app.AiohttpRequest = httpx_request  # type: ignore[assignment,misc]


def _sql_stats(path: str) -> None:
    from aiosqlite import core

    stats: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    lock = threading.Lock()
    original = core._connection_worker_thread

    def key(function: Any) -> str:
        func = getattr(function, "func", function)
        name = getattr(func, "__name__", repr(func))
        args = getattr(function, "args", ())
        # storage.db runs closures over the SQL text: name the call by it.
        texts = [*args, *(c.cell_contents for c in getattr(func, "__closure__", None) or ())]
        for text in texts:
            if isinstance(text, str) and re.match(r"\s*(SELECT|UPDATE|INSERT|DELETE|WITH)\b", text, re.IGNORECASE):
                return f"{name}: " + re.sub(r"\s+", " ", text).strip()[:160]
        return name

    def timed(function: Any) -> Any:
        def run() -> Any:
            began = time.perf_counter()
            try:
                return function()
            finally:
                spent = time.perf_counter() - began
                with lock:
                    entry = stats[key(function)]
                    entry[0] += 1
                    entry[1] += spent

        return run

    class TimingQueue:
        def __init__(self, queue: Any) -> None:
            self.queue = queue

        def get(self, *args: Any, **kwargs: Any) -> Any:
            future, function = self.queue.get(*args, **kwargs)
            return future, timed(function)

    def worker(tx: Any) -> None:
        original(TimingQueue(tx))

    core._connection_worker_thread = worker

    def dump() -> None:
        with lock:
            rows = sorted(((k, int(n), s) for k, (n, s) in stats.items()), key=lambda r: -r[2])
        with open(path, "w") as out:
            json.dump([{"call": k, "count": n, "seconds": s} for k, n, s in rows], out, indent=1)

    atexit.register(dump)


def _loop_stats(path: str) -> None:
    import storage.tasks

    stats: dict[str, dict[str, int]] = defaultdict(lambda: {"ticks": 0, "leased": 0})
    original = storage.tasks.TaskRepository.take_due

    async def take_due(self: Any, statuses: Any, limit: int, lease_seconds: float) -> Any:
        leased, next_due = await original(self, statuses, limit, lease_seconds)
        entry = stats["+".join(s.value for s in statuses)]
        entry["ticks"] += 1
        entry["leased"] += len(leased)
        return leased, next_due

    storage.tasks.TaskRepository.take_due = take_due  # type: ignore[method-assign]

    def dump() -> None:
        with open(path, "w") as out:
            json.dump(stats, out, indent=1)

    atexit.register(dump)


def main() -> int:
    if os.environ.get("BENCH_NO_LIMITER") == "1":
        _limiter_off()
    if os.environ.get("BENCH_HTTPX_TRANSPORT") == "1":
        _httpx_transport()
    if os.environ.get("BENCH_SQL_STATS"):
        _sql_stats(os.environ["BENCH_SQL_STATS"])
    if os.environ.get("BENCH_LOOP_STATS"):
        _loop_stats(os.environ["BENCH_LOOP_STATS"])
    from bot.__main__ import main as bot_main

    return bot_main(["bot"])


if __name__ == "__main__":
    sys.exit(main())
