"""zhiqite adapter: pure transforms, the HTTP boundary (httpx.MockTransport),
and end to end against FakeZhiqite over loopback HTTP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import httpx
import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from providers import zhiqite as z
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
import tests.fakes.server as fake_server
from tests.fakes.server import serve
from tests.fakes.zhiqite import FakeZhiqite
from tests.vendor_kit import input_image
from providers.credentials import CredentialError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "zhiqite"
APP_CODE = "app-code-SECRET-1234"
KEY_ID = "key-id-SECRET-5678"
KEY_SECRET = "key-secret-SECRET-9abc"
BASE = "https://zhiqite.example.test"
MEDIA = "https://bot.example.test/media"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))


def png(width: int = 64, height: int = 64, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_spec(
    capability: Capability = Capability.TXT2IMG,
    *,
    images: tuple[InputImage, ...] = (),
    business_id: str = "task-0001",
    callback_url: str | None = None,
    **params: Any,
) -> JobSpec:
    params.setdefault("prompt", "一只猫 a cat")
    return JobSpec(
        capability=capability,
        params=GenerationParams(**params),
        images=images,
        business_id=business_id,
        callback_url=callback_url,
    )


def image(url: str | None = f"{MEDIA}/tok-a", width: int = 64, height: int = 64) -> InputImage:
    return input_image(png(width, height), url=url)


IMAGES_FOR = {
    Capability.TXT2IMG: (),
    Capability.IMG2IMG: (image(),),
    Capability.FACESWAP: (image(f"{MEDIA}/face"), image(f"{MEDIA}/target")),
    Capability.UPSCALE: (image(),),
}


def ok(data: Any) -> dict[str, Any]:
    return {"code": "200", "msg": "success", "data": data}


# =========================================================================== #
# Pure transforms: request bodies
# =========================================================================== #


def txt2img_body(**params: Any) -> dict[str, Any]:
    spec = make_spec(**params)
    return z.build_sd_body(spec.params, "bid-1", size=z.txt2img_size(spec.params))


def test_txt2img_body_has_the_required_fields_and_defaults() -> None:
    body = txt2img_body(n=3)
    scripts = body["alwayson_scripts"]
    assert body["prompt"] == "一只猫 a cat"
    assert body["batch_size"] == 3 and body["n_iter"] == 1
    assert body["seed"] == "-1"
    assert scripts["id_task"] == "bid-1"
    assert scripts["sd_model_checkpoint"] == z.ASSUMED.default_model
    assert (body["width"], body["height"]) == (768, 768)
    assert body["negative_prompt"]
    for absent in ("callbackUrl", "denoising_strength"):
        assert absent not in body
    assert "image_link" not in scripts


def test_txt2img_body_takes_the_user_params() -> None:
    spec = make_spec(
        seed=42, steps=30, cfg=9.5, model="photon_v1_84728.safetensors",
        negative_prompt="blurry", aspect_ratio="16:9",
    )
    body = z.build_sd_body(
        spec.params, "bid-2", size=z.txt2img_size(spec.params), callback_url="https://cb/x"
    )
    assert body["seed"] == "42"
    assert body["steps"] == 30 and body["cfg_scale"] == 9.5
    assert body["negative_prompt"] == "blurry"
    assert body["alwayson_scripts"]["sd_model_checkpoint"] == "photon_v1_84728.safetensors"
    assert body["callbackUrl"] == "https://cb/x"
    assert (body["width"], body["height"]) == (768, 432)


@settings(max_examples=200, deadline=None)
@given(width=st.integers(1, 5000), height=st.integers(1, 5000))
def test_explicit_sizes_are_clamped_to_multiples_of_8_up_to_1024(width: int, height: int) -> None:
    w, h = z.txt2img_size(GenerationParams(width=width, height=height))
    for side in (w, h):
        assert side % 8 == 0 and 64 <= side <= 1024


@settings(max_examples=200, deadline=None)
@given(a=st.integers(1, 40), b=st.integers(1, 40))
def test_aspect_ratio_sizes_are_valid(a: int, b: int) -> None:
    w, h = z.txt2img_size(GenerationParams(aspect_ratio=f"{a}:{b}"))
    for side in (w, h):
        assert side % 8 == 0 and 64 <= side <= 1024
    assert max(w, h) == 768


def test_oversized_request_keeps_its_ratio() -> None:
    assert z.fit_size(2048, 1024) == (1024, 512)
    assert z.fit_size(1000, 1000) == (1000, 1000)
    assert z.fit_size(1001, 3) == (1000, 64)


def test_img2img_body_has_image_link_and_strength() -> None:
    spec = make_spec(Capability.IMG2IMG, images=(image(),))
    body = z.build_sd_body(spec.params, "b", size=(512, 512), image_link=f"{MEDIA}/tok-a")
    assert body["alwayson_scripts"]["image_link"] == f"{MEDIA}/tok-a"
    assert body["denoising_strength"] == 0.55
    spec = make_spec(Capability.IMG2IMG, strength=0.8)
    body = z.build_sd_body(spec.params, "b", size=(512, 512), image_link="https://x/y")
    assert body["denoising_strength"] == 0.8


def test_img2img_keeps_the_input_photo_shape_unless_told_otherwise() -> None:
    photo = png(1200, 800)
    assert z.img2img_size(GenerationParams(), photo) == (768, 512)
    assert z.img2img_size(GenerationParams(), png(300, 900)) == (256, 768)
    assert z.img2img_size(GenerationParams(aspect_ratio="1:2"), photo) == (384, 768)
    assert z.img2img_size(GenerationParams(width=640, height=640), photo) == (640, 640)
    assert z.img2img_size(GenerationParams(), b"not an image") == (768, 768)


def test_tool_bodies() -> None:
    assert z.build_roop_body("https://f", "https://t", "b1") == {
        "sourceUrl": "https://f", "targetUrl": "https://t", "businessTaskId": "b1",
    }
    body = z.build_enhance_body("https://i", "b2", "https://cb")
    assert body["image"] == "https://i" and body["businessTaskId"] == "b2"
    assert body["upscalingResize"] == 2 and body["upscaler1"] == "ESRGAN_4x"
    assert body["callbackUrl"] == "https://cb"
    assert "callbackUrl" not in z.build_enhance_body("https://i", "b2")


def test_controlnet_body() -> None:
    params = GenerationParams(prompt="p")
    body = z.build_controlnet_body(
        params, "b", size=(512, 512), control_image_url="https://c",
        module="canny", model="control_v11p_sd15_canny",
    )
    arg = body["alwayson_scripts"]["controlnet"]["args"][0]
    assert arg["image_link"] == "https://c" and arg["module"] == "canny"
    assert body["resize_mode"] == 1


# =========================================================================== #
# Pure transforms: responses
# =========================================================================== #


def running(status: int, progress: Any = "0.5", image_b64: Any = None) -> dict[str, Any]:
    return {
        "id_task": "t", "status": status, "desc": "生成中",
        "temporaryImageDto": {"progress": progress, "currentImage": image_b64,
                              "jobNo": 1, "jobCount": 1},
        "differentialImageRspList": None,
    }


def result(*items: dict[str, Any]) -> dict[str, Any]:
    return {"id_task": "t", "status": 2, "desc": "任务成功 !", "temporaryImageDto": None,
            "differentialImageRspList": list(items)}


def item(url: str, seed: int = 1, image_status: int = 1, audit: bool = True) -> dict[str, Any]:
    return {"img_audit": [], "img_audit_status": audit, "image_status": image_status,
            "image_url": url, "seed": seed}


def test_queued_status_3() -> None:
    state = z.parse_task_info({"id_task": "t", "status": 3, "desc": "排队中"})
    assert state.status is JobStatus.QUEUED


@pytest.mark.parametrize("status", [1, 5, "1"])
def test_running_statuses_1_and_5_with_progress(status: Any) -> None:
    state = z.parse_task_info(running(status, "0.45"))
    assert state.status is JobStatus.RUNNING
    assert state.progress == pytest.approx(0.45)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0", 0.0), ("1", 1.0), ("0.3", 0.3), (0.7, 0.7), ("45%", 0.45), ("80", 0.8),
     ("", None), (None, None), ("abc", None)],
)
def test_progress_decoding(raw: Any, expected: float | None) -> None:
    assert z.parse_progress(raw) == (pytest.approx(expected) if expected is not None else None)


def test_uploading_without_progress_counts_as_done_generating() -> None:
    assert z.parse_task_info(running(5, None)).progress == 1.0


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"])
def test_preview_is_decoded(prefix: str) -> None:
    picture = png(16, 16)
    state = z.parse_task_info(running(1, "0.2", prefix + base64.b64encode(picture).decode()))
    assert state.preview == picture
    assert Image.open(io.BytesIO(state.preview)).size == (16, 16)


@pytest.mark.parametrize("garbage", ["%%%not-base64%%%", "", None, 12, "abc"])
def test_undecodable_preview_is_ignored(garbage: Any) -> None:
    state = z.parse_task_info(running(1, "0.2", garbage))
    assert state.status is JobStatus.RUNNING and state.preview is None


def test_success_status_2_gives_urls_and_seeds() -> None:
    state = z.parse_task_info(fixture("query_task_info_success")["data"])
    assert state.status is JobStatus.SUCCEEDED
    assert [(i.url, i.seed) for i in state.images] == [
        ("https://aigcoss.zhiqiteai.cn/Output-Img2/bbbb/selfapi/8883/text2image/2023-10-11/"
         "1e682ad6-5b5c-470b-86c7-c88abdba6d00-0.png", 1063029203)
    ]


def test_moderated_images_are_dropped() -> None:
    state = z.parse_task_info(result(
        item("https://x/0", 10),
        item("https://x/1", 11, image_status=2),
        item("https://x/2", 12, audit=False),
        item("https://x/3", 13),
    ))
    assert state.status is JobStatus.SUCCEEDED
    assert [i.url for i in state.images] == ["https://x/0", "https://x/3"]


def test_all_images_moderated_is_rejected() -> None:
    state = z.parse_task_info(
        result(item("https://x/1", image_status=2), item("https://x/2", audit=False))
    )
    assert state.status is JobStatus.FAILED and state.error_kind == ContentRejected.kind


def test_success_without_any_image_fails() -> None:
    state = z.parse_task_info(result())
    assert state.status is JobStatus.FAILED and state.error_kind == ProviderError.kind


@pytest.mark.parametrize(
    ("desc", "kind"),
    [("生成失败", ProviderError.kind), ("提示词包含敏感词", ContentRejected.kind)],
)
def test_failed_status_0(desc: str, kind: str) -> None:
    state = z.parse_task_info({"id_task": "t", "status": 0, "desc": desc})
    assert state.status is JobStatus.FAILED
    assert state.error_kind == kind and state.error_detail == desc


def test_tool_query_done_when_url_present() -> None:
    state = z.parse_tool_task(fixture("tool_query_task")["data"])
    assert state.status is JobStatus.SUCCEEDED
    assert state.images[0].url.endswith("/roop/pro1703734845555845969817.png")


@pytest.mark.parametrize("status", [0, "0", 2, "2"])
def test_tool_query_failed_on_status_0_and_2(status: Any) -> None:
    # The seed's queryTask tables: "status 任务状态 1.成功, 2.失败" (roop: "1:成功 2:失败").
    state = z.parse_tool_task({"businessTaskId": "100869960120240603", "status": status,
                               "taskId": "pre1717487519653502055297"})
    assert state.status is JobStatus.FAILED


@pytest.mark.parametrize("status", [1, "1", None])
def test_tool_query_running_otherwise(status: Any) -> None:
    state = z.parse_tool_task({"businessTaskId": "b", "status": status, "outputImageUrl": ""})
    assert state.status is JobStatus.RUNNING


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"code": "400", "msg": "prompt不能为空"}, BadRequest),
        ({"code": "400", "msg": "提示词包含敏感词"}, ContentRejected),
        ({"code": 400, "msg": "内容违规"}, ContentRejected),
        ({"code": "500", "msg": "系统异常"}, Unavailable),
        ({"msg": "no code"}, MalformedResponse),
    ],
)
def test_body_codes(body: dict[str, Any], error: type[ProviderError]) -> None:
    with pytest.raises(error):
        z.checked_body(body)


def test_success_body_passes() -> None:
    assert z.checked_body(fixture("submit_text2image"))["data"]["task_id"] == "pro1686666"


@pytest.mark.parametrize(
    "body", [{"code": "400", "msg": "任务不存在", "data": None}, {"code": "200", "data": None}]
)
def test_unknown_task_is_job_not_found(body: dict[str, Any]) -> None:
    with pytest.raises(JobNotFound):
        z.query_data(body)


@pytest.mark.parametrize(
    ("status", "code", "message", "error"),
    [
        (403, "A403QE", "Quota Exhausted", QuotaExceeded),
        (403, "", "Quota Expired", QuotaExceeded),
        (403, "A403PR", "Throttled by API Flow Control", RateLimited),
        (403, "A403AR", "Throttled by APP Flow Control", RateLimited),
        (403, "", "Throttled by USER Flow Control", RateLimited),
        (403, "A403AC", "Invalid AppCode `not exists`", AuthError),
        (400, "A400IK", "Invalid AppKey", AuthError),
        (401, "", "Unauthorized", AuthError),
        (403, "", "Unauthorized", AuthError),
        (400, "A400IU", "Invalid Url", BadRequest),
        (404, "", "", Unavailable),
        (500, "", "", Unavailable),
        (502, "X502BE", "Failed To Invoke Backend Service", Unavailable),
        (503, "", "", Unavailable),
        (429, "", "", RateLimited),
    ],
)
def test_gateway_errors(status: int, code: str, message: str, error: type[ProviderError]) -> None:
    headers = {"x-ca-error-code": code, "x-ca-error-message": message}
    exc = z.error_for_gateway(status, headers)
    assert type(exc) is error
    if error is RateLimited:
        assert exc.retry_after == z.ASSUMED.throttle_retry_after
    assert z.error_for_gateway(200, headers) is None


def test_throttle_honours_retry_after_header() -> None:
    exc = z.error_for_gateway(403, {"x-ca-error-message": "Throttled by APP Flow Control",
                                    "retry-after": "7"})
    assert exc.retry_after == 7.0


@pytest.mark.parametrize("job_id", ["", "sd", "sd:", "mj:123", "123"])
def test_foreign_job_ids_are_not_found(job_id: str) -> None:
    with pytest.raises(JobNotFound):
        z.split_job_id(job_id)


def test_job_id_round_trip_keeps_colons_in_vendor_id() -> None:
    assert z.split_job_id(z.make_job_id(z.JobKind.ROOP, "a:b")) == (z.JobKind.ROOP, "a:b")


# ---- callbacks ----------------------------------------------------------------


def test_callback_envelope_sd() -> None:
    job_id, state = z.parse_callback_payload(fixture("query_task_info_success"))
    assert job_id == "sd:test10086555513" and state.status is JobStatus.SUCCEEDED


def test_callback_bare_sd() -> None:
    job_id, state = z.parse_callback_payload({"id_task": "b9", "status": 0, "desc": "失败"})
    assert job_id == "sd:b9" and state.status is JobStatus.FAILED


def test_callback_tool_with_tool_task() -> None:
    payload = ok({"businessTaskId": "b7", "toolTask": "enhance", "status": 0, "outputImageUrl": ""})
    job_id, state = z.parse_callback_payload(payload)
    assert job_id == "enhance:b7" and state.status is JobStatus.FAILED


@pytest.mark.parametrize(
    ("url", "kind"),
    [("https://o/Output-Img2/roop/x.png", "roop"),
     ("https://o/Output-Img2/tool/enhance/extras-images/x.png", "enhance")],
)
def test_callback_tool_kind_from_url(url: str, kind: str) -> None:
    job_id, state = z.parse_callback_payload(
        {"businessTaskId": "b8", "status": 1, "outputImageUrl": url, "taskId": "t"}
    )
    assert job_id == f"{kind}:b8" and state.status is JobStatus.SUCCEEDED


@pytest.mark.parametrize(
    "payload",
    [{}, {"code": "200", "data": None}, {"businessTaskId": "b", "status": 0},
     {"status": 2, "outputImageUrl": "https://o/roop/x.png"}],
)
def test_callback_that_names_no_job_is_malformed(payload: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponse):
        z.parse_callback_payload(payload)


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

    def body(self, index: int = -1) -> dict[str, Any]:
        return json.loads(self.requests[index].content.decode("utf-8"))


@contextlib.asynccontextmanager
async def mock_provider(
    recorder: Recorder, *, app_code: str | None = APP_CODE, timeout: float = 2.0
) -> AsyncIterator[z.Zhiqite]:
    auth = (
        z.ZhiqiteAuth(app_code=app_code)
        if app_code
        else z.ZhiqiteAuth(access_key_id=KEY_ID, access_key_secret=KEY_SECRET)
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        yield z.Zhiqite(client, auth=auth, base_url=BASE + "/", timeout=httpx.Timeout(timeout))


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def gateway(status: int, message: str, code: str = "A403XX") -> httpx.Response:
    return httpx.Response(
        status, text="", headers={"X-Ca-Error-Code": code, "X-Ca-Error-Message": message}
    )


async def test_submit_request_shape_with_appcode() -> None:
    recorder = Recorder(json_response(fixture("submit_text2image")))
    async with mock_provider(recorder) as provider:
        submitted = await provider.submit(make_spec(n=4, business_id="bid-42"))
    request = recorder.requests[0]
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/AIGCImgOpenServ/saas/sd/v2/text2image"
    assert request.headers["authorization"] == f"APPCODE {APP_CODE}"
    assert request.headers["content-type"] == "application/json;charset=UTF-8"
    assert "x-request-req-accesskeyid" not in request.headers
    assert "一只猫".encode() in request.content  # UTF-8, not \u escapes
    body = recorder.body()
    assert body["batch_size"] == 4 and body["n_iter"] == 1
    assert body["alwayson_scripts"]["id_task"] == "bid-42"
    assert "callbackUrl" not in body
    assert submitted.job_id == "sd:bid-42" and submitted.eta_seconds


async def test_access_key_auth_headers() -> None:
    recorder = Recorder(json_response(fixture("submit_text2image")))
    async with mock_provider(recorder, app_code=None) as provider:
        await provider.submit(make_spec())
    headers = recorder.requests[0].headers
    assert headers["x-request-req-accesskeyid"] == KEY_ID
    assert headers["x-request-req-accesskeysecret"] == KEY_SECRET
    assert "authorization" not in headers


async def test_callback_url_is_sent_only_when_given() -> None:
    recorder = Recorder(json_response(fixture("submit_text2image")))
    async with mock_provider(recorder) as provider:
        await provider.submit(
            make_spec(callback_url="https://bot.example.test/callbacks/zhiqite/t")
        )
        await provider.submit(make_spec(Capability.UPSCALE, images=(image(),),
                                        callback_url="https://bot.example.test/cb"))
    assert recorder.body(0)["callbackUrl"] == "https://bot.example.test/callbacks/zhiqite/t"
    assert recorder.body(1)["callbackUrl"] == "https://bot.example.test/cb"


@pytest.mark.parametrize(
    ("capability", "path", "prefix"),
    [
        (Capability.TXT2IMG, "saas/sd/v2/text2image", "sd"),
        (Capability.IMG2IMG, "saas/sd/v2/image2image", "sd"),
        (Capability.FACESWAP, "saas/tool/roop", "roop"),
        (Capability.UPSCALE, "saas/tool/enhance", "enhance"),
    ],
)
async def test_job_id_for_matches_submit(capability: Capability, path: str, prefix: str) -> None:
    answer = {Capability.FACESWAP: "submit_roop", Capability.UPSCALE: "submit_enhance"}
    recorder = Recorder(json_response(fixture(answer.get(capability, "submit_text2image"))))
    spec = make_spec(capability, images=IMAGES_FOR[capability], business_id="b-77")
    async with mock_provider(recorder) as provider:
        submitted = await provider.submit(spec)
        assert submitted.job_id == provider.job_id_for(spec) == f"{prefix}:b-77"
        # A tool's submit answer carries an outputImageUrl: not taken as a result.
        assert submitted.state is None
    assert recorder.requests[0].url.path == f"/AIGCImgOpenServ/{path}"


async def test_request_bodies_for_image_capabilities() -> None:
    recorder = Recorder(json_response(ok({})))
    async with mock_provider(recorder) as provider:
        await provider.submit(make_spec(Capability.IMG2IMG, images=(image(width=900, height=600),)))
        await provider.submit(
            make_spec(Capability.FACESWAP, images=IMAGES_FOR[Capability.FACESWAP])
        )
        await provider.submit(make_spec(Capability.UPSCALE, images=(image(),)))
    img2img, roop, enhance = (recorder.body(i) for i in range(3))
    assert img2img["alwayson_scripts"]["image_link"] == f"{MEDIA}/tok-a"
    assert (img2img["width"], img2img["height"]) == (768, 512)
    assert img2img["denoising_strength"] == 0.55
    assert roop["sourceUrl"] == f"{MEDIA}/face" and roop["targetUrl"] == f"{MEDIA}/target"
    assert roop["businessTaskId"] == "task-0001"
    assert enhance["image"] == f"{MEDIA}/tok-a" and enhance["businessTaskId"] == "task-0001"


@pytest.mark.parametrize(
    ("capability", "images"),
    [
        (Capability.IMG2IMG, (image(url=None),)),
        (Capability.IMG2IMG, ()),
        (Capability.FACESWAP, (image(),)),
        (Capability.FACESWAP, (image(), image(url=None))),
        (Capability.UPSCALE, (image(url=None),)),
        (Capability.UPSCALE, (image(width=1600, height=100),)),
        (Capability.EDIT, ()),
    ],
)
async def test_unservable_specs_fail_before_any_request(
    capability: Capability, images: tuple[InputImage, ...]
) -> None:
    recorder = Recorder(json_response(ok({})))
    async with mock_provider(recorder) as provider:
        with pytest.raises(BadRequest):
            await provider.submit(make_spec(capability, images=images))
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("data", "status"),
    [
        ({"id_task": "b", "status": 3, "desc": "排队中"}, JobStatus.QUEUED),
        (running(1, "0.5"), JobStatus.RUNNING),
        (running(5, "1"), JobStatus.RUNNING),
        (result(item("https://o/x.png")), JobStatus.SUCCEEDED),
        ({"id_task": "b", "status": 0, "desc": "失败"}, JobStatus.FAILED),
    ],
)
async def test_poll_every_status(data: dict[str, Any], status: JobStatus) -> None:
    recorder = Recorder(json_response(ok(data)))
    async with mock_provider(recorder) as provider:
        state = await provider.poll("sd:b")
    assert state.status is status
    assert recorder.requests[0].url.path == "/AIGCImgOpenServ/saas/sd/v2/queryTaskInfo"
    assert recorder.body() == {"businessTaskId": "b"}


@pytest.mark.parametrize("tool", ["roop", "enhance"])
async def test_poll_tools_uses_their_query(tool: str) -> None:
    recorder = Recorder(json_response(fixture("tool_query_task")))
    async with mock_provider(recorder) as provider:
        state = await provider.poll(f"{tool}:100869960120240603")
    assert state.status is JobStatus.SUCCEEDED
    assert recorder.requests[0].url.path == f"/AIGCImgOpenServ/saas/tool/{tool}/queryTask"
    assert recorder.body() == {"businessTaskId": "100869960120240603"}


@pytest.mark.parametrize(
    "body",
    [
        {"code": "400", "msg": "任务不存在", "data": None},
        {"code": "200", "msg": "ok", "data": None},
    ],
)
async def test_poll_unknown_job(body: dict[str, Any]) -> None:
    recorder = Recorder(json_response(body))
    async with mock_provider(recorder) as provider:
        with pytest.raises(JobNotFound):
            await provider.poll("sd:nope")
        assert await provider.find_submitted(make_spec(business_id="nope")) is None


async def test_poll_foreign_id_sends_nothing() -> None:
    recorder = Recorder(json_response(ok({})))
    async with mock_provider(recorder) as provider:
        with pytest.raises(JobNotFound):
            await provider.poll("12345")
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (json_response({"code": "400", "msg": "prompt不能为空", "data": None}), BadRequest),
        (json_response({"code": "400", "msg": "提示词包含敏感词"}), ContentRejected),
        (gateway(403, "Quota Exhausted", "A403QE"), QuotaExceeded),
        (gateway(403, "Throttled by APP Flow Control", "A403AR"), RateLimited),
        (gateway(403, "Invalid AppCode `not exists`"), AuthError),
        (gateway(400, "Invalid AppKey", "A400IK"), AuthError),
        (httpx.Response(500, text="Internal Server Error"), Unavailable),
        (httpx.Response(502, text="<html>bad gateway</html>"), Unavailable),
        (httpx.Response(200, text="<html>oops</html>"), MalformedResponse),
        (httpx.Response(200, json=["not", "an", "object"]), MalformedResponse),
        (httpx.ReadTimeout("read timed out"), VendorTimeout),
        (httpx.ConnectTimeout("connect timed out"), VendorTimeout),
        (httpx.ConnectError(f"cannot reach {BASE}/?appcode={APP_CODE}"), Unavailable),
        (httpx.RemoteProtocolError("peer closed"), Unavailable),
    ],
)
async def test_errors_are_mapped_and_leak_nothing(
    answer: httpx.Response | Exception, error: type[ProviderError], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="providers.zhiqite")
    recorder = Recorder(answer)
    # On a query, body code 400 means "unknown task" (ASSUMED), tested above.
    body_code_error = error in (BadRequest, ContentRejected)
    async with mock_provider(recorder) as provider:
        calls = [provider.submit(make_spec())]
        if not body_code_error:
            calls.append(provider.poll("sd:b"))
        for call in calls:
            with pytest.raises(error) as info:
                await call
            text = f"{info.value} {info.value.vendor_message}"
            assert APP_CODE not in text and "zhiqite.example.test" not in text
            assert not isinstance(info.value.__cause__, httpx.HTTPError)
    assert APP_CODE not in caplog.text and "zhiqite.example.test" not in caplog.text
    if isinstance(answer, httpx.Response):
        assert caplog.records, "the vendor's words are logged"


async def test_throttled_carries_retry_after() -> None:
    recorder = Recorder(gateway(403, "Throttled by USER Flow Control"))
    async with mock_provider(recorder) as provider:
        with pytest.raises(RateLimited) as info:
            await provider.poll("sd:b")
    assert info.value.retry_after == z.ASSUMED.throttle_retry_after
    assert info.value.transient


async def test_echoed_credentials_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="providers.zhiqite")
    recorder = Recorder(gateway(403, f"Invalid AppCode `{APP_CODE}`"))
    async with mock_provider(recorder) as provider:
        with pytest.raises(AuthError) as info:
            await provider.submit(make_spec())
    assert APP_CODE not in info.value.vendor_message and "***" in info.value.vendor_message
    assert APP_CODE not in caplog.text


async def test_list_models() -> None:
    recorder = Recorder(json_response(fixture("query_embedding_list")))
    async with mock_provider(recorder) as provider:
        page = await provider.list_models("embedding", page=1, page_size=10)
        with pytest.raises(BadRequest):
            await provider.list_models("checkpoints")
    assert page.total == 10 and page.rows[0]["embeddingSimplifyName"] == "FastNegativeV2"
    assert recorder.requests[0].url.path == "/AIGCImgOpenServ/saas/sd/v2/queryEmbeddingList"
    assert recorder.body() == {"pageNum": 1, "pageSize": 10}


async def test_probe() -> None:
    async with mock_provider(Recorder(json_response(ok({"rows": [], "total": 0})))) as provider:
        assert await provider.probe() == "ok"
    async with mock_provider(Recorder(gateway(403, "Quota Exhausted"))) as provider:
        assert await provider.probe() == QuotaExceeded.kind


def settings_ns(**values: Any) -> SimpleNamespace:
    base = {"zhiqite_app_code": None, "zhiqite_access_key_id": None,
            "zhiqite_access_key_secret": None, "zhiqite_base_url": BASE + "/"}
    base.update({k: SecretStr(v) if isinstance(v, str) and k != "zhiqite_base_url" else v
                 for k, v in values.items()})
    return SimpleNamespace(**base)


async def test_from_settings() -> None:
    async with httpx.AsyncClient() as client:
        assert z.Zhiqite.from_settings(settings_ns(), client) is None
        with pytest.raises(CredentialError, match="ZHIQITE_ACCESS_KEY_SECRET"):
            z.Zhiqite.from_settings(settings_ns(zhiqite_access_key_id=KEY_ID), client)
        by_code = z.Zhiqite.from_settings(settings_ns(zhiqite_app_code=APP_CODE), client)
        by_key = z.Zhiqite.from_settings(
            settings_ns(zhiqite_access_key_id=KEY_ID, zhiqite_access_key_secret=KEY_SECRET), client
        )
    assert by_code is not None and by_key is not None
    assert by_code.base_url == BASE and by_code.client is client
    assert APP_CODE not in repr(by_code.auth) and KEY_SECRET not in repr(by_key.auth)


async def test_base_url_follows_the_credential_mode() -> None:
    # The APP code belongs to the Aliyun market host, the access key to the vendor's own.
    async with httpx.AsyncClient() as client:
        by_code = z.Zhiqite.from_settings(settings_ns(zhiqite_app_code=APP_CODE, zhiqite_base_url=""), client)
        by_key = z.Zhiqite.from_settings(settings_ns(
            zhiqite_access_key_id=KEY_ID, zhiqite_access_key_secret=KEY_SECRET, zhiqite_base_url=""), client)
        explicit = z.Zhiqite.from_settings(settings_ns(zhiqite_app_code=APP_CODE, zhiqite_base_url=BASE), client)
    assert by_code is not None and by_code.base_url == "https://zhiqite.market.alicloudapi.com"
    assert by_key is not None and by_key.base_url == "https://api.zhiqite.com"
    assert explicit is not None and explicit.base_url == BASE


def test_class_attributes() -> None:
    p = z.Zhiqite
    assert p.id == "zhiqite" and p.supports_callbacks and p.callback_answer == {"code": "200"}
    assert p.capabilities == {Capability.TXT2IMG, Capability.IMG2IMG,
                              Capability.FACESWAP, Capability.UPSCALE}
    assert p.needs_public_url == {Capability.IMG2IMG, Capability.FACESWAP, Capability.UPSCALE}
    assert p.max_images == 4 and p.image_input == "url"


# =========================================================================== #
# End to end against FakeZhiqite over loopback HTTP
# =========================================================================== #


# One fake vendor, one /media server and one callback receiver serve every
# test below (a loopback server costs ~0.1 s to stop); FakeZhiqite.reset()
# restores the fake's options between tests and ids are unique per test.

loopback = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Receiver:
    """The bot's /callbacks endpoint: answers from ``answers`` (then the last)."""

    answers: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        self.received.append(await request.json())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return JSONResponse(answer)


