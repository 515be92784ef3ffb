"""Small readings every adapter needs, written once: vendor numbers and
texts, progress figures, keyword matching, input-image URLs."""

from __future__ import annotations

import base64

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from providers.errors import BadRequest
from providers.types import InputImage, JobSpec


def text_of(value: Any) -> str:
    """A vendor field as stripped text; None is empty."""
    return "" if value is None else str(value).strip()


def code_of(value: Any) -> int | None:
    """A vendor code that may arrive as a number or a string."""
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def whole_number(value: Any) -> int | None:
    """3, "3", 3.0 and "3.0" are all 3; anything else is None."""
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError, OverflowError):
        return None


def seconds_of(value: Any) -> float | None:
    """A non-negative, finite number of seconds, or None."""
    try:
        seconds = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def plain_number(value: float) -> int | float:
    """7.0 → 7, so bodies match the vendors' examples."""
    return int(value) if float(value).is_integer() else value


def parse_progress(value: Any) -> float | None:
    """0..1 from "0.45", 0.45, "45%" or 45; None when there is no figure."""
    text = text_of(value)
    if not text:
        return None
    try:
        number = float(text.rstrip("%"))
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    if text.endswith("%") or number > 1:
        number /= 100
    return min(1.0, max(0.0, number))


def matches(message: str, keywords: Sequence[str]) -> bool:
    """Whether any keyword occurs in the vendor's message (case-insensitive)."""
    lowered = message.lower()
    return any(word.lower() in lowered for word in keywords)


def distinct_urls(values: Iterable[Any]) -> list[str]:
    """The non-empty URL strings among ``values``, first occurrence kept."""
    urls: list[str] = []
    for value in values:
        url = value.get("url") if isinstance(value, Mapping) else value
        if isinstance(url, str) and url.strip() and url.strip() not in urls:
            urls.append(url.strip())
    return urls


def input_image(spec: JobSpec, index: int) -> InputImage:
    """Input image ``index``, or BadRequest naming how many the job needs."""
    if len(spec.images) <= index:
        raise BadRequest(f"{spec.capability} needs {index + 1} input image(s)")
    return spec.images[index]


def input_url(spec: JobSpec, index: int, vendor: str) -> str:
    """The /media URL of input image ``index``, for vendors that fetch by URL."""
    url = input_image(spec, index).url
    if not url:
        raise BadRequest(f"{vendor} fetches input images by URL; PUBLIC_BASE_URL is not set")
    return url


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...``: how juhe and midjourney-proxy take images."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
