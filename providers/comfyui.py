"""comfyui: a ComfyUI server (its own, or behind a proxy with a bearer token).

    inputs    POST /upload/image (multipart "image")  → {name, subfolder, type}
    submit    POST /prompt {prompt, client_id, prompt_id, extra_data} → {prompt_id, number}
                           HTTP 400 {error, node_errors} for a workflow it refuses
    events    GET  /ws?clientId=<ours>   one websocket per bot process (providers.comfyui_events)
    state     GET  /queue (running, pending by number), GET /history/{id} (outputs, status)
    results   GET  /view?filename=&subfolder=&type=
    cancel    POST /queue {"delete": [id]} while it waits, POST /interrupt while it runs

The prompt id is our business id, so a prompt sent just before a crash is
found again instead of sent twice; the prompt lives at the server, so a
restarted bot finds it by id in the queue or the history (polling), and a
prompt the server itself lost (it restarted) runs again once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import quote
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import httpx

from providers.base import PollPolicy
from providers.comfyui_events import Events
from providers.comfyui_workflow import PLACEHOLDERS, REQUIRED, SHIPPED, Workflow, load, random_seed
from providers.common import text_of
from providers.credentials import Credentials, secret_value
from providers.errors import (BadRequest, JobNotFound, MalformedResponse, ProviderError, Unavailable,
                              map_transport_errors)
from providers.http import HeaderAuth, HttpProvider, status_error
from providers.inprocess import JobListener
from providers.types import (Capability, GenerationParams, InputImage, JobSpec, JobState,
                             JobStatus, ResultImage, Submitted)

SIDE_CALL_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
MODELS_CACHE_SECONDS = 60.0
MAX_SIDE = 4096
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
OOM_WORDS = ("out of memory", "OutOfMemory")


def error_from(response: httpx.Response) -> ProviderError | None:
    """ComfyUI's refusals: a 400 with {error: {type, message, details}, node_errors}."""
    status = response.status_code
    if status < 400:
        return None
    if status == 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        return BadRequest(f"HTTP 400: {refusal_text(body)}")
    return status_error(status, response.headers)


def refusal_text(body: Any) -> str:
    """validate_prompt's answer as one line: the error, then each node's errors."""
    if not isinstance(body, Mapping):
        return "refused"
    error = body.get("error")
    parts = []
    if isinstance(error, Mapping):
        parts.append(text_of(error.get("message")))
    elif error:
        parts.append(text_of(error))
    for node_id, node in (body.get("node_errors") or {}).items():
        if not isinstance(node, Mapping):
            continue
        for item in node.get("errors") or []:
            if isinstance(item, Mapping):
                parts.append(f"node {node_id} ({text_of(node.get('class_type'))}): "
                             f"{text_of(item.get('message'))}: {text_of(item.get('details'))}")
    return "; ".join(p for p in parts if p)[:500] or "refused"


def queue_places(body: Mapping[str, Any]) -> tuple[set[str], dict[str, int]]:
    """GET /queue → (running prompt ids, pending prompt id → place 1, 2, ...).
    Items are [number, prompt_id, prompt, extra_data, outputs]; the lowest
    number runs first (a "front" prompt has a negative one)."""
    running = {text_of(item[1]) for item in body.get("queue_running") or [] if isinstance(item, list) and len(item) > 1}
    pending = sorted(
        (item for item in body.get("queue_pending") or [] if isinstance(item, list) and len(item) > 1),
        key=lambda item: item[0] if isinstance(item[0], int | float) else 0,
    )
    return running, {text_of(item[1]): place for place, item in enumerate(pending, 1)}


def history_outcome(entry: Mapping[str, Any]) -> tuple[list[dict[str, str]], JobState | None]:
    """A /history entry → (the images to fetch, or the failure). Saved
    images ("output") win over previews ("temp") when a workflow has both."""
    status = entry.get("status") if isinstance(entry.get("status"), Mapping) else {}
    if status.get("status_str") == "error":
        return [], failure(status.get("messages") or [])
    refs: list[dict[str, str]] = []
    for output in (entry.get("outputs") or {}).values():
        for image in (output or {}).get("images") or [] if isinstance(output, Mapping) else []:
            if isinstance(image, Mapping) and image.get("filename"):
                refs.append({k: text_of(image.get(k)) for k in ("filename", "subfolder", "type")})
    saved = [r for r in refs if r["type"] == "output"]
    return (saved or refs), None


