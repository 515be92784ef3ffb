"""A fake apispace (APISpace "AI 绘画", seeds/001_…), as strict as its
document: X-APISpace-Token + Authorization-Type headers, JSON bodies with the
task name each endpoint expects and the required params (w/h ≤ 768; img2acg
takes its input as `image_url`, the name the vendor's own page gives, with
`url` allowed beside it), input images fetched by URL with httpx like the
real vendor; jobs that go pending (with their queue position `pending` beside
`status`) → working → finished / exception with real PNGs served (and
expiring) from the fake itself, moderation (`safe: false`), callbacks POSTed
to notify_url and retried; fault switches for every error path.

Shapes: submit and query as VENDORS.md [public]; the callback as the seed;
its retries (10 tries, 3 s apart, until a 2xx answer with a JSON body) as the
vendor's backend (carefree-creator) does [public]. [assume]: the APISpace
gateway refuses with an HTTP status and a JSON body (401 auth, 402 credit,
429 rate limit with Retry-After); the vendor's own errors come with HTTP 200
and a non-zero code.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps

from tests.fakes.vendor import (FakeVendor, html, JSONResponse, Request, Response, Route,
                                Starlette, _is_http, _is_int, _is_json, _is_number, _json_problem,
                                _picture, _png, _rgb, _upscaled)

TASKS = {  # endpoint → the task name it takes
    "txt2img": "txt2img.sd",
    "img2img": "img2img.sd",
    "img2acg": "img2acg",
    "img2img-sr": "img2img.sr",
}
MODELS = frozenset({"art", "anime", "v1.5", "dreamlike_v1"})
SAMPLERS = frozenset({"k_euler", "k_euler_a", "k_lms", "k_heun", "k_dpm_2", "k_dpm_2_a",
                      "ddim", "plms", "lms"})
STYLES = frozenset({
    "Chinese_style", "American_style", "Cute_style", "Gorgeous_style", "Horrible_style",
    "Avatar_style", "Fighting_style", "Machine_style", "Cyberfuture_style", "JOJO_style",
    "Bunny_style", "CatEar_style",
})
MAX_SIDE = 768  # [seed]
UPSCALE_FACTOR = 4  # [seed] 512 → 2048
CALLBACK_RETRIES = 10  # [public] the backend's post_callback(retry=10, interval=3)
CALLBACK_INTERVAL = 3.0


@dataclass
class FakeJob:
    uid: str
    task: str
    params: dict[str, Any]
    notify_url: str
    created_at: float
    base_url: str
    input: bytes | None = None
    fail_reason: str = ""
    unsafe_reason: str = ""  # moderation: finished with safe false
    forced_done: bool = False
    output: str = ""  # file name under /cdn/ and /cos/

    @property
    def job_id(self) -> str:
        return f"uid:{self.uid}"

    @property
    def input_url(self) -> str | None:
        """The image the job works on (img2acg names it image_url)."""
        return self.params.get("image_url") or self.params.get("url")


class FakeApispace(FakeVendor):
    api_paths = ("/aigc/",)
    expired_text = "AccessDenied: Request has expired"
    # fail_next kinds beyond malformed / timeout.
    faults = {
        "http500": lambda: html(500, "500 Internal Server Error"),
        "auth": lambda: _gateway_error(401, "X-APISpace-Token无效"),
        "quota": lambda: _gateway_error(402, "剩余调用次数不足，请充值"),
        "sensitive": lambda: _code_error(400, "输入内容包含敏感信息"),
        "bad_request": lambda: _code_error(400, "参数错误"),
        "rate_limited": lambda: _gateway_error(429, "请求频率超限", {"Retry-After": "1"}),
    }

    def __init__(
        self,
        token: str = "test-apispace-token",
        *,
        queue_seconds: float = 0.05, run_seconds: float = 0.1,  # pending, working
        url_ttl: float = 3600.0, timeout_seconds: float = 1.0,
        # callbacks: [public] 10 tries, 3 s apart (× callback_delay_scale)
        callback_interval: float = CALLBACK_INTERVAL, callback_retries: int = CALLBACK_RETRIES,
        callback_delay_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            clock, token=token, queue_seconds=queue_seconds, run_seconds=run_seconds,
            url_ttl=url_ttl, timeout_seconds=timeout_seconds,
            callback_delay_scale=callback_delay_scale, callback_interval=callback_interval,
            callback_retries=callback_retries,
        )
        self.jobs: dict[str, FakeJob] = {}  # uid → job
        self.app = Starlette(routes=[
            Route("/aigc/{endpoint:path}", self._api, methods=["GET", "POST"]),
            Route("/aigc-images/{host}/{name}", self._output, methods=["GET"]),
        ])

    # ---- test-side controls --------------------------------------------

    def fail_job_next(
        self, reason: str = "txt2img.sd -> start -> run_algorithm : CUDA error"
    ) -> None:
        """The next job ends in status exception with this reason."""
        self._script("failure", reason)

    def moderate_next(self, reason: str = "porn") -> None:
        """The next audited job finishes unsafe: cdn "" and safe false."""
        self._script("unsafe", reason)

    def job(self, job_id: str) -> FakeJob:
        """A job by adapter job id ("uid:…") or uid."""
        return self.jobs[job_id.removeprefix("uid:")]

    # ---- the gateway -----------------------------------------------------

    async def _api(self, request: Request) -> Response:
        record = await self._record(request)
        endpoint = request.path_params["endpoint"]
        refused = await self._faulted(endpoint)
        if refused is not None:
            return refused
        if (not self.token or record.headers.get("x-apispace-token") != self.token
                or record.headers.get("authorization-type") != "apikey"):
            return _gateway_error(401, "X-APISpace-Token无效或Authorization-Type错误")
        if endpoint not in TASKS and endpoint != "query-image":
            return _gateway_error(404, "接口不存在")
        if request.method != "POST":
            return _gateway_error(405, "请求方式错误")
        problem = _json_problem(record.headers, record.body)
        if problem:
            return _code_error(400, problem)
        if endpoint == "query-image":
            return self._query(record.body)
        return await self._submit(endpoint, record.body, str(request.base_url).rstrip("/"))

    async def _submit(self, endpoint: str, body: dict[str, Any], base: str) -> Response:
        problem = submit_problem(endpoint, body)
        if problem:
            return _code_error(400, problem)
        job = FakeJob(
            uid=uuid.uuid4().hex,
            task=body["task"],
            params=body["params"],
            notify_url=body.get("notify_url") or "",
            created_at=self.now(),
            base_url=base,
        )
        self.jobs[job.uid] = job
        job.fail_reason = self._scripted_next("failure", "")
        if job.task != "img2img.sr":  # sr is not audited [public]
            job.unsafe_reason = self._scripted_next("unsafe", "")
        url = job.input_url
        if url:
            job.input = await self._fetch(job.uid, url)
            if job.input is None and not job.fail_reason:
                job.fail_reason = f"{job.task} -> start -> run_algorithm : download failed ({url})"
        if job.notify_url:
            self._spawn(self._deliver(job))
        return JSONResponse({"code": 0, "msg": "success", "data": {"uid": job.uid}})

    def _query(self, body: dict[str, Any]) -> Response:
        uid = body.get("uid")
        if not isinstance(uid, str) or not uid:
            return _code_error(400, "uid不能为空")
        job = self.jobs.get(uid)
        data = self._status_data(job) if job is not None else _status(uid, "not_found")
        return JSONResponse({"code": 0, "msg": "success", "data": data})

    # ---- jobs, time and images -------------------------------------------

    def _phase(self, job: FakeJob) -> str:
        stages = (("pending", self.queue_seconds), ("working", self.run_seconds))
        return self._timeline(job, stages, "done")[0]

    def _status_data(self, job: FakeJob) -> dict[str, Any]:
        phase = self._phase(job)
        if phase == "pending":  # the queue position beside the status [public]
            position = self._queue_position(job, self.jobs.values(), "pending")
            return _status(job.uid, "pending", pending=position)
        if phase == "working":
            return _status(job.uid, "working")
        if job.fail_reason:
            return _status(job.uid, "exception", reason=job.fail_reason)
        result = self._result(job)
        img_urls = [result["cdn"]] if result["cdn"] else []
        return {"status": "finished", "pending": 0, "img_urls": img_urls, **result}

    def _result(self, job: FakeJob) -> dict[str, Any]:
        """The backend's result record (the callback's `data`) [seed]."""
        if job.unsafe_reason:
            cdn = cos = ""
        else:
            self._ensure_output(job)
            cdn = f"{job.base_url}/aigc-images/cdn/{job.output}"
            cos = f"{job.base_url}/aigc-images/cos/{job.output}"
        started = job.created_at + self.queue_seconds
        return {
            "uid": job.uid, "cdn": cdn, "cos": cos, "safe": not job.unsafe_reason,
            "reason": job.unsafe_reason, "createtime": job.created_at, "starttime": started,
            "end_time": self.now(), "duration": self.now() - job.created_at,
            "request": {"task": job.task, "model": job.params},
        }

    def _ensure_output(self, job: FakeJob) -> None:
        if not job.output:
            job.output = self._store(f"{uuid.uuid4().hex}.png", _render(job))

    def _serves(self, request: Request) -> bool:
        return request.path_params["host"] in ("cdn", "cos")

    # ---- callbacks -------------------------------------------------------

    async def _deliver(self, job: FakeJob) -> None:
        await self._until(lambda: self._phase(job) == "done")
        if job.fail_reason:
            data = {"uid": job.uid, "reason": job.fail_reason, "end_time": self.now(),
                    "request": {"task": job.task, "params": job.params}}
            payload = {"uid": job.uid, "success": False, "data": data}
        else:
            payload = {"uid": job.uid, "success": True, "data": self._result(job)}
        delay = self.callback_interval * self.callback_delay_scale
        await self._call_back(job.uid, job.notify_url, payload,
                              [delay] * (self.callback_retries - 1))

    def _callback_accepted(self, status: int | None, answer: str) -> bool:
        """A 2xx answer whose body is JSON (the backend reads it with res.json())."""
        return super()._callback_accepted(status, answer) and _is_json(answer)


# ---- validation (pure) -----------------------------------------------------


def submit_problem(endpoint: str, body: dict[str, Any]) -> str:
    """The first thing the vendor would refuse in a submit body, or ""."""
    if body.get("task") != TASKS[endpoint]:
        return f"task必须为{TASKS[endpoint]}"
    params = body.get("params")
    if not isinstance(params, dict):
        return "params不能为空"
    notify_url = body.get("notify_url", "")
    if not isinstance(notify_url, str) or (notify_url and not _is_http(notify_url)):
        return "notify_url必须为http(s)链接或空字符串"
    if endpoint == "txt2img":
        return _txt2img_problem(params)
    if endpoint == "img2acg":
        return _img2acg_problem(params)
    if not _is_http(params.get("url")):
        return "url必须为图片的http(s)链接"
    if endpoint == "img2img":
        if not isinstance(params.get("text"), str) or not params["text"].strip():
            return "text不能为空"
        if params.get("model", "anime") not in MODELS:
            return f"model不存在: {params.get('model')}"
        return _fidelity_problem(params)
    if not isinstance(params.get("is_anime", False), bool):  # img2img-sr
        return "is_anime必须为布尔值"
    return ""


def _img2acg_problem(params: dict[str, Any]) -> str:
    """[public] the vendor's img2acg names its input image_url; url may stand beside it."""
    if params.get("style") not in STYLES:
        return f"style不存在: {params.get('style')}"
    if not _is_http(params.get("image_url")):
        return "image_url必须为图片的http(s)链接"
    if "url" in params and not _is_http(params["url"]):
        return "url必须为图片的http(s)链接"
    return _fidelity_problem(params)


