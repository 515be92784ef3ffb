"""aihuihua adapter: pure transforms, the HTTP boundary (httpx.MockTransport),
and end to end against FakeAihuihua over loopback HTTP."""

from __future__ import annotations

import io
import json
import logging
import random
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from PIL import Image
from pydantic import SecretStr

from providers import aihuihua as ah
from providers.base import PollPolicy
from providers.common import parse_progress
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
from providers.types import Capability, GenerationParams, InputImage, JobSpec, JobState, JobStatus
from providers.types import SourceResult
from tests.fakes.aihuihua import FakeAihuihua
from tests.vendor_kit import (
    Recorder,
    VendorStack,
    input_image,
    json_response,
    loopback,
    loopback_fixture,
    make_provider,
    make_spec,
    mock_provider,
    png,
    poll_until_done,
)
from tests.vendor_kit import fixture as vendor_fixture

KEY = "1333_aihuihua-SECRET-key"
BASE = "https://aihuihua.example.test"
MEDIA = "https://bot.example.test/media"
HOOK = "https://bot.example.test/callbacks/aihuihua/tok"


def fixture(name: str) -> Any:
    return vendor_fixture("aihuihua", name)


def image(url: str | None = f"{MEDIA}/a", width: int = 64, height: int = 64) -> InputImage:
    return input_image(url=url, width=width, height=height)


def grid_buttons(h: str = "abc") -> list[dict[str, str]]:
    buttons = [{"customId": f"MJ::JOB::upsample::{n}::{h}", "label": f"U{n}", "emoji": ""}
               for n in range(1, 5)]
    buttons.append({"customId": f"MJ::JOB::reroll::0::{h}::SOLO", "label": "", "emoji": "🔄"})
    buttons += [{"customId": f"MJ::JOB::variation::{n}::{h}", "label": f"V{n}", "emoji": ""}
                for n in range(1, 5)]
    return buttons


def single_buttons(h: str = "def") -> list[dict[str, str]]:
    return [
        {"customId": f"MJ::JOB::{verb}::1::{h}::SOLO", "label": label, "emoji": ""}
        for verb, label in (
            ("upsample_v6_2x_subtle", "Upscale (Subtle)"),
            ("high_variation", "Vary (Strong)"),
            ("low_variation", "Vary (Subtle)"),
        )
    ]


def task(status: str = "SUCCESS", action: str = "IMAGINE", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "1730000000000001", "action": action, "status": status, "progress": "0%",
        "imageUrl": "", "failReason": "", "buttons": [], "prompt": "cat", "promptEn": "cat",
        "description": "Submit success",
    }
    if status == "SUCCESS":
        body.update(progress="100%", imageUrl="https://cdn.example/1.png",
                    buttons=grid_buttons() if action == "IMAGINE" else [])
    body.update(extra)
    return body


def source(
    vendor_data: dict[str, Any], index: int = 0, job_id: str = "aihuihua:1730000000000001"
) -> SourceResult:
    return SourceResult(provider="aihuihua", job_id=job_id, index=index, vendor_data=vendor_data)


MJ_GRID = {"task_id": "1730000000000001", "action": "IMAGINE", "mj": True, "grid": True,
           "buttons": grid_buttons(), "image_url": "https://cdn.example/grid.png"}
FLUX_GRID = {**MJ_GRID, "action": "FLUX_IMAGE2IMAGE", "mj": False}
MJ_SINGLE = {"task_id": "1730000000000002", "action": "UPSCALE", "mj": True, "grid": False,
             "buttons": single_buttons(), "image_url": "https://cdn.example/u2.png"}


# =========================================================================== #
# Pure transforms: requests
# =========================================================================== #


@pytest.mark.parametrize(
    "job_id",
    ["", "aihuihua:", "aihuihua:  ", "aihuihua:i2i:", "aihuihua:i2i: ", "sd:123", "123",
     "juhe:JH1", "i2i:123"],
)
def test_foreign_job_ids_are_not_found(job_id: str) -> None:
    with pytest.raises(JobNotFound):
        ah.parse_job_id(job_id)


@pytest.mark.parametrize("kind", list(ah.JobKind))
def test_job_id_round_trip(kind: ah.JobKind) -> None:
    job_id = ah.make_job_id("1320098173412546", kind)
    assert ah.parse_job_id(job_id) == ah.JobRef("1320098173412546", kind)


def test_job_id_format() -> None:
    """Ids stored before kinds existed ("aihuihua:<task id>") still parse;
    Flux image2Image jobs say so in their id."""
    assert ah.parse_job_id("aihuihua:1320098173412546") == ah.JobRef("1320098173412546")
    assert ah.make_job_id("77") == "aihuihua:77"
    assert ah.make_job_id("77", ah.JobKind.IMAGE2IMAGE) == "aihuihua:i2i:77"
    assert ah.parse_job_id("aihuihua:i2i:77") == ah.JobRef("77", ah.JobKind.IMAGE2IMAGE)


@pytest.mark.parametrize(
    ("model", "mj"),
    [(None, False), ("flux", False), ("mj", True), ("MJ-6.1", True), ("midjourney", True),
     ("  Midjourney v6 ", True), ("sdxl", False)],
)
def test_model_selects_midjourney(model: str | None, mj: bool) -> None:
    assert ah.wants_midjourney(GenerationParams(model=model)) is mj


@pytest.mark.parametrize(
    ("params", "prompt"),
    [
        ({}, "一只猫 a cat"),
        ({"aspect_ratio": "16:9"}, "一只猫 a cat --ar 16:9"),
        ({"width": 1920, "height": 1080}, "一只猫 a cat --ar 16:9"),
        ({"width": 1000, "height": 1000}, "一只猫 a cat"),
        ({"prompt": "cat --ar 2:3", "aspect_ratio": "16:9"}, "cat --ar 2:3"),
    ],
)
def test_flux_prompt_carries_the_aspect_ratio(params: dict[str, Any], prompt: str) -> None:
    params.setdefault("prompt", "一只猫 a cat")
    assert ah.flux_prompt(GenerationParams(**params)) == prompt


def test_mj_prompt_flags() -> None:
    params = GenerationParams(
        prompt="cat", aspect_ratio="2:3", negative_prompt="dog, text", seed=42
    )
    assert ah.mj_prompt(params) == "cat --ar 2:3 --no dog, text --seed 42"
    with pytest.raises(BadRequest):
        ah.mj_prompt(GenerationParams(prompt="  "))


@pytest.mark.parametrize(
    ("strength", "range_"),
    [(None, 0.7), (0.3, 0.7), (0.0, 1.0), (0.95, 0.1), (1.0, 0.1), (0.5, 0.5)],
)
def test_strength_becomes_similarity_range(strength: float | None, range_: float) -> None:
    assert ah.similarity(strength) == pytest.approx(range_)


def test_image2image_body_matches_the_seed_example() -> None:
    request = ah.build_request(make_spec(Capability.IMG2IMG, images=(image(),), prompt="Cat",
                                         callback_url="https://abc.com/webhook/"))
    example = fixture("image2image_request")
    assert request.endpoint is ah.Endpoint.FLUX_IMAGE2IMAGE
    assert request.kind is ah.JobKind.IMAGE2IMAGE
    assert set(request.body) == set(example)
    assert request.body == {**example, "imgUrl": f"{MEDIA}/a"}


