"""A fake aihuihua (AI绘画) API, as strict as the vendor documents
(seeds/004_… and VENDORS.md): Bearer auth, JSON bodies with required fields
and types checked, input images fetched by URL (≤ 5 MB), at most 5 unfinished
tasks per key (code 23 beyond that, code 22 when busy), batch queries of at
most 20 ids. Tasks advance NOT_START → SUBMITTED → IN_PROGRESS ("NN%") →
SUCCESS with real PNGs served (and expiring) from the fake itself: 2×2 grids
with Midjourney-style buttons for imagine / variation / reroll / Flux
image2Image, single images cut from the grid for upsample actions. Finished
tasks are POSTed (the bare task object) to their notifyHook.

Task `action` names follow midjourney-proxy for Midjourney tasks (IMAGINE,
UPSCALE, VARIATION, REROLL, DESCRIBE); the fake's non-MJ names (FLUX_*,
FACE_SWAP, IMAGE_UPSCALE, REMOVE_BG) are inventions: the documents show none.

    fake = FakeAihuihua(queue_seconds=0.02, submitted_seconds=0.02, run_seconds=0.05)
    async with serve(fake.app) as base_url:
        ...
    await fake.aclose()          # stops callback deliveries, closes its client
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API = "/api/v2/"
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # [seed] "最大不能超过5M"
MAX_UPSCALE_SIDE = 4096
BATCH_LIMIT = 20
FAULT_KINDS = frozenset(
    {"http500", "malformed", "auth", "quota", "rate_limited", "queue_full", "sensitive", "timeout"}
)
MJ_ACTIONS = frozenset({"IMAGINE", "UPSCALE", "VARIATION", "REROLL", "DESCRIBE"})
GRID_CELL = 256


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or the raw text


@dataclass
class FetchRecord:
    task_id: str
    url: str
    ok: bool
    status_code: int | None
    size: int = 0
    error: str = ""


@dataclass
class CallbackAttempt:
    task_id: str
    url: str
    payload: dict[str, Any]
    status_code: int | None
    answer: str


@dataclass
class FakeTask:
    id: str
    action: str
    family: str  # "mj" (actions via /mdj/action) | "image" (via /image/action)
    body: dict[str, Any]
    api_key: str
    created_at: float
    base_url: str
    prompt: str = ""
    callback_url: str | None = None
    grid: bool = False
    parent: str | None = None  # the task an action started from
    index: int = 0  # 1-based cell of the parent for upsample / variation
    inputs: list[bytes] = field(default_factory=list)
    fail_reason: str = ""
    forced_done: bool = False
    output: str | None = None  # file name under /files/
    description: str = ""
    hash: str = field(default_factory=lambda: str(uuid.uuid4()))


class FakeAihuihua:
    def __init__(
        self,
        api_key: str = "test-aihuihua-key",
        *,
        extra_keys: tuple[str, ...] = (),
        queue_seconds: float = 0.02,
        submitted_seconds: float = 0.02,
        run_seconds: float = 0.06,
        url_ttl: float = 10 * 24 * 3600.0,
        timeout_seconds: float = 1.0,
        max_running: int = 5,
        busy_after: int = 3,
        banned_words: tuple[str, ...] = ("违禁词",),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_key = api_key
        self.extra_keys = extra_keys
        self.queue_seconds = queue_seconds
        self.submitted_seconds = submitted_seconds
        self.run_seconds = run_seconds
        self.url_ttl = url_ttl
        self.timeout_seconds = timeout_seconds
        self.max_running = max_running
        self.busy_after = busy_after
        self.banned_words = banned_words
        self._clock = clock
        self._offset = 0.0
        self._defaults = {
            name: getattr(self, name)
            for name in ("api_key", "extra_keys", "queue_seconds", "submitted_seconds",
                         "run_seconds", "url_ttl", "timeout_seconds", "max_running",
                         "busy_after", "banned_words")
        }
        self.requests: list[RecordedRequest] = []
        self.fetches: list[FetchRecord] = []
        self.callbacks: list[CallbackAttempt] = []
        self.tasks: dict[str, FakeTask] = {}
        self.files: dict[str, tuple[bytes, float]] = {}  # name → (png, created_at)
        self._faults: list[list[Any]] = []  # [kind | code, times left, path filter]
        self._next_failures: list[str] = []
        self._ids = itertools.count(1730000000000001)
        self._background: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self._routes: dict[str, Callable[[dict[str, Any], str, str], Awaitable[Response]]] = {
            "flux/text2Image": self._flux_text2image,
            "flux/image2Image": self._flux_image2image,
            "mdj/imagine": self._imagine,
            "mdj/action": self._action("mj"),
            "image/action": self._action("image"),
            "face/swap": self._face_swap,
            "image/upScale": self._upscale,
            "image/removeBg": self._remove_bg,
            "mdj/describe": self._describe,
            "task/list/": self._task_list,
        }
        self.app = Starlette(routes=[
            Route(API + "{path:path}", self._api, methods=["GET", "POST"]),
            Route("/files/{name}", self._file, methods=["GET"]),
        ])

    # ---- test-side controls --------------------------------------------

    def now(self) -> float:
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the fake's time forward (tasks progress, URLs expire)."""
        self._offset += seconds

    def reset(self) -> None:
        """Constructor options back, no faults, callbacks or records; tasks
        are finished (so they do not count against the concurrency limit)."""
        for name, value in self._defaults.items():
            setattr(self, name, value)
        self._offset = 0.0
        self._faults.clear()
        self._next_failures.clear()
        for background in list(self._background):
            background.cancel()
        for task in self.tasks.values():
            task.forced_done = True
        self.requests.clear()
        self.fetches.clear()
        self.callbacks.clear()

    def fail_next(self, kind: str | int, times: int = 1, path: str | None = None) -> None:
        """The next ``times`` API calls (whose path contains ``path``) fail as
        ``kind``: http500, malformed, auth (HTTP 401), quota, rate_limited
        (HTTP 429), queue_full (code 23), sensitive (code 24), timeout
        (answers after timeout_seconds), or any body code given as an int."""
        if isinstance(kind, str) and kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        self._faults.append([kind, times, path])

    def fail_task_next(self, reason: str = "生成失败") -> None:
        """The next task created ends in FAILURE with this failReason."""
        self._next_failures.append(reason)

    def task(self, task_id: str) -> FakeTask:
        """A task by vendor id or by adapter job id ("aihuihua:<id>")."""
        return self.tasks[task_id.removeprefix("aihuihua:")]

    def finish(self, task_id: str) -> None:
        """Finish a task now, whatever the clock says."""
        self.task(task_id).forced_done = True

    def status(self, task_id: str) -> str:
        return self._phase(self.task(task_id))[0]

    def api_requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        return [
            r for r in self.requests
            if r.path.startswith(API) and (endpoint is None or endpoint in r.path)
        ]

    def fetched_urls(self) -> list[str]:
        return [record.url for record in self.fetches]

    async def wait_for_callbacks(self, count: int, timeout: float = 3.0) -> list[CallbackAttempt]:
        deadline = time.monotonic() + timeout
        while len(self.callbacks) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.callbacks)} of {count} callbacks")
            await asyncio.sleep(0.005)
        return self.callbacks

    async def aclose(self) -> None:
        for background in list(self._background):
            background.cancel()
        for background in list(self._background):
            try:
                await background
            except asyncio.CancelledError:
                pass
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ---- the API ---------------------------------------------------------

    async def _api(self, request: Request) -> Response:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        record = RecordedRequest(request.method, request.url.path, headers, _parse_json(raw))
        self.requests.append(record)
        path = request.url.path[len(API):]

        fault = self._take_fault(path)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_seconds)  # then answer as usual, too late
        elif fault is not None:
            return _fault_response(fault)

        api_key = _bearer(headers.get("authorization", ""))
        if api_key is None or api_key not in (self.api_key, *self.extra_keys):
            return JSONResponse({"code": 401, "description": "无效的令牌"}, status_code=401)
        base = str(request.base_url).rstrip("/")
        if request.method == "GET":
            match = re.fullmatch(r"task/id/([^/]+)", path)
            if match is None:
                return JSONResponse({"code": 404, "description": "Not Found"}, status_code=404)
            return self._task_one(match.group(1))
        handler = self._routes.get(path)
        if handler is None:
            return JSONResponse({"code": 404, "description": "Not Found"}, status_code=404)
        if not headers.get("content-type", "").lower().startswith("application/json"):
            return _code(4, "Content-Type必须为application/json")
        if not isinstance(record.body, dict):
            return _code(4, "请求体不是合法的JSON对象")
        hook = record.body.get("notifyHook")
        if hook is not None and not _is_http(hook):
            return _code(4, "notifyHook格式错误")
        return await handler(record.body, base, api_key)

    def _take_fault(self, path: str) -> str | int | None:
        for fault in self._faults:
            kind, left, only = fault
            if left > 0 and (only is None or only in path):
                fault[1] -= 1
                if fault[1] == 0:
                    self._faults.remove(fault)
                return kind
        return None

    # ---- submissions -----------------------------------------------------

    async def _flux_text2image(self, body: dict[str, Any], base: str, key: str) -> Response:
        problem = _required_strings(body, "prompt")
        if problem:
            return _code(4, problem)
        return await self._create(body, base, key, "FLUX_TEXT2IMAGE", "image", grid=False)

    async def _flux_image2image(self, body: dict[str, Any], base: str, key: str) -> Response:
        problem = _required_strings(body, "prompt", "imgUrl") or _url_problem(body, "imgUrl")
        similarity = body.get("range", 0.7)
        if not problem and (
            not isinstance(similarity, int | float) or isinstance(similarity, bool)
            or not 0.1 <= similarity <= 1
        ):
            problem = "range取值范围(0.1-1)"
        if problem:
            return _code(4, problem)
        return await self._create(
            body, base, key, "FLUX_IMAGE2IMAGE", "image", grid=True, urls=[body["imgUrl"]]
        )

    async def _imagine(self, body: dict[str, Any], base: str, key: str) -> Response:
        problem = _required_strings(body, "prompt")
        if not problem and body.get("mode") not in (None, "FAST", "RELAX", "TURBO"):
            problem = "mode取值为FAST/RELAX/TURBO"
        if problem:
            return _code(4, problem)
        return await self._create(body, base, key, "IMAGINE", "mj", grid=True)

    async def _face_swap(self, body: dict[str, Any], base: str, key: str) -> Response:
        problem = _required_strings(body, "fromImgUrl", "toImgUrl")
        problem = problem or _url_problem(body, "fromImgUrl", "toImgUrl")
        if problem:
            return _code(4, problem)
        urls = [body["fromImgUrl"], body["toImgUrl"]]
        return await self._create(body, base, key, "FACE_SWAP", "image", urls=urls)

    async def _upscale(self, body: dict[str, Any], base: str, key: str) -> Response:
        problem = _required_strings(body, "imgUrl") or _url_problem(body, "imgUrl")
        if not problem and body.get("size") not in (2, 4):
            problem = "size取值为2或4"
        if problem:
            return _code(4, problem)
        return await self._create(body, base, key, "IMAGE_UPSCALE", "image", urls=[body["imgUrl"]])

    async def _remove_bg(self, body: dict[str, Any], base: str, key: str) -> Response:
        problem = _required_strings(body, "imgUrl") or _url_problem(body, "imgUrl")
        if problem:
            return _code(4, problem)
        return await self._create(body, base, key, "REMOVE_BG", "image", urls=[body["imgUrl"]])

    async def _describe(self, body: dict[str, Any], base: str, key: str) -> Response:
        urls = body.get("imgUrl")
        if not isinstance(urls, list) or len(urls) != 1 or not all(_is_http(u) for u in urls):
            return _code(4, "imgUrl必须为包含一个图片网址的数组")
        return await self._create(body, base, key, "DESCRIBE", "mj", urls=list(urls))

    def _action(self, family: str) -> Callable[[dict[str, Any], str, str], Awaitable[Response]]:
        async def action(body: dict[str, Any], base: str, key: str) -> Response:
            problem = _required_strings(body, "taskId", "customId")
            if problem:
                return _code(4, problem)
            parent = self.tasks.get(body["taskId"])
            if parent is None or parent.api_key != key:
                return _code(3, "任务不存在")
            if parent.family != family:
                other = "/api/v2/image/action" if family == "mj" else "/api/v2/mdj/action"
                return _code(4, f"该任务请调用{other}")
            if self._phase(parent)[0] != "SUCCESS":
                return _code(4, "任务未完成")
            if body["customId"] not in {b["customId"] for b in self._buttons(parent)}:
                return _code(4, "customId不存在")
            verb, number = _parse_custom_id(body["customId"])
            single = verb.startswith("upsample")
            name = {"mj": ("UPSCALE", "VARIATION", "REROLL"),
                    "image": ("FLUX_UPSCALE", "FLUX_VARIATION", "FLUX_REROLL")}[family]
            action_name = name[0] if single else name[2] if verb == "reroll" else name[1]
            return await self._create(
                body, base, key, action_name, family, grid=not single,
                parent=parent, index=number, prompt=parent.prompt,
            )

        return action

    async def _create(
        self,
        body: dict[str, Any],
        base: str,
        key: str,
        action: str,
        family: str,
        *,
        grid: bool = False,
        urls: list[str] | None = None,
        parent: FakeTask | None = None,
        index: int = 0,
        prompt: str | None = None,
    ) -> Response:
        prompt = prompt if prompt is not None else str(body.get("prompt") or "")
        if any(word in prompt for word in self.banned_words):
            return _code(24, "prompt包含敏感词")
        active = [t for t in self.tasks.values() if t.api_key == key and not self._done(t)]
        if len(active) >= self.max_running:
            return _code(23, "队列已满，请稍后尝试")
        task = FakeTask(
            id=str(next(self._ids)), action=action, family=family,
            body=body, api_key=key, created_at=self.now(), base_url=base, prompt=prompt,
            callback_url=body.get("notifyHook") or None, grid=grid,
            parent=parent.id if parent else None, index=index,
        )
        if self._next_failures:
            task.fail_reason = self._next_failures.pop(0)
        for url in urls or []:
            data = await self._fetch(task, url)
            if data is None:
                task.fail_reason = task.fail_reason or self.fetches[-1].error
                break
            task.inputs.append(data)
        if action == "IMAGE_UPSCALE" and task.inputs and not task.fail_reason:
            with Image.open(io.BytesIO(task.inputs[0])) as img:
                if max(img.size) * int(body["size"]) > MAX_UPSCALE_SIDE:
                    return _code(4, f"放大后长边不能超过{MAX_UPSCALE_SIDE}")
        self.tasks[task.id] = task
        if task.callback_url:
            background = asyncio.get_running_loop().create_task(self._deliver(task))
            self._background.add(background)
            background.add_done_callback(self._background.discard)
        if len(active) >= self.busy_after:
            return JSONResponse({"code": 22, "description": "排队中", "result": task.id})
        return JSONResponse({"code": 1, "description": "Submit success", "result": task.id})

    async def _fetch(self, task: FakeTask, url: str) -> bytes | None:
        try:
            response = await self._client().get(url)
        except httpx.HTTPError:
            self.fetches.append(FetchRecord(task.id, url, False, None, 0, "图片下载失败"))
            return None
        data = response.content
        if response.status_code != 200 or not _is_image(data):
            self.fetches.append(FetchRecord(task.id, url, False, response.status_code, len(data),
                                            "图片下载失败"))
            return None
        if len(data) > MAX_IMAGE_BYTES:
            self.fetches.append(FetchRecord(task.id, url, False, 200, len(data), "图片超过5M"))
            return None
        self.fetches.append(FetchRecord(task.id, url, True, 200, len(data)))
        return data

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        return self._http

    # ---- queries ---------------------------------------------------------

    def _task_one(self, task_id: str) -> Response:
        task = self.tasks.get(task_id)
        if task is None:
            return JSONResponse({"code": 3, "description": "任务不存在", "result": None})
        return JSONResponse({"code": 1, "description": "成功", "result": self.task_json(task)})

    async def _task_list(self, body: dict[str, Any], base: str, key: str) -> Response:
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return _code(4, "ids必须为任务ID字符串数组")
        if len(ids) > BATCH_LIMIT:
            return _code(4, f"最多同时查询{BATCH_LIMIT}个任务")
        found = [self.task_json(self.tasks[i]) for i in ids if i in self.tasks]
        return JSONResponse({"code": 1, "description": "成功", "result": found})

    def task_json(self, task: FakeTask) -> dict[str, Any]:
        """The task object, midjourney-proxy style (VENDORS.md [assume])."""
        status, progress = self._phase(task)
        data: dict[str, Any] = {
            "id": task.id,
            "action": task.action,
            "status": status,
            "progress": f"{progress}%",
            "prompt": task.prompt,
            "promptEn": task.prompt,
            "description": "Submit success",
            "submitTime": int(task.created_at * 1000),
            "startTime": None,
            "finishTime": None,
            "imageUrl": "",
            "failReason": "",
            "buttons": [],
            "properties": {},
        }
        if status == "FAILURE":
            data["failReason"] = task.fail_reason
        elif status == "SUCCESS":
            self._ensure_output(task)
            data["finishTime"] = int(self.now() * 1000)
            data["buttons"] = self._buttons(task)
            if task.action == "DESCRIBE":
                data.update(prompt=task.description, promptEn=task.description,
                            properties={"finalPrompt": task.description},
                            imageUrl=task.body["imgUrl"][0])
            else:
                data["imageUrl"] = f"{task.base_url}/files/{task.output}"
        return data

    # ---- time, images, buttons -----------------------------------------

    def _phase(self, task: FakeTask) -> tuple[str, int]:
        if task.forced_done:
            return ("FAILURE" if task.fail_reason else "SUCCESS"), 100
        elapsed = self.now() - task.created_at
        if elapsed < self.queue_seconds:
            return "NOT_START", 0
        elapsed -= self.queue_seconds
        if elapsed < self.submitted_seconds:
            return "SUBMITTED", 0
        elapsed -= self.submitted_seconds
        if elapsed < self.run_seconds:
            return "IN_PROGRESS", min(99, int(100 * elapsed / self.run_seconds))
        return ("FAILURE" if task.fail_reason else "SUCCESS"), 100

    def _done(self, task: FakeTask) -> bool:
        return self._phase(task)[0] in ("SUCCESS", "FAILURE")

    def _buttons(self, task: FakeTask) -> list[dict[str, Any]]:
        h = task.hash
        if task.grid:
            buttons = [_button(f"MJ::JOB::upsample::{n}::{h}", f"U{n}") for n in range(1, 5)]
            buttons.append(_button(f"MJ::JOB::reroll::0::{h}::SOLO", "", "🔄"))
            buttons += [_button(f"MJ::JOB::variation::{n}::{h}", f"V{n}") for n in range(1, 5)]
            return buttons
        if task.action in ("UPSCALE", "FLUX_UPSCALE"):
            return [
                _button(f"MJ::JOB::upsample_v6_2x_subtle::1::{h}::SOLO", "Upscale (Subtle)"),
                _button(f"MJ::JOB::high_variation::1::{h}::SOLO", "Vary (Strong)", "🪄"),
                _button(f"MJ::JOB::low_variation::1::{h}::SOLO", "Vary (Subtle)", "🪄"),
            ]
        return []

    def _ensure_output(self, task: FakeTask) -> None:
        if task.output is not None:
            return
        if task.action == "DESCRIBE":
            task.description = _description(task.inputs[0])
            return
        png = self._render(task)
        task.output = f"{task.action.lower()}-{uuid.uuid4().hex}.png"
        self.files[task.output] = (png, self.now())

    def _render(self, task: FakeTask) -> bytes:
        parent = self.tasks.get(task.parent) if task.parent else None
        if task.action in ("UPSCALE", "FLUX_UPSCALE") and parent is not None:
            return _png(_cell(self._output_image(parent), task.index, upscale=2))
        if task.action in ("VARIATION", "FLUX_VARIATION", "REROLL", "FLUX_REROLL") and parent:
            seed_image = (_cell(self._output_image(parent), task.index)
                          if parent.grid and task.index else self._output_image(parent))
            return _png(_grid_from(seed_image, task.id))
        if task.action == "FLUX_IMAGE2IMAGE":
            with Image.open(io.BytesIO(task.inputs[0])) as img:
                return _png(_grid_from(img.convert("RGB"), task.id))
        if task.action == "FACE_SWAP":
            return _png(_face_swapped(task.inputs[1]))
        if task.action == "IMAGE_UPSCALE":
            with Image.open(io.BytesIO(task.inputs[0])) as img:
                factor = int(task.body["size"])
                return _png(img.convert("RGB").resize((img.width * factor, img.height * factor)))
        if task.action == "REMOVE_BG":
            return _png(_without_background(task.inputs[0]))
        size = _size_for(task.prompt)
        if task.grid:
            return _png(_grid(size, task.id))
        return _png(_single(size, task.id))

    def _output_image(self, task: FakeTask) -> Image.Image:
        self._ensure_output(task)
        assert task.output is not None
        with Image.open(io.BytesIO(self.files[task.output][0])) as img:
            return img.convert("RGB")

    # ---- callbacks -------------------------------------------------------

    async def _deliver(self, task: FakeTask) -> None:
        while not self._done(task):
            await asyncio.sleep(0.005)
        payload = self.task_json(task)
        assert task.callback_url is not None
        status: int | None = None
        try:
            response = await self._client().post(task.callback_url, json=payload)
            status, answer = response.status_code, response.text
        except httpx.HTTPError as exc:
            answer = type(exc).__name__
        self.callbacks.append(CallbackAttempt(task.id, task.callback_url, payload, status, answer))

    # ---- result files ----------------------------------------------------

    async def _file(self, request: Request) -> Response:
        self.requests.append(RecordedRequest(
            "GET", request.url.path, {k.lower(): v for k, v in request.headers.items()}, None
        ))
        entry = self.files.get(request.path_params["name"])
        if entry is None:
            return Response("Not Found", 404)
        data, created = entry
        if self.now() - created > self.url_ttl:
            return Response("Expired", 403)
        return Response(data, media_type="image/png")


