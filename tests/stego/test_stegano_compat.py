"""stegano is the reference: our numpy reader reads what stegano 3.0's lsb.hide wrote, byte for byte."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from stegano import lsb
from stegano.lsb import generators

from cloudp2p.stego import engine, stegano_compat

from .conftest import data_array


def hide(array: np.ndarray, message: str, **kw) -> np.ndarray:
    return np.asarray(lsb.hide(Image.fromarray(array), message, **kw))


@given(st.text(min_size=1, max_size=300))
@settings(max_examples=40, deadline=None)
def test_reads_any_text_stegano_hid(message):
    cover = data_array("chelsea.png")[:60, :80]
    stego = hide(cover, message)
    assert stegano_compat.reveal(stego) == message
    assert stegano_compat.reveal_bytes(stego) == message.encode("utf-8")
    assert stegano_compat.reveal(Image.fromarray(stego)) == lsb.reveal(Image.fromarray(stego))


def test_long_messages_rgba_images_shift_and_utf32():
    cover = data_array("coffee.png", "RGBA")
    message = os.urandom(30_000).hex()
    stego = hide(cover, message)
    assert np.array_equal(stego[..., 3], cover[..., 3])
    assert stegano_compat.reveal(stego) == message
    shifted = hide(cover, "shifted message", shift=1234)
    assert stegano_compat.reveal(shifted, shift=1234) == "shifted message"
    wide = hide(cover, "wide é", encoding="UTF-32LE")
    assert stegano_compat.reveal(wide, encoding="UTF-32LE") == "wide é"


def test_a_generator_order_is_followed():
    cover = data_array("chelsea.png")
    gen = generators.eratosthenes()
    order = [next(gen) for _ in range(2000)]
    stego = hide(cover, "primes only", generator=generators.eratosthenes())
    assert stegano_compat.reveal(stego, pixel_order=order) == "primes only"


def test_images_without_a_message_are_refused():
    with pytest.raises(stegano_compat.NoSteganoMessageError):
        stegano_compat.reveal(data_array("coffee.png"))
    with pytest.raises(stegano_compat.NoSteganoMessageError):
        stegano_compat.reveal(np.zeros((10, 10, 3), np.uint8))


def test_stegano_finds_nothing_in_this_projects_embedding():
    """Where the formats meet: the project's stego image carries no stegano message."""
    cover = data_array("coffee.png")
    payload = np.random.default_rng(0).bytes(engine.capacity_bits(cover.shape) // 8)
    stego = engine.embed(cover, payload, b"k", rng_seed=b"fixed")
    with pytest.raises(stegano_compat.NoSteganoMessageError):
        stegano_compat.reveal(stego)
    with pytest.raises(Exception):  # noqa: B017 - stegano raises IndexError / ValueError as it likes
        lsb.reveal(Image.fromarray(stego))
