"""juhe (聚合数据, gpt.juhe.cn): synchronous AI image edit (1–3 input images)
and text to image. The HTTP answer carries the result, so there is nothing
to poll: ``submit`` returns a finished state.

Layout, top to bottom:
  ASSUMED            every guess about the vendor, in one place
  seed facts         endpoints, limits, the error-code table
  pure transforms    params / images → form fields; response body → images / exception
  Juhe               the Provider: one HTTP boundary (``_call``), errors mapped there

Requests are ``application/x-www-form-urlencoded`` with the key in the form
(``key=…``) [seed]; errors come back with HTTP 200 and a non-zero
``error_code`` [seed].
"""

from __future__ import annotations

import base64
import io
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

import httpx
from PIL import Image, UnidentifiedImageError

from providers.base import Provider
from providers.errors import (
    AuthError,
    BadRequest,
    ContentRejected,
    JobNotFound,
    MalformedResponse,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    Unavailable,
    json_body,
    map_transport_errors,
    parse_retry_after,
)
from providers.types import (
    Capability,
    GenerationParams,
    InputImage,
    JobSpec,
    JobState,
    JobStatus,
    ResultImage,
    Submitted,
)
from providers.secrets import redact, secret_value

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    # (long side, JPEG quality) tried in order until the data URI fits.
    shrink_steps: tuple[tuple[int, int], ...] = ((2048, 90), (2048, 80), (1536, 80), (1024, 75))
    # edit: --ar (without --size) asks for this long side, fitted into 512..2048.
    edit_long_side: int = 1024
    # txt2img documents a `model` field but no default: we send it empty, as
    # the seed's edit examples do ("model": ""), meaning the vendor default.
    txt2img_default_model: str = ""
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


class Endpoint(StrEnum):
    EDIT = "/image_edit/edit"  # [seed]
    TXT2IMG = "/text2image/generate"  # [public]


# "建议超时时长设置在60s" [seed]: the answer carries the finished image.
SYNC_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
MAX_TEXT_CHARS = 800  # [seed] every character (汉字 or letter) counts one
MAX_EDIT_IMAGES = 3  # image1..image3 [seed]
EDIT_SIDE_RANGE = (512, 2048)  # [seed] size "W*H", each side in [512, 2048]
DEFAULT_EDIT_MODEL = "auto"  # [seed] "模型,默认:auto"
RESULT_TTL_SECONDS = 24 * 3600  # [seed] result links are valid for 24 h

# Image formats the edit endpoint accepts, with the MIME type the data URI
# must name [seed]; keys are Pillow's format names.
DATA_URI_MIMES: dict[str, str] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "WEBP": "image/webp",
}

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
    so an instruction is never cut in half unnoticed."""
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


def image_format(data: bytes) -> str | None:
    """Pillow's name for the image format, or None when it is not an image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_data_uri(image: InputImage, number: int, a: Assumptions = ASSUMED) -> str:
    """``data:<mime>;base64,…`` for input image ``number`` (1-based). The MIME
    type comes from the bytes, not from InputImage.mime, since the vendor
    requires them to agree [seed]. Formats it does not take, and images over
    the size limit, are re-encoded as JPEG (see ASSUMED)."""
    fmt = image_format(image.data)
    if fmt is None:
        raise BadRequest(f"image{number} is not a readable image")
    if fmt in DATA_URI_MIMES:
        uri = data_uri(image.data, DATA_URI_MIMES[fmt])
        if len(uri) <= a.max_data_uri_chars:
            return uri
    return shrunk_data_uri(image.data, number, a)


def shrunk_data_uri(data: bytes, number: int, a: Assumptions = ASSUMED) -> str:
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = flatten(img)
    except (OSError, ValueError, Image.DecompressionBombError):
        raise BadRequest(f"image{number} cannot be converted") from None
    for long_side, quality in a.shrink_steps:
        resized = rgb.copy()
        resized.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        resized.save(buffer, format="JPEG", quality=quality, optimize=True)
        uri = data_uri(buffer.getvalue(), "image/jpeg")
        if len(uri) <= a.max_data_uri_chars:
            return uri
    raise BadRequest(f"image{number} is too large even after shrinking")


def flatten(img: Image.Image) -> Image.Image:
    """RGB for JPEG: transparency becomes white, palettes are expanded."""
    img.seek(0)  # first frame of an animation
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


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
        "model": params.model or DEFAULT_EDIT_MODEL,
    }


def build_txt2img_form(
    key: str, params: GenerationParams, a: Assumptions = ASSUMED
) -> dict[str, str]:
    return {
        "key": key,
        "prompt": check_text(params.prompt, "prompt"),
        "size": str(txt2img_size_code(params)),
        "model": params.model or a.txt2img_default_model,
    }


# --------------------------------------------------------------------------- #
# Pure transforms: responses and errors
# --------------------------------------------------------------------------- #


def body_code(body: Mapping[str, Any]) -> int:
    try:
        return int(str(body["error_code"]).strip())
    except (KeyError, ValueError):
        raise MalformedResponse("body has no numeric error_code") from None


def error_for_code(code: int, reason: str, a: Assumptions = ASSUMED) -> ProviderError:
    cls, meaning = error_table(a).get(code, (ProviderError, "unknown error code"))
    detail = f"error_code {code} ({meaning}): {reason}".rstrip(": ")
    if cls is RateLimited:
        return RateLimited(detail, retry_after=a.rate_limited_retry_after)
    if code == 10020:
        return Unavailable(detail, retry_after=a.maintenance_retry_after)
    return cls(detail)


