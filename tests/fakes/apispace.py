"""A fake apispace (APISpace "AI 绘画", seeds/001_…), as strict as its
document: X-APISpace-Token + Authorization-Type headers, JSON bodies with the
task name each endpoint expects and the required params (w/h ≤ 768), input
images fetched by URL with httpx like the real vendor; jobs that go pending →
working → finished / exception with real PNGs served (and expiring) from the
fake itself, moderation (`safe: false`), callbacks POSTed to notify_url and
retried; fault switches for every error path.

Shapes: submit and query as VENDORS.md [public]; the callback as the seed;
its retries (10 tries, 3 s apart, until a 2xx answer with a JSON body) as the
vendor's backend (carefree-creator) does [public]. [assume]: the APISpace
gateway refuses with an HTTP status and a JSON body (401 auth, 402 credit,
429 rate limit with Retry-After); the vendor's own errors come with HTTP 200
and a non-zero code.

    fake = FakeApispace(queue_seconds=0.05, run_seconds=0.1)
    async with serve(fake.app) as base_url:
        ...
    await fake.aclose()          # stops callback deliveries, closes its client
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image, ImageDraw, ImageOps
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FAULT_KINDS = frozenset(
    {"http500", "malformed", "auth", "quota", "rate_limited", "sensitive", "timeout",
     "bad_request"}
)
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
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or the raw text


@dataclass
class FetchRecord:
    uid: str
    url: str
    ok: bool
    status_code: int | None
    error: str = ""


@dataclass
class CallbackAttempt:
    uid: str
    url: str
    attempt: int  # 1 = first delivery
    at: float  # the fake's clock
    payload: dict[str, Any]
    status_code: int | None
    answer: str
    accepted: bool


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


class FakeApispace:
    def __init__(
        self,
        token: str = "test-apispace-token",
        *,
        queue_seconds: float = 0.05,
        run_seconds: float = 0.1,
        url_ttl: float = 3600.0,
        timeout_seconds: float = 1.0,
        callback_delay_scale: float = 1.0,
        callback_interval: float = CALLBACK_INTERVAL,
        callback_retries: int = CALLBACK_RETRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.queue_seconds = queue_seconds
        self.run_seconds = run_seconds
        self.url_ttl = url_ttl
        self.timeout_seconds = timeout_seconds
        self.callback_delay_scale = callback_delay_scale
        self.callback_interval = callback_interval
        self.callback_retries = callback_retries
        self._clock = clock
        self._offset = 0.0
        self._defaults = {
            name: getattr(self, name)
            for name in ("token", "queue_seconds", "run_seconds", "url_ttl", "timeout_seconds",
                         "callback_delay_scale", "callback_interval", "callback_retries")
        }

        self.requests: list[RecordedRequest] = []
        self.fetches: list[FetchRecord] = []
        self.callbacks: list[CallbackAttempt] = []
        self.jobs: dict[str, FakeJob] = {}  # uid → job
        self.files: dict[str, tuple[bytes, float]] = {}  # name → (png, created_at)
        self._faults: list[list[Any]] = []  # [kind, times left, path filter]
        self._next_fail: list[str] = []
        self._next_unsafe: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None

        self.app = Starlette(routes=[
            Route("/aigc/{endpoint:path}", self._api, methods=["GET", "POST"]),
            Route("/aigc-images/{host}/{name}", self._output, methods=["GET"]),
        ])

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
        or records; jobs and files stay (uids are unique anyway)."""
        for name, value in self._defaults.items():
            setattr(self, name, value)
        self._offset = 0.0
        self._faults.clear()
        self._next_fail.clear()
        self._next_unsafe.clear()
        for task in list(self._tasks):
            task.cancel()
        self.requests.clear()
        self.fetches.clear()
        self.callbacks.clear()

    def fail_next(self, kind: str, times: int = 1, path: str | None = None) -> None:
        """The next ``times`` API calls (whose path contains ``path``, if
        given) fail as ``kind``: http500, malformed (HTML with HTTP 200),
        auth (401), quota (402), rate_limited (429), sensitive and
        bad_request (code 400 with HTTP 200), timeout (answers normally
        after ``timeout_seconds``)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        self._faults.append([kind, times, path])

    def fail_job_next(
        self, reason: str = "txt2img.sd -> start -> run_algorithm : CUDA error"
    ) -> None:
        """The next job ends in status exception with this reason."""
        self._next_fail.append(reason)

    def moderate_next(self, reason: str = "porn") -> None:
        """The next job finishes unsafe: cdn "" and safe false."""
        self._next_unsafe.append(reason)

    def job(self, job_id: str) -> FakeJob:
        """A job by adapter job id ("uid:…") or uid."""
        return self.jobs[job_id.removeprefix("uid:")]

    def finish(self, job_id: str) -> None:
        """Finish a job now, whatever the clock says."""
        self.job(job_id).forced_done = True

    def fetched_urls(self) -> list[str]:
        return [record.url for record in self.fetches]

    def api_requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """Recorded API calls, optionally those whose path ends with ``endpoint``."""
        return [
            r for r in self.requests
            if r.path.startswith("/aigc/") and (endpoint is None or r.path.endswith(endpoint))
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
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=_parse_json(raw),
        )
        self.requests.append(record)
        endpoint = request.path_params["endpoint"]

        fault = self._take_fault(endpoint)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_seconds)  # then answer as usual, too late
        elif fault is not None:
            return _fault_response(fault)
        if (not self.token or record.headers.get("x-apispace-token") != self.token
                or record.headers.get("authorization-type") != "apikey"):
            return _gateway_error(401, "X-APISpace-Token无效或Authorization-Type错误")
        if endpoint not in TASKS and endpoint != "query-image":
            return _gateway_error(404, "接口不存在")
        if request.method != "POST":
            return _gateway_error(405, "请求方式错误")
        if not record.headers.get("content-type", "").startswith("application/json"):
            return _code_error(400, "Content-Type必须为application/json")
        if not isinstance(record.body, dict):
            return _code_error(400, "请求体必须为JSON对象")
        base = str(request.base_url).rstrip("/")
        if endpoint == "query-image":
            return self._query(record.body)
        return await self._submit(endpoint, record.body, base)

    def _take_fault(self, endpoint: str) -> str | None:
        for fault in self._faults:
            kind, left, wanted = fault
            if left > 0 and (wanted is None or wanted in endpoint):
                fault[1] -= 1
                if fault[1] == 0:
                    self._faults.remove(fault)
                return kind
        return None

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
        if self._next_fail:
            job.fail_reason = self._next_fail.pop(0)
        if self._next_unsafe and job.task != "img2img.sr":  # sr is not audited [public]
            job.unsafe_reason = self._next_unsafe.pop(0)
        url = job.params.get("url")
        if url:
            job.input = await self._fetch(job.uid, url)
            if job.input is None and not job.fail_reason:
                job.fail_reason = f"{job.task} -> start -> run_algorithm : download failed ({url})"
        if job.notify_url:
            task = asyncio.get_running_loop().create_task(self._deliver(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return JSONResponse({"code": 0, "msg": "success", "data": {"uid": job.uid}})

    def _query(self, body: dict[str, Any]) -> Response:
        uid = body.get("uid")
        if not isinstance(uid, str) or not uid:
            return _code_error(400, "uid不能为空")
        job = self.jobs.get(uid)
        if job is None:
            data = {"uid": uid, "status": "not_found", "pending": 0, "cdn": "", "img_urls": [],
                    "safe": True, "reason": ""}
        else:
            data = self._status_data(job)
        return JSONResponse({"code": 0, "msg": "success", "data": data})

    # ---- jobs, time and images -------------------------------------------

    def _phase(self, job: FakeJob) -> str:
        if job.forced_done:
            return "done"
        elapsed = self.now() - job.created_at
        if elapsed < self.queue_seconds:
            return "pending"
        if elapsed < self.queue_seconds + self.run_seconds:
            return "working"
        return "done"

    def _pending_position(self, job: FakeJob) -> int:
        ahead = [other for other in self.jobs.values()
                 if other.created_at < job.created_at and self._phase(other) == "pending"]
        return len(ahead) + 1

    def _status_data(self, job: FakeJob) -> dict[str, Any]:
        phase = self._phase(job)
        if phase == "pending":
            return {"uid": job.uid, "status": "pending", "pending": self._pending_position(job),
                    "cdn": "", "img_urls": [], "safe": True, "reason": ""}
        if phase == "working":
            return {"uid": job.uid, "status": "working", "pending": 0, "cdn": "",
                    "img_urls": [], "safe": True, "reason": ""}
        if job.fail_reason:
            return {"uid": job.uid, "status": "exception", "pending": 0, "cdn": "",
                    "img_urls": [], "safe": True, "reason": job.fail_reason}
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
            job.output = f"{uuid.uuid4().hex}.png"
            self.files[job.output] = (_render(job), self.now())

    async def _fetch(self, uid: str, url: str) -> bytes | None:
        try:
            response = await self._client().get(url)
        except httpx.HTTPError as exc:
            self.fetches.append(FetchRecord(uid, url, False, None, type(exc).__name__))
            return None
        ok = response.status_code == 200 and _is_image(response.content)
        error = "" if ok else "not an image" if response.status_code == 200 else "HTTP error"
        self.fetches.append(FetchRecord(uid, url, ok, response.status_code, error))
        return response.content if ok else None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        return self._http

    # ---- callbacks -------------------------------------------------------

    async def _deliver(self, job: FakeJob) -> None:
        while self._phase(job) != "done":
            await asyncio.sleep(0.005)
        if job.fail_reason:
            data = {"uid": job.uid, "reason": job.fail_reason, "end_time": self.now(),
                    "request": {"task": job.task, "params": job.params}}
            payload = {"uid": job.uid, "success": False, "data": data}
        else:
            payload = {"uid": job.uid, "success": True, "data": self._result(job)}
        for attempt in range(1, self.callback_retries + 1):
            if await self._post_callback(job, attempt, payload):
                return
            await asyncio.sleep(self.callback_interval * self.callback_delay_scale)

    async def _post_callback(self, job: FakeJob, attempt: int, payload: dict[str, Any]) -> bool:
        """One try; accepted on a 2xx answer whose body is JSON (the backend
        reads it with res.json())."""
        status: int | None = None
        answer = ""
        try:
            response = await self._client().post(job.notify_url, json=payload)
            status, answer = response.status_code, response.text
        except httpx.HTTPError as exc:
            answer = type(exc).__name__
        accepted = status is not None and 200 <= status < 300 and _is_json(answer)
        self.callbacks.append(CallbackAttempt(job.uid, job.notify_url, attempt, self.now(),
                                              payload, status, answer, accepted))
        return accepted

    # ---- result files ----------------------------------------------------

    async def _output(self, request: Request) -> Response:
        self.requests.append(RecordedRequest(
            "GET", request.url.path, request.url.query,
            {k.lower(): v for k, v in request.headers.items()}, None,
        ))
        name = request.path_params["name"]
        if request.path_params["host"] not in ("cdn", "cos") or name not in self.files:
            return Response("Not Found", 404, media_type="text/plain")
        data, created = self.files[name]
        if self.now() - created > self.url_ttl:
            return Response("AccessDenied: Request has expired", 403, media_type="text/plain")
        return Response(data, media_type="image/png")


# ---- validation (pure) -----------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_http(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


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
    if not _is_http(params.get("url")):
        return "url必须为图片的http(s)链接"
    fidelity = params.get("fidelity", 0.2)
    if not _is_number(fidelity) or not 0 <= fidelity <= 1:
        return "fidelity取值范围[0,1]"
    if endpoint == "img2img":
        if not isinstance(params.get("text"), str) or not params["text"].strip():
            return "text不能为空"
        if params.get("model", "anime") not in MODELS:
            return f"model不存在: {params.get('model')}"
    if endpoint == "img2acg" and params.get("style") not in STYLES:
        return f"style不存在: {params.get('style')}"
    if endpoint == "img2img-sr" and not isinstance(params.get("is_anime", False), bool):
        return "is_anime必须为布尔值"
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
    if not _is_number(params.get("guidance_scale", 7.5)) or not 1 <= params.get(
            "guidance_scale", 7.5) <= 30:
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


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# ---- responses ---------------------------------------------------------------


def _code_error(code: int, msg: str) -> JSONResponse:
    """The vendor's own errors: HTTP 200 and a non-zero code."""
    return JSONResponse({"code": code, "msg": msg, "data": None})


