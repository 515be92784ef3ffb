"""apispace (APISpace 23329 "AI 绘画", seeds/001_…): txt2img, img2img,
portrait → anime, and ×4 upscale, one image per call. The backend behind the
APISpace gateway is Nolibox's carefree-creator service (the callback's cdn
host and field names match its public code), which explains several fields.

Layout, top to bottom:
  ASSUMED            every guess about the vendor, in one place (VENDORS.md [assume])
  job ids            "uid:<vendor uid>"
  pure transforms    params → request body, response / callback → JobState / exception
  Apispace           the HttpProvider: credentials, auth headers, hooks

The vendor is asynchronous: submit returns a uid; the result is polled
(query-image) or POSTed to our notify_url.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import httpx

from providers import code_envelope as envelope
from providers.common import distinct_urls, input_url, plain_number, text_of, whole_number
from providers.credentials import Credentials
from providers.errors import BadRequest, ContentRejected, JobNotFound, MalformedResponse
from providers.errors import ProviderError
from providers.http import HeaderAuth, HttpProvider
from providers.types import Capability, GenerationParams, JobSpec, JobState, JobStatus, ResultImage
from providers.types import Submitted

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# ASSUMED — what the vendor document does not say. Correct a guess here, with
# the real response saved as a fixture under tests/fixtures/apispace/.
# --------------------------------------------------------------------------- #

ANIME_STYLES: tuple[str, ...] = (  # [public]
    "Chinese_style", "American_style", "Cute_style", "Gorgeous_style", "Horrible_style",
    "Avatar_style", "Fighting_style", "Machine_style", "Cyberfuture_style", "JOJO_style",
    "Bunny_style", "CatEar_style",
)


@dataclass(frozen=True)
class Assumptions:
    # [seed] txt2img defaults (the Python example's payload).
    txt2img_model: str = "art"
    img2img_model: str = "anime"  # [public]
    default_guidance: float = 7.5
    default_sampler: str = "k_euler"
    default_steps: int = 20
    # [seed] 512×512 standard, 768×768 at most. The backend rounds sides to
    # multiples of 64 (carefree-creator's anchor), so we send such sides:
    # 512 on the short side where the long side stays within 768.
    standard_side: int = 512
    max_side: int = 768
    min_side: int = 64
    size_multiple: int = 64
    # The seed's example payload repeats every param at the top level too
    # (an artefact of APISpace's doc generator, we think). Set True to send
    # both if the gateway turns out to read the top level.
    mirror_params_top_level: bool = False
    # img2img.sd / img2acg take `fidelity` 0..1 (how much of the input to
    # keep; carefree-creator default 0.2): we send 1 - strength.
    default_fidelity: float = 0.2
    default_anime_style: str = "Chinese_style"
    upscale_is_anime: bool = False
    # Paths and task names of anime and upscale: ours, by analogy with the
    # documented ones (read once, at import, into Endpoint and TASKS).
    anime_path: str = "/aigc/img2acg"
    anime_task: str = "img2acg"
    upscale_path: str = "/aigc/img2img-sr"
    upscale_task: str = "img2img.sr"
    # Envelope [public]: {"code": 0, "msg", "data"}; code != 0 is an error.
    # The non-zero codes are undocumented: HTTP-like codes are read as such,
    # the msg keywords below decide the rest.
    ok_code: int = 0
    auth_codes: tuple[int, ...] = (401, 403)
    quota_codes: tuple[int, ...] = (402,)
    rate_limited_codes: tuple[int, ...] = (429,)
    quota_keywords: tuple[str, ...] = (
        "余额", "次数不足", "次数已用完", "额度", "欠费", "充值", "套餐",
        "quota", "balance", "insufficient",
    )
    # Credit is bought in call packages [seed]: no daily quota to wait for.
    daily_limit_keywords: tuple[str, ...] = ()
    daily_reset_utc_offset_hours: float | None = None
    rate_limited_keywords: tuple[str, ...] = (
        "频率", "频繁", "限流", "qps", "too many requests", "rate limit",
    )
    # Narrow on purpose: AuthError turns the vendor off ("77 tokens" is not auth).
    auth_keywords: tuple[str, ...] = (
        "apispace-token", "token无效", "token错误", "token不存在", "token已过期",
        "invalid token", "apikey", "密钥", "未授权", "鉴权", "unauthorized", "未订阅",
    )
    rejection_keywords: tuple[str, ...] = (
        "敏感", "违规", "违禁", "违法", "涉黄", "涉政", "涉暴", "色情", "审核", "不合规",
        "不安全", "sensitive", "violat", "nsfw", "porn", "politic", "terror", "unsafe",
        "prohibited",
    )
    unavailable_keywords: tuple[str, ...] = ("维护", "繁忙", "maintenance", "busy")
    timeout_keywords: tuple[str, ...] = ("timeout", "超时")  # "timeout after 1800s" [public]
    rate_limit_retry_after: float = 1.0  # no Retry-After documented
    # Query statuses [public] (carefree-creator's Status): interrupted is
    # theirs too and can only mean the job will not finish.
    failed_statuses: tuple[str, ...] = ("exception", "interrupted")
    # The callback answer the vendor wants is undocumented; its backend
    # retries on a non-2xx answer or a non-JSON body [public].
    callback_answer: tuple[tuple[str, Any], ...] = (("code", 0),)
    # [seed] about 6–8 s per 512² image and 3–6 s per upscale, queue included.
    typical_seconds: float = 7.0
    typical_upscale_seconds: float = 4.5


ASSUMED = Assumptions()


class Endpoint(StrEnum):
    TXT2IMG = "/aigc/txt2img"  # [seed]
    IMG2IMG = "/aigc/img2img"  # [public]
    IMG2ACG = ASSUMED.anime_path  # [assume]
    UPSCALE = ASSUMED.upscale_path  # [assume]
    QUERY = "/aigc/query-image"  # [public]


TASKS: dict[Endpoint, str] = {
    Endpoint.TXT2IMG: "txt2img.sd",
    Endpoint.IMG2IMG: "img2img.sd",
    Endpoint.IMG2ACG: ASSUMED.anime_task,
    Endpoint.UPSCALE: ASSUMED.upscale_task,
}

CAPABILITY_ENDPOINTS: dict[Capability, Endpoint] = {
    Capability.TXT2IMG: Endpoint.TXT2IMG,
    Capability.IMG2IMG: Endpoint.IMG2IMG,
    Capability.ANIME: Endpoint.IMG2ACG,
    Capability.UPSCALE: Endpoint.UPSCALE,
}


# --------------------------------------------------------------------------- #
# Job ids: the vendor's uid behind a prefix. One query endpoint serves every
# task, and a callback names only the uid, so the id carries nothing else.
# --------------------------------------------------------------------------- #

JOB_IDS = envelope.JobIds("uid", "apispace")
make_job_id, split_job_id = JOB_IDS.make, JOB_IDS.split


# --------------------------------------------------------------------------- #
# Pure transforms: request bodies
# --------------------------------------------------------------------------- #


def _snap(value: float, a: Assumptions) -> int:
    """To the nearest size multiple, within [min_side, max_side]."""
    snapped = int(round(value / a.size_multiple)) * a.size_multiple
    return max(a.min_side, min(a.max_side, snapped))


def fit_size(width: float, height: float, a: Assumptions = ASSUMED) -> tuple[int, int]:
    """Scale a shape so that the short side is the standard 512 unless the
    long side would pass 768; then snap both sides to multiples of 64."""
    width, height = max(width, 1.0), max(height, 1.0)
    scale = min(a.standard_side / min(width, height), a.max_side / max(width, height))
    return _snap(width * scale, a), _snap(height * scale, a)


def txt2img_size(params: GenerationParams, a: Assumptions = ASSUMED) -> tuple[int, int]:
    """An explicit --size is kept (shrunk to fit 768 if needed); otherwise the
    aspect ratio at the vendor's standard size."""
    if params.width and params.height:
        scale = min(1.0, a.max_side / max(params.width, params.height))
        return _snap(params.width * scale, a), _snap(params.height * scale, a)
    left, _, right = params.aspect_ratio.partition(":")
    try:
        ratio_w, ratio_h = float(left), float(right)
    except ValueError:
        ratio_w = ratio_h = 1.0
    if not (ratio_w > 0 and ratio_h > 0 and math.isfinite(ratio_w / ratio_h)):
        ratio_w = ratio_h = 1.0
    return fit_size(ratio_w, ratio_h, a)


