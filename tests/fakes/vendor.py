"""What the vendor fakes share: the records of what they saw, a clock tests
can move, scripted faults, input images fetched by URL like a real vendor,
callbacks delivered on the vendor's retry schedule, result files that expire,
and the small validators and pictures every fake uses. Each fake keeps only
its own protocol: routes, auth, request validation, phases, answer shapes.

A fake passes its tunable options to ``FakeVendor.__init__`` by name: they
become attributes, and ``reset()`` puts them back, so one served fake can
serve many tests. Every fake is used the same way:

    fake = FakeZhiqite(queue_seconds=0.05, run_seconds=0.1)   # or any other
    async with serve(fake.app) as base_url:                    # tests.fakes.server
        ...
    await fake.aclose()          # stops callback deliveries, closes its client
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from PIL import Image, ImageDraw
# The fakes take Starlette's pieces from here too (one import line each).
from starlette.applications import Starlette  # noqa: F401
from starlette.requests import Request
from starlette.responses import JSONResponse, Response  # noqa: F401
from starlette.routing import Route  # noqa: F401

# ---- records -----------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, form or multipart summary; else the raw text; None for files
    query: str = ""  # the raw query string
    raw: bytes = b""


@dataclass
class FetchRecord:
    """An input image the fake fetched by URL, as the vendor does."""

    job_id: str  # the fake's key for the job ("" where the vendor has none)
    url: str
    ok: bool
    status_code: int | None
    error: str = ""  # an httpx exception name, "HTTP error", "not an image", "too large"
    size: int = 0

    @property
    def task_id(self) -> str:  # the names the fakes used before the base
        return self.job_id

    uid = task_id


@dataclass
class CallbackAttempt:
    job_id: str  # the fake's key for the job
    url: str
    attempt: int  # 1 = first delivery
    at: float  # the fake's clock
    payload: dict[str, Any]
    status_code: int | None
    answer: str
    accepted: bool
    final: bool = True  # the job's last word (aihuihua also calls back on progress)

    @property
    def task_id(self) -> str:
        return self.job_id

    uid = task_id


# ---- answers -------------------------------------------------------------------


def plain(status: int, text: str) -> Response:
    return Response(text, status, media_type="text/plain")


def html(status: int, text: str) -> Response:
    return Response(f"<html><body>{text}</body></html>", status, media_type="text/html")


def oss_error(status: int, code: str, message: str) -> Response:
    """Aliyun OSS's refusal of a file, in its XML."""
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>")
    return Response(body, status, media_type="application/xml")


# fail_next kinds every fake has; its own table adds to (or overrides) these.
COMMON_FAULTS: Mapping[str, Callable[[], Response]] = {
    "http500": lambda: plain(500, "Internal Server Error"),
    "malformed": lambda: html(200, "502 Bad Gateway"),  # an HTML page with HTTP 200
}


