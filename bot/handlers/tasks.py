"""/tasks (recent tasks), /task <id> (details, and the result sent again
from Telegram's stored files, without the vendor), /cancel <id> (or leave a
guided conversation)."""

from __future__ import annotations

import contextlib
import html
import time

from telegram import Update
from telegram.constants import ParseMode
from telegram.error import TelegramError
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.engine.progress import short_prompt
from bot.handlers.common import Requester, reply, requester
from bot.i18n import t
from bot.services import Services, services
from storage.models import ACTIVE_STATUSES, Task, TaskStatus


RECENT = 10
ICONS = {
    TaskStatus.QUEUED: "⏳",
    TaskStatus.SUBMITTED: "📨",
    TaskStatus.RUNNING: "🎨",
    TaskStatus.SUCCEEDED: "📤",
    TaskStatus.DELIVERED: "✅",
    TaskStatus.FAILED: "❌",
    TaskStatus.CANCELLED: "🚫",
}


def task_id_arg(args: list[str] | None) -> int | None:
    if not args:
        return None
    text = args[0].lstrip("#")
    return int(text) if text.isdigit() and len(text) <= 15 else None


async def own_task(svc: Services, who: Requester, task_id: int) -> Task | None:
    """The task if this user may see it (theirs, or they are an admin)."""
    task = await svc.store.tasks.get(task_id)
    if task is None:
        return None
    if task.user_id != who.user.id and who.user.id not in svc.settings.admin_user_ids:
        return None
    return task


async def list_tasks(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    svc = services(context)
    message = update.effective_message
    who = await requester(update, svc)
    if who is None or message is None:
        return
    recent = await svc.store.tasks.recent(who.user.id, RECENT)
    if not recent:
        await reply(message, t(who.language, "tasks_none"))
        return
    lines = [t(who.language, "tasks_header")]
    for task in recent:
        prompt = html.escape(short_prompt(task.params.get("prompt") or task.kind, 60))
        status = t(who.language, f"st_{task.status.value}")
        lines.append(t(who.language, "task_line", icon=ICONS[task.status], task_id=task.id, status=status, prompt=prompt))
    lines.append(t(who.language, "tasks_footer"))
    await reply(message, "\n".join(lines))


def details(svc: Services, task: Task, language: str) -> str:
    provider = svc.registry.get(task.provider or "")
    finished = task.delivered_at or task.finished_at
    took = f"{finished - task.created_at:.0f} s" if finished else "—"
    lines = [
        t(language, "task_title", icon=ICONS[task.status], task_id=task.id, status=t(language, f"st_{task.status.value}")),
        t(language, "task_what", kind=task.kind, vendor=html.escape(provider.title if provider else (task.provider or "—")), took=took),
        f"<i>{html.escape(short_prompt(task.params.get('prompt') or task.kind, 300))}</i>",
    ]
    flags = {k: v for k, v in task.params.items() if k != "prompt"}
    if flags:
        lines.append(html.escape(" ".join(f"--{k} {v}" for k, v in flags.items())))
    if task.status == TaskStatus.FAILED and task.error_kind:
        lines.append(t(language, "task_error", kind=html.escape(task.error_kind)))
    return "\n".join(lines)


async def show_task(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    svc = services(context)
    message = update.effective_message
    who = await requester(update, svc)
    if who is None or message is None:
        return
    task_id = task_id_arg(context.args)
    if task_id is None:
        await reply(message, t(who.language, "task_usage"))
        return
    task = await own_task(svc, who, task_id)
    if task is None:
        await reply(message, t(who.language, "task_not_found", task_id=task_id))
        return
    await reply(message, details(svc, task, who.language))
    if task.status == TaskStatus.DELIVERED:
        images = await svc.store.tasks.images(task.id)
        await svc.engine.sender.send(
            task, images, chat_id=message.chat_id, reply_to=message.message_id,
            thread_id=message.message_thread_id if message.is_topic_message else None,
        )


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    svc = services(context)
    message = update.effective_message
    who = await requester(update, svc)
    if who is None or message is None:
        return
    task_id = task_id_arg(context.args)
    if task_id is None:
        left = await svc.store.flows.finish(message.chat_id, who.user.id)
        await reply(message, t(who.language, "flow_cancelled" if left else "cancel_usage"))
        return
    task = await own_task(svc, who, task_id)
    if task is None:
        await reply(message, t(who.language, "task_not_found", task_id=task_id))
        return
    cancelled = await svc.store.tasks.transition(
        task.id, ACTIVE_STATUSES, TaskStatus.CANCELLED, next_run_at=time.time(),
        error_kind="cancelled", finished_at=time.time(),
    )
    if not cancelled:
        status = t(who.language, f"st_{task.status.value}")
        await reply(message, t(who.language, "task_cannot_cancel", task_id=task.id, status=status))
        return
    # Where the vendor can stop the job, it is stopped; elsewhere it runs on
    # and its result is dropped (the task is no longer active).
    await svc.engine.outcomes.stop_call(task)
    svc.engine.reporter.forget(task.id)
    done = t(who.language, "task_cancelled", task_id=task.id)
    if task.status_message_id is not None:
        with contextlib.suppress(TelegramError):
            await context.bot.edit_message_text(done, chat_id=task.chat_id, message_id=task.status_message_id, parse_mode=ParseMode.HTML)
    await reply(message, done)


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_handler(CommandHandler("tasks", list_tasks))
    app.add_handler(CommandHandler("task", show_task))
    app.add_handler(CommandHandler("cancel", cancel))
