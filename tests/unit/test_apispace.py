"""apispace adapter: pure transforms, the HTTP boundary (httpx.MockTransport),
and end to end against FakeApispace over loopback HTTP."""

from __future__ import annotations

import asyncio
import logging
import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from providers import apispace as sp
from providers import code_envelope as envelope
from providers.errors import (AuthError, BadRequest, ContentRejected, JobNotFound,
                              MalformedResponse, ProviderError, QuotaExceeded, RateLimited,
                              Unavailable, VendorTimeout)
from providers.types import Capability, GenerationParams, InputImage, JobState, JobStatus
from providers.types import SourceResult
from tests.fakes.apispace import FakeApispace
from tests.fakes.server import serve
from tests.vendor_kit import (Recorder, VendorStack, eventually, fixture, input_image,
                              json_response, loopback, loopback_fixture, make_provider,
                              make_spec, mock_provider, png, poll_until_done)

TOKEN = "apispace-token-SECRET-1234"
BASE = "https://apispace.example.test"
MEDIA = "https://bot.example.test/media"
UID = "b50fd9dc699b0f69e5dac9d150939c94"


def image(url: str | None = f"{MEDIA}/tok-a") -> InputImage:
    return input_image(url=url)


def spec(capability: Capability = Capability.TXT2IMG, *,
         images: tuple[InputImage, ...] | None = None, **params: Any):
    params.setdefault("prompt", "玫瑰花 roses")
    if images is None:
        images = () if capability is Capability.TXT2IMG else (image(),)
    return make_spec(capability, images=images, **params)


def ok(data: Any) -> dict[str, Any]:
    return {"code": 0, "msg": "success", "data": data}


def status(value: str, **fields: Any) -> dict[str, Any]:
    data = {"uid": UID, "status": value, "pending": 0, "cdn": "", "img_urls": [],
            "safe": True, "reason": ""}
    data.update(fields)
    return data


def mocked(recorder: Recorder, timeout: float = 2.0):
    return mock_provider(sp.Apispace, recorder, BASE + "/", timeout=timeout,
                         apispace_token=TOKEN)


CDN = "https://ailab-huawei-cdn.nolibox.com/aigc/images/d6fa33b93ac84b8fbb233f4be03ba38f.png"
COS = ("https://ailab-1d01.obs.cn-north-4.myhuaweicloud.com/aigc/images/"
       "d6fa33b93ac84b8fbb233f4be03ba38f.png")


# =========================================================================== #
# Pure transforms: request bodies
# =========================================================================== #


def test_txt2img_body_is_the_seed_example() -> None:
    example = fixture("apispace", "txt2img_request_example")
    params = GenerationParams(prompt="玫瑰花", negative_prompt="cropped")
    assert sp.build_txt2img_body(params) == {
        "task": "txt2img.sd", "params": example["params"], "notify_url": "",
    }
    mirrored = sp.Assumptions(mirror_params_top_level=True)
    assert sp.build_txt2img_body(params, a=mirrored) == example


def test_txt2img_body_takes_the_user_params() -> None:
    params = GenerationParams(prompt="p", seed=42, steps=30, cfg=9.0, model="anime",
                              aspect_ratio="16:9")
    body = sp.build_txt2img_body(params, "https://bot/cb/1")
    inner = body["params"]
    assert (inner["seed"], inner["num_steps"], inner["guidance_scale"]) == (42, 30, 9)
    assert inner["model"] == "anime" and (inner["w"], inner["h"]) == (768, 448)
    assert body["notify_url"] == "https://bot/cb/1"


@pytest.mark.parametrize(
    ("params", "size"),
    [
        (GenerationParams(), (512, 512)),
        (GenerationParams(aspect_ratio="16:9"), (768, 448)),
        (GenerationParams(aspect_ratio="9:16"), (448, 768)),
        (GenerationParams(aspect_ratio="3:4"), (512, 704)),
        (GenerationParams(aspect_ratio="2:3"), (512, 768)),
        (GenerationParams(aspect_ratio="21:9"), (768, 320)),
        (GenerationParams(width=1024, height=1024), (768, 768)),
        (GenerationParams(width=500, height=300), (512, 320)),
        (GenerationParams(width=2000, height=1000), (768, 384)),
    ],
)
def test_sizes(params: GenerationParams, size: tuple[int, int]) -> None:
    assert sp.txt2img_size(params) == size


