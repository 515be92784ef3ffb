"""A fake OpenAI Images API, as strict as the real one (BACKENDS.md "openai";
the public API reference), plus the relays (new-api / one-api) that serve
other models (Flux, ...) behind the same routes:

    POST {prefix}/images/generations   JSON
    POST {prefix}/images/edits         multipart/form-data (image / image[], mask)
    POST {prefix}/images/variations    multipart/form-data (dall-e-2 only)
    GET  {prefix}/models, {prefix}/models/{id}
    GET  /private/{name}               url results (an Azure-blob stand-in; expire)

``Authorization: Bearer <api_key>``; every refusal in OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}``. Each model has its own
rules (``MODELS``; relays from ``relay_models``): which parameters it takes
(any other is "Unknown parameter: 'x'."), sizes, n, qualities, styles,
response formats, prompt length, what edits and variations accept. Answers
are synchronous after ``run_seconds`` (``hold()`` keeps calls waiting until
``release()``), with real images of the requested size.

    fake = FakeOpenAI(run_seconds=0.01)
    async with serve(fake.app) as base:            # the client's base URL: base + "/v1"
        ...
    fake.api_requests("/images/generations")[0].headers["authorization"]
    fake.generations[0].params, fake.completed["dall-e-3"], fake.max_inflight
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image, ImageDraw, ImageOps

from tests.fakes.vendor import (FakeVendor, JSONResponse, Part, RecordedRequest, Request, Response,
                                Route, Starlette, _image_format, _is_int, _picture, _png, _rgb, html,
                                parse_parts)

DEFAULT_KEY = "sk-test-fake"
DEFAULT_MODEL = "dall-e-2"  # what the real API uses when a request names none
MB = 1024 * 1024
GPT_IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}

# Every parameter the real API knows per endpoint: anything else is
# "Unknown parameter" whatever the model; a known one the model does not take
# is refused the same way (gpt-image-1 and response_format).
KNOWN_PARAMS = {
    "generations": frozenset({
        "model", "prompt", "n", "size", "quality", "response_format", "style", "user",
        "output_format", "output_compression", "background", "moderation", "stream",
        "partial_images"}),
    "edits": frozenset({
        "image", "image[]", "mask", "model", "prompt", "n", "size", "quality",
        "response_format", "user", "output_format", "output_compression", "background",
        "input_fidelity", "stream", "partial_images"}),
    "variations": frozenset({"image", "model", "n", "response_format", "size", "user"}),
}
RELAY_PARAMS = {
    # new-api's ImageRequest fields: what a relay decodes and forwards.
    "generations": frozenset({"model", "prompt", "n", "size", "quality", "response_format",
                              "style", "user"}),
    "edits": frozenset({"image", "image[]", "mask", "model", "prompt", "n", "size",
                        "response_format", "user"}),
}


@dataclass(frozen=True)
class Rules:
    """What one model accepts."""

    name: str
    owned_by: str
    params: Mapping[str, frozenset[str]]  # endpoint → parameters (no key: no such endpoint)
    max_prompt: int
    max_n: int
    sizes: tuple[str, ...] = ()  # () = any WxH within side_range, sides multiples of side_step
    side_range: tuple[int, int] = (256, 2048)
    side_step: int = 8
    max_n_by_endpoint: Mapping[str, int] = field(default_factory=dict)
    qualities: tuple[str, ...] = ()  # () = any string (a relay passes it on)
    styles: tuple[str, ...] = ()
    response_formats: tuple[str, ...] = ("url", "b64_json")  # first = the default
    gpt_image: bool = False  # b64 only, output_format / background / moderation / usage
    revised_prompt: bool = False
    empty_strings: bool = False  # a Go relay: url, b64_json, revised_prompt always present
    policy_code: str = "content_policy_violation"
    # edits
    edit_max_images: int = 1
    edit_formats: tuple[str, ...] = ("PNG",)  # Pillow format names
    edit_check_mime: bool = False  # the part's Content-Type must name one of them
    edit_max_bytes: int = 4 * MB
    edit_square: bool = True
    edit_needs_alpha: bool = False  # dall-e-2: "format must be in ['RGBA', 'LA', 'L']"
    relay: bool = False


MODELS: dict[str, Rules] = {
    "gpt-image-1": Rules(
        "gpt-image-1", "system",
        params={
            "generations": KNOWN_PARAMS["generations"] - {"response_format", "style"},
            "edits": KNOWN_PARAMS["edits"] - {"response_format"},
        },
        max_prompt=32000, max_n=10,
        sizes=("1024x1024", "1536x1024", "1024x1536", "auto"),
        qualities=("low", "medium", "high", "auto"),
        response_formats=(), gpt_image=True, policy_code="moderation_blocked",
        edit_max_images=16, edit_formats=("PNG", "JPEG", "WEBP"), edit_check_mime=True,
        edit_max_bytes=50 * MB, edit_square=False,
    ),
    "dall-e-3": Rules(
        "dall-e-3", "system",
        params={"generations": frozenset({"model", "prompt", "n", "size", "quality",
                                          "response_format", "style", "user"})},
        max_prompt=4000, max_n=1,
        sizes=("1024x1024", "1792x1024", "1024x1792"),
        qualities=("standard", "hd"), styles=("vivid", "natural"), revised_prompt=True,
    ),
    "dall-e-2": Rules(
        "dall-e-2", "system",
        params={
            "generations": frozenset({"model", "prompt", "n", "size", "quality",
                                      "response_format", "user"}),
            "edits": frozenset({"image", "mask", "model", "prompt", "n", "size",
                                "response_format", "user"}),
            "variations": KNOWN_PARAMS["variations"],
        },
        max_prompt=1000, max_n=10,
        sizes=("256x256", "512x512", "1024x1024"),
        qualities=("standard",), edit_needs_alpha=True,
    ),
}
DEFAULT_RELAY_MODELS: Mapping[str, Mapping[str, Any]] = {"flux-1-schnell": {}}


def relay_rules(name: str, **overrides: Any) -> Rules:
    """A model behind a relay (new-api / one-api serving Flux and others):
    any WxH with sides multiples of 8 in 256..2048, n 1..4, url (default) or
    b64_json, no revised prompt, edits of one image. ``overrides``: any
    ``Rules`` field (``max_n``, ``side_range``, ``side_step``, ``empty_strings``,
    ``max_prompt``, ``edits=False`` to refuse edits ...)."""
    edits = overrides.pop("edits", True)
    params = dict(RELAY_PARAMS)
    if not edits:
        params.pop("edits")
    base = Rules(
        name, "relay", params=params, max_prompt=10000, max_n=4,
        edit_formats=("PNG", "JPEG", "WEBP"), edit_max_bytes=20 * MB, edit_square=False,
        relay=True, empty_strings=True,
    )
    return replace(base, **overrides)


# ---- records -----------------------------------------------------------------


@dataclass
class Generation:
    """One call the fake served (after every check passed)."""

    id: str
    endpoint: str  # "generations" | "edits" | "variations"
    model: str
    params: dict[str, Any]  # the JSON body, or the multipart text fields
    images: list[bytes] = field(default_factory=list)  # the uploaded images, in order
    mask: bytes | None = None
    outputs: list[bytes] = field(default_factory=list)  # the answered images (encoded)
    files: list[str] = field(default_factory=list)  # names under /private/ (url results)
    size: tuple[int, int] = (1024, 1024)
    started_at: float = 0.0
    finished_at: float | None = None


class Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


# ---- the fake ------------------------------------------------------------------


class FakeOpenAI(FakeVendor):
    endpoint_in_path = False
    # The constructor's options (FakeVendor makes them attributes; reset() restores them).
    api_key: str
    prefix: str
    run_seconds: float
    url_ttl: float
    timeout_seconds: float
    retry_after_seconds: float
    blocked_words: tuple[str, ...]

    def __init__(
        self,
        api_key: str = DEFAULT_KEY,
        *,
        prefix: str = "/v1",
        models: Iterable[str] = tuple(MODELS),  # which OpenAI models this key serves
        relay_models: Mapping[str, Mapping[str, Any]] | None = None,
        run_seconds: float = 0.05,  # each served call takes this long (real seconds)
        url_ttl: float = 3600.0,  # url results expire after an hour, like OpenAI's
        timeout_seconds: float = 1.0,  # a "timeout" fault answers this late
        retry_after_seconds: float = 2,  # the "rate_limited" fault's headers
        blocked_words: tuple[str, ...] = ("forbidden",),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            clock, api_key=api_key, prefix=prefix.rstrip("/"), run_seconds=run_seconds,
            url_ttl=url_ttl, timeout_seconds=timeout_seconds,
            retry_after_seconds=retry_after_seconds, blocked_words=blocked_words,
        )
        relays = DEFAULT_RELAY_MODELS if relay_models is None else relay_models
        self.rules: dict[str, Rules] = {name: MODELS[name] for name in models}
        self.rules.update({name: relay_rules(name, **dict(spec)) for name, spec in relays.items()})
        self.generations: list[Generation] = []
        self.completed: Counter[str] = Counter()  # model → calls answered with images
        self.started = 0  # calls that passed every check and began "generating"
        self.inflight = 0
        self.max_inflight = 0
        self._gate: asyncio.Event | None = None  # hold() / release()
        p = self.prefix
        self.app = Starlette(routes=[
            Route(f"{p}/images/generations", self._generations, methods=["POST"]),
            Route(f"{p}/images/edits", self._edits, methods=["POST"]),
            Route(f"{p}/images/variations", self._variations, methods=["POST"]),
            Route(f"{p}/models", self._models, methods=["GET"]),
            Route(f"{p}/models/{{model:path}}", self._model, methods=["GET"]),
            Route("/private/{name}", self._output, methods=["GET"]),
        ])

    # ---- test-side controls --------------------------------------------

    def reset(self) -> None:
        """Also forgets generations and counters and releases held calls
        (``inflight`` keeps counting calls still running)."""
        super().reset()
        self.release()
        self._gate = None
        self.generations.clear()
        self.completed.clear()
        self.started = 0
        self.max_inflight = self.inflight

    async def aclose(self) -> None:
        self.release()
        await super().aclose()

    @property
    def fault_kinds(self) -> frozenset[str]:
        return super().fault_kinds | set(FAULTS) | {"rate_limited"}

    def api_requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """Recorded API calls (under the prefix), optionally those whose path
        ends with ``endpoint`` ("/images/edits", "edits", ...)."""
        return [r for r in self.requests
                if r.path.startswith(self.prefix + "/")
                and (endpoint is None or r.path.endswith(endpoint))]

    def job(self, job_id: Any) -> Generation:
        return next(g for g in self.generations if g.id == job_id)

    # ---- requests, auth, faults -------------------------------------------

    def _parse_body(self, raw: bytes, headers: dict[str, str]) -> Any:
        content_type = headers.get("content-type", "")
        if content_type.lower().startswith("multipart/form-data"):
            try:
                return describe_parts(parse_parts(raw, content_type))
            except ValueError:
                return raw.decode("utf-8", "replace")
        return super()._parse_body(raw, headers)

    def _fault_response(self, kind: str | int, path: str) -> Response:
        if kind == "rate_limited":
            seconds = self.retry_after_seconds
            text = f"{seconds:g}"
            return _error(
                429, "Rate limit exceeded for images per minute in organization org-fake. "
                f"Limit: 5/1min. Current: 6/1min. Please try again in {text}s.",
                "requests", code="rate_limit_exceeded",
                headers={"retry-after": text, "x-ratelimit-reset-requests": f"{text}s",
                         "x-ratelimit-limit-requests": "5",
                         "x-ratelimit-remaining-requests": "0"})
        if kind in FAULTS:
            return FAULTS[str(kind)]()
        return super()._fault_response(kind, path)

    async def _gatekeep(self, request: Request) -> RecordedRequest:
        """Record the call; raise Refused for a scripted fault or bad auth."""
        record = await self._record(request)
        refused = await self._faulted(record.path)
        if refused is not None:
            raise Refused(refused)
        auth = record.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        if not auth:
            raise Refused(_error(
                401, "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the password field (with blank username) if you're accessing the API "
                "from your browser and are prompted for a username and password. You can "
                "obtain an API key from https://platform.openai.com/account/api-keys.",
                code="invalid_api_key"))
        if scheme.lower() != "bearer" or key.strip() != self.api_key:
            raise Refused(_error(
                401, f"Incorrect API key provided: {_mask_key(key.strip() or auth)}. You can "
                "find your API key at https://platform.openai.com/account/api-keys.",
                code="invalid_api_key"))
        return record

    # ---- models ----------------------------------------------------------

    async def _models(self, request: Request) -> Response:
        try:
            await self._gatekeep(request)
        except Refused as refused:
            return refused.response
        return _json({"object": "list", "data": [_model_object(r) for r in self.rules.values()]})

    async def _model(self, request: Request) -> Response:
        try:
            await self._gatekeep(request)
        except Refused as refused:
            return refused.response
        rules = self.rules.get(request.path_params["model"])
        if rules is None:
            return _model_not_found(request.path_params["model"])
        return _json(_model_object(rules))

    # ---- images ------------------------------------------------------------

    async def _generations(self, request: Request) -> Response:
        return await self._api(request, "generations")

    async def _edits(self, request: Request) -> Response:
        return await self._api(request, "edits")

    async def _variations(self, request: Request) -> Response:
        return await self._api(request, "variations")

    async def _api(self, request: Request, endpoint: str) -> Response:
        try:
            record = await self._gatekeep(request)
            files: list[Part] = []
            if endpoint == "generations":
                params = _json_body(record)
            else:
                params, files = _multipart_body(record)
            rules = self._rules_for(endpoint, params)
            job = self._check(endpoint, rules, params, files)
        except Refused as refused:
            return refused.response
        return await self._serve(endpoint, rules, job, str(request.base_url).rstrip("/"))

    def _rules_for(self, endpoint: str, params: dict[str, Any]) -> Rules:
        unknown = [name for name in params if name not in KNOWN_PARAMS[endpoint]]
        if unknown:
            raise Refused(_unknown_parameter(unknown[0]))
        model = params.get("model")
        if model is None:
            model = DEFAULT_MODEL
        if not isinstance(model, str):
            raise Refused(_invalid_type("model", "a string", model))
        rules = self.rules.get(model)
        if rules is None:
            raise Refused(_model_not_found(model))
        if endpoint not in rules.params:
            supported = [r.name for r in self.rules.values() if endpoint in r.params]
            raise Refused(_invalid_value("model", model, supported))
        for name in params:
            if name not in rules.params[endpoint]:
                raise Refused(_unknown_parameter(name))
        return rules

    def _check(self, endpoint: str, rules: Rules, params: dict[str, Any],
               files: list[Part]) -> Generation:
        """The call as a Generation, or Refused with the first problem."""
        multipart = endpoint != "generations"
        prompt = ""
        if endpoint != "variations":
            prompt = _check_prompt(params, rules.max_prompt)
        n = _int_param(params, "n", multipart)
        if n is not None:
            if rules.max_n == 1 and n != 1:
                raise Refused(_error(400, "You must provide n=1 for this model."))
            max_n = rules.max_n_by_endpoint.get(endpoint, rules.max_n)
            if n < 1:
                raise Refused(_error(400, "Invalid 'n': integer below minimum value. Expected "
                                     f"a value greater than or equal to 1, but got {n} instead.",
                                     param="n", code="integer_below_min_value"))
            if n > max_n:
                raise Refused(_error(400, "Invalid 'n': integer above maximum value. Expected "
                                     f"a value less than or equal to {max_n}, but got {n} "
                                     "instead.", param="n", code="integer_above_max_value"))
        size = _check_size(params, rules)
        _check_choice(params, "quality", rules.qualities, free=not rules.qualities)
        _check_choice(params, "style", rules.styles, free=not rules.styles)
        _check_choice(params, "response_format", rules.response_formats)
        if rules.gpt_image:
            _check_gpt_image(params, endpoint, multipart)
        for name in ("user",):
            if params.get(name) is not None and not isinstance(params[name], str):
                raise Refused(_invalid_type(name, "a string", params[name]))
        images, mask = self._check_files(endpoint, rules, files, params)
        if any(word in prompt.lower() for word in self.blocked_words):
            raise Refused(_policy(rules))
        return Generation(
            id=f"img_{uuid.uuid4().hex[:24]}", endpoint=endpoint, model=rules.name,
            params={k: v for k, v in params.items() if k not in ("image", "image[]", "mask")},
            images=images, mask=mask, size=size,
        )

    def _check_files(self, endpoint: str, rules: Rules, files: list[Part],
                     params: dict[str, Any]) -> tuple[list[bytes], bytes | None]:
        if endpoint == "generations":
            return [], None
        images = [p for p in files if p.name in ("image", "image[]")]
        masks = [p for p in files if p.name == "mask"]
        if not images:
            raise Refused(_error(400, "Missing required parameter: 'image'.", param="image",
                                 code="missing_required_parameter"))
        limit = rules.edit_max_images if endpoint == "edits" else 1
        if len(images) > limit:
            raise Refused(_error(
                400, f"Invalid 'image': array too long. Expected an array with maximum length "
                f"{limit}, but got an array with length {len(images)} instead.",
                param="image", code="array_above_max_length"))
        for part in images:
            _check_image(part, rules, alpha=endpoint == "edits" and rules.edit_needs_alpha)
        first = _size_of_part(images[0])
        mask: bytes | None = None
        if masks:
            if endpoint == "variations":
                raise Refused(_unknown_parameter("mask"))
            if len(masks) > 1:
                raise Refused(_error(400, "Invalid 'mask': expected a single file.",
                                     param="mask", code="invalid_value"))
            mask = masks[0].data
            if _image_format(mask) != "PNG" or masks[0].filename is None:
                raise Refused(_error(400, "Invalid mask image format - mask must be a PNG "
                                     "file.", param="mask", code="invalid_image_format"))
            with Image.open(io.BytesIO(mask)) as img:
                has_alpha = img.mode in ("RGBA", "LA") or (
                    img.mode == "P" and "transparency" in img.info)
                mask_size = img.size
            if not has_alpha:
                raise Refused(_error(400, "Invalid mask image format - mask must have an alpha "
                                     "channel (RGBA, LA).", param="mask",
                                     code="invalid_image_format"))
            if mask_size != first:
                raise Refused(_error(
                    400, "Invalid mask image format - mask size does not match image size "
                    f"(mask {mask_size[0]}x{mask_size[1]}, image {first[0]}x{first[1]}).",
                    param="mask", code="invalid_image_format"))
        return [p.data for p in images], mask

    async def _serve(self, endpoint: str, rules: Rules, job: Generation, base: str) -> Response:
        job.started_at = self.now()
        self.generations.append(job)
        self.started += 1
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self._gate is not None:
                await self._gate.wait()
            if self.run_seconds:
                await asyncio.sleep(self.run_seconds)
        finally:
            self.inflight -= 1
        params = job.params
        n = _as_int(params.get("n")) or 1
        out_format = (params.get("output_format") or "png") if rules.gpt_image else "png"
        background = (params.get("background") or "auto") if rules.gpt_image else "opaque"
        compression = _as_int(params.get("output_compression"))
        prompt = params.get("prompt") or ""
        response_format = ("b64_json" if rules.gpt_image
                           else params.get("response_format") or rules.response_formats[0])
        data = []
        for index in range(n):
            encoded = _encode(_render(job, index, background == "transparent"), out_format,
                              compression)
            job.outputs.append(encoded)
            item: dict[str, Any] = {"b64_json": "", "url": ""} if rules.empty_strings else {}
            if response_format == "url":
                name = self._store(f"{job.id}-{index}.{out_format}", encoded)
                job.files.append(name)
                item["url"] = self._url(base, name)
            else:
                item["b64_json"] = base64.b64encode(encoded).decode("ascii")
            if rules.revised_prompt:
                item["revised_prompt"] = f"A detailed rendering of {prompt}"
            elif rules.empty_strings:
                item["revised_prompt"] = ""
            data.append(item)
        job.finished_at = self.now()
        self.completed[rules.name] += 1
        body: dict[str, Any] = {"created": int(time.time()), "data": data}
        if rules.gpt_image:
            quality = params.get("quality") or "auto"
            body.update({
                "background": "opaque" if background == "auto" else background,
                "output_format": out_format,
                "quality": "medium" if quality == "auto" else quality,
                "size": f"{job.size[0]}x{job.size[1]}",
                "usage": _usage(prompt, job, quality, n),
            })
        return _json(body)

    # ---- result files ------------------------------------------------------

    def _url(self, base: str, name: str) -> str:
        """Shaped like OpenAI's Azure-blob SAS links (st / se / sig)."""
        start = time.gmtime()
        end = time.gmtime(time.time() + self.url_ttl)
        stamp = "%Y-%m-%dT%H%%3A%M%%3A%SZ"
        sig = hashlib.sha256(name.encode()).hexdigest()[:32]
        return (f"{base}/private/{name}?st={time.strftime(stamp, start)}"
                f"&se={time.strftime(stamp, end)}&sp=r&sv=2024-08-04&sr=b&sig={sig}")

    async def _output(self, request: Request) -> Response:
        await self._record(request, parse=False)
        entry = self.files.get(request.path_params["name"])
        if entry is None:
            return _blob_error(404, "BlobNotFound", "The specified blob does not exist.")
        data, created = entry
        if self.now() - created > self.url_ttl:
            return _blob_error(403, "AuthenticationFailed",
                               "Server failed to authenticate the request. Make sure the value "
                               "of Authorization header is formed correctly including the "
                               "signature.\nSigned expiry time has passed.")
        media = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
        return Response(data, media_type=media.get(request.path_params["name"].rsplit(".")[-1],
                                                   "image/png"))


