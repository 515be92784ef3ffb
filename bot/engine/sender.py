"""Putting a task's result into a chat: one photo with its keyboard; several
separate images as one 2×2 grid photo (U1–U4 then show each original);
an album of documents plus one message carrying the buttons when they
cannot be photos; a document when Telegram refuses the photo. Used by delivery (fresh bytes) and by /task (resending
stored file_ids, without the vendor)."""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Awaitable, Callable, Sequence

from telegram import Bot, InlineKeyboardMarkup, InputMediaDocument, InputMediaPhoto, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest

from bot.engine.grid import compose_grid
from bot.engine.progress import short_prompt
from bot.i18n import t
from bot.keyboards import (CallbackCodec, composed_grid_keyboard, follow_up_keyboard, grid_keyboard, image_keyboard,
                           single_keyboard)
from providers.registry import Registry
from storage.models import Task, TaskImage

log = logging.getLogger(__name__)

CAPTION_PROMPT_CHARS = 700
CAPTION_LIMIT = 1024
MAX_PHOTO_BYTES = 10 * 1024 * 1024
# Telegram's answers that mean "not as a photo": we send a document instead.
PHOTO_REFUSALS = ("photo_invalid_dimensions", "image_process_failed", "file is too big", "photo_save_file_invalid")

Sent = list[tuple[int, str, int]]  # (image index, Telegram file_id, message_id)
GRID_INDEX = -1  # in Sent: the grid photo composed of the images, not one of them
RecordSent = Callable[[Sent], Awaitable[None]]


def fits_photo(image: TaskImage) -> bool:
    """Within sendPhoto's limits (10 MB, width + height ≤ 10000, ratio ≤ 20);
    a stored file_id is tried as a photo and falls back on refusal."""
    if image.data is None:
        return image.file_id is not None
    if image.width is None or image.height is None:
        return False
    ratio = max(image.width, image.height) / max(1, min(image.width, image.height))
    return len(image.data) <= MAX_PHOTO_BYTES and image.width + image.height <= 10000 and ratio <= 20


def _payload(image: TaskImage) -> bytes | str:
    payload = image.data if image.data is not None else image.file_id
    assert payload is not None, "an image to send needs bytes or a file_id"
    return payload


def file_id_of(message: Message) -> str:
    if message.photo:
        return message.photo[-1].file_id
    if message.document:
        return message.document.file_id
    raise BadRequest("Telegram answered without a file")


def filename(task: Task, image: TaskImage) -> str:
    extension = (image.mime or "image/png").split("/")[-1].replace("jpeg", "jpg")
    return f"drawbridge-{task.id}-{image.idx + 1}.{extension}"


def refused_as_photo(exc: BadRequest) -> bool:
    return any(word in exc.message.lower() for word in PHOTO_REFUSALS)