@settings(max_examples=200, deadline=None)
@given(a=st.integers(1, 40), b=st.integers(1, 40), w=st.integers(1, 5000), h=st.integers(1, 5000))
def test_sizes_are_multiples_of_64_within_768(a: int, b: int, w: int, h: int) -> None:
    for params in (GenerationParams(aspect_ratio=f"{a}:{b}"), GenerationParams(width=w, height=h)):
        for side in sp.txt2img_size(params):
            assert side % 64 == 0 and 64 <= side <= 768


def test_img2img_body() -> None:
    body = sp.build_img2img_body(GenerationParams(prompt="p"), "https://m/1")
    assert body == {"task": "img2img.sd",
                    "params": {"model": "anime", "text": "p", "url": "https://m/1"},
                    "notify_url": ""}
    body = sp.build_img2img_body(GenerationParams(prompt="p", strength=0.7), "https://m/1")
    assert body["params"]["fidelity"] == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("model", "style"),
    [(None, "Chinese_style"), ("cute", "Cute_style"), ("JOJO_style", "JOJO_style"),
     ("catear", "CatEar_style"), ("nonsense", "Chinese_style")],
)
def test_anime_body_style_from_model(model: str | None, style: str) -> None:
    body = sp.build_anime_body(GenerationParams(model=model), "https://m/1", "https://cb")
    assert body == {"task": "img2acg",
                    "params": {"url": "https://m/1", "image_url": "https://m/1", "style": style,
                               "fidelity": 0.2},
                    "notify_url": "https://cb"}


def test_anime_body_names_the_input_image_url() -> None:
    """[public] the vendor's img2acg takes `image_url`; `url` stays beside it."""
    example = fixture("apispace", "img2acg_request_example")
    assert sp.build_anime_body(GenerationParams(), example["params"]["url"]) == example


@pytest.mark.parametrize(("strength", "expected"),
                         [(None, 0.2), (0.0, 1.0), (0.25, 0.75), (1.0, 0.0), (40, 0.6)])
def test_fidelity_is_the_inverse_of_strength(strength: float | None, expected: float) -> None:
    assert sp.fidelity(strength, 0.2) == pytest.approx(expected)


def test_upscale_body() -> None:
    assert sp.build_upscale_body("https://m/1") == {
        "task": "img2img.sr", "params": {"url": "https://m/1", "is_anime": False},
        "notify_url": "",
    }


# =========================================================================== #
# Pure transforms: responses, errors, callbacks
# =========================================================================== #


def test_pending_gives_the_queue_position() -> None:
    state = sp.parse_query_data(status("pending", pending=4))
    assert state.status is JobStatus.QUEUED and state.queue_position == 4


@pytest.mark.parametrize(("name", "position"),
                         [("query_pending_top_level", 3), ("query_pending_in_data", 2)])
def test_pending_position_beside_code_or_beside_status(name: str, position: int) -> None:
    state = sp.parse_query(fixture("apispace", name))
    assert state.status is JobStatus.QUEUED and state.queue_position == position


def test_pending_in_data_wins_over_the_top_level() -> None:
    body = {"code": 0, "pending": 9, "data": status("pending", pending=1)}
    assert sp.parse_query(body).queue_position == 1
    del body["data"]["pending"]
    assert sp.parse_query(body).queue_position == 9


def test_working() -> None:
    assert sp.parse_query_data(status("working")).status is JobStatus.RUNNING


@pytest.mark.parametrize(
    ("fields", "urls"),
    [
        ({"cdn": CDN, "cos": COS, "img_urls": [CDN]}, [CDN]),
        ({"cdn": CDN, "cos": COS, "img_urls": ["https://x/1.png", "https://x/2.png"]},
         ["https://x/1.png", "https://x/2.png"]),
        ({"cdn": CDN, "cos": COS, "img_urls": []}, [CDN]),
        ({"cdn": CDN}, [CDN]),
        ({"cdn": "", "cos": COS, "img_urls": None}, [COS]),
    ],
)
def test_finished_gives_the_urls(fields: dict[str, Any], urls: list[str]) -> None:
    state = sp.parse_query_data(status("finished", **fields))
    assert state.status is JobStatus.SUCCEEDED
    assert [i.url for i in state.images] == urls
    assert state.vendor_data == {"result_urls": urls}


@pytest.mark.parametrize("safe", [False, "False", "false", 0])
def test_finished_unsafe_is_rejected(safe: Any) -> None:
    state = sp.parse_query_data(status("finished", safe=safe, reason="porn"))
    assert state.status is JobStatus.FAILED and state.error_kind == ContentRejected.kind
    assert state.images == []


