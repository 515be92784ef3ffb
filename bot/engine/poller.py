"""Submitted/running → ask the vendor how the job is doing, on an adaptive
schedule (see timing.next_poll_delay). Callbacks, where a vendor sends them,
land in the same Outcomes and make most polls unnecessary."""

from __future__ import annotations

import contextlib
import logging
import time

from bot.engine.loop import StageLoop
from bot.engine.outcomes import Outcomes
from bot.engine.ratelimit import VendorGate
from bot.engine.timing import retry_delay
from providers.errors import ProviderError
from providers.registry import Registry
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

    async def handle(self, task: Task) -> None:
        provider = self.registry.get(task.provider or "")
        if provider is None or task.provider_job_id is None:
            await self.outcomes.fail(task, "unavailable", "vendor no longer configured", lease_token=task.lease_token, expect=AT_VENDOR)
            return
        if time.time() >= task.deadline_at:
            with contextlib.suppress(ProviderError):
                await provider.cancel(task.provider_job_id)
            await self.outcomes.fail(task, "deadline", lease_token=task.lease_token, expect=AT_VENDOR)
            return
        try:
            async with self.gate.slot(provider):
                state = await provider.poll(task.provider_job_id)
        except ProviderError as exc:
            attempts = task.attempts + 1
            log.warning("task %s: poll %s failed: %s (%s)", task.id, provider.id, exc.kind, exc.vendor_message[:200])
            next_run_at = time.time() + retry_delay(attempts, exc.retry_after)
            if exc.transient and attempts < MAX_POLL_ERRORS and next_run_at < task.deadline_at:
                await self.tasks.reschedule(task.id, task.lease_token or "", next_run_at, attempts=attempts)
            else:
                await self.outcomes.fail(task, exc.kind, exc.vendor_message, lease_token=task.lease_token, expect=AT_VENDOR)
            return
        await self.outcomes.apply(task, provider, state, lease_token=task.lease_token)