class ResultSender:
    def __init__(self, bot: Bot, codec: CallbackCodec, registry: Registry) -> None:
        self.bot = bot
        self.codec = codec
        self.registry = registry

    def caption(self, task: Task) -> str:
        provider = self.registry.get(task.provider or "")
        vendor = provider.title if provider else (task.provider or "?")
        prompt = html.escape(short_prompt(task.params.get("prompt") or task.kind, CAPTION_PROMPT_CHARS))
        caption = t(task.language, "caption", prompt=prompt, vendor=html.escape(vendor), task_id=task.id)
        revised = (task.result_meta.get("vendor_data") or {}).get("revised_prompt")
        if revised:  # dall-e-3 rewrites the prompt: the user should see what was drawn
            room = max(80, CAPTION_LIMIT - 40 - len(caption))  # Telegram's 1024 for the whole caption
            revised_text = html.escape(short_prompt(str(revised), room))
            caption += "\n" + t(task.language, "caption_revised", prompt=revised_text)
        if provider is not None and provider.is_sandbox:
            caption += "\n\n" + t(task.language, "caption_sandbox")
        return caption

    async def send(
        self,
        task: Task,
        images: Sequence[TaskImage],
        *,
        chat_id: int,
        reply_to: int | None,
        thread_id: int | None = None,
        record_sent: RecordSent | None = None,
        already_sent: Sent = (),  # type: ignore[assignment]
        in_place_of: int | None = None,
    ) -> Sent:
        """Send the result. For an album, ``record_sent`` notes it before the
        button message goes, and a retry passes it back as ``already_sent``,
        so a failure in between never sends the album twice. A single photo
        goes into message ``in_place_of`` (the status) where Telegram lets
        it: the returned message id then is that one."""
        reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        common = {"chat_id": chat_id, "reply_parameters": reply, "message_thread_id": thread_id}
        caption = self.caption(task)
        if len(images) == 1:
            grid = bool(task.result_meta.get("is_grid"))
            follow_ups = (task.result_meta.get("vendor_data") or {}).get("follow_ups")
            if grid:
                keyboard = grid_keyboard(self.codec, task.id, 4)
            elif follow_ups:
                keyboard = follow_up_keyboard(self.codec, task.id, follow_ups)
            else:
                keyboard = single_keyboard(self.codec, task.id, task.language)
            message = await self._single(task, images[0], caption, keyboard, common, in_place_of)
            return [(images[0].idx, file_id_of(message), message.message_id)]
        grid = task.result_meta.get("grid")
        if isinstance(grid, dict) and grid.get("file_id") and not already_sent:  # sent before (/task)
            message = await self._grid_photo(task, len(images), TaskImage(
                task.id, GRID_INDEX, None, None, "image/jpeg", None, None, None, str(grid["file_id"]), None,
            ), caption, common, in_place_of)
            return [(GRID_INDEX, file_id_of(message), message.message_id)]
        if not already_sent and len(images) <= 4 and all(i.data is not None and fits_photo(i) for i in images):
            data, width, height = await asyncio.to_thread(compose_grid, [i.data for i in images if i.data is not None])
            composed = TaskImage(task.id, GRID_INDEX, None, data, "image/jpeg", width, height, None, None, None)
            message = await self._grid_photo(task, len(images), composed, caption, common, in_place_of)
            return [(GRID_INDEX, file_id_of(message), message.message_id)]
        return await self._album(task, list(images), caption, common, record_sent, list(already_sent))

    async def _grid_photo(
        self, task: Task, count: int, grid: TaskImage, caption: str, common: dict, in_place_of: int | None
    ) -> Message:
        keyboard = composed_grid_keyboard(self.codec, task.id, count, task.language)
        return await self._single(task, grid, caption, keyboard, common, in_place_of)

    async def send_original(
        self, task: Task, image: TaskImage, *, chat_id: int, reply_to: int | None, thread_id: int | None
    ) -> Message:
        """Image ``image.idx`` of a grid at full size, with its own buttons
        (upscale and vary that one at the vendor)."""
        reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        common = {"chat_id": chat_id, "reply_parameters": reply, "message_thread_id": thread_id}
        caption = t(task.language, "caption_image", number=image.idx + 1, caption=self.caption(task))[:CAPTION_LIMIT]
        keyboard = image_keyboard(self.codec, task.id, image.idx, task.language)
        return await self._single(task, image, caption, keyboard, common)

    async def send_originals(
        self, task: Task, images: Sequence[TaskImage], *, chat_id: int, reply_to: int | None, thread_id: int | None
    ) -> list[Message]:
        """Every image of a grid as a document: the files exactly as made."""
        reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        common = {"chat_id": chat_id, "reply_parameters": reply, "message_thread_id": thread_id}
        return await self._send_album(task, list(images), self.caption(task), common, as_photos=False)

    async def _single(
        self, task: Task, image: TaskImage, caption: str, keyboard: InlineKeyboardMarkup, common: dict,
        in_place_of: int | None = None,
    ) -> Message:
        extra = {"caption": caption, "parse_mode": ParseMode.HTML, "reply_markup": keyboard, "read_timeout": 60, "write_timeout": 60}
        as_photo = fits_photo(image)
        if as_photo and in_place_of is not None:
            try:
                edited = await self.bot.edit_message_media(
                    InputMediaPhoto(_payload(image), caption=caption, parse_mode=ParseMode.HTML),
                    chat_id=common["chat_id"], message_id=in_place_of, reply_markup=keyboard,
                    read_timeout=60, write_timeout=60,
                )
                if isinstance(edited, Message):
                    return edited
            except BadRequest as exc:  # the status was deleted, or cannot be edited: a new message
                log.info("task %s: status not turned into the result (%s); sending it", task.id, exc.message)
                as_photo = not refused_as_photo(exc)
        if as_photo:
            try:
                return await self.bot.send_photo(photo=_payload(image), **common, **extra)
            except BadRequest as exc:
                if not refused_as_photo(exc):
                    raise
                log.info("task %s: photo refused (%s), sending a document", task.id, exc.message)
        return await self.bot.send_document(document=_payload(image), filename=filename(task, image), **common, **extra)

    async def _album(
        self, task: Task, images: list[TaskImage], caption: str, common: dict,
        record_sent: RecordSent | None, sent: Sent,
    ) -> Sent:
        if not sent:
            messages = await self._send_album(task, images, caption, common, as_photos=all(fits_photo(i) for i in images))
            sent = [(image.idx, file_id_of(m), m.message_id) for image, m in zip(images, messages, strict=True)]
            if record_sent is not None:
                await record_sent(sent)
        first = min(message_id for _, _, message_id in sent)
        await self.bot.send_message(
            text=t(task.language, "grid_prompt"),
            reply_markup=grid_keyboard(self.codec, task.id, len(images)),
            **{**common, "reply_parameters": ReplyParameters(first, allow_sending_without_reply=True)},
        )
        return sent

    async def _send_album(self, task: Task, images: list[TaskImage], caption: str, common: dict, as_photos: bool) -> list[Message]:
        def media(image: TaskImage, photo: bool) -> InputMediaPhoto | InputMediaDocument:
            text = caption if image is images[0] else None
            if photo:
                return InputMediaPhoto(_payload(image), caption=text, parse_mode=ParseMode.HTML)
            return InputMediaDocument(_payload(image), caption=text, parse_mode=ParseMode.HTML, filename=filename(task, image))

        try:
            return list(await self.bot.send_media_group(media=[media(i, as_photos) for i in images], read_timeout=90, write_timeout=90, **common))
        except BadRequest as exc:
            if not (as_photos and refused_as_photo(exc)):
                raise
            log.info("task %s: album refused as photos (%s), sending documents", task.id, exc.message)
        return list(await self.bot.send_media_group(media=[media(i, False) for i in images], read_timeout=90, write_timeout=90, **common))
