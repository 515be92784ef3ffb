"""The text a vendor job waits for (midjourney-proxy's MODAL: remix, Custom
Zoom). The engine asked with a reply field (Engine._ask_for_text) and noted
the question on the task; a reply to that question goes to the vendor here,
and the job goes on."""

from __future__ import annotations

from telegram import Message

from bot.engine.delivery import kind_reason
from bot.handlers.common import Requester, reply
from bot.i18n import t
from bot.services import Services
from providers.errors import ProviderError


async def feed(svc: Services, message: Message, who: Requester, text: str) -> bool:
    """True when ``message`` answered one of the bot's questions (it is then used)."""
    target = message.reply_to_message
    if target is None or target.from_user is None or target.from_user.id != message.get_bot().id:
        return False
    tasks = svc.store.tasks
    task = await tasks.asking(message.chat_id, who.user.id, target.message_id)
    provider = svc.registry.get(task.provider or "") if task else None
    if task is None or provider is None or task.provider_job_id is None:
        return False
    answered = -target.message_id
    if not await tasks.swap_question(task.id, target.message_id, answered):
        await reply(message, t(who.language, "modal_already", task_id=task.id))
        return True  # answered already: not a new prompt either
    try:
        await provider.answer_modal(task.provider_job_id, text.strip() or task.params.get("prompt") or "")
    except ProviderError as exc:
        await tasks.swap_question(task.id, answered, target.message_id)  # the question stays open
        await reply(message, t(who.language, "modal_failed", reason=kind_reason(who.language, exc.kind).removeprefix("❌ ")))
        return True
    await reply(message, t(who.language, "modal_sent", task_id=task.id))
    return True
