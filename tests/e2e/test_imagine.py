"""A user asks for an image and gets it: status message, photo, keyboard."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.e2e.conftest import ZHIQITE_APP_CODE, make_settings, running_bot
from tests.e2e.helpers import image_size, settled, texts_shown
from tests.e2e.test_vendors import assert_no_secrets
from tests.fakes.telegram import FakeTelegram
from tests.fakes.zhiqite import FakeZhiqite

CHAT = USER = 4242


def photos(telegram: FakeTelegram, chat_id: int) -> list:
    return [m for m in telegram.bot_messages(chat_id) if m.photo]


async def test_imagine_with_zhiqite_end_to_end(tmp_path: Path, telegram: FakeTelegram, zhiqite: tuple[FakeZhiqite, str]) -> None:
    vendor, vendor_url = zhiqite
    settings = make_settings(tmp_path, telegram, zhiqite_app_code=ZHIQITE_APP_CODE, zhiqite_base_url=vendor_url)
    async with running_bot(settings):
        request = telegram.user_message(CHAT, USER, "/imagine a red fox --ar 16:9")
        status = await telegram.wait_for_message(CHAT, lambda m: m.text and "a red fox" in m.text)
        assert status.reply_to_message_id == request["message_id"]
        result = await telegram.wait_for_message(CHAT, lambda m: m.photo, timeout=15)

        assert "a red fox" in result.caption
        assert "#1" in result.caption
        assert result.reply_to_message_id == request["message_id"]
        assert result.button_texts == ["⬆️ Upscale", "🎲 Vary", "🔄 Reroll"]
        width, height = result.photo[-1]["width"], result.photo[-1]["height"]
        assert abs(width / height - 16 / 9) < 0.05
        # One message per job: the status turned into the result, nothing deleted.
        assert result.message_id == status.message_id and not result.deleted
        assert result.edits[-1].method == "editMessageMedia"

        submits = vendor.api_requests("saas/sd/v2/text2image")
        assert len(submits) == 1
        body = submits[0].body
        assert body["prompt"] == "a red fox"
        assert (body["width"], body["height"]) in {(768, 432), (1024, 576)}
    assert len(photos(telegram, CHAT)) == 1
    assert_no_secrets(vendor.requests)


async def test_sandbox_when_no_vendor_is_configured(tmp_path: Path, telegram: FakeTelegram) -> None:
    settings = make_settings(tmp_path, telegram)
    async with running_bot(settings):
        telegram.user_message(CHAT, USER, "/imagine a red fox --ar 16:9")
        result = await telegram.wait_for_message(CHAT, lambda m: m.photo, timeout=15)
    assert "Sandbox" in result.caption
    assert result.button_texts == ["⬆️ Upscale", "🎲 Vary", "🔄 Reroll"]
    assert abs(result.photo[-1]["width"] / result.photo[-1]["height"] - 16 / 9) < 0.05


async def test_four_images_become_one_grid_and_u3_shows_the_third_at_once(
    tmp_path: Path, telegram: FakeTelegram, zhiqite: tuple[FakeZhiqite, str]
) -> None:
    vendor, vendor_url = zhiqite
    settings = make_settings(tmp_path, telegram, zhiqite_app_code=ZHIQITE_APP_CODE, zhiqite_base_url=vendor_url)
    async with running_bot(settings) as bot:
        request = telegram.user_message(CHAT, USER, "/imagine lighthouse at dusk --n 4")
        grid = await telegram.wait_for_message(CHAT, lambda m: m.photo and "U1" in m.button_texts, timeout=15)
        [task] = await bot.store.tasks.recent(USER)
        originals = await bot.store.tasks.images(task.id)
        vendor_calls = len(vendor.requests)
        telegram.press_button(CHAT, USER, grid.message_id, text="U3")
        third = await telegram.wait_for_message(CHAT, lambda m: m.photo, after_message_id=grid.message_id, timeout=10)
        telegram.press_button(CHAT, USER, grid.message_id, text="🗂 All, full size")
        await telegram.wait_for(lambda: len([m for m in telegram.bot_messages(CHAT) if m.document]) == 4, timeout=10)
        calls_after = len(vendor.requests)
    # One message for the job: the status became the 2×2 grid, with the buttons on it.
    assert grid.reply_to_message_id == request["message_id"]
    assert grid.button_texts == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "🔄", "🗂 All, full size"]
    assert grid.edits and grid.edits[-1].method == "editMessageMedia"
    width, height = image_size(telegram, grid)
    assert (width, height) == (originals[0].width * 2, originals[0].height * 2) or max(width, height) == 2048
    # U3 is the third original itself, at full size, with no vendor request.
    assert third.upload == originals[2].data and third.reply_to_message_id == grid.message_id
    assert third.button_texts == ["⬆️ Upscale", "🎲 Vary", "🔄 Reroll"] and third.caption.startswith("U3 · ")
    assert calls_after == vendor_calls
    documents = [m for m in telegram.bot_messages(CHAT) if m.document]
    assert [m.upload for m in documents] == [o.data for o in originals]


async def test_plain_text_in_private_chat_is_a_prompt(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)):
        telegram.user_message(CHAT, USER, "a quiet harbour")
        result = await telegram.wait_for_message(CHAT, lambda m: m.photo, timeout=15)
    assert "a quiet harbour" in result.caption


async def test_bad_flag_gets_one_line_and_nothing_is_submitted(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        telegram.user_message(CHAT, USER, "/imagine a fox --ar 1:9")
        error = await telegram.wait_for_message(CHAT)
        telegram.user_message(CHAT, USER, "/imagine a fox --n 7")
        error2 = await telegram.wait_for_message(CHAT, after_message_id=error.message_id)
        telegram.user_message(CHAT, USER, "/imagine a fox --colour red")
        error3 = await telegram.wait_for_message(CHAT, after_message_id=error2.message_id)
        assert await bot.store.tasks.recent(USER) == []
    assert "--ar" in error.text and "\n" not in error.text
    assert "--n" in error2.text and "1" in error2.text and "4" in error2.text
    assert "--colour" in error3.text


async def test_progress_is_shown_while_the_vendor_works(tmp_path: Path, telegram: FakeTelegram, zhiqite: tuple[FakeZhiqite, str]) -> None:
    vendor, vendor_url = zhiqite
    vendor.run_seconds = 6.0
    settings = make_settings(tmp_path, telegram, zhiqite_app_code=ZHIQITE_APP_CODE, zhiqite_base_url=vendor_url)
    async with running_bot(settings):
        telegram.user_message(CHAT, USER, "/imagine slow painting")
        status = await telegram.wait_for_message(CHAT, lambda m: m.text and "slow painting" in m.text)
        result = await telegram.wait_for_message(CHAT, lambda m: m.photo and m.reply_markup, timeout=20)
    shown = texts_shown(result)
    assert any("▓" in text and "%" in text for text in shown), shown
    # The vendor's intermediate image went into the status message, which then became the result.
    previews = [c for c in telegram.calls("editMessageMedia", CHAT) if "▓" in str(c.params.get("media"))]
    assert previews and all(p.params["message_id"] == status.message_id for p in previews)
    assert result.message_id == status.message_id and not result.deleted
    assert len(telegram.bot_messages(CHAT, include_deleted=True)) == 1


async def test_chinese_user_gets_chinese_help_and_commands_in_both_languages(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)):
        telegram.user_message(CHAT, USER, "/start", language_code="zh-hans")
        greeting = await telegram.wait_for_message(CHAT)
    assert "你好" in greeting.text
    english = dict(telegram.commands_for("default", ""))
    chinese = dict(telegram.commands_for("default", "zh"))
    assert set(english) == set(chinese) >= {"imagine", "tasks", "help"}
    assert english["imagine"] != chinese["imagine"]


async def test_tasks_lists_the_users_tasks(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)):
        telegram.user_message(CHAT, USER, "/imagine first picture")
        await telegram.wait_for_message(CHAT, lambda m: m.photo, timeout=15)
        last = telegram.last_bot_message(CHAT)
        telegram.user_message(CHAT, USER, "/tasks")
        listing = await telegram.wait_for_message(CHAT, lambda m: m.text and "#1" in m.text, after_message_id=last.message_id)
    assert "first picture" in listing.text
    assert "✅" in listing.text


async def test_telegram_429_on_send_photo_is_retried_once(tmp_path: Path, telegram: FakeTelegram) -> None:
    telegram.fail_next("editMessageMedia", error_code=429, retry_after=1)
    async with running_bot(make_settings(tmp_path, telegram)):
        telegram.user_message(CHAT, USER, "/imagine patient fox")
        await telegram.wait_for_message(CHAT, lambda m: m.photo, timeout=20)
        await telegram.wait_for(lambda: len(telegram.calls("editMessageMedia")) >= 2)
    assert len(photos(telegram, CHAT)) == 1 and not telegram.calls("sendPhoto")


async def test_vendor_callback_delivers_the_result(tmp_path: Path, telegram: FakeTelegram, zhiqite: tuple[FakeZhiqite, str]) -> None:
    from tests.e2e.conftest import free_port

    vendor, vendor_url = zhiqite
    vendor.callback_delay_scale = 0.01
    port = free_port()
    settings = make_settings(
        tmp_path, telegram, zhiqite_app_code=ZHIQITE_APP_CODE, zhiqite_base_url=vendor_url,
        http_port=port, public_base_url=f"http://127.0.0.1:{port}",
    )
    async with running_bot(settings):
        telegram.user_message(CHAT, USER, "/imagine called back")
        await telegram.wait_for_message(CHAT, lambda m: m.photo, timeout=15)
        callbacks = await vendor.wait_for_callbacks(1)
    assert callbacks[0].accepted and json.loads(callbacks[0].answer) == {"code": "200"}
    body = vendor.api_requests("saas/sd/v2/text2image")[0].body
    assert body["callbackUrl"].startswith(f"http://127.0.0.1:{port}/callbacks/zhiqite/")
    # With a callback on its way, the poller stays quiet.
    assert len(vendor.api_requests("saas/sd/v2/queryTaskInfo")) <= 1


async def test_a_photo_telegram_refuses_goes_as_a_document(tmp_path: Path, telegram: FakeTelegram) -> None:
    telegram.fail_next("editMessageMedia", error_code=400, description="Bad Request: PHOTO_INVALID_DIMENSIONS")
    async with running_bot(make_settings(tmp_path, telegram)):
        telegram.user_message(CHAT, USER, "/imagine a very long scroll")
        result = await telegram.wait_for_message(CHAT, lambda m: m.document is not None, timeout=15)
        await telegram.wait_for(lambda: len(telegram.bot_messages(CHAT)) == 1)  # the status went
    assert not telegram.calls("sendPhoto")  # refused as a photo once: not tried again
    assert result.document["file_name"].endswith(".png")
    assert "a very long scroll" in result.caption
    assert result.button_texts == ["⬆️ Upscale", "🎲 Vary", "🔄 Reroll"]
    assert not photos(telegram, CHAT)


async def test_a_burst_past_telegrams_message_limit_is_acknowledged_by_reactions(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    """Forty people ask within the same instant: more status messages than
    Telegram's 30 messages/s let out at once. Those whose status would wait
    for a slot get a 👀 reaction on the request instead (not a message, so
    not held back); everyone gets one or the other at once."""
    users = list(range(910_001, 910_041))
    settings = make_settings(tmp_path, telegram, sandbox_job_seconds=30.0)
    async with running_bot(settings):
        await telegram.wait_for(lambda: telegram.calls("getUpdates"))
        requests = {user: telegram.user_message(user, user, f"/imagine a crowd, person {user}") for user in users}
        for user in users:
            await telegram.wait_for(
                lambda u=user: telegram.bot_messages(u) or telegram.message(u, requests[u]["message_id"]).bot_reactions,
                timeout=10,
            )
        await asyncio.sleep(1.5)  # room for a held-back status to arrive after all (it must not)
    reacted = [user for user in users if telegram.message(user, requests[user]["message_id"]).bot_reactions]
    assert 3 <= len(reacted) < len(users), reacted  # only those held back, and some were
    for user in users:
        reactions = telegram.message(user, requests[user]["message_id"]).bot_reactions
        statuses = telegram.calls("sendMessage", user)
        assert (reactions, len(statuses)) in (([{"type": "emoji", "emoji": "👀"}], 0), ([], 1)), (user, reactions, statuses)


async def test_under_load_the_reaction_is_the_acknowledgement_and_the_result_the_only_message(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    """Seventy people at once: once Telegram's message budget holds messages
    back, a request gets 👀 instead of a status message, and its result is the
    only message of its job. Nobody is left without an answer, nobody gets two."""
    users = list(range(920_001, 920_071))
    settings = make_settings(tmp_path, telegram, sandbox_job_seconds=2.0)
    async with running_bot(settings) as bot:
        await telegram.wait_for(lambda: telegram.calls("getUpdates"))
        requests = {user: telegram.user_message(user, user, f"/imagine a crowd, person {user}") for user in users[:40]}
        await telegram.wait_for(lambda: len(telegram.calls("sendMessage")) >= 30, timeout=10)
        requests |= {user: telegram.user_message(user, user, f"/imagine a crowd, person {user}") for user in users[40:]}
        for user in users:
            await telegram.wait_for_message(user, lambda m: bool(m.photo and m.reply_markup), timeout=40)
        tasks = [task for user in users for task in await settled(bot, user)]
    assert [t.status.value for t in tasks] == ["delivered"] * len(users)
    quiet = [u for u in users if not telegram.calls("sendMessage", u)]
    assert quiet, "the budget never held a message back: the test proves nothing"
    for user in users:
        messages = telegram.bot_messages(user, include_deleted=True)
        assert len(messages) == 1, (user, [m.summary() for m in messages])  # one message per job, always
        if user in quiet:  # no status message: the 👀 said "heard you"
            assert telegram.message(user, requests[user]["message_id"]).bot_reactions == [{"type": "emoji", "emoji": "👀"}]
