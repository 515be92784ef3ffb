"""aichatapi adapter: pure transforms, the HTTP boundary (httpx.MockTransport),
and end to end against FakeAichatapi over loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import SecretStr

from bot.engine.ratelimit import VendorGate
from providers import aichatapi as ai
from providers.errors import (
    AuthError,
    BadRequest,
    ContentRejected,
    JobNotFound,
    MalformedResponse,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    Unavailable,
    VendorTimeout,
)
from providers.types import (
    Capability,
    GenerationParams,
    InputImage,
    JobSpec,
    JobState,
    JobStatus,
)
from tests.fakes.aichatapi import FakeAichatapi, parse_multipart
from tests.fakes.server import serve

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "aichatapi"
API_KEY = "aichat-key-SECRET-1234"
BASE = "https://aichatapi.example.test"
QUERY = "https://open.aichatapi.example.test"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))


def png(width: int = 64, height: int = 64, color: tuple[int, int, int] = (200, 30, 30),
        fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=fmt)
    return buffer.getvalue()


def photo(width: int = 64, height: int = 64, mime: str = "image/png") -> InputImage:
    fmt = "JPEG" if mime == "image/jpeg" else "PNG"
    return InputImage(data=png(width, height, fmt=fmt), mime=mime)


def make_spec(
    capability: Capability = Capability.IMG2IMG,
    *,
    images: tuple[InputImage, ...] | None = None,
    business_id: str = "task-0001",
    **params: Any,
) -> JobSpec:
    params.setdefault("prompt", "水彩风格 watercolor")
    return JobSpec(
        capability=capability,
        params=GenerationParams(**params),
        images=(photo(),) if images is None else images,
        business_id=business_id,
    )


def ok(data: Any) -> dict[str, Any]:
    return {"code": 200, "msg": "success", "data": data}


def task(state: Any, **fields: Any) -> dict[str, Any]:
    data = {"task_id": 382243, "state": state, "state_name": "", "queue": 0, "wait_for": 0,
            "images": [], "error": None}
    data.update(fields)
    return data


# =========================================================================== #
# Pure transforms: the request
# =========================================================================== #


def test_default_params_are_the_seed_example() -> None:
    assert ai.build_params(GenerationParams(n=4)) == fixture("params_example")


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
    assert built["style_id"] == ai.ASSUMED.default_style_id


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
    ("params", "image", "size_id"),
    [
        (GenerationParams(aspect_ratio="3:4"), None, "3:4"),
        (GenerationParams(aspect_ratio="21:9"), None, "16:9"),
        (GenerationParams(aspect_ratio="5:4"), None, "4:3"),
        (GenerationParams(width=1000, height=1000), None, "1:1"),
        (GenerationParams(width=600, height=900), None, "2:3"),
        (GenerationParams(), png(1200, 800), "3:2"),
        (GenerationParams(), png(720, 1280), "9:16"),
        (GenerationParams(aspect_ratio="1:1"), png(64, 64), "1:1"),
        (GenerationParams(aspect_ratio="4:3"), png(720, 1280), "4:3"),
        (GenerationParams(), b"not an image", "1:1"),
    ],
)
def test_size_id(params: GenerationParams, image: bytes | None, size_id: str) -> None:
    assert ai.size_id_for(params, image) == size_id


@settings(max_examples=200, deadline=None)
@given(w=st.integers(1, 5000), h=st.integers(1, 5000))
def test_size_id_is_always_supported(w: int, h: int) -> None:
    assert ai.size_id_for(GenerationParams(width=w, height=h), None) in ai.ASSUMED.size_ids


def test_params_part_is_a_utf8_json_string() -> None:
    data, files = ai.build_multipart(GenerationParams(prompt="一只猫"), png(), "image/jpeg")
    assert isinstance(data["params"], str)
    assert "一只猫" in data["params"]  # not \u escapes
    assert json.loads(data["params"])["prompt"] == "一只猫"
    assert files["image"][0] == "image.jpg" and files["image"][2] == "image/jpeg"


@pytest.mark.parametrize(
    ("mime", "name"),
    [("image/png", "image.png"), ("image/jpeg", "image.jpg"), ("image/webp", "image.webp"),
     ("application/octet-stream", "image.png")],
)
def test_upload_filename(mime: str, name: str) -> None:
    assert ai.upload_filename(mime) == name


# =========================================================================== #
# Pure transforms: responses
# =========================================================================== #


def test_queued_state_0() -> None:
    state = ai.parse_query(task("0", queue=3, wait_for=42, state_name="排队中"))
    assert state.status is JobStatus.QUEUED
    assert state.queue_position == 3 and state.eta_seconds == 42


@pytest.mark.parametrize(("state_value", "wait", "progress"),
                         [("1", 30, 0.0), ("1", 15, 0.5), (1, 3, 0.9), ("1", 0, 0.99),
                          ("1", 90, 0.0), ("1", None, None)])
def test_running_state_1_estimates_progress_from_wait_for(
    state_value: Any, wait: Any, progress: float | None
) -> None:
    state = ai.parse_query(task(state_value, wait_for=wait))
    assert state.status is JobStatus.RUNNING
    assert state.progress == (pytest.approx(progress) if progress is not None else None)
    assert state.eta_seconds == wait


def test_done_state_2_gives_the_images() -> None:
    urls = ["https://cdn.aichatapi.test/a.png", "https://cdn.aichatapi.test/b.png"]
    state = ai.parse_query(task("2", images=urls))
    assert state.status is JobStatus.SUCCEEDED
    assert [image.url for image in state.images] == urls


def test_done_images_may_be_objects() -> None:
    state = ai.parse_query(task(2, images=[{"url": "https://x/1.png"}, "https://x/2.png"]))
    assert [image.url for image in state.images] == ["https://x/1.png", "https://x/2.png"]


def test_done_without_images_fails() -> None:
    state = ai.parse_query(task("2", images=[]))
    assert state.status is JobStatus.FAILED and state.error_kind == ProviderError.kind


@pytest.mark.parametrize(
    ("error", "kind"),
    [("生成失败", ProviderError.kind), ("图片包含违规内容", ContentRejected.kind),
     (None, ProviderError.kind)],
)
def test_failed_state_3(error: str | None, kind: str) -> None:
    state = ai.parse_query(task("3", error=error))
    assert state.status is JobStatus.FAILED and state.error_kind == kind
    assert state.error_detail


def test_unknown_state_counts_as_running() -> None:
    assert ai.parse_query(task("7")).status is JobStatus.RUNNING


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8,
)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["state", "state_name", "queue", "wait_for", "images", "error", "task_id"]),
    JSON_VALUES | st.sampled_from(["0", "1", "2", "3"]),
))
def test_any_query_data_gives_a_state(data: dict[str, Any]) -> None:
    assert isinstance(ai.parse_query(data), JobState)


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
        ai.checked_data(body)


def test_rate_limited_carries_retry_after() -> None:
    exc = ai.error_for_body({"code": 429, "msg": "请求频率超限"})
    assert isinstance(exc, RateLimited) and exc.retry_after == 1.0


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
    exc = ai.error_for_http(status, headers, body)
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


class Recorder:
    """A MockTransport handler that answers from a queue and records requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@contextlib.asynccontextmanager
