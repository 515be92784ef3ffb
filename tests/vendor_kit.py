"""What every vendor adapter's tests share: real images, specs, a recording
httpx.MockTransport, and the loopback stack (the vendor's fake, a stand-in
for the bot's /media and /callbacks endpoints, one httpx client).

A test module builds its stack with ``loopback_fixture(...)`` and gets a
``VendorStack`` whose ``reset()`` runs before each test; the adapter itself
is built with ``make_provider``, exactly as ``from_settings`` builds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import httpx
import pytest
import pytest_asyncio
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from providers.base import Provider
from providers.http import HttpProvider
from providers.types import Capability, GenerationParams, InputImage, JobSpec, JobState, SourceResult
from tests.fakes.server import serve

FIXTURES = Path(__file__).resolve().parent / "fixtures"
P = TypeVar("P", bound=HttpProvider)


def fixture(vendor: str, name: str) -> dict[str, Any]:
    """tests/fixtures/<vendor>/<name>.json: a sample from the seed or evidence."""
    return json.loads((FIXTURES / vendor / f"{name}.json").read_text("utf-8"))


def png(width: int = 64, height: int = 64, color: tuple[int, int, int] = (200, 30, 30),
        fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=fmt)
    return buffer.getvalue()


def input_image(data: bytes | None = None, *, url: str | None = None, mime: str | None = None,
                width: int = 64, height: int = 64) -> InputImage:
    """An InputImage measured the way the engine measures it (Pillow); bytes
    Pillow cannot read keep the given width and height."""
    data = png(width, height) if data is None else data
    with contextlib.suppress(Exception):
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            mime = mime or Image.MIME.get(img.format or "", "image/png")
    return InputImage(data=data, mime=mime or "image/png", width=width, height=height, url=url)


def make_spec(
    capability: Capability = Capability.TXT2IMG,
    *,
    images: tuple[InputImage, ...] = (),
    source: SourceResult | None = None,
    callback_url: str | None = None,
    business_id: str = "task-0001",
    **params: Any,
) -> JobSpec:
    params.setdefault("prompt", "一只猫 a cat")
    return JobSpec(capability=capability, params=GenerationParams(**params), images=images,
                   source=source, business_id=business_id, callback_url=callback_url)


def make_provider(cls: type[P], client: httpx.AsyncClient, base_url: str, *,
                  timeout: float = 2.0, **settings: Any) -> P:
    """The adapter ``from_settings`` would build from these settings (Settings
    field names: ``aihuihua_api_key=...``); the base URL setting is given."""
    values = {cls.base_url_setting: base_url, **settings}
    namespace = type("SettingsStub", (), {})()
    for name, value in values.items():
        setattr(namespace, name, value)
    provider = cls.from_settings(namespace, client)
    assert provider is not None, f"{cls.__name__} is not configured by {sorted(settings)}"
    provider.call_timeout = httpx.Timeout(timeout)
    return provider


# ---- the HTTP boundary over httpx.MockTransport ---------------------------


class Recorder:
    """A MockTransport handler that answers from a queue (then repeats the
    last answer) and records every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def body(self, index: int = -1) -> dict[str, Any]:
        """A JSON request body."""
        return json.loads(self.requests[index].content.decode("utf-8"))

    def form(self, index: int = -1) -> dict[str, str]:
        """A form-encoded request body."""
        content = self.requests[index].content.decode("ascii")
        return dict(parse_qsl(content, keep_blank_values=True))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


@contextlib.asynccontextmanager
async def mock_provider(cls: type[P], recorder: Recorder, base_url: str, *,
                        timeout: float = 2.0, **settings: Any) -> AsyncIterator[P]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        yield make_provider(cls, client, base_url, timeout=timeout, **settings)


# ---- the loopback stack: fake vendor + the bot's endpoints ----------------


@dataclass
class Receiver:
    """The bot's /callbacks endpoint: answers from ``answers`` (then the last)."""

    answers: list[Any] = field(default_factory=list)
    received: list[Any] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        self.received.append(await request.json())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return JSONResponse(answer)


@dataclass
class VendorStack:
    fake: Any
    base_url: str  # the fake vendor
    client: httpx.AsyncClient
    files: dict[str, bytes]  # served at {media}/<name>
    media: str
    receiver: Receiver
    callback_url: str
    callback_answer: Any

    def reset(self) -> None:
        self.fake.reset()
        self.files.clear()
        self.receiver.answers[:] = [self.callback_answer]
        self.receiver.received.clear()

    def input(self, name: str, data: bytes) -> InputImage:
        """An input image the vendor can fetch from our /media stand-in."""
        self.files[name] = data
        return input_image(data, url=f"{self.media}/{name}")

    async def download(self, url: str) -> Image.Image:
        response = await self.client.get(url)
        response.raise_for_status()
        image = Image.open(io.BytesIO(response.content))
        image.load()
        return image


@contextlib.asynccontextmanager
async def vendor_stack(fake: Any, vendor: type[Provider]) -> AsyncIterator[VendorStack]:
    """Serve ``fake.app`` and the bot's /media and /callbacks/<vendor>/ on loopback."""
    files: dict[str, bytes] = {}
    receiver = Receiver(answers=[vendor.callback_answer])

    async def media(request: Request) -> Response:
        data = files.get(request.path_params["name"])
        return Response(data, media_type="image/png") if data else Response(status_code=404)

    bot = Starlette(routes=[
        Route("/media/{name}", media),
        Route(f"/callbacks/{vendor.id}/{{token}}", receiver.endpoint, methods=["POST"]),
    ])
    try:
        async with serve(fake.app) as base_url, serve(bot) as bot_url, httpx.AsyncClient() as client:
            yield VendorStack(fake, base_url, client, files, f"{bot_url}/media", receiver,
                              f"{bot_url}/callbacks/{vendor.id}/token", vendor.callback_answer)
    finally:
        await fake.aclose()


def loopback_fixture(make_fake: Callable[[], Any], vendor: type[Provider]) -> Any:
    """A module-scoped stack plus a per-test ``env`` fixture that resets it
    (a loopback server costs ~0.1 s to stop, so one serves the module):

        loopback_stack, env = loopback_fixture(lambda: FakeX(...), X)
    """

    @pytest_asyncio.fixture(scope="module", loop_scope="module")
    async def loopback_stack() -> AsyncIterator[VendorStack]:
        async with vendor_stack(make_fake(), vendor) as stack:
            yield stack

    @pytest.fixture
    def env(loopback_stack: VendorStack) -> VendorStack:
        loopback_stack.reset()
        return loopback_stack

    return loopback_stack, env


# Tests that use the module's loopback stack run on its event loop.
loopback = pytest.mark.asyncio(loop_scope="module")


async def poll_until_done(provider: Provider, job_id: str, timeout: float = 3.0) -> list[JobState]:
    states: list[JobState] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        states.append(await provider.poll(job_id))
        if states[-1].finished:
            return states
        await asyncio.sleep(0.005)
    raise AssertionError(f"not finished: {states[-1] if states else None}")


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.005)
