"""providers/sandbox.py: a polled txt2img vendor and synchronous image-input jobs,
drawing real images with Pillow, no network."""

from __future__ import annotations

import base64
import io
import json
import types
from collections.abc import AsyncIterator

import httpx
import pytest
from PIL import Image

import providers.sandbox as sandbox_module
from providers.errors import BadRequest, JobNotFound
from providers.sandbox import LONG_SIDE, Sandbox
from tests.vendor_kit import input_image
from providers.types import (
    Capability,
    GenerationParams,

    JobSpec,
    JobStatus,
    SourceResult,
)

T0 = 1_700_000_000.0
JOB_SECONDS = 4.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(sandbox_module, "time", types.SimpleNamespace(time=clock.time))
    return clock


@pytest.fixture
async def vendor(clock: Clock) -> AsyncIterator[Sandbox]:
    async with httpx.AsyncClient() as client:
        yield Sandbox(client, job_seconds=JOB_SECONDS)


def spec(capability: Capability = Capability.TXT2IMG, business_id: str = "drawbridge-1", **kwargs) -> JobSpec:  # type: ignore[no-untyped-def]
    params = kwargs.pop("params", None) or GenerationParams(prompt="a red fox in the snow")
    return JobSpec(capability=capability, params=params, business_id=business_id, **kwargs)


def open_png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


