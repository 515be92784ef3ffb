"""comfyui: workflow placeholders and their checks, the readings of queue and
history answers, and the adapter against FakeComfyUI over loopback (the
runs through the real bot are in tests/e2e/test_comfyui.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from providers import comfyui_events
from providers import comfyui_workflow as wf
from providers.comfyui import ComfyUI, failure, history_outcome, queue_places, refusal_text
from providers.errors import BadRequest, JobNotFound
from providers.types import Capability, JobState, JobStatus
from tests.fakes.comfyui import FakeComfyUI, catalogue, node_info
from tests.vendor_kit import input_image, make_spec, png

SHIPPED = wf.shipped()


def graph(capability: Capability = Capability.TXT2IMG) -> dict[str, Any]:
    return json.loads(SHIPPED[capability])


def parsed(data: dict[str, Any], capability: Capability = Capability.TXT2IMG) -> wf.Workflow:
    return wf.parse(json.dumps(data), capability, "mine.json")


def object_info() -> dict[str, Any]:
    nodes = catalogue(["sd_xl_base_1.0.safetensors"], ["RealESRGAN_x4plus.pth"], ["photo.png"])
    return {name: node_info(name, node) for name, node in nodes.items()}


# ---- placeholders ----------------------------------------------------------------


def test_shipped_workflows_load_and_fill_with_typed_values() -> None:
    workflows = wf.load("")
    assert set(workflows) == {Capability.TXT2IMG, Capability.IMG2IMG, Capability.UPSCALE,
                              Capability.EDIT, Capability.VARIATION}
    assert workflows[Capability.EDIT] is workflows[Capability.IMG2IMG]
    filled = workflows[Capability.TXT2IMG].fill(
        {"prompt": "a fox", "seed": 5, "width": 1024, "height": 576, "batch": 2, "checkpoint": "m.safetensors"})
    assert filled["3"]["inputs"]["seed"] == 5 and filled["3"]["inputs"]["steps"] == 20  # "$steps=20"
    assert filled["3"]["inputs"]["cfg"] == 7.0 and isinstance(filled["3"]["inputs"]["cfg"], float)
    assert filled["7"]["inputs"]["text"] == ""  # no negative prompt: the bot's default
    assert (filled["5"]["inputs"]["width"], filled["5"]["inputs"]["batch_size"]) == (1024, 2)
    assert "$" not in json.dumps(filled)
    assert workflows[Capability.TXT2IMG].graph["3"]["inputs"]["seed"] == "$seed"  # the template is untouched


def test_every_shipped_workflow_fits_a_stock_comfyui() -> None:
    for workflow in {id(w): w for w in wf.load("").values()}.values():
        assert workflow.problems_on(object_info(), ["sd_xl_base_1.0.safetensors"]) == []


def test_prompt_inside_a_longer_text_and_defaults_of_the_model_size() -> None:
    data = graph()
    data["6"]["inputs"]["text"] = "masterpiece, $prompt, $prompts, costs $5"
    data["5"]["inputs"]["width"], data["5"]["inputs"]["height"] = "$width=512", "$height=768"
    workflow = parsed(data)
    assert workflow.long_side() == 768
    filled = workflow.fill({"prompt": "a cat", "seed": 1, "checkpoint": "m", "width": 512, "height": 512})
    assert filled["6"]["inputs"]["text"] == "masterpiece, a cat, $prompts, costs $5"


@pytest.mark.parametrize(("change", "reason"), [
    (lambda g: g["6"]["inputs"].update(text="fixed"), "mine.json: txt2img needs $prompt"),
    (lambda g: g["3"]["inputs"].update(seed=3), "mine.json: txt2img needs $seed"),
    (lambda g: g["3"]["inputs"].update(steps="$stepz"), "node 3 (KSampler) input 'steps': $stepz is not a placeholder"),
    (lambda g: g["3"]["inputs"].update(steps="$steps=many"), "the default of $steps is not a number"),
    (lambda g: g["8"]["inputs"].update(samples=["99", 0]), "links to node 99, which is not in the file"),
    (lambda g: g["8"].pop("class_type"), "node 8 has no class_type"),
    (lambda g: g["3"]["inputs"].update(steps="$steps "), "'$steps ' has spaces around the placeholder"),
])
def test_a_workflow_that_cannot_work_is_refused_with_the_reason(change: Any, reason: str) -> None:
    data = graph()
    change(data)
    with pytest.raises(wf.WorkflowError, match=None) as refused:
        parsed(data)
    assert reason in str(refused.value)


def test_the_ui_format_and_odd_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(wf.WorkflowError, match="UI format"):
        wf.parse(json.dumps({"nodes": [], "links": []}), Capability.TXT2IMG, "ui.json")
    with pytest.raises(wf.WorkflowError, match="not JSON"):
        wf.parse("{", Capability.TXT2IMG, "broken.json")
    with pytest.raises(wf.WorkflowError, match="describe answers with text"):
        wf.parse(json.dumps(graph(Capability.UPSCALE)), Capability.DESCRIBE, "describe.json")
    (tmp_path / "portrait.json").write_text(json.dumps(graph()))
    with pytest.raises(wf.WorkflowError, match="portrait.json: not a capability's name"):
        wf.load(str(tmp_path))
    with pytest.raises(wf.WorkflowError, match="is not a directory"):
        wf.load(str(tmp_path / "missing"))


def test_an_operators_file_replaces_the_shipped_one(tmp_path: Path) -> None:
    data = graph(Capability.UPSCALE)
    data["12"]["inputs"]["scale_by"] = "$scale=4"
    (tmp_path / "upscale.json").write_text(json.dumps(data))
    (tmp_path / "faceswap.json").write_text(json.dumps(graph(Capability.IMG2IMG)))
    with pytest.raises(wf.WorkflowError, match=r"faceswap needs \$image2"):
        wf.load(str(tmp_path))
    (tmp_path / "faceswap.json").unlink()
    workflows = wf.load(str(tmp_path))
    assert workflows[Capability.UPSCALE].default("scale") == 4.0
    assert workflows[Capability.UPSCALE].source == str(tmp_path / "upscale.json")


def test_what_the_server_would_refuse() -> None:
    data = graph()
    data["3"]["inputs"]["sampler_name"] = "dpmpp_9m"
    data["4"]["inputs"]["ckpt_name"] = "$checkpoint"
    data["20"] = {"class_type": "FaceDetailer", "inputs": {}}
    del data["9"]
    data["3"]["inputs"]["model"] = ["4", 7]  # a checkpoint loader has three outputs
    data["8"]["inputs"]["vae"] = ["4", 1]  # its CLIP, not its VAE
    data["3"]["inputs"]["cfg"] = 250.0
    data["5"]["inputs"]["width"] = "$prompt"
    problems = parsed(data).problems_on(object_info(), [])
    for expected in ("node 3 (KSampler): model links to output 7 of node 4, which has 3",
                     "node 8 (VAEDecode): vae takes VAE, but node 4 gives CLIP",
                     "node 3 (KSampler): cfg 250.0 is out of range (0.0..100.0)",
                     "node 5 (EmptyLatentImage): width takes INT, not $prompt"):
        assert f"mine.json: {expected}" in problems, problems
    assert any(p.startswith("mine.json: node 3 (KSampler): sampler_name 'dpmpp_9m' is not on this server (it has: euler")
               for p in problems)
    assert "mine.json: node 20 (FaceDetailer): this ComfyUI has no such node (a custom node not installed?)" in problems
    assert "mine.json: no output node (Save Image or Preview Image)" in problems
    assert "mine.json: $checkpoint: this ComfyUI has no checkpoint installed" in problems


# ---- readings --------------------------------------------------------------------


def test_queue_places_follow_the_numbers() -> None:
    body = {"queue_running": [[4, "a", {}, {}, []]],
            "queue_pending": [[7, "c", {}, {}, []], [5, "b", {}, {}, []], [-8, "front", {}, {}, []]]}
    assert queue_places(body) == ({"a"}, {"front": 1, "b": 2, "c": 3})


def test_history_outcomes() -> None:
    saved = {"status": {"status_str": "success"}, "outputs": {
        "9": {"images": [{"filename": "x_00001_.png", "subfolder": "d", "type": "output"}]},
        "10": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]}}}
    assert history_outcome(saved) == ([{"filename": "x_00001_.png", "subfolder": "d", "type": "output"}], None)
    oom = failure([["execution_start", {}], ["execution_error", {
        "node_id": "3", "node_type": "KSampler", "exception_type": "torch.OutOfMemoryError",
        "exception_message": "CUDA out of memory. Tried to allocate 2 GiB"}]])
    assert (oom.error_kind, oom.error_detail.startswith("node 3 (KSampler)")) == ("unavailable", True)
    stopped = failure([["execution_interrupted", {"node_id": "3"}]])
    assert stopped.error_kind == "cancelled_at_vendor"
    refused = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
               "node_errors": {"4": {"class_type": "CheckpointLoaderSimple", "errors": [
                   {"message": "Value not in list", "details": "ckpt_name: 'x' not in []"}]}}}
    assert refusal_text(refused) == ("Prompt outputs failed validation; node 4 (CheckpointLoaderSimple): "
                                     "Value not in list: ckpt_name: 'x' not in []")


# ---- against the fake -------------------------------------------------------------


async def test_one_socket_reports_places_progress_previews_and_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comfyui_events, "REPORT_EVERY_SECONDS", 0.05)
    fake = FakeComfyUI(token="t0ken", step_seconds=0.02)
    fake.hold()
    reports: list[tuple[str, JobState]] = []

    async def listener(job_id: str, state: JobState) -> bool:
        reports.append((job_id, state))
        return True

    async with fake.serve() as url, httpx.AsyncClient() as client:
        comfy = ComfyUI(client, secrets={"comfyui_token": "t0ken"}, base_url=url)
        comfy.listen(listener)
        jobs = [(await comfy.submit(make_spec(prompt=f"cat {i}", business_id=f"job-{i}", steps=5))).job_id
                for i in range(3)]
        await fake.wait_running("job-0", timeout=5)
        for _ in range(200):
            if {j for j, s in reports if s.status is JobStatus.QUEUED} == {"job-1", "job-2"}:
                break
            await asyncio.sleep(0.01)
        assert comfy.pushes_states("job-2") and not comfy.pushes_states("someone-elses")
        fake.release()
        await fake.wait_idle(timeout=10)
        for _ in range(300):
            if sum(1 for _, s in reports if s.finished) == 3:
                break
            await asyncio.sleep(0.01)
        await comfy.aclose()
    await fake.aclose()
    places = [(j, s.queue_position) for j, s in reports if s.status is JobStatus.QUEUED]
    assert ("job-1", 1) in places and ("job-2", 2) in places, [(j, s.status.value, s.queue_position) for j, s in reports]
    ends = [(j, s.status) for j, s in reports if s.finished]
    assert ends == [(j, JobStatus.SUCCEEDED) for j in jobs]
    assert any(s.preview for _, s in reports) and any(s.progress for _, s in reports)
    assert fake.connections == 1
    done = [s for _, s in reports if s.finished]
    assert all(len(s.images) == 1 and s.images[0].data and s.images[0].seed is not None for s in done)


async def test_polls_answer_per_prompt_and_a_lost_one_alone() -> None:
    fake = FakeComfyUI()
    async with fake.serve() as url, httpx.AsyncClient() as client:
        comfy = ComfyUI(client, secrets={}, base_url=url)
        job = (await comfy.submit(make_spec(prompt="a fox", business_id="kept", seed=9, n=2))).job_id
        await fake.wait_idle(timeout=5)
        answers = await comfy.poll_many([job, "never-sent"])
        with pytest.raises(JobNotFound):
            await comfy.poll("never-sent")
        with pytest.raises(BadRequest, match="no checkpoint 'nope'"):
            await comfy.submit(make_spec(prompt="x", business_id="b", model="nope"))
        with pytest.raises(BadRequest, match="takes 1 image"):
            await comfy.submit(make_spec(Capability.UPSCALE, business_id="c"))
        edit = await comfy.submit(make_spec(Capability.EDIT, business_id="d", images=(input_image(png(300, 200)),)))
        await fake.wait_idle(timeout=5)
        await comfy.aclose()
    await fake.aclose()
    state = answers[job]
    assert isinstance(state, JobState) and [i.seed for i in state.images] == [9, 9]
    assert isinstance(answers["never-sent"], JobNotFound)
    latent = fake.prompts[0].workflow["5"]["inputs"]
    assert (latent["width"], latent["height"], latent["batch_size"]) == (1024, 1024, 2)
    edited = next(p for p in fake.prompts if p.prompt_id == edit.job_id).workflow
    assert edited["10"]["inputs"]["image"] == "drawbridge-d-0.png"
    assert ("input", "", "drawbridge-d-0.png") in fake.stored