def test_finished_without_url_fails() -> None:
    state = sp.parse_query_data(status("finished"))
    assert state.status is JobStatus.FAILED and state.error_kind == ProviderError.kind


@pytest.mark.parametrize(
    ("value", "reason", "kind"),
    [
        ("exception", "txt2img.sd -> start -> run_algorithm : CUDA error", ProviderError.kind),
        ("exception", "timeout after 1800.2s", VendorTimeout.kind),
        ("exception", "文本包含敏感词", ContentRejected.kind),
        ("interrupted", "", ProviderError.kind),
    ],
)
def test_failed_statuses(value: str, reason: str, kind: str) -> None:
    state = sp.parse_query_data(status(value, reason=reason))
    assert state.status is JobStatus.FAILED and state.error_kind == kind
    assert state.error_detail


def test_not_found_status_is_job_not_found() -> None:
    with pytest.raises(JobNotFound):
        sp.parse_query_data(status("not_found"))


def test_unknown_status_counts_as_running() -> None:
    assert sp.parse_query_data(status("uploading")).status is JobStatus.RUNNING


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8,
)
FIELDS = ["uid", "status", "pending", "cdn", "cos", "img_urls", "safe", "reason", "success",
          "data"]
STATUSES = st.sampled_from(["pending", "working", "finished", "exception", "not_found"])


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES | STATUSES))
def test_any_query_data_gives_a_state_or_not_found(data: dict[str, Any]) -> None:
    try:
        assert isinstance(sp.parse_query_data(data), JobState)
    except JobNotFound:
        assert data.get("status") == "not_found"


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES | STATUSES),
       st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES))
def test_any_callback_gives_a_state_or_malformed(payload: dict[str, Any],
                                                 data: dict[str, Any]) -> None:
    payload.setdefault("data", data)
    try:
        job_id, state = sp.parse_callback_payload(payload)
    except MalformedResponse:
        return
    assert job_id.startswith("uid:") and state.finished


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"code": 401, "msg": "X-APISpace-Token无效"}, AuthError),
        ({"code": 1, "msg": "token无效"}, AuthError),
        ({"code": 402, "msg": "剩余调用次数不足"}, QuotaExceeded),
        ({"code": 1, "msg": "账户余额不足"}, QuotaExceeded),
        ({"code": 429, "msg": "请求频率超限"}, RateLimited),
        ({"code": 400, "msg": "输入内容包含敏感信息"}, ContentRejected),
        ({"code": 400, "msg": "参数错误"}, BadRequest),
        ({"code": 400, "msg": "prompt exceeds 77 tokens"}, BadRequest),  # "token" is not auth
        ({"code": -1, "msg": "unknown"}, BadRequest),
        ({"code": 500, "msg": "内部错误"}, Unavailable),
        ({"code": 1, "msg": "服务维护中"}, Unavailable),
        ({"msg": "no code"}, MalformedResponse),
        ({"code": 0, "msg": "success", "data": None}, MalformedResponse),
    ],
)
def test_body_codes(body: dict[str, Any], error: type[ProviderError]) -> None:
    with pytest.raises(error):
        envelope.checked_data(body, sp.ASSUMED)


@pytest.mark.parametrize("code", [0, "0"])
def test_submit_answer(code: Any) -> None:
    assert sp.parse_submit({"code": code, "msg": "success", "data": {"uid": UID}}) == UID


@pytest.mark.parametrize("data", [{}, {"uid": ""}, {"uid": 12}])
def test_submit_answer_without_uid_is_malformed(data: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponse):
        sp.parse_submit(ok(data))


@pytest.mark.parametrize(
    ("status_code", "headers", "body", "error"),
    [
        (401, {}, {"code": 401, "msg": "X-APISpace-Token无效"}, AuthError),
        (403, {}, None, AuthError),
        (402, {}, {"code": 402, "msg": "剩余调用次数不足"}, QuotaExceeded),
        (429, {"retry-after": "2"}, {"code": 429, "msg": "请求频率超限"}, RateLimited),
        (429, {}, None, RateLimited),
        (400, {}, {"code": 400, "msg": "参数错误"}, BadRequest),
        (404, {}, None, Unavailable),
        (500, {}, None, Unavailable),
        (503, {"retry-after": "30"}, None, Unavailable),
        (200, {}, None, None),
    ],
)
def test_http_errors(status_code: int, headers: dict[str, str], body: dict[str, Any] | None,
                     error: type[ProviderError] | None) -> None:
    response = httpx.Response(status_code, json=body, headers=headers)
    exc = envelope.error_for_status(response, sp.ASSUMED)
    assert (type(exc) if exc else None) is error
    if error is RateLimited:
        assert exc.retry_after == float(headers.get("retry-after", 1.0))
    if headers.get("retry-after") and error is Unavailable:
        assert exc.retry_after == 30.0


