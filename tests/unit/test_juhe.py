"""juhe adapter: pure transforms, the HTTP boundary (httpx.MockTransport),
and end to end against FakeJuhe over loopback HTTP."""

from __future__ import annotations

import base64
import io
import logging
import math
import random
from contextlib import AbstractAsyncContextManager
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import SecretStr

from bot.config import Settings
from providers import juhe as j
from providers.errors import (AuthError, BadRequest, ContentRejected, JobNotFound,
                              MalformedResponse, ProviderError, QuotaExceeded, RateLimited,
                              Unavailable, VendorTimeout)
from providers.types import Capability, GenerationParams, InputImage, JobSpec, JobStatus
from tests.fakes.juhe import FakeJuhe, form_of
from tests.vendor_kit import (Recorder, VendorStack, fixture, input_image, json_response,
                              loopback, loopback_fixture, make_provider, make_spec,
                              mock_provider, png)

KEY = "juhe-key-SECRET-0123"
BASE = "http://juhe.example.test"
EDIT_PROMPT = "把图中的猫换成狗"


def edit(*images: InputImage, **params: Any) -> JobSpec:
    params.setdefault("prompt", EDIT_PROMPT)
    return make_spec(Capability.EDIT, images=images, **params)


def decode_uri(uri: str) -> tuple[str, bytes]:
    header, _, payload = uri.partition(",")
    assert header.startswith("data:") and header.endswith(";base64")
    return header[5:-7], base64.b64decode(payload, validate=True)


def noisy(width: int, height: int, mode: str = "RGB") -> bytes:
    """An incompressible PNG (large data URI)."""
    data = random.Random(7).randbytes(width * height * len(mode))
    buffer = io.BytesIO()
    Image.frombytes(mode, (width, height), data).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# =========================================================================== #
# Pure transforms: text, images, sizes
# =========================================================================== #


def test_text_limit_is_800_characters_of_any_script() -> None:
    assert j.check_text("猫" * 800) == "猫" * 800
    assert j.check_text("a" * 800) == "a" * 800
    for too_long in ("猫" * 801, "a" * 801):
        with pytest.raises(BadRequest, match="801"):
            j.check_text(too_long)
    for empty in ("", "   "):
        with pytest.raises(BadRequest):
            j.check_text(empty)


def test_routing_knows_the_prompt_limit() -> None:
    """Routing skips juhe past 800 characters instead of failing the task there."""
    assert j.Juhe.max_prompt_chars == j.MAX_TEXT_CHARS == 800


@pytest.mark.parametrize(
    ("text", "count", "expected"),
    [
        ("put image 1 into picture2", 2, "put 图1 into 图2"),
        ("swap the face in IMG 2 with pic #1", 2, "swap the face in 图2 with 图1"),
        ("把图片1的人放进图片3", 3, "把图1的人放进图3"),
        ("image 3 stays", 2, "image 3 stays"),  # there is no third image
        ("make image 1 brighter", 1, "make image 1 brighter"),  # one image: no rewriting
        ("图1和图2", 2, "图1和图2"),
    ],
)
def test_image_references_become_tu_n(text: str, count: int, expected: str) -> None:
    assert j.normalize_image_refs(text, count) == expected


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("BMP", "image/bmp"),
     ("TIFF", "image/tiff"), ("WEBP", "image/webp")],
)
def test_data_uri_names_the_format_and_keeps_the_bytes(fmt: str, mime: str) -> None:
    data = png(fmt=fmt)
    # The engine's measured MIME type goes into the URI, which must agree with the bytes [seed].
    assert decode_uri(j.image_data_uri(input_image(data), 1)) == (mime, data)


def test_unsupported_format_is_converted_to_jpeg() -> None:
    gif = input_image(png(fmt="GIF"))
    assert gif.mime == "image/gif"
    mime, data = decode_uri(j.image_data_uri(gif, 1))
    assert mime == "image/jpeg" and Image.open(io.BytesIO(data)).format == "JPEG"


def test_unconvertible_image_is_refused() -> None:
    with pytest.raises(BadRequest, match="image2"):
        j.image_data_uri(input_image(b"not an image", mime="image/gif"), 2)


