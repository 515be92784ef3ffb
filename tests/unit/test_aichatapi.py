"""aichatapi adapter: pure transforms, the HTTP boundary (httpx.MockTransport),
and end to end against FakeAichatapi over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.config import Settings
from bot.engine.ratelimit import VendorGate
from providers import aichatapi as ai
from providers import code_envelope as envelope
from providers.errors import (AuthError, BadRequest, ContentRejected, JobNotFound,
                              MalformedResponse, ProviderError, QuotaExceeded, RateLimited,
                              Unavailable, VendorTimeout)
from providers.types import Capability, GenerationParams, InputImage, JobState, JobStatus
from tests.fakes.aichatapi import FakeAichatapi, parse_multipart
from tests.vendor_kit import (Recorder, VendorStack, eventually, fixture, input_image,
                              json_response, loopback, loopback_fixture, make_provider,
                              make_spec, mock_provider, png, poll_until_done)

API_KEY = "aichat-key-SECRET-1234"
BASE = "https://aichatapi.example.test"
QUERY = "https://open.aichatapi.example.test"
PROMPT = "水彩风格 watercolor"


def spec(capability: Capability = Capability.IMG2IMG, *,
         images: tuple[InputImage, ...] | None = None, **params: Any):
    params.setdefault("prompt", PROMPT)
    return make_spec(capability, images=(input_image(),) if images is None else images, **params)


def ok(data: Any) -> dict[str, Any]:
    return {"code": 200, "msg": "success", "data": data}


def task(state: Any, **fields: Any) -> dict[str, Any]:
    data = {"task_id": 382243, "state": state, "state_name": "", "queue": 0, "wait_for": 0,
            "images": []}
    data.update(fields)
    return data


def query(name: str) -> dict[str, Any]:
    """`data` of a query answer saved under tests/fixtures/aichatapi/."""
    return fixture("aichatapi", name)["data"]


def mocked(recorder: Recorder, qps: float = 1.0, timeout: float = 2.0):
    return mock_provider(ai.Aichatapi, recorder, BASE + "/", timeout=timeout,
                         aichatapi_api_key=API_KEY, aichatapi_query_url=QUERY + "/",
                         aichatapi_qps=qps)


# =========================================================================== #
# Pure transforms: the request
# =========================================================================== #


def test_default_params_are_the_seed_example() -> None:
    assert ai.build_params(GenerationParams(n=4)) == fixture("aichatapi", "params_example")


def test_params_take_the_user_values() -> None:
    params = GenerationParams(
        prompt="一只猫", negative_prompt="blurry", n=2, seed=42, steps=30, cfg=9.5,
        strength=0.35, aspect_ratio="16:9", model="0123456789abcdef0123456789abcdef",
    )
    built = ai.build_params(params)
    assert built["prompt"] == "一只猫" and built["negative_prompt"] == "blurry"
    assert (built["number"], built["seed"], built["steps"]) == (2, 42, 30)
    assert built["cfg_scale"] == 9.5
    assert built["denoising_strength"] == 35
    assert built["size_id"] == "16:9"
    assert built["model_id"] == "0123456789abcdef0123456789abcdef"
    assert built["style_id"] == ai.ASSUMED.default_style_id  # a LoRA id [public]


def test_a_model_that_is_not_an_id_is_not_sent() -> None:
    built = ai.build_params(GenerationParams(model="sdxl"))
    assert built["model_id"] == ai.ASSUMED.default_model_id


def test_whole_cfg_is_sent_as_an_integer() -> None:
    assert ai.build_params(GenerationParams(cfg=8.0))["cfg_scale"] == 8
    assert isinstance(ai.build_params(GenerationParams(cfg=8.0))["cfg_scale"], int)


@pytest.mark.parametrize(
    ("strength", "percent"),
    [(None, 70), (0.0, 1), (0.004, 1), (0.5, 50), (1.0, 100), (55, 55), (250, 100)],
)
def test_strength_as_percent(strength: float | None, percent: int) -> None:
    assert ai.strength_percent(strength) == percent


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=1000, allow_nan=False))
def test_strength_percent_is_always_valid(strength: float) -> None:
    assert 1 <= ai.strength_percent(strength) <= 100


@pytest.mark.parametrize(
    ("params", "image_size", "size_id"),
    [
        (GenerationParams(aspect_ratio="3:4"), None, "3:4"),
        (GenerationParams(aspect_ratio="21:9"), None, "16:9"),
        (GenerationParams(aspect_ratio="5:4"), None, "4:3"),
        (GenerationParams(width=1000, height=1000), None, "1:1"),
        (GenerationParams(width=600, height=900), None, "2:3"),
        (GenerationParams(), (1200, 800), "3:2"),
        (GenerationParams(), (720, 1280), "9:16"),
        (GenerationParams(aspect_ratio="1:1"), (64, 64), "1:1"),
        (GenerationParams(aspect_ratio="4:3"), (720, 1280), "4:3"),
        (GenerationParams(), None, "1:1"),
    ],
)
def test_size_id(params: GenerationParams, image_size: tuple[int, int] | None,
                 size_id: str) -> None:
    assert ai.size_id_for(params, image_size) == size_id


@settings(max_examples=200, deadline=None)
@given(w=st.integers(1, 5000), h=st.integers(1, 5000))
def test_size_id_is_always_supported(w: int, h: int) -> None:
    assert ai.size_id_for(GenerationParams(width=w, height=h), None) in ai.ASSUMED.size_ids


def test_size_comes_from_the_measured_input() -> None:
    """The engine's width/height decide, not a decoding of the bytes."""
    measured = InputImage(data=b"not decoded here", mime="image/jpeg", width=1200, height=800)
    data, _ = ai.build_multipart(GenerationParams(), measured)
    assert json.loads(data["params"])["size_id"] == "3:2"


