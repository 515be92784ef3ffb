"""Summarise a py-spy ``--format raw`` profile (collapsed stacks):

    python -m bench.pyspy_summary bench/results/profiles/throughput.txt [--top 30] [--match TEXT]

Prints the share of samples per thread, the functions with the most
inclusive time (anywhere on the stack) and the most self time (on top),
filtered by ``--match`` (a substring of the frame, e.g. ``bot/``)."""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME_LINE = re.compile(r"\s*\(([^)]*):\d+\)$")


def frame_name(frame: str) -> str:
    """'func (path/file.py:123)' → 'func (path/file.py)' (lines merged)."""
    return _FRAME_LINE.sub(lambda m: f" ({m.group(1)})", frame)


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--match", default="")
    args = parser.parse_args()
    stacks = load(args.profile)
    total = sum(n for _, n in stacks) or 1
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    for frames, count in stacks:
        threads[frames[0]] += count
        names = [frame_name(f) for f in frames[1:]]
        for name in set(names):
            inclusive[name] += count
        if names:
            self_time[names[-1]] += count
    print(f"{total} samples")
    print("\nby thread:")
    for name, n in threads.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    for title, counter in (("inclusive", inclusive), ("self", self_time)):
        print(f"\ntop {title}:")
        shown = 0
        for name, n in counter.most_common():
            if args.match and args.match not in name:
                continue
            print(f"  {100 * n / total:5.1f}%  {name}")
            shown += 1
            if shown >= args.top:
                break


if __name__ == "__main__":
    main()
