"""Several separate result images as one 2×2 grid photo, Midjourney's way:
one message instead of an album plus a keyboard message. The originals stay
with the task, so U1–U4 show each at full size without asking the vendor."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageOps

GRID_SIDE = 2048  # the grid's longer side at most: Telegram shows photos up to 2560
CELLS = 4  # always 2×2 (an empty cell stays dark), so a cell is always the same quarter
BACKGROUND = (24, 24, 24)


def compose_grid(images: Sequence[bytes]) -> tuple[bytes, int, int]:
    """The images (2–4) in a 2×2 grid, each fitted into a cell the shape of
    the first; JPEG, as Telegram stores photos anyway. (bytes, width, height)"""
    if not 2 <= len(images) <= CELLS:
        raise ValueError(f"a grid takes 2 to {CELLS} images, not {len(images)}")
    opened = [Image.open(io.BytesIO(data)) for data in images]
    try:
        first = opened[0]
        scale = min(1.0, (GRID_SIDE / 2) / max(first.width, first.height))
        cell = (max(1, round(first.width * scale)), max(1, round(first.height * scale)))
        grid = Image.new("RGB", (cell[0] * 2, cell[1] * 2), BACKGROUND)
        for index, image in enumerate(opened):
            fitted = ImageOps.contain(ImageOps.exif_transpose(image).convert("RGB"), cell, Image.Resampling.LANCZOS)
            x = (index % 2) * cell[0] + (cell[0] - fitted.width) // 2
            y = (index // 2) * cell[1] + (cell[1] - fitted.height) // 2
            grid.paste(fitted, (x, y))
        out = io.BytesIO()
        grid.save(out, format="JPEG", quality=90)
        return out.getvalue(), grid.width, grid.height
    finally:
        for image in opened:
            image.close()
