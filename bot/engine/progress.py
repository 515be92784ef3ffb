"""The one status message per task: what it says, and editing it no more
often than Telegram tolerates (about 1/s in private chats, 3 s in groups)."""

from __future__ import annotations

import html
import logging
import time

from telegram import Bot
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError

from bot.i18n import t
from storage.models import Task

log = logging.getLogger(__name__)

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
    effort: a skipped one is replaced by the next."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self._last_text: dict[int, str] = {}  # task id → text shown
        self._last_edit: dict[int, float] = {}  # chat id → monotonic time

    async def show(self, task: Task, text: str, *, force: bool = False) -> None:
        if task.status_message_id is None or self._last_text.get(task.id) == text:
            return
        interval = GROUP_EDIT_INTERVAL if task.in_group else PRIVATE_EDIT_INTERVAL
        now = time.monotonic()
        if not force and now - self._last_edit.get(task.chat_id, -interval) < interval:
            return
        self._last_edit[task.chat_id] = now
        self._last_text[task.id] = text
        try:
            await self.bot.edit_message_text(
                text, chat_id=task.chat_id, message_id=task.status_message_id, parse_mode=ParseMode.HTML
            )
        except BadRequest as exc:
            if "not modified" not in exc.message.lower():
                log.info("status edit for task %s refused: %s", task.id, exc.message)
        except TelegramError as exc:
            log.info("status edit for task %s failed: %s", task.id, type(exc).__name__)

    async def remove(self, task: Task) -> None:
        """Delete the status message once the result is out."""
        self.forget(task.id)
        if task.status_message_id is None:
            return
        try:
            await self.bot.delete_message(task.chat_id, task.status_message_id)
        except TelegramError as exc:
            log.info("could not delete status message of task %s: %s", task.id, exc)

    def forget(self, task_id: int) -> None:
        self._last_text.pop(task_id, None)
