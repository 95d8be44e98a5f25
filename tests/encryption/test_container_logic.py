"""The container's logic on plain bytes (no image): seal, grant, view, rights updates, ledger.

Each test names the promise of issue 5 it checks.
"""

from __future__ import annotations

import os

import pytest

from cloudp2p.encryption import container as c
from cloudp2p.encryption import format as fmt
from cloudp2p.encryption.errors import (
    CorruptContainerError,
    NotAContainerError,
    RightsForgedError,
    RightsMismatchError,
    RightsOutdatedError,
    WrongKeyError,
)
from cloudp2p.encryption.ledger import Ledger
from cloudp2p.encryption.rights import Rights, SignedRights

SECRET = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)  # the logic layer does not parse the image


def sealed_carrier(secret: bytes = SECRET, spare: int = 100) -> tuple[fmt.BytesCarrier, c.Sealed]:
    compressed = fmt.compress_secret(secret)
    carrier = fmt.BytesCarrier(bytearray(os.urandom(fmt.needed_bytes(len(compressed)) + spare)))
    return carrier, c.seal_carrier(carrier, compressed)


def copy(carrier: fmt.BytesCarrier) -> fmt.BytesCarrier:
    return fmt.BytesCarrier(bytearray(carrier.buffer))


def granted(owner, viewer, views=3, version=1, secret=SECRET):
    carrier, sealed = sealed_carrier(secret)
    mine = copy(carrier)
    c.grant_carrier(
        carrier,
        sealed.content_key,
        owner_ed25519=owner.ed25519,
        owner_id=owner.id,
        viewer_id=viewer.id,
        viewer_x25519_pub=viewer.pub.x25519,
        views=views,
        version=version,
    )
    return carrier, sealed, mine


def as_viewer(owner, viewer, ledger):
    return c.Viewer(viewer.x25519, viewer.id, owner.id, owner.pub.ed25519, ledger)


def view(carrier, owner, viewer, ledger):
    return c.view_carrier(carrier, as_viewer(owner, viewer, ledger))


def apply(carrier, blob, owner, viewer, ledger):
    return c.apply_rights_carrier(carrier, blob, as_viewer(owner, viewer, ledger))


def test_owner_opens_own_copy_with_content_key():
    carrier, sealed = sealed_carrier()
    own = c.open_own_carrier(carrier, sealed.content_key)
    assert own.image == SECRET
    assert own.image_id == sealed.image_id and len(sealed.image_id) == 36
    assert own.payload_hash == sealed.payload_hash


def test_compressible_secret_round_trips_compressed():
    secret = b"\x89PNG" + bytes(50_000)
    carrier, sealed = sealed_carrier(secret)
    assert carrier.capacity < 10_000  # really stored compressed
    assert c.open_own_carrier(carrier, sealed.content_key).image == secret


def test_wrong_content_key_is_refused():
    carrier, _ = sealed_carrier()
    with pytest.raises(WrongKeyError):
        c.open_own_carrier(carrier, os.urandom(32))


def test_random_bytes_are_not_a_container():
    with pytest.raises(NotAContainerError):
        c.open_own_carrier(fmt.BytesCarrier(bytearray(os.urandom(5000))), os.urandom(32))
    with pytest.raises(NotAContainerError):
        c.open_own_carrier(fmt.BytesCarrier(bytearray(10)), os.urandom(32))


def test_promise2_only_the_intended_viewer_can_open(alice, bob, carol, tmp_path):
    carrier, sealed, mine = granted(alice, bob)
    image, status, _ = view(carrier, alice, bob, Ledger(tmp_path / "b"))
    assert image == SECRET and status.views_left == 2
    # Carol has the file but her key unwraps nothing; nor can anyone open the owner's copy.
    with pytest.raises(WrongKeyError):
        view(copy(carrier), alice, carol, Ledger(tmp_path / "c"))
    with pytest.raises(WrongKeyError):
        view(mine, alice, bob, Ledger(tmp_path / "b2"))
    # The hidden stream holds no plaintext of the secret.
    assert SECRET[8:40] not in bytes(carrier.buffer)


