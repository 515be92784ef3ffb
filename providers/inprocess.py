"""Jobs that are our own HTTP call: vendors that answer only when the image
is done (OpenAI's Images API, a local AUTOMATIC1111), often after a minute.

Holding the dispatcher until then would starve every other job, so the
call runs as a background asyncio task of this process:

    submit ── start(job_id, call) ─┬─ answered within ``answer_within``
                                   │     → the state, or the ProviderError
                                   │       raised (fallback works as usual)
                                   └─ still running → None: the engine
                                         records the job as submitted
    the call ends ── listener(job_id, state)   (the engine applies it at once)
    poll(job_id) ── state(job_id): running, finished, or JobNotFound

A job lives only as long as the process. After a restart its id is
unknown (JobNotFound), and the engine runs the task again, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from providers.errors import JobNotFound, ProviderError
from providers.types import JobState, JobStatus

log = logging.getLogger("providers")

# Applies a finished call to its task; True when it did (the state is then dropped).
JobListener = Callable[[str, JobState], Awaitable[bool]]

ANSWER_WITHIN_SECONDS = 2.0  # what fails at once (auth, 429, bad request) fails at submit
KEEP_SECONDS = 600.0  # a finished job nobody applied yet, for a poll that comes late
STOP_GRACE_SECONDS = 10.0  # at shutdown, calls this close to done may still finish


@dataclass
class _Job:
    task: asyncio.Task[JobState]
    started_at: float
    state: JobState | None = None
    finished_at: float = 0.0
    running: bool = False  # has its slot: the call is at the vendor (else it waits here)


def failed_state(error: ProviderError) -> JobState:
    return JobState(status=JobStatus.FAILED, error_kind=error.kind, error_detail=error.vendor_message)


class InProcessJobs:
    def __init__(self, concurrency: int, answer_within: float = ANSWER_WITHIN_SECONDS) -> None:
        # Calls beyond ``concurrency`` wait here, not at the vendor.
        self._slots = asyncio.Semaphore(concurrency)
        self.answer_within = answer_within
        self.listener: JobListener | None = None
        self._jobs: dict[str, _Job] = {}
        self._notifying: set[asyncio.Task[None]] = set()  # kept referenced until done
        self._closing = False

    def __len__(self) -> int:
        return sum(1 for job in self._jobs.values() if job.state is None)

    async def start(self, job_id: str, call: Callable[[], Awaitable[JobState]]) -> JobState | None:
        """Run ``call`` in the background as job ``job_id``. Returns its state
        if it ends within ``answer_within``; raises its ProviderError if it
        failed that fast; else None (it goes on; the listener hears the end)."""
        self._sweep()
        earlier = self._jobs.get(job_id)
        if earlier is not None and earlier.state is None:
            return None  # the same job again (a resubmit after a crash): it is running
        if earlier is not None:  # it ended unapplied: that answer, not a second (billed) call
            del self._jobs[job_id]
            return earlier.state
        job = _Job(asyncio.create_task(self._run(job_id, call), name=f"call-{job_id[:16]}"), time.monotonic())
        self._jobs[job_id] = job
        try:
            done, _ = await asyncio.wait({job.task}, timeout=self.answer_within)
        except asyncio.CancelledError:
            # The submit was abandoned, the call goes on: its end must still be told.
            job.task.add_done_callback(lambda finished: self._finished(job_id, finished))
            raise
        if not done:
            job.task.add_done_callback(lambda finished: self._finished(job_id, finished))
            return None
        del self._jobs[job_id]
        return job.task.result()  # raises the call's ProviderError

    def state(self, job_id: str) -> JobState:
        self._sweep()
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound("no such call in this process (it was lost in a restart)")
        if job.state is not None:
            return job.state
        return JobState(status=JobStatus.RUNNING)

    async def aclose(self, grace: float | None = None) -> None:
        """Shutdown: calls that end within ``grace`` are still applied (each
        lost call costs a rerun, and maybe a second bill); the rest are
        stopped, and their tasks run again at the next start."""
        grace = STOP_GRACE_SECONDS if grace is None else grace
        self._closing = True  # a call that gets its slot now does not start
        unfinished = [job.task for job in self._jobs.values() if not job.task.done()]
        for job in self._jobs.values():
            if not job.running:
                job.task.cancel()  # never reached the vendor: nothing to wait for
        running = [task for task in unfinished if not task.cancelled()]
        if running:
            await asyncio.wait(running, timeout=grace)
        for task in unfinished:
            task.cancel()
        for task in unfinished:
            with contextlib.suppress(BaseException):
                await task
        if self._notifying:
            await asyncio.wait(set(self._notifying), timeout=grace)

    async def _run(self, job_id: str, call: Callable[[], Awaitable[JobState]]) -> JobState:
        async with self._slots:
            job = self._jobs.get(job_id)
            if self._closing or job is None:  # shutting down, or cancelled while it waited
                raise asyncio.CancelledError
            job.running = True
            return await call()

    def cancel(self, job_id: str) -> bool:
        """Stop a call that has not ended: one waiting for its slot never
        reaches the vendor; a running one has its connection closed (the
        vendor may finish it anyway). True when there was one to stop."""
        job = self._jobs.pop(job_id, None)
        if job is None or job.state is not None:
            return False
        job.task.cancel()
        return True

    def running(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        return job is not None and job.running and job.state is None

    def waiting_position(self, job_id: str) -> int | None:
        """1 for the next call to get a slot, 2 after it, ...; None when the
        call is not waiting here (running, finished or unknown)."""
        waiting = sorted((job.started_at, key) for key, job in self._jobs.items() if not job.running and job.state is None)
        for position, (_, key) in enumerate(waiting, 1):
            if key == job_id:
                return position
        return None

    def _finished(self, job_id: str, finished: asyncio.Task[JobState]) -> None:
        if finished.cancelled():
            self._jobs.pop(job_id, None)
            return
        error = finished.exception()
        if isinstance(error, ProviderError):
            state = failed_state(error)
        elif error is not None:
            log.error("call %s crashed: %r", job_id[:16], error)
            state = JobState(status=JobStatus.FAILED, error_kind="error", error_detail=type(error).__name__)
        else:
            state = finished.result()
        job = self._jobs.get(job_id)
        if job is not None:
            job.state, job.finished_at = state, time.monotonic()
        if self.listener is not None:
            notify = asyncio.get_running_loop().create_task(self._notify(job_id, state))
            self._notifying.add(notify)
            notify.add_done_callback(self._notifying.discard)

    async def _notify(self, job_id: str, state: JobState) -> None:
        assert self.listener is not None
        try:
            applied = await self.listener(job_id, state)
        except Exception:  # the poller is the safety net
            log.exception("could not apply the end of call %s", job_id[:16])
            return
        if applied:  # its images are in the database now: do not keep them here too
            self._jobs.pop(job_id, None)

    def _sweep(self) -> None:
        cutoff = time.monotonic() - KEEP_SECONDS
        for job_id in [k for k, job in self._jobs.items() if job.state is not None and job.finished_at < cutoff]:
            del self._jobs[job_id]
