"""/providers: the configured vendors, what each can do here, and health."""

from __future__ import annotations

import asyncio
import html
from collections.abc import Iterable

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.handlers.common import reply, requester
from bot.i18n import t
from bot.services import services
from providers.base import Provider
from providers.errors import ProviderError


MAX_MODELS_SHOWN = 12
MODELS_WAIT_SECONDS = 3.0  # a local engine that does not answer quickly is listed without them


async def listed_models(providers: Iterable[Provider]) -> dict[str, list[str]]:
    """Each vendor's --model choices where it lists them, asked together."""
    chosen = list(providers)

    async def one(provider: Provider) -> list[str]:
        try:
            return await asyncio.wait_for(provider.models(), MODELS_WAIT_SECONDS)
        except (TimeoutError, ProviderError):
            return []

    answers = await asyncio.gather(*(one(p) for p in chosen))
    return {p.id: names for p, names in zip(chosen, answers, strict=True) if names}


async def providers_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    svc = services(context)
    message = update.effective_message
    who = await requester(update, svc)
    if who is None or message is None:
        return
    registry = svc.registry
    lines = [t(who.language, "providers_header")]
    models = await listed_models(registry.providers.values())
    for vendor_id, provider in registry.providers.items():
        capabilities = ", ".join(sorted(c.value for c in registry.capabilities(provider))) or "—"
        default = t(who.language, "providers_default") if vendor_id == registry.default_id else ""
        lines.append(
            t(
                who.language, "provider_line", vendor=html.escape(vendor_id), title=html.escape(" · ".join(filter(None, (provider.title, provider.details())))),
                default=default, capabilities=capabilities, health=html.escape(registry.describe_health(vendor_id)),
            )
        )
        if models.get(vendor_id):
            shown = ", ".join(f"<code>{html.escape(name)}</code>" for name in models[vendor_id][:MAX_MODELS_SHOWN])
            lines.append(t(who.language, "provider_models", models=shown))
    if not registry.has_public_url:
        lines.append(t(who.language, "providers_no_public_url"))
    await reply(message, "\n".join(lines))


def register(app: Application) -> None:  # type: ignore[type-arg]
    app.add_handler(CommandHandler("providers", providers_command))
