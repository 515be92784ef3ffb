"""Result buttons: U1–U4 / ⬆️ upscale, V1–V4 / 🎲 variations, 🔄 reroll;
on a grid the bot composed of separate images, U1–U4 show that image at
full size at once and 🗂 All sends the originals (no vendor call).

Answered at once; the data is signed (keyboards.CallbackCodec) and checked
against the task and chat it names; one task per (result, action, image)
however often it is tapped; charged to whoever pressed, if the group lets
them press."""

from __future__ import annotations

import logging
from typing import Any

from telegram import CallbackQuery, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

from bot.handlers.common import Requester, requester
from bot.handlers.submit import Request, acknowledge_soon, create_task
from bot.i18n import pick_language, t
from bot.engine.sender import file_id_of
from bot.keyboards import Action, ButtonPress
from bot.services import Services, services
from providers.types import Capability, GenerationParams
from storage.models import Task, TaskImage, TaskStatus

log = logging.getLogger(__name__)

VARIATION_STRENGTH = 0.6  # img2img stand-in for vendors without native variations
ADMIN_STATUSES = ("administrator", "creator")


async def answer(query: CallbackQuery, text: str, alert: bool = False) -> None:
    try:
        await query.answer(text, show_alert=alert)
    except TelegramError as exc:  # too old / already answered: nothing to do
        log.info("callback answer failed: %s", exc)


async def may_press(svc: Services, query: CallbackQuery, source: Task, who: Requester) -> str | None:
    """None when the presser may use the buttons, else who may (i18n key)."""
    if not source.in_group:
        return None if who.user.id == source.user_id else "who_requester"
    chat = await svc.store.accounts.chat(source.chat_id)
    policy = chat.buttons_policy if chat else "anyone"
    if policy == "anyone" or (policy == "requester" and who.user.id == source.user_id):
        return None
    if who.user.id in svc.settings.admin_user_ids:
        return None
    try:
        member = await query.get_bot().get_chat_member(source.chat_id, who.user.id)
    except TelegramError:
        member = None
    if member is not None and member.status in ADMIN_STATUSES:
        return None
    return "who_admins" if policy == "admins" else "who_requester"


def source_image(source: Task, images: list[TaskImage], index: int) -> dict[str, Any] | None:
    """The input for an action on image ``index``: that image, or that
    quadrant of a vendor grid (cut out locally when needed)."""
    if source.result_meta.get("is_grid"):
        if images and images[0].file_id and 0 <= index < 4:
            return {"file_id": images[0].file_id, "mime": "image/png", "cell": index}
        return None
    if 0 <= index < len(images) and images[index].file_id:
        return {"file_id": images[index].file_id, "mime": images[index].mime or "image/png"}
    grid = source.result_meta.get("grid") or {}
    if 0 <= index < min(4, len(images)) and grid.get("file_id"):  # our grid: that quarter of it
        return {"file_id": grid["file_id"], "mime": "image/png", "cell": index}
    return None


def action_request(source: Task, images: list[TaskImage], press: ButtonPress) -> Request | None:
    params = GenerationParams(**source.params)
    common: dict[str, Any] = {"parent_task_id": source.id, "action_key": press.key}
    if press.action == Action.REROLL:
        fresh = params.model_copy(update={"seed": None})
        # A vendor that rerolls its own results (Midjourney's 🔄) gets the source
        # job; for the others a reroll is the same request again.
        native = None
        if source.kind == Capability.TXT2IMG.value and source.provider and source.provider_job_id:
            native = {"provider": source.provider, "job_id": source.provider_job_id, "index": 0,
                      "vendor_data": source.result_meta.get("vendor_data") or {}}
        return Request([Capability(source.kind)], fresh, inputs=source.inputs, source=native, **common)
    vendor_data = source.result_meta.get("vendor_data") or {}
    if press.action == Action.NATIVE:
        return follow_up_request(source, images, press, params, vendor_data, common)
    image = source_image(source, images, press.index)
    if image is None:
        return None
    native = {
        "provider": source.provider,
        "job_id": source.provider_job_id,
        "index": press.index,
        "vendor_data": vendor_data,
    }
    if press.action == Action.UPSCALE:
        return Request([Capability.UPSCALE], params.model_copy(update={"n": 1}), inputs=[image], source=native, **common)
    varied = params.model_copy(update={"seed": None, "strength": params.strength or VARIATION_STRENGTH})
    return Request([Capability.VARIATION, Capability.IMG2IMG], varied, inputs=[image], source=native, **common)