@pytest.mark.parametrize(
    ("spec", "endpoint", "body"),
    [
        (make_spec(), ah.Endpoint.FLUX_TEXT2IMAGE, {"prompt": "一只猫 a cat"}),
        (make_spec(model="mj", aspect_ratio="16:9"), ah.Endpoint.MJ_IMAGINE,
         {"prompt": "一只猫 a cat --ar 16:9"}),
        (make_spec(Capability.FACESWAP, images=(image(f"{MEDIA}/face"), image(f"{MEDIA}/to"))),
         ah.Endpoint.FACE_SWAP, {"fromImgUrl": f"{MEDIA}/face", "toImgUrl": f"{MEDIA}/to"}),
        (make_spec(Capability.UPSCALE, images=(image(),)), ah.Endpoint.UPSCALE,
         {"imgUrl": f"{MEDIA}/a", "size": 2}),
        (make_spec(Capability.REMOVE_BG, images=(image(),)), ah.Endpoint.REMOVE_BG,
         {"imgUrl": f"{MEDIA}/a"}),
        (make_spec(Capability.DESCRIBE, images=(image(),)), ah.Endpoint.DESCRIBE,
         {"imgUrl": [f"{MEDIA}/a"]}),
    ],
)
def test_request_bodies(spec: JobSpec, endpoint: ah.Endpoint, body: dict[str, Any]) -> None:
    request = ah.build_request(spec)
    assert request.endpoint is endpoint and request.body == body and request.alternate is None
    assert request.kind is ah.JobKind.TASK
    hooked = ah.build_request(spec.model_copy(update={"callback_url": HOOK}))
    assert hooked.body == {**body, "notifyHook": HOOK}


@pytest.mark.parametrize(
    "spec",
    [
        make_spec(Capability.IMG2IMG, images=(image(url=None),)),
        make_spec(Capability.IMG2IMG, images=()),
        make_spec(Capability.IMG2IMG, images=(image(),), prompt=" "),
        make_spec(Capability.FACESWAP, images=(image(),)),
        make_spec(Capability.UPSCALE, images=(image(width=2100, height=100),)),  # ×2 > 4096
        # The size the engine measured decides, not the bytes (never decoded again).
        make_spec(Capability.UPSCALE, images=(
            input_image(b"not decodable", url=f"{MEDIA}/a", width=100, height=2100),)),
        make_spec(Capability.VARIATION),  # only its own results
        make_spec(Capability.EDIT, images=(image(),)),
        make_spec(Capability.TXT2IMG, prompt=""),
    ],
)
def test_unservable_specs(spec: JobSpec) -> None:
    with pytest.raises(BadRequest):
        ah.build_request(spec)


def test_upscale_limit_uses_the_measured_size() -> None:
    fits = input_image(b"not decodable", url=f"{MEDIA}/a", width=2048, height=1000)
    request = ah.build_request(make_spec(Capability.UPSCALE, images=(fits,)))
    assert request.body == {"imgUrl": f"{MEDIA}/a", "size": 2}


@pytest.mark.parametrize("index", [0, 1, 2, 3])
@pytest.mark.parametrize(
    ("capability", "verb"), [(Capability.UPSCALE, "upsample"), (Capability.VARIATION, "variation")]
)
def test_u_and_v_buttons_on_a_midjourney_grid(
    index: int, capability: Capability, verb: str
) -> None:
    request = ah.action_request(source(MJ_GRID, index), capability)
    assert request.endpoint is ah.Endpoint.MJ_ACTION
    assert request.alternate is ah.Endpoint.IMAGE_ACTION
    assert request.body == {"taskId": "1730000000000001",
                            "customId": f"MJ::JOB::{verb}::{index + 1}::abc"}


def test_a_follow_up_button_is_sent_as_pressed_and_a_forged_one_refused() -> None:
    custom_id = MJ_SINGLE["buttons"][-1]["customId"]
    request = ah.action_request(source({**MJ_SINGLE, "custom_id": custom_id}), Capability.VARIATION)
    assert request.body == {"taskId": "1730000000000001", "customId": custom_id}  # the source job's task
    with pytest.raises(BadRequest, match="not on the source result"):
        ah.action_request(source({**MJ_SINGLE, "custom_id": "MJ::JOB::forged::1::x"}), Capability.VARIATION)
    shown = ah.parse_task(task(action="UPSCALE", buttons=single_buttons())).vendor_data["follow_ups"]
    assert any(f["custom_id"] == custom_id for f in shown)


def test_actions_on_a_flux_grid_use_image_action() -> None:
    request = ah.action_request(source(FLUX_GRID, 2), Capability.UPSCALE)
    assert request.endpoint is ah.Endpoint.IMAGE_ACTION
    assert request.alternate is ah.Endpoint.MJ_ACTION
    assert request.body["customId"] == "MJ::JOB::upsample::3::abc"


def test_grid_falls_back_to_the_buttons() -> None:
    data = {key: value for key, value in MJ_GRID.items() if key != "grid"}
    assert ah.action_request(source(data, 3), Capability.UPSCALE).body["customId"] == (
        "MJ::JOB::upsample::4::abc"
    )
    single = {key: value for key, value in MJ_SINGLE.items() if key != "grid"}
    assert ah.action_request(source(single), Capability.UPSCALE).endpoint is ah.Endpoint.UPSCALE


def test_actions_on_an_image2image_grid_without_buttons_data() -> None:
    """An image2Image job id makes its result a grid acted on through
    /image/action, whatever was stored about the task ([seed] 4合1)."""
    stored = {**FLUX_GRID, "action": "", "grid": False, "mj": True}
    grid_source = source(stored, 2, job_id="aihuihua:i2i:1730000000000001")
    request = ah.action_request(grid_source, Capability.UPSCALE)
    assert request.endpoint is ah.Endpoint.IMAGE_ACTION
    assert request.body == {"taskId": "1730000000000001", "customId": "MJ::JOB::upsample::3::abc"}
    with pytest.raises(BadRequest, match="not in the source"):
        ah.action_request(source(stored, 2), Capability.UPSCALE)  # the same data, plain id


def test_family_falls_back_to_the_action_name() -> None:
    data = {key: value for key, value in MJ_GRID.items() if key != "mj"}
    assert ah.action_request(source(data), Capability.UPSCALE).endpoint is ah.Endpoint.MJ_ACTION
    data["action"] = "FLUX_IMAGE2IMAGE"
    assert ah.action_request(source(data), Capability.UPSCALE).endpoint is ah.Endpoint.IMAGE_ACTION


@pytest.mark.parametrize(
    ("capability", "index", "message"),
    [(Capability.UPSCALE, 2, "U3"), (Capability.VARIATION, 0, "V1")],
)
def test_missing_button_is_a_clear_bad_request(
    capability: Capability, index: int, message: str
) -> None:
    buttons = [b for b in grid_buttons() if b["label"] not in ("U3", "V1")]
    with pytest.raises(BadRequest, match=f"no {message} button"):
        ah.action_request(source({**MJ_GRID, "buttons": buttons}, index), capability)
    with pytest.raises(BadRequest, match=f"no {message} button"):
        ah.build_request(make_spec(capability, source=source({**MJ_GRID, "buttons": []}, index)))


