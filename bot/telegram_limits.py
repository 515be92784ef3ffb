"""Telegram's flood limits, applied to what they are about: messages.

PTB's AIORateLimiter sends every request that names a chat through its
overall limiter (30 per second). Telegram's caps are on messages (sending,
editing, deleting); a reaction or a chat action is not one, and must not
wait behind a queue of photos and progress edits. This limiter keeps PTB's
(limits and 429 retries) for messages, lets the rest through unmetered, and
tells how many messages are waiting for a slot, so the bot can degrade
gracefully under load: acknowledge with a reaction first, skip progress edits.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from telegram import Bot
from telegram.error import RetryAfter
from telegram.ext import AIORateLimiter

# Methods that produce, change or remove a message in a chat.
_MESSAGE_PREFIXES = ("send", "edit", "delete", "copy", "forward", "stop")
# "send…" methods that do not: chat actions have their own, far laxer limit.
_NOT_MESSAGES = frozenset({"sendchataction"})

T = TypeVar("T")

# With this many messages waiting, a new one would wait about 0.1 s or more:
# progress edits (best effort) are skipped.
BACKLOG_FOR_PROGRESS = 3
# Still "busy" this long after the last backlog: new requests are then
# acknowledged by a reaction alone, and their result is their one message.
BUSY_LINGER_SECONDS = 2.0


def is_message_method(endpoint: str) -> bool:
    lower = endpoint.lower()
    return lower.startswith(_MESSAGE_PREFIXES) and lower not in _NOT_MESSAGES


class TelegramRateLimiter(AIORateLimiter):
    def __init__(self, *, max_retries: int = 3, overall_max_rate: float = 30, group_max_rate: float = 20) -> None:
        super().__init__(overall_max_rate=overall_max_rate, group_max_rate=group_max_rate, max_retries=max_retries)
        # asyncio task → its message requests not yet on the wire (a PTB
        # call runs inside the caller's task, so the task names the caller).
        self._queued: collections.Counter[asyncio.Task[Any] | None] = collections.Counter()
        self._backlog_at = -BUSY_LINGER_SECONDS  # when messages last queued up

    @property
    def waiting(self) -> int:
        """Messages queued behind the limits (or a 429's retry_after) now."""
        return self._queued.total()

    @property
    def busy(self) -> bool:
        """A message sent now would wait for its slot noticeably, or did a
        moment ago: under steady load the queue empties for an instant
        between bursts, and "busy" should not flicker with it."""
        if self.waiting >= BACKLOG_FOR_PROGRESS:
            self._backlog_at = time.monotonic()
            return True
        return time.monotonic() - self._backlog_at < BUSY_LINGER_SECONDS

    def holds(self, task: asyncio.Task[Any]) -> bool:
        """True while a message sent by ``task`` waits for its slot."""
        return self._queued[task] > 0

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        if not is_message_method(endpoint):
            # PTB meters a request only when it names a chat: without the
            # chat_id it keeps just the 429 handling.
            unmetered = {key: value for key, value in data.items() if key != "chat_id"}
            return await super().process_request(callback, args, kwargs, endpoint, unmetered, rate_limit_args)

        caller = asyncio.current_task()
        queued = True
        self._queued[caller] += 1
        if self.waiting >= BACKLOG_FOR_PROGRESS:
            self._backlog_at = time.monotonic()

        def leave_queue() -> None:
            nonlocal queued
            queued = False
            self._queued[caller] -= 1
            if self._queued[caller] <= 0:
                del self._queued[caller]

        async def on_the_wire(*call_args: Any, **call_kwargs: Any) -> Any:
            nonlocal queued
            if queued:
                leave_queue()
            try:
                return await callback(*call_args, **call_kwargs)
            except RetryAfter:
                queued = True  # back in the queue until Telegram's retry_after
                self._queued[caller] += 1
                raise

        try:
            return await super().process_request(on_the_wire, args, kwargs, endpoint, data, rate_limit_args)
        finally:
            if queued:
                leave_queue()


def telegram_busy(bot: Bot) -> bool:
    """True when ``bot``'s messages queue up behind Telegram's limits."""
    limiter = getattr(bot, "rate_limiter", None)
    return isinstance(limiter, TelegramRateLimiter) and limiter.busy


async def send_or_react(bot: Bot, send: Awaitable[T], react: Callable[[], Awaitable[object]]) -> T | None:
    """Send a message; if Telegram's limits hold it back, ``react`` instead
    (say, put a reaction on the request; best effort, it should not raise)
    and drop the message before it takes a slot: the budget is what limits
    the bot now, and it goes to results. None when it reacted."""
    job = asyncio.ensure_future(send)
    try:
        await asyncio.sleep(0)  # the send runs until it is on the wire or queued for a slot
        limiter = getattr(bot, "rate_limiter", None)
        if isinstance(limiter, TelegramRateLimiter) and limiter.holds(job):
            job.cancel()  # still queued: it never reaches Telegram
            await react()
            return None
        return await job
    finally:
        if not job.done():
            job.cancel()
