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
from providers.aichatapi import Aichatapi
from providers.aihuihua import Aihuihua
from providers.apispace import Apispace
from providers.juhe import Juhe
from providers.sandbox import Sandbox
from providers.types import Capability
from providers.zhiqite import Zhiqite

# Every real vendor adapter, in the order "first configured" means (PRODUCT.md §2).
VENDOR_CLASSES: tuple[type[Provider], ...] = (Aichatapi, Apispace, Zhiqite, Juhe, Aihuihua)
ALL_IDS: tuple[str, ...] = tuple(cls.id for cls in VENDOR_CLASSES) + (Sandbox.id,)

# A vendor failing this many submits in a row rests for COOLDOWN_SECONDS.
FAILURES_BEFORE_COOLDOWN = 3
COOLDOWN_SECONDS = 60.0


class RoutingError(Exception):
    """No configured vendor can serve the request; ``reason`` picks the message."""

    def __init__(self, reason: str, capability: Capability, provider: str | None = None) -> None:
        super().__init__(f"{reason}: {capability} via {provider or 'any'}")
        self.reason = reason  # "unknown_provider" | "provider_cannot" | "none_capable"
        self.capability = capability
        self.provider = provider


@dataclass
class Health:
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    disabled_reason: str | None = None  # auth / quota: off until restart
    last_error: str | None = None
    successes: int = 0
    failures: int = 0

    def usable(self, now: float) -> bool:
        return self.disabled_reason is None and now >= self.cooldown_until

    def describe(self, now: float) -> str:
        if self.disabled_reason:
            return f"disabled ({self.disabled_reason})"
        if now < self.cooldown_until:
            return f"cooling down ({int(self.cooldown_until - now)} s)"
        return "ok"


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
    ) -> list[Provider]:
        """Vendors to try, best first. ``forced`` (--provider) allows only that
        vendor; otherwise the preferred, then the default, then the rest,
        with those that can make ``count`` images in one job ahead."""
        now = time.monotonic()
        if forced:
            provider = self.providers.get(forced)
            if provider is None:
                raise RoutingError("unknown_provider", capability, forced)
            if not self.can(provider, capability):
                raise RoutingError("provider_cannot", capability, forced)
            return [provider]
        order = [preferred, self.default_id, *self.providers]
        seen: set[str] = set(exclude)
        result = []
        for vendor_id in order:
            if not vendor_id or vendor_id in seen or vendor_id not in self.providers:
                continue
            seen.add(vendor_id)
            provider = self.providers[vendor_id]
            if self.can(provider, capability) and self.health[vendor_id].usable(now):
                result.append(provider)
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

    def record_failure(self, vendor_id: str, error: ProviderError) -> bool:
        """Repeated failures cool a vendor down; auth and credit errors turn
        it off until restart. True when this failure just turned it off."""
        health = self.health[vendor_id]
        health.failures += 1
        health.last_error = error.kind
        if error.disables_vendor:
            newly = health.disabled_reason is None
            health.disabled_reason = error.kind
            return newly
        if error.transient:
            health.consecutive_failures += 1
            if health.consecutive_failures >= FAILURES_BEFORE_COOLDOWN:
                health.cooldown_until = time.monotonic() + COOLDOWN_SECONDS
                health.consecutive_failures = 0
        return False

    def describe_health(self, vendor_id: str) -> str:
        return self.health[vendor_id].describe(time.monotonic())
