"""Telegram faults through the real bot: 429 retry_after honoured on sends
and edits (by PTB's rate limiter, and by the engine once those retries run
out), flood limits, 5xx answers and dropped connections on sendPhoto
retried with the result delivered exactly once, redelivered updates
processed once, a slow acknowledgement, and a user who blocked the bot."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from bot.app import webhook_secret
from bot.i18n import t
from tests.e2e.conftest import TOKEN, ZHIQITE_APP_CODE, make_settings, running_bot
from tests.e2e.helpers import photos, result_after
from tests.fakes.server import serve
from tests.fakes.telegram import ApiCall, FakeTelegram
from tests.fakes.zhiqite import FakeZhiqite
from tests.reliability.support import Gate, ResetProxy, bot_with, final_task, texts

A, B, C = 6301, 6302, 6303  # private chats: chat id = user id
NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


def _identity(call: ApiCall) -> tuple:
    p = call.params
    return (call.method, call.chat_id, p.get("message_id"), p.get("text"), p.get("caption"))


def retries_after_429(telegram: FakeTelegram) -> list[tuple[ApiCall, ApiCall | None]]:
    """Each request answered 429, with the next request that repeats it (same
    method, chat, message and text or caption)."""
    pairs = []
    for index, call in enumerate(telegram.requests):
        if call.status == 429:
            again = (c for c in telegram.requests[index + 1:] if _identity(c) == _identity(call))
            pairs.append((call, next(again, None)))
    return pairs


def assert_retry_after_honoured(telegram: FakeTelegram) -> None:
    pairs = retries_after_429(telegram)
    assert pairs, "no 429 was answered"
    for refused, retry in pairs:
        match = re.search(r"retry after (\d+)", refused.error or "")
        assert match, refused.error
        assert retry is not None, f"{refused.method} to {refused.chat_id} was never sent again"
        gap = retry.timestamp - refused.timestamp
        assert gap >= float(match[1]), f"{refused.method} to {refused.chat_id} sent again {gap:.2f} s after 'retry after {match[1]}'"


async def test_429_is_honoured_on_sends_and_edits(tmp_path: Path, telegram: FakeTelegram) -> None:
    """The acknowledgement (sendMessage), the failure notice or a progress
    edit (editMessageText) and the result edited into the status
    (editMessageMedia, four times in a row: PTB's three retries run out and
    the engine reschedules) are each answered 429 with retry_after; nothing
    is sent again earlier, and each user ends with exactly one outcome. (An
    acknowledgement Telegram holds back becomes a 👀 reaction instead.)"""
    fake = FakeZhiqite(app_code=ZHIQITE_APP_CODE, queue_seconds=0.1, run_seconds=1.5, callback_delay_scale=0.02)
    fake.moderate_next()  # B's job ends with every image removed: a failure notice, edited into the status
    telegram.fail_next("sendMessage", 429, retry_after=1)
    telegram.fail_next("editMessageText", 429, retry_after=1)
    telegram.fail_next("editMessageMedia", 429, retry_after=1, times=4)
    async with serve(fake.app) as url:
        # A's job outlasts its delayed acknowledgement, so its result goes into that status message.
        settings = {"zhiqite_app_code": ZHIQITE_APP_CODE, "zhiqite_base_url": url, "sandbox_enabled": True, "sandbox_job_seconds": 2.5}
        async with bot_with(tmp_path, telegram, **settings) as bot:
            telegram.user_message(A, A, "/imagine a rate-limited sunrise --provider sandbox")
            telegram.user_message(B, B, "/imagine a rate-limited sunset --provider zhiqite")
            [a_task] = await final_task(bot, A, timeout=15)
            [b_task] = await final_task(bot, B, timeout=15)
            await asyncio.sleep(0.3)
        await fake.aclose()
    assert a_task.status.value == "delivered" and len(photos(telegram, A)) == 1
    assert b_task.status.value == "failed" and b_task.error_kind == "rejected"
    assert sum(t("en", "fail_rejected") in text for text in texts(telegram, B)) == 1
    refused = {call.method for call, _ in retries_after_429(telegram)}
    assert {"sendMessage", "editMessageMedia"} <= refused <= {"sendMessage", "editMessageText", "editMessageMedia"}, refused
    # Four in a row (a progress preview may have drawn one of them: it is retried as well).
    assert len([c for c in telegram.calls("editMessageMedia") if c.status == 429]) == 4
    assert [c for c in telegram.calls("editMessageMedia", A) if c.params.get("reply_markup") and c.status == 200]
    assert_retry_after_honoured(telegram)


async def test_a_lost_acknowledgement_costs_the_status_message_not_the_task(tmp_path: Path, telegram: FakeTelegram) -> None:
    """Telegram answers the status message with a 500: the status message is
    gone, but the task goes on and the result arrives, with no 'something went
    wrong' for a request that went right."""
    telegram.fail_next("sendMessage", 500)
    async with bot_with(tmp_path, telegram, sandbox_job_seconds=0.3) as bot:
        request = telegram.user_message(A, A, "/imagine a status message lost on the way")
        result = await result_after(telegram, A, request["message_id"])
        [task] = await final_task(bot, A)
    assert task.status.value == "delivered" and task.status_message_id is None
    assert [m.message_id for m in telegram.bot_messages(A)] == [result.message_id]
    assert not any(t("en", "err_internal") in text for text in texts(telegram, A))


