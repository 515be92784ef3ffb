"""Turning a validated request into a stored, acknowledged task. Shared by
every handler that starts work; nothing here waits for a vendor."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from telegram import Message
from telegram.constants import ParseMode, ReactionEmoji
from telegram.error import TelegramError

from bot.engine.delivery import failure_notice
from bot.engine.progress import status_text
from bot.handlers.common import Requester, reply
from bot.handlers.images import choose_capability
from bot.i18n import t
from bot.services import Services
from bot.telegram_limits import send_or_react, telegram_busy
from providers.registry import RoutingError
from providers.types import Capability, GenerationParams
from storage.models import NewTask, Task, TaskStatus

log = logging.getLogger(__name__)

DAY_SECONDS = 86400


@dataclass(frozen=True)
class Request:
    """What a handler asks for: the first capability some vendor can serve
    is used (e.g. edit, else img2img)."""

    capabilities: list[Capability]
    params: GenerationParams
    inputs: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] | None = None
    parent_task_id: int | None = None
    action_key: str | None = None


def routing_sentence(language: str, exc: RoutingError, params: GenerationParams) -> str:
    return t(
        language, f"err_{exc.reason}", provider=params.provider or "", capability=exc.capability.value,
        limit=exc.limit or 0, length=len(params.prompt),
    )


async def refusal(svc: Services, who: Requester, request: Request) -> str | None:
    """Why this request cannot start now (a localized sentence), or None."""
    params = request.params
    lowered = f"{params.prompt} {params.negative_prompt}".lower()
    if any(word in lowered for word in svc.settings.banned_words):
        return t(who.language, "err_banned_words")
    limit = svc.settings.max_active_tasks_per_user
    active = await svc.store.tasks.count_active(who.user.id)
    if active >= limit:
        return t(who.language, "err_too_many_active", count=active, limit=limit)
    daily = svc.settings.daily_tasks_per_user
    if daily and await svc.store.tasks.count_since(who.user.id, time.time() - DAY_SECONDS) >= daily:
        return t(who.language, "err_daily_limit", limit=daily)
    return None


async def create_task(
    svc: Services, who: Requester, request: Request, *, chat_id: int, chat_type: str,
    request_message_id: int | None, thread_id: int | None,
) -> Task | str | None:
    """Store the task. A sentence when it is refused; None when it repeats
    one already stored (the same message, or the same button)."""
    problem = await refusal(svc, who, request)
    if problem:
        return problem
    preferred = (request.source or {}).get("provider") or who.user.default_provider
    try:
        capability = choose_capability(
            svc.registry, request.capabilities, request.params.provider, preferred,
            prompt_chars=len(request.params.prompt),
        )
    except RoutingError as exc:
        return routing_sentence(who.language, exc, request.params)
    task = await svc.store.tasks.create(
        NewTask(
            kind=capability.value,
            user_id=who.user.id,
            chat_id=chat_id,
            chat_type=chat_type,
            thread_id=thread_id,
            language=who.language,
            params=request.params.model_dump(exclude_defaults=True),
            deadline_at=time.time() + svc.settings.task_timeout_seconds,
            request_message_id=request_message_id,
            inputs=request.inputs,
            source=request.source,
            parent_task_id=request.parent_task_id,
            action_key=request.action_key,
            provider=preferred,
        )
    )
    if task is None:
        return None
    svc.engine.wake_dispatcher()
    return task


async def acknowledge(svc: Services, task: Task, reply_to: Message, *, reacted: bool = False) -> None:
    """The task's status message, quoting the request. When Telegram's
    message limit would hold that message back, a 👀 reaction on the request
    (not a message, so not held back) is the acknowledgement instead, and
    the result will be the job's only message."""
    position = await svc.store.tasks.queue_position(task)
    text = status_text(task, "", queue_position=position)
    react = _no_reaction if reacted else (lambda: react_seen(reply_to))
    try:
        ack = await send_or_react(reply_to.get_bot(), reply(reply_to, text), react)
    except TelegramError as exc:
        # The task goes on without a status message; the result still comes.
        log.warning("task %s: status message not sent: %s", task.id, exc)
        return
    if ack is None:  # reacted instead
        return
    svc.engine.reporter.acknowledged(task, text)
    # A slow acknowledgement can arrive after the task already ended, when
    # delivery could not yet use it: bring it up to date now (repeating what
    # delivery may just have done is harmless).
    fresh = await svc.store.tasks.update(task.id, status_message_id=ack.message_id)
    if fresh is None or not fresh.status.final:
        return
    svc.engine.reporter.forget(task.id)
    with contextlib.suppress(TelegramError):
        if fresh.status == TaskStatus.DELIVERED:
            await ack.delete()
        elif fresh.status == TaskStatus.FAILED:
            await ack.edit_text(failure_notice(fresh), parse_mode=ParseMode.HTML)
        else:
            await ack.edit_text(t(fresh.language, "task_cancelled", task_id=fresh.id), parse_mode=ParseMode.HTML)


async def react_seen(message: Message) -> None:
    """👀 on the request: 'heard you' without a message (best effort)."""
    with contextlib.suppress(TelegramError):  # e.g. reactions switched off in a group
        await message.set_reaction(ReactionEmoji.EYES)


async def _no_reaction() -> None:
    return None


def acknowledge_soon(svc: Services, task: Task, reply_to: Message, *, reacted: bool = False) -> None:
    """Acknowledge without holding up the update. The task is stored, so the
    update may be confirmed to Telegram (and the next ones fetched) while the
    status message waits for its slot under Telegram's 30 messages/s; a
    crash before it goes out costs the status message, never the task."""
    svc.background(acknowledge(svc, task, reply_to, reacted=reacted))


async def start_task(svc: Services, message: Message, who: Requester, request: Request) -> Task | None:
    """Validate, store and acknowledge a request made by ``message``.
    Returns None when it was refused (and the user told why) or repeats one
    already stored."""
    # Telegram's message queue is long already: say 'heard you' before any
    # work, so the bot's own load never delays that either.
    reacted = telegram_busy(message.get_bot())
    if reacted:
        svc.background(react_seen(message))
    outcome = await create_task(
        svc, who, request, chat_id=message.chat_id, chat_type=message.chat.type,
        request_message_id=message.message_id,
        thread_id=message.message_thread_id if message.is_topic_message else None,
    )
    if isinstance(outcome, str):
        svc.background(reply(message, outcome))  # not holding up the updates behind it
        return None
    if outcome is None:
        log.info("repeat of chat %s message %s ignored", message.chat_id, message.message_id)
        return None
    if reacted:
        # Telegram's message budget is what limits us now: the 👀 is the
        # acknowledgement, and the result will be the job's only message.
        return outcome
    acknowledge_soon(svc, outcome, message, reacted=reacted)
    return outcome