async def mock_provider(recorder: Recorder, timeout: float = 2.0) -> AsyncIterator[ai.Aichatapi]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        yield ai.Aichatapi(client, auth=ai.AichatapiAuth(API_KEY), base_url=BASE + "/",
                           query_url=QUERY + "/", timeout=httpx.Timeout(timeout))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


SUBMITTED = json_response(ok({"task_id": 382243}))


async def test_submit_request_shape() -> None:
    recorder = Recorder(SUBMITTED)
    image = photo(120, 80, mime="image/jpeg")
    async with mock_provider(recorder) as provider:
        submitted = await provider.submit(make_spec(images=(image,), n=3, seed=7))
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
    assert params["prompt"] == "水彩风格 watercolor"
    assert API_KEY not in str(request.url) and API_KEY.encode() not in request.content
    assert submitted.job_id == "task:382243" and submitted.eta_seconds
    assert submitted.state is None


async def test_variation_is_the_same_call() -> None:
    recorder = Recorder(SUBMITTED)
    async with mock_provider(recorder) as provider:
        submitted = await provider.submit(make_spec(Capability.VARIATION))
    assert recorder.requests[0].url.path == "/api/image2image"
    assert submitted.job_id == "task:382243"


async def test_query_request_shape() -> None:
    recorder = Recorder(json_response(ok(task("1", wait_for=10))))
    async with mock_provider(recorder) as provider:
        state = await provider.poll("task:382243")
    request = recorder.requests[0]
    assert str(request.url) == f"{QUERY}/api/v1/draw/query"  # the other host
    assert request.headers["apikey"] == API_KEY
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"task_id": 382243}
    assert state.status is JobStatus.RUNNING


