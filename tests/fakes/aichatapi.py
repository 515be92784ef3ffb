"""A fake aichatapi, as strict as its document (seeds/000_…): the `apikey`
header, a multipart upload whose `image` part Pillow can open and whose
`params` part is a JSON *string* with every field of the seed's example, the
1 request/second limit (submits and queries together; ``rate_interval``) and
the 10,000/day limit; tasks that queue, generate, fetch their images and
finish with real PNGs served (and expiring) from the fake itself; fault
switches for every error path.

The seed shows no response. Shapes, as a public client of the same
company's API reads them (VENDORS.md's corrections), every error with HTTP 200:
    submit   {"code": 200, "msg": "提交成功", "data": {"task_id": 382243}}
    query    {"code": 200, "msg": "success", "data": {"task_id", "state", "state_name",
              "do_use": seconds since the submit, ...}} where `state` is a string:
               "0" waiting, with "queue" (position; 0 once generating [assume]) and
                   "wait_for" (seconds)
               "1" generated, fetching the images (for ``fetch_seconds``)
               "2" done, with "images": [url, ...]
               "3" failed, no error field (the fake's reason is the state_name)
    errors   {"code": 401 | 402 | 429 | 400 | 404 | 500, "msg": "...", "data": null}
"""

from __future__ import annotations

import functools
import json
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw, ImageOps

from tests.fakes.vendor import (FakeVendor, html, JSONResponse, Part, Request, Response, Route,
                                Starlette, _is_image, _is_int, _is_number, _parse_json, _png,
                                _rgb, parse_parts)