def test_params_part_is_a_utf8_json_string() -> None:
    image = input_image(png(fmt="JPEG"))
    data, files = ai.build_multipart(GenerationParams(prompt="一只猫"), image)
    assert isinstance(data["params"], str)
    assert "一只猫" in data["params"]  # not \u escapes
    assert json.loads(data["params"])["prompt"] == "一只猫"
    assert files["image"] == ("image.jpg", image.data, "image/jpeg")


@pytest.mark.parametrize(
    ("mime", "name"),
    [("image/png", "image.png"), ("image/jpeg", "image.jpg"), ("image/webp", "image.webp"),
     ("application/octet-stream", "image.png")],
)
def test_upload_filename(mime: str, name: str) -> None:
    assert ai.upload_filename(mime) == name


# =========================================================================== #
# Pure transforms: responses (states per the vendor's own client [public])
# =========================================================================== #


def test_queued_state_0_eta_is_the_vendors_formula() -> None:
    state = ai.parse_query(query("query_queued"))  # queue 3, wait_for 4
    assert state.status is JobStatus.QUEUED and state.queue_position == 3
    assert state.eta_seconds == 8  # max((3 + 1) * 2, 4)
    assert ai.parse_query(query("query_queued_long_wait")).eta_seconds == 25  # max(4, 25)


@pytest.mark.parametrize(
    ("fields", "eta"),
    [({"queue": 0, "wait_for": 0}, 2), ({"queue": "5", "wait_for": "3"}, 12),
     ({"queue": None, "wait_for": 30}, 30), ({"queue": None, "wait_for": None}, None)],
)
def test_eta_seconds(fields: dict[str, Any], eta: float | None) -> None:
    assert ai.eta_seconds(fields) == eta


def test_state_1_is_nearly_done_and_looked_at_again_soon() -> None:
    state = ai.parse_query(query("query_fetching"))  # do_use 18
    assert state.status is JobStatus.RUNNING
    assert state.progress == pytest.approx(0.95)
    assert state.eta_seconds is not None and state.eta_seconds <= 10


def test_state_1_for_over_60_seconds_is_a_timeout() -> None:
    state = ai.parse_query(query("query_fetching_too_long"))  # do_use 75
    assert state.status is JobStatus.FAILED and state.error_kind == VendorTimeout.kind
    assert state.error_kind == "timeout" and "75" in state.error_detail
    assert ai.parse_query(task("1", do_use=60)).status is JobStatus.RUNNING  # "about 60 s"


def test_done_state_2_gives_the_images() -> None:
    state = ai.parse_query(query("query_done"))
    assert state.status is JobStatus.SUCCEEDED
    assert [image.url for image in state.images] == query("query_done")["images"]


def test_done_images_may_be_objects() -> None:
    state = ai.parse_query(task(2, images=[{"url": "https://x/1.png"}, "https://x/2.png"]))
    assert [image.url for image in state.images] == ["https://x/1.png", "https://x/2.png"]


