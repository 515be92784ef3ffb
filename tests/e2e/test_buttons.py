"""Result buttons: U/V on a grid, upscale on a single image, a double tap,
a press after a restart, a forged callback, /task resend, /cancel."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.e2e.conftest import make_settings, running_bot
from tests.e2e.helpers import image_size, photos, result_after
from tests.fakes.telegram import FakeTelegram

CHAT = USER = 6060


async def grid(telegram: FakeTelegram, prompt: str = "four cats --n 4 --ar 3:2"):  # type: ignore[no-untyped-def]
    telegram.user_message(CHAT, USER, f"/imagine {prompt}")
    return await telegram.wait_for_message(CHAT, lambda m: m.reply_markup and "U1" in m.button_texts, timeout=15)


async def test_u2_and_v3_on_a_grid(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        buttons = await grid(telegram)
        [source] = await bot.store.tasks.recent(USER)
        telegram.press_button(CHAT, USER, buttons.message_id, text="U2")  # the second image, at once
        second = await telegram.wait_for_message(CHAT, lambda m: m.photo, after_message_id=buttons.message_id, timeout=10)
        shown_tasks = await bot.store.tasks.recent(USER)
        telegram.press_button(CHAT, USER, second.message_id, text="⬆️ Upscale")  # that one, at the vendor
        upscaled = await result_after(telegram, CHAT, second.message_id)
        telegram.press_button(CHAT, USER, buttons.message_id, text="V3")
        varied = await telegram.wait_for_message(
            CHAT, lambda m: m.reply_markup and "U1" in m.button_texts, timeout=15, after_message_id=upscaled.message_id
        )
        tasks = {t.kind: t for t in await bot.store.tasks.recent(USER)}
        originals = await bot.store.tasks.images(source.id)
    assert len(shown_tasks) == 1  # U2 made no task: the image was there already
    assert second.upload == originals[1].data and second.caption.startswith("U2 · ")
    assert image_size(telegram, upscaled) == (2 * originals[1].width, 2 * originals[1].height)
    assert upscaled.button_texts == ["⬆️ Upscale", "🎲 Vary", "🔄 Reroll"]
    assert tasks["upscale"].source["index"] == 1 and tasks["variation"].source["index"] == 2
    assert tasks["upscale"].inputs[0]["file_id"] == originals[1].file_id  # the original, not a quarter of the grid
    assert tasks["variation"].inputs[0]["cell"] == 2  # never shown: the grid's third quarter
    assert tasks["variation"].parent_task_id == tasks["txt2img"].id
    assert varied.reply_markup is not None
    answers = [a.text for a in telegram.callback_answers]
    assert all(a.answered for a in telegram.callback_answers)  # every press answered (speed: bench/)
    assert any("task #" in (text or "") for text in answers)


async def test_upscale_on_a_single_image_and_double_tap(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        telegram.user_message(CHAT, USER, "/imagine one owl")
        single = await telegram.wait_for_message(CHAT, lambda m: m.photo, timeout=15)
        telegram.press_button(CHAT, USER, single.message_id, text="⬆️ Upscale")
        telegram.press_button(CHAT, USER, single.message_id, text="⬆️ Upscale")
        upscaled = await result_after(telegram, CHAT, single.message_id)
        await asyncio.sleep(1.5)  # room for a second (wrong) result to appear
        kinds = [t.kind for t in await bot.store.tasks.recent(USER)]
    assert kinds.count("upscale") == 1
    assert len([m for m in photos(telegram, CHAT) if m.message_id > single.message_id]) == 1
    assert image_size(telegram, upscaled) == tuple(2 * s for s in image_size(telegram, single))
    assert any("Already" in (a.text or "") for a in telegram.callback_answers)


async def test_button_pressed_after_a_restart(tmp_path: Path, telegram: FakeTelegram) -> None:
    settings = make_settings(tmp_path, telegram)
    async with running_bot(settings):
        telegram.user_message(CHAT, USER, "/imagine a lighthouse")
        single = await telegram.wait_for_message(CHAT, lambda m: m.photo, timeout=15)
    async with running_bot(settings):
        telegram.press_button(CHAT, USER, single.message_id, text="🔄 Reroll")
        rerolled = await result_after(telegram, CHAT, single.message_id)
    assert "a lighthouse" in rerolled.caption and "#2" in rerolled.caption


async def test_forged_and_foreign_callbacks_are_refused(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        telegram.user_message(CHAT, USER, "/imagine a secret garden")
        single = await telegram.wait_for_message(CHAT, lambda m: m.photo, timeout=15)
        real = single.callback_data[0]
        forged = real.replace("a:1:", "a:2:")
        telegram.press_button(CHAT, USER, single.message_id, forged, check_button=False)
        telegram.press_button(CHAT, USER, single.message_id, "a:1:u1", check_button=False)
        # A real button's data replayed from another chat.
        telegram.user_message(9999, 9999, "/start")
        await telegram.wait_for_message(9999)
        other = telegram.bot_messages(9999)[-1]
        telegram.press_button(9999, 9999, other.message_id, real, check_button=False)
        await telegram.wait_for(lambda: len(telegram.callback_answers) == 3)
        await asyncio.sleep(0.5)
        assert len(await bot.store.tasks.recent(USER)) == 1
        assert await bot.store.tasks.recent(9999) == []
    assert all(a.show_alert and "not valid" in a.text for a in telegram.callback_answers)


async def test_task_resend_and_cancel(tmp_path: Path, telegram: FakeTelegram) -> None:
    settings = make_settings(tmp_path, telegram, sandbox_job_seconds=30.0)
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        telegram.user_message(CHAT, USER, "/imagine a paper boat")
        first = await telegram.wait_for_message(CHAT, lambda m: m.photo, timeout=15)
        ask = telegram.user_message(CHAT, USER, "/task 1")
        details = await telegram.wait_for_message(CHAT, after_message_id=ask["message_id"])
        resent = await result_after(telegram, CHAT, details.message_id)
        other = telegram.user_message(CHAT + 1, USER + 1, "/task 1")
        hidden = await telegram.wait_for_message(CHAT + 1, after_message_id=other["message_id"])
    assert "paper boat" in details.text and "#1" in details.text
    assert resent.file_id == first.file_id  # from Telegram's copy, not the vendor
    assert "no task #1" in hidden.text

    async with running_bot(settings) as bot:
        start = telegram.user_message(CHAT, USER, "/imagine a slow snail")
        status = await telegram.wait_for_message(CHAT, lambda m: m.text and "slow snail" in m.text, after_message_id=start["message_id"])
        task = (await bot.store.tasks.recent(USER))[0]
        cancel = telegram.user_message(CHAT, USER, f"/cancel {task.id}")
        done = await telegram.wait_for_message(CHAT, lambda m: "cancelled" in (m.text or ""), after_message_id=cancel["message_id"])
        await asyncio.sleep(1.0)
        task = await bot.store.tasks.get(task.id)
    assert task is not None and task.status.value == "cancelled"
    assert "cancelled" in telegram.message(CHAT, status.message_id).text
    assert f"#{task.id}" in done.text
