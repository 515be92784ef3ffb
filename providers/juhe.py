"""juhe (聚合数据, gpt.juhe.cn): synchronous AI image edit (1–3 input images)
and text to image. The HTTP answer carries the result, so there is nothing
to poll: ``submit`` returns a finished state.

Layout, top to bottom:
  ASSUMED            every guess about the vendor, in one place
  seed facts         endpoints, limits, the error-code table
  pure transforms    params / images → form fields; response body → images / exception
  Juhe               the HttpProvider: hooks only (the skeleton owns the call)

Requests are ``application/x-www-form-urlencoded`` with the key in the form
(``key=…``) [seed], so there is no auth header; errors come back with HTTP
200 and a non-zero ``error_code`` [seed]; other HTTP statuses get the
skeleton's default meaning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import httpx

from providers.common import code_of, data_uri, distinct_urls, text_of
from providers.credentials import Credentials
from providers.errors import (AuthError, BadRequest, ContentRejected, JobNotFound,
                             MalformedResponse, ProviderError, QuotaExceeded, RateLimited,
                             Unavailable)
from providers.http import HttpProvider
from providers.images import ShrinkError, shrink_to
from providers.types import (Capability, GenerationParams, InputImage, JobSpec, JobState,
                            JobStatus, ResultImage, Submitted)


# --------------------------------------------------------------------------- #
# ASSUMED — what the vendor documents do not say. Correct a guess here, with
# the real response saved as a fixture under tests/fixtures/juhe/.
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Assumptions:
    # The 282506 "base64 too large" limit has no number in the seed. The
    # results come from Aliyun DashScope, whose image inputs are capped at
    # 10 MB; we stay well under it: a data URI longer than this is shrunk
    # (re-encoded as JPEG, downscaled step by step) before sending.
    max_data_uri_chars: int = 4_000_000
    # (long side, JPEG quality) tried in order until the data URI fits; never
    # above 2048, the largest output side [seed]: a larger input gains nothing.
    shrink_steps: tuple[tuple[int, int], ...] = ((2048, 90), (2048, 80), (1536, 80), (1024, 75))
    # edit: --ar (without --size) asks for this long side, fitted into 512..2048.
    edit_long_side: int = 1024
    # txt2img [public] names 282401/282403/282404; by analogy with edit's
    # 282502 (size) we read 282402 as "bad size".
    txt2img_bad_size_code: int = 282402
    # 10011 (IP over limit) says nothing about when to come back.
    rate_limited_retry_after: float = 60.0
    maintenance_retry_after: float = 300.0  # 10020
    typical_seconds: float = 20.0
    # Each call holds a connection for up to a minute; the vendor states no
    # concurrency limit, so we keep a modest one.
    max_concurrent_jobs: int = 5
    # Notes without a field:
    # - Both result shapes are accepted on both endpoints: edit answers
    #   result.images[].image [seed], txt2img result.image [public].
    # - probe(): juhe bills successful calls only, so an empty edit request
    #   checks the key for free: 282501 (text/image1 empty) means "key accepted".
    # - An InputImage.url is never sent: images always go as data URIs, so
    #   juhe works without PUBLIC_BASE_URL.


ASSUMED = Assumptions()


# --------------------------------------------------------------------------- #
# Seed facts
# --------------------------------------------------------------------------- #

# "建议超时时长设置在60s" [seed]: the answer carries the finished image.
SYNC_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
MAX_TEXT_CHARS = 800  # [seed] every character (汉字 or letter) counts one
MAX_EDIT_IMAGES = 3  # image1..image3 [seed]
EDIT_SIDE_RANGE = (512, 2048)  # [seed] size "W*H", each side in [512, 2048]
# edit: "模型,默认:auto" [seed]; txt2img clients send "auto" too [public]
# (an empty model is not the documented default).
DEFAULT_MODEL = "auto"
RESULT_TTL_SECONDS = 24 * 3600  # [seed] result links are valid for 24 h


class Endpoint(StrEnum):
    EDIT = "/image_edit/edit"  # [seed]
    TXT2IMG = "/text2image/generate"  # [public]


# The MIME types a data URI may name, each only for bytes of that format
# [seed]. InputImage.mime is the engine's reading of the bytes (Pillow), so
# it is trusted; any other type is re-encoded as JPEG.
DATA_URI_MIMES = frozenset({"image/jpeg", "image/png", "image/bmp", "image/tiff", "image/webp"})

# txt2img size codes [public]: 1 = 1:1, 2 = 16:9, 3 = 4:3, 4 = 3:4, 5 = 9:16.
TXT2IMG_SIZES: dict[int, tuple[int, int]] = {
    1: (1, 1), 2: (16, 9), 3: (4, 3), 4: (3, 4), 5: (9, 16),
}

OK_CODE = 0

# Every error code in the documents → our error kind. The codes arrive with
# HTTP 200. Why each kind:
#   BadRequest       the request itself is wrong; resending it cannot help
#   ContentRejected  moderation; the user must change the text or image
#   Unavailable      the vendor side is down or flaky; retried / rerouted
#   ProviderError    the model failed on this input ("生成失败"): not retried,
#                    because the same input tends to fail again
#   AuthError        the key cannot be used (disables the vendor until restart)
#   QuotaExceeded    the purchased / test call allowance is used up
#   RateLimited      per-IP request rate; transient
ERROR_CODES: dict[int, tuple[type[ProviderError], str]] = {
    282501: (BadRequest, "text or image1 empty"),
    282502: (BadRequest, "bad size"),
    282503: (Unavailable, "vendor network error"),
    282504: (ContentRejected, "sensitive words"),
    282505: (ProviderError, "generation failed"),
    282506: (BadRequest, "base64 image too large"),
    282401: (BadRequest, "prompt empty"),
    282403: (ContentRejected, "sensitive words"),
    282404: (ProviderError, "generation failed"),
    10001: (AuthError, "wrong key"),
    10002: (AuthError, "key has no permission"),
    10003: (AuthError, "key expired"),
    10004: (AuthError, "wrong OPENID"),
    10005: (AuthError, "application not verified"),
    10007: (AuthError, "request source not allowed"),
    10008: (AuthError, "IP banned"),
    10009: (AuthError, "key banned"),
    10011: (RateLimited, "IP over request limit"),
    10012: (QuotaExceeded, "request count limit reached"),
    10013: (QuotaExceeded, "test key over its limit"),
    10014: (Unavailable, "vendor internal error"),
    10020: (Unavailable, "interface under maintenance"),
    # "接口停用": not coming back by retrying; disable the vendor like a key problem.
    10021: (AuthError, "interface discontinued"),
}


def error_table(a: Assumptions = ASSUMED) -> dict[int, tuple[type[ProviderError], str]]:
    return {**ERROR_CODES, a.txt2img_bad_size_code: (BadRequest, "bad size")}


# --------------------------------------------------------------------------- #
# Job ids: "juhe:<orderid>". There is no query endpoint; the id only names
# the finished result (and the vendor's order for support questions).
# --------------------------------------------------------------------------- #

JOB_PREFIX = "juhe:"


def make_job_id(orderid: str) -> str:
    return f"{JOB_PREFIX}{orderid}"


# --------------------------------------------------------------------------- #
# Pure transforms: request fields
# --------------------------------------------------------------------------- #


def check_text(text: str, field: str = "text") -> str:
    """The vendor silently truncates past 800 characters; we refuse instead,
    so an instruction is never cut in half unnoticed (routing already skips
    juhe for longer prompts: max_prompt_chars; this is the last guard)."""
    if not text.strip():
        raise BadRequest(f"{field} is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise BadRequest(f"{field} has {len(text)} characters; juhe takes at most {MAX_TEXT_CHARS}")
    return text


_IMAGE_REF = re.compile(
    r"\b(?:image|img|picture|pic|photo)\s*#?\s*([1-3])\b|图片\s*([1-3])", re.I
)


def normalize_image_refs(text: str, image_count: int) -> str:
    """With several images the vendor understands only "图1/图2/图3" [seed];
    rewrite "image 2", "pic2", "图片2" to "图2" (only for images that exist)."""
    if image_count < 2:
        return text

    def replace(match: re.Match[str]) -> str:
        number = int(match.group(1) or match.group(2))
        return f"图{number}" if number <= image_count else match.group(0)

    return _IMAGE_REF.sub(replace, text)


def data_uri_budget(max_chars: int, mime: str = "image/jpeg") -> int:
    """The most bytes whose data URI fits in ``max_chars``: base64 spends
    4 characters on every 3 bytes, after the ``data:<mime>;base64,`` header."""
    return max(0, (max_chars - len(f"data:{mime};base64,")) // 4 * 3)


def image_data_uri(image: InputImage, number: int, a: Assumptions = ASSUMED) -> str:
    """``data:<mime>;base64,…`` for input image ``number`` (1-based). Formats
    the vendor does not take, and images over the size limit, are re-encoded
    as JPEG (see ASSUMED)."""
    fits = len(image.data) <= data_uri_budget(a.max_data_uri_chars, image.mime)
    if image.mime in DATA_URI_MIMES and fits:
        return data_uri(image.data, image.mime)
    try:
        jpeg = shrink_to(image.data, data_uri_budget(a.max_data_uri_chars), a.shrink_steps)
    except ShrinkError as exc:
        raise BadRequest(f"image{number}: {exc}") from None
    return data_uri(jpeg, "image/jpeg")


def fit_edit_size(width: int, height: int) -> tuple[int, int]:
    """Both sides into [512, 2048], keeping the ratio where the range allows:
    scale up until the short side reaches 512, then down until the long side
    fits 2048, then clamp (only ratios beyond 1:4 are bent)."""
    low, high = EDIT_SIDE_RANGE
    w, h = float(max(1, width)), float(max(1, height))
    if min(w, h) < low:
        w, h = w * low / min(w, h), h * low / min(w, h)
    if max(w, h) > high:
        w, h = w * high / max(w, h), h * high / max(w, h)
    return (max(low, min(high, round(w))), max(low, min(high, round(h))))


def edit_size(params: GenerationParams, a: Assumptions = ASSUMED) -> str:
    """"W*H" for an explicit --size or --ar; empty (the default 1:1 included)
    keeps the input image's aspect ratio [seed]."""
    if params.width and params.height:
        w, h = fit_edit_size(params.width, params.height)
    elif params.aspect_ratio != "1:1":
        w, h = fit_edit_size(*params.size_for(a.edit_long_side, 8))
    else:
        return ""
    return f"{w}*{h}"


