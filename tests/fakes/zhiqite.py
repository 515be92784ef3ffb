"""A fake zhiqite vendor behind a fake Aliyun API-market gateway, as strict as
the vendor document (seeds/002_…): auth headers, Content-Type, required
fields, size limits, duplicate ids; jobs that queue, run with a live preview,
upload and finish with real PNGs served (and expiring) from the fake itself;
input images fetched by URL like the real vendor; callbacks retried on the
vendor's schedule; fault switches for every error path.

    fake = FakeZhiqite(queue_seconds=0.05, run_seconds=0.1)
    async with serve(fake.app) as base_url:
        ...
    await fake.aclose()          # stops callback deliveries, closes its client
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API_ROOT = "/AIGCImgOpenServ/"
CALLBACK_SCHEDULE = (3, 5, 15, 30, 60, 600, 3600)  # seconds [seed]
CALLBACK_MAX_RETRIES = 10  # [seed] at most 10 retries
FAULT_KINDS = frozenset(
    {"http500", "malformed", "quota", "throttled", "auth", "timeout", "code400", "sensitive"}
)
DEFAULT_MODEL = "revAnimated_v122_7371.safetensors"

MODEL_ROWS = [
    {"id": 1, "sdModelCheckpoint": DEFAULT_MODEL, "sdModelName": "ReV Animated",
     "modelBaseModel": "SD 1.5", "modelType": "Checkpoint", "modelVersion": "v122",
     "modelStatus": 1, "modelUploadStatus": 2, "isAdult": 0},
    {"id": 39, "sdModelCheckpoint": "photon_v1_84728.safetensors", "sdModelName": "Photon",
     "modelBaseModel": "SD 1.5", "modelType": "Checkpoint", "modelVersion": "v1",
     "modelStatus": 1, "modelUploadStatus": 2, "isAdult": 0},
    {"id": 52, "sdModelCheckpoint": "majicmixRealistic_v7.safetensors",
     "sdModelName": "majicMIX realistic", "modelBaseModel": "SD 1.5",
     "modelType": "Checkpoint", "modelVersion": "v7", "modelStatus": 1,
     "modelUploadStatus": 2, "isAdult": 0},
]
LIST_ROWS: dict[str, list[dict[str, Any]]] = {
    "queryModelList": MODEL_ROWS,
    "queryLoraList": [
        {"id": 8741, "sdLoraName": "Hayasaka Ai", "loraBaseModel": "SD 1.5",
         "sdLoraFileName": "hayasaka_ai_v10_26390.safetensors",
         "sdLoraFileSimplifyName": "hayasaka_ai_v10_26390", "loraVersion": "v1",
         "loraStatus": 1, "loraUploadStatus": 2, "isAdult": 0},
        {"id": 8742, "sdLoraName": "Ink wash", "loraBaseModel": "SD 1.5",
         "sdLoraFileName": "ink_wash_v2.safetensors", "sdLoraFileSimplifyName": "ink_wash_v2",
         "loraVersion": "v2", "loraStatus": 1, "loraUploadStatus": 2, "isAdult": 0},
    ],
    "queryVaeList": [
        {"id": 2, "vaeFileName": "k1F8Anime2_k1F8Anime2VAE.ckpt"},
        {"id": 3, "vaeFileName": "vae-ft-mse-840000-ema-pruned.ckpt"},
    ],
    "queryEmbeddingList": [
        {"id": 3, "embeddingName": "FastNegativeV2.pt", "embeddingSimplifyName": "FastNegativeV2"},
        {"id": 4, "embeddingName": "bad-artist.pt", "embeddingSimplifyName": "bad-artist"},
        {"id": 11, "embeddingName": "badhandv4.pt", "embeddingSimplifyName": "badhandv4"},
    ],
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or the raw text


@dataclass
class FetchRecord:
    job_id: str
    url: str
    ok: bool
    status_code: int | None
    error: str = ""


@dataclass
class CallbackAttempt:
    job_id: str
    url: str
    attempt: int  # 1 = first delivery
    at: float  # the fake's clock
    payload: dict[str, Any]
    status_code: int | None
    answer: str
    accepted: bool


@dataclass
class FakeJob:
    vendor_id: str
    kind: str  # "sd" | "roop" | "enhance"
    endpoint: str
    body: dict[str, Any]
    created_at: float
    base_url: str
    width: int = 512
    height: int = 512
    count: int = 1
    callback_url: str | None = None
    input_urls: list[str] = field(default_factory=list)
    inputs: list[bytes] = field(default_factory=list)
    fetch_error: str = ""
    fail_desc: str = ""
    moderation: str = ""  # "deleted" (image_status 2) | "hidden" (img_audit_status false)
    moderated: frozenset[int] | None = None  # None = every image
    forced_done: bool = False
    outputs: list[str] = field(default_factory=list)  # file names under /output/
    seeds: list[int] = field(default_factory=list)
    task_id: str = field(default_factory=lambda: f"pro{uuid.uuid4().int % 10**20}")

    @property
    def failed(self) -> bool:
        return bool(self.fetch_error or self.fail_desc)


class FakeZhiqite:
    def __init__(
        self,
        app_code: str | None = "test-app-code",
        access_key_id: str | None = "test-key-id",
        access_key_secret: str | None = "test-key-secret",
        *,
        queue_seconds: float = 0.05,
        run_seconds: float = 0.1,
        upload_seconds: float = 0.02,
        url_ttl: float = 3600.0,
        timeout_seconds: float = 1.0,
        callback_delay_scale: float = 1.0,
        callback_schedule: tuple[float, ...] = CALLBACK_SCHEDULE,
        callback_max_retries: int = CALLBACK_MAX_RETRIES,
        callback_shape: str = "envelope",  # or "bare": only the data object
        preview_as_data_uri: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app_code = app_code
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.queue_seconds = queue_seconds
        self.run_seconds = run_seconds
        self.upload_seconds = upload_seconds
        self.url_ttl = url_ttl
        self.timeout_seconds = timeout_seconds
        self.callback_delay_scale = callback_delay_scale
        self.callback_schedule = callback_schedule
        self.callback_max_retries = callback_max_retries
        self.callback_shape = callback_shape
        self.preview_as_data_uri = preview_as_data_uri
        self._clock = clock
        self._offset = 0.0
        # reset() puts these options back, so one server can serve many tests.
        self._defaults = {
            name: getattr(self, name)
            for name in (
                "app_code", "access_key_id", "access_key_secret", "queue_seconds",
                "run_seconds", "upload_seconds", "url_ttl", "timeout_seconds",
                "callback_delay_scale", "callback_schedule", "callback_max_retries",
                "callback_shape", "preview_as_data_uri",
            )
        }

        self.requests: list[RecordedRequest] = []
        self.fetches: list[FetchRecord] = []
        self.callbacks: list[CallbackAttempt] = []
        self.jobs: dict[str, FakeJob] = {}  # "<kind>:<vendor id>" → job
        self.files: dict[str, tuple[bytes, float]] = {}  # name → (png, created_at)
        self._faults: list[list[Any]] = []  # [kind, times left, path filter]
        self._next_fail: list[str] = []
        self._next_moderation: list[tuple[str, frozenset[int] | None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None

        self._routes = self._handlers()
        self.app = Starlette(
            routes=[
                Route(API_ROOT + "{path:path}", self._api, methods=["GET", "POST", "PUT"]),
                Route("/output/{name}", self._output, methods=["GET"]),
            ]
        )

    # ---- test-side controls --------------------------------------------

    def now(self) -> float:
        return self._clock() + self._offset

    def set_clock(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def advance(self, seconds: float) -> None:
        """Move the fake's time forward (jobs progress, URLs expire)."""
        self._offset += seconds

    def reset(self) -> None:
        """Back to the constructor's options with no pending faults, callbacks
        or records; jobs and files stay (ids are unique per test anyway)."""
        for name, value in self._defaults.items():
            setattr(self, name, value)
        self._offset = 0.0
        self._faults.clear()
        self._next_fail.clear()
        self._next_moderation.clear()
        for task in list(self._tasks):
            task.cancel()
        self.requests.clear()
        self.fetches.clear()
        self.callbacks.clear()

    def fail_next(self, kind: str, times: int = 1, path: str | None = None) -> None:
        """The next ``times`` API calls (whose path contains ``path``, if given)
        fail as ``kind``: http500, malformed, quota, throttled, auth, timeout
        (answers after ``timeout_seconds``), code400, sensitive."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        self._faults.append([kind, times, path])

    def moderate_next(self, indices: Iterable[int] | None = None, mode: str = "deleted") -> None:
        """The next job's images (all, or those ``indices``) fail moderation:
        ``deleted`` → image_status 2, ``hidden`` → img_audit_status false."""
        if mode not in ("deleted", "hidden"):
            raise ValueError(mode)
        self._next_moderation.append((mode, None if indices is None else frozenset(indices)))

    def fail_job_next(self, desc: str = "任务失败：生成异常") -> None:
        """The next job ends with status 0 and this desc."""
        self._next_fail.append(desc)

    def job(self, job_id: str) -> FakeJob:
        """A job by adapter job id ("sd:x") or by vendor id ("x")."""
        if job_id in self.jobs:
            return self.jobs[job_id]
        matches = [job for job in self.jobs.values() if job.vendor_id == job_id]
        if len(matches) != 1:
            raise KeyError(job_id)
        return matches[0]

    def finish(self, job_id: str) -> None:
        """Finish a job now, whatever the clock says."""
        self.job(job_id).forced_done = True

    def fetched_urls(self) -> list[str]:
        return [record.url for record in self.fetches]

    def api_requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        return [
            r for r in self.requests
            if r.path.startswith(API_ROOT) and (endpoint is None or r.path.endswith(endpoint))
        ]

    async def wait_for_callbacks(self, count: int, timeout: float = 3.0) -> list[CallbackAttempt]:
        deadline = time.monotonic() + timeout
        while len(self.callbacks) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.callbacks)} of {count} callback attempts")
            await asyncio.sleep(0.005)
        return self.callbacks

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ---- the gateway -----------------------------------------------------

    async def _api(self, request: Request) -> Response:
        raw = await request.body()
        record = RecordedRequest(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=_parse_json(raw),
        )
        self.requests.append(record)
        endpoint = request.url.path[len(API_ROOT):]

        fault = self._take_fault(endpoint)
        if fault is not None and fault != "timeout":
            return _fault_response(fault)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_seconds)  # then answer as usual, too late

        denied = self._check_auth(record.headers)
        if denied is not None:
            return denied
        if request.method != "POST":
            return _gateway_error(405, "I405UM", f"Unsupported Method `{request.method}`")
        handler = self._routes.get(endpoint)
        if handler is None:
            return _gateway_error(400, "A400IU", "Invalid Url")
        if not record.headers.get("content-type", "").lower().startswith("application/json"):
            return _code400("Content-Type必须为application/json")
        if not isinstance(record.body, dict):
            return _code400("请求体不是合法的JSON")
        return await handler(record.body, str(request.base_url).rstrip("/"))

    def _handlers(self) -> dict[str, Callable[[dict[str, Any], str], Any]]:
        handlers: dict[str, Callable[[dict[str, Any], str], Any]] = {
            "saas/sd/v2/text2image": self._text2image,
            "saas/sd/v2/image2image": self._image2image,
            "saas/sd/v2/controlnet": self._controlnet,
            "saas/sd/v2/queryTaskInfo": self._query_task_info,
            "saas/tool/roop": self._roop,
            "saas/tool/enhance": self._enhance,
            "saas/tool/roop/queryTask": self._tool_query("roop"),
            "saas/tool/enhance/queryTask": self._tool_query("enhance"),
        }
        for name in LIST_ROWS:
            handlers[f"saas/sd/v2/{name}"] = self._lister(name)
        return handlers

    def _take_fault(self, endpoint: str) -> str | None:
        for fault in self._faults:
            kind, left, path = fault
            if left > 0 and (path is None or path in endpoint):
                fault[1] -= 1
                if fault[1] == 0:
                    self._faults.remove(fault)
                return kind
        return None

    def _check_auth(self, headers: dict[str, str]) -> Response | None:
        """Aliyun market gateway: APPCODE, or the vendor's access-key pair."""
        authorization = headers.get("authorization")
        key_id = headers.get("x-request-req-accesskeyid")
        key_secret = headers.get("x-request-req-accesskeysecret")
        if authorization is not None:
            scheme, _, code = authorization.partition(" ")
            if scheme != "APPCODE" or not code.strip():
                return _gateway_error(401, "A401AC", "Invalid AppCode `not exists`")
            if self.app_code is None or code.strip() != self.app_code:
                return _gateway_error(403, "A403AC", "Invalid AppCode `not exists`")
            return None
        if key_id is None and key_secret is None:
            return _gateway_error(401, "A401AC", "Invalid AppCode `not exists`")
        if self.access_key_id is None or key_id != self.access_key_id:
            return _gateway_error(400, "A400IK", "Invalid AppKey")
        if key_secret != self.access_key_secret:
            return _gateway_error(400, "A400IS", "Invalid AppSecret")
        return None

    # ---- SD endpoints ----------------------------------------------------

    async def _text2image(self, body: dict[str, Any], base: str) -> Response:
        return await self._sd_submit("text2image", body, base)

    async def _image2image(self, body: dict[str, Any], base: str) -> Response:
        return await self._sd_submit("image2image", body, base)

    async def _controlnet(self, body: dict[str, Any], base: str) -> Response:
        return await self._sd_submit("controlnet", body, base)

    async def _sd_submit(self, endpoint: str, body: dict[str, Any], base: str) -> Response:
        problem = _sd_problem(endpoint, body)
        if problem:
            return _code400(problem)
        scripts = _scripts(body)
        vendor_id = str(scripts["id_task"])
        if f"sd:{vendor_id}" in self.jobs:
            return _code400(f"任务ID重复: {vendor_id}")
        job = FakeJob(
            vendor_id=vendor_id,
            kind="sd",
            endpoint=endpoint,
            body=body,
            created_at=self.now(),
            base_url=base,
            width=int(body.get("width") or 512),
            height=int(body.get("height") or 512),
            count=int(body["batch_size"]) * int(body.get("n_iter") or 1),
            callback_url=body.get("callbackUrl") or None,
        )
        inputs = [scripts.get("image_link")]
        inputs += [arg.get("image_link") for arg in scripts.get("controlnet", {}).get("args", [])]
        await self._start(job, [url for url in inputs if url])
        return _ok({"task_id": vendor_id})

    async def _query_task_info(self, body: dict[str, Any], base: str) -> Response:
        vendor_id = body.get("businessTaskId")
        if not isinstance(vendor_id, str) or not vendor_id:
            return _code400("businessTaskId不能为空")
        job = self.jobs.get(f"sd:{vendor_id}")
        if job is None:
            return _not_found()
        return _ok(self._sd_data(job))

    def _sd_data(self, job: FakeJob) -> dict[str, Any]:
        phase, progress = self._phase(job)
        data: dict[str, Any] = {
            "id_task": job.vendor_id,
            "temporaryImageDto": None,
            "differentialImageRspList": None,
        }
        if phase == "queued":
            data.update(status=3, desc="排队中")
        elif phase in ("running", "uploading"):
            data.update(
                status=1 if phase == "running" else 5,
                desc="生成中" if phase == "running" else "任务上传中",
                temporaryImageDto={
                    "progress": f"{progress:.2f}",
                    "currentImage": self._preview(job, progress),
                    "jobNo": 1,
                    "jobCount": job.count,
                },
            )
        elif job.failed:
            data.update(status=0, desc=job.fetch_error or job.fail_desc)
        else:
            self._ensure_outputs(job)
            data.update(
                status=2, desc="任务成功 !", differentialImageRspList=self._image_list(job)
            )
        return data

    def _image_list(self, job: FakeJob) -> list[dict[str, Any]]:
        items = []
        for index, (name, seed) in enumerate(zip(job.outputs, job.seeds, strict=True)):
            moderated = job.moderation and (job.moderated is None or index in job.moderated)
            deleted = moderated and job.moderation == "deleted"
            hidden = moderated and job.moderation == "hidden"
            items.append({
                "img_audit": [{"confidence": None, "label": "porn" if moderated else "nonLabel"}],
                "img_audit_status": not hidden,
                "image_status": 2 if deleted else 1,
                "image_url": f"{job.base_url}/output/{name}",
                "seed": seed,
            })
        return items

    # ---- tools -----------------------------------------------------------

    async def _roop(self, body: dict[str, Any], base: str) -> Response:
        problem = _required_strings(body, "sourceUrl", "targetUrl", "businessTaskId")
        problem = problem or _url_problem(body, "sourceUrl", "targetUrl", "callbackUrl")
        if problem:
            return _code400(problem)
        return await self._tool_submit("roop", body, base, [body["sourceUrl"], body["targetUrl"]])

    async def _enhance(self, body: dict[str, Any], base: str) -> Response:
        problem = _required_strings(body, "businessTaskId", "image")
        problem = problem or _url_problem(body, "image", "callbackUrl")
        factor = body.get("upscalingResize", 2)
        if not problem and (not isinstance(factor, int) or not 1 <= factor <= 8):
            problem = "upscalingResize取值范围[1,8]"
        if problem:
            return _code400(problem)
        return await self._tool_submit("enhance", body, base, [body["image"]])

    async def _tool_submit(
        self, tool: str, body: dict[str, Any], base: str, urls: list[str]
    ) -> Response:
        vendor_id = body["businessTaskId"]
        if f"{tool}:{vendor_id}" in self.jobs:
            return _code400(f"业务ID重复: {vendor_id}")
        # Like the seed's enhance example, the answer already names the future
        # output URL (status 1 = generating), but the file is not there yet.
        name = f"{tool}-{uuid.uuid4().hex}-0.png"
        job = FakeJob(
            vendor_id=vendor_id,
            kind=tool,
            endpoint=tool,
            body=body,
            created_at=self.now(),
            base_url=base,
            callback_url=body.get("callbackUrl") or None,
            outputs=[name],
        )
        await self._start(job, urls)
        return _ok({
            "taskId": job.task_id,
            "toolTask": tool,
            "businessTaskId": vendor_id,
            "status": 1,
            "outputImageUrl": f"{base}/output/{name}",
        })

    def _tool_query(self, tool: str) -> Callable[[dict[str, Any], str], Any]:
        async def query(body: dict[str, Any], base: str) -> Response:
            vendor_id = body.get("businessTaskId")
            if not isinstance(vendor_id, str) or not vendor_id:
                return _code400("businessTaskId不能为空")
            job = self.jobs.get(f"{tool}:{vendor_id}")
            if job is None:
                return _not_found()
            return _ok(self._tool_data(job))

        return query

    def _tool_data(self, job: FakeJob) -> dict[str, Any]:
        phase, _ = self._phase(job)
        data = {
            "businessTaskId": job.vendor_id,
            "taskId": job.task_id,
            "toolTask": job.kind,
            "status": 1,
            "outputImageUrl": "",
        }
        if phase == "done" and job.failed:
            data.update(status=0, desc=job.fetch_error or job.fail_desc)
        elif phase == "done":
            self._ensure_outputs(job)
            data.update(status=2, outputImageUrl=f"{job.base_url}/output/{job.outputs[0]}")
        return data

    # ---- lists -----------------------------------------------------------

    def _lister(self, name: str) -> Callable[[dict[str, Any], str], Any]:
        async def listing(body: dict[str, Any], base: str) -> Response:
            size, page = body.get("pageSize"), body.get("pageNum")
            if not (isinstance(size, int) and isinstance(page, int) and size > 0 and page > 0):
                return _code400("pageSize和pageNum必填且大于0")
            rows = LIST_ROWS[name]
            start = (page - 1) * size
            return _ok({
                "rows": rows[start:start + size],
                "total": len(rows),
                "pageSize": size,
                "pageNum": page,
            })

        return listing

    # ---- jobs, time and images -----------------------------------------

    async def _start(self, job: FakeJob, urls: list[str]) -> None:
        """Register the job, fetch its inputs (as the vendor would) and, when
        it has a callbackUrl, schedule the delivery."""
        key = f"{job.kind}:{job.vendor_id}"
        self.jobs[key] = job
        if self._next_fail:
            job.fail_desc = self._next_fail.pop(0)
        if job.kind == "sd" and self._next_moderation:
            job.moderation, job.moderated = self._next_moderation.pop(0)
        job.input_urls = list(urls)
        for url in urls:
            data = await self._fetch(key, url)
            if data is None:
                job.fetch_error = "图片下载失败"
                break
            job.inputs.append(data)
        if job.kind == "enhance" and job.inputs and not job.fetch_error:
            with Image.open(io.BytesIO(job.inputs[0])) as img:
                if max(img.size) > 1536:
                    job.fetch_error = "图片尺寸超过1536*1536"
        if job.callback_url:
            task = asyncio.get_running_loop().create_task(self._deliver(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fetch(self, key: str, url: str) -> bytes | None:
        try:
            response = await self._client().get(url)
        except httpx.HTTPError as exc:
            self.fetches.append(FetchRecord(key, url, False, None, type(exc).__name__))
            return None
        ok = response.status_code == 200 and _is_image(response.content)
        error = "" if ok else "not an image" if response.status_code == 200 else "HTTP error"
        self.fetches.append(FetchRecord(key, url, ok, response.status_code, error))
        return response.content if ok else None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        return self._http

    def _phase(self, job: FakeJob) -> tuple[str, float]:
        if job.forced_done:
            return "done", 1.0
        elapsed = self.now() - job.created_at
        if elapsed < self.queue_seconds:
            return "queued", 0.0
        elapsed -= self.queue_seconds
        if elapsed < self.run_seconds:
            return "running", min(0.99, elapsed / self.run_seconds) if self.run_seconds else 0.0
        if elapsed < self.run_seconds + self.upload_seconds:
            return "uploading", 1.0
        return "done", 1.0

    def _preview(self, job: FakeJob, progress: float) -> str:
        shade = int(255 * progress)
        img = Image.new("RGB", (64, 64), (shade, 80, 255 - shade))
        encoded = base64.b64encode(_png(img)).decode()
        return f"data:image/png;base64,{encoded}" if self.preview_as_data_uri else encoded

    def _ensure_outputs(self, job: FakeJob) -> None:
        if job.kind == "sd" and not job.outputs:
            rng = random.Random(job.vendor_id)
            for index in range(job.count):
                seed = rng.randrange(2**31)
                name = f"sd-{uuid.uuid4().hex}-{index}.png"
                self.files[name] = (_render(job.width, job.height, seed, index), self.now())
                job.outputs.append(name)
                job.seeds.append(seed)
        elif job.kind in ("roop", "enhance") and job.outputs[0] not in self.files:
            self.files[job.outputs[0]] = (_tool_output(job), self.now())

    def _done(self, job: FakeJob) -> bool:
        return self._phase(job)[0] == "done"

    # ---- callbacks -------------------------------------------------------

    async def _deliver(self, key: str) -> None:
        job = self.jobs[key]
        while not self._done(job):
            await asyncio.sleep(0.005)
        if job.kind == "sd":
            data = self._sd_data(job)
        else:
            data = self._tool_data(job)
        payload = data if self.callback_shape == "bare" else {
            "code": "200", "msg": "success", "data": data,
        }
        assert job.callback_url is not None
        for attempt in range(1, self.callback_max_retries + 2):
            accepted = await self._post_callback(key, job.callback_url, attempt, payload)
            if accepted or attempt > self.callback_max_retries:
                return
            step = self.callback_schedule[min(attempt, len(self.callback_schedule)) - 1]
            await asyncio.sleep(step * self.callback_delay_scale)

    async def _post_callback(
        self, key: str, url: str, attempt: int, payload: dict[str, Any]
    ) -> bool:
        status: int | None = None
        answer = ""
        try:
            response = await self._client().post(url, json=payload)
            status, answer = response.status_code, response.text
        except httpx.HTTPError as exc:
            answer = type(exc).__name__
        parsed = _parse_json(answer.encode())
        accepted = isinstance(parsed, dict) and str(parsed.get("code")) == "200"
        self.callbacks.append(
            CallbackAttempt(key, url, attempt, self.now(), payload, status, answer, accepted)
        )
        return accepted

    # ---- result files ----------------------------------------------------

    async def _output(self, request: Request) -> Response:
        self.requests.append(RecordedRequest(
            "GET", request.url.path, {k.lower(): v for k, v in request.headers.items()}, None
        ))
        name = request.path_params["name"]
        if name not in self.files:
            return Response(_oss_error("NoSuchKey", "The specified key does not exist."), 404,
                            media_type="application/xml")
        data, created = self.files[name]
        if self.now() - created > self.url_ttl:
            return Response(_oss_error("AccessDenied", "Request has expired."), 403,
                            media_type="application/xml")
        return Response(data, media_type="image/png")


# ---- validation (pure) -----------------------------------------------------


def _scripts(body: dict[str, Any]) -> dict[str, Any]:
    # The seed spells it both ways; accept either, as the vendor presumably does.
    scripts = body.get("alwayson_scripts", body.get("always_on_scripts"))
    return scripts if isinstance(scripts, dict) else {}


def _sd_problem(endpoint: str, body: dict[str, Any]) -> str:
    if not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
        return "prompt不能为空"
    batch = body.get("batch_size")
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 8:
        return "batch_size必填, 取值范围[1,8]"
    n_iter = body.get("n_iter", 1)
    if not isinstance(n_iter, int) or not 1 <= n_iter <= 4:
        return "n_iter取值范围[1,4]"
    for name in ("width", "height"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or not 0 < value <= 1024 or value % 8:
            return f"{name}必须在(0,1024]之间且为8的倍数"
    seed = body.get("seed", -1)
    try:
        int(seed)
    except (TypeError, ValueError):
        return "seed格式错误"
    strength = body.get("denoising_strength")
    if strength is not None and not (isinstance(strength, int | float) and 0 <= strength <= 1):
        return "denoising_strength取值范围[0,1]"
    scripts = _scripts(body)
    if not scripts:
        return "alwayson_scripts不能为空"
    model = scripts.get("sd_model_checkpoint")
    if not isinstance(model, str) or not model:
        return "sd_model_checkpoint不能为空"
    if model not in {row["sdModelCheckpoint"] for row in MODEL_ROWS}:
        return f"模型不存在: {model}"
    if not isinstance(scripts.get("id_task"), str) or not scripts["id_task"]:
        return "id_task不能为空"
    if body.get("callbackUrl") is not None and not _is_http(body["callbackUrl"]):
        return "callbackUrl格式错误"
    if endpoint == "image2image" and not _is_http(scripts.get("image_link")):
        return "image_link不能为空且必须为http(s)链接"
    if endpoint == "controlnet":
        return _controlnet_problem(body, scripts)
    return ""


def _controlnet_problem(body: dict[str, Any], scripts: dict[str, Any]) -> str:
    if body.get("resize_mode") not in (0, 1, 2, 3):
        return "resize_mode必填"
    if scripts.get("image_link") is not None and not _is_http(scripts["image_link"]):
        return "image_link必须为http(s)链接"
    args = scripts.get("controlnet", {}).get("args") if isinstance(
        scripts.get("controlnet"), dict) else None
    if not isinstance(args, list) or not args:
        return "controlnet.args不能为空"
    for arg in args:
        if not isinstance(arg, dict) or not arg.get("module") or not arg.get("model"):
            return "controlnet的module和model必填"
        if arg.get("image_link") is not None and not _is_http(arg["image_link"]):
            return "controlnet image_link必须为http(s)链接"
    return ""


def _required_strings(body: dict[str, Any], *names: str) -> str:
    for name in names:
        if not isinstance(body.get(name), str) or not body[name].strip():
            return f"{name}不能为空"
    return ""


def _url_problem(body: dict[str, Any], *names: str) -> str:
    for name in names:
        if body.get(name) is not None and not _is_http(body[name]):
            return f"{name}必须为http(s)链接"
    return ""


def _is_http(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _is_image(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        return True
    except Exception:  # noqa: BLE001 — any Pillow failure means "not an image"
        return False


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return raw.decode("utf-8", "replace")


# ---- responses ---------------------------------------------------------------


def _ok(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"code": "200", "msg": "success", "data": data})


def _code400(msg: str) -> JSONResponse:
    return JSONResponse({"code": "400", "msg": msg, "data": None})


def _not_found() -> JSONResponse:
    return JSONResponse({"code": "400", "msg": "任务不存在", "data": None})


def _gateway_error(status: int, code: str, message: str) -> Response:
    return Response(
        content=f"{status} {message}".encode(),
        status_code=status,
        media_type="text/plain",
        headers={
            "X-Ca-Error-Code": code,
            "X-Ca-Error-Message": message,
            "X-Ca-Request-Id": str(uuid.uuid4()).upper(),
        },
    )


def _fault_response(kind: str) -> Response:
    match kind:
        case "http500":
            return Response("Internal Server Error", 500, media_type="text/plain")
        case "malformed":
            return Response("<html><body>502 Bad Gateway</body></html>", 200,
                            media_type="text/html")
        case "quota":
            return _gateway_error(403, "A403QE", "Quota Exhausted")
        case "throttled":
            return _gateway_error(403, "A403AR", "Throttled by APP Flow Control")
        case "auth":
            return _gateway_error(403, "A403AC", "Invalid AppCode `not exists`")
        case "sensitive":
            return _code400("提示词包含敏感词，请修改后重试")
        case _:
            return _code400("系统繁忙，请稍后再试")


def _oss_error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()


# ---- images ----------------------------------------------------------------


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _render(width: int, height: int, seed: int, index: int) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(8, width // 2 + 9), y0 + rng.randrange(8, height // 2 + 9)
        draw.ellipse((x0, y0, x1, y1), fill=tuple(rng.randrange(256) for _ in range(3)))
    draw.text((8, 8), f"zhiqite #{index} seed {seed}", fill=(255, 255, 255))
    return _png(img)


def _tool_output(job: FakeJob) -> bytes:
    with Image.open(io.BytesIO(job.inputs[-1])) as source:
        img = source.convert("RGB")
    if job.kind == "enhance":
        factor = int(job.body.get("upscalingResize", 2))
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.BICUBIC)
    else:  # roop: "paste the face" onto the target
        draw = ImageDraw.Draw(img)
        w, h = img.size
        draw.ellipse((w // 3, h // 4, 2 * w // 3, 3 * h // 4), fill=(230, 190, 160))
    return _png(img)
