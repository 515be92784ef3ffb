"""Prompt text + Midjourney-style flags → GenerationParams, or a ParseError.

Pure: no I/O, no Telegram types. The error carries a message key and values so
the handler can say it in the user's language.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from providers.types import GenerationParams

MAX_PROMPT_CHARS = 1500
MAX_AR_SIDE = 32
SIZE_RANGE = (64, 2048)

# Chinese input methods turn "--" into "——" or "—"; some keyboards into "–".
_DASHES = re.compile(r"(?:(?<=\s)|^)(?:—{1,2}|–{1,2}|－{2})(?=[A-Za-z])")
_COMMAND = re.compile(r"^/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?(?:\s|$)")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}$")  # never "--…": that is a flag
_RATIO = re.compile(r"^(\d{1,3})\s*[:：]\s*(\d{1,3})$")
_SIZE = re.compile(r"^(\d{2,5})\s*[x×X*]\s*(\d{2,5})$")


@dataclass(eq=False)  # not frozen: raising sets __traceback__ and __cause__
class ParseError(Exception):
    key: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Flag:
    example: str
    convert: Callable[[str, str], dict[str, Any]]
    takes_words: bool = False  # --no takes every word up to the next flag


def _int_in(name: str, low: int, high: int) -> Callable[[str, str], dict[str, Any]]:
    def convert(flag: str, value: str) -> dict[str, Any]:
        try:
            number = int(value)
        except ValueError:
            raise ParseError("err_bad_int", {"flag": flag, "low": low, "high": high}) from None
        if not low <= number <= high:
            raise ParseError("err_bad_int", {"flag": flag, "low": low, "high": high})
        return {name: number}

    return convert


def _float_in(name: str, low: float, high: float) -> Callable[[str, str], dict[str, Any]]:
    def convert(flag: str, value: str) -> dict[str, Any]:
        try:
            number = float(value)
        except ValueError:
            raise ParseError("err_bad_float", {"flag": flag, "low": low, "high": high}) from None
        if not low <= number <= high:  # also rejects nan
            raise ParseError("err_bad_float", {"flag": flag, "low": low, "high": high})
        return {name: number}

    return convert


def _identifier(name: str) -> Callable[[str, str], dict[str, Any]]:
    def convert(flag: str, value: str) -> dict[str, Any]:
        if not _ID.match(value):
            raise ParseError("err_bad_id", {"flag": flag})
        return {name: value.lower() if name == "provider" else value}

    return convert


def _aspect_ratio(flag: str, value: str) -> dict[str, Any]:
    match = _RATIO.match(value)
    error = ParseError("err_bad_ar", {"flag": flag, "max_side": MAX_AR_SIDE})
    if not match:
        raise error
    width, height = int(match[1]), int(match[2])
    if not (1 <= width <= MAX_AR_SIDE and 1 <= height <= MAX_AR_SIDE):
        raise error
    if not 0.25 <= width / height <= 4:
        raise error
    return {"aspect_ratio": f"{width}:{height}"}


def _size(flag: str, value: str) -> dict[str, Any]:
    low, high = SIZE_RANGE
    match = _SIZE.match(value)
    error = ParseError("err_bad_size", {"flag": flag, "low": low, "high": high})
    if not match:
        raise error
    width, height = int(match[1]), int(match[2])
    if not (low <= width <= high and low <= height <= high):
        raise error
    return {"width": width, "height": height}


def _negative(flag: str, value: str) -> dict[str, Any]:
    return {"negative_prompt": value}


FLAGS: dict[str, _Flag] = {
    "ar": _Flag("16:9", _aspect_ratio),
    "size": _Flag("1024x768", _size),
    "n": _Flag("4", _int_in("n", 1, 4)),
    "seed": _Flag("42", _int_in("seed", 0, 4_294_967_295)),
    "no": _Flag("text, watermark", _negative, takes_words=True),
    "steps": _Flag("30", _int_in("steps", 1, 100)),
    "cfg": _Flag("7", _float_in("cfg", 1.0, 30.0)),
    "strength": _Flag("0.6", _float_in("strength", 0.0, 1.0)),
    "model": _Flag("sdxl", _identifier("model")),
    "provider": _Flag("zhiqite", _identifier("provider")),
}
ALIASES = {"aspect": "ar", "neg": "no", "negative": "no", "count": "n", "vendor": "provider"}


def normalize_dashes(text: str) -> str:
    return _DASHES.sub("--", text)


def strip_command(text: str) -> str:
    """Drop a leading /command or /command@bot."""
    return _COMMAND.sub("", text.strip(), count=1).strip()


def parse_prompt(text: str, defaults: GenerationParams | None = None) -> GenerationParams:
    """Parse ``text`` (prompt and flags, without the command). Raises ParseError."""
    tokens = normalize_dashes(text).split()
    words: list[str] = []
    values: dict[str, Any] = {}
    seen: set[str] = set()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not (token.startswith("--") and len(token) > 2):
            words.append(token)
            i += 1
            continue
        raw_name, has_inline, inline_value = token[2:].partition("=")
        name = ALIASES.get(raw_name.lower(), raw_name.lower())
        flag_text = f"--{name}"
        spec = FLAGS.get(name)
        if spec is None:
            known = ", ".join(f"--{n}" for n in FLAGS)
            raise ParseError("err_unknown_flag", {"flag": f"--{raw_name}", "known": known})
        if name in seen:
            raise ParseError("err_flag_twice", {"flag": flag_text})
        seen.add(name)
        i += 1
        if has_inline:
            value_tokens = [inline_value] if inline_value else []
        elif spec.takes_words:
            value_tokens = []
            while i < len(tokens) and not tokens[i].startswith("--"):
                value_tokens.append(tokens[i])
                i += 1
        elif i < len(tokens) and not tokens[i].startswith("--"):
            value_tokens = [tokens[i]]
            i += 1
        else:
            value_tokens = []
        if not value_tokens:
            raise ParseError("err_flag_needs_value", {"flag": flag_text, "example": spec.example})
        values.update(spec.convert(flag_text, " ".join(value_tokens)))

    prompt = " ".join(words)
    if not prompt:
        raise ParseError("err_empty_prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ParseError("err_prompt_too_long", {"length": len(prompt), "limit": MAX_PROMPT_CHARS})
    base = defaults.model_dump() if defaults is not None else {}
    if "aspect_ratio" in values:
        base.pop("width", None)
        base.pop("height", None)
    return GenerationParams(**{**base, **values, "prompt": prompt})
