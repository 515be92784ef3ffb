"""Credentials: read once from settings, and kept out of every text an
adapter produces (exception messages, log lines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def secret_value(value: Any) -> str | None:
    """The text of a setting (pydantic SecretStr or plain), None when unset or blank."""
    if value is None:
        return None
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return text.strip() or None


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