def requested_ratio(params: GenerationParams) -> float:
    if params.width and params.height:
        return params.width / params.height
    w, h = (int(part) for part in params.aspect_ratio.split(":"))
    return w / h


def txt2img_size_code(params: GenerationParams) -> int:
    """The size code whose ratio is nearest (on a log scale, so 2:1 and 1:2
    are equally far from 1:1) to the requested one; ties go to the lower code."""
    target = math.log(requested_ratio(params))

    def distance(code: int) -> tuple[float, int]:
        w, h = TXT2IMG_SIZES[code]
        return abs(math.log(w / h) - target), code

    return min(TXT2IMG_SIZES, key=distance)


def build_edit_form(
    key: str, params: GenerationParams, images: Sequence[InputImage], a: Assumptions = ASSUMED
) -> dict[str, str]:
    """Every field of the seed's example, unused ones sent empty as it does."""
    if not images:
        raise BadRequest("juhe edit needs at least one input image")
    if len(images) > MAX_EDIT_IMAGES:
        raise BadRequest(f"juhe edit takes at most {MAX_EDIT_IMAGES} images, got {len(images)}")
    text = check_text(normalize_image_refs(params.prompt, len(images)))
    uris = [image_data_uri(image, number, a) for number, image in enumerate(images, start=1)]
    uris += [""] * (MAX_EDIT_IMAGES - len(uris))
    return {
        "key": key,
        "text": text,
        "image1": uris[0],
        "image2": uris[1],
        "image3": uris[2],
        "size": edit_size(params, a),
        "model": params.model or DEFAULT_MODEL,
    }


