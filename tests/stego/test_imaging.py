"""Image handling: what is accepted, what is refused (with a clear message), modes, PNG, thumbnails."""

import io
import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cloudp2p.errors import InvalidImage
from cloudp2p.stego import imaging

from .conftest import data_bytes


def png_bytes(img: Image.Image, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", **kw)
    return out.getvalue()


def jpeg_bytes(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG header for a huge canvas, with one tiny compressed row: a bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_and_jpeg_photos_load():
    for name, fmt, size in [("coffee.png", "PNG", (600, 400)), ("rocket.jpg", "JPEG", (640, 427))]:
        img = imaging.load_image(data_bytes(name))
        assert img.format == fmt and img.size == size


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_garbage_is_invalid_image_and_nothing_else(data):
    with pytest.raises(InvalidImage):
        imaging.load_image(data)


@given(st.integers(8, 2000), st.binary(max_size=16), st.booleans())
@settings(max_examples=100, deadline=None)
def test_truncated_or_corrupted_real_files_are_invalid_image(cut, junk, draft):
    for name in ("chelsea.png", "rocket.jpg"):
        data = data_bytes(name)
        with pytest.raises(InvalidImage):
            imaging.load_image(data[:cut] + junk, draft=draft)


@pytest.mark.parametrize("draft", [False, True])
@pytest.mark.parametrize("name", ["chelsea.png", "rocket.jpg"])
def test_a_truncated_file_is_called_truncated(name, draft):
    data = data_bytes(name)
    # A JPEG cut just before its end: its last rows are missing, even at 1/8 scale.
    for cut in (len(data) * 2 // 3, len(data) - 10 if name.endswith(".jpg") else 100):
        with pytest.raises(InvalidImage) as info:
            imaging.load_image(data[:cut], draft=draft)
        assert "truncated" in str(info.value) or "corrupt" in str(info.value)


def test_the_draft_check_reads_a_jpeg_at_an_eighth_and_a_png_in_full():
    assert imaging.load_image(data_bytes("rocket.jpg"), draft=True).size == (80, 54)
    assert imaging.load_image(data_bytes("chelsea.png"), draft=True).size == (451, 300)


def test_a_decompression_bomb_is_refused_before_decoding():
    bomb = png_declaring(100_000, 100_000)  # 10**10 pixels in a ~100-byte file
    assert len(bomb) < 200
    with pytest.raises(InvalidImage) as info:
        imaging.load_image(bomb)
    assert "decompression bomb" in str(info.value) or "limit" in str(info.value)
    # A deliberate, explicit limit: also per call.
    with pytest.raises(InvalidImage) as info:
        imaging.load_image(data_bytes("coffee.png"), max_pixels=1000)
    assert "240000 pixels" in str(info.value)
    assert Image.MAX_IMAGE_PIXELS == imaging.DEFAULT_MAX_PIXELS


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP"])
def test_other_formats_are_refused_naming_the_accepted_ones(fmt):
    out = io.BytesIO()
    Image.new("RGB", (20, 20), "red").save(out, format=fmt)
    with pytest.raises(InvalidImage) as info:
        imaging.load_image(out.getvalue())
    assert "PNG" in str(info.value) and "JPEG" in str(info.value)


def test_non_bytes_and_empty_are_refused():
    for bad in (None, "coffee.png", 42, b""):
        with pytest.raises(InvalidImage):
            imaging.load_image(bad)


def palette_image(transparent: bool) -> Image.Image:
    img = Image.new("P", (40, 30))
    img.putpalette([i % 256 for i in range(768)])
    img.putdata([i % 200 for i in range(40 * 30)])
    if transparent:
        img.info["transparency"] = 0
    return img


@pytest.mark.parametrize(
    "img,channels",
    [
        (Image.new("RGB", (40, 30), (10, 20, 30)), 3),
        (Image.new("RGBA", (40, 30), (10, 20, 30, 128)), 4),
        (Image.new("L", (40, 30), 77), 1),
        (Image.new("LA", (40, 30), (77, 200)), 2),
        (Image.new("1", (40, 30), 1), 1),
        (palette_image(False), 3),
        (palette_image(True), 4),
        (Image.new("I;16", (40, 30), 4000), 1),
        (Image.new("CMYK", (40, 30), (0, 0, 0, 0)), 3),
    ],
)
def test_every_mode_becomes_a_cover_array_and_survives_png(img, channels):
    if img.mode in ("CMYK",):
        data = jpeg_bytes(img)
    else:
        data = png_bytes(img)
    array = imaging.to_cover_array(imaging.load_image(data))
    assert array.dtype == np.uint8 and array.shape == (30, 40, channels)
    again = imaging.png_to_array(imaging.save_png(array))
    assert np.array_equal(again, array)


def test_palette_becomes_its_colours():
    img = palette_image(False)
    array = imaging.to_cover_array(imaging.load_image(png_bytes(img)))
    assert np.array_equal(array, np.asarray(img.convert("RGB")))


def test_greyscale_and_jpeg_samples_load_as_covers():
    assert imaging.png_to_array(data_bytes("camera.png")).shape == (512, 512, 1)
    assert imaging.png_to_array(data_bytes("rocket.jpg")).shape == (427, 640, 3)


def test_save_png_is_lossless_at_every_level_and_checks_the_level(coffee):
    for level in (0, 1, 6, 9):
        assert np.array_equal(imaging.png_to_array(imaging.save_png(coffee, compress_level=level)), coffee)
    assert len(imaging.save_png(coffee, compress_level=1)) > len(imaging.save_png(coffee, compress_level=9))
    with pytest.raises(ValueError):
        imaging.save_png(coffee, compress_level=10)
    with pytest.raises(TypeError):
        imaging.save_png(coffee.astype(np.float32))


@pytest.mark.parametrize("name", ["coffee.png", "rocket.jpg", "camera.png"])
def test_thumbnails_are_small_jpegs(name):
    thumb = imaging.thumbnail(data_bytes(name))
    img = Image.open(io.BytesIO(thumb))
    assert img.format == "JPEG" and max(img.size) <= 128 and len(thumb) <= 12 * 1024


def test_thumbnail_of_a_transparent_image_and_of_garbage():
    thumb = imaging.thumbnail(png_bytes(Image.new("RGBA", (600, 300), (255, 0, 0, 0))), max_side=64)
    assert max(Image.open(io.BytesIO(thumb)).size) == 64
    with pytest.raises(InvalidImage):
        imaging.thumbnail(b"not an image")


def test_psnr():
    a = np.zeros((10, 10, 3), np.uint8)
    assert imaging.psnr(a, a) == math.inf
    b = a.copy()
    b[0, 0, 0] = 1  # MSE = 1/300
    assert imaging.psnr(a, b) == pytest.approx(10 * math.log10(255**2 * 300))
    with pytest.raises(ValueError):
        imaging.psnr(a, a[:5])
