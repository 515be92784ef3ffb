"""A fake zhiqite vendor behind a fake Aliyun API-market gateway, as strict as
the vendor document (seeds/002_…): auth headers, Content-Type, required
fields, size limits, duplicate ids; jobs that queue, run with a live preview,
upload and finish with real PNGs served (and expiring) from the fake itself;
input images fetched by URL like the real vendor; callbacks retried on the
vendor's schedule; fault switches for every error path. Every query is a
billed call [seed] ("会多消耗一次接口请求次数"): ``api_requests`` counts them.

Tool tasks (roop, enhance) answer their queryTask as its table says
("1.成功, 2.失败"): status 1 with outputImageUrl when done, status 2 and no
URL when failed. While a tool task runs (no status documented) the fake
answers like the submit answer's "1:生成中", but without the URL yet: only
the URL tells done from running.
"""

from __future__ import annotations

import base64
import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from tests.fakes.vendor import (FakeVendor, JSONResponse, Request, Response, Route, Starlette,
                                _face_pasted, _is_http, _json_problem, _parse_json, _picture,
                                _png, _required_strings, _size_of, _upscaled, _url_problem)

API_ROOT = "/AIGCImgOpenServ/"
CALLBACK_SCHEDULE = (3, 5, 15, 30, 60, 600, 3600)  # seconds [seed]
CALLBACK_MAX_RETRIES = 10  # [seed] at most 10 retries
DEFAULT_MODEL = "revAnimated_v122_7371.safetensors"
TOOL_DONE, TOOL_FAILED = 1, 2  # [seed] queryTask: "1.成功, 2.失败"
MAX_ENHANCE_SIDE = 1536  # [seed]

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


