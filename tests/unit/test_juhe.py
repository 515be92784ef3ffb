"""juhe adapter: pure transforms, the HTTP boundary (httpx.MockTransport),
and end to end against FakeJuhe over loopback HTTP."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import math
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import SecretStr

from providers import juhe as j
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
from providers.types import Capability, GenerationParams, InputImage, JobSpec, JobStatus
from tests.fakes.juhe import FakeJuhe, form_of
from tests.fakes.server import serve

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "juhe"
KEY = "juhe-key-SECRET-0123"
BASE = "http://juhe.example.test"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))


def picture(
    width: int = 64, height: int = 64, fmt: str = "PNG", color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=fmt)
    return buffer.getvalue()


def image(data: bytes | None = None, mime: str = "image/png") -> InputImage:
    return InputImage(data=data if data is not None else picture(), mime=mime)


def make_spec(
    capability: Capability = Capability.EDIT,
    *,
    images: tuple[InputImage, ...] = (),
    business_id: str = "task-0001",
    **params: Any,
) -> JobSpec:
    params.setdefault("prompt", "把图中的猫换成狗")
    return JobSpec(capability=capability, params=GenerationParams(**params), images=images,
                   business_id=business_id)


def decode_uri(uri: str) -> tuple[str, bytes]:
    header, _, payload = uri.partition(",")
    assert header.startswith("data:") and header.endswith(";base64")
    return header[5:-7], base64.b64decode(payload, validate=True)


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
def test_data_uri_names_the_real_format(fmt: str, mime: str) -> None:
    data = picture(fmt=fmt)
    # InputImage.mime says PNG; the URI must say what the bytes are [seed].
    uri = j.image_data_uri(InputImage(data=data, mime="image/png"), 1)
    assert decode_uri(uri) == (mime, data)


def test_unsupported_format_is_converted_to_jpeg() -> None:
    uri = j.image_data_uri(image(picture(fmt="GIF"), "image/gif"), 1)
    mime, data = decode_uri(uri)
    assert mime == "image/jpeg" and Image.open(io.BytesIO(data)).format == "JPEG"


def test_not_an_image_is_refused() -> None:
    with pytest.raises(BadRequest, match="image2"):
        j.image_data_uri(image(b"not an image"), 2)


def noisy(width: int, height: int, mode: str = "RGB") -> bytes:
    """An incompressible PNG (large data URI)."""
    img = Image.frombytes(mode, (width, height), _random_bytes(width * height * len(mode)))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _random_bytes(count: int) -> bytes:
    return random.Random(7).randbytes(count)


def test_too_large_input_is_shrunk_under_the_limit() -> None:
    limit = j.Assumptions(max_data_uri_chars=200_000)
    data = noisy(600, 300, "RGBA")
    assert len(j.data_uri(data, "image/png")) > limit.max_data_uri_chars
    uri = j.image_data_uri(image(data), 1, limit)
    assert len(uri) <= limit.max_data_uri_chars
    mime, shrunk = decode_uri(uri)
    result = Image.open(io.BytesIO(shrunk))
    assert mime == "image/jpeg" and result.format == "JPEG" and result.mode == "RGB"
    assert result.width / result.height == pytest.approx(2, rel=0.02)


def test_a_shrunk_input_is_at_most_2048_on_the_long_side() -> None:
    big = noisy(2500, 300)
    uri = j.image_data_uri(image(big), 1, j.Assumptions(max_data_uri_chars=1_000_000))
    assert max(Image.open(io.BytesIO(decode_uri(uri)[1])).size) == 2048
    # a large but small-enough file goes as it is
    assert decode_uri(j.image_data_uri(image(picture(3000, 1000)), 1))[1] == picture(3000, 1000)


def test_input_that_cannot_fit_is_refused() -> None:
    with pytest.raises(BadRequest, match="too large"):
        j.image_data_uri(image(noisy(300, 300)), 1, j.Assumptions(max_data_uri_chars=500))


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
    example = dict(parse_qsl(fixture("edit_request_example")["body"], keep_blank_values=True))
    form = j.build_edit_form(KEY, GenerationParams(prompt="换成狗"), [image()])
    assert list(form) == list(example)
    assert form["key"] == KEY and form["text"] == "换成狗"
    assert decode_uri(form["image1"])[0] == "image/png"
    assert form["image2"] == form["image3"] == ""
    assert form["size"] == "" and form["model"] == "auto"


def test_edit_form_with_three_images_and_a_model() -> None:
    images = [image(picture(fmt="JPEG")), image(), image(picture(fmt="WEBP"))]
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
        j.build_edit_form(KEY, GenerationParams(prompt="x"), [image()] * count)


def test_txt2img_form() -> None:
    form = j.build_txt2img_form(KEY, GenerationParams(prompt="一只猫", aspect_ratio="9:16"))
    assert form == {"key": KEY, "prompt": "一只猫", "size": "5", "model": ""}
    with pytest.raises(BadRequest):
        j.build_txt2img_form(KEY, GenerationParams(prompt="x" * 801))


# =========================================================================== #
# Pure transforms: answers and error codes
# =========================================================================== #


def test_seed_example_answer() -> None:
    result = j.parse_result(fixture("edit_success"))
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


class Recorder:
    """A MockTransport handler that answers from a queue and records requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def form(self, index: int = -1) -> dict[str, str]:
        content = self.requests[index].content.decode("ascii")
        return dict(parse_qsl(content, keep_blank_values=True))


