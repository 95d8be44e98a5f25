"""The container on real cover arrays through the stego engine (promise 2 against stegano too)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image
from stegano import lsb

from cloudp2p.encryption import container as c
from cloudp2p.encryption import format as fmt
from cloudp2p.encryption.errors import NotAContainerError, WrongKeyError
from cloudp2p.encryption.ledger import Ledger


def secret_png(size=(40, 30), seed=7) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def cover(shape=(160, 160, 3), seed=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A smooth-ish picture with noise, like a photo.
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    base = (x * 255 // shape[1] + y * 64 // shape[0]) % 256
    arr = np.repeat(base[..., None], shape[2], axis=2) + rng.integers(-8, 9, shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


SECRET = secret_png()


def sealed_image(arr=None):
    carrier = c.ImageCarrier(cover() if arr is None else arr)
    sealed = c.seal_carrier(carrier, fmt.compress_secret(SECRET))
    return carrier, sealed


def test_round_trip_through_the_engine_and_rgba():
    for arr in (cover(), cover((160, 160, 4)), cover((200, 200, 1))[..., 0]):
        carrier, sealed = sealed_image(arr)
        reread = c.ImageCarrier(carrier.array.copy())
        assert c.open_own_carrier(reread, sealed.content_key).image == SECRET
        diff = carrier.array.astype(int) - arr.astype(int)
        assert np.abs(diff).max() == 1  # LSB matching: every change is +-1


def test_rewriting_rights_and_counter_leaves_the_payload_intact(alice, bob, tmp_path):
    carrier, sealed = sealed_image()
    c.grant_carrier(
        carrier,
        sealed.content_key,
        owner_ed25519=alice.ed25519,
        owner_id=alice.id,
        viewer_id=bob.id,
        viewer_x25519_pub=bob.pub.x25519,
        views=2,
    )
    ledger = Ledger(tmp_path / "l.json")
    viewer = c.Viewer(bob.x25519, bob.id, alice.id, alice.pub.ed25519, ledger)
    for left in (1, 0):
        image, status, _ = c.view_carrier(carrier, viewer)
        assert image == SECRET and status.views_left == left
    assert c.view_carrier(carrier, viewer)[0] is None
    assert c.open_own_carrier(carrier, sealed.content_key).image == SECRET


def test_promise2_other_keys_and_stegano_get_nothing_usable(alice, bob, carol, tmp_path):
    carrier, sealed = sealed_image()
    c.grant_carrier(
        carrier,
        sealed.content_key,
        owner_ed25519=alice.ed25519,
        owner_id=alice.id,
        viewer_id=bob.id,
        viewer_x25519_pub=bob.pub.x25519,
        views=2,
    )
    # This project's code under another user's keys: refused.
    with pytest.raises(WrongKeyError):
        c.peek_carrier(carrier, carol.x25519)
    # This project's extractor with the public position key: only ciphertext; the secret is not there.
    hidden = carrier.read(0, fmt.PAYLOAD_START + fmt.read_header(carrier).payload_len)
    assert SECRET[16:64] not in hidden and fmt.compress_secret(SECRET)[1:40] not in hidden
    # Stegano's LSB reader (its own format: sequential LSBs of R, G, B) finds no message.
    buf = io.BytesIO()
    Image.fromarray(carrier.array).save(buf, "PNG")
    buf.seek(0)
    try:
        message = lsb.reveal(buf)
    except Exception:  # stegano raises when it finds no message header: nothing usable
        message = None
    if message is not None:
        assert SECRET[16:64].decode("latin-1") not in message
        with pytest.raises(Exception):  # noqa: B017 - whatever it returns is not an image
            Image.open(io.BytesIO(message.encode("latin-1"))).load()
    # The raw sequential LSB stream (what naive tools dump) holds no plaintext either.
    lsbs = np.packbits(carrier.array.reshape(-1) & 1).tobytes()
    assert SECRET[16:64] not in lsbs


def test_hidden_bytes_look_random():
    """Only encrypted or compressed bytes are hidden: no byte value dominates the stream."""
    carrier, _ = sealed_image()
    hidden = carrier.read(0, fmt.PAYLOAD_START + fmt.read_header(carrier).payload_len)
    counts = np.bincount(np.frombuffer(hidden, dtype=np.uint8), minlength=256)
    expected = len(hidden) / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 400  # 255 degrees of freedom: ~255 +- 23 for random bytes; text scores thousands
    # Base64 would use 65 byte values; text under 100.
    assert np.count_nonzero(counts) > 200


def test_a_plain_cover_is_not_a_container():
    with pytest.raises(NotAContainerError):
        c.open_own_carrier(c.ImageCarrier(cover()), os.urandom(32))
    with pytest.raises(NotAContainerError):
        c.open_own_carrier(c.ImageCarrier(cover((8, 8, 3))), os.urandom(32))


def test_lsb_psnr_matches_the_general_formula():
    from cloudp2p.stego import engine, imaging

    arr = cover()
    stego = engine.embed(arr, os.urandom(2000), b"k")
    assert c.lsb_psnr(arr, stego) == pytest.approx(imaging.psnr(arr, stego), rel=1e-12)
    bigger = arr.copy()
    bigger[0, 0, 0] ^= 0x80  # not an LSB change: the general formula is used
    assert c.lsb_psnr(arr, bigger) == pytest.approx(imaging.psnr(arr, bigger), rel=1e-12)
    assert c.lsb_psnr(arr, arr) == float("inf")


def test_already_compressed_secrets_are_stored_without_a_zlib_pass():
    jpeg_like = os.urandom(200_000)
    assert fmt.compress_secret(jpeg_like)[:1] == bytes([fmt.CODEC_STORED])
    raw = bytes(200_000)
    assert fmt.compress_secret(raw)[:1] == bytes([fmt.CODEC_ZLIB])