def _fidelity_problem(params: dict[str, Any]) -> str:
    fidelity = params.get("fidelity", 0.2)
    if not _is_number(fidelity) or not 0 <= fidelity <= 1:
        return "fidelity取值范围[0,1]"
    return ""


def _txt2img_problem(params: dict[str, Any]) -> str:
    if not isinstance(params.get("text"), str) or not params["text"].strip():
        return "text不能为空"
    if params.get("model") not in MODELS:
        return f"model不存在: {params.get('model')}"
    for name in ("w", "h"):
        value = params.get(name)
        if not _is_int(value) or not 64 <= value <= MAX_SIDE or value % 8:
            return f"{name}必须为[64,{MAX_SIDE}]之间8的倍数"
    guidance = params.get("guidance_scale", 7.5)
    if not _is_number(guidance) or not 1 <= guidance <= 30:
        return "guidance_scale取值范围[1,30]"
    if params.get("sampler", "k_euler") not in SAMPLERS:
        return f"sampler不存在: {params.get('sampler')}"
    seed = params.get("seed", -1)
    if not _is_int(seed) or seed < -1:
        return "seed必须为整数，-1为随机"
    steps = params.get("num_steps", 20)
    if not _is_int(steps) or not 1 <= steps <= 100:
        return "num_steps取值范围[1,100]"
    if not isinstance(params.get("negative_prompt", ""), str):
        return "negative_prompt必须为字符串"
    return ""


