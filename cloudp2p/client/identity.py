"""The user's key pairs, kept in ``DIR/identity.json`` (mode 0600).

Two pairs, as docs/INTERFACES.md fixes: X25519 (content keys are wrapped to
it) and Ed25519 (the user signs peer messages and, as an owner, rights). The
public halves are registered in the directory as base64 of the raw 32 bytes.
"""

from __future__ import annotations

import base64
import binascii

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloudp2p.client.errors import HomeError
from cloudp2p.client.home import Home

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw


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


@attrs.frozen
class Identity:
    x25519: X25519PrivateKey
    ed25519: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(X25519PrivateKey.generate(), Ed25519PrivateKey.generate())

    def public_keys(self) -> dict[str, str]:
        """``{"x25519": b64, "ed25519": b64}``: what `register` sends to the directory."""
        return {
            "x25519": b64(self.x25519.public_key().public_bytes(_RAW, _RAW_PUB)),
            "ed25519": b64(self.ed25519.public_key().public_bytes(_RAW, _RAW_PUB)),
        }

    def sign(self, data: bytes) -> bytes:
        return self.ed25519.sign(data)

    def to_json(self) -> dict[str, str]:
        none = serialization.NoEncryption()
        return {
            "version": 1,
            "x25519": b64(self.x25519.private_bytes(_RAW, _RAW_PRIV, none)),
            "ed25519": b64(self.ed25519.private_bytes(_RAW, _RAW_PRIV, none)),
        }

    @classmethod
    def from_json(cls, obj: object, origin: str = "identity.json") -> Identity:
        try:
            if not isinstance(obj, dict) or obj.get("version") != 1:
                raise ValueError("unknown format")
            x = X25519PrivateKey.from_private_bytes(unb64(obj["x25519"], length=32))
            e = Ed25519PrivateKey.from_private_bytes(unb64(obj["ed25519"], length=32))
        except (KeyError, ValueError) as err:
            raise HomeError(f"{origin}: the key file is damaged ({err})") from None
        return cls(x, e)

    # -- storage -----------------------------------------------------------------------------------

    @classmethod
    def load(cls, home: Home) -> Identity | None:
        obj = home.read_json(home.identity_file)
        return None if obj is None else cls.from_json(obj, str(home.identity_file))

    def save(self, home: Home) -> None:
        home.write_json(home.identity_file, self.to_json())

    @classmethod
    def load_or_create(cls, home: Home) -> Identity:
        found = cls.load(home)
        if found is not None:
            return found
        identity = cls.generate()
        identity.save(home)
        return identity


def verify(public_ed25519_b64: str, signature: bytes, data: bytes) -> bool:
    """True if ``signature`` over ``data`` is valid for the given base64 Ed25519 public key."""
    try:
        key = Ed25519PublicKey.from_public_bytes(unb64(public_ed25519_b64, length=32))
        key.verify(signature, data)
    except (ValueError, InvalidSignature):
        return False
    return True
