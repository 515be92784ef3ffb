"""1. Throughput at saturation, CPU per delivered job, and the same fake
Telegram driven through a bare python-telegram-bot echo bot as a yardstick."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from typing import Any

from bench.config import Config
from bench.harness import (
    RESULTS,
    TOKEN,
    CallTracker,
    Proc,
    Rig,
    SelfCpu,
    base_env,
    paced,
    percentile,
)
from tests.fakes.telegram import FakeTelegram


async def saturate(cfg: Config) -> dict[str, Any]:
    async with Rig("throughput", profile=cfg.profile) as rig:
        bot = await rig.start_bot()
        chats = itertools.count(200_000)

        def one() -> None:
            rig.inject(next(chats), cfg.tp_vendor_seconds)

        for _ in range(cfg.tp_inflight):
            one()
        began = time.monotonic()
        warm_end = began + cfg.tp_warmup
        end = warm_end + cfg.tp_window
        t0 = cpu0 = 0.0
        harness: SelfCpu | None = None
        while time.monotonic() < end:
            await asyncio.sleep(0.05)
            if not bot.alive:
                raise RuntimeError(f"the bot died; see {bot.log_path}")
            for _ in rig.tracker.scan():
                one()  # closed loop: a delivered job makes room for the next
            if harness is None and time.monotonic() >= warm_end:
                t0, cpu0, harness = time.monotonic(), bot.cpu(), SelfCpu()
        t1, cpu1 = time.monotonic(), bot.cpu()
        rig.tracker.scan()
        assert harness is not None
        delivered = sum(1 for at, _ in rig.tracker.result_order if t0 <= at < t1)
        window = t1 - t0
        per_method = rig.tracker.counts(t0, t1)
        limited = rig.tracker.limited_calls(t0, t1)
        result = {
            "inflight": cfg.tp_inflight,
            "vendor_seconds": cfg.tp_vendor_seconds,
            "window_s": round(window, 2),
            "delivered": delivered,
            "jobs_per_s": delivered / window,
            "cpu_ms_per_job": (cpu1 - cpu0) * 1000 / delivered if delivered else float("inf"),
            "bot_cores": (cpu1 - cpu0) / window,
            "harness_cores": harness.cores(),
            "telegram_calls_per_s": limited / window,
            "telegram_calls_per_job": limited / delivered if delivered else float("inf"),
            "messages_per_job": rig.tracker.messages(t0, t1) / delivered if delivered else float("inf"),
            "calls_per_job_by_method": {m: round(n / delivered, 2) for m, n in sorted(per_method.items())} if delivered else {},
            "telegram_errors": dict(rig.tracker.errors()),
            "peak_rss_mb": bot.peak_rss / 2**20,
        }
        return result


async def sustained(cfg: Config, rate: float = 30.0) -> dict[str, Any]:
    """Open loop at ``rate`` jobs/s. The real bot cannot deliver 30 jobs/s:
    its AIORateLimiter holds it to 30 Telegram calls/s, and a job takes
    several. So this one run switches the limiter off (bench.botwrap) to see
    what 30 jobs/s would cost in CPU; nothing else differs."""
    async with Rig(
        "sustained-30", profile=cfg.profile,
        argv=[sys.executable, "-m", "bench.botwrap"], extra_env={"BENCH_NO_LIMITER": "1"},
    ) as rig:
        bot = await rig.start_bot()
        chats = itertools.count(800_000)
        warm = int(rate * cfg.sustained_warmup)
        await paced(warm, rate, lambda i: rig.inject(next(chats), cfg.tp_vendor_seconds))
        t0, cpu0, harness = time.monotonic(), bot.cpu(), SelfCpu()
        count = int(rate * cfg.sustained_window)
        await paced(count, rate, lambda i: rig.inject(next(chats), cfg.tp_vendor_seconds))
        t1, cpu1 = time.monotonic(), bot.cpu()
        rig.tracker.scan()
        delivered = sum(1 for at, _ in rig.tracker.result_order if t0 <= at < t1)
        window = t1 - t0
        return {
            "rate": rate,
            "window_s": round(window, 2),
            "delivered_per_s": delivered / window,
            "bot_cores": (cpu1 - cpu0) / window,
            "cpu_ms_per_job": (cpu1 - cpu0) * 1000 / delivered if delivered else float("inf"),
            "harness_cores": harness.cores(),
            "telegram_calls_per_s": rig.tracker.limited_calls(t0, t1) / window,
            "peak_rss_mb": bot.peak_rss / 2**20,
        }


async def echo(cfg: Config, rate: float) -> dict[str, Any]:
    """The echo bot at the same update rate the bot was fed (one update per
    delivered job), so long-poll batching is alike for both."""
    rate = max(2.0, min(rate, 300.0))
    telegram = FakeTelegram(TOKEN)
    tracker = CallTracker(telegram)
    async with telegram.serve() as url:
        env = base_env()
        env.update(ECHO_TOKEN=TOKEN, ECHO_API_URL=url)
        proc = Proc([sys.executable, "-m", "bench.echo_bot"], env, RESULTS, RESULTS / "logs" / "echo.log")
        await proc.start()
        try:
            deadline = time.monotonic() + 30
            while not telegram.calls("getUpdates"):
                if not proc.alive or time.monotonic() > deadline:
                    raise RuntimeError(f"the echo bot did not start; see {proc.log_path}")
                await asyncio.sleep(0.01)
            injected: dict[int, float] = {}

            def say(chat: int) -> None:
                telegram.user_message(chat, chat, f"echo this, please: {chat}")
                injected[chat] = time.monotonic()

            warm = int(rate * cfg.echo_warmup)
            await paced(warm, rate, lambda i: say(500_000 + i))
            t0, cpu0 = time.monotonic(), proc.cpu()
            count = int(rate * cfg.echo_window)
            await paced(count, rate, lambda i: say(600_000 + i))
            await asyncio.sleep(0.5)
            t1, cpu1 = time.monotonic(), proc.cpu()
            tracker.scan()
            replies = sum(1 for c in tracker.calls if c.ok and c.method == "sendMessage" and t0 <= c.at < t1)
            latencies = [tracker.first_reply[c] - at for c, at in injected.items() if c in tracker.first_reply]
            return {
                "rate": rate,
                "window_s": round(t1 - t0, 2),
                "replies": replies,
                "cpu_ms_per_update": (cpu1 - cpu0) * 1000 / replies if replies else float("inf"),
                "cores": (cpu1 - cpu0) / (t1 - t0),
                "reply_p50_ms": percentile(latencies, 50) * 1000,
                "reply_p95_ms": percentile(latencies, 95) * 1000,
                "peak_rss_mb": proc.peak_rss / 2**20,
            }
        finally:
            await proc.stop()
            telegram.close()


async def run(cfg: Config) -> dict[str, Any]:
    bot = await saturate(cfg)
    yardstick = await echo(cfg, bot["jobs_per_s"])
    at_30 = await sustained(cfg)
    ratio = bot["cpu_ms_per_job"] / yardstick["cpu_ms_per_update"]
    return {
        "bot": bot,
        "echo": yardstick,
        "sustained_30": at_30,
        "ratio": ratio,
        # The bot's CPU if it delivered 30 jobs per second at this cost.
        "cores_at_30_jobs_per_s": bot["cpu_ms_per_job"] * 30 / 1000,
    }