@dataclass
class Loopback:
    fake: FakeZhiqite
    base_url: str
    client: httpx.AsyncClient
    files: dict[str, bytes]  # served at {media}/<name>
    media: str
    receiver: Receiver
    callback_url: str

    def provider(
        self,
        *,
        app_code: str | None = "test-app-code",
        key_secret: str = "test-key-secret",
        timeout: float = 2.0,
    ) -> z.Zhiqite:
        auth = (z.ZhiqiteAuth(app_code=app_code) if app_code
                else z.ZhiqiteAuth(access_key_id="test-key-id", access_key_secret=key_secret))
        return z.Zhiqite(self.client, auth=auth, base_url=self.base_url,
                         timeout=httpx.Timeout(timeout))

    def input(self, name: str, data: bytes) -> InputImage:
        self.files[name] = data
        return input_image(data, url=f"{self.media}/{name}")


class _TcpSockets:
    """The socket module, but socket.socket() says IPPROTO_TCP. serve() binds
    socket.socket(AF_INET, SOCK_STREAM), whose proto 0 makes asyncio skip
    TCP_NODELAY on accepted connections: uvicorn's two writes per response
    then wait ~40 ms for a delayed ACK. Harmless once serve() passes it."""

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)

    @staticmethod
    def socket(family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,  # noqa: A002
               proto: int = 0) -> socket.socket:
        return socket.socket(family, type, proto or socket.IPPROTO_TCP)


