"""The answer shape aichatapi and apispace share: ``{"code", "msg", "data"}``
with one success code (sometimes behind an HTTP error status). Each adapter's
``Assumptions`` is its ``Vocabulary``: its success code, which codes and
words mean what, and when its daily quota comes back. Reading the envelope
and the keyword classifier are the same for both and live here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol

import httpx

from providers.common import code_of, matches
from providers.errors import AuthError, BadRequest, ContentRejected, JobNotFound, ProviderError
from providers.errors import MalformedResponse, QuotaExceeded, RateLimited, Unavailable
from providers.errors import VendorTimeout, json_body, parse_retry_after
from providers.http import status_error


class Vocabulary(Protocol):
    """What a vendor's codes and messages mean (its Assumptions)."""

    ok_code: int
    auth_codes: tuple[int, ...]
    quota_codes: tuple[int, ...]
    rate_limited_codes: tuple[int, ...]
    quota_keywords: tuple[str, ...]  # out of credit, whatever else the message says
    daily_limit_keywords: tuple[str, ...]  # the daily request quota (unless per-second)
    rate_limited_keywords: tuple[str, ...]
    auth_keywords: tuple[str, ...]
    rejection_keywords: tuple[str, ...]
    unavailable_keywords: tuple[str, ...]
    timeout_keywords: tuple[str, ...]  # a failed job's reason that means it timed out
    rate_limit_retry_after: float
    # Where the daily quota resets at local midnight: that zone's UTC offset
    # (hours); None when the vendor has no daily quota.
    daily_reset_utc_offset_hours: float | None


@dataclass(frozen=True)
class JobIds:
    """Job ids "<prefix>:<the vendor's id>", so that a foreign id is refused
    before any (paid or rate-limited) request."""

    prefix: str
    vendor: str

    def make(self, vendor_id: Any) -> str:
        return f"{self.prefix}:{vendor_id}"

    def split(self, job_id: str) -> str:
        prefix, sep, vendor_id = job_id.partition(":")
        if prefix != self.prefix or not sep or not vendor_id.strip():
            raise JobNotFound(f"not an {self.vendor} job id")
        return vendor_id


def body_message(body: Mapping[str, Any]) -> str:
    return str(body.get("msg") or body.get("message") or "")


def seconds_until_daily_reset(now: datetime, utc_offset_hours: float) -> float:
    """Seconds from ``now`` to the next local midnight of the zone UTC+offset
    (a naive ``now`` is UTC). At midnight itself the next one is a day away."""
    zone = timezone(timedelta(hours=utc_offset_hours))
    local = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return (midnight - local).total_seconds()


def classify(
    code: int | None, message: str, words: Vocabulary, *,
    retry_after: float | None = None, now: datetime | None = None,
) -> ProviderError:
    """A vendor code (body or HTTP) and message → the common error kind."""
    detail = f"code {code}: {message}" if message else f"code {code}"
    per_second = matches(message, words.rate_limited_keywords)
    if code in words.quota_codes or matches(message, words.quota_keywords):
        return QuotaExceeded(detail)
    if matches(message, words.daily_limit_keywords) and not per_second:
        # Out of today's requests: the registry rests the vendor until the
        # quota is back instead of switching it off until a restart.
        offset = words.daily_reset_utc_offset_hours
        now = now or datetime.now(UTC)
        rest = None if offset is None else seconds_until_daily_reset(now, offset)
        return QuotaExceeded(detail, retry_after=rest)
    if code in words.rate_limited_codes or per_second:
        return RateLimited(detail, retry_after=retry_after or words.rate_limit_retry_after)
    if code in words.auth_codes or matches(message, words.auth_keywords):
        return AuthError(detail)
    if matches(message, words.rejection_keywords):
        return ContentRejected(detail)
    if (code is not None and code >= 500) or matches(message, words.unavailable_keywords):
        return Unavailable(detail, retry_after=retry_after)
    return BadRequest(detail)


def error_for_body(body: Mapping[str, Any], words: Vocabulary) -> ProviderError | None:
    """The error an HTTP-200 body carries (code ≠ ok_code), or None."""
    if "code" not in body:
        raise MalformedResponse("body has no code")
    code = code_of(body["code"])
    if code == words.ok_code:
        return None
    return classify(code, body_message(body), words)


def checked_data(body: Mapping[str, Any], words: Vocabulary) -> dict[str, Any]:
    """`data` of a successful body; else the body's error."""
    error = error_for_body(body, words)
    if error is not None:
        raise error
    data = body.get("data")
    if not isinstance(data, dict):
        raise MalformedResponse("body has no data object")
    return data


def error_for_status(response: httpx.Response, words: Vocabulary) -> ProviderError | None:
    """A non-2xx answer (the adapters' ``error_for_status`` hook): a 4xx is
    read as the envelope's code and words (the HTTP status where the body
    has no code); 2xx, 5xx and a 404/405 (a wrong URL) keep the default table."""
    default = status_error(response.status_code, response.headers)
    if default is None or isinstance(default, Unavailable):
        return default
    try:
        body: Mapping[str, Any] = json_body(response)
    except MalformedResponse:
        body = {}
    code = code_of(body.get("code"))
    if code is None or code == words.ok_code:
        code = response.status_code
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    error = classify(code, body_message(body), words, retry_after=retry_after)
    return type(error)(f"HTTP {response.status_code} {error.vendor_message}",
                       retry_after=error.retry_after)


def failure_kind(reason: str, words: Vocabulary) -> str:
    """The error kind of a job the vendor reports failed, from its reason."""
    if matches(reason, words.rejection_keywords):
        return ContentRejected.kind
    if matches(reason, words.timeout_keywords):
        return VendorTimeout.kind
    return ProviderError.kind