class FakeVendor:
    # Paths that are API calls (what api_requests lists), as prefixes.
    api_paths: ClassVar[tuple[str, ...]] = ()
    # api_requests(endpoint) keeps paths containing ``endpoint`` (else: ending with it).
    endpoint_in_path: ClassVar[bool] = False
    # fail_next kind → the answer; "timeout" (answer late) and COMMON_FAULTS come free.
    faults: ClassVar[Mapping[str, Callable[[], Response]]] = {}
    # fail_next also takes a body code (an int), answered by _code_fault.
    code_faults: ClassVar[bool] = False
    fetch_max_bytes: ClassVar[int | None] = None  # larger inputs fail as "too large"
    oss_files: ClassVar[bool] = False  # results on Aliyun OSS: its XML refusals
    expired_text: ClassVar[str] = "Expired"

    def __init__(self, clock: Callable[[], float] = time.monotonic, **options: Any) -> None:
        self.__dict__.update(options)
        self._defaults = dict(options)
        self._clock = clock
        self._offset = 0.0
        self.requests: list[RecordedRequest] = []
        self.fetches: list[FetchRecord] = []
        self.callbacks: list[CallbackAttempt] = []
        self.files: dict[str, tuple[bytes, float]] = {}  # name → (png, created_at)
        self._faults: list[list[Any]] = []  # [kind | code, times left, path filter]
        self._scripted: dict[str, list[Any]] = {}  # what → outcomes for the next jobs
        self._background: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None

    # ---- test-side controls --------------------------------------------

    def now(self) -> float:
        return self._clock() + self._offset

    def set_clock(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def advance(self, seconds: float) -> None:
        """Move the fake's time forward (jobs progress, URLs expire)."""
        self._offset += seconds

    def reset(self) -> None:
        """Back to the constructor's options with no pending faults, scripted
        outcomes, callback deliveries or records; jobs and files stay."""
        self.__dict__.update(self._defaults)
        self._offset = 0.0
        self._faults.clear()
        self._scripted.clear()
        for task in list(self._background):
            task.cancel()
        self.requests.clear()
        self.fetches.clear()
        self.callbacks.clear()

    # ---- work kept running (a vendor still busy while the bot restarts) ----

    _gate: asyncio.Event | None = None  # set by hold(); the fake's work waits on it
    started: int = 0  # work that began (each fake counts its own kind)

    def hold(self) -> None:
        """Work in progress (and any that starts) waits until ``release()``;
        what "waits" means is the fake's (a call not answering, a sampler
        between steps)."""
        if self._gate is None:
            self._gate = asyncio.Event()
        self._gate.clear()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()

    async def wait_started(self, count: int, timeout: float = 3.0) -> None:
        """Until ``count`` pieces of work have started (since the last reset)."""
        deadline = time.monotonic() + timeout
        while self.started < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.started} of {count} started")
            await asyncio.sleep(0.005)

    def finish(self, job_id: Any) -> None:
        """Finish a job (as the fake's ``job()`` finds it) now, whatever the clock says."""
        self.job(job_id).forced_done = True  # type: ignore[attr-defined]

    @property
    def fault_kinds(self) -> frozenset[str]:
        return frozenset({*COMMON_FAULTS, *self.faults, "timeout"})

    def fail_next(self, kind: str | int, times: int = 1, path: str | None = None) -> None:
        """The next ``times`` API calls (whose path contains ``path``, if
        given) fail as ``kind``: one of ``fault_kinds`` (see the fake's table;
        timeout answers as usual after ``timeout_seconds``), or a body code
        as an int where the vendor has codes."""
        if not (self.code_faults and isinstance(kind, int)) and kind not in self.fault_kinds:
            raise ValueError(f"unknown fault {kind!r}")
        self._faults.append([kind, times, path])

    def api_requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """Recorded API calls, optionally those whose path names ``endpoint``."""
        return [
            r for r in self.requests
            if r.path.startswith(self.api_paths) and (
                endpoint is None
                or (endpoint in r.path if self.endpoint_in_path else r.path.endswith(endpoint))
            )
        ]

    def fetched_urls(self) -> list[str]:
        return [record.url for record in self.fetches]

    # Vendors that also call back on progress: wait_for_callbacks counts
    # only the callbacks that end a job unless told otherwise.
    waits_for_final_callbacks: ClassVar[bool] = False

    async def wait_for_callbacks(
        self, count: int, timeout: float = 3.0, *, final: bool | None = None
    ) -> list[CallbackAttempt]:
        """Once ``count`` callback attempts were made (with ``final``: that
        many carrying a job's last word), those attempts."""
        final = self.waits_for_final_callbacks if final is None else final
        deadline = time.monotonic() + timeout
        while len(chosen := self._attempts(final)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(chosen)} of {count} callback attempts")
            await asyncio.sleep(0.005)
        return chosen

    def _attempts(self, final: bool) -> list[CallbackAttempt]:
        return [a for a in self.callbacks if a.final] if final else self.callbacks

    async def aclose(self) -> None:
        """Stops callback deliveries and closes the client that fetches inputs."""
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ---- requests and faults ---------------------------------------------

    async def _record(self, request: Request, *, parse: bool = True) -> RecordedRequest:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = self._parse_body(raw, headers) if parse else None
        record = RecordedRequest(request.method, request.url.path, headers, body,
                                 request.url.query, raw)
        self.requests.append(record)
        return record

    def _parse_body(self, raw: bytes, headers: dict[str, str]) -> Any:
        return _parse_json(raw)

    def _take_fault(self, path: str) -> str | int | None:
        for fault in self._faults:
            kind, left, only = fault
            if left > 0 and (only is None or only in path):
                fault[1] -= 1
                if fault[1] == 0:
                    self._faults.remove(fault)
                return kind
        return None

    async def _faulted(self, path: str) -> Response | None:
        """The scripted fault's answer for this call, or None to serve it
        (after a "timeout" fault's delay: the answer comes too late)."""
        fault = self._take_fault(path)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_seconds)
            return None
        return None if fault is None else self._fault_response(fault, path)

    def _fault_response(self, kind: str | int, path: str) -> Response:
        if isinstance(kind, int):
            return self._code_fault(kind)
        return {**COMMON_FAULTS, **self.faults}[kind]()

    def _code_fault(self, code: int) -> Response:
        """A fault given as the vendor's own body code (aihuihua's 23, ...);
        a fake whose vendor has such codes answers them."""
        raise ValueError(f"{type(self).__name__} has no numeric fault codes (got {code})")

    # ---- scripted outcomes for the next jobs -----------------------------

    def _script(self, what: str, value: Any) -> None:
        self._scripted.setdefault(what, []).append(value)

    def _scripted_next(self, what: str, default: Any = None) -> Any:
        queue = self._scripted.get(what)
        return queue.pop(0) if queue else default

    def _timeline(self, job: Any, stages: Iterable[tuple[str, float]],
                  last: str) -> tuple[str, float]:
        """The stage ``job`` is in by the fake's clock, and how far into it
        (0..1): stages are (name, seconds) in order, then ``last``, where a
        job the test finished (``forced_done``) is at once."""
        if job.forced_done:
            return last, 1.0
        elapsed = self.now() - job.created_at
        for name, seconds in stages:
            if elapsed < seconds:
                return name, elapsed / seconds
            elapsed -= seconds
        return last, 1.0

    def _queue_position(self, job: Any, jobs: Iterable[Any], waiting: str) -> int:
        """1 + the jobs before ``job`` (in ``jobs``, oldest first) still in phase ``waiting``."""
        position = 1
        for other in jobs:
            if other is job:
                break
            position += self._phase(other) == waiting  # type: ignore[attr-defined]
        return position

    # ---- input images --------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        return self._http

    async def _fetch(self, job_id: str, url: str) -> bytes | None:
        """The image at ``url``, or None (recorded in ``fetches`` either way)."""
        try:
            response = await self._client().get(url)
        except httpx.HTTPError as exc:
            self.fetches.append(FetchRecord(job_id, url, False, None, type(exc).__name__))
            return None
        data = response.content
        limit = self.fetch_max_bytes
        error = ("HTTP error" if response.status_code != 200
                 else "not an image" if not _is_image(data)
                 else "too large" if limit is not None and len(data) > limit else "")
        self.fetches.append(FetchRecord(job_id, url, not error, response.status_code, error,
                                        len(data)))
        return None if error else data

    async def _fetch_all(self, job_id: str, urls: Iterable[str]) -> list[bytes] | None:
        """Every input in order, or None at the first that fails."""
        inputs = []
        for url in urls:
            data = await self._fetch(job_id, url)
            if data is None:
                return None
            inputs.append(data)
        return inputs

    # ---- callbacks -------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _until(condition: Callable[[], bool]) -> None:
        while not condition():
            await asyncio.sleep(0.005)

    async def _call_back(self, job_id: str, url: str, payload: dict[str, Any],
                         retry_delays: Iterable[float] = (), *, final: bool = True) -> bool:
        """POST ``payload`` until the receiver accepts it, waiting each of
        ``retry_delays`` (the vendor's schedule) between tries."""
        delays = list(retry_delays)
        for attempt in range(1, len(delays) + 2):
            if await self._post_callback(job_id, url, attempt, payload, final):
                return True
            if attempt <= len(delays):
                await asyncio.sleep(delays[attempt - 1])
        return False

    async def _post_callback(self, job_id: str, url: str, attempt: int,
                             payload: dict[str, Any], final: bool) -> bool:
        status: int | None = None
        answer = ""
        try:
            response = await self._client().post(url, json=payload)
            status, answer = response.status_code, response.text
        except httpx.HTTPError as exc:
            answer = type(exc).__name__
        accepted = self._callback_accepted(status, answer)
        self.callbacks.append(CallbackAttempt(job_id, url, attempt, self.now(), payload, status,
                                              answer, accepted, final))
        return accepted

    def _callback_accepted(self, status: int | None, answer: str) -> bool:
        return status is not None and 200 <= status < 300

    # ---- result files ----------------------------------------------------

    def _store(self, name: str, png: bytes) -> str:
        self.files[name] = (png, self.now())
        return name

    def _serves(self, request: Request) -> bool:
        """Whether the file route's other path parts are right."""
        return True

    async def _output(self, request: Request) -> Response:
        """A result file by the ``name`` path parameter; refused after url_ttl."""
        await self._record(request, parse=False)
        entry = self.files.get(request.path_params["name"]) if self._serves(request) else None
        if entry is None:
            if self.oss_files:
                return oss_error(404, "NoSuchKey", "The specified key does not exist.")
            return plain(404, "Not Found")
        data, created = entry
        if self.now() - created > self.url_ttl:
            if self.oss_files:
                return oss_error(403, "AccessDenied", "Request has expired.")
            return plain(403, self.expired_text)
        return Response(data, media_type="image/png")


