"""/stats for admins: tasks per status and vendor, failure rate and median
duration over the last day."""

from __future__ import annotations

import html
import statistics
import time
from collections import defaultdict

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.handlers.common import reply, requester
from bot.i18n import t
from bot.services import services

WINDOW_SECONDS = 86400


async def stats(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    svc = services(context)
    message = update.effective_message
    who = await requester(update, svc)
    if who is None or message is None:
        return
    if who.user.id not in svc.settings.admin_user_ids:
        await reply(message, t(who.language, "err_admins_only"))
        return
    since = time.time() - WINDOW_SECONDS
    rows = await svc.store.tasks.stats_since(since)
    durations = await svc.store.tasks.durations_since(since)
    per_vendor: dict[str, dict[str, int]] = defaultdict(dict)
    for vendor, status, count in rows:
        per_vendor[vendor][status] = count
    total = sum(count for _, _, count in rows)
    failed = sum(count for _, status, count in rows if status == "failed")
    lines = [t(who.language, "stats_header", total=total)]
    for vendor, counts in per_vendor.items():
        parts = ", ".join(f"{t(who.language, 'st_' + status)} {count}" for status, count in sorted(counts.items()))
        lines.append(f"• <b>{html.escape(vendor)}</b>: {parts}")
    rate = f"{100 * failed / total:.0f}%" if total else "—"
    median = f"{statistics.median(durations):.1f} s" if durations else "—"
    lines.append(t(who.language, "stats_summary", rate=rate, median=median))
    await reply(message, "\n".join(lines))


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_handler(CommandHandler("stats", stats))