def test_done_without_images_fails() -> None:
    state = ai.parse_query(task("2", images=[]))
    assert state.status is JobStatus.FAILED and state.error_kind == ProviderError.kind


def test_failed_state_3_has_no_error_field() -> None:
    state = ai.parse_query(query("query_failed"))
    assert state.status is JobStatus.FAILED and state.error_kind == ProviderError.kind
    assert state.error_detail == "生成失败"


@pytest.mark.parametrize(
    ("error", "kind"),
    [("生成失败", ProviderError.kind), ("图片包含违规内容", ContentRejected.kind),
     ("生成超时", VendorTimeout.kind), (None, ProviderError.kind)],
)
def test_failed_state_3_reads_an_error_if_one_comes(error: str | None, kind: str) -> None:
    state = ai.parse_query(task("3", error=error))
    assert state.status is JobStatus.FAILED and state.error_kind == kind
    assert state.error_detail


def test_unknown_state_counts_as_running() -> None:
    state = ai.parse_query(task("7", queue=1, wait_for=3))
    assert state.status is JobStatus.RUNNING and state.eta_seconds == 4


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8,
)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["state", "state_name", "queue", "wait_for", "do_use", "images", "error",
                     "task_id"]),
    JSON_VALUES | st.sampled_from(["0", "1", "2", "3"]),
))
def test_any_query_data_gives_a_state(data: dict[str, Any]) -> None:
    assert isinstance(ai.parse_query(data), JobState)


# =========================================================================== #
# Pure transforms: errors
# =========================================================================== #


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"code": 401, "msg": "apikey不存在或已失效"}, AuthError),
        ({"code": 403, "msg": "无权访问"}, AuthError),
        ({"code": 400, "msg": "key错误"}, AuthError),
        ({"code": 402, "msg": "账户余额不足"}, QuotaExceeded),
        ({"code": 400, "msg": "余额不足，请充值"}, QuotaExceeded),
        ({"code": 429, "msg": "今日请求次数已达上限(10000次)"}, QuotaExceeded),
        ({"code": 429, "msg": "请求频率超限，免费用户限制1秒1次"}, RateLimited),
        ({"code": 429, "msg": "请求过于频繁(每日10000次,每秒1次)"}, RateLimited),
        ({"code": 0, "msg": "请求过于频繁"}, RateLimited),
        ({"code": 400, "msg": "params参数错误"}, BadRequest),
        ({"code": 400, "msg": "提示词包含违规敏感内容"}, ContentRejected),
        ({"code": 500, "msg": "服务器内部错误"}, Unavailable),
        ({"code": -1, "msg": "系统维护中"}, Unavailable),
        ({"code": "abc"}, BadRequest),
        ({"msg": "no code"}, MalformedResponse),
    ],
)
def test_body_codes(body: dict[str, Any], error: type[ProviderError]) -> None:
    with pytest.raises(error):
        envelope.checked_data(body, ai.ASSUMED)


def test_rate_limited_carries_retry_after() -> None:
    exc = envelope.error_for_body({"code": 429, "msg": "请求频率超限"}, ai.ASSUMED)
    assert isinstance(exc, RateLimited) and exc.retry_after == 1.0


BEIJING = timezone(timedelta(hours=8))


@pytest.mark.parametrize(
    ("now", "seconds"),
    [
        (datetime(2024, 5, 1, 15, 59, 0, tzinfo=UTC), 60),  # 23:59 in Beijing
        (datetime(2024, 5, 1, 16, 0, 0, tzinfo=UTC), 86_400),  # midnight: the next one
        (datetime(2024, 5, 1, 16, 0, 1, tzinfo=UTC), 86_399),
        (datetime(2024, 5, 1, 0, 0, 0, tzinfo=UTC), 16 * 3600),  # 08:00 in Beijing
        (datetime(2024, 5, 1, 0, 0, 0), 16 * 3600),  # naive is UTC
        (datetime(2024, 5, 1, 22, 30, 0, tzinfo=BEIJING), 5400),
        (datetime(2024, 12, 31, 15, 0, 0, tzinfo=UTC), 3600),  # 23:00, the year turns
    ],
)
def test_seconds_until_beijing_midnight(now: datetime, seconds: float) -> None:
    assert envelope.seconds_until_daily_reset(now, 8) == seconds


