"""bot/logs.py: secrets never reach a log line, in text or JSON."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from bot.logs import REDACTED, JsonFormatter, RedactingFilter, setup_logging

BOT_TOKEN = "7012345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
VENDOR_KEY = "zq-appcode-5f1e2d3c4b5a"
OTHER_TOKEN = "987654321:AA" + "b" * 33  # token-shaped, 35 characters after the colon
SECRETS = [BOT_TOKEN, VENDOR_KEY]


def record(msg: object, args: tuple | dict | None = None, exc_info=None) -> logging.LogRecord:  # type: ignore[no-untyped-def]
    return logging.LogRecord("test", logging.WARNING, __file__, 1, msg, args, exc_info)


def exc_info_with(message: str):  # type: ignore[no-untyped-def]
    try:
        raise RuntimeError(message)
    except RuntimeError:
        return sys.exc_info()


def rendered(rec: logging.LogRecord, formatter: logging.Formatter | None = None) -> str:
    return (formatter or logging.Formatter("%(levelname)s %(message)s")).format(rec)


@pytest.fixture
def redact() -> RedactingFilter:
    return RedactingFilter(SECRETS)


@pytest.mark.parametrize("secret", [BOT_TOKEN, VENDOR_KEY, OTHER_TOKEN])
def test_message_redacted(redact: RedactingFilter, secret: str) -> None:
    rec = record(f"GET https://api.telegram.org/bot{secret}/getMe failed")
    assert redact.filter(rec) is True  # redacts, never drops
    text = rendered(rec)
    assert secret not in text
    assert REDACTED in text
    assert "https://api.telegram.org/bot" in text and "/getMe failed" in text


@pytest.mark.parametrize("secret", [BOT_TOKEN, VENDOR_KEY, OTHER_TOKEN])
def test_args_redacted(redact: RedactingFilter, secret: str) -> None:
    rec = record("calling %s with %r", (f"https://x/bot{secret}/send", {"key": secret}))
    redact.filter(rec)
    text = rendered(rec)
    assert secret not in text
    assert text.count(REDACTED) == 2
    assert rec.args is None or secret not in str(rec.args)


def test_mapping_args_redacted(redact: RedactingFilter) -> None:
    rec = record("token=%(token)s user=%(user)s", ({"token": BOT_TOKEN, "user": "ann"},))
    redact.filter(rec)
    assert rendered(rec) == f"WARNING token={REDACTED} user=ann"


def test_non_string_message_redacted(redact: RedactingFilter) -> None:
    rec = record(ValueError(f"bad key {VENDOR_KEY}"))
    redact.filter(rec)
    assert VENDOR_KEY not in rendered(rec)


@pytest.mark.parametrize("secret", [BOT_TOKEN, VENDOR_KEY, OTHER_TOKEN])
def test_exception_text_redacted(redact: RedactingFilter, secret: str) -> None:
    rec = record("request failed", exc_info=exc_info_with(f"401 for https://x/bot{secret}/getMe"))
    redact.filter(rec)
    text = rendered(rec)
    assert "Traceback" in text and "RuntimeError" in text
    assert secret not in text
    assert REDACTED in text


def test_exception_redacted_even_if_already_formatted(redact: RedactingFilter) -> None:
    rec = record("failed", exc_info=exc_info_with(f"key {VENDOR_KEY}"))
    logging.Formatter().format(rec)  # another handler got there first and cached exc_text
    assert VENDOR_KEY in (rec.exc_text or "")
    redact.filter(rec)
    assert VENDOR_KEY not in rendered(rec)


def test_token_shape_needs_enough_characters(redact: RedactingFilter) -> None:
    # times, ratios and ids are not tokens
    for harmless in ("12:30", "16:9", "task 12345:queued", "123456:short"):
        rec = record(harmless)
        redact.filter(rec)
        assert rendered(rec) == f"WARNING {harmless}"


def test_short_secrets_are_ignored() -> None:
    rec = record("about abstract ab")
    RedactingFilter(["ab", "", None]).filter(rec)  # type: ignore[list-item]
    assert rendered(rec) == "WARNING about abstract ab"


def test_secret_containing_another_is_redacted_whole() -> None:
    long_secret, short_secret = "abcdef-123456-SECRET", "abcdef"
    rec = record(f"x {long_secret} y {short_secret} z")
    RedactingFilter(sorted([short_secret, long_secret], key=len, reverse=True)).filter(rec)
    text = rendered(rec)
    assert "SECRET" not in text and "abcdef" not in text


def test_json_formatter_emits_valid_json(redact: RedactingFilter) -> None:
    rec = record("猫 %s \"quoted\"\nnext line", (BOT_TOKEN,), exc_info=exc_info_with(f"boom {VENDOR_KEY}"))
    redact.filter(rec)
    line = JsonFormatter().format(rec)
    assert "\n" not in line  # one line per record
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "test"
    assert entry["message"] == f"猫 {REDACTED} \"quoted\"\nnext line"
    assert "RuntimeError" in entry["exception"] and VENDOR_KEY not in entry["exception"]
    assert BOT_TOKEN not in line and VENDOR_KEY not in line
    assert entry["time"][:4].isdigit() and "T" in entry["time"]


def test_json_formatter_without_exception() -> None:
    entry = json.loads(JsonFormatter().format(record("plain")))
    assert entry["message"] == "plain"
    assert "exception" not in entry


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_setup_logging_end_to_end(restore_logging: None, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    setup_logging("INFO", fmt, SECRETS)
    log = logging.getLogger("drawbridge.test")
    log.info("sending to https://api.telegram.org/bot%s/sendPhoto", BOT_TOKEN)
    try:
        raise ConnectionError(f"https://vendor/?key={VENDOR_KEY}")
    except ConnectionError:
        log.exception("vendor call failed for %s", OTHER_TOKEN)
    log.debug("not shown %s", BOT_TOKEN)
    output = stream.getvalue()
    assert BOT_TOKEN not in output and VENDOR_KEY not in output and OTHER_TOKEN not in output
    assert "not shown" not in output
    assert "sendPhoto" in output and "vendor call failed" in output and "ConnectionError" in output
    if fmt == "json":
        entries = [json.loads(line) for line in output.splitlines()]
        assert [e["level"] for e in entries] == ["INFO", "ERROR"]
        assert "exception" in entries[1]
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