@contextlib.asynccontextmanager
async def mock_provider(recorder: Recorder, timeout: float = 2.0) -> AsyncIterator[j.Juhe]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        yield j.Juhe(client, api_key=KEY, base_url=BASE + "/", timeout=httpx.Timeout(timeout))


def ok_edit() -> httpx.Response:
    return httpx.Response(200, json=fixture("edit_success"))


def code(number: int, reason: str = "失败") -> httpx.Response:
    return httpx.Response(200, json={"reason": reason, "result": None, "error_code": number})


async def test_edit_request_shape_and_synchronous_result() -> None:
    recorder = Recorder(ok_edit())
    photo = picture(fmt="JPEG")
    async with mock_provider(recorder) as provider:
        submitted = await provider.submit(make_spec(images=(image(photo, "image/jpeg"),)))
    request = recorder.requests[0]
    assert request.method == "POST" and str(request.url) == f"{BASE}/image_edit/edit"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in request.headers and KEY not in str(request.url)
    form = recorder.form()
    assert form["key"] == KEY and form["text"] == "把图中的猫换成狗"
    assert decode_uri(form["image1"]) == ("image/jpeg", photo)
    assert submitted.job_id == "juhe:JH825251202145803Ae61U"
    assert submitted.state is not None and submitted.state.finished
    assert submitted.state.status is JobStatus.SUCCEEDED
    assert submitted.state.images[0].url.startswith("https://dashscope-result-hz.")


def test_default_timeout_allows_the_documented_60_seconds() -> None:
    provider = j.Juhe(httpx.AsyncClient(), api_key=KEY, base_url=BASE)
    assert provider.timeout.read == 60.0 and provider.timeout.connect == 5.0


async def test_timeout_is_passed_on_each_call() -> None:
    recorder = Recorder(ok_edit())
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        provider = j.Juhe(client, api_key=KEY, base_url=BASE)
        await provider.submit(make_spec(images=(image(),)))
    assert recorder.requests[0].extensions["timeout"]["read"] == 60.0


async def test_txt2img_request_shape() -> None:
    answer = httpx.Response(200, json={"error_code": 0, "reason": "成功",
                                       "result": {"orderid": "JH77", "image": "https://r/77.png"}})
    recorder = Recorder(answer)
    async with mock_provider(recorder) as provider:
        submitted = await provider.submit(
            make_spec(Capability.TXT2IMG, prompt="山水画", aspect_ratio="16:9")
        )
    assert recorder.requests[0].url.path == "/text2image/generate"
    assert recorder.form() == {"key": KEY, "prompt": "山水画", "size": "2", "model": ""}
    assert submitted.job_id == "juhe:JH77"
    assert submitted.state is not None and submitted.state.images[0].url == "https://r/77.png"


async def test_img2img_is_an_edit_of_one_image() -> None:
    recorder = Recorder(ok_edit())
    async with mock_provider(recorder) as provider:
        await provider.submit(make_spec(Capability.IMG2IMG, images=(image(),), prompt="油画风格"))
        with pytest.raises(BadRequest):
            await provider.submit(make_spec(Capability.IMG2IMG, images=(image(), image())))
    assert len(recorder.requests) == 1
    assert recorder.requests[0].url.path == "/image_edit/edit"
    assert recorder.form()["text"] == "油画风格"


async def test_answer_without_orderid_is_named_after_our_id() -> None:
    body = {"error_code": 0, "result": {"images": [{"image": "https://r/x.png"}]}}
    async with mock_provider(Recorder(httpx.Response(200, json=body))) as provider:
        submitted = await provider.submit(make_spec(images=(image(),), business_id="b-9"))
    assert submitted.job_id == "juhe:b-9"


