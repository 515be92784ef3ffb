"""zhiqite (智绮特, sold on the Aliyun API market): Stable-Diffusion-WebUI-shaped
txt2img / img2img / controlnet, plus face swap (roop) and upscale (enhance) tools.

Layout, top to bottom:
  ASSUMED            every guess about the vendor, in one place (VENDORS.md [assume])
  job ids            "<kind>:<vendor id>", so poll() knows which query endpoint to use
  pure transforms    params → request body, response body → JobState / exception
  ZhiqiteAuth        the httpx.Auth for both credential modes
  Zhiqite            the Provider: HTTP calls only, errors mapped at the boundary

The vendor is asynchronous: submit returns at once, the result is polled
(queryTaskInfo / tool queryTask) or POSTed to our callbackUrl.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

import httpx
from PIL import Image, UnidentifiedImageError

from providers.base import DEFAULT_TIMEOUT, Provider
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
    JobSpec,
    JobState,
    JobStatus,
    ResultImage,
    Submitted,
)
from providers.credentials import Credentials, redact, secret_value

CREDENTIALS = Credentials((("zhiqite_app_code",), ("zhiqite_access_key_id", "zhiqite_access_key_secret")))

log = logging.getLogger(__name__)
T = TypeVar("T")


# --------------------------------------------------------------------------- #
# ASSUMED — what the vendor document does not say. Correct a guess here, with
# the real response saved as a fixture under tests/fixtures/zhiqite/.
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Assumptions:
    # Request defaults taken from the seed's examples (the model is the one
    # every example uses; steps / sampler / clip-skip likewise).
    default_model: str = "revAnimated_v122_7371.safetensors"
    default_sampler: str = "DPM++ 2M Karras"
    default_steps: int = 25
    default_cfg: float = 7.0  # the doc recommends 7..11; its example's 27 is extreme
    clip_skip: int = 2
    default_negative_prompt: str = (  # the doc's own suggestion (建议词)
        "nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, "
        "fewer digits, cropped, worst quality, low quality, normal quality, artifacts, "
        "signature, watermark, username, blurry"
    )
    default_strength: float = 0.55  # denoising_strength of the seed's img2img example
    # The default checkpoint is SD 1.5: 768 on the long side (the seed's example
    # size) looks better than the 1024 maximum the API allows.
    default_long_side: int = 768
    max_side: int = 1024  # [seed] (0, 1024], multiples of 8
    min_side: int = 64
    size_multiple: int = 8
    # The seed spells the scripts object both "alwayson_scripts" (both request
    # examples) and "always_on_scripts" (tables, controlnet example); we send
    # the SD-WebUI spelling.
    scripts_key: str = "alwayson_scripts"
    seed_as_string: bool = True  # the tables type `seed` as string ("1221212")
    upscale_factor: int = 2
    upscaler: str = "ESRGAN_4x"
    enhance_max_input_side: int = 1536  # [seed]
    # roop documents no callbackUrl; we send it anyway (ignored at worst).
    roop_accepts_callback: bool = True
    # Body codes: "200" success, "400" failure [seed]; anything 5xx-looking is
    # treated as the vendor being down.
    ok_code: str = "200"
    # An unknown businessTaskId on a query: code "400" with a msg, or code "200"
    # with data null. Both mean JobNotFound.
    not_found_codes: tuple[str, ...] = ("400",)
    # A body msg containing one of these means moderation, not a bad request.
    rejection_keywords: tuple[str, ...] = (
        "敏感", "违规", "违禁", "违法", "涉黄",
        "色情", "审核", "不合规", "不安全",
        "sensitive", "violat", "nsfw", "porn", "prohibited", "inappropriate", "unsafe",
    )
    # Aliyun gateway X-Ca-Error-Message prefixes [public], matched in this order.
    gateway_quota: tuple[str, ...] = (
        "Quota Exhausted", "Quota Expired", "User Arrears", "Expiry of Authorization",
    )
    gateway_throttled: tuple[str, ...] = ("Throttled by",)
    gateway_auth: tuple[str, ...] = (
        "Invalid AppCode", "Invalid AppKey", "Invalid AppSecret", "Unauthorized",
        "Empty Signature", "Invalid Signature", "Empty AppCode",
    )
    throttle_retry_after: float = 1.0  # the gateway sends no Retry-After
    # Tool status numbers disagree between pages [seed]: a non-empty
    # outputImageUrl on a *query* is done, status 0 failed, anything else
    # running. The URL in a tool's *submit* answer is not trusted: the enhance
    # example shows one next to status 1 (= generating).
    # The queryTask tables say 1 = success, 2 = failure [seed]: a 2 without
    # a URL is a failure, not "still running". 0 is failure on enhance's page.
    tool_failed_statuses: tuple[str, ...] = ("0", "2")
    # The callback body is not documented: we accept the queryTaskInfo / tool
    # queryTask response ({"code","msg","data"}) or its bare `data` object. A
    # tool callback names its tool in `toolTask` or in the result URL's path.
    callback_data_keys: tuple[str, ...] = ("data",)
    typical_seconds: float = 20.0
    typical_tool_seconds: float = 10.0


ASSUMED = Assumptions()

API_ROOT = "/AIGCImgOpenServ/"
MARKET_BASE_URL = "https://zhiqite.market.alicloudapi.com"  # with ZHIQITE_APP_CODE
ACCESS_KEY_BASE_URL = "https://api.zhiqite.com"  # with the access key pair
CONTENT_TYPE = "application/json;charset=UTF-8"  # [seed] "without it data may be wrong"


class Endpoint(StrEnum):
    TEXT2IMAGE = "saas/sd/v2/text2image"
    IMAGE2IMAGE = "saas/sd/v2/image2image"
    CONTROLNET = "saas/sd/v2/controlnet"
    QUERY_TASK = "saas/sd/v2/queryTaskInfo"
    ROOP = "saas/tool/roop"
    ENHANCE = "saas/tool/enhance"
    ROOP_QUERY = "saas/tool/roop/queryTask"
    ENHANCE_QUERY = "saas/tool/enhance/queryTask"
    MODEL_LIST = "saas/sd/v2/queryModelList"
    LORA_LIST = "saas/sd/v2/queryLoraList"
    VAE_LIST = "saas/sd/v2/queryVaeList"
    EMBEDDING_LIST = "saas/sd/v2/queryEmbeddingList"


LIST_ENDPOINTS: dict[str, Endpoint] = {
    "model": Endpoint.MODEL_LIST,
    "lora": Endpoint.LORA_LIST,
    "vae": Endpoint.VAE_LIST,
    "embedding": Endpoint.EMBEDDING_LIST,
}


# --------------------------------------------------------------------------- #
# Job ids. We choose the vendor-side id (id_task / businessTaskId = our
# business_id); the prefix tells poll() which query endpoint knows the job.
# --------------------------------------------------------------------------- #


class JobKind(StrEnum):
    SD = "sd"
    ROOP = "roop"
    ENHANCE = "enhance"


QUERY_ENDPOINTS: dict[JobKind, Endpoint] = {
    JobKind.SD: Endpoint.QUERY_TASK,
    JobKind.ROOP: Endpoint.ROOP_QUERY,
    JobKind.ENHANCE: Endpoint.ENHANCE_QUERY,
}

CAPABILITY_KINDS: dict[Capability, JobKind] = {
    Capability.TXT2IMG: JobKind.SD,
    Capability.IMG2IMG: JobKind.SD,
    Capability.FACESWAP: JobKind.ROOP,
    Capability.UPSCALE: JobKind.ENHANCE,
}


def make_job_id(kind: JobKind, vendor_id: str) -> str:
    return f"{kind}:{vendor_id}"


def split_job_id(job_id: str) -> tuple[JobKind, str]:
    prefix, sep, vendor_id = job_id.partition(":")
    try:
        kind = JobKind(prefix)
    except ValueError:
        raise JobNotFound("not a zhiqite job id") from None
    if not sep or not vendor_id:
        raise JobNotFound("not a zhiqite job id")
    return kind, vendor_id


# --------------------------------------------------------------------------- #
# Pure transforms: request bodies
# --------------------------------------------------------------------------- #


def fit_size(width: int, height: int, a: Assumptions = ASSUMED) -> tuple[int, int]:
    """Scale (width, height) down to fit max_side, keeping the ratio, then
    round each side down to the size multiple, within [min_side, max_side]."""
    scale = min(1.0, a.max_side / max(width, height, 1))
    m = a.size_multiple

    def side(value: int) -> int:
        snapped = int(value * scale) // m * m
        return max(a.min_side, min(a.max_side, snapped))

    return side(width), side(height)


def txt2img_size(params: GenerationParams, a: Assumptions = ASSUMED) -> tuple[int, int]:
    return fit_size(*params.size_for(a.default_long_side, a.size_multiple), a)


def img2img_size(
    params: GenerationParams, image: bytes | None, a: Assumptions = ASSUMED
) -> tuple[int, int]:
    """An explicit --size or --ar wins; otherwise keep the input photo's shape,
    so the vendor's "just resize" does not squash it into a square."""
    if (params.width and params.height) or params.aspect_ratio != "1:1":
        return txt2img_size(params, a)
    dims = image_dimensions(image)
    if dims is None:
        return txt2img_size(params, a)
    w, h = dims
    long_side = a.default_long_side
    if w >= h:
        return fit_size(long_side, max(1, round(long_side * h / w)), a)
    return fit_size(max(1, round(long_side * w / h)), long_side, a)


