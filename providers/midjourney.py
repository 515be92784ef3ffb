"""The midjourney-proxy protocol, as pure functions: the de facto Midjourney
API of novicezk/midjourney-proxy, trueai-org's rewrite, and the vendors
that resell it (aihuihua speaks it too). Submit answers, task objects,
their buttons, and Midjourney's prompt flags.

    submit answer   {"code": 1, "description", "result": "<task id>", "properties"}
    task            {id, action, status, progress "45%", imageUrl, failReason,
                     prompt, promptEn, properties{finalPrompt}, buttons[{customId, label, emoji}]}

Codes [public, ReturnCode]: 1 accepted, 22 accepted and queued, 21 exists
(novicezk; trueai: waiting for a modal's text), 23 queue full, 24 banned
prompt, 3 not found, 4 validation error, 9 system error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.common import code_of, matches, parse_progress, text_of
from providers.errors import (AuthError, BadRequest, ContentRejected, JobNotFound,
                              MalformedResponse, ProviderError, QuotaExceeded, RateLimited,
                              Unavailable)
from providers.types import GenerationParams, JobState, JobStatus, ResultImage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    """The words of one speaker of the protocol (a vendor may differ)."""

    grid_actions: frozenset[str] = frozenset({"IMAGINE", "VARIATION", "REROLL", "BLEND", "ZOOM", "PAN"})
    describe_actions: frozenset[str] = frozenset({"DESCRIBE"})
    # A finished describe keeps its text here (imageUrl is the input).
    describe_text_keys: tuple[str, ...] = ("properties.finalPrompt", "promptEn", "prompt")
    queued_statuses: frozenset[str] = frozenset({"NOT_START", "SUBMITTED"})
    running_statuses: frozenset[str] = frozenset({"IN_PROGRESS"})
    # Waiting for text from the user (trueai: remix, Custom Zoom, Vary Region).
    modal_statuses: frozenset[str] = frozenset({"MODAL"})
    cancelled_statuses: frozenset[str] = frozenset({"CANCEL", "CANCELLED"})
    accepted_codes: frozenset[int] = frozenset({1, 21, 22})
    not_found_code: int = 3
    validation_code: int = 4
    system_error_code: int = 9
    queue_full_code: int = 23
    banned_code: int = 24
    queue_full_retry_after: float = 30.0  # no delay is named
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
    # A full queue is said in words by some (trueai answers it as code 9).
    queue_full_words: tuple[str, ...] = ("队列已满", "queue is full", "queue full")
    # IN_PROGRESS imageUrl is a preview (midjourney-proxy; not documented everywhere).
    progress_previews: bool = True


MIDJOURNEY_PROXY = Protocol()

# ---- prompts ---------------------------------------------------------------


def has_flag(prompt: str, flag: str) -> bool:
    return f"{flag} " in f"{prompt} "


def ratio_flag(params: GenerationParams) -> str:
    """" --ar W:H" for a non-square request (an explicit size reduced to its
    ratio), empty for 1:1."""
    if params.width and params.height:
        divisor = math.gcd(params.width, params.height)
        w, h = params.width // divisor, params.height // divisor
    else:
        w, h = (int(part) for part in params.aspect_ratio.split(":"))
    return "" if w == h else f" --ar {w}:{h}"


def prompt_with_ratio(params: GenerationParams) -> str:
    prompt = params.prompt.strip()
    if not prompt:
        raise BadRequest("prompt is empty")
    return prompt if has_flag(prompt, "--ar") else prompt + ratio_flag(params)


def mj_prompt(params: GenerationParams) -> str:
    """Midjourney flags from our params: --ar, --no, --seed (unless the
    prompt already has them)."""
    prompt = prompt_with_ratio(params)
    if params.negative_prompt.strip() and not has_flag(prompt, "--no"):
        prompt += f" --no {params.negative_prompt.strip()}"
    if params.seed is not None and params.seed >= 0 and not has_flag(prompt, "--seed"):
        prompt += f" --seed {params.seed}"
    return prompt


# ---- submit answers --------------------------------------------------------


def body_code(body: Any) -> int:
    code = code_of(body.get("code")) if isinstance(body, Mapping) else None
    if code is None:
        raise MalformedResponse("body has no numeric code")
    return code


def error_for_code(code: int, description: str, p: Protocol = MIDJOURNEY_PROXY) -> ProviderError:
    detail = f"code {code}: {description}" if description else f"code {code}"
    if code == p.queue_full_code or matches(description, p.queue_full_words):
        return RateLimited(detail, retry_after=p.queue_full_retry_after)
    if code == p.banned_code:
        return ContentRejected(detail)
    if code == p.not_found_code:
        return JobNotFound(detail)
    if matches(description, p.quota_words):
        return QuotaExceeded(detail)
    if matches(description, p.auth_words):
        return AuthError(detail)
    if matches(description, p.rejection_words):
        return ContentRejected(detail)
    if code == p.validation_code:
        return BadRequest(detail)
    if code == p.system_error_code:
        return Unavailable(detail)
    return ProviderError(detail)


@dataclass(frozen=True)
class SubmitAnswer:
    code: int
    description: str
    task_id: str
    properties: Mapping[str, Any] = field(default_factory=dict)


def parse_submit_answer(body: Mapping[str, Any]) -> SubmitAnswer:
    """The id may be a number (novicezk sends a string of digits, some a number)."""
    code = body_code(body)
    result = body.get("result")
    usable = isinstance(result, str | int) and not isinstance(result, bool)
    properties = body.get("properties")
    return SubmitAnswer(
        code, text_of(body.get("description")), str(result).strip() if usable else "",
        properties if isinstance(properties, Mapping) else {},
    )


MODAL_WORDS = ("window confirm",)  # trueai's code 21: the new task waits in MODAL


def waits_for_text(answer: SubmitAnswer) -> bool:
    """Whether an accepted submit left its task waiting for the user's text."""
    return answer.code == 21 and (matches(answer.description, MODAL_WORDS) or answer.properties.get("remix") is True)