def test_the_daily_limit_rests_the_vendor_until_beijing_midnight() -> None:
    body = fixture("aichatapi", "daily_limit")
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)  # 20:00 in Beijing
    exc = envelope.classify(429, body["msg"], ai.ASSUMED, now=now)
    assert isinstance(exc, QuotaExceeded) and exc.retry_after == 4 * 3600
    # Out of credit is not a daily matter: no time to rest until.
    assert envelope.classify(402, "账户余额不足", ai.ASSUMED, now=now).retry_after is None
    # Through the envelope, the clock is the real one.
    live = envelope.error_for_body(body, ai.ASSUMED)
    assert isinstance(live, QuotaExceeded) and 0 < (live.retry_after or 0) <= 86_400


@pytest.mark.parametrize("code", [200, "200"])
def test_success_codes(code: Any) -> None:
    assert ai.parse_submit({"code": code, "msg": "ok", "data": {"task_id": 382243}}) == "382243"


@pytest.mark.parametrize(
    "body",
    [{"code": 200, "data": None}, {"code": 200, "data": {}},
     {"code": 200, "data": {"task_id": ""}}],
)
def test_submit_answer_without_task_id_is_malformed(body: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponse):
        ai.parse_submit(body)


@pytest.mark.parametrize(
    "body",
    [{"code": 404, "msg": "任务不存在", "data": None},
     {"code": 400, "msg": "task not found"},
     {"code": 200, "msg": "success", "data": None}],
)
def test_unknown_task_is_job_not_found(body: dict[str, Any]) -> None:
    with pytest.raises(JobNotFound):
        ai.query_data(body)


@pytest.mark.parametrize(
    "body", [{"code": 401, "msg": "apikey不存在"}, {"code": 200, "data": ["not", "a", "dict"]}])
def test_query_errors_that_are_not_an_unknown_task(body: dict[str, Any]) -> None:
    with pytest.raises((AuthError, MalformedResponse)):
        ai.query_data(body)


@pytest.mark.parametrize(
    ("status", "headers", "body", "error"),
    [
        (500, {}, None, Unavailable),
        (502, {}, None, Unavailable),
        (503, {"retry-after": "9"}, None, Unavailable),
        (404, {}, None, Unavailable),  # a wrong URL, not an unknown task
        (405, {}, None, Unavailable),
        (401, {}, None, AuthError),
        (403, {}, {"code": 402, "msg": "余额不足"}, QuotaExceeded),
        (402, {}, None, QuotaExceeded),
        (429, {"retry-after": "7"}, None, RateLimited),
        (400, {}, {"code": 400, "msg": "提示词包含敏感词"}, ContentRejected),
        (400, {}, None, BadRequest),
        (200, {}, None, None),
    ],
)
def test_http_errors(status: int, headers: dict[str, str], body: dict[str, Any] | None,
                     error: type[ProviderError] | None) -> None:
    response = httpx.Response(status, json=body, headers=headers)
    exc = envelope.error_for_status(response, ai.ASSUMED)
    assert (type(exc) if exc else None) is error
    if headers.get("retry-after") and exc is not None:
        assert exc.retry_after == float(headers["retry-after"])


@pytest.mark.parametrize("job_id", ["", "task", "task:", "uid:123", "382243", "sd:1"])
def test_foreign_job_ids_are_not_found(job_id: str) -> None:
    with pytest.raises(JobNotFound):
        ai.split_job_id(job_id)


def test_job_id_round_trip_and_query_body() -> None:
    assert ai.split_job_id(ai.make_job_id(382243)) == "382243"
    assert ai.query_body("382243") == {"task_id": 382243}
    assert ai.query_body("a-1") == {"task_id": "a-1"}


# =========================================================================== #
# The adapter over httpx.MockTransport
# =========================================================================== #


SUBMITTED = json_response(ok({"task_id": 382243}))


