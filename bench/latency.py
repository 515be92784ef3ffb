"""2. Acknowledgement latency: a user's /imagine reaches the fake Telegram →
the bot's first reply in that chat reaches it (its status message, or the
👀 reaction it puts on the request while Telegram's 30 messages/s hold the
status message back). The status message's own latency is reported beside
it. Each load level gets a fresh bot and database; every update comes from a
new private chat."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from bench.config import Config
from bench.harness import Rig, SelfCpu, paced, percentile


async def level(cfg: Config, rate: int, seconds: float, *, diagnostic: bool = False) -> dict[str, Any]:
    name = f"ack-{rate}" + ("-nolimiter" if diagnostic else "")
    kwargs: dict[str, Any] = {"profile": cfg.profile}
    if diagnostic:
        kwargs.update(argv=[sys.executable, "-m", "bench.botwrap"], extra_env={"BENCH_NO_LIMITER": "1"})
    async with Rig(name, **kwargs) as rig:
        bot = await rig.start_bot()
        count = int(rate * seconds)
        first = 1_000_000 + rate * 10_000 + (5_000_000 if diagnostic else 0)
        chats = [first + i for i in range(count)]
        t0, cpu0, harness = time.monotonic(), bot.cpu(), SelfCpu()
        await paced(count, rate, lambda i: rig.inject(chats[i], cfg.ack_vendor_seconds))
        t1, cpu1 = time.monotonic(), bot.cpu()
        harness_cores = harness.cores()
        replies, messages = rig.tracker.first_reply, rig.tracker.first_message
        await rig.wait_until(lambda: all(c in messages for c in chats), timeout=cfg.ack_timeout, step=0.05)
        t2, cpu2 = time.monotonic(), bot.cpu()
        latencies = [replies.get(c, math.inf) - rig.injected[c] for c in chats]
        message_latencies = [messages.get(c, math.inf) - rig.injected[c] for c in chats]
        answered = [x for x in latencies if x != math.inf]
        return {
            "rate": rate,
            "seconds": seconds,
            "updates": count,
            "achieved_rate": count / (t1 - t0),
            "answered": len(answered),
            "p50_ms": percentile(latencies, 50) * 1000,
            "p95_ms": percentile(latencies, 95) * 1000,
            "max_ms": (max(answered) * 1000) if answered else math.inf,
            "reactions": sum(1 for c in chats if c in replies and replies[c] < messages.get(c, math.inf)),
            "message_p50_ms": percentile(message_latencies, 50) * 1000,
            "message_p95_ms": percentile(message_latencies, 95) * 1000,
            "bot_cores_while_sending": (cpu1 - cpu0) / (t1 - t0),
            "bot_cores_until_answered": (cpu2 - cpu0) / (t2 - t0),
            "harness_cores": harness_cores,
            "telegram_calls_per_s": rig.tracker.limited_calls(t0, t2) / (t2 - t0),
            "calls_by_method": dict(rig.tracker.counts(t0, t2)),
            "limiter": not diagnostic,
        }


async def run(cfg: Config) -> dict[str, Any]:
    levels = [await level(cfg, rate, seconds) for rate, seconds in cfg.ack_levels]
    result: dict[str, Any] = {"levels": levels}
    if cfg.ack_diagnostic_rate:
        seconds = dict(cfg.ack_levels).get(cfg.ack_diagnostic_rate, 5.0)
        result["without_limiter"] = await level(cfg, cfg.ack_diagnostic_rate, seconds, diagnostic=True)
    return result