@pytest.mark.parametrize(
    "bad",
    [
        source(MJ_GRID, 4),
        source(MJ_GRID, -1),
        source(MJ_SINGLE, 1),  # a single image has only image 1
        source(MJ_GRID, job_id="sd:123"),
        SourceResult(provider="zhiqite", job_id="aihuihua:1", index=0, vendor_data=MJ_GRID),
    ],
)
def test_bad_sources(bad: SourceResult) -> None:
    with pytest.raises(BadRequest):
        ah.action_request(bad, Capability.UPSCALE)


def test_single_image_upscale_goes_to_the_upscale_tool() -> None:
    request = ah.action_request(source(MJ_SINGLE), Capability.UPSCALE)
    assert request.endpoint is ah.Endpoint.UPSCALE
    assert request.body == {"imgUrl": "https://cdn.example/u2.png", "size": 2}
    without_url = {key: value for key, value in MJ_SINGLE.items() if key != "image_url"}
    with pytest.raises(BadRequest, match="no U1 button"):
        ah.action_request(source(without_url), Capability.UPSCALE)


def test_single_image_variation_uses_vary_strong() -> None:
    request = ah.action_request(source(MJ_SINGLE), Capability.VARIATION)
    assert request.body["customId"] == "MJ::JOB::high_variation::1::def::SOLO"
    assert request.endpoint is ah.Endpoint.MJ_ACTION


def test_find_button_matches_whole_verbs_only() -> None:
    buttons = single_buttons()
    assert ah.find_button(buttons, ("upsample",), 1) is None
    assert ah.find_button(buttons, ("variation",), 1) is None
    assert ah.find_button(buttons, ("low_variation",), 1) == "MJ::JOB::low_variation::1::def::SOLO"
    assert ah.find_button([{"customId": "MJ::JOB::upsample::1"}], ("upsample",), 1)
    assert ah.find_button(grid_buttons(), ("upsample",), 1) == "MJ::JOB::upsample::1::abc"
    assert ah.find_button([{"label": "U1"}, "junk"], ("upsample",), 1) is None


# =========================================================================== #
# Pure transforms: answers, codes, tasks
# =========================================================================== #


def test_seed_submit_answer() -> None:
    answer = ah.parse_submit_answer(fixture("submit_success"))
    assert answer == ah.SubmitAnswer(1, "Submit success", "123")
    assert ah.accepted_task_id(answer) == "123"


@pytest.mark.parametrize(
    ("body", "task_id"),
    [
        ({"code": 1, "description": "提交成功", "result": 1320098173412546}, "1320098173412546"),
        ({"code": "1", "description": "ok", "result": "77"}, "77"),
        ({"code": 22, "description": "排队中", "result": "78"}, "78"),
        ({"code": 21, "description": "已存在", "result": "79"}, "79"),
    ],
)
def test_accepted_codes(body: dict[str, Any], task_id: str) -> None:
    assert ah.accepted_task_id(ah.parse_submit_answer(body)) == task_id


EVERY_CODE: list[tuple[int, str, type[ProviderError]]] = [
    (23, "队列已满，请稍后尝试", RateLimited),
    (24, "prompt包含敏感词", ContentRejected),
    (3, "任务不存在", JobNotFound),
    (4, "参数错误", BadRequest),
    (4, "账户余额不足", QuotaExceeded),
    (9, "系统异常", Unavailable),
    (9, "积分不足，请充值", QuotaExceeded),
    (99, "密钥无效", AuthError),
    (99, "图片涉及违规内容", ContentRejected),
    (99, "未知错误", ProviderError),
]


@pytest.mark.parametrize(("number", "description", "error"), EVERY_CODE)
def test_every_code(number: int, description: str, error: type[ProviderError]) -> None:
    with pytest.raises(error) as info:
        ah.accepted_task_id(ah.SubmitAnswer(number, description, ""))
    assert type(info.value) is error and description in info.value.vendor_message
    if number == 23:
        assert info.value.transient and info.value.retry_after == ah.ASSUMED.queue_full_retry_after


@pytest.mark.parametrize(
    "body", [{"code": 1, "result": ""}, {"code": 1, "result": None}, {"code": 1, "result": True},
             {"description": "x"}, {"code": "ok"}],
)
def test_malformed_submit_answers(body: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponse):
        ah.accepted_task_id(ah.parse_submit_answer(body))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("45%", 0.45), ("0%", 0.0), ("100%", 1.0), ("7", 0.07), (0.5, 0.5), ("", None),
     (None, None), ("abc", None), ("1%", 0.01)],
)
def test_progress(raw: Any, expected: float | None) -> None:
    value = parse_progress(raw)
    assert value == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (task("NOT_START"), JobStatus.QUEUED),
        (task("SUBMITTED"), JobStatus.QUEUED),
        (task("IN_PROGRESS", progress="45%"), JobStatus.RUNNING),
        (task("MODAL"), JobStatus.RUNNING),
        (task("SOMETHING_NEW"), JobStatus.RUNNING),
        (task("SUCCESS"), JobStatus.SUCCEEDED),
        (task("FAILURE", failReason="生成失败"), JobStatus.FAILED),
        (task("CANCEL"), JobStatus.FAILED),
    ],
)
def test_every_task_status(body: dict[str, Any], status: JobStatus) -> None:
    assert ah.parse_task(body).status is status


def test_only_unknown_statuses_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="providers")
    for status in ("NOT_START", "SUBMITTED", "IN_PROGRESS", "MODAL", "SUCCESS", "FAILURE"):
        ah.parse_task(task(status))
    assert caplog.records == []
    ah.parse_task(task("SOMETHING_NEW"))
    assert "SOMETHING_NEW" in caplog.text


def test_running_progress() -> None:
    assert ah.parse_task(task("IN_PROGRESS", progress="45%")).progress == pytest.approx(0.45)


def test_imagine_success_is_a_grid_with_its_buttons() -> None:
    state = ah.parse_task(task("SUCCESS"))
    assert state.is_grid and [i.url for i in state.images] == ["https://cdn.example/1.png"]
    data = state.vendor_data
    assert data["mj"] is True and data["grid"] is True and data["action"] == "IMAGINE"
    assert data["task_id"] == "1730000000000001" and data["image_url"] == state.images[0].url
    assert [b["label"] for b in data["buttons"]][:4] == ["U1", "U2", "U3", "U4"]
    # What the bot stores is enough for the next action.
    request = ah.action_request(source(data, 1), Capability.UPSCALE)
    assert request.body["customId"] == "MJ::JOB::upsample::2::abc"


def test_upscaled_single_is_not_a_grid() -> None:
    state = ah.parse_task(task("SUCCESS", "UPSCALE", buttons=single_buttons()))
    assert not state.is_grid and state.vendor_data["mj"] is True


def test_flux_grid_is_recognised_by_its_u_buttons() -> None:
    state = ah.parse_task(task("SUCCESS", "FLUX_IMAGE2IMAGE", buttons=grid_buttons()))
    assert state.is_grid and state.vendor_data["mj"] is False
    assert not ah.parse_task(task("SUCCESS", "FLUX_TEXT2IMAGE")).is_grid


