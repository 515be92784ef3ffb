"""Bot-wide objects, created in the app's start-up and reached from handlers
through ``services(context)``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
from telegram.ext import CallbackContext

from bot.config import Settings
from bot.engine import Engine
from bot.keyboards import CallbackCodec
from providers.registry import Registry
from storage import Store

SERVICES_KEY = "drawbridge"


@dataclass
class Services:
    settings: Settings
    store: Store
    registry: Registry
    engine: Engine
    codec: CallbackCodec
    http: httpx.AsyncClient
    # Runs a coroutine without holding up the update being handled; a stop
    # waits for it, within bounds (bot.background).
    background: Callable[[Coroutine[Any, Any, Any]], object]


def services(context: CallbackContext) -> Services:  # type: ignore[type-arg]
    return context.application.bot_data[SERVICES_KEY]
