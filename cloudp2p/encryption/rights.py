"""Signed access rights: who may view which image how many times, signed by the owner (Ed25519).

Binary layout of a signed rights blob (big-endian; all of it is signed except
the signature itself)::

    offset size  field
    0      4     magic b"CPR1"
    4      1     len(owner_id) (1..64), then owner_id UTF-8
    .      1     len(viewer_id) (1..64), then viewer_id UTF-8
    .      16    image_id
    .      4     views granted (u32; 0 = revoked)
    .      4     rights version (u32; a higher version replaces a lower one)
    .      8     issued_at, milliseconds since the epoch (u64)
    .      32    payload_hash: SHA-256 of the container's encrypted payload
    .      64    Ed25519 signature over b"cloudp2p/rights/v1\\0" + all the bytes above

The blob is at most ``MAX_RIGHTS_SIZE`` (262) bytes. Inside a container it only
ever travels encrypted (inside the viewer's wrapped key); on its own (a rights
update sent peer to peer) it is public but unforgeable.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloudp2p.encryption.errors import RightsError, RightsForgedError
from cloudp2p.encryption.keys import KeyFormatError, ed25519_public

MAGIC = b"CPR1"
SIGN_CONTEXT = b"cloudp2p/rights/v1\x00"
MAX_ID_BYTES = 64
IMAGE_ID_SIZE = 16
HASH_SIZE = 32
SIGNATURE_SIZE = 64
MAX_U32 = 2**32 - 1
_TAIL = struct.Struct(">16sIIQ32s")
MAX_RIGHTS_SIZE = len(MAGIC) + 2 * (1 + MAX_ID_BYTES) + _TAIL.size + SIGNATURE_SIZE


def user_id_text(value: Any) -> str:
    """User ids are compared as text: the directory's ids (int or str) become ``str``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RightsError(f"user id must be a string or an integer, got {type(value).__name__}")
    text = str(value)
    if not 1 <= len(text.encode("utf-8")) <= MAX_ID_BYTES:
        raise RightsError(f"user id must be 1 to {MAX_ID_BYTES} bytes of UTF-8, got {text[:80]!r}")
    return text


def _u32(name: str) -> Any:
    def check(_self: Any, _attr: Any, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_U32:
            raise RightsError(f"{name} must be an integer from 0 to {MAX_U32}, got {value!r}")

    return check


def _fixed(name: str, size: int) -> Any:
    def check(_self: Any, _attr: Any, value: bytes) -> None:
        if not isinstance(value, bytes) or len(value) != size:
            raise RightsError(f"{name} must be {size} bytes")

    return check


@attrs.frozen
class Rights:
    """What the owner grants. ``views`` is the total number of views allowed, across versions."""

    owner_id: str = attrs.field(converter=user_id_text)
    viewer_id: str = attrs.field(converter=user_id_text)
    image_id: bytes = attrs.field(validator=_fixed("image_id", IMAGE_ID_SIZE))
    views: int = attrs.field(validator=_u32("views"))
    version: int = attrs.field(validator=_u32("version"))
    payload_hash: bytes = attrs.field(validator=_fixed("payload_hash", HASH_SIZE))
    issued_at_ms: int = attrs.field(factory=lambda: int(time.time() * 1000))

    @issued_at_ms.validator
    def _issued(self, _attr: Any, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
            raise RightsError(f"issued_at_ms must be an unsigned 64-bit integer, got {value!r}")

    def unsigned_bytes(self) -> bytes:
        owner = self.owner_id.encode("utf-8")
        viewer = self.viewer_id.encode("utf-8")
        return b"".join(
            [
                MAGIC,
                bytes([len(owner)]),
                owner,
                bytes([len(viewer)]),
                viewer,
                _TAIL.pack(self.image_id, self.views, self.version, self.issued_at_ms, self.payload_hash),
            ]
        )

    def sign(self, owner_ed25519: Ed25519PrivateKey) -> SignedRights:
        body = self.unsigned_bytes()
        return SignedRights(self, owner_ed25519.sign(SIGN_CONTEXT + body))


@attrs.frozen
class SignedRights:
    rights: Rights
    signature: bytes = attrs.field(validator=_fixed("signature", SIGNATURE_SIZE))

    def to_bytes(self) -> bytes:
        return self.rights.unsigned_bytes() + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedRights:
        """Parse a blob (does not check the signature: call ``verify``). ``RightsError`` if malformed."""
        if not isinstance(data, bytes | bytearray):
            raise RightsError("rights: expected bytes")
        data = bytes(data)
        if len(data) > MAX_RIGHTS_SIZE or data[:4] != MAGIC:
            raise RightsError("rights: not a cloudp2p rights blob")
        pos = 4
        ids = []
        for _ in range(2):
            if pos >= len(data):
                raise RightsError("rights: truncated")
            n = data[pos]
            raw = data[pos + 1 : pos + 1 + n]
            if n == 0 or len(raw) != n:
                raise RightsError("rights: truncated or empty user id")
            try:
                ids.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise RightsError("rights: user id is not UTF-8") from None
            pos += 1 + n
        if len(data) != pos + _TAIL.size + SIGNATURE_SIZE:
            raise RightsError("rights: wrong length")
        image_id, views, version, issued, payload_hash = _TAIL.unpack_from(data, pos)
        signature = data[pos + _TAIL.size :]
        rights = Rights(
            owner_id=ids[0],
            viewer_id=ids[1],
            image_id=image_id,
            views=views,
            version=version,
            payload_hash=payload_hash,
            issued_at_ms=issued,
        )
        signed = cls(rights, signature)
        if signed.to_bytes() != data:  # non-canonical encodings (e.g. odd UTF-8) are refused
            raise RightsError("rights: not in canonical form")
        return signed

    def verify(self, owner_ed25519_pub: bytes) -> Rights:
        """The rights if the signature is the owner's, else ``RightsForgedError``."""
        try:
            key = ed25519_public(owner_ed25519_pub)
        except (KeyFormatError, ValueError) as e:
            raise RightsForgedError(f"owner public key unusable: {e}") from None
        try:
            key.verify(self.signature, SIGN_CONTEXT + self.rights.unsigned_bytes())
        except InvalidSignature:
            raise RightsForgedError(
                f"signature check failed for rights version {self.rights.version} "
                f"(owner {self.rights.owner_id!r}, viewer {self.rights.viewer_id!r})"
            ) from None
        return self.rights
