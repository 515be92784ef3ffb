"""3 + 4. Delivery lag (the vendor's result is ready → the bot's sendPhoto
reaches Telegram) and vendor queries per job, with polling (no
PUBLIC_BASE_URL) and with callbacks (PUBLIC_BASE_URL set). Jobs of 5 s and
30 s at the vendor alternate, at a low rate so the Telegram budget is idle.
The two modes run side by side, each with its own fakes and bot."""

from __future__ import annotations

import asyncio
import math
import statistics
from typing import Any

from bench.config import Config
from bench.harness import Rig, paced, percentile


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    lags = [r["lag"] for r in rows]
    queries = [r["queries"] for r in rows]
    return {
        "jobs": len(rows),
        "delivered": sum(1 for x in lags if x != math.inf),
        "lag_p50_s": percentile(lags, 50),
        "lag_p95_s": percentile(lags, 95),
        "lag_max_s": max(lags) if lags else math.nan,
        "queries_mean": statistics.fmean(queries) if queries else math.nan,
        "queries_max": max(queries) if queries else math.nan,
        "callbacks_mean": statistics.fmean(r["callbacks"] for r in rows) if rows else math.nan,
    }


async def mode(cfg: Config, callbacks: bool) -> dict[str, Any]:
    name = "lag-callbacks" if callbacks else "lag-polling"
    async with Rig(name, callbacks=callbacks, profile=cfg.profile) as rig:
        await rig.start_bot()
        plan = [s for _ in range(cfg.lag_jobs_each) for s in cfg.lag_job_seconds]
        first = 3_000_000 + (1_000_000 if callbacks else 0)
        chats = [first + i for i in range(len(plan))]
        await paced(len(plan), cfg.lag_rate, lambda i: rig.inject(chats[i], plan[i]))
        results = rig.tracker.results
        await rig.wait_until(lambda: all(c in results for c in chats), timeout=max(plan) + 45, step=0.05)
        rows = rig.lag_and_queries()
        by_length = {
            f"{seconds:g}s": summary([r for r in rows if abs(r["vendor_seconds"] - seconds) < 1e-6])
            for seconds in cfg.lag_job_seconds
        }
        return {"all": summary(rows), "by_length": by_length, "jobs": rows}


async def run(cfg: Config) -> dict[str, Any]:
    polling, callbacks = await asyncio.gather(mode(cfg, False), mode(cfg, True))
    return {"polling": polling, "callbacks": callbacks}
