"""Handlers, one module per feature, wired in one place."""

from __future__ import annotations

from telegram.ext import Application

from bot.handlers import admin, buttons, errors, faceswap, generate, photos, providers_cmd, settings, start, tasks


def register_all(app: Application) -> None:  # type: ignore[type-arg]
    # Commands first: a text handler registered earlier would take /commands too.
    for module in (start, tasks, settings, providers_cmd, admin, faceswap, generate, photos, buttons, errors):
        module.register(app)
    start.register_fallback(app)
    buttons.register_fallback(app)
