"""zhiqite adapter: pure transforms, the HTTP boundary (httpx.MockTransport),
and end to end against FakeZhiqite over loopback HTTP."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import SecretStr

from providers import zhiqite as z
from providers.base import PollPolicy
from providers.credentials import CredentialError
from providers.errors import (AuthError, BadRequest, ContentRejected, JobNotFound,
                              MalformedResponse, ProviderError, QuotaExceeded, RateLimited,
                              Unavailable, VendorTimeout)
from providers.types import Capability, GenerationParams, InputImage, JobState, JobStatus
from tests.fakes.zhiqite import FakeZhiqite
from tests.vendor_kit import (Recorder, VendorStack, eventually, fixture, input_image,
                              json_response, loopback, loopback_fixture, make_provider,
                              make_spec, mock_provider, png, poll_until_done)

APP_CODE = "app-code-SECRET-1234"
KEY_ID = "key-id-SECRET-5678"
KEY_SECRET = "key-secret-SECRET-9abc"
BASE = "https://zhiqite.example.test"
MEDIA = "https://bot.example.test/media"
BY_APP_CODE = {"zhiqite_app_code": APP_CODE}
BY_ACCESS_KEY = {"zhiqite_access_key_id": KEY_ID, "zhiqite_access_key_secret": KEY_SECRET}

PHOTO = input_image(url=f"{MEDIA}/tok-a")
IMAGES_FOR = {
    Capability.TXT2IMG: (),
    Capability.IMG2IMG: (PHOTO,),
    Capability.FACESWAP: (input_image(url=f"{MEDIA}/face"), input_image(url=f"{MEDIA}/target")),
    Capability.UPSCALE: (PHOTO,),
}


def sample(name: str) -> dict[str, Any]:
    return fixture("zhiqite", name)


def ok(data: Any) -> dict[str, Any]:
    return {"code": "200", "msg": "success", "data": data}


def zhiqite(recorder: Recorder, *, base_url: str = BASE + "/", timeout: float = 2.0,
            **settings: Any) -> Any:
    """The adapter over ``recorder``, built from these settings (default: an APP code)."""
    return mock_provider(z.Zhiqite, recorder, base_url, timeout=timeout,
                         **(settings or BY_APP_CODE))


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
    spec = make_spec(Capability.IMG2IMG, images=(PHOTO,))
    body = z.build_sd_body(spec.params, "b", size=(512, 512), image_link=f"{MEDIA}/tok-a")
    assert body["alwayson_scripts"]["image_link"] == f"{MEDIA}/tok-a"
    assert body["denoising_strength"] == 0.55
    spec = make_spec(Capability.IMG2IMG, strength=0.8)
    body = z.build_sd_body(spec.params, "b", size=(512, 512), image_link="https://x/y")
    assert body["denoising_strength"] == 0.8


def test_img2img_keeps_the_input_photo_shape_unless_told_otherwise() -> None:
    photo = (1200, 800)
    assert z.img2img_size(GenerationParams(), photo) == (768, 512)
    assert z.img2img_size(GenerationParams(), (300, 900)) == (256, 768)
    assert z.img2img_size(GenerationParams(aspect_ratio="1:2"), photo) == (384, 768)
    assert z.img2img_size(GenerationParams(width=640, height=640), photo) == (640, 640)
    assert z.img2img_size(GenerationParams(), None) == (768, 768)
    assert z.img2img_size(GenerationParams(), (0, 0)) == (768, 768)


def test_tool_bodies() -> None:
    assert z.build_roop_body("https://f", "https://t", "b1") == {
        "sourceUrl": "https://f", "targetUrl": "https://t", "businessTaskId": "b1",
    }
    body = z.build_enhance_body("https://i", "b2", "https://cb")
    assert body["image"] == "https://i" and body["businessTaskId"] == "b2"
    assert body["upscalingResize"] == 2 and body["upscaler1"] == "ESRGAN_4x"
    assert body["callbackUrl"] == "https://cb"
    assert "callbackUrl" not in z.build_enhance_body("https://i", "b2")


def test_enhance_input_size_uses_the_measured_image() -> None:
    # [seed] 图片长宽需小于等于1536: the engine's width/height, no decoding here.
    z.check_enhance_input(input_image(b"opaque", width=1536, height=1536))
    with pytest.raises(BadRequest, match="1537x10"):
        z.check_enhance_input(input_image(b"opaque", width=1537, height=10))


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
    # [seed] progress is a string "0~1"; numbers and percentages are tolerated.
    progress = z.parse_task_info(running(1, raw)).progress
    assert progress == (pytest.approx(expected) if expected is not None else None)


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
    state = z.parse_task_info(sample("query_task_info_success")["data"])
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
    # The seed's queryTask example: status 2 *with* a result URL is done.
    state = z.parse_tool_task(sample("tool_query_task")["data"])
    assert state.status is JobStatus.SUCCEEDED
    assert state.images[0].url.endswith("/roop/pro1703734845555845969817.png")


@pytest.mark.parametrize("status", [2, "2"])
def test_tool_query_status_2_without_a_url_is_a_failure(status: Any) -> None:
    # [seed] queryTask table: "status 任务状态 1.成功, 2.失败"; the seed's own
    # queryTask sample, before its result exists.
    data = {**sample("tool_query_task")["data"], "status": status, "outputImageUrl": ""}
    state = z.parse_tool_task(data)
    assert state.status is JobStatus.FAILED and state.error_kind == ProviderError.kind
    del data["outputImageUrl"]
    assert z.parse_tool_task(data).status is JobStatus.FAILED


@pytest.mark.parametrize("status", [0, "0"])
def test_tool_query_failed_on_status_0(status: Any) -> None:
    # [seed] the enhance page's table: "1:生成中 2:成功 0:失败"; its sample's fields.
    data = {"businessTaskId": "1008464122", "outputImageUrl": "", "status": status,
            "taskId": "test1705047542608738174022"}
    assert z.parse_tool_task(data).status is JobStatus.FAILED


@pytest.mark.parametrize("status", [1, "1", 3, None])
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
    assert z.checked_body(sample("submit_text2image"))["data"]["task_id"] == "pro1686666"


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
    assert f"HTTP {status}" in exc.vendor_message and message in exc.vendor_message
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
    state = z.parse_callback_payload(sample("query_task_info_success"), "sd:test10086555513")
    assert state.status is JobStatus.SUCCEEDED and state.images


def test_callback_bare_sd() -> None:
    state = z.parse_callback_payload({"id_task": "b9", "status": 0, "desc": "失败"}, "sd:b9")
    assert state.status is JobStatus.FAILED and state.error_detail == "失败"


def test_callback_tool_envelope() -> None:
    payload = ok({"businessTaskId": "b7", "toolTask": "enhance", "status": 0, "outputImageUrl": ""})
    assert z.parse_callback_payload(payload, "enhance:b7").status is JobStatus.FAILED


@pytest.mark.parametrize("kind", ["roop", "enhance"])
def test_callback_tool_kind_comes_from_the_job_id(kind: str) -> None:
    # Neither `toolTask` nor a tool name in the URL's path: the job id says the kind.
    payload = {"businessTaskId": "b8", "status": 1, "outputImageUrl": "https://o/x.png",
               "taskId": "t"}
    state = z.parse_callback_payload(payload, f"{kind}:b8")
    assert state.status is JobStatus.SUCCEEDED and state.images[0].url == "https://o/x.png"


@pytest.mark.parametrize(
    ("payload", "job_id"),
    [
        (sample("query_task_info_success"), "sd:another-task"),
        (sample("tool_query_task"), "roop:another-task"),
        ({"businessTaskId": "b", "status": 0}, "enhance:c"),
        ({"id_task": "b", "businessTaskId": "c", "status": 0}, "sd:c"),
    ],
)
def test_callback_naming_another_task_is_not_found(payload: dict[str, Any], job_id: str) -> None:
    with pytest.raises(JobNotFound):
        z.parse_callback_payload(payload, job_id)


@pytest.mark.parametrize(
    "payload",
    [{}, {"code": "200", "data": None}, {"status": 2, "outputImageUrl": "https://o/roop/x.png"}],
)
def test_callback_that_names_no_task_is_malformed(payload: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponse):
        z.parse_callback_payload(payload, "roop:b")


def test_callback_for_a_foreign_job_id_is_not_found() -> None:
    with pytest.raises(JobNotFound):
        z.parse_callback_payload(sample("tool_query_task"), "100869960120240603")


# =========================================================================== #
# The adapter over httpx.MockTransport
# =========================================================================== #


def gateway(status: int, message: str, code: str = "A403XX") -> httpx.Response:
    return httpx.Response(
        status, text="", headers={"X-Ca-Error-Code": code, "X-Ca-Error-Message": message}
    )


async def test_submit_request_shape_with_appcode() -> None:
    recorder = Recorder(json_response(sample("submit_text2image")))
    async with zhiqite(recorder) as provider:
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
    recorder = Recorder(json_response(sample("submit_text2image")))
    async with zhiqite(recorder, **BY_ACCESS_KEY) as provider:
        await provider.submit(make_spec())
    headers = recorder.requests[0].headers
    assert headers["x-request-req-accesskeyid"] == KEY_ID
    assert headers["x-request-req-accesskeysecret"] == KEY_SECRET
    assert "authorization" not in headers


@pytest.mark.parametrize(
    ("settings", "host"),
    [(BY_APP_CODE, "zhiqite.market.alicloudapi.com"), (BY_ACCESS_KEY, "api.zhiqite.com")],
)
async def test_requests_go_to_the_host_of_the_credential_mode(
    settings: dict[str, str], host: str
) -> None:
    recorder = Recorder(json_response(sample("submit_text2image")))
    async with zhiqite(recorder, base_url="", **settings) as provider:
        await provider.submit(make_spec())
    assert str(recorder.requests[0].url) == f"https://{host}/AIGCImgOpenServ/saas/sd/v2/text2image"


async def test_callback_url_is_sent_only_when_given() -> None:
    recorder = Recorder(json_response(sample("submit_text2image")))
    async with zhiqite(recorder) as provider:
        await provider.submit(
            make_spec(callback_url="https://bot.example.test/callbacks/zhiqite/t")
        )
        await provider.submit(make_spec(Capability.UPSCALE, images=(PHOTO,),
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
    recorder = Recorder(json_response(sample(answer.get(capability, "submit_text2image"))))
    spec = make_spec(capability, images=IMAGES_FOR[capability], business_id="b-77")
    async with zhiqite(recorder) as provider:
        submitted = await provider.submit(spec)
        assert submitted.job_id == provider.job_id_for(spec) == f"{prefix}:b-77"
        # A tool's submit answer carries an outputImageUrl: not taken as a result.
        assert submitted.state is None
    assert recorder.requests[0].url.path == f"/AIGCImgOpenServ/{path}"


async def test_request_bodies_for_image_capabilities() -> None:
    recorder = Recorder(json_response(ok({})))
    async with zhiqite(recorder) as provider:
        # The engine's measured size decides the img2img shape (no decoding).
        wide = input_image(b"opaque", url=f"{MEDIA}/tok-a", width=900, height=600)
        await provider.submit(make_spec(Capability.IMG2IMG, images=(wide,)))
        await provider.submit(
            make_spec(Capability.FACESWAP, images=IMAGES_FOR[Capability.FACESWAP])
        )
        await provider.submit(make_spec(Capability.UPSCALE, images=(PHOTO,)))
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
        (Capability.IMG2IMG, (input_image(),)),
        (Capability.IMG2IMG, ()),
        (Capability.FACESWAP, (PHOTO,)),
        (Capability.FACESWAP, (PHOTO, input_image())),
        (Capability.UPSCALE, (input_image(),)),
        (Capability.UPSCALE, (input_image(b"opaque", url=f"{MEDIA}/big", width=1600, height=100),)),
        (Capability.EDIT, ()),
    ],
)
async def test_unservable_specs_fail_before_any_request(
    capability: Capability, images: tuple[InputImage, ...]
) -> None:
    recorder = Recorder(json_response(ok({})))
    async with zhiqite(recorder) as provider:
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
    async with zhiqite(recorder) as provider:
        state = await provider.poll("sd:b")
    assert state.status is status
    assert recorder.requests[0].url.path == "/AIGCImgOpenServ/saas/sd/v2/queryTaskInfo"
    assert recorder.body() == {"businessTaskId": "b"}


@pytest.mark.parametrize("tool", ["roop", "enhance"])
async def test_poll_tools_uses_their_query(tool: str) -> None:
    recorder = Recorder(json_response(sample("tool_query_task")))
    async with zhiqite(recorder) as provider:
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
    async with zhiqite(recorder) as provider:
        with pytest.raises(JobNotFound):
            await provider.poll("sd:nope")
        assert await provider.find_submitted(make_spec(business_id="nope")) is None


async def test_poll_foreign_id_sends_nothing() -> None:
    recorder = Recorder(json_response(ok({})))
    async with zhiqite(recorder) as provider:
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
    caplog.set_level(logging.DEBUG, logger="providers")
    recorder = Recorder(answer)
    # On a query, body code 400 means "unknown task" (ASSUMED), tested above.
    body_code_error = error in (BadRequest, ContentRejected)
    async with zhiqite(recorder) as provider:
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
    async with zhiqite(recorder) as provider:
        with pytest.raises(RateLimited) as info:
            await provider.poll("sd:b")
    assert info.value.retry_after == z.ASSUMED.throttle_retry_after
    assert info.value.transient


async def test_echoed_credentials_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="providers")
    recorder = Recorder(gateway(403, f"Invalid AppCode `{APP_CODE}`"))
    async with zhiqite(recorder) as provider:
        with pytest.raises(AuthError) as info:
            await provider.submit(make_spec())
    assert APP_CODE not in info.value.vendor_message and "***" in info.value.vendor_message
    assert APP_CODE not in caplog.text


async def test_probe_spends_no_paid_call() -> None:
    recorder = Recorder(gateway(403, "Quota Exhausted"))
    async with zhiqite(recorder) as provider:
        assert await provider.probe() == "reachable (HTTP 403)"
    assert [(r.method, str(r.url)) for r in recorder.requests] == [("GET", BASE)]


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
        by_key = z.Zhiqite.from_settings(settings_ns(**BY_ACCESS_KEY), client)
    assert by_code is not None and by_key is not None
    assert by_code.base_url == BASE and by_code.client is client
    for shown in (repr(by_code), repr(by_code.auth), repr(by_key), repr(by_key.auth)):
        assert APP_CODE not in shown and KEY_ID not in shown and KEY_SECRET not in shown


async def test_base_url_follows_the_credential_mode() -> None:
    # [public] The APP code belongs to the Aliyun market host, the access key
    # to the vendor's own; an explicit ZHIQITE_BASE_URL wins over both.
    async with httpx.AsyncClient() as client:
        by_code = z.Zhiqite.from_settings(
            settings_ns(zhiqite_app_code=APP_CODE, zhiqite_base_url=""), client)
        by_key = z.Zhiqite.from_settings(settings_ns(**BY_ACCESS_KEY, zhiqite_base_url=""), client)
        explicit = [z.Zhiqite.from_settings(settings_ns(**mode, zhiqite_base_url=BASE), client)
                    for mode in (BY_APP_CODE, BY_ACCESS_KEY)]
    assert by_code is not None and by_code.base_url == "https://zhiqite.market.alicloudapi.com"
    assert by_key is not None and by_key.base_url == "https://api.zhiqite.com"
    assert [p.base_url for p in explicit if p is not None] == [BASE, BASE]


def test_polling_waits_for_an_overdue_callback() -> None:
    # [seed] each query is one more paid call (会多消耗一次接口请求次数).
    assert z.Zhiqite.poll_policy == PollPolicy(callback_silence_seconds=90.0,
                                               min_interval_seconds=5.0)


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

loopback_stack, env = loopback_fixture(
    lambda: FakeZhiqite(queue_seconds=0.03, run_seconds=0.06, upload_seconds=0.01), z.Zhiqite)
FAKE_APP_CODE = {"zhiqite_app_code": "test-app-code"}
FAKE_ACCESS_KEY = {"zhiqite_access_key_id": "test-key-id",
                   "zhiqite_access_key_secret": "test-key-secret"}


def provider_for(env: VendorStack, timeout: float = 2.0, **settings: Any) -> z.Zhiqite:
    return make_provider(z.Zhiqite, env.client, env.base_url, timeout=timeout,
                         **(settings or FAKE_APP_CODE))


@loopback
async def test_fake_txt2img_end_to_end(env: VendorStack) -> None:
    provider = provider_for(env)
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
async def test_fake_preview_as_data_uri(env: VendorStack) -> None:
    env.fake.preview_as_data_uri = True
    env.fake.run_seconds = 5
    provider = provider_for(env)
    submitted = await provider.submit(make_spec(business_id="uri-1"))
    env.fake.advance(env.fake.queue_seconds + 1)
    state = await provider.poll(submitted.job_id)
    assert state.status is JobStatus.RUNNING and 0.1 < state.progress < 0.5
    assert Image.open(io.BytesIO(state.preview)).format == "PNG"


@loopback
async def test_fake_access_key_mode_and_probe(env: VendorStack) -> None:
    provider = provider_for(env, **FAKE_ACCESS_KEY)
    submitted = await provider.submit(make_spec(business_id="ak-1"))
    assert (await poll_until_done(provider, submitted.job_id))[-1].status is JobStatus.SUCCEEDED
    headers = env.fake.api_requests("text2image")[0].headers
    assert headers["x-request-req-accesskeyid"] == "test-key-id"
    assert "authorization" not in headers
    calls = len(env.fake.api_requests())
    assert (await provider.probe()).startswith("reachable (HTTP ")
    assert len(env.fake.api_requests()) == calls  # no API call, paid or not


@loopback
async def test_fake_rejects_wrong_credentials(env: VendorStack) -> None:
    for provider in (provider_for(env, zhiqite_app_code="wrong-code"),
                     provider_for(env, **{**FAKE_ACCESS_KEY,
                                          "zhiqite_access_key_secret": "wrong-secret"})):
        with pytest.raises(AuthError):
            await provider.submit(make_spec(business_id="creds"))
    assert "sd:creds" not in env.fake.jobs


@loopback
async def test_fake_checks_the_model_and_required_fields(env: VendorStack) -> None:
    provider = provider_for(env)
    with pytest.raises(BadRequest, match="模型不存在"):
        await provider.submit(make_spec(model="no-such-model", business_id="m-1"))
    with pytest.raises(BadRequest, match="prompt"):
        await provider.submit(make_spec(prompt="   ", business_id="m-2"))


@loopback
async def test_fake_callback_is_retried_until_answered_properly(env: VendorStack) -> None:
    env.fake.callback_delay_scale = 0.01
    env.receiver.answers[:] = [{"code": "500", "msg": "not yet"}, dict(z.Zhiqite.callback_answer)]
    provider = provider_for(env)
    submitted = await provider.submit(make_spec(business_id="cb-1", callback_url=env.callback_url))
    attempts = await env.fake.wait_for_callbacks(2)
    await asyncio.sleep(0.05)  # no further attempt once accepted
    assert [a.accepted for a in env.fake.callbacks] == [False, True]
    assert attempts[1].at - attempts[0].at >= 3 * 0.01 * 0.9  # first step of 3, 5, 15, ...
    state = provider.parse_callback(env.receiver.received[-1], submitted.job_id)
    assert state.status is JobStatus.SUCCEEDED and state.images
    with pytest.raises(JobNotFound):  # the token of another task
        provider.parse_callback(env.receiver.received[-1], "sd:another-task")


@loopback
async def test_fake_callback_gives_up_after_ten_retries(env: VendorStack) -> None:
    env.fake.callback_delay_scale = 0.00001  # 3 s → 30 µs … 3600 s → 36 ms
    env.receiver.answers[:] = [{"code": "400"}]
    provider = provider_for(env)
    await provider.submit(make_spec(business_id="cb-2", callback_url=env.callback_url))
    await env.fake.wait_for_callbacks(11)
    await asyncio.sleep(0.05)
    assert len(env.fake.callbacks) == 11 and not any(a.accepted for a in env.fake.callbacks)


@loopback
async def test_fake_callback_bare_shape_for_a_tool(env: VendorStack) -> None:
    env.fake.callback_shape = "bare"
    provider = provider_for(env)
    spec = make_spec(Capability.UPSCALE, images=(env.input("photo-cb", png(80, 60)),),
                     business_id="up-cb", callback_url=env.callback_url)
    submitted = await provider.submit(spec)
    await env.fake.wait_for_callbacks(1)
    state = provider.parse_callback(env.receiver.received[0], submitted.job_id)
    assert submitted.job_id == "enhance:up-cb" and state.status is JobStatus.SUCCEEDED


@loopback
async def test_fake_result_urls_expire(env: VendorStack) -> None:
    env.fake.url_ttl = 60
    provider = provider_for(env)
    submitted = await provider.submit(make_spec(business_id="exp-1"))
    env.fake.finish(submitted.job_id)
    url = (await provider.poll(submitted.job_id)).images[0].url
    assert (await env.client.get(url)).status_code == 200
    env.fake.advance(61)
    assert (await env.client.get(url)).status_code in (403, 404)


@loopback
async def test_fake_img2img_fetches_the_input_url(env: VendorStack) -> None:
    provider = provider_for(env)
    photo = env.input("photo-1", png(300, 200))
    submitted = await provider.submit(make_spec(Capability.IMG2IMG, business_id="i2i-1",
                                                images=(photo,)))
    final = (await poll_until_done(provider, submitted.job_id))[-1]
    assert final.status is JobStatus.SUCCEEDED
    assert env.fake.fetched_urls() == [photo.url] and env.fake.fetches[0].ok
    picture = Image.open(io.BytesIO((await env.client.get(final.images[0].url)).content))
    assert picture.size == (768, 512)  # the input photo's 3:2 shape


@loopback
async def test_fake_img2img_with_unreachable_input_fails(env: VendorStack) -> None:
    provider = provider_for(env)
    gone = input_image(url=f"{env.media}/gone")
    submitted = await provider.submit(make_spec(Capability.IMG2IMG, business_id="i2i-2",
                                                images=(gone,)))
    env.fake.finish(submitted.job_id)
    state = await provider.poll(submitted.job_id)
    assert state.status is JobStatus.FAILED and state.error_detail
    assert not env.fake.fetches[0].ok


@loopback
async def test_fake_faceswap_and_upscale(env: VendorStack) -> None:
    provider = provider_for(env)
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
async def test_fake_tool_failure(env: VendorStack) -> None:
    provider = provider_for(env)
    env.fake.fail_job_next("换脸失败：未检测到人脸")
    submitted = await provider.submit(make_spec(
        Capability.FACESWAP, business_id="fs-2",
        images=(env.input("f2", png()), env.input("t2", png()))))
    env.fake.finish(submitted.job_id)
    assert (await provider.poll(submitted.job_id)).status is JobStatus.FAILED


@loopback
async def test_fake_duplicate_submit_and_find_submitted(env: VendorStack) -> None:
    provider = provider_for(env)
    spec = make_spec(business_id="dup-1")
    assert await provider.find_submitted(spec) is None
    await provider.submit(spec)
    with pytest.raises(BadRequest):
        await provider.submit(spec)
    assert await provider.find_submitted(spec) == "sd:dup-1"
    with pytest.raises(JobNotFound):
        await provider.poll("roop:dup-1")


@loopback
async def test_fake_moderation_and_failure(env: VendorStack) -> None:
    provider = provider_for(env)
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
async def test_fake_faults(env: VendorStack, fault: str, error: type[ProviderError]) -> None:
    env.fake.timeout_seconds = 0.15
    provider = provider_for(env, timeout=0.05)
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
async def test_fake_fault_on_queries_only(env: VendorStack) -> None:
    provider = provider_for(env)
    env.fake.fail_next("throttled", times=2, path="queryTaskInfo")
    submitted = await provider.submit(make_spec(business_id="q-fault"))
    for _ in range(2):
        with pytest.raises(RateLimited):
            await provider.poll(submitted.job_id)
    assert isinstance(await provider.poll(submitted.job_id), JobState)


@loopback
async def test_fake_sees_credentials_only_in_the_auth_header(env: VendorStack) -> None:
    provider = provider_for(env)
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
