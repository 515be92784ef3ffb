"""python -m bot [run|check]"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable

import httpx
from telegram.error import InvalidToken, NetworkError

from bot.app import Drawbridge
from bot.config import ConfigError, Settings, load_settings
from bot.logs import setup_logging
from providers.base import DEFAULT_TIMEOUT
from providers.comfyui_workflow import WorkflowError
from providers.credentials import CredentialError
from providers.instances import ProvidersFileError, instance_secrets
from providers.http import HttpProvider
from providers.registry import VENDOR_CLASSES, Registry

log = logging.getLogger("bot")

USAGE = "usage: python -m bot [run|check]"


def build_registry(settings: Settings, client: httpx.AsyncClient) -> Registry:
    try:
        return Registry.from_settings(settings, client)
    except (CredentialError, ProvidersFileError, WorkflowError) as exc:
        raise ConfigError(str(exc)) from None
    except ValueError as exc:
        raise ConfigError(f"DEFAULT_PROVIDER is invalid: {exc}") from None


async def check(settings: Settings) -> int:
    """Validate the configuration and show each vendor, without starting."""
    async with httpx.AsyncClient(timeout=DEFAULT_TIMEOUT) as client:
        registry = build_registry(settings, client)
        print("Configuration OK")
        print(f"  Telegram API     {settings.telegram_api_url}")
        print(f"  Updates          {'webhook ' + settings.telegram_webhook_url if settings.telegram_webhook_url else 'long polling'}")
        print(f"  Database         {settings.database_url}")
        print(f"  HTTP server      {settings.http_host}:{settings.http_port}")
        print(f"  Public base URL  {settings.public_base_url or '(not set: vendors that need image URLs or callbacks are limited)'}")
        print("Vendors:")
        probes = await asyncio.gather(*(p.probe() for p in registry.providers.values()))
        problems = await asyncio.gather(*(p.problems() for p in registry.providers.values()))
        for (vendor_id, provider), probe, found in zip(registry.providers.items(), probes, problems, strict=True):
            available = registry.capabilities(provider)
            caps = ", ".join(
                c.value if c in available else f"({c.value}: needs PUBLIC_BASE_URL)"
                for c in sorted(provider.available_capabilities(True))
            )
            default = " (default)" if vendor_id == registry.default_id else ""
            details = f" [{provider.details()}]" if provider.details() else ""
            print(f"  {vendor_id}{default}{details}: {caps}")
            print(f"      {probe}")
            for problem in found:
                print(f"      ✗ {problem}")
        missing = [cls for cls in VENDOR_CLASSES if cls.id not in registry.providers]
        if missing:
            print("Not configured (set these to enable):")
        for cls in missing:
            if issubclass(cls, HttpProvider):
                print(f"  {cls.id}: {cls.credentials.describe()}")
    if any(problems):
        print(f"drawbridge: {sum(map(len, problems))} problem(s) with a vendor's setup, shown with ✗ above", file=sys.stderr)
        return 1
    return 0


async def run(settings: Settings) -> int:
    async with httpx.AsyncClient() as client:
        build_registry(settings, client)  # settings errors before any network
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bot = Drawbridge(settings)
    try:
        await bot.start()
    except InvalidToken:
        log.error("TELEGRAM_BOT_TOKEN was rejected by Telegram")
        await bot.stop()
        return 1
    except (NetworkError, OSError) as exc:
        log.error("cannot start: %s", exc)
        await bot.stop()
        return 1
    await stop.wait()
    log.info("stopping")
    await bot.stop()
    return 0


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it exists (not on Windows): the event loop's own
    overhead is a large share of a job's CPU, and uvloop cut CPU per job by
    ~8 % in seven paired bench runs (none the other way)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "run"
    if command not in ("run", "check"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        settings = load_settings()
        secrets = settings.secrets() + instance_secrets(settings.providers_file)
        setup_logging(settings.log_level, settings.log_format, secrets)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(check(settings) if command == "check" else run(settings))
    except ConfigError as exc:
        print(f"drawbridge: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
