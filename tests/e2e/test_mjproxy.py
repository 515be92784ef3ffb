"""The mjproxy vendor through the real bot, against FakeMjProxy over
loopback in both flavours: the grid and its buttons, the proxy's own
buttons after an upscale, a MODAL step answered by the user, describe,
blend, face swap, banned words, previews, batch queries and a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.app import Drawbridge
from providers.base import PollPolicy
from providers.mjproxy import MjProxy
from tests.e2e.conftest import free_port, make_settings, running_bot
from tests.e2e.helpers import png, result_after, settled
from tests.fakes.mjproxy import FakeMjProxy
from tests.fakes.server import serve
from tests.fakes.telegram import FakeTelegram

CHAT = USER = 7401
SECRET = "mj-api-secret-SECRET-5150"


@asynccontextmanager
async def mj_bot(
    tmp_path: Path, telegram: FakeTelegram, fake: FakeMjProxy, *, callbacks: bool = True, **settings: Any
) -> AsyncIterator[Drawbridge]:
    async with serve(fake.app) as url:
        port = free_port()
        values: dict[str, Any] = {"mj_proxy_base_url": url, "mj_proxy_api_secret": SECRET, "http_port": port, **settings}
        if callbacks:
            values["public_base_url"] = f"http://127.0.0.1:{port}"
        async with running_bot(make_settings(tmp_path, telegram, **values)) as bot:
            yield bot


def labels(message: Any) -> list[str]:
    keyboard = (message.reply_markup or {}).get("inline_keyboard") or []
    return [button["text"] for row in keyboard for button in row]


async def imagine(telegram: FakeTelegram, text: str, timeout: float = 20) -> Any:
    ask = telegram.user_message(CHAT, USER, text)
    return await result_after(telegram, CHAT, ask["message_id"], timeout=timeout)


async def test_trueai_grid_u2_then_vary_subtle_from_the_proxys_own_buttons(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeMjProxy(flavour="trueai", api_secret=SECRET, run_seconds=0.3)
    async with mj_bot(tmp_path, telegram, fake) as bot:
        grid = await imagine(telegram, "/imagine a castle in the clouds --ar 3:2")
        assert labels(grid)[:4] == ["U1", "U2", "U3", "U4"]
        telegram.press_button(CHAT, USER, grid.message_id, text="U2")
        upscaled = await result_after(telegram, CHAT, grid.message_id, timeout=20)
        # After an upscale: Midjourney's buttons, as the proxy offered them.
        offered = labels(upscaled)
        assert {"🪄 Vary (Subtle)", "🪄 Vary (Strong)", "🔍 Zoom Out 2x", "⬅️"} <= set(offered)
        assert not any("Region" in label for label in offered)  # needs a mask: not offered
        telegram.press_button(CHAT, USER, upscaled.message_id, text="🪄 Vary (Subtle)")
        varied = await result_after(telegram, CHAT, upscaled.message_id, timeout=20)
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert sorted(t.status.value for t in tasks) == ["delivered"] * 3
    actions = [r.body["customId"] for r in fake.api_requests("/mj/submit/action")]
    assert actions[0].startswith("MJ::JOB::upsample::2::") and actions[1].startswith("MJ::JOB::low_variation::1::")
    assert labels(varied)[:4] == ["U1", "U2", "U3", "U4"]  # a variation is a grid again
    assert fake.api_requests("imagine")[0].body["prompt"] == "a castle in the clouds --ar 3:2"
    assert all(r.headers.get("mj-api-secret") == SECRET for r in fake.api_requests("/mj/submit"))
    assert fake.callbacks and all(c.accepted for c in fake.callbacks)


async def test_novicezk_grid_u3_goes_through_change(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeMjProxy(flavour="novicezk", api_secret=SECRET, run_seconds=0.2)
    async with mj_bot(tmp_path, telegram, fake, sandbox_enabled=True) as bot:
        grid = await imagine(telegram, "/imagine a quiet harbour")
        telegram.press_button(CHAT, USER, grid.message_id, text="U3")
        upscaled = await result_after(telegram, CHAT, grid.message_id, timeout=20)
        telegram.press_button(CHAT, USER, grid.message_id, text="🔄")
        rerolled = await result_after(telegram, CHAT, upscaled.message_id, timeout=20)
        # novicezk offers nothing on an upscaled image: its ⬆️ goes to a vendor that can.
        telegram.press_button(CHAT, USER, upscaled.message_id, text="⬆️ Upscale")
        await result_after(telegram, CHAT, rerolled.message_id, timeout=20)
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert sorted((t.kind, t.provider, t.status.value) for t in tasks) == [
        ("txt2img", "mjproxy", "delivered"), ("txt2img", "mjproxy", "delivered"),
        ("upscale", "mjproxy", "delivered"), ("upscale", "sandbox", "delivered")]
    changes = [(c.body["action"], c.body["index"]) for c in fake.api_requests("/mj/submit/change")]
    assert changes == [("UPSCALE", 3), ("REROLL", 1)]
    assert len(fake.api_requests("imagine")) == 1  # the reroll is Midjourney's, not a new imagine


async def test_custom_zoom_waits_for_the_users_text(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeMjProxy(flavour="trueai", api_secret=SECRET, run_seconds=0.2)
    async with mj_bot(tmp_path, telegram, fake) as bot:
        grid = await imagine(telegram, "/imagine a lone tree")
        telegram.press_button(CHAT, USER, grid.message_id, text="U1")
        upscaled = await result_after(telegram, CHAT, grid.message_id, timeout=20)
        telegram.press_button(CHAT, USER, upscaled.message_id, text="🔍 Custom Zoom")
        question = await telegram.wait_for_message(
            CHAT, lambda m: "needs your words" in (m.text or ""), after_message_id=upscaled.message_id, timeout=20)
        assert (question.reply_markup or {}).get("force_reply") is True
        answer = telegram.user_message(CHAT, USER, "a lone tree on a wide plain --zoom 1.8",
                                       reply_to_message_id=question.message_id)
        # The zoomed result goes into that job's own status message (sent before the question).
        zoomed = await result_after(telegram, CHAT, upscaled.message_id, timeout=20)
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert zoomed.message_id < question.message_id < answer["message_id"]
    assert sorted(t.status.value for t in tasks) == ["delivered"] * 3
    [modal] = fake.api_requests("/mj/submit/modal")
    assert modal.body["prompt"] == "a lone tree on a wide plain --zoom 1.8"
    assert any("goes on" in (m.text or "") for m in telegram.bot_messages(CHAT))


async def test_a_banned_word_gets_the_content_message(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeMjProxy(flavour="novicezk", api_secret=SECRET)
    async with mj_bot(tmp_path, telegram, fake) as bot:
        ask = telegram.user_message(CHAT, USER, "/imagine a nsfwword poster", language_code="zh")
        await telegram.wait_for_message(CHAT, lambda m: "内容规则" in (m.text or ""), after_message_id=ask["message_id"])
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert tasks[0].error_kind == "rejected"


async def test_describe_blend_and_face_swap(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeMjProxy(flavour="trueai", api_secret=SECRET, run_seconds=0.2)
    async with mj_bot(tmp_path, telegram, fake) as bot:
        photo = telegram.user_message(CHAT, USER, photo=png(300, 200))
        await telegram.wait_for_message(CHAT, after_message_id=photo["message_id"])
        describe = telegram.user_message(CHAT, USER, "/describe", reply_to_message_id=photo["message_id"])
        await telegram.wait_for_message(CHAT, lambda m: "1️⃣" in (m.text or ""), after_message_id=describe["message_id"], timeout=20)
        first = telegram.user_message(CHAT, USER, photo=png(200, 200, (250, 180, 40)), caption="/blend --ar 2:3", media_group_id="b-1")
        telegram.user_message(CHAT, USER, photo=png(200, 200, (30, 90, 200)), media_group_id="b-1")
        await result_after(telegram, CHAT, first["message_id"], timeout=20)
        face = telegram.user_message(CHAT, USER, photo=png(200, 200, (250, 200, 150)), caption="/faceswap", media_group_id="f-1")
        telegram.user_message(CHAT, USER, photo=png(300, 300, (20, 80, 160)), media_group_id="f-1")
        await result_after(telegram, CHAT, face["message_id"], timeout=20)
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert sorted((t.kind, t.status.value) for t in tasks) == [
        ("blend", "delivered"), ("describe", "delivered"), ("faceswap", "delivered")]
    [blend] = fake.api_requests("/mj/submit/blend")
    assert blend.body["dimensions"] == "PORTRAIT" and len(blend.body["base64Array"]) == 2
    assert len(fake.api_requests("/mj/insight-face/swap")) == 1


async def test_without_callbacks_pending_tasks_share_a_batch_query_and_show_previews(
    tmp_path: Path, telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jobs of seconds, not of a minute: polled while they run.
    monkeypatch.setattr(MjProxy, "typical_seconds", 1.0)
    monkeypatch.setattr(MjProxy, "poll_policy", PollPolicy(callback_silence_seconds=60.0, min_interval_seconds=0.5))
    fake = FakeMjProxy(flavour="novicezk", api_secret=SECRET, run_seconds=4.0, progress_steps=3)
    async with mj_bot(tmp_path, telegram, fake, callbacks=False) as bot:
        asks = [telegram.user_message(CHAT, USER, f"/imagine lantern {n}") for n in range(3)]
        for ask in asks:
            await result_after(telegram, CHAT, ask["message_id"], timeout=30)
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert [t.status.value for t in tasks] == ["delivered"] * 3
    assert any(len(r.body["ids"]) >= 2 for r in fake.api_requests("list-by-condition"))
    # A status message became the vendor's in-progress picture.
    previews = [c for c in telegram.calls("editMessageMedia", CHAT) if "▓" in str(c.params.get("media"))]
    assert previews


async def test_a_restart_while_the_proxy_works_delivers_once(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeMjProxy(flavour="trueai", api_secret=SECRET, run_seconds=2.0)
    async with serve(fake.app) as url:
        port = free_port()
        settings = make_settings(tmp_path, telegram, mj_proxy_base_url=url, mj_proxy_api_secret=SECRET,
                                 http_port=port, public_base_url=f"http://127.0.0.1:{port}")
        async with running_bot(settings):
            ask = telegram.user_message(CHAT, USER, "/imagine a night train")
            for _ in range(200):
                if fake.tasks:
                    break
                await asyncio.sleep(0.01)
        # Down while the proxy works (its callbacks fail meanwhile); back up.
        async with running_bot(settings) as bot:
            await result_after(telegram, CHAT, ask["message_id"], timeout=30)
            tasks = await settled(bot, USER)
            await asyncio.sleep(0.5)
    await fake.aclose()
    assert [t.status.value for t in tasks] == ["delivered"]
    assert len(fake.api_requests("imagine")) == 1
    results = [m for m in telegram.bot_messages(CHAT) if m.reply_markup and m.photo]
    assert len(results) == 1


async def test_a_task_cancelled_at_the_proxy_is_told_as_such(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeMjProxy(flavour="trueai", api_secret=SECRET, run_seconds=30.0)
    async with mj_bot(tmp_path, telegram, fake) as bot:
        ask = telegram.user_message(CHAT, USER, "/imagine a slow glacier")
        for _ in range(300):
            if fake.tasks:
                break
            await asyncio.sleep(0.01)
        [task_id] = list(fake.tasks)
        fake.cancel(task_id)  # e.g. the operator cancelled it in the proxy; its notifyHook says so
        await telegram.wait_for_message(CHAT, lambda m: "cancelled at the vendor" in (m.text or ""),
                                        after_message_id=ask["message_id"], timeout=20)
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert [(t.status.value, t.error_kind) for t in tasks] == [("failed", "cancelled_at_vendor")]