# ---- validation and answers (pure) -------------------------------------------


def _bearer(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme == "Bearer" and token.strip() else None


def _required_strings(body: dict[str, Any], *names: str) -> str:
    for name in names:
        if not isinstance(body.get(name), str) or not body[name].strip():
            return f"{name}不能为空"
    return ""


def _url_problem(body: dict[str, Any], *names: str) -> str:
    for name in names:
        if not _is_http(body.get(name)):
            return f"{name}必须为http(s)网址"
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


def _parse_custom_id(custom_id: str) -> tuple[str, int]:
    parts = custom_id.split("::")
    return parts[2], int(parts[3])


def _button(custom_id: str, label: str, emoji: str = "") -> dict[str, Any]:
    return {"customId": custom_id, "label": label, "emoji": emoji, "style": 2, "type": 2}


def _code(code: int, description: str) -> JSONResponse:
    return JSONResponse({"code": code, "description": description, "result": None})


def _fault_response(kind: str | int) -> Response:
    if isinstance(kind, int):
        return _code(kind, f"错误 {kind}")
    match kind:
        case "http500":
            return Response("Internal Server Error", 500, media_type="text/plain")
        case "malformed":
            return Response("<html><body>502 Bad Gateway</body></html>", 200,
                            media_type="text/html")
        case "auth":
            return JSONResponse({"code": 401, "description": "无效的令牌"}, status_code=401)
        case "quota":
            return _code(9, "账户余额不足，请充值")
        case "rate_limited":
            return JSONResponse({"code": 429, "description": "请求过于频繁"}, status_code=429,
                                headers={"Retry-After": "2"})
        case "queue_full":
            return _code(23, "队列已满，请稍后尝试")
        case _:  # sensitive
            return _code(24, "prompt包含敏感词")


# ---- images ----------------------------------------------------------------


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _size_for(prompt: str) -> tuple[int, int]:
    """The grid size for a prompt's --ar (512 on the long side)."""
    match = re.search(r"--ar\s+(\d+):(\d+)", prompt)
    w, h = (int(match.group(1)), int(match.group(2))) if match else (1, 1)
    if w >= h:
        return 2 * GRID_CELL, max(2, round(2 * GRID_CELL * h / w) // 2 * 2)
    return max(2, round(2 * GRID_CELL * w / h) // 2 * 2), 2 * GRID_CELL


def _colors(seed: str) -> list[tuple[int, int, int]]:
    rng = random.Random(seed)
    return [tuple(rng.randrange(40, 216) for _ in range(3)) for _ in range(4)]  # type: ignore[misc]


def _grid(size: tuple[int, int], seed: str) -> Image.Image:
    width, height = size
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    for index, color in enumerate(_colors(seed)):
        x, y = (index % 2) * width // 2, (index // 2) * height // 2
        draw.rectangle((x, y, x + width // 2 - 1, y + height // 2 - 1), fill=color)
        draw.text((x + 8, y + 8), str(index + 1), fill=(255, 255, 255))
    return img


def _grid_from(image: Image.Image, seed: str) -> Image.Image:
    """Four tinted copies of ``image`` in a 2×2 grid."""
    cell = image.resize((GRID_CELL, GRID_CELL))
    grid = Image.new("RGB", (2 * GRID_CELL, 2 * GRID_CELL))
    for index, color in enumerate(_colors(seed)):
        tinted = Image.blend(cell, Image.new("RGB", cell.size, color), 0.35)
        grid.paste(tinted, ((index % 2) * GRID_CELL, (index // 2) * GRID_CELL))
    return grid


def _single(size: tuple[int, int], seed: str) -> Image.Image:
    img = Image.new("RGB", size, _colors(seed)[0])
    ImageDraw.Draw(img).text((8, 8), "flux", fill=(255, 255, 255))
    return img


def _cell(grid: Image.Image, number: int, upscale: int = 1) -> Image.Image:
    """Cell ``number`` (1-based, row-major) of a 2×2 grid."""
    width, height = grid.width // 2, grid.height // 2
    x, y = ((number - 1) % 2) * width, ((number - 1) // 2) * height
    cell = grid.crop((x, y, x + width, y + height))
    return cell.resize((width * upscale, height * upscale)) if upscale != 1 else cell


def _face_swapped(target: bytes) -> Image.Image:
    with Image.open(io.BytesIO(target)) as img:
        out = img.convert("RGB")
    w, h = out.size
    ImageDraw.Draw(out).ellipse((w // 3, h // 4, 2 * w // 3, 3 * h // 4), fill=(230, 190, 160))
    return out


def _without_background(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        out = img.convert("RGBA")
    w, h = out.size
    mask = Image.new("L", out.size, 0)
    ImageDraw.Draw(mask).ellipse((w // 6, h // 6, 5 * w // 6, 5 * h // 6), fill=255)
    out.putalpha(mask)
    return out


def _description(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as img:
        r, g, b = img.convert("RGB").resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
        w, h = img.size
    return (f"1️⃣ a flat picture, mostly rgb({r},{g},{b}) --ar {w}:{h}\n\n"
            f"2️⃣ minimalist color field study --ar {w}:{h}")