@pytest.mark.parametrize(
    "spec",
    [
        make_spec(images=(image(),), prompt="x" * 801),
        make_spec(images=()),
        make_spec(images=(image(),) * 4),
        make_spec(images=(image(b"garbage"),)),
        make_spec(Capability.TXT2IMG, prompt="   "),
        make_spec(Capability.UPSCALE, images=(image(),)),
    ],
)
async def test_unservable_specs_fail_before_any_request(spec: JobSpec) -> None:
    recorder = Recorder(ok_edit())
    async with mock_provider(recorder) as provider:
        with pytest.raises(BadRequest):
            await provider.submit(spec)
    assert recorder.requests == []


@pytest.mark.parametrize(("number", "error"), EVERY_CODE)
async def test_error_codes_with_http_200(number: int, error: type[ProviderError]) -> None:
    async with mock_provider(Recorder(code(number))) as provider:
        with pytest.raises(error) as info:
            await provider.submit(make_spec(images=(image(),)))
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
    caplog.set_level(logging.DEBUG, logger="providers.juhe")
    async with mock_provider(Recorder(answer)) as provider:
        with pytest.raises(error) as info:
            await provider.submit(make_spec(images=(image(),)))
    text = f"{info.value} {info.value.vendor_message} {caplog.text}"
    assert KEY not in text and "juhe.example.test" not in text
    assert not isinstance(info.value.__cause__, httpx.HTTPError)
    if error is RateLimited:
        assert info.value.retry_after == 9.0


async def test_echoed_key_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="providers.juhe")
    async with mock_provider(Recorder(code(10001, f"错误的请求KEY: {KEY}"))) as provider:
        with pytest.raises(AuthError) as info:
            await provider.submit(make_spec(images=(image(),)))
    assert KEY not in info.value.vendor_message and "***" in info.value.vendor_message
    assert KEY not in caplog.text and "错误的请求KEY" in caplog.text


async def test_poll_raises_job_not_found_without_a_request() -> None:
    recorder = Recorder(ok_edit())
    async with mock_provider(recorder) as provider:
        with pytest.raises(JobNotFound):
            await provider.poll("juhe:JH825251202145803Ae61U")
        assert await provider.find_submitted(make_spec(images=(image(),))) is None
    assert recorder.requests == []


async def test_probe_uses_an_empty_request() -> None:
    recorder = Recorder(code(282501))
    async with mock_provider(recorder) as provider:
        assert await provider.probe() == "ok"
    assert recorder.form() == {"key": KEY, "text": "", "image1": ""}
    async with mock_provider(Recorder(code(10001))) as provider:
        assert await provider.probe() == "auth"
    async with mock_provider(Recorder(httpx.ConnectError("down"))) as provider:
        assert await provider.probe() == "unavailable"


async def test_from_settings_and_class_attributes() -> None:
    settings_off = SimpleNamespace(juhe_api_key=None, juhe_base_url=BASE)
    settings_on = SimpleNamespace(juhe_api_key=SecretStr(KEY), juhe_base_url=BASE + "/")
    async with httpx.AsyncClient() as client:
        assert j.Juhe.from_settings(settings_off, client) is None
        provider = j.Juhe.from_settings(settings_on, client)
    assert provider is not None and provider.base_url == BASE and provider.client is client
    assert KEY not in repr(provider)
    p = j.Juhe
    assert p.id == "juhe" and not p.supports_callbacks and p.image_input == "data_uri"
    assert p.capabilities == {Capability.EDIT, Capability.TXT2IMG, Capability.IMG2IMG}
    assert p.needs_public_url == frozenset()
    assert provider.available_capabilities(has_public_url=False) == p.capabilities


# =========================================================================== #
# End to end against FakeJuhe over loopback HTTP
# =========================================================================== #

loopback = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Loopback:
    fake: FakeJuhe
    base_url: str
    client: httpx.AsyncClient

    def provider(self, key: str = "test-juhe-key", timeout: float = 2.0) -> j.Juhe:
        return j.Juhe(self.client, api_key=key, base_url=self.base_url,
                      timeout=httpx.Timeout(timeout))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def loopback_stack() -> AsyncIterator[Loopback]:
    fake = FakeJuhe()
    try:
        async with serve(fake.app) as base_url, httpx.AsyncClient() as client:
            yield Loopback(fake, base_url, client)
    finally:
        await fake.aclose()


@pytest.fixture
def env(loopback_stack: Loopback) -> Loopback:
    loopback_stack.fake.reset()
    return loopback_stack


async def download(env: Loopback, url: str) -> Image.Image:
    response = await env.client.get(url)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