def fidelity(strength: float | None, default: float) -> float:
    """GenerationParams.strength (how much to change) → fidelity (how much
    to keep), 0..1."""
    if strength is None:
        return default
    change = strength / 100 if strength > 1 else strength
    return round(min(1.0, max(0.0, 1.0 - change)), 3)


def anime_style(params: GenerationParams, a: Assumptions = ASSUMED) -> str:
    """--model names the style: "cute", "Cute_style" and "CUTE_STYLE" all
    mean Cute_style; anything else is the default style."""
    wanted = (params.model or "").strip().lower()
    for style in ANIME_STYLES:
        if wanted in (style.lower(), style.lower().removesuffix("_style")):
            return style
    return a.default_anime_style


def _envelope(
    endpoint: Endpoint, params: dict[str, Any], notify_url: str | None, a: Assumptions
) -> dict[str, Any]:
    body: dict[str, Any] = {"task": TASKS[endpoint], "params": params}
    if a.mirror_params_top_level:
        body.update({k: v for k, v in params.items() if k not in body})
    body["notify_url"] = notify_url or ""
    return body


def build_txt2img_body(
    params: GenerationParams, notify_url: str | None = None, a: Assumptions = ASSUMED
) -> dict[str, Any]:
    width, height = txt2img_size(params, a)
    return _envelope(Endpoint.TXT2IMG, {
        "model": params.model or a.txt2img_model,
        "text": params.prompt,
        "w": width,
        "h": height,
        "guidance_scale": plain_number(a.default_guidance if params.cfg is None else params.cfg),
        "negative_prompt": params.negative_prompt,
        "sampler": a.default_sampler,
        "seed": -1 if params.seed is None else params.seed,
        "num_steps": params.steps or a.default_steps,
    }, notify_url, a)


