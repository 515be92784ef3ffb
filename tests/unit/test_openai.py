"""openai adapter: the model table, pure transforms (size, n, bodies, mask,
answers, error envelope) and the HTTP boundary over httpx.MockTransport.
End-to-end runs against FakeOpenAI are in tests/e2e/test_openai.py."""

from __future__ import annotations

import asyncio
import base64
import io
import logging

import httpx
import pytest
from PIL import Image

from providers import openai as o
from providers.errors import (AuthError, BadRequest, ContentRejected, JobNotFound, MalformedResponse,
                              QuotaExceeded, RateLimited, Unavailable)
from providers.inprocess import InProcessJobs
from providers.types import Capability, GenerationParams, JobState, JobStatus
from tests.vendor_kit import Recorder, input_image, json_response, make_spec, mock_provider, png

KEY = "sk-test-SECRET-4242"
BASE = "http://openai.example.test/v1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rgba_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (width, height), (0, 0, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- models and sizes --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model"),
    [("gpt-image-1", o.GPT_IMAGE), ("gpt-image-1-mini", o.GPT_IMAGE), ("dall-e-3", o.DALL_E_3),
     ("dall-e-2", o.DALL_E_2), ("flux-1-schnell", o.RELAY), ("qwen-image", o.RELAY)],
)
def test_model_table(name: str, model: o.Model) -> None:
    assert o.model_for(name) is model


@pytest.mark.parametrize(
    ("ar", "gpt", "dalle3", "dalle2"),
    [("1:1", "1024x1024", "1024x1024", "1024x1024"), ("16:9", "1536x1024", "1792x1024", "1024x1024"),
     ("2:3", "1024x1536", "1024x1792", "1024x1024"), ("4:3", "1536x1024", "1792x1024", "1024x1024")],
)
def test_ar_goes_to_the_nearest_size_the_model_takes(ar: str, gpt: str, dalle3: str, dalle2: str) -> None:
    params = GenerationParams(prompt="x", aspect_ratio=ar)
    assert (o.nearest_size(params, o.GPT_IMAGE), o.nearest_size(params, o.DALL_E_3),
            o.nearest_size(params, o.DALL_E_2)) == (gpt, dalle3, dalle2)


def test_explicit_size_picks_shape_then_area_and_relays_take_it_as_is() -> None:
    small = GenerationParams(prompt="x", width=256, height=256)
    assert o.nearest_size(small, o.DALL_E_2) == "256x256"
    assert o.nearest_size(small, o.RELAY) == "256x256"
    assert o.nearest_size(GenerationParams(prompt="x", aspect_ratio="16:9"), o.RELAY) == "1024x576"


def test_n_above_the_model_is_several_calls() -> None:
    assert o.calls_for(4, o.DALL_E_3) == [1, 1, 1, 1]
    assert o.calls_for(4, o.GPT_IMAGE) == [4]
    assert o.calls_for(3, o.RELAY) == [1, 1, 1]


def test_generation_body_sends_response_format_only_where_the_model_takes_it() -> None:
    spec = make_spec(prompt="a red fox", negative_prompt="blur", aspect_ratio="16:9")
    gpt = o.generation_body(spec, "gpt-image-1", o.GPT_IMAGE, 2)
    assert gpt == {"model": "gpt-image-1", "prompt": "a red fox\n\nAvoid: blur", "n": 2, "size": "1536x1024"}
    dalle = o.generation_body(spec, "dall-e-3", o.DALL_E_3, 1)
    assert dalle["response_format"] == "b64_json" and dalle["size"] == "1792x1024"
    assert "response_format" not in o.generation_body(spec, "flux-1-schnell", o.RELAY, 1)


def test_a_transparent_last_image_of_the_same_size_is_the_mask() -> None:
    photo = input_image(png(64, 64))
    mask = input_image(rgba_png(64, 64))
    assert o.split_mask([photo, mask]) == ([photo], mask)
    other = input_image(png(64, 64, (0, 0, 255)))
    assert o.split_mask([photo, other]) == ([photo, other], None)  # no alpha: a second image
    assert o.split_mask([photo, input_image(rgba_png(32, 32))])[1] is None  # wrong size


