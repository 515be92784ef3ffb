"""Benchmarks: the real bot (``python -m bot`` in a subprocess) against the
fake Telegram Bot API and the fake zhiqite vendor on loopback.

``python -m bench`` (or ``make bench``) runs them all and prints a table of
figures beside their targets; ``python -m bench --quick`` is a short smoke
run. Results go to ``bench/results/`` (JSON + PNG). See bench/README.md.
"""
