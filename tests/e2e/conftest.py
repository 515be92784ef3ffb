"""End-to-end harness: the real Drawbridge (real PTB Application, real
SQLite file, real HTTP) against fake Telegram and fake vendor servers on
loopback."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import Drawbridge
from bot.config import Settings, load_settings
from tests.fakes.telegram import FakeTelegram
from tests.fakes.zhiqite import FakeZhiqite
from tests.fakes.server import serve

TOKEN = "123456789:AAE2eTestTokenForDrawbridgeBot_abcdefg"
ZHIQITE_APP_CODE = "test-app-code"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test passes reaches Settings: no stray env vars, no .env."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram(TOKEN)
    async with fake.serve():
        yield fake


@pytest.fixture
async def zhiqite() -> AsyncIterator[tuple[FakeZhiqite, str]]:
    fake = FakeZhiqite(app_code=ZHIQITE_APP_CODE, queue_seconds=0.3, run_seconds=1.5, upload_seconds=0.1)
    async with serve(fake.app) as url:
        yield fake, url
    await fake.aclose()


def make_settings(tmp_path: Path, telegram: FakeTelegram, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "telegram_bot_token": TOKEN,
        "telegram_api_url": telegram.url,
        "database_url": f"sqlite:///{tmp_path}/drawbridge.db",
        "http_port": 0,
        "allow_private_urls": True,
        "sandbox_job_seconds": 1.0,
    }
    values.update(overrides)
    return load_settings(**values)


@contextlib.asynccontextmanager
async def running_bot(settings: Settings) -> AsyncIterator[Drawbridge]:
    bot = Drawbridge(settings)
    await bot.start()
    try:
        yield bot
    finally:
        await bot.stop()
