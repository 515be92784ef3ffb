"""aichatapi (aichatapi.com): Stable-Diffusion image-to-image sold on a PHP
API marketplace (seeds/000_…).

Layout, top to bottom:
  ASSUMED            every guess about the vendor, in one place (VENDORS.md [assume])
  job ids            "task:<vendor task_id>"
  pure transforms    params → multipart parts, response body → JobState / exception
  AichatapiAuth      the httpx.Auth: the `apikey` header
  Aichatapi          the Provider: HTTP calls only, errors mapped at the boundary

The vendor is asynchronous and polled: submit uploads the photo and returns a
task_id, the query endpoint (on another host) reports state 0..3. There are no
callbacks. Free accounts may send one request per second (submits and queries
together) and 10,000 a day [seed]; the engine's VendorGate paces calls by
``min_request_interval``.
"""

from __future__ import annotations

import functools

import io
import json
import logging
import math
import re
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
from providers import code_envelope as envelope
from providers.secrets import redact, secret_value

log = logging.getLogger(__name__)
T = TypeVar("T")


# --------------------------------------------------------------------------- #
# ASSUMED — what the vendor document does not say. Correct a guess here, with
# the real response saved as a fixture under tests/fixtures/aichatapi/.
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Assumptions:
    # [seed] defaults: the seed's `params` example (fixtures/aichatapi/params_example.json).
    default_model_id: str = "b49012a9071407209652d332517a182e"
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
    # Envelope [public, inferred]: {"code": 200, "msg", "data"}; any other code
    # is an error. The error codes themselves are undocumented: these follow
    # HTTP meanings, and the msg keywords below decide where codes are unknown.
    ok_code: int = 200
    auth_codes: tuple[int, ...] = (401, 403)
    quota_codes: tuple[int, ...] = (402,)
    rate_limited_codes: tuple[int, ...] = (429,)
    not_found_codes: tuple[int, ...] = (404,)
    # Out of credit, whatever else the message says.
    balance_keywords: tuple[str, ...] = (
        "余额", "次数不足", "额度", "欠费", "充值", "quota", "balance", "insufficient",
    )
    # The 10,000/day limit, unless the message is about the per-second one
    # (which may quote the daily figure too).
    daily_limit_keywords: tuple[str, ...] = ("每日", "今日", "当日", "当天", "日限", "daily")
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
    rate_limit_retry_after: float = 1.0  # [seed] 1 request per second
    # Query [public, inferred]: state "0" queued, "1" generating, "2" done,
    # "3" failed. `wait_for` is taken as the seconds still to wait.
    state_queued: str = "0"
    state_running: str = "1"
    state_done: str = "2"
    state_failed: str = "3"
    # No duration is documented: SD 1.5 img2img of `number` images, queue aside.
    typical_seconds: float = 30.0
    typical_run_seconds: float = 30.0  # scale for the progress estimate from wait_for


ASSUMED = Assumptions()

DAILY_REQUEST_LIMIT = 10_000  # [seed] free tier; paid plans have none


class Endpoint(StrEnum):
    SUBMIT = "/api/image2image"  # on AICHATAPI_BASE_URL
    QUERY = "/api/v1/draw/query"  # on AICHATAPI_QUERY_URL


# --------------------------------------------------------------------------- #
# Job ids: the vendor's numeric task_id behind a prefix, so a foreign id is
# refused before any (rate-limited) request.
# --------------------------------------------------------------------------- #

JOB_PREFIX = "task"


def make_job_id(task_id: Any) -> str:
    return f"{JOB_PREFIX}:{task_id}"


def split_job_id(job_id: str) -> str:
    prefix, sep, task_id = job_id.partition(":")
    if prefix != JOB_PREFIX or not sep or not task_id.strip():
        raise JobNotFound("not an aichatapi job id")
    return task_id


def query_body(task_id: str) -> dict[str, Any]:
    """{"task_id": 382243}: a number in the seed, so digits go as a number."""
    return {"task_id": int(task_id) if task_id.isdigit() else task_id}