def test_edit_files_several_images_for_gpt_image_one_square_png_for_dalle2() -> None:
    photos = [input_image(png(80, 40)), input_image(png(40, 40, fmt="JPEG"))]
    files = o.edit_files(photos, None, o.GPT_IMAGE)
    assert [name for name, _ in files] == ["image[]", "image[]"]
    assert files[1][1][2] == "image/jpeg" and files[1][1][0] == "image2.jpg"
    [(name, (filename, data, mime))] = o.edit_files(photos[:1], None, o.DALL_E_2)
    assert (name, filename, mime) == ("image", "image.png", "image/png")
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and img.width == img.height == 40


# ---- answers and errors ------------------------------------------------------


def test_answer_with_b64_and_revised_prompt() -> None:
    state = o.read_images({"created": 1, "data": [{"b64_json": b64(b"\x89PNG..."), "revised_prompt": "A fox"}]})
    assert state.status is JobStatus.SUCCEEDED
    assert state.images[0].data == b"\x89PNG..." and state.vendor_data == {"revised_prompt": "A fox"}
    by_url = o.read_images({"data": [{"url": "https://cdn.example/1.png"}]})
    assert by_url.images[0].url == "https://cdn.example/1.png" and by_url.vendor_data == {}


@pytest.mark.parametrize("body", [{}, {"data": []}, {"data": [{"b64_json": "%%%"}]}, {"data": [{"url": "ftp://x"}]}])
def test_unreadable_answers_are_malformed(body: dict) -> None:
    with pytest.raises(MalformedResponse):
        o.read_images(body)


def envelope(code: str | None, kind: str = "invalid_request_error", message: str = "m") -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected", "retry"),
    [
        (401, envelope("invalid_api_key"), {}, AuthError, None),
        (429, envelope("insufficient_quota", "insufficient_quota"), {}, QuotaExceeded, None),
        (400, envelope("billing_hard_limit_reached"), {}, QuotaExceeded, None),
        (429, envelope("rate_limit_exceeded", "requests"), {"retry-after": "7"}, RateLimited, 7.0),
        (429, envelope("rate_limit_exceeded"), {"x-ratelimit-reset-requests": "1m30s"}, RateLimited, 90.0),
        (400, envelope("content_policy_violation", "image_generation_user_error"), {}, ContentRejected, None),
        (400, envelope("moderation_blocked", "image_generation_user_error"), {}, ContentRejected, None),
        (400, envelope("insufficient_user_quota", "new_api_error"), {}, QuotaExceeded, None),  # a relay's code
        (403, envelope("pre_consume_token_quota_failed", "new_api_error"), {}, QuotaExceeded, None),  # new-api on 403
        (403, envelope(None, "new_api_error", "forbidden"), {}, AuthError, None),
        (400, envelope(None, message="Invalid size"), {}, BadRequest, None),
        (500, envelope(None, "server_error"), {}, Unavailable, None),
        (502, None, {}, Unavailable, None),  # a proxy's HTML page
    ],
)
def test_errors_by_code_then_type_then_status(status, body, headers, expected, retry) -> None:  # type: ignore[no-untyped-def]
    error = o.error_from_body(status, headers, body)
    assert type(error) is expected
    assert error.retry_after == retry


# ---- in-process jobs ---------------------------------------------------------


async def test_a_quick_call_answers_at_submit_and_a_slow_one_in_the_background() -> None:
    jobs = InProcessJobs(concurrency=2, answer_within=0.05)
    ended: list[tuple[str, JobState]] = []

    async def listener(job_id: str, state: JobState) -> bool:
        ended.append((job_id, state))
        return False

    jobs.listener = listener
    done = JobState(status=JobStatus.SUCCEEDED)
    assert await jobs.start("quick", lambda: asyncio.sleep(0, done)) is done
    release = asyncio.Event()

    async def slow() -> JobState:
        await release.wait()
        return done

    assert await jobs.start("slow", slow) is None
    assert jobs.state("slow").status is JobStatus.RUNNING and len(jobs) == 1
    release.set()
    for _ in range(50):
        if ended:
            break
        await asyncio.sleep(0.01)
    assert ended == [("slow", done)] and jobs.state("slow") is done