async def test_submit_request_shape() -> None:
    recorder = Recorder(SUBMITTED)
    image = input_image(png(120, 80, fmt="JPEG"))
    async with mocked(recorder) as provider:
        submitted = await provider.submit(spec(images=(image,), n=3, seed=7))
    request = recorder.requests[0]
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/api/image2image"  # no ?key=, no double slash
    assert request.headers["apikey"] == API_KEY
    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    parts = parse_multipart(request.content, content_type)
    assert set(parts) == {"image", "params"}
    assert parts["image"].filename == "image.jpg"
    assert parts["image"].content_type == "image/jpeg"
    assert parts["image"].data == image.data
    assert parts["params"].filename is None and parts["params"].content_type is None
    params = json.loads(parts["params"].data.decode("utf-8"))
    assert params["number"] == 3 and params["seed"] == 7 and params["size_id"] == "3:2"
    assert params["prompt"] == PROMPT
    assert API_KEY not in str(request.url) and API_KEY.encode() not in request.content
    assert submitted.job_id == "task:382243" and submitted.eta_seconds
    assert submitted.state is None


async def test_variation_is_the_same_call() -> None:
    recorder = Recorder(SUBMITTED)
    async with mocked(recorder) as provider:
        submitted = await provider.submit(spec(Capability.VARIATION))
    assert recorder.requests[0].url.path == "/api/image2image"
    assert submitted.job_id == "task:382243"


async def test_query_request_shape() -> None:
    recorder = Recorder(json_response(fixture("aichatapi", "query_fetching")))
    async with mocked(recorder) as provider:
        state = await provider.poll("task:382243")
    request = recorder.requests[0]
    assert str(request.url) == f"{QUERY}/api/v1/draw/query"  # the other host
    assert request.headers["apikey"] == API_KEY
    assert request.headers["content-type"] == "application/json"
    assert recorder.body() == {"task_id": 382243}
    assert state.status is JobStatus.RUNNING and state.progress == pytest.approx(0.95)


@pytest.mark.parametrize(
    ("capability", "images"),
    [
        (Capability.TXT2IMG, ()),
        (Capability.UPSCALE, (input_image(),)),
        (Capability.IMG2IMG, ()),
        (Capability.VARIATION, ()),
    ],
)
async def test_unservable_specs_fail_before_any_request(
    capability: Capability, images: tuple[InputImage, ...]
) -> None:
    recorder = Recorder(SUBMITTED)
    async with mocked(recorder) as provider:
        with pytest.raises(BadRequest):
            await provider.submit(spec(capability, images=images))
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("query_queued", JobStatus.QUEUED),
        ("query_fetching", JobStatus.RUNNING),
        ("query_fetching_too_long", JobStatus.FAILED),
        ("query_done", JobStatus.SUCCEEDED),
        ("query_failed", JobStatus.FAILED),
    ],
)
async def test_poll_every_state(name: str, status: JobStatus) -> None:
    async with mocked(Recorder(json_response(fixture("aichatapi", name)))) as provider:
        assert (await provider.poll("task:382243")).status is status


async def test_poll_unknown_and_foreign_ids() -> None:
    recorder = Recorder(json_response({"code": 404, "msg": "任务不存在", "data": None}))
    async with mocked(recorder) as provider:
        with pytest.raises(JobNotFound):
            await provider.poll("task:1")
        with pytest.raises(JobNotFound):
            await provider.poll("uid:abc")
        # The vendor picks the ids: nothing to look up after a crash.
        assert provider.job_id_for(spec()) is None
        assert await provider.find_submitted(spec()) is None
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (json_response({"code": 401, "msg": "apikey不存在或已失效", "data": None}), AuthError),
        (json_response({"code": 402, "msg": "账户余额不足", "data": None}), QuotaExceeded),
        (json_response({"code": 429, "msg": "请求频率超限，免费用户限制1秒1次"}), RateLimited),
        (json_response(fixture("aichatapi", "daily_limit")), QuotaExceeded),
        (json_response({"code": 400, "msg": "提示词包含违规敏感内容"}), ContentRejected),
        (json_response({"code": 400, "msg": "params参数错误"}), BadRequest),
        (json_response({"code": 500, "msg": "服务器错误"}), Unavailable),
        (httpx.Response(500, text="Internal Server Error"), Unavailable),
        (httpx.Response(502, text="<html>bad gateway</html>"), Unavailable),
        (httpx.Response(429, headers={"Retry-After": "3"}), RateLimited),
        (httpx.Response(401, text="Unauthorized"), AuthError),
        (httpx.Response(200, text="<html>oops</html>"), MalformedResponse),
        (httpx.Response(200, json=["not", "an", "object"]), MalformedResponse),
        (httpx.ReadTimeout("read timed out"), VendorTimeout),
        (httpx.ConnectTimeout("connect timed out"), VendorTimeout),
        (httpx.ConnectError(f"cannot reach {BASE}/api/image2image?key={API_KEY}"), Unavailable),
        (httpx.RemoteProtocolError("peer closed"), Unavailable),
    ],
)
async def test_errors_are_mapped_and_leak_nothing(
    answer: httpx.Response | Exception, error: type[ProviderError],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="providers")
    async with mocked(Recorder(answer)) as provider:
        for call in (provider.submit(spec()), provider.poll("task:5")):
            with pytest.raises(error) as info:
                await call
            text = f"{info.value} {info.value.vendor_message}"
            assert API_KEY not in text and "aichatapi.example.test" not in text
            assert not isinstance(info.value.__cause__, httpx.HTTPError)
    assert API_KEY not in caplog.text and "aichatapi.example.test" not in caplog.text
    if isinstance(answer, httpx.Response):
        assert caplog.records, "the vendor's words are logged"


