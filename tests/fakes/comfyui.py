"""A fake ComfyUI server, as strict as the real one (BACKENDS.md "comfyui";
ComfyUI's server.py, execution.py validate_prompt / validate_inputs, main.py
prompt_worker, nodes.py for the stock node definitions):

    POST /prompt {"prompt", "client_id", "front"?, "number"?, "prompt_id"?, "extra_data"?}
    GET  /queue; POST /queue {"delete": [ids]} | {"clear": true}; POST /interrupt
    GET  /history, /history/{prompt_id}; POST /history {"delete"|"clear"}
    GET  /view?filename=&subfolder=&type=; POST /upload/image (multipart)
    GET  /object_info, /object_info/{node_class}; GET /system_stats
    GET  /ws?clientId=<id>                                    (websocket)

Every route is also served under /api, as the real server does.

The real server is aiohttp, and so is this fake: uvicorn (tests.fakes.server)
can only serve websockets with the ``websockets`` or ``wsproto`` package, and
neither is installed. So this fake serves itself:

    fake = FakeComfyUI(token="s3cret", step_seconds=0.001)
    async with fake.serve() as base_url:
        ...
    await fake.aclose()
    fake.prompts[0].workflow, fake.prompts[0].client_id, fake.executed, fake.max_concurrent

The queue runs one prompt at a time, in ``number`` order (``front`` puts a
prompt first). A KSampler takes ``steps * step_seconds``, sends ``progress``
per step and (``previews``) a binary preview frame. Node outputs are cached
between prompts like ComfyUI's default cache: a node whose inputs did not
change is reported in ``execution_cached`` and not run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import io
import json
import os
import re
import socket
import struct
import sys
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from PIL import Image, ImageDraw, ImageOps

from tests.fakes.vendor import FakeVendor, RecordedRequest, _picture, _png

COMFYUI_VERSION = "0.3.68"
MAX_RESOLUTION = 16384

SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
    "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "gradient_estimation",
    "er_sde", "seeds_2", "seeds_3", "ddim", "uni_pc", "uni_pc_bh2",
]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta",
              "normal", "linear_quadratic", "kl_optimal"]
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]

# where a request keeps its record (web.RequestKey from aiohttp 3.12; a str before)
_RECORD: Any = web.RequestKey("record", RecordedRequest) if hasattr(web, "RequestKey") else "record"

PREVIEW_IMAGE = 1  # server.BinaryEventTypes.PREVIEW_IMAGE
PREVIEW_IMAGE_WITH_METADATA = 4  # to clients whose feature_flags say supports_preview_metadata
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 ** 2}
PREVIEW_FORMATS = {"JPEG": 1, "PNG": 2}

OOM_MESSAGE = ("CUDA out of memory. Tried to allocate 2.25 GiB. GPU 0 has a total capacity of "
               "23.64 GiB of which 1.02 GiB is free. Of the allocated memory 20.21 GiB is "
               "allocated by PyTorch, and 1.06 GiB is reserved by PyTorch but unallocated.")
OOM_TIPS = ("This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow "
            "worked before you might have accidentally set the batch_size to a large number.")
NODE_ERROR_MESSAGE = "mat1 and mat2 shapes cannot be multiplied (154x2048 and 768x320)"
# fail_next kinds that make the next executed prompt fail inside a node
# (its KSampler, else its last node): (exception type, message).
EXECUTION_FAULTS: Mapping[str, tuple[str, str]] = {
    "node_error": ("RuntimeError", NODE_ERROR_MESSAGE),
    "oom": ("torch.OutOfMemoryError", OOM_MESSAGE),
}


class InterruptProcessing(Exception):  # comfy.model_management.InterruptProcessingException
    pass


class NodeFault(Exception):
    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type


# ---- the node catalogue ---------------------------------------------------


@dataclass(frozen=True)
class NodeDef:
    required: dict[str, tuple[Any, ...]]  # name → (type | combo list, {extra})
    returns: tuple[str, ...]
    category: str
    display_name: str
    output_node: bool = False
    returns_names: tuple[str, ...] | None = None
    validate: tuple[str, ...] = ()  # VALIDATE_INPUTS arguments
    hidden: dict[str, str] = field(default_factory=dict)


def catalogue(checkpoints: list[str], upscale_models: list[str],
              input_files: list[str]) -> dict[str, NodeDef]:
    """The stock nodes this fake knows, with nodes.py's INPUT_TYPES / RETURN_TYPES."""
    return {
        "CheckpointLoaderSimple": NodeDef(
            {"ckpt_name": (checkpoints, {"tooltip": "The name of the checkpoint (model) to "
                                                    "load."})},
            ("MODEL", "CLIP", "VAE"), "loaders", "Load Checkpoint"),
        "CLIPTextEncode": NodeDef(
            {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
             "clip": ("CLIP",)},
            ("CONDITIONING",), "conditioning", "CLIP Text Encode (Prompt)"),
        "EmptyLatentImage": NodeDef(
            {"width": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
             "height": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
             "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096})},
            ("LATENT",), "latent", "Empty Latent Image"),
        "KSampler": NodeDef(
            {"model": ("MODEL",),
             "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff,
                              "control_after_generate": True}),
             "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
             "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1,
                               "round": 0.01}),
             "sampler_name": (SAMPLERS,), "scheduler": (SCHEDULERS,),
             "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
             "latent_image": ("LATENT",),
             "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})},
            ("LATENT",), "sampling", "KSampler"),
        "VAEDecode": NodeDef({"samples": ("LATENT",), "vae": ("VAE",)},
                             ("IMAGE",), "latent", "VAE Decode"),
        "VAEEncode": NodeDef({"pixels": ("IMAGE",), "vae": ("VAE",)},
                             ("LATENT",), "latent", "VAE Encode"),
        "LoadImage": NodeDef({"image": (input_files, {"image_upload": True})},
                             ("IMAGE", "MASK"), "image", "Load Image", validate=("image",)),
        "SaveImage": NodeDef(
            {"images": ("IMAGE", {"tooltip": "The images to save."}),
             "filename_prefix": ("STRING", {"default": "ComfyUI"})},
            (), "image", "Save Image", output_node=True,
            hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}),
        "UpscaleModelLoader": NodeDef({"model_name": (upscale_models,)},
                                      ("UPSCALE_MODEL",), "loaders", "Load Upscale Model"),
        "ImageUpscaleWithModel": NodeDef(
            {"upscale_model": ("UPSCALE_MODEL",), "image": ("IMAGE",)},
            ("IMAGE",), "image/upscaling", "Upscale Image (using Model)"),
        "ImageScaleBy": NodeDef(
            {"image": ("IMAGE",), "upscale_method": (UPSCALE_METHODS,),
             "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01})},
            ("IMAGE",), "image/upscaling", "Upscale Image By"),
    }