def test_callback_of_the_seed() -> None:
    job_id, state = sp.parse_callback_payload(fixture("apispace", "callback_success"))
    assert job_id == f"uid:{UID}"
    assert state.status is JobStatus.SUCCEEDED and [i.url for i in state.images] == [CDN]


@pytest.mark.parametrize("success", [True, "True", "true", 1])
def test_callback_success_spellings(success: Any) -> None:
    payload = fixture("apispace", "callback_success")
    payload["success"] = success
    assert sp.parse_callback_payload(payload)[1].status is JobStatus.SUCCEEDED


def test_callback_success_but_unsafe_is_moderated() -> None:
    payload = fixture("apispace", "callback_success")
    payload["data"].update(cdn="", cos="", safe=False, reason="porn")
    job_id, state = sp.parse_callback_payload(payload)
    assert job_id == f"uid:{UID}"
    assert state.status is JobStatus.FAILED and state.error_kind == ContentRejected.kind


def test_callback_failure() -> None:
    payload = {"uid": UID, "success": False,
               "data": {"uid": UID, "reason": "img2img.sd -> start -> run_algorithm : boom"}}
    job_id, state = sp.parse_callback_payload(payload)
    assert job_id == f"uid:{UID}" and state.status is JobStatus.FAILED
    assert state.error_kind == ProviderError.kind and "boom" in state.error_detail


def test_callback_uid_may_be_only_in_data() -> None:
    payload = fixture("apispace", "callback_success")
    del payload["uid"]
    assert sp.parse_callback_payload(payload)[0] == f"uid:{UID}"


@pytest.mark.parametrize(
    "payload",
    [{}, {"success": True, "data": {"cdn": CDN}}, {"uid": UID, "data": {"cdn": CDN}},
     {"uid": UID, "success": "maybe"}, {"uid": "", "success": True}],
)
def test_callback_that_names_no_job_or_outcome_is_malformed(payload: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponse):
        sp.parse_callback_payload(payload)


@pytest.mark.parametrize("job_id", ["", "uid", "uid:", "task:123", UID, "sd:x"])
def test_foreign_job_ids_are_not_found(job_id: str) -> None:
    with pytest.raises(JobNotFound):
        sp.split_job_id(job_id)


def test_job_id_round_trip() -> None:
    assert sp.split_job_id(sp.make_job_id(UID)) == UID


# =========================================================================== #
# The adapter over httpx.MockTransport
# =========================================================================== #


SUBMITTED = json_response(ok({"uid": UID}))


@pytest.mark.parametrize(
    ("capability", "path", "task", "eta"),
    [
        (Capability.TXT2IMG, "/aigc/txt2img", "txt2img.sd", 7.0),
        (Capability.IMG2IMG, "/aigc/img2img", "img2img.sd", 7.0),
        (Capability.ANIME, "/aigc/img2acg", "img2acg", 7.0),
        (Capability.UPSCALE, "/aigc/img2img-sr", "img2img.sr", 4.5),
    ],
)
async def test_submit_request_shape(capability: Capability, path: str, task: str,
                                    eta: float) -> None:
    recorder = Recorder(SUBMITTED)
    async with mocked(recorder) as provider:
        submitted = await provider.submit(
            spec(capability, callback_url="https://bot.example.test/callbacks/apispace/t"))
    request = recorder.requests[0]
    assert request.method == "POST" and str(request.url) == f"{BASE}{path}"
    assert request.headers["x-apispace-token"] == TOKEN
    assert request.headers["authorization-type"] == "apikey"
    assert request.headers["content-type"] == "application/json"
    body = recorder.body()
    assert body["task"] == task
    assert body["notify_url"] == "https://bot.example.test/callbacks/apispace/t"
    if capability is not Capability.TXT2IMG:
        assert body["params"]["url"] == f"{MEDIA}/tok-a"
    assert TOKEN.encode() not in request.content and TOKEN not in str(request.url)
    assert submitted.job_id == f"uid:{UID}" and submitted.eta_seconds == eta