def image_dimensions(data: bytes | None) -> tuple[int, int] | None:
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _seed(params: GenerationParams, a: Assumptions) -> int | str:
    seed = -1 if params.seed is None else params.seed
    return str(seed) if a.seed_as_string else seed


def build_sd_body(
    params: GenerationParams,
    id_task: str,
    *,
    size: tuple[int, int],
    callback_url: str | None = None,
    image_link: str | None = None,
    a: Assumptions = ASSUMED,
) -> dict[str, Any]:
    """text2image body; with ``image_link`` the image2image body."""
    width, height = size
    scripts: dict[str, Any] = {
        "sd_model_checkpoint": params.model or a.default_model,
        "id_task": id_task,
        "override_settings": {"CLIP_stop_at_last_layers": a.clip_skip},
    }
    body: dict[str, Any] = {
        "prompt": params.prompt,
        "negative_prompt": params.negative_prompt or a.default_negative_prompt,
        "batch_size": params.n,
        "n_iter": 1,
        "width": width,
        "height": height,
        "seed": _seed(params, a),
        "steps": params.steps or a.default_steps,
        "cfg_scale": params.cfg if params.cfg is not None else a.default_cfg,
        "sampler_index": a.default_sampler,
        "restore_faces": False,
        "enable_hr": False,
        a.scripts_key: scripts,
    }
    if image_link is not None:
        scripts["image_link"] = image_link
        strength = params.strength if params.strength is not None else a.default_strength
        body["denoising_strength"] = strength
    if callback_url:
        body["callbackUrl"] = callback_url
    return body


