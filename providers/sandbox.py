"""The sandbox vendor: no credentials, no network. It draws real images with
Pillow so the whole bot can be tried (and tested) without any vendor account,
and every result says plainly that it is sandbox output.

Text-to-image jobs behave like a polled vendor (queued, progress with a
preview, then done) so the poller is exercised; the job id encodes the whole
job, so the sandbox keeps no state and a restart loses nothing. Jobs with
input images answer synchronously, like juhe.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import textwrap
import time
from typing import Any, ClassVar

import httpx
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from providers.base import Provider
from providers.errors import BadRequest, JobNotFound
from providers.types import (
    Capability,
    JobSpec,
    JobState,
    JobStatus,
    ResultImage,
    Submitted,
)

LONG_SIDE = 768
LABEL = "SANDBOX"


class Sandbox(Provider):
    id = "sandbox"
    title = "Sandbox (local test images)"
    capabilities = frozenset(
        {
            Capability.TXT2IMG,
            Capability.IMG2IMG,
            Capability.EDIT,
            Capability.UPSCALE,
            Capability.VARIATION,
            Capability.FACESWAP,
        }
    )
    image_input: ClassVar = "bytes"
    is_sandbox = True
    typical_seconds = 2.0
    max_images = 4

    def __init__(self, client: httpx.AsyncClient, job_seconds: float = 4.0) -> None:
        super().__init__(client)
        self.job_seconds = job_seconds

    @classmethod
    def from_settings(cls, settings: Any, client: httpx.AsyncClient) -> Sandbox:
        return cls(client, job_seconds=float(getattr(settings, "sandbox_job_seconds", 4.0)))

    async def submit(self, spec: JobSpec) -> Submitted:
        if spec.capability not in self.capabilities:
            raise BadRequest(f"sandbox cannot do {spec.capability}")
        base = _source_job(spec)
        if base is None and spec.images:
            images = _transform(spec)
            state = JobState(status=JobStatus.SUCCEEDED, progress=1.0, images=images)
            return Submitted(job_id=f"sync-{spec.business_id}", state=state)
        job = {
            "c": spec.capability.value,
            "p": spec.params.prompt,
            "size": list(spec.params.size_for(LONG_SIDE)),
            "n": spec.params.n,
            "seed": spec.params.seed if spec.params.seed is not None else _seed_of(spec.business_id),
        }
        if base is not None and spec.source is not None:
            # Actions on our own drawings re-draw from the source job itself.
            job.update(p=base["p"], size=base["size"], n=1)
            if spec.capability == Capability.UPSCALE:
                job.update(seed=base["seed"] + spec.source.index, scale=2)
            else:
                job.update(n=max(1, base["n"]))
        elif spec.capability != Capability.TXT2IMG:
            raise BadRequest(f"sandbox {spec.capability} needs an input image")
        job["t0"] = time.time()
        return Submitted(job_id=_encode(job), eta_seconds=self.job_seconds)

    async def poll(self, job_id: str) -> JobState:
        job = _decode(job_id)
        elapsed = time.time() - job["t0"]
        if elapsed < self.job_seconds * 0.15:
            return JobState(status=JobStatus.QUEUED, queue_position=1)
        if elapsed < self.job_seconds:
            fraction = min(0.99, elapsed / self.job_seconds)
            preview = _render(job, 0, small=True)
            return JobState(status=JobStatus.RUNNING, progress=fraction, preview=preview)
        images = [ResultImage(data=_render(job, i), seed=job["seed"] + i) for i in range(job["n"])]
        return JobState(status=JobStatus.SUCCEEDED, progress=1.0, images=images)


def _source_job(spec: JobSpec) -> dict | None:
    """The sandbox job an action starts from, when it is one of ours that
    can be re-drawn (image-input jobs answered at once cannot)."""
    if spec.source is None or spec.source.provider != Sandbox.id:
        return None
    try:
        return _decode(spec.source.job_id)
    except JobNotFound:
        return None


def _encode(job: dict) -> str:
    raw = json.dumps(job, separators=(",", ":"), ensure_ascii=False).encode()
    return "sb-" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(job_id: str) -> dict:
    if not job_id.startswith("sb-"):
        raise JobNotFound("not a sandbox job id")
    payload = job_id[3:]
    try:
        job = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        raise JobNotFound("unreadable sandbox job id") from None
    if not _is_job(job):
        raise JobNotFound("not a sandbox job")
    return job


def _is_job(job: object) -> bool:
    if not isinstance(job, dict):
        return False
    numbers = all(isinstance(job.get(k), (int, float)) and not isinstance(job.get(k), bool) for k in ("seed", "t0", "n"))
    size = job.get("size")
    sized = isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and 0 < v <= 4096 for v in size)
    return numbers and sized and isinstance(job.get("p"), str) and isinstance(job.get("c"), str) and 1 <= job["n"] <= 4


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _palette(seed: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    rng = random.Random(seed)
    return (
        (rng.randrange(30, 200), rng.randrange(30, 200), rng.randrange(30, 200)),
        (rng.randrange(60, 255), rng.randrange(60, 255), rng.randrange(60, 255)),
    )


def _render(job: dict, index: int, small: bool = False) -> bytes:
    """A deterministic picture of the job: gradient, shapes, the prompt, a label."""
    scale = job.get("scale", 1)
    width, height = job["size"][0] * scale, job["size"][1] * scale
    seed = job["seed"] + index
    if small:
        width, height = max(64, width // 8), max(64, height // 8)
    top, bottom = _palette(seed)
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(Image.new("RGB", (width, height), top), Image.new("RGB", (width, height), bottom), gradient)
    draw = ImageDraw.Draw(image)
    rng = random.Random(seed)
    for _ in range(6):
        radius = rng.randrange(max(4, min(width, height) // 12), max(8, min(width, height) // 4))
        x, y = rng.randrange(width), rng.randrange(height)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour, outline=(255, 255, 255))
    if not small:
        image = image.filter(ImageFilter.GaussianBlur(2))
        draw = ImageDraw.Draw(image)
        _caption(draw, width, height, job["p"] or job["c"], index)
    return _png(image)


def _caption(draw: ImageDraw.ImageDraw, width: int, height: int, prompt: str, index: int) -> None:
    font = ImageFont.load_default(size=max(14, width // 28))
    label_font = ImageFont.load_default(size=max(16, width // 16))
    draw.text((width // 2, height // 8), LABEL, font=label_font, anchor="mm", fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    lines = textwrap.wrap(prompt, width=max(10, width // max(8, width // 40)))[:4]
    y = height - height // 4
    for line in lines:
        draw.text((width // 2, y), line, font=font, anchor="mm", fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
        y += int(font.size * 1.3)
    draw.text((width - 10, height - 10), f"#{index + 1}", font=font, anchor="rd", fill=(255, 255, 255))


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=1)
    return out.getvalue()


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def _transform(spec: JobSpec) -> list[ResultImage]:
    """Image-input jobs, done at once with honest local effects."""
    first = _open(spec.images[0].data)
    if spec.capability == Capability.UPSCALE:
        result = first.resize((first.width * 2, first.height * 2), Image.Resampling.LANCZOS)
    elif spec.capability == Capability.FACESWAP and len(spec.images) > 1:
        target = _open(spec.images[1].data)
        face = ImageOps.fit(first, (target.width // 3, target.height // 3))
        mask = Image.new("L", face.size, 0)
        ImageDraw.Draw(mask).ellipse((0, 0, *face.size), fill=255)
        result = target.copy()
        result.paste(face, (target.width // 3, target.height // 6), mask)
    else:
        result = ImageOps.posterize(first, 3).filter(ImageFilter.SMOOTH_MORE)
    draw = ImageDraw.Draw(result)
    font = ImageFont.load_default(size=max(16, result.width // 16))
    draw.text((result.width // 2, result.height // 8), LABEL, font=font, anchor="mm", fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return [ResultImage(data=_png(result))]
