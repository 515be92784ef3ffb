"""/tasks: the user's recent tasks with their status."""

from __future__ import annotations

import html

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.engine.progress import short_prompt
from bot.handlers.common import reply, requester
from bot.i18n import t
from bot.services import services
from storage.models import TaskStatus

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
    await reply(message, "\n".join(lines))


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_handler(CommandHandler("tasks", list_tasks))