def accepted_task_id(answer: SubmitAnswer, p: Protocol = MIDJOURNEY_PROXY) -> str:
    if answer.code not in p.accepted_codes:
        error = error_for_code(answer.code, answer.description, p)
        banned = text_of(answer.properties.get("bannedWord"))
        if banned:  # for the logs: which word the proxy objected to
            error = type(error)(f"{error.vendor_message} (banned word: {banned})", retry_after=error.retry_after)
        raise error
    if not answer.task_id:
        raise MalformedResponse(f"code {answer.code} without a task id")
    return answer.task_id


# ---- tasks -----------------------------------------------------------------


def checked_task(task: Any) -> Mapping[str, Any]:
    if isinstance(task, Mapping) and text_of(task.get("id")) and text_of(task.get("status")):
        return task
    raise MalformedResponse("not a task object with an id and a status")


def normalized_buttons(task: Mapping[str, Any]) -> list[dict[str, str]]:
    buttons = task.get("buttons")
    if not isinstance(buttons, list):
        return []
    return [
        {key: text_of(button.get(key)) for key in ("customId", "label", "emoji")}
        for button in buttons
        if isinstance(button, Mapping) and button.get("customId")
    ]


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


def is_grid_task(action: str, buttons: Sequence[Mapping[str, str]], p: Protocol = MIDJOURNEY_PROXY) -> bool:
    if action.upper() in p.grid_actions:
        return True
    return any(find_button(buttons, ("upsample",), number) for number in (2, 3, 4))