def node_info(name: str, node: NodeDef) -> dict[str, Any]:
    """server.py node_info(): one entry of GET /object_info."""
    inputs: dict[str, Any] = {"required": {k: list(v) for k, v in node.required.items()}}
    if node.hidden:
        inputs["hidden"] = dict(node.hidden)
    return {
        "input": inputs,
        "input_order": {key: list(value) for key, value in inputs.items()},
        "output": list(node.returns),
        "output_is_list": [False] * len(node.returns),
        "output_name": list(node.returns_names or node.returns),
        "name": name, "display_name": node.display_name, "description": "",
        "python_module": "nodes", "category": node.category,
        "output_node": node.output_node, "deprecated": False, "experimental": False,
        "api_node": False,
    }


def _full_type_name(exc: BaseException) -> str:
    klass = type(exc)
    if isinstance(exc, NodeFault):
        return exc.exception_type
    return klass.__qualname__ if klass.__module__ == "builtins" else (
        f"{klass.__module__}.{klass.__qualname__}")


def _combo(input_type: Any) -> bool:
    return isinstance(input_type, list)


def _type_matches(received: str, expected: Any) -> bool:
    """execution.validate_node_input for plain types."""
    expected_name = "COMBO" if _combo(expected) else expected
    return "*" in (received, expected_name) or received == expected_name


def _upscale_factor(model_name: str) -> int:
    match = re.search(r"(\d+)x", model_name, re.IGNORECASE)
    return int(match.group(1)) if match else 4


# ---- queue items ------------------------------------------------------------


