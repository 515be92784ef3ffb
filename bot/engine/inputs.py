"""Input images for a job: fetched from Telegram by file id, checked, cut
out of a grid when the action needs one quadrant, and, for vendors that
fetch by URL, published as an expiring /media link of ours."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image
from telegram import Bot
from telegram.error import TelegramError

from bot.engine.downloads import DownloadError, inspect_image
from providers.base import Provider
from providers.images import ShrinkError, shrink_to
from providers.types import InputImage
from storage.media import MediaRepository
from storage.models import Task

MEDIA_TTL_SECONDS = 3600.0


class InputError(Exception):
    """An input image we cannot use; ``transient`` when worth retrying."""

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


def crop_cell(data: bytes, index: int, cols: int = 2, rows: int = 2) -> bytes:
    """Cell ``index`` (0-based, row-major) of a grid image, as PNG."""
    with Image.open(io.BytesIO(data)) as grid:
        width, height = grid.width // cols, grid.height // rows
        x, y = (index % cols) * width, (index // cols) * height
        cell = grid.convert("RGB").crop((x, y, x + width, y + height))
    out = io.BytesIO()
    cell.save(out, format="PNG")
    return out.getvalue()


class InputResolver:
    def __init__(self, bot: Bot, media: MediaRepository, public_base_url: str) -> None:
        self.bot = bot
        self.media = media
        self.public_base_url = public_base_url

    async def __call__(self, task: Task, provider: Provider) -> tuple[InputImage, ...]:
        return tuple([await self._one(task, provider, item) for item in task.inputs])

    async def _one(self, task: Task, provider: Provider, item: dict[str, Any]) -> InputImage:
        try:
            telegram_file = await self.bot.get_file(item["file_id"])
            data = bytes(await telegram_file.download_as_bytearray())
        except TelegramError as exc:
            raise InputError(f"Telegram file unavailable: {type(exc).__name__}", transient=True) from None
        try:
            checked = inspect_image(data)
        except DownloadError as exc:
            raise InputError(exc.reason) from None
        mime, width, height = checked.mime, checked.width, checked.height
        changed = False  # the bytes differ from the Telegram file's
        if "cell" in item:
            data, mime, changed = crop_cell(data, int(item["cell"])), "image/png", True
            width, height = width // 2, height // 2
        limit = provider.max_input_bytes
        if limit is not None and len(data) > limit:
            try:
                data = shrink_to(data, limit)
            except ShrinkError as exc:
                raise InputError(str(exc)) from None
            shrunk = inspect_image(data)
            mime, width, height, changed = shrunk.mime, shrunk.width, shrunk.height, True
        url = None
        if self.public_base_url and provider.image_input == "url":
            # A Telegram file is fetched again when the vendor asks (the
            # database keeps no copy); a cut-out or shrunk copy exists only here.
            if changed:
                link = await self.media.create(None, mime, MEDIA_TTL_SECONDS, task.id, data=data)
            else:
                link = await self.media.create(item["file_id"], mime, MEDIA_TTL_SECONDS, task.id)
            url = f"{self.public_base_url}/media/{link.token}"
        return InputImage(data=data, mime=mime, width=width, height=height, url=url)
