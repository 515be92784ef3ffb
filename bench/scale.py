"""5. Scale: 10,000 pending tasks in the database (half queued, half running
at the vendor, all due an hour or two from now). The bot's RSS with them; the
cost of one scheduler tick (a stage's take_due: lease what is due and learn
when the rest comes due, through the bot's own TaskRepository) with 10 and with 10,000 pending; and, after the bot
is SIGKILLed with jobs at the vendor, the time from re-spawning it to the
first photo delivered."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.config import Config
from bench.harness import Rig, db_rows, paced, percentile
from bot.engine.delivery import Delivery
from bot.engine.dispatcher import Dispatcher
from bot.engine.poller import Poller
from storage import Store
from storage.models import NewTask

STAGES = (Dispatcher, Poller, Delivery)


async def build_database(path: Path, count: int) -> float:
    """``count`` pending tasks through the repository; returns seconds taken."""
    started = time.monotonic()
    store = await Store.open(path)
    try:
        now = time.time()
        for i in range(count):
            await store.tasks.create(NewTask(
                kind="txt2img", user_id=10_000_000 + i, chat_id=10_000_000 + i, chat_type="private",
                language="en", params={"prompt": f"pending task {i}"}, deadline_at=now + 4 * 3600,
                request_message_id=1,
            ))
        # Half stay queued, half are running at the vendor; all come due in 1-2 h.
        await store.db.execute(
            "UPDATE tasks SET next_run_at = ? + (id * 7919 % 3600) WHERE id % 2 = 0", (now + 3600,)
        )
        await store.db.execute(
            "UPDATE tasks SET status = 'running', provider = 'zhiqite', provider_job_id = 'sd:' || business_id,"
            " submitted_at = ?, progress = 0.3, next_run_at = ? + (id * 7919 % 3600) WHERE id % 2 = 1",
            (now, now + 3600),
        )
    finally:
        await store.close()
    return time.monotonic() - started


async def tick_costs(path: Path, rounds: int) -> dict[str, Any]:
    """Idle ticks (nothing due) per stage, and busy ticks (a full batch due)
    for the dispatcher and poller on a copy of the database."""
    store = await Store.open(path)
    idle: dict[str, list[float]] = {stage.name: [] for stage in STAGES}
    try:
        for _ in range(rounds):
            for stage in STAGES:
                began = time.perf_counter()
                leased, _ = await store.tasks.take_due(stage.statuses, stage.concurrency, stage.lease_seconds)
                idle[stage.name].append(time.perf_counter() - began)
                assert not leased, "nothing should be due in the scale database"
    finally:
        await store.close()

    busy: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tick-") as tmp:
        copy = Path(tmp) / "copy.db"
        with contextlib.closing(sqlite3.connect(path)) as src, contextlib.closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)
        store = await Store.open(copy)
        try:
            for stage in (Dispatcher, Poller):
                marks = ",".join("?" for _ in stage.statuses)
                times = busy.setdefault(stage.name, [])
                row = await store.db.fetchone(
                    f"SELECT COUNT(*) FROM tasks WHERE status IN ({marks})", [s.value for s in stage.statuses]
                )
                batch = min(stage.concurrency, row[0] if row else 0)
                for _ in range(max(10, rounds // 4)):
                    await store.db.execute(
                        f"UPDATE tasks SET next_run_at = ?, lease_token = NULL WHERE id IN ("
                        f" SELECT id FROM tasks WHERE status IN ({marks}) ORDER BY next_run_at DESC LIMIT ?)",
                        (time.time() - 1, *[s.value for s in stage.statuses], batch),
                    )
                    began = time.perf_counter()
                    leased, _ = await store.tasks.take_due(stage.statuses, stage.concurrency, stage.lease_seconds)
                    times.append(time.perf_counter() - began)
                    assert len(leased) == batch
                    # Put them back far ahead so the next round leases fresh rows.
                    await store.db.execute(
                        "UPDATE tasks SET next_run_at = ? + (id % 3600), lease_token = NULL WHERE lease_token IS NOT NULL",
                        (time.time() + 7200,),
                    )
        finally:
            await store.close()

    def stats(values: list[float]) -> dict[str, float]:
        ms = [v * 1000 for v in values]
        return {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "max_ms": max(ms)}

    result = {f"idle_{name}": stats(v) for name, v in idle.items()}
    result.update({f"busy_{name}": stats(v) for name, v in busy.items()})
    result["worst_p95_ms"] = max(v["p95_ms"] for v in result.values() if isinstance(v, dict))
    return result


async def bot_with_backlog(cfg: Config, database: Path) -> dict[str, Any]:
    async with Rig("scale", database=database, profile=cfg.profile) as rig:
        bot = await rig.start_bot("first")
        await asyncio.sleep(3.0)
        idle_rss = bot.rss()

        # Jobs at the vendor when the bot is killed.
        chats = [7_000_000 + i for i in range(5)]
        for chat in chats:
            rig.inject(chat, 3.0)
        marks = ",".join("?" for _ in chats)

        def at_vendor() -> list[tuple[Any, ...]]:
            return db_rows(database, f"SELECT status, next_run_at FROM tasks WHERE chat_id IN ({marks})", tuple(chats))

        def all_submitted() -> bool:
            found = at_vendor()
            return len(found) == len(chats) and all(status == "submitted" for status, _ in found)

        if not await rig.wait_until(all_submitted, 20):
            raise RuntimeError("the jobs did not reach the vendor")
        await bot.kill()
        killed_rss_peak = bot.peak_rss
        rows = at_vendor()
        if not all(status == "submitted" for status, _ in rows):
            raise RuntimeError(f"expected the jobs at the vendor when killed, found {rows}")
        # Restart once the vendor has the results and the bot's next poll of
        # them is due: the work is there to be done the moment it is up.
        due = max(next_run_at for _, next_run_at in rows)
        jobs = rig.vendor.sd_jobs()
        ready = max(rig.vendor.ready_at(j) for j in jobs)
        while time.time() < due + 0.05 or time.monotonic() < ready + 0.05:
            await asyncio.sleep(0.02)
        restarted = await rig.start_bot("restart")
        spawned = restarted.spawned_at
        ready_at = time.monotonic()
        await rig.wait_until(lambda: all(c in rig.tracker.results for c in chats), 30, step=0.005)
        firsts = sorted(rig.tracker.results[c] for c in chats if c in rig.tracker.results)
        photos = sum(1 for c in rig.tracker.calls if c.result_photo and c.chat in chats)

        # Then some work with the 10,000 still pending, for the RSS under load.
        more = [7_100_000 + i for i in range(cfg.scale_load_jobs)]
        await paced(len(more), 5.0, lambda i: rig.inject(more[i], 2.0))
        await rig.wait_until(lambda: all(c in rig.tracker.results for c in more), 60, step=0.05)
        await asyncio.sleep(0.5)
        return {
            "idle_rss_mb": idle_rss / 2**20,
            "peak_rss_mb": max(killed_rss_peak, restarted.peak_rss, restarted.rss()) / 2**20,
            "restart_to_ready_s": ready_at - spawned,
            "restart_to_first_delivery_s": (firsts[0] - spawned) if firsts else math.inf,
            "restart_to_all_delivered_s": (firsts[-1] - spawned) if len(firsts) == len(chats) else math.inf,
            "result_photos": photos,
            "jobs_killed_at_vendor": len(chats),
            "load_jobs_delivered": sum(1 for c in more if c in rig.tracker.results),
        }


async def run(cfg: Config) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        small, large = Path(tmp) / "ten.db", Path(tmp) / "many.db"
        await build_database(small, 10)
        build_seconds = await build_database(large, cfg.scale_tasks)
        ticks_small = await tick_costs(small, cfg.tick_rounds)
        ticks_large = await tick_costs(large, cfg.tick_rounds)
        pending = db_rows(large, "SELECT status, COUNT(*) FROM tasks GROUP BY status")
        bot = await bot_with_backlog(cfg, large)
        return {
            "pending_tasks": cfg.scale_tasks,
            "pending_by_status": dict(pending),
            "build_seconds": build_seconds,
            "tick_10": ticks_small,
            "tick_10000": ticks_large,
            "bot": bot,
        }
