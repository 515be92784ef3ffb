"""The yardstick: a bare python-telegram-bot echo bot (one MessageHandler
that replies with the text), long polling the same fake Telegram server the
same way Drawbridge does (base_url / base_file_url, 10 s long polls).

    ECHO_TOKEN=... ECHO_API_URL=http://127.0.0.1:PORT python -m bench.echo_bot
"""

from __future__ import annotations

import logging
import os

from telegram import Update
from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    if message is not None and message.text:
        await message.reply_text(message.text)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    url = os.environ["ECHO_API_URL"].rstrip("/")
    application = (
        ApplicationBuilder()
        .token(os.environ["ECHO_TOKEN"])
        .base_url(f"{url}/bot")
        .base_file_url(f"{url}/file/bot")
        .get_updates_read_timeout(20)
        .build()
    )
    application.add_handler(MessageHandler(filters.TEXT, echo))
    application.run_polling(timeout=10, allowed_updates=Update.ALL_TYPES)


if __name__ == "__main__":
    main()