def follow_up_request(
    source: Task, images: list[TaskImage], press: ButtonPress, params: GenerationParams,
    vendor_data: dict[str, Any], common: dict[str, Any],
) -> Request | None:
    """One of the vendor's own buttons: only that vendor can do it, so the
    task is pinned to it (no fallback to a plain variation elsewhere)."""
    follow_ups = vendor_data.get("follow_ups") or []
    image = source_image(source, images, 0)
    if not 0 <= press.index < len(follow_ups) or image is None or not source.provider:
        return None
    follow_up = follow_ups[press.index]
    try:
        capability = Capability(follow_up.get("capability"))
    except ValueError:
        return None
    native = {
        "provider": source.provider, "job_id": source.provider_job_id, "index": 0,
        "vendor_data": {**vendor_data, "custom_id": follow_up.get("custom_id")},
    }
    pinned = params.model_copy(update={"provider": source.provider, "seed": None, "n": 1})
    return Request([capability], pinned, inputs=[image], source=native, **common)


async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    if query is None:
        return
    svc = services(context)
    language = pick_language(None, query.from_user.language_code)
    press = svc.codec.decode(query.data)
    who = await requester(update, svc)
    if who is not None:
        language = who.language
    source = await svc.store.tasks.get(press.task_id) if press else None
    message = query.message
    if (
        press is None or who is None or source is None or message is None
        or message.chat.id != source.chat_id or source.status != TaskStatus.DELIVERED
    ):
        await answer(query, t(language, "btn_invalid"), alert=True)
        return
    denied = await may_press(svc, query, source, who)
    if denied:
        await answer(query, t(language, "btn_not_allowed", who=t(language, denied)), alert=True)
        return
    images = await svc.store.tasks.images(source.id)
    if press.action in (Action.SHOW, Action.ALL):
        await show_originals(svc, query, source, images, press, language)
        return
    request = action_request(source, images, press)
    if request is None:
        await answer(query, t(language, "btn_invalid"), alert=True)
        return
    outcome = await create_task(
        svc, who, request, chat_id=source.chat_id, chat_type=source.chat_type,
        request_message_id=message.message_id, thread_id=source.thread_id,
    )
    if isinstance(outcome, str):
        await answer(query, outcome[:190], alert=True)
        return
    if outcome is None:
        existing = await svc.store.tasks.by_action(press.key)
        await answer(query, t(language, "btn_already", task_id=existing.id if existing else "?"))
        return
    await answer(query, t(language, "btn_started", task_id=outcome.id))
    acknowledge_soon(svc, outcome, message)  # type: ignore[arg-type]


async def show_originals(
    svc: Services, query: CallbackQuery, source: Task, images: list[TaskImage], press: ButtonPress, language: str
) -> None:
    """What the vendor already made, from the task: one image (U1–U4: by its
    file_id once shown, else its kept bytes) or all of them as documents."""
    message = query.message
    assert message is not None
    wanted = images if press.action == Action.ALL else images[press.index:press.index + 1]
    if not wanted or not source.result_meta.get("grid"):
        await answer(query, t(language, "btn_invalid"), alert=True)
        return
    if any(image.data is None and (press.action == Action.ALL or image.file_id is None) for image in wanted):
        await answer(query, t(language, "btn_originals_gone"), alert=True)
        return
    await answer(query, t(language, "btn_sending"))
    where = {"chat_id": source.chat_id, "reply_to": message.message_id, "thread_id": source.thread_id}
    try:
        if press.action == Action.ALL:
            await svc.engine.sender.send_originals(source, wanted, **where)
            return
        image = wanted[0]
        if image.file_id is not None:  # shown before: Telegram has it
            image = TaskImage(**{**image.__dict__, "data": None})
        shown = await svc.engine.sender.send_original(source, image, **where)
        await svc.store.tasks.record_sent(source.id, [(image.idx, file_id_of(shown), shown.message_id)])
    except BadRequest as exc:
        log.info("task %s: originals not sent: %s", source.id, exc.message)
    except TelegramError as exc:
        log.warning("task %s: originals not sent: %s", source.id, exc)


async def unknown_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Data that is none of ours still gets an answer, or the spinner spins."""
    query = update.callback_query
    if query is not None:
        await answer(query, t(pick_language(None, query.from_user.language_code), "btn_invalid"), alert=True)


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_handler(CallbackQueryHandler(on_button, pattern=r"^a:"))


def register_fallback(app: Application) -> None:  # type: ignore[type-arg]
    """After every other callback handler."""
    app.add_handler(CallbackQueryHandler(unknown_button))
