"""Drawbridge: the Telegram side (app wiring, handlers, engine, HTTP server)."""

import os

# Opt in to python-telegram-bot's coming behaviour (RetryAfter.retry_after as
# a timedelta) now, instead of a deprecation warning on every flood wait.
os.environ.setdefault("PTB_TIMEDELTA", "1")