@contextlib.asynccontextmanager
async def serve_nodelay(app: Any) -> AsyncIterator[str]:
    async with contextlib.AsyncExitStack() as stack:
        with mock.patch.object(fake_server, "socket", _TcpSockets()):
            base_url = await stack.enter_async_context(serve(app))
        yield base_url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def loopback_stack() -> AsyncIterator[Loopback]:
    fake = FakeZhiqite(queue_seconds=0.03, run_seconds=0.06, upload_seconds=0.01)
    files: dict[str, bytes] = {}
    receiver = Receiver(answers=[{"code": "200"}])

    async def media(request: Request) -> Response:
        data = files.get(request.path_params["name"])
        return Response(data, media_type="image/png") if data else Response(status_code=404)

    bot = Starlette(routes=[
        Route("/media/{name}", media),
        Route("/callbacks/zhiqite/{token}", receiver.endpoint, methods=["POST"]),
    ])
    try:
        async with (
            serve_nodelay(fake.app) as base_url,
            serve_nodelay(bot) as bot_url,
            httpx.AsyncClient() as client,
        ):
            yield Loopback(fake, base_url, client, files, f"{bot_url}/media", receiver,
                           f"{bot_url}/callbacks/zhiqite/token")
    finally:
        await fake.aclose()


@pytest.fixture
def env(loopback_stack: Loopback) -> Loopback:
    loopback_stack.fake.reset()
    loopback_stack.receiver.answers[:] = [{"code": "200"}]
    loopback_stack.receiver.received.clear()
    return loopback_stack


