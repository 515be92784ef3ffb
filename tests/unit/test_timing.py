"""bot/engine/timing.py: backoff and adaptive polling, pure functions."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.base import PollPolicy
from bot.engine.timing import (
    CALLBACK_SAFETY_POLL_SECONDS,
    MAX_POLL_SECONDS,
    MIN_POLL_SECONDS,
    first_poll_delay,
    jitter,
    next_poll_delay,
    retry_delay,
)

SEEDS = range(50)


# --------------------------------------------------------------------------- #
# jitter and retry_delay
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("spread", [0.0, 0.1, 0.25, 0.5])
def test_jitter_bounded(spread: float) -> None:
    values = [jitter(10.0, random.Random(seed), spread) for seed in SEEDS]
    assert all(10 * (1 - spread) <= v <= 10 * (1 + spread) for v in values)
    if spread:
        assert len(set(values)) > 40  # it actually varies


def test_jitter_deterministic_with_seed() -> None:
    assert jitter(5.0, random.Random(7)) == jitter(5.0, random.Random(7))


def test_retry_delay_grows_then_caps() -> None:
    for seed in SEEDS:
        rng = random.Random(seed)
        delays = [retry_delay(a, rng=rng) for a in range(1, 6)]  # nominal 2 4 8 16 32
        assert delays == sorted(delays) and len(set(delays)) == 5, delays
        for attempt, delay in enumerate(delays, start=1):
            nominal = 2.0 * 2 ** (attempt - 1)
            assert 0.75 * nominal <= delay <= 1.25 * nominal


@pytest.mark.parametrize("attempt", [6, 7, 10, 30, 100])
def test_retry_delay_capped(attempt: int) -> None:
    for seed in SEEDS:
        delay = retry_delay(attempt, rng=random.Random(seed))
        assert 0.75 * 60 <= delay <= 1.25 * 60
        # beyond the cap, the attempt number no longer matters
        assert delay == retry_delay(6, rng=random.Random(seed))


def test_retry_delay_custom_base_and_cap() -> None:
    rng = random.Random(1)
    assert 0.75 <= retry_delay(1, base=1.0, cap=5.0, rng=rng) <= 1.25
    assert retry_delay(9, base=1.0, cap=5.0, rng=random.Random(1)) <= 5.0 * 1.25


def test_retry_delay_attempt_zero_or_negative_is_base() -> None:
    for attempt in (0, -3):
        assert 1.5 <= retry_delay(attempt, rng=random.Random(3)) <= 2.5


def test_retry_after_is_a_floor() -> None:
    for seed in SEEDS:
        assert retry_delay(1, retry_after=30.0, rng=random.Random(seed)) == 30.0
        assert retry_delay(1, retry_after=120.0, rng=random.Random(seed)) == 120.0  # above the cap too
        # a small Retry-After does not shorten the backoff
        small = retry_delay(3, retry_after=0.5, rng=random.Random(seed))
        assert small == retry_delay(3, rng=random.Random(seed))
        assert small >= 6.0


def test_retry_delay_is_jittered() -> None:
    assert len({retry_delay(4, rng=random.Random(seed)) for seed in SEEDS}) > 40


@settings(max_examples=300, deadline=None)
@given(attempt=st.integers(1, 5000), retry_after=st.one_of(st.none(), st.floats(0, 3600)), seed=st.integers(0, 2**32))
def test_retry_delay_always_finite_and_bounded(attempt: int, retry_after: float | None, seed: int) -> None:
    """Any attempt number gives a finite delay within the cap (plus jitter) or
    the Retry-After; a long outage must not overflow the arithmetic."""
    delay = retry_delay(attempt, retry_after, rng=random.Random(seed))
    assert math.isfinite(delay)
    assert delay <= max(60 * 1.25, retry_after or 0)
    assert delay >= min(2.0 * 0.75, 60)


# --------------------------------------------------------------------------- #
# first_poll_delay
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("typical", "eta", "expected"),
    [
        (1000.0, None, MAX_POLL_SECONDS),  # a slow vendor is still looked at within MAX
        (20.0, 100_000.0, MAX_POLL_SECONDS),
        (0.1, None, MIN_POLL_SECONDS),  # a fast one not hammered
        (20.0, 0.0, MIN_POLL_SECONDS),
        (20.0, -5.0, MIN_POLL_SECONDS),
    ],
)
def test_first_poll_delay_clamped(typical: float, eta: float | None, expected: float) -> None:
    assert first_poll_delay(typical, eta) == pytest.approx(expected)


def test_first_poll_delay_follows_expected_duration() -> None:
    # The vendor's own estimate replaces the typical duration.
    assert first_poll_delay(20.0, 8.0) == first_poll_delay(8.0, None)
    assert first_poll_delay(20.0, 8.0) < first_poll_delay(20.0, None)
    # Longer jobs are first looked at later, never after they are expected to end.
    values = [first_poll_delay(t, None) for t in (2.0, 5.0, 10.0, 20.0, 40.0)]
    assert values == sorted(values) and len(set(values)) > 1
    for typical in (2.0, 5.0, 10.0, 20.0):
        assert first_poll_delay(typical, None) <= typical


@settings(max_examples=200, deadline=None)
@given(typical=st.floats(0, 10_000), eta=st.one_of(st.none(), st.floats(-100, 10_000)))
def test_first_poll_delay_within_bounds(typical: float, eta: float | None) -> None:
    assert MIN_POLL_SECONDS <= first_poll_delay(typical, eta) <= MAX_POLL_SECONDS


# --------------------------------------------------------------------------- #
# next_poll_delay
# --------------------------------------------------------------------------- #


def test_callbacks_poll_only_as_safety_net() -> None:
    for progress in (None, 0.1, 0.9):
        assert next_poll_delay(1, 10.0, progress, 20.0, has_callback=True) == CALLBACK_SAFETY_POLL_SECONDS
    assert CALLBACK_SAFETY_POLL_SECONDS > MAX_POLL_SECONDS


def test_without_progress_backs_off_geometrically() -> None:
    delays = [next_poll_delay(p, 10.0, None, 20.0, has_callback=False) for p in range(1, 8)]
    assert delays[0] == pytest.approx(5.0)  # a quarter of the typical duration
    assert delays[1] == pytest.approx(7.5)
    assert delays == sorted(delays)
    assert delays[-1] == MAX_POLL_SECONDS


@pytest.mark.parametrize(
    ("elapsed", "progress"),
    [(10.0, 0.9), (20.0, 0.8), (9.0, 0.75), (30.0, 0.95), (4.0, 0.5), (2.0, 0.4), (10.0, 0.7)],
)
def test_with_progress_aims_just_after_predicted_end(elapsed: float, progress: float) -> None:
    remaining = elapsed * (1 - progress) / progress
    assert MIN_POLL_SECONDS <= remaining <= MAX_POLL_SECONDS / 2
    delay = next_poll_delay(3, elapsed, progress, 20.0, has_callback=False)
    assert remaining <= delay <= remaining * 1.1 + 0.5, (remaining, delay)


def test_with_progress_ignores_backoff_counter() -> None:
    # the prediction, not the number of earlier polls, decides
    assert next_poll_delay(1, 10.0, 0.8, 20.0, False) == next_poll_delay(9, 10.0, 0.8, 20.0, False)
    assert next_poll_delay(1, 10.0, 0.8, 20.0, False) == next_poll_delay(1, 10.0, 0.8, 500.0, False)


def test_with_progress_far_from_done_is_capped() -> None:
    # 5% after 100 s: 1900 s predicted, but the next look is within MAX
    assert next_poll_delay(1, 100.0, 0.05, 20.0, has_callback=False) == MAX_POLL_SECONDS
    # and it is never earlier than the minimum, even right at the end
    assert next_poll_delay(1, 100.0, 0.999, 20.0, has_callback=False) >= MIN_POLL_SECONDS


@pytest.mark.parametrize("progress", [0.0, 0.01, float("nan")])
def test_unusable_progress_falls_back_to_backoff(progress: float) -> None:
    assert next_poll_delay(2, 10.0, progress, 20.0, has_callback=False) == pytest.approx(7.5)


@pytest.mark.parametrize("progress", [1.0, 1.5])
def test_finished_drawing_is_polled_again_at_once(progress: float) -> None:
    """Progress 1 while not yet done means uploading (zhiqite status 5):
    the result is a moment away, so a backoff would only add lag."""
    assert next_poll_delay(2, 10.0, progress, 20.0, has_callback=False) == MIN_POLL_SECONDS


def test_zero_elapsed_falls_back_to_backoff() -> None:
    assert next_poll_delay(1, 0.0, 0.5, 20.0, has_callback=False) == pytest.approx(5.0)


@settings(max_examples=300, deadline=None)
@given(
    polls=st.integers(0, 5000),
    elapsed=st.floats(0, 100_000),
    progress=st.one_of(st.none(), st.floats(allow_nan=True)),
    typical=st.floats(0, 3600),
)
def test_next_poll_delay_within_bounds(polls: int, elapsed: float, progress: float | None, typical: float) -> None:
    """Without callbacks every delay is within [MIN, MAX], for however many
    polls a long task (TASK_TIMEOUT_SECONDS has no upper bound) needs."""
    delay = next_poll_delay(polls, elapsed, progress, typical, has_callback=False)
    assert MIN_POLL_SECONDS <= delay <= MAX_POLL_SECONDS


# --------------------------------------------------------------------------- #
# Simulation: how many queries does a 30-second job cost?
# --------------------------------------------------------------------------- #


def simulate(job_seconds: float, typical: float, eta: float | None = None) -> tuple[int, list[float]]:
    """A vendor job with linear progress; the poller as outcomes.py drives it."""
    t = first_poll_delay(typical, eta)
    polls = 0
    times = []
    while True:
        polls += 1
        times.append(round(t, 2))
        if t >= job_seconds:
            return polls, times
        progress = t / job_seconds
        t += next_poll_delay(polls, t, progress, typical, has_callback=False)
        assert polls < 100


def test_thirty_second_job_takes_at_most_four_queries() -> None:
    queries, times = simulate(30.0, 20.0)
    print(f"\n30 s job, linear progress, typical 20 s: {queries} queries at t={times}")
    assert queries <= 4
    # and it notices completion soon after it happens
    assert times[-1] - 30.0 <= 0.1 * 30.0


@pytest.mark.parametrize("job_seconds", [5.0, 12.0, 45.0, 90.0])
def test_other_durations_notice_completion_promptly(job_seconds: float) -> None:
    queries, times = simulate(job_seconds, 20.0)
    lateness = times[-1] - job_seconds
    print(f"\n{job_seconds:.0f} s job: {queries} queries, {lateness:.1f} s late")
    assert lateness <= max(first_poll_delay(20.0, None), 0.25 * job_seconds)
    assert queries <= 2 + job_seconds / 3  # never busier than one query per 3 s on average


# --------------------------------------------------------------------------- #
# per-vendor poll policies
# --------------------------------------------------------------------------- #

SILENT = PollPolicy(callback_silence_seconds=300.0, min_interval_seconds=20.0)


def test_with_callbacks_a_silent_vendor_is_first_asked_when_the_callback_is_overdue() -> None:
    assert first_poll_delay(25.0, None, SILENT, has_callback=True) == 300.0
    assert next_poll_delay(1, 10.0, 0.5, 25.0, has_callback=True, policy=SILENT) == 300.0


def test_without_callbacks_a_silent_vendor_is_polled_no_more_often_than_it_asks() -> None:
    assert first_poll_delay(25.0, None, SILENT, has_callback=False) == 20.0
    for progress in (None, 0.1, 0.9, 0.99, 1.0):
        for polls in range(1, 6):
            assert next_poll_delay(polls, 30.0, progress, 25.0, has_callback=False, policy=SILENT) >= 20.0


def test_vendors_that_do_not_mind_keep_adaptive_polling() -> None:
    default = PollPolicy()
    assert first_poll_delay(20.0, None, default, has_callback=True) == first_poll_delay(20.0, None)
    assert next_poll_delay(2, 10.0, 0.5, 20.0, has_callback=False, policy=default) == pytest.approx(10.0 * 1.05 + 0.3)
    assert next_poll_delay(1, 10.0, 0.5, 20.0, has_callback=True, policy=default) == CALLBACK_SAFETY_POLL_SECONDS
