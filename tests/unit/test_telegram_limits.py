"""The rate limiter meters messages only, and knows how many wait for a slot."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from telegram.error import RetryAfter

from bot.telegram_limits import BUSY_LINGER_SECONDS, TelegramRateLimiter, is_message_method, send_or_react, telegram_busy

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")


@pytest.mark.parametrize(
    ("endpoint", "counted"),
    [
        ("sendMessage", True), ("sendPhoto", True), ("sendMediaGroup", True), ("editMessageText", True),
        ("deleteMessage", True), ("copyMessage", True), ("forwardMessage", True), ("stopPoll", True),
        ("sendChatAction", False), ("setMessageReaction", False), ("answerCallbackQuery", False),
        ("getFile", False), ("getUpdates", False), ("setMyCommands", False),
    ],
)
def test_what_counts_as_a_message(endpoint: str, counted: bool) -> None:
    assert is_message_method(endpoint) is counted


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_messages_queue_and_are_counted_while_other_calls_pass() -> None:
    limiter = TelegramRateLimiter(overall_max_rate=1, max_retries=0)  # one message per second
    await limiter.initialize()
    started: list[str] = []

    async def call(name: str) -> bool:
        started.append(name)
        return True

    def request(name: str, endpoint: str) -> Any:
        return limiter.process_request(call, (name,), {}, endpoint, {"chat_id": 5}, None)

    queued = [asyncio.create_task(request(f"m{i}", "sendMessage")) for i in range(4)]
    await settle()
    try:
        assert started == ["m0"]  # the rest wait for their slot
        assert limiter.waiting == 3 and limiter.busy
        # Not a message: it does not queue behind them.
        assert await request("reaction", "setMessageReaction") is True
        assert await request("typing", "sendChatAction") is True
        assert started == ["m0", "reaction", "typing"]
    finally:
        for job in queued:
            job.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
    assert limiter.waiting == 0  # cancelled requests leave the count
    assert limiter.busy  # for a moment yet: "busy" does not flicker between bursts
    limiter._backlog_at -= BUSY_LINGER_SECONDS
    assert not limiter.busy


async def test_a_message_told_to_retry_after_counts_as_waiting_again() -> None:
    limiter = TelegramRateLimiter(max_retries=1)
    await limiter.initialize()
    calls = 0

    async def flooded() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RetryAfter(1)
        return True

    job = asyncio.create_task(limiter.process_request(flooded, (), {}, "sendPhoto", {"chat_id": 5}, None))
    await settle()
    assert calls == 1 and limiter.waiting == 1  # sleeping out Telegram's retry_after
    assert await job is True
    assert calls == 2 and limiter.waiting == 0


class _Bot:
    def __init__(self, limiter: object) -> None:
        self.rate_limiter = limiter


async def test_send_or_react_reacts_only_when_the_message_is_held_back() -> None:
    limiter = TelegramRateLimiter(overall_max_rate=1, max_retries=0)
    await limiter.initialize()
    bot = _Bot(limiter)
    sent: list[str] = []

    async def post(text: str) -> str:
        sent.append(text)
        return text

    def message(text: str) -> Any:
        return limiter.process_request(post, (text,), {}, "sendMessage", {"chat_id": 5}, None)

    async def react() -> None:
        sent.append("👀")

    # A free slot: the message goes at once, no reaction.
    assert await send_or_react(bot, message("first"), react) == "first"  # type: ignore[arg-type]
    assert sent == ["first"] and not telegram_busy(bot)  # type: ignore[arg-type]
    # The slot is taken for the next second: the reaction instead, and the
    # message is dropped before it takes a slot.
    assert await send_or_react(bot, message("second"), react) is None  # type: ignore[arg-type]
    await settle()
    assert sent == ["first", "👀"] and limiter.waiting == 0
    await asyncio.sleep(1.1)
    assert sent == ["first", "👀"]  # never sent later either


async def test_busy_needs_a_backlog_of_this_limiter() -> None:
    limiter = TelegramRateLimiter(overall_max_rate=1, max_retries=0)
    await limiter.initialize()
    assert not telegram_busy(_Bot(limiter))  # type: ignore[arg-type]
    assert not telegram_busy(_Bot(None))  # type: ignore[arg-type]

    async def post() -> bool:
        return True

    queued = [
        asyncio.create_task(limiter.process_request(post, (), {}, "editMessageText", {"chat_id": 5}, None))
        for _ in range(4)
    ]
    await settle()
    assert telegram_busy(_Bot(limiter))  # type: ignore[arg-type]  # three wait behind the first
    for job in queued:
        job.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
