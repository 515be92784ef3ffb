"""6. Vendor queries under each vendor's poll policy. aihuihua and zhiqite
ask not to be polled (aihuihua: only after 5 minutes without a callback;
zhiqite: each query is billed). The real bot (in this process) runs jobs
against their fakes with callbacks (PUBLIC_BASE_URL set) and with polling
only, once under the vendor's policy and once under the adaptive polling
every vendor had before ("before"), and counts the vendor's query calls
per job. Targets: 0 with callbacks; with polling, no more than before."""

from __future__ import annotations

import contextlib
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from bench.config import Config
from bot.app import Drawbridge
from tests.e2e.conftest import running_bot
from bot.config import load_settings
from providers.aihuihua import Aihuihua
from providers.base import PollPolicy, Provider
from providers.zhiqite import Zhiqite
from tests.fakes.aihuihua import FakeAihuihua
from tests.fakes.server import serve
from tests.fakes.telegram import FakeTelegram
from tests.fakes.zhiqite import FakeZhiqite

TOKEN = "123456789:AAE2eBenchTokenForPolicyRuns_abcdefgh"
JOBS = 5  # aihuihua runs at most 5 tasks at once per account
JOB_SECONDS = 6.0  # at the vendor: queue + running


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _policy(cls: type[Provider], policy: PollPolicy | None) -> Any:
    """Run under ``policy`` instead of the vendor's own (None: its own)."""
    own = cls.poll_policy
    if policy is not None:
        cls.poll_policy = policy
    try:
        yield
    finally:
        cls.poll_policy = own


@contextlib.asynccontextmanager
async def _bot(telegram: FakeTelegram, callbacks: bool, **vendor: Any) -> AsyncIterator[Drawbridge]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(
            telegram_bot_token=TOKEN, telegram_api_url=telegram.url,
            database_url=f"sqlite:///{Path(folder) / 'bench.db'}", http_port=port,
            public_base_url=f"http://127.0.0.1:{port}" if callbacks else "",
            allow_private_urls=True, **vendor,
        )
        async with running_bot(settings) as bot:
            yield bot


async def _jobs(telegram: FakeTelegram, first_chat: int, timeout: float) -> float:
    """JOBS users each ask for one image; seconds until every result arrived."""
    started = time.monotonic()
    chats = [first_chat + i for i in range(JOBS)]
    asks = [telegram.user_message(chat, chat, f"/imagine bench policy {chat}") for chat in chats]
    for chat, ask in zip(chats, asks, strict=True):
        remaining = max(1.0, timeout - (time.monotonic() - started))
        await telegram.wait_for_message(
            chat, lambda m: bool(m.photo and m.reply_markup), after_message_id=ask["message_id"], timeout=remaining,
        )
    return time.monotonic() - started


async def _aihuihua(telegram: FakeTelegram, callbacks: bool, first_chat: int) -> dict[str, Any]:
    fake = FakeAihuihua(queue_seconds=1.0, submitted_seconds=1.0, run_seconds=JOB_SECONDS - 2.0)
    async with serve(fake.app) as url:
        async with _bot(telegram, callbacks, aihuihua_api_key=fake.api_key, aihuihua_base_url=url):
            seconds = await _jobs(telegram, first_chat, timeout=120)
    await fake.aclose()
    calls = fake.api_requests("/api/v2/task/id/") + fake.api_requests("/api/v2/task/list/")
    return {"calls": len(calls), "seconds": seconds}


async def _zhiqite(telegram: FakeTelegram, callbacks: bool, first_chat: int) -> dict[str, Any]:
    fake = FakeZhiqite(app_code="bench", queue_seconds=1.0, run_seconds=JOB_SECONDS - 1.5, upload_seconds=0.5)
    async with serve(fake.app) as url:
        async with _bot(telegram, callbacks, zhiqite_app_code="bench", zhiqite_base_url=url):
            seconds = await _jobs(telegram, first_chat, timeout=120)
    await fake.aclose()
    return {"calls": len(fake.api_requests("queryTaskInfo")), "seconds": seconds}


RUNS: tuple[tuple[str, type[Provider], Callable[..., Any]], ...] = (
    ("aihuihua", Aihuihua, _aihuihua),
    ("zhiqite", Zhiqite, _zhiqite),
)


async def run(cfg: Config) -> dict[str, Any]:
    results: dict[str, Any] = {}
    chat = 5_000_000
    telegram = FakeTelegram(TOKEN)
    async with telegram.serve():
        for name, cls, one in RUNS:
            for callbacks in (True, False):
                for label, policy in (("policy", None), ("before", PollPolicy())):
                    with _policy(cls, policy):
                        measured = await one(telegram, callbacks, chat)
                    chat += JOBS
                    mode = "callbacks" if callbacks else "polling"
                    results[f"{name} {mode} {label}"] = {
                        "queries_per_job": measured["calls"] / JOBS,
                        "seconds_for_all": round(measured["seconds"], 2),
                    }
    return results