# ---- validation (pure) -----------------------------------------------------


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


def _is_http(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_problem(headers: dict[str, str], body: Any) -> str:
    """Why a JSON API refuses this request ("" if it is a JSON object)."""
    if not headers.get("content-type", "").lower().startswith("application/json"):
        return "Content-Type必须为application/json"
    if not isinstance(body, dict):
        return "请求体必须为JSON对象"
    return ""


def _required_strings(body: dict[str, Any], *names: str) -> str:
    for name in names:
        if not isinstance(body.get(name), str) or not body[name].strip():
            return f"{name}不能为空"
    return ""


def _url_problem(body: dict[str, Any], *names: str) -> str:
    """The first of ``names`` present but not an http(s) URL."""
    for name in names:
        if body.get(name) is not None and not _is_http(body[name]):
            return f"{name}必须为http(s)链接"
    return ""


def _image_format(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
            return img.format
    except Exception:  # noqa: BLE001 — any Pillow failure means "not an image"
        return None


def _is_image(data: bytes) -> bool:
    return _image_format(data) is not None


# ---- pictures ----------------------------------------------------------------


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def _rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def _picture(size: tuple[int, int], seed: Any, label: str, blobs: int = 3) -> bytes:
    """A PNG of ``size``: a seeded background with ``blobs`` ellipses, labelled."""
    rng = random.Random(seed)
    width, height = size
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(blobs):
        x, y = rng.randrange(width), rng.randrange(height)
        draw.ellipse((x, y, x + width // 3 + 8, y + height // 3 + 8),
                     fill=tuple(rng.randrange(256) for _ in range(3)))
    draw.text((8, 8), label, fill=(255, 255, 255))
    return _png(img)


def _face_pasted(target: bytes) -> Image.Image:
    """A face swap's stand-in: a face-coloured oval on the target."""
    out = _rgb(target)
    w, h = out.size
    ImageDraw.Draw(out).ellipse((w // 3, h // 4, 2 * w // 3, 3 * h // 4), fill=(230, 190, 160))
    return out


def _upscaled(data: bytes, factor: int) -> Image.Image:
    img = _rgb(data)
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.BICUBIC)


# ---- multipart, parsed as strictly as RFC 7578 frames it ------------------------


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """'form-data; name="image"; filename="a.png"' → ("form-data", {...})."""
    head, *rest = value.split(";")
    params = {}
    for item in rest:
        key, sep, val = item.strip().partition("=")
        if sep:
            params[key.strip().lower()] = val.strip().strip('"')
    return head.strip().lower(), params


def parse_parts(raw: bytes, content_type: str) -> list[Part]:
    """The parts of a multipart/form-data body in order (a name may repeat:
    OpenAI's image[]); a ValueError for anything malformed."""
    _, params = header_params(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise ValueError("boundary missing")
    chunks = raw.split(b"--" + boundary.encode("latin-1"))
    if len(chunks) < 3 or chunks[0].strip() or not chunks[-1].startswith(b"--"):
        raise ValueError("not framed by the boundary")
    parts = []
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
        kind, disposition = header_params(headers.get("content-disposition", ""))
        if kind != "form-data" or not disposition.get("name"):
            raise ValueError("part is not form-data with a name")
        parts.append(Part(disposition["name"], disposition.get("filename"), headers.get("content-type"), data))
    return parts
