"""The task engine: dispatcher, poller and delivery loops over the tasks
table, plus the entry point for vendor callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from telegram import Bot, ForceReply, ReplyParameters
from telegram.error import TelegramError

from bot.engine.delivery import Delivery
from bot.engine.dispatcher import Dispatcher
from bot.engine.downloads import fetch_preview
from bot.engine.inputs import InputResolver
from bot.engine.outcomes import Outcomes
from bot.engine.poller import Poller
from bot.engine.progress import StatusReporter
from bot.engine.ratelimit import VendorGate
from bot.engine.sender import ResultSender
from bot.i18n import t
from bot.keyboards import CallbackCodec
from providers.base import Provider
from providers.errors import JobNotFound, ProviderError
from providers.inprocess import JobListener
from providers.registry import Registry
from providers.types import JobState
from storage import Store
from storage.models import AT_VENDOR, Task

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 600.0
LISTENER_RETRY_DELAYS = (0.0, 0.2, 0.5, 1.0, 2.0)
# A grid's originals (for U1–U4 and 🗂 All without the vendor) are kept this
# long; after that U shows the quarter of the grid and V starts from it.
KEEP_ORIGINALS_SECONDS = 24 * 3600
STOP_SECONDS = 15.0
ADMIN_REASONS = {"auth": "it rejected our credentials", "quota": "it says we are out of credit or quota"}


class CallbackRejected(Exception):
    """A vendor callback we will not act on; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Engine:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        bot: Bot,
        codec: CallbackCodec,
        http: httpx.AsyncClient,
        *,
        public_base_url: str,
        allow_private_urls: bool,
        admin_ids: frozenset[int] = frozenset(),
    ) -> None:
        self.store = store
        self.registry = registry
        self.bot = bot
        self.public_base_url = public_base_url
        self.admin_ids = admin_ids
        self.reporter = StatusReporter(bot, store.tasks)
        gate = VendorGate()
        self.outcomes = Outcomes(
            store.tasks, registry, self.reporter, wake_delivery=self._wake_delivery,
            fetch_preview=lambda url: fetch_preview(http, url, allow_private=allow_private_urls),
            ask_for_text=self._ask_for_text, wake_dispatcher=self.wake_dispatcher,
            tell_admins=self._tell_admins,
        )
        self.dispatcher = Dispatcher(
            store.tasks, registry, self.outcomes, gate,
            InputResolver(bot, store.media, public_base_url), self._callback_url,
            wake_poller=self._wake_poller, on_vendor_disabled=self._tell_admins,
        )
        self.poller = Poller(store.tasks, registry, self.outcomes, gate)
        for provider in registry.providers.values():
            provider.listen(self._job_listener(provider))
            provider.on_push_lost(self._poll_now(provider))
        self.sender = ResultSender(bot, codec, registry)
        self.delivery = Delivery(store.tasks, self.outcomes, bot, self.sender, http, allow_private_urls)
        self._runners: list[asyncio.Task[None]] = []

    def _wake_poller(self) -> None:
        self.poller.wake()

    def _wake_delivery(self) -> None:
        self.delivery.wake()

    def wake_dispatcher(self) -> None:
        self.dispatcher.wake()

    async def start(self) -> None:
        released = await self.store.tasks.release_leases()
        if released:
            log.info("resuming %d task(s) that were in hand when the bot last stopped", released)
        # Calls that ran in the process that stopped are gone, and news that
        # went to it will not come to us: find out now.
        in_process = [p.id for p in self.registry.providers.values() if p.jobs_in_process or p.news_to_submitter]
        await self.store.tasks.make_due(in_process, AT_VENDOR)
        self._runners = [
            asyncio.create_task(stage.run(), name=stage.name)
            for stage in (self.dispatcher, self.poller, self.delivery)
        ]
        self._runners.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))

    async def stop(self) -> None:
        """Let the stages finish what they hold (bounded), then end."""
        for stage in (self.dispatcher, self.poller, self.delivery):
            stage.stop()
        if not self._runners:
            return
        for housekeeping in self._runners[3:]:
            housekeeping.cancel()
        _, pending = await asyncio.wait(self._runners, timeout=STOP_SECONDS)
        for runner in pending:
            runner.cancel()
        for runner in self._runners:
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._runners = []
        for provider in self.registry.providers.values():
            await provider.aclose()
        await self.reporter.aclose()

    async def _housekeeping(self) -> None:
        """Drop expired /media links, finished conversations and the kept
        originals of old grids now and then."""
        while True:
            try:
                await self.store.media.purge_expired()
                await self.store.flows.purge_expired()
                await self.store.tasks.drop_kept_originals(time.time() - KEEP_ORIGINALS_SECONDS)
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async def _tell_admins(self, vendor_id: str, error: ProviderError, change: str) -> None:
        """A vendor was switched off (bad credentials, no credit) or rests
        until its quota returns: the admins must know at once, in English
        (an operator message)."""
        reason = ADMIN_REASONS.get(error.kind, error.kind)
        if change == "resting" and error.retry_after:
            until = time.strftime("%H:%M UTC", time.gmtime(time.time() + error.retry_after))
            text = f"⏸ Vendor {vendor_id} rests until {until}: {reason}."
        else:
            text = f"⚠️ Vendor {vendor_id} is disabled until restart: {reason}."
        log.error("%s", text)
        for admin_id in self.admin_ids:
            try:
                await self.bot.send_message(admin_id, text)
            except TelegramError as exc:
                log.warning("could not tell admin %s: %s", admin_id, exc)

    def _callback_url(self, task: Task, provider: Provider) -> str | None:
        if not self.outcomes.has_callback(task, provider):
            return None
        return f"{self.public_base_url}/callbacks/{provider.id}/{task.callback_token}"

    async def _ask_for_text(self, task: Task) -> None:
        """A vendor job waits for text from the user (Midjourney's remix or
        Custom Zoom): ask once per wait, with a reply field; the reply goes
        to the vendor (bot.handlers.modal). Claimed on the task first, so a
        callback and a poll arriving together ask once; a failed send is
        given back, so the next report asks again."""
        tasks = self.store.tasks
        if not await tasks.swap_question(task.id, None, 0):
            return  # asked already (or being asked)
        text = t(task.language, "modal_ask", task_id=task.id)
        if task.in_group:  # the reply field is for the requester alone
            text = f'<a href="tg://user?id={task.user_id}">👤</a> {text}'
        asked = None
        try:
            asked = await self.bot.send_message(
                task.chat_id, text, parse_mode="HTML",
                reply_markup=ForceReply(selective=task.in_group, input_field_placeholder=(task.params.get("prompt") or "")[:64] or None),
                reply_parameters=ReplyParameters(task.status_message_id or task.request_message_id or 0,
                                                 allow_sending_without_reply=True),
                message_thread_id=task.thread_id,
            )
        except TelegramError as exc:
            log.warning("task %s: could not ask for the vendor's text: %s", task.id, exc)
        finally:  # whatever happened, the claim does not stay: asked, or free to ask again
            await tasks.swap_question(task.id, 0, asked.message_id if asked is not None else None)

    def _poll_now(self, provider: Provider) -> Callable[[], Awaitable[None]]:
        async def poll_now() -> None:
            """The vendor's push channel broke: poll its jobs now, not at
            the far-off safety-net time set while it pushed."""
            await self.store.tasks.make_due([provider.id], AT_VENDOR)
            self.poller.wake()

        return poll_now

    def _job_listener(self, provider: Provider) -> JobListener:
        async def job_ended(job_id: str, state: JobState) -> bool:
            """An in-process call ended: apply it at once, like a callback
            (the poller would find it too, later). True once applied."""
            task = None
            for delay in LISTENER_RETRY_DELAYS:  # the dispatcher may not have recorded the job yet
                await asyncio.sleep(delay)
                task = await self.store.tasks.by_job(provider.id, job_id)
                if task is not None:
                    break
            if task is None:
                return False
            if task.status in AT_VENDOR:
                await self.outcomes.apply(task, provider, state, lease_token=None)
            return True

        return job_ended

    async def on_callback(self, vendor_id: str, token: str, payload: Any) -> dict[str, Any]:
        """Apply a vendor callback. The per-task token authenticates it."""
        task = await self.store.tasks.by_callback_token(token)
        provider = self.registry.get(vendor_id)
        if task is None or provider is None or task.provider != vendor_id:
            raise CallbackRejected(404, "unknown callback")
        if not isinstance(payload, dict):
            raise CallbackRejected(400, "callback body is not a JSON object")
        if task.status.final or task.status.value == "succeeded":
            return provider.callback_answer  # a repeat; already handled
        if task.provider_job_id is None:
            # Faster than our own bookkeeping of the submit: ask the vendor
            # to try again (it retries on anything but success).
            raise CallbackRejected(409, "callback for a job not yet recorded")
        try:
            state = provider.parse_callback(payload, task.provider_job_id)
        except JobNotFound:
            raise CallbackRejected(409, "callback for another job") from None
        except ProviderError as exc:
            raise CallbackRejected(400, f"unreadable callback: {exc.kind}") from None
        await self.outcomes.apply(task, provider, state, lease_token=None)
        return provider.callback_answer
