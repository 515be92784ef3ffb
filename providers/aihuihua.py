"""aihuihua (AI绘画, api.aihuihua.com): Flux text/image to image, Midjourney
imagine with its U/V buttons, face swap, upscale, background removal and
describe. Every job is a vendor task: submit → task id → query (single or a
batch of 20) or the task POSTed to our notifyHook when it finishes.

Layout, top to bottom:
  ASSUMED            every guess about the vendor, in one place
  seed facts         endpoints, codes, limits
  job ids            "aihuihua:<task id>"
  pure transforms    spec → (endpoint, JSON body); task object → JobState; codes → exceptions
  Aihuihua           the Provider: one HTTP boundary (``_call``), errors mapped there

Job ids carry nothing but the task id: the callback body is the bare task
object, and the bot matches it to the job id it stored, so everything else
(Midjourney or not, grid or not, describe) is read from the task itself.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

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
    SourceResult,
    Submitted,
)
from providers.secrets import redact, secret_value

log = logging.getLogger(__name__)
T = TypeVar("T")


# --------------------------------------------------------------------------- #
# ASSUMED — what the vendor documents do not say (VENDORS.md [assume], or
# midjourney-proxy conventions the vendor appears to follow). Correct a guess
# here, with the real response saved under tests/fixtures/aihuihua/.
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Assumptions:
    # params.model starting with one of these selects Midjourney imagine;
    # anything else (or no model) is Flux text2Image. (Our choice.)
    mj_model_prefixes: tuple[str, ...] = ("mj", "midjourney")
    mj_mode: str | None = None  # "FAST" is optional [public]; None = vendor default
    # The task `action` names the family, midjourney-proxy style: these are
    # Midjourney tasks (actions go to /mdj/action); anything else is a
    # non-MJ task (Flux, tools: /image/action).
    mj_actions: frozenset[str] = frozenset(
        {"IMAGINE", "UPSCALE", "VARIATION", "REROLL", "DESCRIBE", "BLEND",
         "ZOOM", "PAN", "INPAINT", "OUTPAINT", "CUSTOM_ZOOM", "SHORTEN", "MODAL"}
    )
    # Actions whose image is a 2x2 grid. A task offering U2–U4 buttons is a
    # grid too, whatever its action (that is how Flux 4-in-1 grids show).
    grid_actions: frozenset[str] = frozenset({"IMAGINE", "VARIATION", "REROLL", "BLEND"})
    describe_actions: frozenset[str] = frozenset({"DESCRIBE"})
    # Where a finished describe task keeps its text (midjourney-proxy keeps
    # it in prompt / promptEn / properties.finalPrompt; imageUrl is the input).
    describe_text_keys: tuple[str, ...] = ("properties.finalPrompt", "promptEn", "prompt")
    # Task statuses (midjourney-proxy TaskStatus).
    queued_statuses: frozenset[str] = frozenset({"NOT_START", "SUBMITTED"})
    running_statuses: frozenset[str] = frozenset({"IN_PROGRESS", "MODAL"})
    cancelled_statuses: frozenset[str] = frozenset({"CANCEL", "CANCELLED"})
    # Body codes beyond the seed's 1/22/23/24 (midjourney-proxy ReturnCode):
    # 3 not found, 4 validation error, 9 system error, 21 already exists
    # (accepted; `result` is the task id).
    accepted_codes: frozenset[int] = frozenset({1, 21, 22})
    not_found_code: int = 3
    validation_code: int = 4
    system_error_code: int = 9
    # The family guess from `action` may be wrong for a vendor we have not
    # seen answer: when one action endpoint refuses a task with one of these
    # codes, the other one is tried once (nothing was created by the refusal).
    action_fallback_codes: frozenset[int] = frozenset({3, 4})
    queue_full_retry_after: float = 30.0  # code 23 names no delay
    # The vendor's words that turn a code or failReason into our kind.
    quota_words: tuple[str, ...] = (
        "余额", "积分", "额度", "点数不足", "insufficient", "balance", "quota", "credit",
    )
    auth_words: tuple[str, ...] = (
        "密钥", "令牌", "鉴权", "未授权", "unauthorized", "invalid key", "api key", "apikey",
    )
    rejection_words: tuple[str, ...] = (
        "敏感", "违规", "违禁", "审核", "色情", "banned", "sensitive", "nsfw", "prohibited",
        "moderat", "violat",
    )
    # Unknown single task: code 3 or a null result (and HTTP 404).
    # The callback is the bare task object [assume]; an envelope
    # {"code", "result": task} is accepted as well.
    default_range: float = 0.7  # [seed] image2Image similarity default
    upscale_factor: int = 2  # size 2 | 4 [public]; ×2 keeps more inputs under 4096
    # Typical durations, for the first poll.
    mj_seconds: float = 50.0
    flux_seconds: float = 25.0
    tool_seconds: float = 15.0


ASSUMED = Assumptions()


# --------------------------------------------------------------------------- #
# Seed / public facts
# --------------------------------------------------------------------------- #


class Endpoint(StrEnum):
    FLUX_TEXT2IMAGE = "/api/v2/flux/text2Image"
    FLUX_IMAGE2IMAGE = "/api/v2/flux/image2Image"  # [seed]
    MJ_IMAGINE = "/api/v2/mdj/imagine"
    MJ_ACTION = "/api/v2/mdj/action"
    IMAGE_ACTION = "/api/v2/image/action"  # [seed] for Flux results ("如果进一步处理…")
    FACE_SWAP = "/api/v2/face/swap"
    UPSCALE = "/api/v2/image/upScale"
    REMOVE_BG = "/api/v2/image/removeBg"
    DESCRIBE = "/api/v2/mdj/describe"
    TASK = "/api/v2/task/id/"  # + task id, GET [public]
    TASK_LIST = "/api/v2/task/list/"  # POST {"ids": [...]} [public]


BATCH_LIMIT = 20  # [public] "同时查询最多20个任务"
MAX_CONCURRENT_TASKS = 5  # [public] per account
RESULT_TTL_SECONDS = 10 * 24 * 3600  # [public] results kept 10 days
RANGE_LIMITS = (0.1, 1.0)  # [seed] image2Image `range`
UPSCALE_MAX_SIDE = 4096  # [public] long side of an upscale result
QUEUED_CODE = 22  # [seed] accepted, waiting
QUEUE_FULL_CODE = 23  # [seed] try later
SENSITIVE_CODE = 24  # [seed] prompt has sensitive words
SUCCESS_STATUS = "SUCCESS"
FAILURE_STATUS = "FAILURE"


# --------------------------------------------------------------------------- #
# Job ids
# --------------------------------------------------------------------------- #

JOB_PREFIX = "aihuihua:"


def make_job_id(task_id: str) -> str:
    return f"{JOB_PREFIX}{task_id}"


def split_job_id(job_id: str) -> str:
    """The vendor task id of one of our job ids; JobNotFound for anything else."""
    if not job_id.startswith(JOB_PREFIX) or not job_id[len(JOB_PREFIX):].strip():
        raise JobNotFound("not an aihuihua job id")
    return job_id[len(JOB_PREFIX):]


# --------------------------------------------------------------------------- #
# Pure transforms: requests
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class TaskRequest:
    endpoint: Endpoint
    body: dict[str, Any]
    eta_seconds: float
    alternate: Endpoint | None = None  # the other action endpoint (see ASSUMED)


def wants_midjourney(params: GenerationParams, a: Assumptions = ASSUMED) -> bool:
    model = (params.model or "").strip().lower()
    return model.startswith(a.mj_model_prefixes)


def ratio_flag(params: GenerationParams) -> str:
    """" --ar W:H" for a non-square request (an explicit size reduced to its
    ratio), empty for 1:1."""
    if params.width and params.height:
        divisor = math.gcd(params.width, params.height)
        w, h = params.width // divisor, params.height // divisor
    else:
        w, h = (int(part) for part in params.aspect_ratio.split(":"))
    return "" if w == h else f" --ar {w}:{h}"


def _has_flag(prompt: str, flag: str) -> bool:
    return f"{flag} " in f"{prompt} "


def flux_prompt(params: GenerationParams) -> str:
    """Flux takes the aspect ratio inside the prompt [public]."""
    prompt = params.prompt.strip()
    if not prompt:
        raise BadRequest("prompt is empty")
    return prompt if _has_flag(prompt, "--ar") else prompt + ratio_flag(params)


def mj_prompt(params: GenerationParams) -> str:
    """Midjourney flags from our params: --ar, --no, --seed."""
    prompt = flux_prompt(params)
    if params.negative_prompt.strip() and not _has_flag(prompt, "--no"):
        prompt += f" --no {params.negative_prompt.strip()}"
    if params.seed is not None and params.seed >= 0 and not _has_flag(prompt, "--seed"):
        prompt += f" --seed {params.seed}"
    return prompt


def similarity(strength: float | None, a: Assumptions = ASSUMED) -> float:
    """Our strength (how much to change) → the vendor's `range` (how similar
    to stay): 1 - strength, within [0.1, 1]."""
    if strength is None:
        return a.default_range
    low, high = RANGE_LIMITS
    return round(min(high, max(low, 1.0 - strength)), 2)


def image_dimensions(data: bytes | None) -> tuple[int, int] | None:
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def input_url(spec: JobSpec, index: int) -> str:
    if len(spec.images) <= index:
        raise BadRequest(f"{spec.capability} needs {index + 1} input image(s)")
    url = spec.images[index].url
    if not url:
        raise BadRequest("aihuihua fetches input images by URL; PUBLIC_BASE_URL is not set")
    return url


def upscale_request(image_url: str, dims: tuple[int, int] | None, a: Assumptions) -> TaskRequest:
    factor = a.upscale_factor
    if dims and max(dims) * factor > UPSCALE_MAX_SIDE:
        raise BadRequest(
            f"{dims[0]}x{dims[1]} ×{factor} exceeds the {UPSCALE_MAX_SIDE} px upscale limit"
        )
    return TaskRequest(Endpoint.UPSCALE, {"imgUrl": image_url, "size": factor}, a.tool_seconds)


# ---- actions on our own earlier results ---------------------------------------

VERBS = {Capability.UPSCALE: "upsample", Capability.VARIATION: "variation"}
# A single image's "Vary" buttons, strongest first (Midjourney's Vary (Strong/Subtle)).
SINGLE_VARY_VERBS = ("variation", "high_variation", "low_variation")


def find_button(buttons: Iterable[Any], verbs: Sequence[str], number: int) -> str | None:
    """The customId of the first button ``…::<verb>::<number>::…``, trying the
    verbs in order ("::upsample::1::" never matches "::upsample_v6_2x::1::")."""
    custom_ids = [
        str(button.get("customId") or "") for button in buttons if isinstance(button, Mapping)
    ]
    for verb in verbs:
        needle = f"::{verb}::{number}::"
        for custom_id in custom_ids:
            if needle in f"{custom_id}::":
                return custom_id
    return None


def source_task_id(source: SourceResult) -> str:
    if source.provider != "aihuihua":
        raise BadRequest(f"not an aihuihua result (from {source.provider})")
    try:
        return split_job_id(source.job_id)
    except JobNotFound:
        raise BadRequest("the source names no aihuihua task") from None


def action_request(
    source: SourceResult, capability: Capability, a: Assumptions = ASSUMED
) -> TaskRequest:
    """{taskId, customId} for U<n>/V<n> on an earlier aihuihua result; a
    single image is upscaled by URL (it has no U buttons)."""
    data = source.vendor_data
    task_id = source_task_id(source)
    buttons = data.get("buttons") or []
    grid = data.get("grid")
    if grid is None:  # stored before "grid" was recorded: judge by the task itself
        grid = is_grid_task(_text(data.get("action")), buttons, a)
    if not 0 <= source.index <= 3 or (not grid and source.index != 0):
        raise BadRequest(f"image {source.index + 1} is not in the source result")
    number = source.index + 1
    verb = VERBS.get(capability)
    if verb is None:
        raise BadRequest(f"aihuihua has no {capability} action")
    verbs = (verb,) if grid or capability is not Capability.VARIATION else SINGLE_VARY_VERBS
    custom_id = find_button(buttons, verbs, number)
    if custom_id is None and capability is Capability.UPSCALE and not grid:
        image_url = data.get("image_url")
        if isinstance(image_url, str) and image_url:
            return upscale_request(image_url, None, a)
    if custom_id is None:
        label = "U" if capability is Capability.UPSCALE else "V"
        raise BadRequest(f"the source result has no {label}{number} button")
    mj = data.get("mj")
    if mj is None:
        mj = is_mj_action(data.get("action"), a)
    primary, other = Endpoint.MJ_ACTION, Endpoint.IMAGE_ACTION
    if not mj:
        primary, other = other, primary
    eta = a.mj_seconds if mj else a.flux_seconds
    if capability is Capability.UPSCALE:
        eta = a.tool_seconds
    return TaskRequest(primary, {"taskId": task_id, "customId": custom_id}, eta, alternate=other)


def build_request(spec: JobSpec, a: Assumptions = ASSUMED) -> TaskRequest:
    """(endpoint, body) for a spec, notifyHook included; BadRequest before any
    HTTP when the spec cannot be served."""
    request = _request_without_hook(spec, a)
    if spec.callback_url:
        request.body["notifyHook"] = spec.callback_url
    return request


def _request_without_hook(spec: JobSpec, a: Assumptions) -> TaskRequest:
    params = spec.params
    match spec.capability:
        case Capability.TXT2IMG if wants_midjourney(params, a):
            body: dict[str, Any] = {"prompt": mj_prompt(params)}
            if a.mj_mode:
                body["mode"] = a.mj_mode
            return TaskRequest(Endpoint.MJ_IMAGINE, body, a.mj_seconds)
        case Capability.TXT2IMG:
            body = {"prompt": flux_prompt(params)}
            return TaskRequest(Endpoint.FLUX_TEXT2IMAGE, body, a.flux_seconds)
        case Capability.IMG2IMG:
            if not params.prompt.strip():
                raise BadRequest("image2Image needs a prompt")  # [seed] prompt 必需
            body = {
                "prompt": params.prompt.strip(),
                "imgUrl": input_url(spec, 0),
                "range": similarity(params.strength, a),
            }
            return TaskRequest(Endpoint.FLUX_IMAGE2IMAGE, body, a.flux_seconds)
        case Capability.VARIATION | Capability.UPSCALE if spec.source is not None:
            return action_request(spec.source, spec.capability, a)
        case Capability.VARIATION:
            raise BadRequest("aihuihua makes variations of its own results only")
        case Capability.UPSCALE:
            url = input_url(spec, 0)
            return upscale_request(url, image_dimensions(spec.images[0].data), a)
        case Capability.FACESWAP:
            body = {"fromImgUrl": input_url(spec, 0), "toImgUrl": input_url(spec, 1)}
            return TaskRequest(Endpoint.FACE_SWAP, body, a.tool_seconds)
        case Capability.REMOVE_BG:
            return TaskRequest(Endpoint.REMOVE_BG, {"imgUrl": input_url(spec, 0)}, a.tool_seconds)
        case Capability.DESCRIBE:
            return TaskRequest(Endpoint.DESCRIBE, {"imgUrl": [input_url(spec, 0)]}, a.tool_seconds)
    raise BadRequest(f"aihuihua cannot do {spec.capability}")


# --------------------------------------------------------------------------- #
# Pure transforms: answers, codes and tasks
# --------------------------------------------------------------------------- #


def _mentions(text: str, words: Iterable[str]) -> bool:
    lowered = text.lower()
    return any(word.lower() in lowered for word in words)


def body_code(body: Mapping[str, Any]) -> int:
    try:
        return int(str(body["code"]).strip())
    except (KeyError, ValueError):
        raise MalformedResponse("body has no numeric code") from None


def error_for_code(code: int, description: str, a: Assumptions = ASSUMED) -> ProviderError:
    detail = f"code {code}: {description}" if description else f"code {code}"
    if code == QUEUE_FULL_CODE:  # the account's 5 concurrent tasks are busy
        return RateLimited(detail, retry_after=a.queue_full_retry_after)
    if code == SENSITIVE_CODE:
        return ContentRejected(detail)
    if code == a.not_found_code:
        return JobNotFound(detail)
    if _mentions(description, a.quota_words):
        return QuotaExceeded(detail)
    if _mentions(description, a.auth_words):
        return AuthError(detail)
    if _mentions(description, a.rejection_words):
        return ContentRejected(detail)
    if code == a.validation_code:
        return BadRequest(detail)
    if code == a.system_error_code:
        return Unavailable(detail)
    return ProviderError(detail)


def error_for_http_status(
    status: int, headers: Mapping[str, str], *, task_query: bool = False
) -> ProviderError | None:
    if status < 400:
        return None
    detail = f"HTTP {status}"
    retry_after = parse_retry_after(headers.get("retry-after"))
    if status in (401, 403):
        return AuthError(detail)
    if status == 402:
        return QuotaExceeded(detail)
    if status == 429:
        return RateLimited(detail, retry_after=retry_after)
    if status == 404 and task_query:
        return JobNotFound(detail)
    if status >= 500 or status in (404, 405):  # down, or a wrong base URL
        return Unavailable(detail, retry_after=retry_after)
    return BadRequest(detail)


@dataclass(frozen=True)
class SubmitAnswer:
    code: int
    description: str
    task_id: str


def parse_submit_answer(body: Mapping[str, Any]) -> SubmitAnswer:
    """`{"code", "description", "result": task id}` [seed]; the id may be a
    number (midjourney-proxy sends one)."""
    result = body.get("result")
    usable = isinstance(result, str | int) and not isinstance(result, bool)
    task_id = str(result).strip() if usable else ""
    return SubmitAnswer(body_code(body), str(body.get("description") or ""), task_id)


def accepted_task_id(answer: SubmitAnswer, a: Assumptions = ASSUMED) -> str:
    """Codes 1 and 22 (queued) [seed], and 21 (exists) accept the task."""
    if answer.code not in a.accepted_codes:
        raise error_for_code(answer.code, answer.description, a)
    if not answer.task_id:
        raise MalformedResponse(f"code {answer.code} without a task id")
    return answer.task_id


def query_task(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> Mapping[str, Any]:
    """The task of a single query `{"code": 1, "result": task}`."""
    code = body_code(body)
    if code != 1:
        raise error_for_code(code, str(body.get("description") or ""), a)
    task = body.get("result")
    if task is None:
        raise JobNotFound("result is null")
    if not isinstance(task, Mapping):
        raise MalformedResponse("result is not a task object")
    return task


def query_tasks(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> list[Mapping[str, Any]]:
    """The tasks of a batch query `{"code": 1, "result": [task, ...]}`."""
    code = body_code(body)
    if code != 1:
        raise error_for_code(code, str(body.get("description") or ""), a)
    tasks = body.get("result") or []
    if not isinstance(tasks, list):
        raise MalformedResponse("result is not a list")
    return [task for task in tasks if isinstance(task, Mapping)]


def parse_progress(value: Any) -> float | None:
    """"45%" (an estimate [public]) → 0.45."""
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


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def is_mj_action(action: Any, a: Assumptions = ASSUMED) -> bool:
    return _text(action).upper() in a.mj_actions


def normalized_buttons(task: Mapping[str, Any]) -> list[dict[str, str]]:
    buttons = task.get("buttons")
    if not isinstance(buttons, list):
        return []
    return [
        {key: _text(button.get(key)) for key in ("customId", "label", "emoji")}
        for button in buttons
        if isinstance(button, Mapping) and button.get("customId")
    ]


def is_grid_task(
    action: str, buttons: Sequence[Mapping[str, str]], a: Assumptions = ASSUMED
) -> bool:
    if action.upper() in a.grid_actions:
        return True
    return any(find_button(buttons, ("upsample",), number) for number in (2, 3, 4))


def _lookup(task: Mapping[str, Any], dotted: str) -> Any:
    value: Any = task
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def description_text(task: Mapping[str, Any], a: Assumptions = ASSUMED) -> str:
    for key in a.describe_text_keys:
        value = _lookup(task, key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def task_vendor_data(task: Mapping[str, Any], a: Assumptions = ASSUMED) -> dict[str, Any]:
    """What an action on this result needs later (SourceResult.vendor_data)."""
    action = _text(task.get("action"))
    buttons = normalized_buttons(task)
    data: dict[str, Any] = {
        "task_id": _text(task.get("id")),
        "action": action,
        "mj": is_mj_action(action, a),
        "grid": is_grid_task(action, buttons, a),
        "buttons": buttons,
    }
    image_url = _text(task.get("imageUrl"))
    if image_url:
        data["image_url"] = image_url
    return data


def failure_kind(reason: str, a: Assumptions = ASSUMED) -> str:
    if _mentions(reason, a.rejection_words):
        return ContentRejected.kind
    if _mentions(reason, a.quota_words):
        return QuotaExceeded.kind
    return ProviderError.kind


def parse_task(task: Mapping[str, Any], a: Assumptions = ASSUMED) -> JobState:
    """A task object → JobState. NOT_START/SUBMITTED queued, IN_PROGRESS
    running with progress, SUCCESS done, FAILURE failed (see ASSUMED)."""
    status = _text(task.get("status")).upper()
    data = task_vendor_data(task, a)
    progress = parse_progress(task.get("progress"))
    if status in a.queued_statuses:
        return JobState(status=JobStatus.QUEUED, progress=progress, vendor_data=data)
    if status == SUCCESS_STATUS:
        return _succeeded(task, data, a)
    if status == FAILURE_STATUS:
        reason = _text(task.get("failReason")) or "task failed"
        return JobState(
            status=JobStatus.FAILED, error_kind=failure_kind(reason, a), error_detail=reason,
            vendor_data=data,
        )
    if status in a.cancelled_statuses:
        return JobState(
            status=JobStatus.FAILED, error_kind=ProviderError.kind,
            error_detail="cancelled at the vendor", vendor_data=data,
        )
    if status not in a.running_statuses:
        log.warning("aihuihua: unknown task status %r, treated as running", status)
    return JobState(status=JobStatus.RUNNING, progress=progress, vendor_data=data)


def _succeeded(task: Mapping[str, Any], data: dict[str, Any], a: Assumptions) -> JobState:
    if data["action"].upper() in a.describe_actions:
        text = description_text(task, a)
        if not text:
            return JobState(
                status=JobStatus.FAILED, error_kind=MalformedResponse.kind,
                error_detail="describe finished without text", vendor_data=data,
            )
        # The text is the result; imageUrl (the described input) is not.
        return JobState(
            status=JobStatus.SUCCEEDED, progress=1.0, vendor_data={**data, "description": text}
        )
    url = data.get("image_url")
    if not url:
        return JobState(
            status=JobStatus.FAILED, error_kind=MalformedResponse.kind,
            error_detail="SUCCESS without imageUrl", vendor_data=data,
        )
    return JobState(
        status=JobStatus.SUCCEEDED,
        progress=1.0,
        images=[ResultImage(url=url)],
        is_grid=data["grid"],
        vendor_data=data,
    )


def callback_task(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The bare task object [assume], or the task inside a query-style envelope."""
    inner = payload.get("result")
    if "code" in payload and isinstance(inner, Mapping):
        return inner
    return payload


