"""Enforced copies (issue 17) on plain bytes: the copy holds share A only, so a modified client
with the viewer's own key opens nothing; with share B (released by the cloud) a view works
and is also counted locally (second check)."""

from __future__ import annotations

import os

import pytest

from cloudp2p.encryption import container as c
from cloudp2p.encryption import format as fmt
from cloudp2p.encryption import keywrap
from cloudp2p.encryption.errors import ShareRequiredError, WrongKeyError
from tests.encryption.test_container_logic import SECRET, as_viewer, copy, sealed_carrier


def enforced(owner, viewer, views=2):
    carrier, sealed = sealed_carrier()
    share_a, share_b = fmt.split_key(sealed.content_key)
    c.grant_carrier(
        carrier,
        sealed.content_key,
        owner_ed25519=owner.ed25519,
        owner_id=owner.id,
        viewer_id=viewer.id,
        viewer_x25519_pub=viewer.pub.x25519,
        views=views,
        share_a=share_a,
    )
    return carrier, sealed, share_b


def bypass(carrier, viewer_key) -> bytes:
    """The modified client of the issue: unwrap with one's own key, decrypt, ignore every count."""
    header = fmt.read_header(carrier)
    key, _signed = fmt.unwrap(carrier.read(fmt.WRAP_START, fmt.WRAP_SIZE), viewer_key, header.image_id)
    return fmt.decrypt_payload(key, header, fmt.read_payload(carrier, header))


def test_split_shares_join_to_the_key_and_each_alone_is_not_it():
    key = os.urandom(32)
    a, b = fmt.split_key(key)
    assert fmt.join_key(a, b) == key and key not in (a, b)
    assert fmt.split_key(key)[0] != a  # a fresh split each time


def test_the_bypass_opens_an_offline_copy_but_not_an_enforced_one(alice, bob):
    offline, _sealed = sealed_carrier()
    c.grant_carrier(
        offline,
        _sealed.content_key,
        owner_ed25519=alice.ed25519,
        owner_id=alice.id,
        viewer_id=bob.id,
        viewer_x25519_pub=bob.pub.x25519,
        views=1,
    )
    assert fmt.decompress_secret(bypass(offline, bob.x25519), limit=10**6) == SECRET  # today's hole
    carrier, _, _ = enforced(alice, bob)
    with pytest.raises(WrongKeyError):
        bypass(carrier, bob.x25519)


def test_a_view_needs_the_share_and_counts_locally_too(alice, bob, bob_ledger):
    carrier, sealed, share_b = enforced(alice, bob, views=2)
    viewer = as_viewer(alice, bob, bob_ledger)
    assert c.peek_carrier(carrier, bob.x25519).enforced
    with pytest.raises(ShareRequiredError):
        c.view_carrier(copy(carrier), viewer)
    assert c.status_carrier(carrier, viewer).views_left == 2  # a refused view used none
    with pytest.raises(WrongKeyError):
        c.view_carrier(copy(carrier), viewer, os.urandom(32))
    image, status, changed = c.view_carrier(carrier, viewer, share_b)
    assert image == SECRET and status.views_left == 1 and changed
    # rights updates keep the copy enforced (the wrap is rewritten with the flag)
    blob = c.sign_rights(
        owner_ed25519=alice.ed25519,
        owner_id=alice.id,
        viewer_id=bob.id,
        image_id=sealed.image_id,
        payload_hash=sealed.payload_hash,
        views=5,
        version=2,
    )
    assert c.apply_rights_carrier(carrier, blob, viewer).views_left == 4
    assert c.peek_carrier(carrier, bob.x25519).enforced
    with pytest.raises(WrongKeyError):
        bypass(carrier, bob.x25519)


def test_the_sealed_share_opens_only_for_its_viewer_and_image(alice, bob):
    share = os.urandom(32)
    sealed = keywrap.seal_share(share, bob.pub.x25519, "11111111-1111-1111-1111-111111111111")
    assert len(sealed) == keywrap.SEALED_SIZE == 92
    assert keywrap.open_share(sealed, bob.x25519, "11111111-1111-1111-1111-111111111111") == share
    with pytest.raises(WrongKeyError):
        keywrap.open_share(sealed, alice.x25519, "11111111-1111-1111-1111-111111111111")
    with pytest.raises(WrongKeyError):
        keywrap.open_share(sealed, bob.x25519, "22222222-2222-2222-2222-222222222222")
