"""A fake juhe (聚合数据) image API, as strict as the vendor document
(seeds/003_…): form-urlencoded bodies only, the key in the form, text ≤ 800
characters, image1..3 as data URIs that must decode to a real image of the
MIME type they claim (or http(s) URLs the fake fetches), size "W*H" within
512..2048, model empty or "auto" (what the txt2img clients send [public]; any
other name is refused with 10002). Errors come back with HTTP 200 and an
error_code, as juhe does. Answers are synchronous, after ``delay_seconds``,
with a real PNG served by the fake from a URL that expires like the vendor's
(24 h by default).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from PIL import ImageDraw, ImageOps

from tests.fakes.vendor import (FakeVendor, JSONResponse, RecordedRequest, Request, Response,
                                Route, Starlette, _image_format, _picture, _png, _rgb)

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
# fail_next kinds → (edit code, txt2img code).
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


@dataclass
class Order:
    orderid: str
    endpoint: str
    form: dict[str, str]
    inputs: list[bytes] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # file names under /result/


class FakeJuhe(FakeVendor):
    api_paths = (EDIT_PATH, TXT2IMG_PATH)
    endpoint_in_path = True
    code_faults = True  # fail_next(10012) answers error_code 10012
    oss_files = True

    def __init__(
        self,
        key: str = "test-juhe-key",
        *,
        delay_seconds: float = 0.0,  # before each (synchronous) answer
        url_ttl: float = 24 * 3600.0, timeout_seconds: float = 1.0,
        max_base64_chars: int = 4_000_000,
        banned_words: tuple[str, ...] = ("违禁词",),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            clock, key=key, delay_seconds=delay_seconds, url_ttl=url_ttl,
            timeout_seconds=timeout_seconds, max_base64_chars=max_base64_chars,
            banned_words=banned_words,
        )
        self.orders: dict[str, Order] = {}
        self.app = Starlette(routes=[
            Route(EDIT_PATH, self._edit, methods=["GET", "POST"]),
            Route(TXT2IMG_PATH, self._txt2img, methods=["GET", "POST"]),
            Route("/result/{name}", self._output, methods=["GET"]),
        ])

    @property
    def fault_kinds(self) -> frozenset[str]:
        """Also FAULT_CODES' kinds, each answered with its endpoint's code."""
        return super().fault_kinds | set(FAULT_CODES)

    def order(self, orderid: str) -> Order:
        return self.orders[orderid.removeprefix("juhe:")]

    # ---- the API ---------------------------------------------------------

    async def _edit(self, request: Request) -> Response:
        return await self._api(request, EDIT_PATH, self._do_edit)

    async def _txt2img(self, request: Request) -> Response:
        return await self._api(request, TXT2IMG_PATH, self._do_txt2img)

    def _parse_body(self, raw: bytes, headers: dict[str, str]) -> Any:
        """The parsed form for form posts, else the raw text."""
        is_form = headers.get("content-type", "").split(";")[0].strip().lower() == FORM_TYPE
        form = _parse_form(raw) if is_form else None
        return form if form is not None else raw.decode("utf-8", "replace")

    async def _api(
        self, request: Request, path: str, handler: Callable[[dict[str, str], str], Any]
    ) -> Response:
        record = await self._record(request)
        refused = await self._faulted(path)
        if refused is not None:
            return refused
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        # juhe reads parameters from a form (or the query string); a JSON body
        # leaves it without a key, which it reports as a wrong key.
        form = record.body if isinstance(record.body, dict) else {}
        params = dict(parse_qsl(record.query)) | form
        if params.get("key") != self.key:
            return _error(10001)
        if request.method != "POST":
            return _error(10001)  # [assume] the examples only POST
        return await handler(params, str(request.base_url).rstrip("/"))

    def _fault_response(self, kind: str | int, path: str) -> Response:
        if kind in FAULT_CODES:
            edit_code, txt2img_code = FAULT_CODES[str(kind)]
            return _error(edit_code if path == EDIT_PATH else txt2img_code)
        return super()._fault_response(kind, path)

    def _code_fault(self, code: int) -> Response:
        return _error(code)

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
        name = self._store(f"{uuid.uuid4().hex}-1.png", _edited(inputs, size, text))
        order.outputs.append(name)
        return _ok({"orderid": order.orderid, "images": [{"image": self._url(base, name)}]})

    async def _do_txt2img(self, form: dict[str, str], base: str) -> Response:
        prompt = form.get("prompt", "")
        if not prompt.strip() or len(prompt) > MAX_TEXT:
            return _error(282401)
        ratio = TXT2IMG_RATIOS.get(form.get("size", "1") or "1")
        if ratio is None:
            return _error(282402)
        if form.get("model", "") not in KNOWN_MODELS:  # "auto" [public]
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
        picture = _picture(size, prompt, f"juhe: {prompt[:40]}", blobs=0)
        name = self._store(f"{uuid.uuid4().hex}-1.png", picture)
        order.outputs.append(name)
        return _ok({"orderid": order.orderid, "image": self._url(base, name)})

    async def _image(self, value: str) -> tuple[bytes | None, int]:
        """(bytes, 0) for a usable image, else (None, error code)."""
        if value.startswith(("http://", "https://")):
            data = await self._fetch("", value)
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
        fmt = _image_format(data)
        if fmt is None or MIMES.get(fmt) != match.group(1):
            return None, 282505  # not an image, or not the type the URI claims
        return data, 0

    def _order(self, endpoint: str, form: dict[str, str], inputs: list[bytes]) -> Order:
        orderid = f"JH{uuid.uuid4().hex[:20].upper()}"
        order = Order(orderid, endpoint, {k: v for k, v in form.items() if k != "key"}, inputs)
        self.orders[orderid] = order
        return order

    def _url(self, base: str, name: str) -> str:
        # Shaped like the seed's signed OSS link (Expires / Signature).
        expires = int(time.time() + self.url_ttl)
        return f"{base}/result/{name}?Expires={expires}&Signature={uuid.uuid4().hex[:16]}"


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


def _edited(inputs: list[bytes], size: tuple[int, int] | None, text: str) -> bytes:
    """image1, inverted and resized (to ``size``, or its own ratio at 1024 on
    the long side), with the other inputs pasted small in a corner."""
    base = ImageOps.invert(_rgb(inputs[0]))
    if size:
        base = base.resize(size)
    else:
        scale = 1024 / max(base.size)
        base = base.resize((max(1, round(base.width * scale)), max(1, round(base.height * scale))))
    for offset, extra in enumerate(inputs[1:]):
        thumb = _rgb(extra)
        thumb.thumbnail((base.width // 4, base.height // 4))
        base.paste(thumb, (8 + offset * (base.width // 4 + 8), 8))
    ImageDraw.Draw(base).text((8, base.height - 20), f"juhe edit: {text[:40]}", fill=(255, 0, 0))
    return _png(base)


def _ok(result: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"reason": "成功", "result": result, "error_code": 0})


def _error(code: int, reason: str | None = None) -> JSONResponse:
    return JSONResponse({"reason": reason or REASONS.get(code, "错误"), "result": None,
                         "error_code": code})


def form_of(request: RecordedRequest) -> dict[str, str]:
    """The recorded form (tests)."""
    assert isinstance(request.body, dict), "not a form request"
    return request.body
