"""FakeA1111 over real loopback HTTP: txt2img / img2img answers and their
images, FastAPI's 422s, basic auth, the one-job-at-a-time queue, progress
(both endpoints), interrupt, extras, the lists and the faults."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from tests.fakes.a1111 import FakeA1111
from tests.fakes.server import serve

loopback = pytest.mark.asyncio(loop_scope="module")

FAKE = FakeA1111(step_seconds=0.001)
AUTHED = FakeA1111(auth=("alice", "s3cret"), step_seconds=0.0)


class Api:
    def __init__(self, base: str, client: httpx.AsyncClient) -> None:
        self.base = base
        self.client = client

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return await self.client.post(f"{self.base}{path}", json=body, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(f"{self.base}{path}", **kwargs)

    async def txt2img(self, **body: Any) -> httpx.Response:
        return await self.post("/sdapi/v1/txt2img", body)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[tuple[Api, Api]]:
    async with serve(FAKE.app) as base, serve(AUTHED.app) as authed_base, \
            httpx.AsyncClient(timeout=5) as client:
        yield Api(base, client), Api(authed_base, client)
    await FAKE.aclose()
    await AUTHED.aclose()


@pytest.fixture
def api(server: tuple[Api, Api]) -> Api:
    FAKE.reset()
    return server[0]


@pytest.fixture
def authed(server: tuple[Api, Api]) -> Api:
    AUTHED.reset()
    return server[1]


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decoded(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
    img.load()
    return img


def webui_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error", "detail", "body", "errors"}
    return body


# ---- txt2img ---------------------------------------------------------------------


@loopback
async def test_txt2img_answers_images_parameters_and_info(api: Api) -> None:
    response = await api.txt2img(prompt="a red fox", negative_prompt="blurry", seed=1234,
                                 steps=5, cfg_scale=6.5, width=320, height=256, batch_size=2,
                                 sampler_name="Euler a", unknown_field="ignored")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    assert len(body["images"]) == 2
    for b64 in body["images"]:
        img = decoded(b64)
        assert (img.format, img.size) == ("PNG", (320, 256))
        assert "Seed: 123" in img.info["parameters"]
    params = body["parameters"]
    assert params["prompt"] == "a red fox" and params["steps"] == 5
    assert params["sampler_index"] == "Euler" and params["send_images"] is True
    assert "unknown_field" not in params
    info = json.loads(body["info"])
    assert info["seed"] == 1234 and info["all_seeds"] == [1234, 1235]
    assert (info["prompt"], info["negative_prompt"]) == ("a red fox", "blurry")
    assert (info["width"], info["height"], info["steps"]) == (320, 256, 5)
    assert info["sampler_name"] == "Euler a"
    assert info["sd_model_name"] == "v1-5-pruned-emaonly"
    assert info["infotexts"][0].startswith("a red fox\nNegative prompt: blurry\nSteps: 5")
    assert (FAKE.started, FAKE.completed) == (1, 1)
    job = FAKE.jobs[0]
    assert (job.kind, job.prompt, job.order, job.status) == ("txt2img", "a red fox", 1, "done")
    assert FAKE.api_requests("/txt2img")[0].body["seed"] == 1234


@loopback
async def test_txt2img_defaults_random_seed_and_floored_sizes(api: Api) -> None:
    body = (await api.txt2img(prompt="p", steps=2, width=300, height=200, n_iter=2)).json()
    assert [decoded(b).size for b in body["images"]] == [(296, 200), (296, 200)]
    info = json.loads(body["info"])
    assert info["seed"] >= 0 and info["all_seeds"] == [info["seed"], info["seed"] + 1]
    assert info["sampler_name"] == "Euler"  # no sampler_name: sampler_index's default
    default = (await api.txt2img(prompt="p", steps=1, width=64, height=64)).json()
    assert decoded(default["images"][0]).size == (64, 64)


@loopback
async def test_txt2img_sampler_with_scheduler_unknown_sampler_and_send_images(api: Api) -> None:
    body = (await api.txt2img(prompt="p", steps=1, width=64, height=64,
                              sampler_name="DPM++ 2M Karras", send_images=False)).json()
    assert body["images"] == []
    info = json.loads(body["info"])
    assert info["sampler_name"] == "DPM++ 2M"
    # Karras is DPM++ 2M's own default scheduler: reported as Automatic
    assert info["extra_generation_params"]["Schedule type"] == "Automatic"
    euler = json.loads((await api.txt2img(prompt="p", steps=1, width=64, height=64,
                                          sampler_name="Euler Karras")).json()["info"])
    assert (euler["sampler_name"], euler["extra_generation_params"]["Schedule type"]) == (
        "Euler", "Karras")
    explicit = json.loads((await api.txt2img(prompt="p", steps=1, width=64, height=64,
                                             sampler_name="Euler a", scheduler="exponential")
                           ).json()["info"])
    assert explicit["extra_generation_params"]["Schedule type"] == "Exponential"
    unknown = json.loads((await api.txt2img(prompt="p", steps=1, width=64, height=64,
                                            sampler_name="Nope")).json()["info"])
    assert unknown["sampler_name"] == "DPM++ 2M"


@loopback
async def test_txt2img_checkpoint_override(api: Api) -> None:
    body = (await api.txt2img(prompt="p", steps=1, width=64, height=64, override_settings={
        "sd_model_checkpoint": "sd_xl_base_1.0"})).json()
    assert json.loads(body["info"])["sd_model_name"] == "sd_xl_base_1.0"
    options = (await api.get("/sdapi/v1/options")).json()
    assert options["sd_model_checkpoint"].startswith("v1-5-pruned-emaonly")  # restored
    missing = (await api.txt2img(prompt="p", steps=1, width=64, height=64, override_settings={
        "sd_model_checkpoint": "nope"})).json()
    assert json.loads(missing["info"])["sd_model_name"] == "v1-5-pruned-emaonly"


@loopback
async def test_txt2img_grid_when_saving_several_images(api: Api) -> None:
    body = (await api.txt2img(prompt="p", steps=1, width=64, height=64, batch_size=2,
                              save_images=True)).json()
    assert [decoded(b).size for b in body["images"]] == [(128, 64), (64, 64), (64, 64)]
    assert json.loads(body["info"])["index_of_first_image"] == 1


# ---- validation ------------------------------------------------------------------


@loopback
async def test_wrong_types_are_fastapi_422(api: Api) -> None:
    response = await api.txt2img(prompt="p", steps="many", width=5.5)
    assert response.status_code == 422
    detail = response.json()["detail"]
    locs = {tuple(item["loc"]): item for item in detail}
    assert set(locs) == {("body", "steps"), ("body", "width")}
    assert locs[("body", "steps")]["type"] == "int_parsing"
    assert locs[("body", "steps")]["msg"].startswith("Input should be a valid integer")
    assert locs[("body", "steps")]["input"] == "many"
    assert locs[("body", "width")]["type"] == "int_from_float"
    assert (await api.txt2img(prompt=5)).json()["detail"][0]["type"] == "string_type"
    assert (await api.txt2img(steps="3", width="64", height=64)).status_code == 200  # lax
    assert FAKE.started == 1


@loopback
async def test_bad_json_and_missing_body_are_422(api: Api) -> None:
    bad = await api.client.post(f"{api.base}/sdapi/v1/txt2img", content=b"{nope",
                                headers={"content-type": "application/json"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["type"] == "json_invalid"
    empty = await api.client.post(f"{api.base}/sdapi/v1/txt2img")
    assert empty.status_code == 422
    assert empty.json()["detail"] == [{"type": "missing", "loc": ["body"],
                                       "msg": "Field required", "input": None}]
    listed = await api.post("/sdapi/v1/txt2img", [1, 2])
    assert listed.json()["detail"][0]["type"] == "model_attributes_type"
    assert (await api.get("/sdapi/v1/nothing")).json() == {"detail": "Not Found"}
    assert (await api.get("/sdapi/v1/txt2img")).status_code == 405


@loopback
async def test_runtime_errors_use_webui_envelope(api: Api) -> None:
    response = await api.txt2img(prompt="p", steps=1, width=4096, height=4096)
    assert response.status_code == 500
    assert webui_error(response)["error"] == "OutOfMemoryError"
    nulled = await api.txt2img(prompt="p", steps=None)
    assert nulled.status_code == 500 and webui_error(nulled)["error"] == "TypeError"


# ---- img2img ---------------------------------------------------------------------


@loopback
async def test_img2img_with_init_images(api: Api) -> None:
    response = await api.post("/sdapi/v1/img2img", {
        "prompt": "repaint", "init_images": [png(), "data:image/png;base64," + png()],
        "denoising_strength": 0.4, "steps": 3, "width": 128, "height": 96, "batch_size": 2,
        "mask": png(128, 96, (255, 255, 255))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [decoded(b).size for b in body["images"]] == [(128, 96), (128, 96)]
    assert body["parameters"]["init_images"] is None and body["parameters"]["mask"] is None
    assert body["parameters"]["denoising_strength"] == 0.4
    assert json.loads(body["info"])["denoising_strength"] == 0.4
    job = FAKE.jobs[0]
    assert job.kind == "img2img" and len(job.init_images) == 2 and job.mask is not None
    assert Image.open(io.BytesIO(job.init_images[0])).size == (64, 48)
    kept = (await api.post("/sdapi/v1/img2img", {"init_images": [png()], "steps": 1,
                                                 "width": 64, "height": 64,
                                                 "include_init_images": True})).json()
    assert kept["parameters"]["init_images"] == [png()]


@loopback
async def test_img2img_refusals(api: Api) -> None:
    missing = await api.post("/sdapi/v1/img2img", {"prompt": "p"})
    assert missing.status_code == 404
    assert webui_error(missing) == {"error": "HTTPException", "detail": "Init image not found",
                                    "body": "", "errors": "404: Init image not found"}
    bad = await api.post("/sdapi/v1/img2img", {"init_images": ["not-base64!"],
                                               "force_task_id": "bad-one"})
    assert bad.status_code == 500
    assert webui_error(bad)["detail"] == "Invalid encoded image"
    assert FAKE.started == 0
    # webui decodes init images inside the queue, before start_task: still "queued"
    stuck = (await api.post("/internal/progress", {"id_task": "bad-one"})).json()
    assert stuck["queued"] is True and stuck["active"] is False
    bad_mask = await api.post("/sdapi/v1/img2img", {"init_images": [png()], "mask": "xx"})
    assert webui_error(bad_mask)["detail"] == "Invalid encoded image"
    local = await api.post("/sdapi/v1/img2img", {"init_images": ["http://127.0.0.1/a.png"]})
    assert webui_error(local)["detail"] == "Request to local resource not allowed"
    typed = await api.post("/sdapi/v1/img2img", {"init_images": "abc"})
    assert typed.status_code == 422 and typed.json()["detail"][0]["type"] == "list_type"


# ---- auth ------------------------------------------------------------------------


@loopback
async def test_basic_auth(authed: Api) -> None:
    missing = await authed.get("/sdapi/v1/sd-models")
    assert missing.status_code == 401
    assert webui_error(missing) == {"error": "HTTPException", "detail": "Not authenticated",
                                    "body": "", "errors": "401: Not authenticated"}
    wrong = await authed.post("/sdapi/v1/txt2img", {"prompt": "p"}, auth=("alice", "nope"))
    assert wrong.status_code == 401
    assert webui_error(wrong)["detail"] == "Incorrect username or password"
    assert "www-authenticate" not in wrong.headers  # webui's handler drops the headers
    ok = await authed.post("/sdapi/v1/txt2img", {"prompt": "p", "steps": 1, "width": 64,
                                                 "height": 64}, auth=("alice", "s3cret"))
    assert ok.status_code == 200
    assert AUTHED.started == 1
    # bad JSON is refused before the auth dependency runs; the gradio route needs none
    bad = await authed.client.post(f"{authed.base}/sdapi/v1/txt2img", content=b"{",
                                   headers={"content-type": "application/json"})
    assert bad.status_code == 422
    assert (await authed.post("/internal/progress", {"id_task": "x"})).status_code == 200


# ---- the queue ---------------------------------------------------------------------


@loopback
async def test_concurrent_requests_run_one_at_a_time_in_order(api: Api) -> None:
    async def send(i: int) -> httpx.Response:
        await asyncio.sleep(0.02 * i)  # arrival order 0, 1, 2
        return await api.txt2img(prompt=f"job {i}", steps=10, width=64, height=64)

    responses = await asyncio.gather(*(send(i) for i in range(3)))
    assert all(r.status_code == 200 for r in responses)
    assert FAKE.max_concurrent_running == 1
    jobs = FAKE.jobs
    assert [j.prompt for j in jobs] == ["job 0", "job 1", "job 2"]
    assert [j.order for j in jobs] == [1, 2, 3]
    for before, after in itertools.pairwise(jobs):
        assert before.finished_at is not None and after.started_at is not None
        assert before.finished_at <= after.started_at
    assert [json.loads(r.json()["info"])["prompt"] for r in responses] == [
        "job 0", "job 1", "job 2"]


@loopback
async def test_progress_while_running_and_waiting(api: Api) -> None:
    idle = (await api.get("/sdapi/v1/progress", params={"skip_current_image": "false"})).json()
    assert set(idle) == {"progress", "eta_relative", "state", "current_image", "textinfo"}
    assert (idle["progress"], idle["current_image"], idle["state"]["job_count"]) == (0, None, 0)
    FAKE.hold()
    first = asyncio.create_task(api.txt2img(prompt="first", steps=20, width=64, height=64,
                                            n_iter=2, force_task_id="task-1"))
    await FAKE.wait_started(1)
    second = asyncio.create_task(api.txt2img(prompt="second", steps=4, width=64, height=64,
                                             force_task_id="task-2"))
    await FAKE.wait_queued(1)
    # held at step 0: no preview yet
    early = (await api.get("/sdapi/v1/progress")).json()
    assert early["state"]["sampling_step"] == 0 and early["current_image"] is None
    FAKE.release()
    deadline = time.monotonic() + 3
    while FAKE.state.sampling_step < 12:
        assert time.monotonic() < deadline, FAKE.state
        await asyncio.sleep(0.002)
    FAKE.hold()
    await asyncio.sleep(0.01)
    running = (await api.get("/sdapi/v1/progress", params={"skip_current_image": "false"})).json()
    state = running["state"]
    assert state["job"] == "scripts_txt2img" and state["job_count"] == 2  # n_iter of this job
    assert state["sampling_steps"] == 20 and state["sampling_step"] >= 12
    assert 0 < running["progress"] < 1 and running["eta_relative"] >= 0
    preview = decoded(running["current_image"])
    assert preview.size == (64, 64)
    skipped = (await api.get("/sdapi/v1/progress", params={"skip_current_image": True})).json()
    assert skipped["current_image"] is None
    active = (await api.post("/internal/progress", {"id_task": "task-1",
                                                    "id_live_preview": -1})).json()
    assert active["active"] is True and active["queued"] is False
    assert active["live_preview"].startswith("data:image/png;base64,")
    assert 0 < active["progress"] < 1
    waiting = (await api.post("/internal/progress", {"id_task": "task-2"})).json()
    assert (waiting["active"], waiting["queued"], waiting["completed"]) == (False, True, False)
    assert waiting["textinfo"] == "In queue: 1/1"
    FAKE.release()
    assert (await first).status_code == 200 and (await second).status_code == 200
    done = (await api.post("/internal/progress", {"id_task": "task-2"})).json()
    assert done["completed"] is True and done["active"] is False
    unknown = (await api.post("/internal/progress", {"id_task": "nope"})).json()
    assert (unknown["queued"], unknown["textinfo"]) == (False, "Waiting...")
    after = (await api.get("/sdapi/v1/progress")).json()
    assert after["progress"] == 0 and after["state"]["job_count"] == 0
    bad = await api.get("/sdapi/v1/progress", params={"skip_current_image": "maybe"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == [
        "query", "skip_current_image"]


@loopback
async def test_interrupt_returns_partial_images(api: Api) -> None:
    FAKE.hold()
    task = asyncio.create_task(api.txt2img(prompt="long", steps=50, width=64, height=64,
                                            n_iter=3))
    await FAKE.wait_started(1)
    interrupted = await api.post("/sdapi/v1/interrupt")
    assert interrupted.status_code == 200 and interrupted.json() == {}
    response = await asyncio.wait_for(task, 2)
    assert response.status_code == 200
    assert len(response.json()["images"]) == 1  # the batch in progress; later ones skipped
    assert FAKE.jobs[0].status == "interrupted" and FAKE.interrupted == 1
    state = (await api.get("/sdapi/v1/progress")).json()["state"]
    assert state["interrupted"] is True and state["job_count"] == 0
    FAKE.release()
    # the flag is reset when the next job begins
    assert len((await api.txt2img(prompt="p", steps=2, width=64, height=64)).json()[
        "images"]) == 1
    assert FAKE.jobs[1].status == "done"


# ---- extras --------------------------------------------------------------------------


@loopback
async def test_extra_single_image(api: Api) -> None:
    response = await api.post("/sdapi/v1/extra-single-image", {
        "image": png(40, 30), "upscaling_resize": 2, "upscaler_1": "R-ESRGAN 4x+"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"html_info", "image"}
    assert decoded(body["image"]).size == (80, 60)
    assert "Postprocess upscale by: 2" in body["html_info"]
    to_size = (await api.post("/sdapi/v1/extra-single-image", {
        "image": "data:image/png;base64," + png(40, 30), "resize_mode": 1,
        "upscaling_resize_w": 100, "upscaling_resize_h": 100, "upscaler_1": "Lanczos"})).json()
    assert decoded(to_size["image"]).size == (100, 100)
    untouched = (await api.post("/sdapi/v1/extra-single-image", {"image": png(40, 30)})).json()
    assert decoded(untouched["image"]).size == (40, 30)  # upscaler_1 "None": no upscaling
    unknown = await api.post("/sdapi/v1/extra-single-image", {"image": png(), "upscaler_1": "X"})
    assert unknown.status_code == 500
    assert webui_error(unknown)["errors"] == "could not find upscaler named X"
    bad = await api.post("/sdapi/v1/extra-single-image", {"image": "zz"})
    assert webui_error(bad)["detail"] == "Invalid encoded image"
    zero = await api.post("/sdapi/v1/extra-single-image", {"image": png(), "upscaling_resize": 0})
    assert zero.status_code == 422 and zero.json()["detail"][0]["type"] == "greater_than"


# ---- lists and options -------------------------------------------------------------


@loopback
async def test_models_samplers_options(api: Api) -> None:
    models = (await api.get("/sdapi/v1/sd-models")).json()
    assert [set(m) for m in models] == [
        {"title", "model_name", "hash", "sha256", "filename", "config"}] * 2
    assert models[0]["title"] == "v1-5-pruned-emaonly.safetensors [6ce0161689]"
    options = (await api.get("/sdapi/v1/options")).json()
    assert options["sd_model_checkpoint"] == models[0]["title"]
    samplers = (await api.get("/sdapi/v1/samplers")).json()
    assert {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"],
            "options": {"uses_ensd": True}} in samplers
    assert (await api.post("/sdapi/v1/options", {"sd_model_checkpoint": "sd_xl_base_1.0"})
            ).json() is None
    options = (await api.get("/sdapi/v1/options")).json()
    assert options["sd_model_checkpoint"] == models[1]["title"]
    missing = await api.post("/sdapi/v1/options", {"sd_model_checkpoint": "nope"})
    assert missing.status_code == 500 and webui_error(missing)["error"] == "RuntimeError"
    upscalers = (await api.get("/sdapi/v1/upscalers")).json()
    assert "R-ESRGAN 4x+" in [u["name"] for u in upscalers]


# ---- faults ------------------------------------------------------------------------------


@loopback
async def test_faults(api: Api) -> None:
    FAKE.fail_next("http500")
    assert (await api.get("/sdapi/v1/sd-models")).status_code == 500
    FAKE.fail_next("busy")
    assert (await api.txt2img(prompt="p")).status_code == 502
    FAKE.fail_next("unavailable")
    unavailable = await api.get("/sdapi/v1/progress")
    assert unavailable.status_code == 503 and "503" in unavailable.text
    FAKE.fail_next("oom", path="txt2img")
    oom = await api.txt2img(prompt="p", steps=1, width=64, height=64, force_task_id="oom-1")
    assert oom.status_code == 500
    error = webui_error(oom)
    assert (error["error"], error["detail"], error["body"]) == ("OutOfMemoryError", "", "")
    assert error["errors"].startswith("CUDA out of memory.")
    assert FAKE.started == 1 and FAKE.completed == 0 and FAKE.jobs[0].status == "failed"
    assert (await api.txt2img(prompt="p", steps=1, width=64, height=64)).status_code == 200
    assert len(FAKE.api_requests()) == 5
    with pytest.raises(ValueError):
        FAKE.fail_next("nonsense")


@loopback
async def test_held_job_outlives_its_client_and_skip(api: Api) -> None:
    FAKE.hold()
    async with httpx.AsyncClient(timeout=5) as bot:  # the bot before its restart
        task = asyncio.create_task(bot.post(f"{api.base}/sdapi/v1/txt2img", json={
            "prompt": "survivor", "steps": 4, "width": 64, "height": 64,
            "force_task_id": "keep-1"}))
        await FAKE.wait_started(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    still = (await api.post("/internal/progress", {"id_task": "keep-1"})).json()
    assert still["active"] is True
    assert (await api.get("/sdapi/v1/progress")).json()["state"]["job"] == "scripts_txt2img"
    FAKE.release()
    deadline = time.monotonic() + 3
    while FAKE.completed < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    assert (await api.post("/internal/progress", {"id_task": "keep-1"})).json()["completed"]
    # skip ends the current batch only
    FAKE.hold()
    skipped = asyncio.create_task(api.txt2img(prompt="p", steps=5, width=64, height=64,
                                              n_iter=2))
    await FAKE.wait_started(2)
    assert (await api.post("/sdapi/v1/skip")).json() is None
    FAKE.release()
    response = await skipped
    assert len(response.json()["images"]) == 2 and FAKE.jobs[1].status == "done"


@loopback
async def test_timeout_fault_answers_late(api: Api) -> None:
    FAKE.timeout_seconds = 0.2
    FAKE.fail_next("timeout")
    started = time.monotonic()
    response = await api.get("/sdapi/v1/sd-models")
    assert response.status_code == 200 and time.monotonic() - started >= 0.2