@settings(max_examples=200, deadline=None)
@given(max_chars=st.integers(30, 5000), mime=st.sampled_from(["image/jpeg", "image/webp"]))
def test_data_uri_budget_is_the_largest_size_that_fits(max_chars: int, mime: str) -> None:
    budget = j.data_uri_budget(max_chars, mime)
    assert len(j.data_uri(b"x" * budget, mime)) <= max_chars
    assert len(j.data_uri(b"x" * (budget + 1), mime)) > max_chars


def test_too_large_input_is_shrunk_under_the_limit() -> None:
    limit = j.Assumptions(max_data_uri_chars=200_000)
    data = noisy(600, 300, "RGBA")
    assert len(j.data_uri(data, "image/png")) > limit.max_data_uri_chars
    uri = j.image_data_uri(input_image(data), 1, limit)
    assert len(uri) <= limit.max_data_uri_chars
    mime, shrunk = decode_uri(uri)
    result = Image.open(io.BytesIO(shrunk))
    assert mime == "image/jpeg" and result.format == "JPEG" and result.mode == "RGB"
    assert result.width / result.height == pytest.approx(2, rel=0.02)


def test_an_input_just_over_the_limit_is_shrunk_and_one_at_it_is_not() -> None:
    data = noisy(40, 40)
    exact = len(j.data_uri(data, "image/png"))
    assert j.image_data_uri(input_image(data), 1, j.Assumptions(max_data_uri_chars=exact)) == (
        j.data_uri(data, "image/png"))
    shrunk = j.image_data_uri(input_image(data), 1, j.Assumptions(max_data_uri_chars=exact - 1))
    assert decode_uri(shrunk)[0] == "image/jpeg" and len(shrunk) < exact


def test_a_shrunk_input_is_at_most_2048_on_the_long_side() -> None:
    big = noisy(2500, 300)
    uri = j.image_data_uri(input_image(big), 1, j.Assumptions(max_data_uri_chars=1_000_000))
    assert max(Image.open(io.BytesIO(decode_uri(uri)[1])).size) == 2048
    # a large but small-enough file goes as it is
    assert decode_uri(j.image_data_uri(input_image(png(3000, 1000)), 1))[1] == png(3000, 1000)


def test_input_that_cannot_fit_is_refused() -> None:
    with pytest.raises(BadRequest, match="too large"):
        j.image_data_uri(input_image(noisy(300, 300)), 1, j.Assumptions(max_data_uri_chars=500))


@settings(max_examples=200, deadline=None)
@given(width=st.integers(1, 10_000), height=st.integers(1, 10_000))
def test_edit_sizes_are_always_within_512_to_2048(width: int, height: int) -> None:
    w, h = j.fit_edit_size(width, height)
    assert 512 <= w <= 2048 and 512 <= h <= 2048
    ratio = width / height
    if 1 / 4 <= ratio <= 4:  # within the range, the ratio is kept
        assert w / h == pytest.approx(ratio, rel=0.01, abs=0.004)


@pytest.mark.parametrize(
    ("params", "size"),
    [
        ({}, ""),  # keeps the input's aspect ratio [seed]
        ({"aspect_ratio": "16:9"}, "1024*576"),
        ({"aspect_ratio": "1:2"}, "512*1024"),
        ({"aspect_ratio": "1:8"}, "512*2048"),
        ({"width": 4000, "height": 3000}, "2048*1536"),
        ({"width": 100, "height": 100}, "512*512"),
        ({"width": 1024, "height": 2048}, "1024*2048"),
    ],
)
def test_edit_size(params: dict[str, Any], size: str) -> None:
    assert j.edit_size(GenerationParams(**params)) == size


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, 1),
        ({"aspect_ratio": "16:9"}, 2),
        ({"aspect_ratio": "4:3"}, 3),
        ({"aspect_ratio": "3:4"}, 4),
        ({"aspect_ratio": "9:16"}, 5),
        ({"aspect_ratio": "21:9"}, 2),
        ({"aspect_ratio": "3:2"}, 3),
        ({"aspect_ratio": "2:3"}, 4),
        ({"aspect_ratio": "1:3"}, 5),
        ({"aspect_ratio": "5:4"}, 3),
        ({"width": 1920, "height": 1080}, 2),
        ({"width": 1000, "height": 1010}, 1),
    ],
)
def test_txt2img_size_is_the_nearest_ratio(params: dict[str, Any], code: int) -> None:
    assert j.txt2img_size_code(GenerationParams(**params)) == code


