"""zhiqite (智绮特, sold on the Aliyun API market): Stable-Diffusion-WebUI-shaped
txt2img / img2img, plus face swap (roop) and upscale (enhance) tools.

Layout, top to bottom:
  ASSUMED            every guess about the vendor, in one place (VENDORS.md [assume])
  job ids            "<kind>:<vendor id>", so poll() knows which query endpoint to use
  pure transforms    params → request body, response body → JobState / exception
  Zhiqite            the HttpProvider: credentials, auth headers, hooks

The vendor is asynchronous: submit returns at once, the result is polled
(queryTaskInfo / tool queryTask, each a billed call) or POSTed to our callbackUrl.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import httpx

from providers.base import PollPolicy
from providers.common import input_image, input_url, matches, parse_progress, text_of
from providers.common import whole_number
from providers.credentials import Credentials
from providers.errors import AuthError, BadRequest, ContentRejected, JobNotFound
from providers.errors import MalformedResponse, ProviderError, QuotaExceeded, RateLimited
from providers.errors import Unavailable, parse_retry_after
from providers.http import HeaderAuth, HttpProvider, status_error
from providers.types import Capability, GenerationParams, InputImage, JobSpec, JobState
from providers.types import JobStatus, ResultImage, Submitted

log = logging.getLogger(__name__)


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
    # examples) and "always_on_scripts" (tables); we send the SD-WebUI spelling.
    scripts_key: str = "alwayson_scripts"
    seed_as_string: bool = True  # the txt2img/img2img tables type `seed` as string ("1221212")
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
    # Tool status numbers disagree between pages [seed]: the queryTask tables
    # say "1.成功, 2.失败", the enhance page "1:生成中 2:成功 0:失败", and the
    # queryTask example shows status 2 *with* a result. So a non-empty
    # outputImageUrl on a *query* is done; without one, 2 and 0 are failures;
    # anything else is running. The URL in a tool's *submit* answer is not
    # trusted: the enhance example shows one next to status 1 (= generating).
    tool_failed_statuses: tuple[str, ...] = ("0", "2")
    # The callback body is not documented: we accept the queryTaskInfo / tool
    # queryTask response ({"code","msg","data"}) or its bare `data` object.
    callback_data_keys: tuple[str, ...] = ("data",)
    typical_seconds: float = 20.0
    typical_tool_seconds: float = 10.0


ASSUMED = Assumptions()

API_ROOT = "/AIGCImgOpenServ/"
# The default host follows the credential mode [public]: the APPCODE header
# belongs to the Aliyun market gateway, the access-key pair to the vendor's own.
APP_CODE_BASE_URL = "https://zhiqite.market.alicloudapi.com"
ACCESS_KEY_BASE_URL = "https://api.zhiqite.com"


class Endpoint(StrEnum):
    TEXT2IMAGE = "saas/sd/v2/text2image"
    IMAGE2IMAGE = "saas/sd/v2/image2image"
    QUERY_TASK = "saas/sd/v2/queryTaskInfo"
    ROOP = "saas/tool/roop"
    ENHANCE = "saas/tool/enhance"
    ROOP_QUERY = "saas/tool/roop/queryTask"
    ENHANCE_QUERY = "saas/tool/enhance/queryTask"


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
    params: GenerationParams, photo: tuple[int, int] | None, a: Assumptions = ASSUMED
) -> tuple[int, int]:
    """An explicit --size or --ar wins; otherwise keep the input photo's shape
    (``photo`` = its width and height), so the vendor's "just resize" does not
    squash it into a square."""
    if (params.width and params.height) or params.aspect_ratio != "1:1":
        return txt2img_size(params, a)
    if photo is None or min(photo) <= 0:
        return txt2img_size(params, a)
    w, h = photo
    long_side = a.default_long_side
    if w >= h:
        return fit_size(long_side, max(1, round(long_side * h / w)), a)
    return fit_size(max(1, round(long_side * w / h)), long_side, a)


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


def query_body(vendor_id: str) -> dict[str, str]:
    return {"businessTaskId": vendor_id}


def check_enhance_input(image: InputImage, a: Assumptions = ASSUMED) -> None:
    """BadRequest before any HTTP for an input the vendor refuses [seed]."""
    if max(image.width, image.height) > a.enhance_max_input_side:
        raise BadRequest(f"image {image.width}x{image.height} is larger than "
                         f"{a.enhance_max_input_side} px for upscaling")


# --------------------------------------------------------------------------- #
# Pure transforms: responses and errors
# --------------------------------------------------------------------------- #


def body_code(body: Mapping[str, Any]) -> str:
    if "code" not in body:
        raise MalformedResponse("body has no code")
    return text_of(body["code"])


def error_for_body(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> ProviderError | None:
    """The error an HTTP-200 body carries (code != "200"), or None."""
    code = body_code(body)
    if code == a.ok_code:
        return None
    message = text_of(body.get("msg"))
    detail = f"code {code}: {message}" if message else f"code {code}"
    if matches(message, a.rejection_keywords):
        return ContentRejected(detail)
    if code.startswith("5"):
        return Unavailable(detail)
    return BadRequest(detail)


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
        raise JobNotFound(f"code {code}: {text_of(body.get('msg'))}".strip())
    checked_body(body, a)
    data = body.get("data")
    if data is None:
        raise JobNotFound("data is null")
    if not isinstance(data, dict):
        raise MalformedResponse("data is not an object")
    return data


def error_for_gateway(
    status: int, headers: Mapping[str, str], a: Assumptions = ASSUMED
) -> ProviderError | None:
    """A non-2xx answer: the Aliyun gateway explains itself in X-Ca-Error-Code
    / X-Ca-Error-Message [public]; what it does not explain keeps the default
    table's meaning, with the gateway's words."""
    default = status_error(status, headers)
    if default is None:
        return None
    message = headers.get("x-ca-error-message", "")
    code = headers.get("x-ca-error-code", "")
    detail = " ".join(part for part in (f"HTTP {status}", code, message) if part)
    retry_after = parse_retry_after(headers.get("retry-after"))
    if message.startswith(a.gateway_quota):
        return QuotaExceeded(detail)
    if message.startswith(a.gateway_throttled) or isinstance(default, RateLimited):
        return RateLimited(detail, retry_after=retry_after or a.throttle_retry_after)
    if message.startswith(a.gateway_auth):
        return AuthError(detail)
    return type(default)(detail, retry_after=default.retry_after)


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


def _kept(item: Mapping[str, Any]) -> bool:
    """The vendor deletes (image_status 2) or hides (img_audit_status false)
    images that failed its moderation."""
    if text_of(item.get("image_status")) == "2":
        return False
    if item.get("img_audit_status") is False:
        return False
    return bool(item.get("image_url"))


def _result_image(item: Mapping[str, Any]) -> ResultImage:
    return ResultImage(url=str(item["image_url"]), seed=whole_number(item.get("seed")))


def failure_kind(description: str, a: Assumptions = ASSUMED) -> str:
    rejected = matches(description, a.rejection_keywords)
    return ContentRejected.kind if rejected else ProviderError.kind


def _failed(detail: str, a: Assumptions) -> JobState:
    return JobState(status=JobStatus.FAILED, error_kind=failure_kind(detail, a),
                    error_detail=detail)


def parse_task_info(data: Mapping[str, Any], a: Assumptions = ASSUMED) -> JobState:
    """queryTaskInfo `data` → JobState. Status: 3 queued, 1 running,
    5 uploading, 2 success, 0 failed [seed]."""
    status = text_of(data.get("status"))
    desc = text_of(data.get("desc"))
    if status == "3":
        return JobState(status=JobStatus.QUEUED, error_detail=desc)
    if status == "2":
        return _succeeded(data, desc)
    if status == "0":
        return _failed(desc, a)
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
    url = text_of(data.get("outputImageUrl"))
    if url:
        return JobState(status=JobStatus.SUCCEEDED, progress=1.0, images=[ResultImage(url=url)])
    status = text_of(data.get("status"))
    if status in a.tool_failed_statuses:
        return _failed(text_of(data.get("desc") or data.get("msg")) or f"tool status {status}", a)
    return JobState(status=JobStatus.RUNNING)


def parse_callback_payload(
    payload: Mapping[str, Any], job_id: str, a: Assumptions = ASSUMED
) -> JobState:
    """The state of ``job_id`` from a callback body of any accepted shape
    (ASSUMED), read as the job id's kind says; JobNotFound when the body
    names another task."""
    kind, vendor_id = split_job_id(job_id)
    data: Any = payload
    for key in a.callback_data_keys:
        if isinstance(payload.get(key), dict):
            data = payload[key]
            break
    if not isinstance(data, Mapping):
        raise MalformedResponse("callback has no data object")
    named = {text_of(data.get(key)) for key in ("id_task", "businessTaskId")} - {""}
    if not named:
        raise MalformedResponse("callback names no task")
    if named != {vendor_id}:
        raise JobNotFound("the callback names another task")
    return parse_task_info(data, a) if kind is JobKind.SD else parse_tool_task(data, a)


# --------------------------------------------------------------------------- #
# The provider
# --------------------------------------------------------------------------- #


class Zhiqite(HttpProvider):
    id: ClassVar[str] = "zhiqite"
    title: ClassVar[str] = "Zhiqite (Stable Diffusion)"
    credentials = Credentials((("zhiqite_app_code",),
                               ("zhiqite_access_key_id", "zhiqite_access_key_secret")))
    base_url_setting = "zhiqite_base_url"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(CAPABILITY_KINDS)
    needs_public_url: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.IMG2IMG, Capability.FACESWAP, Capability.UPSCALE}
    )
    supports_callbacks: ClassVar[bool] = True
    callback_answer: ClassVar[dict[str, Any]] = {"code": "200"}
    typical_seconds = ASSUMED.typical_seconds
    max_images: ClassVar[int] = 4
    image_input = "url"
    # Every query is one more paid call [seed: 会多消耗一次接口请求次数]. With
    # callbacks on, look a job up only when its callback is 90 s overdue (the
    # vendor retries a refused callback after 3, 5, 15, 30, 60 s ...); without
    # them the engine keeps its adaptive polling, never more than every 5 s.
    poll_policy: ClassVar[PollPolicy] = PollPolicy(
        callback_silence_seconds=90.0, min_interval_seconds=5.0
    )
    json_content_type = "application/json;charset=UTF-8"  # [seed] "without it data may be wrong"
    assumed: Assumptions = ASSUMED

    @classmethod
    def base_url_from(cls, settings: Any, secrets: Mapping[str, str]) -> str:
        explicit = text_of(getattr(settings, cls.base_url_setting, None))
        if explicit:
            return explicit
        return APP_CODE_BASE_URL if "zhiqite_app_code" in secrets else ACCESS_KEY_BASE_URL

    def make_auth(self, secrets: Mapping[str, str]) -> httpx.Auth:
        # Aliyun market AppCode [public], or the vendor's access-key pair [seed].
        if "zhiqite_app_code" in secrets:
            return HeaderAuth({"Authorization": f"APPCODE {secrets['zhiqite_app_code']}"})
        return HeaderAuth({
            "X-Request-req-accessKeyId": secrets["zhiqite_access_key_id"],
            "X-Request-req-accessKeySecret": secrets["zhiqite_access_key_secret"],
        })

    def error_for_status(self, response: httpx.Response, endpoint: str) -> ProviderError | None:
        return error_for_gateway(response.status_code, response.headers, self.assumed)

    # ---- ids -------------------------------------------------------------

    def job_id_for(self, spec: JobSpec) -> str | None:
        kind = CAPABILITY_KINDS.get(spec.capability)
        return make_job_id(kind, spec.business_id) if kind else None

    # ---- submit ----------------------------------------------------------

    async def submit(self, spec: JobSpec) -> Submitted:
        endpoint, body = self.request_for(spec)
        # The answer only echoes our id (data.task_id / data.taskId). A tool's
        # answer may already hold an outputImageUrl: not trusted (see ASSUMED).
        await self.call(endpoint, lambda answer: checked_body(answer, self.assumed),
                        path=API_ROOT + endpoint, payload=body)
        kind = CAPABILITY_KINDS[spec.capability]
        a = self.assumed
        eta = a.typical_seconds if kind is JobKind.SD else a.typical_tool_seconds
        return Submitted(job_id=make_job_id(kind, spec.business_id), eta_seconds=eta)

    def request_for(self, spec: JobSpec) -> tuple[Endpoint, dict[str, Any]]:
        """(endpoint, body) for a spec; BadRequest before any HTTP when the
        spec cannot be served."""
        a, params, bid, cb = self.assumed, spec.params, spec.business_id, spec.callback_url
        match spec.capability:
            case Capability.TXT2IMG:
                size = txt2img_size(params, a)
                return Endpoint.TEXT2IMAGE, build_sd_body(params, bid, size=size,
                                                          callback_url=cb, a=a)
            case Capability.IMG2IMG:
                link, photo = input_url(spec, 0, self.id), input_image(spec, 0)
                size = img2img_size(params, (photo.width, photo.height), a)
                return Endpoint.IMAGE2IMAGE, build_sd_body(params, bid, size=size,
                                                           callback_url=cb, image_link=link, a=a)
            case Capability.FACESWAP:
                face, target = input_url(spec, 0, self.id), input_url(spec, 1, self.id)
                return Endpoint.ROOP, build_roop_body(face, target, bid, cb, a)
            case Capability.UPSCALE:
                link = input_url(spec, 0, self.id)
                check_enhance_input(input_image(spec, 0), a)
                return Endpoint.ENHANCE, build_enhance_body(link, bid, cb, a)
        raise BadRequest(f"zhiqite cannot do {spec.capability}")

    # ---- poll / callbacks -----------------------------------------------

    async def poll(self, job_id: str) -> JobState:
        kind, vendor_id = split_job_id(job_id)
        parse = parse_task_info if kind is JobKind.SD else parse_tool_task
        endpoint = QUERY_ENDPOINTS[kind]
        return await self.call(
            endpoint,
            lambda body: parse(query_data(body, self.assumed), self.assumed),
            path=API_ROOT + endpoint,
            payload=query_body(vendor_id),
        )

    def parse_callback(self, payload: Mapping[str, Any], job_id: str) -> JobState:
        return parse_callback_payload(payload, job_id, self.assumed)