async def test_http_retry_after_is_kept() -> None:
    async with mocked(Recorder(httpx.Response(429, headers={"Retry-After": "3"}))) as p:
        with pytest.raises(RateLimited) as info:
            await p.poll("task:5")
    assert info.value.retry_after == 3.0 and info.value.transient


async def test_daily_limit_keeps_its_rest_through_the_boundary() -> None:
    async with mocked(Recorder(json_response(fixture("aichatapi", "daily_limit")))) as p:
        with pytest.raises(QuotaExceeded) as info:
            await p.submit(spec())
    assert 0 < (info.value.retry_after or 0) <= 86_400


async def test_echoed_key_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="providers")
    answer = json_response({"code": 401, "msg": f"apikey {API_KEY} 不存在"})
    async with mocked(Recorder(answer)) as provider:
        with pytest.raises(AuthError) as info:
            await provider.submit(spec())
    assert API_KEY not in info.value.vendor_message and "***" in info.value.vendor_message
    assert API_KEY not in caplog.text


def settings_ns(key: str | None, qps: float = 1.0) -> SimpleNamespace:
    return SimpleNamespace(
        aichatapi_api_key=SecretStr(key) if key is not None else None,
        aichatapi_base_url=BASE + "/",
        aichatapi_query_url=QUERY,
        aichatapi_qps=qps,
    )


async def test_from_settings() -> None:
    async with httpx.AsyncClient() as client:
        assert ai.Aichatapi.from_settings(settings_ns(None), client) is None
        assert ai.Aichatapi.from_settings(settings_ns("  "), client) is None
        provider = ai.Aichatapi.from_settings(settings_ns(API_KEY), client)
    assert provider is not None and provider.client is client
    assert provider.base_url == BASE and provider.query_url == QUERY
    assert API_KEY not in repr(provider.auth) and API_KEY not in repr(provider)


@pytest.mark.parametrize(("qps", "interval"), [(1, 1.1), (5, 0.22), (0.5, 2.2)])
async def test_pace_follows_aichatapi_qps(qps: float, interval: float) -> None:
    """AICHATAPI_QPS: a little over 1/qps between calls (arrivals are counted)."""
    async with httpx.AsyncClient() as client:
        provider = ai.Aichatapi.from_settings(settings_ns(API_KEY, qps), client)
    assert provider is not None
    assert provider.min_request_interval == pytest.approx(interval)


async def test_the_real_settings_carry_the_pace() -> None:
    settings = Settings(telegram_bot_token="1:token", aichatapi_api_key=API_KEY,
                        aichatapi_qps=5, _env_file=None)
    async with httpx.AsyncClient() as client:
        provider = ai.Aichatapi.from_settings(settings, client)
    assert provider is not None and provider.min_request_interval == pytest.approx(0.22)
    assert provider.query_url == "https://open.aichatapi.com"


def test_class_attributes() -> None:
    p = ai.Aichatapi
    assert p.id == "aichatapi"
    assert p.capabilities == {Capability.IMG2IMG, Capability.VARIATION}
    assert p.needs_public_url == frozenset() and p.image_input == "bytes"
    assert not p.supports_callbacks
    assert p.min_request_interval == pytest.approx(1.1) and p.daily_request_limit == 10_000
    assert p.max_images == 4


# =========================================================================== #
# End to end against FakeAichatapi over loopback HTTP
# =========================================================================== #

