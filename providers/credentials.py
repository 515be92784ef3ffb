"""Credentials: declared on each adapter class (which settings, how they
combine), looked up in one place, and kept out of every text an adapter
produces (exception messages, log lines)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class CredentialError(ValueError):
    """A vendor is half configured; the message names what to set."""


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


def variable(name: str) -> str:
    """The environment variable of a Settings field."""
    return name.upper()


@dataclass(frozen=True)
class Credentials:
    """The settings that enable a vendor: any one of ``modes``, tried in
    order, each a group of Settings fields that must all be set (zhiqite:
    an APP code, or an access key id *and* secret)."""

    modes: tuple[tuple[str, ...], ...]

    @classmethod
    def one(cls, *names: str) -> Credentials:
        return cls((tuple(names),))

    def describe(self) -> str:
        """What to set, for `check` and error messages."""
        return ", or ".join(" + ".join(variable(n) for n in mode) for mode in self.modes)

    def lookup(self, settings: Any) -> dict[str, str] | None:
        """The values of the first complete mode; None when the vendor is not
        configured at all; CredentialError when a mode is half set."""
        partial: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        for mode in self.modes:
            values = {name: secret_value(getattr(settings, name, None)) for name in mode}
            given = tuple(name for name, value in values.items() if value)
            if len(given) == len(mode):
                return {name: value for name, value in values.items() if value}
            if given and partial is None:
                partial = (given, tuple(name for name in mode if name not in given))
        if partial is not None:
            given, missing = partial
            raise CredentialError(
                f"{' and '.join(map(variable, missing))} must be set together with "
                f"{' and '.join(map(variable, given))}"
            )
        return None
