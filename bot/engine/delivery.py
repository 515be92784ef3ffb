"""The outbox. Succeeded tasks: download the result at once (vendor URLs
expire), send it to Telegram, record the file_ids, then mark delivered.
Failed tasks: tell the user why. Each step retries on its own."""

from __future__ import annotations

import dataclasses
import html
import logging
import time

import httpx
from telegram import Bot, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError

from bot.engine.downloads import DownloadError, fetch_image, inspect_image
from bot.engine.loop import StageLoop
from bot.engine.outcomes import Outcomes
from bot.engine.progress import short_prompt
from bot.engine.sender import GRID_INDEX, ResultSender
from bot.engine.timing import retry_delay
from bot.i18n import t
from storage.models import Task, TaskImage, TaskStatus
from storage.tasks import TaskRepository

log = logging.getLogger(__name__)

NOTIFIED = 1e15  # next_run_at of a failed task whose user has been told
MAX_SEND_ATTEMPTS = 8


def failure_reason(task: Task) -> str:
    lang, kind = task.language, task.error_kind or "error"
    if kind.startswith("route_"):
        limit = int(task.error_detail) if (task.error_detail or "").isdigit() else 0
        return t(
            lang, "err_" + kind.removeprefix("route_"), provider=task.params.get("provider") or "?",
            capability=task.kind, limit=limit, length=len(task.params.get("prompt") or ""),
        )
    if kind == "deadline":
        return t(lang, "fail_deadline", minutes=max(1, round((task.deadline_at - task.created_at) / 60)))
    return kind_reason(lang, kind)


def kind_reason(language: str, kind: str) -> str:
    """The user's sentence for an error kind (fail_<kind>, else the generic one)."""
    try:
        return t(language, f"fail_{kind}")
    except KeyError:
        return t(language, "fail_error")


def failure_notice(task: Task) -> str:
    """What the user reads about a failed task (HTML)."""
    prompt = html.escape(short_prompt(task.params.get("prompt") or task.kind, 200))
    return t(task.language, "failed_task", reason=failure_reason(task), task_id=task.id, prompt=prompt)