# No rate limit by default; the tests about it switch it on.
loopback_stack, env = loopback_fixture(
    lambda: FakeAichatapi(queue_seconds=0.02, run_seconds=0.04, rate_interval=0.0), ai.Aichatapi)


def provider_for(env: VendorStack, key: str = "test-aichat-key", timeout: float = 2.0,
                 qps: float = 1.0) -> ai.Aichatapi:
    return make_provider(ai.Aichatapi, env.client, env.base_url, timeout=timeout,
                         aichatapi_api_key=key, aichatapi_query_url=env.base_url,
                         aichatapi_qps=qps)


@loopback
async def test_fake_img2img_end_to_end(env: VendorStack) -> None:
    provider = provider_for(env)
    submitted = await provider.submit(spec(images=(input_image(png(300, 200, fmt="JPEG")),), n=2))
    states = await poll_until_done(provider, submitted.job_id)
    assert [s.status for s in states][0] is JobStatus.QUEUED
    assert {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED} <= {s.status for s in states}
    assert states[0].queue_position == 1 and states[0].eta_seconds
    running = [s for s in states if s.status is JobStatus.RUNNING]
    assert all(s.progress is not None and 0 <= s.progress < 1 for s in running)
    final = states[-1]
    assert len(final.images) == 2
    for result in final.images:
        assert result.url and (await env.download(result.url)).size == (512, 344)  # 3:2 kept
    sent = env.fake.api_requests("image2image")[0].body
    assert json.loads(sent["params"])["size_id"] == "3:2"
    assert sent["image"]["content_type"] == "image/jpeg"


@loopback
async def test_fake_refuses_a_second_request_within_a_second(env: VendorStack) -> None:
    env.fake.rate_interval = 1.0
    provider = provider_for(env)
    before = len(env.fake.jobs)
    first = await provider.submit(spec(business_id="rl-1"))
    with pytest.raises(RateLimited) as info:
        await provider.submit(spec(business_id="rl-2"))
    assert info.value.retry_after == 1.0
    assert env.fake.refused == ["rate_limited"]
    assert len(env.fake.jobs) == before + 1  # the second one was not taken
    # A query counts too; a second later (the fake's clock) it is served.
    with pytest.raises(RateLimited):
        await provider.poll(first.job_id)
    env.fake.advance(1.0)
    assert isinstance(await provider.poll(first.job_id), JobState)


@loopback
async def test_the_gate_keeps_the_adapter_within_the_limit(env: VendorStack) -> None:
    # The real 1 s, shortened. The gate spaces *sends*; the vendor measures
    # *arrivals*, so network jitter needs a margin between the two.
    env.fake.rate_interval = 0.1
    provider = provider_for(env, qps=1.1 / 0.15)  # 0.15 s apart, read by VendorGate
    assert provider.min_request_interval == pytest.approx(0.15)
    gate = VendorGate()

    async def submit() -> None:
        async with gate.slot(provider):
            await provider.submit(spec())

    await asyncio.gather(submit(), submit())
    assert env.fake.refused == [] and len(env.fake.api_requests("image2image")) == 2


@loopback
async def test_fake_daily_limit(env: VendorStack) -> None:
    env.fake.daily_limit = 1
    provider = provider_for(env)
    await provider.submit(spec())
    with pytest.raises(QuotaExceeded) as info:
        await provider.submit(spec())
    assert env.fake.refused == ["daily_limit"]
    assert 0 < (info.value.retry_after or 0) <= 86_400  # rests until Beijing midnight


@loopback
async def test_fake_result_urls_expire(env: VendorStack) -> None:
    env.fake.url_ttl = 60
    provider = provider_for(env)
    submitted = await provider.submit(spec())
    env.fake.finish(submitted.job_id)
    url = (await provider.poll(submitted.job_id)).images[0].url
    assert (await env.client.get(url)).status_code == 200
    env.fake.advance(61)
    assert (await env.client.get(url)).status_code in (403, 404)


@loopback
async def test_fake_failed_task(env: VendorStack) -> None:
    provider = provider_for(env)
    env.fake.fail_job_next("生成失败：显存不足")
    failed = await provider.submit(spec())
    env.fake.fail_job_next("图片包含违规内容")
    rejected = await provider.submit(spec())
    for job_id in (failed.job_id, rejected.job_id):
        env.fake.finish(job_id)
    state = await provider.poll(failed.job_id)
    assert state.status is JobStatus.FAILED and state.error_kind == ProviderError.kind
    assert state.error_detail == "生成失败：显存不足"
    state = await provider.poll(rejected.job_id)
    assert state.status is JobStatus.FAILED and state.error_kind == ContentRejected.kind