@settings(max_examples=100, deadline=None)
@given(a=st.integers(1, 50), b=st.integers(1, 50))
def test_txt2img_size_code_is_never_farther_than_another(a: int, b: int) -> None:
    code = j.txt2img_size_code(GenerationParams(aspect_ratio=f"{a}:{b}"))

    def distance(c: int) -> float:
        w, h = j.TXT2IMG_SIZES[c]
        return abs(math.log(w / h) - math.log(a / b))

    assert all(distance(code) <= distance(other) for other in j.TXT2IMG_SIZES)


def test_edit_form_has_exactly_the_documented_fields_in_order() -> None:
    example = fixture("juhe", "edit_request_example")["body"]
    form = j.build_edit_form(KEY, GenerationParams(prompt="换成狗"), [input_image()])
    assert list(form) == list(dict(parse_qsl(example, keep_blank_values=True)))
    assert form["key"] == KEY and form["text"] == "换成狗"
    assert decode_uri(form["image1"])[0] == "image/png"
    assert form["image2"] == form["image3"] == ""
    assert form["size"] == "" and form["model"] == "auto"  # "模型,默认:auto" [seed]


def test_edit_form_with_three_images_and_a_model() -> None:
    images = [input_image(png(fmt="JPEG")), input_image(), input_image(png(fmt="WEBP"))]
    params = GenerationParams(prompt="put image 3 on image 1", model="custom-1", aspect_ratio="4:3")
    form = j.build_edit_form(KEY, params, images)
    assert [decode_uri(form[f"image{n}"])[0] for n in (1, 2, 3)] == [
        "image/jpeg", "image/png", "image/webp"
    ]
    assert form["text"] == "put 图3 on 图1"
    assert form["model"] == "custom-1" and form["size"] == "1024*768"


@pytest.mark.parametrize("count", [0, 4])
def test_edit_takes_one_to_three_images(count: int) -> None:
    with pytest.raises(BadRequest):
        j.build_edit_form(KEY, GenerationParams(prompt="x"), [input_image()] * count)


def test_txt2img_sends_model_auto_by_default() -> None:
    """VENDORS.md corrections: txt2img clients send `model: "auto"` (not empty)."""
    form = j.build_txt2img_form(KEY, GenerationParams(prompt="一只猫", aspect_ratio="9:16"))
    assert form == {"key": KEY, "prompt": "一只猫", "size": "5", "model": "auto"}
    chosen = j.build_txt2img_form(KEY, GenerationParams(prompt="一只猫", model="custom-1"))
    assert chosen["model"] == "custom-1"
    with pytest.raises(BadRequest):
        j.build_txt2img_form(KEY, GenerationParams(prompt="x" * 801))


# =========================================================================== #
# Pure transforms: answers and error codes
# =========================================================================== #


def test_seed_example_answer() -> None:
    result = j.parse_result(fixture("juhe", "edit_success"))
    assert result.orderid == "JH825251202145803Ae61U"
    assert len(result.urls) == 1 and result.urls[0].startswith(
        "https://dashscope-result-hz.oss-cn-hangzhou.aliyuncs.com/7d/d4/20251202/"
    )
    state = j.finished_state(result)
    assert state.status is JobStatus.SUCCEEDED and state.images[0].url == result.urls[0]
    assert state.vendor_data["expires_in"] == 24 * 3600


def test_txt2img_answer_shape() -> None:
    result = {"orderid": "JH1", "image": "https://r/1.png"}
    body = {"error_code": "0", "reason": "成功", "result": result}
    assert j.parse_result(body) == j.Result("JH1", ["https://r/1.png"])


@pytest.mark.parametrize(
    "body",
    [
        {"error_code": 0, "result": {"orderid": "JH1", "images": []}},
        {"error_code": 0, "result": None},
        {"error_code": 0, "result": {"orderid": "JH1", "images": [{"image": ""}]}},
        {"reason": "成功", "result": {}},
        {"error_code": "abc"},
    ],
)
def test_malformed_answers(body: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponse):
        j.parse_result(body)


