"""The public API on PNG bytes, as the client and the server use it (stego imaging and covers)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cloudp2p.encryption import container as c
from cloudp2p.encryption.errors import EncryptionError, NotAContainerError, RightsOutdatedError, WrongKeyError
from cloudp2p.encryption.ledger import Ledger
from cloudp2p.errors import InvalidImage
from cloudp2p.stego.capacity import CapacityError


def photo(size=(64, 48), seed=1, fmt="PNG") -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    arr = np.stack([(x * 4) % 256, (y * 5) % 256, (x + y) % 256], axis=2) + rng.integers(
        0, 20, (size[1], size[0], 3)
    )
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


def cover_array(h=200, w=200, c_=3, seed=2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(20, 236, (h, w, c_), dtype=np.uint8)


SECRET = photo()


@pytest.fixture(scope="module")
def sealed():
    return c.seal(SECRET, cover_array(), cover_description="test cover")


def as_viewer(owner, viewer, ledger):
    return c.Viewer(viewer.x25519, viewer.id, owner.id, owner.pub.ed25519, ledger)


def test_seal_result_looks_like_the_cover_and_owner_opens_it(sealed):
    assert sealed.png.startswith(b"\x89PNG")
    result = np.asarray(Image.open(io.BytesIO(sealed.png)))
    assert result.shape == (200, 200, 3)
    assert sealed.psnr >= 50.0  # promise 1, on this payload
    assert c.open_own(sealed.png, sealed.content_key).image == SECRET
    assert sealed.cover == "test cover" and "content_key" not in repr(sealed)


def test_full_share_flow_on_png(sealed, alice, bob, tmp_path):
    copy = c.grant(
        sealed.png,
        sealed.content_key,
        owner_ed25519=alice.ed25519,
        owner_id=alice.id,
        viewer_id=bob.id,
        viewer_x25519_pub=bob.pub.x25519,
        views=1,
    )
    env = c.peek(copy, bob.x25519)
    assert env.owner_id == alice.id and env.image_id == sealed.image_id
    ledger = Ledger(tmp_path / "ledger.json")
    v = as_viewer(alice, bob, ledger)
    assert c.status(copy, v).views_left == 1
    first = c.open_for_view(copy, v)
    assert first.image == SECRET and first.views_left == 0 and first.consumed
    second = c.open_for_view(first.png, v)
    assert second.image is None and second.cover_png == first.png and not second.consumed
    # The owner raises the grant with a standalone signed blob, applied by the viewer's client.
    blob = c.sign_rights(
        owner_ed25519=alice.ed25519,
        owner_id=alice.id,
        viewer_id=bob.id,
        image_id=sealed.image_id,
        payload_hash=sealed.payload_hash,
        views=3,
        version=2,
    )
    updated, st = c.apply_rights(first.png, blob, v)
    assert st.views_left == 2
    with pytest.raises(RightsOutdatedError):
        c.apply_rights(updated, blob, v)
    third = c.open_for_view(updated, v)
    assert third.image == SECRET and third.views_left == 1
    # The old file (version 1, before any view) put back: still the ledger's count and version.
    back = c.open_for_view(copy, v)
    assert back.image == SECRET and back.views_left == 0 and back.status.rights.version == 2


def test_rgba_and_greyscale_covers_round_trip():
    for arr in (cover_array(c_=4), cover_array(300, 300, c_=1)[..., 0]):
        sealed = c.seal(SECRET, arr)
        assert c.open_own(sealed.png, sealed.content_key).image == SECRET


def test_png_readers_refuse_bad_files(sealed, bob):
    with pytest.raises(InvalidImage):
        c.open_own(b"not an image", sealed.content_key)
    with pytest.raises(InvalidImage):
        c.open_own(sealed.png[: len(sealed.png) // 2], sealed.content_key)
    # A lossy re-encode destroys the hidden stream: not a container any more.
    buf = io.BytesIO()
    Image.open(io.BytesIO(sealed.png)).save(buf, "JPEG", quality=95)
    with pytest.raises(NotAContainerError):
        c.open_own(buf.getvalue(), sealed.content_key)
    with pytest.raises(WrongKeyError):
        c.peek(sealed.png, bob.x25519)  # the owner's copy carries no key for anyone


def test_seal_refuses_non_images_and_small_covers():
    with pytest.raises(InvalidImage):
        c.seal(b"GIF89a not really", cover_array())
    with pytest.raises(CapacityError, match="at least"):  # says how large a cover is needed
        c.seal(photo((300, 300)), cover_array(40, 40))


def test_seal_job_uses_library_or_supplied_cover():
    sealed = c.seal_job(SECRET, None)
    assert "default cover" in sealed.cover and sealed.psnr >= 50
    assert c.open_own(sealed.png, sealed.content_key).image == SECRET
    small_cover = photo((30, 30), seed=5)
    sealed = c.seal_job(SECRET, small_cover)
    assert "scaled" in sealed.cover
    assert c.open_own(sealed.png, sealed.content_key).image == SECRET
    jpeg_secret = photo(fmt="JPEG")
    sealed = c.seal_job(jpeg_secret, photo((200, 200), seed=9, fmt="JPEG"))
    assert c.open_own(sealed.png, sealed.content_key).image == jpeg_secret


def test_every_png_reader_raises_only_project_errors(sealed, alice, bob, tmp_path):
    garbage = [b"", b"\x89PNG\r\n\x1a\n", sealed.png[:100], photo()]
    v = as_viewer(alice, bob, Ledger(tmp_path / "l.json"))
    for data in garbage:
        for fn in (
            lambda d: c.open_own(d, sealed.content_key),
            lambda d: c.peek(d, bob.x25519),
            lambda d: c.open_for_view(d, v),
            lambda d: c.status(d, v),
        ):
            with pytest.raises((EncryptionError, InvalidImage)):
                fn(data)