@dataclass
class QueuedPrompt:
    number: float
    prompt_id: str
    prompt: dict[str, Any]  # as validated (values converted, like the real queue keeps it)
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    workflow: dict[str, Any]  # the "prompt" exactly as received
    client_id: str | None
    state: str = "pending"  # pending | running | success | error | interrupted | deleted
    started_at: float | None = None
    finished_at: float | None = None

    def item(self) -> list[Any]:
        """The queue / history tuple (sensitive extra data already stripped)."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data,
                self.outputs_to_execute]


@dataclass
class SentMessage:
    sid: str | None  # None = broadcast
    type: str  # the event, or "preview" for a binary frame
    data: Any


class FakeComfyUI(FakeVendor):
    api_paths = ("/prompt", "/queue", "/interrupt", "/history", "/view", "/upload",
                 "/object_info", "/system_stats", "/api/")
    endpoint_in_path = True

    token: str | None
    checkpoints: tuple[str, ...]  # what CheckpointLoaderSimple's ckpt_name may be
    upscale_models: tuple[str, ...]  # UpscaleModelLoader's; "4x"/"2x" in a name = its scale
    step_seconds: float
    previews: bool
    preview_format: str
    timeout_seconds: float

    def __init__(
        self,
        *,
        token: str | None = None,  # a reverse proxy's bearer token; None = open, like ComfyUI
        checkpoints: tuple[str, ...] = ("sd_xl_base_1.0.safetensors",),
        upscale_models: tuple[str, ...] = ("RealESRGAN_x4plus.pth",),
        step_seconds: float = 0.0,  # per KSampler step (real seconds)
        previews: bool = True,  # binary preview frames (the server's --preview-method)
        preview_format: str = "JPEG",
        timeout_seconds: float = 1.0,  # a "timeout" fault answers this late
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock, token=token, checkpoints=tuple(checkpoints),
                         upscale_models=tuple(upscale_models), step_seconds=step_seconds,
                         previews=previews, preview_format=preview_format,
                         timeout_seconds=timeout_seconds)
        # (type, subfolder, filename) → bytes; "input" holds uploads, "output" results.
        self.stored: dict[tuple[str, str, str], bytes] = {}
        self.prompts: list[QueuedPrompt] = []  # every accepted prompt, in arrival order
        self.rejected: list[dict[str, Any]] = []  # bodies of refused POST /prompt
        self.history: dict[str, dict[str, Any]] = {}
        self.sent: list[SentMessage] = []  # every websocket message sent, in order
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.feature_flags: dict[str, dict[str, Any]] = {}  # sid → what the client declared
        self.connections = 0  # websocket connections accepted
        self.number = 0  # the next queue number, as server.number
        self.executed = 0  # prompts that finished (any outcome)
        self.running_now = 0
        self.worker_errors: list[str] = []  # tracebacks of the fake's own failures (want [])
        self.max_concurrent = 0
        self._pending: list[QueuedPrompt] = []
        self._running: QueuedPrompt | None = None
        self._client_id: str | None = None  # server.client_id of the running prompt
        self._last_node_id: str | None = None
        self._interrupt = False
        self._wakeup = asyncio.Event()
        self._gate: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._cache: dict[str, tuple[list[Any], dict[str, Any] | None]] = {}
        self._progress_nodes: dict[str, dict[str, Any]] = {}  # the running prompt's
        self.app = self._make_app()

    # ---- test-side controls --------------------------------------------

    @property
    def prompts_received(self) -> int:
        """POST /prompt calls that reached validation (accepted or refused)."""
        return len(self.prompts) + len(self.rejected)

    @property
    def running(self) -> QueuedPrompt | None:
        return self._running

    @property
    def pending(self) -> list[QueuedPrompt]:
        return sorted(self._pending, key=lambda p: p.number)

    @property
    def fault_kinds(self) -> frozenset[str]:
        return super().fault_kinds | set(EXECUTION_FAULTS)

    def fail_next(self, kind: str | int, times: int = 1, path: str | None = None) -> None:
        """HTTP faults ("http500", "malformed", "timeout") answer the next API
        calls; "node_error" and "oom" make the next ``times`` executed prompts
        raise inside a node (history status "error", ``execution_error``)."""
        if kind in EXECUTION_FAULTS:
            for _ in range(times):
                self._script("execution", kind)
            return
        super().fail_next(kind, times, path)

    def reset(self) -> None:
        """Also releases held prompts and forgets the records and counters
        (prompts, rejected, sent, executed, max_concurrent); the queue,
        history and stored files stay."""
        super().reset()
        self.release()
        self._gate = None
        self.sent.clear()
        self.prompts = [p for p in self.prompts if p.state in ("pending", "running")]
        self.rejected.clear()
        self.executed = 0
        self.max_concurrent = self.running_now

    def job(self, job_id: Any) -> QueuedPrompt:
        return next(p for p in self.prompts if p.prompt_id == job_id)

    def add_input(self, filename: str, data: bytes, subfolder: str = "") -> None:
        """Put a file in the input folder, as if it was there before the server started."""
        self.stored[("input", subfolder, filename)] = data

    def messages(self, sid: str | None = None, event: str | None = None) -> list[SentMessage]:
        """Sent websocket messages (to ``sid`` or broadcast), optionally of one type."""
        return [m for m in self.sent if (sid is None or m.sid in (None, sid))
                and (event is None or m.type == event)]

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Until nothing runs and nothing is pending."""
        deadline = time.monotonic() + timeout
        while self._running is not None or self._pending:
            if time.monotonic() > deadline:
                raise TimeoutError("the queue is still busy")
            await asyncio.sleep(0.005)

    async def wait_running(self, prompt_id: str | None = None, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while self._running is None or (prompt_id and self._running.prompt_id != prompt_id):
            if time.monotonic() > deadline:
                raise TimeoutError("no such prompt is running")
            await asyncio.sleep(0.005)

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve on a free loopback port (or ``port``: the same server back
        after a restart) over HTTP and websocket; yields the base URL."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        try:
            yield f"http://{host}:{port}"
        finally:
            await runner.cleanup()
            sock.close()

    async def aclose(self) -> None:
        self.release()
        await self._stop_worker()
        await super().aclose()

    # ---- app, auth, faults ------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=100 * 1024 ** 2)
        routes = [
            ("GET", "/ws", self._ws),
            ("POST", "/prompt", self._post_prompt),
            ("GET", "/prompt", self._get_prompt),
            ("GET", "/queue", self._get_queue),
            ("POST", "/queue", self._post_queue),
            ("POST", "/interrupt", self._post_interrupt),
            ("GET", "/history", self._get_history),
            ("GET", "/history/{prompt_id}", self._get_history_one),
            ("POST", "/history", self._post_history),
            ("GET", "/view", self._view),
            ("POST", "/upload/image", self._upload_image),
            ("GET", "/object_info", self._object_info),
            ("GET", "/object_info/{node_class}", self._object_info_one),
            ("GET", "/system_stats", self._system_stats),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        app.on_startup.append(self._on_startup)  # the queue worker runs while served
        app.on_shutdown.append(self._close_sockets)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._start_worker()

    async def _on_cleanup(self, app: web.Application) -> None:
        await self._stop_worker()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        record = await self._record_aiohttp(request)
        if self.token is not None:
            if request.headers.get("Authorization", "") != f"Bearer {self.token}":
                return web.Response(status=401, text="401 Unauthorized")
        if not record.path.endswith("/ws"):
            fault = self._take_fault(record.path)
            if fault == "timeout":
                await asyncio.sleep(self.timeout_seconds)
            elif fault == "http500":
                return web.Response(status=500, text="500 Internal Server Error\n\n"
                                    "Server got itself in trouble")
            elif fault == "malformed":
                return web.Response(status=200, text="<html><body>502 Bad Gateway</body></html>",
                                    content_type="text/html")
        return await handler(request)

    async def _record_aiohttp(self, request: web.Request) -> RecordedRequest:
        headers = {k.lower(): v for k, v in request.headers.items()}
        content_type = headers.get("content-type", "")
        raw = (await request.read() if request.can_read_body
               and not content_type.startswith("multipart/") else b"")
        body: Any
        if content_type.startswith("multipart/"):
            raw, body = b"", None  # the handler reads the stream; it fills in ``body``
        else:
            body = self._parse_body(raw, headers) if raw else None
        record = RecordedRequest(request.method, request.path, headers, body,
                                 request.query_string, raw)
        self.requests.append(record)
        request[_RECORD] = record
        return record

    # ---- websocket ----------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "")
        if sid:
            old = self.sockets.pop(sid, None)  # reusing an existing session: drop the old one
            del old
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self.feature_flags[sid] = {}
        self.connections += 1
        try:
            await self._send("status", {"status": self._queue_info(), "sid": sid}, sid)
            if self._client_id == sid and self._last_node_id is not None:
                await self._send("executing", {"node": self._last_node_id}, sid)
            first_message = True
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
                if msg.type == WSMsgType.TEXT:
                    with contextlib.suppress(ValueError, AttributeError):
                        data = json.loads(msg.data)
                        if first_message and data.get("type") == "feature_flags":
                            self.feature_flags[sid] = dict(data.get("data") or {})
                            await self._send("feature_flags", dict(SERVER_FEATURES), sid)
                    first_message = False
        finally:
            # As server.py: unconditionally, so an old socket of this clientId that closes
            # after the client reconnected takes the new one out too.
            self.sockets.pop(sid, None)
        return ws

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"Server shutdown")

    async def _send(self, event: str, data: Any, sid: str | None = None) -> None:
        """server.send_json: to ``sid`` if connected (else dropped), or to everyone."""
        self.sent.append(SentMessage(sid, event, data))
        message = {"type": event, "data": data}
        targets = list(self.sockets.values()) if sid is None else (
            [self.sockets[sid]] if sid in self.sockets else [])
        for ws in targets:
            with contextlib.suppress(Exception):
                await ws.send_json(message)

    async def _send_preview(self, image: Image.Image, sid: str | None, metadata: dict[str, Any]
                            ) -> None:
        """server.send_image: event PREVIEW_IMAGE, the format (1 JPEG, 2 PNG), the bytes;
        to a client that declared supports_preview_metadata: event
        PREVIEW_IMAGE_WITH_METADATA, the metadata JSON's length, the JSON, the bytes.
        Like send_sync with sid None, a prompt without client_id previews to everyone."""
        fmt = self.preview_format.upper()
        buffer = io.BytesIO()
        if fmt == "JPEG":
            image.save(buffer, format=fmt, quality=95)
        else:
            image.save(buffer, format=fmt)
        targets = list(self.sockets.items()) if sid is None else (
            [(sid, self.sockets[sid])] if sid in self.sockets else [])
        if sid is not None and sid not in self.sockets:
            self.sent.append(SentMessage(sid, "preview", b""))  # dropped: not connected
        for target, ws in targets:
            if self.feature_flags.get(target, {}).get("supports_preview_metadata"):
                meta = json.dumps({**metadata, "image_type": f"image/{fmt.lower()}"}).encode()
                frame = (struct.pack(">I", PREVIEW_IMAGE_WITH_METADATA)
                         + struct.pack(">I", len(meta)) + meta + buffer.getvalue())
            else:
                frame = (struct.pack(">I", PREVIEW_IMAGE) + struct.pack(">I", PREVIEW_FORMATS[fmt])
                         + buffer.getvalue())
            self.sent.append(SentMessage(target, "preview", frame))
            with contextlib.suppress(Exception):
                await ws.send_bytes(frame)

    async def _progress_state(self, prompt_id: str, nid: str | None, value: float,
                              maximum: float, state: str) -> None:
        """comfy_execution.progress WebUIProgressHandler: every node that is not
        pending, to every client (send_sync without a sid)."""
        if nid is not None:
            self._progress_nodes[nid] = {
                "value": value, "max": maximum, "state": state, "node_id": nid,
                "prompt_id": prompt_id, "display_node_id": nid, "parent_node_id": None,
                "real_node_id": nid}
        await self._send("progress_state", {"prompt_id": prompt_id,
                                            "nodes": copy.deepcopy(self._progress_nodes)})

    def _queue_info(self) -> dict[str, Any]:
        remaining = len(self._pending) + (1 if self._running is not None else 0)
        return {"exec_info": {"queue_remaining": remaining}}

    async def _queue_updated(self) -> None:
        await self._send("status", {"status": self._queue_info()})

    # ---- routes -------------------------------------------------------------

    async def _post_prompt(self, request: web.Request) -> web.Response:
        try:
            json_data = json.loads(await request.read())
        except ValueError:
            return web.Response(status=500, text="500 Internal Server Error\n\n"
                                "Server got itself in trouble")
        if not isinstance(json_data, dict):
            return web.Response(status=500, text="500 Internal Server Error")
        if "number" in json_data:
            number: float = float(json_data["number"])
        else:
            number = self.number
            if json_data.get("front"):
                number = -number
            self.number += 1
        if "prompt" not in json_data:
            error = {"type": "no_prompt", "message": "No prompt provided",
                     "details": "No prompt provided", "extra_info": {}}
            self.rejected.append(json_data)
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        received = copy.deepcopy(json_data["prompt"])
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        if not isinstance(prompt, dict):
            self.rejected.append(json_data)
            return web.Response(status=500, text="500 Internal Server Error")
        valid, error, good_outputs, node_errors = self._validate_prompt(prompt)
        extra_data = dict(json_data.get("extra_data") or {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid:
            self.rejected.append(json_data)
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        queued = QueuedPrompt(number, prompt_id, prompt, extra_data, good_outputs, received,
                              extra_data.get("client_id"))
        self.prompts.append(queued)
        self._pending.append(queued)
        self._wakeup.set()
        await self._queue_updated()
        return web.json_response({"prompt_id": prompt_id, "number": number,
                                  "node_errors": node_errors})

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self._queue_info())

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = [self._running.item()] if self._running is not None else []
        pending = [p.item() for p in self.pending]
        return web.json_response(copy.deepcopy({"queue_running": running,
                                                "queue_pending": pending}))

    async def _post_queue(self, request: web.Request) -> web.Response:
        json_data = await self._json(request)
        if json_data.get("clear"):
            for queued in self._pending:
                queued.state = "deleted"
            self._pending.clear()
            await self._queue_updated()
        for prompt_id in json_data.get("delete", []) or []:
            for queued in list(self._pending):
                if queued.prompt_id == prompt_id:
                    queued.state = "deleted"
                    self._pending.remove(queued)
                    await self._queue_updated()
                    break
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        json_data = await self._json(request)
        wanted = json_data.get("prompt_id")
        if wanted is None or (self._running is not None and self._running.prompt_id == wanted):
            self._interrupt = True  # nodes.interrupt_processing(); forgotten at the next start
        return web.Response(status=200)

    async def _get_history(self, request: web.Request) -> web.Response:
        items = list(self.history.items())
        max_items = request.query.get("max_items")
        if max_items is not None:
            items = items[-int(max_items):] if int(max_items) > 0 else []
        return web.json_response(copy.deepcopy(dict(items)))

    async def _get_history_one(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response(copy.deepcopy({prompt_id: entry} if entry else {}))

    async def _post_history(self, request: web.Request) -> web.Response:
        json_data = await self._json(request)
        if json_data.get("clear"):
            self.history.clear()
        for prompt_id in json_data.get("delete", []) or []:
            self.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def _view(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if "filename" not in query:
            return web.Response(status=404)
        filename = query["filename"]
        kind = query.get("type", "output")
        match = re.fullmatch(r"(.*) \[(input|output|temp)\]", filename)
        if match:  # an annotated name: "x.png [input]"
            filename, kind = match.group(1), match.group(2)
        if not filename or filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        if kind not in ("input", "output", "temp"):
            return web.Response(status=400)
        subfolder = query.get("subfolder", "")
        if ".." in subfolder.split("/") or subfolder.startswith("/"):
            return web.Response(status=403)
        data = self.stored.get((kind, subfolder, filename))
        if data is None:
            return web.Response(status=404)
        ext = os.path.splitext(filename)[1].lower()
        content_type = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                        ".webp": "image/webp"}.get(ext, "application/octet-stream")
        return web.Response(body=data, content_type=content_type,
                            headers={"Content-Disposition": f'filename="{filename}"'})

    async def _upload_image(self, request: web.Request) -> web.Response:
        try:
            post = await request.post()
        except Exception:  # noqa: BLE001 — not a form
            return web.Response(status=400)
        request[_RECORD].body = {
            name: (f"<file {value.filename!r}>" if isinstance(value, web.FileField) else value)
            for name, value in post.items()}
        image = post.get("image")
        overwrite = post.get("overwrite")
        kind = post.get("type") or "input"
        if kind not in ("input", "temp", "output"):
            return web.Response(status=500, text="500 Internal Server Error")
        if not isinstance(image, web.FileField):
            return web.Response(status=400)
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        filename = os.path.basename(filename)
        data = image.file.read()
        if ".." in subfolder or subfolder.startswith("/"):
            return web.Response(status=400)
        key = (str(kind), subfolder, filename)
        if key in self.stored and not (overwrite is not None and overwrite in ("true", "1")):
            if self.stored[key] != data:  # the same bytes are reused; else "name (1).ext"
                base, ext = os.path.splitext(filename)
                i = 1
                while (str(kind), subfolder, f"{base} ({i}){ext}") in self.stored:
                    i += 1
                filename = f"{base} ({i}){ext}"
                key = (str(kind), subfolder, filename)
        self.stored[key] = data
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def _object_info(self, request: web.Request) -> web.Response:
        nodes = self._nodes()
        return web.json_response({name: node_info(name, node) for name, node in nodes.items()})

    async def _object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        nodes = self._nodes()
        return web.json_response({name: node_info(name, nodes[name])} if name in nodes else {})

    async def _system_stats(self, request: web.Request) -> web.Response:
        gib = 1024 ** 3
        return web.json_response({
            "system": {
                "os": "posix", "ram_total": 64 * gib, "ram_free": 40 * gib,
                "comfyui_version": COMFYUI_VERSION, "required_frontend_version": "1.28.8",
                "installed_templates_version": "0.2.4", "required_templates_version": "0.2.4",
                "python_version": sys.version, "pytorch_version": "2.8.0+cu128",
                "embedded_python": False, "argv": ["main.py", "--listen", "0.0.0.0"],
            },
            "devices": [{
                "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "type": "cuda",
                "index": 0, "vram_total": 24 * gib, "vram_free": 22 * gib,
                "torch_vram_total": 0, "torch_vram_free": 0,
            }],
        })

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.read() or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    # ---- validation (execution.validate_prompt / validate_inputs) ----------------

    def _input_files(self) -> list[str]:
        return sorted(name for (kind, sub, name) in self.stored if kind == "input" and not sub)

    def _nodes(self) -> dict[str, NodeDef]:
        return catalogue(list(self.checkpoints), list(self.upscale_models), self._input_files())

    def _validate_prompt(self, prompt: dict[str, Any]
                         ) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
        nodes = self._nodes()
        outputs: list[str] = []
        for x in prompt:
            node = prompt[x]
            meta = node.get("_meta", {}) if isinstance(node, dict) else {}
            if not isinstance(node, dict) or "class_type" not in node:
                title = meta.get("title") if isinstance(meta, dict) else None
                return False, {
                    "type": "missing_node_type",
                    "message": f"Node '{title or f'ID #{x}'}' has no class_type. The workflow "
                               "may be corrupted or a custom node is missing.",
                    "details": f"Node ID '#{x}'",
                    "extra_info": {"node_id": x, "class_type": None, "node_title": title},
                }, [], {}
            class_type = node["class_type"]
            if class_type not in nodes:
                title = meta.get("title", class_type) if isinstance(meta, dict) else class_type
                return False, {
                    "type": "missing_node_type",
                    "message": f"Node '{title}' not found. The custom node may not be installed.",
                    "details": f"Node ID '#{x}'",
                    "extra_info": {"node_id": x, "class_type": class_type, "node_title": title},
                }, [], {}
            if nodes[class_type].output_node:
                outputs.append(x)
        if not outputs:
            return False, {"type": "prompt_no_outputs", "message": "Prompt has no outputs",
                           "details": "", "extra_info": {}}, [], {}

        good_outputs: list[str] = []
        errors: list[tuple[str, list[dict[str, Any]]]] = []
        node_errors: dict[str, Any] = {}
        validated: dict[str, tuple[bool, list[dict[str, Any]], str]] = {}
        for o in outputs:
            try:
                valid, reasons, _ = self._validate_inputs(nodes, prompt, o, validated)
            except Exception as ex:  # noqa: BLE001 — as the real server
                valid = False
                reasons = [{
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {"exception_type": _full_type_name(ex),
                                   "traceback": traceback.format_tb(ex.__traceback__)},
                }]
                validated[o] = (False, reasons, o)
            if valid is True:
                good_outputs.append(o)
                continue
            errors.append((o, reasons))
            for node_id, result in validated.items():
                if result[0] is not True and len(result[1]) > 0:
                    if node_id not in node_errors:
                        node_errors[node_id] = {"errors": result[1], "dependent_outputs": [],
                                                "class_type": prompt[node_id]["class_type"]}
                    node_errors[node_id]["dependent_outputs"].append(o)
        if not good_outputs:
            details = "\n".join(f"{e['message']}: {e['details']}"
                                for _, reasons in errors for e in reasons)
            return False, {"type": "prompt_outputs_failed_validation",
                           "message": "Prompt outputs failed validation",
                           "details": details, "extra_info": {}}, [], node_errors
        return True, None, good_outputs, node_errors

    def _validate_inputs(self, nodes: dict[str, NodeDef], prompt: dict[str, Any], unique_id: str,
                         validated: dict[str, Any]) -> tuple[bool, list[dict[str, Any]], str]:
        if unique_id in validated:
            return validated[unique_id]
        inputs = prompt[unique_id]["inputs"]
        node = nodes[prompt[unique_id]["class_type"]]
        errors: list[dict[str, Any]] = []
        valid = True
        for x, spec in node.required.items():
            input_type = spec[0]
            extra = spec[1] if len(spec) > 1 else {}
            if x not in inputs:
                errors.append({"type": "required_input_missing",
                               "message": "Required input is missing", "details": f"{x}",
                               "extra_info": {"input_name": x}})
                continue
            val = inputs[x]
            info = [input_type, extra]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append({
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of "
                                   "[node_id, slot_index]",
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info,
                                       "received_value": val}})
                    continue
                o_id = val[0]
                o_class_type = prompt[o_id]["class_type"]  # KeyError for a missing node
                received_type = nodes[o_class_type].returns[val[1]]  # IndexError: no such slot
                if not _type_matches(received_type, input_type):
                    errors.append({
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": f"{x}, received_type({received_type}) mismatch "
                                   f"input_type({input_type})",
                        "extra_info": {"input_name": x, "input_config": info,
                                       "received_type": received_type, "linked_node": val}})
                    continue
                try:
                    result = self._validate_inputs(nodes, prompt, o_id, validated)
                    if result[0] is False:
                        valid = False
                        continue
                except Exception as ex:  # noqa: BLE001 — as the real server
                    valid = False
                    validated[o_id] = (False, [{
                        "type": "exception_during_inner_validation",
                        "message": "Exception when validating inner node",
                        "details": str(ex),
                        "extra_info": {"input_name": x, "input_config": info,
                                       "exception_message": str(ex),
                                       "exception_type": _full_type_name(ex),
                                       "traceback": traceback.format_tb(ex.__traceback__),
                                       "linked_node": val}}], o_id)
                    continue
            else:
                if isinstance(val, dict) and "__value__" in val:
                    val = inputs[x] = val["__value__"]
                try:
                    if input_type == "INT":
                        val = inputs[x] = int(val)
                    elif input_type == "FLOAT":
                        val = inputs[x] = float(val)
                    elif input_type == "STRING":
                        val = inputs[x] = str(val)
                    elif input_type == "BOOLEAN":
                        val = inputs[x] = bool(val)
                except Exception as ex:  # noqa: BLE001
                    errors.append({
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {input_type} value",
                        "details": f"{x}, {val}, {ex}",
                        "extra_info": {"input_name": x, "input_config": info,
                                       "received_value": val, "exception_message": str(ex)}})
                    continue
                if x in node.validate:
                    continue
                if "min" in extra and val < extra["min"]:
                    errors.append({
                        "type": "value_smaller_than_min",
                        "message": f"Value {val} smaller than min of {extra['min']}",
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info,
                                       "received_value": val}})
                    continue
                if "max" in extra and val > extra["max"]:
                    errors.append({
                        "type": "value_bigger_than_max",
                        "message": f"Value {val} bigger than max of {extra['max']}",
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info,
                                       "received_value": val}})
                    continue
                if _combo(input_type) and val not in input_type:
                    if len(input_type) > 20:
                        list_info, config = f"(list of length {len(input_type)})", None
                    else:
                        list_info, config = str(input_type), info
                    errors.append({
                        "type": "value_not_in_list", "message": "Value not in list",
                        "details": f"{x}: '{val}' not in {list_info}",
                        "extra_info": {"input_name": x, "input_config": config,
                                       "received_value": val}})
                    continue
        if "image" in node.validate:  # LoadImage.VALIDATE_INPUTS
            image = inputs.get("image")
            if not isinstance(image, list) and self._input_file(image) is None:
                errors.append({"type": "custom_validation_failed",
                               "message": "Custom validation failed for node",
                               "details": f"image - Invalid image file: {image}",
                               "extra_info": {"input_name": "image"}})
        result = (False, errors, unique_id) if errors or valid is not True else (
            True, [], unique_id)
        validated[unique_id] = result
        return result

    def _input_file(self, name: Any) -> bytes | None:
        """folder_paths.get_annotated_filepath: "name", "sub/name", "name [input]"."""
        if not isinstance(name, str):
            return None
        kind = "input"
        match = re.fullmatch(r"(.*) \[(input|output|temp)\]", name)
        if match:
            name, kind = match.group(1), match.group(2)
        subfolder, _, filename = name.rpartition("/")
        return self.stored.get((kind, subfolder, filename))

    # ---- the queue worker (main.py prompt_worker) ----------------------------

    def _start_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()  # of this loop (a fake may be served again)
            self._wakeup.set()
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def _work(self) -> None:
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            queued = min(self._pending, key=lambda p: p.number)
            self._pending.remove(queued)
            self._running = queued
            queued.state = "running"
            queued.started_at = self.now()
            self.running_now += 1
            self.max_concurrent = max(self.max_concurrent, self.running_now)
            await self._queue_updated()  # PromptQueue.get
            try:
                history_result, status = await self._execute(queued)
            except Exception:  # noqa: BLE001 — a bug in the fake: keep the queue going
                self.worker_errors.append(traceback.format_exc())
                queued.state = "error"
                history_result = {"outputs": {}, "meta": {}}
                status = {"status_str": "error", "completed": False, "messages": []}
            finally:
                self.running_now -= 1
            queued.finished_at = self.now()
            self._running = None
            self.history[queued.prompt_id] = {"prompt": queued.item(), "outputs": {},
                                              "status": status}
            self.history[queued.prompt_id].update(history_result)
            self.executed += 1
            await self._queue_updated()  # PromptQueue.task_done
            if queued.client_id is not None:
                await self._send("executing", {"node": None, "prompt_id": queued.prompt_id},
                                 queued.client_id)
            self._client_id = None

    async def _execute(self, queued: QueuedPrompt) -> tuple[dict[str, Any], dict[str, Any]]:
        """PromptExecutor.execute: (history_result, status)."""
        self._interrupt = False
        prompt, prompt_id = queued.prompt, queued.prompt_id
        self._client_id = sid = queued.client_id
        messages: list[list[Any]] = []

        async def add_message(event: str, data: dict[str, Any], broadcast: bool) -> None:
            data = {**data, "timestamp": int(time.time() * 1000)}
            messages.append([event, data])
            if sid is not None or broadcast:
                await self._send(event, data, sid)

        self._progress_nodes = {}  # reset_progress_state
        await add_message("execution_start", {"prompt_id": prompt_id}, False)
        order = self._order(prompt, queued.outputs_to_execute)
        keys = {nid: self._cache_key(prompt, nid) for nid in order}
        cached = [nid for nid in prompt if nid in keys and keys[nid] in self._cache]
        await add_message("execution_cached", {"nodes": cached, "prompt_id": prompt_id}, False)
        fault = self._scripted_next("execution")
        fault_node = next((n for n in order if prompt[n]["class_type"] == "KSampler"
                           and n not in cached), None)
        if fault_node is None and order:
            fault_node = order[-1]
        outputs: dict[str, list[Any]] = {}
        ui_outputs: dict[str, dict[str, Any]] = {}
        executed: list[str] = []
        success, status_str = True, "success"
        for nid in order:
            class_type = prompt[nid]["class_type"]
            if nid in cached:
                values, ui = self._cache[keys[nid]]
                outputs[nid] = values
                if ui is not None:
                    ui_outputs[nid] = ui
                # ExecutionList stages only outputs and uncached nodes: a cached output
                # is reported with its cached UI, cached upstream nodes not at all.
                if sid is not None and nid in queued.outputs_to_execute:
                    await self._send("executed", {"node": nid, "display_node": nid,
                                                  "output": ui, "prompt_id": prompt_id}, sid)
                continue
            inputs: dict[str, Any] = {}
            try:
                if self._interrupt:
                    raise InterruptProcessing("Processing interrupted")
                for name, value in prompt[nid]["inputs"].items():
                    inputs[name] = (outputs[value[0]][value[1]] if isinstance(value, list)
                                    else value)
                if sid is not None:
                    self._last_node_id = nid
                    await self._send("executing", {"node": nid, "display_node": nid,
                                                   "prompt_id": prompt_id}, sid)
                await self._progress_state(prompt_id, nid, 0.0, 1.0, "running")
                if fault is not None and nid == fault_node:
                    raise NodeFault(*EXECUTION_FAULTS[fault])
                values, ui = await self._run_node(class_type, inputs, nid, prompt_id, sid)
                done = self._progress_nodes[nid]
                await self._progress_state(prompt_id, nid, done["max"], done["max"], "finished")
            except InterruptProcessing:
                await add_message("execution_interrupted", {
                    "prompt_id": prompt_id, "node_id": nid, "node_type": class_type,
                    "executed": list(executed)}, True)
                success, status_str = False, "error"
                queued.state = "interrupted"
                break
            except Exception as ex:  # noqa: BLE001 — a node raised, as in the real executor
                # execution.py: "{}\n{}".format(ex, tips), tips only for an OOM
                oom = isinstance(ex, NodeFault) and ex.exception_type == "torch.OutOfMemoryError"
                await add_message("execution_error", {
                    "prompt_id": prompt_id, "node_id": nid, "node_type": class_type,
                    "executed": list(executed),
                    "exception_message": f"{ex}\n{OOM_TIPS if oom else ''}",
                    "exception_type": _full_type_name(ex),
                    "traceback": traceback.format_tb(ex.__traceback__),
                    "current_inputs": {k: [_format_value(v)] for k, v in inputs.items()},
                    "current_outputs": {k: [[_format_value(v)] for v in vs]
                                        for k, vs in outputs.items()},
                }, False)
                success, status_str = False, "error"
                queued.state = "error"
                break
            outputs[nid] = values
            self._cache[keys[nid]] = (values, ui)
            executed.append(nid)
            if ui is not None:
                ui_outputs[nid] = ui
                if sid is not None:
                    await self._send("executed", {"node": nid, "display_node": nid,
                                                  "output": ui, "prompt_id": prompt_id}, sid)
        # the cache keeps what this prompt used (CacheSet.clean_unused)
        self._cache = {k: v for k, v in self._cache.items() if k in keys.values()}
        self._last_node_id = None
        if success:
            queued.state = "success"
            await add_message("execution_success", {"prompt_id": prompt_id}, False)
        history_result = {
            "outputs": ui_outputs,
            "meta": {nid: {"node_id": nid, "display_node": nid, "parent_node": None,
                           "real_node_id": nid} for nid in ui_outputs},
        }
        return history_result, {"status_str": status_str, "completed": success,
                                "messages": messages}

    @staticmethod
    def _order(prompt: dict[str, Any], outputs: list[str]) -> list[str]:
        """Nodes to run, each after the nodes it takes inputs from."""
        order: list[str] = []

        def visit(nid: str) -> None:
            if nid in order:
                return
            for value in prompt[nid]["inputs"].values():
                if isinstance(value, list):
                    visit(value[0])
            order.append(nid)

        for output in sorted(outputs):
            visit(output)
        return order

    def _cache_key(self, prompt: dict[str, Any], nid: str) -> str:
        """The node's input signature: its class, constants and upstream signatures.
        LoadImage's key holds the file's hash (its IS_CHANGED). An unchanged SaveImage is
        cached too: the same prompt queued twice makes no new images, as in ComfyUI."""
        node = prompt[nid]
        parts: dict[str, Any] = {}
        for name, value in sorted(node["inputs"].items()):
            parts[name] = ([self._cache_key(prompt, value[0]), value[1]]
                           if isinstance(value, list) else value)
        extra = ""
        if node["class_type"] == "LoadImage":
            data = self._input_file(node["inputs"].get("image"))
            extra = hashlib.sha256(data or b"").hexdigest()
        raw = json.dumps([node["class_type"], parts, extra], sort_keys=True, default=str)
        return hashlib.sha256(raw.encode()).hexdigest()

    # ---- the nodes ------------------------------------------------------------

    async def _run_node(self, class_type: str, inputs: dict[str, Any], nid: str, prompt_id: str,
                        sid: str | None) -> tuple[list[Any], dict[str, Any] | None]:
        if class_type == "CheckpointLoaderSimple":
            name = inputs["ckpt_name"]
            return [("MODEL", name), ("CLIP", name), ("VAE", name)], None
        if class_type == "CLIPTextEncode":
            return [("CONDITIONING", inputs["text"])], None
        if class_type == "EmptyLatentImage":
            return [{"width": inputs["width"], "height": inputs["height"],
                     "batch": inputs["batch_size"], "pixels": None}], None
        if class_type == "KSampler":
            latent = dict(inputs["latent_image"])
            await self._sample(inputs, latent, nid, prompt_id, sid)
            latent.update(seed=inputs["seed"], text=inputs["positive"][1],
                          denoise=inputs["denoise"])
            return [latent], None
        if class_type == "VAEEncode":
            images = inputs["pixels"]
            return [{"width": images[0].width // 8 * 8, "height": images[0].height // 8 * 8,
                     "batch": len(images), "pixels": images}], None
        if class_type == "VAEDecode":
            return [self._decode(inputs["samples"])], None
        if class_type == "LoadImage":
            data = self._input_file(inputs["image"])
            path = f"/ComfyUI/input/{inputs['image']}"
            if data is None:
                raise FileNotFoundError(f"[Errno 2] No such file or directory: '{path}'")
            try:
                with Image.open(io.BytesIO(data)) as img:
                    img = ImageOps.exif_transpose(img)
                    rgb = img.convert("RGB")
            except Exception as exc:  # noqa: BLE001 — what PIL says of a non-image
                raise _pil_error(path) from exc
            mask = Image.new("L", rgb.size, 0)
            return [[rgb], [mask]], None
        if class_type == "SaveImage":
            return [], {"images": self._save(inputs["images"], inputs["filename_prefix"])}
        if class_type == "UpscaleModelLoader":
            return [("UPSCALE_MODEL", inputs["model_name"])], None
        if class_type in ("ImageUpscaleWithModel", "ImageScaleBy"):
            await self._held()
        if class_type == "ImageUpscaleWithModel":
            factor = _upscale_factor(inputs["upscale_model"][1])
            return [[img.resize((img.width * factor, img.height * factor),
                                Image.Resampling.BICUBIC) for img in inputs["image"]]], None
        if class_type == "ImageScaleBy":
            scale = inputs["scale_by"]
            method = {"nearest-exact": Image.Resampling.NEAREST,
                      "bilinear": Image.Resampling.BILINEAR, "area": Image.Resampling.BOX,
                      "bicubic": Image.Resampling.BICUBIC,
                      "lanczos": Image.Resampling.LANCZOS}[inputs["upscale_method"]]
            return [[img.resize((round(img.width * scale), round(img.height * scale)), method)
                     for img in inputs["image"]]], None
        raise RuntimeError(f"the fake cannot run {class_type}")

    async def _sample(self, inputs: dict[str, Any], latent: dict[str, Any], nid: str,
                      prompt_id: str, sid: str | None) -> None:
        steps = inputs["steps"]
        for step in range(steps):
            await self._held()
            if self._interrupt:
                raise InterruptProcessing("Processing interrupted")
            if self.step_seconds:
                await asyncio.sleep(self.step_seconds)
            else:
                await asyncio.sleep(0)
            if self._interrupt:
                raise InterruptProcessing("Processing interrupted")
            # main.py's hook: progress_state (broadcast), progress and the preview go to
            # server.client_id, which for a prompt without client_id means everyone.
            await self._progress_state(prompt_id, nid, step + 1, steps, "running")
            await self._send("progress", {"value": step + 1, "max": steps,
                                          "prompt_id": prompt_id, "node": nid}, sid)
            if self.previews:
                size = (max(1, latent["width"] // 8), max(1, latent["height"] // 8))
                shade = int(255 * (step + 1) / steps)
                await self._send_preview(
                    Image.new("RGB", size, (shade, shade, 128)), sid,
                    {"node_id": nid, "prompt_id": prompt_id, "display_node_id": nid,
                     "parent_node_id": None, "real_node_id": nid})

    async def _held(self) -> None:
        """While hold() is on (and no interrupt came)."""
        while self._gate is not None and not self._gate.is_set() and not self._interrupt:
            await asyncio.sleep(0.005)
        if self._interrupt:
            raise InterruptProcessing("Processing interrupted")

    def _decode(self, latent: dict[str, Any]) -> list[Image.Image]:
        size = (latent["width"], latent["height"])
        images = []
        for i in range(latent["batch"]):
            label = str(latent.get("text", ""))[:40]
            picture = Image.open(io.BytesIO(_picture(size, f"{latent.get('seed')}-{i}", label)))
            picture = picture.convert("RGB")
            source = latent.get("pixels")
            if source:
                base = source[min(i, len(source) - 1)].convert("RGB").resize(size)
                picture = Image.blend(base, picture, min(1.0, float(latent.get("denoise", 1))))
                ImageDraw.Draw(picture).text((8, 8), label, fill=(255, 255, 255))
            images.append(picture)
        return images

    def _save(self, images: list[Image.Image], prefix: str) -> list[dict[str, str]]:
        """SaveImage: "<prefix>_<counter:05>_.png", a prefix's folders as the subfolder."""
        subfolder, _, name = prefix.rpartition("/")
        pattern = re.compile(re.escape(name) + r"_(\d{5})_\.png")
        used = [int(m.group(1)) for (kind, sub, filename) in self.stored
                if kind == "output" and sub == subfolder
                and (m := pattern.fullmatch(filename))]
        counter = max(used, default=0) + 1
        results = []
        for img in images:
            filename = f"{name}_{counter:05}_.png"
            self.stored[("output", subfolder, filename)] = _png(img)
            results.append({"filename": filename, "subfolder": subfolder, "type": "output"})
            counter += 1
        return results


def _format_value(x: Any) -> Any:
    if x is None or isinstance(x, int | float | bool | str):
        return x
    return str(x)


def _pil_error(path: str) -> Exception:
    from PIL import UnidentifiedImageError
    return UnidentifiedImageError(f"cannot identify image file '{path}'")