@pytest.mark.parametrize(
    ("capability", "images"),
    [
        (Capability.TXT2IMG, ()),
        (Capability.UPSCALE, (photo(),)),
        (Capability.IMG2IMG, ()),
        (Capability.VARIATION, ()),
        (Capability.IMG2IMG, (InputImage(data=b"GIF89a-not-really", mime="image/gif"),)),
    ],
)
async def test_unservable_specs_fail_before_any_request(
    capability: Capability, images: tuple[InputImage, ...]
) -> None:
    recorder = Recorder(SUBMITTED)
    async with mock_provider(recorder) as provider:
        with pytest.raises(BadRequest):
            await provider.submit(make_spec(capability, images=images))
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (task("0", queue=2, wait_for=40), JobStatus.QUEUED),
        (task("1", wait_for=12), JobStatus.RUNNING),
        (task("2", images=["https://x/1.png"]), JobStatus.SUCCEEDED),
        (task("3", error="失败"), JobStatus.FAILED),
    ],
)
async def test_poll_every_state(data: dict[str, Any], status: JobStatus) -> None:
    async with mock_provider(Recorder(json_response(ok(data)))) as provider:
        assert (await provider.poll("task:382243")).status is status


async def test_poll_unknown_and_foreign_ids() -> None:
    recorder = Recorder(json_response({"code": 404, "msg": "任务不存在", "data": None}))
    async with mock_provider(recorder) as provider:
        with pytest.raises(JobNotFound):
            await provider.poll("task:1")
        with pytest.raises(JobNotFound):
            await provider.poll("uid:abc")
        # The vendor picks the ids: nothing to look up after a crash.
        assert provider.job_id_for(make_spec()) is None
        assert await provider.find_submitted(make_spec()) is None
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (json_response({"code": 401, "msg": "apikey不存在或已失效", "data": None}), AuthError),
        (json_response({"code": 402, "msg": "账户余额不足", "data": None}), QuotaExceeded),
        (json_response({"code": 429, "msg": "请求频率超限，免费用户限制1秒1次"}), RateLimited),
        (json_response({"code": 429, "msg": "今日请求次数已达上限(10000次)"}), QuotaExceeded),
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
    caplog.set_level(logging.DEBUG, logger="providers.aichatapi")
    async with mock_provider(Recorder(answer)) as provider:
        for call in (provider.submit(make_spec()), provider.poll("task:5")):
            with pytest.raises(error) as info:
                await call
            text = f"{info.value} {info.value.vendor_message}"
            assert API_KEY not in text and "aichatapi.example.test" not in text
            assert not isinstance(info.value.__cause__, httpx.HTTPError)
    assert API_KEY not in caplog.text and "aichatapi.example.test" not in caplog.text
    if isinstance(answer, httpx.Response):
        assert caplog.records, "the vendor's words are logged"


async def test_http_retry_after_is_kept() -> None:
    async with mock_provider(Recorder(httpx.Response(429, headers={"Retry-After": "3"}))) as p:
        with pytest.raises(RateLimited) as info:
            await p.poll("task:5")
    assert info.value.retry_after == 3.0 and info.value.transient


async def test_echoed_key_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="providers.aichatapi")
    answer = json_response({"code": 401, "msg": f"apikey {API_KEY} 不存在"})
    async with mock_provider(Recorder(answer)) as provider:
        with pytest.raises(AuthError) as info:
            await provider.submit(make_spec())
    assert API_KEY not in info.value.vendor_message and "***" in info.value.vendor_message
    assert API_KEY not in caplog.text


def settings_ns(key: str | None) -> SimpleNamespace:
    return SimpleNamespace(
        aichatapi_api_key=SecretStr(key) if key is not None else None,
        aichatapi_base_url=BASE + "/",
        aichatapi_query_url=QUERY,
    )


