"""Re-encoding input images that are too large for a vendor: one place for
juhe's data-URI limit and aihuihua's 5 MB URL limit."""

from __future__ import annotations

import io

from PIL import Image

# (long side, JPEG quality) tried in order until the image fits.
SHRINK_STEPS: tuple[tuple[int, int], ...] = (
    (4096, 90), (2048, 90), (2048, 80), (1536, 80), (1024, 75),
)


class ShrinkError(ValueError):
    """The image cannot be read, or does not fit even at the last step."""


def flatten(img: Image.Image) -> Image.Image:
    """RGB for JPEG: transparency becomes white, palettes are expanded."""
    img.seek(0)  # first frame of an animation
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def shrink_to(data: bytes, max_bytes: int, steps: tuple[tuple[int, int], ...] = SHRINK_STEPS) -> bytes:
    """``data`` as a JPEG of at most ``max_bytes``, downscaled step by step."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = flatten(img)
    except (OSError, ValueError, Image.DecompressionBombError):
        raise ShrinkError("the image cannot be converted") from None
    for long_side, quality in steps:
        resized = rgb.copy()
        resized.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        resized.save(buffer, format="JPEG", quality=quality, optimize=True)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
    raise ShrinkError("the image is too large even after shrinking")


def has_alpha(data: bytes) -> bool:
    """Whether the image has a transparency channel (read from its header,
    without decoding the pixels): what makes a PNG usable as an edit mask."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def square_png(data: bytes, max_bytes: int) -> bytes:
    """``data`` as a square PNG of at most ``max_bytes`` (dall-e-2 takes
    nothing else): the centre square, downscaled until it fits."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)
            rgba = img.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError):
        raise ShrinkError("the image cannot be converted") from None
    side = min(rgba.size)
    left, top = (rgba.width - side) // 2, (rgba.height - side) // 2
    square = rgba.crop((left, top, left + side, top + side))
    for target in (1024, 768, 512, 256):
        resized = square.resize((min(side, target),) * 2, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        resized.save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
    raise ShrinkError("the image is too large even after shrinking")
