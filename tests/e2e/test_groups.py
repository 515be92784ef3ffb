"""Groups with privacy mode on: commands for other bots are ignored, a
mention is answered as a reply, replies to the bot edit its image, admins
decide who may press buttons; and Telegram's flood limits are never hit."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path


from tests.e2e.conftest import TOKEN, make_settings, running_bot
from tests.e2e.helpers import first_text, photos, result_after
from tests.fakes.telegram import FakeTelegram

GROUP = -1001234567890
ALICE, BOB, ADMIN = 11, 12, 13
BOT = "drawbridge_test_bot"


async def test_commands_for_other_bots_are_ignored_and_mentions_answered(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        telegram.user_message(GROUP, ALICE, "/imagine@otherbot a fox", chat_title="Painters")
        telegram.user_message(GROUP, ALICE, "just chatting about foxes")
        mention = telegram.user_message(GROUP, ALICE, f"@{BOT} a red fox in the snow")
        status = await telegram.wait_for_message(GROUP)
        result = await result_after(telegram, GROUP, mention["message_id"])
        command = telegram.user_message(GROUP, BOB, f"/imagine@{BOT} a blue whale")
        second = await telegram.wait_for_message(GROUP, lambda m: m.photo and "blue whale" in m.caption, timeout=15)
        prompts = sorted(t.params["prompt"] for t in await bot.store.tasks.recent(ALICE) + await bot.store.tasks.recent(BOB))
    assert prompts == ["a blue whale", "a red fox in the snow"]
    assert status.reply_to_message_id == mention["message_id"]
    assert result.reply_to_message_id == mention["message_id"]
    assert second.reply_to_message_id == command["message_id"]
    assert "a red fox in the snow" in result.caption and f"@{BOT}" not in result.caption
    # One message per job: the status became the result, nothing was deleted.
    assert result.message_id == status.message_id
    assert telegram.bot_messages(GROUP, include_deleted=True) == telegram.bot_messages(GROUP)  # nothing deleted
    assert len(telegram.bot_messages(GROUP)) == 2


async def test_reply_to_the_bots_image_edits_it(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        telegram.user_message(GROUP, ALICE, f"/imagine@{BOT} a castle", chat_title="Painters")
        castle = await telegram.wait_for_message(GROUP, lambda m: m.photo, timeout=15)
        ask = telegram.user_message(GROUP, BOB, "make it night time", reply_to_message_id=castle.message_id)
        edited = await result_after(telegram, GROUP, ask["message_id"])
        task = (await bot.store.tasks.recent(BOB))[0]
    assert task.kind == "edit" and task.inputs[0]["file_id"] == castle.file_id
    assert edited.reply_to_message_id == ask["message_id"]


async def test_admin_limits_buttons_to_the_requester(tmp_path: Path, telegram: FakeTelegram) -> None:
    telegram.set_chat_admin(GROUP, ADMIN)
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        telegram.user_message(GROUP, ALICE, f"/imagine@{BOT} a kite", chat_title="Painters")
        kite = await telegram.wait_for_message(GROUP, lambda m: m.photo, timeout=15)

        telegram.user_message(GROUP, BOB, f"/settings@{BOT}")
        panel = await telegram.wait_for_message(GROUP, lambda m: m.reply_markup and "requester" in m.button_texts)
        telegram.press_button(GROUP, BOB, panel.message_id, text="requester")  # not an admin
        await telegram.wait_for(lambda: len(telegram.callback_answers) == 1)
        assert (await bot.store.accounts.chat(GROUP)).buttons_policy == "anyone"
        telegram.press_button(GROUP, ADMIN, panel.message_id, text="requester")
        await telegram.wait_for(lambda: len(telegram.callback_answers) == 2)
        assert (await bot.store.accounts.chat(GROUP)).buttons_policy == "requester"

        telegram.press_button(GROUP, BOB, kite.message_id, text="⬆️ Upscale")
        await telegram.wait_for(lambda: len(telegram.callback_answers) == 3)
        assert await bot.store.tasks.recent(BOB) == []
        telegram.press_button(GROUP, ALICE, kite.message_id, text="⬆️ Upscale")
        await result_after(telegram, GROUP, kite.message_id)
        assert [t.kind for t in await bot.store.tasks.recent(ALICE)] == ["upscale", "txt2img"]
    refusals = [a for a in telegram.callback_answers if a.show_alert]
    assert len(refusals) == 2
    assert "admins" in refusals[0].text and "person who asked" in refusals[1].text


async def test_chinese_user_sees_chinese(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)):
        telegram.user_message(GROUP, ALICE, f"/imagine@{BOT} 一只猫 --n 7", language_code="zh-hans", chat_title="画室")
        error = await telegram.wait_for_message(GROUP)
        telegram.user_message(GROUP, ALICE, f"/imagine@{BOT} 一只猫", language_code="zh-hans")
        status = await telegram.wait_for_message(GROUP, after_message_id=error.message_id)
        result = await result_after(telegram, GROUP, error.message_id)
    assert "整数" in error.text
    assert "排队" in first_text(status) or "绘制" in first_text(status)
    assert "任务 #1" in result.caption and "沙盒" in result.caption
    assert result.button_texts == ["⬆️ 放大", "🎲 变体", "🔄 重新生成"]


async def test_flood_limits_are_never_hit(tmp_path: Path) -> None:
    """Several tasks in a group and in a private chat at once, against a
    fake that answers 429 the moment a per-chat or per-group limit is
    passed: the bot's own pacing keeps every call inside the limits."""
    telegram = FakeTelegram(TOKEN, enforce_flood_limits=True)
    async with telegram.serve():
        settings = make_settings(tmp_path, telegram, sandbox_job_seconds=6.0, max_active_tasks_per_user=5)
        async with running_bot(settings):
            for n in range(3):
                telegram.user_message(GROUP, ALICE + n, f"/imagine@{BOT} group picture {n} --n 2", chat_title="Painters")
                telegram.user_message(500 + n, 500 + n, f"/imagine private picture {n}")
            # Each --n 2 job is one grid photo: its status message, edited.
            await telegram.wait_for(lambda: len([m for m in photos(telegram, GROUP) if "U1" in m.button_texts]) == 3, timeout=40)
            await telegram.wait_for(lambda: all(photos(telegram, 500 + n) for n in range(3)), timeout=20)
            await asyncio.sleep(1)
    writes = [c for c in telegram.requests if c.method.startswith(("send", "edit", "delete"))]
    assert not [c for c in writes if c.status == 429], "the bot ran into Telegram's flood control"
    group = sorted(c.timestamp for c in writes if c.chat_id == GROUP)
    busiest_minute = max(sum(1 for u in group if t <= u < t + 60) for t in group)
    per_second = Counter(int(c.timestamp) for c in writes if c.chat_id == 500)
    print(f"group: {len(group)} calls, busiest minute {busiest_minute}; private: max {max(per_second.values())}/s")
    assert busiest_minute <= 20
