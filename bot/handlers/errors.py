"""The one error handler: log it, tell the user briefly, never a traceback."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import Application, ContextTypes

from bot.i18n import pick_language, t

log = logging.getLogger(__name__)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    log.error("unhandled error in a handler", exc_info=context.error)
    if not isinstance(update, Update) or update.effective_message is None:
        return
    user = update.effective_user
    language = pick_language(None, user.language_code if user else None)
    try:
        await update.effective_message.reply_text(t(language, "err_internal"))
    except TelegramError:
        pass


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_error_handler(on_error)
