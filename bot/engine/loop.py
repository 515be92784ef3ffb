"""One scheduler loop per stage. It leases due rows through the
(status, next_run_at) index, runs each in its own short-lived asyncio task up
to a concurrency limit, and sleeps until the next row is due or it is woken.
There is no asyncio task per pending job: ten thousand waiting tasks cost one
index probe per wake-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod

from bot.engine.timing import retry_delay
from storage.models import Task, TaskStatus
from storage.tasks import TaskRepository

log = logging.getLogger(__name__)

# A handler that crashes this many times in a row gives the task up.
MAX_UNEXPECTED_ERRORS = 5


class StageLoop(ABC):
    name: str
    statuses: tuple[TaskStatus, ...]
    concurrency: int = 32
    lease_seconds: float = 150.0
    idle_seconds: float = 5.0  # rescan at least this often (e.g. for expired leases)

    def __init__(self, tasks: TaskRepository) -> None:
        self.tasks = tasks
        self._wake = asyncio.Event()
        # Each running job and how many tasks it holds (a batch holds several).
        self._inflight: dict[asyncio.Task[None], int] = {}
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Take no new work; ``run`` returns once the work in hand is done
        (a cancelled send could otherwise reach Telegram unrecorded)."""
        self._stopping = True
        self._wake.set()

    @abstractmethod
    async def handle(self, task: Task) -> None:
        """Do this stage's step for one leased task. The lease token is
        ``task.lease_token``; every write must compare-and-set on it."""

    @abstractmethod
    async def on_unexpected_error(self, task: Task, attempts: int) -> None:
        """Give up on a task whose handler keeps crashing (a bug, not a vendor)."""

    def batches(self, leased: list[Task]) -> list[list[Task]]:
        """How leased tasks are grouped into jobs: one task each, unless a
        stage can do several in one step (the poller's batch queries)."""
        return [[task] for task in leased]

    async def handle_batch(self, tasks: list[Task]) -> None:
        for task in tasks:
            await self.handle(task)

    async def run(self, drain_seconds: float = 10.0) -> None:
        try:
            while not self._stopping:
                # Cleared on every pass (not only when a slot is free): a
                # wake-up left set would make a full stage spin.
                self._wake.clear()
                delay = await self._tick()
                if delay is None:
                    await asyncio.sleep(0)  # every slot filled: more may be due
                elif delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=delay)
            if self._inflight:
                await asyncio.wait(set(self._inflight), timeout=drain_seconds)
        finally:
            for job in list(self._inflight):
                job.cancel()
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _tick(self) -> float | None:
        """Lease what is due and start it. Returns how long to sleep unless
        woken, or None to look again at once."""
        free = self.concurrency - sum(self._inflight.values())
        if free <= 0:
            return self.idle_seconds  # a finishing job wakes us
        try:
            leased, next_due = await self.tasks.take_due(self.statuses, free, self.lease_seconds)
        except Exception:
            log.exception("%s: could not lease due tasks", self.name)
            return 1.0
        for batch in self.batches(leased):
            job = asyncio.create_task(self._guarded(batch), name=f"{self.name}-{batch[0].id}")
            self._inflight[job] = len(batch)
            job.add_done_callback(self._job_done)
        if leased and len(leased) == free:
            return None
        if next_due is None:
            return self.idle_seconds
        return min(self.idle_seconds, max(0.0, next_due - time.time()))

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self._inflight.pop(job, None)
        # A slot is free, and the job may have moved its task's next run
        # earlier than this stage planned to wake: look again.
        self._wake.set()

    async def _guarded(self, batch: list[Task]) -> None:
        """Finish well inside the lease, so no second worker can take the rows
        while this one still works on them."""
        try:
            async with asyncio.timeout(self.lease_seconds - 15):
                await self.handle_batch(batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: task(s) %s failed unexpectedly", self.name, [t.id for t in batch])
            for task in batch:
                await self._after_crash(task)

    async def _after_crash(self, task: Task) -> None:
        attempts = task.attempts + 1
        if attempts >= MAX_UNEXPECTED_ERRORS:
            await self.on_unexpected_error(task, attempts)
            return
        with contextlib.suppress(Exception):
            await self.tasks.reschedule(
                task.id, task.lease_token or "", time.time() + retry_delay(attempts),
                attempts=attempts,
            )