def test_every_image2image_result_is_a_grid() -> None:
    """[seed] "每次返回4合1的图片": a grid with or without buttons, though the
    task (here midjourney-proxy's documented one, without action or buttons)
    does not say it was image2Image; the job id does."""
    bare = {key: value for key, value in fixture("task_callback").items() if key != "action"}
    assert "buttons" not in bare
    state = ah.parse_task(bare, ah.JobKind.IMAGE2IMAGE)
    assert state.status is JobStatus.SUCCEEDED and state.is_grid
    assert state.vendor_data["grid"] is True and state.vendor_data["mj"] is False
    assert not ah.parse_task(bare).is_grid
    with_buttons = ah.parse_task({**bare, "buttons": single_buttons()}, ah.JobKind.IMAGE2IMAGE)
    assert with_buttons.is_grid


@pytest.mark.parametrize(
    ("reason", "kind"),
    [("生成失败", ProviderError.kind), ("Banned prompt detected", ContentRejected.kind),
     ("内容违规", ContentRejected.kind), ("余额不足", QuotaExceeded.kind), ("", ProviderError.kind)],
)
def test_failure_reasons(reason: str, kind: str) -> None:
    state = ah.parse_task(task("FAILURE", failReason=reason))
    assert state.status is JobStatus.FAILED and state.error_kind == kind
    assert state.error_detail == (reason or "task failed")


def test_success_without_image_fails_as_malformed() -> None:
    state = ah.parse_task(task("SUCCESS", imageUrl=""))
    assert state.status is JobStatus.FAILED and state.error_kind == MalformedResponse.kind


def test_describe_gives_text_and_no_image() -> None:
    text = "1️⃣ a cat on a sofa --ar 4:3\n\n2️⃣ tabby cat, soft light"
    body = task("SUCCESS", "DESCRIBE", prompt=text, promptEn=text,
                properties={"finalPrompt": text}, imageUrl="https://input.example/a.png")
    state = ah.parse_task(body)
    assert state.status is JobStatus.SUCCEEDED and state.images == []
    assert state.vendor_data["description"] == text
    empty = ah.parse_task(task("SUCCESS", "DESCRIBE", prompt="", promptEn=""))
    assert empty.status is JobStatus.FAILED


def test_callback_bare_task_from_the_documented_sample() -> None:
    sample = fixture("task_callback")
    state = ah.parse_callback_payload(sample, "aihuihua:14001929738841620")
    assert state.status is JobStatus.SUCCEEDED and state.is_grid
    assert [i.url for i in state.images] == [sample["imageUrl"]]


def test_callback_bare_and_enveloped() -> None:
    state = ah.parse_callback_payload(task("SUCCESS"), "aihuihua:1730000000000001")
    assert state.is_grid
    state = ah.parse_callback_payload({"code": 1, "result": task("FAILURE", id="9")}, "aihuihua:9")
    assert state.status is JobStatus.FAILED


def test_callback_uses_the_job_ids_kind() -> None:
    flux = task("SUCCESS", "FLUX_IMAGE2IMAGE", id="9")
    assert ah.parse_callback_payload(flux, "aihuihua:i2i:9").is_grid
    assert not ah.parse_callback_payload(flux, "aihuihua:9").is_grid


@pytest.mark.parametrize("job_id", ["aihuihua:2", "aihuihua:i2i:2"])
def test_callback_for_another_task_is_not_found(job_id: str) -> None:
    with pytest.raises(JobNotFound):
        ah.parse_callback_payload(task("SUCCESS", id="1"), job_id)


@pytest.mark.parametrize(
    "payload",
    [{}, {"status": "SUCCESS"}, {"id": "1"}, {"code": 1}, {"code": 1, "result": "1"},
     {"code": 3, "description": "任务不存在"}, {"code": "x", "id": "1", "status": "SUCCESS"}],
)
def test_callback_without_task_is_malformed(payload: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponse):
        ah.parse_callback_payload(payload, "aihuihua:1")


@pytest.mark.parametrize(
    ("body", "error"),
    [({"code": 3, "description": "任务不存在", "result": None}, JobNotFound),
     ({"code": 1, "result": None}, JobNotFound),
     ({"code": 1, "result": "x"}, MalformedResponse),
     ({"code": 4, "description": "参数错误"}, BadRequest)],
)
def test_query_answers(body: dict[str, Any], error: type[ProviderError]) -> None:
    with pytest.raises(error):
        ah.query_task(body)


def test_single_query_bare_task_and_envelope() -> None:
    """midjourney-proxy answers the bare task; the envelope is read too."""
    sample = fixture("task_callback")
    assert ah.query_task(sample) == sample
    assert ah.query_task({"code": 1, "description": "成功", "result": sample}) == sample
    with pytest.raises(MalformedResponse):
        ah.query_task({"id": "1"})  # neither a task nor an envelope


def test_batch_query_bare_list_and_envelope() -> None:
    sample = fixture("task_callback")
    assert ah.query_tasks([sample, "junk"]) == [sample]
    assert ah.query_tasks({"code": 1, "description": "成功", "result": [sample]}) == [sample]
    assert ah.query_tasks([]) == [] and ah.query_tasks({"code": 1, "result": None}) == []
    with pytest.raises(BadRequest):
        ah.query_tasks({"code": 4, "description": "参数错误", "result": None})
    with pytest.raises(MalformedResponse):
        ah.query_tasks({"code": 1, "result": sample})



# =========================================================================== #
# The adapter over httpx.MockTransport
# =========================================================================== #


def adapter(recorder: Recorder, timeout: float = 2.0) -> Any:
    return mock_provider(ah.Aihuihua, recorder, BASE + "/", timeout=timeout, aihuihua_api_key=KEY)


def submitted(task_id: Any = "123", code: int = 1) -> httpx.Response:
    return json_response({"code": code, "description": "Submit success", "result": task_id})


def test_class_declarations() -> None:
    p = ah.Aihuihua
    # [seed] imgUrl "最大不能超过5M,否则会失败": the engine shrinks inputs above this.
    assert p.max_input_bytes == 5 * 1024 * 1024
    # [public] queries only as a fallback after 5 minutes without a callback.
    assert p.poll_policy == PollPolicy(callback_silence_seconds=300.0, min_interval_seconds=20.0)
    assert p.batch_poll_size == 20
    assert p.credentials.modes == (("aihuihua_api_key",),)
    assert p.base_url_setting == "aihuihua_base_url"


async def test_submit_request_shape() -> None:
    recorder = Recorder(json_response(fixture("submit_success")))
    async with adapter(recorder) as provider:
        result = await provider.submit(make_spec(model="mj", callback_url=HOOK))
    request = recorder.requests[0]
    assert request.method == "POST" and str(request.url) == f"{BASE}/api/v2/mdj/imagine"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert "一只猫".encode() in request.content  # UTF-8, not \u escapes
    assert recorder.body() == {"prompt": "一只猫 a cat", "notifyHook": HOOK}
    assert result.job_id == "aihuihua:123" and result.eta_seconds == ah.ASSUMED.mj_seconds
    assert result.state is None


