"""Submitted/running → ask the vendor how the job is doing, on the vendor's
poll policy (see timing.next_poll_delay). Due tasks of one vendor are asked
about together where the vendor has a batch query (aihuihua: 20 at once).
Callbacks, where a vendor sends them, land in the same Outcomes and make
most polls unnecessary."""

from __future__ import annotations

import logging
import time

from bot.engine.loop import StageLoop
from bot.engine.outcomes import Outcomes
from bot.engine.ratelimit import VendorGate
from bot.engine.timing import retry_delay
from providers.base import Provider
from providers.errors import JobNotFound, ProviderError
from providers.registry import Registry
from providers.types import JobState
from storage.models import AT_VENDOR, Task
from storage.tasks import TaskRepository

log = logging.getLogger(__name__)

# Consecutive transient poll errors tolerated before the task fails (each
# retry waits longer; the task deadline still applies).
MAX_POLL_ERRORS = 12


class Poller(StageLoop):
    name = "poller"
    statuses = AT_VENDOR

    def __init__(self, tasks: TaskRepository, registry: Registry, outcomes: Outcomes, gate: VendorGate) -> None:
        super().__init__(tasks)
        self.registry = registry
        self.outcomes = outcomes
        self.gate = gate

    async def on_unexpected_error(self, task: Task, attempts: int) -> None:
        await self.outcomes.fail(task, "error", "poller kept crashing", lease_token=task.lease_token, expect=AT_VENDOR)

    def batches(self, leased: list[Task]) -> list[list[Task]]:
        """Due tasks grouped per vendor, as many per job as its batch query takes."""
        by_vendor: dict[str, list[Task]] = {}
        for task in leased:
            by_vendor.setdefault(task.provider or "", []).append(task)
        batches: list[list[Task]] = []
        for vendor_id, tasks in by_vendor.items():
            provider = self.registry.get(vendor_id)
            size = max(1, provider.batch_poll_size if provider else 1)
            batches += [tasks[start:start + size] for start in range(0, len(tasks), size)]
        return batches

    async def handle(self, task: Task) -> None:
        await self.handle_batch([task])

    async def handle_batch(self, tasks: list[Task]) -> None:
        provider = self.registry.get(tasks[0].provider or "")
        if provider is not None and 1 < provider.batch_poll_size > len(tasks):
            # The same call can answer tasks that would be due soon: take them
            # along rather than ask again a moment later.
            tasks = tasks + await self.tasks.lease_soon(
                self.statuses, provider.id, provider.poll_policy.min_interval_seconds,
                provider.batch_poll_size - len(tasks), self.lease_seconds,
            )
        due: dict[str, Task] = {}
        for task in tasks:
            if provider is None or task.provider_job_id is None:
                await self.outcomes.fail(task, "unavailable", "vendor no longer configured", lease_token=task.lease_token, expect=AT_VENDOR)
            elif time.time() >= task.deadline_at:
                await self.outcomes.fail(task, "deadline", lease_token=task.lease_token, expect=AT_VENDOR)
            else:
                due[task.provider_job_id] = task
        if not due or provider is None:
            return
        answers = await self._ask(provider, list(due))
        for job_id, task in due.items():
            answer = answers.get(job_id) or JobNotFound("missing from the vendor's answer")
            if isinstance(answer, ProviderError):
                await self._poll_failed(task, provider, answer)
            else:
                await self.outcomes.apply(task, provider, answer, lease_token=task.lease_token)

    async def _ask(self, provider: Provider, job_ids: list[str]) -> dict[str, JobState | ProviderError]:
        """One call for one job; the vendor's batch query for several."""
        async with self.gate.slot(provider):
            if len(job_ids) > 1:
                return dict(await provider.poll_many(job_ids))
            try:
                return {job_ids[0]: await provider.poll(job_ids[0])}
            except ProviderError as exc:
                return {job_ids[0]: exc}

    async def _poll_failed(self, task: Task, provider: Provider, exc: ProviderError) -> None:
        if isinstance(exc, JobNotFound) and (provider.jobs_in_process or provider.rerun_lost_jobs):
            await self._lost_in_restart(task, provider)
            return
        attempts = task.attempts + 1
        log.warning("task %s: poll %s failed: %s (%s)", task.id, provider.id, exc.kind, exc.vendor_message[:200])
        if exc.disables_vendor:
            # Out of today's quota (aichatapi until Beijing midnight): the job
            # may well be done by then; ask again once the vendor is back.
            self.registry.record_failure(provider.id, exc)
        next_run_at = time.time() + retry_delay(attempts, exc.retry_after)
        retry = exc.transient and attempts < MAX_POLL_ERRORS
        resting = exc.disables_vendor and exc.retry_after is not None
        if (retry or resting) and next_run_at < task.deadline_at:
            await self.tasks.reschedule(task.id, task.lease_token or "", next_run_at, attempts=attempts)
        else:
            await self.outcomes.fail(task, exc.kind, exc.vendor_message, lease_token=task.lease_token, expect=AT_VENDOR)

    async def _lost_in_restart(self, task: Task, provider: Provider) -> None:
        """The call was ours and died with the process that made it (the
        vendor may still have made, and billed, the image, but nobody can
        fetch it), or the vendor's own queue was lost. Run the task again,
        once; a second loss fails it."""
        if not await self.outcomes.run_again(task, provider, "its call was lost in a restart", lease_token=task.lease_token):
            await self.outcomes.fail(
                task, "interrupted", "the call was lost in a restart again",
                lease_token=task.lease_token, expect=AT_VENDOR,
            )
