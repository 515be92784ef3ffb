"""The one exception tree every vendor adapter raises.

    ProviderError                  anything that went wrong talking to a vendor
     ├── AuthError                 bad / expired / banned credentials      (disables vendor)
     ├── QuotaExceeded             out of credit or daily quota            (disables vendor)
     ├── RateLimited               slow down; `retry_after` seconds        (transient)
     ├── ContentRejected           moderation, sensitive words             (fails the task)
     ├── BadRequest                the request itself is wrong             (fails the task)
     │    └── NotForThisJob        this vendor cannot do this one job      (next vendor)
     ├── JobNotFound               the vendor does not know that job       (fails the task)
     ├── Unavailable               5xx, queue full, maintenance, network   (transient)
     │    └── VendorTimeout        the vendor did not answer in time       (transient)
     └── MalformedResponse         a body we cannot parse                  (transient)

Adapters map vendor codes into this tree at the boundary (like httpx's
``map_httpcore_exceptions``); nothing above the adapters ever looks at vendor
codes or vendor text. ``vendor_message`` is for logs only, never for users.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from typing import Any

import httpx


class ProviderError(Exception):
    """Base class. ``kind`` is a stable identifier stored with failed tasks
    and used to pick the user-facing (localized) sentence."""

    kind = "error"
    transient = False
    disables_vendor = False
    try_elsewhere = False  # not this vendor's failure: try the next capable one

    def __init__(self, vendor_message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(vendor_message or self.kind)
        self.vendor_message = vendor_message
        self.retry_after = retry_after


class AuthError(ProviderError):
    kind = "auth"
    disables_vendor = True


class QuotaExceeded(ProviderError):
    kind = "quota"
    disables_vendor = True


class RateLimited(ProviderError):
    kind = "rate_limited"
    transient = True


class ContentRejected(ProviderError):
    kind = "rejected"


class BadRequest(ProviderError):
    kind = "bad_request"


class NotForThisJob(BadRequest):
    """This vendor cannot do this particular job (an action its result does
    not offer), though another vendor may: routing tries the next one."""

    try_elsewhere = True


class JobNotFound(ProviderError):
    kind = "not_found"


class Unavailable(ProviderError):
    kind = "unavailable"
    transient = True


class VendorTimeout(Unavailable):
    kind = "timeout"


class MalformedResponse(ProviderError):
    kind = "malformed"
    transient = True


ERROR_KINDS: dict[str, type[ProviderError]] = {
    cls.kind: cls
    for cls in (
        ProviderError,
        AuthError,
        QuotaExceeded,
        RateLimited,
        ContentRejected,
        BadRequest,
        JobNotFound,
        Unavailable,
        VendorTimeout,
        MalformedResponse,
    )
}


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not used by these vendors)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@contextlib.contextmanager
def map_transport_errors() -> Iterator[None]:
    """Turn httpx transport failures into the common tree. Messages are the
    exception class names only: httpx puts full URLs (with keys in query
    strings for some vendors) into its messages."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise VendorTimeout(type(exc).__name__) from None
    except httpx.TransportError as exc:
        raise Unavailable(type(exc).__name__) from None


def json_body(response: httpx.Response, *, allow_list: bool = False) -> Any:
    """The response body as a JSON object (or list, where the vendor answers
    one: a bare batch of tasks), else MalformedResponse."""
    try:
        body = response.json()
    except ValueError:
        raise MalformedResponse(f"non-JSON body (HTTP {response.status_code})") from None
    if not (isinstance(body, dict) or (allow_list and isinstance(body, list))):
        raise MalformedResponse("JSON body is not an object")
    return body
