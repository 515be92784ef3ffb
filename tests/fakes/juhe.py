"""A fake juhe (聚合数据) image API, as strict as the vendor document
(seeds/003_…): form-urlencoded bodies only, the key in the form, text ≤ 800
characters, image1..3 as data URIs that must decode to a real image of the
MIME type they claim (or http(s) URLs the fake fetches), size "W*H" within
512..2048. Errors come back with HTTP 200 and an error_code, as juhe does.
Answers are synchronous, after ``delay_seconds``, with a real PNG served by
the fake from a URL that expires like the vendor's (24 h by default).

    fake = FakeJuhe(delay_seconds=0.0)
    async with serve(fake.app) as base_url:
        ...
    await fake.aclose()          # closes the client that fetches image URLs
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from PIL import Image, ImageDraw, ImageOps
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

EDIT_PATH = "/image_edit/edit"
TXT2IMG_PATH = "/text2image/generate"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_TEXT = 800
SIDE_RANGE = (512, 2048)
MIMES = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp",
         "TIFF": "image/tiff", "WEBP": "image/webp"}
TXT2IMG_RATIOS = {"1": (1, 1), "2": (16, 9), "3": (4, 3), "4": (3, 4), "5": (9, 16)}
KNOWN_MODELS = frozenset({"", "auto"})
REASONS = {
    0: "成功",
    282501: "text和image1不可为空",
    282502: "size格式错误",
    282503: "网络错误",
    282504: "包含敏感词",
    282505: "生成失败",
    282506: "base64字符串大小超限",
    282401: "prompt不可为空",
    282402: "size格式错误",
    282403: "包含敏感词",
    282404: "生成失败",
    10001: "错误的请求KEY",
    10002: "该KEY无请求权限",
    10003: "KEY过期",
    10011: "当前IP请求超过限制",
    10012: "请求超过次数限制",
    10013: "测试KEY超过请求限制",
    10014: "系统内部异常",
    10020: "接口维护",
    10021: "接口停用",
}
# fail_next kinds → (edit code, txt2img code); http500 / malformed / timeout are HTTP-level.
FAULT_CODES: dict[str, tuple[int, int]] = {
    "auth": (10001, 10001),
    "quota": (10012, 10012),
    "rate_limited": (10011, 10011),
    "sensitive": (282504, 282403),
    "failed": (282505, 282404),
    "network": (282503, 282503),
    "maintenance": (10020, 10020),
    "internal": (10014, 10014),
}
FAULT_KINDS = frozenset(FAULT_CODES) | {"http500", "malformed", "timeout"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # the parsed form (dict) for form posts, else the raw text


@dataclass
class FetchRecord:
    url: str
    ok: bool
    status_code: int | None
    error: str = ""


@dataclass
class Order:
    orderid: str
    endpoint: str
    form: dict[str, str]
    inputs: list[bytes] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # file names under /result/


class FakeJuhe:
    def __init__(
        self,
        key: str = "test-juhe-key",
        *,
        delay_seconds: float = 0.0,
        url_ttl: float = 24 * 3600.0,
        timeout_seconds: float = 1.0,
        max_base64_chars: int = 4_000_000,
        banned_words: tuple[str, ...] = ("违禁词",),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.delay_seconds = delay_seconds
        self.url_ttl = url_ttl
        self.timeout_seconds = timeout_seconds
        self.max_base64_chars = max_base64_chars
        self.banned_words = banned_words
        self._clock = clock
        self._offset = 0.0
        self._defaults = {
            name: getattr(self, name)
            for name in ("key", "delay_seconds", "url_ttl", "timeout_seconds",
                         "max_base64_chars", "banned_words")
        }
        self.requests: list[RecordedRequest] = []
        self.fetches: list[FetchRecord] = []
        self.orders: dict[str, Order] = {}
        self.files: dict[str, tuple[bytes, float]] = {}  # name → (png, created_at)
        self._faults: list[list[Any]] = []  # [kind | code, times left, path filter]
        self._http: httpx.AsyncClient | None = None
        self.app = Starlette(routes=[
            Route(EDIT_PATH, self._edit, methods=["GET", "POST"]),
            Route(TXT2IMG_PATH, self._txt2img, methods=["GET", "POST"]),
            Route("/result/{name}", self._result, methods=["GET"]),
        ])

    # ---- test-side controls --------------------------------------------

    def now(self) -> float:
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the fake's time forward (result URLs expire)."""
        self._offset += seconds

    def reset(self) -> None:
        """Constructor options back, no faults or records; orders and files stay."""
        for name, value in self._defaults.items():
            setattr(self, name, value)
        self._offset = 0.0
        self._faults.clear()
        self.requests.clear()
        self.fetches.clear()

    def fail_next(self, kind: str | int, times: int = 1, path: str | None = None) -> None:
        """The next ``times`` API calls (whose path contains ``path``) fail as
        ``kind``: http500, malformed, timeout (answers after timeout_seconds),
        auth, quota, rate_limited, sensitive, failed, network, maintenance,
        internal, or any error_code given as an int."""
        if isinstance(kind, str) and kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        self._faults.append([kind, times, path])

    def api_requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        return [
            r for r in self.requests
            if r.path in (EDIT_PATH, TXT2IMG_PATH) and (endpoint is None or endpoint in r.path)
        ]

    def order(self, orderid: str) -> Order:
        return self.orders[orderid.removeprefix("juhe:")]

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ---- the API ---------------------------------------------------------

    async def _edit(self, request: Request) -> Response:
        return await self._api(request, EDIT_PATH, self._do_edit)

    async def _txt2img(self, request: Request) -> Response:
        return await self._api(request, TXT2IMG_PATH, self._do_txt2img)

    async def _api(
        self, request: Request, path: str, handler: Callable[[dict[str, str], str], Any]
    ) -> Response:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        is_form = headers.get("content-type", "").split(";")[0].strip().lower() == FORM_TYPE
        form = _parse_form(raw) if is_form else None
        body: Any = form if form is not None else raw.decode("utf-8", "replace")
        self.requests.append(RecordedRequest(request.method, path, headers, body))
        fault = self._take_fault(path)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_seconds)  # then answer as usual, too late
        elif fault is not None:
            return _fault_response(fault, path)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        # juhe reads parameters from a form (or the query string); a JSON body
        # leaves it without a key, which it reports as a wrong key.
        params = dict(parse_qsl(request.url.query)) | (form or {})
        if params.get("key") != self.key:
            return _error(10001)
        if request.method != "POST":
            return _error(10001)  # [assume] the examples only POST
        return await handler(params, str(request.base_url).rstrip("/"))

    def _take_fault(self, path: str) -> str | int | None:
        for fault in self._faults:
            kind, left, only = fault
            if left > 0 and (only is None or only in path):
                fault[1] -= 1
                if fault[1] == 0:
                    self._faults.remove(fault)
                return kind
        return None

    async def _do_edit(self, form: dict[str, str], base: str) -> Response:
        text = form.get("text", "")
        if not text.strip() or not form.get("image1", "").strip():
            return _error(282501)
        if len(text) > MAX_TEXT:
            # The document says the vendor truncates; the fake refuses, so an
            # adapter that sends more than 800 characters is caught.
            return _error(282501, f"text超过{MAX_TEXT}个字符")
        valid, size = _parse_size(form.get("size", ""))
        if not valid:
            return _error(282502)
        if form.get("model", "") not in KNOWN_MODELS:
            return _error(10002)
        if any(word in text for word in self.banned_words):
            return _error(282504)
        inputs: list[bytes] = []
        for name in ("image1", "image2", "image3"):
            value = form.get(name, "").strip()
            if not value:
                continue
            data, code = await self._image(value)
            if data is None:
                return _error(code)
            inputs.append(data)
        order = self._order(EDIT_PATH, form, inputs)
        picture = _edited(inputs, size, text)
        name = self._store(picture)
        order.outputs.append(name)
        return _ok({"orderid": order.orderid, "images": [{"image": self._url(base, name)}]})

    async def _do_txt2img(self, form: dict[str, str], base: str) -> Response:
        prompt = form.get("prompt", "")
        if not prompt.strip() or len(prompt) > MAX_TEXT:
            return _error(282401)
        ratio = TXT2IMG_RATIOS.get(form.get("size", "1") or "1")
        if ratio is None:
            return _error(282402)
        if form.get("model", "") not in KNOWN_MODELS:
            return _error(10002)
        if any(word in prompt for word in self.banned_words):
            return _error(282403)
        order = self._order(TXT2IMG_PATH, form, [])
        long_side = 1024
        w, h = ratio
        if w >= h:
            size = (long_side, round(long_side * h / w))
        else:
            size = (round(long_side * w / h), long_side)
        name = self._store(_drawn(size, prompt))
        order.outputs.append(name)
        return _ok({"orderid": order.orderid, "image": self._url(base, name)})

    async def _image(self, value: str) -> tuple[bytes | None, int]:
        """(bytes, 0) for a usable image, else (None, error code)."""
        if value.startswith(("http://", "https://")):
            data = await self._fetch(value)
            return (data, 0) if data is not None else (None, 282503)
        match = re.fullmatch(r"data:([\w/+.-]+);base64,(.*)", value, re.S)
        if match is None:
            return None, 282501
        if len(match.group(2)) > self.max_base64_chars:
            return None, 282506
        try:
            data = base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            return None, 282505
        fmt = _format(data)
        if fmt is None or MIMES.get(fmt) != match.group(1):
            return None, 282505  # not an image, or not the type the URI claims
        return data, 0

    async def _fetch(self, url: str) -> bytes | None:
        try:
            response = await self._client().get(url)
        except httpx.HTTPError as exc:
            self.fetches.append(FetchRecord(url, False, None, type(exc).__name__))
            return None
        ok = response.status_code == 200 and _format(response.content) is not None
        self.fetches.append(FetchRecord(url, ok, response.status_code, "" if ok else "bad"))
        return response.content if ok else None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        return self._http

    def _order(self, endpoint: str, form: dict[str, str], inputs: list[bytes]) -> Order:
        orderid = f"JH{uuid.uuid4().hex[:20].upper()}"
        order = Order(orderid, endpoint, {k: v for k, v in form.items() if k != "key"}, inputs)
        self.orders[orderid] = order
        return order

    def _store(self, png: bytes) -> str:
        name = f"{uuid.uuid4().hex}-1.png"
        self.files[name] = (png, self.now())
        return name

    def _url(self, base: str, name: str) -> str:
        # Shaped like the seed's signed OSS link (Expires / Signature).
        expires = int(time.time() + self.url_ttl)
        return f"{base}/result/{name}?Expires={expires}&Signature={uuid.uuid4().hex[:16]}"

    async def _result(self, request: Request) -> Response:
        self.requests.append(RecordedRequest(
            "GET", request.url.path, {k.lower(): v for k, v in request.headers.items()}, None
        ))
        entry = self.files.get(request.path_params["name"])
        if entry is None:
            return Response(_oss_error("NoSuchKey", "The specified key does not exist."), 404,
                            media_type="application/xml")
        data, created = entry
        if self.now() - created > self.url_ttl:
            return Response(_oss_error("AccessDenied", "Request has expired."), 403,
                            media_type="application/xml")
        return Response(data, media_type="image/png")