async def test_image2image_job_id_carries_its_kind() -> None:
    recorder = Recorder(json_response(fixture("submit_success")))
    async with adapter(recorder) as provider:
        result = await provider.submit(make_spec(Capability.IMG2IMG, images=(image(),)))
    assert recorder.requests[0].url.path == "/api/v2/flux/image2Image"
    assert result.job_id == "aihuihua:i2i:123"


async def test_numeric_task_id_and_queued_code() -> None:
    recorder = Recorder(submitted(1320098173412546, code=22))
    async with adapter(recorder) as provider:
        result = await provider.submit(make_spec())
    assert result.job_id == "aihuihua:1320098173412546"
    assert recorder.requests[0].url.path == "/api/v2/flux/text2Image"


@pytest.mark.parametrize(("number", "description", "error"), EVERY_CODE)
async def test_submit_codes_with_http_200(
    number: int, description: str, error: type[ProviderError]
) -> None:
    recorder = Recorder(json_response({"code": number, "description": description, "result": None}))
    async with adapter(recorder) as provider:
        with pytest.raises(error) as info:
            await provider.submit(make_spec())
    assert type(info.value) is error


async def test_action_falls_back_to_the_other_endpoint_once() -> None:
    refused = json_response(
        {"code": 4, "description": "该任务请调用/api/v2/mdj/action", "result": None})
    recorder = Recorder(refused, submitted("456"))
    spec = make_spec(Capability.UPSCALE, source=source(FLUX_GRID, 1))
    async with adapter(recorder) as provider:
        result = await provider.submit(spec)
    assert [r.url.path for r in recorder.requests] == ["/api/v2/image/action", "/api/v2/mdj/action"]
    assert recorder.body(0) == recorder.body(1) == {
        "taskId": "1730000000000001", "customId": "MJ::JOB::upsample::2::abc"
    }
    assert result.job_id == "aihuihua:456"


async def test_action_refused_on_both_endpoints_is_a_bad_request() -> None:
    refused = json_response({"code": 4, "description": "customId不存在", "result": None})
    recorder = Recorder(refused)
    async with adapter(recorder) as provider:
        with pytest.raises(BadRequest, match="customId"):
            await provider.submit(make_spec(Capability.VARIATION, source=source(MJ_GRID, 3)))
    assert len(recorder.requests) == 2


async def test_no_fallback_for_other_codes_or_non_actions() -> None:
    recorder = Recorder(json_response({"code": 24, "description": "敏感词", "result": None}))
    async with adapter(recorder) as provider:
        with pytest.raises(ContentRejected):
            await provider.submit(make_spec(Capability.VARIATION, source=source(MJ_GRID, 0)))
        with pytest.raises(BadRequest):
            recorder.answers = [json_response({"code": 4, "description": "参数错误", "result": None})]
            await provider.submit(make_spec(model="mj"))
    assert len(recorder.requests) == 2


async def test_missing_button_sends_nothing() -> None:
    recorder = Recorder(submitted())
    spec = make_spec(Capability.UPSCALE, source=source({**MJ_GRID, "buttons": []}, 1))
    async with adapter(recorder) as provider:
        with pytest.raises(BadRequest, match="no U2 button"):
            await provider.submit(spec)
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (task("NOT_START"), JobStatus.QUEUED),
        (task("SUBMITTED"), JobStatus.QUEUED),
        (task("IN_PROGRESS", progress="45%"), JobStatus.RUNNING),
        (task("SUCCESS"), JobStatus.SUCCEEDED),
        (task("FAILURE", failReason="x"), JobStatus.FAILED),
    ],
)
@pytest.mark.parametrize("bare", [False, True])
async def test_poll_every_status(body: dict[str, Any], status: JobStatus, bare: bool) -> None:
    reply = body if bare else {"code": 1, "description": "成功", "result": body}
    recorder = Recorder(json_response(reply))
    async with adapter(recorder) as provider:
        state = await provider.poll("aihuihua:1730000000000001")
    request = recorder.requests[0]
    assert request.method == "GET" and request.url.path == "/api/v2/task/id/1730000000000001"
    assert request.headers["authorization"] == f"Bearer {KEY}" and request.content == b""
    assert state.status is status


async def test_poll_bare_documented_task_of_an_image2image_job() -> None:
    sample = fixture("task_callback")
    recorder = Recorder(json_response({**sample, "action": "", "buttons": []}))
    async with adapter(recorder) as provider:
        state = await provider.poll("aihuihua:i2i:14001929738841620")
    assert recorder.requests[0].url.path == "/api/v2/task/id/14001929738841620"
    assert state.status is JobStatus.SUCCEEDED and state.is_grid
    assert state.images[0].url == sample["imageUrl"]


@pytest.mark.parametrize(
    "reply",
    [json_response({"code": 3, "description": "任务不存在", "result": None}),
     json_response({"code": 1, "result": None}), json_response({"code": 404}, status=404),
     httpx.Response(200, content=b""), httpx.Response(200, content=b"null")],
)
async def test_poll_unknown_task(reply: httpx.Response) -> None:
    async with adapter(Recorder(reply)) as provider:
        with pytest.raises(JobNotFound):
            await provider.poll("aihuihua:1")


async def test_poll_foreign_id_sends_nothing() -> None:
    recorder = Recorder(json_response({"code": 1, "result": task()}))
    async with adapter(recorder) as provider:
        with pytest.raises(JobNotFound):
            await provider.poll("sd:1")
    assert recorder.requests == []


def batch_of(ids: list[str], bare: bool = False) -> httpx.Response:
    """The answer to a batch query for ``ids``: each except those ending in 7
    (unknown), finished when even, running when odd."""
    tasks = [
        task("SUCCESS", id=i) if int(i) % 2 == 0 else task("IN_PROGRESS", id=i, progress="50%")
        for i in ids if not i.endswith("7")
    ]
    return json_response(tasks if bare else {"code": 1, "description": "成功", "result": tasks})


def numbered(start: int, count: int) -> list[str]:
    return [str(start + n) for n in range(count)]


async def test_poll_many_batches_at_most_20_ids() -> None:
    recorder = Recorder(*(batch_of(numbered(start, count)) for start, count in
                          ((1000, 20), (1020, 20), (1040, 5))))
    job_ids = [f"aihuihua:{1000 + n}" for n in range(45)] + ["sd:foreign"]
    async with adapter(recorder) as provider:
        results = await provider.poll_many(job_ids)
    assert [recorder.body(n)["ids"] for n in range(3)] == [
        numbered(1000, 20), numbered(1020, 20), numbered(1040, 5)]
    assert all(r.method == "POST" and r.url.path == "/api/v2/task/list/" for r in recorder.requests)
    assert set(results) == set(job_ids)
    assert isinstance(results["sd:foreign"], JobNotFound)
    assert isinstance(results["aihuihua:1007"], JobNotFound)
    done, running = results["aihuihua:1000"], results["aihuihua:1001"]
    assert isinstance(done, JobState) and done.status is JobStatus.SUCCEEDED
    assert isinstance(running, JobState) and running.progress == pytest.approx(0.5)


