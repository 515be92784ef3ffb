"""Routing and fallback: a failing vendor hands the request to another
capable one at submit time; auth/credit failures switch a vendor off and
tell the admins; with no capable vendor the user gets a clear sentence."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import ZHIQITE_APP_CODE, make_settings, running_bot
from tests.e2e.helpers import png, result_after
from tests.fakes.telegram import FakeTelegram
from tests.fakes.zhiqite import FakeZhiqite

CHAT = USER = 8080
ADMIN = 8181


async def test_out_of_credit_falls_back_and_tells_admins(
    tmp_path: Path, telegram: FakeTelegram, zhiqite: tuple[FakeZhiqite, str]
) -> None:
    vendor, url = zhiqite
    vendor.fail_next("quota")
    telegram.add_chat(ADMIN)
    settings = make_settings(
        tmp_path, telegram, zhiqite_app_code=ZHIQITE_APP_CODE, zhiqite_base_url=url,
        sandbox_enabled=True, admin_user_ids=str(ADMIN),
    )
    async with running_bot(settings) as bot:
        request = telegram.user_message(CHAT, USER, "/imagine a harbour at dawn")
        result = await result_after(telegram, CHAT, request["message_id"])
        warning = await telegram.wait_for_message(ADMIN)
        # Off until restart: the next request does not even try zhiqite.
        second = telegram.user_message(CHAT, USER, "/imagine a second harbour")
        await result_after(telegram, CHAT, second["message_id"])
        tasks = await bot.store.tasks.recent(USER)
    assert "Sandbox" in result.caption
    assert [t.provider for t in tasks] == ["sandbox", "sandbox"]
    assert "zhiqite" in warning.text and "credit" in warning.text
    assert len(vendor.api_requests("saas/sd/v2/text2image")) == 1


async def test_server_errors_fall_back_to_another_vendor(
    tmp_path: Path, telegram: FakeTelegram, zhiqite: tuple[FakeZhiqite, str]
) -> None:
    vendor, url = zhiqite
    vendor.fail_next("http500")
    settings = make_settings(tmp_path, telegram, zhiqite_app_code=ZHIQITE_APP_CODE, zhiqite_base_url=url, sandbox_enabled=True)
    async with running_bot(settings) as bot:
        request = telegram.user_message(CHAT, USER, "/imagine stormy sea")
        await result_after(telegram, CHAT, request["message_id"])
        task = (await bot.store.tasks.recent(USER))[0]
        assert bot.engine.registry.describe_health("zhiqite") == "ok"  # one 5xx is no reason to rest
    assert task.provider == "sandbox"


async def test_forced_vendor_that_cannot_and_no_capable_vendor(
    tmp_path: Path, telegram: FakeTelegram, zhiqite: tuple[FakeZhiqite, str]
) -> None:
    _, url = zhiqite
    # zhiqite alone, no PUBLIC_BASE_URL: it cannot fetch input images, so
    # nothing here can edit a photo.
    settings = make_settings(tmp_path, telegram, zhiqite_app_code=ZHIQITE_APP_CODE, zhiqite_base_url=url)
    async with running_bot(settings) as bot:
        photo = telegram.user_message(CHAT, USER, photo=png(), caption="paint it gold")
        none = await telegram.wait_for_message(CHAT, after_message_id=photo["message_id"])
        forced = telegram.user_message(CHAT, USER, "/imagine a fox --provider sandbox")
        unknown = await telegram.wait_for_message(CHAT, after_message_id=forced["message_id"])
        assert await bot.store.tasks.recent(USER) == []
    assert "No vendor" in none.text and "edit" in none.text
    assert "no vendor called sandbox" in unknown.text


async def test_stats_for_admins_only(tmp_path: Path, telegram: FakeTelegram) -> None:
    settings = make_settings(tmp_path, telegram, admin_user_ids=str(ADMIN))
    async with running_bot(settings):
        ask = telegram.user_message(CHAT, USER, "/imagine counted")
        await result_after(telegram, CHAT, ask["message_id"])
        denied = telegram.user_message(CHAT, USER, "/stats")
        refusal = await telegram.wait_for_message(CHAT, after_message_id=denied["message_id"])
        telegram.user_message(ADMIN, ADMIN, "/stats")
        report = await telegram.wait_for_message(ADMIN)
    assert "admins" in refusal.text
    assert "1 tasks" in report.text and "sandbox" in report.text and "done 1" in report.text
