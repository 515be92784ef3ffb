"""Handlers, one module per feature, wired in one place."""

from __future__ import annotations

from telegram.ext import Application

from bot.handlers import errors, generate, start, tasks


def register_all(app: Application) -> None:  # type: ignore[type-arg]
    for module in (start, generate, tasks, errors):
        module.register(app)
