"""/start and /help."""

from __future__ import annotations

import html

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from bot.handlers.common import reply, requester
from bot.i18n import t
from bot.services import services


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    who = await requester(update, services(context))
    if who is None or update.effective_message is None:
        return
    name = html.escape(update.effective_user.first_name if update.effective_user else "")
    greeting = t(who.language, "start_greeting", name=name)
    await reply(update.effective_message, f"{greeting}\n\n{t(who.language, 'help')}")


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    who = await requester(update, services(context))
    if who is None or update.effective_message is None:
        return
    await reply(update.effective_message, t(who.language, "help"))


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Private chats only: in groups, commands for other bots are not ours."""
    who = await requester(update, services(context))
    if who is None or update.effective_message is None:
        return
    await reply(update.effective_message, t(who.language, "err_unknown_command"))


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("help", help_command))


def register_fallback(app: Application) -> None:  # type: ignore[type-arg]
    """Last of all handlers, so every known command has had its turn."""
    app.add_handler(MessageHandler(filters.COMMAND & filters.ChatType.PRIVATE, unknown_command))