def build_img2img_body(
    params: GenerationParams, image_url: str, notify_url: str | None = None,
    a: Assumptions = ASSUMED,
) -> dict[str, Any]:
    body_params: dict[str, Any] = {
        "model": params.model or a.img2img_model,
        "text": params.prompt,
        "url": image_url,
    }
    if params.strength is not None:
        body_params["fidelity"] = fidelity(params.strength, a.default_fidelity)
    return _envelope(Endpoint.IMG2IMG, body_params, notify_url, a)


def build_anime_body(
    params: GenerationParams, image_url: str, notify_url: str | None = None,
    a: Assumptions = ASSUMED,
) -> dict[str, Any]:
    return _envelope(Endpoint.IMG2ACG, {
        "url": image_url,
        # [public] the vendor's own img2acg page names the input image_url.
        "image_url": image_url,
        "style": anime_style(params, a),
        "fidelity": fidelity(params.strength, a.default_fidelity),
    }, notify_url, a)


def build_upscale_body(
    image_url: str, notify_url: str | None = None, a: Assumptions = ASSUMED
) -> dict[str, Any]:
    return _envelope(
        Endpoint.UPSCALE, {"url": image_url, "is_anime": a.upscale_is_anime}, notify_url, a
    )


def query_body(uid: str) -> dict[str, str]:
    return {"uid": uid}