# ---- responses ---------------------------------------------------------------


def _status(uid: str, status: str, *, pending: int = 0, reason: str = "") -> dict[str, Any]:
    """A query's data for a job without a result (yet)."""
    return {"uid": uid, "status": status, "pending": pending, "cdn": "", "img_urls": [],
            "safe": True, "reason": reason}


def _code_error(code: int, msg: str) -> JSONResponse:
    """The vendor's own errors: HTTP 200 and a non-zero code."""
    return JSONResponse({"code": code, "msg": msg, "data": None})


def _gateway_error(status: int, msg: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The APISpace gateway's refusals [assume]: the status, and the same code."""
    return JSONResponse({"code": status, "msg": msg, "data": None}, status_code=status,
                        headers=headers)


# ---- images ----------------------------------------------------------------


def _render(job: FakeJob) -> bytes:
    """What each task makes: a picture of the prompt's size, the input
    repainted, posterized ('anime') or ×4 larger."""
    if job.task == "txt2img.sd":
        size = (job.params["w"], job.params["h"])
        return _picture(size, job.uid, f"apispace {job.uid[:8]}")
    assert job.input is not None
    if job.task == "img2img.sr":
        return _png(_upscaled(job.input, UPSCALE_FACTOR))
    img = _rgb(job.input)
    if job.task == "img2acg":
        return _png(ImageOps.posterize(img, 2))
    return _png(Image.blend(img, Image.new("RGB", img.size, (90, 160, 220)), 0.4))
