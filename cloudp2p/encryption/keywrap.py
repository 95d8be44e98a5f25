"""Seal bytes for one user's X25519 public key (ECIES: ephemeral X25519, HKDF-SHA256, AES-GCM).

The server's ``encrypt`` reply travels over plain UDP and is cached by every
server of the cloud (so that a retried request gets the same answer): it must
never hold the content key in clear. It holds the key sealed for the owner's
registered public key instead, which only the owner's client can open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cloudp2p.encryption.errors import KeyFormatError, WrongKeyError
from cloudp2p.encryption.keys import x25519_public

_CONTEXT = b"cloudp2p/owner-key/v1"
_SHARE_CONTEXT = b"cloudp2p/view-share/v1"
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = 32 + NONCE_SIZE + TAG_SIZE  # ephemeral public key, nonce, GCM tag
SEALED_SIZE = OVERHEAD + KEY_SIZE


def seal(
    plain: bytes, recipient_x25519_pub: bytes, label: bytes, context: bytes, *, who: str = "recipient"
) -> bytes:
    """``plain`` sealed for the holder of the private half of ``recipient_x25519_pub`` (ECIES).

    An ephemeral X25519 key agrees a secret with the recipient's; HKDF-SHA256 turns it, with
    ``label`` (what kind of seal this is), both public keys and ``context`` (the image id), into an
    AES-256-GCM key; ``label + context`` is also the associated data. Out: ephemeral public key,
    nonce, ciphertext and tag (``OVERHEAD`` bytes more than ``plain``). The owner's content key in
    an ``encrypt`` reply and a viewer's wrapped key in a container are both sealed here.
    """
    try:
        recipient = x25519_public(recipient_x25519_pub)
    except (KeyFormatError, ValueError) as e:
        raise KeyFormatError(f"{who} X25519 key: {e}") from None
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes_raw()
    try:
        shared = eph.exchange(recipient)
    except ValueError:
        raise KeyFormatError(f"{who} X25519 key is a low-order point") from None
    nonce = os.urandom(NONCE_SIZE)
    kek = _kek(shared, label + eph_pub + bytes(recipient_x25519_pub) + context)
    return eph_pub + nonce + AESGCM(kek).encrypt(nonce, plain, label + context)


def unseal(
    sealed: bytes, recipient: X25519PrivateKey, label: bytes, context: bytes, *, refusal: str
) -> bytes:
    """What ``seal`` sealed; ``WrongKeyError(refusal)`` unless it was sealed for ``recipient``,
    ``label`` and ``context`` and is intact."""
    eph_pub, nonce, boxed = bytes(sealed[:32]), bytes(sealed[32:44]), bytes(sealed[44:])
    try:
        shared = recipient.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError:
        raise WrongKeyError(refusal) from None
    kek = _kek(shared, label + eph_pub + recipient.public_key().public_bytes_raw() + context)
    try:
        return AESGCM(kek).decrypt(nonce, boxed, label + context)
    except InvalidTag:
        raise WrongKeyError(refusal) from None


def _kek(shared: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def seal_key(key: bytes, recipient_x25519_pub: bytes, context: bytes) -> bytes:
    """``key`` (32 bytes) sealed for the holder of the private half of ``recipient_x25519_pub``.

    ``context`` (the image id) is bound in: a sealed key cannot be passed off as another image's.
    """
    if len(key) != KEY_SIZE:
        raise KeyFormatError(f"content key: expected {KEY_SIZE} bytes")
    return seal(key, recipient_x25519_pub, _CONTEXT, context)


def open_key(sealed: bytes, recipient: X25519PrivateKey, context: bytes) -> bytes:
    """The key inside ``sealed``; ``WrongKeyError`` if it was not sealed for ``recipient`` and ``context``."""
    if not isinstance(sealed, bytes | bytearray) or len(sealed) != SEALED_SIZE:
        raise WrongKeyError(f"a sealed key is {SEALED_SIZE} bytes")
    return unseal(sealed, recipient, _CONTEXT, context, refusal="the sealed key is not for this user")


def seal_share(share: bytes, viewer_x25519_pub: bytes, image_id: str) -> bytes:
    """Share B of an enforced copy's key, sealed by the owner for the viewer (``SEALED_SIZE`` bytes).

    The cloud keeps and releases this, once per view: it can count views, never open it.
    """
    if len(share) != KEY_SIZE:
        raise KeyFormatError(f"key share: expected {KEY_SIZE} bytes")
    return seal(share, viewer_x25519_pub, _SHARE_CONTEXT, image_id.encode("ascii"), who="viewer")


def open_share(sealed: bytes, viewer: X25519PrivateKey, image_id: str) -> bytes:
    """The share inside ``sealed``; ``WrongKeyError`` unless sealed for ``viewer`` and this image."""
    if not isinstance(sealed, bytes | bytearray) or len(sealed) != SEALED_SIZE:
        raise WrongKeyError(f"a sealed key share is {SEALED_SIZE} bytes")
    return unseal(
        sealed, viewer, _SHARE_CONTEXT, image_id.encode("ascii", "replace"),
        refusal="the key share the cloud released is not for this user and image",
    )


def open_reply_key(reply: dict, recipient: X25519PrivateKey) -> bytes:
    """The content key of an ``encrypt`` reply, opened with the owner's private X25519 key."""
    import base64
    import binascii

    image_id = reply.get("image_id")
    sealed = reply.get("content_key_sealed")
    if not isinstance(image_id, str) or not isinstance(sealed, str):
        raise WrongKeyError("the reply carries no sealed content key")
    try:
        raw = base64.b64decode(sealed, validate=True)
    except (binascii.Error, ValueError):
        raise WrongKeyError("the sealed content key is not base64") from None
    return open_key(raw, recipient, image_id.encode("ascii", "replace"))
