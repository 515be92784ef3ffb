"""Every test runs on the event loop the bot runs on (bot/__main__.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from bot.__main__ import event_loop_factory


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], Any]] | None:
    factory = event_loop_factory()
    return {"bot-loop": factory} if factory is not None else None