async def test_notify_url_is_empty_without_callbacks() -> None:
    recorder = Recorder(SUBMITTED)
    async with mocked(recorder) as provider:
        await provider.submit(spec(n=4))
    assert recorder.body()["notify_url"] == ""
    assert "玫瑰花".encode() in recorder.requests[0].content  # UTF-8, not \u escapes


@pytest.mark.parametrize(
    ("images", "url"),
    [((image(),), f"{MEDIA}/tok-a"), ((image(url=None),), CDN), ((), CDN)],
)
async def test_upscale_of_an_own_result(images: tuple[InputImage, ...], url: str) -> None:
    """Our /media link first; without one, the vendor's own result URL."""
    recorder = Recorder(SUBMITTED)
    source = SourceResult(provider="apispace", job_id=f"uid:{UID}",
                          vendor_data={"result_urls": [CDN]})
    async with mocked(recorder) as provider:
        await provider.submit(spec(Capability.UPSCALE, images=images, source=source))
    assert recorder.body()["params"]["url"] == url


@pytest.mark.parametrize(
    ("capability", "images"),
    [
        (Capability.EDIT, (image(),)),
        (Capability.FACESWAP, (image(), image())),
        (Capability.IMG2IMG, (image(url=None),)),
        (Capability.ANIME, ()),
        (Capability.UPSCALE, ()),
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
    ("data", "expected"),
    [
        (status("pending", pending=2), JobStatus.QUEUED),
        (status("working"), JobStatus.RUNNING),
        (status("finished", cdn=CDN, img_urls=[CDN]), JobStatus.SUCCEEDED),
        (status("finished", safe=False, reason="porn"), JobStatus.FAILED),
        (status("exception", reason="boom"), JobStatus.FAILED),
    ],
)
async def test_poll_every_status(data: dict[str, Any], expected: JobStatus) -> None:
    recorder = Recorder(json_response(ok(data)))
    async with mocked(recorder) as provider:
        state = await provider.poll(f"uid:{UID}")
    assert state.status is expected
    assert recorder.requests[0].url.path == "/aigc/query-image"
    assert recorder.body() == {"uid": UID}
    assert recorder.requests[0].headers["x-apispace-token"] == TOKEN


async def test_poll_reads_pending_at_the_top_level() -> None:
    recorder = Recorder(json_response(fixture("apispace", "query_pending_top_level")))
    async with mocked(recorder) as provider:
        state = await provider.poll(f"uid:{UID}")
    assert state.status is JobStatus.QUEUED and state.queue_position == 3


async def test_anime_submit_sends_image_url_beside_url() -> None:
    recorder = Recorder(SUBMITTED)
    async with mocked(recorder) as provider:
        await provider.submit(spec(Capability.ANIME))
    assert recorder.body()["params"]["image_url"] == recorder.body()["params"]["url"]
    assert recorder.body()["params"]["url"] == f"{MEDIA}/tok-a"


async def test_callback_of_another_job_is_not_found() -> None:
    async with mocked(Recorder(SUBMITTED)) as provider:
        pass
    payload = fixture("apispace", "callback_success")
    assert provider.parse_callback(payload, f"uid:{UID}").status is JobStatus.SUCCEEDED
    with pytest.raises(JobNotFound):
        provider.parse_callback(payload, "uid:0123456789abcdef0123456789abcdef")


async def test_poll_not_found_and_foreign_ids() -> None:
    recorder = Recorder(json_response(ok(status("not_found"))))
    async with mocked(recorder) as provider:
        with pytest.raises(JobNotFound):
            await provider.poll("uid:nope")
        with pytest.raises(JobNotFound):
            await provider.poll("task:123")
        assert await provider.find_submitted(spec()) is None
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (json_response({"code": 401, "msg": "X-APISpace-Token无效"}, 401), AuthError),
        (json_response({"code": 402, "msg": "剩余调用次数不足"}, 402), QuotaExceeded),
        (json_response({"code": 429, "msg": "请求频率超限"}, 429, {"Retry-After": "1"}),
         RateLimited),
        (json_response({"code": 401, "msg": "token无效"}), AuthError),
        (json_response({"code": 1, "msg": "账户余额不足"}), QuotaExceeded),
        (json_response({"code": 400, "msg": "输入内容包含敏感信息"}), ContentRejected),
        (json_response({"code": 400, "msg": "参数错误"}), BadRequest),
        (json_response({"code": 500, "msg": "内部错误"}), Unavailable),
        (httpx.Response(500, text="Internal Server Error"), Unavailable),
        (httpx.Response(502, text="<html>bad gateway</html>"), Unavailable),
        (httpx.Response(200, text="<html>oops</html>"), MalformedResponse),
        (httpx.Response(200, json=["not", "an", "object"]), MalformedResponse),
        (httpx.ReadTimeout("read timed out"), VendorTimeout),
        (httpx.ConnectTimeout("connect timed out"), VendorTimeout),
        (httpx.ConnectError(f"cannot reach {BASE}/?token={TOKEN}"), Unavailable),
        (httpx.RemoteProtocolError("peer closed"), Unavailable),
    ],
)
async def test_errors_are_mapped_and_leak_nothing(
    answer: httpx.Response | Exception, error: type[ProviderError],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="providers")
    async with mocked(Recorder(answer)) as provider:
        for call in (provider.submit(spec()), provider.poll(f"uid:{UID}")):
            with pytest.raises(error) as info:
                await call
            text = f"{info.value} {info.value.vendor_message}"
            assert TOKEN not in text and "apispace.example.test" not in text
            assert not isinstance(info.value.__cause__, httpx.HTTPError)
    assert TOKEN not in caplog.text and "apispace.example.test" not in caplog.text
    if isinstance(answer, httpx.Response):
        assert caplog.records, "the vendor's words are logged"


