"""Small helpers every handler uses: who is asking, in which language, and
replying so that the answer quotes the request."""

from __future__ import annotations

import html
from dataclasses import dataclass

from telegram import Message, ReplyParameters, Update
from telegram.constants import ParseMode

from bot.i18n import pick_language, t
from bot.parsing import ParseError
from bot.services import Services
from storage.models import User


@dataclass(frozen=True)
class Requester:
    user: User
    language: str


async def requester(update: Update, svc: Services) -> Requester | None:
    """The user behind an update, recorded with their language; None when
    the update has no user (channel posts) or they are not allowed here."""
    tg_user, chat = update.effective_user, update.effective_chat
    if tg_user is None or chat is None or tg_user.is_bot:
        return None
    settings = svc.settings
    if settings.allowed_user_ids and tg_user.id not in settings.allowed_user_ids and tg_user.id not in settings.admin_user_ids:
        return None
    if settings.allowed_chat_ids and chat.type != "private" and chat.id not in settings.allowed_chat_ids:
        return None
    user = await svc.store.accounts.seen_user(tg_user.id, tg_user.language_code)
    if chat.type != "private":
        await svc.store.accounts.seen_chat(chat.id, chat.type, chat.title)
    return Requester(user, pick_language(user.language, tg_user.language_code))


def explain(language: str, error: ParseError) -> str:
    """A parse error as a sentence; its values come from the user's text, so
    they are escaped (the sentence goes out as HTML)."""
    return t(language, error.key, **{k: html.escape(str(v)) for k, v in error.values.items()})


async def reply(message: Message, text: str, **kwargs: object) -> Message:
    """Answer quoting the request (in groups too), in HTML."""
    return await message.reply_text(
        text,
        parse_mode=ParseMode.HTML,
        reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True),
        **kwargs,  # type: ignore[arg-type]
    )