async def test_from_settings() -> None:
    async with httpx.AsyncClient() as client:
        assert ai.Aichatapi.from_settings(settings_ns(None), client) is None
        assert ai.Aichatapi.from_settings(settings_ns("  "), client) is None
        provider = ai.Aichatapi.from_settings(settings_ns(API_KEY), client)
    assert provider is not None and provider.client is client
    assert provider.base_url == BASE and provider.query_url == QUERY
    assert API_KEY not in repr(provider.auth)


def test_class_attributes() -> None:
    p = ai.Aichatapi
    assert p.id == "aichatapi"
    assert p.capabilities == {Capability.IMG2IMG, Capability.VARIATION}
    assert p.needs_public_url == frozenset() and p.image_input == "bytes"
    assert not p.supports_callbacks
    assert 1.0 < p.min_request_interval <= 1.2 and p.daily_request_limit == 10_000
    assert p.max_images == 4


# =========================================================================== #
# End to end against FakeAichatapi over loopback HTTP
# =========================================================================== #

# One fake serves every test below (a loopback server costs ~0.1 s to stop);
# FakeAichatapi.reset() restores its options between tests.

loopback = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Loopback:
    fake: FakeAichatapi
    base_url: str
    client: httpx.AsyncClient

    def provider(self, key: str = "test-aichat-key", timeout: float = 2.0) -> ai.Aichatapi:
        return ai.Aichatapi(self.client, auth=ai.AichatapiAuth(key), base_url=self.base_url,
                            query_url=self.base_url, timeout=httpx.Timeout(timeout))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def loopback_stack() -> AsyncIterator[Loopback]:
    # No rate limit by default; the tests about it switch it on.
    fake = FakeAichatapi(queue_seconds=0.02, run_seconds=0.04, rate_interval=0.0)
    try:
        async with serve(fake.app) as base_url, httpx.AsyncClient() as client:
            yield Loopback(fake, base_url, client)
    finally:
        await fake.aclose()


@pytest.fixture
def env(loopback_stack: Loopback) -> Loopback:
    loopback_stack.fake.reset()
    return loopback_stack


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.005)


async def poll_until_done(provider: ai.Aichatapi, job_id: str, timeout: float = 3.0
                          ) -> list[JobState]:
    states: list[JobState] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        states.append(await provider.poll(job_id))
        if states[-1].finished:
            return states
        await asyncio.sleep(0.005)
    raise AssertionError(f"not finished: {states[-1] if states else None}")


@loopback
async def test_fake_img2img_end_to_end(env: Loopback) -> None:
    provider = env.provider()
    spec = make_spec(images=(photo(300, 200, mime="image/jpeg"),), n=2)
    submitted = await provider.submit(spec)
    states = await poll_until_done(provider, submitted.job_id)
    assert [s.status for s in states][0] is JobStatus.QUEUED
    assert {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED} <= {s.status for s in states}
    assert states[0].queue_position == 1 and states[0].eta_seconds
    running = [s for s in states if s.status is JobStatus.RUNNING]
    assert all(s.progress is not None and 0 <= s.progress < 1 for s in running)
    final = states[-1]
    assert len(final.images) == 2
    for result in final.images:
        response = await env.client.get(result.url)
        assert response.status_code == 200
        assert Image.open(io.BytesIO(response.content)).size == (512, 344)  # 3:2 kept
    sent = env.fake.api_requests("image2image")[0].body
    assert json.loads(sent["params"])["size_id"] == "3:2"
    assert sent["image"]["content_type"] == "image/jpeg"


@loopback
async def test_fake_refuses_a_second_request_within_a_second(env: Loopback) -> None:
    env.fake.rate_interval = 1.0
    provider = env.provider()
    before = len(env.fake.jobs)
    first = await provider.submit(make_spec(business_id="rl-1"))
    with pytest.raises(RateLimited) as info:
        await provider.submit(make_spec(business_id="rl-2"))
    assert info.value.retry_after == 1.0
    assert env.fake.refused == ["rate_limited"]
    assert len(env.fake.jobs) == before + 1  # the second one was not taken
    # A query counts too; a second later (the fake's clock) it is served.
    with pytest.raises(RateLimited):
        await provider.poll(first.job_id)
    env.fake.advance(1.0)
    assert isinstance(await provider.poll(first.job_id), JobState)


