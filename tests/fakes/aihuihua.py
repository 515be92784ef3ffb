"""A fake aihuihua (AI绘画) API, as strict as the vendor documents
(seeds/004_… and VENDORS.md): Bearer auth, JSON bodies with required fields
and types checked, input images fetched by URL (an input over 5 MB fails the
task), at most 5 unfinished tasks per key (code 23 beyond that, code 22 when
busy), batch queries of at most 20 ids. Tasks advance NOT_START → SUBMITTED →
IN_PROGRESS ("NN%") → SUCCESS with real PNGs served (and expiring) from the
fake itself: 2×2 grids with Midjourney-style buttons for imagine / variation /
reroll, and for every Flux image2Image result ("每次返回4合1的图片"); single
images cut from the grid for upsample actions.

Like midjourney-proxy, which aihuihua resembles [public]: the queries answer
the bare task object (GET /api/v2/task/id/{id}) and a bare list of them
(POST /api/v2/task/list/), unless ``envelope=True`` wraps them in
{"code": 1, "result": ...}; the notifyHook gets the bare task POSTed on each
status change and on each progress step while it runs (no retries), so a bot
with callbacks learns progress without polling. An unknown id answers JSON
null (midjourney-proxy answers an empty 200; null is that, parseable).

Task `action` names follow midjourney-proxy for Midjourney tasks (IMAGINE,
UPSCALE, VARIATION, REROLL, DESCRIBE); the fake's non-MJ names (FLUX_*,
FACE_SWAP, IMAGE_UPSCALE, REMOVE_BG) are inventions: the documents show none.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw

from tests.fakes.vendor import (FakeVendor, FetchRecord, JSONResponse, Request,
                                Response, Route, Starlette, _face_pasted, _is_http, _json_problem,
                                _png, _required_strings, _rgb, _size_of, _upscaled, _url_problem)

API = "/api/v2/"
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # [seed] "最大不能超过5M"
MAX_UPSCALE_SIDE = 4096
BATCH_LIMIT = 20  # [public]
MJ_ACTIONS = frozenset({"IMAGINE", "UPSCALE", "VARIATION", "REROLL", "DESCRIBE"})
FINAL = ("SUCCESS", "FAILURE")
GRID_CELL = 256


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


class FakeAihuihua(FakeVendor):
    waits_for_final_callbacks = True  # progress callbacks come and go between
    api_paths = (API,)
    endpoint_in_path = True
    code_faults = True  # fail_next(9) answers {"code": 9, ...}
    fetch_max_bytes = MAX_IMAGE_BYTES
    # fail_next kinds beyond http500 / malformed / timeout.
    faults = {
        "auth": lambda: _http_error(401, "无效的令牌"),
        "quota": lambda: _code(9, "账户余额不足，请充值"),
        "rate_limited": lambda: _http_error(429, "请求过于频繁", {"Retry-After": "2"}),
        "queue_full": lambda: _code(23, "队列已满，请稍后尝试"),
        "sensitive": lambda: _code(24, "prompt包含敏感词"),
    }

    def __init__(
        self,
        api_key: str = "test-aihuihua-key",
        *,
        extra_keys: tuple[str, ...] = (),
        # NOT_START, SUBMITTED, IN_PROGRESS, in the fake's seconds
        queue_seconds: float = 0.02, submitted_seconds: float = 0.02, run_seconds: float = 0.06,
        url_ttl: float = 10 * 24 * 3600.0, timeout_seconds: float = 1.0,
        max_running: int = 5, busy_after: int = 3,  # code 23 beyond, code 22 from
        banned_words: tuple[str, ...] = ("违禁词",),
        envelope: bool = False,
        callback_progress_step: int = 25,
        image_grid_buttons: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``envelope``: queries answer {"code": 1, "result": ...} instead of
        the bare task / list. ``callback_progress_step``: percent of progress
        between two running callbacks. ``image_grid_buttons``: False answers
        Flux grids without their U/V buttons (still grids; actions still work
        with the customIds the buttons would have named)."""
        super().__init__(
            clock, api_key=api_key, extra_keys=extra_keys, queue_seconds=queue_seconds,
            submitted_seconds=submitted_seconds, run_seconds=run_seconds, url_ttl=url_ttl,
            timeout_seconds=timeout_seconds, max_running=max_running, busy_after=busy_after,
            banned_words=banned_words, envelope=envelope,
            callback_progress_step=callback_progress_step,
            image_grid_buttons=image_grid_buttons,
        )
        self.tasks: dict[str, FakeTask] = {}
        self._ids = itertools.count(1730000000000001)
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
            Route("/files/{name}", self._output, methods=["GET"]),
        ])

    # ---- test-side controls --------------------------------------------

    def reset(self) -> None:
        """Also finishes every task (so none counts against the concurrency limit)."""
        super().reset()
        for task in self.tasks.values():
            task.forced_done = True

    def fail_task_next(self, reason: str = "生成失败") -> None:
        """The next task created ends in FAILURE with this failReason."""
        self._script("failure", reason)

    def task(self, task_id: str) -> FakeTask:
        """A task by vendor id or by adapter job id ("aihuihua:<id>")."""
        return self.tasks[task_id.removeprefix("aihuihua:")]

    job = task  # what FakeVendor.finish looks tasks up with

    def status(self, task_id: str) -> str:
        return self._phase(self.task(task_id))[0]

    # ---- the API ---------------------------------------------------------

    async def _api(self, request: Request) -> Response:
        record = await self._record(request)
        path = request.url.path[len(API):]
        refused = await self._faulted(path)
        if refused is not None:
            return refused
        api_key = _bearer(record.headers.get("authorization", ""))
        if api_key is None or api_key not in (self.api_key, *self.extra_keys):
            return _http_error(401, "无效的令牌")
        if request.method == "GET":
            match = re.fullmatch(r"task/id/([^/]+)", path)
            if match is None:
                return _http_error(404, "Not Found")
            return self._task_one(match.group(1))
        handler = self._routes.get(path)
        if handler is None:
            return _http_error(404, "Not Found")
        problem = _json_problem(record.headers, record.body) or _url_problem(
            record.body, "notifyHook")
        if problem:
            return _code(4, problem)
        return await handler(record.body, str(request.base_url).rstrip("/"), api_key)

    def _code_fault(self, code: int) -> Response:
        return _code(code, f"错误 {code}")

    # ---- submissions -----------------------------------------------------

    async def _flux_text2image(self, body: dict[str, Any], base: str, key: str) -> Response:
        problem = _required_strings(body, "prompt")
        if problem:
            return _code(4, problem)
        return await self._create(body, base, key, "FLUX_TEXT2IMAGE", "image", grid=False)

    async def _flux_image2image(self, body: dict[str, Any], base: str, key: str) -> Response:
        problem = _image_urls_problem(body, "prompt", "imgUrl")
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
        problem = _image_urls_problem(body, "fromImgUrl", "toImgUrl")
        if problem:
            return _code(4, problem)
        urls = [body["fromImgUrl"], body["toImgUrl"]]
        return await self._create(body, base, key, "FACE_SWAP", "image", urls=urls)

    async def _upscale(self, body: dict[str, Any], base: str, key: str) -> Response:
        problem = _image_urls_problem(body, "imgUrl")
        if not problem and body.get("size") not in (2, 4):
            problem = "size取值为2或4"
        if problem:
            return _code(4, problem)
        return await self._create(body, base, key, "IMAGE_UPSCALE", "image", urls=[body["imgUrl"]])

    async def _remove_bg(self, body: dict[str, Any], base: str, key: str) -> Response:
        problem = _image_urls_problem(body, "imgUrl")
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
        task.fail_reason = self._scripted_next("failure", "")
        inputs = await self._fetch_all(task.id, urls or [])
        if inputs is None:
            task.fail_reason = task.fail_reason or _fetch_failure(self.fetches[-1])
        else:
            task.inputs = inputs
        if action == "IMAGE_UPSCALE" and task.inputs and not task.fail_reason:
            if max(_size_of(task.inputs[0])) * int(body["size"]) > MAX_UPSCALE_SIDE:
                return _code(4, f"放大后长边不能超过{MAX_UPSCALE_SIDE}")
        self.tasks[task.id] = task
        if task.callback_url:
            self._spawn(self._deliver(task))
        if len(active) >= self.busy_after:
            return JSONResponse({"code": 22, "description": "排队中", "result": task.id})
        return JSONResponse({"code": 1, "description": "Submit success", "result": task.id})

    # ---- queries ---------------------------------------------------------

    def _task_one(self, task_id: str) -> Response:
        task = self.tasks.get(task_id)
        found = self.task_json(task) if task is not None else None
        if not self.envelope:
            return JSONResponse(found)
        if found is None:
            return _code(3, "任务不存在")
        return JSONResponse({"code": 1, "description": "成功", "result": found})

    async def _task_list(self, body: dict[str, Any], base: str, key: str) -> Response:
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return _code(4, "ids必须为任务ID字符串数组")
        if len(ids) > BATCH_LIMIT:
            return _code(4, f"最多同时查询{BATCH_LIMIT}个任务")
        found = [self.task_json(self.tasks[i]) for i in ids if i in self.tasks]
        if not self.envelope:
            return JSONResponse(found)
        return JSONResponse({"code": 1, "description": "成功", "result": found})

    def task_json(self, task: FakeTask, phase: tuple[str, int] | None = None) -> dict[str, Any]:
        """The task object, midjourney-proxy style, now (or at ``phase``)."""
        status, progress = phase or self._phase(task)
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
            if task.family == "mj" or not task.grid or self.image_grid_buttons:
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
        end = "FAILURE" if task.fail_reason else "SUCCESS"
        stages = (("NOT_START", self.queue_seconds), ("SUBMITTED", self.submitted_seconds),
                  ("IN_PROGRESS", self.run_seconds))
        status, fraction = self._timeline(task, stages, end)
        return status, {"IN_PROGRESS": min(99, int(100 * fraction)), end: 100}.get(status, 0)

    def _done(self, task: FakeTask) -> bool:
        return self._phase(task)[0] in FINAL

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
        task.output = self._store(f"{task.action.lower()}-{uuid.uuid4().hex}.png",
                                  _png(self._render(task)))

    def _render(self, task: FakeTask) -> Image.Image:
        parent = self.tasks.get(task.parent) if task.parent else None
        if task.action in ("UPSCALE", "FLUX_UPSCALE") and parent is not None:
            return _cell(self._output_image(parent), task.index, upscale=2)
        if task.action in ("VARIATION", "FLUX_VARIATION", "REROLL", "FLUX_REROLL") and parent:
            seed_image = (_cell(self._output_image(parent), task.index)
                          if parent.grid and task.index else self._output_image(parent))
            return _grid_from(seed_image, task.id)
        if task.action == "FLUX_IMAGE2IMAGE":  # always the 4-in-1 grid [seed]
            return _grid_from(_rgb(task.inputs[0]), task.id)
        if task.action == "FACE_SWAP":
            return _face_pasted(task.inputs[1])
        if task.action == "IMAGE_UPSCALE":
            return _upscaled(task.inputs[0], int(task.body["size"]))
        if task.action == "REMOVE_BG":
            return _without_background(task.inputs[0])
        size = _size_for(task.prompt)
        return _grid(size, task.id) if task.grid else _single(size, task.id)

    def _output_image(self, task: FakeTask) -> Image.Image:
        self._ensure_output(task)
        assert task.output is not None
        return _rgb(self.files[task.output][0])

    # ---- callbacks -------------------------------------------------------

    async def _deliver(self, task: FakeTask) -> None:
        """POST the bare task when its status changes (from SUBMITTED on) and
        at each ``callback_progress_step`` while it runs; once each, as
        midjourney-proxy's notify does."""
        assert task.callback_url is not None
        sent: tuple[str, int] | None = None
        while sent is None or sent[0] not in FINAL:
            status, progress = phase = self._phase(task)
            changed = sent is None or status != sent[0]
            stepped = sent is not None and progress >= sent[1] + self.callback_progress_step
            if status != "NOT_START" and (changed or stepped):
                await self._call_back(task.id, task.callback_url, self.task_json(task, phase),
                                      final=status in FINAL)
                sent = phase
            await asyncio.sleep(0.005)