def test_promise3_edited_count_is_refused(alice, bob, bob_ledger):
    carrier, sealed, _ = granted(alice, bob, views=1)
    # Bob can unwrap his own key, so he can re-wrap anything: edit the count, keep the signature.
    header = fmt.read_header(carrier)
    key, signed = fmt.unwrap(carrier.read(fmt.WRAP_START, fmt.WRAP_SIZE), bob.x25519, header.image_id)
    r = signed.rights
    forged = SignedRights(
        Rights(r.owner_id, r.viewer_id, r.image_id, 1000, r.version, r.payload_hash, r.issued_at_ms),
        signed.signature,
    )
    carrier.write(fmt.WRAP_START, fmt.wrap(key, forged, bob.pub.x25519, header.image_id))
    with pytest.raises(RightsForgedError):
        view(carrier, alice, bob, bob_ledger)
    # Re-signing with his own key does not help: the check uses the owner's registered key.
    mine = Rights(r.owner_id, r.viewer_id, r.image_id, 1000, r.version, r.payload_hash).sign(bob.ed25519)
    carrier.write(fmt.WRAP_START, fmt.wrap(key, mine, bob.pub.x25519, header.image_id))
    with pytest.raises(RightsForgedError):
        view(carrier, alice, bob, bob_ledger)
    assert bob_ledger.entries() == {}


def test_promise3_rights_from_another_image_are_refused(alice, bob, bob_ledger):
    a, sealed_a, _ = granted(alice, bob, views=1)
    b, sealed_b, _ = granted(alice, bob, views=50)
    rights_b = fmt.unwrap(b.read(fmt.WRAP_START, fmt.WRAP_SIZE), bob.x25519, fmt.read_header(b).image_id)[1]
    header_a = fmt.read_header(a)
    a.write(fmt.WRAP_START, fmt.wrap(sealed_a.content_key, rights_b, bob.pub.x25519, header_a.image_id))
    with pytest.raises(RightsMismatchError, match="image"):
        view(a, alice, bob, bob_ledger)


def test_promise3_rights_for_another_viewer_or_owner_are_refused(alice, bob, carol, tmp_path):
    carrier, _, _ = granted(alice, carol)  # granted to carol...
    header = fmt.read_header(carrier)
    key, signed = fmt.unwrap(carrier.read(fmt.WRAP_START, fmt.WRAP_SIZE), carol.x25519, header.image_id)
    carrier.write(fmt.WRAP_START, fmt.wrap(key, signed, bob.pub.x25519, header.image_id))  # ...handed to bob
    with pytest.raises(RightsMismatchError, match="viewer"):
        view(carrier, alice, bob, Ledger(tmp_path / "b"))
    carrier2, _, _ = granted(alice, bob)
    impostor = c.Viewer(bob.x25519, bob.id, "carol", alice.pub.ed25519, Ledger(tmp_path / "b2"))
    with pytest.raises(RightsMismatchError, match="owner"):  # carol's key registered under alice's name
        c.view_carrier(carrier2, impostor)


def test_promise4_views_count_down_then_the_cover(alice, bob, bob_ledger):
    carrier, _, _ = granted(alice, bob, views=2)
    seen = [view(carrier, alice, bob, bob_ledger) for _ in range(3)]
    assert [(img is not None, st.views_left, changed) for img, st, changed in seen] == [
        (True, 1, True),
        (True, 0, True),
        (False, 0, False),
    ]
    assert bob_ledger.get(seen[0][1].image_id).views_used == 2
    # The counter in the image says 2 as well: a fresh ledger (another device) sees none left.
    _, st, _ = view(carrier, alice, bob, Ledger(str(bob_ledger.path) + ".other"))
    assert st.views_left == 0 and st.views_used == 2


def test_promise4_restoring_an_older_copy_does_not_bring_views_back(alice, bob, bob_ledger):
    carrier, _, _ = granted(alice, bob, views=2)
    backup = copy(carrier)
    view(carrier, alice, bob, bob_ledger)
    view(carrier, alice, bob, bob_ledger)
    image, st, _ = view(backup, alice, bob, bob_ledger)
    assert image is None and st.views_left == 0


def test_promise4_tampered_counter_is_refused(alice, bob, bob_ledger):
    carrier, _, _ = granted(alice, bob, views=2)
    carrier.buffer[fmt.COUNTER_START + 20] ^= 0x01
    with pytest.raises(CorruptContainerError, match="views-used"):
        view(carrier, alice, bob, bob_ledger)


