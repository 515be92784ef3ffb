"""a1111: an AUTOMATIC1111 / Forge stable-diffusion-webui started with
``--api`` (optionally ``--api-auth user:pass``).

    txt2img   POST /sdapi/v1/txt2img             answers when the images are done
    img2img   POST /sdapi/v1/img2img             init_images as base64, denoising_strength
    upscale   POST /sdapi/v1/extra-single-image  {image, upscaling_resize, upscaler_1}
    progress  GET  /sdapi/v1/progress            the one job running now, with its picture
    models    GET  /sdapi/v1/sd-models, /sdapi/v1/options

The server runs one job at a time and makes the others wait inside it,
where nobody can see their place. So the bot sends it one call at a time
(providers.inprocess, one slot): the calls waiting here have a true queue
position, and the server's /progress is always about our running call.
Like OpenAI's, a call is ours: lost in a restart, then run again once.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from providers.base import PollPolicy
from providers.common import input_image, text_of
from providers.credentials import Credentials, secret_value
from providers.errors import BadRequest, MalformedResponse, ProviderError, Unavailable
from providers.http import HttpProvider, status_error
from providers.inprocess import InProcessJobs, JobListener
from providers.types import (Capability, GenerationParams, InputImage, JobSpec, JobState,
                             JobStatus, ResultImage, Submitted)

LONG_SIDE = 1024  # SDXL's; an SD 1.5 checkpoint is better asked with --size 512x512
SIZE_MULTIPLE = 8
MAX_SIDE = 2048
DEFAULT_STEPS = 20
DEFAULT_CFG = 7.0
EDIT_STRENGTH = 0.6  # img2img: how much of the photo may change
UPSCALER = "R-ESRGAN 4x+"  # ships with the webui
UPSCALE_FACTOR = 2
MODELS_CACHE_SECONDS = 60.0
SIDE_CALL_TIMEOUT = httpx.Timeout(10.0, connect=5.0)  # progress, interrupt, models: never the job's 600 s
SILENT_BEFORE_FALLBACK = 3  # running, yet /internal/progress knows nothing: an older webui


def fitted(width: int, height: int, long_side: int = LONG_SIDE) -> tuple[int, int]:
    """A photo's shape at ``long_side`` on its longer edge, in multiples of 8."""
    scale = long_side / max(width, height)
    return (max(SIZE_MULTIPLE, round(width * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE),
            max(SIZE_MULTIPLE, round(height * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE))


def common_fields(params: GenerationParams, width: int, height: int) -> dict[str, Any]:
    if max(width, height) > MAX_SIDE:
        raise BadRequest(f"{width}x{height} is larger than {MAX_SIDE} px")
    fields: dict[str, Any] = {
        "prompt": params.prompt, "negative_prompt": params.negative_prompt,
        "seed": params.seed if params.seed is not None else -1,
        "steps": params.steps or DEFAULT_STEPS, "cfg_scale": params.cfg or DEFAULT_CFG,
        "width": width, "height": height, "batch_size": params.n, "n_iter": 1,
        "send_images": True, "save_images": False,
    }
    if params.model:  # a checkpoint title from /sdapi/v1/sd-models, for this job only
        fields["override_settings"] = {"sd_model_checkpoint": params.model}
        fields["override_settings_restore_afterwards"] = True
    return fields


def b64(image: InputImage) -> str:
    return base64.b64encode(image.data).decode("ascii")


def txt2img_body(params: GenerationParams) -> dict[str, Any]:
    width, height = params.size_for(LONG_SIDE, SIZE_MULTIPLE)
    return common_fields(params, width, height)


def img2img_body(spec: JobSpec) -> dict[str, Any]:
    image = input_image(spec, 0)
    params = spec.params
    width, height = (params.width, params.height) if params.width and params.height else fitted(image.width, image.height)
    body = common_fields(params, width, height)
    body["init_images"] = [b64(image)]
    body["denoising_strength"] = params.strength if params.strength is not None else EDIT_STRENGTH
    return body


def upscale_body(spec: JobSpec) -> dict[str, Any]:
    image = input_image(spec, 0)
    if max(image.width, image.height) * UPSCALE_FACTOR > 2 * MAX_SIDE:
        raise BadRequest(f"{image.width}x{image.height} is too large to upscale ×{UPSCALE_FACTOR}")
    return {"image": b64(image), "upscaling_resize": UPSCALE_FACTOR, "upscaler_1": UPSCALER}


def decoded(value: Any) -> bytes:
    text = text_of(value)
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedResponse("an image is not base64") from None


def read_generation(body: Mapping[str, Any]) -> JobState:
    """``{"images": [base64...], "info": "<JSON: seed, all_seeds, ...>"}``."""
    images = body.get("images")
    if not isinstance(images, list) or not images:
        raise MalformedResponse("no images in the answer")
    try:
        info = json.loads(body.get("info") or "{}")
    except ValueError:
        info = {}
    seeds = info.get("all_seeds") if isinstance(info, dict) else None
    seeds = seeds if isinstance(seeds, list) else []
    results = [
        ResultImage(data=decoded(image), seed=seeds[i] if i < len(seeds) and isinstance(seeds[i], int) else None)
        for i, image in enumerate(images)
    ]
    return JobState(status=JobStatus.SUCCEEDED, progress=1.0, images=results)


def read_models(body: Any) -> list[str]:
    if not isinstance(body, list):
        raise MalformedResponse("sd-models is not a list")
    return [text_of(m.get("title")) for m in body if isinstance(m, Mapping) and m.get("title")]


def read_upscale(body: Mapping[str, Any]) -> JobState:
    if not body.get("image"):
        raise MalformedResponse("no image in the answer")
    return JobState(status=JobStatus.SUCCEEDED, progress=1.0, images=[ResultImage(data=decoded(body["image"]))])


QUEUE_TEXT = re.compile(r"In queue: (\d+)/\d+")


def read_task_progress(body: Mapping[str, Any]) -> JobState:
    """``/internal/progress`` for our task id: running (with progress, ETA
    and the live picture), or waiting inside the server behind someone
    else's job (its place from "In queue: k/n")."""
    if body.get("active"):
        progress, eta, preview = body.get("progress"), body.get("eta"), body.get("live_preview")
        return JobState(
            status=JobStatus.RUNNING,
            progress=float(progress) if isinstance(progress, int | float) and 0 < progress <= 1 else None,
            eta_seconds=float(eta) if isinstance(eta, int | float) and eta > 0 else None,
            preview=decoded(preview) if preview else None,
            vendor_data={"active": True},  # the webui is working on it (maybe still at 0 %)
        )
    if body.get("queued"):
        match = QUEUE_TEXT.search(text_of(body.get("textinfo")))
        return JobState(status=JobStatus.QUEUED, queue_position=int(match[1]) if match else None)
    return JobState(status=JobStatus.RUNNING)  # about to start, or answering now


def read_progress(body: Mapping[str, Any]) -> JobState:
    """The running job's progress, ETA and picture (while it samples)."""
    progress = body.get("progress")
    eta = body.get("eta_relative")
    preview = body.get("current_image")
    return JobState(
        status=JobStatus.RUNNING,
        progress=float(progress) if isinstance(progress, int | float) and 0 < progress <= 1 else None,
        eta_seconds=float(eta) if isinstance(eta, int | float) and eta > 0 else None,
        preview=decoded(preview) if preview else None,
    )


def error_from(response: httpx.Response) -> ProviderError | None:
    status = response.status_code
    if status < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = ""
    if isinstance(body, dict):
        detail = " ".join(text_of(body.get(key)) for key in ("error", "detail", "errors") if body.get(key))[:300]
    if status == 422:  # FastAPI refused the request itself
        return BadRequest(f"HTTP 422: {detail}")
    if status == 500 and "OutOfMemory" in detail:
        return Unavailable(f"out of GPU memory: {detail}")
    error = status_error(status, response.headers)
    if error is not None and detail:
        return type(error)(f"HTTP {status}: {detail}", retry_after=error.retry_after)
    return error


class A1111(HttpProvider):
    id = "a1111"
    title = "Stable Diffusion (AUTOMATIC1111)"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.TXT2IMG, Capability.IMG2IMG, Capability.EDIT, Capability.VARIATION, Capability.UPSCALE,
    })
    credentials: ClassVar[Credentials] = Credentials.one("a1111_base_url")
    base_url_setting: ClassVar[str] = "a1111_base_url"
    image_input = "bytes"
    jobs_in_process: ClassVar[bool] = True
    typical_seconds = 20.0
    # A minute or two for a large batch on a small GPU.
    timeout: ClassVar[httpx.Timeout] = httpx.Timeout(600.0, connect=10.0)
    poll_policy: ClassVar[PollPolicy] = PollPolicy(min_interval_seconds=2.0)

    def __init__(self, client: httpx.AsyncClient, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.jobs = InProcessJobs(concurrency=1)  # the server's own one-at-a-time, made visible
        self.task_progress = True  # /internal/progress (webui ≥ 1.6, Forge) until it says 404
        self._models: list[str] = []
        self._untracked: set[str] = set()  # upscales: /sdapi/v1/progress only
        self._silent: dict[str, int] = {}  # running jobs /internal/progress says nothing about
        self._models_at = -MODELS_CACHE_SECONDS

    @classmethod
    def from_settings(cls, settings: Any, client: httpx.AsyncClient) -> A1111 | None:
        """Enabled by its base URL; ``A1111_AUTH=user:pass`` when the server has --api-auth."""
        base_url = text_of(getattr(settings, "a1111_base_url", "")).rstrip("/")
        if not base_url:
            return None
        auth = secret_value(getattr(settings, "a1111_auth", None))
        return cls(client, secrets={"a1111_auth": auth} if auth else {}, base_url=base_url)

    @classmethod
    def secret_setting(cls) -> str | None:
        return "a1111_auth"

    def make_auth(self, secrets: Mapping[str, str]) -> httpx.Auth | None:
        auth = secrets.get("a1111_auth")
        if not auth:
            return None
        user, _, password = auth.partition(":")
        return httpx.BasicAuth(user, password)

    def error_for_status(self, response: httpx.Response, endpoint: str) -> ProviderError | None:
        return error_from(response)

    # ---- jobs --------------------------------------------------------------

    def listen(self, listener: JobListener) -> None:
        self.jobs.listener = listener

    async def aclose(self) -> None:
        await self.jobs.aclose()

    async def submit(self, spec: JobSpec) -> Submitted:
        match spec.capability:
            case Capability.TXT2IMG:
                endpoint, body, read = "/sdapi/v1/txt2img", txt2img_body(spec.params), read_generation
            case Capability.IMG2IMG | Capability.EDIT | Capability.VARIATION:
                endpoint, body, read = "/sdapi/v1/img2img", img2img_body(spec), read_generation
            case Capability.UPSCALE:
                endpoint, body, read = "/sdapi/v1/extra-single-image", upscale_body(spec), read_upscale
            case _:
                raise BadRequest(f"a1111 cannot do {spec.capability}")
        if read is read_generation:  # so /internal/progress can tell our job from others'
            body["force_task_id"] = spec.business_id
        else:
            self._untracked.add(spec.business_id)  # an upscale has no task id to ask about
        state = await self.jobs.start(spec.business_id, lambda: self.call(endpoint, read, payload=body))
        return Submitted(job_id=spec.business_id, eta_seconds=self.typical_seconds, state=state)

    async def models(self) -> list[str]:
        """The checkpoints the webui has (their titles are what --model takes)."""
        now = time.monotonic()
        if now - self._models_at > MODELS_CACHE_SECONDS:
            try:
                self._models = await self.call("/sdapi/v1/sd-models", read_models, method="GET",
                                               allow_list=True, timeout=SIDE_CALL_TIMEOUT)
            except ProviderError:
                return self._models
            self._models_at = now
        return self._models

    async def cancel(self, job_id: str) -> bool:
        """A waiting call never reaches the server; the running one is
        interrupted there (closing our connection would not stop the GPU),
        and its answer, the picture so far, is dropped."""
        if not self.jobs.running(job_id):
            return self.jobs.cancel(job_id)
        if self.task_progress:
            state = await self._task_progress(job_id)
            if not state.vendor_data.get("active"):
                # Not sampling yet (behind someone else's job at a shared
                # webui): an interrupt would stop theirs. Drop our call.
                return self.jobs.cancel(job_id)
        await self.call("/sdapi/v1/interrupt", lambda body: None, payload={}, timeout=SIDE_CALL_TIMEOUT)
        return True

    async def probe(self) -> str:
        """Reachable, and which checkpoints --model can name (check)."""
        try:
            models = await self.call("/sdapi/v1/sd-models", read_models, method="GET", allow_list=True,
                                     timeout=SIDE_CALL_TIMEOUT)
        except ProviderError as exc:
            return f"unreachable ({exc.kind}: {exc.vendor_message[:80]})"
        shown = ", ".join(models[:5]) + (f" and {len(models) - 5} more" if len(models) > 5 else "")
        return f"reachable; checkpoints: {shown or 'none installed'}"

    async def _task_progress(self, job_id: str) -> JobState:
        return await self.call(
            "/internal/progress", read_task_progress, timeout=SIDE_CALL_TIMEOUT,
            payload={"id_task": job_id, "id_live_preview": -1, "live_preview": True},
        )

    async def poll(self, job_id: str) -> JobState:
        position = self.jobs.waiting_position(job_id)
        if position is not None:
            return JobState(status=JobStatus.QUEUED, queue_position=position)
        if not self.jobs.running(job_id):
            return self.jobs.state(job_id)  # finished, or JobNotFound after a restart
        try:
            if self.task_progress and job_id not in self._untracked:
                state = await self._task_progress(job_id)  # by our id: never someone else's job
                if state.status is JobStatus.RUNNING and not state.vendor_data.get("active"):
                    self._silent[job_id] = self._silent.get(job_id, 0) + 1
                    if self._silent[job_id] >= SILENT_BEFORE_FALLBACK:
                        self.task_progress = False  # it ignores force_task_id: ask the other way
                else:
                    self._silent.pop(job_id, None)
                return state
            return await self.call(  # older webui: the running job, ours while we send one at a time
                "/sdapi/v1/progress", read_progress, method="GET", timeout=SIDE_CALL_TIMEOUT,
                path="/sdapi/v1/progress?skip_current_image=false",
            )
        except Unavailable as exc:
            if self.task_progress and exc.vendor_message.startswith("HTTP 404"):
                self.task_progress = False  # no /internal/progress here: ask the other way next time
            return JobState(status=JobStatus.RUNNING)
        except ProviderError:
            return JobState(status=JobStatus.RUNNING)  # progress is a nicety; the call goes on