async def test_poll_many_uses_each_job_ids_kind() -> None:
    flux = task("SUCCESS", "FLUX_IMAGE2IMAGE", id="5")
    recorder = Recorder(json_response({"code": 1, "result": [flux, {**flux, "id": "6"}]}))
    async with adapter(recorder) as provider:
        results = await provider.poll_many(["aihuihua:i2i:5", "aihuihua:6"])
    assert recorder.body()["ids"] == ["5", "6"]
    grid, single = results["aihuihua:i2i:5"], results["aihuihua:6"]
    assert isinstance(grid, JobState) and grid.is_grid
    assert isinstance(single, JobState) and not single.is_grid


async def test_poll_many_bare_list() -> None:
    recorder = Recorder(batch_of(["1000", "1001", "1007"], bare=True))
    async with adapter(recorder) as provider:
        results = await provider.poll_many(["aihuihua:1000", "aihuihua:1001", "aihuihua:1007"])
    assert isinstance(results["aihuihua:1000"], JobState)
    assert isinstance(results["aihuihua:1007"], JobNotFound)


async def test_poll_many_a_failed_batch_fails_only_its_jobs() -> None:
    recorder = Recorder(batch_of(numbered(2000, 20)), httpx.Response(500, text="down"),
                        batch_of(numbered(2040, 10)))
    job_ids = [f"aihuihua:{2000 + n}" for n in range(50)]
    async with adapter(recorder) as provider:
        results = await provider.poll_many(job_ids)
    assert all(isinstance(results[j], JobState) for j in job_ids[:20] + job_ids[40:]
               if not j.endswith("7"))
    assert all(isinstance(results[j], Unavailable) for j in job_ids[20:40])


async def test_poll_many_with_a_batch_error_code() -> None:
    recorder = Recorder(json_response({"code": 4, "description": "ids必须为数组", "result": None}))
    async with adapter(recorder) as provider:
        results = await provider.poll_many(["aihuihua:1", "aihuihua:2"])
    assert all(isinstance(value, BadRequest) for value in results.values())


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (json_response({"code": 401, "description": "无效的令牌"}, status=401), AuthError),
        (json_response({"code": 403}, status=403), AuthError),
        (json_response({}, status=402), QuotaExceeded),
        (json_response({}, status=429, headers={"Retry-After": "3"}), RateLimited),
        (httpx.Response(500, text="Internal Server Error"), Unavailable),
        (httpx.Response(404, text="no route"), Unavailable),
        (httpx.Response(400, text="bad"), BadRequest),
        (httpx.Response(200, text="<html>oops</html>"), MalformedResponse),
        (httpx.Response(200, json="a"), MalformedResponse),
        (httpx.ReadTimeout("read timed out"), VendorTimeout),
        (httpx.ConnectTimeout("connect timed out"), VendorTimeout),
        (httpx.ConnectError(f"cannot reach {BASE} with Bearer {KEY}"), Unavailable),
        (httpx.RemoteProtocolError("peer closed"), Unavailable),
    ],
)
async def test_errors_are_mapped_and_leak_nothing(
    reply: httpx.Response | Exception, error: type[ProviderError], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="providers")
    async with adapter(Recorder(reply)) as provider:
        with pytest.raises(error) as info:
            await provider.submit(make_spec())
        many = await provider.poll_many(["aihuihua:1"])
    text = f"{info.value} {info.value.vendor_message} {caplog.text}"
    assert KEY not in text and "aihuihua.example.test" not in text
    assert not isinstance(info.value.__cause__, httpx.HTTPError)
    assert type(many["aihuihua:1"]) is error
    if error is RateLimited:
        assert info.value.retry_after == 3.0


async def test_echoed_key_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="providers")
    reply = json_response({"code": 99, "description": f"密钥 {KEY} 无效", "result": None})
    async with adapter(Recorder(reply)) as provider:
        with pytest.raises(AuthError) as info:
            await provider.submit(make_spec())
    assert KEY not in info.value.vendor_message and "***" in info.value.vendor_message
    assert KEY not in caplog.text and "***" in caplog.text


async def test_probe() -> None:
    recorder = Recorder(json_response({"code": 3, "description": "任务不存在", "result": None}))
    async with adapter(recorder) as provider:
        assert await provider.probe() == "ok"
    assert recorder.requests[0].url.path == "/api/v2/task/id/0"
    async with adapter(Recorder(json_response({}, status=401))) as provider:
        assert await provider.probe() == "auth"


async def test_from_settings_and_class_attributes() -> None:
    async with httpx.AsyncClient() as client:
        off = SimpleNamespace(aihuihua_api_key=None, aihuihua_base_url=BASE)
        assert ah.Aihuihua.from_settings(off, client) is None
        on = SimpleNamespace(aihuihua_api_key=SecretStr(KEY), aihuihua_base_url=BASE + "/")
        provider = ah.Aihuihua.from_settings(on, client)
    assert provider is not None and provider.base_url == BASE and provider.client is client
    assert KEY not in repr(provider) and KEY not in repr(provider.auth)
    p = ah.Aihuihua
    assert p.id == "aihuihua" and p.supports_callbacks and p.callback_answer == {"code": 1}
    assert p.max_concurrent_jobs == 5 and p.batch_poll_size == 20 and p.image_input == "url"
    assert p.capabilities == {
        Capability.TXT2IMG, Capability.IMG2IMG, Capability.VARIATION, Capability.UPSCALE,
        Capability.FACESWAP, Capability.REMOVE_BG, Capability.DESCRIBE,
    }
    assert provider.available_capabilities(has_public_url=False) == {
        Capability.TXT2IMG, Capability.VARIATION
    }


# =========================================================================== #
# End to end against FakeAihuihua over loopback HTTP
# =========================================================================== #

loopback_stack, env = loopback_fixture(
    lambda: FakeAihuihua(queue_seconds=0.02, submitted_seconds=0.02, run_seconds=0.06),
    ah.Aihuihua,
)


def live(env: VendorStack, key: str = "test-aihuihua-key", timeout: float = 2.0) -> ah.Aihuihua:
    return make_provider(ah.Aihuihua, env.client, env.base_url, timeout=timeout,
                         aihuihua_api_key=key)


def finish(env: VendorStack, job_id: str) -> None:
    env.fake.finish(ah.task_id_of(job_id))


def quadrant_color(grid: Image.Image, number: int) -> tuple[int, int, int]:
    """The color in the middle of cell ``number`` (1-based) of a 2×2 grid."""
    w, h = grid.width // 2, grid.height // 2
    x, y = ((number - 1) % 2) * w + w // 2, ((number - 1) // 2) * h + h // 2
    return grid.convert("RGB").getpixel((x, y))  # type: ignore[return-value]


