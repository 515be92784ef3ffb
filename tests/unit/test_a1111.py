"""a1111 adapter: request bodies, answers, errors, and one call at a time
with true queue positions (httpx.MockTransport; the loopback runs against
FakeA1111 are in tests/e2e/test_a1111.py)."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest

from providers import a1111 as a
from providers.errors import AuthError, BadRequest, MalformedResponse, Unavailable
from providers.types import Capability, GenerationParams, JobStatus
from tests.vendor_kit import input_image, make_spec, png

BASE = "http://gpu-box.local:7860"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_txt2img_body_takes_our_flags() -> None:
    params = GenerationParams(prompt="a fox", negative_prompt="blur", aspect_ratio="16:9", n=2,
                              seed=7, steps=30, cfg=5.5, model="sdxl_base.safetensors [31e35c80fc]")
    body = a.txt2img_body(params)
    assert body == {
        "prompt": "a fox", "negative_prompt": "blur", "seed": 7, "steps": 30, "cfg_scale": 5.5,
        "width": 1024, "height": 576, "batch_size": 2, "n_iter": 1, "send_images": True, "save_images": False,
        "override_settings": {"sd_model_checkpoint": "sdxl_base.safetensors [31e35c80fc]"},
        "override_settings_restore_afterwards": True,
    }


def test_img2img_keeps_the_photos_shape_and_upscale_doubles() -> None:
    spec = make_spec(Capability.IMG2IMG, images=(input_image(png(300, 200)),), prompt="in snow")
    body = a.img2img_body(spec)
    assert (body["width"], body["height"], body["denoising_strength"]) == (1024, 680, 0.6)
    assert base64.b64decode(body["init_images"][0]) == spec.images[0].data
    up = a.upscale_body(make_spec(Capability.UPSCALE, images=(input_image(png(64, 48)),)))
    assert (up["upscaling_resize"], up["upscaler_1"]) == (2, "R-ESRGAN 4x+")
    with pytest.raises(BadRequest):
        a.upscale_body(make_spec(Capability.UPSCALE, images=(input_image(png(3000, 100)),)))


def test_answer_with_seeds_from_info() -> None:
    state = a.read_generation({"images": [b64(png()), b64(png())], "info": json.dumps({"all_seeds": [11, 12]})})
    assert state.status is JobStatus.SUCCEEDED and [i.seed for i in state.images] == [11, 12]
    with pytest.raises(MalformedResponse):
        a.read_generation({"images": ["%%%"]})


def test_progress_with_its_picture() -> None:
    state = a.read_progress({"progress": 0.4, "eta_relative": 3.5, "current_image": b64(png())})
    assert (state.progress, state.eta_seconds, state.preview) == (0.4, 3.5, png())
    idle = a.read_progress({"progress": 0.0, "eta_relative": 0.0, "current_image": None})
    assert (idle.progress, idle.preview) == (None, None)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"detail": "Incorrect username or password"}, AuthError),
        (422, {"detail": [{"loc": ["body", "steps"], "msg": "value is not a valid integer"}]}, BadRequest),
        (500, {"error": "OutOfMemoryError", "detail": "", "body": "", "errors": "CUDA out of memory."}, Unavailable),
        (502, None, Unavailable),
        (404, {"detail": "Not Found"}, Unavailable),  # started without --api
    ],
)
def test_errors(status: int, body: object, expected: type) -> None:
    response = httpx.Response(status, json=body) if body is not None else httpx.Response(status, text="<html>")
    assert type(a.error_from(response)) is expected


async def test_one_call_at_a_time_with_true_queue_positions() -> None:
    gate = asyncio.Event()
    seen: list[dict] = []

    async def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/internal/progress":
            asked = json.loads(request.content)["id_task"]
            return httpx.Response(200, json={"active": asked == "b0", "queued": False, "progress": 0.5, "eta": 1.0,
                                             "live_preview": None, "textinfo": None})
        seen.append(json.loads(request.content))
        await gate.wait()
        return httpx.Response(200, json={"images": [b64(png())], "info": "{}"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as client:
        provider = a.A1111(client, secrets={"a1111_auth": "me:pw"}, base_url=BASE)
        provider.jobs.answer_within = 0.01
        ids = []
        for n in range(3):
            submitted = await provider.submit(make_spec(prompt=f"job {n}", business_id=f"b{n}"))
            ids.append(submitted.job_id)
        first, second, third = [await provider.poll(job_id) for job_id in ids]
        assert first.status is JobStatus.RUNNING and first.progress == 0.5  # the server's job is ours
        assert (second.queue_position, third.queue_position) == (1, 2)
        assert len(seen) == 1  # the others wait here, not inside the server
        gate.set()
        for _ in range(100):
            if all(provider.jobs.state(i).finished for i in ids if provider.jobs.waiting_position(i) is None
                   and not provider.jobs.running(i)) and len(seen) == 3:
                break
            await asyncio.sleep(0.01)
        assert [body["prompt"] for body in seen] == ["job 0", "job 1", "job 2"]
        assert [body["force_task_id"] for body in seen] == ["b0", "b1", "b2"]


async def test_basic_auth_goes_with_every_call() -> None:
    headers: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers.get("authorization", ""))
        return httpx.Response(200, json={"images": [b64(png())], "info": "{}"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as client:
        provider = a.A1111(client, secrets={"a1111_auth": "me:pw"}, base_url=BASE)
        submitted = await provider.submit(make_spec(prompt="x"))
    assert submitted.state is not None and submitted.state.status is JobStatus.SUCCEEDED
    assert headers == ["Basic " + base64.b64encode(b"me:pw").decode()]
    assert "me:pw" not in repr(provider)


def test_task_progress_tells_our_job_from_someone_elses() -> None:
    ours = a.read_task_progress({"active": True, "queued": False, "progress": 0.25, "eta": 6.0,
                                 "live_preview": "data:image/png;base64," + b64(png())})
    assert (ours.status, ours.progress, ours.eta_seconds, ours.preview) == (JobStatus.RUNNING, 0.25, 6.0, png())
    behind = a.read_task_progress({"active": False, "queued": True, "textinfo": "In queue: 2/3"})
    assert (behind.status, behind.queue_position) == (JobStatus.QUEUED, 2)


async def test_an_older_webui_without_task_progress_is_asked_the_old_way() -> None:
    paths: list[str] = []
    release = asyncio.Event()

    async def server(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/internal/progress":
            return httpx.Response(404, json={"detail": "Not Found"})
        if request.url.path == "/sdapi/v1/progress":
            return httpx.Response(200, json={"progress": 0.3, "eta_relative": 2.0, "current_image": None})
        await release.wait()
        return httpx.Response(200, json={"images": [b64(png())], "info": "{}"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as client:
        provider = a.A1111(client, secrets={}, base_url=BASE)
        provider.jobs.answer_within = 0.01
        job = (await provider.submit(make_spec(prompt="x", business_id="b9"))).job_id
        await provider.poll(job)  # 404: noted
        state = await provider.poll(job)
        release.set()
    assert state.progress == 0.3
    assert paths[1:] == ["/internal/progress", "/sdapi/v1/progress"]
