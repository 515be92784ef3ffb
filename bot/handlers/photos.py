"""Photos and image documents: a caption edits the photo (or /upscale,
/faceswap in the caption), /edit and /upscale work as replies to a photo,
albums feed /faceswap or a multi-image edit, and a photo without words
continues a guided /faceswap or gets a hint."""

from __future__ import annotations

import re

from telegram import Message, Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from bot.handlers import faceswap
from bot.handlers.common import Requester, explain, reply, requester
from bot.handlers.generate import edit_image, mentions, without_mention
from bot.handlers.images import ImageProblem, input_image
from bot.handlers.submit import Request, start_task
from bot.i18n import t
from bot.parsing import ParseError, parse_prompt
from bot.services import Services, services
from providers.types import Capability, GenerationParams

_CAPTION_COMMAND = re.compile(r"^/([A-Za-z0-9_]+)(?:@([A-Za-z0-9_]+))?(?:\s+|$)")
EDIT_WORDS = {"edit", "imagine", "draw", "img"}
MAX_EDIT_IMAGES = 3  # juhe takes up to three images in one edit
BLEND_IMAGES = (2, 5)  # Midjourney's /blend
ONE_IMAGE_COMMANDS = {
    "upscale": Capability.UPSCALE,
    "anime": Capability.ANIME,
    "removebg": Capability.REMOVE_BG,
    "describe": Capability.DESCRIBE,
}
albums = faceswap.AlbumCollector()


def caption_command(caption: str, bot_username: str) -> tuple[str | None, str, bool]:
    """(command or None, the rest, addressed to another bot)."""
    match = _CAPTION_COMMAND.match(caption.strip())
    if not match:
        return None, caption.strip(), False
    other_bot = bool(match[2]) and match[2].lower() != bot_username.lower()
    return match[1].lower(), caption.strip()[match.end():].strip(), other_bot


async def one_image_job(
    svc: Services, message: Message, who: Requester, image: dict, command: str, text: str
) -> None:
    """/upscale, /anime, /removebg, /describe on one photo; words after the
    command become the prompt (and may carry flags, e.g. --provider)."""
    try:
        params = parse_prompt(text or command, GenerationParams())
    except ParseError as exc:
        await reply(message, explain(who.language, exc))
        return
    await start_task(svc, message, who, Request([ONE_IMAGE_COMMANDS[command]], params, inputs=[image]))


async def act_on_image(svc: Services, message: Message, who: Requester, image: dict, command: str | None, text: str) -> None:
    if command in ONE_IMAGE_COMMANDS:
        await one_image_job(svc, message, who, image, command, text)
    elif command == "faceswap":
        target = input_image(message.reply_to_message)
        if isinstance(target, dict):
            await faceswap.swap(svc, message, who, image, target)
        else:
            await faceswap.start_flow(svc, message, who, face=image)
    elif command in EDIT_WORDS or (command is None and text):
        await edit_image(svc, message, who, image, text)
    elif not await faceswap.feed_flow(svc, message, who, image):
        await reply(message, t(who.language, "photo_what_next"))


async def photo_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    svc = services(context)
    message = update.effective_message
    if message is None:
        return
    bot = context.bot
    command, text, other_bot = caption_command(message.caption or "", bot.username)
    if other_bot:
        return
    in_group = message.chat.type != "private"
    target = message.reply_to_message
    replying_to_bot = target is not None and target.from_user is not None and target.from_user.id == bot.id
    if in_group and not (command or replying_to_bot or mentions(message, bot.username)):
        return  # not for us (with privacy mode off we would see every photo)
    who = await requester(update, svc)
    if who is None:
        return
    image = input_image(message)
    if isinstance(image, ImageProblem) or image is None:
        problem = image or ImageProblem("err_unsupported_file", {})
        await reply(message, t(who.language, problem.key, **problem.values))
        return
    if message.media_group_id:
        albums.add(message, lambda parts: album_complete(svc, parts, who))
        return
    await act_on_image(svc, message, who, image, command, without_mention(text, bot.username))


async def album_complete(svc: Services, parts: list[Message], who: Requester) -> None:
    """An album: /faceswap wants two photos; any other caption edits them together."""
    first = parts[0]
    captioned = next((m for m in parts if m.caption), first)
    command, text, _ = caption_command(captioned.caption or "", first.get_bot().username)
    images = [i for i in (input_image(m) for m in parts) if isinstance(i, dict)]
    if command == "faceswap":
        if len(images) != 2:
            await reply(captioned, t(who.language, "faceswap_album_needs_two"))
            return
        await faceswap.swap(svc, captioned, who, images[0], images[1])
    elif command == "blend":
        await blend(svc, captioned, who, images, text)
    elif text or command in EDIT_WORDS:
        params_text = text or ""
        if not params_text:
            await reply(captioned, t(who.language, "err_edit_needs_instruction"))
            return
        try:
            params = parse_prompt(params_text, GenerationParams())
        except ParseError as exc:
            await reply(captioned, explain(who.language, exc))
            return
        request = Request([Capability.EDIT, Capability.IMG2IMG], params, inputs=images[:MAX_EDIT_IMAGES])
        await start_task(svc, captioned, who, request)
    else:
        await reply(captioned, t(who.language, "photo_what_next"))


async def blend(svc: Services, message: Message, who: Requester, images: list[dict], text: str) -> None:
    """Midjourney's /blend: 2–5 photos into one picture (--ar picks the shape)."""
    low, high = BLEND_IMAGES
    if not low <= len(images) <= high:
        await reply(message, t(who.language, "blend_needs_images", low=low, high=high))
        return
    try:
        params = parse_prompt(f"blend {text}".strip(), GenerationParams())  # flags only: "blend" is the prompt
    except ParseError as exc:
        await reply(message, explain(who.language, exc))
        return
    await start_task(svc, message, who, Request([Capability.BLEND], params, inputs=images))


async def blend_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/blend as text: it is the caption of an album."""
    svc = services(context)
    message = update.effective_message
    who = await requester(update, svc)
    if who is not None and message is not None:
        low, high = BLEND_IMAGES
        await reply(message, t(who.language, "blend_needs_images", low=low, high=high))


async def reply_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/edit <instruction>, /upscale, /anime, /removebg or /describe sent
    as a reply to a photo."""
    svc = services(context)
    message = update.effective_message
    who = await requester(update, svc)
    if who is None or message is None or message.text is None:
        return
    command, text, _ = caption_command(message.text, context.bot.username)
    image = input_image(message.reply_to_message)
    if isinstance(image, ImageProblem):
        await reply(message, t(who.language, image.key, **image.values))
        return
    if image is None:
        await reply(message, t(who.language, "err_reply_to_photo", command=f"/{command}"))
        return
    await act_on_image(svc, message, who, image, command, text)


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_handler(CommandHandler(["edit", *ONE_IMAGE_COMMANDS], reply_command))
    app.add_handler(CommandHandler("blend", blend_command))
    app.add_handler(MessageHandler(filters.PHOTO | filters.Document.ALL | filters.Sticker.ALL, photo_message))
