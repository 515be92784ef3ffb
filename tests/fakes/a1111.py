"""A fake AUTOMATIC1111 / Forge stable-diffusion-webui API (``--api``), as
strict as the real one (BACKENDS.md "a1111"; modules/api/api.py, models.py,
progress.py and shared_state.py of webui 1.10):

    POST /sdapi/v1/txt2img, /sdapi/v1/img2img      answer only when the job is done
    POST /sdapi/v1/extra-single-image              upscaling (waits for the queue too)
    GET  /sdapi/v1/progress?skip_current_image=    the ONE job running now, whoever sent it
    POST /internal/progress {id_task, ...}         per task: active / queued / completed
    POST /sdapi/v1/interrupt, /sdapi/v1/skip
    GET  /sdapi/v1/sd-models, samplers, upscalers; GET/POST /sdapi/v1/options

The server runs one job at a time (webui's ``queue_lock``): concurrent
requests wait inside their HTTP call, in arrival order. A job takes
``steps * step_seconds`` per batch (``n_iter`` batches of ``batch_size``).
Request bodies are validated by pydantic models with webui's fields (all
Optional, unknown fields ignored), refusals in FastAPI's 422 shape; every
other error in webui's own envelope ``{"error", "detail", "body", "errors"}``
(HTTPException included, so a 401 carries no WWW-Authenticate header).

    fake = FakeA1111(auth=("user", "pass"), step_seconds=0.001)
    async with serve(fake.app) as base:
        ...
    fake.jobs[0].prompt, fake.started, fake.completed, fake.max_concurrent_running
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import io
import ipaddress
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional
from urllib.parse import urlsplit

from PIL import Image, ImageDraw, ImageFilter, PngImagePlugin
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from tests.fakes.vendor import (
    FakeVendor,
    JSONResponse,
    RecordedRequest,
    Request,
    Response,
    Route,
    Starlette,
    _rgb,
    html,
)

VERSION = "v1.10.1"

DEFAULT_MODELS: tuple[dict[str, Any], ...] = (
    {
        "title": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
        "model_name": "v1-5-pruned-emaonly",
        "hash": "6ce0161689",
        "sha256": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        "filename": "/stable-diffusion-webui/models/Stable-diffusion/"
                    "v1-5-pruned-emaonly.safetensors",
        "config": None,
    },
    {
        "title": "sd_xl_base_1.0.safetensors [31e35c80fc]",
        "model_name": "sd_xl_base_1.0",
        "hash": "31e35c80fc",
        "sha256": "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
        "filename": "/stable-diffusion-webui/models/Stable-diffusion/sd_xl_base_1.0.safetensors",
        "config": None,
    },
)

# (name, aliases, options); samplers[0] is the default webui falls back to. An
# options "scheduler" is the sampler's own default: naming it means "Automatic".
SAMPLERS: tuple[tuple[str, list[str], dict[str, Any]], ...] = (
    ("DPM++ 2M", ["k_dpmpp_2m"], {"scheduler": "karras"}),
    ("DPM++ SDE", ["k_dpmpp_sde"],
     {"second_order": True, "brownian_noise": True, "scheduler": "karras"}),
    ("DPM++ 2M SDE", ["k_dpmpp_2m_sde"], {"brownian_noise": True, "scheduler": "exponential"}),
    ("DPM++ 2M SDE Heun", ["k_dpmpp_2m_sde_heun"],
     {"brownian_noise": True, "solver_type": "heun", "scheduler": "exponential"}),
    ("DPM++ 2S a", ["k_dpmpp_2s_a"],
     {"uses_ensd": True, "second_order": True, "scheduler": "karras"}),
    ("DPM++ 3M SDE", ["k_dpmpp_3m_sde"], {"discard_next_to_last_sigma": True,
                                           "brownian_noise": True, "scheduler": "exponential"}),
    ("Euler a", ["k_euler_a", "k_euler_ancestral"], {"uses_ensd": True}),
    ("Euler", ["k_euler"], {}), ("LMS", ["k_lms"], {}), ("Heun", ["k_heun"], {"second_order": True}),
    ("DPM2", ["k_dpm_2"], {"discard_next_to_last_sigma": True, "second_order": True}),
    ("DPM2 a", ["k_dpm_2_a"],
     {"discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True}),
    ("DPM fast", ["k_dpm_fast"], {"uses_ensd": True}),
    ("DPM adaptive", ["k_dpm_ad"], {"uses_ensd": True}),
    ("Restart", ["restart"], {"scheduler": "karras", "second_order": True}),
    ("DDIM", ["ddim"], {}), ("DDIM CFG++", ["ddim_cfgpp"], {}), ("PLMS", ["plms"], {}),
    ("UniPC", ["unipc"], {}), ("LCM", ["k_lcm"], {}),
)
# (name, label): a sampler name ending in " <label>" names a scheduler too ("DPM++ 2M Karras").
SCHEDULERS: tuple[tuple[str, str], ...] = (
    ("automatic", "Automatic"), ("uniform", "Uniform"), ("karras", "Karras"),
    ("exponential", "Exponential"), ("polyexponential", "Polyexponential"),
    ("sgm_uniform", "SGM Uniform"), ("kl_optimal", "KL Optimal"),
    ("align_your_steps", "Align Your Steps"), ("simple", "Simple"), ("normal", "Normal"),
    ("ddim", "DDIM"), ("beta", "Beta"),
)
UPSCALERS: tuple[tuple[str, float], ...] = (
    ("None", 4.0), ("Lanczos", 4.0), ("Nearest", 4.0), ("ESRGAN_4x", 4.0), ("LDSR", 4.0),
    ("R-ESRGAN 4x+", 4.0), ("R-ESRGAN 4x+ Anime6B", 4.0), ("ScuNET", 4.0), ("SwinIR 4x", 4.0),
)

OOM_TEXT = ("CUDA out of memory. Tried to allocate 2.25 GiB. GPU 0 has a total capacity of "
            "11.99 GiB of which 1.02 GiB is free. Of the allocated memory 9.21 GiB is allocated "
            "by PyTorch, and 1.06 GiB is reserved by PyTorch but unallocated. If reserved but "
            "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF="
            "expandable_segments:True to avoid fragmentation.  See documentation for Memory "
            "Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)")


def webui_error(status: int, error: str, detail: Any = "", errors: str = "") -> JSONResponse:
    """webui's api_middleware envelope for every exception (HTTPException too)."""
    return JSONResponse({"error": error, "detail": detail, "body": "", "errors": errors}, status)


