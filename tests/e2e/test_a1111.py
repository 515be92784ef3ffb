"""The a1111 vendor through the real bot, against FakeA1111 over loopback:
txt2img with progress and the webui's picture, a photo edit, an upscale,
queue positions while several users wait, /cancel interrupting the running
job, and a restart mid-job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.app import Drawbridge
from providers import inprocess
from providers.a1111 import A1111
from providers.base import PollPolicy
from tests.e2e.conftest import make_settings, running_bot
from tests.e2e.helpers import cli_env, png, result_after, run_check, settled
from tests.fakes.a1111 import FakeA1111
from tests.fakes.server import serve
from tests.fakes.telegram import FakeTelegram

CHAT = USER = 7501
AUTH = ("sd", "SECRET-webui-pass")


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    # Jobs of a second or two here, not twenty: polled while they run.
    monkeypatch.setattr(A1111, "typical_seconds", 0.5)
    monkeypatch.setattr(A1111, "poll_policy", PollPolicy(min_interval_seconds=0.3))


@asynccontextmanager
async def sd_bot(tmp_path: Path, telegram: FakeTelegram, fake: FakeA1111, **settings: Any) -> AsyncIterator[Drawbridge]:
    async with serve(fake.app) as url:
        values = {"a1111_base_url": url, "a1111_auth": ":".join(AUTH), **settings}
        async with running_bot(make_settings(tmp_path, telegram, **values)) as bot:
            yield bot


async def test_imagine_edit_and_upscale_with_progress_and_preview(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeA1111(auth=AUTH, step_seconds=0.25)  # 5 s at 20 steps: polled while it runs
    async with sd_bot(tmp_path, telegram, fake) as bot:
        ask = telegram.user_message(CHAT, USER, "/imagine a lighthouse --ar 3:2 --steps 20 --seed 42")
        result = await result_after(telegram, CHAT, ask["message_id"], timeout=30)
        edit = telegram.user_message(CHAT, USER, photo=png(320, 240), caption="make it night")
        edited = await result_after(telegram, CHAT, edit["message_id"], timeout=30)
        telegram.press_button(CHAT, USER, result.message_id, text="⬆️ Upscale")
        upscaled = await result_after(telegram, CHAT, edited.message_id, timeout=30)
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert sorted((t.kind, t.status.value) for t in tasks) == [
        ("edit", "delivered"), ("txt2img", "delivered"), ("upscale", "delivered")], [(t.kind, t.status, t.error_kind, t.error_detail) for t in tasks]
    txt2img = next(j for j in fake.jobs if j.kind == "txt2img")
    assert (txt2img.width, txt2img.height, txt2img.steps, txt2img.seed) == (1024, 680, 20, 42)
    img2img = next(j for j in fake.jobs if j.kind == "img2img")
    assert img2img.init_images and img2img.prompt == "make it night"
    assert fake.max_concurrent_running == 1
    # The status showed the webui's progress and became its picture.
    previews = [c for c in telegram.calls("editMessageMedia", CHAT) if "▓" in str(c.params.get("media"))]
    assert previews
    assert upscaled.photo


async def test_waiting_users_see_their_true_place_and_cancel_interrupts(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeA1111(auth=AUTH, step_seconds=0.05)
    fake.hold()  # the first job runs until released
    users = [USER + n for n in range(3)]
    async with sd_bot(tmp_path, telegram, fake) as bot:
        asks = [telegram.user_message(user, user, f"/imagine castle {user}") for user in users]
        await fake.wait_started(1, timeout=10)
        # The second and third wait in the bot (the server runs one job at a time): 1st and 2nd in line.
        for user, place in ((users[1], 1), (users[2], 2)):
            await telegram.wait_for_message(user, lambda m, p=place: f"position {p}\n" in (m.text or ""), timeout=15)
        [first] = await bot.store.tasks.recent(users[0], limit=1)
        cancel = telegram.user_message(users[0], users[0], f"/cancel {first.id}")
        await telegram.wait_for_message(users[0], lambda m: "cancelled" in (m.text or "").lower(),
                                        after_message_id=cancel["message_id"], timeout=10)
        fake.release()
        for user, ask in zip(users[1:], asks[1:], strict=True):
            await result_after(telegram, user, ask["message_id"], timeout=30)
        states = [[t.status.value for t in await settled(bot, user)] for user in users]
    await fake.aclose()
    assert states == [["cancelled"], ["delivered"], ["delivered"]]
    assert fake.interrupted >= 1 and fake.max_concurrent_running == 1
    assert [j.prompt for j in fake.jobs] == [f"castle {u}" for u in users]


async def test_a_restart_mid_job_runs_it_again_and_delivers_once(
    tmp_path: Path, telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inprocess, "STOP_GRACE_SECONDS", 0.2)
    fake = FakeA1111(auth=AUTH, step_seconds=0.05)
    fake.hold()
    async with serve(fake.app) as url:
        settings = make_settings(tmp_path, telegram, a1111_base_url=url, a1111_auth=":".join(AUTH))
        async with running_bot(settings) as bot:
            ask = telegram.user_message(CHAT, USER, "/imagine a windmill")
            await fake.wait_started(1, timeout=10)
            for _ in range(200):  # recorded as submitted: the call is the bot's own now
                if [t.status.value for t in await bot.store.tasks.recent(USER)] == ["submitted"]:
                    break
                await asyncio.sleep(0.02)
        fake.release()  # the first job ends at the server; nobody is listening
        async with running_bot(settings) as bot:
            await result_after(telegram, CHAT, ask["message_id"], timeout=30)
            tasks = await settled(bot, USER)
            await asyncio.sleep(0.5)
    await fake.aclose()
    assert [(t.status.value, t.reruns) for t in tasks] == [("delivered", 1)]
    assert len([m for m in telegram.bot_messages(CHAT) if m.photo and m.reply_markup]) == 1
    assert len(fake.jobs) == 2


async def test_providers_lists_the_webuis_checkpoints(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeA1111(auth=AUTH)
    async with sd_bot(tmp_path, telegram, fake):
        ask = telegram.user_message(CHAT, USER, "/providers")
        shown = await telegram.wait_for_message(CHAT, after_message_id=ask["message_id"], timeout=10)
    await fake.aclose()
    assert "models (--model):" in (shown.text or "")
    assert fake.models and all(model["title"] in (shown.text or "") for model in fake.models)


async def test_check_lists_the_checkpoints_and_says_when_the_webui_refuses(tmp_path: Path) -> None:
    fake = FakeA1111(auth=AUTH)
    async with serve(fake.app) as url:
        ok, bad = await asyncio.gather(
            run_check(cli_env(TELEGRAM_BOT_TOKEN="123:abc", A1111_BASE_URL=url, A1111_AUTH=":".join(AUTH)), tmp_path),
            run_check(cli_env(TELEGRAM_BOT_TOKEN="123:abc", A1111_BASE_URL=url, A1111_AUTH="sd:wrong"), tmp_path),
        )
    await fake.aclose()
    assert ok[0] == 0, ok
    titles = [model["title"] for model in fake.models]
    assert f"reachable; checkpoints: {', '.join(titles[:5])}" in ok[1]
    assert "unreachable (auth: HTTP 401" in bad[1], bad[1]
    assert AUTH[1] not in ok[1] + ok[2] + bad[1] + bad[2]
