"""The one status message per task: what it says, and editing it no more
often than Telegram tolerates (about 1/s in private chats, 3 s in groups)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

from telegram import Bot, InputMediaPhoto, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError

from bot.i18n import t
from bot.telegram_limits import telegram_busy
from storage.models import ACTIVE_STATUSES, Task
from storage.tasks import TaskRepository

log = logging.getLogger(__name__)

RESULTS_KEPT = 10_000
PRIVATE_EDIT_INTERVAL = 1.0
GROUP_EDIT_INTERVAL = 3.0
BAR_CELLS = 10
STATUS_PROMPT_CHARS = 200


def short_prompt(prompt: str, limit: int) -> str:
    prompt = " ".join(prompt.split())
    return prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"


def progress_bar(fraction: float) -> str:
    filled = max(0, min(BAR_CELLS, int(fraction * BAR_CELLS)))
    return "▓" * filled + "░" * (BAR_CELLS - filled)


def status_text(
    task: Task, vendor_title: str, *, queue_position: int | None = None, retrying: bool = False
) -> str:
    """The status line for the task's current state (HTML)."""
    lang = task.language
    prompt = html.escape(short_prompt(task.params.get("prompt") or task.kind, STATUS_PROMPT_CHARS))
    vendor = html.escape(vendor_title)
    if retrying:
        return t(lang, "status_retrying", vendor=vendor, prompt=prompt)
    if queue_position == 1:
        return t(lang, "status_starting", prompt=prompt)  # nothing ahead: it goes out at once
    if queue_position is not None:
        return t(lang, "status_queued", position=queue_position, prompt=prompt)
    if task.queue_position:
        return t(lang, "status_vendor_queue", vendor=vendor, position=task.queue_position, prompt=prompt)
    if task.progress is not None and task.progress > 0:
        percent = int(task.progress * 100)
        return t(lang, "status_running", bar=progress_bar(task.progress), percent=percent, prompt=prompt)
    return t(lang, "status_running_no_progress", vendor=vendor, prompt=prompt)


