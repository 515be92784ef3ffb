"""The openai vendor through the real bot, against FakeOpenAI over loopback:
each model's rules, a relay with its own model name and path, photo edits,
variations, errors by code, retry-after, calls that outlive the dispatcher,
and a restart while a call is in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.app import Drawbridge
from providers import inprocess
from providers.openai import OpenAI
from tests.e2e.conftest import make_settings, running_bot
from tests.e2e.helpers import photos, png, result_after, settled
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import serve
from tests.fakes.telegram import FakeTelegram

CHAT = USER = 7301
KEY = "sk-test-SECRET-e2e-0042"


@asynccontextmanager
async def openai_bot(
    tmp_path: Path, telegram: FakeTelegram, fake: FakeOpenAI, model: str = "gpt-image-1",
    path: str = "/v1", **settings: Any,
) -> AsyncIterator[Drawbridge]:
    async with serve(fake.app) as url:
        values = {"openai_api_key": KEY, "openai_base_url": url + path, "openai_image_model": model,
                  "admin_user_ids": str(USER), **settings}
        async with running_bot(make_settings(tmp_path, telegram, **values)) as bot:
            yield bot


async def imagine(telegram: FakeTelegram, text: str, timeout: float = 20) -> Any:
    ask = telegram.user_message(CHAT, USER, text)
    return await result_after(telegram, CHAT, ask["message_id"], timeout=timeout)


async def test_gpt_image_makes_several_images_in_one_call_without_response_format(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    fake = FakeOpenAI(api_key=KEY)
    async with openai_bot(tmp_path, telegram, fake) as bot:
        await imagine(telegram, "/imagine a paper lantern --n 2 --ar 16:9")
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert [t.status.value for t in tasks] == ["delivered"]
    [call] = fake.api_requests("/images/generations")
    assert call.headers["authorization"] == f"Bearer {KEY}"
    assert call.body == {"model": "gpt-image-1", "prompt": "a paper lantern", "n": 2, "size": "1536x1024"}
    [grid] = photos(telegram, CHAT)  # the two images as one grid, with U1 U2 V1 V2
    assert grid.button_texts[:2] == ["U1", "U2"]


async def test_dalle3_four_images_are_four_calls_and_the_revised_prompt_is_shown(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    fake = FakeOpenAI(api_key=KEY)
    async with openai_bot(tmp_path, telegram, fake, model="dall-e-3") as bot:
        await imagine(telegram, "/imagine a koi pond --n 4")
        await settled(bot, USER)
    await fake.aclose()
    calls = fake.api_requests("/images/generations")
    assert len(calls) == 4 and all(c.body["n"] == 1 and c.body["response_format"] == "b64_json" for c in calls)
    captions = [m.caption or "" for m in photos(telegram, CHAT)]
    assert any("Drawn as" in c and "koi pond" in c for c in captions)


async def test_a_relay_with_its_own_model_name_and_path(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeOpenAI(api_key=KEY, prefix="/api/openai/v1", models=(), relay_models={"flux-1-schnell": {}})
    async with openai_bot(tmp_path, telegram, fake, model="flux-1-schnell", path="/api/openai/v1") as bot:
        await imagine(telegram, "/imagine a lighthouse at dusk --ar 3:2")
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert [t.status.value for t in tasks] == ["delivered"]
    [call] = fake.api_requests("/images/generations")
    assert call.body["model"] == "flux-1-schnell" and call.body["size"] == "1024x704"
    assert "response_format" not in call.body
    # The relay answered with a URL on its own host: downloaded, then delivered.
    assert fake.fetched_urls() == [] and len(photos(telegram, CHAT)) == 1


async def test_a_photo_edit_goes_to_edits_with_the_photo(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeOpenAI(api_key=KEY)
    async with openai_bot(tmp_path, telegram, fake) as bot:
        ask = telegram.user_message(CHAT, USER, photo=png(400, 300), caption="make it snowy")
        await result_after(telegram, CHAT, ask["message_id"], timeout=20)
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert [t.status.value for t in tasks] == ["delivered"]
    [call] = fake.api_requests("/images/edits")
    assert call.body["prompt"] == "make it snowy" and call.body["model"] == "gpt-image-1"
    assert [part["content_type"] for part in call.body["image[]"]] == ["image/jpeg"]


async def test_vary_on_a_dalle2_result_uses_the_variations_endpoint(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeOpenAI(api_key=KEY)
    async with openai_bot(tmp_path, telegram, fake, model="dall-e-2") as bot:
        result = await imagine(telegram, "/imagine a teapot")
        telegram.press_button(CHAT, USER, result.message_id, text="🎲 Vary")
        await result_after(telegram, CHAT, result.message_id, timeout=20)
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert sorted(t.status.value for t in tasks) == ["delivered", "delivered"]
    [variation] = fake.api_requests("/images/variations")
    assert "prompt" not in variation.body


@pytest.mark.parametrize(
    ("fault", "words"),
    [("insufficient_quota", "out of credit"), ("billing_hard_limit_reached", "out of credit")],
)
async def test_out_of_credit_says_so_and_tells_the_admins(
    tmp_path: Path, telegram: FakeTelegram, fault: str, words: str
) -> None:
    fake = FakeOpenAI(api_key=KEY)
    fake.fail_next(fault)
    async with openai_bot(tmp_path, telegram, fake) as bot:
        ask = telegram.user_message(CHAT, USER, "/imagine a comet")
        await telegram.wait_for_message(CHAT, lambda m: words in (m.text or ""), after_message_id=ask["message_id"])
        await settled(bot, USER)
    await fake.aclose()
    # The user is an admin here: told that the vendor is off until restart.
    assert any("Vendor openai is disabled" in (m.text or "") for m in telegram.bot_messages(USER))


async def test_a_blocked_prompt_gets_the_moderation_message(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeOpenAI(api_key=KEY)
    async with openai_bot(tmp_path, telegram, fake) as bot:
        ask = telegram.user_message(CHAT, USER, "/imagine something forbidden")
        await telegram.wait_for_message(CHAT, lambda m: "content rules" in (m.text or ""), after_message_id=ask["message_id"])
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert tasks[0].error_kind == "rejected"


async def test_a_429_is_retried_after_retry_after(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeOpenAI(api_key=KEY, retry_after_seconds=2)
    fake.fail_next("rate_limited")
    async with openai_bot(tmp_path, telegram, fake) as bot:
        asked_at = time.monotonic()  # the fake's clock
        await imagine(telegram, "/imagine a snail race")
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert [t.status.value for t in tasks] == ["delivered"]
    assert len(fake.api_requests("/images/generations")) == 2  # refused, then served
    assert fake.generations[0].started_at - asked_at >= 2.0


async def test_a_long_call_does_not_hold_the_dispatcher(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeOpenAI(api_key=KEY)
    fake.hold()
    async with openai_bot(tmp_path, telegram, fake, sandbox_enabled=True) as bot:
        bot.engine.dispatcher.concurrency = 1  # one slot: a held call would block everything
        slow = telegram.user_message(CHAT, USER, "/imagine a slow sunrise")
        await fake.wait_started(1)
        # The call is still running, yet the dispatcher is free for the next job.
        quick = telegram.user_message(CHAT, USER, "/imagine a quick sketch --provider sandbox")
        await result_after(telegram, CHAT, quick["message_id"], timeout=20)
        [running] = [t for t in await bot.store.tasks.recent(USER) if t.provider == "openai"]
        assert running.status.value == "submitted"
        fake.release()
        await result_after(telegram, CHAT, slow["message_id"], timeout=20)
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert sorted(t.status.value for t in tasks) == ["delivered", "delivered"]


async def test_a_restart_mid_call_runs_the_task_again_and_delivers_once(
    tmp_path: Path, telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inprocess, "STOP_GRACE_SECONDS", 0.2)  # the held call will not end by itself
    fake = FakeOpenAI(api_key=KEY)
    fake.hold()
    async with serve(fake.app) as url:
        settings = make_settings(tmp_path, telegram, openai_api_key=KEY, openai_base_url=url + "/v1")
        async with running_bot(settings):
            ask = telegram.user_message(CHAT, USER, "/imagine a clock tower")
            await fake.wait_started(1)
        # The first process is gone and its call with it (still held at the vendor).
        fake.release()
        started = time.monotonic()
        async with running_bot(settings) as bot:
            await result_after(telegram, CHAT, ask["message_id"], timeout=20)
            tasks = await settled(bot, USER)
            await asyncio.sleep(0.3)  # nothing else arrives
    await fake.aclose()
    assert [(t.status.value, t.reruns) for t in tasks] == [("delivered", 1)]
    assert len(fake.api_requests("/images/generations")) == 2
    assert len([m for m in photos(telegram, CHAT)]) == 1
    assert time.monotonic() - started < 15  # found at start-up, not at the next poll


async def test_providers_file_instances_are_vendors_of_their_own(
    tmp_path: Path, telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay_a = FakeOpenAI(api_key="key-a", models=(), relay_models={"flux-1-schnell": {}})
    relay_b = FakeOpenAI(api_key="key-b", models=(), relay_models={"seedream-3.0": {}})
    monkeypatch.setenv("RELAY_A_KEY", "key-a")
    monkeypatch.setenv("RELAY_B_KEY", "key-b")
    async with serve(relay_a.app) as url_a, serve(relay_b.app) as url_b:
        file = tmp_path / "providers.toml"
        file.write_text(
            f'[[providers]]\nid = "relay-a"\nkind = "openai"\nbase_url = "{url_a}/v1"\n'
            f'secret_env = "RELAY_A_KEY"\nmodel = "flux-1-schnell"\n\n'
            f'[[providers]]\nid = "relay-b"\nkind = "openai"\nbase_url = "{url_b}/v1"\n'
            f'secret_env = "RELAY_B_KEY"\nmodel = "seedream-3.0"\n', "utf-8")
        settings = make_settings(tmp_path, telegram, providers_file=str(file), default_provider="relay-a")
        async with running_bot(settings) as bot:
            listing = telegram.user_message(CHAT, USER, "/providers")
            shown = await telegram.wait_for_message(CHAT, after_message_id=listing["message_id"])
            await imagine(telegram, "/imagine a red kite --provider relay-b")
            # relay-a is down: the job goes to the other instance, like to another vendor.
            relay_a.fail_next("server_error")
            await imagine(telegram, "/imagine a blue kite")
            tasks = await settled(bot, USER)
    await relay_a.aclose()
    await relay_b.aclose()
    assert "relay-a" in (shown.text or "") and "model seedream-3.0" in (shown.text or "")
    assert sorted((t.provider, t.status.value) for t in tasks) == [("relay-b", "delivered")] * 2
    assert [c.body["model"] for c in relay_b.api_requests("/images/generations")] == ["seedream-3.0"] * 2
    assert [c.headers["authorization"] for c in relay_b.api_requests()] == ["Bearer key-b"] * 2
    assert len(relay_a.api_requests("/images/generations")) == 1  # the one that failed


async def test_a_late_5xx_runs_the_task_again_and_a_late_quota_error_switches_the_vendor_off(
    tmp_path: Path, telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every answer comes "late": after the dispatcher has let go of the call.
    monkeypatch.setattr(OpenAI, "answer_within", 0.0)
    fake = FakeOpenAI(api_key=KEY)
    fake.fail_next("server_error")
    async with openai_bot(tmp_path, telegram, fake) as bot:
        await imagine(telegram, "/imagine a weather vane")
        [mended] = await settled(bot, USER)
        fake.fail_next("insufficient_quota")
        ask = telegram.user_message(CHAT, USER, "/imagine a rain gauge")
        await telegram.wait_for_message(CHAT, lambda m: "out of credit" in (m.text or ""), after_message_id=ask["message_id"])
        tasks = await settled(bot, USER)
        health = bot.engine.registry.describe_health("openai")
    await fake.aclose()
    assert (mended.status.value, mended.reruns) == ("delivered", 1)
    assert len(fake.api_requests("/images/generations")) == 3
    assert [t.error_kind for t in tasks if t.status.value == "failed"] == ["quota"]
    assert health.startswith("disabled")
    assert any("Vendor openai is disabled" in (m.text or "") for m in telegram.bot_messages(USER))


async def test_an_album_edit_sends_every_photo_to_gpt_image(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeOpenAI(api_key=KEY)
    async with openai_bot(tmp_path, telegram, fake) as bot:
        first = telegram.user_message(CHAT, USER, photo=png(300, 300), caption="put the cat on the sofa", media_group_id="a-1")
        telegram.user_message(CHAT, USER, photo=png(300, 300, (20, 90, 200)), media_group_id="a-1")
        await result_after(telegram, CHAT, first["message_id"], timeout=20)
        tasks = await settled(bot, USER)
    await fake.aclose()
    assert [t.status.value for t in tasks] == ["delivered"]
    [call] = fake.api_requests("/images/edits")
    assert len(call.body["image[]"]) == 2 and call.body["prompt"] == "put the cat on the sofa"