async def test_echoed_token_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="providers")
    answer = json_response({"code": 401, "msg": f"token无效: {TOKEN}"}, 401)
    async with mocked(Recorder(answer)) as provider:
        with pytest.raises(AuthError) as info:
            await provider.submit(spec())
    assert TOKEN not in info.value.vendor_message and "***" in info.value.vendor_message
    assert TOKEN not in caplog.text


async def test_from_settings() -> None:
    async with httpx.AsyncClient() as client:
        none = SimpleNamespace(apispace_token=None, apispace_base_url=BASE)
        assert sp.Apispace.from_settings(none, client) is None
        configured = SimpleNamespace(apispace_token=SecretStr(TOKEN), apispace_base_url=BASE + "/")
        provider = sp.Apispace.from_settings(configured, client)
    assert provider is not None and provider.base_url == BASE and provider.client is client
    assert TOKEN not in repr(provider.auth)


def test_class_attributes() -> None:
    p = sp.Apispace
    assert p.id == "apispace" and p.supports_callbacks and p.callback_answer == {"code": 0}
    assert p.capabilities == {Capability.TXT2IMG, Capability.IMG2IMG, Capability.ANIME,
                              Capability.UPSCALE}
    assert p.needs_public_url == {Capability.IMG2IMG, Capability.ANIME, Capability.UPSCALE}
    assert p.max_images == 1 and p.image_input == "url"
    assert 6 <= p.typical_seconds <= 8


# =========================================================================== #
# End to end against FakeApispace over loopback HTTP
# =========================================================================== #

loopback_stack, env = loopback_fixture(
    lambda: FakeApispace(queue_seconds=0.02, run_seconds=0.04), sp.Apispace)


def provider_for(env: VendorStack, token: str = "test-apispace-token",
                 timeout: float = 2.0) -> sp.Apispace:
    return make_provider(sp.Apispace, env.client, env.base_url, timeout=timeout,
                         apispace_token=token)


class ScriptedEndpoint:
    """A callback endpoint answering (status, text) pairs, then the last one
    again: vendor_kit's Receiver answers only JSON with HTTP 200."""

    def __init__(self, *answers: tuple[int, str]) -> None:
        self.answers = list(answers)
        self.app = Starlette(routes=[Route("/cb", self.endpoint, methods=["POST"])])

    async def endpoint(self, request: Request) -> Response:
        await request.body()
        code, text = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return Response(text, code, media_type="application/json")


OK_ANSWER = (200, json.dumps(sp.Apispace.callback_answer))


async def download(env: VendorStack, state: JobState):
    assert state.images[0].url
    return await env.download(state.images[0].url)


@loopback
async def test_fake_txt2img_end_to_end(env: VendorStack) -> None:
    provider = provider_for(env)
    submitted = await provider.submit(spec(aspect_ratio="16:9"))
    states = await poll_until_done(provider, submitted.job_id)
    assert [s.status for s in states][0] is JobStatus.QUEUED and states[0].queue_position == 1
    assert {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED} <= {s.status for s in states}
    assert (await download(env, states[-1])).size == (768, 448)
    assert env.fake.api_requests("txt2img")[0].body["params"]["w"] == 768