class StatusReporter:
    """Edits status messages, throttled per chat. Progress edits are best
    effort: a skipped one is replaced by the next, and the last one skipped
    is shown once the chat may be edited again (a vendor that reports only
    changes, such as a queue place, may not send a next). When the vendor
    sends an intermediate preview, the status becomes a photo showing it."""

    def __init__(self, bot: Bot, tasks: TaskRepository) -> None:
        self.bot = bot
        self.tasks = tasks
        self._last_text: dict[int, str] = {}  # task id → text shown
        self._last_edit: dict[int, float] = {}  # chat id → monotonic time
        self._photo_status: set[int] = set()  # task ids whose status is a photo
        # Skipped edits, newest per task: (chat id, text, preview), shown later.
        self._deferred: dict[int, tuple[int, str, bytes | None]] = {}
        self._flushing: dict[int, asyncio.Task[None]] = {}  # chat id → its pending flush
        # One change of a status message at a time; a status that became the
        # result is never edited again (a late progress edit would undo it).
        self._locks: dict[int, asyncio.Lock] = {}
        self._results: OrderedDict[int, None] = OrderedDict()  # task ids, the newest RESULTS_KEPT

    def acknowledged(self, task: Task, text: str) -> None:
        """The status message was just sent with ``text``: it counts as the
        chat's latest edit (no second message change in the same second)."""
        self._last_edit[task.chat_id] = time.monotonic()
        self._last_text[task.id] = text

    async def show(self, task: Task, text: str, *, preview: bytes | None = None, force: bool = False) -> None:
        if self._last_text.get(task.id) == text and preview is None:
            self._deferred.pop(task.id, None)
            return
        interval = GROUP_EDIT_INTERVAL if task.in_group else PRIVATE_EDIT_INTERVAL
        now = time.monotonic()
        if task.status_message_id is None or (not force and (
            now - self._last_edit.get(task.chat_id, -interval) < interval or telegram_busy(self.bot)
        )):
            # Not yet (no status message recorded, the chat edited a moment
            # ago, or acknowledgements and results go first): later.
            self._defer(task, text, preview, interval)
            return
        self._deferred.pop(task.id, None)
        self._last_edit[task.chat_id] = now
        async with self._lock(task.id):
            if task.id in self._results:
                return
            self._last_text[task.id] = text
            await self._edit(task, text, preview)

    @contextlib.asynccontextmanager
    async def becoming_result(self, task_id: int) -> AsyncIterator[None]:
        """While delivery turns the status message into the result: no
        status edit runs meanwhile, nor after."""
        async with self._lock(task_id):
            self._results[task_id] = None
            self._results.move_to_end(task_id)
            while len(self._results) > RESULTS_KEPT:
                self._results.popitem(last=False)
            self._deferred.pop(task_id, None)
            yield

    def _lock(self, task_id: int) -> asyncio.Lock:
        lock = self._locks.get(task_id)
        if lock is None:
            if len(self._locks) > RESULTS_KEPT:  # idle ones of finished tasks
                for key in [k for k, v in self._locks.items() if not v.locked()]:
                    del self._locks[key]
            lock = self._locks[task_id] = asyncio.Lock()
        return lock

    async def _edit(self, task: Task, text: str, preview: bytes | None) -> None:
        try:
            if preview is not None and task.id not in self._photo_status:
                await self._switch_to_photo(task, text, preview)
            elif task.id in self._photo_status:
                await self._edit_photo(task, text, preview)
            else:
                await self.bot.edit_message_text(
                    text, chat_id=task.chat_id, message_id=task.status_message_id, parse_mode=ParseMode.HTML
                )
        except BadRequest as exc:
            if "no text in the message" in exc.message.lower():
                self._photo_status.add(task.id)  # a photo status from before a restart
            elif "not modified" not in exc.message.lower():
                log.info("status edit for task %s refused: %s", task.id, exc.message)
        except TelegramError as exc:
            log.info("status edit for task %s failed: %s", task.id, type(exc).__name__)

    async def _switch_to_photo(self, task: Task, text: str, preview: bytes) -> None:
        """The text status becomes a photo of the preview (editMessageMedia
        adds media to a text message); where Telegram refuses, a photo is
        sent and the text dropped."""
        try:
            await self.bot.edit_message_media(
                InputMediaPhoto(preview, caption=text, parse_mode=ParseMode.HTML),
                chat_id=task.chat_id, message_id=task.status_message_id,
            )
            self._photo_status.add(task.id)
            return
        except BadRequest as exc:
            log.info("status of task %s not turned into a photo in place: %s", task.id, exc.message)
        reply = ReplyParameters(task.request_message_id, allow_sending_without_reply=True) if task.request_message_id else None
        message = await self.bot.send_photo(
            task.chat_id, preview, caption=text, parse_mode=ParseMode.HTML,
            reply_parameters=reply, message_thread_id=task.thread_id,
        )
        fresh = await self.tasks.update(task.id, status_message_id=message.message_id)
        if fresh is None or not fresh.status.active:
            # The result went out meanwhile (and removed the old status):
            # this picture must not stay behind as a stray status.
            with contextlib.suppress(TelegramError):
                await self.bot.delete_message(task.chat_id, message.message_id)
            return
        self._photo_status.add(task.id)
        old = task.status_message_id
        try:
            await self.bot.delete_message(task.chat_id, old)  # type: ignore[arg-type]
        except TelegramError as exc:
            log.info("could not delete old status of task %s: %s", task.id, exc)

    async def _edit_photo(self, task: Task, text: str, preview: bytes | None) -> None:
        if preview is None:
            await self.bot.edit_message_caption(
                chat_id=task.chat_id, message_id=task.status_message_id, caption=text, parse_mode=ParseMode.HTML
            )
            return
        await self.bot.edit_message_media(
            InputMediaPhoto(preview, caption=text, parse_mode=ParseMode.HTML),
            chat_id=task.chat_id, message_id=task.status_message_id,
        )

    async def remove(self, task: Task, *, current: bool = False) -> None:
        """Delete the status message once the result is out. Unless ``task``
        is ``current`` (just read back), it is re-read: the status message
        may have been recorded or replaced since the task was leased."""
        self.forget(task.id)
        fresh = task if current else await self.tasks.get(task.id)
        message_id = fresh.status_message_id if fresh else task.status_message_id
        if message_id is None:
            return
        try:
            await self.bot.delete_message(task.chat_id, message_id)
        except TelegramError as exc:
            log.info("could not delete status message of task %s: %s", task.id, exc)

    def forget(self, task_id: int) -> None:
        self._last_text.pop(task_id, None)
        self._photo_status.discard(task_id)
        self._deferred.pop(task_id, None)

    def _defer(self, task: Task, text: str, preview: bytes | None, interval: float) -> None:
        earlier = self._deferred.get(task.id)
        if preview is None and earlier is not None and earlier[2] is not None:
            preview = earlier[2]  # a newer line of text keeps the picture not shown yet
        self._deferred[task.id] = (task.chat_id, text, preview)
        flushing = self._flushing.get(task.chat_id)
        if flushing is None or flushing.done():
            self._flushing[task.chat_id] = asyncio.get_running_loop().create_task(
                self._flush(task.chat_id, interval), name=f"status-flush-{task.chat_id}")

    async def _flush(self, chat_id: int, interval: float) -> None:
        """Show the chat's skipped edits, one per interval, each from the
        task as it is then (one that ended meanwhile shows nothing)."""
        again = False
        while True:
            wait = self._last_edit.get(chat_id, -interval) + interval - time.monotonic()
            # Put off again (Telegram busy): a whole interval, not a spin.
            await asyncio.sleep(interval if again else max(wait, 0.05))
            waiting = [task_id for task_id, entry in self._deferred.items() if entry[0] == chat_id]
            if not waiting:
                self._flushing.pop(chat_id, None)
                return
            task_id = waiting[0]
            _, text, preview = self._deferred.pop(task_id)
            with contextlib.suppress(Exception):  # best effort, as every progress edit
                fresh = await self.tasks.get(task_id)
                if (fresh is not None and fresh.status in ACTIVE_STATUSES and fresh.status_message_id is not None
                        and self._last_text.get(task_id) != text):
                    await self.show(fresh, text, preview=preview)
            again = task_id in self._deferred

    async def aclose(self) -> None:
        for flushing in list(self._flushing.values()):
            flushing.cancel()
            with contextlib.suppress(BaseException):
                await flushing
        self._flushing.clear()
