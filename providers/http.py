"""The skeleton every HTTP vendor adapter stands on (litellm-style: the
adapter keeps its assumptions, pure dict-in/dict-out transforms and a few
hooks; this class owns the call).

    HttpProvider.call(endpoint, read, ...)
      ├── the request: base URL + path, JSON (UTF-8, not \\u escapes) or a
      │   form or multipart, the adapter's auth, its timeout
      ├── transport failures   → providers.errors (map_transport_errors)
      ├── HTTP status          → status_error(), or the adapter's
      │                          error_for_status() hook in front of it
      ├── the JSON body        → read(body): the adapter's pure transform
      └── every ProviderError  → logged once with the vendor's words, secrets
                                 redacted, and re-raised without the URL

Credentials are declared on the class (``credentials``) and looked up by
``from_settings``; no adapter reads settings for its keys itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import httpx

from providers.base import DEFAULT_TIMEOUT, Provider
from providers.credentials import Credentials, redact
from providers.errors import (
    AuthError,
    BadRequest,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    Unavailable,
    json_body,
    map_transport_errors,
    parse_retry_after,
)

log = logging.getLogger("providers")
T = TypeVar("T")


def status_error(status: int, headers: Mapping[str, str]) -> ProviderError | None:
    """The default meaning of a non-2xx answer. A 404/405 is a wrong base URL
    or path: these vendors report an unknown job in the body, so it is not
    JobNotFound (an adapter whose vendor says otherwise overrides the hook)."""
    if status < 400:
        return None
    detail = f"HTTP {status}"
    retry_after = parse_retry_after(headers.get("retry-after"))
    if status in (401, 403):
        return AuthError(detail)
    if status == 402:
        return QuotaExceeded(detail)
    if status == 429:
        return RateLimited(detail, retry_after=retry_after)
    if status >= 500 or status in (404, 405):
        return Unavailable(detail, retry_after=retry_after)
    return BadRequest(detail)


class HeaderAuth(httpx.Auth):
    """Credentials sent as request headers; its repr never shows them."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = dict(headers)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(self._headers)
        yield request

    def __repr__(self) -> str:
        return f"HeaderAuth({', '.join(self._headers)})"


class HttpProvider(Provider):
    credentials: ClassVar[Credentials]
    base_url_setting: ClassVar[str]  # the Settings field holding the base URL
    timeout: ClassVar[httpx.Timeout] = DEFAULT_TIMEOUT
    json_content_type: ClassVar[str] = "application/json"
    model_setting: ClassVar[str | None] = None  # the Settings field naming the model, if any

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        secrets: Mapping[str, str],
        base_url: str,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        super().__init__(client, base_url)
        self._secrets = dict(secrets)
        self.call_timeout = timeout or type(self).timeout
        self.auth = self.make_auth(self._secrets)

    def __repr__(self) -> str:  # never the secrets
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    # ---- configuration ---------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Any, client: httpx.AsyncClient) -> HttpProvider | None:
        secrets = cls.credentials.lookup(settings)
        if secrets is None:
            return None
        return cls(
            client,
            secrets=secrets,
            base_url=cls.base_url_from(settings, secrets),
            **cls.options_from(settings),
        )

    @classmethod
    def secret_setting(cls) -> str | None:
        """The one Settings field that holds the key (PROVIDERS_FILE's
        secret_env replaces it); None when the key is a pair or optional."""
        first = cls.credentials.modes[0]
        return first[0] if len(first) == 1 else None

    @classmethod
    def base_url_from(cls, settings: Any, secrets: Mapping[str, str]) -> str:
        return str(getattr(settings, cls.base_url_setting))

    @classmethod
    def options_from(cls, settings: Any) -> dict[str, Any]:
        """Extra constructor arguments from settings (hook)."""
        return {}

    def make_auth(self, secrets: Mapping[str, str]) -> httpx.Auth | None:
        """How the credentials travel (hook); None when they go in the body."""
        return None

    def secret(self, name: str) -> str:
        return self._secrets[name]

    # ---- the call ----------------------------------------------------------

    def error_for_status(self, response: httpx.Response, endpoint: str) -> ProviderError | None:
        """A non-2xx answer as an exception (hook: add the vendor's meaning,
        then fall back to the default table)."""
        return status_error(response.status_code, response.headers)

    async def call(
        self,
        endpoint: str,
        read: Callable[[dict[str, Any]], T],
        *,
        method: str = "POST",
        path: str | None = None,
        base_url: str | None = None,
        payload: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
        # A list where one field repeats (OpenAI's image[]).
        files: Mapping[str, tuple[str, bytes, str]] | Sequence[tuple[str, tuple[str, bytes, str]]] | None = None,
        allow_list: bool = False,
        timeout: httpx.Timeout | None = None,
        expect_body: bool = True,
    ) -> T:
        """One vendor call; ``payload`` goes as JSON; ``read`` turns the JSON
        answer into a value (``expect_body=False``: there is none). The
        URL is ``base_url`` (default: the vendor's) + ``path`` (default: the
        endpoint). Every failure leaves as a ProviderError naming the
        endpoint, never the URL or a credential."""
        headers = {"Accept": "application/json"}
        content = None
        if payload is not None:
            content = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = self.json_content_type
        url = f"{base_url or self.base_url}{path if path is not None else endpoint}"
        try:
            with map_transport_errors():
                response = await self.client.request(
                    method, url, content=content, data=data, files=files, headers=headers,
                    auth=self.auth or httpx.USE_CLIENT_DEFAULT, timeout=timeout or self.call_timeout,
                )
            error = self.error_for_status(response, endpoint)
            if error is not None:
                raise error
            if not expect_body:  # an acknowledgement: the status says it all
                return read({})
            return read(json_body(response, allow_list=allow_list))
        except ProviderError as exc:
            raise self._logged(endpoint, exc) from None

    def _logged(self, endpoint: str, exc: ProviderError) -> ProviderError:
        message = redact(exc.vendor_message, tuple(self._secrets.values()))
        level = logging.WARNING if exc.transient or exc.disables_vendor else logging.INFO
        log.log(level, "%s %s: %s (%s)", self.id, endpoint, message, exc.kind)
        return type(exc)(message, retry_after=exc.retry_after)