def http_exception(status: int, detail: str) -> JSONResponse:
    return webui_error(status, "HTTPException", detail, f"{status}: {detail}")


def oom() -> JSONResponse:
    return webui_error(500, "OutOfMemoryError", "", OOM_TEXT)


FAULTS: Mapping[str, Callable[[], Response]] = {
    "oom": oom,  # served at once for non-generation calls; generations fail when they run
    "busy": lambda: html(502, "<center><h1>502 Bad Gateway</h1></center><hr>"
                              "<center>nginx</center>"),
    "bad_gateway": lambda: html(502, "<center><h1>502 Bad Gateway</h1></center><hr>"
                                     "<center>nginx</center>"),
    "unavailable": lambda: html(503, "<center><h1>503 Service Temporarily Unavailable</h1>"
                                     "</center><hr><center>nginx</center>"),
}


# ---- request models (webui's PydanticModelGenerator output) -----------------

_COMMON: dict[str, tuple[Any, Any]] = {
    "prompt": (str, ""), "negative_prompt": (str, ""), "styles": (list, None),
    "seed": (int, -1), "subseed": (int, -1), "subseed_strength": (float, 0),
    "seed_resize_from_h": (int, -1), "seed_resize_from_w": (int, -1),
    "sampler_name": (str, None), "scheduler": (str, None),
    "batch_size": (int, 1), "n_iter": (int, 1), "steps": (int, 50), "cfg_scale": (float, 7.0),
    "width": (int, 512), "height": (int, 512), "restore_faces": (bool, None),
    "tiling": (bool, None), "do_not_save_samples": (bool, False),
    "do_not_save_grid": (bool, False), "eta": (float, None), "denoising_strength": (float, None),
    "s_min_uncond": (float, None), "s_churn": (float, None), "s_tmax": (float, None),
    "s_tmin": (float, None), "s_noise": (float, None), "override_settings": (dict, None),
    "override_settings_restore_afterwards": (bool, True), "refiner_checkpoint": (str, None),
    "refiner_switch_at": (float, None), "disable_extra_networks": (bool, False),
    "firstpass_image": (str, None), "comments": (dict, None),
}
_TXT2IMG: dict[str, tuple[Any, Any]] = {
    "enable_hr": (bool, False), "denoising_strength": (float, 0.75),
    "firstphase_width": (int, 0), "firstphase_height": (int, 0), "hr_scale": (float, 2.0),
    "hr_upscaler": (str, None), "hr_second_pass_steps": (int, 0), "hr_resize_x": (int, 0),
    "hr_resize_y": (int, 0), "hr_checkpoint_name": (str, None), "hr_sampler_name": (str, None),
    "hr_scheduler": (str, None), "hr_prompt": (str, ""), "hr_negative_prompt": (str, ""),
}
_IMG2IMG: dict[str, tuple[Any, Any]] = {
    "init_images": (list, None), "resize_mode": (int, 0), "denoising_strength": (float, 0.75),
    "image_cfg_scale": (float, None), "mask": (str, None), "mask_blur_x": (int, 4),
    "mask_blur_y": (int, 4), "mask_blur": (int, None), "mask_round": (bool, True),
    "inpainting_fill": (int, 0), "inpaint_full_res": (bool, True),
    "inpaint_full_res_padding": (int, 0), "inpainting_mask_invert": (int, 0),
    "initial_noise_multiplier": (float, None), "latent_mask": (str, None),
    "include_init_images": (bool, False),
}
_API_EXTRA: dict[str, tuple[Any, Any]] = {
    "sampler_index": (str, "Euler"), "script_name": (str, None), "script_args": (list, []),
    "send_images": (bool, True), "save_images": (bool, False), "alwayson_scripts": (dict, {}),
    "force_task_id": (str, None), "infotext": (str, None),
}


def _model(name: str, *parts: dict[str, tuple[Any, Any]]) -> type[BaseModel]:
    spec: dict[str, tuple[Any, Any]] = {}
    for part in parts:
        spec.update(part)
    fields: dict[str, Any] = {k: (Optional[t], Field(default=d))  # noqa: UP045
                              for k, (t, d) in spec.items()}
    return create_model(name, __config__=ConfigDict(populate_by_name=True), **fields)


Txt2ImgRequest = _model("StableDiffusionProcessingTxt2Img", _COMMON, _TXT2IMG, _API_EXTRA)
Img2ImgRequest = _model("StableDiffusionProcessingImg2Img", _COMMON, _IMG2IMG, _API_EXTRA)