EVERY_CODE: list[tuple[int, type[ProviderError]]] = [
    (282501, BadRequest),
    (282502, BadRequest),
    (282503, Unavailable),
    (282504, ContentRejected),
    (282505, ProviderError),
    (282506, BadRequest),
    (282401, BadRequest),
    (282402, BadRequest),
    (282403, ContentRejected),
    (282404, ProviderError),
    (10001, AuthError),
    (10002, AuthError),
    (10003, AuthError),
    (10004, AuthError),
    (10005, AuthError),
    (10007, AuthError),
    (10008, AuthError),
    (10009, AuthError),
    (10011, RateLimited),
    (10012, QuotaExceeded),
    (10013, QuotaExceeded),
    (10014, Unavailable),
    (10020, Unavailable),
    (10021, AuthError),
    (999999, ProviderError),  # unknown: fails the task, not retried
]


@pytest.mark.parametrize(("code", "error"), EVERY_CODE)
def test_every_error_code(code: int, error: type[ProviderError]) -> None:
    exc = j.error_for_body({"error_code": str(code), "reason": "原因"})
    assert type(exc) is error
    assert str(code) in exc.vendor_message and "原因" in exc.vendor_message


def test_generation_failure_is_not_transient_and_network_error_is() -> None:
    assert not j.error_for_code(282505, "").transient
    assert j.error_for_code(282503, "").transient
    assert j.error_for_code(10011, "").retry_after == j.ASSUMED.rate_limited_retry_after
    assert j.error_for_code(10020, "").retry_after == j.ASSUMED.maintenance_retry_after
    assert j.error_for_code(10021, "").disables_vendor
    assert j.error_for_body({"error_code": 0}) is None


# =========================================================================== #
# The adapter over httpx.MockTransport
# =========================================================================== #


def mocked(recorder: Recorder) -> AbstractAsyncContextManager[j.Juhe]:
    return mock_provider(j.Juhe, recorder, BASE + "/", juhe_api_key=KEY)


def ok_edit() -> httpx.Response:
    return json_response(fixture("juhe", "edit_success"))


def code(number: int, reason: str = "失败") -> httpx.Response:
    return json_response({"reason": reason, "result": None, "error_code": number})


async def test_edit_request_shape_and_synchronous_result() -> None:
    recorder = Recorder(ok_edit())
    photo = png(fmt="JPEG")
    async with mocked(recorder) as provider:
        submitted = await provider.submit(edit(input_image(photo)))
    request = recorder.requests[0]
    assert request.method == "POST" and str(request.url) == f"{BASE}/image_edit/edit"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in request.headers and KEY not in str(request.url)
    form = recorder.form()
    assert form["key"] == KEY and form["text"] == EDIT_PROMPT
    assert decode_uri(form["image1"]) == ("image/jpeg", photo)
    assert submitted.job_id == "juhe:JH825251202145803Ae61U"
    assert submitted.state is not None and submitted.state.finished
    assert submitted.state.status is JobStatus.SUCCEEDED
    assert submitted.state.images[0].url.startswith("https://dashscope-result-hz.")


async def test_the_documented_60_second_timeout_is_passed_on_each_call() -> None:
    recorder = Recorder(ok_edit())
    stub = SimpleNamespace(juhe_api_key=KEY, juhe_base_url=BASE)
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        provider = j.Juhe.from_settings(stub, client)
        assert isinstance(provider, j.Juhe)
        assert provider.call_timeout.read == 60.0 and provider.call_timeout.connect == 5.0
        await provider.submit(edit(input_image()))
    assert recorder.requests[0].extensions["timeout"]["read"] == 60.0


async def test_txt2img_request_shape() -> None:
    answer = json_response({"error_code": 0, "reason": "成功",
                            "result": {"orderid": "JH77", "image": "https://r/77.png"}})
    recorder = Recorder(answer)
    async with mocked(recorder) as provider:
        submitted = await provider.submit(
            make_spec(Capability.TXT2IMG, prompt="山水画", aspect_ratio="16:9")
        )
    assert recorder.requests[0].url.path == "/text2image/generate"
    assert recorder.form() == {"key": KEY, "prompt": "山水画", "size": "2", "model": "auto"}
    assert submitted.job_id == "juhe:JH77"
    assert submitted.state is not None and submitted.state.images[0].url == "https://r/77.png"


