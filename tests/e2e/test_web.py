"""The bot's own HTTP server: health, vendor callbacks, input-image hosting."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
from PIL import Image

from tests.e2e.conftest import TOKEN, ZHIQITE_APP_CODE, make_settings, running_bot
from tests.fakes.telegram import FakeTelegram

CHAT = USER = 5150


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


async def test_healthz(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{bot.web.port}/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


async def test_media_serves_the_telegram_file_until_it_expires(tmp_path: Path, telegram: FakeTelegram) -> None:
    message = telegram.user_message(CHAT, USER, photo=png(), caption="hello")
    file_id = message["photo"][-1]["file_id"]
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        fresh = await bot.store.media.create(file_id, "image/png", ttl_seconds=60)
        stale = await bot.store.media.create(file_id, "image/png", ttl_seconds=-1)
        base = f"http://127.0.0.1:{bot.web.port}/media"
        async with httpx.AsyncClient() as client:
            served = await client.get(f"{base}/{fresh.token}")
            expired = await client.get(f"{base}/{stale.token}")
            guessed = await client.get(f"{base}/{fresh.token[:-1]}x")
    assert served.status_code == 200
    assert served.content == telegram.file_bytes(file_id)
    assert served.headers["content-type"] == "image/png"
    assert TOKEN not in served.text and "location" not in served.headers
    assert expired.status_code == 404
    assert guessed.status_code == 404
    assert len(fresh.token) >= 40


async def test_callbacks_need_a_known_token_and_json(tmp_path: Path, telegram: FakeTelegram) -> None:
    settings = make_settings(tmp_path, telegram, zhiqite_app_code=ZHIQITE_APP_CODE)
    async with running_bot(settings) as bot:
        base = f"http://127.0.0.1:{bot.web.port}/callbacks"
        async with httpx.AsyncClient() as client:
            unknown = await client.post(f"{base}/zhiqite/not-a-token", json={"code": "200", "data": {}})
            garbage = await client.post(f"{base}/zhiqite/not-a-token", content=b"{not json")
            wrong_vendor = await client.post(f"{base}/nobody/x", json={})
    assert unknown.status_code == 404
    assert garbage.status_code == 400
    assert wrong_vendor.status_code == 404