@loopback
async def test_fake_imagine_grid_then_u2_then_v3(env: VendorStack) -> None:
    provider = live(env)
    imagine = await provider.submit(make_spec(model="mj", prompt="a cat"))
    states = await poll_until_done(provider, imagine.job_id)
    assert {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED} <= {s.status for s in states}
    assert any(0 < (s.progress or 0) < 1 for s in states if s.status is JobStatus.RUNNING)
    grid_state = states[-1]
    assert grid_state.is_grid and grid_state.vendor_data["mj"] is True
    grid = await env.download(grid_state.images[0].url or "")
    assert grid.size == (512, 512)
    colors = [quadrant_color(grid, n) for n in range(1, 5)]
    assert len(set(colors)) == 4

    # U2: the second image, alone (cut from the grid, upscaled ×2).
    grid_source = SourceResult(provider="aihuihua", job_id=imagine.job_id, index=1,
                               vendor_data=grid_state.vendor_data)
    upscale = await provider.submit(make_spec(Capability.UPSCALE, source=grid_source))
    single_state = (await poll_until_done(provider, upscale.job_id))[-1]
    assert single_state.status is JobStatus.SUCCEEDED and not single_state.is_grid
    single = (await env.download(single_state.images[0].url or "")).convert("RGB")
    assert single.size == (512, 512) and single.getpixel((256, 256)) == colors[1]
    action = env.fake.api_requests("mdj/action")[0].body
    assert action["taskId"] == ah.task_id_of(imagine.job_id)
    assert "::upsample::2::" in action["customId"]

    # V3: a new grid made from the third image.
    vary = await provider.submit(make_spec(
        Capability.VARIATION, source=grid_source.model_copy(update={"index": 2})))
    vary_state = (await poll_until_done(provider, vary.job_id))[-1]
    assert vary_state.is_grid and vary_state.vendor_data["action"] == "VARIATION"
    new_grid = await env.download(vary_state.images[0].url or "")
    assert new_grid.size == (512, 512) and new_grid.tobytes() != grid.tobytes()
    assert "::variation::3::" in env.fake.api_requests("mdj/action")[1].body["customId"]
    assert env.fake.task(ah.task_id_of(vary.job_id)).parent == ah.task_id_of(imagine.job_id)

    # The upscaled single offers "Vary": it goes through its own button.
    single_source = SourceResult(provider="aihuihua", job_id=upscale.job_id, index=0,
                                 vendor_data=single_state.vendor_data)
    again = await provider.submit(make_spec(Capability.VARIATION, source=single_source))
    assert (await poll_until_done(provider, again.job_id))[-1].is_grid


@loopback
async def test_fake_flux_img2img_grid_and_its_actions(env: VendorStack) -> None:
    provider = live(env)
    photo = env.input("photo-1", png(300, 200, (10, 200, 10)))
    submitted_job = await provider.submit(make_spec(Capability.IMG2IMG, images=(photo,),
                                                    prompt="watercolor", strength=0.4))
    assert ah.parse_job_id(submitted_job.job_id).kind is ah.JobKind.IMAGE2IMAGE
    state = (await poll_until_done(provider, submitted_job.job_id))[-1]
    assert state.is_grid and state.vendor_data["mj"] is False
    assert env.fake.fetched_urls() == [photo.url]
    assert env.fake.api_requests("flux/image2Image")[0].body["range"] == 0.6
    grid_source = SourceResult(provider="aihuihua", job_id=submitted_job.job_id, index=3,
                               vendor_data=state.vendor_data)
    upscale = await provider.submit(make_spec(Capability.UPSCALE, source=grid_source))
    assert [r.path for r in env.fake.api_requests("action")] == ["/api/v2/image/action"]
    assert (await poll_until_done(provider, upscale.job_id))[-1].status is JobStatus.SUCCEEDED


@loopback
async def test_fake_img2img_callback_is_a_grid(env: VendorStack) -> None:
    provider = live(env)
    photo = env.input("photo-2", png(200, 200, (10, 20, 200)))
    job = await provider.submit(make_spec(Capability.IMG2IMG, images=(photo,),
                                          callback_url=env.callback_url))
    await env.fake.wait_for_callbacks(1)
    state = provider.parse_callback(env.receiver.received[-1], job.job_id)
    assert state.status is JobStatus.SUCCEEDED and state.is_grid
    assert state.vendor_data["mj"] is False


@loopback
async def test_fake_family_guess_corrected_by_the_fallback(env: VendorStack) -> None:
    provider = live(env)
    imagine = await provider.submit(make_spec(model="mj"))
    finish(env, imagine.job_id)
    state = await provider.poll(imagine.job_id)
    wrong = {**state.vendor_data, "mj": False}  # as if the action name had fooled us
    grid_source = SourceResult(provider="aihuihua", job_id=imagine.job_id, index=0,
                               vendor_data=wrong)
    upscale = await provider.submit(make_spec(Capability.UPSCALE, source=grid_source))
    assert [r.path for r in env.fake.api_requests("action")] == [
        "/api/v2/image/action", "/api/v2/mdj/action"
    ]
    assert env.fake.task(ah.task_id_of(upscale.job_id)).action == "UPSCALE"


@loopback
async def test_fake_callback_delivery(env: VendorStack) -> None:
    provider = live(env)
    job = await provider.submit(make_spec(model="mj", callback_url=env.callback_url))
    assert env.fake.api_requests("imagine")[0].body["notifyHook"] == env.callback_url
    attempts = await env.fake.wait_for_callbacks(1)
    assert attempts[0].status_code == 200 and json.loads(attempts[0].answer) == {"code": 1}
    state = provider.parse_callback(env.receiver.received[-1], job.job_id)
    assert state.status is JobStatus.SUCCEEDED and state.is_grid
    assert (await env.download(state.images[0].url or "")).size == (512, 512)
    with pytest.raises(JobNotFound):  # the token of another task
        provider.parse_callback(env.receiver.received[-1], "aihuihua:1")


@loopback
async def test_fake_failed_task_callback(env: VendorStack) -> None:
    provider = live(env)
    env.fake.fail_task_next("Banned prompt detected")
    job = await provider.submit(make_spec(callback_url=env.callback_url))
    await env.fake.wait_for_callbacks(1)
    state = provider.parse_callback(env.receiver.received[-1], job.job_id)
    assert state.status is JobStatus.FAILED and state.error_kind == ContentRejected.kind


@loopback
async def test_fake_concurrency_limit_is_code_23(env: VendorStack) -> None:
    env.fake.run_seconds = 60  # nothing finishes by itself
    provider = live(env)
    jobs = [await provider.submit(make_spec(prompt=f"cat {n}")) for n in range(5)]
    with pytest.raises(RateLimited, match="code 23") as info:
        await provider.submit(make_spec(prompt="one too many"))
    assert info.value.transient and info.value.retry_after
    answers = [r for r in env.fake.requests if r.path.endswith("text2Image")]
    assert len(answers) == 6
    finish(env, jobs[0].job_id)
    assert (await provider.submit(make_spec(prompt="room again"))).job_id.startswith("aihuihua:")
    # Another account is not affected by this one's tasks.
    env.fake.extra_keys = ("second-key",)
    assert await live(env, key="second-key").submit(make_spec())


@loopback
async def test_fake_queued_code_22_is_accepted(env: VendorStack) -> None:
    env.fake.run_seconds = 60
    provider = live(env)
    for n in range(4):
        await provider.submit(make_spec(prompt=f"cat {n}"))
    assert len(env.fake.tasks) >= 4


