"""Queued → submitted: choose a vendor, hand it the job. Fallback to another
capable vendor happens here and only here; an accepted job is never re-run
elsewhere."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from collections.abc import Awaitable, Callable

from bot.engine.inputs import InputError
from bot.engine.loop import StageLoop
from bot.engine.outcomes import Outcomes
from bot.engine.progress import status_text
from bot.engine.ratelimit import VendorGate
from bot.engine.timing import first_poll_delay, retry_delay
from providers.base import Provider
from providers.errors import ProviderError
from providers.registry import Registry, RoutingError
from providers.types import Capability, GenerationParams, InputImage, JobSpec, SourceResult, Submitted
from storage.models import Task, TaskStatus
from storage.tasks import TaskRepository

log = logging.getLogger(__name__)

MAX_INPUT_ATTEMPTS = 5

# Builds the images a job needs (bytes + /media URL) from the task's inputs.
ResolveInputs = Callable[[Task, Provider], Awaitable[tuple[InputImage, ...]]]


class Dispatcher(StageLoop):
    name = "dispatcher"
    statuses = (TaskStatus.QUEUED,)

    def __init__(
        self,
        tasks: TaskRepository,
        registry: Registry,
        outcomes: Outcomes,
        gate: VendorGate,
        resolve_inputs: ResolveInputs,
        callback_url: Callable[[Task, Provider], str | None],
        wake_poller: Callable[[], None],
        on_vendor_disabled: Callable[[str, ProviderError, str], Awaitable[None]],
    ) -> None:
        super().__init__(tasks)
        self.registry = registry
        self.outcomes = outcomes
        self.gate = gate
        self.resolve_inputs = resolve_inputs
        self.callback_url = callback_url
        self.wake_poller = wake_poller
        self.on_vendor_disabled = on_vendor_disabled

    async def on_unexpected_error(self, task: Task, attempts: int) -> None:
        await self.outcomes.fail(task, "error", "dispatcher kept crashing", lease_token=task.lease_token)

    async def handle(self, task: Task) -> None:
        if time.time() >= task.deadline_at:
            await self.outcomes.fail(task, "deadline", lease_token=task.lease_token)
            return
        params = GenerationParams(**task.params)
        capability = Capability(task.kind)
        preferred = task.provider or (task.source or {}).get("provider")
        try:
            candidates = self.registry.candidates(
                capability, forced=params.provider, preferred=preferred, count=params.n,
                prompt_chars=len(params.prompt),
            )
        except RoutingError as exc:
            resting_until = self.registry.resting_until(capability) if exc.reason == "none_capable" else None
            if resting_until is not None and resting_until < task.deadline_at:
                # Capable vendors are only cooling down: wait for them.
                await self.tasks.reschedule(task.id, task.lease_token or "", resting_until)
                await self._show_retrying(task, capability)
                return
            # The limit is what the user's message needs; the rest is in the reason.
            detail = str(exc.limit) if exc.limit else str(exc)
            await self.outcomes.fail(task, f"route_{exc.reason}", detail, lease_token=task.lease_token)
            return

        last_error: ProviderError | None = None
        for provider in candidates:
            try:
                spec = await self._spec(task, provider, params, capability)
                submitted = await self._submit(task, provider, spec)
            except InputError as exc:
                if exc.transient and task.attempts + 1 < MAX_INPUT_ATTEMPTS:
                    await self.tasks.reschedule(task.id, task.lease_token or "", time.time() + retry_delay(task.attempts + 1), attempts=task.attempts + 1)
                else:
                    await self.outcomes.fail(task, "bad_input", exc.reason, lease_token=task.lease_token)
                return
            except ProviderError as exc:
                if exc.try_elsewhere:  # not a failure of the vendor: the next one may do it
                    last_error = exc
                    continue
                change = self.registry.record_failure(provider.id, exc)
                if change is not None:
                    await self.on_vendor_disabled(provider.id, exc, change)
                log.warning("task %s: submit to %s failed: %s (%s)", task.id, provider.id, exc.kind, exc.vendor_message[:200])
                last_error = exc
                if exc.transient or exc.disables_vendor:
                    continue  # try the next capable vendor
                await self.outcomes.fail(task, exc.kind, exc.vendor_message, lease_token=task.lease_token)
                return
            self.registry.record_success(provider.id)
            await self._accepted(task, provider, submitted)
            return

        assert last_error is not None
        attempts = task.attempts + 1
        next_run_at = time.time() + retry_delay(attempts, last_error.retry_after)
        if not last_error.transient or next_run_at >= task.deadline_at:
            await self.outcomes.fail(task, last_error.kind, last_error.vendor_message, lease_token=task.lease_token)
            return
        await self.tasks.reschedule(task.id, task.lease_token or "", next_run_at, attempts=attempts)
        await self._show_retrying(task, capability, candidates[0].title)

    async def _show_retrying(self, task: Task, capability: Capability, vendor_title: str = "") -> None:
        # Re-read: the status message may have been recorded after our lease.
        fresh = await self.tasks.get(task.id)
        if fresh is not None:
            await self.outcomes.reporter.show(
                fresh, status_text(fresh, vendor_title or capability.value, retrying=True), force=True
            )

    async def _spec(
        self, task: Task, provider: Provider, params: GenerationParams, capability: Capability
    ) -> JobSpec:
        source = SourceResult(**task.source) if task.source else None
        native = source is not None and source.provider == provider.id
        images = await self.resolve_inputs(task, provider)
        return JobSpec(
            capability=capability,
            params=params,
            images=images,
            source=source if native else None,
            business_id=task.business_id,
            callback_url=self.callback_url(task, provider),
        )

    async def _submit(self, task: Task, provider: Provider, spec: JobSpec) -> Submitted:
        # A job we may have sent just before a crash is looked up, not resent.
        if task.attempts > 0 and task.provider == provider.id:
            async with self.gate.slot(provider):
                job_id = await provider.find_submitted(spec)
            if job_id is not None:
                log.info("task %s: found job %s already at %s", task.id, job_id, provider.id)
                return Submitted(job_id=job_id)
        await self.tasks.update(task.id, provider=provider.id, attempts=task.attempts + 1)
        async with self.gate.slot(provider):
            return await provider.submit(spec)

    async def _accepted(self, task: Task, provider: Provider, submitted: Submitted) -> None:
        now = time.time()
        fresh = await self.tasks.transition(
            task.id,
            TaskStatus.QUEUED,
            TaskStatus.SUBMITTED,
            lease_token=task.lease_token,
            next_run_at=min(task.deadline_at, now + first_poll_delay(
                provider.typical_seconds, submitted.eta_seconds, provider.poll_policy,
                # With the job id: a push channel follows the job from now on.
                has_callback=self.outcomes.has_callback(replace(task, provider_job_id=submitted.job_id), provider),
            )),
            provider=provider.id,
            provider_job_id=submitted.job_id,
            submitted_at=now,
            attempts=0,
            polls=0,
        )
        if fresh is None:  # cancelled meanwhile: the vendor's result will be dropped
            await self.outcomes.stop_call(replace(task, provider=provider.id, provider_job_id=submitted.job_id))
            return
        log.info("task %s submitted to %s as %s", task.id, provider.id, submitted.job_id[:64])
        self.wake_poller()  # it may be asleep until later than this task's first poll
        if submitted.state is not None:
            # Finished at once (a synchronous vendor), or already waiting for
            # the user's text (a Midjourney modal): no need to wait for a poll.
            await self.outcomes.apply(fresh, provider, submitted.state, lease_token=None)
        else:
            # Not forced: right after a "Starting…" acknowledgement the
            # change is not worth a message edit of its own.
            await self.outcomes.reporter.show(fresh, status_text(fresh, provider.title))