def _lookup(task: Mapping[str, Any], dotted: str) -> Any:
    value: Any = task
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def description_text(task: Mapping[str, Any], p: Protocol = MIDJOURNEY_PROXY) -> str:
    for key in p.describe_text_keys:
        value = _lookup(task, key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def failure_kind(reason: str, p: Protocol = MIDJOURNEY_PROXY) -> str:
    if matches(reason, p.rejection_words):
        return ContentRejected.kind
    if matches(reason, p.quota_words):
        return QuotaExceeded.kind
    return ProviderError.kind


def task_data(task: Mapping[str, Any], p: Protocol = MIDJOURNEY_PROXY, *, grid: bool | None = None) -> dict[str, Any]:
    """What an action on this result needs later (SourceResult.vendor_data)."""
    action = text_of(task.get("action"))
    buttons = normalized_buttons(task)
    data: dict[str, Any] = {
        "task_id": text_of(task.get("id")),
        "action": action,
        "grid": is_grid_task(action, buttons, p) if grid is None else grid,
        "buttons": buttons,
    }
    image_url = text_of(task.get("imageUrl"))
    if image_url:
        data["image_url"] = image_url
    return data


def task_state(task: Mapping[str, Any], data: dict[str, Any], p: Protocol = MIDJOURNEY_PROXY) -> JobState:
    """A task object → JobState (``data`` from task_data, maybe with more)."""
    status = text_of(task.get("status")).upper()
    progress = parse_progress(task.get("progress"))
    if status in p.queued_statuses:
        return JobState(status=JobStatus.QUEUED, progress=progress, vendor_data=data)
    if status == "SUCCESS":
        return _succeeded(task, data, p)
    if status == "FAILURE":
        reason = text_of(task.get("failReason")) or "task failed"
        return JobState(status=JobStatus.FAILED, error_kind=failure_kind(reason, p), error_detail=reason, vendor_data=data)
    if status in p.cancelled_statuses:
        return JobState(status=JobStatus.FAILED, error_kind="cancelled_at_vendor",
                        error_detail="cancelled at the vendor", vendor_data=data)
    if status in p.modal_statuses:
        return JobState(status=JobStatus.RUNNING, progress=progress, vendor_data={**data, "modal": True})
    if status not in p.running_statuses:
        log.warning("midjourney-proxy: unknown task status %r, treated as running", status)
    # IN_PROGRESS (or a status we do not know: it is not finished).
    preview_url = data.get("image_url") if p.progress_previews and status in p.running_statuses else None
    return JobState(status=JobStatus.RUNNING, progress=progress, preview_url=preview_url, vendor_data=data)


def _succeeded(task: Mapping[str, Any], data: dict[str, Any], p: Protocol) -> JobState:
    if data["action"].upper() in p.describe_actions:
        text = description_text(task, p)
        if not text:
            return JobState(status=JobStatus.FAILED, error_kind=MalformedResponse.kind,
                            error_detail="describe finished without text", vendor_data=data)
        return JobState(status=JobStatus.SUCCEEDED, progress=1.0, vendor_data={**data, "description": text})
    url = data.get("image_url")
    if not url:
        return JobState(status=JobStatus.FAILED, error_kind=MalformedResponse.kind,
                        error_detail="SUCCESS without imageUrl", vendor_data=data)
    if not data["grid"] and data["buttons"]:
        data = {**data, "follow_ups": follow_ups(data["buttons"], answers_modal=bool(p.modal_statuses))}
    return JobState(status=JobStatus.SUCCEEDED, progress=1.0, images=[ResultImage(url=url)],
                    is_grid=data["grid"], vendor_data=data)


# ---- follow-up buttons -----------------------------------------------------

# The buttons of a finished single image that we pass on to the user, by
# customId prefix: (what it is for our routing and prices, the row it sits in).
# Vary (Region) is left out: it needs a mask drawn on the image.
FOLLOW_UPS: tuple[tuple[str, str, int], ...] = (
    ("MJ::JOB::upsample_", "upscale", 0),
    ("MJ::JOB::high_variation::", "variation", 1),
    ("MJ::JOB::low_variation::", "variation", 1),
    ("MJ::JOB::variation::1::", "variation", 1),
    ("MJ::Outpaint::", "variation", 2),
    ("MJ::CustomZoom::", "variation", 2),
    ("MJ::JOB::pan_", "variation", 3),
)


WAITS_FOR_TEXT = ("MJ::CustomZoom::",)  # pressing it leaves the job in MODAL


def follow_ups(buttons: Sequence[Mapping[str, str]], answers_modal: bool = True) -> list[dict[str, Any]]:
    """The buttons after an upscale (Vary Strong/Subtle, Zoom Out, pan,
    Upscale Subtle/Creative) as the bot shows them: label, row, and the
    capability the press asks for."""
    offered = []
    for button in buttons:
        custom_id = button.get("customId", "")
        if not answers_modal and custom_id.startswith(WAITS_FOR_TEXT):
            continue  # a vendor that cannot pass on the user's text would leave it waiting
        for prefix, capability, row in FOLLOW_UPS:
            if custom_id.startswith(prefix):
                emoji = button.get("emoji", "")
                if emoji.isascii():  # a Discord emoji's name ("upscale_1"), not a character
                    emoji = ""
                label = " ".join(filter(None, (emoji, button.get("label", ""))))
                offered.append({"custom_id": custom_id, "label": label or custom_id.split("::")[2],
                                "capability": capability, "row": row})
                break
    return offered
