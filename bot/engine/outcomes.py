"""What a vendor's answer does to a task. Shared by the poller and by vendor
callbacks, which may race: every write is a compare-and-set, so whichever
arrives second changes nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bot.engine.progress import StatusReporter, status_text
from bot.engine.timing import next_poll_delay, retry_delay
from providers.base import Provider
from providers.errors import ERROR_KINDS, ProviderError
from providers.registry import Registry
from providers.types import JobState, JobStatus
from storage.models import AT_VENDOR, ACTIVE_STATUSES, Task, TaskStatus
from storage.tasks import NewImage, TaskRepository

log = logging.getLogger(__name__)

# A task whose in-process call was lost (or failed late) is run again this often.
MAX_RERUNS = 1
STOP_WAIT_SECONDS = 10.0  # for a vendor to stop a job nobody wants any more


class Outcomes:
    def __init__(
        self,
        tasks: TaskRepository,
        registry: Registry,
        reporter: StatusReporter,
        wake_delivery: Callable[[], None],
        fetch_preview: Callable[[str], Awaitable[bytes | None]] | None = None,
        ask_for_text: Callable[[Task], Awaitable[None]] | None = None,
        wake_dispatcher: Callable[[], None] = lambda: None,
        tell_admins: Callable[[str, ProviderError, str], Awaitable[None]] | None = None,
    ) -> None:
        self.tasks = tasks
        self.registry = registry
        self.reporter = reporter
        self.wake_delivery = wake_delivery
        self.fetch_preview = fetch_preview
        self.ask_for_text = ask_for_text
        self.wake_dispatcher = wake_dispatcher
        self.tell_admins = tell_admins
        # The preview URL each running task showed last: each picture is fetched once.
        self._previews: dict[int, str] = {}
        self._showing: set[asyncio.Task[None]] = set()  # preview downloads, kept referenced

    def has_callback(self, task: Task, provider: Provider) -> bool:
        """Whether the vendor tells us about this task itself: a callback URL
        it was given, or a live push channel (ComfyUI's websocket)."""
        if provider.pushes_states(task.provider_job_id):
            return True
        return bool(provider.supports_callbacks and self.registry.has_public_url and task.callback_token)

    def vendor_title(self, vendor_id: str | None) -> str:
        provider = self.registry.get(vendor_id) if vendor_id else None
        return provider.title if provider else (vendor_id or "?")

    async def fail(
        self,
        task: Task,
        kind: str,
        detail: str = "",
        *,
        lease_token: str | None = None,
        expect: frozenset[TaskStatus] | tuple[TaskStatus, ...] = tuple(ACTIVE_STATUSES),
        job_over: bool = False,
    ) -> bool:
        """Mark the task failed with the reason; delivery tells the user.
        Unless the vendor said the job is over (``job_over``), it is stopped there."""
        failed = await self.tasks.transition(
            task.id,
            expect,
            TaskStatus.FAILED,
            lease_token=lease_token,
            error_kind=kind,
            error_detail=detail[:500],
            finished_at=time.time(),
        )
        if failed:
            log.info("task %s failed: %s %s", task.id, kind, detail[:200])
            self.reporter.forget(task.id)
            self.wake_delivery()
            if not job_over:
                await self.stop_call(task)
        return failed

    async def stop_call(self, task: Task) -> None:
        """A task that will never use its result (failed, cancelled): its job
        is stopped where the vendor can stop it, so it does not hold the line
        for live tasks (an A1111 job waiting for the GPU, a proxy's queue).
        Bounded: a vendor slow to stop holds nobody."""
        provider = self.registry.get(task.provider or "")
        if provider is None or not task.provider_job_id:
            return
        try:
            if await asyncio.wait_for(provider.cancel(task.provider_job_id), STOP_WAIT_SECONDS):
                log.info("task %s: stopped at %s", task.id, provider.id)
        except TimeoutError:
            log.info("task %s: %s did not answer the cancel in time", task.id, provider.id)
        except ProviderError as exc:
            log.info("task %s: %s could not stop it: %s", task.id, provider.id, exc.kind)

    async def run_again(
        self, task: Task, provider: Provider, why: str, *, lease_token: str | None, delay: float = 0.0
    ) -> bool:
        """Send a task back to the dispatcher, once (``reruns``): its call
        ran in this process and was lost in a restart, or failed late in a
        way another try (maybe at another vendor) can mend. False when it
        has had its second chance already."""
        if task.reruns >= MAX_RERUNS:
            return False
        requeued = await self.tasks.transition(
            task.id, AT_VENDOR, TaskStatus.QUEUED, lease_token=lease_token,
            next_run_at=time.time() + delay, provider_job_id=None, reruns=task.reruns + 1,
            attempts=0, polls=0, progress=None,
        )
        if requeued is not None:
            log.info("task %s: %s at %s; running it again", task.id, why, provider.id)
            self.wake_dispatcher()
        return requeued is not None

    async def apply(self, task: Task, provider: Provider, state: JobState, lease_token: str | None) -> None:
        """Record a vendor state. ``lease_token`` is the poller's lease; a
        callback has none and relies on the status compare-and-set alone."""
        if state.status == JobStatus.SUCCEEDED:
            await self._succeed(task, provider, state, lease_token)
        elif state.status == JobStatus.FAILED and provider.jobs_in_process and await self._late_failure(
            task, provider, state, lease_token
        ):
            return
        elif state.status == JobStatus.FAILED:
            await self.fail(task, state.error_kind or "error", state.error_detail, lease_token=lease_token,
                            expect=AT_VENDOR, job_over=True)
        else:
            await self._progress(task, provider, state, lease_token)

    async def _late_failure(self, task: Task, provider: Provider, state: JobState, lease_token: str | None) -> bool:
        """Our own call failed after the dispatcher let go of it (whether the
        listener or the poller brings the news): it counts for the vendor's
        health like a failed submit (bad credentials switch it off and the
        admins hear of it); a 5xx, a timeout or a 429 sends the task back to
        the dispatcher once, which may pick another vendor. True when sent back."""
        error = ERROR_KINDS.get(state.error_kind or "", ProviderError)(state.error_detail)
        change = self.registry.record_failure(provider.id, error)
        if change is not None and self.tell_admins is not None:
            await self.tell_admins(provider.id, error, change)
        if not error.transient:  # out of credit, refused: the user hears that reason
            return False
        return await self.run_again(
            task, provider, f"its call failed ({error.kind})", lease_token=lease_token,
            delay=retry_delay(1, error.retry_after),
        )

    async def _succeed(self, task: Task, provider: Provider, state: JobState, lease_token: str | None) -> None:
        if not state.images and not state.vendor_data.get("description"):
            await self.fail(task, "malformed", "success without images", lease_token=lease_token, expect=AT_VENDOR)
            return
        images = [NewImage(url=i.url, data=i.data, seed=i.seed) for i in state.images]
        meta = {"is_grid": state.is_grid, "vendor_data": state.vendor_data}
        if await self.tasks.succeed(task.id, AT_VENDOR, images, meta, lease_token=lease_token):
            log.info("task %s succeeded at %s with %d image(s)", task.id, provider.id, len(images))
            self.wake_delivery()

    async def _progress(self, task: Task, provider: Provider, state: JobState, lease_token: str | None) -> None:
        progress = state.progress if state.progress is not None else task.progress
        fields = {"progress": progress, "queue_position": state.queue_position, "polls": task.polls + 1}
        silence = provider.poll_policy.callback_silence_seconds
        if lease_token is None:
            # A progress callback: note it. For a vendor polled only after a
            # silence, the vendor just spoke: the safety-net poll moves back.
            if silence is not None:
                await self.tasks.postpone(task.id, min(time.time() + silence, task.deadline_at))
            fresh = await self.tasks.update(
                task.id, progress=progress, queue_position=state.queue_position
            )
        else:
            elapsed = time.time() - (task.submitted_at or task.created_at)
            delay = next_poll_delay(
                task.polls + 1,
                elapsed,
                progress,
                provider.typical_seconds,
                has_callback=self.has_callback(task, provider),
                policy=provider.poll_policy,
            )
            fields["attempts"] = 0
            # Never sleep past the deadline: the poller fails it then.
            next_run_at = min(time.time() + delay, task.deadline_at)
            if state.status == JobStatus.RUNNING and task.status == TaskStatus.SUBMITTED:
                fresh = await self.tasks.transition(
                    task.id, TaskStatus.SUBMITTED, TaskStatus.RUNNING,
                    lease_token=lease_token, next_run_at=next_run_at, **fields,
                )
            else:
                fresh = await self.tasks.reschedule(task.id, lease_token, next_run_at, **fields)
        if fresh is not None and fresh.status in AT_VENDOR and state.vendor_data.get("modal"):
            if self.ask_for_text is not None:
                await self.ask_for_text(fresh)  # the vendor waits for the user's words
            return
        question = fresh.result_meta.get("question") if fresh is not None else None
        if isinstance(question, int) and question < 0:  # answered, and the vendor has moved on
            await self.tasks.swap_question(task.id, question, None)
        if fresh is None or fresh.status not in AT_VENDOR:
            return
        text = status_text(fresh, provider.title)
        url = state.preview_url
        if state.preview is None and url and self.fetch_preview is not None and self._previews.get(task.id) != url:
            # A picture to download first: not while the vendor's callback (or
            # the poller's lease) waits on us.
            if len(self._previews) > 1000:  # finished tasks' entries: forget them all now and then
                self._previews.clear()
            self._previews[task.id] = url
            showing = asyncio.get_running_loop().create_task(self._show_preview(fresh, text, url))
            self._showing.add(showing)
            showing.add_done_callback(self._showing.discard)
            return
        await self.reporter.show(fresh, text, preview=state.preview)

    async def _show_preview(self, task: Task, text: str, url: str) -> None:
        assert self.fetch_preview is not None
        try:
            await self.reporter.show(task, text, preview=await self.fetch_preview(url))
        except Exception:  # a preview is a nicety; the next report shows the status anyway
            log.exception("task %s: preview not shown", task.id)