class ExtrasSingleImageRequest(BaseModel):
    resize_mode: Literal[0, 1] = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    codeformer_visibility: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    codeformer_weight: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    upscaling_resize: float = Field(default=2, gt=0)
    upscaling_resize_w: int = Field(default=512, ge=1)
    upscaling_resize_h: int = Field(default=512, ge=1)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    upscale_first: bool = False
    image: str = ""


class InternalProgressRequest(BaseModel):
    id_task: Optional[str] = None  # noqa: UP045
    id_live_preview: int = -1
    live_preview: bool = True


class _ProgressQuery(BaseModel):
    skip_current_image: bool = False


class Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _validation_error(exc: ValidationError, where: str) -> JSONResponse:
    detail: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False):
        item: dict[str, Any] = dict(error)
        item["loc"] = [where, *error["loc"]]
        detail.append(item)
    return JSONResponse(json.loads(json.dumps({"detail": detail}, default=str)), 422)


def _body_json(record: RecordedRequest) -> Any:
    """The JSON body as FastAPI reads it, or Refused with its 422."""
    if not record.raw:
        raise Refused(JSONResponse({"detail": [{"type": "missing", "loc": ["body"],
                                                "msg": "Field required", "input": None}]}, 422))
    try:
        return json.loads(record.raw)
    except ValueError as exc:
        error = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        position = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        raise Refused(JSONResponse({"detail": [{
            "type": "json_invalid", "loc": ["body", position], "msg": "JSON decode error",
            "input": {}, "ctx": {"error": error}}]}, 422)) from None


def _validate(model: type[BaseModel], data: Any, where: str = "body") -> Any:
    try:
        return model.model_validate(data, from_attributes=True)  # as FastAPI does
    except ValidationError as exc:
        raise Refused(_validation_error(exc, where)) from None


# ---- records -------------------------------------------------------------------


@dataclass
class A1111Job:
    """One call that reached webui's queue (txt2img, img2img or extras)."""

    id_task: str
    kind: str  # "txt2img" | "img2img" | "extras"
    order: int  # arrival order among jobs (1 = first)
    prompt: str
    params: dict[str, Any]  # the validated request (every field, defaults filled in)
    body: Any  # the JSON as sent
    width: int = 512
    height: int = 512
    steps: int = 0
    batch_size: int = 1
    n_iter: int = 1
    seed: int = -1
    sampler: str = ""  # what webui ran: an unknown sampler_name becomes "DPM++ 2M"
    scheduler: str = "Automatic"
    model: str = ""  # the checkpoint title the job ran on
    init_images: list[bytes] = field(default_factory=list)
    mask: bytes | None = None
    status: str = "queued"  # queued | running | done | interrupted | failed
    outputs: list[bytes] = field(default_factory=list)  # PNGs answered (grid first if any)
    queued_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    fail: str | None = None  # a scripted failure when it runs ("oom")


@dataclass
class _State:
    """webui's shared.state."""

    skipped: bool = False
    interrupted: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    time_start: float | None = None
    textinfo: str | None = None
    current_image: bytes | None = None
    current_image_sampling_step: int = 0
    id_live_preview: int = 0

    def dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "interrupted": self.interrupted, "job": self.job,
                "job_count": self.job_count, "job_timestamp": self.job_timestamp,
                "job_no": self.job_no, "sampling_step": self.sampling_step,
                "sampling_steps": self.sampling_steps}


# ---- the fake ---------------------------------------------------------------------


