"""Property tests for every codec: what is encoded decodes to the same; garbage gets our own error."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cloudp2p.encryption import container as c
from cloudp2p.encryption import format as fmt
from cloudp2p.encryption.errors import EncryptionError, RightsError
from cloudp2p.encryption.keys import KeyFormatError, PublicKeys, UserKeys
from cloudp2p.encryption.ledger import Ledger
from cloudp2p.encryption.rights import MAX_RIGHTS_SIZE, Rights, SignedRights

OWNER = Ed25519PrivateKey.generate()
OWNER_PUB = OWNER.public_key().public_bytes_raw()
VIEWER = X25519PrivateKey.generate()
VIEWER_PUB = VIEWER.public_key().public_bytes_raw()

user_ids = st.one_of(
    st.text(min_size=1, max_size=20).filter(lambda s: 1 <= len(s.encode("utf-8")) <= 64),
    st.integers(min_value=0, max_value=10**18),
)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
rights_st = st.builds(
    Rights,
    owner_id=user_ids,
    viewer_id=user_ids,
    image_id=st.binary(min_size=16, max_size=16),
    views=u32,
    version=u32,
    payload_hash=st.binary(min_size=32, max_size=32),
    issued_at_ms=st.integers(min_value=0, max_value=2**64 - 1),
)


@given(rights_st)
def test_rights_round_trip_and_verify(rights):
    signed = rights.sign(OWNER)
    blob = signed.to_bytes()
    assert len(blob) <= MAX_RIGHTS_SIZE
    back = SignedRights.from_bytes(blob)
    assert back == signed
    assert back.verify(OWNER_PUB) == rights
    assert rights.owner_id == str(rights.owner_id)  # ids are text


@given(rights_st, st.data())
def test_rights_any_bit_flip_is_refused(rights, data):
    blob = bytearray(rights.sign(OWNER).to_bytes())
    i = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    blob[i] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    with pytest.raises(RightsError):
        SignedRights.from_bytes(bytes(blob)).verify(OWNER_PUB)


@given(st.binary(max_size=400))
def test_rights_garbage_is_refused_with_our_error(blob):
    with pytest.raises(RightsError):
        SignedRights.from_bytes(blob).verify(OWNER_PUB)


@given(st.binary(min_size=16, max_size=16), st.integers(min_value=17, max_value=2**32 - 1))
def test_header_round_trip(image_id, length):
    header = fmt.Header(image_id=image_id, payload_nonce=os.urandom(12), payload_len=length)
    raw = header.encode()
    assert len(raw) == fmt.HEADER_SIZE
    assert fmt.Header.decode(raw) == header
    assert fmt.MAGIC not in raw  # masked: nothing constant is hidden
    assert header.encode() != raw  # a fresh salt each time


@given(st.binary(min_size=fmt.HEADER_SIZE, max_size=fmt.HEADER_SIZE))
def test_header_garbage_is_refused(raw):
    with pytest.raises(EncryptionError):
        fmt.Header.decode(raw)


@given(st.data())
def test_header_any_bit_flip_is_refused(data):
    raw = bytearray(
        fmt.Header(image_id=os.urandom(16), payload_nonce=os.urandom(12), payload_len=999).encode()
    )
    i = data.draw(st.integers(min_value=fmt.SALT_SIZE, max_value=len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    with pytest.raises(EncryptionError):
        fmt.Header.decode(bytes(raw))


@given(st.binary(min_size=1, max_size=5000))
def test_compression_round_trip(secret):
    packed = fmt.compress_secret(secret)
    assert fmt.decompress_secret(packed, limit=len(secret)) == secret


def test_decompression_bomb_is_refused():
    packed = fmt.compress_secret(bytes(10_000_000))
    with pytest.raises(EncryptionError, match="larger"):
        fmt.decompress_secret(packed, limit=1_000_000)


@given(rights_st)
def test_wrap_round_trip(rights):
    key = os.urandom(32)
    signed = rights.sign(OWNER)
    region = fmt.wrap(key, signed, VIEWER_PUB, rights.image_id)
    assert len(region) == fmt.WRAP_SIZE
    assert fmt.unwrap(region, VIEWER, rights.image_id) == (key, signed)


@given(st.binary(min_size=fmt.WRAP_SIZE, max_size=fmt.WRAP_SIZE))
def test_unwrap_garbage_is_refused(region):
    with pytest.raises(EncryptionError):
        fmt.unwrap(region, VIEWER, bytes(16))


@given(u32, u32, st.text(min_size=1, max_size=10))
def test_counter_round_trip(used, version, viewer):
    key, image_id = os.urandom(32), os.urandom(16)
    region = fmt.encode_counter(key, image_id, viewer, used, version)
    assert len(region) == fmt.COUNTER_SIZE
    assert fmt.decode_counter(region, key, image_id, viewer) == (used, version)
    with pytest.raises(EncryptionError):
        fmt.decode_counter(region, key, image_id, viewer + "x")


# -- the whole container: any corruption is refused with our errors, never anything else ---------------

_ALICE = UserKeys.generate()
_BOB = UserKeys.generate()


_SECRET = b"\x89PNG" + os.urandom(300)


def _granted():
    compressed = fmt.compress_secret(_SECRET)
    carrier = fmt.BytesCarrier(bytearray(os.urandom(fmt.needed_bytes(len(compressed)))))
    sealed = c.seal_carrier(carrier, compressed)
    c.grant_carrier(
        carrier,
        sealed.content_key,
        owner_ed25519=_ALICE.ed25519_private,
        owner_id="alice",
        viewer_id="bob",
        viewer_x25519_pub=_BOB.public.x25519,
        views=5,
    )
    return carrier, sealed


_CARRIER, _SEALED = _granted()


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_container_random_corruption_is_refused(tmp_path_factory, data):
    buf = bytearray(_CARRIER.buffer)
    n = data.draw(st.integers(min_value=1, max_value=4))
    for _ in range(n):
        i = data.draw(st.integers(min_value=0, max_value=len(buf) - 1))
        buf[i] ^= data.draw(st.integers(min_value=1, max_value=255))
    cut = data.draw(st.sampled_from([len(buf), len(buf) - 1, fmt.PAYLOAD_START, fmt.HEADER_SIZE - 1, 0]))
    assume(bytes(buf[:cut]) != bytes(_CARRIER.buffer))  # two flips of one byte can cancel out
    carrier = fmt.BytesCarrier(buf[:cut])
    ledger = Ledger(tmp_path_factory.mktemp("l") / "ledger.json")
    with pytest.raises(EncryptionError):
        c.view_carrier(carrier, c.Viewer(_BOB.x25519_private, "bob", "alice", _ALICE.public.ed25519, ledger))
    # The owner's key opens only header and payload: either exactly the secret, or our error.
    try:
        own = c.open_own_carrier(fmt.BytesCarrier(buf[:cut]), _SEALED.content_key)
    except EncryptionError:
        pass
    else:
        assert own.image == _SECRET
    assert ledger.entries() == {}


def test_public_keys_json_round_trip_and_garbage():
    keys = UserKeys.generate()
    assert PublicKeys.from_json(keys.public.to_json()) == keys.public
    for bad in [None, {}, {"x25519": "abc", "ed25519": "abc"}, {"x25519": "A" * 44, "ed25519": 3}]:
        with pytest.raises(KeyFormatError):
            PublicKeys.from_json(bad)
    with pytest.raises(KeyFormatError):
        PublicKeys(x25519=b"short", ed25519=bytes(32))


@given(st.binary(max_size=300))
def test_private_key_file_garbage_is_refused(data):
    with pytest.raises(KeyFormatError):
        UserKeys.from_bytes(data)


def test_private_key_file_round_trip(tmp_path):
    keys = UserKeys.generate()
    path = tmp_path / "keys.json"
    keys.save(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    back = UserKeys.load(path)
    assert back.public == keys.public
    assert "private" not in repr(back).lower().replace("userkeys", "")
    with pytest.raises(KeyFormatError):
        UserKeys.load(tmp_path / "missing.json")