async def poll_until_done(provider: z.Zhiqite, job_id: str, timeout: float = 3.0) -> list[JobState]:
    states: list[JobState] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        states.append(await provider.poll(job_id))
        if states[-1].finished:
            return states
        await asyncio.sleep(0.005)
    raise AssertionError(f"not finished: {states[-1] if states else None}")


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.005)


@loopback
async def test_fake_txt2img_end_to_end(env: Loopback) -> None:
    provider = env.provider()
    submitted = await provider.submit(make_spec(n=2, width=640, height=480, business_id="e2e-1"))
    states = await poll_until_done(provider, submitted.job_id)
    assert {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED} <= {s.status for s in states}
    previews = [s.preview for s in states if s.preview]
    assert previews and Image.open(io.BytesIO(previews[0])).format == "PNG"
    assert any(0 < (s.progress or 0) < 1 for s in states if s.status is JobStatus.RUNNING)
    final = states[-1]
    assert final.status is JobStatus.SUCCEEDED and len(final.images) == 2
    for result_image in final.images:
        response = await env.client.get(result_image.url)
        assert response.status_code == 200
        assert Image.open(io.BytesIO(response.content)).size == (640, 480)
        assert result_image.seed is not None
    assert env.fake.api_requests("text2image")[0].body["alwayson_scripts"]["id_task"] == "e2e-1"


