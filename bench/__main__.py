"""python -m bench [--quick] [--only NAME ...] [--profile py-spy|cprofile]

Runs the benchmarks one after the other (the whole run stays under about ten
minutes on two cores; --quick takes about two), prints the table, and writes
bench/results/bench-<time>.json and .png (also latest.json / latest.png)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import platform
import subprocess
import sys
import time
import traceback
from typing import Any

from bench import comfyui, delivery, harness, latency, policy, scale, throughput
from bench.config import FULL, QUICK
from bench.harness import REPO, RESULTS
from bench.report import plot, rows_for, table, write_json

BENCHMARKS = {
    "throughput": throughput.run,
    "ack": latency.run,
    "lag": delivery.run,
    "scale": scale.run,
    "policy": policy.run,
    "comfyui": comfyui.run,
}


def log(message: str, started: float) -> None:
    print(f"[bench {time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


async def main_async(args: argparse.Namespace) -> int:
    cfg = QUICK if args.quick else FULL
    if args.profile:
        cfg = dataclasses.replace(cfg, profile=args.profile)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.diagnose:
        (RESULTS / "profiles").mkdir(parents=True, exist_ok=True)
        if "sql" in args.diagnose:
            harness.DIAGNOSE_ENV["BENCH_SQL_STATS"] = str(RESULTS / "profiles" / "sql-{tag}.json")
        if "loops" in args.diagnose:
            harness.DIAGNOSE_ENV["BENCH_LOOP_STATS"] = str(RESULTS / "profiles" / "loops-{tag}.json")
        if "no-limiter" in args.diagnose:
            harness.DIAGNOSE_ENV["BENCH_NO_LIMITER"] = "1"
        if "httpx-transport" in args.diagnose:
            harness.DIAGNOSE_ENV["BENCH_HTTPX_TRANSPORT"] = "1"
    started = time.monotonic()
    results: dict[str, Any] = {}
    failed = False
    for name in args.only or list(BENCHMARKS):
        log(f"{name} …", started)
        t0 = time.monotonic()
        try:
            results[name] = await BENCHMARKS[name](cfg)
        except Exception as exc:  # noqa: BLE001 - keep going: the other figures still count
            failed = True
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"{name} done in {time.monotonic() - t0:.0f} s", started)

    rows = rows_for(results)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    payload = {
        "when": dt.datetime.now().isoformat(timespec="seconds"),
        "commit": git_commit(),
        "mode": "quick" if cfg.quick else "full",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "config": dataclasses.asdict(cfg),
        "seconds": round(time.monotonic() - started, 1),
        "results": results,
    }
    json_path, png_path = RESULTS / f"bench-{stamp}.json", RESULTS / f"bench-{stamp}.png"
    write_json(json_path, payload, rows)
    (RESULTS / "latest.json").write_text(json_path.read_text())
    plotted = plot(png_path, results)
    if plotted:
        (RESULTS / "latest.png").write_bytes(png_path.read_bytes())

    print()
    print(f"Drawbridge benchmarks ({payload['mode']}, {payload['seconds']:.0f} s, commit {payload['commit'] or '?'},"
          f" {os.cpu_count()} CPUs)")
    print()
    print(table(rows))
    print()
    missed = [r for r in rows if r.met is False]
    print(f"{sum(1 for r in rows if r.met)} targets met, {len(missed)} missed.")
    print(f"Wrote {json_path.relative_to(REPO)}" + (f" and {png_path.relative_to(REPO)}" if plotted else ""))
    if failed:
        return 1
    return 1 if (args.strict and missed) else 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about two minutes)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--profile", choices=("py-spy", "cprofile"),
                        help="profile every bot subprocess into bench/results/profiles/")
    parser.add_argument("--diagnose", nargs="+", choices=("sql", "loops", "no-limiter", "httpx-transport"), default=[],
                        help="run the bots under bench.botwrap (see there): SQL time per statement, scheduler ticks,"
                             " the rate limiter off, or Telegram over PTB's httpx transport; written to bench/results/profiles/")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
