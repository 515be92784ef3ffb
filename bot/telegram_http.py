"""The HTTP client under python-telegram-bot: aiohttp instead of PTB's httpx.

Every Telegram call of a job (status message, photo, removing the status,
getUpdates) goes through here. Measured on this machine against a loopback
server: httpx spends ~0.7 ms of CPU per request, aiohttp ~0.2 ms, and the
bot makes four such calls per job (bench/README.md). PTB supports a custom
transport through BaseRequest; this one keeps PTB's semantics: form-encoded
parameters, multipart when files are sent, timeouts mapped to TimedOut and
transport failures to NetworkError.
"""

from __future__ import annotations

import urllib.request
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

# PTB marks "not given" timeouts with instances of this class.
_NotGiven = type(BaseRequest.DEFAULT_NONE)


def _given(value: Any, default: float | None) -> float | None:
    return default if isinstance(value, _NotGiven) else value


class AiohttpRequest(BaseRequest):
    def __init__(
        self,
        *,
        connection_pool_size: int = 256,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        media_write_timeout: float = 60.0,
        pool_timeout: float = 5.0,
    ) -> None:
        self._pool_size = connection_pool_size
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._media_write_timeout = media_write_timeout
        self._pool_timeout = pool_timeout
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str] = {}
        self._proxy_by_host: dict[tuple[str, str], str | None] = {}

    @property
    def read_timeout(self) -> float:
        return self._read_timeout

    async def initialize(self) -> None:
        # Created here, inside the running loop that will use it.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size),
                headers={"User-Agent": self.USER_AGENT},
            )
            # HTTP(S)_PROXY / NO_PROXY from the environment, as PTB's httpx
            # transport honoured them (Telegram is often reached through a
            # proxy). Read once: aiohttp's trust_env re-reads them (and
            # ~/.netrc) on every request, which costs more than the request.
            self._proxies = {
                scheme: url for scheme, url in urllib.request.getproxies().items() if scheme in ("http", "https")
            }
            self._proxy_by_host.clear()

    def _proxy(self, url: str) -> str | None:
        if not self._proxies:
            return None
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        if key not in self._proxy_by_host:
            proxy = self._proxies.get(parts.scheme)
            bypass = proxy is not None and urllib.request.proxy_bypass(key[1])
            self._proxy_by_host[key] = None if bypass else proxy
        return self._proxy_by_host[key]

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("this AiohttpRequest is not initialized")
        files = request_data.multipart_data if request_data else None
        fields = request_data.json_parameters if request_data else None
        data: aiohttp.FormData | dict[str, str] | None = fields or None
        if files:
            form = aiohttp.FormData(fields or {})
            for name, (filename, content, mime) in files.items():
                form.add_field(name, content, filename=filename, content_type=mime)
            data = form

        read = _given(read_timeout, self._read_timeout)
        # aiohttp has no write timeout: an upload gets a bound on the whole request.
        write = _given(write_timeout, self._media_write_timeout)
        timeout = aiohttp.ClientTimeout(
            total=(write + read) if files and write is not None and read is not None else None,
            connect=_given(pool_timeout, self._pool_timeout),
            sock_connect=_given(connect_timeout, self._connect_timeout),
            sock_read=read,
        )
        try:
            async with self._session.request(
                method, url, data=data, timeout=timeout, proxy=self._proxy(url)
            ) as response:
                return response.status, await response.read()
        except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError on 3.11+
            raise TimedOut(f"{type(exc).__name__} talking to Telegram") from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc
