"""mjproxy: a midjourney-proxy (novicezk/midjourney-proxy, trueai-org's
rewrite, or a relay that resells one) in front of the operator's
Midjourney accounts. The protocol itself is providers.midjourney.

    imagine   POST /mj/submit/imagine   {prompt, base64Array?, notifyHook?}
    U/V/🔄    POST /mj/submit/action    {taskId, customId}    where the task has buttons (trueai)
              POST /mj/submit/change    {taskId, action, index}  where it has none (novicezk)
    text      POST /mj/submit/modal     {taskId, prompt}      for a task left in MODAL
    describe  POST /mj/submit/describe  {base64}
    blend     POST /mj/submit/blend     {base64Array (2-5), dimensions}
    face swap POST /mj/insight-face/swap {sourceBase64, targetBase64}   (trueai only)
    query     GET  /mj/task/{id}/fetch, POST /mj/task/list-by-condition {ids}

The proxy POSTs the whole task to ``notifyHook`` on every change; polling
is the safety net (the proxy is the operator's own: queries cost nothing,
but there is no need to ask while it reports).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from providers.base import PollPolicy
from providers.common import data_uri, input_image, text_of
from providers.credentials import Credentials, secret_value
from providers.errors import BadRequest, JobNotFound, MalformedResponse, NotForThisJob, ProviderError
from providers.http import HeaderAuth, HttpProvider, status_error
from providers.midjourney import (MIDJOURNEY_PROXY, accepted_task_id, body_code,
                                  checked_task, error_for_code, find_button, mj_prompt,
                                  parse_submit_answer, task_data, task_state, waits_for_text)
from providers.types import (Capability, InputImage, JobSpec, JobState, JobStatus, SourceResult,
                             Submitted)

# Grid buttons by our capability, and the /change action that does the same.
GRID_VERBS = {Capability.UPSCALE: "upsample", Capability.VARIATION: "variation"}
CHANGE_ACTIONS = {Capability.UPSCALE: "UPSCALE", Capability.VARIATION: "VARIATION"}
# A single image's Vary, strongest first (Midjourney's Vary (Strong)).
SINGLE_VARY_VERBS = ("high_variation", "variation", "low_variation")
BATCH_LIMIT = 50  # ids per list-by-condition; none is documented
BLEND_RANGE = (2, 5)  # [public] 2-5 images


def image_uri(image: InputImage) -> str:
    return data_uri(image.data, image.mime)


def blend_dimensions(params: Any) -> str:
    w, h = (int(p) for p in params.aspect_ratio.split(":"))
    return "SQUARE" if w == h else "LANDSCAPE" if w > h else "PORTRAIT"


def action_body(source: SourceResult, capability: Capability, custom_id: str | None) -> tuple[str, dict[str, Any]]:
    """(endpoint, body) for U<n>/V<n> (or a follow-up button) on an earlier
    result of this proxy: its own button where it gave buttons, else /change."""
    data = source.vendor_data
    task_id = text_of(data.get("task_id")) or source.job_id
    if custom_id:  # a button the proxy offered, pressed as it is (signed by us)
        if custom_id not in {b.get("customId") for b in data.get("buttons") or []}:
            raise BadRequest("that button is not on the source result")
        return "/mj/submit/action", {"taskId": task_id, "customId": custom_id}
    grid = bool(data.get("grid"))
    if not 0 <= source.index <= 3 or (not grid and source.index != 0):
        raise BadRequest(f"image {source.index + 1} is not in the source result")
    number = source.index + 1
    buttons = data.get("buttons") or []
    if buttons:
        verbs = (GRID_VERBS[capability],) if grid or capability is Capability.UPSCALE else SINGLE_VARY_VERBS
        found = find_button(buttons, verbs, number)
        if found is None:
            raise NotForThisJob(f"the source result has no button for {capability} {number}")
        return "/mj/submit/action", {"taskId": task_id, "customId": found}
    if not grid:
        raise NotForThisJob("this proxy offers no actions on a single image")
    return "/mj/submit/change", {"taskId": task_id, "action": CHANGE_ACTIONS[capability], "index": number}


def single_without_buttons(source: SourceResult) -> bool:
    data = source.vendor_data
    return not data.get("grid") and not data.get("buttons") and not data.get("custom_id")


def reroll_body(source: SourceResult) -> tuple[str, dict[str, Any]]:
    """🔄 on a grid of this proxy: its reroll button, or /change REROLL."""
    task_id = text_of(source.vendor_data.get("task_id")) or source.job_id
    buttons = source.vendor_data.get("buttons") or []
    if buttons:
        found = find_button(buttons, ("reroll",), 0)
        if found is None:
            raise NotForThisJob("the source result has no reroll button")
        return "/mj/submit/action", {"taskId": task_id, "customId": found}
    return "/mj/submit/change", {"taskId": task_id, "action": "REROLL", "index": 1}


def build_request(spec: JobSpec) -> tuple[str, dict[str, Any]]:
    """(endpoint, body) for a spec, notifyHook included; BadRequest before any HTTP."""
    endpoint, body = _request(spec)
    if spec.callback_url:
        body["notifyHook"] = spec.callback_url
    return endpoint, body


def _request(spec: JobSpec) -> tuple[str, dict[str, Any]]:
    params = spec.params
    match spec.capability:
        case Capability.VARIATION if spec.source is not None and single_without_buttons(spec.source) and spec.images:
            # novicezk offers nothing on an upscaled image: vary it as an image prompt.
            return "/mj/submit/imagine", {"prompt": mj_prompt(params), "base64Array": [image_uri(input_image(spec, 0))]}
        case Capability.UPSCALE | Capability.VARIATION if spec.source is not None:
            return action_body(spec.source, spec.capability, spec.source.vendor_data.get("custom_id"))
        case Capability.TXT2IMG if spec.source is not None and spec.source.vendor_data.get("grid"):
            return reroll_body(spec.source)
        case Capability.TXT2IMG:
            return "/mj/submit/imagine", {"prompt": mj_prompt(params)}
        case Capability.IMG2IMG:
            if not spec.images:
                raise BadRequest("an image prompt needs the image")
            return "/mj/submit/imagine", {"prompt": mj_prompt(params), "base64Array": [image_uri(i) for i in spec.images]}
        case Capability.DESCRIBE:
            return "/mj/submit/describe", {"base64": image_uri(input_image(spec, 0))}
        case Capability.BLEND:
            low, high = BLEND_RANGE
            if not low <= len(spec.images) <= high:
                raise BadRequest(f"blend takes {low}-{high} images, not {len(spec.images)}")
            return "/mj/submit/blend", {"base64Array": [image_uri(i) for i in spec.images],
                                        "dimensions": blend_dimensions(params)}
        case Capability.FACESWAP:
            face, target = input_image(spec, 0), input_image(spec, 1)
            return "/mj/insight-face/swap", {"sourceBase64": image_uri(face), "targetBase64": image_uri(target)}
    raise BadRequest(f"mjproxy cannot do {spec.capability}")


def read_task(task: Any) -> JobState:
    checked = checked_task(task)
    return task_state(checked, task_data(checked, MIDJOURNEY_PROXY), MIDJOURNEY_PROXY)


def read_tasks(body: Any) -> dict[str, JobState | ProviderError]:
    if not isinstance(body, list):
        raise MalformedResponse("list-by-condition did not answer a list")
    answers: dict[str, JobState | ProviderError] = {}
    for task in body:
        try:
            state = read_task(task)
        except ProviderError:
            continue
        answers[text_of(task.get("id"))] = state
    return answers


class MjProxy(HttpProvider):
    id = "mjproxy"
    title = "Midjourney (midjourney-proxy)"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.TXT2IMG, Capability.IMG2IMG, Capability.UPSCALE, Capability.VARIATION,
        Capability.DESCRIBE, Capability.BLEND, Capability.FACESWAP,
    })
    credentials: ClassVar[Credentials] = Credentials.one("mj_proxy_base_url")
    base_url_setting: ClassVar[str] = "mj_proxy_base_url"
    image_input = "data_uri"
    supports_callbacks = True
    typical_seconds = 50.0
    batch_poll_size = BATCH_LIMIT
    max_input_bytes = 8 * 1024 * 1024  # base64 in JSON, then a Discord upload
    # Callbacks on every change; without a word for a minute, ask.
    poll_policy: ClassVar[PollPolicy] = PollPolicy(callback_silence_seconds=60.0, min_interval_seconds=2.0)

    def __init__(self, client: httpx.AsyncClient, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.has_face_swap = True  # until the proxy says it has none (novicezk)

    @classmethod
    def from_settings(cls, settings: Any, client: httpx.AsyncClient) -> MjProxy | None:
        """Enabled by its base URL; the secret is optional (a proxy may have none)."""
        base_url = text_of(getattr(settings, "mj_proxy_base_url", "")).rstrip("/")
        if not base_url:
            return None
        secret = secret_value(getattr(settings, "mj_proxy_api_secret", None))
        return cls(client, secrets={"mj_proxy_api_secret": secret} if secret else {}, base_url=base_url)

    @classmethod
    def secret_setting(cls) -> str | None:
        return "mj_proxy_api_secret"

    def make_auth(self, secrets: Mapping[str, str]) -> httpx.Auth | None:
        secret = secrets.get("mj_proxy_api_secret")
        return HeaderAuth({"mj-api-secret": secret}) if secret else None

    def available_capabilities(self, has_public_url: bool) -> frozenset[Capability]:
        if self.has_face_swap:
            return self.capabilities
        return self.capabilities - {Capability.FACESWAP}

    def error_for_status(self, response: httpx.Response, endpoint: str) -> ProviderError | None:
        status = response.status_code
        if endpoint == "fetch" and (status == 204 or response.content.strip() in (b"", b"null")):
            return JobNotFound("the proxy does not know this task")
        if status < 400:
            return None
        try:  # trueai answers some refusals (code 3) with HTTP 404 and the usual body
            return error_for_code(body_code(response.json()), text_of(response.json().get("description")))
        except (ValueError, AttributeError, ProviderError):
            pass
        if endpoint == "cancel" and status in (400, 404):
            return BadRequest(f"HTTP {status}: this proxy does not cancel tasks")  # logged quietly
        if endpoint == "/mj/insight-face/swap" and status == 404:
            self.has_face_swap = False  # novicezk has no such route: stop offering it
            return BadRequest("this proxy has no face swap")
        return status_error(status, response.headers)

    async def submit(self, spec: JobSpec) -> Submitted:
        endpoint, body = build_request(spec)
        answer = await self.call(endpoint, parse_submit_answer, payload=body)
        task_id = accepted_task_id(answer)
        if waits_for_text(answer):  # Custom Zoom, remix: the user's words come first
            modal = JobState(status=JobStatus.RUNNING, vendor_data={"task_id": task_id, "modal": True})
            return Submitted(job_id=task_id, state=modal)
        return Submitted(job_id=task_id, eta_seconds=self.typical_seconds)

    async def answer_modal(self, job_id: str, text: str) -> None:
        """The text a task left in MODAL waits for (remix, Custom Zoom)."""
        await self.call(
            "/mj/submit/modal", lambda b: accepted_task_id(parse_submit_answer(b)),
            payload={"taskId": job_id, "prompt": text},
        )

    async def poll(self, job_id: str) -> JobState:
        return await self.call("fetch", read_task, method="GET", path=f"/mj/task/{job_id}/fetch")

    async def poll_many(self, job_ids: Sequence[str]) -> Mapping[str, JobState | ProviderError]:
        answers = await self.call(
            "/mj/task/list-by-condition", read_tasks, payload={"ids": list(job_ids)}, allow_list=True
        )
        return {job_id: answers.get(job_id) or JobNotFound("not in the proxy's answer") for job_id in job_ids}

    async def cancel(self, job_id: str) -> bool:
        """trueai has POST /mj/task/{id}/cancel; novicezk has none (404)."""
        try:  # trueai answers an empty 200; novicezk 404, a demo key 400
            await self.call("cancel", lambda body: None, path=f"/mj/task/{job_id}/cancel", payload={},
                            expect_body=False)
        except ProviderError:
            return False
        return True

    def parse_callback(self, payload: Mapping[str, Any], job_id: str) -> JobState:
        task = checked_task(payload)
        if text_of(task.get("id")) != job_id:
            raise JobNotFound("the callback names another task")
        return read_task(task)