async def test_flood_limits_are_honoured_and_nothing_is_lost_or_doubled(tmp_path: Path) -> None:
    """Telegram's real flood control (the fake enforces it: ~1 message/s per
    private chat with short bursts, 20/min per group): three requests at once
    in a private chat and five in a group make far more messages than that,
    even at one message per job."""
    telegram = FakeTelegram(TOKEN, enforce_flood_limits=True)
    group = -100777
    async with telegram.serve(), running_bot(make_settings(tmp_path, telegram, max_active_tasks_per_user=5)) as bot:
        for n in range(5):
            telegram.user_message(A, A, f"/imagine flood {n}")
            telegram.user_message(group, B, f"/imagine group flood {n}")
        await telegram.wait_for(lambda: len(photos(telegram, A)) >= 5 and len(photos(telegram, group)) >= 5, timeout=40)
        tasks = await final_task(bot, A, timeout=10, count=5) + await final_task(bot, B, timeout=10, count=5)
        await asyncio.sleep(0.5)
    assert telegram.calls(ok=False), "the fake never enforced a limit: the test proves nothing"
    assert [t.status.value for t in tasks] == ["delivered"] * 10
    assert len(photos(telegram, A)) == 5 and len(photos(telegram, group)) == 5
    assert_retry_after_honoured(telegram)


