"""Vendor id → adapter: which vendors are configured, and which can serve a
request. Routing is decided here, once, at submit time."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from providers.base import Provider
from providers.errors import ProviderError
from providers.a1111 import A1111
from providers.comfyui import ComfyUI
from providers.aichatapi import Aichatapi
from providers.aihuihua import Aihuihua
from providers.apispace import Apispace
from providers.instances import ProvidersFileError, build_instance, read_instances
from providers.juhe import Juhe
from providers.mjproxy import MjProxy
from providers.openai import OpenAI
from providers.sandbox import Sandbox
from providers.types import Capability
from providers.zhiqite import Zhiqite

# Every real vendor adapter, in the order "first configured" means (PRODUCT.md §2).
VENDOR_CLASSES: tuple[type[Provider], ...] = (Aichatapi, Apispace, Zhiqite, Juhe, Aihuihua, OpenAI, MjProxy, A1111, ComfyUI)
ALL_IDS: tuple[str, ...] = tuple(cls.id for cls in VENDOR_CLASSES) + (Sandbox.id,)
# What a PROVIDERS_FILE entry's ``kind`` may name.
KINDS: dict[str, type[Provider]] = {cls.id: cls for cls in VENDOR_CLASSES}

# A vendor failing this many submits in a row rests for COOLDOWN_SECONDS.
FAILURES_BEFORE_COOLDOWN = 3
COOLDOWN_SECONDS = 60.0


class RoutingError(Exception):
    """No configured vendor can serve the request; ``reason`` picks the message."""

    def __init__(
        self, reason: str, capability: Capability, provider: str | None = None, limit: int | None = None
    ) -> None:
        super().__init__(f"{reason}: {capability} via {provider or 'any'}")
        # "unknown_provider" | "provider_cannot" | "provider_disabled" |
        # "vendor_prompt_limit" (``limit`` characters) | "none_capable"
        self.reason = reason
        self.capability = capability
        self.provider = provider
        self.limit = limit


@dataclass
class Health:
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    rest_reason: str | None = None  # why it cools down: a kind ("quota"), or None for errors
    disabled_reason: str | None = None  # auth / quota without an end: off until restart
    last_error: str | None = None
    successes: int = 0
    failures: int = 0

    def usable(self, now: float) -> bool:
        return self.disabled_reason is None and now >= self.cooldown_until

    def describe(self, now: float) -> str:
        if self.disabled_reason:
            return f"disabled ({self.disabled_reason})"
        if now < self.cooldown_until and self.rest_reason:
            return f"resting ({self.rest_reason}, {_duration(self.cooldown_until - now)})"
        if now < self.cooldown_until:
            return f"cooling down ({int(self.cooldown_until - now)} s)"
        return "ok"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


@dataclass
class Registry:
    providers: dict[str, Provider]
    default_id: str
    has_public_url: bool
    health: dict[str, Health] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for vendor_id in self.providers:
            self.health.setdefault(vendor_id, Health())

    @classmethod
    def from_settings(cls, settings: Any, client: httpx.AsyncClient) -> Registry:
        providers: dict[str, Provider] = {}
        for vendor_cls in VENDOR_CLASSES:
            adapter = vendor_cls.from_settings(settings, client)
            if adapter is not None:
                providers[adapter.id] = adapter
        if getattr(settings, "providers_file", ""):
            for instance in read_instances(settings.providers_file):
                kind = KINDS.get(instance.kind)
                if kind is None:
                    raise ProvidersFileError(
                        f"PROVIDERS_FILE entry '{instance.id}': unknown kind '{instance.kind}'"
                        f" (kinds: {', '.join(KINDS)})"
                    )
                if instance.id in ALL_IDS:
                    raise ProvidersFileError(
                        f"PROVIDERS_FILE entry '{instance.id}': that id is a vendor's own; choose another"
                    )
                providers[instance.id] = build_instance(instance, kind, settings, client)
        if not providers or settings.sandbox_enabled:
            providers[Sandbox.id] = Sandbox.from_settings(settings, client)
        default = settings.default_provider or next(iter(providers))
        if default not in providers:
            raise ValueError(
                f"'{default}' is not configured (configured: {', '.join(providers)})"
            )
        return cls(providers, default, bool(settings.public_base_url))

    def get(self, vendor_id: str) -> Provider | None:
        return self.providers.get(vendor_id)

    def capabilities(self, provider: Provider) -> frozenset[Capability]:
        return provider.available_capabilities(self.has_public_url)

    def can(self, provider: Provider, capability: Capability) -> bool:
        return capability in self.capabilities(provider)

    def candidates(
        self,
        capability: Capability,
        forced: str | None = None,
        preferred: str | None = None,
        exclude: Iterable[str] = (),
        count: int = 1,
        prompt_chars: int = 0,
    ) -> list[Provider]:
        """Vendors to try, best first. ``forced`` (--provider) allows only that
        vendor; otherwise the preferred, then the default, then the rest,
        with those that can make ``count`` images in one job ahead. A vendor
        whose prompt limit is below ``prompt_chars`` is left out."""
        now = time.monotonic()
        if forced:
            provider = self.providers.get(forced)
            if provider is None:
                raise RoutingError("unknown_provider", capability, forced)
            if not self.can(provider, capability):
                raise RoutingError("provider_cannot", capability, forced)
            if self.health[forced].disabled_reason is not None:
                raise RoutingError("provider_disabled", capability, forced)
            if not _prompt_fits(provider, prompt_chars):
                raise RoutingError("vendor_prompt_limit", capability, forced, provider.max_prompt_chars)
            return [provider]
        order = [preferred, self.default_id, *self.providers]
        seen: set[str] = set(exclude)
        result: list[Provider] = []
        too_short: list[int] = []  # limits of capable vendors the prompt does not fit
        for vendor_id in order:
            if not vendor_id or vendor_id in seen or vendor_id not in self.providers:
                continue
            seen.add(vendor_id)
            provider = self.providers[vendor_id]
            if not (self.can(provider, capability) and self.health[vendor_id].usable(now)):
                continue
            if _prompt_fits(provider, prompt_chars):
                result.append(provider)
            else:
                too_short.append(provider.max_prompt_chars or 0)
        if not result and too_short:
            raise RoutingError("vendor_prompt_limit", capability, limit=max(too_short))
        if not result:
            raise RoutingError("none_capable", capability)
        return sorted(result, key=lambda p: p.max_images < count)  # stable: order kept otherwise

    def resting_until(self, capability: Capability) -> float | None:
        """When the first capable vendor that is only cooling down (not
        disabled) is usable again, as a time.time() value; None if none is."""
        now = time.monotonic()
        waits = [
            self.health[vendor_id].cooldown_until - now
            for vendor_id, provider in self.providers.items()
            if self.can(provider, capability) and self.health[vendor_id].disabled_reason is None
            and self.health[vendor_id].cooldown_until > now
        ]
        return time.time() + min(waits) if waits else None

    def record_success(self, vendor_id: str) -> None:
        health = self.health[vendor_id]
        health.consecutive_failures = 0
        health.successes += 1

    def record_failure(self, vendor_id: str, error: ProviderError) -> str | None:
        """Repeated failures cool a vendor down. Auth and credit errors turn
        it off until restart, or, when the vendor says when its quota comes
        back (``retry_after``), rest it until then. Returns "disabled" or
        "resting" when this failure just did one of those (the admins hear
        of it), else None."""
        health = self.health[vendor_id]
        health.failures += 1
        health.last_error = error.kind
        if error.disables_vendor and error.retry_after:
            until = time.monotonic() + error.retry_after
            newly = health.rest_reason != error.kind or health.cooldown_until < time.monotonic()
            health.cooldown_until, health.rest_reason = until, error.kind
            return "resting" if newly else None
        if error.disables_vendor:
            newly = health.disabled_reason is None
            health.disabled_reason = error.kind
            return "disabled" if newly else None
        if error.transient:
            health.consecutive_failures += 1
            if health.consecutive_failures >= FAILURES_BEFORE_COOLDOWN:
                health.cooldown_until = time.monotonic() + COOLDOWN_SECONDS
                health.rest_reason = None
                health.consecutive_failures = 0
        return None

    def describe_health(self, vendor_id: str) -> str:
        return self.health[vendor_id].describe(time.monotonic())


def _prompt_fits(provider: Provider, prompt_chars: int) -> bool:
    return provider.max_prompt_chars is None or prompt_chars <= provider.max_prompt_chars