def failure(messages: Sequence[Any]) -> JobState:
    """The failed state from a history entry's messages ([event, data] pairs)."""
    for message in messages:
        if not (isinstance(message, list) and len(message) == 2 and isinstance(message[1], Mapping)):
            continue
        event, data = message
        if event == "execution_interrupted":
            return JobState(status=JobStatus.FAILED, error_kind="cancelled_at_vendor",
                            error_detail=f"interrupted at node {text_of(data.get('node_id'))}")
        if event == "execution_error":
            detail = (f"node {text_of(data.get('node_id'))} ({text_of(data.get('node_type'))}): "
                      f"{text_of(data.get('exception_type'))}: {text_of(data.get('exception_message'))}")[:500]
            kind = "unavailable" if any(w in detail for w in OOM_WORDS) else "error"
            return JobState(status=JobStatus.FAILED, error_kind=kind, error_detail=detail)
    return JobState(status=JobStatus.FAILED, error_kind="error", error_detail="the prompt failed")


def seed_of(entry: Mapping[str, Any]) -> int | None:
    """The seed we sent, from the prompt's extra data kept in the history."""
    prompt = entry.get("prompt")
    extra = prompt[3] if isinstance(prompt, list) and len(prompt) > 3 else None
    seed = extra.get("drawbridge_seed") if isinstance(extra, Mapping) else None
    return seed if isinstance(seed, int) else None


