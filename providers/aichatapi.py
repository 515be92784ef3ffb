"""aichatapi (aichatapi.com): Stable-Diffusion image-to-image sold on a PHP
API marketplace (seeds/000_…).

Layout, top to bottom:
  ASSUMED            every guess about the vendor, in one place (VENDORS.md [assume])
  job ids            "task:<vendor task_id>"
  pure transforms    params → multipart parts, response body → JobState / exception
  Aichatapi          the HttpProvider: credentials, auth header, pace, hooks

The vendor is asynchronous and polled: submit uploads the photo and returns a
task_id, the query endpoint (on another host) reports state "0".."3". There
are no callbacks. Free accounts may send one request per second (submits and
queries together) and 10,000 a day [seed]; paid ones more, so the pace is
AICHATAPI_QPS, and the engine's VendorGate spaces calls by the instance's
``min_request_interval``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import httpx

from providers import code_envelope as envelope
from providers.common import code_of, distinct_urls, input_image, matches, plain_number
from providers.common import seconds_of, text_of, whole_number
from providers.credentials import Credentials
from providers.errors import BadRequest, JobNotFound, MalformedResponse, ProviderError
from providers.errors import VendorTimeout
from providers.http import HeaderAuth, HttpProvider
from providers.types import Capability, GenerationParams, InputImage, JobSpec, JobState, JobStatus
from providers.types import ResultImage, Submitted

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# ASSUMED — what the vendor document does not say. Correct a guess here, with
# the real response saved as a fixture under tests/fixtures/aichatapi/.
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Assumptions:
    # [seed] defaults: the seed's `params` example (fixtures/aichatapi/params_example.json).
    default_model_id: str = "b49012a9071407209652d332517a182e"
    # [public] `style_id` is a LoRA id (the vendor's own client sends
    # loraId/loraScale); `lora_scale` is that LoRA's weight in percent.
    default_style_id: str = "fc1be0561c11fe7019f4424f5e7b2c85"
    default_sampler: str = "DPM++ 2M Karras"
    default_steps: int = 20
    default_cfg: float = 7
    default_strength_percent: int = 70
    lora_scale: int = 75
    hire: int = 0
    as_prompt: bool = True
    default_negative_prompt: str = (
        "easynegative, (worst quality:1.3), (low quality:1), (normal quality:1.4), lowres,"
        "skin spots, acnes, skin blemishes, age spot, glan, extra fingers, fewer fingers, "
        "strange fingers, bad hand, bad anatomy, fused fingers, missing leg, mutated hand, "
        "malformed limbs, missing feet,multiple legs,men,boy,logo, loli,3d,extra hands,extra foots"
    )
    # The seed shows only "1:1"; the other ratios are the usual ones of such
    # sites. Any other ratio is sent as the nearest of these.
    size_ids: tuple[str, ...] = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9")
    # A model/style id is a 32-hex digest in the seed; a --model that is not
    # one is ignored rather than sent (it could only fail).
    model_id_pattern: str = r"^[0-9a-f]{32}$"
    upload_name: str = "image"  # multipart filename stem; the extension follows the mime
    # Envelope [public]: {"code": 200, "msg", "data"}; any other code is an
    # error. The error codes themselves are undocumented: these follow HTTP
    # meanings, and the msg keywords below decide where codes are unknown.
    ok_code: int = 200
    auth_codes: tuple[int, ...] = (401, 403)
    quota_codes: tuple[int, ...] = (402,)
    rate_limited_codes: tuple[int, ...] = (429,)
    not_found_codes: tuple[int, ...] = (404,)
    quota_keywords: tuple[str, ...] = (
        "余额", "次数不足", "额度", "欠费", "充值", "quota", "balance", "insufficient",
    )
    # The 10,000/day limit, unless the message is about the per-second one
    # (which may quote the daily figure too).
    daily_limit_keywords: tuple[str, ...] = ("每日", "今日", "当日", "当天", "日限", "daily")
    # [public] the daily quota resets at midnight Beijing time.
    daily_reset_utc_offset_hours: float | None = 8
    rate_limited_keywords: tuple[str, ...] = (
        "频率", "频繁", "限流", "qps", "too many requests", "rate limit",
    )
    auth_keywords: tuple[str, ...] = (
        "apikey", "api key", "密钥", "key错误", "key无效", "key不存在", "未授权", "鉴权",
        "unauthorized", "invalid key",
    )
    rejection_keywords: tuple[str, ...] = (
        "敏感", "违规", "违禁", "违法", "涉黄", "色情", "审核", "不合规", "不安全",
        "sensitive", "violat", "nsfw", "porn", "prohibited", "inappropriate", "unsafe",
    )
    not_found_keywords: tuple[str, ...] = ("不存在", "not found", "not exist")
    unavailable_keywords: tuple[str, ...] = ("维护", "繁忙", "稍后", "maintenance", "busy")
    timeout_keywords: tuple[str, ...] = ("timeout", "超时")
    rate_limit_retry_after: float = 1.0  # [seed] 1 request per second
    # Query [public]: `state` is a string: "0" queued, "1" generated and the
    # images being fetched, "2" done (`images`), "3" failed (no error field).
    state_queued: str = "0"
    state_fetching: str = "1"
    state_done: str = "2"
    state_failed: str = "3"
    # [public] the vendor's client: ETA max((queue + 1) * 2, wait_for) seconds;
    # state "1" "预计需要5-10秒", looked at again every 5 s, and given up after
    # `do_use` passes 60 s.
    seconds_per_queued_task: float = 2.0
    fetching_progress: float = 0.95
    fetching_eta_seconds: float = 5.0
    fetching_timeout_seconds: float = 60.0
    # No duration is documented: SD 1.5 img2img of `number` images, queue aside.
    typical_seconds: float = 30.0
    # [seed] 1 request/second (free tier). The vendor counts arrivals and we
    # can only space departures, so the gap is a little over 1 / qps.
    pace_margin: float = 1.1


ASSUMED = Assumptions()

DAILY_REQUEST_LIMIT = 10_000  # [seed] free tier; paid plans have none


class Endpoint(StrEnum):
    SUBMIT = "/api/image2image"  # on AICHATAPI_BASE_URL
    QUERY = "/api/v1/draw/query"  # on AICHATAPI_QUERY_URL


def request_interval(qps: float, a: Assumptions = ASSUMED) -> float:
    """Seconds between two calls for ``qps`` requests a second."""
    return a.pace_margin / qps


# --------------------------------------------------------------------------- #
# Job ids: the vendor's numeric task_id behind a prefix, so a foreign id is
# refused before any (rate-limited) request.
# --------------------------------------------------------------------------- #

JOB_IDS = envelope.JobIds("task", "aichatapi")
make_job_id, split_job_id = JOB_IDS.make, JOB_IDS.split


def query_body(task_id: str) -> dict[str, Any]:
    """{"task_id": 382243}: a number in the seed, so digits go as a number."""
    return {"task_id": int(task_id) if task_id.isdigit() else task_id}


# --------------------------------------------------------------------------- #
# Pure transforms: the request
# --------------------------------------------------------------------------- #


def _ratio(text: str) -> float | None:
    left, sep, right = text.partition(":")
    try:
        width, height = float(left), float(right)
    except ValueError:
        return None
    if not sep or width <= 0 or height <= 0:
        return None
    return width / height


def nearest_size_id(width: float, height: float, a: Assumptions = ASSUMED) -> str:
    """The supported size id closest in shape (log-ratio distance)."""
    wanted = math.log(max(width, 1e-6) / max(height, 1e-6))

    def distance(size_id: str) -> float:
        ratio = _ratio(size_id) or 1.0
        return abs(math.log(ratio) - wanted)

    return min(a.size_ids, key=distance)


def size_id_for(
    params: GenerationParams, image_size: tuple[int, int] | None, a: Assumptions = ASSUMED
) -> str:
    """An explicit --size or --ar wins; otherwise keep the input photo's
    shape (as the engine measured it), so the result is not squashed."""
    if params.width and params.height:
        return nearest_size_id(params.width, params.height, a)
    if params.aspect_ratio != "1:1":
        if params.aspect_ratio in a.size_ids:
            return params.aspect_ratio
        ratio = _ratio(params.aspect_ratio) or 1.0
        return nearest_size_id(ratio, 1.0, a)
    if image_size is None:
        return "1:1"
    return nearest_size_id(*image_size, a)


def strength_percent(strength: float | None, a: Assumptions = ASSUMED) -> int:
    """0..1 (GenerationParams) → the vendor's percent; a value above 1 is
    taken as already a percent."""
    if strength is None:
        return a.default_strength_percent
    percent = strength * 100 if strength <= 1 else strength
    return max(1, min(100, int(round(percent))))


def build_params(
    params: GenerationParams, image_size: tuple[int, int] | None = None, a: Assumptions = ASSUMED
) -> dict[str, Any]:
    """The `params` object (sent as a JSON string), in the seed's field order."""
    model_id = params.model if params.model and re.match(a.model_id_pattern, params.model) else None
    return {
        "number": params.n,
        "hire": a.hire,
        "seed": -1 if params.seed is None else params.seed,
        "steps": params.steps or a.default_steps,
        "cfg_scale": plain_number(params.cfg if params.cfg is not None else a.default_cfg),
        "lora_scale": a.lora_scale,
        "denoising_strength": strength_percent(params.strength, a),
        "as_prompt": a.as_prompt,
        "prompt": params.prompt,
        "size_id": size_id_for(params, image_size, a),
        "model_id": model_id or a.default_model_id,
        "style_id": a.default_style_id,
        "simper": a.default_sampler,
        "negative_prompt": params.negative_prompt or a.default_negative_prompt,
    }


