"""The interface every vendor adapter implements.

Capabilities and limits are plain class attributes (as in simonw/llm), so the
registry can route without instantiating anything vendor-specific.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import httpx

from providers.errors import BadRequest, JobNotFound, ProviderError
from providers.inprocess import JobListener
from providers.types import Capability, JobSpec, JobState, Submitted

# Every vendor call is bounded (VENDORS.md: connect 5 s, read 30 s).
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@dataclass(frozen=True)
class PollPolicy:
    """How often a vendor may be asked about a job.

    ``callback_silence_seconds``: with callbacks on, None keeps adaptive
    polling as a safety net; a number means "do not poll on a timer": a job
    is looked up only after that long without a word from the vendor
    (a submit or a callback), for vendors whose queries are billed or
    discouraged. ``min_interval_seconds``: never poll one job more often,
    callbacks or not."""

    callback_silence_seconds: float | None = None
    min_interval_seconds: float = 1.0


class Provider(ABC):
    # id and title may be per instance (PROVIDERS_FILE); the class's are the kind's.
    id: str
    title: str
    capabilities: ClassVar[frozenset[Capability]]
    # Capabilities that need a public URL (input images or callbacks the vendor
    # fetches from us); unavailable without PUBLIC_BASE_URL.
    needs_public_url: ClassVar[frozenset[Capability]] = frozenset()
    supports_callbacks: ClassVar[bool] = False
    typical_seconds: float = 20.0  # first poll lands near this; may be per instance (a model)
    max_images: ClassVar[int] = 4  # per request
    min_request_interval: float = 0.0  # seconds between calls (rate limit); may be per instance
    max_concurrent_jobs: ClassVar[int] = 20
    batch_poll_size: ClassVar[int] = 1  # jobs per query; >1 when poll_many batches
    poll_policy: ClassVar[PollPolicy] = PollPolicy()
    max_prompt_chars: int | None = None  # routing skips the vendor beyond this
    # Input images larger than this are re-encoded smaller before the vendor
    # sees them (aihuihua refuses URLs over 5 MB).
    max_input_bytes: ClassVar[int | None] = None
    is_sandbox: ClassVar[bool] = False
    image_input: ClassVar[Literal["url", "bytes", "data_uri", "none"]] = "url"
    # The job is our own call running in this process (providers.inprocess):
    # it ends by telling the listener, and a restart loses it.
    jobs_in_process: ClassVar[bool] = False
    # A job the vendor no longer knows (JobNotFound) was lost with the
    # vendor's own queue (a restarted ComfyUI): run the task again, once.
    rerun_lost_jobs: ClassVar[bool] = False
    # Its jobs' news went to the process that submitted them (our own
    # calls, a websocket): after a restart their tasks are looked at at once.
    news_to_submitter: ClassVar[bool] = False
    price: int | None = None  # credits per job, from PROVIDERS_FILE

    def __init__(self, client: httpx.AsyncClient, base_url: str = "") -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Any, client: httpx.AsyncClient) -> Provider | None:
        """The configured adapter, or None when its credentials are not set.
        ``settings`` is bot.config.Settings, duck-typed so that providers/
        does not import the bot."""

    def details(self) -> str:
        """What `check` and /providers add to the vendor's line (its model)."""
        return ""

    def available_capabilities(self, has_public_url: bool) -> frozenset[Capability]:
        if has_public_url:
            return self.capabilities
        return self.capabilities - self.needs_public_url

    @abstractmethod
    async def submit(self, spec: JobSpec) -> Submitted:
        """Start a job. Raises a ProviderError."""

    @abstractmethod
    async def poll(self, job_id: str) -> JobState:
        """The job's current state. Raises a ProviderError (JobNotFound for an
        unknown id)."""

    async def poll_many(self, job_ids: Sequence[str]) -> Mapping[str, JobState | ProviderError]:
        """Several jobs at once; vendors with a batch query override this."""
        results: dict[str, JobState | ProviderError] = {}
        for job_id in job_ids:
            try:
                results[job_id] = await self.poll(job_id)
            except ProviderError as exc:
                results[job_id] = exc
        return results

    async def find_submitted(self, spec: JobSpec) -> str | None:
        """The job id of a job submitted earlier under ``spec.business_id``,
        if the vendor knows it; only for vendors that accept our ids."""
        job_id = self.job_id_for(spec)
        if job_id is None:
            return None
        try:
            await self.poll(job_id)
        except JobNotFound:
            return None
        return job_id

    def job_id_for(self, spec: JobSpec) -> str | None:
        """The job id the vendor will use for ``spec``, for vendors that take
        our own id: a dispatcher restarted after a crash can then find a job
        it submitted just before instead of submitting it twice."""
        return None

    def parse_callback(self, payload: Mapping[str, Any], job_id: str) -> JobState:
        """The state of job ``job_id`` (the job of the task whose callback
        token the vendor used) from a callback body. JobNotFound when the body
        names another job; MalformedResponse when it cannot be read."""
        raise ProviderError(f"{self.id} has no callbacks")

    callback_answer: ClassVar[dict[str, Any]] = {"ok": True}

    async def models(self) -> list[str]:
        """The models a user can name with --model, where the vendor lists
        them (a local engine's checkpoints); [] where it does not."""
        return []

    async def cancel(self, job_id: str) -> bool:
        """Stop the job at the vendor, where the vendor can (the task is
        cancelled locally first either way); True when it was stopped."""
        return False

    async def answer_modal(self, job_id: str, text: str) -> None:
        """Give a job that waits for the user's text (JobState.vendor_data
        "modal": midjourney-proxy's MODAL) that text."""
        raise BadRequest(f"{self.id} asks for no text")

    def listen(self, listener: JobListener) -> None:
        """Where a vendor that reports its jobs itself (calls running in this
        process, a websocket) tells their states."""

    def on_push_lost(self, poll_now: Callable[[], Awaitable[None]]) -> None:
        """Where a vendor whose push channel broke asks for its jobs to be
        polled now (their next poll was set far off while it pushed)."""

    def pushes_states(self, job_id: str | None) -> bool:
        """Whether the vendor tells us about this job itself right now (a
        live websocket that follows it): polling is then only a safety net."""
        return False

    async def problems(self) -> list[str]:
        """What the live vendor would refuse in our configuration (check)."""
        return []

    async def aclose(self) -> None:
        """Stop what the adapter runs in the background (shutdown)."""

    async def probe(self) -> str:
        """Reachability for `check` and /providers, without spending a paid
        call: any HTTP answer from the base URL means the vendor is reachable."""
        if not self.base_url:
            return "local"
        try:
            response = await self.client.get(self.base_url, timeout=httpx.Timeout(5.0))
        except httpx.HTTPError as exc:
            return f"unreachable ({type(exc).__name__})"
        return f"reachable (HTTP {response.status_code})"