def build_controlnet_body(
    params: GenerationParams,
    id_task: str,
    *,
    size: tuple[int, int],
    control_image_url: str,
    module: str,
    model: str,
    weight: float = 0.6,
    image_link: str | None = None,
    callback_url: str | None = None,
    a: Assumptions = ASSUMED,
) -> dict[str, Any]:
    body = build_sd_body(
        params, id_task, size=size, callback_url=callback_url, image_link=image_link, a=a
    )
    body["resize_mode"] = 1  # [seed] required here: "Crop and Resize"
    body[a.scripts_key]["controlnet"] = {
        "args": [
            {
                "image_link": control_image_url,
                "enabled": True,
                "module": module,
                "model": model,
                "weight": weight,
                "resize_mode": "Crop and Resize",
                "pixel_perfect": True,
                "control_mode": "Balanced",
            }
        ]
    }
    return body


def build_roop_body(
    source_url: str,
    target_url: str,
    business_task_id: str,
    callback_url: str | None = None,
    a: Assumptions = ASSUMED,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sourceUrl": source_url,  # the face
        "targetUrl": target_url,
        "businessTaskId": business_task_id,
    }
    if callback_url and a.roop_accepts_callback:
        body["callbackUrl"] = callback_url
    return body


def build_enhance_body(
    image_url: str,
    business_task_id: str,
    callback_url: str | None = None,
    a: Assumptions = ASSUMED,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "businessTaskId": business_task_id,
        "image": image_url,
        "resizeMode": 0,  # 0 = scale by upscalingResize
        "upscalingResize": a.upscale_factor,
        "upscaler1": a.upscaler,
        "upscaler2": "None",
        "upscaleFirst": True,
    }
    if callback_url:
        body["callbackUrl"] = callback_url
    return body


