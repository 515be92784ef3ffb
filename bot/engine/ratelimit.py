"""Per-vendor pacing: at most ``max_concurrent_jobs`` calls in flight and at
least ``min_request_interval`` between calls (aichatapi: 1 request/second),
shared by submits and polls."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from providers.base import Provider


class _Pace:
    def __init__(self, interval: float, concurrency: int) -> None:
        self.interval = interval
        self.semaphore = asyncio.Semaphore(concurrency)
        self.lock = asyncio.Lock()
        self.next_at = 0.0


class VendorGate:
    def __init__(self) -> None:
        self._paces: dict[str, _Pace] = {}

    def _pace(self, provider: Provider) -> _Pace:
        pace = self._paces.get(provider.id)
        if pace is None:
            pace = _Pace(provider.min_request_interval, provider.max_concurrent_jobs)
            self._paces[provider.id] = pace
        return pace

    @contextlib.asynccontextmanager
    async def slot(self, provider: Provider) -> AsyncIterator[None]:
        pace = self._pace(provider)
        async with pace.semaphore:
            if pace.interval > 0:
                async with pace.lock:
                    wait = pace.next_at - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    pace.next_at = time.monotonic() + pace.interval
            yield
