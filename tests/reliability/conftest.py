"""Fault-injection tests: the real bot (in-process, real HTTP on loopback)
against the fake Telegram and fake vendors, with faults switched on.

The end-to-end fixtures are shared; the vendor fixtures here are faster
variants (short jobs, quick callback retries) so that a test that waits out
one retry still takes only a few seconds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.conftest import ZHIQITE_APP_CODE, clean_environment, telegram, zhiqite  # noqa: F401
from tests.fakes.aihuihua import FakeAihuihua
from tests.fakes.server import serve
from tests.fakes.zhiqite import FakeZhiqite
from tests.reliability.support import Arrivals, timed


@pytest.fixture
async def fast_zhiqite() -> AsyncIterator[tuple[FakeZhiqite, str, Arrivals]]:
    """zhiqite with short jobs, callbacks retried within ~0.1 s, and every
    request's arrival time recorded (the fake records no times)."""
    fake = FakeZhiqite(
        app_code=ZHIQITE_APP_CODE, queue_seconds=0.1, run_seconds=0.3, upload_seconds=0.05,
        callback_delay_scale=0.02,
    )
    arrivals = Arrivals()
    async with serve(timed(fake.app, arrivals)) as url:
        yield fake, url, arrivals
    await fake.aclose()


@pytest.fixture
async def fast_aihuihua() -> AsyncIterator[tuple[FakeAihuihua, str, Arrivals]]:
    """aihuihua whose tasks end ~0.6 s after submit: late enough that its one
    callback never races our own bookkeeping of the submit."""
    fake = FakeAihuihua(queue_seconds=0.15, submitted_seconds=0.15, run_seconds=0.3)
    arrivals = Arrivals()
    async with serve(timed(fake.app, arrivals)) as url:
        yield fake, url, arrivals
    await fake.aclose()
