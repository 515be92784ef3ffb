"""openai: the OpenAI Images API, and every relay that copies it (new-api,
one-api, LiteLLM proxy, the aggregators serving Flux, Seedream, Qwen-Image
under the same routes).

Layout, top to bottom:
  models             what each image model takes (sizes, n, response_format)
  pure transforms    spec → JSON / multipart fields; answer → state; error body → exception
  OpenAI             the HttpProvider: hooks, and the calls run in the background

The API is synchronous: a call answers when the images are made, after a
minute or more at high quality. Each job is therefore our own call running
in this process (providers.inprocess): the dispatcher is free again within
seconds, and a restart loses the call, so the engine runs the task again,
once. OpenAI may have made, and billed, the lost image; nobody can fetch it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from providers.common import matches, text_of
from providers.credentials import Credentials
from providers.errors import (AuthError, BadRequest, ContentRejected, MalformedResponse,
                              ProviderError, QuotaExceeded, RateLimited, Unavailable,
                              parse_retry_after)
from providers.http import HeaderAuth, HttpProvider, status_error
from providers.images import ShrinkError, has_alpha, square_png
from providers.inprocess import ANSWER_WITHIN_SECONDS, InProcessJobs, JobListener
from providers.types import (Capability, GenerationParams, InputImage, JobSpec, JobState,
                             JobStatus, ResultImage, Submitted)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- #
# Models [public: OpenAI API reference, Images]. A model we do not know is a
# relay's (flux-1-schnell, seedream-3.0, qwen-image, ...): it gets RELAY.
# --------------------------------------------------------------------------- #

TEXT_AND_EDITS = frozenset({Capability.TXT2IMG, Capability.EDIT, Capability.IMG2IMG, Capability.VARIATION})


@dataclass(frozen=True)
class Model:
    sizes: tuple[str, ...] = ()  # the only sizes it takes; () = any WxH (relays)
    max_n: int = 1  # images per call; more are several calls
    response_format: str | None = None  # sent as is; None = never sent
    capabilities: frozenset[Capability] = TEXT_AND_EDITS
    max_edit_images: int = 1  # gpt-image-1: several, as image[]
    edit_square_png: bool = False  # dall-e-2: square PNG < 4 MB only
    variations_endpoint: bool = False  # /images/variations (dall-e-2 only)
    max_prompt_chars: int | None = None
    typical_seconds: float = 30.0
    extra: Mapping[str, Any] = field(default_factory=dict)  # always sent (none by default)


GPT_IMAGE = Model(
    # Answers b64_json always and refuses response_format.
    sizes=("1024x1024", "1536x1024", "1024x1536"), max_n=10,
    max_edit_images=16, max_prompt_chars=32000, typical_seconds=50.0,
)
DALL_E_3 = Model(
    # n = 1 only, returns a revised_prompt; no edits, no variations.
    sizes=("1024x1024", "1792x1024", "1024x1792"), max_n=1, response_format="b64_json",
    capabilities=frozenset({Capability.TXT2IMG}), max_prompt_chars=4000, typical_seconds=15.0,
)
DALL_E_2 = Model(
    sizes=("256x256", "512x512", "1024x1024"), max_n=10, response_format="b64_json",
    edit_square_png=True, variations_endpoint=True, max_prompt_chars=1000, typical_seconds=10.0,
)
# Relays answer url or b64_json as they like; sizes are sent as asked
# (--size) or fitted to 1024 on the long side in multiples of 64.
RELAY = Model()
RELAY_LONG_SIDE = 1024
RELAY_SIZE_MULTIPLE = 64

DALL_E_2_MAX_BYTES = 4 * 1024 * 1024 - 1  # "less than 4MB"
NEGATIVE_PREFIX = "Avoid: "  # no negative prompt in the API: it is said in words


def model_for(name: str) -> Model:
    lowered = name.lower()
    if lowered.startswith(("gpt-image", "chatgpt-image")):
        return GPT_IMAGE
    if lowered.startswith("dall-e-3"):
        return DALL_E_3
    if lowered.startswith("dall-e-2"):
        return DALL_E_2
    return RELAY


# --------------------------------------------------------------------------- #
# Pure transforms
# --------------------------------------------------------------------------- #


def nearest_size(params: GenerationParams, model: Model) -> str:
    """--size or --ar as a size the model takes: the one closest in shape,
    then closest in area to an explicit --size, else the largest; any WxH
    for a relay."""
    if not model.sizes:
        width, height = params.size_for(RELAY_LONG_SIDE, RELAY_SIZE_MULTIPLE)
        return f"{width}x{height}"
    want_area: float | None
    if params.width and params.height:
        want_ratio, want_area = params.width / params.height, float(params.width * params.height)
    else:
        w, h = (int(p) for p in params.aspect_ratio.split(":"))
        want_ratio, want_area = w / h, None

    def distance(size: str) -> tuple[float, float]:
        w, h = (int(p) for p in size.split("x"))
        area = -w * h if want_area is None else abs(w * h - want_area)
        return round(abs(math.log((w / h) / want_ratio)), 6), area

    return min(model.sizes, key=distance)


def prompt_text(params: GenerationParams) -> str:
    if params.negative_prompt:
        return f"{params.prompt}\n\n{NEGATIVE_PREFIX}{params.negative_prompt}"
    return params.prompt


def calls_for(n: int, model: Model) -> list[int]:
    """``n`` images as the n of each call: 4 on dall-e-3 is four calls of 1."""
    counts = []
    while n > 0:
        counts.append(min(n, model.max_n))
        n -= counts[-1]
    return counts


def generation_body(spec: JobSpec, model_name: str, model: Model, n: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model_name, "prompt": prompt_text(spec.params), "n": n,
        "size": nearest_size(spec.params, model), **model.extra,
    }
    if model.response_format:
        body["response_format"] = model.response_format
    return body


def edit_fields(spec: JobSpec, model_name: str, model: Model, n: int) -> dict[str, str]:
    fields = {"model": model_name, "prompt": prompt_text(spec.params) or "A variation of this image",
              "n": str(n), "size": nearest_size(spec.params, model)}
    if model.response_format:
        fields["response_format"] = model.response_format
    return fields


def split_mask(images: Sequence[InputImage]) -> tuple[list[InputImage], InputImage | None]:
    """The images to edit and the mask, if one was given: a last image that
    has transparency and the first image's size (a PNG sent as a file)."""
    if len(images) >= 2:
        last, first = images[-1], images[0]
        if (last.width, last.height) == (first.width, first.height) and has_alpha(last.data):
            return list(images[:-1]), last
    return list(images), None


