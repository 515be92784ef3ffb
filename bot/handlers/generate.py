"""/imagine (and /draw, /img), and plain text in private chats."""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from bot.handlers.common import reply, requester
from bot.handlers.submit import start_task
from bot.i18n import t
from bot.parsing import ParseError, parse_prompt, strip_command
from bot.services import services
from providers.types import Capability, GenerationParams

IMAGINE_COMMANDS = ("imagine", "draw", "img")


async def imagine(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    svc = services(context)
    message = update.effective_message
    who = await requester(update, svc)
    if who is None or message is None or message.text is None:
        return
    defaults = GenerationParams(
        aspect_ratio=who.user.aspect_ratio or "1:1", n=who.user.image_count or 1
    )
    try:
        params = parse_prompt(strip_command(message.text), defaults)
    except ParseError as exc:
        await reply(message, t(who.language, exc.key, **exc.values))
        return
    await start_task(svc, message, who, Capability.TXT2IMG, params)


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_handler(CommandHandler(IMAGINE_COMMANDS, imagine))
    app.add_handler(
        MessageHandler(filters.ChatType.PRIVATE & filters.TEXT & ~filters.COMMAND, imagine)
    )
