"""Handlers' fire-and-forget work: tracked, logged when it fails, drained on stop within bounds."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.background import Background


async def test_drain_waits_for_short_work_and_cuts_long_work_short(caplog: pytest.LogCaptureFixture) -> None:
    background = Background()
    finished: list[str] = []

    async def work(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        finished.append(name)

    quick = background.spawn(work("quick", 0.01))
    stuck = background.spawn(work("stuck", 3600))
    assert len(background) == 2
    with caplog.at_level(logging.WARNING):
        await background.drain(timeout=0.2)
    assert finished == ["quick"] and quick.done()
    assert stuck.cancelled()
    assert len(background) == 0
    assert "1 background task(s) cut short" in caplog.text


async def test_a_failure_is_logged_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    background = Background()

    async def broken() -> None:
        raise RuntimeError("Telegram said no")

    with caplog.at_level(logging.ERROR):
        task = background.spawn(broken())
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # the done callback
    assert "background work failed" in caplog.text and "Telegram said no" in caplog.text
    await background.drain(timeout=0.1)  # nothing left: returns at once
