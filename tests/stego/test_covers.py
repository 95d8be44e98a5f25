"""Promise 1, covers: a default library and supplied covers, scaled when too small, clear errors."""

import io

import numpy as np
import pytest
from PIL import Image

from cloudp2p.errors import InvalidImage
from cloudp2p.stego import covers, engine
from cloudp2p.stego.capacity import CapacityError, capacity_bits

from .conftest import data_bytes


def test_the_library_ships_real_photographs():
    names = [name for name, _ in covers.library()]
    assert {"coffee.png", "chelsea.png"} <= set(names)
    assert "astronaut.png" not in names  # clipped to 0 in 11 % of samples: RS reads 0.165 at 50 %
    for _, array in covers.library():
        assert array.dtype == np.uint8 and array.ndim == 3 and not array.flags.writeable


def test_the_smallest_default_cover_that_fits_is_chosen():
    array, said = covers.choose_cover(8 * 1000, None)
    assert array.shape == (300, 451, 3) and "chelsea.png" in said
    array, said = covers.choose_cover(8 * 60_000, None)
    assert array.shape == (400, 600, 3) and "coffee.png" in said
    array[0, 0, 0] ^= 1  # callers get a writable copy; the library is untouched
    assert covers.choose_cover(8 * 60_000, None)[0][0, 0, 0] != array[0, 0, 0]


def test_a_payload_larger_than_every_default_scales_the_largest():
    needed = 8 * 400_000
    array, said = covers.choose_cover(needed, None)
    assert capacity_bits(array.shape) >= needed
    rung = covers.ladder_bits(needed)
    assert needed <= rung < needed * covers.LADDER_STEP
    assert capacity_bits((array.shape[0] - 2, array.shape[1] - 2, 3)) < rung  # just the rung
    assert "scaled" in said and "coffee.png" in said
    assert engine.extract(engine.embed(array, b"x" * (needed // 8), b"k"), b"k", 3) == b"xxx"


def test_scaled_default_covers_come_in_ladder_sizes_and_are_cached_read_only():
    a, _ = covers.choose_cover(8 * 400_000, None)
    b, _ = covers.choose_cover(8 * 401_000, None)  # same rung: same size, from the cache
    assert a.shape == b.shape and np.array_equal(a, b)
    a[0, 0, 0] ^= 1  # callers get writable copies
    assert covers.choose_cover(8 * 400_000, None)[0][0, 0, 0] != a[0, 0, 0]
    c, _ = covers.choose_cover(8 * 450_000, None)  # the next rung up
    assert c.shape[0] * c.shape[1] > a.shape[0] * a.shape[1]
    for bits in (2, 1000, 8 * 400_000, 10**9):
        rung = covers.ladder_bits(bits)
        assert bits <= rung < bits * covers.LADDER_STEP + 1
    # Past the pixel limit the rung gives way to the exact size the payload needs.
    limit = capacity_bits((6000, 6600, 3))  # just under 40 MP
    array, _ = covers.choose_cover(limit - 10**6, None)
    assert array.shape[0] * array.shape[1] <= covers.MAX_COVER_PIXELS


def test_a_supplied_cover_is_used_as_it_is_when_large_enough():
    array, said = covers.choose_cover(8 * 1000, data_bytes("rocket.jpg"))
    assert array.shape == (427, 640, 3) and "supplied" in said and "as it is" in said


def test_a_supplied_cover_too_small_is_scaled_up_with_lanczos_keeping_its_aspect():
    out = io.BytesIO()
    Image.open(io.BytesIO(data_bytes("chelsea.png"))).resize((90, 60)).save(out, format="PNG")
    array, said = covers.choose_cover(8 * 20_000, out.getvalue())
    height, width = array.shape[:2]
    assert capacity_bits(array.shape) >= 8 * 20_000
    assert abs(width / height - 1.5) < 0.02
    assert "scaled it up" in said and f"{width}x{height}" in said


def test_greyscale_and_transparent_supplied_covers_keep_their_channels():
    grey, _ = covers.choose_cover(8 * 100, data_bytes("camera.png"))
    assert grey.shape == (512, 512, 1)
    out = io.BytesIO()
    Image.new("RGBA", (64, 64), (1, 2, 3, 4)).save(out, format="PNG")
    rgba, said = covers.choose_cover(8 * 5000, out.getvalue())
    assert rgba.shape[2] == 4 and "scaled" in said and capacity_bits(rgba.shape) >= 8 * 5000


def test_impossible_sizes_say_how_many_pixels_are_needed():
    with pytest.raises(CapacityError) as info:
        covers.choose_cover(8 * 100_000_000, None)
    assert "pixels" in str(info.value) and "266666667" in str(info.value)
    with pytest.raises(CapacityError):
        covers.choose_cover(8 * 100_000_000, data_bytes("rocket.jpg"))


def test_a_supplied_cover_that_is_not_an_image_is_refused():
    with pytest.raises(InvalidImage):
        covers.choose_cover(8, b"GIF89a nonsense")


def test_an_extra_covers_directory_is_used(tmp_path):
    Image.new("RGB", (2000, 2000), (9, 9, 9)).save(tmp_path / "big.png")
    (tmp_path / "notes.txt").write_text("not a cover")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    array, said = covers.choose_cover(8 * 1_000_000, None, covers_dir=str(tmp_path))
    assert array.shape == (2000, 2000, 3) and "big.png" in said
