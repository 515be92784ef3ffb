"""The bot process is killed (SIGKILL) while a task runs at the vendor; after
a restart the user receives the photo exactly once, and the vendor saw one
submission."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TOKEN, ZHIQITE_APP_CODE, free_port
from tests.fakes.server import serve
from tests.fakes.telegram import FakeTelegram
from tests.fakes.zhiqite import FakeZhiqite

REPO = Path(__file__).resolve().parents[2]
CHAT = USER = 777


@pytest.fixture
async def slow_zhiqite() -> AsyncIterator[tuple[FakeZhiqite, str]]:
    fake = FakeZhiqite(app_code=ZHIQITE_APP_CODE, queue_seconds=0.2, run_seconds=6.0, upload_seconds=0.1)
    async with serve(fake.app) as url:
        yield fake, url
    await fake.aclose()


def result_photos(telegram: FakeTelegram) -> list:
    """Photos carrying the result buttons (a preview status has none)."""
    return [m for m in telegram.bot_messages(CHAT) if m.photo and m.inline_markup and not m.deleted]


async def start_bot(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", env=env, cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL, stderr=open(cwd / "bot.log", "ab"),
    )


async def test_sigkill_while_running_at_vendor_then_restart_delivers_once(
    tmp_path: Path, telegram: FakeTelegram, slow_zhiqite: tuple[FakeZhiqite, str]
) -> None:
    vendor, vendor_url = slow_zhiqite
    database = tmp_path / "drawbridge.db"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": telegram.url,
        "DATABASE_URL": f"sqlite:///{database}",
        "HTTP_PORT": str(free_port()),
        "ZHIQITE_APP_CODE": ZHIQITE_APP_CODE,
        "ZHIQITE_BASE_URL": vendor_url,
        "ALLOW_PRIVATE_URLS": "true",
    }
    bot = await start_bot(env, tmp_path)
    try:
        await telegram.wait_for(lambda: telegram.calls("getUpdates"), timeout=20)
        telegram.user_message(CHAT, USER, "/imagine a red fox --ar 16:9")
        # The task is at the vendor, and the user has been told so.
        await telegram.wait_for(lambda: vendor.api_requests("saas/sd/v2/text2image"), timeout=10)
        await telegram.wait_for_message(CHAT, lambda m: m.text and "a red fox" in m.text)
        bot.send_signal(signal.SIGKILL)
        assert await bot.wait() == -signal.SIGKILL
        assert not result_photos(telegram)  # (the status may have become a preview photo)

        polls_before = len(telegram.calls("getUpdates"))
        bot = await start_bot(env, tmp_path)
        await telegram.wait_for(lambda: len(telegram.calls("getUpdates")) > polls_before, timeout=20)
        photo = await telegram.wait_for_message(CHAT, lambda m: bool(m.photo and m.inline_markup), timeout=30)
        assert "a red fox" in photo.caption
        # Give a duplicate every chance to appear before counting.
        await asyncio.sleep(2.0)
    finally:
        if bot.returncode is None:
            bot.send_signal(signal.SIGTERM)
            await asyncio.wait_for(bot.wait(), timeout=15)

    assert bot.returncode == 0, (tmp_path / "bot.log").read_text()[-2000:]
    assert len(result_photos(telegram)) == 1
    # One message for the job: the status the first process sent became the
    # result the second process delivered; nothing was sent anew or deleted.
    [only] = telegram.bot_messages(CHAT, include_deleted=True)
    assert only.photo and only.inline_markup and not only.deleted
    assert len(vendor.api_requests("saas/sd/v2/text2image")) == 1
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall() == [("delivered", 1)]
    log = (tmp_path / "bot.log").read_text()
    assert TOKEN not in log and TOKEN.split(":")[1] not in log


async def test_sigkill_mid_openai_call_runs_it_again_once_and_delivers_once(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    """An OpenAI call is the bot's own: killed with the process. After the
    restart the task runs again (the vendor sees a second call) and the user
    gets one result."""
    from tests.fakes.openai import FakeOpenAI

    vendor = FakeOpenAI(api_key="sk-restart-test-key")
    vendor.hold()  # the first call never answers before the kill
    database = tmp_path / "drawbridge.db"
    async with serve(vendor.app) as vendor_url:
        env = {
            "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO),
            "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": telegram.url,
            "DATABASE_URL": f"sqlite:///{database}", "HTTP_PORT": str(free_port()),
            "OPENAI_API_KEY": vendor.api_key, "OPENAI_BASE_URL": f"{vendor_url}/v1",
            "ALLOW_PRIVATE_URLS": "true",
        }
        bot = await start_bot(env, tmp_path)
        try:
            await telegram.wait_for(lambda: telegram.calls("getUpdates"), timeout=20)
            telegram.user_message(CHAT, USER, "/imagine a brass compass")
            await vendor.wait_started(1, timeout=20)

            def submitted() -> bool:  # the dispatcher has let go: the call runs in the background
                with sqlite3.connect(database) as db:
                    return db.execute("SELECT status FROM tasks").fetchall() == [("submitted",)]

            for _ in range(400):  # the database, not Telegram, says when
                if submitted():
                    break
                await asyncio.sleep(0.05)
            assert submitted()
            bot.send_signal(signal.SIGKILL)
            assert await bot.wait() == -signal.SIGKILL
            vendor.release()  # the lost call ends at the vendor; nobody hears it

            bot = await start_bot(env, tmp_path)
            photo = await telegram.wait_for_message(CHAT, lambda m: bool(m.photo and m.inline_markup), timeout=30)
            assert "a brass compass" in photo.caption
            await asyncio.sleep(2.0)  # a duplicate would show up by now
        finally:
            if bot.returncode is None:
                bot.send_signal(signal.SIGTERM)
                await asyncio.wait_for(bot.wait(), timeout=20)
            await vendor.aclose()
    assert bot.returncode == 0, (tmp_path / "bot.log").read_text()[-2000:]
    assert len(result_photos(telegram)) == 1
    assert len(vendor.api_requests("/images/generations")) == 2
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT status, reruns FROM tasks").fetchall() == [("delivered", 1)]
    log = (tmp_path / "bot.log").read_text()
    assert vendor.api_key not in log and TOKEN.split(":")[1] not in log
