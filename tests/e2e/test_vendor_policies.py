"""What the vendor layer asks of the engine, through the real bot: batched
queries, each vendor's poll policy, inputs shrunk to a vendor's size limit,
prompt limits in routing, and a --provider that was switched off."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from providers.aihuihua import Aihuihua
from providers.base import PollPolicy
from tests.e2e.test_vendors import CHAT, USER, bot_with
from tests.e2e.conftest import make_settings, running_bot
from tests.e2e.helpers import result_after, settled
from tests.fakes.aihuihua import FakeAihuihua
from tests.fakes.juhe import FakeJuhe
from tests.fakes.server import serve
from tests.fakes.telegram import FakeTelegram
from tests.fakes.zhiqite import FakeZhiqite

QUERY_ONE = "/api/v2/task/id/"
QUERY_MANY = "/api/v2/task/list/"


async def test_aihuihua_jobs_due_together_share_one_batch_query(
    tmp_path: Path, telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Polling only (no PUBLIC_BASE_URL), paced down so the test is short.
    monkeypatch.setattr(Aihuihua, "poll_policy", PollPolicy(min_interval_seconds=1.0))
    fake = FakeAihuihua(queue_seconds=0.3, submitted_seconds=0.3, run_seconds=1.0)
    users = [USER + i for i in range(3)]
    async with serve(fake.app) as url:
        settings = make_settings(tmp_path, telegram, aihuihua_api_key=fake.api_key, aihuihua_base_url=url)
        async with running_bot(settings) as bot:
            asks = [telegram.user_message(user, user, f"/imagine lantern number {user}") for user in users]
            for user, ask in zip(users, asks, strict=True):
                await result_after(telegram, user, ask["message_id"], timeout=30)
            tasks = [task for user in users for task in await settled(bot, user)]
        await fake.aclose()
    assert all(task.status.value == "delivered" for task in tasks)
    batches = fake.api_requests(QUERY_MANY)
    # Due together, asked together (a task due alone is asked about alone).
    assert batches and max(len(request.body["ids"]) for request in batches) >= 2
    assert all(len(request.body["ids"]) <= 20 for request in batches)


async def test_aihuihua_with_callbacks_is_never_polled(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeAihuihua(queue_seconds=0.2, submitted_seconds=0.2, run_seconds=0.6)
    async with serve(fake.app) as url:
        async with bot_with(tmp_path, telegram, aihuihua_api_key=fake.api_key, aihuihua_base_url=url) as bot:
            ask = telegram.user_message(CHAT, USER, "/imagine a koi pond")
            await result_after(telegram, CHAT, ask["message_id"], timeout=20)
            tasks = await settled(bot, USER)
        await fake.aclose()
    assert [task.status.value for task in tasks] == ["delivered"]
    assert fake.callbacks  # the result came by notifyHook...
    assert not fake.api_requests(QUERY_ONE) and not fake.api_requests(QUERY_MANY)  # ...and nothing was asked
    # Progress came by callback too, and the bot took every one at first try
    # (each progress callback also moves the safety-net poll back).
    assert any(not attempt.final for attempt in fake.callbacks)
    assert all(attempt.accepted and attempt.attempt == 1 for attempt in fake.callbacks)


async def test_zhiqite_with_callbacks_spends_no_billed_query(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeZhiqite(app_code="code", queue_seconds=0.2, run_seconds=1.0, upload_seconds=0.1)
    async with serve(fake.app) as url:
        async with bot_with(tmp_path, telegram, zhiqite_app_code="code", zhiqite_base_url=url) as bot:
            ask = telegram.user_message(CHAT, USER, "/imagine a red fox")
            await result_after(telegram, CHAT, ask["message_id"], timeout=20)
            tasks = await settled(bot, USER)
        await fake.aclose()
    assert [task.status.value for task in tasks] == ["delivered"]
    assert not fake.api_requests("queryTaskInfo")


def noise_png(width: int, height: int) -> bytes:
    """A PNG that does not compress: random pixels."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def test_an_input_over_aihuihuas_5_mb_reaches_it_shrunk(tmp_path: Path, telegram: FakeTelegram) -> None:
    big = noise_png(1600, 1400)
    assert len(big) > 5 * 1024 * 1024
    fake = FakeAihuihua(queue_seconds=0.1, submitted_seconds=0.1, run_seconds=0.3)
    async with serve(fake.app) as url:
        async with bot_with(tmp_path, telegram, aihuihua_api_key=fake.api_key, aihuihua_base_url=url) as bot:
            sent = telegram.user_message(
                CHAT, USER, document=big, document_mime="image/png", file_name="big.png",
                caption="in the style of ukiyo-e",
            )
            await result_after(telegram, CHAT, sent["message_id"], timeout=20)
            tasks = await settled(bot, USER)
        await fake.aclose()
    assert [(task.kind, task.status.value) for task in tasks] == [("img2img", "delivered")]
    fetched = [record for record in fake.fetches if record.ok]
    assert fetched and all(0 < record.size <= 5 * 1024 * 1024 for record in fetched)


async def test_a_prompt_too_long_for_juhe_goes_to_a_vendor_that_takes_it(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeJuhe()
    prompt = "a very detailed lantern festival " * 30  # ~990 characters; juhe takes 800
    async with serve(fake.app) as url:
        async with bot_with(tmp_path, telegram, juhe_api_key=fake.key, juhe_base_url=url, sandbox_enabled=True) as bot:
            ask = telegram.user_message(CHAT, USER, f"/imagine {prompt}")
            await result_after(telegram, CHAT, ask["message_id"], timeout=20)
            forced = telegram.user_message(CHAT, USER, f"/imagine {prompt} --provider juhe")
            refusal = await telegram.wait_for_message(CHAT, lambda m: bool(m.text), after_message_id=forced["message_id"])
            tasks = await settled(bot, USER)
        await fake.aclose()
    assert [(task.provider, task.status.value) for task in tasks] == [("sandbox", "delivered")]
    assert not fake.api_requests()
    assert "at most 800" in refusal.text and str(len(prompt.strip())) in refusal.text


async def test_provider_switched_off_for_bad_credentials_is_not_picked(tmp_path: Path, telegram: FakeTelegram) -> None:
    fake = FakeJuhe()
    async with serve(fake.app) as url:
        async with bot_with(tmp_path, telegram, juhe_api_key="not-the-key", juhe_base_url=url, sandbox_enabled=True) as bot:
            telegram.user_message(CHAT, USER, "/imagine a lantern --provider juhe")
            assert await eventually_failed(bot)
            again = telegram.user_message(CHAT, USER, "/imagine a lantern --provider juhe")
            refusal = await telegram.wait_for_message(CHAT, lambda m: bool(m.text), after_message_id=again["message_id"])
            tasks = await settled(bot, USER)
        await fake.aclose()
    assert "switched off" in refusal.text
    assert len(tasks) == 1 and tasks[0].error_kind == "auth"
    assert len(fake.api_requests()) == 1  # the second request never reached the vendor


async def eventually_failed(bot, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        tasks = await bot.store.tasks.recent(USER)
        if tasks and tasks[0].status.value == "failed":
            return True
        await asyncio.sleep(0.05)
    return False