@loopback
async def test_fake_preview_as_data_uri(env: Loopback) -> None:
    env.fake.preview_as_data_uri = True
    env.fake.run_seconds = 5
    provider = env.provider()
    submitted = await provider.submit(make_spec(business_id="uri-1"))
    env.fake.advance(env.fake.queue_seconds + 1)
    state = await provider.poll(submitted.job_id)
    assert state.status is JobStatus.RUNNING and 0.1 < state.progress < 0.5
    assert Image.open(io.BytesIO(state.preview)).format == "PNG"


@loopback
async def test_fake_access_key_mode_and_lists(env: Loopback) -> None:
    provider = env.provider(app_code=None)
    page = await provider.list_models("model", page=1, page_size=2)
    assert page.total == 3 and len(page.rows) == 2
    assert z.ASSUMED.default_model in {r["sdModelCheckpoint"] for r in page.rows}
    for kind in ("lora", "vae", "embedding"):
        assert (await provider.list_models(kind)).rows
    assert await provider.probe() == "ok"


@loopback
async def test_fake_rejects_wrong_credentials(env: Loopback) -> None:
    for provider in (env.provider(app_code="wrong-code"),
                     env.provider(app_code=None, key_secret="wrong-secret")):
        with pytest.raises(AuthError):
            await provider.submit(make_spec(business_id="creds"))
    assert "sd:creds" not in env.fake.jobs