async def test_5xx_and_dropped_connections_on_send_photo_are_retried_once_delivered(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    """A's first sendPhoto never gets an answer (the connection is reset
    after the request was read, before Telegram handled it); B's is answered
    by nginx with a 502 page. Both are retried and each lands exactly once.
    (The results go into the status messages: editMessageMedia; a result's
    caption names its task, a progress preview's does not.)"""
    gate = Gate(telegram.app)
    gate.answer_next("/editMessageMedia", 502, {"Content-Type": "text/html"}, NGINX_502, marker="task #2")
    async with serve(gate) as gated, ResetProxy(gated) as proxy:
        proxy.reset_next("/editMessageMedia", marker="task #1")
        async with bot_with(tmp_path, telegram, public=False, telegram_api_url=proxy.url) as bot:
            telegram.user_message(A, A, "/imagine a dropped-line harbour")
            telegram.user_message(B, B, "/imagine a bad-gateway harbour")
            [a_task] = await final_task(bot, A, timeout=12)
            [b_task] = await final_task(bot, B, timeout=12)
            await asyncio.sleep(0.3)
    assert len(proxy.resets) == 1 and len(gate.answered) == 1
    assert a_task.status.value == "delivered" and b_task.status.value == "delivered"
    assert len(photos(telegram, A)) == 1 and len(photos(telegram, B)) == 1
    results = {chat: [c for c in telegram.calls("editMessageMedia", chat) if c.params.get("reply_markup")] for chat in (A, B)}
    assert len(results[A]) == 1  # the reset one never reached Telegram
    assert len(results[B]) == 1  # the 502 one was stopped at the gateway
    assert [m.message_id for m in telegram.bot_messages(A, include_deleted=True)] == [results[A][0].params["message_id"]]


async def test_the_same_message_delivered_twice_starts_one_task(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        message = telegram.user_message(A, A, "/imagine a message seen twice")
        telegram.inject_update("message", message)  # a second update carrying the same message
        await result_after(telegram, A, message["message_id"])
        [task] = await final_task(bot, A)
        await asyncio.sleep(0.5)
    assert task.status.value == "delivered"
    assert len(photos(telegram, A)) == 1
    assert len(telegram.calls("sendMessage", A)) == 1  # one acknowledgement


async def test_webhook_update_redelivered_after_a_restart_is_processed_once(tmp_path: Path, telegram: FakeTelegram) -> None:
    """Telegram redelivers an update it has no 200 for; after a restart the
    bot has forgotten which update ids it saw, so the task table must catch it."""
    settings = make_settings(tmp_path, telegram, telegram_webhook_url="https://bot.example.org/telegram/hook")
    headers = {"X-Telegram-Bot-Api-Secret-Token": webhook_secret(settings)}
    telegram.user_message(A, A, "/imagine a webhook lantern")
    update = telegram.pending_updates()[-1]
    async with httpx.AsyncClient() as client:
        async with running_bot(settings) as bot:
            first = await client.post(f"http://127.0.0.1:{bot.web.port}/telegram/hook", json=update, headers=headers)  # type: ignore[union-attr]
            await telegram.wait_for(lambda: photos(telegram, A), timeout=10)
            await final_task(bot, A)
        async with running_bot(settings) as bot:
            again = await client.post(f"http://127.0.0.1:{bot.web.port}/telegram/hook", json=update, headers=headers)  # type: ignore[union-attr]
            await asyncio.sleep(0.7)  # an acknowledgement would be out by now
            tasks = await bot.store.tasks.recent(A)  # type: ignore[union-attr]
    assert first.status_code == again.status_code == 200
    assert len(tasks) == 1 and tasks[0].status.value == "delivered"
    assert len(photos(telegram, A)) == 1
    assert len(telegram.calls("sendMessage", A)) == 1


async def test_a_user_who_blocked_the_bot_does_not_wedge_it(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram, sandbox_job_seconds=1.0)) as bot:
        telegram.user_message(A, A, "/imagine something for a user who leaves")
        await telegram.wait_for_message(A)  # acknowledged
        telegram.block_bot(A)  # every send to A is now 403 Forbidden
        telegram.user_message(B, B, "/imagine something for a user who stays")
        [a_task] = await final_task(bot, A, timeout=10)
        b_result = await result_after(telegram, B, 0, timeout=10)
        telegram.user_message(C, C, "/imagine and one more afterwards")  # the engine still works
        c_result = await result_after(telegram, C, 0, timeout=10)
    assert a_task.status.value == "failed" and a_task.error_kind == "cannot_deliver"
    results_tried = [c for c in telegram.calls("editMessageMedia", A) if c.params.get("reply_markup")]
    assert len(results_tried) == 1  # a 403 is final: not retried (the others are progress previews)
    assert not photos(telegram, A)
    assert b_result.photo and c_result.photo


async def test_a_slow_acknowledgement_leaves_no_stale_status(tmp_path: Path, telegram: FakeTelegram, fast_zhiqite) -> None:
    """Telegram takes 1.5 s to answer the acknowledgement (the message is
    there at once; the bot learns its id late). Meanwhile A's task finishes
    and B's fails. The "⏳ Queued" acknowledgement must not stay in either
    chat beside the outcome, claiming the task is still waiting."""
    fake, url, _ = fast_zhiqite
    fake.fail_next("sensitive")
    telegram.slow_next("sendMessage", 1.5, times=2)
    settings = {"zhiqite_app_code": ZHIQITE_APP_CODE, "zhiqite_base_url": url, "sandbox_enabled": True, "sandbox_job_seconds": 0.5}
    async with bot_with(tmp_path, telegram, **settings) as bot:
        telegram.user_message(A, A, "/imagine a quick fox --provider sandbox")
        telegram.user_message(B, B, "/imagine a refused fox --provider zhiqite")
        [a_task] = await final_task(bot, A, timeout=10)
        [b_task] = await final_task(bot, B, timeout=10)
        await asyncio.sleep(2.0)  # the late answers have come back and been recorded
    assert a_task.status.value == "delivered" and b_task.status.value == "failed"
    stale = {chat: [text for text in texts(telegram, chat) if text.startswith("⏳")] for chat in (A, B)}
    assert stale == {A: [], B: []}, f"status messages still saying 'queued' after the task ended: {stale}"