# ---- answers ---------------------------------------------------------------------


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status, headers={"x-request-id": f"req_{uuid.uuid4().hex}",
                                               **(headers or {})})


def _error(status: int, message: str, type: str = "invalid_request_error", *,
           param: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return _json({"error": {"message": message, "type": type, "param": param, "code": code}},
                 status, headers)


FAULTS: dict[str, Callable[[], Response]] = {
    "invalid_api_key": lambda: _error(
        401, "Incorrect API key provided: sk-re****oked. You can find your API key at "
        "https://platform.openai.com/account/api-keys.", code="invalid_api_key"),
    "insufficient_quota": lambda: _error(
        429, "You exceeded your current quota, please check your plan and billing details. "
        "For more information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "insufficient_quota", code="insufficient_quota"),
    "billing_hard_limit_reached": lambda: _error(
        400, "Billing hard limit has been reached", code="billing_hard_limit_reached"),
    "server_error": lambda: _error(
        500, "The server had an error while processing your request. Sorry about that!",
        "server_error"),
    "unavailable": lambda: _error(
        503, "The server is overloaded or not ready yet.", "server_error"),
    "bad_gateway": lambda: html(502, "<h1>502 Bad Gateway</h1> cloudflare"),
}


def _blob_error(status: int, code: str, message: str) -> Response:
    body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}\nRequestId:{uuid.uuid4()}</Message></Error>")
    return Response(body, status, media_type="application/xml")


def _mask_key(key: str) -> str:
    return f"{key[:5]}****{key[-4:]}" if len(key) > 9 else f"{key[:2]}****"


def _model_object(rules: Rules) -> dict[str, Any]:
    return {"id": rules.name, "object": "model", "created": 1698785189, "owned_by": rules.owned_by}


def _model_not_found(model: str) -> Response:
    return _error(404, f"The model `{model}` does not exist or you do not have access to it.",
                  param="model", code="model_not_found")


def _unknown_parameter(name: str) -> Response:
    return _error(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid_type(name: str, expected: str, value: Any) -> Response:
    return _error(400, f"Invalid type for '{name}': expected {expected}, but got "
                  f"{_json_type(value)} instead.", param=name, code="invalid_type")


def _invalid_value(name: str, value: Any, supported: Iterable[str]) -> Response:
    choices = [f"'{s}'" for s in supported]
    listed = (", ".join(choices[:-1]) + f", and {choices[-1]}" if len(choices) > 2
              else " and ".join(choices))
    return _error(400, f"Invalid value: '{value}'. Supported values are: {listed}.",
                  param=name, code="invalid_value")


def _policy(rules: Rules) -> Response:
    if rules.policy_code == "moderation_blocked":
        message = ("Your request was rejected by the safety system. If you believe this is an "
                   "error, contact us at help.openai.com and include the request ID.")
    else:
        message = ("Your request was rejected as a result of our safety system. Your prompt "
                   "may contain text that is not allowed by our safety system.")
    return _error(400, message, "image_generation_user_error", code=rules.policy_code)


# ---- request bodies ------------------------------------------------------------


def _json_body(record: RecordedRequest) -> dict[str, Any]:
    content_type = record.headers.get("content-type", "").lower()
    if not content_type.startswith("application/json"):
        raise Refused(_error(
            400, "Invalid Content-Type header ({}), expected application/json.".format(
                content_type or "none")))
    try:
        body = json.loads(record.raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refused(_error(
            400, "We could not parse the JSON body of your request. (HINT: This likely means "
            "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
            "payload, but what was sent was not valid JSON.)")) from None
    if not isinstance(body, dict):
        raise Refused(_invalid_type("body", "an object", body))
    return body


def _multipart_body(record: RecordedRequest) -> tuple[dict[str, Any], list[Part]]:
    """(text fields, file parts). A repeated text field keeps its last value."""
    content_type = record.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise Refused(_error(
            400, f"Invalid Content-Type header ({content_type or 'none'}), expected "
            "multipart/form-data."))
    try:
        parts = parse_parts(record.raw, content_type)
    except ValueError as exc:
        raise Refused(_error(400, f"Could not parse multipart form: {exc}")) from None
    fields: dict[str, Any] = {}
    files: list[Part] = []
    for part in parts:
        if part.name in ("image", "image[]", "mask"):
            if part.filename is None:
                raise Refused(_error(400, f"Invalid type for '{part.name}': expected a file, "
                                     "but got a string instead.", param=part.name,
                                     code="invalid_type"))
            files.append(part)
            fields.setdefault(part.name, part.filename)
        elif part.filename is not None:
            raise Refused(_unknown_parameter(part.name) if part.name not in KNOWN_PARAMS["edits"]
                          else _invalid_type(part.name, "a string", {}))
        else:
            fields[part.name] = part.data.decode("utf-8", "replace")
    return fields, files


def describe_parts(parts: list[Part]) -> dict[str, Any]:
    """The recorded body of a multipart call: name → text, or a file summary
    {filename, content_type, size}; a repeated name → a list of them."""
    described: dict[str, Any] = {}
    for part in parts:
        value: Any = (part.data.decode("utf-8", "replace") if part.filename is None else
                      {"filename": part.filename, "content_type": part.content_type,
                       "size": len(part.data)})
        if part.name in described:
            previous = described[part.name]
            described[part.name] = [*previous, value] if isinstance(previous, list) else [
                previous, value]
        else:
            described[part.name] = [value] if part.name.endswith("[]") else value
    return described


def parts_of(record: RecordedRequest) -> list[Part]:
    """The multipart parts of a recorded call, in order (tests)."""
    return parse_parts(record.raw, record.headers.get("content-type", ""))


# ---- validation (pure; raise Refused) ---------------------------------------------


def _check_prompt(params: dict[str, Any], limit: int) -> str:
    prompt = params.get("prompt")
    if prompt is None:
        raise Refused(_error(400, "Missing required parameter: 'prompt'.", param="prompt",
                             code="missing_required_parameter"))
    if not isinstance(prompt, str):
        raise Refused(_invalid_type("prompt", "a string", prompt))
    if not prompt:
        raise Refused(_error(400, "Invalid 'prompt': empty string. Expected a string with "
                             "minimum length 1, but got an empty string instead.",
                             param="prompt", code="empty_string"))
    if len(prompt) > limit:
        raise Refused(_error(
            400, f"Invalid 'prompt': string too long. Expected a string with maximum length "
            f"{limit}, but got a string with length {len(prompt)} instead.",
            param="prompt", code="string_above_max_length"))
    return prompt


def _int_param(params: dict[str, Any], name: str, multipart: bool) -> int | None:
    """The integer (None when absent or null); multipart fields are digits."""
    value = params.get(name)
    if value is None:
        return None
    if multipart:
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        raise Refused(_invalid_type(name, "an integer", value))
    if not _is_int(value):
        raise Refused(_invalid_type(name, "an integer", value))
    return int(value)


def _as_int(value: Any) -> int | None:
    if value is None:
        return None
    return int(value.strip()) if isinstance(value, str) else int(value)


def _check_choice(params: dict[str, Any], name: str, choices: tuple[str, ...], *,
                  free: bool = False) -> None:
    value = params.get(name)
    if value is None:
        return
    if not isinstance(value, str):
        raise Refused(_invalid_type(name, "a string", value))
    if not free and value not in choices:
        raise Refused(_invalid_value(name, value, choices))


def _check_size(params: dict[str, Any], rules: Rules) -> tuple[int, int]:
    value = params.get("size")
    if value is None:
        value = "auto" if rules.gpt_image else "1024x1024"
    if not isinstance(value, str):
        raise Refused(_invalid_type("size", "a string", value))
    if rules.sizes:
        if value not in rules.sizes:
            raise Refused(_invalid_value("size", value, rules.sizes))
        if value == "auto":
            return 1024, 1024
        width, _, height = value.partition("x")
        return int(width), int(height)
    w_text, sep, h_text = value.partition("x")
    low, high = rules.side_range
    step = rules.side_step
    if not (sep and w_text.isdigit() and h_text.isdigit()):
        raise Refused(_error(400, f"Invalid size '{value}': expected WIDTHxHEIGHT.",
                             param="size", code="invalid_value"))
    w, h = int(w_text), int(h_text)
    if not (low <= w <= high and low <= h <= high) or w % step or h % step:
        raise Refused(_error(
            400, f"Invalid size '{value}': width and height must be multiples of {step} "
            f"between {low} and {high}.", param="size", code="invalid_value"))
    return w, h


def _check_gpt_image(params: dict[str, Any], endpoint: str, multipart: bool) -> None:
    _check_choice(params, "output_format", ("png", "jpeg", "webp"))
    _check_choice(params, "background", ("transparent", "opaque", "auto"))
    _check_choice(params, "moderation", ("low", "auto"))
    _check_choice(params, "input_fidelity", ("high", "low"))
    out_format = params.get("output_format") or "png"
    compression = _int_param(params, "output_compression", multipart)
    if compression is not None:
        if not 0 <= compression <= 100:
            raise Refused(_error(400, "Invalid 'output_compression': expected a value between "
                                 f"0 and 100, but got {compression} instead.",
                                 param="output_compression", code="invalid_value"))
        if out_format == "png" and compression < 100:
            raise Refused(_error(400, "Compression less than 100 is not supported for PNG "
                                 "output format.", param="output_compression",
                                 code="invalid_value"))
    if params.get("background") == "transparent" and out_format == "jpeg":
        raise Refused(_error(400, "Transparent background is not supported for jpeg output "
                             "format.", param="background", code="invalid_value"))
    stream = params.get("stream")
    if multipart and isinstance(stream, str):
        stream = {"true": True, "false": False}.get(stream.lower(), stream)
    if stream is not None and not isinstance(stream, bool):
        raise Refused(_invalid_type("stream", "a boolean", stream))
    if stream:
        raise Refused(_error(400, "FakeOpenAI does not stream: send stream=false or leave it "
                             "out.", param="stream", code="unsupported_value"))
    if params.get("partial_images") is not None:
        raise Refused(_error(400, "partial_images requires stream=true.",
                             param="partial_images", code="invalid_value"))



def _size_of_part(part: Part) -> tuple[int, int]:
    with Image.open(io.BytesIO(part.data)) as img:
        return img.size


def _check_image(part: Part, rules: Rules, *, alpha: bool) -> None:
    fmt = _image_format(part.data)
    if rules.edit_check_mime:
        mime = (part.content_type or "application/octet-stream").split(";")[0].strip().lower()
        allowed = [GPT_IMAGE_FORMATS[f] for f in rules.edit_formats]
        if mime not in allowed or fmt is None or GPT_IMAGE_FORMATS.get(fmt) != mime:
            shown = mime if mime not in allowed else f"{mime}, but the file is {fmt or 'no image'}"
            raise Refused(_error(
                400, f"Invalid file '{part.name}': unsupported mimetype ('{shown}'). Supported "
                "file formats are 'image/jpeg', 'image/png', and 'image/webp'.",
                param=part.name, code="unsupported_file_mimetype"))
    elif fmt not in rules.edit_formats:
        if rules.edit_formats == ("PNG",):
            message = f"Uploaded image must be a PNG and less than {rules.edit_max_bytes // MB} MB."
        else:
            message = f"Invalid image file: expected one of {', '.join(rules.edit_formats)}."
        raise Refused(_error(400, message, param=part.name, code="invalid_image_format"))
    if len(part.data) >= rules.edit_max_bytes:
        raise Refused(_error(
            400, f"Invalid file '{part.name}': image must be less than "
            f"{rules.edit_max_bytes // MB} MB, got {len(part.data)} bytes.",
            param=part.name, code="image_too_large"))
    with Image.open(io.BytesIO(part.data)) as img:
        size, mode = img.size, img.mode
    if rules.edit_square and size[0] != size[1]:
        raise Refused(_error(400, f"Invalid input image - image must be square, got "
                             f"{size[0]}x{size[1]}.", param=part.name,
                             code="invalid_image_format"))
    if alpha and mode not in ("RGBA", "LA", "L"):
        raise Refused(_error(400, f"Invalid input image - format must be in ['RGBA', 'LA', "
                             f"'L'], got {mode}.", param=part.name, code="invalid_image_format"))


# ---- pictures ------------------------------------------------------------------


def _render(job: Generation, index: int, transparent: bool) -> Image.Image:
    prompt = job.params.get("prompt") or ""
    label = f"{job.model} {job.endpoint} #{index}: {prompt[:40]}"
    if job.images:
        base = ImageOps.fit(_rgb(job.images[0]), job.size)
        tint = Image.new("RGB", job.size, ((index * 70) % 256, 120, 200))
        img = Image.blend(base, tint, 0.3)
        ImageDraw.Draw(img).text((8, 8), label, fill=(255, 255, 255))
    else:
        img = _rgb(_picture(job.size, f"{job.model}|{index}|{prompt}", label))
    if transparent:
        w, h = img.size
        alpha = Image.new("L", img.size, 0)
        ImageDraw.Draw(alpha).ellipse((w // 6, h // 6, 5 * w // 6, 5 * h // 6), fill=255)
        img = img.convert("RGBA")
        img.putalpha(alpha)
    return img


def _encode(img: Image.Image, out_format: str, compression: int | None) -> bytes:
    if out_format == "png":
        return _png(img)
    buffer = io.BytesIO()
    quality = 85 if compression is None else max(1, compression)
    if out_format == "jpeg":
        img.convert("RGB").save(buffer, format="JPEG", quality=quality)
    else:
        img.save(buffer, format="WEBP", quality=quality, method=0)
    return buffer.getvalue()


OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}


def _usage(prompt: str, job: Generation, quality: str, n: int) -> dict[str, Any]:
    text_tokens = max(1, len(prompt) // 4)
    image_tokens = 323 * len(job.images)
    scale = max(job.size) / 1024
    output = round(OUTPUT_TOKENS.get(quality, 1056) * scale) * n
    return {"input_tokens": text_tokens + image_tokens, "output_tokens": output,
            "total_tokens": text_tokens + image_tokens + output,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens}}