SUBMIT_PATH = "/api/image2image"
QUERY_PATH = "/api/v1/draw/query"
MODEL_IDS = frozenset({"b49012a9071407209652d332517a182e", "5d7e9a1c0b3f4e2a8c6d1f0e9b8a7c6d"})
STYLE_IDS = frozenset({"fc1be0561c11fe7019f4424f5e7b2c85", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"})
SAMPLERS = frozenset({"DPM++ 2M Karras", "Euler a", "Euler", "DPM++ SDE Karras", "DDIM"})
SIZE_IDS: dict[str, tuple[int, int]] = {  # → output size, 512 on the long side
    "1:1": (512, 512), "2:3": (344, 512), "3:2": (512, 344), "3:4": (384, 512),
    "4:3": (512, 384), "9:16": (288, 512), "16:9": (512, 288),
}
FREE_DAILY_LIMIT = 10_000  # [seed] free tier
RATE_LIMIT_MSG = "请求频率超限，免费用户限制1秒1次"


def daily_limit_msg(limit: int = FREE_DAILY_LIMIT) -> str:
    """The refusal once the day's requests are used up: it names the daily limit."""
    return f"今日请求次数已达上限({limit}次)"


DAILY_LIMIT_MSG = daily_limit_msg()


def _error(code: int, msg: str) -> JSONResponse:
    """The vendor answers errors with HTTP 200 and a code in the body [assume]."""
    return JSONResponse({"code": code, "msg": msg, "data": None})


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


class FakeAichatapi(FakeVendor):
    api_paths = (SUBMIT_PATH, QUERY_PATH)
    expired_text = "Forbidden: link expired"
    # fail_next kinds beyond malformed / timeout.
    faults = {kind: functools.partial(_error, code, msg) for kind, (code, msg) in {
        "auth": (401, "apikey不存在或已失效"),
        "quota": (402, "账户余额不足，请充值后再试"),
        "daily_limit": (429, DAILY_LIMIT_MSG),  # the free tier's 10,000/day
        "rate_limited": (429, RATE_LIMIT_MSG),
        "sensitive": (400, "提示词包含违规敏感内容，请修改后重试"),
        "bad_request": (400, "params参数错误"),
    }.items()} | {"http500": lambda: html(500, "500 Internal Server Error")}

    def __init__(
        self,
        api_key: str = "test-aichat-key",
        *,
        # queued, generating, fetching the images: the fake's seconds in each
        queue_seconds: float = 0.05, run_seconds: float = 0.1, fetch_seconds: float = 0.05,
        url_ttl: float = 3600.0, timeout_seconds: float = 1.0,
        rate_interval: float = 1.0, daily_limit: int = FREE_DAILY_LIMIT,  # [seed] free tier
        first_task_id: int = 382243,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``fetch_seconds``: how long a generated task stays in state "1"
        (fetching its images) before "2"."""
        super().__init__(
            clock, api_key=api_key, queue_seconds=queue_seconds, run_seconds=run_seconds,
            fetch_seconds=fetch_seconds, url_ttl=url_ttl, timeout_seconds=timeout_seconds,
            rate_interval=rate_interval, daily_limit=daily_limit,
        )
        self.jobs: dict[int, FakeJob] = {}
        self.requests_today = 0  # requests the daily limit counted
        self.refused: list[str] = []  # "rate_limited" / "daily_limit", in order
        self._last_accepted: float | None = None
        self._next_task_id = first_task_id
        self.app = Starlette(routes=[
            Route(SUBMIT_PATH, self._submit, methods=["GET", "POST"]),
            Route(QUERY_PATH, self._query, methods=["GET", "POST"]),
            Route("/output/{name}", self._output, methods=["GET"]),
        ])

    # ---- test-side controls --------------------------------------------

    def reset(self) -> None:
        """Also forgets the rate-limit history; task ids keep counting."""
        super().reset()
        self._last_accepted = None
        self.requests_today = 0
        self.refused.clear()

    def fail_job_next(self, error: str = "生成失败，请重试") -> None:
        """The next task ends in state 3, this text its state_name."""
        self._script("failure", error)

    def job(self, job_id: str | int) -> FakeJob:
        """A job by adapter job id ("task:382243") or task_id."""
        text = str(job_id).removeprefix("task:")
        return self.jobs[int(text)]

    # ---- the API ---------------------------------------------------------

    def _parse_body(self, raw: bytes, headers: dict[str, str]) -> Any:
        content_type = headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            return _describe_multipart(raw, content_type)
        return _parse_json(raw)

    async def _gate(self, request: Request) -> tuple[Any, Response | None]:
        """(the recorded request, the answer that refuses it or None):
        faults, then auth, then the daily and per-second limits."""
        record = await self._record(request)
        refused = await self._faulted(record.path)
        if refused is not None:
            return record, refused
        if record.headers.get("apikey") != self.api_key or not self.api_key:
            return record, _error(401, "apikey不存在或已失效")
        if request.method != "POST":
            return record, _error(405, "请求方式错误，仅支持POST")
        if self.requests_today >= self.daily_limit:
            self.refused.append("daily_limit")
            return record, _error(429, daily_limit_msg(self.daily_limit))
        now = self.now()
        if self._last_accepted is not None and now - self._last_accepted < self.rate_interval:
            self.refused.append("rate_limited")
            return record, _error(429, RATE_LIMIT_MSG)
        self._last_accepted = now
        self.requests_today += 1
        return record, None

    async def _submit(self, request: Request) -> Response:
        record, refused = await self._gate(request)
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
            fail_error=self._scripted_next("failure", ""),
        )
        self._next_task_id += 1
        self.jobs[job.task_id] = job
        return JSONResponse({"code": 200, "msg": "提交成功", "data": {"task_id": job.task_id}})

    async def _query(self, request: Request) -> Response:
        record, refused = await self._gate(request)
        if refused is not None:
            return refused
        if not record.headers.get("content-type", "").startswith("application/json"):
            return _error(400, "Content-Type必须为application/json")
        body = record.body
        task_id = body.get("task_id") if isinstance(body, dict) else None
        if not _is_int(task_id):
            return _error(400, "task_id不能为空且必须为数字")
        job = self.jobs.get(task_id)
        if job is None:
            return _error(404, "任务不存在")
        return JSONResponse({"code": 200, "msg": "success", "data": self._task_data(job)})

    # ---- tasks, time and images ------------------------------------------

    def _phase(self, job: FakeJob) -> str:
        """queued → running (generating) → fetching (its images) → done."""
        stages = (("queued", self.queue_seconds), ("running", self.run_seconds),
                  ("fetching", self.fetch_seconds))
        return self._timeline(job, stages, "done")[0]

    def _task_data(self, job: FakeJob) -> dict[str, Any]:
        phase = self._phase(job)
        data: dict[str, Any] = {"task_id": job.task_id,
                                "do_use": int(self.now() - job.created_at)}
        if phase in ("queued", "running"):
            left = job.created_at + self.queue_seconds + self.run_seconds - self.now()
            queued = phase == "queued"
            queue = self._queue_position(job, self.jobs.values(), "queued") if queued else 0
            data.update(state="0", state_name="排队中" if queue else "生成中", queue=queue,
                        wait_for=round(max(0.0, left), 3))
        elif phase == "fetching":
            data.update(state="1", state_name="生成完成，正在获取图片")
        elif job.fail_error:
            data.update(state="3", state_name=job.fail_error)
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
            picture = _render(job.image, size, seed + index, index)
            job.outputs.append(self._store(f"{uuid.uuid4().hex}.png", picture))


# ---- multipart (pure; Starlette's own parser needs python-multipart) ---------


def parse_multipart(raw: bytes, content_type: str) -> dict[str, Part]:
    """The parts by name (the vendor reads one of each); ValueError when malformed."""
    return {part.name: part for part in parse_parts(raw, content_type)}


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
    if not _is_number(cfg) or not 1 <= cfg <= 30:
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


# ---- images ----------------------------------------------------------------


def _render(source: bytes, size: tuple[int, int], seed: int, index: int) -> bytes:
    """The input photo fitted to the size, tinted per image: an 'img2img'."""
    rng = random.Random(seed)
    base = ImageOps.fit(_rgb(source), size)
    tint = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    out = Image.blend(base, tint, 0.35)
    ImageDraw.Draw(out).text((8, 8), f"aichatapi #{index} seed {seed}", fill=(255, 255, 255))
    return _png(out)