class ComfyUI(HttpProvider):
    id = "comfyui"
    title = "ComfyUI"
    # What a workflow can be written for; an instance offers those it has files for.
    capabilities: ClassVar[frozenset[Capability]] = frozenset(REQUIRED)
    credentials: ClassVar[Credentials] = Credentials.one("comfyui_base_url")
    base_url_setting: ClassVar[str] = "comfyui_base_url"
    image_input = "bytes"
    typical_seconds = 20.0
    max_concurrent_jobs: ClassVar[int] = 50  # the server queues them; we track each by id
    batch_poll_size: ClassVar[int] = 20  # one GET /queue for them all
    # The websocket tells us about our prompts; a poll is the safety net.
    poll_policy: ClassVar[PollPolicy] = PollPolicy(callback_silence_seconds=30.0, min_interval_seconds=2.0)
    rerun_lost_jobs: ClassVar[bool] = True  # a server restart empties its queue
    news_to_submitter: ClassVar[bool] = True  # events go to the submitting process's socket
    timeout: ClassVar[httpx.Timeout] = httpx.Timeout(60.0, connect=5.0)

    def __init__(self, client: httpx.AsyncClient, *, workflows: Mapping[Capability, Workflow] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.workflows = dict(workflows) if workflows is not None else load("")
        self.events = Events(self.base_url, self._ws_headers(), self._states)
        self._models: list[str] = []
        self._models_at = -MODELS_CACHE_SECONDS

    @classmethod
    def from_settings(cls, settings: Any, client: httpx.AsyncClient) -> ComfyUI | None:
        base_url = text_of(getattr(settings, "comfyui_base_url", "")).rstrip("/")
        if not base_url:
            return None
        token = secret_value(getattr(settings, "comfyui_token", None))
        workflows = load(text_of(getattr(settings, "comfyui_workflows_dir", "")))
        return cls(client, secrets={"comfyui_token": token} if token else {}, base_url=base_url,
                   workflows=workflows)

    @classmethod
    def secret_setting(cls) -> str | None:
        return "comfyui_token"

    def make_auth(self, secrets: Mapping[str, str]) -> httpx.Auth | None:
        token = secrets.get("comfyui_token")
        return HeaderAuth({"Authorization": f"Bearer {token}"}) if token else None

    def _ws_headers(self) -> dict[str, str]:
        token = self._secrets.get("comfyui_token")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def error_for_status(self, response: httpx.Response, endpoint: str) -> ProviderError | None:
        return error_from(response)

    def available_capabilities(self, has_public_url: bool) -> frozenset[Capability]:
        return frozenset(self.workflows)

    def details(self) -> str:
        own = sorted({Path(w.source).name for w in self.workflows.values() if not w.source.startswith(SHIPPED)})
        return f"own workflows: {', '.join(own)}; shipped for the rest" if own else "shipped workflows"

    # ---- the push channel ----------------------------------------------------

    def listen(self, listener: JobListener) -> None:
        self.events.listener = listener

    def on_push_lost(self, poll_now: Callable[[], Awaitable[None]]) -> None:
        self.events.on_lost = poll_now

    def pushes_states(self, job_id: str | None) -> bool:
        return job_id is not None and self.events.follows(job_id)

    async def aclose(self) -> None:
        await self.events.aclose()

    # ---- jobs ----------------------------------------------------------------

    def job_id_for(self, spec: JobSpec) -> str | None:
        return spec.business_id

    async def submit(self, spec: JobSpec) -> Submitted:
        workflow = self.workflows.get(spec.capability)
        if workflow is None:
            raise BadRequest(f"comfyui has no {spec.capability.value} workflow")
        values = await self._values(spec, workflow)
        graph = workflow.fill(values)
        await self.events.connect()  # before the prompt, so none of its events is missed
        seed = values.get("seed")
        body = {"prompt": graph, "client_id": self.events.client_id, "prompt_id": spec.business_id,
                "extra_data": {"drawbridge_seed": seed} if isinstance(seed, int) else {}}
        # Followed before it is sent: its first events may come before the answer.
        self.events.follow(spec.business_id)
        try:
            prompt_id = await self.call("/prompt", lambda answer: text_of(answer.get("prompt_id")), payload=body)
            if not prompt_id:
                raise MalformedResponse("no prompt_id in the answer")
        except BaseException:
            self.events.unfollow(spec.business_id)
            raise
        if prompt_id != spec.business_id:  # an older ComfyUI chose its own id
            self.events.unfollow(spec.business_id)
            self.events.follow(prompt_id)
            self.events.queue_moved()
        return Submitted(job_id=prompt_id, eta_seconds=self.typical_seconds)

    async def _values(self, spec: JobSpec, workflow: Workflow) -> dict[str, Any]:
        params = spec.params
        values: dict[str, Any] = {
            "prompt": params.prompt, "negative": params.negative_prompt or None,
            "seed": params.seed if params.seed is not None else random_seed(),
            "steps": params.steps, "cfg": params.cfg, "strength": params.strength,
            "batch": params.n,
        }
        if "checkpoint" in workflow.names:
            values["checkpoint"] = await self._checkpoint(params, workflow)
        if "width" in workflow.names or "height" in workflow.names:
            values["width"], values["height"] = self._size(spec, workflow)
        images = spec.images
        if len(images) < workflow.images:
            raise BadRequest(f"the {spec.capability.value} workflow takes {workflow.images} image(s)")
        for index, name in enumerate(n for n in PLACEHOLDERS if n.startswith("image") and n in workflow.names):
            values[name] = await self._upload(images[index], f"{spec.business_id}-{index}")
        return values

    def _size(self, spec: JobSpec, workflow: Workflow) -> tuple[int, int]:
        params = spec.params
        if spec.images and not (params.width and params.height):
            first = spec.images[0]
            scale = workflow.long_side() / max(first.width, first.height)
            width, height = (max(8, round(first.width * scale / 8) * 8), max(8, round(first.height * scale / 8) * 8))
        else:
            width, height = params.size_for(workflow.long_side(), 8)
        if max(width, height) > MAX_SIDE:
            raise BadRequest(f"{width}x{height} is larger than {MAX_SIDE} px")
        return width, height

    async def _checkpoint(self, params: GenerationParams, workflow: Workflow) -> str:
        installed = await self.models()
        if params.model:
            if installed and params.model not in installed:
                raise BadRequest(f"no checkpoint {params.model!r} on this ComfyUI")
            return params.model
        default = workflow.default("checkpoint")
        if default:
            return str(default)
        if not installed:
            raise Unavailable("this ComfyUI has no checkpoint installed")
        return installed[0]

    async def _upload(self, image: InputImage, stem: str) -> str:
        """The photo into the server's input folder, under a name of ours
        (overwritten by a resubmit); the name LoadImage takes."""
        name = f"drawbridge-{stem}.{EXTENSIONS.get(image.mime, 'png')}"

        def read(answer: dict[str, Any]) -> str:
            stored, subfolder = text_of(answer.get("name")), text_of(answer.get("subfolder"))
            if not stored:
                raise MalformedResponse("upload answered without a name")
            return f"{subfolder}/{stored}" if subfolder else stored

        return await self.call("/upload/image", read, files={"image": (name, image.data, image.mime)},
                               data={"overwrite": "true", "type": "input"})

    async def models(self) -> list[str]:
        """The checkpoints the server has (CheckpointLoaderSimple's list)."""
        now = time.monotonic()
        if now - self._models_at > MODELS_CACHE_SECONDS:
            try:
                info = await self.call("/object_info/CheckpointLoaderSimple", lambda body: body, method="GET",
                                       timeout=SIDE_CALL_TIMEOUT)
            except ProviderError:
                return self._models
            try:
                names = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
            except (KeyError, IndexError, TypeError):
                names = []
            self._models = [text_of(n) for n in names if text_of(n)] if isinstance(names, list) else []
            self._models_at = now
        return self._models

    async def poll(self, job_id: str) -> JobState:
        answer = (await self._states([job_id]))[job_id]
        if isinstance(answer, ProviderError):
            raise answer
        return answer

    async def poll_many(self, job_ids: Sequence[str]) -> Mapping[str, JobState | ProviderError]:
        try:
            return dict(await self._states(list(job_ids)))
        except ProviderError as exc:  # the queue itself could not be read
            return {job_id: exc for job_id in job_ids}

    async def _states(self, job_ids: list[str]) -> dict[str, JobState | ProviderError]:
        """One GET /queue for all; the history only for those not in it
        (one lost prompt is its own answer, not everyone's)."""
        running, places = await self._queue()
        states: dict[str, JobState | ProviderError] = {}
        for job_id in job_ids:
            if job_id in running:
                states[job_id] = self.events.running_state(job_id)
            elif job_id in places:
                states[job_id] = JobState(status=JobStatus.QUEUED, queue_position=places[job_id])
            else:
                try:
                    states[job_id] = await self._finished(job_id)
                except ProviderError as exc:
                    states[job_id] = exc
        return states

    async def _queue(self) -> tuple[set[str], dict[str, int]]:
        return await self.call("/queue", queue_places, method="GET", timeout=SIDE_CALL_TIMEOUT)

    async def _finished(self, job_id: str) -> JobState:
        """Not in the queue (asked first): in the history, or lost (ComfyUI
        moves a prompt from one to the other in one step)."""
        entry = await self.call("/history", lambda body: body.get(job_id), method="GET",
                                path=f"/history/{quote(job_id, safe='')}", timeout=SIDE_CALL_TIMEOUT)
        if not isinstance(entry, Mapping):
            raise JobNotFound("the ComfyUI knows no such prompt (it restarted?)")
        refs, failed = history_outcome(entry)
        if failed is not None:
            return failed
        if not refs:
            raise MalformedResponse("the prompt finished without images (no Save Image node?)")
        seed = seed_of(entry)
        images = await asyncio.gather(*(self._view(ref) for ref in refs))
        return JobState(status=JobStatus.SUCCEEDED, progress=1.0,
                        images=[ResultImage(data=data, seed=seed) for data in images])

    async def _view(self, ref: Mapping[str, str]) -> bytes:
        url = f"{self.base_url}/view"
        try:
            with map_transport_errors():
                response = await self.client.get(url, params=dict(ref), timeout=self.call_timeout,
                                                 auth=self.auth or httpx.USE_CLIENT_DEFAULT)
            error = self.error_for_status(response, "/view")
            if error is not None:
                raise error
        except ProviderError as exc:
            raise self._logged("/view", exc) from None
        return response.content

    async def cancel(self, job_id: str) -> bool:
        """Out of the queue while it waits; interrupted while it runs (by
        its id, so a server that has moved on to someone else's prompt
        does not stop theirs)."""
        self.events.unfollow(job_id)  # cancelled here already: no more reports of it
        running, places = await self._queue()
        if job_id in places:
            await self.call("/queue", lambda body: None, payload={"delete": [job_id]}, expect_body=False,
                            timeout=SIDE_CALL_TIMEOUT)
            return True
        if job_id in running:
            await self.call("/interrupt", lambda body: None, payload={"prompt_id": job_id}, expect_body=False,
                            timeout=SIDE_CALL_TIMEOUT)
            return True
        return False

    # ---- check -----------------------------------------------------------------

    async def probe(self) -> str:
        try:
            stats = await self.call("/system_stats", lambda body: body, method="GET", timeout=SIDE_CALL_TIMEOUT)
        except ProviderError as exc:
            return f"unreachable ({exc.kind}: {exc.vendor_message[:80]})"
        system = stats.get("system") if isinstance(stats.get("system"), Mapping) else {}
        devices = [text_of(d.get("name")) for d in stats.get("devices") or [] if isinstance(d, Mapping)]
        version = text_of(system.get("comfyui_version")) or "?"
        return f"reachable (ComfyUI {version}{', ' + devices[0] if devices else ''})"

    async def problems(self) -> list[str]:
        """What the server would refuse in the workflows (check): nodes it
        lacks, missing inputs, models it does not have."""
        try:
            info = await self.call("/object_info", lambda body: body, method="GET", timeout=SIDE_CALL_TIMEOUT)
        except ProviderError:
            return []  # unreachable: the probe says so
        checkpoints = await self.models()
        seen: set[int] = set()
        problems: list[str] = []
        for workflow in self.workflows.values():
            if id(workflow) not in seen:
                seen.add(id(workflow))
                problems.extend(workflow.problems_on(info, checkpoints))
        return problems

