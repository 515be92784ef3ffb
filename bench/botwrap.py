"""Diagnostics only: run ``python -m bot`` with instruments that the bot does
not have. Never used for the headline figures.

BENCH_NO_LIMITER=1      the AIORateLimiter switched off, to tell the bot's own
                        latency apart from the queue in front of Telegram's
                        30 messages/s.
BENCH_SQL_STATS=<path>  every call aiosqlite runs on its worker thread,
                        counted and timed (seconds on that thread), per SQL
                        statement; written as JSON to <path> at exit.
BENCH_WHATIF=loop       a proposed fix to bot/engine/loop.py, tried without
                        touching the source (see _whatif_loop): the wake event
                        is cleared on every pass, a finished job sets it, and
                        the sleep waits on that one event only.
BENCH_WHATIF=db         a proposed change to storage/db.py (see _whatif_db):
                        each statement and its fetch run in ONE trip to the
                        aiosqlite thread instead of three (execute, fetch,
                        cursor close). Combine: BENCH_WHATIF=loop,db
BENCH_WHATIF=poll       a proposed change to bot/engine/timing.py (see
                        _whatif_poll): once the vendor reports progress 1.0
                        (generated, uploading) poll again after the minimum
                        delay instead of the geometric back-off.
BENCH_LOOP_STATS=<path> per engine stage: how often its scheduler loop went to
                        sleep, how often that sleep ended within 1 ms, and
                        how many lease_due calls it made; JSON at exit.
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
    from telegram.ext import AIORateLimiter

    import bot.app

    def unlimited(max_retries: int = 0) -> AIORateLimiter:
        return AIORateLimiter(overall_max_rate=0, group_max_rate=0, max_retries=max_retries)

    bot.app.AIORateLimiter = unlimited  # type: ignore[assignment]


def _sql_stats(path: str) -> None:
    from aiosqlite import core

    stats: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    lock = threading.Lock()
    original = core._connection_worker_thread

    def key(function: Any) -> str:
        func = getattr(function, "func", function)
        name = getattr(func, "__name__", repr(func))
        args = getattr(function, "args", ())
        if args and isinstance(args[0], str):
            return f"{name}: " + re.sub(r"\s+", " ", args[0]).strip()[:160]
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
    from bot.engine.loop import StageLoop

    stats: dict[str, dict[str, int]] = defaultdict(lambda: {"sleeps": 0, "woke_within_1ms": 0, "leases": 0})
    original_sleep = StageLoop._sleep

    async def sleep(self: StageLoop) -> None:
        began = time.perf_counter()
        await original_sleep(self)
        entry = stats[self.name]
        entry["sleeps"] += 1
        if time.perf_counter() - began < 0.001:
            entry["woke_within_1ms"] += 1

    StageLoop._sleep = sleep  # type: ignore[method-assign]

    import storage.tasks

    original_lease = storage.tasks.TaskRepository.lease_due

    async def lease_due(self: Any, statuses: Any, limit: int, lease_seconds: float) -> Any:
        stats["+".join(s.value for s in statuses)]["leases"] += 1
        return await original_lease(self, statuses, limit, lease_seconds)

    storage.tasks.TaskRepository.lease_due = lease_due  # type: ignore[method-assign]

    def dump() -> None:
        with open(path, "w") as out:
            json.dump(stats, out, indent=1)

    atexit.register(dump)


def _whatif_loop() -> None:
    """StageLoop.run/_sleep as proposed for bot/engine/loop.py. Today a
    wake() that arrives while a stage is at its concurrency limit is never
    cleared (clear() only runs when a slot is free), so _sleep returns at once
    and the loop spins, building an asyncio.wait over every in-flight job on
    each turn, until a job finishes."""
    import asyncio
    import contextlib
    import logging

    from bot.engine.loop import StageLoop

    log = logging.getLogger("bot.engine.loop")

    async def run(self: StageLoop, drain_seconds: float = 10.0) -> None:
        def finished(job: asyncio.Task[None]) -> None:
            self._inflight.discard(job)
            self._wake.set()  # a free slot is a reason to look again

        try:
            while not self._stopping:
                self._wake.clear()
                free = self.concurrency - len(self._inflight)
                if free > 0:
                    try:
                        leased = await self.tasks.lease_due(self.statuses, free, self.lease_seconds)
                    except Exception:
                        log.exception("%s: could not lease due tasks", self.name)
                        leased = []
                        await asyncio.sleep(1.0)
                    for task in leased:
                        job = asyncio.create_task(self._guarded(task), name=f"{self.name}-{task.id}")
                        self._inflight.add(job)
                        job.add_done_callback(finished)
                    if leased and len(leased) == free:
                        await asyncio.sleep(0)
                        continue
                await self._sleep()
            if self._inflight:
                await asyncio.wait(set(self._inflight), timeout=drain_seconds)
        finally:
            for job in list(self._inflight):
                job.cancel()
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _sleep(self: StageLoop) -> None:
        delay = self.idle_seconds
        if len(self._inflight) < self.concurrency:
            try:
                due = await self.tasks.next_due_at(self.statuses)
            except Exception:  # noqa: BLE001 - as in bot/engine/loop.py
                due = None
            if due is not None:
                delay = min(delay, max(0.0, due - time.time()))
        if delay <= 0 or self._wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)

    StageLoop.run = run  # type: ignore[method-assign]
    StageLoop._sleep = _sleep  # type: ignore[method-assign]


def _whatif_db() -> None:
    """Database.fetchone/fetchall/execute/insert as proposed: today each is
    ``async with conn.execute(...) as cur: await cur.fetch…()``, i.e. three
    queue hand-offs to the aiosqlite thread and three wake-ups of the event
    loop (execute, fetch, close); one function on that thread does it all."""
    from storage.db import Database

    async def _one_trip(self: Database, work: Any) -> Any:
        async with self.lock:
            return await self._conn._execute(work)

    async def fetchone(self: Database, sql: str, params: Any = ()) -> Any:
        conn = self._conn._conn

        def work() -> Any:
            cur = conn.execute(sql, params)
            try:
                return cur.fetchone()
            finally:
                cur.close()

        return await _one_trip(self, work)

    async def fetchall(self: Database, sql: str, params: Any = ()) -> Any:
        conn = self._conn._conn

        def work() -> Any:
            cur = conn.execute(sql, params)
            try:
                return cur.fetchall()
            finally:
                cur.close()

        return await _one_trip(self, work)

    async def execute(self: Database, sql: str, params: Any = ()) -> int:
        conn = self._conn._conn

        def work() -> int:
            cur = conn.execute(sql, params)
            try:
                return cur.rowcount
            finally:
                cur.close()

        return await _one_trip(self, work)

    async def insert(self: Database, sql: str, params: Any = ()) -> Any:
        conn = self._conn._conn

        def work() -> Any:
            cur = conn.execute(sql, params)
            try:
                return cur.lastrowid if cur.rowcount else None
            finally:
                cur.close()

        return await _one_trip(self, work)

    Database.fetchone = fetchone  # type: ignore[method-assign]
    Database.fetchall = fetchall  # type: ignore[method-assign]
    Database.execute = execute  # type: ignore[method-assign]
    Database.insert = insert  # type: ignore[method-assign]


def _whatif_poll() -> None:
    import bot.engine.outcomes
    from bot.engine import timing

    original = timing.next_poll_delay

    def next_poll_delay(polls: int, elapsed: float, progress: float | None, typical_seconds: float,
                        has_callback: bool) -> float:
        if not has_callback and progress is not None and progress >= 1.0:
            return timing.MIN_POLL_SECONDS
        return original(polls, elapsed, progress, typical_seconds, has_callback)

    timing.next_poll_delay = next_poll_delay
    bot.engine.outcomes.next_poll_delay = next_poll_delay  # imported by name there


def main() -> int:
    if os.environ.get("BENCH_NO_LIMITER") == "1":
        _limiter_off()
    if os.environ.get("BENCH_SQL_STATS"):
        _sql_stats(os.environ["BENCH_SQL_STATS"])
    whatif = set(os.environ.get("BENCH_WHATIF", "").split(","))
    if "loop" in whatif:
        _whatif_loop()
    if "db" in whatif:
        _whatif_db()
    if "poll" in whatif:
        _whatif_poll()
    if os.environ.get("BENCH_LOOP_STATS"):
        _loop_stats(os.environ["BENCH_LOOP_STATS"])
    from bot.__main__ import main as bot_main

    return bot_main(["bot"])


if __name__ == "__main__":
    sys.exit(main())