def build_list_body(page: int, page_size: int) -> dict[str, int]:
    return {"pageNum": max(1, page), "pageSize": max(1, page_size)}


def query_body(vendor_id: str) -> dict[str, str]:
    return {"businessTaskId": vendor_id}


# --------------------------------------------------------------------------- #
# Pure transforms: responses and errors
# --------------------------------------------------------------------------- #


def is_rejection(message: str, a: Assumptions = ASSUMED) -> bool:
    lowered = message.lower()
    return any(word.lower() in lowered for word in a.rejection_keywords)


def body_code(body: Mapping[str, Any]) -> str:
    if "code" not in body:
        raise MalformedResponse("body has no code")
    return str(body["code"]).strip()


def error_for_body(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> ProviderError | None:
    """The error an HTTP-200 body carries (code != "200"), or None."""
    code = body_code(body)
    if code == a.ok_code:
        return None
    message = str(body.get("msg") or "")
    detail = f"code {code}: {message}" if message else f"code {code}"
    if is_rejection(message, a):
        return ContentRejected(detail)
    if code.startswith("5"):
        return Unavailable(detail)
    return BadRequest(detail)


def data_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The `data` object of a successful body."""
    data = body.get("data")
    if not isinstance(data, dict):
        raise MalformedResponse("body has no data object")
    return data


def checked_body(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> Mapping[str, Any]:
    """The body itself when its code says success; else its error."""
    error = error_for_body(body, a)
    if error is not None:
        raise error
    return body


def query_data(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> dict[str, Any]:
    """`data` of a query answer; an unknown job is JobNotFound (see ASSUMED)."""
    code = body_code(body)
    if code in a.not_found_codes:
        raise JobNotFound(f"code {code}: {body.get('msg') or ''}".strip())
    error = error_for_body(body, a)
    if error is not None:
        raise error
    data = body.get("data")
    if data is None:
        raise JobNotFound("data is null")
    if not isinstance(data, dict):
        raise MalformedResponse("data is not an object")
    return data


def error_for_gateway(
    status: int, headers: Mapping[str, str], a: Assumptions = ASSUMED
) -> ProviderError | None:
    """The Aliyun gateway's (or backend's) non-2xx answer as an exception.
    The gateway explains itself in X-Ca-Error-Code / X-Ca-Error-Message."""
    if status < 400:
        return None
    code = headers.get("x-ca-error-code", "")
    message = headers.get("x-ca-error-message", "")
    detail = " ".join(part for part in (f"HTTP {status}", code, message) if part)
    retry_after = parse_retry_after(headers.get("retry-after"))

    if message.startswith(a.gateway_quota):
        return QuotaExceeded(detail)
    if message.startswith(a.gateway_throttled):
        return RateLimited(detail, retry_after=retry_after or a.throttle_retry_after)
    if message.startswith(a.gateway_auth):
        return AuthError(detail)
    if status >= 500:
        return Unavailable(detail, retry_after=retry_after)
    if status in (404, 405):
        # A wrong path or base URL, not an unknown job (those come back as body
        # codes), so raise_for_http_status's 404 → JobNotFound does not fit.
        return Unavailable(detail)
    if status in (401, 403):
        return AuthError(detail)
    if status == 402:
        return QuotaExceeded(detail)
    if status == 429:
        return RateLimited(detail, retry_after=retry_after or a.throttle_retry_after)
    return BadRequest(detail)


def parse_progress(value: Any) -> float | None:
    """"0".."1" (a string, per the seed); tolerates numbers and "45%"."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    try:
        number = float(text.rstrip("%"))
    except ValueError:
        return None
    if text.endswith("%") or number > 1:
        number /= 100
    return min(1.0, max(0.0, number))