async def test_img2img_is_an_edit_of_one_image() -> None:
    recorder = Recorder(ok_edit())
    async with mocked(recorder) as provider:
        await provider.submit(
            make_spec(Capability.IMG2IMG, images=(input_image(),), prompt="油画风格"))
        with pytest.raises(BadRequest):
            await provider.submit(make_spec(Capability.IMG2IMG, images=(input_image(),) * 2))
    assert len(recorder.requests) == 1
    assert recorder.requests[0].url.path == "/image_edit/edit"
    assert recorder.form()["text"] == "油画风格"


async def test_answer_without_orderid_is_named_after_our_id() -> None:
    body = {"error_code": 0, "result": {"images": [{"image": "https://r/x.png"}]}}
    async with mocked(Recorder(json_response(body))) as provider:
        submitted = await provider.submit(edit(input_image(), business_id="b-9"))
    assert submitted.job_id == "juhe:b-9"


@pytest.mark.parametrize(
    "spec",
    [
        edit(input_image(), prompt="x" * 801),
        edit(),
        edit(*[input_image()] * 4),
        edit(input_image(b"garbage", mime="image/gif")),
        make_spec(Capability.TXT2IMG, prompt="   "),
        make_spec(Capability.UPSCALE, images=(input_image(),)),
    ],
)
async def test_unservable_specs_fail_before_any_request(spec: JobSpec) -> None:
    recorder = Recorder(ok_edit())
    async with mocked(recorder) as provider:
        with pytest.raises(BadRequest):
            await provider.submit(spec)
    assert recorder.requests == []


@pytest.mark.parametrize(("number", "error"), EVERY_CODE)
async def test_error_codes_with_http_200(number: int, error: type[ProviderError]) -> None:
    async with mocked(Recorder(code(number))) as provider:
        with pytest.raises(error) as info:
            await provider.submit(edit(input_image()))
    assert type(info.value) is error


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(500, text="Internal Server Error"), Unavailable),
        (httpx.Response(502, text="<html>bad gateway</html>"), Unavailable),
        (httpx.Response(404, text="not found"), Unavailable),
        (httpx.Response(403, text="forbidden"), AuthError),
        (httpx.Response(429, text="slow down", headers={"Retry-After": "9"}), RateLimited),
        (httpx.Response(200, text="<html>oops</html>"), MalformedResponse),
        (httpx.Response(200, json=["not", "an", "object"]), MalformedResponse),
        (httpx.ReadTimeout("read timed out"), VendorTimeout),
        (httpx.ConnectTimeout("connect timed out"), VendorTimeout),
        (httpx.ConnectError(f"cannot reach {BASE}?key={KEY}"), Unavailable),
        (httpx.RemoteProtocolError("peer closed"), Unavailable),
    ],
)
async def test_transport_and_http_errors_leak_nothing(
    answer: httpx.Response | Exception, error: type[ProviderError], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="providers")
    async with mocked(Recorder(answer)) as provider:
        with pytest.raises(error) as info:
            await provider.submit(edit(input_image()))
    text = f"{info.value} {info.value.vendor_message} {caplog.text}"
    assert KEY not in text and "juhe.example.test" not in text
    assert not isinstance(info.value.__cause__, httpx.HTTPError)
    if error is RateLimited:
        assert info.value.retry_after == 9.0


async def test_echoed_key_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="providers")
    async with mocked(Recorder(code(10001, f"错误的请求KEY: {KEY}"))) as provider:
        with pytest.raises(AuthError) as info:
            await provider.submit(edit(input_image()))
    assert KEY not in info.value.vendor_message and "***" in info.value.vendor_message
    assert KEY not in caplog.text and "错误的请求KEY" in caplog.text


async def test_poll_raises_job_not_found_without_a_request() -> None:
    recorder = Recorder(ok_edit())
    async with mocked(recorder) as provider:
        with pytest.raises(JobNotFound):
            await provider.poll("juhe:JH825251202145803Ae61U")
        assert await provider.find_submitted(edit(input_image())) is None
    assert recorder.requests == []


