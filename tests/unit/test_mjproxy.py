"""mjproxy adapter: request bodies, the protocol's codes and statuses, and
the adapter against FakeMjProxy (both flavours) over loopback HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from providers import midjourney as mj
from providers import mjproxy as m
from providers.errors import (AuthError, BadRequest, ContentRejected, JobNotFound,
                              RateLimited, Unavailable)
from providers.types import Capability, JobStatus, SourceResult
from tests.fakes.mjproxy import FakeMjProxy
from tests.fakes.server import serve
from tests.vendor_kit import eventually, input_image, make_provider, make_spec, png

SECRET = "mj-secret-SECRET-77"


def grid_source(buttons: list[dict[str, str]] | None = None, index: int = 1, grid: bool = True) -> SourceResult:
    return SourceResult(provider="mjproxy", job_id="1700", index=index,
                        vendor_data={"task_id": "1700", "grid": grid, "buttons": buttons or []})


TRUEAI_GRID = [{"customId": f"MJ::JOB::upsample::{n}::h", "label": f"U{n}", "emoji": ""} for n in range(1, 5)] + [
    {"customId": f"MJ::JOB::variation::{n}::h", "label": f"V{n}", "emoji": ""} for n in range(1, 5)]


# ---- requests --------------------------------------------------------------


def test_imagine_carries_midjourney_flags_and_the_hook() -> None:
    spec = make_spec(prompt="a red fox", aspect_ratio="16:9", negative_prompt="text", seed=7,
                     callback_url="http://bot/callbacks/mjproxy/t")
    assert m.build_request(spec) == ("/mj/submit/imagine", {
        "prompt": "a red fox --ar 16:9 --no text --seed 7", "notifyHook": "http://bot/callbacks/mjproxy/t"})


def test_an_image_prompt_goes_as_base64_array() -> None:
    spec = make_spec(Capability.IMG2IMG, images=(input_image(png(8, 8)),), prompt="in watercolour")
    endpoint, body = m.build_request(spec)
    assert endpoint == "/mj/submit/imagine" and body["base64Array"][0].startswith("data:image/png;base64,")


def test_u2_uses_the_proxys_button_where_it_gave_buttons_else_change() -> None:
    with_buttons = make_spec(Capability.UPSCALE, source=grid_source(TRUEAI_GRID, index=1))
    assert m.build_request(with_buttons) == ("/mj/submit/action", {"taskId": "1700", "customId": "MJ::JOB::upsample::2::h"})
    without = make_spec(Capability.VARIATION, source=grid_source(index=2))
    assert m.build_request(without) == ("/mj/submit/change", {"taskId": "1700", "action": "VARIATION", "index": 3})


def test_vary_on_a_novicezk_upscale_is_an_image_prompt() -> None:
    spec = make_spec(Capability.VARIATION, source=grid_source(index=0, grid=False), images=(input_image(png(8, 8)),), prompt="a fox")
    endpoint, body = m.build_request(spec)
    assert endpoint == "/mj/submit/imagine" and body["prompt"] == "a fox" and len(body["base64Array"]) == 1


def test_reroll_of_a_grid_is_the_proxys_reroll() -> None:
    buttons = [*TRUEAI_GRID, {"customId": "MJ::JOB::reroll::0::h::SOLO", "label": "", "emoji": "🔄"}]
    assert m.build_request(make_spec(source=grid_source(buttons, index=0))) == (
        "/mj/submit/action", {"taskId": "1700", "customId": "MJ::JOB::reroll::0::h::SOLO"})
    assert m.build_request(make_spec(source=grid_source(index=0))) == (
        "/mj/submit/change", {"taskId": "1700", "action": "REROLL", "index": 1})


def test_a_follow_up_button_must_be_one_the_proxy_offered() -> None:
    buttons = [{"customId": "MJ::JOB::low_variation::1::h::SOLO", "label": "Vary (Subtle)", "emoji": "🪄"}]
    source = grid_source(buttons, index=0, grid=False)
    pressed = source.model_copy(update={"vendor_data": {**source.vendor_data, "custom_id": buttons[0]["customId"]}})
    assert m.build_request(make_spec(Capability.VARIATION, source=pressed))[1]["customId"] == buttons[0]["customId"]
    forged = source.model_copy(update={"vendor_data": {**source.vendor_data, "custom_id": "MJ::JOB::evil::1"}})
    with pytest.raises(BadRequest):
        m.build_request(make_spec(Capability.VARIATION, source=forged))


@pytest.mark.parametrize("count", [1, 6])
def test_blend_takes_two_to_five_images(count: int) -> None:
    images = tuple(input_image(png(8, 8)) for _ in range(count))
    with pytest.raises(BadRequest, match="2-5"):
        m.build_request(make_spec(Capability.BLEND, images=images))


# ---- codes and statuses ----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"code": 24, "description": "可能包含敏感词", "properties": {"bannedWord": "gore"}}, ContentRejected),
        ({"code": 23, "description": "队列已满，请稍后尝试"}, RateLimited),
        ({"code": 9, "description": "提交失败，队列已满，请稍后重试"}, RateLimited),  # trueai's queue full
        ({"code": 4, "description": "prompt不能为空"}, BadRequest),
        ({"code": 3, "description": "关联任务不存在或已失效"}, JobNotFound),
        ({"code": 9, "description": "系统异常"}, Unavailable),
    ],
)
def test_submit_codes(body: dict[str, Any], expected: type) -> None:
    with pytest.raises(expected) as raised:
        mj.accepted_task_id(mj.parse_submit_answer(body))
    if body["code"] == 24:
        assert "banned word: gore" in raised.value.vendor_message


@pytest.mark.parametrize("code", [1, 21, 22])
def test_accepted_codes(code: int) -> None:
    assert mj.accepted_task_id(mj.parse_submit_answer({"code": code, "result": 1700})) == "1700"


def task(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "1700", "action": "IMAGINE", "status": status, **extra}


def test_task_statuses() -> None:
    assert m.read_task(task("NOT_START")).status is JobStatus.QUEUED
    running = m.read_task(task("IN_PROGRESS", progress="45%", imageUrl="https://cdn/p.webp"))
    assert (running.status, running.progress, running.preview_url) == (JobStatus.RUNNING, 0.45, "https://cdn/p.webp")
    modal = m.read_task(task("MODAL"))
    assert modal.status is JobStatus.RUNNING and modal.vendor_data["modal"] is True
    cancelled = m.read_task(task("CANCEL"))
    assert (cancelled.status, cancelled.error_kind) == (JobStatus.FAILED, "cancelled_at_vendor")
    done = m.read_task(task("SUCCESS", imageUrl="https://cdn/g.png", buttons=TRUEAI_GRID))
    assert done.is_grid and done.images[0].url == "https://cdn/g.png" and len(done.vendor_data["buttons"]) == 8
    banned = m.read_task(task("FAILURE", failReason="Banned prompt detected"))
    assert banned.error_kind == "rejected"


# ---- against the fake ---------------------------------------------------------


@pytest.fixture(params=["novicezk", "trueai"])
async def proxy(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    fake = FakeMjProxy(flavour=request.param, api_secret=SECRET, queue_seconds=0.02, run_seconds=0.1)
    async with serve(fake.app) as url, httpx.AsyncClient() as client:
        provider = make_provider(m.MjProxy, client, url, mj_proxy_api_secret=SECRET)
        yield fake, provider
    await fake.aclose()


async def done(provider: m.MjProxy, job_id: str) -> Any:
    states = []

    async def finished() -> bool:
        states.append(await provider.poll(job_id))
        return states[-1].finished

    for _ in range(200):
        if await finished():
            return states
        import asyncio
        await asyncio.sleep(0.01)
    raise AssertionError(states[-1])


async def test_imagine_then_u2_then_a_batch_query(proxy) -> None:  # type: ignore[no-untyped-def]
    fake, provider = proxy
    submitted = await provider.submit(make_spec(prompt="a lighthouse"))
    states = await done(provider, submitted.job_id)
    assert any(s.status is JobStatus.RUNNING and s.progress for s in states)
    grid = states[-1]
    assert grid.status is JobStatus.SUCCEEDED and grid.is_grid
    assert fake.api_requests("imagine")[0].headers["mj-api-secret"] == SECRET
    source = SourceResult(provider="mjproxy", job_id=submitted.job_id, index=1, vendor_data=grid.vendor_data)
    upscale = await provider.submit(make_spec(Capability.UPSCALE, source=source))
    await done(provider, upscale.job_id)
    both = await provider.poll_many([submitted.job_id, upscale.job_id, "404404"])
    assert both[submitted.job_id].status is JobStatus.SUCCEEDED  # type: ignore[union-attr]
    assert not both[upscale.job_id].is_grid  # type: ignore[union-attr]
    assert isinstance(both["404404"], JobNotFound)
    route = "action" if fake.flavour == "trueai" else "change"
    assert len(fake.api_requests(route)) == 1


async def test_unknown_task_and_wrong_secret(proxy) -> None:  # type: ignore[no-untyped-def]
    fake, provider = proxy
    with pytest.raises(JobNotFound):
        await provider.poll("999999")
    provider.auth = m.HeaderAuth({"mj-api-secret": "wrong"})
    with pytest.raises(AuthError):
        await provider.submit(make_spec(prompt="x"))


async def test_banned_word_is_content_rejected(proxy) -> None:  # type: ignore[no-untyped-def]
    _, provider = proxy
    with pytest.raises(ContentRejected):
        await provider.submit(make_spec(prompt="a nsfwword poster"))


async def test_describe_and_blend(proxy) -> None:  # type: ignore[no-untyped-def]
    _, provider = proxy
    described = await provider.submit(make_spec(Capability.DESCRIBE, images=(input_image(png(64, 64)),), prompt=""))
    text = (await done(provider, described.job_id))[-1]
    assert text.status is JobStatus.SUCCEEDED and "1️⃣" in text.vendor_data["description"]
    images = (input_image(png(64, 64)), input_image(png(64, 64, (0, 90, 200))))
    blend = await provider.submit(make_spec(Capability.BLEND, images=images, prompt=""))
    assert (await done(provider, blend.job_id))[-1].is_grid


async def test_face_swap_on_trueai_and_its_absence_on_novicezk(proxy) -> None:  # type: ignore[no-untyped-def]
    fake, provider = proxy
    spec = make_spec(Capability.FACESWAP, images=(input_image(png(64, 64)), input_image(png(64, 64, (9, 9, 9)))), prompt="")
    if fake.flavour == "novicezk":
        with pytest.raises(BadRequest):
            await provider.submit(spec)
        assert Capability.FACESWAP not in provider.available_capabilities(True)
        return
    swapped = await provider.submit(spec)
    assert (await done(provider, swapped.job_id))[-1].status is JobStatus.SUCCEEDED


async def test_a_callback_is_read_and_a_foreign_one_refused(proxy) -> None:  # type: ignore[no-untyped-def]
    fake, provider = proxy
    submitted = await provider.submit(make_spec(prompt="a kite"))
    await done(provider, submitted.job_id)
    body = fake.task_json(submitted.job_id)
    assert provider.parse_callback(body, submitted.job_id).status is JobStatus.SUCCEEDED
    with pytest.raises(JobNotFound):
        provider.parse_callback(body, "another")
    await eventually(lambda: True)
