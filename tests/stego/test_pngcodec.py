"""The fast PNG writer writes standard PNG every decoder reads; its reader reads it back or steps aside."""

import io
import struct
import zlib

import numpy as np
import png as pypng  # an independent, pure-Python decoder
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from stegano import lsb

from cloudp2p.errors import InvalidImage
from cloudp2p.stego import engine, imaging, pngcodec

from .conftest import data_array

MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
LIMIT = 50_000_000


def pillow_array(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        arr = np.asarray(img)
        mode = img.mode
    return (arr[:, :, None] if arr.ndim == 2 else arr), mode


def pypng_array(data: bytes) -> np.ndarray:
    width, height, rows, info = pypng.Reader(bytes=data).read()
    planes = info["planes"]
    assert info["bitdepth"] == 8
    return np.vstack([np.asarray(r, dtype=np.uint8) for r in rows]).reshape(height, width, planes)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_of(width, height, colour, raw, *, depth=8, interlace=0, extra=b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return (
        pngcodec.SIGNATURE
        + chunk(b"IHDR", ihdr)
        + extra
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


arrays = st.integers(1, 4).flatmap(
    lambda c: hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 24), st.integers(1, 24)).map(lambda hw: (*hw, c)),
        elements=st.integers(0, 255),
    )
)


@given(arrays, st.sampled_from([None, *pngcodec.FILTERS]), st.integers(0, pngcodec.MAX_LEVEL))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_decoder_reads_what_it_writes(array, kind, level):
    data = pngcodec.encode(array, level=level, filter=kind)
    got, mode = pillow_array(data)
    assert mode == MODES[array.shape[2]]
    assert np.array_equal(got, array)
    assert np.array_equal(pypng_array(data), array)
    assert np.array_equal(pngcodec.decode(data, max_pixels=LIMIT), array)


@given(arrays)
@settings(max_examples=40, deadline=None)
def test_the_reader_reads_rows_with_mixed_filters(array):
    """Rows filtered None, Sub and Up in turn (other writers mix them): read back exactly."""
    height, width, channels = array.shape
    rows = array.reshape(height, width * channels)
    scan = np.vstack([pngcodec.filter_rows(rows, channels, k)[None] for k in pngcodec.FILTERS])
    mixed = np.array([scan[y % 3, y] for y in range(height)])
    data = png_of(width, height, pngcodec.COLOUR_TYPE[channels], mixed.tobytes())
    assert np.array_equal(pngcodec.decode(data, max_pixels=LIMIT), array)
    assert np.array_equal(pillow_array(data)[0], array)


def test_two_dimensional_arrays_are_greyscale_and_bad_arrays_are_refused():
    grey = np.arange(60, dtype=np.uint8).reshape(6, 10)
    assert np.array_equal(pngcodec.decode(pngcodec.encode(grey), max_pixels=LIMIT)[:, :, 0], grey)
    with pytest.raises(TypeError):
        pngcodec.encode(grey.astype(np.int16))
    with pytest.raises(ValueError):
        pngcodec.encode(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError):
        pngcodec.encode(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError):
        pngcodec.encode(grey, level=4)


def test_stegano_reads_its_message_through_the_fast_writer():
    cover = data_array("chelsea.png")
    stego = np.asarray(lsb.hide(Image.fromarray(cover), "a message stegano hid, kept by our PNG"))
    data = pngcodec.encode(stego)
    assert lsb.reveal(io.BytesIO(data)) == "a message stegano hid, kept by our PNG"


