"""The answer shape aichatapi and apispace share: ``{"code", "msg", "data"}``
with one success code (sometimes behind an HTTP error status). Each adapter
brings its own success code and its own ``classify`` (code + message → the
common error kind); the reading of the envelope is the same and lives here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from providers.errors import MalformedResponse, ProviderError, Unavailable, json_body, parse_retry_after

# classify(code, message, retry_after=...) → the error for that vendor answer
Classify = Callable[..., ProviderError]


def matches(message: str, keywords: Sequence[str]) -> bool:
    lowered = message.lower()
    return any(word.lower() in lowered for word in keywords)


def code_of(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def whole_number(value: Any) -> int | None:
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError, OverflowError):
        return None


def plain_number(value: float) -> int | float:
    """7.0 → 7, so bodies match the vendors' examples."""
    return int(value) if float(value).is_integer() else value


def body_message(body: Mapping[str, Any]) -> str:
    return str(body.get("msg") or body.get("message") or "")


def error_for_body(body: Mapping[str, Any], ok_code: int, classify: Classify) -> ProviderError | None:
    """The error an HTTP-200 body carries (code ≠ ok_code), or None."""
    if "code" not in body:
        raise MalformedResponse("body has no code")
    code = code_of(body["code"])
    if code == ok_code:
        return None
    return classify(code, body_message(body))


def checked_data(body: Mapping[str, Any], ok_code: int, classify: Classify) -> dict[str, Any]:
    """`data` of a successful body; else the body's error."""
    error = error_for_body(body, ok_code, classify)
    if error is not None:
        raise error
    data = body.get("data")
    if not isinstance(data, dict):
        raise MalformedResponse("body has no data object")
    return data


def error_for_http(
    status: int, headers: Mapping[str, str], body: Mapping[str, Any] | None, ok_code: int, classify: Classify
) -> ProviderError | None:
    """A non-2xx answer. A 404/405 is a wrong URL, not an unknown job."""
    if status < 400:
        return None
    retry_after = parse_retry_after(headers.get("retry-after"))
    if status >= 500:
        return Unavailable(f"HTTP {status}", retry_after=retry_after)
    if status in (404, 405):
        return Unavailable(f"HTTP {status}")
    message = body_message(body) if body else ""
    code = code_of(body.get("code")) if body else None
    if code is None or code == ok_code:
        code = status
    error = classify(code, message, retry_after=retry_after)
    return type(error)(f"HTTP {status} {error.vendor_message}", retry_after=error.retry_after)


def http_error(response: httpx.Response, ok_code: int, classify: Classify) -> ProviderError:
    try:
        body = json_body(response)
    except MalformedResponse:
        body = None
    error = error_for_http(response.status_code, response.headers, body, ok_code, classify)
    assert error is not None  # only called for status >= 400
    return error
