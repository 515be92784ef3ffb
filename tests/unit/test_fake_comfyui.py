"""The ComfyUI fake over real loopback HTTP and websocket (aiohttp's client)."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import struct
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.vendor import _picture

CKPT = "sd_xl_base_1.0.safetensors"


def txt2img(width: int = 64, height: int = 48, batch: int = 1, steps: int = 3,
            seed: int = 1, ckpt: str = CKPT, text: str = "a cat") -> dict[str, Any]:
    return {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
            "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": width, "height": height, "batch_size": batch}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage",
              "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


def img2img(image: str, seed: int = 2, denoise: float = 0.6) -> dict[str, Any]:
    wf = txt2img(seed=seed)
    del wf["5"]
    wf["10"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    wf["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    wf["3"]["inputs"]["latent_image"] = ["11", 0]
    wf["3"]["inputs"]["denoise"] = denoise
    return wf


def png(size: tuple[int, int] = (80, 40)) -> bytes:
    return _picture(size, "seed", "in")


@pytest.fixture
async def comfy() -> AsyncIterator[tuple[FakeComfyUI, str, aiohttp.ClientSession]]:
    fake = FakeComfyUI(step_seconds=0.001)
    async with fake.serve() as base, aiohttp.ClientSession() as session:
        yield fake, base, session
    await fake.aclose()
    assert fake.worker_errors == []
    assert fake.max_concurrent <= 1


async def submit(session: aiohttp.ClientSession, base: str, workflow: dict[str, Any],
                 client_id: str | None = None, **extra: Any) -> tuple[int, Any]:
    body: dict[str, Any] = {"prompt": workflow, **extra}
    if client_id is not None:
        body["client_id"] = client_id
    async with session.post(f"{base}/prompt", json=body) as r:
        if r.content_type != "application/json":
            return r.status, await r.text()
        return r.status, await r.json()


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def upload(session: aiohttp.ClientSession, base: str, data: bytes, name: str = "in.png",
                 **fields: str) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    async with session.post(f"{base}/upload/image", data=form) as r:
        return r.status, (await r.json() if r.status == 200 else await r.text())


async def history_of(session: aiohttp.ClientSession, base: str, prompt_id: str) -> Any:
    return await get_json(session, f"{base}/history/{prompt_id}")


async def view(session: aiohttp.ClientSession, base: str, image: dict[str, str]) -> Image.Image:
    async with session.get(f"{base}/view", params={
            "filename": image["filename"], "subfolder": image["subfolder"],
            "type": image["type"]}) as r:
        assert r.status == 200
        assert r.content_type == "image/png"
        img = Image.open(io.BytesIO(await r.read()))
        img.load()
        return img


async def receive_until_done(ws: aiohttp.ClientWebSocketResponse, prompt_id: str,
                             timeout: float = 5.0) -> list[Any]:
    """JSON messages (dicts) and binary frames (bytes) until executing node=null."""
    received: list[Any] = []
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.BINARY:
            received.append(msg.data)
            continue
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = json.loads(msg.data)
        received.append(data)
        if (data["type"] == "executing" and data["data"]["node"] is None
                and data["data"].get("prompt_id") == prompt_id):
            return received


# ---- txt2img, history, view ----------------------------------------------------


async def test_txt2img_runs_and_its_images_have_the_latent_size(comfy) -> None:
    fake, base, session = comfy
    status, body = await submit(session, base, txt2img(width=64, height=48, batch=2),
                                str(uuid.uuid4()))
    assert status == 200
    assert set(body) == {"prompt_id", "number", "node_errors"}
    assert body["node_errors"] == {} and body["number"] == 0
    await fake.wait_idle()
    history = await history_of(session, base, body["prompt_id"])
    entry = history[body["prompt_id"]]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    events = [m[0] for m in entry["status"]["messages"]]
    assert events == ["execution_start", "execution_cached", "execution_success"]
    assert entry["prompt"][1] == body["prompt_id"] and entry["prompt"][4] == ["9"]
    images = entry["outputs"]["9"]["images"]
    assert [i["filename"] for i in images] == ["ComfyUI_00001_.png", "ComfyUI_00002_.png"]
    assert all(i["type"] == "output" and i["subfolder"] == "" for i in images)
    for image in images:
        assert (await view(session, base, image)).size == (64, 48)
    assert fake.executed == 1 and fake.max_concurrent == 1
    assert fake.prompts[0].workflow == txt2img(width=64, height=48, batch=2)


async def test_history_is_empty_for_unknown_and_unfinished_prompts(comfy) -> None:
    fake, base, session = comfy
    assert await history_of(session, base, "nope") == {}
    fake.hold()
    _, body = await submit(session, base, txt2img())
    await fake.wait_running(body["prompt_id"])
    assert await history_of(session, base, body["prompt_id"]) == {}
    fake.release()
    await fake.wait_idle()
    assert body["prompt_id"] in await get_json(session, f"{base}/history")


async def test_view_refuses_unknown_files(comfy) -> None:
    _, base, session = comfy
    async with session.get(f"{base}/view", params={"filename": "x.png"}) as r:
        assert r.status == 404
    async with session.get(f"{base}/view") as r:
        assert r.status == 404


async def test_upscale_nodes_scale_the_image(comfy) -> None:
    fake, base, session = comfy
    wf = txt2img(width=32, height=32)
    wf["12"] = {"class_type": "UpscaleModelLoader",
                "inputs": {"model_name": "RealESRGAN_x4plus.pth"}}
    wf["13"] = {"class_type": "ImageUpscaleWithModel",
                "inputs": {"upscale_model": ["12", 0], "image": ["8", 0]}}
    wf["14"] = {"class_type": "ImageScaleBy",
                "inputs": {"image": ["13", 0], "upscale_method": "lanczos", "scale_by": 0.5}}
    wf["9"]["inputs"]["images"] = ["14", 0]
    status, body = await submit(session, base, wf)
    assert status == 200, body
    await fake.wait_idle()
    entry = (await history_of(session, base, body["prompt_id"]))[body["prompt_id"]]
    assert (await view(session, base, entry["outputs"]["9"]["images"][0])).size == (64, 64)


async def test_an_unchanged_prompt_is_served_from_the_cache(comfy) -> None:
    fake, base, session = comfy
    _, first = await submit(session, base, txt2img(seed=5))
    await fake.wait_idle()
    _, second = await submit(session, base, txt2img(seed=6))  # only the sampler on changes
    await fake.wait_idle()
    h = (await history_of(session, base, second["prompt_id"]))[second["prompt_id"]]
    cached = h["status"]["messages"][1][1]["nodes"]
    assert sorted(cached) == ["4", "5", "6", "7"]
    assert h["outputs"]["9"]["images"][0]["filename"] == "ComfyUI_00002_.png"
    _, third = await submit(session, base, txt2img(seed=6))  # identical: nothing new
    await fake.wait_idle()
    h3 = (await history_of(session, base, third["prompt_id"]))[third["prompt_id"]]
    assert h3["outputs"] == h["outputs"]
    assert first["prompt_id"] != second["prompt_id"]


# ---- validation ----------------------------------------------------------------


async def test_unknown_node_type(comfy) -> None:
    fake, base, session = comfy
    wf = txt2img()
    wf["3"]["class_type"] = "KSamplerTurbo"
    status, body = await submit(session, base, wf)
    assert status == 400
    assert body == {"error": {
        "type": "missing_node_type",
        "message": "Node 'KSamplerTurbo' not found. The custom node may not be installed.",
        "details": "Node ID '#3'",
        "extra_info": {"node_id": "3", "class_type": "KSamplerTurbo",
                       "node_title": "KSamplerTurbo"}}, "node_errors": {}}
    assert fake.prompts == [] and fake.prompts_received == 1


async def test_missing_required_input(comfy) -> None:
    _, base, session = comfy
    wf = txt2img()
    del wf["3"]["inputs"]["steps"]
    status, body = await submit(session, base, wf)
    assert status == 400
    assert body["error"] == {"type": "prompt_outputs_failed_validation",
                             "message": "Prompt outputs failed validation",
                             "details": "", "extra_info": {}}
    assert body["node_errors"] == {"3": {
        "errors": [{"type": "required_input_missing", "message": "Required input is missing",
                    "details": "steps", "extra_info": {"input_name": "steps"}}],
        "dependent_outputs": ["9"], "class_type": "KSampler"}}


async def test_error_on_the_output_node_itself_is_in_the_details(comfy) -> None:
    _, base, session = comfy
    wf = txt2img()
    del wf["9"]["inputs"]["filename_prefix"]
    status, body = await submit(session, base, wf)
    assert status == 400
    assert body["error"]["details"] == "Required input is missing: filename_prefix"
    assert list(body["node_errors"]) == ["9"]


async def test_link_to_a_missing_node_or_slot_or_type(comfy) -> None:
    _, base, session = comfy
    wf = txt2img()
    wf["3"]["inputs"]["model"] = ["99", 0]
    status, body = await submit(session, base, wf)
    assert status == 400
    [error] = body["node_errors"]["3"]["errors"]
    assert error["type"] == "exception_during_inner_validation" and error["details"] == "'99'"
    assert error["extra_info"]["exception_type"] == "KeyError"

    wf = txt2img()
    wf["9"]["inputs"]["images"] = ["99", 0]  # from the output node itself
    _, body = await submit(session, base, wf)
    [error] = body["node_errors"]["9"]["errors"]
    assert error["type"] == "exception_during_validation" and error["details"] == "'99'"

    wf = txt2img()
    wf["8"]["inputs"]["vae"] = ["4", 7]
    _, body = await submit(session, base, wf)
    [error] = body["node_errors"]["8"]["errors"]
    assert (error["type"], error["details"]) == (
        "exception_during_inner_validation", "tuple index out of range")

    wf = txt2img()
    wf["8"]["inputs"]["vae"] = ["4", 0]
    status, body = await submit(session, base, wf)
    assert status == 400
    [error] = body["node_errors"]["8"]["errors"]
    assert error["type"] == "return_type_mismatch"
    assert error["message"] == "Return type mismatch between linked nodes"
    assert error["details"] == "vae, received_type(MODEL) mismatch input_type(VAE)"
    assert error["extra_info"]["linked_node"] == ["4", 0]
    assert body["node_errors"]["8"]["dependent_outputs"] == ["9"]


async def test_checkpoint_not_installed_and_values_out_of_range(comfy) -> None:
    _, base, session = comfy
    status, body = await submit(session, base, txt2img(ckpt="v1-5.safetensors"))
    assert status == 400
    assert body["node_errors"]["4"] == {
        "errors": [{"type": "value_not_in_list", "message": "Value not in list",
                    "details": "ckpt_name: 'v1-5.safetensors' not in "
                               "['sd_xl_base_1.0.safetensors']",
                    "extra_info": {"input_name": "ckpt_name",
                                   "input_config": [[CKPT], {"tooltip": "The name of the "
                                                             "checkpoint (model) to load."}],
                                   "received_value": "v1-5.safetensors"}}],
        "dependent_outputs": ["9"], "class_type": "CheckpointLoaderSimple"}
    _, body = await submit(session, base, txt2img(width=8))
    assert body["node_errors"]["5"]["errors"][0]["type"] == "value_smaller_than_min"
    wf = txt2img()
    wf["3"]["inputs"]["steps"] = "many"
    _, body = await submit(session, base, wf)
    assert body["node_errors"]["3"]["errors"][0]["type"] == "invalid_input_type"
    wf = txt2img()
    wf["3"]["inputs"]["sampler_name"] = "Euler a"
    _, body = await submit(session, base, wf)
    assert body["node_errors"]["3"]["errors"][0]["details"].startswith(
        "sampler_name: 'Euler a' not in (list of length")


async def test_no_outputs_and_no_prompt(comfy) -> None:
    _, base, session = comfy
    wf = txt2img()
    del wf["9"]
    status, body = await submit(session, base, wf)
    assert status == 400
    assert body == {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs",
                              "details": "", "extra_info": {}}, "node_errors": {}}
    async with session.post(f"{base}/prompt", json={"client_id": "x"}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "no_prompt"


async def test_one_good_output_of_two_runs_with_the_other_s_errors(comfy) -> None:
    fake, base, session = comfy
    wf = txt2img()
    wf["20"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}}  # no prefix
    status, body = await submit(session, base, wf)
    assert status == 200
    assert body["node_errors"]["20"]["errors"][0]["type"] == "required_input_missing"
    await fake.wait_idle()
    entry = (await history_of(session, base, body["prompt_id"]))[body["prompt_id"]]
    assert list(entry["outputs"]) == ["9"] and entry["prompt"][4] == ["9"]


async def test_view_guards_paths_and_api_prefix_serves_too(comfy) -> None:
    fake, base, session = comfy
    fake.add_input("x.png", png())
    async with session.get(f"{base}/api/view", params={"filename": "x.png",
                                                        "type": "input"}) as r:
        assert r.status == 200
    async with session.get(f"{base}/view", params={"filename": "x.png [input]"}) as r:
        assert r.status == 200
    async with session.get(f"{base}/view", params={"filename": "../x.png"}) as r:
        assert r.status == 400
    async with session.get(f"{base}/view", params={"filename": "x.png", "type": "input",
                                                    "subfolder": "../.."}) as r:
        assert r.status == 403
    async with session.get(f"{base}/view", params={"filename": "x.png", "type": "models"}) as r:
        assert r.status == 400


async def test_queue_clear_and_reset(comfy) -> None:
    fake, base, session = comfy
    fake.hold()
    for seed in range(3):
        await submit(session, base, txt2img(seed=seed))
    await fake.wait_running()
    async with session.post(f"{base}/queue", json={"clear": True}) as r:
        assert r.status == 200
    queue = await get_json(session, f"{base}/queue")
    assert len(queue["queue_running"]) == 1 and queue["queue_pending"] == []
    fake.reset()  # releases the held prompt
    await fake.wait_idle()
    assert fake.executed == 1 and len(fake.prompts) == 1


async def test_load_image_that_was_not_uploaded(comfy) -> None:
    _, base, session = comfy
    status, body = await submit(session, base, img2img("missing.png"))
    assert status == 400
    assert body["node_errors"]["10"]["errors"] == [{
        "type": "custom_validation_failed", "message": "Custom validation failed for node",
        "details": "image - Invalid image file: missing.png",
        "extra_info": {"input_name": "image"}}]


async def test_object_info_has_the_stock_nodes(comfy) -> None:
    fake, base, session = comfy
    await upload(session, base, png())
    info = await get_json(session, f"{base}/object_info")
    assert set(info) >= {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage",
                         "KSampler", "VAEDecode", "VAEEncode", "LoadImage", "SaveImage",
                         "UpscaleModelLoader", "ImageUpscaleWithModel", "ImageScaleBy"}
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [CKPT]
    assert info["CheckpointLoaderSimple"]["output"] == ["MODEL", "CLIP", "VAE"]
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["in.png"]
    assert info["SaveImage"]["output_node"] is True
    assert info["KSampler"]["input_order"]["required"][:3] == ["model", "seed", "steps"]
    one = await get_json(session, f"{base}/object_info/KSampler")
    assert list(one) == ["KSampler"]
    assert await get_json(session, f"{base}/api/object_info/Nope") == {}
    stats = await get_json(session, f"{base}/system_stats")
    assert stats["devices"][0]["type"] == "cuda" and "comfyui_version" in stats["system"]


# ---- upload, img2img --------------------------------------------------------------


async def test_upload_then_img2img(comfy) -> None:
    fake, base, session = comfy
    status, body = await upload(session, base, png((80, 40)), "photo.png")
    assert (status, body) == (200, {"name": "photo.png", "subfolder": "", "type": "input"})
    status, again = await upload(session, base, png((30, 30)), "photo.png")
    assert again["name"] == "photo (1).png"  # another file by that name: renamed
    status, over = await upload(session, base, png((30, 30)), "photo.png", overwrite="true")
    assert over["name"] == "photo.png"
    status, sub = await upload(session, base, png((80, 40)), "p.png", subfolder="tg")
    assert sub == {"name": "p.png", "subfolder": "tg", "type": "input"}
    status, result = await submit(session, base, img2img("tg/p.png"))
    assert status == 200, result
    await fake.wait_idle()
    entry = (await history_of(session, base, result["prompt_id"]))[result["prompt_id"]]
    assert entry["status"]["status_str"] == "success"
    assert (await view(session, base, entry["outputs"]["9"]["images"][0])).size == (80, 40)
    upload_record = fake.api_requests("/upload/image")[0]
    assert upload_record.body["image"] == "<file 'photo.png'>"


async def test_upload_without_an_image_field_is_refused(comfy) -> None:
    _, base, session = comfy
    form = aiohttp.FormData()
    form.add_field("file", b"x", filename="x.png")
    async with session.post(f"{base}/upload/image", data=form) as r:
        assert r.status == 400


async def test_a_non_image_upload_fails_when_load_image_runs(comfy) -> None:
    fake, base, session = comfy
    status, body = await upload(session, base, b"not a picture", "bad.png")
    assert status == 200  # ComfyUI stores whatever it is sent
    _, result = await submit(session, base, img2img("bad.png"), "c1")
    await fake.wait_idle()
    entry = (await history_of(session, base, result["prompt_id"]))[result["prompt_id"]]
    assert entry["status"]["status_str"] == "error"
    error = entry["status"]["messages"][-1]
    assert error[0] == "execution_error"
    assert error[1]["node_type"] == "LoadImage"
    assert error[1]["exception_type"] == "PIL.UnidentifiedImageError"


# ---- the queue ---------------------------------------------------------------------


async def test_queue_runs_one_at_a_time_in_order_and_deletes_pending(comfy) -> None:
    fake, base, session = comfy
    fake.hold()
    ids = []
    for seed in range(3):
        _, body = await submit(session, base, txt2img(seed=seed), f"client-{seed}")
        ids.append(body["prompt_id"])
    _, front = await submit(session, base, txt2img(seed=9), front=True)
    await fake.wait_running(ids[0])
    queue = await get_json(session, f"{base}/queue")
    assert [item[1] for item in queue["queue_running"]] == [ids[0]]
    assert [item[1] for item in queue["queue_pending"]] == [front["prompt_id"], ids[1], ids[2]]
    running = queue["queue_running"][0]
    assert running[0] == 0 and running[3] == {"client_id": "client-0"} and running[4] == ["9"]
    async with session.post(f"{base}/queue", json={"delete": [ids[1]]}) as r:
        assert r.status == 200
    queue = await get_json(session, f"{base}/queue")
    assert [item[1] for item in queue["queue_pending"]] == [front["prompt_id"], ids[2]]
    fake.release()
    await fake.wait_idle()
    finished = [p.prompt_id for p in sorted(fake.prompts, key=lambda p: p.started_at or 1e18)
                if p.started_at is not None]
    assert finished == [ids[0], front["prompt_id"], ids[2]]
    assert fake.max_concurrent == 1 and fake.executed == 3
    assert await history_of(session, base, ids[1]) == {}
    assert [p.client_id for p in fake.prompts] == ["client-0", "client-1", "client-2", None]


async def test_interrupt_stops_the_running_prompt(comfy) -> None:
    fake, base, session = comfy
    fake.hold()
    _, body = await submit(session, base, txt2img(), "c1")
    _, second = await submit(session, base, txt2img(seed=4), "c1")
    await fake.wait_running(body["prompt_id"])
    async with session.post(f"{base}/interrupt", json={}) as r:
        assert r.status == 200
    await asyncio.sleep(0.05)
    entry = (await history_of(session, base, body["prompt_id"]))[body["prompt_id"]]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_interrupted"
    assert (data["node_id"], data["node_type"]) == ("3", "KSampler")
    assert entry["outputs"] == {}
    # the interrupt does not carry over: the next prompt runs (once released)
    await fake.wait_running(second["prompt_id"])
    fake.release()
    await fake.wait_idle()
    h = await history_of(session, base, second["prompt_id"])
    assert h[second["prompt_id"]]["status"]["status_str"] == "success"


# ---- websocket ---------------------------------------------------------------------


async def test_websocket_message_sequence_with_previews(comfy) -> None:
    fake, base, session = comfy
    client_id = str(uuid.uuid4())
    async with session.ws_connect(f"{base}/ws?clientId={client_id}") as ws:
        hello = await ws.receive_json(timeout=2)
        assert hello == {"type": "status", "data": {
            "status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}}
        _, body = await submit(session, base, txt2img(steps=3), client_id)
        pid = body["prompt_id"]
        received = await receive_until_done(ws, pid)
    frames = [m for m in received if isinstance(m, bytes)]
    assert len(frames) == 3
    event, fmt = struct.unpack(">II", frames[0][:8])
    assert (event, fmt) == (1, 1)
    Image.open(io.BytesIO(frames[0][8:])).verify()
    json_msgs = [m for m in received if isinstance(m, dict)]
    kinds = [m["type"] for m in json_msgs]
    assert kinds[0] == "status"  # the queue changed (queued)
    assert json_msgs[0]["data"] == {"status": {"exec_info": {"queue_remaining": 1}}}
    start = kinds.index("execution_start")
    assert kinds[start + 1] == "execution_cached"
    executing = [m["data"]["node"] for m in json_msgs if m["type"] == "executing"]
    assert executing[-1] is None and set(executing[:-1]) == {"3", "4", "5", "6", "7", "8", "9"}
    assert executing.index("4") < executing.index("3") < executing.index("8")
    progress = [m["data"] for m in json_msgs if m["type"] == "progress"]
    assert progress == [{"value": i, "max": 3, "prompt_id": pid, "node": "3"}
                        for i in (1, 2, 3)]
    [executed] = [m["data"] for m in json_msgs if m["type"] == "executed"]
    assert executed["node"] == "9" and executed["prompt_id"] == pid
    assert executed["output"]["images"][0]["type"] == "output"
    # the end, as main.py sends it: success, the queue status, then executing null
    assert kinds[-3:] == ["execution_success", "status", "executing"]
    assert json_msgs[-1]["data"] == {"node": None, "prompt_id": pid}
    assert all(m["data"]["prompt_id"] == pid for m in json_msgs
               if m["type"] in ("execution_start", "execution_cached", "execution_success"))


async def test_websocket_png_previews_off_and_other_clients(comfy) -> None:
    fake, base, session = comfy
    fake.previews = False
    async with session.ws_connect(f"{base}/ws?clientId=a") as a, \
            session.ws_connect(f"{base}/ws") as other:
        await a.receive_json(timeout=2)
        hello = await other.receive_json(timeout=2)
        assert len(hello["data"]["sid"]) == 32  # a server-made sid
        _, body = await submit(session, base, txt2img(), "a")
        received = await receive_until_done(a, body["prompt_id"])
        assert not any(isinstance(m, bytes) for m in received)
        await fake.wait_idle()
        seen = []
        while True:
            try:
                seen.append(await other.receive_json(timeout=0.2))
            except asyncio.TimeoutError:
                break
        # broadcasts only: the queue, and progress_state (sent to every client)
        assert {m["type"] for m in seen} == {"status", "progress_state"}
        states = [m["data"] for m in seen if m["type"] == "progress_state"]
        assert states[-1]["prompt_id"] == body["prompt_id"]
        assert states[-1]["nodes"]["9"]["state"] == "finished"


async def test_a_prompt_without_client_id_sends_progress_to_everyone(comfy) -> None:
    fake, base, session = comfy
    async with session.ws_connect(f"{base}/ws?clientId=watcher") as ws:
        await ws.receive_json(timeout=2)
        _, body = await submit(session, base, txt2img(steps=2))  # no client_id
        await fake.wait_idle()
        received = []
        while True:
            try:
                msg = await ws.receive(timeout=0.2)
            except asyncio.TimeoutError:
                break
            received.append(msg.data if msg.type == aiohttp.WSMsgType.BINARY
                            else json.loads(msg.data))
    kinds = {m["type"] for m in received if isinstance(m, dict)}
    assert "progress" in kinds and "executing" not in kinds and "executed" not in kinds
    assert sum(isinstance(m, bytes) for m in received) == 2


async def test_feature_flags_give_previews_with_metadata(comfy) -> None:
    fake, base, session = comfy
    async with session.ws_connect(f"{base}/ws?clientId=new") as ws:
        await ws.receive_json(timeout=2)
        await ws.send_json({"type": "feature_flags",
                            "data": {"supports_preview_metadata": True}})
        flags = await ws.receive_json(timeout=2)
        assert flags["type"] == "feature_flags"
        assert flags["data"]["supports_preview_metadata"] is True
        _, body = await submit(session, base, txt2img(steps=1), "new")
        received = await receive_until_done(ws, body["prompt_id"])
    [frame] = [m for m in received if isinstance(m, bytes)]
    event, length = struct.unpack(">II", frame[:8])
    assert event == 4
    meta = json.loads(frame[8:8 + length])
    assert meta["node_id"] == "3" and meta["prompt_id"] == body["prompt_id"]
    assert meta["image_type"] == "image/jpeg"
    Image.open(io.BytesIO(frame[8 + length:])).verify()


async def test_websocket_reconnect_gets_later_messages(comfy) -> None:
    fake, base, session = comfy
    fake.hold()
    async with session.ws_connect(f"{base}/ws?clientId=bot") as ws:
        await ws.receive_json(timeout=2)
        _, body = await submit(session, base, txt2img(steps=2), "bot")
        await fake.wait_running(body["prompt_id"])
    while "bot" in fake.sockets:  # the server has seen the close (see server.py's finally)
        await asyncio.sleep(0.005)
    async with session.ws_connect(f"{base}/ws?clientId=bot") as ws:
        hello = await ws.receive_json(timeout=2)
        assert hello["data"]["status"]["exec_info"]["queue_remaining"] == 1
        again = await ws.receive_json(timeout=2)
        assert again == {"type": "executing", "data": {"node": "3"}}  # where it is now
        fake.release()
        received = await receive_until_done(ws, body["prompt_id"])
    kinds = [m["type"] for m in received if isinstance(m, dict)]
    assert "progress" in kinds and "executed" in kinds and "execution_success" in kinds
    assert fake.connections == 2


async def test_execution_error_reaches_history_and_websocket(comfy) -> None:
    fake, base, session = comfy
    fake.fail_next("node_error")
    async with session.ws_connect(f"{base}/ws?clientId=c") as ws:
        await ws.receive_json(timeout=2)
        _, body = await submit(session, base, txt2img(), "c")
        received = await receive_until_done(ws, body["prompt_id"])
    [error] = [m["data"] for m in received if isinstance(m, dict)
               and m["type"] == "execution_error"]
    assert error["node_id"] == "3" and error["node_type"] == "KSampler"
    assert error["exception_type"] == "RuntimeError"
    assert error["exception_message"] == (
        "mat1 and mat2 shapes cannot be multiplied (154x2048 and 768x320)\n")
    assert isinstance(error["traceback"], list) and "current_inputs" in error
    entry = (await history_of(session, base, body["prompt_id"]))[body["prompt_id"]]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["outputs"] == {}
    fake.fail_next("oom")
    _, body = await submit(session, base, txt2img(seed=77))
    await fake.wait_idle()
    entry = (await history_of(session, base, body["prompt_id"]))[body["prompt_id"]]
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_error" and data["exception_type"] == "torch.OutOfMemoryError"
    assert data["exception_message"].startswith("CUDA out of memory")
    assert "ran out of memory on your GPU" in data["exception_message"]
    _, body = await submit(session, base, txt2img(seed=78))  # the fault was used up
    await fake.wait_idle()
    h = await history_of(session, base, body["prompt_id"])
    assert h[body["prompt_id"]]["status"]["status_str"] == "success"


# ---- auth and HTTP faults -------------------------------------------------------------


async def test_bearer_token() -> None:
    fake = FakeComfyUI(token="s3cret")
    async with fake.serve() as base, aiohttp.ClientSession() as session:
        async with session.get(f"{base}/system_stats") as r:
            assert r.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"{base}/ws?clientId=x")
        headers = {"Authorization": "Bearer s3cret"}
        async with session.get(f"{base}/system_stats", headers=headers) as r:
            assert r.status == 200
        async with session.ws_connect(f"{base}/ws?clientId=x", headers=headers) as ws:
            assert (await ws.receive_json(timeout=2))["type"] == "status"
        status, body = await submit(session, base, txt2img(), None)
        assert status == 401 and fake.prompts == []
    await fake.aclose()


async def test_http_faults(comfy) -> None:
    fake, base, session = comfy
    fake.fail_next("http500", path="/prompt")
    async with session.post(f"{base}/prompt", json={"prompt": txt2img()}) as r:
        assert r.status == 500
    assert fake.prompts == []
    status, _ = await submit(session, base, txt2img())
    assert status == 200
    with pytest.raises(ValueError):
        fake.fail_next("no_such_fault")
    assert {"http500", "node_error", "oom", "timeout"} <= fake.fault_kinds


async def test_workflow_is_recorded_as_received(comfy) -> None:
    fake, base, session = comfy
    wf = txt2img()
    wf["3"]["inputs"]["steps"] = "2"  # the server converts it; the record keeps the string
    sent = copy.deepcopy(wf)
    status, body = await submit(session, base, wf, "cid")
    assert status == 200
    await fake.wait_idle()
    assert fake.prompts[0].workflow == sent
    assert fake.prompts[0].prompt["3"]["inputs"]["steps"] == 2
    assert fake.prompts[0].client_id == "cid"
    assert fake.api_requests("/prompt")[0].body["client_id"] == "cid"