def upload(name: str, image: InputImage, square_png_limit: int | None = None) -> tuple[str, bytes, str]:
    if square_png_limit is not None:
        try:
            return f"{name}.png", square_png(image.data, square_png_limit), "image/png"
        except ShrinkError as exc:
            raise BadRequest(f"input image: {exc}") from None
    extension = image.mime.rsplit("/", 1)[-1].replace("jpeg", "jpg")
    return f"{name}.{extension}", image.data, image.mime


def edit_files(
    images: Sequence[InputImage], mask: InputImage | None, model: Model
) -> list[tuple[str, tuple[str, bytes, str]]]:
    limit = DALL_E_2_MAX_BYTES if model.edit_square_png else None
    if model.max_edit_images > 1:
        files = [("image[]", upload(f"image{i + 1}", img)) for i, img in enumerate(images[: model.max_edit_images])]
    else:
        files = [("image", upload("image", images[0], limit))]
    if mask is not None:
        files.append(("mask", upload("mask", mask, limit)))
    return files


def read_images(body: Mapping[str, Any]) -> JobState:
    """The answer: ``data`` of b64_json or url items (dall-e-3 adds a
    revised_prompt, shown in the caption)."""
    items = body.get("data")
    if not isinstance(items, list) or not items:
        raise MalformedResponse("no data in the answer")
    images: list[ResultImage] = []
    revised = ""
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("b64_json"):
            try:
                images.append(ResultImage(data=base64.b64decode(item["b64_json"], validate=True)))
            except ValueError:
                raise MalformedResponse("b64_json is not base64") from None
        elif isinstance(item.get("url"), str) and item["url"].startswith(("http://", "https://")):
            images.append(ResultImage(url=item["url"]))
        revised = revised or text_of(item.get("revised_prompt"))
    if not images:
        raise MalformedResponse("no image in the answer")
    vendor_data = {"revised_prompt": revised} if revised else {}
    return JobState(status=JobStatus.SUCCEEDED, progress=1.0, images=images, vendor_data=vendor_data)