@loopback
async def test_fake_batch_poll(env: VendorStack) -> None:
    env.fake.max_running = 100
    provider = live(env)
    jobs = [(await provider.submit(make_spec(prompt=f"cat {n}"))).job_id for n in range(25)]
    for job_id in jobs[:10]:
        finish(env, job_id)
    results = await provider.poll_many([*jobs, "aihuihua:999", "juhe:JH1"])
    batches = env.fake.api_requests("task/list/")
    assert [len(r.body["ids"]) for r in batches] == [20, 6]
    states = [results[j] for j in jobs]
    assert all(isinstance(state, JobState) for state in states)
    finished = [state.status for state in states[:10] if isinstance(state, JobState)]
    assert finished == [JobStatus.SUCCEEDED] * 10
    assert isinstance(results["aihuihua:999"], JobNotFound)
    assert isinstance(results["juhe:JH1"], JobNotFound)


@loopback
async def test_fake_rejects_batches_over_20(env: VendorStack) -> None:
    response = await env.client.post(
        f"{env.base_url}/api/v2/task/list/", json={"ids": [str(n) for n in range(21)]},
        headers={"Authorization": "Bearer test-aihuihua-key"},
    )
    assert response.json()["code"] == 4


@loopback
async def test_fake_tools(env: VendorStack) -> None:
    provider = live(env)
    face = env.input("face", png(100, 100, (250, 200, 150)))
    target = env.input("target", png(120, 90, (20, 40, 60)))
    swap = await provider.submit(make_spec(Capability.FACESWAP, images=(face, target)))
    upscale = await provider.submit(make_spec(Capability.UPSCALE, images=(target,)))
    removed = await provider.submit(make_spec(Capability.REMOVE_BG, images=(face,)))
    described = await provider.submit(make_spec(Capability.DESCRIBE, images=(target,)))
    assert env.fake.api_requests("face/swap")[0].body == {"fromImgUrl": face.url,
                                                          "toImgUrl": target.url}
    for job, size in ((swap, (120, 90)), (upscale, (240, 180)), (removed, (100, 100))):
        state = (await poll_until_done(provider, job.job_id))[-1]
        assert state.status is JobStatus.SUCCEEDED and not state.is_grid
        assert (await env.download(state.images[0].url or "")).size == size
    text_state = (await poll_until_done(provider, described.job_id))[-1]
    assert text_state.status is JobStatus.SUCCEEDED and text_state.images == []
    assert "rgb(20,40,60)" in text_state.vendor_data["description"]


@loopback
async def test_fake_input_over_5_mb_fails_the_task(env: VendorStack) -> None:
    """Why max_input_bytes is declared: the vendor fails such an input."""
    provider = live(env)
    noise = Image.frombytes("RGB", (1400, 1300), random.Random(3).randbytes(1400 * 1300 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG", compress_level=0)
    assert len(buffer.getvalue()) > (ah.Aihuihua.max_input_bytes or 0)
    big = env.input("big", buffer.getvalue())
    job = await provider.submit(make_spec(Capability.IMG2IMG, images=(big,)))
    finish(env, job.job_id)
    state = await provider.poll(job.job_id)
    assert state.status is JobStatus.FAILED and state.error_detail == "图片超过5M"


@loopback
async def test_fake_unreachable_input_fails_the_task(env: VendorStack) -> None:
    provider = live(env)
    gone = input_image(png(), url=f"{env.media}/gone")
    job = await provider.submit(make_spec(Capability.REMOVE_BG, images=(gone,)))
    finish(env, job.job_id)
    state = await provider.poll(job.job_id)
    assert state.status is JobStatus.FAILED and not env.fake.fetches[0].ok


@loopback
async def test_fake_is_strict_about_auth_and_bodies(env: VendorStack) -> None:
    before = len(env.fake.tasks)
    with pytest.raises(AuthError):
        await live(env, key="wrong").submit(make_spec())
    url = f"{env.base_url}/api/v2/flux/text2Image"
    auth = {"Authorization": "Bearer test-aihuihua-key"}
    as_form = await env.client.post(url, data={"prompt": "cat"}, headers=auth)
    assert as_form.json()["code"] == 4
    no_prompt = await env.client.post(url, json={"prompt": ""}, headers=auth)
    assert no_prompt.json()["code"] == 4
    describe = await env.client.post(f"{env.base_url}/api/v2/mdj/describe",
                                     json={"imgUrl": "https://x/a.png"}, headers=auth)
    assert describe.json()["code"] == 4  # an array is required
    bad_range = await env.client.post(f"{env.base_url}/api/v2/flux/image2Image",
                                      json={"prompt": "c", "imgUrl": "https://x", "range": 2},
                                      headers=auth)
    assert bad_range.json()["code"] == 4
    assert len(env.fake.tasks) == before


@loopback
async def test_fake_sensitive_prompt(env: VendorStack) -> None:
    with pytest.raises(ContentRejected, match="code 24"):
        await live(env).submit(make_spec(prompt="含违禁词的图"))


@loopback
async def test_fake_result_urls_expire_after_10_days(env: VendorStack) -> None:
    provider = live(env)
    job = await provider.submit(make_spec())
    finish(env, job.job_id)
    url = (await provider.poll(job.job_id)).images[0].url or ""
    env.fake.advance(ah.RESULT_TTL_SECONDS - 5)
    assert (await env.client.get(url)).status_code == 200
    env.fake.advance(10)
    assert (await env.client.get(url)).status_code == 403


@loopback
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("http500", Unavailable),
        ("malformed", MalformedResponse),
        ("auth", AuthError),
        ("quota", QuotaExceeded),
        ("rate_limited", RateLimited),
        ("queue_full", RateLimited),
        ("sensitive", ContentRejected),
        ("timeout", VendorTimeout),
        (9, Unavailable),
    ],
)
async def test_fake_faults(env: VendorStack, fault: str | int, error: type[ProviderError]) -> None:
    env.fake.timeout_seconds = 0.15
    provider = live(env, timeout=0.05)
    env.fake.fail_next(fault)
    with pytest.raises(error) as info:
        await provider.submit(make_spec())
    assert type(info.value) is error
    if fault != "timeout":  # a one-off: the next call goes through
        assert (await provider.submit(make_spec())).job_id.startswith("aihuihua:")


@loopback
async def test_fake_fault_on_queries_only(env: VendorStack) -> None:
    provider = live(env)
    job = await provider.submit(make_spec())
    env.fake.fail_next("rate_limited", times=2, path="task/")
    for _ in range(2):
        with pytest.raises(RateLimited) as info:
            await provider.poll(job.job_id)
        assert info.value.retry_after == 2.0
    assert isinstance(await provider.poll(job.job_id), JobState)


@loopback
async def test_fake_probe(env: VendorStack) -> None:
    assert await live(env).probe() == "ok"
    assert await live(env, key="nope").probe() == "auth"


@loopback
async def test_fake_sees_the_key_only_in_the_auth_header(env: VendorStack) -> None:
    provider = live(env)
    job = await provider.submit(make_spec(Capability.IMG2IMG, images=(env.input("k", png()),)))
    await poll_until_done(provider, job.job_id)
    for request in env.fake.api_requests():
        assert request.headers["authorization"] == "Bearer test-aihuihua-key"
        rest = {k: v for k, v in request.headers.items() if k != "authorization"}
        assert "test-aihuihua-key" not in json.dumps(rest) + json.dumps(request.body)