async def test_probe_uses_an_empty_request() -> None:
    recorder = Recorder(code(282501))
    async with mocked(recorder) as provider:
        assert await provider.probe() == "ok"
    assert recorder.form() == {"key": KEY, "text": "", "image1": ""}
    async with mocked(Recorder(code(10001))) as provider:
        assert await provider.probe() == "auth"
    async with mocked(Recorder(httpx.ConnectError("down"))) as provider:
        assert await provider.probe() == "unavailable"


async def test_from_settings_and_class_attributes() -> None:
    async with httpx.AsyncClient() as client:
        for off in (None, SecretStr("  ")):
            assert j.Juhe.from_settings(SimpleNamespace(juhe_api_key=off, juhe_base_url=BASE),
                                        client) is None
        provider = make_provider(j.Juhe, client, BASE + "/", juhe_api_key=SecretStr(KEY))
    assert provider.base_url == BASE and provider.client is client
    assert provider.auth is None  # the key travels in the form body [seed]
    assert KEY not in repr(provider)
    p = j.Juhe
    assert p.id == "juhe" and not p.supports_callbacks and p.image_input == "data_uri"
    assert p.capabilities == {Capability.EDIT, Capability.TXT2IMG, Capability.IMG2IMG}
    assert p.needs_public_url == frozenset()
    assert provider.available_capabilities(has_public_url=False) == p.capabilities


async def test_default_base_url_is_https(monkeypatch: pytest.MonkeyPatch) -> None:
    """VENDORS.md corrections: https://gpt.juhe.cn by default (the key is in the body)."""
    monkeypatch.delenv("JUHE_BASE_URL", raising=False)
    settings = Settings(telegram_bot_token="1:token", juhe_api_key=KEY, _env_file=None)
    async with httpx.AsyncClient() as client:
        provider = j.Juhe.from_settings(settings, client)
    assert provider is not None and provider.base_url == "https://gpt.juhe.cn"


# =========================================================================== #
# End to end against FakeJuhe over loopback HTTP
# =========================================================================== #

loopback_stack, env = loopback_fixture(FakeJuhe, j.Juhe)


def juhe(env: VendorStack, key: str = "test-juhe-key", timeout: float = 2.0) -> j.Juhe:
    return make_provider(j.Juhe, env.client, env.base_url, timeout=timeout, juhe_api_key=key)


@loopback
async def test_fake_edit_end_to_end(env: VendorStack) -> None:
    env.fake.delay_seconds = 0.05  # synchronous: the answer waits for the image
    first = png(300, 200, (250, 0, 0))
    second = png(80, 80, (0, 0, 250), fmt="JPEG")
    spec = edit(input_image(first), input_image(second),
                prompt="put image 2 in the corner of image 1", aspect_ratio="16:9")
    submitted = await juhe(env).submit(spec)
    assert submitted.state is not None and submitted.state.status is JobStatus.SUCCEEDED
    result = await env.download(submitted.state.images[0].url)
    assert result.format == "PNG" and result.size == (1024, 576)
    assert result.convert("RGB").getpixel((600, 300))[:3] == (5, 255, 255)  # image1, inverted
    order = env.fake.order(submitted.job_id)
    assert order.form["text"] == "put 图2 in the corner of 图1"
    assert order.inputs == [first, second]
    form = form_of(env.fake.api_requests("edit")[0])
    assert form["key"] == "test-juhe-key" and form["size"] == "1024*576"


@loopback
async def test_fake_edit_keeps_the_input_ratio_without_a_size(env: VendorStack) -> None:
    submitted = await juhe(env).submit(edit(input_image(png(400, 200))))
    assert submitted.state is not None
    assert (await env.download(submitted.state.images[0].url)).size == (1024, 512)


@loopback
async def test_fake_txt2img_end_to_end(env: VendorStack) -> None:
    submitted = await juhe(env).submit(
        make_spec(Capability.TXT2IMG, prompt="一只猫", aspect_ratio="9:16")
    )
    assert submitted.state is not None
    assert (await env.download(submitted.state.images[0].url)).size == (576, 1024)
    form = form_of(env.fake.api_requests("text2image")[0])
    assert form["size"] == "5" and form["model"] == "auto"


