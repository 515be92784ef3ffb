"""Sizes of every benchmark, full and --quick. Every load loop is bounded
by these counts and timeouts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Config:
    quick: bool = False
    profile: str = ""  # "", "py-spy" or "cprofile": profile each bot subprocess

    # 1. throughput at saturation: a closed loop keeps ``tp_inflight`` jobs
    # open (a new /imagine for every photo delivered), each in a new chat.
    tp_inflight: int = 120
    tp_vendor_seconds: float = 2.0
    tp_warmup: float = 20.0
    tp_window: float = 30.0
    sustained_warmup: float = 8.0  # 30 jobs/s open loop (limiter off): CPU
    sustained_window: float = 20.0
    echo_warmup: float = 3.0
    echo_window: float = 20.0

    # 2. acknowledgement latency: ``rate`` /imagine per second for ``seconds``
    ack_levels: tuple[tuple[int, float], ...] = ((10, 8.0), (30, 10.0), (100, 5.0), (200, 5.0))
    ack_vendor_seconds: float = 20.0
    ack_timeout: float = 40.0  # after the last update, for the last reply
    ack_diagnostic_rate: int = 200  # also run once with the bot's rate limiter off

    # 3 + 4. delivery lag and vendor queries: jobs of these lengths, alternating
    lag_job_seconds: tuple[float, ...] = (5.0, 30.0)
    lag_jobs_each: int = 12
    lag_rate: float = 1.0  # jobs per second (low: measure the engine, not the queue)

    # 5. scale
    scale_tasks: int = 10_000
    tick_rounds: int = 200
    scale_load_jobs: int = 40

    # 7. comfyui: jobs queued at once, 5 s each at the fake (a short and a long queue)
    comfyui_jobs: int = 20
    comfyui_short_jobs: int = 5

    extra: dict[str, object] = field(default_factory=dict)


FULL = Config()

QUICK = Config(
    quick=True,
    tp_inflight=60,
    tp_warmup=10.0,
    tp_window=8.0,
    sustained_warmup=5.0,
    sustained_window=5.0,
    echo_warmup=2.0,
    echo_window=6.0,
    ack_levels=((30, 3.0), (200, 2.0)),
    ack_timeout=15.0,
    ack_diagnostic_rate=0,
    lag_jobs_each=2,
    lag_rate=2.0,
    tick_rounds=50,
    scale_load_jobs=10,
    comfyui_jobs=8,
    comfyui_short_jobs=3,
)