@loopback
async def test_fake_unknown_task(env: VendorStack) -> None:
    with pytest.raises(JobNotFound):
        await provider_for(env).poll("task:1")


@loopback
async def test_fake_rejects_a_wrong_key(env: VendorStack) -> None:
    before = len(env.fake.jobs)
    with pytest.raises(AuthError):
        await provider_for(env, key="wrong-key").submit(spec())
    assert len(env.fake.jobs) == before and env.fake.requests_today == 0


@loopback
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("http500", Unavailable),
        ("malformed", MalformedResponse),
        ("auth", AuthError),
        ("quota", QuotaExceeded),
        ("rate_limited", RateLimited),
        ("sensitive", ContentRejected),
        ("bad_request", BadRequest),
        ("timeout", VendorTimeout),
    ],
)
async def test_fake_faults(env: VendorStack, fault: str, error: type[ProviderError]) -> None:
    env.fake.timeout_seconds = 0.1
    provider = provider_for(env, timeout=0.03)
    env.fake.fail_next(fault, path="image2image")
    before = len(env.fake.jobs)
    with pytest.raises(error):
        await provider.submit(spec())
    if fault == "timeout":  # the vendor took the task though we gave up waiting
        await eventually(lambda: len(env.fake.jobs) == before + 1)
    else:  # a one-off: the same submit goes through now
        assert (await provider.submit(spec())).job_id.startswith("task:")


@loopback
async def test_fake_faults_on_queries_only(env: VendorStack) -> None:
    provider = provider_for(env)
    env.fake.fail_next("http500", times=2, path="draw/query")
    submitted = await provider.submit(spec())
    for _ in range(2):
        with pytest.raises(Unavailable):
            await provider.poll(submitted.job_id)
    assert isinstance(await provider.poll(submitted.job_id), JobState)


@loopback
@pytest.mark.parametrize(
    ("files", "data", "problem"),
    [
        ({"image": ("a.png", png(), "image/png")}, {}, "params"),
        ({"image": ("a.png", png(), "image/png"),
          "params": ("p.json", json.dumps(ai.build_params(GenerationParams())),
                     "application/json")},
         {}, "params"),
        ({"image": ("a.png", b"not a picture", "image/png")},
         {"params": json.dumps(ai.build_params(GenerationParams()))}, "image"),
        ({}, {"params": json.dumps(ai.build_params(GenerationParams()))}, "image"),
        ({"image": ("a.png", png(), "image/png")},
         {"params": json.dumps({**ai.build_params(GenerationParams()), "number": "4"})}, "number"),
        ({"image": ("a.png", png(), "image/png")},
         {"params": json.dumps({**ai.build_params(GenerationParams()), "size_id": "5:1"})},
         "size_id"),
        ({"image": ("a.png", png(), "image/png")}, {"params": "{not json"}, "params"),
    ],
)
async def test_fake_is_as_strict_as_the_document(
    env: VendorStack, files: dict[str, Any], data: dict[str, str], problem: str
) -> None:
    before = len(env.fake.jobs)
    response = await env.client.post(
        f"{env.base_url}/api/image2image", headers={"apikey": "test-aichat-key"},
        files=files or {"other": ("x.txt", b"x", "text/plain")}, data=data,
    )
    body = response.json()
    assert response.status_code == 200 and body["code"] == 400 and problem in body["msg"]
    assert len(env.fake.jobs) == before


@loopback
async def test_fake_sees_the_key_only_in_its_header(env: VendorStack) -> None:
    provider = provider_for(env)
    submitted = await provider.submit(spec())
    await poll_until_done(provider, submitted.job_id)
    requests = env.fake.api_requests()
    assert {r.path for r in requests} == {"/api/image2image", "/api/v1/draw/query"}
    for request in requests:
        assert request.headers["apikey"] == "test-aichat-key"
        other = {k: v for k, v in request.headers.items() if k != "apikey"}
        assert "test-aichat-key" not in json.dumps(other) + request.query + request.path
        assert b"test-aichat-key" not in request.raw
