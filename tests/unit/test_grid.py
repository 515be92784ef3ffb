"""The 2×2 grid the bot composes of separate result images."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.engine.grid import GRID_SIDE, compose_grid
from bot.engine.inputs import crop_cell


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


COLOURS = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)]


def test_four_images_in_reading_order_and_each_quarter_crops_back() -> None:
    data, width, height = compose_grid([png(300, 200, c) for c in COLOURS])
    assert (width, height) == (600, 400)
    with Image.open(io.BytesIO(data)) as grid:
        assert grid.format == "JPEG" and grid.size == (600, 400)
    for index, colour in enumerate(COLOURS):
        with Image.open(io.BytesIO(crop_cell(data, index))) as cell:
            assert cell.size == (300, 200)
            r, g, b = cell.convert("RGB").getpixel((150, 100))
            assert all(abs(x - y) < 12 for x, y in zip((r, g, b), colour, strict=True))


def test_large_images_are_scaled_and_odd_shapes_fitted_into_the_cell() -> None:
    data, width, height = compose_grid([png(2048, 1024, COLOURS[0]), png(500, 1000, COLOURS[1])])
    assert max(width, height) == GRID_SIDE and (width, height) == (2048, 1024)
    with Image.open(io.BytesIO(data)) as grid:
        rgb = grid.convert("RGB")
        assert rgb.getpixel((1024 + 512, 256))[1] > 200  # the tall one, centred in its cell
        assert rgb.getpixel((1024 + 20, 256)) == pytest.approx((24, 24, 24), abs=6)  # beside it: background
        assert rgb.getpixel((512, 768)) == pytest.approx((24, 24, 24), abs=6)  # the empty cells stay dark


def test_one_or_five_images_are_no_grid() -> None:
    with pytest.raises(ValueError):
        compose_grid([png(10, 10, COLOURS[0])])
    with pytest.raises(ValueError):
        compose_grid([png(10, 10, COLOURS[0])] * 5)