# --------------------------------------------------------------------------- #
# Pure transforms: the request
# --------------------------------------------------------------------------- #


def image_dimensions(data: bytes | None) -> tuple[int, int] | None:
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


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


def size_id_for(params: GenerationParams, image: bytes | None, a: Assumptions = ASSUMED) -> str:
    """An explicit --size or --ar wins; otherwise keep the input photo's
    shape, so the result is not squashed into a square."""
    if params.width and params.height:
        return nearest_size_id(params.width, params.height, a)
    if params.aspect_ratio != "1:1":
        if params.aspect_ratio in a.size_ids:
            return params.aspect_ratio
        ratio = _ratio(params.aspect_ratio) or 1.0
        return nearest_size_id(ratio, 1.0, a)
    dims = image_dimensions(image)
    if dims is None:
        return "1:1"
    return nearest_size_id(*dims, a)


def strength_percent(strength: float | None, a: Assumptions = ASSUMED) -> int:
    """0..1 (GenerationParams) → the vendor's percent; a value above 1 is
    taken as already a percent."""
    if strength is None:
        return a.default_strength_percent
    percent = strength * 100 if strength <= 1 else strength
    return max(1, min(100, int(round(percent))))


def build_params(
    params: GenerationParams, image: bytes | None = None, a: Assumptions = ASSUMED
) -> dict[str, Any]:
    """The `params` object (sent as a JSON string), in the seed's field order."""
    model_id = params.model if params.model and re.match(a.model_id_pattern, params.model) else None
    return {
        "number": params.n,
        "hire": a.hire,
        "seed": -1 if params.seed is None else params.seed,
        "steps": params.steps or a.default_steps,
        "cfg_scale": envelope.plain_number(params.cfg if params.cfg is not None else a.default_cfg),
        "lora_scale": a.lora_scale,
        "denoising_strength": strength_percent(params.strength, a),
        "as_prompt": a.as_prompt,
        "prompt": params.prompt,
        "size_id": size_id_for(params, image, a),
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
    params: GenerationParams, image: bytes, mime: str, a: Assumptions = ASSUMED
) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    """(data, files) for httpx: the `params` text part and the `image` file part."""
    data = {"params": params_field(build_params(params, image, a))}
    files = {"image": (upload_filename(mime, a), image, mime or "image/png")}
    return data, files


# --------------------------------------------------------------------------- #
# Pure transforms: responses and errors
# --------------------------------------------------------------------------- #


def classify(
    code: int | None, message: str, a: Assumptions = ASSUMED, *, retry_after: float | None = None
) -> ProviderError:
    """A vendor code (body or HTTP) and message → the common error kind."""
    detail = f"code {code}: {message}" if message else f"code {code}"
    per_second = envelope.matches(message, a.rate_limited_keywords)
    if code in a.quota_codes or envelope.matches(message, a.balance_keywords):
        return QuotaExceeded(detail)
    if envelope.matches(message, a.daily_limit_keywords) and not per_second:
        return QuotaExceeded(detail)
    if code in a.rate_limited_codes or per_second:
        return RateLimited(detail, retry_after=retry_after or a.rate_limit_retry_after)
    if code in a.auth_codes or envelope.matches(message, a.auth_keywords):
        return AuthError(detail)
    if envelope.matches(message, a.rejection_keywords):
        return ContentRejected(detail)
    if (code is not None and code >= 500) or envelope.matches(message, a.unavailable_keywords):
        return Unavailable(detail, retry_after=retry_after)
    return BadRequest(detail)


