"""A fake aichatapi, as strict as its document (seeds/000_…): the `apikey`
header, a multipart upload whose `image` part Pillow can open and whose
`params` part is a JSON *string* with every field of the seed's example, the
1 request/second limit (submits and queries together) and the 10,000/day
limit; tasks that queue, generate and finish with real PNGs served (and
expiring) from the fake itself; fault switches for every error path.

The seed shows no response at all. Shapes used here, all [assume] (the same
as providers/aichatapi.py's ASSUMED), every error with HTTP 200:
    submit   {"code": 200, "msg": "提交成功", "data": {"task_id": 382243}}
    query    {"code": 200, "msg": "success", "data": {"task_id", "state": "0".."3",
              "state_name", "queue", "wait_for", "images": [url, ...], "error"}}
    errors   {"code": 401 | 402 | 429 | 400 | 404 | 500, "msg": "...", "data": null}

    fake = FakeAichatapi(queue_seconds=0.05, run_seconds=0.1, rate_interval=0.0)
    async with serve(fake.app) as base_url:   # both AICHATAPI_BASE_URL and _QUERY_URL
        ...
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw, ImageOps
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SUBMIT_PATH = "/api/image2image"
QUERY_PATH = "/api/v1/draw/query"
FAULT_KINDS = frozenset(
    {"http500", "malformed", "auth", "quota", "rate_limited", "sensitive", "timeout",
     "bad_request"}
)
MODEL_IDS = frozenset({"b49012a9071407209652d332517a182e", "5d7e9a1c0b3f4e2a8c6d1f0e9b8a7c6d"})
STYLE_IDS = frozenset({"fc1be0561c11fe7019f4424f5e7b2c85", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"})
SAMPLERS = frozenset({"DPM++ 2M Karras", "Euler a", "Euler", "DPM++ SDE Karras", "DDIM"})
SIZE_IDS: dict[str, tuple[int, int]] = {  # → output size, 512 on the long side
    "1:1": (512, 512), "2:3": (344, 512), "3:2": (512, 344), "3:4": (384, 512),
    "4:3": (512, 384), "9:16": (288, 512), "16:9": (512, 288),
}
RATE_LIMIT_MSG = "请求频率超限，免费用户限制1秒1次"
DAILY_LIMIT_MSG = "今日请求次数已达上限(10000次)"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str  # the raw query string (the seed's demos put ?key= there)
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON; for multipart {"params": text, "image": {...}}; else text
    raw: bytes = b""


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class FakeJob:
    task_id: int
    params: dict[str, Any]
    image: bytes
    created_at: float
    base_url: str
    fail_error: str = ""
    forced_done: bool = False
    outputs: list[str] = field(default_factory=list)  # file names under /output/

    @property
    def job_id(self) -> str:
        return f"task:{self.task_id}"


class FakeAichatapi:
    def __init__(
        self,
        api_key: str = "test-aichat-key",
        *,
        queue_seconds: float = 0.05,
        run_seconds: float = 0.1,
        url_ttl: float = 3600.0,
        timeout_seconds: float = 1.0,
        rate_interval: float = 1.0,
        daily_limit: int = 10_000,
        first_task_id: int = 382243,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_key = api_key
        self.queue_seconds = queue_seconds
        self.run_seconds = run_seconds
        self.url_ttl = url_ttl
        self.timeout_seconds = timeout_seconds
        self.rate_interval = rate_interval
        self.daily_limit = daily_limit
        self._clock = clock
        self._offset = 0.0
        # reset() puts these back, so one server can serve many tests.
        self._defaults = {
            name: getattr(self, name)
            for name in ("api_key", "queue_seconds", "run_seconds", "url_ttl",
                         "timeout_seconds", "rate_interval", "daily_limit")
        }

        self.requests: list[RecordedRequest] = []
        self.jobs: dict[int, FakeJob] = {}
        self.files: dict[str, tuple[bytes, float]] = {}  # name → (png, created_at)
        self.requests_today = 0  # requests the daily limit counted
        self.refused: list[str] = []  # "rate_limited" / "daily_limit", in order
        self._last_accepted: float | None = None
        self._next_task_id = first_task_id
        self._faults: list[list[Any]] = []  # [kind, times left, path filter]
        self._next_fail: list[str] = []

        self.app = Starlette(routes=[
            Route(SUBMIT_PATH, self._submit, methods=["GET", "POST"]),
            Route(QUERY_PATH, self._query, methods=["GET", "POST"]),
            Route("/output/{name}", self._output, methods=["GET"]),
        ])

    # ---- test-side controls --------------------------------------------

    def now(self) -> float:
        return self._clock() + self._offset

    def set_clock(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def advance(self, seconds: float) -> None:
        """Move the fake's time forward (tasks progress, URLs expire, the
        rate-limit window passes)."""
        self._offset += seconds

    def reset(self) -> None:
        """Back to the constructor's options with no pending faults, records
        or rate-limit history; jobs and files stay (ids keep counting)."""
        for name, value in self._defaults.items():
            setattr(self, name, value)
        self._offset = 0.0
        self._faults.clear()
        self._next_fail.clear()
        self._last_accepted = None
        self.requests_today = 0
        self.refused.clear()
        self.requests.clear()

    def fail_next(self, kind: str, times: int = 1, path: str | None = None) -> None:
        """The next ``times`` API calls (whose path contains ``path``, if
        given) fail as ``kind``: http500, malformed (HTML with HTTP 200),
        auth, quota, rate_limited, sensitive, bad_request (code errors with
        HTTP 200), timeout (answers normally after ``timeout_seconds``)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        self._faults.append([kind, times, path])

    def fail_job_next(self, error: str = "生成失败，请重试") -> None:
        """The next task ends in state 3 with this error."""
        self._next_fail.append(error)

    def job(self, job_id: str | int) -> FakeJob:
        """A job by adapter job id ("task:382243") or task_id."""
        text = str(job_id).removeprefix("task:")
        return self.jobs[int(text)]

    def finish(self, job_id: str | int) -> None:
        """Finish a task now, whatever the clock says."""
        self.job(job_id).forced_done = True

    def api_requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """Recorded API calls, optionally those whose path ends with ``endpoint``."""
        return [
            r for r in self.requests
            if r.path in (SUBMIT_PATH, QUERY_PATH)
            and (endpoint is None or r.path.endswith(endpoint))
        ]

    async def aclose(self) -> None:
        """Nothing runs in the background; kept for the fakes' common API."""

    # ---- the API ---------------------------------------------------------

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        content_type = headers.get("content-type", "")
        body: Any
        if content_type.startswith("multipart/form-data"):
            body = _describe_multipart(raw, content_type)
        else:
            body = _parse_json(raw)
        record = RecordedRequest(request.method, request.url.path, request.url.query,
                                 headers, body, raw)
        self.requests.append(record)
        return record

    async def _gate(self, request: Request, record: RecordedRequest) -> Response | None:
        """Faults, then auth, then the daily and per-second limits — the
        answer that refuses this request, or None to serve it."""
        fault = self._take_fault(record.path)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_seconds)  # then answer as usual, too late
        elif fault is not None:
            return _fault_response(fault)
        if record.headers.get("apikey") != self.api_key or not self.api_key:
            return _error(401, "apikey不存在或已失效")
        if request.method != "POST":
            return _error(405, "请求方式错误，仅支持POST")
        if self.requests_today >= self.daily_limit:
            self.refused.append("daily_limit")
            return _error(429, DAILY_LIMIT_MSG)
        now = self.now()
        if self._last_accepted is not None and now - self._last_accepted < self.rate_interval:
            self.refused.append("rate_limited")
            return _error(429, RATE_LIMIT_MSG)
        self._last_accepted = now
        self.requests_today += 1
        return None

    def _take_fault(self, path: str) -> str | None:
        for fault in self._faults:
            kind, left, wanted = fault
            if left > 0 and (wanted is None or wanted in path):
                fault[1] -= 1
                if fault[1] == 0:
                    self._faults.remove(fault)
                return kind
        return None

    async def _submit(self, request: Request) -> Response:
        record = await self._record(request)
        refused = await self._gate(request, record)
        if refused is not None:
            return refused
        content_type = record.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return _error(400, "Content-Type必须为multipart/form-data")
        try:
            parts = parse_multipart(record.raw, content_type)
        except ValueError as exc:
            return _error(400, f"请求体格式错误: {exc}")
        image, problem = _image_part(parts)
        if problem:
            return _error(400, problem)
        params, problem = _params_part(parts)
        if problem:
            return _error(400, problem)
        assert image is not None and params is not None
        job = FakeJob(
            task_id=self._next_task_id,
            params=params,
            image=image,
            created_at=self.now(),
            base_url=str(request.base_url).rstrip("/"),
        )
        self._next_task_id += 1
        if self._next_fail:
            job.fail_error = self._next_fail.pop(0)
        self.jobs[job.task_id] = job
        return JSONResponse({"code": 200, "msg": "提交成功", "data": {"task_id": job.task_id}})

    async def _query(self, request: Request) -> Response:
        record = await self._record(request)
        refused = await self._gate(request, record)
        if refused is not None:
            return refused
        if not record.headers.get("content-type", "").startswith("application/json"):
            return _error(400, "Content-Type必须为application/json")
        body = record.body
        task_id = body.get("task_id") if isinstance(body, dict) else None
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            return _error(400, "task_id不能为空且必须为数字")
        job = self.jobs.get(task_id)
        if job is None:
            return _error(404, "任务不存在")
        return JSONResponse({"code": 200, "msg": "success", "data": self._task_data(job)})

    # ---- tasks, time and images ------------------------------------------

    def _phase(self, job: FakeJob) -> tuple[str, float]:
        """(phase, seconds still to wait)."""
        if job.forced_done:
            return "done", 0.0
        elapsed = self.now() - job.created_at
        if elapsed < self.queue_seconds:
            return "queued", self.queue_seconds - elapsed + self.run_seconds
        if elapsed < self.queue_seconds + self.run_seconds:
            return "running", self.queue_seconds + self.run_seconds - elapsed
        return "done", 0.0

    def _queue_position(self, job: FakeJob) -> int:
        ahead = [other for other in self.jobs.values()
                 if other.task_id < job.task_id and self._phase(other)[0] == "queued"]
        return len(ahead) + 1

    def _task_data(self, job: FakeJob) -> dict[str, Any]:
        phase, wait = self._phase(job)
        data: dict[str, Any] = {
            "task_id": job.task_id, "queue": 0, "wait_for": round(wait, 3),
            "images": [], "error": None,
        }
        if phase == "queued":
            data.update(state="0", state_name="排队中", queue=self._queue_position(job))
        elif phase == "running":
            data.update(state="1", state_name="生成中")
        elif job.fail_error:
            data.update(state="3", state_name="生成失败", error=job.fail_error)
        else:
            self._ensure_outputs(job)
            data.update(state="2", state_name="已完成",
                        images=[f"{job.base_url}/output/{name}" for name in job.outputs])
        return data

    def _ensure_outputs(self, job: FakeJob) -> None:
        if job.outputs:
            return
        size = SIZE_IDS[job.params["size_id"]]
        seed = job.params["seed"] if job.params["seed"] >= 0 else random.randrange(2**31)
        for index in range(job.params["number"]):
            name = f"{uuid.uuid4().hex}.png"
            self.files[name] = (_render(job.image, size, seed + index, index), self.now())
            job.outputs.append(name)

    async def _output(self, request: Request) -> Response:
        await self._record(request)
        name = request.path_params["name"]
        if name not in self.files:
            return Response("Not Found", 404, media_type="text/plain")
        data, created = self.files[name]
        if self.now() - created > self.url_ttl:
            return Response("Forbidden: link expired", 403, media_type="text/plain")
        return Response(data, media_type="image/png")


