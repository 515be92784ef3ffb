"""/providers: the configured vendors, what each can do here, and health."""

from __future__ import annotations

import html

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.handlers.common import reply, requester
from bot.i18n import t
from bot.services import services


async def providers_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    svc = services(context)
    message = update.effective_message
    who = await requester(update, svc)
    if who is None or message is None:
        return
    registry = svc.registry
    lines = [t(who.language, "providers_header")]
    for vendor_id, provider in registry.providers.items():
        capabilities = ", ".join(sorted(c.value for c in registry.capabilities(provider))) or "—"
        default = t(who.language, "providers_default") if vendor_id == registry.default_id else ""
        lines.append(
            t(
                who.language, "provider_line", vendor=html.escape(vendor_id), title=html.escape(" · ".join(filter(None, (provider.title, provider.details())))),
                default=default, capabilities=capabilities, health=html.escape(registry.describe_health(vendor_id)),
            )
        )
    if not registry.has_public_url:
        lines.append(t(who.language, "providers_no_public_url"))
    await reply(message, "\n".join(lines))


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_handler(CommandHandler("providers", providers_command))