def test_promise5_raise_lower_revoke_and_no_rollback(alice, bob, bob_ledger):
    carrier, sealed, _ = granted(alice, bob, views=1)

    def rights(views, version):
        return c.sign_rights(
            owner_ed25519=alice.ed25519,
            owner_id=alice.id,
            viewer_id=bob.id,
            image_id=sealed.image_id,
            payload_hash=sealed.payload_hash,
            views=views,
            version=version,
        )

    assert view(carrier, alice, bob, bob_ledger)[1].views_left == 0
    assert apply(carrier, rights(4, 2), alice, bob, bob_ledger).views_left == 3  # raised
    v2_file = copy(carrier)
    assert view(carrier, alice, bob, bob_ledger)[1].views_left == 2
    assert apply(carrier, rights(2, 3), alice, bob, bob_ledger).views_left == 0  # lowered below use
    with pytest.raises(RightsOutdatedError):
        apply(carrier, rights(100, 2), alice, bob, bob_ledger)  # an older version never wins
    with pytest.raises(RightsOutdatedError):
        apply(carrier, rights(100, 3), alice, bob, bob_ledger)  # nor the same version again
    # The file with version 2 (4 views) put back: the ledger remembers version 3.
    image, st, changed = view(v2_file, alice, bob, bob_ledger)
    assert image is None and st.rights.version == 3 and st.views_left == 0 and changed
    assert (
        fmt.unwrap(
            v2_file.read(fmt.WRAP_START, fmt.WRAP_SIZE), bob.x25519, c.image_id_bytes(sealed.image_id)
        )[1].rights.version
        == 3
    )  # and the file was brought up to date
    assert apply(carrier, rights(10, 4), alice, bob, bob_ledger).views_left == 8
    assert apply(carrier, rights(0, 5), alice, bob, bob_ledger).views_left == 0  # revoked
    assert view(carrier, alice, bob, bob_ledger)[0] is None


def test_promise5_update_signed_by_someone_else_is_refused(alice, bob, carol, bob_ledger):
    carrier, sealed, _ = granted(alice, bob, views=1)
    blob = c.sign_rights(
        owner_ed25519=carol.ed25519,
        owner_id=alice.id,
        viewer_id=bob.id,
        image_id=sealed.image_id,
        payload_hash=sealed.payload_hash,
        views=9,
        version=2,
    )
    with pytest.raises(RightsForgedError):
        apply(carrier, blob, alice, bob, bob_ledger)
    assert bob_ledger.entries() == {}


def test_peek_reveals_owner_to_the_viewer_only(alice, bob, carol):
    carrier, sealed, _ = granted(alice, bob, views=7, version=3)
    env = c.peek_carrier(carrier, bob.x25519)
    assert (env.owner_id, env.viewer_id, env.views, env.version, env.image_id) == (
        "alice",
        "bob",
        7,
        3,
        sealed.image_id,
    )
    with pytest.raises(WrongKeyError):
        c.peek_carrier(carrier, carol.x25519)


def test_payload_swapped_under_valid_rights_is_refused(alice, bob, bob_ledger):
    """Rights bind the ciphertext hash: another payload under the same key and id is refused."""
    carrier, sealed, _ = granted(alice, bob, views=3)
    header = fmt.read_header(carrier)
    other = fmt.compress_secret(b"\x89PNG" + os.urandom(len(SECRET) - 4))
    # Same image id, same key, same length: only someone holding the content key can do this.
    new_header, ciphertext = fmt.encrypt_payload(sealed.content_key, other, header.image_id)
    if new_header.payload_len == header.payload_len:
        carrier.write(0, new_header.encode())
        carrier.write(fmt.PAYLOAD_START, ciphertext)
        with pytest.raises(RightsMismatchError, match="payload"):
            view(carrier, alice, bob, bob_ledger)
    else:  # pragma: no cover - compress_secret never shrinks random bytes
        pytest.fail("test set-up: payload lengths differ")


def test_damaged_payload_is_refused_as_corrupt(alice, bob, bob_ledger):
    carrier, _, _ = granted(alice, bob, views=3)
    carrier.buffer[fmt.PAYLOAD_START + 100] ^= 0x80
    with pytest.raises(CorruptContainerError):
        view(carrier, alice, bob, bob_ledger)
    assert bob_ledger.entries() == {}  # a failed view uses nothing