@loopback
async def test_the_gate_keeps_the_adapter_within_the_limit(env: Loopback) -> None:
    # The real 1 s, shortened. The gate spaces *sends*; the vendor measures
    # *arrivals*, so network jitter needs a margin between the two.
    env.fake.rate_interval = 0.1
    provider = env.provider()
    provider.min_request_interval = 0.15  # what VendorGate reads, per instance
    gate = VendorGate()

    async def submit() -> None:
        async with gate.slot(provider):
            await provider.submit(make_spec())

    await asyncio.gather(submit(), submit())
    assert env.fake.refused == [] and len(env.fake.api_requests("image2image")) == 2


@loopback
async def test_fake_daily_limit(env: Loopback) -> None:
    env.fake.daily_limit = 1
    provider = env.provider()
    await provider.submit(make_spec())
    with pytest.raises(QuotaExceeded):
        await provider.submit(make_spec())
    assert env.fake.refused == ["daily_limit"]


@loopback
async def test_fake_result_urls_expire(env: Loopback) -> None:
    env.fake.url_ttl = 60
    provider = env.provider()
    submitted = await provider.submit(make_spec())
    env.fake.finish(submitted.job_id)
    url = (await provider.poll(submitted.job_id)).images[0].url
    assert (await env.client.get(url)).status_code == 200
    env.fake.advance(61)
    assert (await env.client.get(url)).status_code in (403, 404)


@loopback
async def test_fake_failed_task(env: Loopback) -> None:
    provider = env.provider()
    env.fake.fail_job_next("生成失败：显存不足")
    failed = await provider.submit(make_spec())
    env.fake.fail_job_next("图片包含违规内容")
    rejected = await provider.submit(make_spec())
    for job_id in (failed.job_id, rejected.job_id):
        env.fake.finish(job_id)
    state = await provider.poll(failed.job_id)
    assert state.status is JobStatus.FAILED and state.error_kind == ProviderError.kind
    assert state.error_detail == "生成失败：显存不足"
    state = await provider.poll(rejected.job_id)
    assert state.status is JobStatus.FAILED and state.error_kind == ContentRejected.kind


@loopback
async def test_fake_unknown_task(env: Loopback) -> None:
    with pytest.raises(JobNotFound):
        await env.provider().poll("task:1")


@loopback
async def test_fake_rejects_a_wrong_key(env: Loopback) -> None:
    before = len(env.fake.jobs)
    with pytest.raises(AuthError):
        await env.provider(key="wrong-key").submit(make_spec())
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
async def test_fake_faults(env: Loopback, fault: str, error: type[ProviderError]) -> None:
    env.fake.timeout_seconds = 0.1
    provider = env.provider(timeout=0.03)
    env.fake.fail_next(fault, path="image2image")
    before = len(env.fake.jobs)
    with pytest.raises(error):
        await provider.submit(make_spec())
    if fault == "timeout":  # the vendor took the task though we gave up waiting
        await eventually(lambda: len(env.fake.jobs) == before + 1)
    else:  # a one-off: the same submit goes through now
        assert (await provider.submit(make_spec())).job_id.startswith("task:")


@loopback
async def test_fake_faults_on_queries_only(env: Loopback) -> None:
    provider = env.provider()
    env.fake.fail_next("http500", times=2, path="draw/query")
    submitted = await provider.submit(make_spec())
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
    env: Loopback, files: dict[str, Any], data: dict[str, str], problem: str
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
async def test_fake_sees_the_key_only_in_its_header(env: Loopback) -> None:
    provider = env.provider()
    submitted = await provider.submit(make_spec())
    await poll_until_done(provider, submitted.job_id)
    requests = env.fake.api_requests()
    assert {r.path for r in requests} == {"/api/image2image", "/api/v1/draw/query"}
    for request in requests:
        assert request.headers["apikey"] == "test-aichat-key"
        other = {k: v for k, v in request.headers.items() if k != "apikey"}
        assert "test-aichat-key" not in json.dumps(other) + request.query + request.path
        assert b"test-aichat-key" not in request.raw