def _gateway_error(status: int, msg: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The APISpace gateway's refusals [assume]: the status, and the same code."""
    return JSONResponse({"code": status, "msg": msg, "data": None}, status_code=status,
                        headers=headers)


def _fault_response(kind: str) -> Response:
    match kind:
        case "http500":
            return Response("<html><body>500 Internal Server Error</body></html>", 500,
                            media_type="text/html")
        case "malformed":
            return Response("<html><body>502 Bad Gateway</body></html>", 200,
                            media_type="text/html")
        case "auth":
            return _gateway_error(401, "X-APISpace-Token无效")
        case "quota":
            return _gateway_error(402, "剩余调用次数不足，请充值")
        case "rate_limited":
            return _gateway_error(429, "请求频率超限", {"Retry-After": "1"})
        case "sensitive":
            return _code_error(400, "输入内容包含敏感信息")
        case _:
            return _code_error(400, "参数错误")


# ---- images ----------------------------------------------------------------


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _render(job: FakeJob) -> bytes:
    """What each task makes: a picture of the prompt's size, the input
    repainted, posterized ('anime') or ×4 larger."""
    if job.task == "txt2img.sd":
        rng = random.Random(job.uid)
        size = (job.params["w"], job.params["h"])
        img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x, y = rng.randrange(size[0]), rng.randrange(size[1])
            draw.ellipse((x, y, x + size[0] // 3, y + size[1] // 3),
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        draw.text((8, 8), f"apispace {job.uid[:8]}", fill=(255, 255, 255))
        return _png(img)
    assert job.input is not None
    with Image.open(io.BytesIO(job.input)) as source:
        img = source.convert("RGB")
    if job.task == "img2img.sr":
        img = img.resize((img.width * UPSCALE_FACTOR, img.height * UPSCALE_FACTOR),
                         Image.Resampling.BICUBIC)
    elif job.task == "img2acg":
        img = ImageOps.posterize(img, 2)
    else:
        img = Image.blend(img, Image.new("RGB", img.size, (90, 160, 220)), 0.4)
    return _png(img)