# --------------------------------------------------------------------------- #
# Pure transforms: responses and errors
# --------------------------------------------------------------------------- #


def parse_submit(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> str:
    uid = envelope.checked_data(body, a).get("uid")
    if not isinstance(uid, str) or not uid.strip():
        raise MalformedResponse("submit answer has no uid")
    return uid.strip()


def _truthy(value: Any) -> bool | None:
    """JSON true/false, or the seed's Python-looking True/False, or 1/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0"):
        return value.strip().lower() in ("true", "1")
    return None


def result_urls(data: Mapping[str, Any]) -> list[str]:
    """img_urls when present, else cdn, else cos (the same image, slower host)."""
    listed = data.get("img_urls")
    urls = distinct_urls(listed if isinstance(listed, list) else [])
    return urls or distinct_urls([data.get("cdn") or data.get("cos")])


def finished_state(data: Mapping[str, Any], a: Assumptions = ASSUMED) -> JobState:
    """A finished job: `safe: false` is moderation even though it succeeded
    (the vendor refunds it [seed]); no URL at all is a failure."""
    reason = str(data.get("reason") or "")
    if _truthy(data.get("safe")) is False:
        return JobState(
            status=JobStatus.FAILED,
            error_kind=ContentRejected.kind,
            error_detail=reason or "image failed moderation (safe: false)",
        )
    urls = result_urls(data)
    if not urls:
        return JobState(status=JobStatus.FAILED, error_kind=ProviderError.kind,
                        error_detail=reason or "finished without an image")
    return JobState(
        status=JobStatus.SUCCEEDED,
        progress=1.0,
        images=[ResultImage(url=url) for url in urls],
        # An upscale of this result can start from the vendor's own URL.
        vendor_data={"result_urls": urls},
    )


def parse_query_data(data: Mapping[str, Any], a: Assumptions = ASSUMED) -> JobState:
    """query-image `data` → JobState; not_found → JobNotFound."""
    status = text_of(data.get("status")).lower()
    reason = text_of(data.get("reason"))
    if status == "not_found":
        raise JobNotFound("status not_found")
    if status == "pending":
        return JobState(status=JobStatus.QUEUED, queue_position=whole_number(data.get("pending")))
    if status == "finished":
        return finished_state(data, a)
    if status in a.failed_statuses:
        return JobState(status=JobStatus.FAILED, error_kind=envelope.failure_kind(reason, a),
                        error_detail=reason or status)
    if status != "working":
        log.warning("apispace: unknown job status %r, treated as running", status)
    return JobState(status=JobStatus.RUNNING)


def parse_query(body: Mapping[str, Any], a: Assumptions = ASSUMED) -> JobState:
    """A query-image answer → JobState. The queue position `pending` stands
    beside `status` in `data`, or at the top level beside `code` [public]."""
    data = envelope.checked_data(body, a)
    if whole_number(data.get("pending")) is None and "pending" in body:
        data = {**data, "pending": body["pending"]}
    return parse_query_data(data, a)


def parse_callback_payload(
    payload: Mapping[str, Any], a: Assumptions = ASSUMED
) -> tuple[str, JobState]:
    """(job id, state) from {"uid", "success", "data": {...}} [seed]."""
    data = payload.get("data")
    if not isinstance(data, Mapping):
        data = {}
    uid = payload.get("uid") or data.get("uid")
    if not isinstance(uid, str) or not uid.strip():
        raise MalformedResponse("callback names no uid")
    success = _truthy(payload.get("success"))
    if success is None:
        raise MalformedResponse("callback has no success flag")
    if success:
        return make_job_id(uid.strip()), finished_state(data, a)
    reason = str(data.get("reason") or "failed")
    return make_job_id(uid.strip()), JobState(
        status=JobStatus.FAILED, error_kind=envelope.failure_kind(reason, a), error_detail=reason
    )


# --------------------------------------------------------------------------- #
# The provider
# --------------------------------------------------------------------------- #


class Apispace(HttpProvider):
    id: ClassVar[str] = "apispace"
    title: ClassVar[str] = "APISpace AI painting"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(CAPABILITY_ENDPOINTS)
    needs_public_url: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.IMG2IMG, Capability.ANIME, Capability.UPSCALE}
    )
    supports_callbacks: ClassVar[bool] = True
    callback_answer: ClassVar[dict[str, Any]] = dict(ASSUMED.callback_answer)
    typical_seconds = ASSUMED.typical_seconds
    max_images: ClassVar[int] = 1  # [seed] one image per call
    image_input = "url"
    credentials = Credentials.one("apispace_token")
    base_url_setting = "apispace_base_url"
    assumed: Assumptions = ASSUMED

    def make_auth(self, secrets: Mapping[str, str]) -> httpx.Auth:
        # [seed] the token and its type, both as headers.
        return HeaderAuth({"X-APISpace-Token": secrets["apispace_token"],
                           "Authorization-Type": "apikey"})

    def error_for_status(self, response: httpx.Response, endpoint: str) -> ProviderError | None:
        return envelope.error_for_status(response, self.assumed)

    # ---- submit ----------------------------------------------------------

    async def submit(self, spec: JobSpec) -> Submitted:
        endpoint, body = self.request_for(spec)
        uid = await self.call(endpoint, lambda answer: parse_submit(answer, self.assumed),
                              payload=body)
        eta = (self.assumed.typical_upscale_seconds if endpoint is Endpoint.UPSCALE
               else self.assumed.typical_seconds)
        return Submitted(job_id=make_job_id(uid), eta_seconds=eta)

    def request_for(self, spec: JobSpec) -> tuple[Endpoint, dict[str, Any]]:
        """(endpoint, body); BadRequest before any HTTP when the spec cannot
        be served."""
        a, params, notify = self.assumed, spec.params, spec.callback_url
        match spec.capability:
            case Capability.TXT2IMG:
                return Endpoint.TXT2IMG, build_txt2img_body(params, notify, a)
            case Capability.IMG2IMG:
                return Endpoint.IMG2IMG, build_img2img_body(params, source_url(spec), notify, a)
            case Capability.ANIME:
                return Endpoint.IMG2ACG, build_anime_body(params, source_url(spec), notify, a)
            case Capability.UPSCALE:
                return Endpoint.UPSCALE, build_upscale_body(source_url(spec), notify, a)
        raise BadRequest(f"apispace cannot do {spec.capability}")

    # ---- poll / callbacks -----------------------------------------------

    async def poll(self, job_id: str) -> JobState:
        uid = split_job_id(job_id)
        return await self.call(Endpoint.QUERY, lambda body: parse_query(body, self.assumed),
                               payload=query_body(uid))

    def parse_callback(self, payload: Mapping[str, Any], job_id: str) -> JobState:
        named, state = parse_callback_payload(payload, self.assumed)
        if named != job_id:
            raise JobNotFound("the callback names another job")
        return state


def source_url(spec: JobSpec) -> str:
    """The input image's URL: our /media link; for an action on one of this
    vendor's own results, its result URL will do when we have no link."""
    own = _own_result_url(spec)
    if own and not (spec.images and spec.images[0].url):
        return own
    return input_url(spec, 0, Apispace.id)


def _own_result_url(spec: JobSpec) -> str | None:
    """source.vendor_data["result_urls"] (set by finished_state) at the
    source image's index; the dispatcher passes a source only when native."""
    if spec.source is None:
        return None
    urls = spec.source.vendor_data.get("result_urls")
    if not isinstance(urls, list) or not urls:
        return None
    index = spec.source.index if 0 <= spec.source.index < len(urls) else 0
    return str(urls[index]) or None
