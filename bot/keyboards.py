"""Result keyboards and the callback-data codec.

Callback data is ``a:<task id>:<action>:<mac>``: compact (well under
Telegram's 64 bytes), anchored, and signed with a key derived from the bot
token, so a forged or altered button cannot name another task or action.
Whether the presser may use it is still checked against the task.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.i18n import t

MAX_CALLBACK_BYTES = 64
_PATTERN = re.compile(r"a:([1-9][0-9]{0,14}):(u[1-4]|v[1-4]|s[1-4]|r|U|V|A|n[0-9]{1,2}):([A-Za-z0-9_-]{8})")
MAX_FOLLOW_UPS = 24  # a vendor's follow-up buttons shown at most


class Action(StrEnum):
    UPSCALE = "u"
    VARIATION = "v"
    REROLL = "r"
    NATIVE = "n"  # the vendor's own follow-up button number ``index`` (after an upscale)
    SHOW = "s"  # image ``index`` of a grid we composed, at full size (no vendor call)
    ALL = "A"  # every image of a grid we composed, as documents


@dataclass(frozen=True)
class ButtonPress:
    task_id: int
    action: Action
    index: int  # 0-based image; 0 for single-image actions and reroll

    @property
    def key(self) -> str:
        """One task per (source task, action, image): a double tap finds it."""
        return f"{self.task_id}:{self.action.value}{self.index}"


class CallbackCodec:
    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"drawbridge-callback\0" + secret).digest()

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:6]).decode()

    def encode(self, press: ButtonPress, single: bool = False) -> str:
        if press.action == Action.REROLL:
            code = "r"
        elif press.action == Action.ALL:
            code = "A"
        elif press.action == Action.NATIVE:
            code = f"n{press.index}"
        elif single and press.action in (Action.UPSCALE, Action.VARIATION):
            code = press.action.value.upper()
        else:
            code = f"{press.action.value}{press.index + 1}"
        body = f"a:{press.task_id}:{code}"
        data = f"{body}:{self._mac(body)}"
        assert len(data.encode()) <= MAX_CALLBACK_BYTES
        return data

    def decode(self, data: str | None) -> ButtonPress | None:
        """The press, or None for anything malformed or forged."""
        if not data or len(data) > MAX_CALLBACK_BYTES:
            return None
        match = _PATTERN.fullmatch(data)  # fullmatch: "$" would let a trailing newline in
        if not match:
            return None
        task_id, code, mac = int(match[1]), match[2], match[3]
        if not hmac.compare_digest(mac, self._mac(f"a:{task_id}:{code}")):
            return None
        if code == "r":
            return ButtonPress(task_id, Action.REROLL, 0)
        if code == "A":
            return ButtonPress(task_id, Action.ALL, 0)
        if code in ("U", "V"):
            return ButtonPress(task_id, Action(code.lower()), 0)
        if code[0] == "n":
            return ButtonPress(task_id, Action.NATIVE, int(code[1:]))
        return ButtonPress(task_id, Action(code[0]), int(code[1]) - 1)


def grid_keyboard(codec: CallbackCodec, task_id: int, count: int) -> InlineKeyboardMarkup:
    """U1..Un on one row, V1..Vn on the next, 🔄 at the end (Midjourney's layout)."""
    upscale = [
        InlineKeyboardButton(f"U{i + 1}", callback_data=codec.encode(ButtonPress(task_id, Action.UPSCALE, i)))
        for i in range(count)
    ]
    vary = [
        InlineKeyboardButton(f"V{i + 1}", callback_data=codec.encode(ButtonPress(task_id, Action.VARIATION, i)))
        for i in range(count)
    ]
    reroll = InlineKeyboardButton("🔄", callback_data=codec.encode(ButtonPress(task_id, Action.REROLL, 0)))
    return InlineKeyboardMarkup([upscale, [*vary, reroll]])


def composed_grid_keyboard(codec: CallbackCodec, task_id: int, count: int, language: str) -> InlineKeyboardMarkup:
    """Our own grid of separate images: U1..Un show image n at full size at
    once, V1..Vn and 🔄 as usual, and 🗂 All sends the originals."""
    show = [
        InlineKeyboardButton(f"U{i + 1}", callback_data=codec.encode(ButtonPress(task_id, Action.SHOW, i)))
        for i in range(count)
    ]
    vary = [
        InlineKeyboardButton(f"V{i + 1}", callback_data=codec.encode(ButtonPress(task_id, Action.VARIATION, i)))
        for i in range(count)
    ]
    reroll = InlineKeyboardButton("🔄", callback_data=codec.encode(ButtonPress(task_id, Action.REROLL, 0)))
    everything = InlineKeyboardButton(t(language, "btn_all"), callback_data=codec.encode(ButtonPress(task_id, Action.ALL, 0)))
    return InlineKeyboardMarkup([show, [*vary, reroll], [everything]])


def image_keyboard(codec: CallbackCodec, task_id: int, index: int, language: str) -> InlineKeyboardMarkup:
    """Under image ``index`` of a task's grid, shown at full size."""
    def button(label: str, action: Action) -> InlineKeyboardButton:
        return InlineKeyboardButton(t(language, label), callback_data=codec.encode(ButtonPress(task_id, action, index)))

    reroll = InlineKeyboardButton(t(language, "btn_reroll"), callback_data=codec.encode(ButtonPress(task_id, Action.REROLL, 0)))
    return InlineKeyboardMarkup([[button("btn_upscale", Action.UPSCALE), button("btn_vary", Action.VARIATION), reroll]])


def single_keyboard(codec: CallbackCodec, task_id: int, language: str) -> InlineKeyboardMarkup:
    def button(label: str, action: Action) -> InlineKeyboardButton:
        data = codec.encode(ButtonPress(task_id, action, 0), single=True)
        return InlineKeyboardButton(t(language, label), callback_data=data)

    return InlineKeyboardMarkup(
        [[button("btn_upscale", Action.UPSCALE), button("btn_vary", Action.VARIATION), button("btn_reroll", Action.REROLL)]]
    )


def follow_up_keyboard(codec: CallbackCodec, task_id: int, follow_ups: list[dict]) -> InlineKeyboardMarkup:
    """The vendor's own buttons on a finished image (Midjourney after an
    upscale: Upscale Subtle/Creative, Vary Strong/Subtle, Zoom Out, pan),
    in the vendor's rows, plus our 🔄."""
    rows: dict[int, list[InlineKeyboardButton]] = {}
    for index, follow_up in enumerate(follow_ups[:MAX_FOLLOW_UPS]):
        data = codec.encode(ButtonPress(task_id, Action.NATIVE, index))
        rows.setdefault(int(follow_up.get("row", 0)), []).append(
            InlineKeyboardButton(str(follow_up.get("label") or "?")[:40], callback_data=data)
        )
    reroll = InlineKeyboardButton("🔄", callback_data=codec.encode(ButtonPress(task_id, Action.REROLL, 0)))
    return InlineKeyboardMarkup([*(rows[row] for row in sorted(rows)), [reroll]])