async def test_a_fast_failure_raises_at_submit_a_late_one_is_a_failed_state() -> None:
    jobs = InProcessJobs(concurrency=1, answer_within=0.05)

    async def refused() -> JobState:
        raise RateLimited("429", retry_after=3)

    with pytest.raises(RateLimited):
        await jobs.start("a", refused)

    async def late() -> JobState:
        await asyncio.sleep(0.1)
        raise ContentRejected("moderation_blocked")

    assert await jobs.start("b", late) is None
    await asyncio.sleep(0.2)
    assert jobs.state("b").status is JobStatus.FAILED and jobs.state("b").error_kind == "rejected"


async def test_an_unknown_call_is_not_found_and_shutdown_cancels_running_ones() -> None:
    from providers.errors import JobNotFound

    jobs = InProcessJobs(concurrency=1, answer_within=0.01)
    with pytest.raises(JobNotFound):
        jobs.state("lost-in-restart")
    assert await jobs.start("long", lambda: asyncio.sleep(30, JobState(status=JobStatus.SUCCEEDED))) is None
    await jobs.aclose(grace=0.05)
    with pytest.raises(JobNotFound):
        jobs.state("long")


async def test_shutdown_lets_a_call_that_is_nearly_done_finish_and_be_applied() -> None:
    jobs = InProcessJobs(concurrency=1, answer_within=0.01)
    applied: list[str] = []

    async def listener(job_id: str, state: JobState) -> bool:
        applied.append(job_id)
        return True

    jobs.listener = listener
    assert await jobs.start("nearly", lambda: asyncio.sleep(0.1, JobState(status=JobStatus.SUCCEEDED))) is None
    await jobs.aclose(grace=2.0)
    assert applied == ["nearly"]
    with pytest.raises(JobNotFound):  # applied, so not kept in memory
        jobs.state("nearly")


async def test_a_submit_abandoned_mid_wait_still_reports_the_end() -> None:
    jobs = InProcessJobs(concurrency=1, answer_within=5.0)
    ended: list[JobState] = []

    async def listener(job_id: str, state: JobState) -> bool:
        ended.append(state)
        return False  # not applied (yet): the state stays for the poller

    jobs.listener = listener
    submit = asyncio.ensure_future(jobs.start("x", lambda: asyncio.sleep(0.1, JobState(status=JobStatus.SUCCEEDED))))
    await asyncio.sleep(0.02)
    submit.cancel()  # e.g. the stage's own time limit
    with pytest.raises(asyncio.CancelledError):
        await submit
    await asyncio.sleep(0.2)
    assert [s.status for s in ended] == [JobStatus.SUCCEEDED]
    assert jobs.state("x").status is JobStatus.SUCCEEDED


# ---- the HTTP boundary -----------------------------------------------------------


