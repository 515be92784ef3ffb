"""Webhook mode: updates arrive over our HTTP server, the secret token is
checked, and a redelivered update (same update_id) is processed once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from bot.app import webhook_secret
from tests.e2e.conftest import make_settings, running_bot
from tests.e2e.helpers import photos
from tests.fakes.telegram import FakeTelegram

CHAT = USER = 9090


async def test_webhook_updates_are_verified_and_deduplicated(tmp_path: Path, telegram: FakeTelegram) -> None:
    settings = make_settings(tmp_path, telegram, telegram_webhook_url="https://bot.example.org/telegram/hook")
    async with running_bot(settings) as bot:
        assert telegram.webhook_url == "https://bot.example.org/telegram/hook"
        assert telegram.webhook_secret == webhook_secret(settings)
        assert not telegram.calls("getUpdates")
        telegram.user_message(CHAT, USER, "/imagine a webhook fox")
        update = telegram.pending_updates()[-1]
        hook = f"http://127.0.0.1:{bot.web.port}/telegram/hook"
        async with httpx.AsyncClient() as client:
            forged = await client.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"})
            missing = await client.post(hook, json=update)
            first = await client.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": telegram.webhook_secret})
            again = await client.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": telegram.webhook_secret})
        await telegram.wait_for(lambda: photos(telegram, CHAT), timeout=15)
        await asyncio.sleep(1.5)
        tasks = await bot.store.tasks.recent(USER)
    assert (forged.status_code, missing.status_code, first.status_code, again.status_code) == (403, 403, 200, 200)
    assert len(tasks) == 1 and len(photos(telegram, CHAT)) == 1
