"""Turning a validated request into a stored, acknowledged task. Shared by
every handler that starts work; nothing here waits for a vendor."""

from __future__ import annotations

import logging
import time
from typing import Any

from telegram import Message

from bot.engine.progress import status_text
from bot.handlers.common import Requester, reply
from bot.i18n import t
from bot.services import Services
from providers.registry import RoutingError
from providers.types import Capability, GenerationParams
from storage.models import NewTask, Task

log = logging.getLogger(__name__)


def routing_problem(svc: Services, language: str, capability: Capability, params: GenerationParams) -> str | None:
    """A sentence when no configured vendor can take this request now."""
    try:
        svc.registry.candidates(capability, forced=params.provider)
    except RoutingError as exc:
        return t(language, f"err_{exc.reason}", provider=params.provider or "", capability=capability.value)
    return None


async def start_task(
    svc: Services,
    message: Message,
    who: Requester,
    capability: Capability,
    params: GenerationParams,
    *,
    inputs: list[dict[str, Any]] | None = None,
) -> Task | None:
    """Validate limits, store the task, acknowledge it with its status
    message. Returns None when the request was refused (and told so) or is
    a repeat of one already stored."""
    lowered = params.prompt.lower()
    if any(word in lowered for word in svc.settings.banned_words):
        await reply(message, t(who.language, "err_banned_words"))
        return None
    problem = routing_problem(svc, who.language, capability, params)
    if problem:
        await reply(message, problem)
        return None
    limit = svc.settings.max_active_tasks_per_user
    active = await svc.store.tasks.count_active(who.user.id)
    if active >= limit:
        await reply(message, t(who.language, "err_too_many_active", count=active, limit=limit))
        return None
    task = await svc.store.tasks.create(
        NewTask(
            kind=capability.value,
            user_id=who.user.id,
            chat_id=message.chat_id,
            chat_type=message.chat.type,
            thread_id=message.message_thread_id if message.is_topic_message else None,
            language=who.language,
            params=params.model_dump(exclude_defaults=True),
            deadline_at=time.time() + svc.settings.task_timeout_seconds,
            request_message_id=message.message_id,
            inputs=inputs or [],
            provider=who.user.default_provider,
        )
    )
    if task is None:
        log.info("repeat of chat %s message %s ignored", message.chat_id, message.message_id)
        return None
    svc.engine.wake_dispatcher()
    position = await svc.store.tasks.queue_position(task)
    ack = await reply(message, status_text(task, "", queue_position=position))
    await svc.store.tasks.update(task.id, status_message_id=ack.message_id)
    return task