# ---- helpers (pure) ----------------------------------------------------------


def _parse_form(raw: bytes) -> dict[str, str] | None:
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except (UnicodeDecodeError, ValueError):
        return None


def _parse_size(value: str) -> tuple[bool, tuple[int, int] | None]:
    """(valid, (w, h)); an empty size is valid and means "keep the ratio"."""
    if not value.strip():
        return True, None
    match = re.fullmatch(r"(\d+)\*(\d+)", value.strip())
    if match is None:
        return False, None
    w, h = int(match.group(1)), int(match.group(2))
    low, high = SIDE_RANGE
    return (low <= w <= high and low <= h <= high), (w, h)


def _format(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
            return img.format
    except Exception:  # noqa: BLE001 — any Pillow failure means "not an image"
        return None


def _edited(inputs: list[bytes], size: tuple[int, int] | None, text: str) -> bytes:
    """image1, inverted and resized (to ``size``, or its own ratio at 1024 on
    the long side), with the other inputs pasted small in a corner."""
    with Image.open(io.BytesIO(inputs[0])) as first:
        base = ImageOps.invert(first.convert("RGB"))
    if size:
        base = base.resize(size)
    else:
        scale = 1024 / max(base.size)
        base = base.resize((max(1, round(base.width * scale)), max(1, round(base.height * scale))))
    for offset, extra in enumerate(inputs[1:]):
        with Image.open(io.BytesIO(extra)) as img:
            thumb = img.convert("RGB")
        thumb.thumbnail((base.width // 4, base.height // 4))
        base.paste(thumb, (8 + offset * (base.width // 4 + 8), 8))
    ImageDraw.Draw(base).text((8, base.height - 20), f"juhe edit: {text[:40]}", fill=(255, 0, 0))
    return _png(base)


def _drawn(size: tuple[int, int], prompt: str) -> bytes:
    rng = random.Random(prompt)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    ImageDraw.Draw(img).text((8, 8), f"juhe: {prompt[:40]}", fill=(255, 255, 255))
    return _png(img)


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _ok(result: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"reason": "成功", "result": result, "error_code": 0})


def _error(code: int, reason: str | None = None) -> JSONResponse:
    return JSONResponse({"reason": reason or REASONS.get(code, "错误"), "result": None,
                         "error_code": code})


def _fault_response(kind: str | int, path: str) -> Response:
    if isinstance(kind, int):
        return _error(kind)
    if kind == "http500":
        return Response("Internal Server Error", 500, media_type="text/plain")
    if kind == "malformed":
        return Response("<html><body>502 Bad Gateway</body></html>", 200, media_type="text/html")
    edit_code, txt2img_code = FAULT_CODES[kind]
    return _error(edit_code if path == EDIT_PATH else txt2img_code)


def _oss_error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()


def form_of(request: RecordedRequest) -> dict[str, str]:
    """The recorded form (tests)."""
    assert isinstance(request.body, dict), "not a form request"
    return request.body