@loopback
@pytest.mark.parametrize(
    ("capability", "size"),
    [(Capability.IMG2IMG, (40, 30)), (Capability.ANIME, (40, 30)),
     (Capability.UPSCALE, (160, 120))],  # ×4
)
async def test_fake_fetches_the_input_url(env: VendorStack, capability: Capability,
                                          size: tuple[int, int]) -> None:
    provider = provider_for(env)
    source = env.input(f"in-{capability}", png(40, 30))
    submitted = await provider.submit(spec(capability, images=(source,), strength=0.6))
    final = (await poll_until_done(provider, submitted.job_id))[-1]
    assert final.status is JobStatus.SUCCEEDED
    assert env.fake.fetched_urls() == [source.url] and env.fake.fetches[0].ok
    assert (await download(env, final)).size == size


@loopback
async def test_fake_unreachable_input_ends_in_exception(env: VendorStack) -> None:
    provider = provider_for(env)
    gone = input_image(url=f"{env.media}/gone")
    submitted = await provider.submit(spec(Capability.IMG2IMG, images=(gone,)))
    env.fake.finish(submitted.job_id)
    state = await provider.poll(submitted.job_id)
    assert state.status is JobStatus.FAILED and "download" in state.error_detail
    assert not env.fake.fetches[0].ok


@loopback
async def test_fake_callback_is_delivered_and_parsed(env: VendorStack) -> None:
    provider = provider_for(env)
    submitted = await provider.submit(spec(callback_url=env.callback_url))
    attempts = await env.fake.wait_for_callbacks(1)
    await asyncio.sleep(0.03)  # nothing more once accepted
    assert len(env.fake.callbacks) == 1 and attempts[0].accepted
    state = provider.parse_callback(env.receiver.received[0], submitted.job_id)
    assert state.status is JobStatus.SUCCEEDED
    assert (await download(env, state)).size == (512, 512)
    with pytest.raises(JobNotFound):  # the token of another task
        provider.parse_callback(env.receiver.received[0], "uid:another")


@loopback
@pytest.mark.parametrize("bad_answer", [(500, '{"error": "busy"}'), (200, "OK, not JSON")])
async def test_fake_callback_is_retried_until_a_json_2xx(
    env: VendorStack, bad_answer: tuple[int, str]
) -> None:
    env.fake.callback_delay_scale = 0.005  # 3 s → 15 ms
    receiver = ScriptedEndpoint(bad_answer, bad_answer, OK_ANSWER)
    async with serve(receiver.app) as url:
        await provider_for(env).submit(spec(callback_url=f"{url}/cb"))
        attempts = await env.fake.wait_for_callbacks(3)
        await asyncio.sleep(0.05)
    assert [a.accepted for a in env.fake.callbacks] == [False, False, True]
    assert attempts[1].at - attempts[0].at >= 3 * 0.005 * 0.9


@loopback
async def test_fake_callback_gives_up_after_ten_tries(env: VendorStack) -> None:
    env.fake.callback_delay_scale = 0.001
    async with serve(ScriptedEndpoint((503, "{}")).app) as url:
        await provider_for(env).submit(spec(callback_url=f"{url}/cb"))
        await env.fake.wait_for_callbacks(10)
        await asyncio.sleep(0.05)
    assert len(env.fake.callbacks) == 10 and not any(a.accepted for a in env.fake.callbacks)


@loopback
async def test_fake_moderation_by_poll_and_by_callback(env: VendorStack) -> None:
    provider = provider_for(env)
    env.fake.moderate_next("porn")
    submitted = await provider.submit(spec(callback_url=env.callback_url))
    env.fake.finish(submitted.job_id)
    state = await provider.poll(submitted.job_id)
    assert state.status is JobStatus.FAILED and state.error_kind == ContentRejected.kind
    await env.fake.wait_for_callbacks(1)
    payload = env.receiver.received[0]
    assert payload["success"] is True and payload["data"]["safe"] is False
    state = provider.parse_callback(payload, submitted.job_id)
    assert state.error_kind == ContentRejected.kind