async def test_txt2img_request_auth_and_answer(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(json_response({"created": 1, "data": [{"b64_json": b64(png())}]}))
    async with mock_provider(o.OpenAI, recorder, BASE, openai_api_key=KEY, openai_image_model="gpt-image-1") as provider:
        submitted = await provider.submit(make_spec(prompt="a lantern", n=2))
    request = recorder.requests[0]
    assert str(request.url) == f"{BASE}/images/generations"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert recorder.body() == {"model": "gpt-image-1", "prompt": "a lantern", "n": 2, "size": "1024x1024"}
    assert submitted.state is not None and submitted.state.status is JobStatus.SUCCEEDED


async def test_an_error_at_submit_is_raised_with_the_key_redacted(caplog: pytest.LogCaptureFixture) -> None:
    body = envelope("invalid_api_key", message=f"Incorrect API key provided: {KEY}.")
    recorder = Recorder(json_response(body, 401))
    caplog.set_level(logging.INFO, logger="providers")
    async with mock_provider(o.OpenAI, recorder, BASE, openai_api_key=KEY, openai_image_model="dall-e-3") as provider:
        with pytest.raises(AuthError) as raised:
            await provider.submit(make_spec(prompt="x"))
    assert KEY not in str(raised.value) and KEY not in caplog.text
    assert "invalid_api_key" in caplog.text


async def test_dalle3_four_images_are_four_calls_and_variation_is_refused() -> None:
    recorder = Recorder(json_response({"data": [{"b64_json": b64(png()), "revised_prompt": "r"}]}))
    async with mock_provider(o.OpenAI, recorder, BASE, openai_api_key=KEY, openai_image_model="dall-e-3") as provider:
        submitted = await provider.submit(make_spec(prompt="x", n=4))
        assert provider.available_capabilities(True) == frozenset({Capability.TXT2IMG})
        with pytest.raises(BadRequest):
            await provider.submit(make_spec(Capability.VARIATION, images=(input_image(),), prompt="x"))
    assert len(recorder.requests) == 4 and all(recorder.body(i)["n"] == 1 for i in range(4))
    assert submitted.state is not None and len(submitted.state.images) == 4


async def test_dalle2_variation_goes_to_the_variations_endpoint() -> None:
    recorder = Recorder(json_response({"data": [{"b64_json": b64(png())}]}))
    async with mock_provider(o.OpenAI, recorder, BASE, openai_api_key=KEY, openai_image_model="dall-e-2") as provider:
        await provider.submit(make_spec(Capability.VARIATION, images=(input_image(png(90, 60, fmt="JPEG")),), prompt="x"))
    request = recorder.requests[0]
    assert request.url.path.endswith("/images/variations")
    assert b'name="image"; filename="image.png"' in request.content and b"prompt" not in request.content


async def test_a_relay_edit_sends_one_image_and_reads_a_url_answer() -> None:
    recorder = Recorder(json_response({"data": [{"url": "https://relay.example/out.png"}]}))
    async with mock_provider(o.OpenAI, recorder, BASE, openai_api_key=KEY, openai_image_model="flux-kontext-pro") as provider:
        submitted = await provider.submit(make_spec(Capability.EDIT, images=(input_image(),), prompt="make it snowy"))
    request = recorder.requests[0]
    assert request.url.path.endswith("/images/edits")
    assert b'name="model"\r\n\r\nflux-kontext-pro' in request.content
    assert b'name="image"; filename="image.png"' in request.content
    assert submitted.state is not None and submitted.state.images[0].url == "https://relay.example/out.png"


async def test_shutdown_never_starts_a_call_that_was_still_waiting() -> None:
    jobs = InProcessJobs(concurrency=1, answer_within=0.01)
    started: list[str] = []

    def call(name: str, seconds: float):  # type: ignore[no-untyped-def]
        async def run() -> JobState:
            started.append(name)
            await asyncio.sleep(seconds)
            return JobState(status=JobStatus.SUCCEEDED)
        return run

    await jobs.start("a", call("a", 0.2))
    await jobs.start("b", call("b", 5.0))  # waits for the one slot
    await jobs.aclose(grace=1.0)  # "a" ends within the grace; "b" must not start then
    assert started == ["a"]


async def test_a_resubmit_gets_the_answer_nobody_applied_not_a_second_call() -> None:
    jobs = InProcessJobs(concurrency=1, answer_within=0.01)
    calls = 0

    async def call() -> JobState:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return JobState(status=JobStatus.SUCCEEDED)

    assert await jobs.start("x", call) is None
    await asyncio.sleep(0.1)  # it ended; no listener applied it
    again = await jobs.start("x", call)
    assert again is not None and again.status is JobStatus.SUCCEEDED and calls == 1


async def test_split_calls_count_against_the_vendors_concurrency() -> None:
    running = peak = 0

    async def server(request: httpx.Request) -> httpx.Response:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return json_response({"data": [{"b64_json": b64(png())}]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as client:
        provider = o.OpenAI(client, secrets={"openai_api_key": KEY}, base_url=BASE, model="dall-e-3")
        provider._call_slots = asyncio.Semaphore(2)
        submitted = await provider.submit(make_spec(prompt="x", n=4))
    assert submitted.state is not None and len(submitted.state.images) == 4
    assert peak == 2