# ---- multipart (pure; Starlette's own parser needs python-multipart) ---------


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    """'form-data; name="image"; filename="a.png"' → ("form-data", {...})."""
    head, *rest = value.split(";")
    params = {}
    for item in rest:
        key, sep, val = item.strip().partition("=")
        if sep:
            params[key.strip().lower()] = val.strip().strip('"')
    return head.strip().lower(), params


def parse_multipart(raw: bytes, content_type: str) -> dict[str, Part]:
    """Split a multipart/form-data body exactly as RFC 7578 frames it; a
    ValueError for anything malformed."""
    _, params = _header_params(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise ValueError("boundary missing")
    chunks = raw.split(b"--" + boundary.encode("latin-1"))
    if len(chunks) < 3 or chunks[0].strip() or not chunks[-1].startswith(b"--"):
        raise ValueError("not framed by the boundary")
    parts: dict[str, Part] = {}
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise ValueError("part not delimited by CRLF")
        head, sep, data = chunk[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("part without headers")
        headers = {}
        for line in head.decode("utf-8").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        kind, disposition = _header_params(headers.get("content-disposition", ""))
        if kind != "form-data" or not disposition.get("name"):
            raise ValueError("part is not form-data with a name")
        name = disposition["name"]
        parts[name] = Part(name, disposition.get("filename"), headers.get("content-type"), data)
    return parts


def _describe_multipart(raw: bytes, content_type: str) -> Any:
    try:
        parts = parse_multipart(raw, content_type)
    except ValueError:
        return raw.decode("utf-8", "replace")
    described: dict[str, Any] = {}
    for name, part in parts.items():
        if part.filename is None:
            described[name] = part.data.decode("utf-8", "replace")
        else:
            described[name] = {"filename": part.filename, "content_type": part.content_type,
                               "size": len(part.data)}
    return described


# ---- validation (pure) -----------------------------------------------------


def _image_part(parts: dict[str, Part]) -> tuple[bytes | None, str]:
    part = parts.get("image")
    if part is None or part.filename is None:
        return None, "image不能为空，请上传图片文件"
    if not _is_image(part.data):
        return None, "image不是有效的图片文件"
    return part.data, ""


def _params_part(parts: dict[str, Part]) -> tuple[dict[str, Any] | None, str]:
    part = parts.get("params")
    if part is None or part.filename is not None:
        return None, "params不能为空，必须为JSON字符串"
    try:
        params = json.loads(part.data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, "params必须为合法的JSON字符串"
    if not isinstance(params, dict):
        return None, "params必须为JSON对象"
    problem = params_problem(params)
    return (None, problem) if problem else (params, "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def params_problem(params: dict[str, Any]) -> str:
    """The first field that breaks the seed's example, or ""."""
    int_ranges = {"number": (1, 4), "hire": (0, 1), "steps": (1, 100), "lora_scale": (0, 100),
                  "denoising_strength": (0, 100)}
    for name, (low, high) in int_ranges.items():
        value = params.get(name)
        if not _is_int(value) or not low <= value <= high:
            return f"{name}必填，取值范围[{low},{high}]的整数"
    if not _is_int(params.get("seed")) or params["seed"] < -1:
        return "seed必须为整数，-1为随机"
    cfg = params.get("cfg_scale")
    if not isinstance(cfg, int | float) or isinstance(cfg, bool) or not 1 <= cfg <= 30:
        return "cfg_scale取值范围[1,30]"
    if not isinstance(params.get("as_prompt"), bool):
        return "as_prompt必须为布尔值"
    for name in ("prompt", "negative_prompt"):
        if not isinstance(params.get(name), str):
            return f"{name}必须为字符串"
    checks = (("size_id", SIZE_IDS), ("model_id", MODEL_IDS), ("style_id", STYLE_IDS),
              ("simper", SAMPLERS))
    for name, allowed in checks:
        if params.get(name) not in allowed:
            return f"{name}不存在: {params.get(name)}"
    if not re.fullmatch(r"[0-9a-f]{32}", params["model_id"]):
        return "model_id格式错误"
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


# ---- responses ---------------------------------------------------------------


def _error(code: int, msg: str) -> JSONResponse:
    """The vendor answers errors with HTTP 200 and a code in the body [assume]."""
    return JSONResponse({"code": code, "msg": msg, "data": None})


def _fault_response(kind: str) -> Response:
    match kind:
        case "http500":
            return Response("<html><body>500 Internal Server Error</body></html>", 500,
                            media_type="text/html")
        case "malformed":
            return Response("<html><body>502 Bad Gateway</body></html>", 200,
                            media_type="text/html")
        case "auth":
            return _error(401, "apikey不存在或已失效")
        case "quota":
            return _error(402, "账户余额不足，请充值后再试")
        case "rate_limited":
            return _error(429, RATE_LIMIT_MSG)
        case "sensitive":
            return _error(400, "提示词包含违规敏感内容，请修改后重试")
        case _:
            return _error(400, "params参数错误")


# ---- images ----------------------------------------------------------------


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _render(source: bytes, size: tuple[int, int], seed: int, index: int) -> bytes:
    """The input photo fitted to the size, tinted per image: an 'img2img'."""
    rng = random.Random(seed)
    with Image.open(io.BytesIO(source)) as img:
        base = ImageOps.fit(img.convert("RGB"), size)
    tint = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    out = Image.blend(base, tint, 0.35)
    ImageDraw.Draw(out).text((8, 8), f"aichatapi #{index} seed {seed}", fill=(255, 255, 255))
    return _png(out)