# ---- validation and answers (pure) -------------------------------------------


def _bearer(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme == "Bearer" and token.strip() else None


def _image_urls_problem(body: dict[str, Any], *names: str) -> str:
    """Required strings, the *Url ones http(s) links."""
    urls = [name for name in names if name.endswith("Url")]
    return _required_strings(body, *names) or _url_problem(body, *urls)


def _fetch_failure(record: FetchRecord) -> str:
    return "图片超过5M" if record.error == "too large" else "图片下载失败"


def _parse_custom_id(custom_id: str) -> tuple[str, int]:
    parts = custom_id.split("::")
    return parts[2], int(parts[3])


def _button(custom_id: str, label: str, emoji: str = "") -> dict[str, Any]:
    return {"customId": custom_id, "label": label, "emoji": emoji, "style": 2, "type": 2}


def _code(code: int, description: str) -> JSONResponse:
    return JSONResponse({"code": code, "description": description, "result": None})


def _http_error(status: int, description: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"code": status, "description": description}, status_code=status,
                        headers=headers)


# ---- images ----------------------------------------------------------------


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


def _without_background(data: bytes) -> Image.Image:
    out = _rgb(data).convert("RGBA")
    w, h = out.size
    mask = Image.new("L", out.size, 0)
    ImageDraw.Draw(mask).ellipse((w // 6, h // 6, 5 * w // 6, 5 * h // 6), fill=255)
    out.putalpha(mask)
    return out


def _description(data: bytes) -> str:
    img = _rgb(data)
    r, g, b = img.resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    w, h = img.size
    return (f"1️⃣ a flat picture, mostly rgb({r},{g},{b}) --ar {w}:{h}\n\n"
            f"2️⃣ minimalist color field study --ar {w}:{h}")