@loopback
async def test_fake_checks_the_model_and_required_fields(env: Loopback) -> None:
    provider = env.provider()
    with pytest.raises(BadRequest, match="模型不存在"):
        await provider.submit(make_spec(model="no-such-model", business_id="m-1"))
    with pytest.raises(BadRequest, match="prompt"):
        await provider.submit(make_spec(prompt="   ", business_id="m-2"))


@loopback
async def test_fake_callback_is_retried_until_answered_properly(env: Loopback) -> None:
    env.fake.callback_delay_scale = 0.01
    env.receiver.answers[:] = [{"code": "500", "msg": "not yet"}, dict(z.Zhiqite.callback_answer)]
    provider = env.provider()
    submitted = await provider.submit(make_spec(business_id="cb-1", callback_url=env.callback_url))
    attempts = await env.fake.wait_for_callbacks(2)
    await asyncio.sleep(0.05)  # no further attempt once accepted
    assert [a.accepted for a in env.fake.callbacks] == [False, True]
    assert attempts[1].at - attempts[0].at >= 3 * 0.01 * 0.9  # first step of 3, 5, 15, ...
    state = provider.parse_callback(env.receiver.received[-1], submitted.job_id)
    assert state.status is JobStatus.SUCCEEDED and state.images


@loopback
async def test_fake_callback_gives_up_after_ten_retries(env: Loopback) -> None:
    env.fake.callback_delay_scale = 0.00001  # 3 s → 30 µs … 3600 s → 36 ms
    env.receiver.answers[:] = [{"code": "400"}]
    provider = env.provider()
    await provider.submit(make_spec(business_id="cb-2", callback_url=env.callback_url))
    await env.fake.wait_for_callbacks(11)
    await asyncio.sleep(0.05)
    assert len(env.fake.callbacks) == 11 and not any(a.accepted for a in env.fake.callbacks)


