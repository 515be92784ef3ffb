"""7. ComfyUI: one websocket and flat HTTP use however long the queue, and
the delivery lag after the engine finishes. The real bot (in this process,
as in policy.py: the fake ComfyUI serves its websocket from this event loop)
gets JOBS /imagine at once from JOBS users; the fake runs one prompt at a
time, JOB_SECONDS each (20 sampler steps). Counted at the fake: websocket
connections, HTTP requests per job by route, per queue length (5 and 20
waiting: flat means the same per job). Lag: the prompt's end at the fake →
its photo reaching the fake Telegram (both on time.monotonic())."""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.config import Config
from bot.config import load_settings
from tests.e2e.conftest import running_bot
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.telegram import FakeTelegram

TOKEN = "123456789:AAE2eBenchTokenForComfyRuns_abcdefgh"
JOB_SECONDS = 5.0
STEPS = 20


def _route(path: str) -> str:
    for prefix in ("/history", "/view", "/queue", "/prompt", "/upload", "/object_info", "/ws"):
        if path.startswith(prefix):
            return prefix
    return path


async def _run(jobs: int, first_chat: int) -> dict[str, Any]:
    fake = FakeComfyUI(step_seconds=JOB_SECONDS / STEPS)
    telegram = FakeTelegram(TOKEN)
    async with telegram.serve(), fake.serve() as url:
        with tempfile.TemporaryDirectory() as folder:
            settings = load_settings(
                telegram_bot_token=TOKEN, telegram_api_url=telegram.url,
                database_url=f"sqlite:///{Path(folder) / 'bench.db'}", http_port=0,
                allow_private_urls=True, comfyui_base_url=url,
            )
            async with running_bot(settings):
                chats = [first_chat + i for i in range(jobs)]
                asks = {chat: telegram.user_message(chat, chat, f"/imagine bench comfy {chat} --steps {STEPS}")
                        for chat in chats}
                results = {}
                for chat in chats:
                    results[chat] = await telegram.wait_for_message(
                        chat, lambda m: bool(m.photo and m.reply_markup),
                        after_message_id=asks[chat]["message_id"], timeout=jobs * JOB_SECONDS * 3 + 30,
                    )
                with contextlib.suppress(Exception):
                    await fake.wait_idle(timeout=5)
        lags = []
        for chat in chats:
            prompt = next(p for p in fake.prompts if f"bench comfy {chat} " in p.workflow["6"]["inputs"]["text"] + " ")
            sent = next(c for c in telegram.calls(None, chat)
                        if c.method in ("sendPhoto", "editMessageMedia") and c.params.get("reply_markup"))
            assert prompt.finished_at is not None
            lags.append(sent.timestamp - prompt.finished_at)
    await fake.aclose()
    routes = Counter(_route(r.path) for r in fake.requests)
    return {
        "jobs": jobs,
        "websockets": fake.connections,
        "http_per_job": round(sum(n for r, n in routes.items() if r != "/ws") / jobs, 2),
        "by_route_per_job": {r: round(n / jobs, 2) for r, n in sorted(routes.items()) if r != "/ws"},
        "lag_p50_s": round(statistics.median(lags), 3),
        "lag_p95_s": round(sorted(lags)[max(0, int(len(lags) * 0.95) - 1)], 3),
        "max_concurrent": fake.max_concurrent,
    }


async def run(cfg: Config) -> dict[str, Any]:
    started = time.monotonic()
    short = await _run(cfg.comfyui_short_jobs, 6_000_000)
    long = await _run(cfg.comfyui_jobs, 6_100_000)
    return {"short": short, "long": long, "seconds": round(time.monotonic() - started, 1)}