QUOTA_CODES = ("insufficient_quota", "billing_hard_limit_reached", "billing_not_active")
REJECTED_CODES = ("content_policy_violation", "moderation_blocked")
AUTH_CODES = ("invalid_api_key", "invalid_organization", "account_deactivated")
# Relays add their own codes in the same envelope (new-api:
# "insufficient_user_quota", "pre_consume_token_quota_failed", ...).
QUOTA_WORDS = ("quota", "billing", "credit", "余额", "额度")
REJECTED_WORDS = ("content_policy", "moderation", "safety", "sensitive", "敏感", "违规")


def error_from_body(status: int, headers: Mapping[str, str], body: Any) -> ProviderError | None:
    """``{"error": {message, type, param, code}}`` by ``code``, then ``type``,
    then the HTTP status."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return status_error(status, headers)
    code, kind = text_of(error.get("code")).lower(), text_of(error.get("type")).lower()
    message = f"HTTP {status} {code or kind}: {text_of(error.get('message'))[:300]}"
    if code in QUOTA_CODES or kind == "insufficient_quota":
        return QuotaExceeded(message)
    if code in REJECTED_CODES or (kind == "image_generation_user_error" and matches(message, REJECTED_WORDS)):
        return ContentRejected(message)
    if code in AUTH_CODES:
        return AuthError(message)
    if matches(code, QUOTA_WORDS):  # a relay's own quota codes, even on 403 (new-api)
        return QuotaExceeded(message)
    if status in (401, 403):
        return AuthError(message)
    if status == 429:
        return RateLimited(message, retry_after=retry_after(headers))
    if matches(code, REJECTED_WORDS):
        return ContentRejected(message)
    if status >= 500:
        return Unavailable(message, retry_after=parse_retry_after(headers.get("retry-after")))
    return BadRequest(message)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``retry-after`` seconds, else the sooner of ``x-ratelimit-reset-*``
    ("1s", "6m0s", "20ms")."""
    seconds = parse_retry_after(headers.get("retry-after"))
    if seconds is not None:
        return seconds
    resets = [duration(headers.get(name, "")) for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")]
    known = [value for value in resets if value is not None]
    return min(known) if known else None


def duration(text: str) -> float | None:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text.strip())
    if not parts:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(value) * scale[unit] for value, unit in parts)


# --------------------------------------------------------------------------- #
# The adapter
# --------------------------------------------------------------------------- #


