"""PROVIDERS_FILE (PRODUCT.md §7): several named instances of one vendor
kind, e.g. two OpenAI-compatible relays with different models.

    [[providers]]
    id = "relay-a"              # what --provider and /settings name
    kind = "openai"             # a vendor id: openai, mjproxy, juhe, ...
    base_url = "https://relay.example/v1"
    secret_env = "RELAY_A_KEY"  # the variable holding its key (never the key)
    model = "flux-1-schnell"    # where the kind has models
    price = 3                   # optional: credits per job

An instance is the kind's adapter built from the bot's settings with that
entry's base URL, secret and model put in place of the kind's own
variables; routing, health and fallback then treat it as one more vendor.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from providers.credentials import CredentialError

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,31}$"


class ProvidersFileError(ValueError):
    """PROVIDERS_FILE cannot be used; the message names the entry and why."""


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN)
    kind: str
    base_url: str = ""
    secret_env: str = Field(default="", pattern=r"^$|^[A-Za-z_][A-Za-z0-9_]*$")
    model: str = ""
    price: int | None = Field(default=None, ge=0)


def read_instances(path: str | Path) -> list[Instance]:
    try:
        data = tomllib.loads(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise ProvidersFileError(f"PROVIDERS_FILE {path}: cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProvidersFileError(f"PROVIDERS_FILE {path}: not valid TOML ({exc})") from None
    entries = data.get("providers", [])
    if set(data) - {"providers"} or not isinstance(entries, list):
        raise ProvidersFileError(f"PROVIDERS_FILE {path}: expected only [[providers]] entries")
    instances: list[Instance] = []
    for number, entry in enumerate(entries, 1):
        try:
            instances.append(Instance.model_validate(entry))
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "entry"
            raise ProvidersFileError(
                f"PROVIDERS_FILE {path}: providers entry {number}: {where}: {problem['msg']}"
            ) from None
    seen: set[str] = set()
    for instance in instances:
        if instance.id in seen:
            raise ProvidersFileError(f"PROVIDERS_FILE {path}: id '{instance.id}' is used twice")
        seen.add(instance.id)
    return instances


class SettingsView:
    """The bot's settings with some fields replaced: what an instance's
    adapter is built from."""

    def __init__(self, settings: Any, overrides: Mapping[str, Any]) -> None:
        self._settings = settings
        self._overrides = dict(overrides)

    def __getattr__(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._settings, name)


def credential_fields(kind: Any) -> set[str]:
    """Every Settings field that holds one of ``kind``'s credentials."""
    fields = {name for mode in getattr(getattr(kind, "credentials", None), "modes", ()) for name in mode}
    secret = kind.secret_setting() if hasattr(kind, "secret_setting") else None
    return fields | ({secret} if secret else set())


def instance_settings(
    instance: Instance, kind: Any, settings: Any, environ: Mapping[str, str] = os.environ
) -> SettingsView:
    """``settings`` as ``kind`` (an adapter class) should see them for this
    instance. Raises ProvidersFileError naming what is wrong."""
    where = f"PROVIDERS_FILE entry '{instance.id}' ({instance.kind})"
    overrides: dict[str, Any] = {}
    if instance.base_url:
        setting = getattr(kind, "base_url_setting", None)
        if setting is None:
            raise ProvidersFileError(f"{where}: this kind has no base URL to set")
        if not instance.base_url.startswith(("http://", "https://")):
            raise ProvidersFileError(f"{where}: base_url must be an http(s) URL")
        overrides[setting] = instance.base_url.rstrip("/")
    field = kind.secret_setting()
    if instance.base_url:
        # Another host: none of the kind's own credentials (OPENAI_API_KEY, a
        # zhiqite key pair, ...) may go there; only secret_env's, below.
        for name in credential_fields(kind):
            if name != getattr(kind, "base_url_setting", None):
                overrides[name] = None
    if instance.secret_env:
        secret = environ.get(instance.secret_env, "").strip()
        if not secret:
            raise ProvidersFileError(f"{where}: {instance.secret_env} is not set")
        if field is None:
            raise ProvidersFileError(f"{where}: this kind takes no single secret for secret_env")
        overrides[field] = secret
    if instance.model:
        setting = getattr(kind, "model_setting", None)
        if setting is None:
            raise ProvidersFileError(f"{where}: this kind has no model to choose")
        overrides[setting] = instance.model
    return SettingsView(settings, overrides)


def build_instance(instance: Instance, kind: Any, settings: Any, client: Any,
                   environ: Mapping[str, str] = os.environ) -> Any:
    """The adapter of one instance, under the instance's id."""
    view = instance_settings(instance, kind, settings, environ)
    try:
        adapter = kind.from_settings(view, client)
    except CredentialError as exc:
        raise ProvidersFileError(f"PROVIDERS_FILE entry '{instance.id}': {exc}") from None
    if adapter is None:
        need = kind.credentials.describe() if hasattr(kind, "credentials") else "its base URL"
        raise ProvidersFileError(
            f"PROVIDERS_FILE entry '{instance.id}' ({instance.kind}) has no credentials: "
            f"give secret_env, or set {need}"
        )
    adapter.id = instance.id
    adapter.title = f"{adapter.title} · {instance.id}"
    adapter.price = instance.price
    return adapter


def instance_secrets(path: str, environ: Mapping[str, str] = os.environ) -> list[str]:
    """The secrets PROVIDERS_FILE points at, for log redaction (an unusable
    file gives none: building the registry reports it)."""
    if not path:
        return []
    try:
        instances = read_instances(path)
    except ProvidersFileError:
        return []
    values = (environ.get(i.secret_env, "").strip() for i in instances if i.secret_env)
    return [value for value in values if value]
