"""The user's key pairs (``cloudp2p.encryption.keys.UserKeys``), kept in ``DIR/identity.json`` (mode 0600).

Two pairs, as docs/INTERFACES.md fixes: X25519 (content keys are wrapped to
it) and Ed25519 (the user signs peer messages and, as an owner, rights). The
public halves are registered in the directory as base64 of the raw 32 bytes.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloudp2p.client.errors import HomeError
from cloudp2p.client.home import Home
from cloudp2p.encryption.errors import KeyFormatError
from cloudp2p.encryption.keys import UserKeys


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, *, length: int | None = None) -> bytes:
    """Strict standard base64; ``ValueError`` on anything else (or the wrong length)."""
    if not isinstance(text, str):
        raise ValueError("expected a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not valid base64") from None
    if length is not None and len(raw) != length:
        raise ValueError(f"expected {length} bytes, got {len(raw)}")
    return raw


def load(home: Home) -> UserKeys | None:
    """The keys in ``DIR/identity.json``, None if there are none yet; ``HomeError`` if the file is damaged."""
    obj = home.read_json(home.identity_file)
    if obj is None:
        return None
    try:
        return UserKeys.from_json(obj)
    except (KeyFormatError, ValueError) as err:
        raise HomeError(f"{home.identity_file}: the key file is damaged ({err})") from None


def save(home: Home, keys: UserKeys) -> None:
    home.write_json(home.identity_file, keys.to_json())


def load_or_create(home: Home) -> UserKeys:
    found = load(home)
    if found is not None:
        return found
    keys = UserKeys.generate()
    save(home, keys)
    return keys


def verify(public_ed25519_b64: str, signature: bytes, data: bytes) -> bool:
    """True if ``signature`` over ``data`` is valid for the given base64 Ed25519 public key."""
    try:
        key = Ed25519PublicKey.from_public_bytes(unb64(public_ed25519_b64, length=32))
        key.verify(signature, data)
    except (ValueError, InvalidSignature):
        return False
    return True