class OpenAI(HttpProvider):
    id = "openai"
    title = "OpenAI"
    capabilities: ClassVar[frozenset[Capability]] = TEXT_AND_EDITS
    credentials: ClassVar[Credentials] = Credentials.one("openai_api_key")
    base_url_setting: ClassVar[str] = "openai_base_url"
    model_setting: ClassVar[str | None] = "openai_image_model"
    # A high-quality gpt-image-1 call takes a minute or two.
    timeout: ClassVar[httpx.Timeout] = httpx.Timeout(300.0, connect=10.0)
    image_input = "bytes"
    jobs_in_process: ClassVar[bool] = True
    max_concurrent_jobs: ClassVar[int] = 8  # calls at once; the rest wait in this process
    answer_within: ClassVar[float] = ANSWER_WITHIN_SECONDS  # what fails sooner fails at submit

    def __init__(self, client: httpx.AsyncClient, *, model: str, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.model_name = model
        self.model = model_for(model)
        self.max_prompt_chars = self.model.max_prompt_chars
        self.typical_seconds = self.model.typical_seconds
        self.jobs = InProcessJobs(self.max_concurrent_jobs, self.answer_within)
        # A job split into several calls (dall-e-3's n = 1) counts each call.
        self._call_slots = asyncio.Semaphore(self.max_concurrent_jobs)

    @classmethod
    def options_from(cls, settings: Any) -> dict[str, Any]:
        return {"model": settings.openai_image_model}

    def details(self) -> str:
        return f"model {self.model_name}"

    def make_auth(self, secrets: Mapping[str, str]) -> httpx.Auth:
        return HeaderAuth({"Authorization": f"Bearer {secrets['openai_api_key']}"})

    def available_capabilities(self, has_public_url: bool) -> frozenset[Capability]:
        return self.model.capabilities

    def error_for_status(self, response: httpx.Response, endpoint: str) -> ProviderError | None:
        if response.status_code < 400:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        return error_from_body(response.status_code, response.headers, body)

    # ---- jobs --------------------------------------------------------------

    def listen(self, listener: JobListener) -> None:
        self.jobs.listener = listener

    async def aclose(self) -> None:
        await self.jobs.aclose()

    async def submit(self, spec: JobSpec) -> Submitted:
        if spec.capability not in self.model.capabilities:
            raise BadRequest(f"{self.model_name} cannot do {spec.capability}")
        if spec.capability is not Capability.TXT2IMG and not spec.images:
            raise BadRequest(f"{spec.capability} needs an input image")
        job_id = spec.business_id
        state = await self.jobs.start(job_id, lambda: self._make(spec))
        return Submitted(job_id=job_id, eta_seconds=self.typical_seconds, state=state)

    async def poll(self, job_id: str) -> JobState:
        return self.jobs.state(job_id)

    async def cancel(self, job_id: str) -> bool:
        return self.jobs.cancel(job_id)  # OpenAI has no cancel: the connection is closed

    async def _make(self, spec: JobSpec) -> JobState:
        """All the calls of one job; images from the calls that worked (a
        partial result is better than paying for images nobody sees)."""
        counts = calls_for(spec.params.n, self.model)
        results = await asyncio.gather(*(self._bounded_call(spec, n) for n in counts), return_exceptions=True)
        states = [r for r in results if isinstance(r, JobState)]
        if not states:
            raise next(r for r in results if isinstance(r, BaseException))
        images = [img for state in states for img in state.images]
        if len(states) < len(counts):  # say so in the logs: the user gets fewer than asked
            log.warning("%s: %d of %d calls failed; delivering %d image(s)", self.id,
                        len(counts) - len(states), len(counts), len(images))
        return states[0].model_copy(update={"images": images})

    async def _bounded_call(self, spec: JobSpec, n: int) -> JobState:
        async with self._call_slots:
            return await self._one_call(spec, n)

    async def _one_call(self, spec: JobSpec, n: int) -> JobState:
        model = self.model
        if spec.capability is Capability.TXT2IMG:
            return await self.call(
                "/images/generations", read_images,
                payload=generation_body(spec, self.model_name, model, n),
            )
        if spec.capability is Capability.VARIATION and model.variations_endpoint:
            fields = {"model": self.model_name, "n": str(n), "size": nearest_size(spec.params, model)}
            if model.response_format:
                fields["response_format"] = model.response_format
            return await self.call(
                "/images/variations", read_images, data=fields,
                files=[("image", upload("image", spec.images[0], DALL_E_2_MAX_BYTES))],
            )
        images, mask = split_mask(spec.images)
        return await self.call(
            "/images/edits", read_images,
            data=edit_fields(spec, self.model_name, model, n), files=edit_files(images, mask, model),
        )