@loopback
async def test_fake_callback_bare_shape_for_a_tool(env: Loopback) -> None:
    env.fake.callback_shape = "bare"
    provider = env.provider()
    spec = make_spec(Capability.UPSCALE, images=(env.input("photo-cb", png(80, 60)),),
                     business_id="up-cb", callback_url=env.callback_url)
    submitted = await provider.submit(spec)
    await env.fake.wait_for_callbacks(1)
    state = provider.parse_callback(env.receiver.received[0], submitted.job_id)
    assert state.status is JobStatus.SUCCEEDED


@loopback
async def test_fake_result_urls_expire(env: Loopback) -> None:
    env.fake.url_ttl = 60
    provider = env.provider()
    submitted = await provider.submit(make_spec(business_id="exp-1"))
    env.fake.finish(submitted.job_id)
    url = (await provider.poll(submitted.job_id)).images[0].url
    assert (await env.client.get(url)).status_code == 200
    env.fake.advance(61)
    assert (await env.client.get(url)).status_code in (403, 404)


@loopback
async def test_fake_img2img_fetches_the_input_url(env: Loopback) -> None:
    provider = env.provider()
    photo = env.input("photo-1", png(300, 200))
    submitted = await provider.submit(make_spec(Capability.IMG2IMG, business_id="i2i-1",
                                                images=(photo,)))
    final = (await poll_until_done(provider, submitted.job_id))[-1]
    assert final.status is JobStatus.SUCCEEDED
    assert env.fake.fetched_urls() == [photo.url] and env.fake.fetches[0].ok
    picture = Image.open(io.BytesIO((await env.client.get(final.images[0].url)).content))
    assert picture.size == (768, 512)  # the input photo's 3:2 shape