def params_field(params: Mapping[str, Any]) -> str:
    """The `params` part: a JSON *string*, UTF-8, not \\u escapes."""
    return json.dumps(params, ensure_ascii=False, separators=(",", ":"))


_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/jpg": "jpg",
               "image/webp": "webp", "image/gif": "gif", "image/bmp": "bmp"}


def upload_filename(mime: str, a: Assumptions = ASSUMED) -> str:
    return f"{a.upload_name}.{_EXTENSIONS.get(mime.lower(), 'png')}"


def build_multipart(
    params: GenerationParams, image: InputImage, a: Assumptions = ASSUMED
) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    """(data, files) for httpx: the `params` text part and the `image` file part."""
    data = {"params": params_field(build_params(params, (image.width, image.height), a))}
    files = {"image": (upload_filename(image.mime, a), image.data, image.mime or "image/png")}
    return data, files


# --------------------------------------------------------------------------- #
# Pure transforms: responses
# --------------------------------------------------------------------------- #


def parse_submit(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> str:
    """The vendor task_id of a submit answer."""
    task_id = text_of(envelope.checked_data(body, a).get("task_id"))
    if not task_id:
        raise MalformedResponse("submit answer has no task_id")
    return task_id


def query_data(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> dict[str, Any]:
    """`data` of a query answer; an unknown task is JobNotFound."""
    error = envelope.error_for_body(body, a)
    if error is not None:
        # Only a plain refusal can mean "no such task": "apikey不存在" is auth.
        code, message = code_of(body["code"]), envelope.body_message(body)
        unknown = code in a.not_found_codes or matches(message, a.not_found_keywords)
        if type(error) is BadRequest and unknown:
            raise JobNotFound(error.vendor_message)
        raise error
    if body.get("data") is None:
        raise JobNotFound("data is null")
    return envelope.checked_data(body, a)


def eta_seconds(data: Mapping[str, Any], a: Assumptions = ASSUMED) -> float | None:
    """[public] max((queue + 1) * 2, wait_for), as the vendor's client shows it."""
    queue, wait_for = whole_number(data.get("queue")), seconds_of(data.get("wait_for"))
    if queue is None and wait_for is None:
        return None
    return max((max(queue or 0, 0) + 1) * a.seconds_per_queued_task, wait_for or 0.0)


def fetching_state(data: Mapping[str, Any], a: Assumptions = ASSUMED) -> JobState:
    """State "1": generated, the images being fetched. Nearly done, unless
    it has been so for longer than the vendor's own client waits."""
    used = seconds_of(data.get("do_use"))
    if used is not None and used > a.fetching_timeout_seconds:
        return JobState(status=JobStatus.FAILED, error_kind=VendorTimeout.kind,
                        error_detail=f"still fetching the images after {used:g} s")
    return JobState(status=JobStatus.RUNNING, progress=a.fetching_progress,
                    eta_seconds=a.fetching_eta_seconds,
                    error_detail=text_of(data.get("state_name")))


def parse_query(data: Mapping[str, Any], a: Assumptions = ASSUMED) -> JobState:
    """Query `data` → JobState (states "0".."3", see ASSUMED)."""
    state = text_of(data.get("state"))
    name = text_of(data.get("state_name"))
    if state == a.state_queued:
        return JobState(status=JobStatus.QUEUED, queue_position=whole_number(data.get("queue")),
                        eta_seconds=eta_seconds(data, a), error_detail=name)
    if state == a.state_fetching:
        return fetching_state(data, a)
    if state == a.state_done:
        images = data.get("images")
        urls = distinct_urls(images if isinstance(images, list) else [])
        if urls:
            return JobState(status=JobStatus.SUCCEEDED, progress=1.0,
                            images=[ResultImage(url=url) for url in urls])
        return JobState(status=JobStatus.FAILED, error_kind=ProviderError.kind,
                        error_detail=name or "done without images")
    if state == a.state_failed:
        # No error field [public]; one is still read if it ever comes.
        detail = text_of(data.get("error")) or name or "failed"
        return JobState(status=JobStatus.FAILED, error_kind=envelope.failure_kind(detail, a),
                        error_detail=detail)
    log.warning("aichatapi: unknown task state %r, treated as running", state)
    return JobState(status=JobStatus.RUNNING, eta_seconds=eta_seconds(data, a), error_detail=name)


# --------------------------------------------------------------------------- #
# The provider
# --------------------------------------------------------------------------- #


class Aichatapi(HttpProvider):
    id: ClassVar[str] = "aichatapi"
    title: ClassVar[str] = "aichatapi (image to image)"
    # A variation is the same call: img2img of the given image with the prompt.
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.IMG2IMG, Capability.VARIATION}
    )
    needs_public_url: ClassVar[frozenset[Capability]] = frozenset()  # the photo is uploaded
    supports_callbacks: ClassVar[bool] = False
    typical_seconds = ASSUMED.typical_seconds
    max_images: ClassVar[int] = 4
    min_request_interval: ClassVar[float] = request_interval(1.0)  # the instance's follows qps
    daily_request_limit: ClassVar[int] = DAILY_REQUEST_LIMIT
    image_input = "bytes"
    credentials = Credentials.one("aichatapi_api_key")
    base_url_setting = "aichatapi_base_url"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        secrets: Mapping[str, str],
        base_url: str,
        query_url: str,
        qps: float = 1.0,
        timeout: httpx.Timeout | None = None,
        assumptions: Assumptions = ASSUMED,
    ) -> None:
        super().__init__(client, secrets=secrets, base_url=base_url, timeout=timeout)
        self.query_url = query_url.rstrip("/")
        self.assumed = assumptions
        self.min_request_interval = request_interval(qps, assumptions)  # read by VendorGate

    @classmethod
    def options_from(cls, settings: Any) -> dict[str, Any]:
        return {"query_url": settings.aichatapi_query_url, "qps": settings.aichatapi_qps}

    def make_auth(self, secrets: Mapping[str, str]) -> httpx.Auth:
        # The `apikey` header [seed]; never the seed's `?key=` query
        # parameter: URLs end up in logs and exception messages.
        return HeaderAuth({"apikey": secrets["aichatapi_api_key"]})

    def error_for_status(self, response: httpx.Response, endpoint: str) -> ProviderError | None:
        return envelope.error_for_status(response, self.assumed)

    # ---- submit / poll ---------------------------------------------------

    async def submit(self, spec: JobSpec) -> Submitted:
        data, files = self.request_for(spec)
        task_id = await self.call(
            Endpoint.SUBMIT, lambda body: parse_submit(body, self.assumed), data=data, files=files
        )
        return Submitted(job_id=make_job_id(task_id), eta_seconds=self.assumed.typical_seconds)

    def request_for(
        self, spec: JobSpec
    ) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
        """The multipart (data, files); BadRequest before any HTTP when the
        spec cannot be served."""
        if spec.capability not in self.capabilities:
            raise BadRequest(f"aichatapi cannot do {spec.capability}")
        return build_multipart(spec.params, input_image(spec, 0), self.assumed)

    async def poll(self, job_id: str) -> JobState:
        task_id = split_job_id(job_id)
        return await self.call(
            Endpoint.QUERY,
            lambda body: parse_query(query_data(body, self.assumed), self.assumed),
            base_url=self.query_url,
            payload=query_body(task_id),
        )
