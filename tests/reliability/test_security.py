"""Secrets and trust boundaries through the real bot: the bot token and the
vendor keys never reach the logs (at DEBUG, with the HTTP stack's own
loggers turned up), the users, or a vendor; vendor callbacks are
authenticated per task; result URLs are fetched only over http(s) and never
from private or loopback addresses unless ALLOW_PRIVATE_URLS."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.i18n import t
from bot.logs import REDACTED, setup_logging
from tests.e2e.conftest import TOKEN, ZHIQITE_APP_CODE, free_port, make_settings, running_bot
from tests.e2e.helpers import png, result_after
from tests.fakes.aihuihua import FakeAihuihua
from tests.fakes.juhe import FakeJuhe
from tests.fakes.mjproxy import FakeMjProxy
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import serve
from tests.fakes.telegram import FakeTelegram
from tests.fakes.zhiqite import FakeZhiqite
from tests.reliability.support import final_task, no_secrets_in, wait_task

USER = 6501
# Loggers setup_logging keeps at WARNING (they log full URLs); the test turns them up.
QUIETENED = ("httpx", "httpcore", "telegram.ext.Updater", "apscheduler")
NOISY = (*QUIETENED, "telegram", "telegram.ext")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, {name: logging.getLogger(name).level for name in NOISY})
    yield
    root.handlers[:], level, levels = saved[0], saved[1], saved[2]
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


async def test_no_secret_in_logs_user_messages_or_vendor_requests(
    tmp_path: Path, telegram: FakeTelegram, restore_logging: None
) -> None:
    """Every kind of vendor input (our /media URL: zhiqite, aihuihua; a data
    URI: juhe, midjourney-proxy; multipart: OpenAI), a vendor 5xx, a Telegram
    502 and a file download, all logged at DEBUG through the bot's own
    logging set-up."""
    zq = FakeZhiqite(app_code=ZHIQITE_APP_CODE, queue_seconds=0.1, run_seconds=0.3, callback_delay_scale=0.02)
    ah = FakeAihuihua(queue_seconds=0.15, submitted_seconds=0.15, run_seconds=0.3)
    jh = FakeJuhe()
    oa = FakeOpenAI(api_key="sk-live-SECRET-openai-31337")
    mj = FakeMjProxy(flavour="trueai", api_secret="mj-SECRET-proxy-4711", run_seconds=0.2)
    zq.fail_next("http500")  # a logged vendor failure, with the vendor's words
    telegram.fail_next("sendPhoto", 502)  # a logged Telegram failure
    port = free_port()
    async with (serve(zq.app) as z_url, serve(ah.app) as a_url, serve(jh.app) as j_url,
                serve(oa.app) as o_url, serve(mj.app) as m_url):
        settings = make_settings(
            tmp_path, telegram, http_port=port, public_base_url=f"http://127.0.0.1:{port}",
            log_level="DEBUG", log_format="json",
            zhiqite_app_code=ZHIQITE_APP_CODE, zhiqite_base_url=z_url,
            aihuihua_api_key=ah.api_key, aihuihua_base_url=a_url,
            juhe_api_key=jh.key, juhe_base_url=j_url,
            openai_api_key=oa.api_key, openai_base_url=o_url + "/v1",
            mj_proxy_base_url=m_url, mj_proxy_api_secret=mj.api_secret,
        )
        setup_logging(settings.log_level, settings.log_format, settings.secrets())
        captured = io.StringIO()
        logging.getLogger().handlers[0].setStream(captured)  # type: ignore[attr-defined]
        for name in NOISY:  # what setup_logging quietens is the most dangerous: full URLs
            logging.getLogger(name).setLevel(logging.DEBUG)
        async with running_bot(settings) as bot:
            requests = [
                telegram.user_message(USER, USER, "/imagine a locked chest --provider zhiqite"),
                telegram.user_message(USER, USER, photo=png(), caption="paint it gold --provider zhiqite"),
                telegram.user_message(USER, USER, photo=png(), caption="paint it silver --provider aihuihua"),
            ]
            for request in requests:
                await result_after(telegram, USER, request["message_id"], timeout=15)
            juhe = telegram.user_message(USER, USER, photo=png(), caption="paint it bronze --provider juhe")
            await result_after(telegram, USER, juhe["message_id"], timeout=15)
            for caption in ("paint it copper --provider openai", "paint it jade --provider mjproxy"):
                more = telegram.user_message(USER, USER, photo=png(), caption=caption)
                await result_after(telegram, USER, more["message_id"], timeout=15)
            tasks = await final_task(bot, USER, count=6)
        for fake in (zq, ah, jh, oa, mj):
            await fake.aclose()
    records = [json.loads(line) for line in captured.getvalue().splitlines()]
    keys = {"bot token": TOKEN, "bot token secret": TOKEN.split(":", 1)[1], "zhiqite": ZHIQITE_APP_CODE,
            "aihuihua": ah.api_key, "juhe": jh.key, "openai": oa.api_key, "mjproxy": mj.api_secret}

    def leaks(chosen: list[dict]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for record in chosen:
            text = " ".join(str(value) for value in record.values())
            for name, secret in keys.items():
                if secret in text:
                    found.setdefault(name, []).append(f"{record['logger']}: {record['message'][:160]}")
        return found

    def turned_up(record: dict) -> bool:
        """Only there because this test turned a quietened logger up."""
        quiet = any(record["logger"] == q or record["logger"].startswith(q + ".") for q in QUIETENED)
        return quiet and logging.getLevelName(record["level"]) < logging.WARNING

    assert [task.status.value for task in tasks] == ["delivered"] * 6
    # 1. Logs. Plenty was logged, the HTTP stack's URL lines among it, and redaction was at work.
    assert len(records) > 50 and any("HTTP Request" in r["message"] for r in records)
    assert any(REDACTED in r["message"] for r in records)
    # 1a. As the bot configures logging (LOG_LEVEL=DEBUG): nothing secret.
    as_configured = leaks([r for r in records if not turned_up(r)])
    assert not as_configured, f"secrets in the bot's DEBUG log: {as_configured}"
    # 2. What users saw.
    shown = "\n".join(m.content for m in telegram.bot_messages(USER, include_deleted=True))
    assert not [name for name, secret in keys.items() if secret in shown]
    # 3. What vendors received: no bot token, no Telegram file URL, no other vendor's key.
    for vendor, fake, own in (("zhiqite", zq, ZHIQITE_APP_CODE), ("aihuihua", ah, ah.api_key), ("juhe", jh, jh.key),
                              ("openai", oa, oa.api_key), ("mjproxy", mj, mj.api_secret)):
        others = [secret for name, secret in keys.items() if secret != own]
        assert fake.requests, vendor
        assert not no_secrets_in(fake.requests, *others), f"{vendor} was sent a secret: {no_secrets_in(fake.requests, *others)[:1]}"
    for vendor, fake in (("zhiqite", zq), ("aihuihua", ah)):
        fetched = fake.fetched_urls()
        assert fetched and all(url.startswith(f"http://127.0.0.1:{port}/media/") for url in fetched), (vendor, fetched)
    # 4. The redaction itself, on the HTTP stack's own lines (URLs): nothing secret either.
    turned_up_leaks = leaks([r for r in records if turned_up(r)])
    assert not turned_up_leaks, (
        "the redacting filter let these through (httpx, turned up to DEBUG; setup_logging keeps it at "
        f"WARNING by default): {turned_up_leaks}"
    )


def zhiqite_callback(business_id: str, image_url: str) -> dict:
    return {"code": "200", "msg": "success", "data": {
        "id_task": business_id, "status": 2, "desc": "任务成功 !",
        "differentialImageRspList": [{"image_url": image_url, "seed": 7, "image_status": 1, "img_audit_status": True}],
    }}


async def test_callbacks_are_authenticated_and_private_result_urls_refused(tmp_path: Path, telegram: FakeTelegram) -> None:
    """ALLOW_PRIVATE_URLS=false. Forged callbacks are refused without touching
    the task; an authentic callback naming a file:// or a link-local URL, and
    the vendor's own loopback result URL, end in a failed task and a message —
    never in a download."""
    fake = FakeZhiqite(app_code=ZHIQITE_APP_CODE, queue_seconds=0.1, run_seconds=120, callback_delay_scale=0.02)
    port = free_port()
    users = {"file": 6511, "link-local": 6512, "loopback": 6513}
    async with serve(fake.app) as url, httpx.AsyncClient(timeout=5) as client:
        settings = make_settings(
            tmp_path, telegram, http_port=port, public_base_url=f"http://127.0.0.1:{port}", allow_private_urls=False,
            zhiqite_app_code=ZHIQITE_APP_CODE, zhiqite_base_url=url,
        )
        base = f"http://127.0.0.1:{port}"
        async with running_bot(settings) as bot:
            for case, user in users.items():
                telegram.user_message(user, user, f"/imagine a {case} treasure")
            started = {case: await wait_task(bot, user, lambda t: t.provider_job_id is not None) for case, user in users.items()}
            task = started["file"]
            genuine = zhiqite_callback(task.business_id, "http://example.org/x.png")
            forged = {
                "wrong token": await client.post(f"{base}/callbacks/zhiqite/{secrets.token_urlsafe(24)}", json=genuine),
                "no token": await client.post(f"{base}/callbacks/zhiqite/x", json=genuine),
                "wrong vendor": await client.post(f"{base}/callbacks/aihuihua/{task.callback_token}", json=genuine),
                "another job": await client.post(
                    f"{base}/callbacks/zhiqite/{task.callback_token}",
                    json=zhiqite_callback(started["loopback"].business_id, "http://example.org/x.png"),
                ),
                "not JSON": await client.post(f"{base}/callbacks/zhiqite/{task.callback_token}", content=b"<xml/>"),
                "not an object": await client.post(f"{base}/callbacks/zhiqite/{task.callback_token}", json=[genuine]),
            }
            media_guess = await client.get(f"{base}/media/{secrets.token_urlsafe(24)}")
            untouched = await bot.store.tasks.get(task.id)  # type: ignore[union-attr]

            # Authentic callbacks (right task token), hostile result URLs.
            file_cb = await client.post(f"{base}/callbacks/zhiqite/{task.callback_token}", json=zhiqite_callback(task.business_id, "file:///etc/passwd"))
            metadata = started["link-local"]
            link_cb = await client.post(
                f"{base}/callbacks/zhiqite/{metadata.callback_token}",
                json=zhiqite_callback(metadata.business_id, "http://169.254.169.254/latest/meta-data/iam.png"),
            )
            fake.finish(started["loopback"].provider_job_id)  # the vendor's real callback, with its 127.0.0.1 URL
            outcomes = {case: (await final_task(bot, user, timeout=8))[0] for case, user in users.items()}

    assert {name: r.status_code for name, r in forged.items()} == {
        "wrong token": 404, "no token": 404, "wrong vendor": 404, "another job": 409, "not JSON": 400, "not an object": 400,
    }
    assert media_guess.status_code == 404
    assert untouched is not None and untouched.status.value in ("submitted", "running") and not untouched.result_meta
    assert file_cb.status_code == 200 and link_cb.status_code == 200
    for case, task in outcomes.items():
        assert task.status.value == "failed" and task.error_kind == "result_unusable", (case, task.status, task.error_kind, task.error_detail)
        told = telegram.last_bot_message(users[case])
        assert told is not None and t("en", "fail_result_unusable") in told.content, case
    details = {case: task.error_detail for case, task in outcomes.items()}
    assert "http(s)" in (details["file"] or "") and "private" in (details["link-local"] or "") and "private" in (details["loopback"] or "")
    assert not [r.path for r in fake.requests if r.path.startswith("/output/")], "the loopback result was downloaded"
    assert not json.dumps([m.content for m in telegram.bot_messages(users["file"])]).count("passwd")