@loopback
async def test_fake_img2img_with_unreachable_input_fails(env: Loopback) -> None:
    provider = env.provider()
    gone = input_image(png(), url=f"{env.media}/gone")
    submitted = await provider.submit(make_spec(Capability.IMG2IMG, business_id="i2i-2",
                                                images=(gone,)))
    env.fake.finish(submitted.job_id)
    state = await provider.poll(submitted.job_id)
    assert state.status is JobStatus.FAILED and state.error_detail
    assert not env.fake.fetches[0].ok


@loopback
async def test_fake_faceswap_and_upscale(env: Loopback) -> None:
    provider = env.provider()
    face = env.input("face", png(100, 100, (250, 200, 150)))
    target = env.input("target", png(120, 90, (20, 40, 60)))
    swap = await provider.submit(make_spec(Capability.FACESWAP, business_id="fs-1",
                                           images=(face, target)))
    up = await provider.submit(make_spec(Capability.UPSCALE, business_id="up-1", images=(target,)))
    assert env.fake.api_requests("saas/tool/roop")[0].body["sourceUrl"] == face.url
    # The tool's submit answer already named a URL that does not exist yet.
    assert (await provider.poll(up.job_id)).status is JobStatus.RUNNING
    swapped = (await poll_until_done(provider, swap.job_id))[-1]
    upscaled = (await poll_until_done(provider, up.job_id))[-1]
    for state, size in ((swapped, (120, 90)), (upscaled, (240, 180))):
        assert state.status is JobStatus.SUCCEEDED
        content = (await env.client.get(state.images[0].url)).content
        assert Image.open(io.BytesIO(content)).size == size


@loopback
async def test_fake_tool_failure(env: Loopback) -> None:
    provider = env.provider()
    env.fake.fail_job_next("换脸失败：未检测到人脸")
    submitted = await provider.submit(make_spec(
        Capability.FACESWAP, business_id="fs-2",
        images=(env.input("f2", png()), env.input("t2", png()))))
    env.fake.finish(submitted.job_id)
    assert (await provider.poll(submitted.job_id)).status is JobStatus.FAILED


@loopback
async def test_fake_duplicate_submit_and_find_submitted(env: Loopback) -> None:
    provider = env.provider()
    spec = make_spec(business_id="dup-1")
    assert await provider.find_submitted(spec) is None
    await provider.submit(spec)
    with pytest.raises(BadRequest):
        await provider.submit(spec)
    assert await provider.find_submitted(spec) == "sd:dup-1"
    with pytest.raises(JobNotFound):
        await provider.poll("roop:dup-1")


@loopback
async def test_fake_moderation_and_failure(env: Loopback) -> None:
    provider = env.provider()
    env.fake.moderate_next()
    all_gone = await provider.submit(make_spec(n=2, business_id="mod-1"))
    env.fake.moderate_next(indices=[0], mode="hidden")
    one_left = await provider.submit(make_spec(n=2, business_id="mod-2"))
    env.fake.fail_job_next("生成失败")
    failed = await provider.submit(make_spec(business_id="fail-1"))
    for job_id in (all_gone.job_id, one_left.job_id, failed.job_id):
        env.fake.finish(job_id)
    state = await provider.poll(all_gone.job_id)
    assert state.status is JobStatus.FAILED and state.error_kind == ContentRejected.kind
    state = await provider.poll(one_left.job_id)
    assert state.status is JobStatus.SUCCEEDED and len(state.images) == 1
    state = await provider.poll(failed.job_id)
    assert state.status is JobStatus.FAILED and state.error_detail == "生成失败"


@loopback
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("http500", Unavailable),
        ("malformed", MalformedResponse),
        ("quota", QuotaExceeded),
        ("throttled", RateLimited),
        ("auth", AuthError),
        ("code400", BadRequest),
        ("sensitive", ContentRejected),
        ("timeout", VendorTimeout),
    ],
)
async def test_fake_faults(env: Loopback, fault: str, error: type[ProviderError]) -> None:
    env.fake.timeout_seconds = 0.15
    provider = env.provider(timeout=0.05)
    env.fake.fail_next(fault)
    spec = make_spec(business_id=f"fault-{fault}")
    with pytest.raises(error):
        await provider.submit(spec)
    if fault == "timeout":  # the vendor took the job although we gave up waiting
        await eventually(lambda: "sd:fault-timeout" in env.fake.jobs)
        assert await provider.find_submitted(spec) == "sd:fault-timeout"
    else:  # a one-off: the same submit goes through now
        assert (await provider.submit(spec)).job_id == f"sd:fault-{fault}"


@loopback
async def test_fake_fault_on_queries_only(env: Loopback) -> None:
    provider = env.provider()
    env.fake.fail_next("throttled", times=2, path="queryTaskInfo")
    submitted = await provider.submit(make_spec(business_id="q-fault"))
    for _ in range(2):
        with pytest.raises(RateLimited):
            await provider.poll(submitted.job_id)
    assert isinstance(await provider.poll(submitted.job_id), JobState)


@loopback
async def test_fake_sees_credentials_only_in_the_auth_header(env: Loopback) -> None:
    provider = env.provider()
    submitted = await provider.submit(make_spec(
        Capability.IMG2IMG, business_id="leak-1", images=(env.input("leak", png()),)))
    await poll_until_done(provider, submitted.job_id)
    requests = env.fake.api_requests()
    assert requests
    for request in requests:
        assert request.headers["authorization"] == "APPCODE test-app-code"
        assert request.headers["content-type"] == "application/json;charset=UTF-8"
        other = {k: v for k, v in request.headers.items() if k != "authorization"}
        seen = json.dumps(other) + json.dumps(request.body, ensure_ascii=False)
        assert "test-app-code" not in seen
