"""A fake midjourney-proxy, strict after the real sources (read at their
GitHub HEAD): ``flavour="novicezk"`` (novicezk/midjourney-proxy, Java/Spring)
or ``flavour="trueai"`` (trueai-org/midjourney-proxy, C#/ASP.NET Core).

What both do [source]:
- ``mj-api-secret`` header auth when a secret is configured: HTTP 401
  (novicezk: empty body; trueai: text "Authorization header missing.").
- Submit answers ``{"code", "description", "result", "properties"}``: 1
  "提交成功"; 22 "排队中，前面还有N个任务" with ``properties.numberOfQueues``
  when N > 0 tasks were already *waiting* (as ThreadPoolExecutor's queue
  counts: the task that merely waits for one of ``concurrency`` busy slots is
  answered code 1); queue full beyond ``queue_size`` waiting (novicezk 23
  "队列已满，请稍后尝试", trueai 9 "提交失败，队列已满，请稍后重试"); 24
  "可能包含敏感词" with ``properties.promptEn`` / ``bannedWord`` (whole word,
  case-insensitive, as BannedPromptUtils); 4 validation errors with the
  real descriptions; 3 "关联任务不存在或已失效" (trueai's /action and /modal
  answer it with HTTP 404).
- JSON the framework cannot bind (an enum value it does not know, a list
  where a string goes, broken JSON) is refused by the framework, not the
  proxy: HTTP 400 (Spring's error JSON / ASP.NET's ProblemDetails); a body
  that is not application/json: HTTP 415. Unknown fields are ignored.
- ``GET /mj/task/{id}/fetch``: the bare task; an unknown id answers an
  empty body (novicezk: HTTP 200, Spring's null; trueai: HTTP 204, ASP.NET's
  null). ``POST /mj/task/list-by-condition`` ``{ids}``: a bare list of the
  known ones (here in the order asked).
- notifyHook: the whole task POSTed on each change from SUBMITTED on (each
  progress step too), once, no retries; only the HTTP status is looked at.

Statuses: NOT_START (waiting for a slot) → SUBMITTED "0%" (``queue_seconds``)
→ IN_PROGRESS (``progress_steps`` steps over ``run_seconds``, each with a
blurred preview ``imageUrl``) → SUCCESS "100%" | FAILURE (progress "").
trueai adds MODAL (Custom Zoom, Vary Region, remix) and CANCEL.

Where the fake is stricter than the real proxies (they pass such requests
on to Discord and the task fails later) it says "[strict]" below.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import heapq
import io
import itertools
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PIL import Image, ImageDraw, ImageFilter

from tests.fakes.vendor import (
    FakeVendor,
    JSONResponse,
    Request,
    Response,
    Route,
    Starlette,
    _face_pasted,
    _image_format,
    _png,
    _rgb,
    plain,
)

API = "/mj/"
FLAVOURS = ("novicezk", "trueai")
FINAL = ("SUCCESS", "FAILURE", "CANCEL")
GRID_ACTIONS = frozenset({"IMAGINE", "VARIATION", "REROLL", "BLEND", "ZOOM", "PAN"})
CHANGE_SOURCES = frozenset({"IMAGINE", "VARIATION", "REROLL", "BLEND"})  # novicezk [source]
BLEND_SIZES = {"PORTRAIT": (2, 3), "SQUARE": (1, 1), "LANDSCAPE": (3, 2)}
CELL = 256
WAITING_FOR_MODAL = "Waiting for window confirm"  # trueai [source]
NOT_FOUND_TEXT = "关联任务不存在或已失效"


class BadRequest(Exception):
    """What the framework answers when the body does not bind (HTTP 400)."""

    def __init__(self, field_name: str, detail: str = "") -> None:
        super().__init__(field_name)
        self.field_name = field_name
        self.detail = detail or f"The JSON value could not be converted ({field_name})."


@dataclass
class MjTask:
    id: str
    action: str
    seq: int
    submitted_at: float
    base_url: str
    prompt: str = ""
    prompt_en: str = ""
    description: str = ""
    state: str | None = None
    notify_hook: str | None = None
    parent: str | None = None
    index: int = 0
    custom_id: str = ""
    inputs: list[bytes] = field(default_factory=list)
    input_urls: list[str] = field(default_factory=list)
    dimensions: str = "SQUARE"
    queued_at: float | None = None  # None while MODAL
    modal_kind: str = ""  # "zoom" | "inpaint" | "remix" for a task created in MODAL
    mask: bytes | None = None
    ended_at: float | None = None  # finished / cancelled by the test at this time
    end_kind: str | None = None  # "CANCEL" | "FAILURE" | None (the natural end)
    fail_reason: str = ""
    hash: str = field(default_factory=lambda: str(uuid.uuid4()))
    message_id: str = ""
    nonce: str = ""
    output: str | None = None  # file name of the result
    cells: list[str] = field(default_factory=list)  # trueai imageUrls (the 4 grid cells)
    previews: dict[int, str] = field(default_factory=dict)  # step → file name
    final_prompt: str = ""
    start: float | None = None  # by _schedule
    end: float | None = None
    bot_type: str = "MID_JOURNEY"

    @property
    def grid(self) -> bool:
        return self.action in GRID_ACTIONS

    @property
    def forced_done(self) -> bool:  # what FakeVendor.finish / _timeline know
        return self.ended_at is not None


class FakeMjProxy(FakeVendor):
    waits_for_final_callbacks = True  # progress callbacks come and go between
    api_paths = (API,)
    endpoint_in_path = True
    code_faults = True  # fail_next(9) answers {"code": 9, ...}
    expired_text = "This content is no longer available."
    # fail_next kinds beyond http500 / malformed / timeout (answered per flavour).
    faults: ClassVar[Mapping[str, Callable[[], Response]]] = {
        "auth": lambda: Response(b"", 401),
        "system_error": lambda: _submit(9, "提交失败，系统异常"),
        "queue_full": lambda: _submit(23, "队列已满，请稍后尝试"),
        "no_account": lambda: _submit(3, "无可用的账号实例"),
    }

    # The options (FakeVendor.__init__ makes them attributes; reset() restores them).
    flavour: str
    api_secret: str | None
    concurrency: int
    queue_size: int
    queue_seconds: float
    run_seconds: float
    progress_steps: int
    banned_words: tuple[str, ...]
    remix: bool
    change_route: bool
    url_ttl: float
    timeout_seconds: float

    def __init__(
        self,
        flavour: str = "novicezk",
        *,
        api_secret: str | None = None,
        concurrency: int = 3,  # coreSize [source: novicezk default 3]
        queue_size: int = 10,  # queueSize [source: novicezk default 10]
        queue_seconds: float = 0.02,  # SUBMITTED
        run_seconds: float = 0.08,  # IN_PROGRESS
        progress_steps: int = 4,
        banned_words: tuple[str, ...] = ("nsfwword",),
        remix: bool = False,  # the account's remix mode (trueai: enableRemix needs it)
        change_route: bool = True,  # trueai's HEAD has no /mj/submit/change: False = 404
        url_ttl: float = 24 * 3600.0,
        timeout_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}")
        super().__init__(
            clock, flavour=flavour, api_secret=api_secret, concurrency=concurrency,
            queue_size=queue_size, queue_seconds=queue_seconds, run_seconds=run_seconds,
            progress_steps=progress_steps, banned_words=banned_words, remix=remix,
            change_route=change_route, url_ttl=url_ttl, timeout_seconds=timeout_seconds,
        )
        self.tasks: dict[str, MjTask] = {}
        self._seq = itertools.count(1)
        self._epoch = time.time() - self.now()  # the fake's clock → epoch seconds
        self.app = Starlette(routes=[
            Route(API + "{path:path}", self._api, methods=["GET", "POST", "PUT", "DELETE"]),
            Route("/files/{name}", self._output, methods=["GET"]),
        ])

    @property
    def trueai(self) -> bool:
        return bool(self.flavour == "trueai")

    # ---- test-side controls --------------------------------------------

    def reset(self) -> None:
        """Also ends every unfinished task (none keeps a slot busy)."""
        super().reset()
        self._epoch = time.time() - self.now()
        for task in self.tasks.values():
            if task.ended_at is None:
                task.ended_at = self.now()

    def task(self, task_id: str) -> MjTask:
        """A task by proxy id or by an adapter's job id ("mjproxy:<id>")."""
        return self.tasks[task_id.rsplit(":", 1)[-1]]

    job = task

    def status(self, task_id: str) -> str:
        return self._phase(self.task(task_id))[0]

    def finish(self, job_id: Any) -> None:
        """Ends the task now as it would end (SUCCESS, or FAILURE if scripted)."""
        task = self.task(job_id)
        if self._phase(task)[0] not in FINAL:
            task.ended_at = self.now()
            if task.queued_at is None:  # a MODAL task finished by the test
                task.queued_at = self.now()

    def cancel(self, task_id: str) -> None:
        """Ends the task now in CANCEL (trueai). novicezk has no CANCEL status
        [source: its TaskStatus]: there the task ends in FAILURE instead."""
        if self.trueai:
            self._end(task_id, "CANCEL")
        else:
            self._end(task_id, "FAILURE", "任务已取消")

    def fail_task_next(self, reason: str = "[Invalid parameter] Invalid value") -> None:
        """The next task created ends in FAILURE with this failReason (after SUBMITTED)."""
        self._script("failure", reason)

    def fail_task(self, task_id: str, reason: str = "[Invalid parameter] Invalid value") -> None:
        """Ends a running task now in FAILURE."""
        self._end(task_id, "FAILURE", reason)

    def _end(self, task_id: str, kind: str, reason: str = "") -> None:
        task = self.task(task_id)
        if self._phase(task)[0] in FINAL:
            return
        task.ended_at = self.now()
        if task.queued_at is None:
            task.queued_at = self.now()
        task.end_kind = kind
        if reason:
            task.fail_reason = reason

    def button_ids(self, task_id: str) -> list[str]:
        """The customIds a SUCCESS task offers (trueai's ``buttons``)."""
        return [b["customId"] for b in self._buttons(self.task(task_id))]

    def file_bytes(self, url: str) -> bytes:
        """A result file's PNG by its URL (or name), whatever its age."""
        return self.files[url.rstrip("/").rsplit("/", 1)[-1]][0]

    # ---- the API -----------------------------------------------------------

    async def _api(self, request: Request) -> Response:
        record = await self._record(request)
        path = request.url.path[len(API):]
        refused = await self._faulted(path)
        if refused is not None:
            return refused
        if self.api_secret and record.headers.get("mj-api-secret") != self.api_secret:
            return self._unauthorized()
        base = str(request.base_url).rstrip("/")
        match = re.fullmatch(r"task/([^/]+)/fetch", path)
        if match is not None:
            return self._method(request, "GET") or self._fetch_one(match.group(1))
        routes: dict[str, Callable[[dict[str, Any], str], Any]] = {
            "submit/imagine": self._imagine,
            "submit/describe": self._describe,
            "submit/blend": self._blend,
            "task/list-by-condition": self._list,
        }
        if self.change_route:
            routes["submit/change"] = self._change
        if self.trueai:
            routes.update({"submit/action": self._action, "submit/modal": self._modal,
                           "insight-face/swap": self._face_swap,
                           "task/list-by-ids": self._list})
            cancel = re.fullmatch(r"task/([^/]+)/cancel", path)
            if cancel is not None:
                return self._method(request, "POST") or self._cancel_route(cancel.group(1))
        handler = routes.get(path)
        if handler is None:
            return self._not_found(request.url.path)
        wrong = self._method(request, "POST")
        if wrong is not None:
            return wrong
        if not record.headers.get("content-type", "").lower().startswith("application/json"):
            return self._framework_error(415, request.url.path, "Unsupported Media Type")
        body = record.body
        if not isinstance(body, dict):
            return self._framework_error(400, request.url.path, "Bad Request")
        try:
            answer: Response = await handler(body, base)
        except BadRequest as exc:
            return self._framework_error(400, request.url.path, "Bad Request", exc)
        return answer

    def _method(self, request: Request, allowed: str) -> Response | None:
        if request.method == allowed:
            return None
        return self._framework_error(405, request.url.path, "Method Not Allowed")

    def _fault_response(self, kind: str | int, path: str) -> Response:
        if kind == "auth":
            return self._unauthorized()
        if kind == "queue_full":
            return self._queue_full()
        return super()._fault_response(kind, path)

    def _code_fault(self, code: int) -> Response:
        return _submit(code, {9: "提交失败，系统异常", 23: "队列已满，请稍后尝试",
                              3: "无可用的账号实例"}.get(code, f"错误 {code}"))

    def _unauthorized(self) -> Response:
        if self.trueai:
            return plain(401, "Authorization header missing.")
        return Response(b"", 401)

    def _queue_full(self) -> Response:
        if self.trueai:
            return _submit(9, "提交失败，队列已满，请稍后重试")
        return _submit(23, "队列已满，请稍后尝试")

    def _not_found(self, path: str) -> Response:
        if self.trueai:
            return Response(b"", 404)
        return self._framework_error(404, path, "Not Found")

    def _framework_error(self, status: int, path: str, error: str,
                         exc: BadRequest | None = None) -> Response:
        """Spring Boot's error JSON, or ASP.NET Core's ProblemDetails."""
        if not self.trueai:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime())
            return JSONResponse({"timestamp": stamp, "status": status, "error": error,
                                 "path": path}, status_code=status)
        if status == 405:
            return Response(b"", 405)
        problem: dict[str, Any] = {
            "type": "https://tools.ietf.org/html/rfc9110#section-15.5."
                    + {400: "1", 404: "5", 415: "16"}.get(status, "1"),
            "title": ("One or more validation errors occurred." if status == 400 else error),
            "status": status,
            "traceId": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00",
        }
        if exc is not None:
            problem["errors"] = {f"$.{exc.field_name}": [exc.detail]}
        return JSONResponse(problem, status_code=status, media_type="application/problem+json")

    # ---- binding (what Jackson / System.Text.Json accept) ----------------

    def _str(self, body: dict[str, Any], name: str) -> str | None:
        value = body.get(name)
        if value is None or isinstance(value, str):
            return value
        if not self.trueai and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # Jackson coerces scalars to String
        raise BadRequest(name)

    def _int(self, body: dict[str, Any], name: str) -> int | None:
        value = body.get(name)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if not self.trueai and isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)  # Jackson coerces "2" to Integer
        raise BadRequest(name)

    def _bool(self, body: dict[str, Any], name: str) -> bool | None:
        value = body.get(name)
        if value is None or isinstance(value, bool):
            return value
        raise BadRequest(name)

    def _enum(self, body: dict[str, Any], name: str, values: tuple[str, ...]) -> str | None:
        value = body.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            for known in values:  # Jackson: exact; System.Text.Json: case-insensitive
                if value == known or (self.trueai and value.upper() == known):
                    return known
        raise BadRequest(name, f"The JSON value could not be converted to {name}.")

    def _str_list(self, body: dict[str, Any], name: str) -> list[str] | None:
        value = body.get(name)
        if value is None:
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise BadRequest(name)

    def _common(self, body: dict[str, Any]) -> tuple[str | None, str | None]:
        """notifyHook and state (BaseSubmitDTO); trueai's botType is bound too."""
        hook, state = self._str(body, "notifyHook"), self._str(body, "state")
        if self.trueai:
            self._str(body, "botType")  # a string: "niji"/"NIJI_JOURNEY", else MID_JOURNEY
            if body.get("accountFilter") is not None and not isinstance(body["accountFilter"],
                                                                        dict):
                raise BadRequest("accountFilter")
        return (hook or None), state

    # ---- submissions -----------------------------------------------------

    async def _imagine(self, body: dict[str, Any], base: str) -> Response:
        prompt = self._str(body, "prompt")
        base64_array = self._str_list(body, "base64Array") or []
        single = self._str(body, "base64")
        hook, state = self._common(body)
        if not prompt or not prompt.strip():
            return _submit(4, "prompt不能为空")
        prompt = prompt.strip()
        banned = self._banned(prompt)
        if banned is not None:
            return _submit(24, "可能包含敏感词", promptEn=prompt, bannedWord=banned)
        if single and not self.trueai:
            base64_array.append(single)
        images = _decode_all(base64_array)
        if images is None:
            return _submit(4, "base64格式错误")
        task = self._new("IMAGINE", base, hook, state, prompt=prompt, inputs=images)
        if self.trueai and body.get("botType") in ("niji", "NIJI_JOURNEY"):
            task.bot_type = "NIJI_JOURNEY"
        if images:  # the proxy uploads them and puts their URLs before the prompt [source]
            urls = [f"{base}/files/{self._store(f'upload-{task.id}-{n}.png', _png(_rgb(data)))}"
                    for n, data in enumerate(images)]
            task.input_urls = urls
            task.prompt = task.prompt_en = " ".join(urls) + " " + prompt
        task.description = f"/imagine {task.prompt}"
        return self._enqueue(task)

    async def _describe(self, body: dict[str, Any], base: str) -> Response:
        data_uri = self._str(body, "base64")
        link = self._str(body, "link") if self.trueai else None
        hook, state = self._common(body)
        if not (data_uri or "").strip() and not (link or "").strip():
            return _submit(4, "base64或link不能为空" if self.trueai else "base64不能为空")
        if link and not data_uri and not re.match(r"^https?://.+", link):
            return _submit(4, "链接格式错误")
        task = self._new("DESCRIBE", base, hook, state)
        if data_uri:
            images = _decode_all([data_uri])
            if images is None:
                return _submit(4, "base64格式错误")
            task.inputs = images
            task.input_urls = [f"{base}/files/" + self._store(f"upload-{task.id}.png",
                                                              _png(_rgb(images[0])))]
        else:
            assert link is not None
            fetched = await self._fetch(task.id, link)
            task.input_urls = [link]
            if fetched is None:
                task.fail_reason = "图片下载失败"
            else:
                task.inputs = [fetched]
        task.description = "/describe" if self.trueai else f"/describe {task.id}.png"
        return self._enqueue(task)

    async def _blend(self, body: dict[str, Any], base: str) -> Response:
        array = self._str_list(body, "base64Array")
        if "dimensions" in body or self.trueai:
            dimensions = self._enum(body, "dimensions", tuple(BLEND_SIZES))
        else:
            dimensions = "SQUARE"  # novicezk's DTO default [source]
        hook, state = self._common(body)
        if array is None or not 2 <= len(array) <= 5:
            return _submit(4, "图片参数错误，2~5张图片" if self.trueai else "base64List参数错误")
        if dimensions is None:
            return _submit(4, "dimensions参数错误")
        images = _decode_all(array)
        if images is None:
            return _submit(4, "base64格式错误")
        task = self._new("BLEND", base, hook, state, inputs=images)
        task.dimensions = dimensions
        task.description = f"/blend {task.id} {len(images)}"
        return self._enqueue(task)

    async def _face_swap(self, body: dict[str, Any], base: str) -> Response:
        source = self._str(body, "sourceBase64")
        target = self._str(body, "targetBase64")
        self._str(body, "sourceUrl")
        self._str(body, "targetUrl")
        hook, state = self._common(body)
        if not (source or "").strip():
            return _submit(4, "人脸图片不能为空")
        if not (target or "").strip():
            return _submit(4, "目标图片不能为空")
        if source == target:
            return _submit(4, "人脸图片和目标图片不能相同")
        assert source is not None and target is not None
        images = _decode_all([source, target])
        if images is None:
            return _submit(4, "base64格式错误")
        task = self._new("SWAP_FACE", base, hook, state, inputs=images)
        task.bot_type = "INSIGHT_FACE"
        return self._enqueue(task)

    async def _change(self, body: dict[str, Any], base: str) -> Response:
        task_id = self._str(body, "taskId")
        action = self._enum(body, "action", ("IMAGINE", "UPSCALE", "VARIATION", "REROLL",
                                             "DESCRIBE", "BLEND"))
        index = self._int(body, "index")
        hook, state = self._common(body)
        if not (task_id or "").strip():
            return _submit(4, "taskId不能为空")
        if action not in ("UPSCALE", "VARIATION", "REROLL"):
            return _submit(4, "action参数错误")
        assert task_id is not None
        parent = self.tasks.get(task_id)
        if parent is None:
            return _submit(3, NOT_FOUND_TEXT)
        if self._phase(parent)[0] != "SUCCESS":
            return _submit(4, "关联任务状态错误")
        if parent.action not in CHANGE_SOURCES:
            return _submit(4, "关联任务不允许执行变化")
        if action != "REROLL" and (index is None or not 1 <= index <= 4):
            return _submit(4, "index参数错误")  # [strict]: the real proxies ask Discord
        letter = "R" if action == "REROLL" else f"{action[0]}{index}"
        task = self._new(action, base, hook, state, prompt=parent.prompt, parent=parent,
                         index=index or 0)
        task.prompt_en = parent.prompt_en
        task.description = f"/up {parent.id} {letter}"
        return self._enqueue(task)

    async def _action(self, body: dict[str, Any], base: str) -> Response:
        task_id = self._str(body, "taskId")
        custom_id = self._str(body, "customId")
        enable_remix = self._bool(body, "enableRemix")
        self._bool(body, "strong")
        hook, state = self._common(body)
        if not (task_id or "").strip() or not (custom_id or "").strip():
            return _submit(4, "参数错误")
        assert task_id is not None and custom_id is not None
        parent = self.tasks.get(task_id)
        if parent is None:
            return _submit(3, NOT_FOUND_TEXT, status=404)
        if self._phase(parent)[0] != "SUCCESS":
            return _submit(4, "关联任务状态错误")
        action, index = _action_of(custom_id, parent)
        if action is None:
            return _submit(4, "未知的 Action 类型")
        if action == "":
            return _submit(4, "该任务不支持重新生成")
        if custom_id not in {b["customId"] for b in self._buttons(parent)}:
            return _submit(4, "customId不属于该任务的按钮")  # [strict]
        task = self._new(action, base, hook, state, prompt=parent.prompt, parent=parent,
                         index=index)
        task.prompt_en = parent.prompt_en
        task.custom_id = custom_id
        task.bot_type = parent.bot_type
        if custom_id.startswith("MJ::Job::PicReader::"):
            lines = _prompt_lines(parent.final_prompt)
            task.prompt = task.prompt_en = lines[index - 1] if index <= len(lines) else ""
            task.parent, task.index = None, 0
            task.description = f"/imagine {task.prompt}"
        elif action == "DESCRIBE":
            task.inputs, task.input_urls = parent.inputs, parent.input_urls
            task.prompt = task.prompt_en = ""
        modal = ("zoom" if custom_id.startswith("MJ::CustomZoom::")
                 else "inpaint" if custom_id.startswith("MJ::Inpaint::") else "")
        if not modal and enable_remix:
            if not self.remix:
                return _submit(4, "当前账号不支持 remix，请开启 remix 功能")
            if action in ("PAN", "VARIATION") or custom_id.startswith("MJ::JOB::reroll"):
                modal = "remix"
        if modal:
            task.modal_kind = modal
            if modal == "inpaint":
                task.prompt = task.prompt_en = ""
            if modal == "zoom":
                task.description = WAITING_FOR_MODAL
            self.tasks[task.id] = task  # saved in MODAL, not queued [source]
            if task.notify_hook:
                self._spawn(self._deliver(task))
            return _submit(21, WAITING_FOR_MODAL, task.id, finalPrompt=task.prompt_en,
                           remix=True)
        return self._enqueue(task)

    async def _modal(self, body: dict[str, Any], base: str) -> Response:
        task_id = self._str(body, "taskId")
        prompt = self._str(body, "prompt")
        mask = self._str(body, "maskBase64")
        if not (task_id or "").strip():
            return _submit(4, "参数错误")
        assert task_id is not None
        task = self.tasks.get(task_id)
        if task is None:
            return _submit(3, NOT_FOUND_TEXT, status=404)
        if self._phase(task)[0] != "MODAL":
            return _submit(4, "关联任务状态错误")  # [strict]: trueai does not check
        if not (prompt or "").strip() and task.parent in self.tasks:
            prompt = self.tasks[task.parent].prompt or self.tasks[task.parent].final_prompt
        if not (prompt or "").strip():
            return _submit(4, "prompt不能为空")
        if task.modal_kind == "inpaint":
            masks = _decode_all([mask]) if mask else None
            if masks is None:
                return _submit(4, "base64格式错误")  # [strict]: Vary Region needs a mask
            task.mask = masks[0]
        assert prompt is not None
        task.prompt = task.prompt_en = prompt.strip()
        task.submitted_at = self.now()
        return self._enqueue(task, save=False)

    # ---- task creation and queueing ------------------------------------------

    def _banned(self, prompt: str) -> str | None:
        lowered = prompt.lower()
        for word in self.banned_words:
            if re.search(r"\b" + re.escape(word.lower()) + r"\b", lowered):
                at = lowered.index(word.lower())
                return prompt[at:at + len(word)]
        return None

    def _new(self, action: str, base: str, hook: str | None, state: str | None, *,
             prompt: str = "", inputs: list[bytes] | None = None,
             parent: MjTask | None = None, index: int = 0) -> MjTask:
        seq = next(self._seq)
        now = self.now()
        task_id = f"{self._ms(now)}{seq % 1000:03d}"
        while task_id in self.tasks:
            task_id = str(int(task_id) + 1)
        return MjTask(
            id=task_id, action=action, seq=seq, submitted_at=now, base_url=base,
            prompt=prompt, prompt_en=prompt, state=state, notify_hook=hook,
            parent=parent.id if parent else None, index=index, inputs=inputs or [],
            fail_reason=self._scripted_next("failure", ""),
            message_id=str(random.randrange(10**18, 10**19)),
            nonce=str(random.randrange(10**18, 10**19)),
        )

    def _enqueue(self, task: MjTask, *, save: bool = True) -> Response:
        waiting = sum(1 for t in self.tasks.values()
                      if t is not task and self._phase(t)[0] == "NOT_START")
        if waiting >= self.queue_size:
            return self._queue_full()
        task.queued_at = self.now()
        if save:
            self.tasks[task.id] = task
            if task.notify_hook:
                self._spawn(self._deliver(task))
        instance = "1118138338562560102"
        if waiting == 0:
            return _submit(1, "提交成功", task.id, discordInstanceId=instance)
        return _submit(22, f"排队中，前面还有{waiting}个任务", task.id,
                       numberOfQueues=waiting, discordInstanceId=instance)

    # ---- queries -------------------------------------------------------------

    def _fetch_one(self, task_id: str) -> Response:
        task = self.tasks.get(task_id)
        if task is None:
            return Response(b"", 204 if self.trueai else 200)
        return JSONResponse(self.task_json(task))

    async def _list(self, body: dict[str, Any], base: str) -> Response:
        ids = self._str_list(body, "ids") or []
        found, seen = [], set()
        for task_id in (i.strip() for i in ids) if self.trueai else ids:
            if task_id in self.tasks and task_id not in seen:
                seen.add(task_id)
                found.append(self.task_json(self.tasks[task_id]))
        return JSONResponse(found)

    def _cancel_route(self, task_id: str) -> Response:
        """trueai's POST /mj/task/{id}/cancel: an unfinished task fails with
        "取消任务" [source]; the answer is an empty 200."""
        task = self.tasks.get(task_id)
        if task is not None and self._phase(task)[0] not in FINAL:
            self.fail_task(task_id, "取消任务")
        return Response(b"", 200)

    def task_json(self, task: MjTask | str,
                  phase: tuple[str, str | None, int] | None = None) -> dict[str, Any]:
        """The task object as the flavour's proxy serialises it, now (or at ``phase``)."""
        if isinstance(task, str):
            task = self.task(task)
        status, progress, step = phase or self._phase(task)
        image_url: str | None = None
        if status == "IN_PROGRESS" and task.action != "DESCRIBE":
            image_url = self._preview_url(task, step)
        elif status == "SUCCESS":
            self._ensure_output(task)
            image_url = (task.input_urls[0] if task.action == "DESCRIBE" and task.input_urls
                         else f"{task.base_url}/files/{task.output}" if task.output else None)
        elif task.action == "DESCRIBE" and task.input_urls and status != "NOT_START":
            image_url = task.input_urls[0]
        properties: dict[str, Any] = {
            "notifyHook": task.notify_hook, "nonce": task.nonce,
            "discordInstanceId": "1118138338562560102",
        }
        if status not in ("NOT_START", "MODAL"):
            properties.update(messageId=task.message_id, flags=0)
        if status == "SUCCESS":
            properties.update(messageHash=task.hash, finalPrompt=task.final_prompt)
        if task.parent:
            parent = self.tasks.get(task.parent)
            if parent is not None:
                properties["referencedMessageId"] = parent.message_id
        prompt, prompt_en = task.prompt, task.prompt_en
        if status == "SUCCESS" and task.action == "DESCRIBE":
            prompt = prompt_en = task.final_prompt
        start = task.start if status not in ("NOT_START", "MODAL") else None
        data: dict[str, Any] = {
            "id": task.id,
            "properties": properties,
            "action": task.action,
            "status": status,
            "prompt": prompt,
            "promptEn": prompt_en,
            "description": task.description,
            "state": task.state,
            "submitTime": self._ms(task.submitted_at),
            "startTime": None if start is None else self._ms(start),
            "finishTime": (self._ms(task.end) if status in FINAL and task.end is not None
                           else None),
            "imageUrl": image_url,
            "progress": progress,
            "failReason": task.fail_reason if status == "FAILURE" else None,
        }
        if self.trueai:
            buttons = self._buttons(task) if status == "SUCCESS" else []
            cells: list[dict[str, str | None]] = (
                [{"url": f"{task.base_url}/files/{name}"} for name in task.cells]
                if status == "SUCCESS" else [])
            if status == "SUCCESS" and not cells and task.output:
                cells = [{"url": image_url}]
            data.update(
                parentId=task.parent, botType=task.bot_type, mode="FAST",
                buttons=buttons, imageUrls=cells if task.action != "DESCRIBE" else [],
                failReason=data["failReason"] or "",
                messageId=properties.get("messageId"),
                instanceId="1118138338562560102",
            )
        return data

    # ---- time --------------------------------------------------------------

    def _ms(self, t: float) -> int:
        return int((self._epoch + t) * 1000)

    def _duration(self, task: MjTask) -> float:
        if task.fail_reason or task.action == "DESCRIBE":
            return float(self.queue_seconds + (0 if task.fail_reason else self.run_seconds))
        return float(self.queue_seconds + self.run_seconds)

    def _schedule(self) -> None:
        """Start and end of every queued task: FIFO over ``concurrency`` slots."""
        slots: list[float] = [float("-inf")] * max(1, int(self.concurrency))
        queued = sorted((t for t in self.tasks.values() if t.queued_at is not None),
                        key=lambda t: (t.queued_at, t.seq))
        for task in queued:
            assert task.queued_at is not None
            free = heapq.heappop(slots)
            start = max(task.queued_at, free)
            end = start + self._duration(task)
            if task.ended_at is not None and task.ended_at < start:
                heapq.heappush(slots, free)  # ended while waiting: never took the slot
                task.start, task.end = None, task.ended_at
                continue
            if task.ended_at is not None:
                end = min(end, task.ended_at)
            task.start, task.end = start, end
            heapq.heappush(slots, end)

    def _phase(self, task: MjTask) -> tuple[str, str | None, int]:
        """(status, progress, in-progress step) now."""
        if task.queued_at is None:
            return "MODAL", "0%", 0
        self._schedule()
        now = self.now()
        assert task.end is not None
        if now >= task.end:
            kind = task.end_kind or ("FAILURE" if task.fail_reason else "SUCCESS")
            return kind, "100%" if kind == "SUCCESS" else "", 0
        if task.start is None or now < task.start:
            return "NOT_START", "0%" if self.trueai else None, 0
        elapsed = now - task.start
        if elapsed < self.queue_seconds or task.fail_reason or task.action == "DESCRIBE":
            return "SUBMITTED", "0%", 0
        steps = max(1, int(self.progress_steps))
        step = min(steps - 1, int((elapsed - self.queue_seconds) / self.run_seconds * steps))
        return "IN_PROGRESS", f"{(step + 1) * 100 // (steps + 1)}%", step

    # ---- buttons -------------------------------------------------------------

    def _buttons(self, task: MjTask) -> list[dict[str, Any]]:
        h = task.hash
        if task.grid:
            buttons = [_button(f"MJ::JOB::upsample::{n}::{h}", f"U{n}") for n in range(1, 5)]
            buttons.append(_button(f"MJ::JOB::reroll::0::{h}::SOLO", "", "🔄"))
            buttons += [_button(f"MJ::JOB::variation::{n}::{h}", f"V{n}") for n in range(1, 5)]
            return buttons
        if task.action in ("UPSCALE", "UPSCALE_HD"):
            # trueai's Resources/ApiParams/upscale_buttons.json, {{version}} = v6
            buttons = [] if task.action == "UPSCALE_HD" else [
                _button(f"MJ::JOB::upsample_v6r1_2x_subtle::1::{h}::SOLO", "Upscale (Subtle)",
                        "upscale_1"),
                _button(f"MJ::JOB::upsample_v6r1_2x_creative::1::{h}::SOLO",
                        "Upscale (Creative)", "upscale_1"),
            ]
            return [
                *buttons,
                _button(f"MJ::JOB::low_variation::1::{h}::SOLO", "Vary (Subtle)", "🪄"),
                _button(f"MJ::JOB::high_variation::1::{h}::SOLO", "Vary (Strong)", "🪄"),
                _button(f"MJ::Inpaint::1::{h}::SOLO", "Vary (Region)", "🖌️"),
                _button(f"MJ::Outpaint::50::1::{h}::SOLO", "Zoom Out 2x", "🔍"),
                _button(f"MJ::Outpaint::75::1::{h}::SOLO", "Zoom Out 1.5x", "🔍"),
                _button(f"MJ::CustomZoom::{h}", "Custom Zoom", "🔍"),
                _button(f"MJ::JOB::pan_left::1::{h}::SOLO", "", "⬅️"),
                _button(f"MJ::JOB::pan_right::1::{h}::SOLO", "", "➡️"),
                _button(f"MJ::JOB::pan_up::1::{h}::SOLO", "", "⬆️"),
                _button(f"MJ::JOB::pan_down::1::{h}::SOLO", "", "⬇️"),
            ]
        if task.action == "DESCRIBE":
            buttons = [_button(f"MJ::Job::PicReader::{n}", "", f"{n}\ufe0f\u20e3")
                       for n in range(1, 5)]
            return [*buttons, _button(f"MJ::Picread::Retry::{h}", "", "🔄")]
        return []

    # ---- images --------------------------------------------------------------

    def _ensure_output(self, task: MjTask) -> None:
        if task.output is not None or (task.action == "DESCRIBE" and task.final_prompt):
            return
        if task.action == "DESCRIBE":
            task.final_prompt = _describe_text(task.inputs[0] if task.inputs else None)
            return
        img = self._render(task)
        task.output = self._store(f"{task.action.lower()}_{task.id}_{task.hash}.png", _png(img))
        task.final_prompt = task.prompt_en
        if task.grid and self.trueai:
            task.cells = [self._store(f"{task.id}_{n - 1}.png", _png(_cell(img, n)))
                          for n in range(1, 5)]

    def _output_image(self, task: MjTask) -> Image.Image:
        self._ensure_output(task)
        assert task.output is not None
        return _rgb(self.files[task.output][0])

    def _render(self, task: MjTask) -> Image.Image:
        parent = self.tasks.get(task.parent) if task.parent else None
        seed = task.id
        if parent is not None and parent.action != "DESCRIBE":
            source = self._output_image(parent)
            if task.action == "UPSCALE":
                return _cell(source, task.index).resize((2 * CELL, 2 * CELL))
            if task.action == "UPSCALE_HD":
                return source.resize((source.width * 2, source.height * 2))
            if parent.grid and task.index:
                source = _cell(source, task.index)
            if task.action == "ZOOM":
                return _grid_from(_zoomed_out(source), seed)
            if task.action == "PAN":
                return _grid_from(_panned(source, task.custom_id), seed)
            if task.mask is not None:
                return _grid_from(_inpainted(source, task.mask), seed)
            return _grid_from(source, seed)
        if task.action == "SWAP_FACE":
            return _face_pasted(task.inputs[1])
        if task.action == "BLEND":
            return _blend_grid(task.inputs, BLEND_SIZES[task.dimensions], seed)
        if task.inputs:
            return _grid_from(_rgb(task.inputs[0]), seed)
        return _grid(_size_for(task.prompt), seed, task.prompt)

    def _preview_url(self, task: MjTask, step: int) -> str:
        """A smaller, blurred take of the result for this progress step."""
        name = task.previews.get(step)
        if name is None:
            final = self._render(task)
            steps = max(1, int(self.progress_steps))
            small = final.resize((max(2, final.width // 2), max(2, final.height // 2)))
            blurred = small.filter(ImageFilter.GaussianBlur(radius=2 + 3 * (steps - step)))
            name = self._store(f"preview_{task.id}_{step}.png", _png(blurred))
            task.previews[step] = name
        return f"{task.base_url}/files/{name}"

    # ---- callbacks -------------------------------------------------------

    async def _deliver(self, task: MjTask) -> None:
        """POST the bare task at each change from SUBMITTED on (each progress
        step too), once each: NotifyServiceImpl's postJson, no retry [source]."""
        assert task.notify_hook is not None
        sent: tuple[str, str | None] | None = None
        while sent is None or sent[0] not in FINAL:
            phase = self._phase(task)
            now = (phase[0], phase[1])
            if phase[0] not in ("NOT_START", "MODAL") and now != sent:
                await self._call_back(task.id, task.notify_hook, self.task_json(task, phase),
                                      final=phase[0] in FINAL)
                sent = now
            await asyncio.sleep(0.005)


# ---- answers and parsing (pure) ---------------------------------------------------


def _submit(code: int, description: str, result: str | None = None, *, status: int = 200,
            **properties: Any) -> JSONResponse:
    return JSONResponse({"code": code, "description": description, "result": result,
                         "properties": properties}, status_code=status)


def _button(custom_id: str, label: str, emoji: str = "") -> dict[str, Any]:
    return {"customId": custom_id, "emoji": emoji, "label": label, "type": 2, "style": 2}


_DATA_URI = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[^;,]*)*;base64,(?P<data>.*)",
                       re.DOTALL)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """What the proxies take as base64: ``data:image/png;base64,...``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _decode(value: str) -> bytes | None:
    """A data URI's image bytes, or None (not a base64 data URI [source], or
    not an image Pillow reads [strict])."""
    match = _DATA_URI.fullmatch(value.strip())
    if match is None:
        return None
    try:
        data = base64.b64decode(match.group("data"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if _image_format(data) is not None else None


def _decode_all(values: list[str]) -> list[bytes] | None:
    out = []
    for value in values:
        data = _decode(value)
        if data is None:
            return None
        out.append(data)
    return out


def _action_of(custom_id: str, parent: MjTask) -> tuple[str | None, int]:
    """trueai's SubmitController.Action mapping of a customId to the new task's
    action [source]: (None = unknown, "" = reroll not allowed) and the index."""
    number = re.match(r"MJ::JOB::(?:upsample|variation)::(\d+)", custom_id)
    index = int(number.group(1)) if number else 0
    if custom_id.startswith("MJ::JOB::upsample::"):
        return "UPSCALE", index
    if custom_id.startswith("MJ::JOB::variation::"):
        return "VARIATION", index
    if custom_id.startswith("MJ::JOB::reroll::"):
        if parent.action in ("IMAGINE", "VARIATION", "DESCRIBE", "BLEND", "PAN", "ZOOM",
                             "UPSCALE_HD"):
            return parent.action, 0
        return ("IMAGINE", 0) if parent.action == "UPSCALE" else ("", 0)
    if custom_id.startswith(("MJ::JOB::high_variation::", "MJ::JOB::low_variation::")):
        return "VARIATION", 0
    if custom_id.startswith(("MJ::Outpaint::", "MJ::CustomZoom::")):
        return "ZOOM", 0
    if custom_id.startswith("MJ::JOB::pan_"):
        return "PAN", 0
    if custom_id.startswith("MJ::JOB::upsample_"):
        return "UPSCALE_HD", 0
    if custom_id.startswith("MJ::Inpaint::"):
        return "VARIATION", 0
    if "MJ::Picread::Retry" in custom_id:
        return "DESCRIBE", 0
    if custom_id.startswith("MJ::Job::PicReader"):
        tail = custom_id.rsplit("::", 1)[-1]
        return "IMAGINE", int(tail) if tail.isdigit() else 1
    return None, 0


def _prompt_lines(text: str) -> list[str]:
    return [re.sub(r"^\S*\ufe0f\u20e3\s*", "", line).strip()
            for line in text.split("\n") if line.strip()]


# ---- pictures ------------------------------------------------------------------


def _size_for(prompt: str) -> tuple[int, int]:
    match = re.search(r"--(?:ar|aspect)\s+(\d+):(\d+)", prompt)
    w, h = (int(match.group(1)), int(match.group(2))) if match else (1, 1)
    if w >= h:
        return 2 * CELL, max(4, round(2 * CELL * h / w) // 2 * 2)
    return max(4, round(2 * CELL * w / h) // 2 * 2), 2 * CELL


def _colors(seed: str) -> list[tuple[int, int, int]]:
    rng = random.Random(seed)
    return [(rng.randrange(40, 216), rng.randrange(40, 216), rng.randrange(40, 216))
            for _ in range(4)]


def _grid_lines(img: Image.Image) -> Image.Image:
    """The visible 2×2 grid: dark lines between the cells."""
    draw = ImageDraw.Draw(img)
    w, h = img.size
    draw.rectangle((w // 2 - 2, 0, w // 2 + 1, h), fill=(20, 20, 20))
    draw.rectangle((0, h // 2 - 2, w, h // 2 + 1), fill=(20, 20, 20))
    return img


def _grid(size: tuple[int, int], seed: str, label: str = "") -> Image.Image:
    width, height = size
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    rng = random.Random(seed)
    for index, color in enumerate(_colors(seed)):
        x, y = (index % 2) * width // 2, (index // 2) * height // 2
        draw.rectangle((x, y, x + width // 2 - 1, y + height // 2 - 1), fill=color)
        bx, by = x + rng.randrange(width // 4), y + rng.randrange(height // 4)
        draw.ellipse((bx, by, bx + width // 6 + 4, by + height // 6 + 4),
                     fill=tuple(255 - c for c in color))
        draw.text((x + 8, y + 8), f"{index + 1} {label[:24]}", fill=(255, 255, 255))
    return _grid_lines(img)


def _grid_from(image: Image.Image, seed: str, size: tuple[int, int] | None = None) -> Image.Image:
    """Four tinted copies of ``image`` in a 2×2 grid."""
    width, height = size or (2 * CELL, 2 * CELL)
    cell = image.convert("RGB").resize((width // 2, height // 2))
    grid = Image.new("RGB", (width, height))
    for index, color in enumerate(_colors(seed)):
        tinted = Image.blend(cell, Image.new("RGB", cell.size, color), 0.35)
        grid.paste(tinted, ((index % 2) * (width // 2), (index // 2) * (height // 2)))
    return _grid_lines(grid)


def _blend_grid(inputs: list[bytes], ratio: tuple[int, int], seed: str) -> Image.Image:
    w, h = ratio
    size = (2 * CELL, 2 * CELL * h // w) if w >= h else (2 * CELL * w // h, 2 * CELL)
    images = [_rgb(data).resize((64, 64)) for data in inputs]
    mixed = images[0]
    for n, other in enumerate(images[1:], start=2):
        mixed = Image.blend(mixed, other, 1 / n)
    return _grid_from(mixed, seed, size)


def _cell(grid: Image.Image, number: int) -> Image.Image:
    """Cell ``number`` (1-based, row-major) of a 2×2 grid."""
    width, height = grid.width // 2, grid.height // 2
    x, y = ((number - 1) % 2) * width, ((number - 1) // 2) * height
    return grid.crop((x, y, x + width, y + height))


def _zoomed_out(image: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", image.size, (90, 110, 90))
    small = image.resize((image.width // 2, image.height // 2))
    canvas.paste(small, (image.width // 4, image.height // 4))
    return canvas


def _panned(image: Image.Image, custom_id: str) -> Image.Image:
    wide = "left" in custom_id or "right" in custom_id
    size = (image.width * 3 // 2, image.height) if wide else (image.width, image.height * 3 // 2)
    canvas = Image.new("RGB", size, (110, 90, 90))
    at = {"left": (size[0] - image.width, 0), "up": (0, size[1] - image.height)}
    canvas.paste(image, next((v for k, v in at.items() if k in custom_id), (0, 0)))
    return canvas


def _inpainted(image: Image.Image, mask: bytes) -> Image.Image:
    m = _rgb(mask).convert("L").resize(image.size)
    return Image.composite(Image.new("RGB", image.size, (200, 60, 200)), image, m)


def _describe_text(data: bytes | None) -> str:
    if data is None:
        return ""
    img = _rgb(data)
    r, g, b = img.resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    w, h = img.size
    lines = [
        f"a flat picture, mostly rgb({r},{g},{b}) --ar {w}:{h}",
        f"minimalist color field study --ar {w}:{h}",
        f"an abstract composition in muted tones --ar {w}:{h}",
        f"a simple geometric poster --ar {w}:{h}",
    ]
    return "\n\n".join(f"{n}\ufe0f\u20e3 {line}" for n, line in enumerate(lines, start=1))


def sample_png(width: int = 64, height: int = 64, seed: Any = 0) -> bytes:
    """A small real PNG for requests."""
    img = Image.new("RGB", (width, height), tuple(random.Random(seed).randrange(256)
                                                  for _ in range(3)))  # type: ignore[arg-type]
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


__all__ = ["FakeMjProxy", "MjTask", "data_uri", "sample_png"]
