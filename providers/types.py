"""Data that crosses the provider boundary. Providers know nothing about
Telegram; the bot knows nothing about vendor payloads."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Capability(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    EDIT = "edit"
    FACESWAP = "faceswap"
    UPSCALE = "upscale"
    VARIATION = "variation"
    ANIME = "anime"
    DESCRIBE = "describe"
    REMOVE_BG = "remove-bg"
    BLEND = "blend"


class GenerationParams(BaseModel):
    """What the user asked for, independent of any vendor. Stored with the task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = ""
    negative_prompt: str = ""
    aspect_ratio: str = "1:1"
    width: int | None = None
    height: int | None = None
    n: int = Field(default=1, ge=1, le=4)
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    strength: float | None = None
    model: str | None = None
    provider: str | None = None

    def size_for(self, long_side: int, multiple: int = 8) -> tuple[int, int]:
        """Explicit --size wins; otherwise the aspect ratio fitted to
        ``long_side`` on the longer edge, rounded to ``multiple``."""
        if self.width and self.height:
            return self.width, self.height
        w_ratio, h_ratio = (int(p) for p in self.aspect_ratio.split(":"))
        if w_ratio >= h_ratio:
            width, height = long_side, long_side * h_ratio / w_ratio
        else:
            width, height = long_side * w_ratio / h_ratio, long_side
        return _round_to(width, multiple), _round_to(height, multiple)


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


class InputImage(BaseModel):
    """An input image, in every form a vendor may want it: the bytes (for
    multipart or data URIs) and, when PUBLIC_BASE_URL is set, one of the
    bot's own expiring /media links. Never a Telegram file URL. Width and
    height are measured by the engine, so no adapter decodes the image again."""

    model_config = ConfigDict(frozen=True)

    data: bytes
    mime: str = "image/png"
    width: int  # measured once, by the engine, when it checked the image
    height: int
    url: str | None = None


class SourceResult(BaseModel):
    """The earlier result an action (upscale / variation / reroll) starts from."""

    model_config = ConfigDict(frozen=True)

    provider: str
    job_id: str
    index: int = 0
    vendor_data: dict = Field(default_factory=dict)


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    capability: Capability
    params: GenerationParams
    images: tuple[InputImage, ...] = ()
    source: SourceResult | None = None
    business_id: str  # our own id for this submission; vendors that accept one get it
    callback_url: str | None = None


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ResultImage(BaseModel):
    """A finished image: a (soon expiring) URL to download, or bytes."""

    url: str | None = None
    data: bytes | None = None
    seed: int | None = None


class JobState(BaseModel):
    status: JobStatus
    progress: float | None = None  # 0..1
    queue_position: int | None = None
    eta_seconds: float | None = None
    preview: bytes | None = None  # intermediate image, where the vendor gives one
    preview_url: str | None = None  # or where to download it (midjourney-proxy's imageUrl)
    images: list[ResultImage] = Field(default_factory=list)
    is_grid: bool = False  # one image holding a 2x2 grid (Midjourney style)
    vendor_data: dict = Field(default_factory=dict)  # e.g. native action ids
    error_kind: str | None = None  # a providers.errors kind, for FAILED
    error_detail: str = ""  # vendor's words, for logs only

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)


class Submitted(BaseModel):
    job_id: str
    eta_seconds: float | None = None
    state: JobState | None = None  # synchronous vendors answer with the result