class FakeZhiqite(FakeVendor):
    api_paths = (API_ROOT,)
    oss_files = True
    # fail_next kinds beyond http500 / malformed / timeout.
    faults = {
        "quota": lambda: _gateway_error(403, "A403QE", "Quota Exhausted"),
        "throttled": lambda: _gateway_error(403, "A403AR", "Throttled by APP Flow Control"),
        "auth": lambda: _gateway_error(403, "A403AC", "Invalid AppCode `not exists`"),
        "code400": lambda: _code400("系统繁忙，请稍后再试"),
        "sensitive": lambda: _code400("提示词包含敏感词，请修改后重试"),
    }

    def __init__(
        self,
        app_code: str | None = "test-app-code",
        access_key_id: str | None = "test-key-id",
        access_key_secret: str | None = "test-key-secret",
        *,
        # a job's phases, in the fake's seconds
        queue_seconds: float = 0.05, run_seconds: float = 0.1, upload_seconds: float = 0.02,
        url_ttl: float = 3600.0, timeout_seconds: float = 1.0,
        # callbacks: [seed] retried after 3, 5, 15 … s (× callback_delay_scale), 10 times
        callback_schedule: tuple[float, ...] = CALLBACK_SCHEDULE,
        callback_delay_scale: float = 1.0, callback_max_retries: int = CALLBACK_MAX_RETRIES,
        callback_shape: str = "envelope",  # or "bare": only the data object
        preview_as_data_uri: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            clock, app_code=app_code, access_key_id=access_key_id,
            access_key_secret=access_key_secret, queue_seconds=queue_seconds,
            run_seconds=run_seconds, upload_seconds=upload_seconds, url_ttl=url_ttl,
            timeout_seconds=timeout_seconds, callback_delay_scale=callback_delay_scale,
            callback_schedule=callback_schedule, callback_max_retries=callback_max_retries,
            callback_shape=callback_shape, preview_as_data_uri=preview_as_data_uri,
        )
        self.jobs: dict[str, FakeJob] = {}  # "<kind>:<vendor id>" → job
        self._routes = self._handlers()
        self.app = Starlette(routes=[
            Route(API_ROOT + "{path:path}", self._api, methods=["GET", "POST", "PUT"]),
            Route("/output/{name}", self._output, methods=["GET"]),
        ])

    # ---- test-side controls --------------------------------------------

    def moderate_next(self, indices: Iterable[int] | None = None, mode: str = "deleted") -> None:
        """The next job's images (all, or those ``indices``) fail moderation:
        ``deleted`` → image_status 2, ``hidden`` → img_audit_status false."""
        if mode not in ("deleted", "hidden"):
            raise ValueError(mode)
        self._script("moderation", (mode, None if indices is None else frozenset(indices)))

    def fail_job_next(self, desc: str = "任务失败：生成异常") -> None:
        """The next job fails with this desc (SD status 0, tool status 2)."""
        self._script("failure", desc)

    def job(self, job_id: str) -> FakeJob:
        """A job by adapter job id ("sd:x") or by vendor id ("x")."""
        if job_id in self.jobs:
            return self.jobs[job_id]
        matches = [job for job in self.jobs.values() if job.vendor_id == job_id]
        if len(matches) != 1:
            raise KeyError(job_id)
        return matches[0]

    # ---- the gateway -----------------------------------------------------

    async def _api(self, request: Request) -> Response:
        record = await self._record(request)
        endpoint = request.url.path[len(API_ROOT):]
        refused = await self._faulted(endpoint) or self._check_auth(record.headers)
        if refused is not None:
            return refused
        if request.method != "POST":
            return _gateway_error(405, "I405UM", f"Unsupported Method `{request.method}`")
        handler = self._routes.get(endpoint)
        if handler is None:
            return _gateway_error(400, "A400IU", "Invalid Url")
        problem = _json_problem(record.headers, record.body)
        if problem:
            return _code400(problem)
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
        job, refused = self._queried("sd", body)
        return refused or _ok(self._sd_data(job))

    def _queried(self, kind: str, body: dict[str, Any]) -> tuple[Any, Response | None]:
        """(the job a query names, None) or (None, the refusal)."""
        vendor_id = body.get("businessTaskId")
        if not isinstance(vendor_id, str) or not vendor_id:
            return None, _code400("businessTaskId不能为空")
        job = self.jobs.get(f"{kind}:{vendor_id}")
        return (job, None) if job is not None else (None, _code400("任务不存在"))

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
            job, refused = self._queried(tool, body)
            return refused or _ok(self._tool_data(job))

        return query

    def _tool_data(self, job: FakeJob) -> dict[str, Any]:
        """A tool task as its queryTask answers: 1 + URL done, 2 failed."""
        data = {
            "businessTaskId": job.vendor_id,
            "taskId": job.task_id,
            "toolTask": job.kind,
            "status": 1,  # running: no status documented; the URL is still empty
            "outputImageUrl": "",
        }
        if self._done(job) and job.failed:
            data.update(status=TOOL_FAILED, desc=job.fetch_error or job.fail_desc)
        elif self._done(job):
            self._ensure_outputs(job)
            data.update(status=TOOL_DONE,
                        outputImageUrl=f"{job.base_url}/output/{job.outputs[0]}")
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
        # A scripted outcome wins over what a subclass may have set.
        job.fail_desc = self._scripted_next("failure", job.fail_desc)
        if job.kind == "sd":
            job.moderation, job.moderated = self._scripted_next(
                "moderation", (job.moderation, job.moderated))
        job.input_urls = list(urls)
        inputs = await self._fetch_all(key, urls)
        if inputs is None:
            job.fetch_error = "图片下载失败"
        else:
            job.inputs = inputs
        if job.kind == "enhance" and job.inputs and not job.fetch_error:
            if max(_size_of(job.inputs[0])) > MAX_ENHANCE_SIDE:
                job.fetch_error = f"图片尺寸超过{MAX_ENHANCE_SIDE}*{MAX_ENHANCE_SIDE}"
        if job.callback_url:
            self._spawn(self._deliver(key))

    def _phase(self, job: FakeJob) -> tuple[str, float]:
        stages = (("queued", self.queue_seconds), ("running", self.run_seconds),
                  ("uploading", self.upload_seconds))
        phase, fraction = self._timeline(job, stages, "done")
        return phase, {"queued": 0.0, "running": min(0.99, fraction)}.get(phase, 1.0)

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
                label = f"zhiqite #{index} seed {seed}"
                picture = _picture((job.width, job.height), seed, label, blobs=4)
                job.outputs.append(self._store(f"sd-{uuid.uuid4().hex}-{index}.png", picture))
                job.seeds.append(seed)
        elif job.kind in ("roop", "enhance") and job.outputs[0] not in self.files:
            self._store(job.outputs[0], _tool_output(job))

    def _done(self, job: FakeJob) -> bool:
        return self._phase(job)[0] == "done"

    # ---- callbacks -------------------------------------------------------

    async def _deliver(self, key: str) -> None:
        job = self.jobs[key]
        await self._until(lambda: self._done(job))
        data = self._sd_data(job) if job.kind == "sd" else self._tool_data(job)
        payload = data if self.callback_shape == "bare" else {
            "code": "200", "msg": "success", "data": data,
        }
        assert job.callback_url is not None
        schedule = self.callback_schedule
        delays = [schedule[min(n, len(schedule)) - 1] * self.callback_delay_scale
                  for n in range(1, self.callback_max_retries + 1)]
        await self._call_back(key, job.callback_url, payload, delays)

    def _callback_accepted(self, status: int | None, answer: str) -> bool:
        """[seed] only an answer {"code": "200"} counts as received."""
        parsed = _parse_json(answer.encode())
        return isinstance(parsed, dict) and str(parsed.get("code")) == "200"


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
    problem = _url_problem(scripts, "image_link")
    if problem:
        return problem
    args = scripts.get("controlnet", {}).get("args") if isinstance(
        scripts.get("controlnet"), dict) else None
    if not isinstance(args, list) or not args:
        return "controlnet.args不能为空"
    for arg in args:
        if not isinstance(arg, dict) or not arg.get("module") or not arg.get("model"):
            return "controlnet的module和model必填"
        if _url_problem(arg, "image_link"):
            return "controlnet image_link必须为http(s)链接"
    return ""


# ---- responses ---------------------------------------------------------------


def _ok(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"code": "200", "msg": "success", "data": data})


def _code400(msg: str) -> JSONResponse:
    return JSONResponse({"code": "400", "msg": msg, "data": None})


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


def _tool_output(job: FakeJob) -> bytes:
    if job.kind == "enhance":
        return _png(_upscaled(job.inputs[-1], int(job.body.get("upscalingResize", 2))))
    return _png(_face_pasted(job.inputs[-1]))  # roop: "paste the face" onto the target