class Delivery(StageLoop):
    name = "delivery"
    statuses = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)
    concurrency = 16

    def __init__(
        self,
        tasks: TaskRepository,
        outcomes: Outcomes,
        bot: Bot,
        sender: ResultSender,
        http: httpx.AsyncClient,
        allow_private_urls: bool,
    ) -> None:
        super().__init__(tasks)
        self.outcomes = outcomes
        self.bot = bot
        self.sender = sender
        self.http = http
        self.allow_private_urls = allow_private_urls

    async def on_unexpected_error(self, task: Task, attempts: int) -> None:
        if task.status == TaskStatus.SUCCEEDED:
            await self.outcomes.fail(task, "cannot_deliver", "delivery kept crashing", lease_token=task.lease_token, expect=(TaskStatus.SUCCEEDED,))
        else:
            await self.tasks.reschedule(task.id, task.lease_token or "", NOTIFIED)

    async def handle(self, task: Task) -> None:
        if task.status == TaskStatus.FAILED:
            await self._notify_failure(task)
            return
        description = (task.result_meta.get("vendor_data") or {}).get("description")
        if description and not await self.tasks.images(task.id):
            await self._send_description(task, str(description))
            return
        images = await self._downloaded_images(task)
        if images is None:
            return
        already = [(i.idx, i.file_id, i.message_id) for i in images if i.file_id and i.message_id]
        # Re-read: the status message may have been recorded, or replaced by
        # a preview photo, after our lease.
        fresh = await self.tasks.get(task.id)
        status_message_id = fresh.status_message_id if fresh is not None else task.status_message_id
        try:
            async with self.outcomes.reporter.becoming_result(task.id):
                sent = await self.sender.send(
                    task, images, chat_id=task.chat_id, reply_to=task.request_message_id, thread_id=task.thread_id,
                    record_sent=lambda done: self.tasks.record_sent(task.id, done), already_sent=already,
                    in_place_of=status_message_id,
                )
        except RetryAfter as exc:
            await self._retry_later(task, retry_after_seconds(exc))
            return
        except Forbidden as exc:
            log.info("task %s: cannot deliver: %s", task.id, exc.message)
            await self.outcomes.fail(task, "cannot_deliver", exc.message, lease_token=task.lease_token, expect=(TaskStatus.SUCCEEDED,))
            return
        except BadRequest as exc:
            log.warning("task %s: Telegram refused the result: %s", task.id, exc.message)
            await self.outcomes.fail(task, "cannot_deliver", exc.message, lease_token=task.lease_token, expect=(TaskStatus.SUCCEEDED,))
            return
        except TelegramError as exc:  # network errors, timeouts, 5xx
            log.warning("task %s: sending failed: %s", task.id, exc)
            await self._retry_later(task)
            return
        if sent and sent[0][0] == GRID_INDEX:
            # The grid is ours: its file_id is the task's; the originals keep
            # their bytes a while, for U1–U4 and 🗂 All.
            _, file_id, message_id = sent[0]
            await self.tasks.update(task.id, result_meta={**task.result_meta, "grid": {"file_id": file_id, "message_id": message_id}})
            sent = []
        delivered = await self.tasks.mark_delivered(task.id, task.lease_token or "", sent)
        if delivered is not None:
            log.info("task %s delivered (%d image(s))", task.id, len(images))
            if status_message_id in {message_id for _, _, message_id in sent} or (
                status_message_id is not None
                and (delivered.result_meta.get("grid") or {}).get("message_id") == status_message_id
            ):
                self.outcomes.reporter.forget(task.id)  # the status is the result now
            else:
                await self.outcomes.reporter.remove(delivered, current=True)

    async def _send_description(self, task: Task, description: str) -> None:
        """/describe answers with words, not images."""
        text = t(task.language, "describe_result", text=html.escape(description[:3500]), task_id=task.id)
        try:
            await self.bot.send_message(
                task.chat_id, text, parse_mode=ParseMode.HTML, message_thread_id=task.thread_id,
                reply_parameters=ReplyParameters(task.request_message_id, allow_sending_without_reply=True) if task.request_message_id else None,
            )
        except RetryAfter as exc:
            await self._retry_later(task, retry_after_seconds(exc))
            return
        except TelegramError as exc:
            log.warning("task %s: description not sent: %s", task.id, exc)
            await self._retry_later(task)
            return
        delivered = await self.tasks.mark_delivered(task.id, task.lease_token or "", [])
        if delivered is not None:
            await self.outcomes.reporter.remove(delivered, current=True)

    async def _retry_later(self, task: Task, retry_after: float | None = None) -> None:
        attempts = task.attempts + 1
        if attempts > MAX_SEND_ATTEMPTS:
            await self.outcomes.fail(task, "cannot_deliver", "too many send attempts", lease_token=task.lease_token, expect=(TaskStatus.SUCCEEDED,))
            return
        await self.tasks.reschedule(task.id, task.lease_token or "", time.time() + retry_delay(attempts, retry_after), attempts=attempts)

    async def _downloaded_images(self, task: Task) -> list[TaskImage] | None:
        """Every result image with its bytes checked and stored, or None
        when this attempt ended (retry scheduled or task failed)."""
        images = await self.tasks.images(task.id)
        for position, image in enumerate(images):
            if image.file_id is not None or image.width is not None:
                continue
            try:
                if image.data is not None:
                    checked = inspect_image(image.data)
                elif image.url:
                    checked = await fetch_image(self.http, image.url, allow_private=self.allow_private_urls)
                else:
                    raise DownloadError("result has neither URL nor data", permanent=True)
            except DownloadError as exc:
                log.warning("task %s: result %d unusable: %s", task.id, image.idx, exc.reason)
                if exc.permanent:
                    await self.outcomes.fail(task, "result_unusable", exc.reason, lease_token=task.lease_token, expect=(TaskStatus.SUCCEEDED,))
                else:
                    await self._retry_later(task)
                return None
            await self.tasks.store_image_data(task.id, image.idx, checked.data, checked.mime, checked.width, checked.height)
            images[position] = dataclasses.replace(
                image, data=checked.data, mime=checked.mime, width=checked.width, height=checked.height
            )
        return images

    async def _notify_failure(self, task: Task) -> None:
        text = failure_notice(task)
        try:
            if task.status_message_id is not None:
                try:
                    await self.bot.edit_message_text(text, chat_id=task.chat_id, message_id=task.status_message_id, parse_mode=ParseMode.HTML)
                except BadRequest as exc:
                    if "not modified" not in exc.message.lower():
                        # E.g. the status became a preview photo (no text to
                        # edit): say it anew and take the stale status away.
                        await self._send_failure(task, text)
                        await self.outcomes.reporter.remove(task)
            else:
                await self._send_failure(task, text)
        except (Forbidden, BadRequest) as exc:
            log.info("task %s: could not tell the user about the failure: %s", task.id, exc.message)
        except RetryAfter as exc:
            await self.tasks.reschedule(task.id, task.lease_token or "", time.time() + retry_after_seconds(exc))
            return
        except TelegramError as exc:
            log.warning("task %s: failure notice not sent: %s", task.id, exc)
            await self.tasks.reschedule(task.id, task.lease_token or "", time.time() + retry_delay(task.attempts + 1), attempts=task.attempts + 1)
            return
        await self.tasks.reschedule(task.id, task.lease_token or "", NOTIFIED)

    async def _send_failure(self, task: Task, text: str) -> None:
        await self.bot.send_message(
            task.chat_id, text, parse_mode=ParseMode.HTML,
            reply_parameters=ReplyParameters(task.request_message_id, allow_sending_without_reply=True) if task.request_message_id else None,
            message_thread_id=task.thread_id,
        )


def retry_after_seconds(exc: RetryAfter) -> float:
    value = exc.retry_after  # int or timedelta, depending on PTB settings
    return float(value.total_seconds() if hasattr(value, "total_seconds") else value)
