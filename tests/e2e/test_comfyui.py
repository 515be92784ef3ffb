"""The comfyui vendor through the real bot, against FakeComfyUI over
loopback (HTTP and its websocket): /imagine with progress and previews from
the socket, a photo edit, an upscale, queue places, /cancel of a running and
of a waiting prompt, a restart mid-job that finds the prompt again instead
of re-running it, a server that lost its queue, and `python -m bot check`
refusing workflows that do not fit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.app import Drawbridge
from providers.base import PollPolicy
from providers.comfyui import ComfyUI
from tests.e2e.conftest import make_settings, running_bot
from tests.e2e.helpers import cli_env, png, result_after, run_check, settled
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.telegram import FakeTelegram

CHAT = USER = 7601
TOKEN = "SECRET-comfy-proxy-token"


@pytest.fixture(autouse=True)
def quick_safety_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    # Jobs of a second here; the websocket tells their ends. Polls (for
    # prompts of an earlier process) come quickly too.
    monkeypatch.setattr(ComfyUI, "typical_seconds", 0.5)
    monkeypatch.setattr(ComfyUI, "poll_policy", PollPolicy(callback_silence_seconds=30.0, min_interval_seconds=0.3))


@asynccontextmanager
async def comfy_bot(tmp_path: Path, telegram: FakeTelegram, fake: FakeComfyUI, **settings: Any
                    ) -> AsyncIterator[Drawbridge]:
    async with fake.serve() as url:
        values = {"comfyui_base_url": url, "comfyui_token": TOKEN, **settings}
        async with running_bot(make_settings(tmp_path, telegram, **values)) as bot:
            yield bot


def comfy(bot: Drawbridge) -> ComfyUI:
    provider = bot.engine.registry.get("comfyui")
    assert isinstance(provider, ComfyUI)
    return provider


async def test_imagine_edit_and_upscale_with_progress_and_previews(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeComfyUI(token=TOKEN, step_seconds=0.12)  # 20 steps: 2.4 s, a few progress reports
    async with comfy_bot(tmp_path, telegram, fake) as bot:
        ask = telegram.user_message(CHAT, USER, "/imagine a lighthouse --ar 3:2 --seed 42 --steps 20 --neg fog")
        result = await result_after(telegram, CHAT, ask["message_id"], timeout=30)
        edit = telegram.user_message(CHAT, USER, photo=png(320, 240), caption="make it night")
        edited = await result_after(telegram, CHAT, edit["message_id"], timeout=30)
        telegram.press_button(CHAT, USER, result.message_id, text="⬆️ Upscale")
        upscaled = await result_after(telegram, CHAT, edited.message_id, timeout=30)
        tasks = await settled(bot, USER)
        sockets = comfy(bot).events.connections
    await fake.aclose()
    assert sorted((t.kind, t.status.value) for t in tasks) == [
        ("edit", "delivered"), ("txt2img", "delivered"), ("upscale", "delivered")
    ], [(t.kind, t.status, t.error_kind, t.error_detail) for t in tasks]
    assert fake.worker_errors == [] and fake.rejected == []
    txt2img, img2img, upscale = (p.workflow for p in fake.prompts)
    sampler = txt2img["3"]["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["cfg"]) == (42, 20, 7.0)
    assert (txt2img["5"]["inputs"]["width"], txt2img["5"]["inputs"]["height"]) == (1024, 680)
    assert (txt2img["6"]["inputs"]["text"], txt2img["7"]["inputs"]["text"]) == ("a lighthouse", "fog")
    assert txt2img["4"]["inputs"]["ckpt_name"] == "sd_xl_base_1.0.safetensors"
    assert img2img["6"]["inputs"]["text"] == "make it night" and img2img["3"]["inputs"]["denoise"] == 0.6
    assert img2img["10"]["inputs"]["image"].startswith("drawbridge-")  # our upload, by the name it answered
    assert upscale["12"]["inputs"]["scale_by"] == 2.0
    # One websocket for the three jobs, under one client id; the prompt ids are ours.
    assert sockets == 1 == fake.connections
    assert {p.client_id for p in fake.prompts} == {comfy(bot).events.client_id}
    assert [p.prompt_id for p in fake.prompts] == [t.business_id for t in sorted(tasks, key=lambda t: t.id)]
    # The status showed the sampler's progress and became its preview picture.
    previews = [c for c in telegram.calls("sendPhoto", CHAT) + telegram.calls("editMessageMedia", CHAT)
                if "▓" in json.dumps(c.params, ensure_ascii=False)]
    assert previews
    assert upscaled.photo
    # Every request carried the proxy's token; no vendor saw a Telegram URL.
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in fake.requests)
    assert not any("api.telegram" in json.dumps(p.workflow) or "/file/bot" in json.dumps(p.workflow) for p in fake.prompts)


async def test_queue_places_and_cancel_of_running_and_waiting_prompts(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeComfyUI(token=TOKEN, step_seconds=0.02)
    fake.hold()  # the first prompt samples until released
    users = [USER + n for n in range(3)]
    async with comfy_bot(tmp_path, telegram, fake) as bot:
        for user in users:
            telegram.user_message(user, user, f"/imagine castle {user}")
        for _ in range(300):
            if len(fake.prompts) == 3:
                break
            await asyncio.sleep(0.02)
        await fake.wait_running(fake.prompts[0].prompt_id, timeout=10)
        waiting = {p.prompt_id: i for i, p in enumerate(fake.prompts)}
        # The two behind it see their place in the server's queue.
        for prompt in fake.prompts[1:]:
            user = users[[t.business_id for u in users for t in await bot.store.tasks.recent(u)].index(prompt.prompt_id)]
            place = waiting[prompt.prompt_id]
            await telegram.wait_for_message(user, lambda m, p=place: f"position {p}\n" in (m.text or ""), timeout=15)
        running_task = (await bot.store.tasks.by_job("comfyui", fake.prompts[0].prompt_id))
        waiting_task = (await bot.store.tasks.by_job("comfyui", fake.prompts[1].prompt_id))
        assert running_task is not None and waiting_task is not None
        for task in (waiting_task, running_task):
            cancel = telegram.user_message(task.chat_id, task.user_id, f"/cancel {task.id}")
            await telegram.wait_for_message(task.chat_id, lambda m: "cancelled" in (m.text or "").lower(),
                                            after_message_id=cancel["message_id"], timeout=10)
        fake.release()
        last = await bot.store.tasks.by_job("comfyui", fake.prompts[2].prompt_id)
        assert last is not None
        await result_after(telegram, last.chat_id, last.request_message_id, timeout=30)
        states = {t.business_id: t.status.value for u in users for t in await settled(bot, u)}
    await fake.aclose()
    assert [states[p.prompt_id] for p in fake.prompts] == ["cancelled", "cancelled", "delivered"]
    assert [p.state for p in fake.prompts] == ["interrupted", "deleted", "success"]
    assert fake.max_concurrent == 1


async def test_a_restart_mid_job_finds_the_prompt_again_and_delivers_once(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeComfyUI(token=TOKEN, step_seconds=0.02)
    fake.hold()
    async with fake.serve() as url:
        settings = make_settings(tmp_path, telegram, comfyui_base_url=url, comfyui_token=TOKEN)
        async with running_bot(settings) as bot:
            ask = telegram.user_message(CHAT, USER, "/imagine a windmill")
            for _ in range(300):  # recorded as submitted, running at the server
                if [t.status.value for t in await bot.store.tasks.recent(USER)] in (["submitted"], ["running"]):
                    break
                await asyncio.sleep(0.02)
            await fake.wait_running(timeout=10)
        fake.release()  # it ends at the server while no bot listens
        await fake.wait_idle(timeout=10)
        async with running_bot(settings) as bot:
            await result_after(telegram, CHAT, ask["message_id"], timeout=30)
            tasks = await settled(bot, USER)
            await asyncio.sleep(0.5)
    await fake.aclose()
    assert [(t.status.value, t.reruns) for t in tasks] == [("delivered", 0)]
    assert len(fake.prompts) == 1  # found by its id in the history, not sent again
    assert len([m for m in telegram.bot_messages(CHAT) if m.photo and m.reply_markup]) == 1


async def test_a_server_that_lost_its_queue_gets_the_prompt_again_once(tmp_path: Path, telegram: FakeTelegram) -> None:
    before = FakeComfyUI(token=TOKEN, step_seconds=0.02)
    before.hold()
    serving = before.serve()
    url = await serving.__aenter__()
    async with running_bot(make_settings(tmp_path, telegram, comfyui_base_url=url, comfyui_token=TOKEN)) as bot:
        ask = telegram.user_message(CHAT, USER, "/imagine a harbour")
        await before.wait_running(timeout=10)
        await serving.__aexit__(None, None, None)  # ComfyUI restarted: its queue and the socket are gone
        await before.aclose()
        after = FakeComfyUI(token=TOKEN, step_seconds=0.02)
        async with after.serve(port=int(url.rsplit(":", 1)[1])):
            await result_after(telegram, CHAT, ask["message_id"], timeout=60)
            tasks = await settled(bot, USER)
    await after.aclose()
    assert [(t.status.value, t.reruns) for t in tasks] == [("delivered", 1)]
    # The same prompt id, given again to the server that lost it.
    assert [p.prompt_id for p in after.prompts] == [p.prompt_id for p in before.prompts] == [tasks[0].business_id]


async def test_an_oom_tells_the_user_and_a_refused_workflow_too(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeComfyUI(token=TOKEN)
    async with comfy_bot(tmp_path, telegram, fake) as bot:
        fake.fail_next("oom")
        ask = telegram.user_message(CHAT, USER, "/imagine a volcano")
        failed = await telegram.wait_for_message(CHAT, lambda m: "❌" in (m.text or m.caption or ""),
                                                 after_message_id=ask["message_id"], timeout=15)
        bad = telegram.user_message(CHAT, USER, "/imagine a comet --model nope.safetensors")
        refused = await telegram.wait_for_message(CHAT, lambda m: "❌" in (m.text or m.caption or ""),
                                                  after_message_id=bad["message_id"], timeout=15)
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert sorted(t.error_kind or "" for t in tasks) == ["bad_request", "unavailable"], [(t.error_kind, t.error_detail) for t in tasks]
    assert "CUDA" not in (failed.text or "") and TOKEN not in (failed.text or "") + (refused.text or "")


# ---- python -m bot check -----------------------------------------------------------


def check_env(url: str, workflows: Path | None = None) -> dict[str, str]:
    env = cli_env(TELEGRAM_BOT_TOKEN="123:abc", COMFYUI_BASE_URL=url, COMFYUI_TOKEN=TOKEN)
    if workflows is not None:
        env["COMFYUI_WORKFLOWS_DIR"] = str(workflows)
    return env


async def test_check_refuses_workflows_that_do_not_fit(tmp_path: Path) -> None:
    shipped = json.loads((Path(__file__).resolve().parents[2] / "providers/comfyui_workflows/txt2img.json").read_text())
    no_prompt = tmp_path / "no-prompt"
    no_prompt.mkdir()
    graph = json.loads(json.dumps(shipped))
    graph["6"]["inputs"]["text"] = "a fixed text"
    (no_prompt / "txt2img.json").write_text(json.dumps(graph))
    ui_format = tmp_path / "ui-format"
    ui_format.mkdir()
    (ui_format / "img2img.json").write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    server_lacks = tmp_path / "server-lacks"
    server_lacks.mkdir()
    graph = json.loads(json.dumps(shipped))
    graph["3"]["class_type"] = "KSamplerAdvanced"  # a node this server does not have
    del graph["8"]["inputs"]["vae"]  # and a required input left out
    (server_lacks / "txt2img.json").write_text(json.dumps(graph))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    fake = FakeComfyUI(token=TOKEN)
    async with fake.serve() as url:
        runs = await asyncio.gather(*(run_check(check_env(url, d), cwd) for d in (None, no_prompt, ui_format, server_lacks)))
    await fake.aclose()
    (ok, ok_out, ok_err), (code1, _, err1), (code2, _, err2), (code3, out3, err3) = runs
    assert ok == 0, ok_out + ok_err
    assert "comfyui (default) [shipped workflows]: edit, img2img, txt2img, upscale, variation" in ok_out
    assert "reachable (ComfyUI 0.3.68" in ok_out
    assert code1 == 2 and f"{no_prompt}/txt2img.json: txt2img needs $prompt" in err1
    assert code2 == 2 and "UI format; export it with Save (API)" in err2 and "img2img.json" in err2
    assert code3 == 1, out3 + err3
    assert f"✗ {server_lacks}/txt2img.json: node 3 (KSamplerAdvanced): this ComfyUI has no such node" in out3
    assert f"✗ {server_lacks}/txt2img.json: node 8 (VAEDecode): the required input 'vae' is missing" in out3
    assert TOKEN not in "".join(o + e for _, o, e in runs)
