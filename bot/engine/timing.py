"""When to try again: pure functions, unit-tested, no clocks inside."""

from __future__ import annotations

import random

MIN_POLL_SECONDS = 1.0
MAX_POLL_SECONDS = 20.0
# With callbacks on, polling is only a safety net for a lost callback.
CALLBACK_SAFETY_POLL_SECONDS = 30.0


def jitter(seconds: float, rng: random.Random | None = None, spread: float = 0.1) -> float:
    """±spread, so many tasks started together do not poll in lock-step."""
    rng = rng or random
    return seconds * (1 + rng.uniform(-spread, spread))


def retry_delay(
    attempt: int, retry_after: float | None = None, base: float = 2.0, cap: float = 60.0,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with jitter for attempt 1, 2, 3…; a vendor's or
    Telegram's Retry-After is a floor."""
    delay = min(cap, base * 2 ** min(30, max(0, attempt - 1)))
    delay = jitter(delay, rng, spread=0.25)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def first_poll_delay(typical_seconds: float, eta_seconds: float | None) -> float:
    """An early first look (a quarter of the expected time): it tells us the
    queue position and progress, from which the next polls are aimed."""
    expected = eta_seconds if eta_seconds is not None else typical_seconds
    return max(MIN_POLL_SECONDS, min(MAX_POLL_SECONDS, expected * 0.25))


def next_poll_delay(
    polls: int,
    elapsed: float,
    progress: float | None,
    typical_seconds: float,
    has_callback: bool,
) -> float:
    """Adaptive polling. With a progress figure, aim at the predicted end;
    without one, back off geometrically from the vendor's typical duration."""
    if has_callback:
        return CALLBACK_SAFETY_POLL_SECONDS
    if progress is not None and progress >= 1.0:
        return MIN_POLL_SECONDS  # drawn, now uploading: it is a moment away
    if progress is not None and 0.02 <= progress < 1.0 and elapsed > 0:
        # Vendors charge per query: aim just past the predicted end rather
        # than ticking along with the progress bar.
        remaining = elapsed * (1 - progress) / progress
        delay = remaining * 1.05 + 0.3
    else:
        delay = typical_seconds * 0.25 * 1.5 ** min(30, max(0, polls - 1))
    return max(MIN_POLL_SECONDS, min(MAX_POLL_SECONDS, delay))
