"""The engine: round trips, regions, LSB matching, capacity, and promise 1 (PSNR >= 50 dB)."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cloudp2p.errors import CloudP2PError
from cloudp2p.stego import engine, imaging
from cloudp2p.stego.capacity import CapacityError, capacity_bits, pixels_needed
from cloudp2p.stego.positions import positions


def colour_flat(array):
    if array.ndim == 3 and array.shape[2] in (2, 4):
        array = array[..., : array.shape[2] - 1]
    return np.ascontiguousarray(array).reshape(-1)


cover_shapes = st.one_of(
    st.tuples(st.integers(8, 60), st.integers(8, 60)),
    st.tuples(st.integers(8, 60), st.integers(8, 60), st.sampled_from([1, 2, 3, 4])),
)


@st.composite
def cover_and_region(draw):
    shape = draw(cover_shapes.filter(lambda s: capacity_bits(s) >= 8))
    cover = draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 255)))
    capacity = capacity_bits(shape) // 8
    start = draw(st.integers(0, capacity - 1))
    payload = draw(st.binary(min_size=0, max_size=capacity - start))
    key = draw(st.binary(min_size=1, max_size=32))
    return cover, payload, start, key


@given(cover_and_region())
@settings(max_examples=150, deadline=None)
def test_round_trip_for_any_payload_that_fits_any_start_any_key(case):
    cover, payload, start, key = case
    stego = engine.embed(cover, payload, key, start=start)
    assert stego.shape == cover.shape and stego.dtype == np.uint8
    assert engine.extract(stego, key, len(payload), start=start) == payload
    # +-1 at most, only at the region's positions, alpha never touched.
    diff = stego.astype(np.int16) - cover.astype(np.int16)
    assert np.abs(diff).max(initial=0) <= 1
    if cover.ndim == 3 and cover.shape[2] in (2, 4):
        assert np.array_equal(stego[..., -1], cover[..., -1])
    changed = np.flatnonzero(colour_flat(stego) != colour_flat(cover))
    allowed = positions(key, colour_flat(cover).size, 8 * start, 8 * len(payload))
    assert np.isin(changed, allowed).all()
    # The cover itself is never modified.
    assert stego is not cover


def both_paths_cover():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)


@pytest.mark.parametrize("start,size", [(0, 7168), (3, 5000), (1000, 100), (0, 30), (6968, 200)])
def test_the_word_path_and_the_bit_path_use_the_same_slots(start, size):
    cover = both_paths_cover()
    payload = os.urandom(size)
    stego = engine.embed(cover, payload, b"paths", start=start)
    pos = positions(b"paths", cover.size, 8 * start, 8 * size)
    assert np.packbits(stego.reshape(-1)[pos] & 1).tobytes() == payload
    # and extract reads it back whichever path it takes for a sub-range
    assert engine.extract(stego, b"paths", size, start=start) == payload
    assert engine.extract(stego, b"paths", 10, start=start + 5) == payload[5:15]


def test_rewriting_a_header_in_place_leaves_the_payload_alone(coffee):
    capacity = capacity_bits(coffee.shape) // 8
    header, body = os.urandom(200), os.urandom(capacity - 200)
    stego = engine.embed(coffee, header + body, b"container")
    again = engine.embed(stego, b"\x00" * 200, b"container", start=0)
    assert engine.extract(again, b"container", len(body), start=200) == body
    assert engine.extract(again, b"container", 200) == b"\x00" * 200
    touched = np.flatnonzero(again.reshape(-1) != stego.reshape(-1))
    assert np.isin(touched, positions(b"container", coffee.size, 0, 8 * 200)).all()


def test_another_key_reads_noise(coffee):
    payload = os.urandom(20_000)
    stego = engine.embed(coffee, payload, b"right key")
    assert engine.extract(stego, b"wrong key", len(payload)) != payload


def test_lsb_matching_goes_both_ways_and_clamps_at_0_and_255():
    rng = np.random.default_rng(1)
    cover = rng.integers(1, 255, (200, 200, 3), dtype=np.uint8)
    stego = engine.embed(cover, os.urandom(capacity_bits(cover.shape) // 8), b"k")
    diff = stego.astype(np.int16) - cover
    ups, downs = np.count_nonzero(diff == 1), np.count_nonzero(diff == -1)
    assert ups + downs > 0.4 * cover.size  # about half the samples need a change at full capacity
    assert abs(ups - downs) < 0.05 * (ups + downs)  # +1 and -1 equally often: not LSB replacement
    for value in (0, 255):
        flat = np.full((100, 100, 3), value, dtype=np.uint8)
        payload = os.urandom(capacity_bits(flat.shape) // 8)
        out = engine.embed(flat, payload, b"k")
        assert engine.extract(out, b"k", len(payload)) == payload
        assert set(np.unique(out).tolist()) <= {value, 1 if value == 0 else 254}


def test_rng_seed_makes_the_choices_reproducible(coffee):
    payload = os.urandom(50_000)
    a = engine.embed(coffee, payload, b"k", rng_seed=b"seed")
    b = engine.embed(coffee, payload, b"k", rng_seed=b"seed")
    c = engine.embed(coffee, payload, b"k", rng_seed=b"other")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_full_capacity_looks_like_the_cover(coffee, chelsea):
    """Promise 1: PSNR >= 50 dB against the cover at full capacity, and the PNG is lossless."""
    for cover in (coffee, chelsea):
        payload = os.urandom(capacity_bits(cover.shape) // 8)
        stego = engine.embed(cover, payload, b"k")
        assert imaging.psnr(cover, stego) >= 50.0
        again = imaging.png_to_array(imaging.save_png(stego))
        assert np.array_equal(again, stego)
        assert engine.extract(again, b"k", len(payload)) == payload


def test_a_payload_too_large_says_how_large_a_cover_is_needed(chelsea):
    capacity = capacity_bits(chelsea.shape) // 8
    with pytest.raises(CapacityError) as info:
        engine.embed(chelsea, b"x" * (capacity + 1), b"k")
    message = str(info.value)
    assert "too small" in message and str(pixels_needed(capacity + 1)) in message and "451x300" in message
    assert isinstance(info.value, CloudP2PError)
    with pytest.raises(CapacityError):
        engine.embed(chelsea, b"x" * 10, b"k", start=capacity - 5)
    with pytest.raises(CapacityError):
        engine.extract(chelsea, b"k", capacity + 1)
    # A cover smaller than one block holds nothing.
    assert capacity_bits((5, 5, 3)) == 0
    with pytest.raises(CapacityError):
        engine.embed(np.zeros((5, 5, 3), np.uint8), b"x", b"k")


def test_read_only_and_non_contiguous_covers_work(coffee):
    frozen = coffee.copy()
    frozen.flags.writeable = False
    for cover in (frozen, coffee[::2, ::2], np.asfortranarray(coffee)):
        for size in (20, capacity_bits(cover.shape) // 8):  # the bit path and the word path
            payload = os.urandom(size)
            stego = engine.embed(cover, payload, b"k")
            assert stego.flags.writeable and stego.shape == cover.shape
            stego.flags.writeable = False
            assert engine.extract(stego, b"k", size) == payload
    assert not frozen.flags.writeable and np.array_equal(frozen, coffee)


def test_empty_payload_is_a_copy():
    cover = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    out = engine.embed(cover, b"", b"k")
    assert np.array_equal(out, cover) and out is not cover
    assert engine.extract(cover, b"k", 0) == b""


@pytest.mark.parametrize(
    "array,key,error",
    [
        (np.zeros((64, 64, 3), np.float32), b"k", TypeError),
        (np.zeros((64, 64, 5), np.uint8), b"k", ValueError),
        (np.zeros((64,), np.uint8), b"k", ValueError),
        (np.zeros((64, 64, 3), np.uint8), b"", ValueError),
        ([[1, 2], [3, 4]], b"k", TypeError),
    ],
)
def test_bad_inputs_are_refused(array, key, error):
    with pytest.raises(error):
        engine.embed(array, b"x", key)
    with pytest.raises(error):
        engine.extract(array, key, 1)


def test_negative_start_or_length_is_refused():
    cover = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError):
        engine.embed(cover, b"x", b"k", start=-1)
    with pytest.raises(ValueError):
        engine.extract(cover, b"k", -1)