def decode_preview(value: Any) -> bytes | None:
    """Base64 preview image, maybe with a data: URI prefix; None when unusable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return data or None


def _status_text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _kept(item: Mapping[str, Any]) -> bool:
    """The vendor deletes (image_status 2) or hides (img_audit_status false)
    images that failed its moderation."""
    if _status_text(item.get("image_status")) == "2":
        return False
    if item.get("img_audit_status") is False:
        return False
    return bool(item.get("image_url"))


def _result_image(item: Mapping[str, Any]) -> ResultImage:
    seed = item.get("seed")
    try:
        seed = int(seed) if seed is not None else None
    except (TypeError, ValueError):
        seed = None
    return ResultImage(url=str(item["image_url"]), seed=seed)


def failure_kind(description: str, a: Assumptions = ASSUMED) -> str:
    return ContentRejected.kind if is_rejection(description, a) else ProviderError.kind


def parse_task_info(data: Mapping[str, Any], a: Assumptions = ASSUMED) -> JobState:
    """queryTaskInfo `data` → JobState. Status: 3 queued, 1 running,
    5 uploading, 2 success, 0 failed [seed]."""
    status = _status_text(data.get("status"))
    desc = str(data.get("desc") or "")
    if status == "3":
        return JobState(status=JobStatus.QUEUED, error_detail=desc)
    if status == "2":
        return _succeeded(data, desc)
    if status == "0":
        return JobState(
            status=JobStatus.FAILED, error_kind=failure_kind(desc, a), error_detail=desc
        )
    if status not in ("1", "5"):
        log.warning("zhiqite: unknown task status %r, treated as running", status)
    temporary = data.get("temporaryImageDto") or {}
    if not isinstance(temporary, dict):
        temporary = {}
    progress = parse_progress(temporary.get("progress"))
    if status == "5" and progress is None:
        progress = 1.0  # generated, being uploaded
    return JobState(
        status=JobStatus.RUNNING,
        progress=progress,
        preview=decode_preview(temporary.get("currentImage")),
        error_detail=desc,
    )


def _succeeded(data: Mapping[str, Any], desc: str) -> JobState:
    items = data.get("differentialImageRspList") or []
    if not isinstance(items, list):
        raise MalformedResponse("differentialImageRspList is not a list")
    items = [item for item in items if isinstance(item, dict)]
    kept = [_result_image(item) for item in items if _kept(item)]
    if kept:
        return JobState(status=JobStatus.SUCCEEDED, progress=1.0, images=kept)
    if items:
        return JobState(
            status=JobStatus.FAILED,
            error_kind=ContentRejected.kind,
            error_detail=f"all {len(items)} images removed by moderation",
        )
    return JobState(
        status=JobStatus.FAILED,
        error_kind=ProviderError.kind,
        error_detail=desc or "succeeded without images",
    )


def parse_tool_task(data: Mapping[str, Any], a: Assumptions = ASSUMED) -> JobState:
    """Tool queryTask `data` → JobState (see ASSUMED about the status numbers)."""
    url = data.get("outputImageUrl")
    if isinstance(url, str) and url.strip():
        return JobState(
            status=JobStatus.SUCCEEDED, progress=1.0, images=[ResultImage(url=url.strip())]
        )
    status = _status_text(data.get("status"))
    if status in a.tool_failed_statuses:
        detail = str(data.get("desc") or data.get("msg") or f"tool status {status}")
        return JobState(
            status=JobStatus.FAILED, error_kind=failure_kind(detail, a), error_detail=detail
        )
    return JobState(status=JobStatus.RUNNING)


def _tool_kind(data: Mapping[str, Any]) -> JobKind | None:
    tool = str(data.get("toolTask") or "").strip().lower()
    if tool in (JobKind.ROOP, JobKind.ENHANCE):
        return JobKind(tool)
    url = str(data.get("outputImageUrl") or "")
    for kind in (JobKind.ROOP, JobKind.ENHANCE):
        if f"/{kind}/" in url:
            return kind
    return None


def parse_callback_payload(
    payload: Mapping[str, Any], a: Assumptions = ASSUMED
) -> tuple[str, JobState]:
    """(job id, state) from a callback body of any accepted shape (ASSUMED)."""
    data: Any = payload
    for key in a.callback_data_keys:
        if isinstance(payload.get(key), dict):
            data = payload[key]
            break
    if not isinstance(data, Mapping):
        raise MalformedResponse("callback has no data object")
    if data.get("id_task") or "differentialImageRspList" in data:
        vendor_id = str(data.get("id_task") or data.get("businessTaskId") or "")
        if not vendor_id:
            raise MalformedResponse("callback names no task")
        return make_job_id(JobKind.SD, vendor_id), parse_task_info(data, a)
    vendor_id = str(data.get("businessTaskId") or "")
    kind = _tool_kind(data)
    if not vendor_id or kind is None:
        raise MalformedResponse("callback names no task or tool")
    return make_job_id(kind, vendor_id), parse_tool_task(data, a)


@dataclass(frozen=True)
class ListPage:
    rows: list[dict[str, Any]]
    total: int


def parse_list(data: Mapping[str, Any]) -> ListPage:
    rows = data.get("rows") or []
    if not isinstance(rows, list):
        raise MalformedResponse("rows is not a list")
    try:
        total = int(data.get("total") or len(rows))
    except (TypeError, ValueError):
        total = len(rows)
    return ListPage(rows=[row for row in rows if isinstance(row, dict)], total=total)


# --------------------------------------------------------------------------- #
# Auth
# --------------------------------------------------------------------------- #


class ZhiqiteAuth(httpx.Auth):
    """Aliyun market AppCode, or the vendor's access-key header pair."""

    def __init__(
        self,
        *,
        app_code: str | None = None,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
    ) -> None:
        if not app_code and not (access_key_id and access_key_secret):
            raise ValueError("zhiqite needs an AppCode or an access key id and secret")
        self._app_code = app_code
        self._key_id = access_key_id
        self._key_secret = access_key_secret

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._app_code, self._key_id, self._key_secret) if s)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._app_code:
            request.headers["Authorization"] = f"APPCODE {self._app_code}"
        else:
            request.headers["X-Request-req-accessKeyId"] = self._key_id or ""
            request.headers["X-Request-req-accessKeySecret"] = self._key_secret or ""
        yield request

    def __repr__(self) -> str:  # never show the secrets
        mode = "appcode" if self._app_code else "access-key"
        return f"ZhiqiteAuth({mode})"


