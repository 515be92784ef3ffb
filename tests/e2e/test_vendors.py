"""Every vendor through the real bot: each capability it has, including
the image-input ones, ends with the user receiving the result. Input images
reach URL-fetching vendors as the bot's own /media links; no vendor ever
sees the bot token."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any


from bot.app import Drawbridge
from tests.e2e.conftest import TOKEN, free_port, make_settings, running_bot
from tests.e2e.helpers import image_size, is_result, png, result_after, settled
from tests.fakes.aichatapi import FakeAichatapi
from tests.fakes.aihuihua import FakeAihuihua
from tests.fakes.apispace import FakeApispace
from tests.fakes.juhe import FakeJuhe
from tests.fakes.server import serve
from tests.fakes.telegram import FakeTelegram

CHAT = USER = 7070


def assert_no_secrets(requests: Iterable[Any]) -> None:
    """No vendor request carries the bot token or a Telegram file URL."""
    secret = TOKEN.split(":", 1)[1]
    for request in requests:
        text = repr(request) + repr(getattr(request, "raw", b""))
        assert secret not in text and TOKEN not in text, request
        assert "/file/bot" not in text, request


@contextlib.asynccontextmanager
async def bot_with(tmp_path: Path, telegram: FakeTelegram, **settings: Any) -> AsyncIterator[Drawbridge]:
    port = free_port()
    values = {"http_port": port, "public_base_url": f"http://127.0.0.1:{port}", **settings}
    async with running_bot(make_settings(tmp_path, telegram, **values)) as bot:
        yield bot


async def send_photo(telegram: FakeTelegram, caption: str | None = None, size: tuple[int, int] = (320, 240), **extra: Any) -> dict:
    return telegram.user_message(CHAT, USER, photo=png(*size), caption=caption, **extra)


async def reply_with(telegram: FakeTelegram, command: str, size: tuple[int, int] = (320, 240)) -> dict:
    original = await send_photo(telegram, size=size)
    await telegram.wait_for_message(CHAT, after_message_id=original["message_id"])  # the hint
    return telegram.user_message(CHAT, USER, command, reply_to_message_id=original["message_id"])


async def test_aichatapi_img2img_and_variation(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeAichatapi()
    async with serve(fake.app) as url:
        async with bot_with(tmp_path, telegram, aichatapi_api_key=fake.api_key, aichatapi_base_url=url, aichatapi_query_url=url) as bot:
            sent = await send_photo(telegram, "watercolour style")
            result = await result_after(telegram, CHAT, sent["message_id"], timeout=25)
            telegram.press_button(CHAT, USER, result.message_id, text="🎲 Vary")
            varied = await result_after(telegram, CHAT, result.message_id, timeout=25)
            kinds = [(t.kind, t.provider) for t in await bot.store.tasks.recent(USER)]
        await fake.aclose()
    assert kinds == [("variation", "aichatapi"), ("img2img", "aichatapi")]
    assert "watercolour style" in varied.caption
    submits = fake.api_requests("/api/image2image")
    assert len(submits) == 2 and all("image" in r.body for r in submits)
    assert not fake.refused  # our pacing kept to its 1 request/second
    assert_no_secrets(fake.requests)


async def test_apispace_txt2img_img2img_anime_upscale(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeApispace(callback_delay_scale=0.01)
    async with serve(fake.app) as url:
        async with bot_with(tmp_path, telegram, apispace_token=fake.token, apispace_base_url=url) as bot:
            ask = telegram.user_message(CHAT, USER, "/imagine a pagoda --ar 16:9")
            text_result = await result_after(telegram, CHAT, ask["message_id"])
            edit = await send_photo(telegram, "make it autumn")
            await result_after(telegram, CHAT, edit["message_id"])
            anime = await reply_with(telegram, "/anime")
            await result_after(telegram, CHAT, anime["message_id"])
            upscale = await reply_with(telegram, "/upscale", size=(256, 256))
            upscaled = await result_after(telegram, CHAT, upscale["message_id"])
            kinds = sorted(t.kind for t in await bot.store.tasks.recent(USER))
        await fake.aclose()
    assert kinds == ["anime", "img2img", "txt2img", "upscale"]
    assert image_size(telegram, text_result)[0] > image_size(telegram, text_result)[1]
    assert image_size(telegram, upscaled)[0] > 256
    fetched = fake.fetched_urls()
    assert len(fetched) == 3 and all("/media/" in u for u in fetched)
    assert fake.callbacks and all(c.accepted for c in fake.callbacks)
    assert_no_secrets(fake.requests)


async def test_juhe_txt2img_edit_and_multi_image_edit(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeJuhe()
    async with serve(fake.app) as url:
        async with bot_with(tmp_path, telegram, juhe_api_key=fake.key, juhe_base_url=url) as bot:
            ask = telegram.user_message(CHAT, USER, "/imagine a lantern festival")
            await result_after(telegram, CHAT, ask["message_id"])
            edit = await send_photo(telegram, "turn the sky purple")
            await result_after(telegram, CHAT, edit["message_id"])
            first = telegram.user_message(CHAT, USER, photo=png(200, 200), caption="put 图1 into 图2", media_group_id="pair")
            telegram.user_message(CHAT, USER, photo=png(300, 200, (10, 90, 40)), media_group_id="pair")
            await result_after(telegram, CHAT, first["message_id"] + 1)
            tasks = await bot.store.tasks.recent(USER)
        await fake.aclose()
    assert sorted(t.kind for t in tasks) == ["edit", "edit", "txt2img"]
    two = [r for r in fake.api_requests("/image_edit/edit") if r.body.get("image2")]
    assert len(two) == 1 and two[0].body["image1"].startswith("data:image/")
    assert_no_secrets(fake.requests)


async def test_aihuihua_everything(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeAihuihua()
    async with serve(fake.app) as url:
        async with bot_with(tmp_path, telegram, aihuihua_api_key=fake.api_key, aihuihua_base_url=url) as bot:
            ask = telegram.user_message(CHAT, USER, "/imagine a koi pond --model mj")
            grid = await result_after(telegram, CHAT, ask["message_id"], timeout=20)
            assert grid.button_texts == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "🔄"]
            telegram.press_button(CHAT, USER, grid.message_id, text="U2")
            upscaled = await result_after(telegram, CHAT, grid.message_id, timeout=20)
            telegram.press_button(CHAT, USER, grid.message_id, text="V3")
            varied = await telegram.wait_for_message(CHAT, lambda m: is_result(m) and "U1" in m.button_texts, after_message_id=upscaled.message_id, timeout=20)
            edit = await send_photo(telegram, "in the style of ukiyo-e")
            await result_after(telegram, CHAT, edit["message_id"], timeout=20)
            swap = await send_photo(telegram, "/faceswap", size=(150, 150), media_group_id="swap")
            telegram.user_message(CHAT, USER, photo=png(300, 300, (0, 0, 200)), media_group_id="swap")
            await result_after(telegram, CHAT, swap["message_id"] + 1, timeout=20)
            for command in ("/upscale", "/removebg"):
                request = await reply_with(telegram, command)
                await result_after(telegram, CHAT, request["message_id"], timeout=20)
            describe = await reply_with(telegram, "/describe")
            words = await telegram.wait_for_message(CHAT, lambda m: m.text and "Description" in m.text, after_message_id=describe["message_id"], timeout=20)
            tasks = {t.kind: t for t in await settled(bot, USER)}
        await fake.aclose()
    assert set(tasks) == {"txt2img", "upscale", "variation", "img2img", "faceswap", "remove-bg", "describe"}
    assert all(t.provider == "aihuihua" and t.status.value == "delivered" for t in tasks.values()), [(t.kind, t.provider, t.status, t.error_kind) for t in tasks.values()]
    # One image now, not a grid: Midjourney's own follow-ups, as aihuihua passes them on.
    assert "🔄" in upscaled.button_texts and any("Vary (Subtle)" in b for b in upscaled.button_texts)
    assert varied.message_id > upscaled.message_id
    actions = fake.api_requests("/api/v2/mdj/action")
    assert any("upsample::2" in r.body["customId"] for r in actions)
    assert any("variation::3" in r.body["customId"] for r in actions)
    assert len(words.text) > 20
    assert_no_secrets(fake.requests)