def error_for_body(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> ProviderError | None:
    code = body_code(body)
    if code == OK_CODE:
        return None
    return error_for_code(code, str(body.get("reason") or ""), a)


def error_for_http_status(response: httpx.Response) -> ProviderError | None:
    """A non-2xx answer (juhe itself answers errors with 200)."""
    status = response.status_code
    if status < 400:
        return None
    detail = f"HTTP {status}"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status in (401, 403):
        return AuthError(detail)
    if status == 429:
        return RateLimited(detail, retry_after=retry_after)
    if status >= 500 or status in (404, 405):
        # 404/405: a wrong base URL, not an unknown job (there are no job queries).
        return Unavailable(detail, retry_after=retry_after)
    return BadRequest(detail)


@dataclass(frozen=True)
class Result:
    orderid: str
    urls: list[str]


def parse_result(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> Result:
    """The finished images of a successful answer; an error code raises."""
    error = error_for_body(body, a)
    if error is not None:
        raise error
    result = body.get("result")
    if not isinstance(result, Mapping):
        raise MalformedResponse("success without a result object")
    urls = [url for url in _image_urls(result) if url]
    if not urls:
        raise MalformedResponse("success without an image")
    return Result(orderid=str(result.get("orderid") or "").strip(), urls=urls)


def _image_urls(result: Mapping[str, Any]) -> list[str]:
    urls: list[str] = []
    items = result.get("images")
    if isinstance(items, list):
        for item in items:
            value = item.get("image") if isinstance(item, Mapping) else item
            if isinstance(value, str):
                urls.append(value.strip())
    single = result.get("image")
    if isinstance(single, str):
        urls.append(single.strip())
    return urls


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


class Juhe(Provider):
    id: ClassVar[str] = "juhe"
    title: ClassVar[str] = "Juhe (AI image edit)"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.EDIT, Capability.TXT2IMG, Capability.IMG2IMG}
    )
    # Images travel inside the request as data URIs: no public URL needed.
    needs_public_url: ClassVar[frozenset[Capability]] = frozenset()
    supports_callbacks: ClassVar[bool] = False
    typical_seconds: ClassVar[float] = ASSUMED.typical_seconds
    max_images: ClassVar[int] = 1
    max_concurrent_jobs: ClassVar[int] = ASSUMED.max_concurrent_jobs
    image_input = "data_uri"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: str,
        base_url: str,
        timeout: httpx.Timeout = SYNC_TIMEOUT,
        assumptions: Assumptions = ASSUMED,
    ) -> None:
        super().__init__(client, base_url)
        if not api_key:
            raise ValueError("juhe needs an API key")
        self._key = api_key
        self.timeout = timeout
        self.assumed = assumptions

    def __repr__(self) -> str:  # never show the key
        return f"Juhe(base_url={self.base_url!r})"

    @classmethod
    def from_settings(cls, settings: Any, client: httpx.AsyncClient) -> Juhe | None:
        key = secret_value(getattr(settings, "juhe_api_key", None))
        if not key:
            return None
        return cls(client, api_key=key, base_url=settings.juhe_base_url)

    # ---- submit (synchronous: the answer is the result) -----------------

    def request_for(self, spec: JobSpec) -> tuple[Endpoint, dict[str, str]]:
        """(endpoint, form) for a spec; BadRequest before any HTTP when the
        spec cannot be served."""
        match spec.capability:
            case Capability.EDIT:
                return Endpoint.EDIT, self._edit_form(spec)
            case Capability.IMG2IMG:  # an edit of one image, the prompt as instruction
                if len(spec.images) != 1:
                    raise BadRequest(f"img2img takes one image, got {len(spec.images)}")
                return Endpoint.EDIT, self._edit_form(spec)
            case Capability.TXT2IMG:
                return Endpoint.TXT2IMG, build_txt2img_form(self._key, spec.params, self.assumed)
        raise BadRequest(f"juhe cannot do {spec.capability}")

    def _edit_form(self, spec: JobSpec) -> dict[str, str]:
        return build_edit_form(self._key, spec.params, spec.images, self.assumed)

    async def submit(self, spec: JobSpec) -> Submitted:
        endpoint, form = self.request_for(spec)
        result = await self._call(endpoint, form, lambda body: parse_result(body, self.assumed))
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
        empty = {"key": self._key, "text": "", "image1": ""}
        try:
            await self._call(Endpoint.EDIT, empty, lambda body: parse_result(body, self.assumed))
        except BadRequest:
            return "ok"  # 282501: the key passed, the empty request did not
        except ProviderError as exc:
            return exc.kind
        return "ok"

    # ---- HTTP boundary ---------------------------------------------------

    async def _call(
        self, endpoint: Endpoint, form: Mapping[str, str], read: Callable[[dict[str, Any]], T]
    ) -> T:
        """POST a form and ``read`` the JSON body. Every failure leaves as a
        ProviderError naming the endpoint, never the URL or the key, and is
        logged with the vendor's words."""
        try:
            with map_transport_errors():
                response = await self.client.post(
                    f"{self.base_url}{endpoint}",
                    data=dict(form),
                    headers={"Accept": "application/json"},
                    timeout=self.timeout,
                )
            error = error_for_http_status(response)
            if error is not None:
                raise error
            return read(json_body(response))
        except ProviderError as exc:
            raise self._logged(endpoint, exc) from None

    def _logged(self, endpoint: Endpoint, exc: ProviderError) -> ProviderError:
        message = redact(exc.vendor_message, [self._key])
        level = logging.WARNING if exc.transient or exc.disables_vendor else logging.INFO
        log.log(level, "juhe %s: %s (%s)", endpoint.value, message, exc.kind)
        return type(exc)(message, retry_after=exc.retry_after)
