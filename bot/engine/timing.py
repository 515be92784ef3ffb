"""When to try again: pure functions, unit-tested, no clocks inside."""

from __future__ import annotations

import random

from providers.base import PollPolicy

DEFAULT_POLICY = PollPolicy()

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


def first_poll_delay(
    typical_seconds: float, eta_seconds: float | None,
    policy: PollPolicy = DEFAULT_POLICY, has_callback: bool = False,
) -> float:
    """An early first look (a quarter of the expected time): it tells us the
    queue position and progress, from which the next polls are aimed. A
    vendor that asks not to be polled while callbacks come is first asked
    only when its callback is overdue."""
    if has_callback and policy.callback_silence_seconds is not None:
        return policy.callback_silence_seconds
    expected = eta_seconds if eta_seconds is not None else typical_seconds
    return _bounded(expected * 0.25, policy)


def next_poll_delay(
    polls: int,
    elapsed: float,
    progress: float | None,
    typical_seconds: float,
    has_callback: bool,
    policy: PollPolicy = DEFAULT_POLICY,
) -> float:
    """Adaptive polling. With a progress figure, aim at the predicted end;
    without one, back off geometrically from the vendor's typical duration.
    With callbacks, polling is only a safety net for a lost callback."""
    if has_callback:
        return policy.callback_silence_seconds or CALLBACK_SAFETY_POLL_SECONDS
    if progress is not None and progress >= 1.0:
        return _bounded(MIN_POLL_SECONDS, policy)  # drawn, now uploading: a moment away
    if progress is not None and 0.02 <= progress < 1.0 and elapsed > 0:
        # Vendors charge per query: aim just past the predicted end rather
        # than ticking along with the progress bar.
        remaining = elapsed * (1 - progress) / progress
        delay = remaining * 1.05 + 0.3
    else:
        delay = typical_seconds * 0.25 * 1.5 ** min(30, max(0, polls - 1))
    return _bounded(delay, policy)


def _bounded(delay: float, policy: PollPolicy) -> float:
    """Within [MIN, MAX] poll seconds, and never under the vendor's own minimum."""
    floor = max(MIN_POLL_SECONDS, policy.min_interval_seconds)
    return max(floor, min(max(floor, MAX_POLL_SECONDS), delay))