def test_a_stego_photo_round_trips_and_gets_the_up_filter():
    cover = data_array("coffee.png")
    payload = np.random.default_rng(3).bytes(engine.capacity_bits(cover.shape) // 16)
    stego = engine.embed(cover, payload, b"k", rng_seed=1)
    data = imaging.save_png(stego)
    assert data.startswith(pngcodec.SIGNATURE)
    rows = stego.reshape(stego.shape[0], -1)
    assert pngcodec.choose_filter(rows, 3) == pngcodec.FILTER_UP
    back = imaging.png_to_array(data)
    assert np.array_equal(back, stego)
    assert engine.extract(back, b"k", len(payload)) == payload
    # About the size of Pillow's level 1 (measured 1-3 % apart on photos; bench-stego prints both).
    assert len(data) < 1.15 * len(imaging.save_png(stego, writer="pillow"))


def test_the_filter_follows_the_image():
    rng = np.random.default_rng(0)
    # Each row a horizontal ramp from its own random start: Sub leaves 1s, Up leaves noise.
    ramps = ((np.arange(300)[None, :] + rng.integers(0, 256, (200, 1))) % 256).astype(np.uint8)
    assert pngcodec.choose_filter(ramps, 1) == pngcodec.FILTER_SUB
    # Rare isolated dots on black: any difference doubles them, None keeps them as they are.
    dots = (rng.random((200, 300)) < 0.01).astype(np.uint8)
    assert pngcodec.choose_filter(dots, 1) == pngcodec.FILTER_NONE
    assert pngcodec.choose_filter(np.zeros((1, 1), np.uint8), 1) == pngcodec.FILTER_NONE
    for image in (ramps, dots):
        assert np.array_equal(pngcodec.decode(pngcodec.encode(image), max_pixels=LIMIT)[:, :, 0], image)


def pypng_bytes(rows, width, height, **kw) -> bytes:
    out = io.BytesIO()
    pypng.Writer(width, height, **kw).write(out, rows)
    return out.getvalue()


def test_the_reader_leaves_other_pngs_to_pillow_and_png_to_array_still_reads_them():
    rng = np.random.default_rng(1)
    photo = data_array("coffee.png")
    rgb = rng.integers(0, 256, (5, 4 * 3)).tolist()
    paeth = np.zeros((3, 1 + 12), np.uint8)
    paeth[:, 0] = 4
    paeth[:, 1:] = rng.integers(0, 256, (3, 12))
    others = {
        "16-bit grey": pypng_bytes(
            rng.integers(0, 65536, (3, 4)).tolist(), 4, 3, greyscale=True, bitdepth=16
        ),
        "interlaced": pypng_bytes(rgb, 4, 5, greyscale=False, interlace=True),
        "palette": pypng_bytes([[0, 1, 2, 1]] * 3, 4, 3, palette=[(0, 0, 0), (255, 0, 0), (0, 0, 255)]),
        "paeth rows": png_of(4, 3, 2, paeth.tobytes()),
    }
    for name, data in others.items():
        assert pngcodec.decode(data, max_pixels=LIMIT) is None, name
        array = imaging.png_to_array(data)
        assert array.dtype == np.uint8 and array.shape[:2] == pillow_array(data)[0].shape[:2], name
    assert np.array_equal(
        imaging.png_to_array(others["interlaced"]), np.array(rgb, np.uint8).reshape(5, 4, 3)
    )
    out = io.BytesIO()
    Image.fromarray(photo).save(out, "PNG", compress_level=6)  # Pillow's adaptive filters
    assert np.array_equal(imaging.png_to_array(out.getvalue()), photo)


def test_damaged_files_are_never_read_by_the_fast_path():
    good = pngcodec.encode(data_array("chelsea.png"))
    idat = good.index(b"IDAT")
    flipped = bytearray(good)
    flipped[idat + 40] ^= 0xFF  # the CRC no longer matches
    truncated = good[: len(good) // 2]
    huge = png_of(100_000, 100_000, 0, b"\x00" * 64)
    for data in (bytes(flipped), truncated, huge):
        assert pngcodec.decode(data, max_pixels=LIMIT) is None
        with pytest.raises(InvalidImage):
            imaging.png_to_array(data)
    # A zlib stream that inflates to far more than the header's 2x2: the fast path stops at the
    # promised size and steps aside; Pillow then decodes the 2x2 it promised and ignores the rest.
    body = zlib.compress(b"\x00" * 10_000_000)
    bomb = pngcodec.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
    bomb += chunk(b"IDAT", body) + chunk(b"IEND", b"")
    assert pngcodec.decode(bomb, max_pixels=LIMIT) is None
    assert imaging.png_to_array(bomb).shape == (2, 2, 1)


def test_a_png_over_the_pixel_limit_is_refused_before_inflating():
    data = pngcodec.encode(np.zeros((100, 100, 3), np.uint8))
    assert pngcodec.decode(data, max_pixels=9_999) is None
    with pytest.raises(InvalidImage):
        imaging.png_to_array(data, max_pixels=9_999)


def _recrc(data: bytearray) -> bytes:
    """Recompute every chunk's CRC, so that damage reaches the inflater and the unfilter."""
    at = 8
    while at + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, at)
        if at + 12 + length > len(data):
            break
        struct.pack_into(">I", data, at + 8 + length, zlib.crc32(data[at + 4 : at + 8 + length]))
        at += 12 + length
    return bytes(data)


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_mutated_files_with_good_crcs_give_pillows_answer_or_step_aside(data):
    base = pngcodec.encode(
        data_array("chelsea.png")[:20, :30], level=0, filter=data.draw(st.sampled_from([0, 1, 2]))
    )
    mutated = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(8, len(mutated) - 1))
        mutated[at] = data.draw(st.integers(0, 255))
    candidate = _recrc(mutated)
    array = pngcodec.decode(candidate, max_pixels=LIMIT)
    if array is not None:  # what the fast path reads, Pillow reads the same way
        assert np.array_equal(array, imaging.to_cover_array(imaging.load_image(candidate)))


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_random_bytes_never_raise_from_the_reader(blob):
    assert pngcodec.decode(pngcodec.SIGNATURE + blob, max_pixels=LIMIT) is None
    assert pngcodec.decode(blob, max_pixels=LIMIT) is None


def test_the_zlib_level_maps_to_isal_levels():
    assert [pngcodec.isal_level(z) for z in range(10)] == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    with pytest.raises(ValueError):
        pngcodec.isal_level(10)