@loopback
async def test_fake_exception_by_poll_and_by_callback(env: VendorStack) -> None:
    provider = provider_for(env)
    env.fake.fail_job_next("txt2img.sd -> start -> run_algorithm : CUDA out of memory")
    submitted = await provider.submit(spec(callback_url=env.callback_url))
    env.fake.finish(submitted.job_id)
    state = await provider.poll(submitted.job_id)
    assert state.status is JobStatus.FAILED and "CUDA" in state.error_detail
    await env.fake.wait_for_callbacks(1)
    assert env.receiver.received[0]["success"] is False
    state = provider.parse_callback(env.receiver.received[0], submitted.job_id)
    assert state.status is JobStatus.FAILED


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
async def test_fake_unknown_uid(env: VendorStack) -> None:
    with pytest.raises(JobNotFound):
        await provider_for(env).poll("uid:0123456789abcdef0123456789abcdef")


@loopback
async def test_fake_rejects_a_wrong_token(env: VendorStack) -> None:
    before = len(env.fake.jobs)
    with pytest.raises(AuthError):
        await provider_for(env, token="wrong-token").submit(spec())
    assert len(env.fake.jobs) == before


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
    env.fake.fail_next(fault, path="txt2img")
    before = len(env.fake.jobs)
    with pytest.raises(error) as info:
        await provider.submit(spec())
    if fault == "rate_limited":
        assert info.value.retry_after == 1.0
    if fault == "timeout":  # the vendor took the job though we gave up waiting
        await eventually(lambda: len(env.fake.jobs) == before + 1)
    else:  # a one-off: the same submit goes through now
        assert (await provider.submit(spec())).job_id.startswith("uid:")


@loopback
async def test_fake_faults_on_queries_only(env: VendorStack) -> None:
    provider = provider_for(env)
    env.fake.fail_next("rate_limited", times=2, path="query-image")
    submitted = await provider.submit(spec())
    for _ in range(2):
        with pytest.raises(RateLimited):
            await provider.poll(submitted.job_id)
    assert isinstance(await provider.poll(submitted.job_id), JobState)


@loopback
@pytest.mark.parametrize(
    ("path", "body", "problem"),
    [
        ("txt2img", {"task": "txt2img.sd", "params": {"model": "art", "text": "x", "w": 1024,
                                                      "h": 512}}, "w"),
        ("txt2img", {"task": "txt2img.sd", "params": {"model": "art", "text": "x", "w": 512,
                                                      "h": 500}}, "h"),
        ("txt2img", {"task": "txt2img.sd", "params": {"model": "art", "text": "", "w": 512,
                                                      "h": 512}}, "text"),
        ("txt2img", {"task": "img2img.sd", "params": {}}, "task"),
        ("img2img", {"task": "img2img.sd"}, "params"),
        ("img2img", {"task": "img2img.sd", "params": {"text": "x", "url": "file:///etc"}}, "url"),
        ("img2acg", {"task": "img2acg", "params": {"url": "https://x/y", "style": "Ugly"}},
         "style"),
        ("img2img-sr", {"task": "img2img.sr", "params": {"url": "https://x/y"},
                        "notify_url": "ftp://x"}, "notify_url"),
    ],
)
async def test_fake_is_as_strict_as_the_document(
    env: VendorStack, path: str, body: dict[str, Any], problem: str
) -> None:
    before = len(env.fake.jobs)
    response = await env.client.post(
        f"{env.base_url}/aigc/{path}", json=body,
        headers={"X-APISpace-Token": "test-apispace-token", "Authorization-Type": "apikey"},
    )
    answer = response.json()
    assert response.status_code == 200 and answer["code"] != 0 and problem in answer["msg"]
    assert len(env.fake.jobs) == before


@loopback
async def test_fake_needs_both_auth_headers(env: VendorStack) -> None:
    response = await env.client.post(
        f"{env.base_url}/aigc/query-image", json={"uid": "x"},
        headers={"X-APISpace-Token": "test-apispace-token"},
    )
    assert response.status_code == 401


@loopback
async def test_fake_sees_the_token_only_in_its_header(env: VendorStack) -> None:
    provider = provider_for(env)
    submitted = await provider.submit(spec(
        Capability.ANIME, images=(env.input("leak", png()),), callback_url=env.callback_url))
    await poll_until_done(provider, submitted.job_id)
    requests = env.fake.api_requests()
    assert {r.path for r in requests} == {"/aigc/img2acg", "/aigc/query-image"}
    for request in requests:
        assert request.headers["x-apispace-token"] == "test-apispace-token"
        other = {k: v for k, v in request.headers.items() if k != "x-apispace-token"}
        seen = json.dumps(other) + json.dumps(request.body, ensure_ascii=False) + request.query
        assert "test-apispace-token" not in seen
