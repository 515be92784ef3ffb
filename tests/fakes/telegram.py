"""A strict, in-process fake of the Telegram Bot API for end-to-end tests.

The real python-telegram-bot stack talks to it over HTTP on loopback::

    fake = FakeTelegram(TOKEN)
    async with fake.serve() as url:          # or tests.fakes.server.serve(fake.app)
        app = (ApplicationBuilder().token(TOKEN)
               .base_url(f"{url}/bot").base_file_url(f"{url}/file/bot").build())
        ...
        fake.user_message(chat_id=42, user_id=42, text="/start")
        msg = await fake.wait_for_message(42)

Where the real server rejects something a bot could plausibly get wrong (markup,
lengths, missing reply targets, stale callback queries, concurrent polling,
file limits, flood limits) the fake rejects it too, with the real status code
and description, so that a bot passing against the fake does not fall over
against Telegram.  Everything runs on the test's event loop; no threads except
Pillow work pushed to ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import itertools
import json
import math
import re
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "ApiCall",
    "ApiError",
    "CallbackQueryRecord",
    "FakeTelegram",
    "StoredFile",
    "StoredMessage",
    "detect_entities",
    "iter_entities_text",
    "parse_html",
    "parse_markdown",
    "parse_markdown_v2",
]

# --------------------------------------------------------------------------------------
# Limits (https://core.telegram.org/bots/api and observed server behaviour)
# --------------------------------------------------------------------------------------

MAX_TEXT_LENGTH = 4096  # counted in Unicode code points after entity parsing (tdlib utf8_length)
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_PHOTO_UPLOAD = 10 * 1024 * 1024
MAX_UPLOAD = 50 * 1024 * 1024
MAX_DOWNLOAD = 20 * 1024 * 1024
MAX_PHOTO_DIM_SUM = 10_000
MAX_PHOTO_RATIO = 20
CALLBACK_QUERY_TTL = 15.0
DELETE_WINDOW = 48 * 3600.0
PHOTO_SIZE_STEPS = (90, 320, 800, 1280)  # Telegram's s/m/x/y sizes; the last one is capped at 2560
PHOTO_MAX_SIDE = 2560

# Update types delivered when allowed_updates was never set or set to [] (Bot API default).
ALL_UPDATE_TYPES = frozenset(
    {
        "message", "edited_message", "channel_post", "edited_channel_post",
        "business_connection", "business_message", "edited_business_message",
        "deleted_business_messages", "message_reaction", "message_reaction_count",
        "inline_query", "chosen_inline_result", "callback_query", "shipping_query",
        "pre_checkout_query", "purchased_paid_media", "poll", "poll_answer",
        "my_chat_member", "chat_member", "chat_join_request", "chat_boost",
        "removed_chat_boost",
    }
)
DEFAULT_UPDATE_TYPES = ALL_UPDATE_TYPES - {
    "chat_member", "message_reaction", "message_reaction_count"
}

# ReactionTypeEmoji.emoji: the only emoji a bot may react with (Bot API 9.x).
REACTION_EMOJI = frozenset(
    "❤ 👍 👎 🔥 🥰 👏 😁 🤔 🤯 😱 🤬 😢 🎉 🤩 🤮 💩 🙏 👌 🕊 🤡 🥱 🥴 😍 🐳 ❤‍🔥 🌚 🌭 💯 🤣 ⚡ 🍌 🏆 💔 🤨 😐 🍓 🍾"
    " 💋 🖕 😈 😴 😭 🤓 👻 👨‍💻 👀 🎃 🙈 😇 😨 🤝 ✍ 🤗 🫡 🎅 🎄 ☃ 💅 🤪 🗿 🆒 💘 🙉 🦄 😘 💊 🙊 😎 👾 🤷‍♂ 🤷 🤷‍♀ 😡".split()
)

CHAT_ACTIONS = frozenset(
    {
        "typing", "upload_photo", "record_video", "upload_video", "record_voice",
        "upload_voice", "upload_document", "choose_sticker", "find_location",
        "record_video_note", "upload_video_note",
    }
)

# Parameters that PTB (and most clients) send as JSON-encoded strings in form bodies.
JSON_FIELDS = frozenset(
    {
        "reply_markup", "reply_parameters", "entities", "caption_entities", "commands",
        "scope", "media", "allowed_updates", "link_preview_options", "message_ids",
        "menu_button", "rights", "permissions", "reaction",
    }
)
INT_FIELDS = frozenset(
    {
        "chat_id", "message_id", "user_id", "offset", "limit", "reply_to_message_id",
        "message_thread_id", "cache_time", "from_chat_id", "max_connections", "until_date",
    }
)

HTTP_PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

E_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "of the message are exactly the same as a current content and reply markup of the message"
)
E_QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
E_WRONG_FILE = "wrong file identifier/HTTP URL specified"
E_CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
E_CONFLICT_POLLING = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)


class ApiError(Exception):
    """An error answer of the Bot API: HTTP status ``code`` and ``description``."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(f"{code} {description}")
        self.code = code
        self.description = description
        self.parameters = parameters


def bad_request(message: str) -> ApiError:
    return ApiError(400, f"Bad Request: {message}")


def _entities_error(message: str) -> ApiError:
    return bad_request(f"can't parse entities: {message}")


class _ClientGone(Exception):
    """The HTTP client disconnected while we were long-polling."""


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def u16len(text: str) -> int:
    """Length in UTF-16 code units: the unit of all Bot API entity offsets."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _byte_offset(text: str, index: int) -> int:
    # tdlib reports parse errors at UTF-8 byte offsets of the original text.
    return len(text[:index].encode("utf-8"))


def _opaque_id(prefix: str, *parts: object, length: int = 72) -> str:
    """Deterministic, Telegram-looking opaque identifier (file_id & co)."""
    digest = hashlib.sha512(":".join(map(str, parts)).encode()).digest()
    return (prefix + base64.urlsafe_b64encode(digest).decode().rstrip("="))[:length]


_SPACE = " \t\r\n\v\f\0"


def _check_link(url: str) -> str | None:
    """Mimic tdlib's link check: http(s)/tg/ton URLs, or bare domains (http:// implied)."""
    url = url.strip()
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$", url)
    if m:
        scheme, rest = m.group(1).lower(), m.group(2)
        if scheme in ("http", "https") and re.match(r"^[^/?#\s]+\.[^/?#\s]+|^localhost|^\d", rest):
            return url
        if scheme in ("tg", "ton") and rest:
            return url
        return None
    if re.match(r"^[\w-]+(\.[\w-]+)*\.[a-zA-Z]{2,}(:\d+)?([/?#]\S*)?$", url):
        return "http://" + url
    return None


# --------------------------------------------------------------------------------------
# Text formatting: parse modes and entities (ported from tdlib's MessageEntity.cpp logic)
# --------------------------------------------------------------------------------------

_HTML_TAGS = frozenset(
    {
        "a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "tg-spoiler",
        "tg-emoji", "span", "pre", "code", "blockquote",
    }
)
_HTML_SIMPLE = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough",
    "tg-spoiler": "spoiler", "span": "spoiler",
}
_HTML_ENTITY_RE = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z]+);")
_HTML_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _decode_html_entity(text: str, i: int) -> tuple[str | None, int]:
    m = _HTML_ENTITY_RE.match(text, i)
    if not m:
        return None, i
    body = m.group(1)
    if body.startswith("#"):
        code = int(body[2:], 16) if body[1:2] in ("x", "X") else int(body[1:])
        if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return None, i
        return chr(code), m.end()
    if body in _HTML_NAMED:
        return _HTML_NAMED[body], m.end()
    return None, i


