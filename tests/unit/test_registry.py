"""providers/registry.py: which vendors are configured, routing, and health."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator

import httpx
import pytest

import providers.registry as registry_module
from providers.errors import (
    AuthError,
    BadRequest,
    ContentRejected,
    MalformedResponse,
    QuotaExceeded,
    RateLimited,
    Unavailable,
    VendorTimeout,
)
from providers.credentials import CredentialError
from providers.registry import COOLDOWN_SECONDS, FAILURES_BEFORE_COOLDOWN, Registry, RoutingError
from providers.types import Capability

C = Capability


def fake_settings(**overrides: object) -> types.SimpleNamespace:
    values: dict = {
        "zhiqite_app_code": None,
        "zhiqite_access_key_id": None,
        "zhiqite_access_key_secret": None,
        "zhiqite_base_url": "http://127.0.0.1:9",
        "sandbox_enabled": False,
        "default_provider": "",
        "public_base_url": "",
    }
    values.update(overrides)
    return types.SimpleNamespace(**values)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Monotonic:
    clock = Monotonic()
    monkeypatch.setattr(registry_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    return clock


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def ids(providers: list) -> list[str]:
    return [p.id for p in providers]


# --------------------------------------------------------------------------- #
# from_settings
# --------------------------------------------------------------------------- #


async def test_sandbox_only_when_nothing_configured(client: httpx.AsyncClient) -> None:
    registry = Registry.from_settings(fake_settings(), client)
    assert list(registry.providers) == ["sandbox"]
    assert registry.default_id == "sandbox"
    assert registry.has_public_url is False
    assert registry.get("sandbox").is_sandbox


async def test_zhiqite_with_app_code(client: httpx.AsyncClient) -> None:
    registry = Registry.from_settings(fake_settings(zhiqite_app_code="code-123"), client)
    assert list(registry.providers) == ["zhiqite"]
    assert registry.default_id == "zhiqite"
    assert registry.get("sandbox") is None


async def test_zhiqite_with_access_key_pair(client: httpx.AsyncClient) -> None:
    settings = fake_settings(zhiqite_access_key_id="id", zhiqite_access_key_secret="secret")
    assert list(Registry.from_settings(settings, client).providers) == ["zhiqite"]


async def test_blank_credentials_do_not_configure(client: httpx.AsyncClient) -> None:
    assert list(Registry.from_settings(fake_settings(zhiqite_app_code="   "), client).providers) == ["sandbox"]


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [({"zhiqite_access_key_id": "id"}, "ZHIQITE_ACCESS_KEY_SECRET"),
     ({"zhiqite_access_key_secret": "secret"}, "ZHIQITE_ACCESS_KEY_ID")],
)
async def test_half_set_credentials_stop_start_up_naming_the_missing_one(
    client: httpx.AsyncClient, overrides: dict, missing: str
) -> None:
    with pytest.raises(CredentialError, match=f"^{missing} must be set together with"):
        Registry.from_settings(fake_settings(**overrides), client)


async def test_sandbox_enabled_adds_sandbox_after_real_vendors(client: httpx.AsyncClient) -> None:
    registry = Registry.from_settings(fake_settings(zhiqite_app_code="c", sandbox_enabled=True), client)
    assert list(registry.providers) == ["zhiqite", "sandbox"]
    assert registry.default_id == "zhiqite"


async def test_default_provider_chosen(client: httpx.AsyncClient) -> None:
    settings = fake_settings(zhiqite_app_code="c", sandbox_enabled=True, default_provider="sandbox")
    assert Registry.from_settings(settings, client).default_id == "sandbox"


@pytest.mark.parametrize(
    "overrides",
    [
        {"zhiqite_app_code": "c", "default_provider": "nosuchvendor"},
        {"zhiqite_app_code": "c", "default_provider": "sandbox"},  # sandbox not enabled
        {"default_provider": "zhiqite"},  # not configured
        {"default_provider": "nonsense"},
    ],
)
async def test_default_provider_not_configured(client: httpx.AsyncClient, overrides: dict) -> None:
    with pytest.raises(ValueError) as info:
        Registry.from_settings(fake_settings(**overrides), client)
    assert overrides["default_provider"] in str(info.value)


async def test_public_url_flag(client: httpx.AsyncClient) -> None:
    registry = Registry.from_settings(fake_settings(public_base_url="https://bot.example.com"), client)
    assert registry.has_public_url is True


# --------------------------------------------------------------------------- #
# candidates
# --------------------------------------------------------------------------- #


@pytest.fixture
async def both(client: httpx.AsyncClient) -> Registry:
    """zhiqite + sandbox, no PUBLIC_BASE_URL."""
    return Registry.from_settings(fake_settings(zhiqite_app_code="c", sandbox_enabled=True), client)


@pytest.fixture
async def both_public(client: httpx.AsyncClient) -> Registry:
    settings = fake_settings(zhiqite_app_code="c", sandbox_enabled=True, public_base_url="https://bot.example.com")
    return Registry.from_settings(settings, client)


async def test_default_first_then_the_rest(both: Registry, clock: Monotonic) -> None:
    assert ids(both.candidates(C.TXT2IMG)) == ["zhiqite", "sandbox"]


async def test_preferred_first(both: Registry, clock: Monotonic) -> None:
    assert ids(both.candidates(C.TXT2IMG, preferred="sandbox")) == ["sandbox", "zhiqite"]
    assert ids(both.candidates(C.TXT2IMG, preferred="unknown")) == ["zhiqite", "sandbox"]


async def test_exclude(both: Registry, clock: Monotonic) -> None:
    assert ids(both.candidates(C.TXT2IMG, exclude=["zhiqite"])) == ["sandbox"]
    with pytest.raises(RoutingError) as info:
        both.candidates(C.TXT2IMG, exclude=["zhiqite", "sandbox"])
    assert info.value.reason == "none_capable"


async def test_forced_unknown_provider(both: Registry, clock: Monotonic) -> None:
    with pytest.raises(RoutingError) as info:
        both.candidates(C.TXT2IMG, forced="nosuchvendor")
    assert (info.value.reason, info.value.provider, info.value.capability) == ("unknown_provider", "nosuchvendor", C.TXT2IMG)


async def test_forced_incapable_provider(both: Registry, clock: Monotonic) -> None:
    with pytest.raises(RoutingError) as info:
        both.candidates(C.DESCRIBE, forced="sandbox")
    assert (info.value.reason, info.value.provider, info.value.capability) == ("provider_cannot", "sandbox", C.DESCRIBE)


async def test_forced_capable_provider_only(both: Registry, clock: Monotonic) -> None:
    assert ids(both.candidates(C.TXT2IMG, forced="sandbox")) == ["sandbox"]
    assert ids(both.candidates(C.TXT2IMG, forced="zhiqite", preferred="sandbox")) == ["zhiqite"]


async def test_without_public_url_zhiqite_cannot_take_image_input(both: Registry, clock: Monotonic) -> None:
    zhiqite = both.get("zhiqite")
    available = both.capabilities(zhiqite)
    assert C.TXT2IMG in available
    for capability in (C.IMG2IMG, C.FACESWAP, C.UPSCALE):
        assert capability in zhiqite.capabilities  # it could, with a public URL
        assert capability in zhiqite.needs_public_url
        assert capability not in available
        assert not both.can(zhiqite, capability)
        # routing falls to the sandbox
        assert ids(both.candidates(capability)) == ["sandbox"]
        assert ids(both.candidates(capability, preferred="zhiqite")) == ["sandbox"]
    with pytest.raises(RoutingError) as info:
        both.candidates(C.IMG2IMG, forced="zhiqite")
    assert info.value.reason == "provider_cannot"


async def test_with_public_url_zhiqite_takes_image_input(both_public: Registry, clock: Monotonic) -> None:
    assert ids(both_public.candidates(C.IMG2IMG)) == ["zhiqite", "sandbox"]
    assert ids(both_public.candidates(C.IMG2IMG, forced="zhiqite")) == ["zhiqite"]


async def test_none_capable(client: httpx.AsyncClient, clock: Monotonic) -> None:
    registry = Registry.from_settings(fake_settings(zhiqite_app_code="c"), client)
    with pytest.raises(RoutingError) as info:
        registry.candidates(C.IMG2IMG)
    assert (info.value.reason, info.value.provider) == ("none_capable", None)
    with pytest.raises(RoutingError):
        registry.candidates(C.DESCRIBE)


# --------------------------------------------------------------------------- #
# Health
# --------------------------------------------------------------------------- #


async def test_cooldown_after_repeated_transient_failures(both: Registry, clock: Monotonic) -> None:
    assert FAILURES_BEFORE_COOLDOWN == 3
    for _ in range(FAILURES_BEFORE_COOLDOWN - 1):
        both.record_failure("zhiqite", Unavailable("HTTP 503"))
    assert both.describe_health("zhiqite") == "ok"
    assert ids(both.candidates(C.TXT2IMG)) == ["zhiqite", "sandbox"]

    both.record_failure("zhiqite", VendorTimeout("ReadTimeout"))
    assert both.describe_health("zhiqite").startswith("cooling down")
    assert ids(both.candidates(C.TXT2IMG)) == ["sandbox"]
    assert both.describe_health("sandbox") == "ok"

    clock.now += COOLDOWN_SECONDS - 1
    assert ids(both.candidates(C.TXT2IMG)) == ["sandbox"]
    clock.now += 1
    assert ids(both.candidates(C.TXT2IMG)) == ["zhiqite", "sandbox"]
    assert both.describe_health("zhiqite") == "ok"


async def test_cooldown_counts_only_consecutive_failures(both: Registry, clock: Monotonic) -> None:
    both.record_failure("zhiqite", RateLimited("slow down", retry_after=1))
    both.record_failure("zhiqite", MalformedResponse("html"))
    both.record_success("zhiqite")
    both.record_failure("zhiqite", Unavailable("503"))
    both.record_failure("zhiqite", Unavailable("503"))
    assert both.describe_health("zhiqite") == "ok"
    assert both.health["zhiqite"].failures == 4
    assert both.health["zhiqite"].successes == 1


@pytest.mark.parametrize("error", [BadRequest("size"), ContentRejected("nsfw")])
async def test_request_errors_do_not_cool_vendor_down(both: Registry, clock: Monotonic, error: Exception) -> None:
    for _ in range(5):
        both.record_failure("zhiqite", error)
    assert both.describe_health("zhiqite") == "ok"
    assert ids(both.candidates(C.TXT2IMG)) == ["zhiqite", "sandbox"]


@pytest.mark.parametrize(("error", "kind"), [(AuthError("bad code"), "auth"), (QuotaExceeded("arrears"), "quota")])
async def test_auth_and_quota_disable_vendor(both: Registry, clock: Monotonic, error: Exception, kind: str) -> None:
    both.record_failure("zhiqite", error)
    assert both.describe_health("zhiqite") == f"disabled ({kind})"
    assert both.health["zhiqite"].last_error == kind
    assert ids(both.candidates(C.TXT2IMG)) == ["sandbox"]
    # until restart: time and successes elsewhere do not bring it back
    clock.now += 10 * COOLDOWN_SECONDS
    both.record_success("sandbox")
    assert ids(both.candidates(C.TXT2IMG)) == ["sandbox"]
    assert both.describe_health("zhiqite") == f"disabled ({kind})"


async def test_all_vendors_down_is_none_capable(both: Registry, clock: Monotonic) -> None:
    both.record_failure("zhiqite", AuthError("x"))
    for _ in range(FAILURES_BEFORE_COOLDOWN):
        both.record_failure("sandbox", Unavailable("x"))
    with pytest.raises(RoutingError) as info:
        both.candidates(C.TXT2IMG)
    assert info.value.reason == "none_capable"


def test_every_vendor_module_is_registered() -> None:
    """Each providers/<vendor>.py adapter is in VENDOR_CLASSES, in the
    order PRODUCT.md §2 lists the vendors (that order is 'first configured')."""
    import importlib
    import inspect
    import pkgutil

    import providers
    from providers.base import Provider
    from providers.registry import ALL_IDS, VENDOR_CLASSES

    found = set()
    for module in pkgutil.iter_modules(providers.__path__):
        loaded = importlib.import_module(f"providers.{module.name}")
        for value in vars(loaded).values():
            if (isinstance(value, type) and issubclass(value, Provider) and not inspect.isabstract(value)
                    and value.__module__ == loaded.__name__):
                found.add(value.id)
    assert found == set(ALL_IDS)
    assert [cls.id for cls in VENDOR_CLASSES] == ["aichatapi", "apispace", "zhiqite", "juhe", "aihuihua", "openai", "mjproxy", "a1111", "comfyui"]


# --------------------------------------------------------------------------- #
# prompt limits, switched-off vendors, quota rests
# --------------------------------------------------------------------------- #


@pytest.fixture
async def short_and_long(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """zhiqite limited to 800 characters (as juhe is) + sandbox without a limit."""
    registry = Registry.from_settings(fake_settings(zhiqite_app_code="c", sandbox_enabled=True), client)
    monkeypatch.setattr(type(registry.get("zhiqite")), "max_prompt_chars", 800)
    return registry


async def test_a_prompt_over_a_vendors_limit_goes_elsewhere(short_and_long: Registry, clock: Monotonic) -> None:
    assert ids(short_and_long.candidates(C.TXT2IMG, prompt_chars=800)) == ["zhiqite", "sandbox"]
    assert ids(short_and_long.candidates(C.TXT2IMG, prompt_chars=801)) == ["sandbox"]


async def test_a_prompt_no_capable_vendor_takes_says_so(short_and_long: Registry, clock: Monotonic) -> None:
    with pytest.raises(RoutingError) as info:
        short_and_long.candidates(C.TXT2IMG, prompt_chars=900, exclude=["sandbox"])
    assert (info.value.reason, info.value.limit) == ("vendor_prompt_limit", 800)


async def test_forced_vendor_with_a_prompt_over_its_limit(short_and_long: Registry, clock: Monotonic) -> None:
    with pytest.raises(RoutingError) as info:
        short_and_long.candidates(C.TXT2IMG, forced="zhiqite", prompt_chars=801)
    assert (info.value.reason, info.value.provider, info.value.limit) == ("vendor_prompt_limit", "zhiqite", 800)


async def test_forced_vendor_switched_off_for_bad_credentials_is_refused(both: Registry, clock: Monotonic) -> None:
    assert ids(both.candidates(C.TXT2IMG, forced="zhiqite")) == ["zhiqite"]
    assert both.record_failure("zhiqite", AuthError("Invalid AppCode")) == "disabled"
    with pytest.raises(RoutingError) as info:
        both.candidates(C.TXT2IMG, forced="zhiqite")
    assert (info.value.reason, info.value.provider) == ("provider_disabled", "zhiqite")


async def test_quota_with_an_end_rests_the_vendor_instead_of_disabling(both: Registry, clock: Monotonic) -> None:
    until_midnight = 5 * 3600.0
    assert both.record_failure("zhiqite", QuotaExceeded("daily limit", retry_after=until_midnight)) == "resting"
    assert both.record_failure("zhiqite", QuotaExceeded("daily limit", retry_after=until_midnight)) is None
    assert both.health["zhiqite"].disabled_reason is None
    assert both.describe_health("zhiqite") == "resting (quota, 5 h 0 min)"
    assert ids(both.candidates(C.TXT2IMG)) == ["sandbox"]
    assert both.resting_until(C.DESCRIBE) is None
    clock.now += until_midnight
    assert ids(both.candidates(C.TXT2IMG)) == ["zhiqite", "sandbox"]
    assert both.describe_health("zhiqite") == "ok"