@loopback
async def test_fake_edit_end_to_end(env: Loopback) -> None:
    env.fake.delay_seconds = 0.05  # synchronous: the answer waits for the image
    provider = env.provider()
    first = picture(300, 200, "PNG", (250, 0, 0))
    second = picture(80, 80, "JPEG", (0, 0, 250))
    spec = make_spec(images=(image(first), image(second, "image/jpeg")),
                     prompt="put image 2 in the corner of image 1", aspect_ratio="16:9")
    submitted = await provider.submit(spec)
    assert submitted.state is not None and submitted.state.status is JobStatus.SUCCEEDED
    result = await download(env, submitted.state.images[0].url)
    assert result.format == "PNG" and result.size == (1024, 576)
    assert result.convert("RGB").getpixel((600, 300))[:3] == (5, 255, 255)  # image1, inverted
    order = env.fake.order(submitted.job_id)
    assert order.form["text"] == "put 图2 in the corner of 图1"
    assert order.inputs == [first, second]
    form = form_of(env.fake.api_requests("edit")[0])
    assert form["key"] == "test-juhe-key" and form["size"] == "1024*576"


@loopback
async def test_fake_edit_keeps_the_input_ratio_without_a_size(env: Loopback) -> None:
    submitted = await env.provider().submit(make_spec(images=(image(picture(400, 200)),)))
    assert submitted.state is not None
    assert (await download(env, submitted.state.images[0].url)).size == (1024, 512)


@loopback
async def test_fake_txt2img_end_to_end(env: Loopback) -> None:
    submitted = await env.provider().submit(
        make_spec(Capability.TXT2IMG, prompt="一只猫", aspect_ratio="9:16")
    )
    assert submitted.state is not None
    assert (await download(env, submitted.state.images[0].url)).size == (576, 1024)
    assert form_of(env.fake.api_requests("text2image")[0])["size"] == "5"


@loopback
async def test_fake_accepts_image_urls_too(env: Loopback) -> None:
    earlier = await env.provider().submit(make_spec(images=(image(),)))
    assert earlier.state is not None
    url = earlier.state.images[0].url
    form = {"key": "test-juhe-key", "text": "更亮", "image1": url, "image2": "", "image3": "",
            "size": "", "model": ""}
    body = (await env.client.post(f"{env.base_url}/image_edit/edit", data=form)).json()
    assert body["error_code"] == 0 and env.fake.fetches[-1].ok


@loopback
async def test_fake_result_urls_expire_after_24_hours(env: Loopback) -> None:
    submitted = await env.provider().submit(make_spec(images=(image(),)))
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
async def test_fake_is_strict(env: Loopback, form: dict[str, str], expected: int) -> None:
    png = base64.b64encode(picture()).decode()
    fields = {"key": "test-juhe-key", **form}
    fields["image1"] = fields["image1"].replace("IMG", f"data:image/png;base64,{png}")
    fields["image1"] = fields["image1"].replace("PNGDATA", png)
    body = (await env.client.post(f"{env.base_url}/image_edit/edit", data=fields)).json()
    assert body["error_code"] == expected


@loopback
async def test_fake_wants_a_form_not_json(env: Loopback) -> None:
    answer = await env.client.post(f"{env.base_url}/image_edit/edit",
                                   json={"key": "test-juhe-key", "text": "x"})
    assert answer.status_code == 200 and answer.json()["error_code"] == 10001


@loopback
async def test_fake_base64_limit(env: Loopback) -> None:
    env.fake.max_base64_chars = 1000
    big = image(noisy(100, 100))
    with pytest.raises(BadRequest, match="282506"):
        await env.provider().submit(make_spec(images=(big,)))


@loopback
async def test_fake_wrong_key(env: Loopback) -> None:
    with pytest.raises(AuthError):
        await env.provider(key="wrong-key").submit(make_spec(images=(image(),)))


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
async def test_fake_faults(env: Loopback, fault: str | int, error: type[ProviderError]) -> None:
    env.fake.timeout_seconds = 0.15
    provider = env.provider(timeout=0.05)
    env.fake.fail_next(fault)
    with pytest.raises(error) as info:
        await provider.submit(make_spec(images=(image(),)))
    assert type(info.value) is error
    if fault != "timeout":  # a one-off: the next call goes through
        assert (await provider.submit(make_spec(images=(image(),)))).state is not None


@loopback
async def test_fake_txt2img_fault_codes(env: Loopback) -> None:
    env.fake.fail_next("sensitive", path="text2image")
    with pytest.raises(ContentRejected, match="282403"):
        await env.provider().submit(make_spec(Capability.TXT2IMG))
    env.fake.fail_next("failed", path="text2image")
    with pytest.raises(ProviderError, match="282404"):
        await env.provider().submit(make_spec(Capability.TXT2IMG))


@loopback
async def test_fake_probe(env: Loopback) -> None:
    assert await env.provider().probe() == "ok"
    assert await env.provider(key="nope").probe() == "auth"