@dataclass
class _OpenTag:
    tag: str
    argument: str | None
    offset: int  # UTF-16 offset in the output text
    out_index: int  # index into the output char list
    byte_pos: int = 0
    expandable: bool = False


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML parse mode -> (plain text, entities).  Raises ApiError like the server.

    One deliberate difference: tdlib keeps a bare ``&`` (or an unknown ``&name;``) literally,
    but the docs require escaping and a bot that forgets to escape ``&`` usually also forgets
    ``<``; the fake rejects it so the bug shows up in tests.
    """
    out: list[str] = []
    u16 = 0
    entities: list[dict[str, Any]] = []
    stack: list[_OpenTag] = []
    n = len(text)

    def at(k: int) -> str:
        return text[k] if k < n else "\0"

    def fail(message: str, index: int) -> ApiError:
        return _entities_error(f"{message} at byte offset {_byte_offset(text, index)}")

    i = 0
    while i < n:
        c = text[i]
        if c == "&":
            decoded, j = _decode_html_entity(text, i)
            if decoded is None:
                raise _entities_error(
                    f"Character '&' at byte offset {_byte_offset(text, i)} must be escaped as "
                    '"&amp;" (FakeTelegram is stricter than Telegram here)'
                )
            out.append(decoded)
            u16 += u16len(decoded)
            i = j
            continue
        if c != "<":
            out.append(c)
            u16 += 2 if ord(c) > 0xFFFF else 1
            i += 1
            continue

        begin = i
        i += 1
        if at(i) != "/":
            tag_end = i
            while tag_end < n and text[tag_end] not in _SPACE and text[tag_end] != ">":
                tag_end += 1
            if tag_end >= n:
                raise fail("Unclosed start tag", begin)
            tag = text[i:tag_end].lower()
            if tag not in _HTML_TAGS:
                raise fail(f'Unsupported start tag "{tag}"', begin)
            argument: str | None = None
            expandable = False
            i = tag_end
            while at(i) != ">":
                while i < n and text[i] in _SPACE:
                    i += 1
                if i >= n:
                    raise fail("Unclosed start tag", begin)
                if text[i] == ">":
                    break
                attr_begin = i
                while i < n and text[i] not in _SPACE and text[i] not in "=>":
                    i += 1
                attr_name = text[attr_begin:i].lower()
                if not attr_name:
                    raise fail(f'Empty attribute name in the tag "{tag}"', begin)
                while i < n and text[i] in _SPACE:
                    i += 1
                if at(i) != "=":
                    if tag == "blockquote" and attr_name == "expandable":
                        expandable = True
                        continue
                    raise fail(
                        f'Expected equal sign in declaration of an attribute of the tag "{tag}"',
                        begin,
                    )
                i += 1
                while i < n and text[i] in _SPACE:
                    i += 1
                if i >= n:
                    raise fail(f'Unclosed start tag "{tag}"', begin)
                if text[i] not in "'\"":
                    token_begin = i
                    while i < n and ((text[i].isascii() and text[i].isalnum()) or text[i] in ".-"):
                        i += 1
                    value = text[token_begin:i].lower()
                    if at(i) not in _SPACE and at(i) != ">":
                        raise fail("Unexpected end of name token", token_begin)
                else:
                    quote = text[i]
                    i += 1
                    buf: list[str] = []
                    while i < n and text[i] != quote:
                        if text[i] == "&":
                            decoded, j = _decode_html_entity(text, i)
                            if decoded is not None:  # attributes keep bare '&' (query strings)
                                buf.append(decoded)
                                i = j
                                continue
                        buf.append(text[i])
                        i += 1
                    if i < n:
                        i += 1
                    value = "".join(buf)
                if i >= n:
                    raise fail("Unclosed start tag", begin)
                if tag == "a" and attr_name == "href":
                    argument = value
                elif tag == "code" and attr_name == "class" and value.startswith("language-"):
                    argument = value[len("language-"):]
                elif tag == "span" and attr_name == "class" and value.startswith("tg-"):
                    argument = value[len("tg-"):]
                elif tag == "tg-emoji" and attr_name == "emoji-id":
                    argument = value
            if tag == "span" and argument != "spoiler":
                raise fail('Tag "span" must have class "tg-spoiler"', begin)
            stack.append(
                _OpenTag(tag, argument, u16, len(out), _byte_offset(text, begin), expandable)
            )
            i += 1  # skip '>'
            continue

        # End tag.
        if not stack:
            raise fail("Unexpected end tag", begin)
        i += 1
        name_begin = i
        while i < n and text[i] not in _SPACE and text[i] != ">":
            i += 1
        end_name = text[name_begin:i].lower()
        while i < n and text[i] in _SPACE:
            i += 1
        if at(i) != ">":
            raise fail("Unclosed end tag", begin)
        top = stack.pop()
        if end_name and end_name != top.tag:
            raise _entities_error(
                f"Unmatched end tag at byte offset {_byte_offset(text, begin)}, "
                f'expected "</{top.tag}>", found "</{end_name}>"'
            )
        i += 1
        if u16 <= top.offset:
            continue  # empty entities are dropped, like tdlib does
        length = u16 - top.offset
        entity: dict[str, Any] = {"offset": top.offset, "length": length}
        if top.tag in _HTML_SIMPLE:
            entity["type"] = _HTML_SIMPLE[top.tag]
        elif top.tag == "tg-emoji":
            if not top.argument or not top.argument.isdigit():
                raise _entities_error("Invalid custom emoji identifier specified")
            entity.update(type="custom_emoji", custom_emoji_id=top.argument)
        elif top.tag == "a":
            url = top.argument if top.argument else "".join(out[top.out_index:])
            checked = _check_link(url)
            if checked is None:
                continue  # tdlib silently drops links it cannot parse
            entity.update(type="text_link", url=checked)
        elif top.tag == "code":
            entity["type"] = "code"
            if top.argument:
                entity["_language"] = top.argument
        elif top.tag == "pre":
            entity["type"] = "pre"
            last = entities[-1] if entities else None
            if (
                last is not None
                and last["type"] == "code"
                and last["offset"] == top.offset
                and last["length"] == length
            ):
                entities.pop()
                if last.get("_language"):
                    entity["language"] = last["_language"]
        elif top.tag == "blockquote":
            entity["type"] = "expandable_blockquote" if top.expandable else "blockquote"
        entities.append(entity)

    if stack:
        raise _entities_error(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
    for entity in entities:
        entity.pop("_language", None)
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


_MD2_RESERVED = "_*[]()~`>#+-=|{}.!"
_MD2_NAMES = {
    "bold": "Bold", "italic": "Italic", "underline": "Underline", "strikethrough": "Strikethrough",
    "spoiler": "Spoiler", "code": "Code", "pre": "Pre", "pre_code": "PreCode",
    "text_link": "TextUrl", "custom_emoji": "CustomEmoji",
}


def parse_markdown_v2(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's MarkdownV2 parse mode -> (plain text, entities).  Raises ApiError."""
    out: list[str] = []
    u16 = 0
    entities: list[dict[str, Any]] = []
    stack: list[_OpenTag] = []
    quote: list[Any] | None = None  # [start utf16 offset, expandable]
    n = len(text)

    def at(k: int) -> str:
        return text[k] if 0 <= k < n else "\0"

    def reserved_error(ch: str) -> ApiError:
        return _entities_error(
            f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
        )

    def close_quote(end: int) -> None:
        nonlocal quote
        if quote is not None and end > quote[0]:
            entities.append(
                {
                    "type": "expandable_blockquote" if quote[1] else "blockquote",
                    "offset": quote[0],
                    "length": end - quote[0],
                }
            )
        quote = None

    i = 0
    while i < n:
        c = text[i]
        line_start = i == 0 or text[i - 1] == "\n"
        if line_start and not stack and c == ">":
            if quote is None:
                quote = [u16, False]
            i += 1
            continue
        if line_start and not stack and text.startswith("**>", i):
            quote = [u16, True] if quote is None else [quote[0], True]
            i += 3
            continue
        if c == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
            out.append(text[i + 1])
            u16 += 1
            i += 2
            continue
        closes_quote_line = at(i + 2) in ("\n", "\0")
        if quote is not None and not stack and text.startswith("||", i) and closes_quote_line:
            quote[1] = True  # "||" closing an expandable block quotation
            i += 2
            continue
        if c == "\n" and quote is not None and not stack:
            next_is_quote = at(i + 1) == ">" or text.startswith("**>", i + 1)
            if not next_is_quote:
                close_quote(u16)
            out.append(c)
            u16 += 1
            i += 1
            continue
        in_code = bool(stack) and stack[-1].tag in ("code", "pre", "pre_code")
        reserved = "`" if in_code else _MD2_RESERVED
        if c not in reserved:
            out.append(c)
            u16 += 2 if ord(c) > 0xFFFF else 1
            i += 1
            continue

        is_end = False
        if stack:
            kind = stack[-1].tag
            is_end = {
                "bold": c == "*",
                "italic": c == "_" and at(i + 1) != "_",
                "code": c == "`",
                "pre": c == "`" and at(i + 1) == "`" and at(i + 2) == "`",
                "pre_code": c == "`" and at(i + 1) == "`" and at(i + 2) == "`",
                "text_link": c == "]",
                "underline": c == "_" and at(i + 1) == "_",
                "strikethrough": c == "~",
                "spoiler": c == "|" and at(i + 1) == "|",
                "custom_emoji": c == "]",
            }[kind]

        if not is_end:
            begin = i
            argument: str | None = None
            if c == "_":
                if at(i + 1) == "_":
                    kind, i = "underline", i + 1
                else:
                    kind = "italic"
            elif c == "*":
                kind = "bold"
            elif c == "~":
                kind = "strikethrough"
            elif c == "|":
                if at(i + 1) != "|":
                    raise reserved_error(c)
                kind, i = "spoiler", i + 1
            elif c == "[":
                kind = "text_link"
            elif c == "`":
                if at(i + 1) == "`" and at(i + 2) == "`":
                    i += 3
                    kind = "pre"
                    lang_end = i
                    while lang_end < n and text[lang_end] not in _SPACE and text[lang_end] != "`":
                        lang_end += 1
                    if i != lang_end and lang_end < n and text[lang_end] != "`":
                        kind, argument, i = "pre_code", text[i:lang_end], lang_end
                    if at(i) in "\r\n":
                        i += 2 if at(i + 1) in "\r\n" and at(i) != at(i + 1) else 1
                    i -= 1
                else:
                    kind = "code"
            elif c == "!" and at(i + 1) == "[":
                kind, i = "custom_emoji", i + 1
            else:
                raise reserved_error(c)
            stack.append(_OpenTag(kind, argument, u16, len(out), _byte_offset(text, begin)))
            i += 1
            continue

        top = stack.pop()
        skip = u16 == top.offset
        entity: dict[str, Any] = {"type": top.tag, "offset": top.offset, "length": u16 - top.offset}
        if top.tag in ("underline", "spoiler"):
            i += 1
        elif top.tag in ("pre", "pre_code"):
            i += 2
            entity["type"] = "pre"
            if top.argument:
                entity["language"] = top.argument
        elif top.tag == "text_link":
            if at(i + 1) != "(":
                url = "".join(out[top.out_index:])
            else:
                i += 2
                url_begin = i
                buf: list[str] = []
                while i < n and text[i] != ")":
                    if text[i] == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
                        buf.append(text[i + 1])
                        i += 2
                        continue
                    buf.append(text[i])
                    i += 1
                if at(i) != ")":
                    offset = _byte_offset(text, url_begin)
                    raise _entities_error(f"Can't find end of a URL at byte offset {offset}")
                url = "".join(buf)
            checked = _check_link(url)
            if checked is None:
                skip = True
            else:
                entity["url"] = checked
        elif top.tag == "custom_emoji":
            if at(i + 1) != "(":
                raise _entities_error("Custom emoji entity must contain a tg://emoji URL")
            close = text.find(")", i + 2)
            if close < 0:
                offset = _byte_offset(text, i + 2)
                raise _entities_error(
                    f"Can't find end of a custom emoji URL at byte offset {offset}"
                )
            m = re.fullmatch(r"tg://emoji\?id=(\d+)", text[i + 2:close])
            if not m:
                raise _entities_error("Invalid custom emoji URL specified")
            entity["custom_emoji_id"] = m.group(1)
            i = close
        if not skip:
            entities.append(entity)
        i += 1

    if stack:
        top = stack[-1]
        name = _MD2_NAMES[top.tag]
        raise _entities_error(f"Can't find end of {name} entity at byte offset {top.byte_pos}")
    close_quote(u16)
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def parse_markdown(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's legacy Markdown parse mode (no nesting)."""
    out: list[str] = []
    u16 = 0
    entities: list[dict[str, Any]] = []
    n = len(text)

    def at(k: int) -> str:
        return text[k] if 0 <= k < n else "\0"

    i = 0
    while i < n:
        c = text[i]
        if c == "\\" and at(i + 1) in "_*`[":
            out.append(text[i + 1])
            u16 += 1
            i += 2
            continue
        if c not in "_*`[":
            out.append(c)
            u16 += 2 if ord(c) > 0xFFFF else 1
            i += 1
            continue
        begin = i
        end_char = "]" if c == "[" else c
        is_pre = False
        language = ""
        i += 1
        if c == "`" and at(i) == "`" and at(i + 1) == "`":
            i += 2
            is_pre = True
            lang_end = i
            while lang_end < n and text[lang_end] not in _SPACE and text[lang_end] != "`":
                lang_end += 1
            if i != lang_end and lang_end < n and text[lang_end] != "`":
                language, i = text[i:lang_end], lang_end
            if at(i) in "\r\n":
                i += 2 if at(i + 1) in "\r\n" and at(i) != at(i + 1) else 1
        start_offset = u16
        start_index = len(out)
        def at_end(k: int) -> bool:
            if is_pre:
                return text[k] == "`" and at(k + 1) == "`" and at(k + 2) == "`"
            return text[k] == end_char

        while i < n and not at_end(i):
            out.append(text[i])
            u16 += 2 if ord(text[i]) > 0xFFFF else 1
            i += 1
        if i >= n:
            offset = _byte_offset(text, begin)
            raise _entities_error(f"Can't find end of the entity starting at byte offset {offset}")
        if u16 > start_offset:
            entity: dict[str, Any] = {"offset": start_offset, "length": u16 - start_offset}
            if c == "_":
                entity["type"] = "italic"
            elif c == "*":
                entity["type"] = "bold"
            elif c == "`":
                entity["type"] = "pre" if is_pre else "code"
                if language:
                    entity["language"] = language
            else:
                if at(i + 1) == "(":
                    close = text.find(")", i + 2)
                    url = text[i + 2:close if close >= 0 else n]
                    i = close if close >= 0 else n - 1
                else:
                    url = "".join(out[start_index:])
                checked = _check_link(url)
                entity = {**entity, "type": "text_link", "url": checked} if checked else {}
            if entity:
                entities.append(entity)
        if is_pre:
            i += 2
        i += 1
    return "".join(out), entities


_ENTITY_TYPES = frozenset(
    {
        "mention", "hashtag", "cashtag", "bot_command", "url", "email", "phone_number", "bold",
        "italic", "underline", "strikethrough", "spoiler", "blockquote", "expandable_blockquote",
        "code", "pre", "text_link", "text_mention", "custom_emoji",
    }
)


def validate_entities(text: str, entities: Any) -> list[dict[str, Any]]:
    """Validate explicitly passed ``entities``/``caption_entities`` against ``text``."""
    if not isinstance(entities, list):
        raise bad_request("can't parse entities JSON object")
    total = u16len(text)
    result: list[dict[str, Any]] = []
    for raw in entities:
        if not isinstance(raw, dict):
            raise bad_request("can't parse MessageEntity: expected an Object")
        kind = raw.get("type")
        if kind not in _ENTITY_TYPES:
            raise bad_request("can't parse MessageEntity: Unsupported type specified")
        offset, length = raw.get("offset"), raw.get("length")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise bad_request(f"receive an entity with incorrect offset {offset}")
        if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            raise bad_request(f"receive an entity with incorrect length {length}")
        if offset > total:
            raise bad_request(f"entity begins after the end of the text at UTF-16 offset {offset}")
        if offset + length > total:
            raise bad_request(
                f"entity beginning at UTF-16 offset {offset} ends after the end of the text "
                f"at UTF-16 offset {offset + length}"
            )
        entity = {"type": kind, "offset": offset, "length": length}
        if kind == "text_link":
            if "url" not in raw:
                raise bad_request('can\'t parse MessageEntity: Can\'t find field "url"')
            url = str(raw["url"])
            if not url:
                raise bad_request(f"entity URL '{url}' is invalid: URL host is empty")
            if _check_link(url) is None:
                raise bad_request(f"entity URL '{url}' is invalid: Wrong HTTP URL")
            entity["url"] = url
        elif kind == "text_mention":
            if "user" not in raw:
                raise bad_request('can\'t parse MessageEntity: Can\'t find field "user"')
            entity["user"] = raw["user"]
        elif kind == "custom_emoji":
            if "custom_emoji_id" not in raw:
                raise bad_request('can\'t parse MessageEntity: Can\'t find field "custom_emoji_id"')
            entity["custom_emoji_id"] = str(raw["custom_emoji_id"])
        elif kind == "pre" and raw.get("language"):
            entity["language"] = str(raw["language"])
        result.append(entity)
    return result


def _strip_formatted(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Telegram trims surrounding whitespace of texts/captions and shifts entities accordingly."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    lead = u16len(text[: len(text) - len(text.lstrip())])
    new_len = u16len(stripped)
    fixed = []
    for entity in entities:
        start = max(entity["offset"] - lead, 0)
        end = min(entity["offset"] + entity["length"] - lead, new_len)
        if end > start:
            fixed.append({**entity, "offset": start, "length": end - start})
    return stripped, fixed


_COMMAND_RE = re.compile(r"(?<![\w/@])/[a-zA-Z0-9_]{1,64}(?:@[a-zA-Z0-9_]{3,32})?(?!\w)")
_MENTION_RE = re.compile(r"(?<![\w@/])@[a-zA-Z0-9_]{5,32}(?!\w)")
_URL_RE = re.compile(r"(?<!\w)https?://[^\s<>\"]+")


def detect_entities(text: str) -> list[dict[str, Any]]:
    """Entities Telegram adds to user-sent text: bot commands, @mentions and URLs."""
    spans: list[tuple[int, int, str]] = []
    for kind, regex in (("bot_command", _COMMAND_RE), ("url", _URL_RE), ("mention", _MENTION_RE)):
        for m in regex.finditer(text):
            if any(m.start() < end and start < m.end() for start, end, _ in spans):
                continue
            spans.append((m.start(), m.end(), kind))
    spans.sort()
    return [
        {"type": kind, "offset": u16len(text[:start]), "length": u16len(text[start:end])}
        for start, end, kind in spans
    ]


# --------------------------------------------------------------------------------------
# Request decoding
# --------------------------------------------------------------------------------------


@dataclass
class UploadedFile:
    """One multipart file part."""

    field_name: str
    filename: str
    content_type: str
    data: bytes


def _disposition_params(header: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for m in re.finditer(r';\s*([\w*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', header):
        value = m.group(2).strip()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[m.group(1).lower()] = value
    return params


def parse_multipart(
    body: bytes, content_type: str
) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    """Minimal RFC 7578 parser (python-multipart is not a project dependency)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise bad_request("multipart boundary is missing")
    delimiter = b"--" + m.group(1).encode("latin-1")
    fields: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        if part.startswith(b"\r\n"):
            part = part[2:]
        if part.endswith(b"\r\n"):
            part = part[:-2]
        head, _, content = part.partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            key, _, value = line.decode("utf-8", "replace").partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = _disposition_params(headers.get("content-disposition", ""))
        name = disposition.get("name")
        if not name:
            continue
        if "filename" in disposition or "filename*" in disposition:
            files[name] = UploadedFile(
                field_name=name,
                filename=disposition.get("filename", ""),
                content_type=headers.get("content-type", "application/octet-stream"),
                data=content,
            )
        else:
            fields[name] = content.decode("utf-8", "replace")
    return fields, files


async def read_request(request: Request) -> tuple[dict[str, Any], dict[str, UploadedFile]]:
    """Query string + body (urlencoded form, multipart form or JSON), like the real server."""
    params: dict[str, Any] = dict(request.query_params)
    files: dict[str, UploadedFile] = {}
    body = await request.body()
    if not body:
        return params, files
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/json":
        try:
            data = json.loads(body)
        except ValueError:
            raise bad_request("can't parse JSON encoded request data") from None
        if not isinstance(data, dict):
            raise bad_request("JSON object expected as request data")
        params.update(data)
    elif media_type == "multipart/form-data":
        fields, files = parse_multipart(body, content_type)
        params.update(fields)
    else:  # x-www-form-urlencoded (also the fallback, as curl users forget the header)
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return params, files


def normalize_params(raw: dict[str, Any]) -> dict[str, Any]:
    """Decode JSON-string fields and numeric strings so handlers and tests see real types."""
    result: dict[str, Any] = {}
    for key, value in raw.items():
        if key in JSON_FIELDS and isinstance(value, str):
            if value == "":
                value = None
            else:
                try:
                    value = json.loads(value)
                except ValueError:
                    what = "reply keyboard markup" if key == "reply_markup" else key
                    raise bad_request(f"can't parse {what} JSON object") from None
        elif key in INT_FIELDS and isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        result[key] = value
    return result


class Params:
    """Typed access to one request's parameters, with the server's error messages."""

    def __init__(
        self,
        data: dict[str, Any],
        files: dict[str, UploadedFile],
        call: ApiCall,
        request: Request | None = None,
    ):
        self.data = data
        self.files = files
        self.call = call
        self.request = request

    def raw(self, name: str) -> Any:
        return self.data.get(name)

    def has(self, name: str) -> bool:
        return self.data.get(name) not in (None, "")

    def str(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (dict, list)):
            return json.dumps(value)
        return str(value)

    def int(self, name: str) -> int | None:
        value = self.data.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            raise bad_request(f'field "{name}" must be of type Integer')
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            return int(value)
        raise bad_request(f"invalid {name} specified")

    def float(self, name: str) -> float | None:
        value = self.data.get(name)
        if value is None or value == "":
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.data.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return bool(value)
        return str(value).strip().lower() in ("true", "1", "yes", "on")

    def json(self, name: str) -> Any:
        value = self.data.get(name)
        if isinstance(value, str) and value:
            try:
                return json.loads(value)
            except ValueError:
                raise bad_request(f"can't parse {name} JSON object") from None
        return value


# --------------------------------------------------------------------------------------
# Records visible to tests
# --------------------------------------------------------------------------------------


@dataclass
class ApiCall:
    """One HTTP request to the Bot API, as the fake saw and answered it."""

    method: str  # canonical spelling, e.g. "sendMessage" (or as sent if unknown)
    params: dict[str, Any]  # JSON fields decoded, numeric ids as int
    files: dict[str, bytes]  # multipart part name -> bytes
    chat_id: int | str | None
    timestamp: float  # fake monotonic clock (FakeTelegram.now())
    status: int = 0  # HTTP status answered (499 = client went away)
    ok: bool = False
    error: str | None = None  # error description if not ok
    result: Any = None  # JSON result if ok

    def __repr__(self) -> str:
        outcome = "ok" if self.ok else f"{self.status} {self.error}"
        return f"<ApiCall {self.method} chat={self.chat_id} {outcome}>"


@dataclass
class MessageEdit:
    """Snapshot of a message before one edit."""

    at: float
    method: str
    before: dict[str, Any]


@dataclass
class StoredMessage:
    """A message in a chat: sent by the bot or injected as a user message."""

    chat_id: int
    message_id: int
    from_bot: bool
    sender: dict[str, Any]
    date: int
    sent_at: float  # fake monotonic clock
    text: str | None = None  # plain text after parse-mode processing
    entities: list[dict[str, Any]] = field(default_factory=list)
    caption: str | None = None
    caption_entities: list[dict[str, Any]] = field(default_factory=list)
    reply_markup: dict[str, Any] | None = None  # as sent (inline or reply keyboard)
    photo: list[dict[str, Any]] | None = None  # PhotoSize list, largest last
    document: dict[str, Any] | None = None
    media_group_id: str | None = None
    reply_to_message_id: int | None = None
    message_thread_id: int | None = None
    parse_mode: str | None = None
    raw_text: str | None = None  # text/caption exactly as the bot sent it
    upload: bytes | None = None  # original bytes uploaded by the bot (before re-encoding)
    upload_name: str | None = None
    method: str | None = None  # API method that created it
    deleted: bool = False
    deleted_at: float | None = None
    edit_date: int | None = None
    edits: list[MessageEdit] = field(default_factory=list)
    bot_reactions: list[dict[str, Any]] = field(default_factory=list)  # set by setMessageReaction

    @property
    def kind(self) -> str:
        if self.photo:
            return "photo"
        if self.document:
            return "document"
        return "text"

    @property
    def content(self) -> str:
        """Text or caption (empty string if none)."""
        return (self.text if self.text is not None else self.caption) or ""

    @property
    def inline_markup(self) -> dict[str, Any] | None:
        if self.reply_markup and "inline_keyboard" in self.reply_markup:
            return self.reply_markup
        return None

    @property
    def buttons(self) -> list[list[dict[str, Any]]]:
        markup = self.inline_markup
        return [list(row) for row in markup["inline_keyboard"]] if markup else []

    @property
    def button_texts(self) -> list[str]:
        return [b["text"] for row in self.buttons for b in row]

    @property
    def callback_data(self) -> list[str]:
        return [b["callback_data"] for row in self.buttons for b in row if "callback_data" in b]

    def button(self, text: str) -> dict[str, Any]:
        """The inline button whose text equals (or else contains) ``text``."""
        flat = [b for row in self.buttons for b in row]
        for candidate in flat:
            if candidate["text"] == text:
                return candidate
        for candidate in flat:
            if text in candidate["text"]:
                return candidate
        raise KeyError(
            f"no button {text!r} on message {self.message_id}; buttons: {self.button_texts}"
        )

    @property
    def file_id(self) -> str | None:
        """file_id of the largest photo size or of the document."""
        if self.photo:
            return self.photo[-1]["file_id"]
        if self.document:
            return self.document["file_id"]
        return None

    def snapshot(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "entities": list(self.entities),
            "caption": self.caption,
            "caption_entities": list(self.caption_entities),
            "reply_markup": self.reply_markup,
            "photo": self.photo,
            "document": self.document,
        }

    def summary(self) -> str:
        flags = " (deleted)" if self.deleted else ""
        flags += f" edits={len(self.edits)}" if self.edits else ""
        buttons = f" buttons={self.button_texts}" if self.buttons else ""
        who = "bot" if self.from_bot else f"user {self.sender.get('id')}"
        return f"#{self.message_id} [{who}] {self.kind} {self.content[:80]!r}{buttons}{flags}"


@dataclass
class CallbackQueryRecord:
    """A button press injected by the test, and the bot's answer to it."""

    id: str
    chat_id: int
    message_id: int
    user_id: int
    data: str | None
    pressed_at: float
    answered_at: float | None = None
    text: str | None = None
    show_alert: bool = False
    url: str | None = None
    cache_time: int | None = None

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def latency(self) -> float | None:
        """Seconds between press and answer (fake clock)."""
        return None if self.answered_at is None else self.answered_at - self.pressed_at


# --------------------------------------------------------------------------------------
# State: chats & messages, files, update queue, flood control
# --------------------------------------------------------------------------------------


@dataclass
class ChatInfo:
    id: int
    type: str  # private | group | supergroup | channel
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    is_forum: bool = False
    blocked: bool = False  # bot blocked by the user / kicked from the group
    members: dict[int, str] = field(default_factory=dict)  # user_id -> status
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    next_message_id: int = 1

    def to_api(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private":
            chat["first_name"] = self.first_name or "User"
            if self.last_name:
                chat["last_name"] = self.last_name
        else:
            chat["title"] = self.title or f"Chat {self.id}"
        if self.username:
            chat["username"] = self.username
        if self.is_forum:
            chat["is_forum"] = True
        return chat


class ChatStore:
    """Chats, users and per-chat message history (message ids increase per chat)."""

    def __init__(self) -> None:
        self.chats: dict[int, ChatInfo] = {}
        self.users: dict[int, dict[str, Any]] = {}

    def get(self, chat_id: int) -> ChatInfo | None:
        return self.chats.get(chat_id)

    def by_username(self, username: str) -> ChatInfo | None:
        wanted = username.lstrip("@").lower()
        return next((c for c in self.chats.values() if (c.username or "").lower() == wanted), None)

    def ensure(self, chat_id: int, chat_type: str, **attrs: Any) -> ChatInfo:
        chat = self.chats.get(chat_id)
        if chat is None:
            # Ids start at a chat-specific base so that mixing up chats and message ids fails.
            base = 100 * (1 + abs(chat_id) % 9) + 1
            chat = ChatInfo(id=chat_id, type=chat_type, next_message_id=base)
            self.chats[chat_id] = chat
        elif chat.type != chat_type:
            raise ValueError(f"chat {chat_id} is a {chat.type}, not a {chat_type}")
        for key, value in attrs.items():
            if value is not None:
                setattr(chat, key, value)
        return chat

    def add(self, chat: ChatInfo, **fields: Any) -> StoredMessage:
        msg = StoredMessage(chat_id=chat.id, message_id=chat.next_message_id, **fields)
        chat.next_message_id += 1
        chat.messages[msg.message_id] = msg
        return msg

    def find(self, chat_id: int, message_id: int | None) -> StoredMessage | None:
        chat = self.chats.get(chat_id)
        if chat is None or message_id is None:
            return None
        msg = chat.messages.get(message_id)
        return None if msg is None or msg.deleted else msg

    def render(self, msg: StoredMessage, *, nested: bool = False) -> dict[str, Any]:
        """The Bot API Message object for ``msg``."""
        chat = self.chats[msg.chat_id]
        out: dict[str, Any] = {
            "message_id": msg.message_id,
            "from": dict(msg.sender),
            "chat": chat.to_api(),
            "date": msg.date,
        }
        if msg.message_thread_id is not None:
            out["message_thread_id"] = msg.message_thread_id
        if msg.reply_to_message_id is not None and not nested:
            target = self.find(msg.chat_id, msg.reply_to_message_id)
            if target is not None:
                out["reply_to_message"] = self.render(target, nested=True)
        if msg.edit_date is not None:
            out["edit_date"] = msg.edit_date
        if msg.media_group_id is not None:
            out["media_group_id"] = msg.media_group_id
        if msg.text is not None:
            out["text"] = msg.text
            if msg.entities:
                out["entities"] = msg.entities
        if msg.photo is not None:
            out["photo"] = msg.photo
        if msg.document is not None:
            out["document"] = msg.document
        if msg.caption:
            out["caption"] = msg.caption
            if msg.caption_entities:
                out["caption_entities"] = msg.caption_entities
        if msg.inline_markup:  # Message.reply_markup only ever carries inline keyboards
            out["reply_markup"] = msg.inline_markup
        return out


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    data: bytes
    file_path: str
    kind: str  # "photo" | "document"
    mime_type: str | None = None
    file_name: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> int:
        return len(self.data)


class FileStore:
    """Everything the fake ever accepted or issued, addressable by file_id and file_path."""

    def __init__(self) -> None:
        self.by_id: dict[str, StoredFile] = {}
        self.by_path: dict[str, StoredFile] = {}
        self._photo_groups: dict[str, list[StoredFile]] = {}  # any size's file_id -> all sizes
        self._counter = itertools.count(1)

    def _new(self, kind: str, data: bytes, **attrs: Any) -> StoredFile:
        n = next(self._counter)
        if kind == "photo":
            prefix, unique_prefix, folder, ext = "AgAC", "AQAD", "photos", ".jpg"
        else:
            prefix, unique_prefix, folder = "BQAC", "AgAD", "documents"
            ext = _extension(attrs.get("file_name"), attrs.get("mime_type"))
        stored = StoredFile(
            file_id=_opaque_id(prefix, kind, n, len(data)),
            file_unique_id=_opaque_id(unique_prefix, "unique", kind, n, length=16),
            data=data,
            file_path=f"{folder}/file_{n}{ext}",
            kind=kind,
            **attrs,
        )
        self.by_id[stored.file_id] = stored
        self.by_path[stored.file_path] = stored
        return stored

    def add_photo(self, sizes: list[tuple[int, int, bytes]]) -> list[StoredFile]:
        group = [
            self._new("photo", data, width=w, height=h, mime_type="image/jpeg")
            for w, h, data in sizes
        ]
        for stored in group:
            self._photo_groups[stored.file_id] = group
        return group

    def add_document(self, data: bytes, file_name: str | None, mime_type: str | None) -> StoredFile:
        return self._new("document", data, file_name=file_name, mime_type=mime_type)

    def get(self, file_id: str) -> StoredFile | None:
        return self.by_id.get(file_id)

    def photo_group(self, file_id: str) -> list[StoredFile] | None:
        return self._photo_groups.get(file_id)


def _extension(file_name: str | None, mime_type: str | None) -> str:
    if file_name and "." in file_name:
        return "." + file_name.rsplit(".", 1)[1][:8]
    known = {
        "image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
        "application/pdf": ".pdf",
    }
    return known.get(mime_type or "", "")


def photo_size_dicts(group: list[StoredFile]) -> list[dict[str, Any]]:
    return [
        {
            "file_id": f.file_id,
            "file_unique_id": f.file_unique_id,
            "file_size": f.size,
            "width": f.width,
            "height": f.height,
        }
        for f in group
    ]


def document_dict(stored: StoredFile) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": stored.size,
    }
    if stored.file_name:
        doc["file_name"] = stored.file_name
    if stored.mime_type:
        doc["mime_type"] = stored.mime_type
    return doc


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def derive_photo_sizes(data: bytes) -> list[tuple[int, int, bytes]]:
    """Validate an uploaded photo like Telegram and produce its JPEG sizes, largest last."""
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
    except Exception:
        raise bad_request("IMAGE_PROCESS_FAILED") from None
    if width <= 0 or height <= 0:
        raise bad_request("IMAGE_PROCESS_FAILED")
    ratio = max(width, height) / min(width, height)
    if width + height > MAX_PHOTO_DIM_SUM or ratio > MAX_PHOTO_RATIO:
        raise bad_request("PHOTO_INVALID_DIMENSIONS")
    try:
        img.load()
        rgb = _to_rgb(img)
    except Exception:
        raise bad_request("IMAGE_PROCESS_FAILED") from None
    longest = max(width, height)
    targets = [t for t in PHOTO_SIZE_STEPS if t < longest] + [min(longest, PHOTO_MAX_SIDE)]
    sizes = []
    for target in targets:
        w = max(1, round(width * target / longest))
        h = max(1, round(height * target / longest))
        scaled = rgb if (w, h) == (width, height) else rgb.resize((w, h), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        scaled.save(buf, "JPEG", quality=87)
        sizes.append((w, h, buf.getvalue()))
    return sizes


class UpdateQueue:
    """Unconfirmed updates; getUpdates offsets confirm, allowed_updates filters."""

    def __init__(self, first_update_id: int = 732_000_001):
        self._ids = itertools.count(first_update_id)
        self.pending: list[dict[str, Any]] = []
        self.allowed: frozenset[str] = DEFAULT_UPDATE_TYPES
        self.allowed_explicit: list[str] | None = None
        self.delivered_ids: set[int] = set()
        self.dropped: list[dict[str, Any]] = []  # filtered out by allowed_updates

    def push(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._ids), kind: payload}
        self.pending.append(update)
        return update

    @staticmethod
    def kind(update: dict[str, Any]) -> str:
        return next(k for k in update if k != "update_id")

    def set_allowed(self, allowed: list[str]) -> None:
        self.allowed_explicit = list(allowed)
        self.allowed = frozenset(allowed) & ALL_UPDATE_TYPES if allowed else DEFAULT_UPDATE_TYPES

    def confirm(self, offset: int) -> None:
        if offset < 0:  # -N: keep only the last N updates, forget the rest
            self.pending = self.pending[offset:]
        else:
            self.pending = [u for u in self.pending if u["update_id"] >= offset]

    def take(self, limit: int) -> list[dict[str, Any]]:
        keep = []
        for update in self.pending:
            if self.kind(update) in self.allowed:
                keep.append(update)
            else:
                self.dropped.append(update)
        self.pending = keep
        batch = keep[:limit]
        self.delivered_ids.update(u["update_id"] for u in batch)
        return batch

    def clear(self) -> None:
        self.pending.clear()


class FloodControl:
    """Sliding-window approximation of Telegram's message limits."""

    PRIVATE = (3, 1.0)  # short bursts are tolerated, sustained >1 msg/s is not
    GROUP = (20, 60.0)
    GLOBAL = (30, 1.0)

    def __init__(self) -> None:
        self._per_chat: dict[int | str, deque[float]] = {}
        self._global: deque[float] = deque()

    @staticmethod
    def _retry(window: deque[float], limit: int, period: float, now: float) -> int | None:
        while window and window[0] <= now - period:
            window.popleft()
        if len(window) < limit:
            return None
        return max(1, math.ceil(window[0] + period - now))

    def check(self, chat_id: int | str | None, now: float) -> int | None:
        waits = [self._retry(self._global, *self.GLOBAL, now)]
        if chat_id is not None:
            limit = self.PRIVATE if isinstance(chat_id, int) and chat_id > 0 else self.GROUP
            waits.append(self._retry(self._per_chat.setdefault(chat_id, deque()), *limit, now))
        real = [w for w in waits if w is not None]
        return max(real) if real else None

    def record(self, chat_id: int | str | None, now: float) -> None:
        self._global.append(now)
        if chat_id is not None:
            self._per_chat.setdefault(chat_id, deque()).append(now)


@dataclass
class _Fault:
    method: str  # lower-case, "*" = any
    error_code: int | None
    description: str | None
    retry_after: int | None
    remaining: int
    delay: float = 0.0


@dataclass
class _Described:
    """A successful result that also carries a description (setWebhook & co)."""

    result: Any
    description: str


Handler = Callable[[Params], Awaitable[Any]]

_MEDIA_TYPES = ("photo", "video", "audio", "document")
_MENU_BUTTON_TYPES = ("default", "commands", "web_app")


def _webhook_deleted(was_set: bool) -> str:
    return "Webhook was deleted" if was_set else "Webhook is already deleted"


def _media_fields(kind: str, stored: list[StoredFile]) -> dict[str, Any]:
    if kind == "photo":
        return {"photo": photo_size_dicts(stored)}
    return {"document": document_dict(stored[0])}

_INLINE_ACTIONS = (
    "url", "callback_data", "web_app", "login_url", "switch_inline_query",
    "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
    "callback_game", "pay",
)
_COMMAND_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_SCOPE_TYPES = frozenset(
    {
        "default", "all_private_chats", "all_group_chats", "all_chat_administrators", "chat",
        "chat_administrators", "chat_member",
    }
)


def _known_bot_api_methods() -> dict[str, str]:
    """camelCase names of every method PTB knows, to tell 'not implemented' from 'Not Found'."""
    try:
        from telegram import Bot
    except ImportError:  # pragma: no cover - PTB is a project dependency
        return {}
    names = (n for n in dir(Bot) if re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)+", n))
    return {n.lower(): n for n in names if n not in ("toDict", "toJSON")}


# --------------------------------------------------------------------------------------
# The fake server
# --------------------------------------------------------------------------------------


class FakeTelegram:
    """Strict fake Bot API.  ``.app`` is the Starlette app; see module docstring for usage."""

    def __init__(
        self,
        token: str,
        bot_username: str = "drawbridge_test_bot",
        bot_id: int | None = None,
        *,
        first_name: str = "Drawbridge Test",
        enforce_flood_limits: bool = False,
        privacy_mode: bool = True,
        callback_query_ttl: float = CALLBACK_QUERY_TTL,
    ):
        self.token = token
        self.bot_username = bot_username
        prefix = token.split(":", 1)[0]
        if bot_id is None:  # real tokens start with the bot's id
            bot_id = int(prefix) if prefix.isdigit() else 7_000_000_001
        self.bot_id = bot_id
        self.first_name = first_name
        self.enforce_flood_limits = enforce_flood_limits
        self.privacy_mode = privacy_mode
        self.callback_query_ttl = callback_query_ttl

        self.chats = ChatStore()
        self.files = FileStore()
        self.updates = UpdateQueue()
        self.flood = FloodControl()

        # Observability.
        self.requests: list[ApiCall] = []
        self.callback_queries: dict[str, CallbackQueryRecord] = {}
        self.callback_answers: list[CallbackQueryRecord] = []
        self.commands: dict[tuple[str, str], list[dict[str, str]]] = {}
        self.descriptions: dict[tuple[str, str], str] = {}  # (kind, language_code) -> text
        self.menu_buttons: dict[int | None, dict[str, Any]] = {}
        self.file_downloads: list[str] = []
        self.undelivered: list[dict[str, Any]] = []  # user messages hidden by privacy mode
        self.internal_errors: list[str] = []  # bugs in the fake itself (answered with 500)

        self.webhook_url = ""
        self.webhook_secret: str | None = None
        self.url: str | None = None  # set by serve()
        self.remote_urls: dict[str, tuple[bytes, str]] = {}

        self._faults: list[_Fault] = []
        self._clock_offset = 0.0
        self._frozen_at: float | None = None
        self._changed = asyncio.Event()
        self._poll_serial = 0
        self._closed = False
        self._ids = itertools.count(1)
        self._known_methods = _known_bot_api_methods()

        table: list[tuple[str, Handler]] = [
            ("getMe", self._get_me),
            ("logOut", self._true),
            ("close", self._true),
            ("getUpdates", self._get_updates),
            ("setWebhook", self._set_webhook),
            ("deleteWebhook", self._delete_webhook),
            ("getWebhookInfo", self._get_webhook_info),
            ("sendMessage", self._send_message),
            ("sendPhoto", self._send_photo),
            ("sendDocument", self._send_document),
            ("sendMediaGroup", self._send_media_group),
            ("sendChatAction", self._send_chat_action),
            ("setMessageReaction", self._set_message_reaction),
            ("editMessageText", self._edit_message_text),
            ("editMessageCaption", self._edit_message_caption),
            ("editMessageReplyMarkup", self._edit_message_reply_markup),
            ("editMessageMedia", self._edit_message_media),
            ("deleteMessage", self._delete_message),
            ("deleteMessages", self._delete_messages),
            ("answerCallbackQuery", self._answer_callback_query),
            ("getFile", self._get_file),
            ("setMyCommands", self._set_my_commands),
            ("getMyCommands", self._get_my_commands),
            ("deleteMyCommands", self._delete_my_commands),
            ("setMyDescription", self._set_description("description", 512)),
            ("setMyShortDescription", self._set_description("short_description", 120)),
            ("setMyName", self._set_description("name", 64)),
            ("getMyDescription", self._get_description("description")),
            ("getMyShortDescription", self._get_description("short_description")),
            ("getMyName", self._get_description("name")),
            ("setChatMenuButton", self._set_chat_menu_button),
            ("getChatMenuButton", self._get_chat_menu_button),
            ("getChat", self._get_chat),
            ("getChatMember", self._get_chat_member),
            ("getChatAdministrators", self._get_chat_administrators),
            ("getChatMemberCount", self._get_chat_member_count),
        ]
        self._methods: dict[str, tuple[str, Handler]] = {n.lower(): (n, h) for n, h in table}

        self.app = Starlette(
            routes=[
                Route("/bot{token}/{method}", self._handle_api, methods=["GET", "POST"]),
                Route("/file/bot{token}/{file_path:path}", self._handle_file, methods=["GET"]),
            ],
            exception_handlers={404: self._http_error, 405: self._http_error},
        )

    # ---------------------------------------------------------------- clock & wakeups

    def now(self) -> float:
        """The fake's monotonic clock (real monotonic time + advance_time() offsets)."""
        base = self._frozen_at if self._frozen_at is not None else time.monotonic()
        return base + self._clock_offset

    def advance_time(self, seconds: float) -> None:
        """Jump the fake clock (callback query expiry, flood windows, 48h delete window)."""
        self._clock_offset += seconds
        self._bump()

    def freeze_time(self) -> None:
        """Stop the fake clock (only advance_time() moves it) for deterministic timing tests."""
        self._frozen_at = time.monotonic()

    def unfreeze_time(self) -> None:
        if self._frozen_at is not None:
            self._clock_offset -= time.monotonic() - self._frozen_at
            self._frozen_at = None

    def _unix_now(self) -> int:
        return int(time.time() + self._clock_offset)

    def _bump(self) -> None:
        # Swap in a fresh Event so waiters captured the old one and wake exactly once.
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def close(self) -> None:
        """Release long-polling getUpdates calls so the HTTP server can shut down promptly."""
        self._closed = True
        self._bump()

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Serve ``self.app`` on loopback; yields the base URL (also stored in ``self.url``)."""
        from tests.fakes.server import serve

        self._closed = False
        async with serve(self.app) as url:
            self.url = url
            try:
                yield url
            finally:
                self.close()

    def ptb_urls(self, url: str | None = None) -> dict[str, str]:
        """``base_url``/``base_file_url`` kwargs for ``telegram.Bot`` / ``ApplicationBuilder``."""
        url = url or self.url
        if url is None:
            raise RuntimeError("FakeTelegram is not being served; pass the base URL")
        return {"base_url": f"{url}/bot", "base_file_url": f"{url}/file/bot"}

    # ---------------------------------------------------------------- test-side API

    @property
    def bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.bot_username,
        }

    def add_user(
        self,
        user_id: int,
        first_name: str = "Test",
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        is_premium: bool = False,
    ) -> dict[str, Any]:
        """Register (or update) a user; returns the Bot API User object."""
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        if is_premium:
            user["is_premium"] = True
        self.chats.users[user_id] = user
        return dict(user)

    def add_chat(
        self,
        chat_id: int,
        chat_type: str | None = None,
        *,
        title: str | None = None,
        username: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        is_forum: bool = False,
    ) -> dict[str, Any]:
        """Make a chat known to the fake (so sendMessage to it works); returns the Chat object."""
        chat_type = chat_type or self._infer_chat_type(chat_id)
        self._check_chat_id(chat_id, chat_type)
        if chat_type != "private" and title is None and chat_id not in self.chats.chats:
            title = f"Test {chat_type} {abs(chat_id)}"
        chat = self.chats.ensure(
            chat_id,
            chat_type,
            title=title,
            username=username,
            first_name=first_name,
            last_name=last_name,
            is_forum=is_forum or None,
        )
        if chat_type == "private":
            user = self.chats.users.get(chat_id) or self.add_user(
                chat_id, first_name or "Test", username=username
            )
            chat.first_name = chat.first_name or user["first_name"]
        self._bump()
        return chat.to_api()

    def set_chat_admin(self, chat_id: int, user_id: int, status: str = "administrator") -> None:
        """Give ``user_id`` (possibly the bot's own id) a status in ``chat_id``.

        ``status`` is one of administrator, creator, member, restricted, left, kicked.
        A bot that is an administrator receives all group messages despite privacy mode.
        """
        if status not in ("administrator", "creator", "member", "restricted", "left", "kicked"):
            raise ValueError(f"unsupported status {status!r}")
        chat = self._test_chat(chat_id)
        if user_id != self.bot_id and user_id not in self.chats.users:
            self.add_user(user_id)
        chat.members[user_id] = status
        self._bump()

    def block_bot(self, chat_id: int, blocked: bool = True) -> None:
        """User blocks the bot (private) or kicks it (groups): sends get 403 Forbidden."""
        self._test_chat(chat_id).blocked = blocked
        self._bump()

    def register_url(self, url: str, data: bytes, mime_type: str = "image/jpeg") -> None:
        """Make an http(s) URL "downloadable by Telegram" when a bot sends it as a file."""
        self.remote_urls[url] = (data, mime_type)

    def fail_next(
        self,
        method: str,
        error_code: int = 429,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` ("*" = any method) with an error.

        429 defaults to retry_after=1 and "Too Many Requests: retry after 1".  502/504
        without a description answer with nginx's HTML page, as Telegram's frontends do.
        """
        if error_code == 429 and retry_after is None:
            retry_after = 1
        self._faults.append(_Fault(method.lower(), error_code, description, retry_after, times))

    def slow_next(self, method: str, seconds: float, times: int = 1) -> None:
        """Delay the *response* of the next calls of ``method``; the call itself still takes
        effect (the message is sent), like a real request whose answer is lost to a timeout."""
        self._faults.append(_Fault(method.lower(), None, None, None, times, delay=seconds))

    def inject_update(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update of any type (escape hatch); returns the Update."""
        update = self.updates.push(kind, payload)
        self._bump()
        return update

    def user_message(
        self,
        chat_id: int,
        user_id: int,
        text: str | None = None,
        *,
        chat_type: str | None = None,
        chat_title: str | None = None,
        first_name: str = "Test",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        reply_to_message_id: int | None = None,
        photo: bytes | None = None,
        caption: str | None = None,
        document: bytes | None = None,
        document_mime: str = "application/octet-stream",
        file_name: str = "file.bin",
        media_group_id: str | None = None,
        message_thread_id: int | None = None,
        entities: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A user writes in a chat.  Returns the Message; queues a ``message`` update unless
        privacy mode hides it from the bot (group message that is neither a command for
        this bot nor a reply to it; see ``self.undelivered``)."""
        if sum(x is not None for x in (text, photo, document)) != 1:
            raise ValueError("pass exactly one of text, photo, document (use caption for media)")
        if text is not None and caption is not None:
            raise ValueError("caption is only for photo/document messages")
        known = self.chats.get(chat_id)
        chat_type = chat_type or (known.type if known else self._infer_chat_type(chat_id))
        self._check_chat_id(chat_id, chat_type)
        if chat_type == "private" and chat_id != user_id:
            raise ValueError("in a private chat, chat_id must equal user_id")
        user = self.add_user(
            user_id, first_name, last_name=last_name, username=username, language_code=language_code
        )
        if chat_type == "private":
            chat = self.chats.ensure(
                chat_id, "private", first_name=first_name, last_name=last_name, username=username
            )
        else:
            title = chat_title or (None if known else f"Test {chat_type} {abs(chat_id)}")
            chat = self.chats.ensure(chat_id, chat_type, title=title)
        chat.members.setdefault(user_id, "member")
        reply_target = None
        if reply_to_message_id is not None:
            reply_target = self.chats.find(chat_id, reply_to_message_id)
            if reply_target is None:
                raise ValueError(f"message {reply_to_message_id} does not exist in chat {chat_id}")

        fields: dict[str, Any] = {}
        if text is not None:
            fields["text"] = text
            fields["entities"] = detect_entities(text) if entities is None else entities
        if caption is not None:
            fields["caption"] = caption
            fields["caption_entities"] = detect_entities(caption) if entities is None else entities
        if photo is not None:
            group = self.files.add_photo(derive_photo_sizes(photo))
            fields["photo"] = photo_size_dicts(group)
        if document is not None:
            stored = self.files.add_document(document, file_name, document_mime)
            fields["document"] = document_dict(stored)
        msg = self.chats.add(
            chat,
            from_bot=False,
            sender=user,
            date=self._unix_now(),
            sent_at=self.now(),
            reply_to_message_id=reply_to_message_id,
            media_group_id=media_group_id,
            message_thread_id=message_thread_id,
            method="user_message",
            **fields,
        )
        rendered = self.chats.render(msg)
        if self._visible_to_bot(chat, msg, reply_target):
            self.updates.push("message", rendered)
        else:
            self.undelivered.append(rendered)
        self._bump()
        return rendered

    def press_button(
        self,
        chat_id: int,
        user_id: int,
        message_id: int,
        data: str | None = None,
        *,
        text: str | None = None,
        first_name: str = "Test",
        check_button: bool = True,
    ) -> str:
        """A user presses an inline button of a bot message; returns the callback query id.

        Pass ``data`` (callback_data) or ``text`` (button text).  With ``check_button`` the
        message must currently show a button with that callback_data, as a real client can
        only press buttons it displays.
        """
        msg = self.chats.find(chat_id, message_id)
        if msg is None or not msg.from_bot:
            raise ValueError(f"no bot message {message_id} in chat {chat_id}")
        if data is None:
            if text is None:
                raise ValueError("pass data or text")
            button = msg.button(text)
            if "callback_data" not in button:
                raise ValueError(f"button {button['text']!r} has no callback_data")
            data = button["callback_data"]
        elif check_button and data not in msg.callback_data:
            raise ValueError(
                f"message {message_id} has no button with callback_data {data!r}; "
                f"it has {msg.callback_data}"
            )
        user = self.chats.users.get(user_id) or self.add_user(user_id, first_name)
        query_id = str(4_380_000_000_000_000_000 + next(self._ids))
        record = CallbackQueryRecord(
            id=query_id, chat_id=chat_id, message_id=message_id, user_id=user_id, data=data,
            pressed_at=self.now(),
        )
        self.callback_queries[query_id] = record
        payload = {
            "id": query_id,
            "from": dict(user),
            "message": self.chats.render(msg),
            "chat_instance": str((chat_id * 2_654_435_761) % 10**19),
            "data": data,
        }
        self.updates.push("callback_query", payload)
        self._bump()
        return query_id

    # ---------------------------------------------------------------- observability

    def calls(
        self, method: str | None = None, chat_id: int | str | None = None, *, ok: bool | None = None
    ) -> list[ApiCall]:
        """Recorded requests, filtered by method (case-insensitive), chat and success."""
        wanted = method.lower() if method else None
        return [
            c
            for c in self.requests
            if (wanted is None or c.method.lower() == wanted)
            and (chat_id is None or c.chat_id == chat_id)
            and (ok is None or c.ok == ok)
        ]

    def bot_messages(self, chat_id: int, include_deleted: bool = False) -> list[StoredMessage]:
        chat = self.chats.get(chat_id)
        if chat is None:
            return []
        return [
            m for m in chat.messages.values() if m.from_bot and (include_deleted or not m.deleted)
        ]

    def last_bot_message(self, chat_id: int) -> StoredMessage | None:
        messages = self.bot_messages(chat_id)
        return messages[-1] if messages else None

    def chat_history(self, chat_id: int, include_deleted: bool = True) -> list[StoredMessage]:
        chat = self.chats.get(chat_id)
        if chat is None:
            return []
        return [m for m in chat.messages.values() if include_deleted or not m.deleted]

    def message(self, chat_id: int, message_id: int) -> StoredMessage:
        """Any stored message (bot or user, deleted included); KeyError if it never existed."""
        chat = self.chats.get(chat_id)
        if chat is None or message_id not in chat.messages:
            raise KeyError(f"no message {message_id} in chat {chat_id}")
        return chat.messages[message_id]

    def file_bytes(self, file_id: str) -> bytes:
        stored = self.files.get(file_id)
        if stored is None:
            raise KeyError(f"unknown file_id {file_id!r}")
        return stored.data

    def commands_for(
        self, scope: str | dict[str, Any] = "default", language_code: str = ""
    ) -> list[tuple[str, str]]:
        """Commands set for a scope key ("default", "chat:<id>", ...) and language."""
        key = scope if isinstance(scope, str) else self._scope_key(scope)
        commands = self.commands.get((key, language_code), [])
        return [(c["command"], c["description"]) for c in commands]

    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by a getUpdates offset."""
        return list(self.updates.pending)

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 10.0, *, what: str | None = None
    ) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every state change); returns it.

        Exceptions raised by the predicate count as "not yet".  On timeout raises
        AssertionError with a dump of recent requests and bot messages.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_exc: BaseException | None = None
        while True:
            event = self._changed  # capture before evaluating so no change is missed
            try:
                value = predicate()
                if value:
                    return value
            except Exception as exc:  # noqa: BLE001 - surfaced in the timeout message
                last_exc = exc
            remaining = deadline - loop.time()
            if remaining <= 0:
                label = what or getattr(predicate, "__name__", "predicate")
                extra = f"\nlast predicate error: {last_exc!r}" if last_exc else ""
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {label}{extra}\n{self.dump()}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    async def wait_for_message(
        self,
        chat_id: int,
        predicate: Callable[[StoredMessage], Any] | None = None,
        timeout: float = 10.0,
        *,
        after_message_id: int | None = None,
    ) -> StoredMessage:
        """First (oldest) non-deleted bot message in ``chat_id`` matching ``predicate``."""

        def find() -> StoredMessage | None:
            for msg in self.bot_messages(chat_id):
                if after_message_id is not None and msg.message_id <= after_message_id:
                    continue
                if predicate is None or predicate(msg):
                    return msg
            return None

        return await self.wait_for(find, timeout, what=f"a bot message in chat {chat_id}")

    async def wait_for_call(
        self,
        method: str,
        chat_id: int | str | None = None,
        predicate: Callable[[ApiCall], Any] | None = None,
        timeout: float = 10.0,
    ) -> ApiCall:
        """First recorded request of ``method`` (and chat) matching ``predicate``."""

        def find() -> ApiCall | None:
            calls = self.calls(method, chat_id)
            return next((c for c in calls if predicate is None or predicate(c)), None)

        return await self.wait_for(find, timeout, what=f"a {method} call")

    def dump(self, limit: int = 25) -> str:
        """Human-readable state summary used in timeout messages."""
        t0 = self.requests[0].timestamp if self.requests else self.now()
        total = len(self.requests)
        lines = [f"--- FakeTelegram: last {min(limit, total)} of {total} requests"]
        for call in self.requests[-limit:]:
            brief = {
                k: (v[:60] + "…" if isinstance(v, str) and len(v) > 60 else v)
                for k, v in call.params.items()
            }
            outcome = "ok" if call.ok else f"{call.status} {call.error}"
            files = f" files={list(call.files)}" if call.files else ""
            when = call.timestamp - t0
            lines.append(f"  +{when:7.3f}s {call.method} {brief}{files} -> {outcome}")
        for chat in self.chats.chats.values():
            lines.append(f"--- chat {chat.id} ({chat.type})")
            lines.extend(f"  {m.summary()}" for m in list(chat.messages.values())[-limit:])
        lines.append(f"--- pending updates: {[UpdateQueue.kind(u) for u in self.updates.pending]}")
        if self.undelivered:
            lines.append(f"--- hidden by privacy mode: {len(self.undelivered)} message(s)")
        if self.internal_errors:
            lines.append("--- INTERNAL ERRORS IN THE FAKE:")
            lines.extend(self.internal_errors[-3:])
        return "\n".join(lines)

    # ---------------------------------------------------------------- HTTP plumbing

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 404)
        return JSONResponse(
            {"ok": False, "error_code": code, "description": HTTP_PHRASES.get(code, "Not Found")},
            status_code=code,
        )

    def _token_error(self, token: str) -> ApiError | None:
        if token == self.token:
            return None
        # Malformed tokens are "Not Found"; well-formed but wrong ones "Unauthorized".
        if re.fullmatch(r"\d+:[\w-]+", token):
            return ApiError(401, "Unauthorized")
        return ApiError(404, "Not Found")

    @staticmethod
    def _error_response(err: ApiError) -> Response:
        if err.code in (502, 504) and err.description == HTTP_PHRASES[err.code]:
            title = f"{err.code} {err.description}"
            page = (
                f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
                f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
                "</body>\r\n</html>\r\n"
            )
            return Response(page, status_code=err.code, media_type="text/html")
        body: dict[str, Any] = {"ok": False, "error_code": err.code, "description": err.description}
        if err.parameters:
            body["parameters"] = err.parameters
        return JSONResponse(body, status_code=err.code)

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method in (method.lower(), "*"):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _counts_as_message(method: str) -> bool:
        lower = method.lower()
        if lower in ("sendchataction", "deletewebhook", "deletemycommands"):
            return False  # chat actions have their own, much laxer limits
        return lower.startswith(("send", "edit", "delete", "copy", "forward"))

    async def _handle_api(self, request: Request) -> Response:
        token = request.path_params["token"]
        method_raw = request.path_params["method"]
        entry = self._methods.get(method_raw.lower())
        call = ApiCall(
            method=entry[0] if entry else method_raw,
            params={},
            files={},
            chat_id=None,
            timestamp=self.now(),
        )
        self.requests.append(call)
        delay = 0.0
        try:
            raw, uploads = await read_request(request)
            call.params = dict(raw)
            call.files = {name: up.data for name, up in uploads.items()}
            token_error = self._token_error(token)
            if token_error:
                raise token_error
            if entry is None:
                known = self._known_methods.get(method_raw.lower())
                if known:  # a real method the fake lacks: say so instead of a puzzling 404
                    raise bad_request(f"method {known} is not implemented by FakeTelegram")
                raise ApiError(404, "Not Found")
            canonical, handler = entry
            call.params = normalize_params(raw)
            chat_hint = call.params.get("chat_id")
            if isinstance(chat_hint, (int, str)) and chat_hint != "":
                call.chat_id = chat_hint

            fault = self._take_fault(canonical)
            if fault is not None and fault.error_code is not None:
                raise self._fault_error(fault)
            delay = fault.delay if fault is not None else 0.0

            counted = self.enforce_flood_limits and self._counts_as_message(canonical)
            if counted:
                retry_after = self.flood.check(call.chat_id, self.now())
                if retry_after is not None:
                    raise ApiError(
                        429,
                        f"Too Many Requests: retry after {retry_after}",
                        {"retry_after": retry_after},
                    )
            result = await handler(Params(call.params, uploads, call, request))
            if counted:
                self.flood.record(call.chat_id, self.now())
            description = None
            if isinstance(result, _Described):
                result, description = result.result, result.description
            call.status, call.ok, call.result = 200, True, result
            body: dict[str, Any] = {"ok": True, "result": result}
            if description:
                body["description"] = description
            response: Response = JSONResponse(body)
        except ApiError as err:
            call.status, call.ok, call.error = err.code, False, err.description
            response = self._error_response(err)
        except _ClientGone:
            call.status, call.ok, call.error = 499, False, "client disconnected"
            response = Response(status_code=499)
        except Exception:  # a bug in the fake: make it loud, not a silent hang
            trace = traceback.format_exc()
            self.internal_errors.append(f"{call.method}: {trace}")
            call.status, call.ok = 500, False
            call.error = f"FakeTelegram internal error: {trace.splitlines()[-1]}"
            response = self._error_response(ApiError(500, "Internal Server Error"))
        finally:
            self._bump()
        if delay:
            await asyncio.sleep(delay)
        return response

    @staticmethod
    def _fault_error(fault: _Fault) -> ApiError:
        code = fault.error_code or 500
        if fault.description is not None:
            description = fault.description
        elif code == 429:
            description = f"Too Many Requests: retry after {fault.retry_after}"
        elif code == 403:
            description = "Forbidden: bot was blocked by the user"
        else:
            description = HTTP_PHRASES.get(code, "Internal Server Error")
        parameters = {"retry_after": fault.retry_after} if fault.retry_after else None
        return ApiError(code, description, parameters)

    async def _handle_file(self, request: Request) -> Response:
        token_error = self._token_error(request.path_params["token"])
        if token_error:
            return self._error_response(token_error)
        path = request.path_params["file_path"]
        stored = self.files.by_path.get(path)
        if stored is None:
            return self._error_response(ApiError(404, "Not Found"))
        self.file_downloads.append(path)
        self._bump()
        return Response(stored.data, media_type=stored.mime_type or "application/octet-stream")

    # ---------------------------------------------------------------- shared validation

    @staticmethod
    def _infer_chat_type(chat_id: int) -> str:
        if chat_id > 0:
            return "private"
        return "supergroup" if chat_id <= -1_000_000_000_000 else "group"

    @staticmethod
    def _check_chat_id(chat_id: int, chat_type: str) -> None:
        if chat_type not in ("private", "group", "supergroup", "channel"):
            raise ValueError(f"unknown chat type {chat_type!r}")
        if (chat_type == "private") != (chat_id > 0):
            sign = "positive" if chat_type == "private" else "negative"
            raise ValueError(f"{chat_type} chats need {sign} ids")

    def _test_chat(self, chat_id: int) -> ChatInfo:
        chat = self.chats.get(chat_id)
        if chat is None:
            self.add_chat(chat_id)
            chat = self.chats.chats[chat_id]
        return chat

    def _visible_to_bot(
        self, chat: ChatInfo, msg: StoredMessage, reply_target: StoredMessage | None
    ) -> bool:
        """Privacy mode: in groups the bot only sees commands, messages that
        mention it by username (BotFather: "only receive messages that either
        start with the '/' symbol or mention the bot by username") and replies
        to its messages."""
        if chat.type == "private" or not self.privacy_mode:
            return True
        if chat.members.get(self.bot_id) in ("administrator", "creator"):
            return True
        if reply_target is not None and reply_target.from_bot:
            return True
        m = _COMMAND_RE.match(msg.content)
        if m:
            _, _, target = m.group(0).partition("@")
            return not target or target.lower() == self.bot_username.lower()
        mention = f"@{self.bot_username}".lower()
        return any(
            kind == "mention" and covered.lower() == mention
            for kind, covered in iter_entities_text(msg.content, msg.entities or msg.caption_entities)
        )

    def _chat(self, p: Params, name: str = "chat_id", *, sending: bool = False) -> ChatInfo:
        value = p.raw(name)
        if value is None or value == "":
            raise bad_request("chat_id is empty")
        chat: ChatInfo | None = None
        if isinstance(value, str) and value.startswith("@"):
            chat = self.chats.by_username(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            chat = self.chats.get(value)
        if chat is None:
            raise bad_request("chat not found")
        p.call.chat_id = chat.id
        if sending and chat.blocked:
            if chat.type == "private":
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            raise ApiError(403, f"Forbidden: bot was kicked from the {chat.type} chat")
        return chat

    def _format(
        self, text: str, parse_mode: str | None, explicit_entities: Any, *, caption: bool
    ) -> tuple[str, list[dict[str, Any]]]:
        """Apply parse_mode / entities, trim, and enforce the length limit."""
        if explicit_entities is not None:
            plain, entities = text, validate_entities(text, explicit_entities)
        else:
            mode = (parse_mode or "").lower()
            if mode == "":
                plain, entities = text, []
            elif mode == "html":
                plain, entities = parse_html(text)
            elif mode == "markdownv2":
                plain, entities = parse_markdown_v2(text)
            elif mode == "markdown":
                plain, entities = parse_markdown(text)
            else:
                raise bad_request("unsupported parse_mode")
        plain, entities = _strip_formatted(plain, entities)
        if caption:
            if len(plain) > MAX_CAPTION_LENGTH:
                raise bad_request("message caption is too long")
        else:
            if not plain:
                raise bad_request("text must be non-empty")
            if len(plain) > MAX_TEXT_LENGTH:
                raise bad_request("message is too long")
        return plain, entities

    def _caption(self, p: Params) -> tuple[str | None, list[dict[str, Any]]]:
        caption = p.str("caption")
        if not caption:
            return None, []
        plain, entities = self._format(
            caption, p.str("parse_mode"), p.raw("caption_entities"), caption=True
        )
        return plain or None, entities

    def _reply_target(self, chat: ChatInfo, p: Params) -> int | None:
        params = p.raw("reply_parameters")
        if params is not None:
            if not isinstance(params, dict):
                raise bad_request("can't parse reply parameters JSON object")
            if "message_id" not in params:
                raise bad_request('can\'t find field "message_id"')
            message_id = params["message_id"]
            allow = bool(params.get("allow_sending_without_reply", False))
            target_chat = params.get("chat_id", chat.id)
            if target_chat not in (chat.id, None) and target_chat != f"@{chat.username}":
                raise bad_request("fake only supports replies within the same chat")
        elif p.has("reply_to_message_id"):
            message_id = p.int("reply_to_message_id")
            allow = p.bool("allow_sending_without_reply")
        else:
            return None
        if not isinstance(message_id, int) or isinstance(message_id, bool):
            raise bad_request("invalid message_id specified")
        if self.chats.find(chat.id, message_id) is not None:
            return message_id
        if allow:
            return None
        raise bad_request("message to be replied not found")

    def _thread(self, chat: ChatInfo, p: Params) -> int | None:
        thread_id = p.int("message_thread_id")
        if thread_id is None:
            return None
        if chat.is_forum or thread_id in chat.messages:
            return thread_id
        raise bad_request("message thread not found")

    def _markup(self, raw: Any, *, inline_only: bool = False) -> dict[str, Any] | None:
        """Validate reply_markup like the Bot API; returns the normalised markup."""
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in raw:
            rows = raw["inline_keyboard"]
            if not isinstance(rows, list):
                raise bad_request('field "inline_keyboard" must be of type Array')
            for row in rows:
                if not isinstance(row, list):
                    raise bad_request('field "inline_keyboard" must be an Array of Arrays')
                for button in row:
                    self._check_inline_button(button)
            if not any(rows):
                return None  # an empty inline keyboard is no keyboard
            return {"inline_keyboard": rows}
        if inline_only:
            raise bad_request("inline keyboard expected")
        if "keyboard" in raw:
            rows = raw["keyboard"]
            if not isinstance(rows, list):
                raise bad_request('field "keyboard" must be of type Array')
            for row in rows:
                if not isinstance(row, list):
                    raise bad_request('field "keyboard" must be an Array of Arrays')
                for button in row:
                    if isinstance(button, dict):
                        if "text" not in button:
                            raise bad_request(
                                'can\'t parse keyboard button: Can\'t find field "text"'
                            )
                    elif not isinstance(button, str):
                        raise bad_request(
                            "can't parse keyboard button: expected a String or an Object"
                        )
            for flag in ("resize_keyboard", "one_time_keyboard", "selective", "is_persistent"):
                if flag in raw and not isinstance(raw[flag], bool):
                    raise bad_request(f'field "{flag}" must be of type Boolean')
            return dict(raw)
        for flag in ("remove_keyboard", "force_reply"):
            if flag in raw:
                if not isinstance(raw[flag], bool):
                    raise bad_request(f'field "{flag}" must be of type Boolean')
                return dict(raw)
        return None

    @staticmethod
    def _check_inline_button(button: Any) -> None:
        prefix = "can't parse inline keyboard button: "
        if not isinstance(button, dict):
            raise bad_request(prefix + "InlineKeyboardButton must be an Object")
        if "text" not in button:
            raise bad_request(prefix + 'Can\'t find field "text"')
        if not isinstance(button["text"], str):
            raise bad_request(prefix + 'Field "text" must be of type String')
        if not button["text"].strip():
            raise bad_request("BUTTON_TEXT_INVALID")
        # Telegram treats empty callback_data/url as absent ("Text buttons are unallowed").
        actions = [a for a in _INLINE_ACTIONS if button.get(a) not in (None, "")]
        if not actions:
            raise bad_request(prefix + "Text buttons are unallowed in the inline keyboard")
        if len(actions) > 1:
            # Telegram silently picks the first field; a bot doing this has a bug.
            raise bad_request(
                f"{prefix}exactly one action field must be used, got {actions} "
                "(FakeTelegram check)"
            )
        action = actions[0]
        value = button[action]
        if action == "callback_data":
            size = len(value.encode("utf-8")) if isinstance(value, str) else 0
            if not 1 <= size <= MAX_CALLBACK_DATA_BYTES:
                raise bad_request("BUTTON_DATA_INVALID")
        elif action == "url":
            url = str(value)
            scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", url)
            problem = None
            if scheme and scheme.group(1).lower() not in ("http", "https", "tg", "ton"):
                problem = "Unsupported URL protocol"
            elif _check_link(url) is None:
                problem = "Wrong HTTP URL"
            if problem:
                raise bad_request(f"inline keyboard button URL '{url}' is invalid: {problem}")
        elif action == "web_app":
            url = str(value.get("url", "")) if isinstance(value, dict) else ""
            if not url.lower().startswith("https://"):
                raise bad_request(
                    f"inline keyboard button Web App URL '{url}' is invalid: "
                    "Only HTTPS links are allowed"
                )
        elif action in ("callback_game", "pay"):
            raise bad_request("BUTTON_TYPE_INVALID")
        elif action == "copy_text":
            copied = value.get("text") if isinstance(value, dict) else None
            if not isinstance(copied, str) or not 1 <= len(copied) <= 256:
                raise bad_request("BUTTON_COPY_TEXT_INVALID")

    async def _resolve_file(
        self, p: Params, field_name: str, value: Any, kind: str
    ) -> tuple[list[StoredFile], bytes | None, str | None]:
        """Resolve an InputFile (upload, attach://, file_id, URL) -> (stored files, upload, name).

        Photos yield all sizes (largest last); documents a single file.
        """
        upload: UploadedFile | None = None
        if value is None:
            upload = p.files.get(field_name)
            if upload is None:
                raise bad_request(f"there is no {kind} in the request")
        elif isinstance(value, str) and value.startswith("attach://"):
            name = value[len("attach://"):]
            upload = p.files.get(name)
            if upload is None:
                raise bad_request(f'can\'t find attached file "{name}"')
        elif not isinstance(value, str) or not value:
            raise bad_request(f"there is no {kind} in the request")
        elif value in self.remote_urls:
            data, mime = self.remote_urls[value]
            upload = UploadedFile(field_name, value.rsplit("/", 1)[-1] or "file", mime, data)
        else:
            # A file_id we issued earlier.  URLs would need Telegram to fetch them from the
            # internet, which the fake can't do unless the test registered the URL.
            group = self.files.photo_group(value)
            stored = self.files.get(value)
            if stored is None:
                raise bad_request(E_WRONG_FILE)
            if (kind == "photo") != (stored.kind == "photo"):
                raise bad_request("type of file mismatch")
            return (group if kind == "photo" and group else [stored]), None, None

        data = upload.data
        if not data:
            raise bad_request("file must be non-empty")
        if kind == "photo":
            if len(data) > MAX_PHOTO_UPLOAD:
                raise bad_request("file is too big")
            sizes = await asyncio.to_thread(derive_photo_sizes, data)
            return self.files.add_photo(sizes), data, upload.filename
        if len(data) > MAX_UPLOAD:
            raise ApiError(413, "Request Entity Too Large")
        mime = upload.content_type or "application/octet-stream"
        return [self.files.add_document(data, upload.filename or None, mime)], data, upload.filename

    def _new_bot_message(self, chat: ChatInfo, method: str, **fields: Any) -> StoredMessage:
        return self.chats.add(
            chat, from_bot=True, sender=self.bot_user, date=self._unix_now(), sent_at=self.now(),
            method=method, **fields,
        )

    def _editable(self, p: Params) -> tuple[ChatInfo, StoredMessage]:
        if p.has("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")
        chat = self._chat(p, sending=True)  # a user who blocked the bot refuses edits too
        message_id = p.int("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        msg = self.chats.find(chat.id, message_id)
        if msg is None:
            raise bad_request("message to edit not found")
        if not msg.from_bot:
            raise bad_request("message can't be edited")
        return chat, msg

    def _apply_edit(self, msg: StoredMessage, method: str, **changes: Any) -> dict[str, Any]:
        msg.edits.append(MessageEdit(at=self.now(), method=method, before=msg.snapshot()))
        for key, value in changes.items():
            setattr(msg, key, value)
        msg.edit_date = self._unix_now()
        return self.chats.render(msg)

    # ---------------------------------------------------------------- handlers: bot & updates

    async def _true(self, p: Params) -> bool:
        return True

    async def _get_me(self, p: Params) -> dict[str, Any]:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": not self.privacy_mode,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, p: Params) -> list[dict[str, Any]]:
        if self.webhook_url:
            raise ApiError(409, E_CONFLICT_WEBHOOK)
        self._poll_serial += 1
        serial = self._poll_serial
        self._bump()  # an older long poll must notice it has been superseded
        offset = p.int("offset")
        limit = min(max(p.int("limit") or 100, 1), 100)
        timeout = max(p.float("timeout") or 0.0, 0.0)
        allowed = p.json("allowed_updates")
        if allowed is not None:
            if not isinstance(allowed, list):
                raise bad_request("can't parse allowed_updates JSON object")
            self.updates.set_allowed([str(a) for a in allowed])
        if offset is not None:
            self.updates.confirm(offset)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        disconnect = asyncio.ensure_future(self._disconnected(p.request)) if p.request else None
        try:
            while True:
                if serial != self._poll_serial:
                    # A client that cancelled its poll and immediately re-polled (PTB does on
                    # shutdown) is gone already; only a live older poller gets the 409.
                    if disconnect is not None:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(asyncio.shield(disconnect), 0.02)
                        if disconnect.done():
                            raise _ClientGone()
                    raise ApiError(409, E_CONFLICT_POLLING)
                batch = self.updates.take(limit)
                remaining = deadline - loop.time()
                if batch or remaining <= 0 or self._closed:
                    return batch
                changed = asyncio.ensure_future(self._changed.wait())
                waiters = {changed} | ({disconnect} if disconnect else set())
                try:
                    await asyncio.wait(
                        waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    changed.cancel()
                if disconnect is not None and disconnect.done():
                    raise _ClientGone()
        finally:
            if disconnect is not None:
                disconnect.cancel()

    @staticmethod
    async def _disconnected(request: Request) -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    async def _set_webhook(self, p: Params) -> _Described:
        url = p.str("url") or ""
        if not url:
            was_set = bool(self.webhook_url)
            self.webhook_url = ""
            return _Described(True, _webhook_deleted(was_set))
        if not url.lower().startswith("https://"):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = p.str("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise bad_request("secret token contains unallowed characters")
        allowed = p.json("allowed_updates")
        if isinstance(allowed, list):
            self.updates.set_allowed([str(a) for a in allowed])
        if p.bool("drop_pending_updates"):
            self.updates.clear()
        self.webhook_url, self.webhook_secret = url, secret
        self._bump()  # running long polls don't end, but new ones now conflict
        return _Described(True, "Webhook was set")

    async def _delete_webhook(self, p: Params) -> _Described:
        was_set = bool(self.webhook_url)
        self.webhook_url, self.webhook_secret = "", None
        if p.bool("drop_pending_updates"):
            self.updates.clear()
        return _Described(True, _webhook_deleted(was_set))

    async def _get_webhook_info(self, p: Params) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self.updates.pending),
        }
        if self.webhook_url:
            info["max_connections"] = 40
            if self.updates.allowed_explicit is not None:
                info["allowed_updates"] = self.updates.allowed_explicit
        return info

    # ---------------------------------------------------------------- handlers: sending

    async def _send_message(self, p: Params) -> dict[str, Any]:
        chat = self._chat(p, sending=True)
        text = p.str("text")
        if not text:
            raise bad_request("message text is empty")
        plain, entities = self._format(text, p.str("parse_mode"), p.raw("entities"), caption=False)
        markup = self._markup(p.raw("reply_markup"))
        reply_to = self._reply_target(chat, p)
        msg = self._new_bot_message(
            chat, "sendMessage", text=plain, entities=entities, reply_markup=markup,
            reply_to_message_id=reply_to, message_thread_id=self._thread(chat, p),
            parse_mode=p.str("parse_mode"), raw_text=text,
        )
        return self.chats.render(msg)

    async def _send_photo(self, p: Params) -> dict[str, Any]:
        return await self._send_file(p, "photo")

    async def _send_document(self, p: Params) -> dict[str, Any]:
        return await self._send_file(p, "document")

    async def _send_file(self, p: Params, kind: str) -> dict[str, Any]:
        chat = self._chat(p, sending=True)
        caption, caption_entities = self._caption(p)
        markup = self._markup(p.raw("reply_markup"))
        reply_to = self._reply_target(chat, p)
        thread = self._thread(chat, p)
        stored, upload, upload_name = await self._resolve_file(p, kind, p.raw(kind), kind)
        media = _media_fields(kind, stored)
        msg = self._new_bot_message(
            chat, "sendPhoto" if kind == "photo" else "sendDocument", caption=caption,
            caption_entities=caption_entities, reply_markup=markup, reply_to_message_id=reply_to,
            message_thread_id=thread, parse_mode=p.str("parse_mode"), raw_text=p.str("caption"),
            upload=upload, upload_name=upload_name, **media,
        )
        return self.chats.render(msg)

    async def _send_media_group(self, p: Params) -> list[dict[str, Any]]:
        chat = self._chat(p, sending=True)
        if p.has("reply_markup"):
            raise bad_request("sendMediaGroup does not support reply_markup (FakeTelegram check)")
        media = p.json("media")
        if not isinstance(media, list):
            raise bad_request("can't parse media JSON object")
        if not media:
            raise bad_request("there are no messages to send")
        if len(media) > 10:
            raise bad_request("too many messages to send as an album")
        if len(media) < 2:
            raise bad_request("an album must contain 2-10 media (FakeTelegram check)")
        kinds = set()
        for item in media:
            if not isinstance(item, dict) or item.get("type") not in _MEDIA_TYPES:
                raise bad_request("can't parse InputMedia JSON object")
            if item["type"] in ("video", "audio"):
                raise bad_request(f"FakeTelegram does not support {item['type']} media")
            kinds.add(item["type"])
        if "document" in kinds and len(kinds) > 1:
            raise bad_request("document can't be mixed with other media types")
        reply_to = self._reply_target(chat, p)
        thread = self._thread(chat, p)
        prepared = []
        for index, item in enumerate(media):
            caption, caption_entities = None, []
            if item.get("caption"):
                caption, caption_entities = self._format(
                    str(item["caption"]),
                    item.get("parse_mode"),
                    item.get("caption_entities"),
                    caption=True,
                )
            stored, upload, name = await self._resolve_file(
                p, f"media[{index}]", item.get("media"), item["type"]
            )
            prepared.append((item, caption or None, caption_entities, stored, upload, name))
        group_id = str(13_900_000_000_000_000 + next(self._ids))
        results = []
        for item, caption, caption_entities, stored, upload, name in prepared:
            media_fields = _media_fields(item["type"], stored)
            msg = self._new_bot_message(
                chat, "sendMediaGroup", caption=caption, caption_entities=caption_entities,
                media_group_id=group_id, reply_to_message_id=reply_to, message_thread_id=thread,
                parse_mode=item.get("parse_mode"), raw_text=item.get("caption"), upload=upload,
                upload_name=name, **media_fields,
            )
            results.append(self.chats.render(msg))
        return results

    async def _send_chat_action(self, p: Params) -> bool:
        chat = self._chat(p, sending=True)
        if p.str("action") not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        self._thread(chat, p)
        return True

    async def _set_message_reaction(self, p: Params) -> bool:
        chat = self._chat(p)
        message_id = p.int("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        msg = self.chats.find(chat.id, message_id)
        if msg is None or msg.deleted:
            raise bad_request("MESSAGE_ID_INVALID")
        reactions = p.json("reaction") or []
        if not isinstance(reactions, list):
            raise bad_request("can't parse reaction types JSON object")
        if len(reactions) > 1:  # bots react like non-premium users: one each
            raise bad_request("REACTIONS_TOO_MANY")
        for reaction in reactions:
            if not isinstance(reaction, dict) or reaction.get("type") not in ("emoji", "custom_emoji", "paid"):
                raise bad_request("can't parse reaction types JSON object")
            emoji = str(reaction.get("emoji", "")).replace("\ufe0f", "")  # variation selector optional
            if reaction["type"] != "emoji" or emoji not in REACTION_EMOJI:
                raise bad_request("REACTION_INVALID")
        msg.bot_reactions = reactions
        return True

    # ---------------------------------------------------------------- handlers: editing

    async def _edit_message_text(self, p: Params) -> dict[str, Any]:
        _, msg = self._editable(p)
        text = p.str("text")
        if not text:
            raise bad_request("message text is empty")
        if msg.kind != "text":
            raise bad_request("there is no text in the message to edit")
        plain, entities = self._format(text, p.str("parse_mode"), p.raw("entities"), caption=False)
        # An omitted reply_markup removes the keyboard, as on Telegram.
        markup = self._markup(p.raw("reply_markup"), inline_only=True)
        if (plain, entities, markup) == (msg.text, msg.entities, msg.inline_markup):
            raise ApiError(400, E_NOT_MODIFIED)
        return self._apply_edit(
            msg, "editMessageText", text=plain, entities=entities, reply_markup=markup,
            parse_mode=p.str("parse_mode"), raw_text=text,
        )

    async def _edit_message_caption(self, p: Params) -> dict[str, Any]:
        _, msg = self._editable(p)
        if msg.kind == "text":
            raise bad_request("there is no caption in the message to edit")
        caption, caption_entities = self._caption(p)
        markup = self._markup(p.raw("reply_markup"), inline_only=True)
        current = (msg.caption, msg.caption_entities, msg.inline_markup)
        if (caption, caption_entities, markup) == current:
            raise ApiError(400, E_NOT_MODIFIED)
        return self._apply_edit(
            msg, "editMessageCaption", caption=caption, caption_entities=caption_entities,
            reply_markup=markup, parse_mode=p.str("parse_mode"), raw_text=p.str("caption"),
        )

    async def _edit_message_reply_markup(self, p: Params) -> dict[str, Any]:
        _, msg = self._editable(p)
        markup = self._markup(p.raw("reply_markup"), inline_only=True)
        if markup == msg.inline_markup:
            raise ApiError(400, E_NOT_MODIFIED)
        return self._apply_edit(msg, "editMessageReplyMarkup", reply_markup=markup)

    async def _edit_message_media(self, p: Params) -> dict[str, Any]:
        """Bot API 7.x+: edits a message's media, "or adds media to text
        messages" (the text is then gone; the caption is the new text)."""
        _, msg = self._editable(p)
        media = p.json("media")
        if not isinstance(media, dict) or media.get("type") not in ("photo", "document"):
            raise bad_request("can't parse InputMedia JSON object")
        kind = media["type"]
        caption, caption_entities = None, []
        if media.get("caption"):
            caption, caption_entities = self._format(
                str(media["caption"]),
                media.get("parse_mode"),
                media.get("caption_entities"),
                caption=True,
            )
        markup = self._markup(p.raw("reply_markup"), inline_only=True)
        stored, upload, name = await self._resolve_file(p, "media", media.get("media"), kind)
        new_media = photo_size_dicts(stored) if kind == "photo" else document_dict(stored[0])
        if msg.photo:
            old_unique = msg.photo[-1]["file_unique_id"]
        else:
            old_unique = (msg.document or {}).get("file_unique_id")
        new_unique = stored[-1].file_unique_id
        if msg.kind != "text" and (new_unique, caption, caption_entities, markup) == (
            old_unique, msg.caption, msg.caption_entities, msg.inline_markup
        ):
            raise ApiError(400, E_NOT_MODIFIED)
        return self._apply_edit(
            msg, "editMessageMedia", text=None, entities=[], photo=new_media if kind == "photo" else None,
            document=new_media if kind == "document" else None, caption=caption or None,
            caption_entities=caption_entities, reply_markup=markup, upload=upload, upload_name=name,
            raw_text=media.get("caption"),
        )

    async def _delete_message(self, p: Params) -> bool:
        chat = self._chat(p)
        message_id = p.int("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        self._delete_one(chat, message_id)
        return True

    def _delete_one(self, chat: ChatInfo, message_id: int) -> None:
        msg = self.chats.find(chat.id, message_id)
        if msg is None:
            raise bad_request("message to delete not found")
        bot_status = chat.members.get(self.bot_id)
        bot_is_admin = bot_status in ("administrator", "creator")
        if chat.type != "private" and not msg.from_bot and not bot_is_admin:
            raise bad_request("message can't be deleted")
        if self.now() - msg.sent_at > DELETE_WINDOW and chat.type == "private":
            raise bad_request("message can't be deleted for everyone")
        msg.deleted, msg.deleted_at = True, self.now()

    async def _delete_messages(self, p: Params) -> bool:
        chat = self._chat(p)
        ids = p.json("message_ids")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
            raise bad_request("message_ids must be a list of 1-100 message identifiers")
        for message_id in ids:
            with contextlib.suppress(ApiError):  # like Telegram: missing ones are skipped
                self._delete_one(chat, int(message_id))
        return True

    # ---------------------------------------------------------------- handlers: callbacks & files

    async def _answer_callback_query(self, p: Params) -> bool:
        query_id = p.str("callback_query_id") or ""
        record = self.callback_queries.get(query_id)
        now = self.now()
        if record is None or record.answered or now - record.pressed_at > self.callback_query_ttl:
            raise bad_request(E_QUERY_TOO_OLD)
        p.call.chat_id = record.chat_id
        text = p.str("text")
        if text is not None and len(text) > 200:
            raise bad_request("MESSAGE_TOO_LONG")
        record.answered_at = now
        record.text = text
        record.show_alert = p.bool("show_alert")
        record.url = p.str("url")
        record.cache_time = p.int("cache_time")
        self.callback_answers.append(record)
        return True

    async def _get_file(self, p: Params) -> dict[str, Any]:
        file_id = p.str("file_id") or ""
        stored = self.files.get(file_id)
        if stored is None:
            raise bad_request("invalid file_id")
        if stored.size > MAX_DOWNLOAD:
            raise bad_request("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_path": stored.file_path,
        }

    # ---------------------------------------------------------------- handlers: commands & profile

    def _scope_key(self, scope: Any) -> str:
        if scope is None:
            return "default"
        if not isinstance(scope, dict) or scope.get("type") not in _SCOPE_TYPES:
            raise bad_request("can't parse BotCommandScope JSON object")
        kind = scope["type"]
        if kind in ("chat", "chat_administrators", "chat_member"):
            chat_id = scope.get("chat_id")
            if isinstance(chat_id, str):
                chat = self.chats.by_username(chat_id)
            else:
                chat = self.chats.get(chat_id)
            if chat is None:
                raise bad_request("chat not found")
            if kind == "chat_member":
                if not isinstance(scope.get("user_id"), int):
                    raise bad_request('can\'t find field "user_id"')
                return f"chat_member:{chat.id}:{scope['user_id']}"
            return f"{kind}:{chat.id}"
        return kind

    @staticmethod
    def _language(p: Params) -> str:
        code = p.str("language_code") or ""
        if code and not re.fullmatch(r"[a-z]{2}", code):
            raise bad_request("invalid language code specified")
        return code

    async def _set_my_commands(self, p: Params) -> bool:
        commands = p.json("commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        if len(commands) > 100:
            raise bad_request("BOT_COMMANDS_TOO_MUCH")
        cleaned = []
        for command in commands:
            if not isinstance(command, dict):
                raise bad_request("can't parse BotCommand JSON object")
            for name in ("command", "description"):
                if name not in command:
                    raise bad_request(f'can\'t parse BotCommand: Can\'t find field "{name}"')
            name = str(command["command"])
            description = str(command["description"])
            if not _COMMAND_NAME_RE.match(name):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(description) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": name, "description": description})
        key = (self._scope_key(p.json("scope")), self._language(p))
        if cleaned:
            self.commands[key] = cleaned
        else:
            self.commands.pop(key, None)
        return True

    async def _get_my_commands(self, p: Params) -> list[dict[str, str]]:
        key = (self._scope_key(p.json("scope")), self._language(p))
        return [dict(c) for c in self.commands.get(key, [])]

    async def _delete_my_commands(self, p: Params) -> bool:
        self.commands.pop((self._scope_key(p.json("scope")), self._language(p)), None)
        return True

    def _set_description(self, kind: str, max_length: int) -> Handler:
        async def handler(p: Params) -> bool:
            value = p.str(kind) or ""
            if len(value) > max_length:
                raise bad_request(f"{kind.upper()}_INVALID")
            self.descriptions[(kind, self._language(p))] = value
            return True

        return handler

    def _get_description(self, kind: str) -> Handler:
        async def handler(p: Params) -> dict[str, str]:
            lang = self._language(p)
            value = self.descriptions.get((kind, lang), self.descriptions.get((kind, ""), ""))
            if kind == "name" and not value:
                value = self.first_name
            return {kind: value}

        return handler

    async def _set_chat_menu_button(self, p: Params) -> bool:
        chat_id = None
        if p.has("chat_id"):
            chat_id = self._chat(p).id
        button = p.json("menu_button") or {"type": "default"}
        if not isinstance(button, dict) or button.get("type") not in _MENU_BUTTON_TYPES:
            raise bad_request("can't parse menu button JSON object")
        self.menu_buttons[chat_id] = button
        return True

    async def _get_chat_menu_button(self, p: Params) -> dict[str, Any]:
        chat_id = self._chat(p).id if p.has("chat_id") else None
        return self.menu_buttons.get(chat_id, self.menu_buttons.get(None, {"type": "commands"}))

    # ---------------------------------------------------------------- handlers: chats & members

    async def _get_chat(self, p: Params) -> dict[str, Any]:
        chat = self._chat(p)
        info = chat.to_api()
        info.update(
            accent_color_id=0,
            max_reaction_count=11,
            accepted_gift_types={
                "unlimited_gifts": chat.type == "private",
                "limited_gifts": chat.type == "private",
                "unique_gifts": chat.type == "private",
                "premium_subscription": chat.type == "private",
                "gifts_from_channels": chat.type == "private",
            },
        )
        return info

    def _member(self, chat: ChatInfo, user_id: int) -> dict[str, Any]:
        user = self.bot_user if user_id == self.bot_id else self.chats.users.get(user_id)
        if user is None:
            raise bad_request("user not found")
        if chat.type == "private":
            status = "member" if user_id in (chat.id, self.bot_id) else "left"
        else:
            status = chat.members.get(user_id, "member" if user_id == self.bot_id else "left")
        member: dict[str, Any] = {"status": status, "user": dict(user)}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            member.update(
                can_be_edited=False, is_anonymous=False, can_manage_chat=True,
                can_delete_messages=True, can_manage_video_chats=True, can_restrict_members=True,
                can_promote_members=False, can_change_info=True, can_invite_users=True,
                can_post_stories=False, can_edit_stories=False, can_delete_stories=False,
                can_pin_messages=True,
            )
        elif status == "kicked":
            member["until_date"] = 0
        elif status == "restricted":
            member.update(
                is_member=True, can_send_messages=False, can_send_audios=False,
                can_send_documents=False, can_send_photos=False, can_send_videos=False,
                can_send_video_notes=False, can_send_voice_notes=False, can_send_polls=False,
                can_send_other_messages=False, can_add_web_page_previews=False,
                can_change_info=False, can_invite_users=False, can_pin_messages=False,
                can_manage_topics=False, until_date=0,
            )
        return member

    async def _get_chat_member(self, p: Params) -> dict[str, Any]:
        chat = self._chat(p)
        user_id = p.int("user_id")
        if user_id is None:
            raise bad_request("invalid user_id specified")
        return self._member(chat, user_id)

    async def _get_chat_administrators(self, p: Params) -> list[dict[str, Any]]:
        chat = self._chat(p)
        if chat.type == "private":
            raise bad_request("there are no administrators in the private chat")
        return [
            self._member(chat, user_id)
            for user_id, status in chat.members.items()
            if status in ("creator", "administrator")
        ]

    async def _get_chat_member_count(self, p: Params) -> int:
        chat = self._chat(p)
        if chat.type == "private":
            return 2
        present = {u for u, s in chat.members.items() if s not in ("left", "kicked")}
        return len(present | {self.bot_id})


def iter_entities_text(text: str, entities: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """(type, covered text) for each entity, resolving UTF-16 offsets; handy in assertions."""
    encoded = text.encode("utf-16-le")
    return [
        (e["type"], encoded[2 * e["offset"]: 2 * (e["offset"] + e["length"])].decode("utf-16-le"))
        for e in entities
    ]
