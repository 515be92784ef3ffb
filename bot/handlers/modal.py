"""The text a vendor job waits for (midjourney-proxy's MODAL: remix, Custom
Zoom). The engine asked with a reply field (Engine._ask_for_text); the
user's answer goes to the vendor here, and the job goes on."""

from __future__ import annotations

from telegram import Message

from bot.engine import MODAL_FLOW
from bot.handlers.common import Requester, reply
from bot.i18n import t
from bot.services import Services
from providers.errors import ProviderError


def kind_text(language: str, kind: str) -> str:
    try:
        return t(language, f"fail_{kind}").removeprefix("❌ ")
    except KeyError:
        return t(language, "fail_error").removeprefix("❌ ")


async def feed(svc: Services, message: Message, who: Requester, text: str) -> bool:
    """True when ``message`` answered a vendor's question (and was used)."""
    flow = await svc.store.flows.current(message.chat_id, who.user.id)
    if flow is None or flow.kind != MODAL_FLOW:
        return False
    target = message.reply_to_message
    # In a group only a reply to the question counts; in a private chat the
    # reply field makes every answer a reply, but a client may drop it.
    if message.chat.type != "private" and (target is None or target.message_id != flow.data.get("message_id")):
        return False
    task = await svc.store.tasks.get(int(flow.data.get("task_id") or 0))
    provider = svc.registry.get(task.provider or "") if task else None
    if task is None or provider is None or not task.status.active or task.provider_job_id is None:
        await svc.store.flows.finish(message.chat_id, who.user.id)
        return False
    try:
        await provider.answer_modal(task.provider_job_id, text.strip() or task.params.get("prompt") or "")
    except ProviderError as exc:
        await reply(message, t(who.language, "modal_failed", reason=kind_text(who.language, exc.kind)))
        return True
    await svc.store.flows.finish(message.chat_id, who.user.id)
    await reply(message, t(who.language, "modal_sent", task_id=task.id))
    return True
