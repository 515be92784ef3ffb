"""/settings: inline keyboards for the user's language, default vendor,
aspect ratio and image count; in groups, admins also choose who may press
result buttons. Buttons carry ``s:<setting>:<value>``, checked against the
allowed values; they only ever change the presser's own settings (or, for
admins, their group's)."""

from __future__ import annotations

import re

from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from bot.handlers.buttons import ADMIN_STATUSES, answer
from bot.handlers.common import Requester, reply, requester
from bot.i18n import LANGUAGES, pick_language, t
from bot.services import Services, services
from storage.models import Chat

RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
COUNTS = ("1", "2", "4")
POLICIES = ("anyone", "requester", "admins")
AUTO = "auto"
_DATA = re.compile(r"s:(lang|vendor|ar|n|btn):([A-Za-z0-9:_-]{1,32})")


def _row(setting: str, values: list[tuple[str, str]], current: str) -> list[InlineKeyboardButton]:
    return [
        InlineKeyboardButton(("✅ " if value == current else "") + label, callback_data=f"s:{setting}:{value}")
        for value, label in values
    ]


def settings_view(svc: Services, who: Requester, chat: Chat | None) -> tuple[str, InlineKeyboardMarkup]:
    lang, user = who.language, who.user
    vendors = [(AUTO, t(lang, "settings_auto"))] + [(v, v) for v in svc.registry.providers]
    rows = [
        _row("lang", [(AUTO, t(lang, "settings_auto")), ("en", "English"), ("zh", "中文")], user.language or AUTO),
        _row("vendor", vendors, user.default_provider or AUTO),
        _row("ar", [(r, r) for r in RATIOS[:4]], user.aspect_ratio or "1:1"),
        _row("ar", [(r, r) for r in RATIOS[4:]], user.aspect_ratio or "1:1"),
        _row("n", [(c, c) for c in COUNTS], str(user.image_count or 1)),
    ]
    lines = [
        t(lang, "settings_title"),
        t(lang, "settings_rows"),
    ]
    if chat is not None:
        rows.append(_row("btn", [(p, t(lang, f"policy_{p}")) for p in POLICIES], chat.buttons_policy))
        lines.append(t(lang, "settings_group_row", title=chat.title or ""))
    return "\n".join(lines), InlineKeyboardMarkup(rows)


async def is_group_admin(svc: Services, query: CallbackQuery, chat_id: int, user_id: int) -> bool:
    if user_id in svc.settings.admin_user_ids:
        return True
    try:
        member = await query.get_bot().get_chat_member(chat_id, user_id)
    except TelegramError:
        return False
    return member.status in ADMIN_STATUSES


async def settings_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    svc = services(context)
    message = update.effective_message
    who = await requester(update, svc)
    if who is None or message is None:
        return
    chat = await svc.store.accounts.chat(message.chat_id) if message.chat.type != "private" else None
    text, keyboard = settings_view(svc, who, chat)
    await reply(message, text, reply_markup=keyboard)


async def apply_setting(svc: Services, query: CallbackQuery, who: Requester, setting: str, value: str) -> bool:
    """Store one choice; False when the value is not one we offer."""
    user_id = who.user.id
    if setting == "lang" and value in (AUTO, *LANGUAGES):
        await svc.store.accounts.update_user(user_id, language=None if value == AUTO else value)
    elif setting == "vendor" and (value == AUTO or value in svc.registry.providers):
        await svc.store.accounts.update_user(user_id, default_provider=None if value == AUTO else value)
    elif setting == "ar" and value in RATIOS:
        await svc.store.accounts.update_user(user_id, aspect_ratio=value)
    elif setting == "n" and value in COUNTS:
        await svc.store.accounts.update_user(user_id, image_count=int(value))
    elif setting == "btn" and value in POLICIES and query.message is not None and query.message.chat.type != "private":
        await svc.store.accounts.update_chat(query.message.chat.id, buttons_policy=value)
    else:
        return False
    return True


async def on_setting(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    if query is None:
        return
    svc = services(context)
    who = await requester(update, svc)
    language = who.language if who else pick_language(None, query.from_user.language_code)
    match = _DATA.fullmatch(query.data or "")
    if who is None or match is None or query.message is None:
        await answer(query, t(language, "btn_invalid"), alert=True)
        return
    setting, value = match[1], match[2]
    chat_id = query.message.chat.id
    if setting == "btn" and not await is_group_admin(svc, query, chat_id, who.user.id):
        await answer(query, t(language, "settings_admins_only"), alert=True)
        return
    if not await apply_setting(svc, query, who, setting, value):
        await answer(query, t(language, "btn_invalid"), alert=True)
        return
    fresh = await requester(update, svc)
    assert fresh is not None
    chat = await svc.store.accounts.chat(chat_id) if query.message.chat.type != "private" else None
    text, keyboard = settings_view(svc, fresh, chat)
    await answer(query, t(fresh.language, "settings_saved"))
    try:
        await query.edit_message_text(text, reply_markup=keyboard, parse_mode="HTML")
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            raise


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_handler(CommandHandler("settings", settings_command))
    app.add_handler(CallbackQueryHandler(on_setting, pattern=r"^s:"))
