"""FakeOpenAI over real loopback HTTP: each model's accepted requests and
answer shapes, each refusal the real API makes, the faults, url expiry,
relay models, slowness and held calls."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from tests.fakes.openai import DEFAULT_KEY, FakeOpenAI, parts_of
from tests.fakes.server import serve

loopback = pytest.mark.asyncio(loop_scope="module")

FAKE = FakeOpenAI(run_seconds=0.0, relay_models={"flux-1-schnell": {}, "flux-dev": {"max_n": 2}})
AUTH = {"Authorization": f"Bearer {DEFAULT_KEY}"}


class Api:
    def __init__(self, base: str, client: httpx.AsyncClient) -> None:
        self.base = base
        self.v1 = f"{base}/v1"
        self.client = client

    async def generate(self, headers: dict[str, str] | None = None,
                       **body: Any) -> httpx.Response:
        return await self.client.post(f"{self.v1}/images/generations", json=body,
                                      headers=AUTH if headers is None else headers)

    async def multipart(self, endpoint: str, files: list[tuple[str, Any]],
                        **fields: Any) -> httpx.Response:
        data = {k: str(v) for k, v in fields.items()}
        return await self.client.post(f"{self.v1}/images/{endpoint}", data=data, files=files,
                                      headers=AUTH)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[Api]:
    async with serve(FAKE.app) as base, httpx.AsyncClient(timeout=5) as client:
        yield Api(base, client)
    await FAKE.aclose()


@pytest.fixture
def api(server: Api) -> Api:
    FAKE.reset()
    return server


def image(width: int = 64, height: int = 64, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    color: Any = (200, 30, 30, 255) if mode == "RGBA" else (200, 30, 30)
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color).save(buffer, format=fmt)
    return buffer.getvalue()


def decoded(item: dict[str, Any]) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(item["b64_json"], validate=True)))
    img.load()
    return img


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# =========================================================================== #
# gpt-image-1
# =========================================================================== #


@loopback
async def test_gpt_image_1_generation_answers_b64_with_usage(api: Api) -> None:
    response = await api.generate(model="gpt-image-1", prompt="a red fox", n=2,
                                  size="1536x1024", quality="high", background="transparent",
                                  output_format="png", moderation="low")
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert set(body) == {"created", "data", "usage", "size", "quality", "output_format",
                         "background"}
    assert (body["size"], body["quality"], body["output_format"], body["background"]) == (
        "1536x1024", "high", "png", "transparent")
    assert set(body["usage"]) == {"input_tokens", "output_tokens", "total_tokens",
                                  "input_tokens_details"}
    assert body["usage"]["total_tokens"] == (body["usage"]["input_tokens"]
                                             + body["usage"]["output_tokens"])
    assert len(body["data"]) == 2
    for item in body["data"]:
        assert set(item) == {"b64_json"}
        img = decoded(item)
        assert (img.format, img.size, img.mode) == ("PNG", (1536, 1024), "RGBA")
    assert FAKE.completed["gpt-image-1"] == 1
    assert FAKE.generations[0].params["quality"] == "high"


@loopback
async def test_gpt_image_1_defaults_and_other_output_formats(api: Api) -> None:
    body = (await api.generate(model="gpt-image-1", prompt="p")).json()
    assert (body["size"], body["quality"], body["background"]) == ("1024x1024", "medium",
                                                                   "opaque")
    assert decoded(body["data"][0]).size == (1024, 1024)
    jpeg = (await api.generate(model="gpt-image-1", prompt="p", size="auto",
                               output_format="jpeg", output_compression=50)).json()
    assert decoded(jpeg["data"][0]).format == "JPEG"
    webp = (await api.generate(model="gpt-image-1", prompt="p", output_format="webp")).json()
    assert decoded(webp["data"][0]).format == "WEBP"


@loopback
@pytest.mark.parametrize(("extra", "param"), [
    ({"response_format": "b64_json"}, "response_format"),
    ({"response_format": "url"}, "response_format"),
    ({"style": "vivid"}, "style"),
])
async def test_gpt_image_1_refuses_dalle_parameters(api: Api, extra: dict[str, Any],
                                                    param: str) -> None:
    response = await api.generate(model="gpt-image-1", prompt="p", **extra)
    assert response.status_code == 400
    error = error_of(response)
    assert error == {"message": f"Unknown parameter: '{param}'.", "type": "invalid_request_error",
                     "param": param, "code": "unknown_parameter"}
    assert FAKE.started == 0


@loopback
@pytest.mark.parametrize(("extra", "param"), [
    ({"size": "512x512"}, "size"),
    ({"size": "1792x1024"}, "size"),
    ({"quality": "hd"}, "quality"),
    ({"output_format": "gif"}, "output_format"),
    ({"background": "white"}, "background"),
    ({"moderation": "off"}, "moderation"),
    ({"n": 11}, "n"),
    ({"n": 0}, "n"),
    ({"n": "2"}, "n"),
    ({"output_compression": 50}, "output_compression"),  # png output
    ({"output_format": "jpeg", "background": "transparent"}, "background"),
    ({"stream": True}, "stream"),
])
async def test_gpt_image_1_refuses_bad_values(api: Api, extra: dict[str, Any],
                                              param: str) -> None:
    response = await api.generate(model="gpt-image-1", prompt="p", **extra)
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param


@loopback
async def test_gpt_image_1_unknown_size_lists_the_supported_ones(api: Api) -> None:
    error = error_of(await api.generate(model="gpt-image-1", prompt="p", size="512x512"))
    assert error["code"] == "invalid_value"
    assert error["message"] == ("Invalid value: '512x512'. Supported values are: '1024x1024', "
                                "'1536x1024', '1024x1536', and 'auto'.")


@loopback
async def test_gpt_image_1_edit_takes_several_images_and_a_mask(api: Api) -> None:
    files = [("image[]", ("a.png", image(300, 200), "image/png")),
             ("image[]", ("b.jpg", image(50, 80, fmt="JPEG"), "image/jpeg")),
             ("image[]", ("c.webp", image(40, 40, fmt="WEBP"), "image/webp")),
             ("mask", ("mask.png", image(300, 200, "RGBA"), "image/png"))]
    response = await api.multipart("edits", files, model="gpt-image-1", prompt="merge them",
                                   size="1024x1536", quality="low", input_fidelity="high")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["size"] == "1024x1536"
    assert decoded(body["data"][0]).size == (1024, 1536)
    assert body["usage"]["input_tokens_details"]["image_tokens"] > 0
    record = FAKE.api_requests("/images/edits")[0]
    assert [p.name for p in parts_of(record)] == ["model", "prompt", "size", "quality",
                                                  "input_fidelity", "image[]", "image[]",
                                                  "image[]", "mask"]
    assert [f["filename"] for f in record.body["image[]"]] == ["a.png", "b.jpg", "c.webp"]
    assert record.body["mask"]["content_type"] == "image/png"
    job = FAKE.generations[0]
    assert (job.endpoint, len(job.images), job.mask is not None) == ("edits", 3, True)
    assert record.headers["authorization"] == f"Bearer {DEFAULT_KEY}"


@loopback
async def test_gpt_image_1_edit_accepts_a_single_image_field(api: Api) -> None:
    files = [("image", ("a.png", image(), "image/png"))]
    response = await api.multipart("edits", files, model="gpt-image-1", prompt="p")
    assert response.status_code == 200, response.text
    assert set(response.json()["data"][0]) == {"b64_json"}


@loopback
@pytest.mark.parametrize(("files", "param", "code"), [
    ([("image[]", ("a.png", image(300, 200), "image/png")),
      ("mask", ("m.png", image(200, 200, "RGBA"), "image/png"))], "mask", "invalid_image_format"),
    ([("image[]", ("a.png", image(), "image/png")),
      ("mask", ("m.png", image(), "image/png"))], "mask", "invalid_image_format"),  # no alpha
    ([("image[]", ("a.png", image(), "application/octet-stream"))], "image[]",
     "unsupported_file_mimetype"),
    ([("image[]", ("a.gif", image(fmt="GIF"), "image/gif"))], "image[]",
     "unsupported_file_mimetype"),
    ([("image[]", ("a.png", image(fmt="JPEG"), "image/png"))], "image[]",  # lies about its type
     "unsupported_file_mimetype"),
    ([("image[]", (f"{i}.png", image(8, 8), "image/png")) for i in range(17)], "image",
     "array_above_max_length"),
    ([], "image", "missing_required_parameter"),
])
async def test_gpt_image_1_edit_refusals(api: Api, files: list[Any], param: str,
                                         code: str) -> None:
    if files:
        response = await api.multipart("edits", files, model="gpt-image-1", prompt="p")
    else:  # no image at all: a multipart form with only text fields
        response = await api.client.post(f"{api.v1}/images/edits", headers=AUTH,
                                         files={"model": (None, "gpt-image-1"),
                                                "prompt": (None, "p")})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert (error["param"], error["code"]) == (param, code)


@loopback
async def test_gpt_image_1_has_no_variations(api: Api) -> None:
    files = [("image", ("a.png", image(), "image/png"))]
    response = await api.multipart("variations", files, model="gpt-image-1")
    assert response.status_code == 400
    error = error_of(response)
    assert (error["param"], error["code"]) == ("model", "invalid_value")
    assert "'dall-e-2'" in error["message"]


# =========================================================================== #
# dall-e-3
# =========================================================================== #


@loopback
async def test_dalle3_answers_a_url_with_a_revised_prompt(api: Api) -> None:
    response = await api.generate(model="dall-e-3", prompt="a lighthouse", size="1792x1024",
                                  quality="hd", style="natural")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"created", "data"}
    (item,) = body["data"]
    assert set(item) == {"url", "revised_prompt"}
    assert item["revised_prompt"] == "A detailed rendering of a lighthouse"
    assert "se=" in item["url"] and "sig=" in item["url"]
    picture = await api.client.get(item["url"])
    assert picture.status_code == 200
    assert picture.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(picture.content)).size == (1792, 1024)


@loopback
async def test_dalle3_b64_json(api: Api) -> None:
    body = (await api.generate(model="dall-e-3", prompt="p", response_format="b64_json",
                               size="1024x1792")).json()
    (item,) = body["data"]
    assert set(item) == {"b64_json", "revised_prompt"}
    assert decoded(item).size == (1024, 1792)


@loopback
async def test_dalle3_takes_only_n_1(api: Api) -> None:
    response = await api.generate(model="dall-e-3", prompt="p", n=2)
    assert response.status_code == 400
    assert error_of(response)["message"] == "You must provide n=1 for this model."
    assert (await api.generate(model="dall-e-3", prompt="p", n=1)).status_code == 200


@loopback
@pytest.mark.parametrize(("extra", "param"), [
    ({"size": "1536x1024"}, "size"), ({"size": "512x512"}, "size"),
    ({"quality": "high"}, "quality"), ({"style": "anime"}, "style"),
    ({"response_format": "png"}, "response_format"),
    ({"background": "opaque"}, "background"), ({"output_format": "png"}, "output_format"),
])
async def test_dalle3_refusals(api: Api, extra: dict[str, Any], param: str) -> None:
    response = await api.generate(model="dall-e-3", prompt="p", **extra)
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param


@loopback
async def test_dalle3_has_no_edits(api: Api) -> None:
    files = [("image", ("a.png", image(64, 64, "RGBA"), "image/png"))]
    response = await api.multipart("edits", files, model="dall-e-3", prompt="p")
    assert response.status_code == 400
    assert error_of(response)["param"] == "model"


# =========================================================================== #
# dall-e-2
# =========================================================================== #


@loopback
async def test_dalle2_is_the_default_model(api: Api) -> None:
    response = await api.generate(prompt="p", n=3, size="256x256")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 3 and all(set(item) == {"url"} for item in data)
    assert FAKE.generations[0].model == "dall-e-2"
    assert len(FAKE.generations[0].files) == 3


@loopback
@pytest.mark.parametrize(("extra", "param"), [
    ({"size": "1792x1024"}, "size"), ({"n": 11}, "n"), ({"style": "vivid"}, "style"),
    ({"quality": "hd"}, "quality"),
])
async def test_dalle2_refusals(api: Api, extra: dict[str, Any], param: str) -> None:
    response = await api.generate(model="dall-e-2", prompt="p", **extra)
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param


@loopback
async def test_dalle2_edit_takes_one_square_rgba_png_and_a_mask(api: Api) -> None:
    files = [("image", ("a.png", image(128, 128, "RGBA"), "image/png")),
             ("mask", ("m.png", image(128, 128, "RGBA"), "image/png"))]
    response = await api.multipart("edits", files, model="dall-e-2", prompt="p", n=2,
                                   size="512x512", response_format="b64_json")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [decoded(item).size for item in data] == [(512, 512), (512, 512)]


@loopback
@pytest.mark.parametrize(("files", "param", "fragment"), [
    ([("image", ("a.png", image(128, 96, "RGBA"), "image/png"))], "image", "square"),
    ([("image", ("a.png", image(64, 64), "image/png"))], "image", "got RGB"),
    ([("image", ("a.jpg", image(64, 64, fmt="JPEG"), "image/jpeg"))], "image", "PNG"),
    ([("image[]", ("a.png", image(64, 64, "RGBA"), "image/png"))], "image[]", "Unknown"),
    ([("image", ("a.png", image(64, 64, "RGBA"), "image/png")),
      ("mask", ("m.png", image(32, 32, "RGBA"), "image/png"))], "mask", "does not match"),
])
async def test_dalle2_edit_refusals(api: Api, files: list[Any], param: str,
                                    fragment: str) -> None:
    response = await api.multipart("edits", files, model="dall-e-2", prompt="p")
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["param"] == param and fragment in error["message"]


@loopback
async def test_dalle2_edit_image_under_4_mb(api: Api) -> None:
    big = Image.frombytes("RGBA", (1100, 1100), bytes(range(256)) * (1100 * 1100 * 4 // 256)
                          + bytes(1100 * 1100 * 4 % 256))
    buffer = io.BytesIO()
    big.save(buffer, format="PNG", compress_level=0)
    assert len(buffer.getvalue()) >= 4 * 1024 * 1024
    files = [("image", ("a.png", buffer.getvalue(), "image/png"))]
    response = await api.multipart("edits", files, model="dall-e-2", prompt="p")
    assert response.status_code == 400
    assert error_of(response)["code"] == "image_too_large"


@loopback
async def test_dalle2_variations(api: Api) -> None:
    files = [("image", ("a.png", image(64, 64), "image/png"))]
    response = await api.multipart("variations", files, n=2, size="256x256")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 2 and set(data[0]) == {"url"}
    assert FAKE.generations[0].endpoint == "variations"
    assert FAKE.completed["dall-e-2"] == 1
    refused = await api.multipart("variations", files, prompt="no prompts here")
    assert error_of(refused)["param"] == "prompt"
    not_square = await api.multipart("variations",
                                     [("image", ("a.png", image(64, 32), "image/png"))])
    assert "square" in error_of(not_square)["message"]


# =========================================================================== #
# Every model: parameters, prompt, auth, policy
# =========================================================================== #


@loopback
async def test_unknown_parameter(api: Api) -> None:
    response = await api.generate(model="dall-e-3", prompt="p", seed=7)
    assert response.status_code == 400
    assert error_of(response) == {"message": "Unknown parameter: 'seed'.",
                                  "type": "invalid_request_error", "param": "seed",
                                  "code": "unknown_parameter"}
    form = await api.multipart("edits", [("image", ("a.png", image(64, 64, "RGBA"), "image/png"))],
                               prompt="p", strength="0.5")
    assert error_of(form)["message"] == "Unknown parameter: 'strength'."


@loopback
async def test_unknown_model_is_404(api: Api) -> None:
    response = await api.generate(model="dall-e-4", prompt="p")
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "model_not_found" and "dall-e-4" in error["message"]


@loopback
@pytest.mark.parametrize(("model", "limit"), [("gpt-image-1", 32000), ("dall-e-3", 4000),
                                              ("dall-e-2", 1000)])
async def test_prompt_limits(api: Api, model: str, limit: int) -> None:
    assert (await api.generate(model=model, prompt="x" * limit, size="1024x1024")
            ).status_code == 200
    response = await api.generate(model=model, prompt="x" * (limit + 1))
    assert response.status_code == 400
    error = error_of(response)
    assert (error["param"], error["code"]) == ("prompt", "string_above_max_length")
    assert str(limit) in error["message"]


@loopback
@pytest.mark.parametrize("body", [{}, {"prompt": ""}, {"prompt": 5}])
async def test_prompt_required(api: Api, body: dict[str, Any]) -> None:
    response = await api.generate(model="dall-e-3", **body)
    assert response.status_code == 400
    assert error_of(response)["param"] == "prompt"


@loopback
async def test_bodies_must_have_the_right_content_type(api: Api) -> None:
    form = await api.client.post(f"{api.v1}/images/generations", headers=AUTH,
                                 data={"prompt": "p"})
    assert form.status_code == 400 and "application/json" in error_of(form)["message"]
    broken = await api.client.post(f"{api.v1}/images/generations", headers={
        **AUTH, "content-type": "application/json"}, content=b"{not json")
    assert "could not parse the JSON" in error_of(broken)["message"]
    as_json = await api.client.post(f"{api.v1}/images/edits", headers=AUTH,
                                    json={"prompt": "p"})
    assert as_json.status_code == 400 and "multipart" in error_of(as_json)["message"]


@loopback
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-test-wrong"},
                                     {"Authorization": DEFAULT_KEY}])
async def test_wrong_or_missing_key_is_401(api: Api, headers: dict[str, str]) -> None:
    response = await api.generate(headers=headers, model="dall-e-3", prompt="p")
    assert response.status_code == 401
    error = error_of(response)
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error",
                                                             "invalid_api_key", None)
    if headers.get("Authorization") == "Bearer sk-test-wrong":
        assert error["message"].startswith("Incorrect API key provided: sk-te****rong.")
    assert FAKE.api_requests()[0].headers.get("authorization") == headers.get("Authorization")
    models = await api.client.get(f"{api.v1}/models", headers=headers)
    assert models.status_code == 401


@loopback
@pytest.mark.parametrize(("model", "code"), [("gpt-image-1", "moderation_blocked"),
                                             ("dall-e-3", "content_policy_violation"),
                                             ("dall-e-2", "content_policy_violation"),
                                             ("flux-1-schnell", "content_policy_violation")])
async def test_blocked_words(api: Api, model: str, code: str) -> None:
    response = await api.generate(model=model, prompt="something FORBIDDEN here")
    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["code"]) == ("image_generation_user_error", code)
    assert FAKE.completed[model] == 0


# =========================================================================== #
# Faults
# =========================================================================== #


@loopback
@pytest.mark.parametrize(("kind", "status", "type_", "code"), [
    ("insufficient_quota", 429, "insufficient_quota", "insufficient_quota"),
    ("billing_hard_limit_reached", 400, "invalid_request_error", "billing_hard_limit_reached"),
    ("rate_limited", 429, "requests", "rate_limit_exceeded"),
    ("server_error", 500, "server_error", None),
    ("unavailable", 503, "server_error", None),
    ("invalid_api_key", 401, "invalid_request_error", "invalid_api_key"),
])
async def test_faults(api: Api, kind: str, status: int, type_: str, code: str | None) -> None:
    FAKE.fail_next(kind)
    response = await api.generate(model="dall-e-3", prompt="p")
    assert response.status_code == status
    error = error_of(response)
    assert (error["type"], error["code"]) == (type_, code)
    assert FAKE.started == 0
    assert (await api.generate(model="dall-e-3", prompt="p")).status_code == 200


@loopback
async def test_rate_limited_says_when_to_retry(api: Api) -> None:
    FAKE.retry_after_seconds = 7
    FAKE.fail_next("rate_limited", times=2)
    for _ in range(2):
        response = await api.generate(model="dall-e-3", prompt="p")
        assert response.status_code == 429
        assert response.headers["retry-after"] == "7"
        assert response.headers["x-ratelimit-reset-requests"] == "7s"
    FAKE.reset()
    response = await api.generate(model="dall-e-3", prompt="p")
    assert response.status_code == 200
    FAKE.fail_next("rate_limited")
    assert (await api.generate(model="dall-e-3", prompt="p")).headers["retry-after"] == "2"


@loopback
async def test_faults_can_target_one_endpoint(api: Api) -> None:
    FAKE.fail_next("server_error", path="/images/edits")
    assert (await api.generate(model="dall-e-3", prompt="p")).status_code == 200
    files = [("image", ("a.png", image(64, 64, "RGBA"), "image/png"))]
    assert (await api.multipart("edits", files, prompt="p")).status_code == 500
    assert (await api.multipart("edits", files, prompt="p")).status_code == 200


@loopback
async def test_other_faults(api: Api) -> None:
    FAKE.fail_next("bad_gateway")
    response = await api.generate(model="dall-e-3", prompt="p")
    assert response.status_code == 502 and "text/html" in response.headers["content-type"]
    FAKE.timeout_seconds = 0.2
    FAKE.fail_next("timeout")
    with pytest.raises(httpx.ReadTimeout):
        await api.client.post(f"{api.v1}/images/generations", headers=AUTH,
                              json={"model": "dall-e-3", "prompt": "p"}, timeout=0.05)
    with pytest.raises(ValueError):
        FAKE.fail_next("no_such_fault")


# =========================================================================== #
# url results
# =========================================================================== #


@loopback
async def test_urls_expire_after_an_hour(api: Api) -> None:
    url = (await api.generate(model="dall-e-2", prompt="p")).json()["data"][0]["url"]
    assert (await api.client.get(url)).status_code == 200
    FAKE.advance(3599)
    assert (await api.client.get(url)).status_code == 200
    FAKE.advance(2)
    expired = await api.client.get(url)
    assert expired.status_code == 403
    assert "<Code>AuthenticationFailed</Code>" in expired.text
    missing = await api.client.get(f"{api.base}/private/nothing.png")
    assert missing.status_code == 404 and "BlobNotFound" in missing.text
    assert FAKE.api_requests() == [FAKE.requests[0]]  # file fetches are not API calls


# =========================================================================== #
# Relay models
# =========================================================================== #


@loopback
async def test_relay_model_any_size_in_steps_of_8(api: Api) -> None:
    response = await api.generate(model="flux-1-schnell", prompt="p", size="1000x584", n=4)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"created", "data"}
    assert len(body["data"]) == 4
    item = body["data"][0]
    # A Go relay's struct: every field present, the unused ones empty.
    assert item["b64_json"] == "" and item["revised_prompt"] == "" and item["url"]
    picture = await api.client.get(item["url"])
    assert Image.open(io.BytesIO(picture.content)).size == (1000, 584)
    b64 = (await api.generate(model="flux-1-schnell", prompt="p", response_format="b64_json",
                              quality="hd", style="vivid")).json()["data"][0]
    assert b64["url"] == "" and decoded(b64).size == (1024, 1024)


@loopback
@pytest.mark.parametrize(("extra", "param"), [
    ({"size": "1001x1000"}, "size"), ({"size": "4096x1024"}, "size"),
    ({"size": "128x128"}, "size"), ({"size": "big"}, "size"), ({"n": 5}, "n"),
    ({"seed": 3}, "seed"), ({"output_format": "png"}, "output_format"),
])
async def test_relay_refusals(api: Api, extra: dict[str, Any], param: str) -> None:
    response = await api.generate(model="flux-1-schnell", prompt="p", **extra)
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param


@loopback
async def test_relay_options_per_model(api: Api) -> None:
    assert (await api.generate(model="flux-dev", prompt="p", n=2)).status_code == 200
    assert error_of(await api.generate(model="flux-dev", prompt="p", n=3))["param"] == "n"


@loopback
async def test_relay_edits_take_one_image_of_any_shape(api: Api) -> None:
    files = [("image", ("a.jpg", image(120, 80, fmt="JPEG"), "image/jpeg"))]
    response = await api.multipart("edits", files, model="flux-1-schnell", prompt="p",
                                   size="768x512", response_format="b64_json")
    assert response.status_code == 200, response.text
    assert decoded(response.json()["data"][0]).size == (768, 512)
    two = files + [("image", ("b.png", image(), "image/png"))]
    refused = await api.multipart("edits", two, model="flux-1-schnell", prompt="p")
    assert error_of(refused)["code"] == "array_above_max_length"
    variations = await api.multipart("variations", files, model="flux-1-schnell")
    assert error_of(variations)["param"] == "model"


# =========================================================================== #
# Models list
# =========================================================================== #


@loopback
async def test_models_list(api: Api) -> None:
    response = await api.client.get(f"{api.v1}/models", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["gpt-image-1", "dall-e-3", "dall-e-2",
                                                "flux-1-schnell", "flux-dev"]
    assert set(body["data"][0]) == {"id", "object", "created", "owned_by"}
    one = await api.client.get(f"{api.v1}/models/dall-e-3", headers=AUTH)
    assert one.json()["id"] == "dall-e-3"
    missing = await api.client.get(f"{api.v1}/models/nope", headers=AUTH)
    assert missing.status_code == 404 and error_of(missing)["code"] == "model_not_found"


@loopback
async def test_models_and_prefix_are_options() -> None:
    fake = FakeOpenAI(prefix="/openai/v1", models=["gpt-image-1"], relay_models={},
                      api_key="sk-other", run_seconds=0)
    async with serve(fake.app) as base, httpx.AsyncClient() as client:
        headers = {"Authorization": "Bearer sk-other"}
        listed = (await client.get(f"{base}/openai/v1/models", headers=headers)).json()
        assert [m["id"] for m in listed["data"]] == ["gpt-image-1"]
        response = await client.post(f"{base}/openai/v1/images/generations", headers=headers,
                                     json={"prompt": "p"})  # dall-e-2 by default: not served
        assert response.status_code == 404
        assert (await client.post(f"{base}/v1/images/generations", headers=headers,
                                  json={"prompt": "p"})).status_code == 404
    assert [r.path for r in fake.api_requests("generations")] == ["/openai/v1/images/generations"]
    await fake.aclose()


# =========================================================================== #
# Slowness, concurrency, held calls
# =========================================================================== #


@loopback
async def test_run_seconds_and_max_inflight(api: Api) -> None:
    FAKE.run_seconds = 0.1
    started = asyncio.get_running_loop().time()
    responses = await asyncio.gather(*(api.generate(model=m, prompt="p") for m in
                                       ("dall-e-3", "dall-e-3", "dall-e-2")))
    elapsed = asyncio.get_running_loop().time() - started
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert 0.1 <= elapsed < 1.0
    assert FAKE.max_inflight == 3 and FAKE.inflight == 0 and FAKE.started == 3
    assert FAKE.completed == {"dall-e-3": 2, "dall-e-2": 1}


@loopback
async def test_hold_keeps_calls_waiting_until_release(api: Api) -> None:
    FAKE.hold()
    call = asyncio.ensure_future(api.generate(model="dall-e-3", prompt="p"))
    await FAKE.wait_started(1)
    await asyncio.sleep(0.05)
    assert not call.done() and FAKE.inflight == 1 and FAKE.completed["dall-e-3"] == 0
    FAKE.release()
    assert (await call).status_code == 200
    assert FAKE.inflight == 0 and FAKE.completed["dall-e-3"] == 1
    with pytest.raises(TimeoutError):
        await FAKE.wait_started(2, timeout=0.05)