def build_txt2img_form(key: str, params: GenerationParams) -> dict[str, str]:
    return {
        "key": key,
        "prompt": check_text(params.prompt, "prompt"),
        "size": str(txt2img_size_code(params)),
        "model": params.model or DEFAULT_MODEL,
    }


# --------------------------------------------------------------------------- #
# Pure transforms: responses and errors
# --------------------------------------------------------------------------- #


def error_for_code(code: int, reason: str, a: Assumptions = ASSUMED) -> ProviderError:
    cls, meaning = error_table(a).get(code, (ProviderError, "unknown error code"))
    detail = f"error_code {code} ({meaning}): {reason}".rstrip(": ")
    if cls is RateLimited:
        return RateLimited(detail, retry_after=a.rate_limited_retry_after)
    if code == 10020:
        return Unavailable(detail, retry_after=a.maintenance_retry_after)
    return cls(detail)


def error_for_body(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> ProviderError | None:
    """The error a body carries (with HTTP 200), None for success."""
    code = code_of(body.get("error_code"))
    if code is None:
        raise MalformedResponse("body has no numeric error_code")
    if code == OK_CODE:
        return None
    return error_for_code(code, text_of(body.get("reason")), a)


@dataclass(frozen=True)
class Result:
    orderid: str
    urls: list[str]


def parse_result(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> Result:
    """The finished images of a successful answer; an error code raises."""
    if (error := error_for_body(body, a)) is not None:
        raise error
    result = body.get("result")
    if not isinstance(result, Mapping):
        raise MalformedResponse("success without a result object")
    items = result.get("images")
    edited = [item.get("image") if isinstance(item, Mapping) else item
              for item in (items if isinstance(items, list) else [])]
    urls = distinct_urls([*edited, result.get("image")])
    if not urls:
        raise MalformedResponse("success without an image")
    return Result(orderid=text_of(result.get("orderid")), urls=urls)


def finished_state(result: Result) -> JobState:
    return JobState(
        status=JobStatus.SUCCEEDED,
        progress=1.0,
        images=[ResultImage(url=url) for url in result.urls],
        vendor_data={"orderid": result.orderid, "expires_in": RESULT_TTL_SECONDS},
    )


# --------------------------------------------------------------------------- #
# The provider
# --------------------------------------------------------------------------- #


class Juhe(HttpProvider):
    id: ClassVar[str] = "juhe"
    title: ClassVar[str] = "Juhe (AI image edit)"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.EDIT, Capability.TXT2IMG, Capability.IMG2IMG}
    )
    # Images travel inside the request as data URIs: no public URL needed.
    needs_public_url: ClassVar[frozenset[Capability]] = frozenset()
    supports_callbacks: ClassVar[bool] = False
    typical_seconds = ASSUMED.typical_seconds
    max_images: ClassVar[int] = 1
    max_concurrent_jobs: ClassVar[int] = ASSUMED.max_concurrent_jobs
    max_prompt_chars = MAX_TEXT_CHARS
    image_input = "data_uri"
    # The key goes in the form body (make_auth stays None) [seed].
    credentials: ClassVar[Credentials] = Credentials.one("juhe_api_key")
    base_url_setting: ClassVar[str] = "juhe_base_url"
    timeout: ClassVar[httpx.Timeout] = SYNC_TIMEOUT

    # ---- submit (synchronous: the answer is the result) -----------------

    def request_for(self, spec: JobSpec) -> tuple[Endpoint, dict[str, str]]:
        """(endpoint, form) for a spec; BadRequest before any HTTP when the
        spec cannot be served."""
        key = self.secret("juhe_api_key")
        match spec.capability:
            case Capability.IMG2IMG if len(spec.images) != 1:
                raise BadRequest(f"img2img takes one image, got {len(spec.images)}")
            case Capability.EDIT | Capability.IMG2IMG:  # img2img: the prompt is the instruction
                return Endpoint.EDIT, build_edit_form(key, spec.params, spec.images)
            case Capability.TXT2IMG:
                return Endpoint.TXT2IMG, build_txt2img_form(key, spec.params)
        raise BadRequest(f"juhe cannot do {spec.capability}")

    async def submit(self, spec: JobSpec) -> Submitted:
        endpoint, form = self.request_for(spec)
        result = await self.call(endpoint, parse_result, data=form)
        # An answer without an order id still carries the image; name the job
        # after our own id then, so it stays unique.
        job_id = make_job_id(result.orderid or spec.business_id)
        return Submitted(job_id=job_id, state=finished_state(result))

    async def poll(self, job_id: str) -> JobState:
        """juhe has no query endpoint: a job's result arrives with submit and
        is handled there, so no job can be polled (and a restarted bot cannot
        recover one lost mid-call; it submits again)."""
        raise JobNotFound("juhe is synchronous; its jobs cannot be polled")

    async def probe(self) -> str:
        """Checks the key without a billed call (see ASSUMED)."""
        empty = {"key": self.secret("juhe_api_key"), "text": "", "image1": ""}
        try:
            await self.call(Endpoint.EDIT, parse_result, data=empty)
        except BadRequest:
            return "ok"  # 282501: the key passed, the empty request did not
        except ProviderError as exc:
            return exc.kind
        return "ok"