def error_for_body(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> ProviderError | None:
    """The error an HTTP-200 body carries, or None."""
    return envelope.error_for_body(body, a.ok_code, functools.partial(classify, a=a))


def checked_data(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> dict[str, Any]:
    return envelope.checked_data(body, a.ok_code, functools.partial(classify, a=a))


def parse_submit(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> str:
    """The vendor task_id of a submit answer."""
    task_id = checked_data(body, a).get("task_id")
    if task_id is None or str(task_id).strip() == "":
        raise MalformedResponse("submit answer has no task_id")
    return str(task_id).strip()


def query_data(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> dict[str, Any]:
    """`data` of a query answer; an unknown task is JobNotFound."""
    error = error_for_body(body, a)
    if error is not None:
        # Only a plain refusal can mean "no such task": "apikey不存在" is auth.
        code, message = envelope.code_of(body["code"]), envelope.body_message(body)
        unknown = code in a.not_found_codes or envelope.matches(message, a.not_found_keywords)
        if type(error) is BadRequest and unknown:
            raise JobNotFound(error.vendor_message)
        raise error
    data = body.get("data")
    if data is None:
        raise JobNotFound("data is null")
    if not isinstance(data, dict):
        raise MalformedResponse("data is not an object")
    return data


def error_for_http(
    status: int, headers: Mapping[str, str], body: Mapping[str, Any] | None, a: Assumptions = ASSUMED
) -> ProviderError | None:
    return envelope.error_for_http(status, headers, body, a.ok_code, functools.partial(classify, a=a))


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def estimate_progress(wait_for: float | None, a: Assumptions = ASSUMED) -> float | None:
    """No progress field: the share of the typical run already behind us,
    judged by the seconds still to wait. Below 1 until the vendor says done."""
    if wait_for is None:
        return None
    total = max(a.typical_run_seconds, wait_for)
    return min(0.99, max(0.0, 1.0 - wait_for / total))


def failure_kind(message: str, a: Assumptions = ASSUMED) -> str:
    return ContentRejected.kind if envelope.matches(message, a.rejection_keywords) else ProviderError.kind


def _result_urls(images: Any) -> list[str]:
    """`images`: URLs, or objects with a `url` (tolerated)."""
    if not isinstance(images, list):
        return []
    urls = []
    for item in images:
        url = item.get("url") if isinstance(item, dict) else item
        if isinstance(url, str) and url.strip() and url.strip() not in urls:
            urls.append(url.strip())
    return urls


def parse_query(data: Mapping[str, Any], a: Assumptions = ASSUMED) -> JobState:
    """Query `data` → JobState (states "0".."3", see ASSUMED)."""
    state = "" if data.get("state") is None else str(data["state"]).strip()
    name = str(data.get("state_name") or "")
    wait_for = _seconds(data.get("wait_for"))
    if state == a.state_queued:
        return JobState(
            status=JobStatus.QUEUED,
            queue_position=envelope.whole_number(data.get("queue")),
            eta_seconds=wait_for,
            error_detail=name,
        )
    if state == a.state_done:
        urls = _result_urls(data.get("images"))
        if urls:
            return JobState(
                status=JobStatus.SUCCEEDED,
                progress=1.0,
                images=[ResultImage(url=url) for url in urls],
            )
        return JobState(
            status=JobStatus.FAILED,
            error_kind=ProviderError.kind,
            error_detail=name or "done without images",
        )
    if state == a.state_failed:
        detail = str(data.get("error") or name or "failed")
        return JobState(status=JobStatus.FAILED, error_kind=failure_kind(detail, a),
                        error_detail=detail)
    if state != a.state_running:
        log.warning("aichatapi: unknown task state %r, treated as running", state)
    return JobState(
        status=JobStatus.RUNNING,
        progress=estimate_progress(wait_for, a),
        eta_seconds=wait_for,
        error_detail=name,
    )


# --------------------------------------------------------------------------- #
# Auth
# --------------------------------------------------------------------------- #


class AichatapiAuth(httpx.Auth):
    """The `apikey` header [seed]. Never the seed's `?key=` query parameter:
    URLs end up in logs and exception messages."""

    def __init__(self, api_key: str) -> None:
        if not api_key:
            raise ValueError("aichatapi needs an API key")
        self._key = api_key

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self._key,)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["apikey"] = self._key
        yield request

    def __repr__(self) -> str:  # never show the key
        return "AichatapiAuth(apikey)"


# --------------------------------------------------------------------------- #
# The provider
# --------------------------------------------------------------------------- #


class Aichatapi(Provider):
    id: ClassVar[str] = "aichatapi"
    title: ClassVar[str] = "aichatapi (image to image)"
    # A variation is the same call: img2img of the given image with the prompt.
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.IMG2IMG, Capability.VARIATION}
    )
    needs_public_url: ClassVar[frozenset[Capability]] = frozenset()  # the photo is uploaded
    supports_callbacks: ClassVar[bool] = False
    typical_seconds: ClassVar[float] = ASSUMED.typical_seconds
    max_images: ClassVar[int] = 4
    # [seed] 1 request/second, submits and queries; a little over 1 s because
    # the vendor counts arrivals and we can only space departures.
    min_request_interval: ClassVar[float] = 1.1
    daily_request_limit: ClassVar[int] = DAILY_REQUEST_LIMIT
    image_input = "bytes"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        auth: AichatapiAuth,
        base_url: str,
        query_url: str,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        assumptions: Assumptions = ASSUMED,
    ) -> None:
        super().__init__(client, base_url)
        self.auth = auth
        self.query_url = query_url.rstrip("/")
        self.timeout = timeout
        self.assumed = assumptions

    @classmethod
    def from_settings(cls, settings: Any, client: httpx.AsyncClient) -> Aichatapi | None:
        key = secret_value(getattr(settings, "aichatapi_api_key", None))
        if key is None:
            return None
        return cls(
            client,
            auth=AichatapiAuth(key),
            base_url=settings.aichatapi_base_url,
            query_url=settings.aichatapi_query_url,
        )

    # ---- submit ----------------------------------------------------------

    async def submit(self, spec: JobSpec) -> Submitted:
        data, files = self.request_for(spec)
        task_id = await self._call(
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
        if not spec.images:
            raise BadRequest(f"{spec.capability} needs an input image (aichatapi uploads bytes)")
        image = spec.images[0]
        if image_dimensions(image.data) is None:
            raise BadRequest("the input is not an image Pillow can open")
        return build_multipart(spec.params, image.data, image.mime, self.assumed)

    # ---- poll ------------------------------------------------------------

    async def poll(self, job_id: str) -> JobState:
        task_id = split_job_id(job_id)
        return await self._call(
            Endpoint.QUERY,
            lambda body: parse_query(query_data(body, self.assumed), self.assumed),
            json=query_body(task_id),
        )

    # ---- HTTP boundary ---------------------------------------------------

    def _url(self, endpoint: Endpoint) -> str:
        root = self.base_url if endpoint is Endpoint.SUBMIT else self.query_url
        return f"{root}{endpoint.value}"

    async def _call(
        self, endpoint: Endpoint, read: Callable[[dict[str, Any]], T], **request: Any
    ) -> T:
        """POST one endpoint (``request``: httpx's json= or data=/files=) and
        ``read`` the JSON body. Every failure leaves as a ProviderError naming
        the endpoint, never the URL or the key, and is logged with the
        vendor's words."""
        try:
            with map_transport_errors():
                response = await self.client.post(
                    self._url(endpoint),
                    headers={"Accept": "application/json"},
                    auth=self.auth,
                    timeout=self.timeout,
                    **request,
                )
            if response.status_code >= 400:
                raise _http_error(response, self.assumed)
            return read(json_body(response))
        except ProviderError as exc:
            raise self._logged(endpoint, exc) from None

    def _logged(self, endpoint: Endpoint, exc: ProviderError) -> ProviderError:
        message = redact(exc.vendor_message, self.auth.secrets)
        level = logging.WARNING if exc.transient or exc.disables_vendor else logging.INFO
        log.log(level, "aichatapi %s: %s (%s)", endpoint.name.lower(), message, exc.kind)
        return type(exc)(message, retry_after=exc.retry_after)


def _http_error(response: httpx.Response, a: Assumptions) -> ProviderError:
    return envelope.http_error(response, a.ok_code, functools.partial(classify, a=a))