@loopback
async def test_fake_accepts_image_urls_too(env: VendorStack) -> None:
    earlier = await juhe(env).submit(edit(input_image()))
    assert earlier.state is not None
    url = earlier.state.images[0].url
    form = {"key": "test-juhe-key", "text": "更亮", "image1": url, "image2": "", "image3": "",
            "size": "", "model": ""}
    body = (await env.client.post(f"{env.base_url}/image_edit/edit", data=form)).json()
    assert body["error_code"] == 0 and env.fake.fetches[-1].ok


@loopback
async def test_fake_result_urls_expire_after_24_hours(env: VendorStack) -> None:
    submitted = await juhe(env).submit(edit(input_image()))
    assert submitted.state is not None
    url = submitted.state.images[0].url
    env.fake.advance(24 * 3600 - 5)
    assert (await env.client.get(url)).status_code == 200
    env.fake.advance(10)
    assert (await env.client.get(url)).status_code == 403


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"text": "x" * 801, "image1": "IMG"}, 282501),
        ({"text": "", "image1": "IMG"}, 282501),
        ({"text": "x", "image1": ""}, 282501),
        ({"text": "x", "image1": "IMG", "size": "100*100"}, 282502),
        ({"text": "x", "image1": "IMG", "size": "1024x1024"}, 282502),
        ({"text": "x", "image1": "data:image/jpeg;base64,PNGDATA"}, 282505),  # wrong MIME
        ({"text": "x", "image1": "data:image/png;base64,%%%"}, 282505),
        ({"text": "x", "image1": "IMG", "model": "no-such-model"}, 10002),
        ({"text": "含违禁词", "image1": "IMG"}, 282504),
        ({"text": "x", "image1": "IMG", "key": "wrong"}, 10001),
    ],
)
@loopback
async def test_fake_is_strict(env: VendorStack, form: dict[str, str], expected: int) -> None:
    encoded = base64.b64encode(png()).decode()
    fields = {"key": "test-juhe-key", **form}
    fields["image1"] = fields["image1"].replace("IMG", f"data:image/png;base64,{encoded}")
    fields["image1"] = fields["image1"].replace("PNGDATA", encoded)
    body = (await env.client.post(f"{env.base_url}/image_edit/edit", data=fields)).json()
    assert body["error_code"] == expected


@loopback
async def test_fake_wants_a_form_not_json(env: VendorStack) -> None:
    answer = await env.client.post(f"{env.base_url}/image_edit/edit",
                                   json={"key": "test-juhe-key", "text": "x"})
    assert answer.status_code == 200 and answer.json()["error_code"] == 10001


@loopback
async def test_fake_base64_limit(env: VendorStack) -> None:
    env.fake.max_base64_chars = 1000
    with pytest.raises(BadRequest, match="282506"):
        await juhe(env).submit(edit(input_image(noisy(100, 100))))


@loopback
async def test_fake_wrong_key(env: VendorStack) -> None:
    with pytest.raises(AuthError):
        await juhe(env, key="wrong-key").submit(edit(input_image()))


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
        ("failed", ProviderError),
        ("network", Unavailable),
        ("maintenance", Unavailable),
        (10021, AuthError),
        ("timeout", VendorTimeout),
    ],
)
async def test_fake_faults(env: VendorStack, fault: str | int, error: type[ProviderError]) -> None:
    env.fake.timeout_seconds = 0.15
    provider = juhe(env, timeout=0.05)
    env.fake.fail_next(fault)
    with pytest.raises(error) as info:
        await provider.submit(edit(input_image()))
    assert type(info.value) is error
    if fault != "timeout":  # a one-off: the next call goes through
        assert (await provider.submit(edit(input_image()))).state is not None


@loopback
async def test_fake_txt2img_fault_codes(env: VendorStack) -> None:
    env.fake.fail_next("sensitive", path="text2image")
    with pytest.raises(ContentRejected, match="282403"):
        await juhe(env).submit(make_spec(Capability.TXT2IMG))
    env.fake.fail_next("failed", path="text2image")
    with pytest.raises(ProviderError, match="282404"):
        await juhe(env).submit(make_spec(Capability.TXT2IMG))


@loopback
async def test_fake_probe(env: VendorStack) -> None:
    assert await juhe(env).probe() == "ok"
    assert await juhe(env, key="nope").probe() == "auth"
