"""Text to image: /imagine (and /draw, /img); plain text in private chats;
in groups, messages that mention the bot or reply to it. A text reply to a
photo edits that photo instead."""

from __future__ import annotations

import re

from telegram import Message, MessageEntity, Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from bot.handlers import modal
from bot.handlers.common import Requester, explain, reply, requester
from bot.handlers.images import ImageProblem, input_image
from bot.handlers.submit import Request, start_task
from bot.i18n import t
from bot.parsing import ParseError, parse_prompt, strip_command
from bot.services import Services, services
from providers.types import Capability, GenerationParams

IMAGINE_COMMANDS = ("imagine", "draw", "img")
EDIT_CAPABILITIES = [Capability.EDIT, Capability.IMG2IMG]


def user_defaults(who: Requester) -> GenerationParams:
    return GenerationParams(aspect_ratio=who.user.aspect_ratio or "1:1", n=who.user.image_count or 1)


async def parse_or_explain(message: Message, who: Requester, text: str, defaults: GenerationParams) -> GenerationParams | None:
    try:
        return parse_prompt(text, defaults)
    except ParseError as exc:
        await reply(message, explain(who.language, exc))
        return None


async def imagine_text(svc: Services, message: Message, who: Requester, text: str) -> None:
    params = await parse_or_explain(message, who, text, user_defaults(who))
    if params is not None:
        await start_task(svc, message, who, Request([Capability.TXT2IMG], params))


async def edit_image(svc: Services, message: Message, who: Requester, image: dict, instruction: str) -> None:
    """Edit (or img2img) ``image`` as ``instruction`` says."""
    if not instruction.strip():
        await reply(message, t(who.language, "err_edit_needs_instruction"))
        return
    params = await parse_or_explain(message, who, instruction, GenerationParams())
    if params is not None:
        await start_task(svc, message, who, Request(EDIT_CAPABILITIES, params, inputs=[image]))


async def imagine(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    svc = services(context)
    message = update.effective_message
    who = await requester(update, svc)
    if who is None or message is None or message.text is None:
        return
    await imagine_text(svc, message, who, strip_command(message.text))


def mentions(message: Message, username: str) -> bool:
    wanted = f"@{username}".lower()
    return any(text.lower() == wanted for text in message.parse_entities([MessageEntity.MENTION]).values())


def without_mention(text: str, username: str) -> str:
    return re.sub(rf"@{re.escape(username)}\b", " ", text, flags=re.IGNORECASE).strip()


async def text_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Plain text: a prompt in private chats; in groups only when it
    mentions the bot or replies to one of its messages."""
    svc = services(context)
    message = update.effective_message
    if message is None or message.text is None:
        return
    bot = context.bot
    target = message.reply_to_message
    if message.chat.type != "private":
        to_bot = target is not None and target.from_user is not None and target.from_user.id == bot.id
        if not (to_bot or mentions(message, bot.username)):
            return
    who = await requester(update, svc)
    if who is None:
        return
    text = without_mention(message.text, bot.username)
    if await modal.feed(svc, message, who, text):
        return
    image = input_image(target)
    if isinstance(image, dict):
        await edit_image(svc, message, who, image, text)
    elif isinstance(image, ImageProblem):
        await reply(message, t(who.language, image.key, **image.values))
    else:
        await imagine_text(svc, message, who, text)


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_handler(CommandHandler(IMAGINE_COMMANDS, imagine))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, text_message))
