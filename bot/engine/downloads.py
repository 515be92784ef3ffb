"""Fetching vendor results: http(s) only, size-capped, never from private or
loopback addresses unless ALLOW_PRIVATE_URLS, and checked to be a real image."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
import warnings
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from PIL import Image

MAX_RESULT_BYTES = 30 * 1024 * 1024
MAX_PIXELS = 64_000_000  # anything larger is a decompression bomb for our purposes
ALLOWED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class DownloadError(Exception):
    """``permanent`` is False for failures worth retrying (network, 5xx)."""

    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    mime: str
    width: int
    height: int


def inspect_image(data: bytes) -> CheckedImage:
    """Pillow's view of the bytes, or DownloadError(permanent) for anything
    that is not a sane still or animated image of an allowed format."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format, image.size
                if width * height > MAX_PIXELS:
                    raise DownloadError("image has too many pixels", permanent=True)
                image.verify()
    except DownloadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DownloadError("decompression bomb", permanent=True) from None
    except Exception:  # Pillow raises many types for corrupt input
        raise DownloadError("not a readable image", permanent=True) from None
    if fmt not in ALLOWED_FORMATS:
        raise DownloadError(f"unsupported image format {fmt}", permanent=True)
    return CheckedImage(data, ALLOWED_FORMATS[fmt], width, height)


async def _check_public(host: str) -> None:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise DownloadError("host does not resolve", permanent=False) from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise DownloadError("refusing a private or loopback address", permanent=True)


async def fetch_image(
    client: httpx.AsyncClient, url: str, *, allow_private: bool, max_bytes: int = MAX_RESULT_BYTES
) -> CheckedImage:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError("not an http(s) URL", permanent=True)
    if not allow_private:
        await _check_public(parts.hostname)
    try:
        async with client.stream("GET", url, timeout=DOWNLOAD_TIMEOUT, follow_redirects=False) as response:
            if response.status_code in (404, 403, 410):
                raise DownloadError(f"HTTP {response.status_code} (expired?)", permanent=True)
            if response.status_code != 200:
                raise DownloadError(f"HTTP {response.status_code}", permanent=response.status_code < 500)
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise DownloadError("result is too large", permanent=True)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise DownloadError("result is too large", permanent=True)
    except httpx.TimeoutException:
        raise DownloadError("timed out", permanent=False) from None
    except httpx.TransportError as exc:
        raise DownloadError(type(exc).__name__, permanent=False) from None
    return inspect_image(bytes(body))


PREVIEW_MAX_BYTES = 5 * 1024 * 1024


async def fetch_preview(client: httpx.AsyncClient, url: str, *, allow_private: bool) -> bytes | None:
    """A vendor's in-progress picture, as JPEG or PNG bytes for a status
    photo; None when it cannot be had (a preview is never worth a failure)."""
    try:
        checked = await fetch_image(client, url, allow_private=allow_private, max_bytes=PREVIEW_MAX_BYTES)
    except DownloadError:
        return None
    if checked.mime in ("image/jpeg", "image/png"):
        return checked.data
    try:
        with Image.open(io.BytesIO(checked.data)) as image:  # webp, gif: as a still JPEG
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=85)
    except (OSError, ValueError):  # verify() passed, decoding did not (truncated)
        return None
    return out.getvalue()
