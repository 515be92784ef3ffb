"""aihuihua (AI绘画, api.aihuihua.com): Flux text/image to image, Midjourney
imagine with its U/V buttons, face swap, upscale, background removal and
describe. Every job is a vendor task: submit → task id → the task POSTed to
our notifyHook when it finishes, or (a fallback only) a query, single or a
batch of 20.

Layout, top to bottom:
  ASSUMED            every guess about the vendor, in one place
  seed facts         endpoints, codes, limits
  job ids            "aihuihua:<task id>", "aihuihua:i2i:<task id>"
  pure transforms    spec → (endpoint, JSON body); task object → JobState; codes → exceptions
  Aihuihua           the HttpProvider: declarations and hooks

The task object does not say that it came from Flux image2Image, whose
result is always a 4-in-1 grid [seed], so the job id says it (``JobKind``).
Everything else (Midjourney or not, grid or not, describe) is read from the
task itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from providers.base import PollPolicy
from providers.common import input_image, input_url, text_of
from providers.credentials import Credentials
from providers.errors import BadRequest, JobNotFound
from providers.errors import MalformedResponse, ProviderError
from providers.http import HeaderAuth, HttpProvider
from providers import midjourney as mj
from providers.midjourney import (MIDJOURNEY_PROXY, Protocol, SubmitAnswer, body_code, checked_task, find_button,
                                  is_grid_task, mj_prompt, parse_submit_answer, prompt_with_ratio)
from providers.types import Capability, GenerationParams, JobSpec, JobState
from providers.types import SourceResult, Submitted

log = logging.getLogger(__name__)


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
    # grid too, whatever its action; a Flux image2Image task always is (its
    # job id says so, see JobKind).
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
    # The words that turn a code or failReason into our kind: the protocol's.
    quota_words: tuple[str, ...] = MIDJOURNEY_PROXY.quota_words
    auth_words: tuple[str, ...] = MIDJOURNEY_PROXY.auth_words
    rejection_words: tuple[str, ...] = MIDJOURNEY_PROXY.rejection_words
    # Queries and callbacks carry the bare task (the batch query a bare list)
    # as midjourney-proxy sends them [public], or the {"code", "result"}
    # envelope: both are read. An unknown single task is code 3, a null
    # result, HTTP 404, or (midjourney-proxy's fetch returns null) an empty
    # or `null` body.
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
MAX_INPUT_BYTES = 5 * 1024 * 1024  # [seed] imgUrl "最大不能超过5M,否则会失败"
RESULT_TTL_SECONDS = 10 * 24 * 3600  # [public] results kept 10 days
RANGE_LIMITS = (0.1, 1.0)  # [seed] image2Image `range`
UPSCALE_MAX_SIDE = 4096  # [public] long side of an upscale result
QUEUE_FULL_CODE = 23  # [seed] try later
SENSITIVE_CODE = 24  # [seed] prompt has sensitive words


# --------------------------------------------------------------------------- #
# Job ids
# --------------------------------------------------------------------------- #

JOB_PREFIX = "aihuihua:"


class JobKind(StrEnum):
    """What the job id knows that the task object may not say."""

    TASK = ""  # "aihuihua:<task id>" (also every id stored before kinds existed)
    IMAGE2IMAGE = "i2i"  # "aihuihua:i2i:<task id>": a Flux 4-in-1 grid, with or without buttons


@dataclass(frozen=True)
class JobRef:
    task_id: str
    kind: JobKind = JobKind.TASK


def make_job_id(task_id: str, kind: JobKind = JobKind.TASK) -> str:
    return f"{JOB_PREFIX}{kind}:{task_id}" if kind else f"{JOB_PREFIX}{task_id}"


def parse_job_id(job_id: str) -> JobRef:
    """The task id and kind of one of our job ids; JobNotFound for anything
    else. Task ids are numbers, so "i2i:" cannot begin an old-format one."""
    rest = job_id.removeprefix(JOB_PREFIX) if job_id.startswith(JOB_PREFIX) else ""
    kind = JobKind.TASK
    for candidate in JobKind:
        if candidate and rest.startswith(f"{candidate}:"):
            kind, rest = candidate, rest[len(candidate) + 1:]
    if not rest.strip():
        raise JobNotFound("not an aihuihua job id")
    return JobRef(rest, kind)


def task_id_of(job_id: str) -> str:
    return parse_job_id(job_id).task_id


# --------------------------------------------------------------------------- #
# Pure transforms: requests
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class TaskRequest:
    endpoint: Endpoint
    body: dict[str, Any]
    eta_seconds: float
    alternate: Endpoint | None = None  # the other action endpoint (see ASSUMED)

    @property
    def kind(self) -> JobKind:
        return JobKind.IMAGE2IMAGE if self.endpoint is Endpoint.FLUX_IMAGE2IMAGE else JobKind.TASK


def wants_midjourney(params: GenerationParams, a: Assumptions = ASSUMED) -> bool:
    model = (params.model or "").strip().lower()
    return model.startswith(a.mj_model_prefixes)


def flux_prompt(params: GenerationParams) -> str:
    """Flux takes the aspect ratio inside the prompt [public]."""
    return prompt_with_ratio(params)


def similarity(strength: float | None, a: Assumptions = ASSUMED) -> float:
    """Our strength (how much to change) → the vendor's `range` (how similar
    to stay): 1 - strength, within [0.1, 1]."""
    if strength is None:
        return a.default_range
    low, high = RANGE_LIMITS
    return round(min(high, max(low, 1.0 - strength)), 2)


def upscale_request(image_url: str, dims: tuple[int, int] | None, a: Assumptions) -> TaskRequest:
    factor = a.upscale_factor
    if dims and max(dims) * factor > UPSCALE_MAX_SIDE:
        raise BadRequest(
            f"{dims[0]}x{dims[1]} ×{factor} exceeds the {UPSCALE_MAX_SIDE} px upscale limit"
        )
    return TaskRequest(Endpoint.UPSCALE, {"imgUrl": image_url, "size": factor}, a.tool_seconds)


def _url(spec: JobSpec, index: int) -> str:
    return input_url(spec, index, "aihuihua")


# ---- actions on our own earlier results ---------------------------------------

VERBS = {Capability.UPSCALE: "upsample", Capability.VARIATION: "variation"}
# A single image's "Vary" buttons, strongest first (Midjourney's Vary (Strong/Subtle)).
SINGLE_VARY_VERBS = ("variation", "high_variation", "low_variation")


def source_job(source: SourceResult) -> JobRef:
    if source.provider != "aihuihua":
        raise BadRequest(f"not an aihuihua result (from {source.provider})")
    try:
        return parse_job_id(source.job_id)
    except JobNotFound:
        raise BadRequest("the source names no aihuihua task") from None


def action_request(
    source: SourceResult, capability: Capability, a: Assumptions = ASSUMED
) -> TaskRequest:
    """{taskId, customId} for U<n>/V<n> on an earlier aihuihua result; a
    single image is upscaled by URL (it has no U buttons)."""
    data = source.vendor_data
    job = source_job(source)
    buttons = data.get("buttons") or []
    grid = data.get("grid")
    if job.kind is JobKind.IMAGE2IMAGE:
        grid = True
    elif grid is None:  # stored before "grid" was recorded: judge by the task itself
        grid = is_grid_task(text_of(data.get("action")), buttons, protocol(a))
    if not 0 <= source.index <= 3 or (not grid and source.index != 0):
        raise BadRequest(f"image {source.index + 1} is not in the source result")
    number = source.index + 1
    verb = VERBS.get(capability)
    if verb is None:
        raise BadRequest(f"aihuihua has no {capability} action")
    pressed = text_of(data.get("custom_id"))  # one of its follow-up buttons, pressed as it is
    if pressed and pressed not in {button.get("customId") for button in buttons}:
        raise BadRequest("that button is not on the source result")
    verbs = (verb,) if grid or capability is not Capability.VARIATION else SINGLE_VARY_VERBS
    custom_id = pressed or find_button(buttons, verbs, number)
    if custom_id is None and capability is Capability.UPSCALE and not grid:
        image_url = data.get("image_url")
        if isinstance(image_url, str) and image_url:
            return upscale_request(image_url, None, a)
    if custom_id is None:
        label = "U" if capability is Capability.UPSCALE else "V"
        raise BadRequest(f"the source result has no {label}{number} button")
    midjourney = data.get("mj")
    if job.kind is JobKind.IMAGE2IMAGE:
        midjourney = False  # [seed] image2Image results go to /api/v2/image/action
    elif midjourney is None:
        midjourney = is_mj_action(data.get("action"), a)
    primary, other = Endpoint.MJ_ACTION, Endpoint.IMAGE_ACTION
    if not midjourney:
        primary, other = other, primary
    eta = a.mj_seconds if midjourney else a.flux_seconds
    if capability is Capability.UPSCALE:
        eta = a.tool_seconds
    body = {"taskId": job.task_id, "customId": custom_id}
    return TaskRequest(primary, body, eta, alternate=other)


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
                "imgUrl": _url(spec, 0),
                "range": similarity(params.strength, a),
            }
            return TaskRequest(Endpoint.FLUX_IMAGE2IMAGE, body, a.flux_seconds)
        case Capability.VARIATION | Capability.UPSCALE if spec.source is not None:
            return action_request(spec.source, spec.capability, a)
        case Capability.VARIATION:
            raise BadRequest("aihuihua makes variations of its own results only")
        case Capability.UPSCALE:
            image = input_image(spec, 0)  # measured by the engine
            return upscale_request(_url(spec, 0), (image.width, image.height), a)
        case Capability.FACESWAP:
            body = {"fromImgUrl": _url(spec, 0), "toImgUrl": _url(spec, 1)}
            return TaskRequest(Endpoint.FACE_SWAP, body, a.tool_seconds)
        case Capability.REMOVE_BG:
            return TaskRequest(Endpoint.REMOVE_BG, {"imgUrl": _url(spec, 0)}, a.tool_seconds)
        case Capability.DESCRIBE:
            return TaskRequest(Endpoint.DESCRIBE, {"imgUrl": [_url(spec, 0)]}, a.tool_seconds)
    raise BadRequest(f"aihuihua cannot do {spec.capability}")


# --------------------------------------------------------------------------- #
# Pure transforms: answers, codes and tasks
# --------------------------------------------------------------------------- #


def protocol(a: Assumptions = ASSUMED) -> Protocol:
    """The midjourney-proxy protocol as aihuihua speaks it (providers.midjourney)."""
    return Protocol(
        grid_actions=a.grid_actions, describe_actions=a.describe_actions,
        describe_text_keys=a.describe_text_keys, queued_statuses=a.queued_statuses,
        running_statuses=a.running_statuses, modal_statuses=frozenset(),
        cancelled_statuses=a.cancelled_statuses, accepted_codes=a.accepted_codes,
        not_found_code=a.not_found_code, validation_code=a.validation_code,
        system_error_code=a.system_error_code, queue_full_code=QUEUE_FULL_CODE,
        banned_code=SENSITIVE_CODE, queue_full_retry_after=a.queue_full_retry_after,
        quota_words=a.quota_words, auth_words=a.auth_words, rejection_words=a.rejection_words,
        queue_full_words=(), progress_previews=False,
    )


def error_for_code(code: int, description: str, a: Assumptions = ASSUMED) -> ProviderError:
    return mj.error_for_code(code, description, protocol(a))


def accepted_task_id(answer: SubmitAnswer, a: Assumptions = ASSUMED) -> str:
    """Codes 1 and 22 (queued) [seed], and 21 (exists) accept the task."""
    return mj.accepted_task_id(answer, protocol(a))


def submitted_task_id(
    body: Mapping[str, Any], a: Assumptions = ASSUMED, *, may_fall_back: bool = False
) -> str | None:
    """The accepted task id; None when the other action endpoint should be
    tried (``may_fall_back`` and a refusal in ``a.action_fallback_codes``)."""
    answer = parse_submit_answer(body)
    if may_fall_back and answer.code in a.action_fallback_codes:
        return None
    return accepted_task_id(answer, a)


def enveloped(body: Any, a: Assumptions = ASSUMED) -> Any:
    """The `result` of a `{"code": 1, "result": …}` envelope; any other body
    is the bare answer itself (midjourney-proxy style)."""
    if not isinstance(body, Mapping) or "code" not in body:
        return body
    code = body_code(body)
    if code != 1:
        raise error_for_code(code, text_of(body.get("description")), a)
    return body.get("result")


def query_task(body: Any, a: Assumptions = ASSUMED) -> Mapping[str, Any]:
    """The task of a single query: the bare task, or `{"code": 1, "result": task}`."""
    task = enveloped(body, a)
    if task is None:
        raise JobNotFound("result is null")
    return checked_task(task)


def query_tasks(body: Any, a: Assumptions = ASSUMED) -> list[Mapping[str, Any]]:
    """The tasks of a batch query: the bare list, or `{"code": 1, "result": [task, ...]}`."""
    tasks = enveloped(body, a)
    if tasks is None:
        return []
    if not isinstance(tasks, list):
        raise MalformedResponse("result is not a list")
    return [task for task in tasks if isinstance(task, Mapping)]


def is_mj_action(action: Any, a: Assumptions = ASSUMED) -> bool:
    return text_of(action).upper() in a.mj_actions


def task_vendor_data(
    task: Mapping[str, Any], kind: JobKind = JobKind.TASK, a: Assumptions = ASSUMED
) -> dict[str, Any]:
    """What an action on this result needs later (SourceResult.vendor_data)."""
    image2image = kind is JobKind.IMAGE2IMAGE  # [seed] "每次返回4合1的图片"
    data = mj.task_data(task, protocol(a), grid=True if image2image else None)
    return {**data, "mj": not image2image and is_mj_action(data["action"], a)}


def parse_task(
    task: Mapping[str, Any], kind: JobKind = JobKind.TASK, a: Assumptions = ASSUMED
) -> JobState:
    """A task object → JobState. NOT_START/SUBMITTED queued, IN_PROGRESS
    running with progress, SUCCESS done, FAILURE failed (see ASSUMED)."""
    return mj.task_state(task, task_vendor_data(task, kind, a), protocol(a))


def parse_callback_payload(
    payload: Mapping[str, Any], job_id: str, a: Assumptions = ASSUMED
) -> JobState:
    """The state of ``job_id`` from a callback: the bare task [public], or the
    task inside a query-style envelope. JobNotFound when it names another task."""
    try:
        task = checked_task(enveloped(payload, a))
    except ProviderError as exc:
        raise MalformedResponse(f"unreadable callback: {exc.vendor_message}") from None
    job = parse_job_id(job_id)
    if text_of(task.get("id")) != job.task_id:
        raise JobNotFound("the callback names another task")
    return parse_task(task, job.kind, a)


def chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[start:start + size]) for start in range(0, len(items), size)]


# --------------------------------------------------------------------------- #
# The provider
# --------------------------------------------------------------------------- #


class Aihuihua(HttpProvider):
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
    credentials: ClassVar[Credentials] = Credentials.one("aihuihua_api_key")
    base_url_setting: ClassVar[str] = "aihuihua_base_url"
    supports_callbacks: ClassVar[bool] = True
    callback_answer: ClassVar[dict[str, Any]] = {"code": 1}  # [assume]
    typical_seconds = ASSUMED.flux_seconds
    max_images: ClassVar[int] = 1  # one image per task (a grid holds four)
    max_concurrent_jobs: ClassVar[int] = MAX_CONCURRENT_TASKS
    batch_poll_size: ClassVar[int] = BATCH_LIMIT
    # [public] the queries are a fallback for a task without a callback for 5
    # minutes, "不支持长时间、高频度的调用": with callbacks, ask only after 5
    # minutes of silence; never more often than every 20 s per job.
    poll_policy: ClassVar[PollPolicy] = PollPolicy(
        callback_silence_seconds=300.0, min_interval_seconds=20.0
    )
    # [seed] an imgUrl over 5 MB fails the task: the engine shrinks inputs first.
    max_input_bytes: ClassVar[int | None] = MAX_INPUT_BYTES
    image_input = "url"
    assumed: Assumptions = ASSUMED  # per instance: tests may swap a guess

    def make_auth(self, secrets: Mapping[str, str]) -> httpx.Auth:
        return HeaderAuth({"Authorization": f"Bearer {secrets['aihuihua_api_key']}"})  # [seed]

    def error_for_status(self, response: httpx.Response, endpoint: str) -> ProviderError | None:
        """On the single task query, HTTP 404 and an empty (or `null`) 200
        body are an unknown task (see ASSUMED)."""
        if endpoint == Endpoint.TASK:
            empty = response.status_code == 200 and response.content.strip() in (b"", b"null")
            if response.status_code == 404 or empty:
                return JobNotFound(f"HTTP {response.status_code}: no such task")
        return super().error_for_status(response, endpoint)

    # ---- submit ----------------------------------------------------------

    def request_for(self, spec: JobSpec) -> TaskRequest:
        return build_request(spec, self.assumed)

    async def submit(self, spec: JobSpec) -> Submitted:
        request = self.request_for(spec)
        alternate = request.alternate
        task_id = await self.call(
            request.endpoint, payload=request.body, read=lambda body: submitted_task_id(
                body, self.assumed, may_fall_back=alternate is not None),
        )
        if task_id is None and alternate is not None:  # refused: the family guess was wrong
            log.info("aihuihua %s refused the task; trying %s", request.endpoint, alternate)
            task_id = await self.call(
                alternate, payload=request.body,
                read=lambda body: accepted_task_id(parse_submit_answer(body), self.assumed),
            )
        if task_id is None:  # not reached: without may_fall_back the reader raises
            raise MalformedResponse("no task id")
        return Submitted(job_id=make_job_id(task_id, request.kind), eta_seconds=request.eta_seconds)

    # ---- poll / callbacks -----------------------------------------------

    async def poll(self, job_id: str) -> JobState:
        job = parse_job_id(job_id)
        task = await self.call(
            Endpoint.TASK, lambda body: query_task(body, self.assumed), method="GET",
            path=f"{Endpoint.TASK.value}{quote(job.task_id, safe='')}",
        )
        return parse_task(task, job.kind, self.assumed)

    async def poll_many(self, job_ids: Sequence[str]) -> Mapping[str, JobState | ProviderError]:
        """One batch query per 20 tasks [public]; an id missing from the
        answer is JobNotFound, a failed batch fails each of its jobs."""
        results: dict[str, JobState | ProviderError] = {}
        jobs: dict[str, JobRef] = {}
        for job_id in job_ids:
            try:
                jobs[job_id] = parse_job_id(job_id)
            except JobNotFound as exc:
                results[job_id] = exc
        task_ids = list(dict.fromkeys(job.task_id for job in jobs.values()))
        for chunk in chunks(task_ids, BATCH_LIMIT):
            failure: ProviderError | None = None
            tasks: list[Mapping[str, Any]] = []
            try:
                tasks = await self.call(
                    Endpoint.TASK_LIST, lambda body: query_tasks(body, self.assumed),
                    payload={"ids": chunk}, allow_list=True,
                )
            except ProviderError as exc:
                failure = exc  # the whole batch failed: so did each of its jobs
            by_id = {text_of(task.get("id")): task for task in tasks}
            for job_id, job in jobs.items():
                if job.task_id in chunk:
                    task = by_id.get(job.task_id)
                    results[job_id] = failure or self._state_or_error(task, job)
        return results

    def _state_or_error(
        self, task: Mapping[str, Any] | None, job: JobRef
    ) -> JobState | ProviderError:
        if task is None:
            return JobNotFound("not in the batch answer")
        try:
            return parse_task(checked_task(task), job.kind, self.assumed)
        except ProviderError as exc:
            return exc

    def parse_callback(self, payload: Mapping[str, Any], job_id: str) -> JobState:
        return parse_callback_payload(payload, job_id, self.assumed)

    async def probe(self) -> str:
        """A query for a task that does not exist: checks the key, costs nothing."""
        try:
            await self.poll(make_job_id("0"))
        except JobNotFound:
            return "ok"
        except ProviderError as exc:
            return exc.kind
        return "ok"