def parse_callback_payload(
    payload: Mapping[str, Any], a: Assumptions = ASSUMED
) -> tuple[str, JobState]:
    task = callback_task(payload)
    task_id = _text(task.get("id"))
    if not task_id or not _text(task.get("status")):
        raise MalformedResponse("callback names no task or status")
    return make_job_id(task_id), parse_task(task, a)


def chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[start:start + size]) for start in range(0, len(items), size)]


# --------------------------------------------------------------------------- #
# Auth
# --------------------------------------------------------------------------- #


class BearerAuth(httpx.Auth):
    """`Authorization: Bearer <key>` [seed]."""

    def __init__(self, api_key: str) -> None:
        if not api_key:
            raise ValueError("aihuihua needs an API key")
        self._key = api_key

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self._key,)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._key}"
        yield request

    def __repr__(self) -> str:  # never show the key
        return "BearerAuth(***)"


# --------------------------------------------------------------------------- #
# The provider
# --------------------------------------------------------------------------- #


class Aihuihua(Provider):
    id: ClassVar[str] = "aihuihua"
    title: ClassVar[str] = "AI绘画 aihuihua (Flux / Midjourney)"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.TXT2IMG,
            Capability.IMG2IMG,
            Capability.VARIATION,
            Capability.UPSCALE,
            Capability.FACESWAP,
            Capability.REMOVE_BG,
            Capability.DESCRIBE,
        }
    )
    # Every capability that can take an input image, which the vendor fetches
    # by URL. (UPSCALE of one of its own results needs none, but the interface
    # cannot tell the two apart.)
    needs_public_url: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.IMG2IMG,
            Capability.UPSCALE,
            Capability.FACESWAP,
            Capability.REMOVE_BG,
            Capability.DESCRIBE,
        }
    )
    supports_callbacks: ClassVar[bool] = True
    callback_answer: ClassVar[dict[str, Any]] = {"code": 1}  # [assume]
    typical_seconds: ClassVar[float] = ASSUMED.flux_seconds
    max_images: ClassVar[int] = 1  # one image per task (a grid holds four)
    max_concurrent_jobs: ClassVar[int] = MAX_CONCURRENT_TASKS
    batch_poll_size: ClassVar[int] = BATCH_LIMIT
    image_input = "url"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: str,
        base_url: str,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        assumptions: Assumptions = ASSUMED,
    ) -> None:
        super().__init__(client, base_url)
        self.auth = BearerAuth(api_key)
        self.timeout = timeout
        self.assumed = assumptions

    def __repr__(self) -> str:
        return f"Aihuihua(base_url={self.base_url!r})"

    @classmethod
    def from_settings(cls, settings: Any, client: httpx.AsyncClient) -> Aihuihua | None:
        key = secret_value(getattr(settings, "aihuihua_api_key", None))
        if not key:
            return None
        return cls(client, api_key=key, base_url=settings.aihuihua_base_url)

    # ---- submit ----------------------------------------------------------

    def request_for(self, spec: JobSpec) -> TaskRequest:
        return build_request(spec, self.assumed)

    async def submit(self, spec: JobSpec) -> Submitted:
        request = self.request_for(spec)
        endpoint = request.endpoint
        answer = await self._call("POST", endpoint, request.body, parse_submit_answer)
        if request.alternate and answer.code in self.assumed.action_fallback_codes:
            log.info("aihuihua %s refused the task (code %s); trying %s",
                     endpoint.value, answer.code, request.alternate.value)
            endpoint = request.alternate
            answer = await self._call("POST", endpoint, request.body, parse_submit_answer)
        try:
            task_id = accepted_task_id(answer, self.assumed)
        except ProviderError as exc:
            raise self._logged(endpoint.value, exc) from None
        if answer.code == QUEUED_CODE:
            log.info("aihuihua %s: task %s queued", endpoint.value, task_id)
        return Submitted(job_id=make_job_id(task_id), eta_seconds=request.eta_seconds)

    # ---- poll / callbacks -----------------------------------------------

    async def poll(self, job_id: str) -> JobState:
        task_id = split_job_id(job_id)
        task = await self._call(
            "GET", Endpoint.TASK, None, lambda body: query_task(body, self.assumed),
            path=f"{Endpoint.TASK.value}{quote(task_id, safe='')}",
        )
        return parse_task(task, self.assumed)

    async def poll_many(self, job_ids: Sequence[str]) -> Mapping[str, JobState | ProviderError]:
        """One batch query per 20 tasks [public]; an id missing from the
        answer is JobNotFound, a failed batch fails each of its jobs."""
        results: dict[str, JobState | ProviderError] = {}
        wanted: dict[str, str] = {}  # task id → job id
        for job_id in job_ids:
            try:
                wanted[split_job_id(job_id)] = job_id
            except JobNotFound as exc:
                results[job_id] = exc
        for chunk in chunks(list(wanted), BATCH_LIMIT):
            try:
                tasks = await self._call(
                    "POST", Endpoint.TASK_LIST, {"ids": chunk},
                    lambda body: query_tasks(body, self.assumed),
                )
            except ProviderError as exc:
                results.update({wanted[task_id]: exc for task_id in chunk})
                continue
            by_id = {_text(task.get("id")): task for task in tasks}
            for task_id in chunk:
                results[wanted[task_id]] = self._state_or_error(by_id.get(task_id))
        return results

    def _state_or_error(self, task: Mapping[str, Any] | None) -> JobState | ProviderError:
        if task is None:
            return JobNotFound("not in the batch answer")
        try:
            return parse_task(task, self.assumed)
        except ProviderError as exc:
            return exc

    def parse_callback(self, payload: Mapping[str, Any]) -> tuple[str, JobState]:
        return parse_callback_payload(payload, self.assumed)

    async def probe(self) -> str:
        """A query for a task that does not exist: checks the key, costs nothing."""
        try:
            await self.poll(make_job_id("0"))
        except JobNotFound:
            return "ok"
        except ProviderError as exc:
            return exc.kind
        return "ok"

    # ---- HTTP boundary ---------------------------------------------------

    async def _call(
        self,
        method: str,
        endpoint: Endpoint,
        payload: Mapping[str, Any] | None,
        read: Callable[[dict[str, Any]], T],
        *,
        path: str | None = None,
    ) -> T:
        """One vendor call; ``read`` turns the JSON body into a value. Every
        failure leaves as a ProviderError naming the endpoint, never the URL
        or the key, and is logged with the vendor's words."""
        headers = {"Accept": "application/json"}
        content = None
        if payload is not None:
            content = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            with map_transport_errors():
                response = await self.client.request(
                    method,
                    f"{self.base_url}{path or endpoint.value}",
                    content=content,
                    headers=headers,
                    auth=self.auth,
                    timeout=self.timeout,
                )
            error = error_for_http_status(
                response.status_code, response.headers, task_query=endpoint is Endpoint.TASK
            )
            if error is not None:
                raise error
            return read(json_body(response))
        except ProviderError as exc:
            raise self._logged(endpoint.value, exc) from None

    def _logged(self, endpoint: str, exc: ProviderError) -> ProviderError:
        message = redact(exc.vendor_message, self.auth.secrets)
        level = logging.WARNING if exc.transient or exc.disables_vendor else logging.INFO
        log.log(level, "aihuihua %s: %s (%s)", endpoint, message, exc.kind)
        return type(exc)(message, retry_after=exc.retry_after)