class FakeA1111(FakeVendor):
    api_paths = ("/sdapi/", "/internal/")
    faults = FAULTS
    auth: tuple[str, str] | None
    step_seconds: float
    extras_seconds: float
    timeout_seconds: float
    max_pixels: int
    forbid_local_requests: bool

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,  # --api-auth user:pass
        step_seconds: float = 0.001,  # each sampling step takes this long (real seconds)
        extras_seconds: float = 0.0,  # an extra-single-image call takes this long
        timeout_seconds: float = 1.0,  # a "timeout" fault answers this late
        max_pixels: int = 2048 * 2048,  # larger width*height: CUDA out of memory
        forbid_local_requests: bool = True,  # opts.api_forbid_local_requests for URL inputs
        models: Iterable[Mapping[str, Any]] = DEFAULT_MODELS,
        options: Mapping[str, Any] | None = None,  # extra /sdapi/v1/options entries
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock, auth=auth, step_seconds=step_seconds,
                         extras_seconds=extras_seconds, timeout_seconds=timeout_seconds,
                         max_pixels=max_pixels, forbid_local_requests=forbid_local_requests)
        self.models: list[dict[str, Any]] = [dict(m) for m in models]
        self._initial_options = dict(options or {})
        self.options: dict[str, Any] = {}
        self._reset_options()
        self.jobs: list[A1111Job] = []
        self.state = _State()
        self.current_task: str | None = None
        self.pending_tasks: dict[str, float] = {}  # id_task → queued at (progress.py)
        self.finished_tasks: list[str] = []  # the last 16, as progress.py keeps
        self.started = 0  # txt2img / img2img jobs that began running
        self.completed = 0  # ... that answered with images (interrupted ones too)
        self.interrupted = 0  # ... stopped by /interrupt
        self.running = 0  # jobs (extras too) inside the queue lock now
        self.max_concurrent_running = 0  # must stay 1
        self._lock = asyncio.Lock()  # webui's queue_lock (FIFO)
        self._gate: asyncio.Event | None = None  # hold() / release()
        self._arrivals = 0
        self.app = Starlette(routes=[
            Route("/sdapi/v1/txt2img", self._txt2img, methods=["POST"]),
            Route("/sdapi/v1/img2img", self._img2img, methods=["POST"]),
            Route("/sdapi/v1/extra-single-image", self._extras, methods=["POST"]),
            Route("/sdapi/v1/progress", self._progress, methods=["GET"]),
            Route("/internal/progress", self._internal_progress, methods=["POST"]),
            Route("/sdapi/v1/interrupt", self._interrupt, methods=["POST"]),
            Route("/sdapi/v1/skip", self._skip, methods=["POST"]),
            Route("/sdapi/v1/sd-models", self._sd_models, methods=["GET"]),
            Route("/sdapi/v1/samplers", self._samplers, methods=["GET"]),
            Route("/sdapi/v1/schedulers", self._schedulers, methods=["GET"]),
            Route("/sdapi/v1/upscalers", self._upscalers, methods=["GET"]),
            Route("/sdapi/v1/options", self._get_options, methods=["GET"]),
            Route("/sdapi/v1/options", self._set_options, methods=["POST"]),
        ], exception_handlers={404: _not_found, 405: _not_allowed})

    # ---- test-side controls ----------------------------------------------

    def reset(self) -> None:
        """Also forgets jobs, counters and task lists, restores the options and
        releases held jobs (``running`` keeps counting jobs still inside)."""
        super().reset()
        self.release()
        self._gate = None
        self.jobs.clear()
        self.pending_tasks.clear()
        self.finished_tasks.clear()
        self.started = self.completed = self.interrupted = 0
        self.max_concurrent_running = self.running
        self._arrivals = 0
        if self.running == 0:  # a fresh server's state (a held job keeps its own)
            self.state = _State()
            self.current_task = None
        self._reset_options()

    async def wait_queued(self, count: int, timeout: float = 3.0) -> None:
        """Until ``count`` tasks wait in the queue (not yet running)."""
        deadline = time.monotonic() + timeout
        while len(self.pending_tasks) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.pending_tasks)} of {count} tasks queued")
            await asyncio.sleep(0.005)

    def job(self, job_id: Any) -> A1111Job:
        return next(j for j in self.jobs if j.id_task == job_id)

    async def aclose(self) -> None:
        self.release()
        await super().aclose()

    @property
    def fault_kinds(self) -> frozenset[str]:
        return super().fault_kinds | set(FAULTS)

    def _reset_options(self) -> None:
        first = self.models[0] if self.models else {}
        self.options = {
            "sd_model_checkpoint": first.get("title"),
            "sd_checkpoint_hash": first.get("sha256"),
            "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1, "samples_format": "png",
            "jpeg_quality": 80, "return_grid": True, "live_previews_enable": True,
            "live_previews_image_format": "png", "show_progress_every_n_steps": 10,
            "show_progress_grid": True, "api_enable_requests": True,
            "api_forbid_local_requests": self.forbid_local_requests,
            "eta_noise_seed_delta": 0, "face_restoration_model": "CodeFormer",
            **self._initial_options,
        }

    # ---- requests, auth, faults ---------------------------------------------

    async def _gatekeep(self, request: Request, parse_body: bool = False) -> tuple[
            RecordedRequest, Any, str | int | None]:
        """Record the call; the scripted fault taken for it ("oom" on a
        generation is returned, to fail when the job runs); the JSON body;
        Refused for an immediate fault, a JSON error (FastAPI reads the body
        before running the auth dependency) or bad credentials."""
        record = await self._record(request)
        fault = self._take_fault(record.path)
        generation = record.path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img")
        if fault == "timeout":
            await asyncio.sleep(self.timeout_seconds)
            fault = None
        elif fault is not None and not (fault == "oom" and generation):
            raise Refused(self._fault_response(fault, record.path))
        body = _body_json(record) if parse_body else None
        self._check_auth(record)
        return record, body, fault

    def _check_auth(self, record: RecordedRequest) -> None:
        if self.auth is None or record.path.startswith("/internal/"):
            return
        scheme, _, value = record.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not value:
            raise Refused(http_exception(401, "Not authenticated"))
        try:
            user, sep, password = base64.b64decode(value).decode("ascii").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise Refused(http_exception(401, "Invalid authentication credentials")) from None
        if not sep:
            raise Refused(http_exception(401, "Invalid authentication credentials"))
        if (user, password) != tuple(self.auth):
            raise Refused(http_exception(401, "Incorrect username or password"))

    # ---- txt2img / img2img -----------------------------------------------------

    async def _txt2img(self, request: Request) -> Response:
        return await self._generate(request, "txt2img")

    async def _img2img(self, request: Request) -> Response:
        return await self._generate(request, "img2img")

    async def _generate(self, request: Request, kind: str) -> Response:
        try:
            _, body, fault = await self._gatekeep(request, parse_body=True)
            model = Txt2ImgRequest if kind == "txt2img" else Img2ImgRequest
            req = _validate(model, body)
            job = self._job(kind, req, body, fault)
            if kind == "img2img":
                if req.init_images is None:
                    raise Refused(http_exception(404, "Init image not found"))
                if req.mask:
                    job.mask = await self._decode(job, req.mask)
        except Refused as refused:
            return refused.response
        self.jobs.append(job)
        self.pending_tasks[job.id_task] = time.time()
        async with self._lock:
            self.running += 1
            self.max_concurrent_running = max(self.max_concurrent_running, self.running)
            try:
                return await self._run(job, req, kind)
            except Refused as refused:
                return refused.response
            finally:
                self.running -= 1

    def _job(self, kind: str, req: Any, body: Any, fault: Any) -> A1111Job:
        self._arrivals += 1
        id_task = req.force_task_id or f"task({uuid.uuid4().hex[:15]})"
        sampler, scheduler = _sampler_and_scheduler(req.sampler_name or req.sampler_index,
                                                    req.scheduler)
        job = A1111Job(id_task, kind, self._arrivals, req.prompt or "",
                       req.model_dump(), body, queued_at=self.now(), sampler=sampler,
                       scheduler=scheduler, fail=fault if fault == "oom" else None)
        return job

    async def _run(self, job: A1111Job, req: Any, kind: str) -> Response:
        if kind == "img2img":
            # decoded inside the queue lock, before the job starts: a bad image
            # leaves the task "queued" for /internal/progress, as webui does.
            job.init_images = [await self._decode(job, x) for x in req.init_images]
        self._begin(f"scripts_{kind}")
        state = self.state
        self.current_task = job.id_task
        self.pending_tasks.pop(job.id_task, None)
        job.status, job.started_at = "running", self.now()
        self.started += 1
        try:
            problem = self._runtime_problem(job, req)
            if problem is not None:
                job.status, job.finished_at = "failed", self.now()
                return problem
            model = self._checkpoint_for(req)
            job.model = model.get("title", "")
            state.job_count = job.n_iter
            state.sampling_steps = job.steps
            images: list[Image.Image] = []
            for batch in range(job.n_iter):
                if state.skipped:
                    state.skipped = False
                if state.interrupted:
                    break
                for step in range(job.steps):
                    await self._wait_step()
                    if state.interrupted or state.skipped:
                        break
                    state.sampling_step = step + 1
                done = state.sampling_step / job.steps if job.steps else 1.0
                state.job_no += 1  # state.nextjob()
                state.sampling_step = 0
                state.current_image_sampling_step = 0
                for index in range(job.batch_size):
                    images.append(self._render(job, batch * job.batch_size + index, done))
            infotexts = [self._infotext(job, req, model, i) for i in range(len(images))]
            grid = None
            if req.save_images and len(images) > 1 and self.options.get("return_grid"):
                grid = _grid(images)
            outputs = ([grid] if grid is not None else []) + images
            texts = ([infotexts[0]] if grid is not None else []) + infotexts
            job.outputs = [_encode(img, text) for img, text in zip(outputs, texts, strict=True)]
            if req.override_settings_restore_afterwards is False:
                self.options["sd_model_checkpoint"] = model.get("title")
            job.status = "interrupted" if state.interrupted else "done"
            self.interrupted += state.interrupted
            job.finished_at = self.now()
            self.completed += 1
            self._finish_task(job.id_task)
        finally:
            self._end()
        params = dict(job.params)
        if kind == "img2img" and not req.include_init_images:
            params["init_images"] = None
            params["mask"] = None
        info = self._info(job, req, model, infotexts, grid is not None)
        images_b64 = ([base64.b64encode(png).decode("ascii") for png in job.outputs]
                      if req.send_images is not False else [])
        return JSONResponse({"images": images_b64, "parameters": params, "info": info})

    def _runtime_problem(self, job: A1111Job, req: Any) -> Response | None:
        """What fails inside process_images (webui's envelope, HTTP 500)."""
        if job.fail == "oom":
            return oom()
        for name in ("steps", "width", "height", "batch_size", "n_iter", "cfg_scale", "seed"):
            if getattr(req, name) is None:
                return webui_error(500, "TypeError", "", f"'{name}' must not be None "
                                   "(unsupported operand type(s) for NoneType)")
        job.width, job.height = req.width, req.height
        job.steps, job.batch_size, job.n_iter = req.steps, req.batch_size, req.n_iter
        if job.width < 8 or job.height < 8:
            return webui_error(500, "RuntimeError", "", "cannot reshape tensor of 0 elements")
        if job.steps < 1 or job.batch_size < 1 or job.n_iter < 1:
            return webui_error(500, "IndexError", "", "list index out of range")
        if job.width * job.height * job.batch_size > self.max_pixels:
            return oom()
        if job.kind == "img2img" and not job.init_images:
            return webui_error(500, "IndexError", "", "list index out of range")
        seed = req.seed
        if seed is None or seed == -1:
            seed = random.randrange(4294967294)
        job.seed = int(seed)
        return None

    def _checkpoint_for(self, req: Any) -> dict[str, Any]:
        """The checkpoint the job runs on: an override naming a known one (by
        title, file name, model name, hash or sha256), else the loaded one
        (webui drops an override it cannot find)."""
        wanted = (req.override_settings or {}).get("sd_model_checkpoint")
        found = _find_checkpoint(self.models, wanted) if wanted else None
        if found is None:
            found = _find_checkpoint(self.models, self.options.get("sd_model_checkpoint"))
        return found or (self.models[0] if self.models else {})

    async def _wait_step(self) -> None:
        while self._gate is not None and not self._gate.is_set():
            if self.state.interrupted or self.state.skipped:
                return
            await asyncio.sleep(0.005)
        if self.step_seconds:
            await asyncio.sleep(self.step_seconds)

    def _begin(self, job: str) -> None:
        self.state = _State(job=job, job_count=-1, time_start=self.now(),
                            job_timestamp=datetime.datetime.now().strftime("%Y%m%d%H%M%S"))

    def _end(self) -> None:
        self.state.job = ""
        self.state.job_count = 0

    def _finish_task(self, id_task: str) -> None:
        if self.current_task == id_task:
            self.current_task = None
        self.finished_tasks.append(id_task)
        if len(self.finished_tasks) > 16:
            self.finished_tasks.pop(0)

    async def _decode(self, job: A1111Job, encoding: str) -> bytes:
        """decode_base64_to_image: base64 (a data: URI too) or an http(s) URL."""
        if not isinstance(encoding, str):
            raise Refused(webui_error(500, "AttributeError", "",
                                      f"'{type(encoding).__name__}' object has no attribute "
                                      "'startswith'"))
        if encoding.startswith(("http://", "https://")):
            if not self.options.get("api_enable_requests", True):
                raise Refused(http_exception(500, "Requests not allowed"))
            if self.options.get("api_forbid_local_requests") and not _is_global(encoding):
                raise Refused(http_exception(500, "Request to local resource not allowed"))
            data = await self._fetch(job.id_task, encoding)
            if data is None:
                raise Refused(http_exception(500, "Invalid image url"))
            return data
        if encoding.startswith("data:image/"):
            try:
                encoding = encoding.split(";")[1].split(",")[1]
            except IndexError:
                raise Refused(webui_error(500, "IndexError", "",
                                          "list index out of range")) from None
        try:
            data = base64.b64decode(encoding)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
        except Exception:  # noqa: BLE001 — any failure is webui's "Invalid encoded image"
            raise Refused(http_exception(500, "Invalid encoded image")) from None
        return data

    # ---- pictures and infotexts -------------------------------------------

    def _render(self, job: A1111Job, index: int, done: float) -> Image.Image:
        """The output (latent sides are floored to multiples of 8); an
        interrupted one (done < 1) is blurred."""
        size = (job.width // 8 * 8, job.height // 8 * 8)
        rng = random.Random(job.seed + index)
        if job.init_images:
            base = _rgb(job.init_images[min(index, len(job.init_images) - 1)]).resize(size)
        else:
            base = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(base)
        w, h = size
        for _ in range(3):
            x, y = rng.randrange(w), rng.randrange(h)
            draw.ellipse((x, y, x + w // 3 + 8, y + h // 3 + 8),
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        draw.text((8, 8), f"{job.prompt[:40]} #{job.seed + index}", fill=(255, 255, 255))
        if done < 1:
            base = base.filter(ImageFilter.GaussianBlur(max(1, int(8 * (1 - done)))))
        return base

    def _preview(self) -> bytes | None:
        """set_current_image: a fresh preview every show_progress_every_n_steps."""
        state, every = self.state, int(self.options.get("show_progress_every_n_steps", 10))
        job = self._running_job()
        if job is None or not self.options.get("live_previews_enable", True) or every == -1:
            return state.current_image
        if state.sampling_step - state.current_image_sampling_step >= every:
            size = (max(8, job.width // 8 * 8), max(8, job.height // 8 * 8))
            img = Image.new("RGB", size, (90, 90, 90))
            ImageDraw.Draw(img).text((8, 8), f"step {state.sampling_step}/{job.steps}",
                                     fill=(255, 255, 255))
            state.current_image = _encode(img, None)
            state.current_image_sampling_step = state.sampling_step
            state.id_live_preview += 1
        return state.current_image

    def _running_job(self) -> A1111Job | None:
        return next((j for j in self.jobs if j.status == "running"), None)

    def _infotext(self, job: A1111Job, req: Any, model: Mapping[str, Any], index: int) -> str:
        text = job.prompt
        if req.negative_prompt:
            text += f"\nNegative prompt: {req.negative_prompt}"
        fields = [f"Steps: {job.steps}", f"Sampler: {job.sampler}",
                  f"Schedule type: {job.scheduler}", f"CFG scale: {req.cfg_scale:g}",
                  f"Seed: {job.seed + index}", f"Size: {job.width}x{job.height}",
                  f"Model hash: {model.get('hash')}", f"Model: {model.get('model_name')}"]
        if job.kind == "img2img":
            fields.append(f"Denoising strength: {req.denoising_strength:g}")
        fields.append(f"Version: {VERSION}")
        return text + "\n" + ", ".join(fields)

    def _info(self, job: A1111Job, req: Any, model: Mapping[str, Any], infotexts: list[str],
              grid: bool) -> str:
        count = len(infotexts)
        seeds = [job.seed + i for i in range(count)]
        negative = req.negative_prompt or ""
        obj = {
            "prompt": job.prompt, "all_prompts": [job.prompt] * count,
            "negative_prompt": negative, "all_negative_prompts": [negative] * count,
            "seed": job.seed, "all_seeds": seeds,
            "subseed": seeds[0] if seeds else job.seed, "all_subseeds": seeds,
            "subseed_strength": req.subseed_strength, "width": job.width,
            "height": job.height, "sampler_name": job.sampler, "cfg_scale": req.cfg_scale,
            "steps": job.steps, "batch_size": job.batch_size,
            "restore_faces": req.restore_faces or False,
            "face_restoration_model": None, "sd_model_name": model.get("model_name"),
            "sd_model_hash": model.get("hash"), "sd_vae_name": None, "sd_vae_hash": None,
            "seed_resize_from_w": req.seed_resize_from_w,
            "seed_resize_from_h": req.seed_resize_from_h,
            "denoising_strength": req.denoising_strength,
            "extra_generation_params": {"Schedule type": job.scheduler},
            "index_of_first_image": 1 if grid else 0, "infotexts": infotexts,
            "styles": req.styles or [], "job_timestamp": self.state.job_timestamp,
            "clip_skip": self.options.get("CLIP_stop_at_last_layers", 1),
            "is_using_inpainting_conditioning": False, "version": VERSION,
        }
        return json.dumps(obj)

    # ---- extras ------------------------------------------------------------

    async def _extras(self, request: Request) -> Response:
        try:
            _, body, _ = await self._gatekeep(request, parse_body=True)
            req = _validate(ExtrasSingleImageRequest, body)
            self._arrivals += 1
            job = A1111Job(f"extras-{self._arrivals}", "extras", self._arrivals, "",
                           req.model_dump(), body, queued_at=self.now())
            data = await self._decode(job, req.image)
        except Refused as refused:
            return refused.response
        names = [name for name, _ in UPSCALERS]
        self.jobs.append(job)
        async with self._lock:
            self.running += 1
            self.max_concurrent_running = max(self.max_concurrent_running, self.running)
            self._begin("extras")
            self.state.job_count = 1
            job.status, job.started_at = "running", self.now()
            try:
                for name in (req.upscaler_1, req.upscaler_2):
                    if name != "None" and name not in names:
                        job.status = "failed"
                        return webui_error(500, "AssertionError", "",
                                           f"could not find upscaler named {name}")
                if self.extras_seconds:
                    await asyncio.sleep(self.extras_seconds)
                img = _rgb(data)
                info = ""
                if req.upscaler_1 != "None":  # webui skips upscaling with upscaler "None"
                    img, info = _upscale(img, req)
                job.width, job.height = img.size
                job.outputs = [_encode(img, None)]
                job.status, job.finished_at = "done", self.now()
            finally:
                self._end()
                self.running -= 1
        html_info = f"<p>{info}</p>" if info else ""
        return JSONResponse({"html_info": html_info,
                             "image": base64.b64encode(job.outputs[0]).decode("ascii")})

    # ---- progress, interrupt ------------------------------------------------

    async def _progress(self, request: Request) -> Response:
        try:
            await self._gatekeep(request)
            query = dict(request.query_params)
            req = _validate(_ProgressQuery, {k: v for k, v in query.items()
                                             if k == "skip_current_image"}, "query")
        except Refused as refused:
            return refused.response
        state = self.state
        if state.job_count == 0:
            return JSONResponse({"progress": 0.0, "eta_relative": 0.0, "state": state.dict(),
                                 "current_image": None, "textinfo": state.textinfo})
        progress = 0.01
        if state.job_count > 0:
            progress += state.job_no / state.job_count
        if state.sampling_steps > 0 and state.job_count > 0:
            progress += 1 / state.job_count * state.sampling_step / state.sampling_steps
        elapsed = self.now() - (state.time_start or self.now())
        eta_relative = elapsed / progress - elapsed
        preview = self._preview()
        current = (base64.b64encode(preview).decode("ascii")
                   if preview is not None and not req.skip_current_image else None)
        return JSONResponse({"progress": min(progress, 1.0), "eta_relative": eta_relative,
                             "state": state.dict(), "current_image": current,
                             "textinfo": state.textinfo})

    async def _internal_progress(self, request: Request) -> Response:
        try:
            _, body, _ = await self._gatekeep(request, parse_body=True)
            req = _validate(InternalProgressRequest, body)
        except Refused as refused:
            return refused.response
        active = req.id_task is not None and req.id_task == self.current_task
        queued = req.id_task in self.pending_tasks
        completed = req.id_task in self.finished_tasks
        answer: dict[str, Any] = {"active": active, "queued": queued, "completed": completed,
                                  "progress": None, "eta": None, "live_preview": None,
                                  "id_live_preview": -1, "textinfo": None}
        if not active:
            textinfo = "Waiting..."
            if queued:
                order = sorted(self.pending_tasks, key=lambda t: self.pending_tasks[t])
                textinfo = f"In queue: {order.index(req.id_task) + 1}/{len(order)}"
            answer["textinfo"] = textinfo
            return JSONResponse(answer)
        state = self.state
        progress = 0.0
        if state.job_count > 0:
            progress += state.job_no / state.job_count
            if state.sampling_steps > 0:
                progress += 1 / state.job_count * state.sampling_step / state.sampling_steps
        progress = min(progress, 1.0)
        elapsed = self.now() - (state.time_start or self.now())
        answer.update(progress=progress, eta=(elapsed / progress - elapsed) if progress else None,
                      id_live_preview=req.id_live_preview, textinfo=state.textinfo)
        if self.options.get("live_previews_enable", True) and req.live_preview:
            preview = self._preview()
            if state.id_live_preview != req.id_live_preview and preview is not None:
                fmt = self.options.get("live_previews_image_format", "png")
                answer["live_preview"] = (f"data:image/{fmt};base64,"
                                          + base64.b64encode(preview).decode("ascii"))
                answer["id_live_preview"] = state.id_live_preview
        return JSONResponse(answer)

    async def _interrupt(self, request: Request) -> Response:
        try:
            await self._gatekeep(request)
        except Refused as refused:
            return refused.response
        self.state.interrupted = True
        return JSONResponse({})

    async def _skip(self, request: Request) -> Response:
        try:
            await self._gatekeep(request)
        except Refused as refused:
            return refused.response
        self.state.skipped = True
        return JSONResponse(None)

    # ---- lists and options -------------------------------------------------

    async def _listing(self, request: Request, items: Any) -> Response:
        try:
            await self._gatekeep(request)
        except Refused as refused:
            return refused.response
        return JSONResponse(items)

    async def _sd_models(self, request: Request) -> Response:
        keys = ("title", "model_name", "hash", "sha256", "filename", "config")
        return await self._listing(request, [{k: m.get(k) for k in keys} for m in self.models])

    async def _samplers(self, request: Request) -> Response:
        return await self._listing(request, [
            {"name": name, "aliases": aliases, "options": options}
            for name, aliases, options in SAMPLERS])

    async def _schedulers(self, request: Request) -> Response:
        return await self._listing(request, [
            {"name": name, "label": label, "aliases": None, "default_rho": None,
             "need_inner_model": None} for name, label in SCHEDULERS])

    async def _upscalers(self, request: Request) -> Response:
        return await self._listing(request, [
            {"name": name, "model_name": None if name in ("None", "Lanczos", "Nearest") else name,
             "model_path": None, "model_url": None, "scale": scale}
            for name, scale in UPSCALERS])

    async def _get_options(self, request: Request) -> Response:
        return await self._listing(request, dict(self.options))

    async def _set_options(self, request: Request) -> Response:
        try:
            _, body, _ = await self._gatekeep(request, parse_body=True)
            if not isinstance(body, dict):
                raise Refused(JSONResponse({"detail": [{
                    "type": "dict_type", "loc": ["body"], "msg": "Input should be a valid "
                    "dictionary", "input": body}]}, 422))
        except Refused as refused:
            return refused.response
        checkpoint = body.get("sd_model_checkpoint")
        if checkpoint is not None:
            found = _find_checkpoint(self.models, checkpoint)
            if found is None:
                return webui_error(500, "RuntimeError", "", f"model {checkpoint!r} not found")
            body = {**body, "sd_model_checkpoint": found["title"],
                    "sd_checkpoint_hash": found.get("sha256")}
        self.options.update(body)
        return JSONResponse(None)


# ---- helpers ---------------------------------------------------------------------


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": "Not Found"}, 404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": "Method Not Allowed"}, 405)


def _sampler_and_scheduler(name: str | None, scheduler_name: str | None) -> tuple[str, str]:
    """sd_samplers.get_sampler_and_scheduler: "DPM++ 2M Karras" names a
    scheduler too; an unknown sampler silently becomes the default one; the
    sampler's own default scheduler is reported as "Automatic"."""
    by_key = {key: (n, label) for n, label in SCHEDULERS for key in (n, label)}
    found = by_key.get(scheduler_name or "", SCHEDULERS[0])
    name = name or SAMPLERS[0][0]
    for sched_name, label in SCHEDULERS:
        for option in (label, sched_name):
            if name.endswith(" " + option):
                found = (sched_name, label)
                name = name[: -(len(option) + 1)]
                break
    sampler = next((s for s in SAMPLERS if s[0] == name), SAMPLERS[0])
    if sampler[2].get("scheduler") == found[0]:
        found = SCHEDULERS[0]
    return sampler[0], found[1]


def _find_checkpoint(models: Iterable[Mapping[str, Any]], wanted: Any) -> dict[str, Any] | None:
    if not isinstance(wanted, str):
        return None
    for model in models:
        filename = str(model.get("filename") or "")
        base = filename.rsplit("/", 1)[-1]
        aliases = {model.get("title"), model.get("model_name"), model.get("hash"),
                   model.get("sha256"), base, base.rsplit(".", 1)[0]}
        if wanted in aliases:
            return dict(model)
    return None


def _is_global(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return False
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return True  # a name: the fake does not resolve it


def _encode(img: Image.Image, infotext: str | None) -> bytes:
    """encode_pil_to_base64's PNG (with the "parameters" text chunk)."""
    buffer = io.BytesIO()
    info = None
    if infotext is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", infotext)
    img.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


def _grid(images: list[Image.Image]) -> Image.Image:
    cols = int(len(images) ** 0.5 + 0.999)
    rows = (len(images) + cols - 1) // cols
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, img in enumerate(images):
        grid.paste(img, ((i % cols) * w, (i // cols) * h))
    return grid


def _upscale(img: Image.Image, req: ExtrasSingleImageRequest) -> tuple[Image.Image, str]:
    if req.resize_mode == 1:
        target = (req.upscaling_resize_w, req.upscaling_resize_h)
        scale = max(target[0] / img.width, target[1] / img.height)
        scaled = img.resize((int(img.width * scale), int(img.height * scale)),
                            Image.Resampling.LANCZOS)
        if req.upscaling_crop:
            left = (scaled.width - target[0]) // 2
            top = (scaled.height - target[1]) // 2
            scaled = scaled.crop((left, top, left + target[0], top + target[1]))
        info = (f"Postprocess upscale to: {target[0]}x{target[1]}, "
                f"Postprocess upscaler: {req.upscaler_1}")
        return scaled, info
    factor = req.upscaling_resize
    scaled = img.resize((int(img.width * factor), int(img.height * factor)),
                        Image.Resampling.LANCZOS)
    return scaled, f"Postprocess upscale by: {factor:g}, Postprocess upscaler: {req.upscaler_1}"