def png_bytes(size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def test_class_attributes() -> None:
    assert Sandbox.id == "sandbox"
    assert Sandbox.is_sandbox is True
    assert {Capability.TXT2IMG, Capability.IMG2IMG, Capability.UPSCALE, Capability.FACESWAP} <= Sandbox.capabilities
    assert not Sandbox.needs_public_url  # works without PUBLIC_BASE_URL


async def test_txt2img_lifecycle(vendor: Sandbox, clock: Clock) -> None:
    params = GenerationParams(prompt="a red fox", aspect_ratio="16:9", n=3, seed=42)
    submitted = await vendor.submit(spec(params=params))
    assert submitted.state is None  # polled, not synchronous
    assert submitted.eta_seconds == JOB_SECONDS

    clock.now = T0 + 0.1
    state = await vendor.poll(submitted.job_id)
    assert state.status is JobStatus.QUEUED
    assert state.queue_position == 1
    assert not state.finished

    clock.now = T0 + JOB_SECONDS / 2
    state = await vendor.poll(submitted.job_id)
    assert state.status is JobStatus.RUNNING
    assert state.progress == pytest.approx(0.5)
    assert state.preview is not None
    preview = open_png(state.preview)
    assert preview.width <= LONG_SIDE // 4  # a small preview, not the result

    clock.now = T0 + JOB_SECONDS * 0.9
    later = await vendor.poll(submitted.job_id)
    assert later.status is JobStatus.RUNNING and later.progress > state.progress

    clock.now = T0 + JOB_SECONDS
    state = await vendor.poll(submitted.job_id)
    assert state.status is JobStatus.SUCCEEDED
    assert state.finished
    assert state.progress == 1.0
    assert len(state.images) == 3
    sizes = set()
    for i, result in enumerate(state.images):
        assert result.url is None and result.data
        image = open_png(result.data)
        sizes.add(image.size)
        assert image.width / image.height == pytest.approx(16 / 9, rel=0.02)
        assert max(image.size) == LONG_SIDE
        assert result.seed == 42 + i
    assert len(sizes) == 1
    assert len({r.data for r in state.images}) == 3  # different pictures


@pytest.mark.parametrize(("ratio", "expected"), [("1:1", 1.0), ("2:3", 2 / 3), ("4:1", 4.0), ("9:16", 9 / 16)])
async def test_result_has_requested_aspect_ratio(vendor: Sandbox, clock: Clock, ratio: str, expected: float) -> None:
    submitted = await vendor.submit(spec(params=GenerationParams(prompt="x", aspect_ratio=ratio)))
    clock.now = T0 + JOB_SECONDS + 1
    state = await vendor.poll(submitted.job_id)
    [result] = state.images
    image = open_png(result.data)
    assert image.width / image.height == pytest.approx(expected, rel=0.03)


async def test_explicit_size_is_used(vendor: Sandbox, clock: Clock) -> None:
    submitted = await vendor.submit(spec(params=GenerationParams(prompt="x", width=320, height=200)))
    clock.now = T0 + JOB_SECONDS
    [result] = (await vendor.poll(submitted.job_id)).images
    assert open_png(result.data).size == (320, 200)


async def test_deterministic_for_same_job_id(vendor: Sandbox, clock: Clock) -> None:
    submitted = await vendor.submit(spec(params=GenerationParams(prompt="same", n=2)))
    clock.now = T0 + JOB_SECONDS
    first = await vendor.poll(submitted.job_id)
    clock.now = T0 + 10 * JOB_SECONDS
    second = await vendor.poll(submitted.job_id)
    async with httpx.AsyncClient() as client:  # a restarted bot: a new adapter
        third = await Sandbox(client, job_seconds=JOB_SECONDS).poll(submitted.job_id)
    assert [r.data for r in first.images] == [r.data for r in second.images] == [r.data for r in third.images]


async def test_seed_follows_business_id_when_not_given(vendor: Sandbox, clock: Clock) -> None:
    a = await vendor.submit(spec(business_id="drawbridge-a"))
    a_again = await vendor.submit(spec(business_id="drawbridge-a"))
    b = await vendor.submit(spec(business_id="drawbridge-b"))
    clock.now = T0 + JOB_SECONDS
    [ra], [ra2], [rb] = [(await vendor.poll(s.job_id)).images for s in (a, a_again, b)]
    assert ra.seed == ra2.seed and ra.data == ra2.data
    assert ra.seed != rb.seed and ra.data != rb.data


@pytest.mark.parametrize(
    "job_id",
    [
        "",
        "garbage",
        "sync-drawbridge-1",
        "sb-",
        "sb-!!!!",
        "sb-" + base64.urlsafe_b64encode(b"not json").decode(),
        "sb-" + base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
        "sb-" + base64.urlsafe_b64encode(b"{}").decode(),
        "sb-" + base64.urlsafe_b64encode(b"[1, 2]").decode(),
        "sb-" + base64.urlsafe_b64encode(json.dumps({"t0": "x"}).encode()).decode(),
    ],
)
async def test_garbage_job_id_is_not_found(vendor: Sandbox, job_id: str) -> None:
    with pytest.raises(JobNotFound):
        await vendor.poll(job_id)


async def test_poll_many_maps_errors(vendor: Sandbox, clock: Clock) -> None:
    submitted = await vendor.submit(spec())
    clock.now = T0 + JOB_SECONDS
    results = await vendor.poll_many([submitted.job_id, "garbage"])
    assert results[submitted.job_id].status is JobStatus.SUCCEEDED
    assert isinstance(results["garbage"], JobNotFound)


async def test_upscale_of_a_sandbox_result_is_twice_the_size(vendor: Sandbox, clock: Clock) -> None:
    params = GenerationParams(prompt="castle", aspect_ratio="3:2", n=4)
    original = await vendor.submit(spec(params=params))
    clock.now = T0 + JOB_SECONDS
    done = await vendor.poll(original.job_id)
    base = open_png(done.images[1].data)

    clock.now = T0 + 100
    source = SourceResult(provider="sandbox", job_id=original.job_id, index=1)
    upscale = await vendor.submit(spec(Capability.UPSCALE, business_id="drawbridge-up", params=GenerationParams(), source=source))
    assert upscale.state is None
    clock.now = T0 + 100 + JOB_SECONDS
    state = await vendor.poll(upscale.job_id)
    assert state.status is JobStatus.SUCCEEDED
    [result] = state.images
    image = open_png(result.data)
    assert image.size == (base.width * 2, base.height * 2)
    assert result.seed == done.images[1].seed


async def test_variation_of_a_sandbox_result(vendor: Sandbox, clock: Clock) -> None:
    original = await vendor.submit(spec(params=GenerationParams(prompt="castle", n=2)))
    source = SourceResult(provider="sandbox", job_id=original.job_id, index=0)
    variation = await vendor.submit(spec(Capability.VARIATION, business_id="drawbridge-v", params=GenerationParams(), source=source))
    clock.now = T0 + JOB_SECONDS
    state = await vendor.poll(variation.job_id)
    assert state.status is JobStatus.SUCCEEDED
    assert len(state.images) == 2


async def test_img2img_is_synchronous(vendor: Sandbox) -> None:
    data = png_bytes((300, 200))
    submitted = await vendor.submit(spec(Capability.IMG2IMG, images=(input_image(data),)))
    assert submitted.job_id == "sync-drawbridge-1"
    state = submitted.state
    assert state is not None and state.status is JobStatus.SUCCEEDED and state.finished
    [result] = state.images
    image = open_png(result.data)
    assert image.size == (300, 200)
    assert result.data != data  # actually transformed


async def test_edit_accepts_jpeg_input(vendor: Sandbox) -> None:
    out = io.BytesIO()
    Image.new("RGB", (128, 96), (10, 120, 200)).save(out, format="JPEG")
    submitted = await vendor.submit(spec(Capability.EDIT, images=(input_image(out.getvalue(), mime="image/jpeg"),)))
    [result] = submitted.state.images
    assert open_png(result.data).size == (128, 96)


async def test_faceswap_with_two_images(vendor: Sandbox) -> None:
    face = png_bytes((100, 100), (250, 220, 180))
    target = png_bytes((400, 300), (20, 20, 80))
    submitted = await vendor.submit(
        spec(Capability.FACESWAP, images=(input_image(face), input_image(target)))
    )
    state = submitted.state
    assert state is not None and state.status is JobStatus.SUCCEEDED
    [result] = state.images
    image = open_png(result.data).convert("RGB")
    assert image.size == (400, 300)  # the target's size
    # the face was pasted into the middle of the target
    centre = image.getpixel((400 // 3 + 400 // 6, 300 // 6 + 300 // 6))
    assert centre == (250, 220, 180)


async def test_upscale_of_an_image_input(vendor: Sandbox) -> None:
    submitted = await vendor.submit(spec(Capability.UPSCALE, images=(input_image(png_bytes((120, 80))),)))
    [result] = submitted.state.images
    assert open_png(result.data).size == (240, 160)


@pytest.mark.parametrize("capability", [Capability.IMG2IMG, Capability.EDIT, Capability.FACESWAP, Capability.UPSCALE])
async def test_image_capability_without_image_is_bad_request(vendor: Sandbox, capability: Capability) -> None:
    with pytest.raises(BadRequest):
        await vendor.submit(spec(capability))


@pytest.mark.parametrize("capability", [Capability.ANIME, Capability.DESCRIBE, Capability.REMOVE_BG])
async def test_unsupported_capability_is_bad_request(vendor: Sandbox, capability: Capability) -> None:
    with pytest.raises(BadRequest):
        await vendor.submit(spec(capability, images=(input_image(png_bytes((64, 64))),)))


async def test_probe_is_local(vendor: Sandbox) -> None:
    assert await vendor.probe() == "local"


async def test_from_settings() -> None:
    async with httpx.AsyncClient() as client:
        assert Sandbox.from_settings(types.SimpleNamespace(), client).job_seconds == 4.0
        assert Sandbox.from_settings(types.SimpleNamespace(sandbox_job_seconds=0.5), client).job_seconds == 0.5