# --------------------------------------------------------------------------- #
# The provider
# --------------------------------------------------------------------------- #


class Zhiqite(Provider):
    id: ClassVar[str] = "zhiqite"
    title: ClassVar[str] = "Zhiqite (Stable Diffusion)"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.TXT2IMG, Capability.IMG2IMG, Capability.FACESWAP, Capability.UPSCALE}
    )
    needs_public_url: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.IMG2IMG, Capability.FACESWAP, Capability.UPSCALE}
    )
    supports_callbacks: ClassVar[bool] = True
    callback_answer: ClassVar[dict[str, Any]] = {"code": "200"}
    typical_seconds: ClassVar[float] = ASSUMED.typical_seconds
    max_images: ClassVar[int] = 4
    image_input = "url"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        auth: ZhiqiteAuth,
        base_url: str,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        assumptions: Assumptions = ASSUMED,
    ) -> None:
        super().__init__(client)
        self.auth = auth
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.assumed = assumptions

    @classmethod
    def from_settings(cls, settings: Any, client: httpx.AsyncClient) -> Zhiqite | None:
        app_code = secret_value(getattr(settings, "zhiqite_app_code", None))
        key_id = secret_value(getattr(settings, "zhiqite_access_key_id", None))
        key_secret = secret_value(getattr(settings, "zhiqite_access_key_secret", None))
        if not CREDENTIALS.lookup(settings):
            return None  # CredentialError when half an access key is set
        if app_code:
            auth = ZhiqiteAuth(app_code=app_code)
        else:
            auth = ZhiqiteAuth(access_key_id=key_id, access_key_secret=key_secret)
        # The APP code belongs to the Aliyun market host, the access key to the
        # vendor's own API host [public]; an explicit ZHIQITE_BASE_URL wins.
        default = MARKET_BASE_URL if app_code else ACCESS_KEY_BASE_URL
        return cls(client, auth=auth, base_url=settings.zhiqite_base_url or default)

    # ---- ids -------------------------------------------------------------

    def job_id_for(self, spec: JobSpec) -> str | None:
        kind = CAPABILITY_KINDS.get(spec.capability)
        return make_job_id(kind, spec.business_id) if kind else None

    # ---- submit ----------------------------------------------------------

    async def submit(self, spec: JobSpec) -> Submitted:
        endpoint, body = self.request_for(spec)
        # The answer only echoes our id (data.task_id / data.taskId). A tool's
        # answer may already hold an outputImageUrl: not trusted (see ASSUMED).
        await self._call(endpoint, body, self._checked)
        kind = CAPABILITY_KINDS[spec.capability]
        if kind is JobKind.SD:
            eta = self.assumed.typical_seconds
        else:
            eta = self.assumed.typical_tool_seconds
        return Submitted(job_id=make_job_id(kind, spec.business_id), eta_seconds=eta)

    def request_for(self, spec: JobSpec) -> tuple[Endpoint, dict[str, Any]]:
        """(endpoint, body) for a spec; BadRequest before any HTTP when the
        spec cannot be served."""
        a, params, bid, cb = self.assumed, spec.params, spec.business_id, spec.callback_url
        match spec.capability:
            case Capability.TXT2IMG:
                size = txt2img_size(params, a)
                return Endpoint.TEXT2IMAGE, build_sd_body(
                    params, bid, size=size, callback_url=cb, a=a
                )
            case Capability.IMG2IMG:
                link = _image_url(spec, 0)
                size = img2img_size(params, spec.images[0].data, a)
                return Endpoint.IMAGE2IMAGE, build_sd_body(
                    params, bid, size=size, callback_url=cb, image_link=link, a=a
                )
            case Capability.FACESWAP:
                face, target = _image_url(spec, 0), _image_url(spec, 1)
                return Endpoint.ROOP, build_roop_body(face, target, bid, cb, a)
            case Capability.UPSCALE:
                link = _image_url(spec, 0)
                _check_enhance_input(spec.images[0].data, a)
                return Endpoint.ENHANCE, build_enhance_body(link, bid, cb, a)
        raise BadRequest(f"zhiqite cannot do {spec.capability}")

    async def submit_controlnet(
        self,
        spec: JobSpec,
        *,
        control_image_url: str,
        module: str,
        model: str,
        weight: float = 0.6,
    ) -> Submitted:
        """ControlNet generation (not a Capability yet); spec.images[0], when
        present, is the img2img base image. Polled like txt2img."""
        link = spec.images[0].url if spec.images else None
        base = spec.images[0].data if spec.images else None
        size = img2img_size(spec.params, base, self.assumed)
        body = build_controlnet_body(
            spec.params,
            spec.business_id,
            size=size,
            control_image_url=control_image_url,
            module=module,
            model=model,
            weight=weight,
            image_link=link,
            callback_url=spec.callback_url,
            a=self.assumed,
        )
        await self._call(Endpoint.CONTROLNET, body, self._checked)
        return Submitted(
            job_id=make_job_id(JobKind.SD, spec.business_id),
            eta_seconds=self.assumed.typical_seconds,
        )

    # ---- poll / callbacks -----------------------------------------------

    async def poll(self, job_id: str) -> JobState:
        kind, vendor_id = split_job_id(job_id)
        parse = parse_task_info if kind is JobKind.SD else parse_tool_task
        return await self._call(
            QUERY_ENDPOINTS[kind],
            query_body(vendor_id),
            lambda body: parse(query_data(body, self.assumed), self.assumed),
        )

    def parse_callback(self, payload: Mapping[str, Any], job_id: str) -> JobState:
        named, state = parse_callback_payload(payload, self.assumed)
        if named != job_id:
            raise JobNotFound("the callback names another job")
        return state

    # ---- catalogues ------------------------------------------------------

    async def list_models(
        self, kind: str = "model", page: int = 1, page_size: int = 20
    ) -> ListPage:
        """One page of the vendor's models / LoRAs / VAEs / embeddings."""
        endpoint = LIST_ENDPOINTS.get(kind)
        if endpoint is None:
            raise BadRequest(f"unknown list {kind!r}; one of {sorted(LIST_ENDPOINTS)}")
        return await self._call(
            endpoint,
            build_list_body(page, page_size),
            lambda body: parse_list(data_of(self._checked(body))),
        )

    async def probe(self) -> str:
        try:
            await self.list_models("model", 1, 1)
        except ProviderError as exc:
            return exc.kind
        return "ok"

    # ---- HTTP boundary ---------------------------------------------------

    def _checked(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        return checked_body(body, self.assumed)

    async def _call(
        self,
        endpoint: Endpoint,
        payload: Mapping[str, Any],
        read: Callable[[dict[str, Any]], T],
    ) -> T:
        """POST one vendor endpoint and ``read`` the JSON body. Every failure
        leaves as a ProviderError naming the endpoint, never the URL or a
        credential, and is logged with the vendor's words."""
        content = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        try:
            with map_transport_errors():
                response = await self.client.post(
                    f"{self.base_url}{API_ROOT}{endpoint}",
                    content=content,
                    headers={"Content-Type": CONTENT_TYPE, "Accept": "application/json"},
                    auth=self.auth,
                    timeout=self.timeout,
                )
            gateway = error_for_gateway(response.status_code, response.headers, self.assumed)
            if gateway is not None:
                raise gateway
            return read(json_body(response))
        except ProviderError as exc:
            raise self._logged(endpoint, exc) from None

    def _logged(self, endpoint: Endpoint, exc: ProviderError) -> ProviderError:
        message = redact(exc.vendor_message, self.auth.secrets)
        level = logging.WARNING if exc.transient or exc.disables_vendor else logging.INFO
        log.log(level, "zhiqite %s: %s (%s)", endpoint.value, message, exc.kind)
        return type(exc)(message, retry_after=exc.retry_after)


def _image_url(spec: JobSpec, index: int) -> str:
    if len(spec.images) <= index:
        raise BadRequest(f"{spec.capability} needs {index + 1} input image(s)")
    url = spec.images[index].url
    if not url:
        raise BadRequest("zhiqite fetches input images by URL; PUBLIC_BASE_URL is not set")
    return url


def _check_enhance_input(data: bytes, a: Assumptions) -> None:
    dims = image_dimensions(data)
    if dims and max(dims) > a.enhance_max_input_side:
        raise BadRequest(
            f"image {dims[0]}x{dims[1]} is larger than {a.enhance_max_input_side} px for upscaling"
        )
