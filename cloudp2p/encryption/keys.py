"""User key pairs: X25519 (to receive wrapped content keys) and Ed25519 (to sign rights and peer messages).

The one key-pair type of the project: the client daemon keeps its user's ``UserKeys`` in its home
(``cloudp2p.client.identity``), the cloud and the directory see only ``PublicKeys``.

Public keys travel as base64 (standard alphabet, with padding) of the raw
32-byte keys, as ``{"x25519": "...", "ed25519": "..."}`` (docs/INTERFACES.md).
Private keys stay in the client's home, in a JSON file written atomically with
mode 0600 (``UserKeys.save`` / ``UserKeys.load``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from cloudp2p.encryption.errors import KeyFormatError
from cloudp2p.files import atomic_write

KEY_SIZE = 32
_KEYFILE_VERSION = 1


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def b64decode_key(text: Any, what: str = "key") -> bytes:
    """Strict base64 of exactly 32 bytes -> the raw bytes, else ``KeyFormatError``."""
    if not isinstance(text, str):
        raise KeyFormatError(f"{what}: expected a base64 string, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise KeyFormatError(f"{what}: not valid base64") from None
    if len(raw) != KEY_SIZE:
        raise KeyFormatError(f"{what}: expected {KEY_SIZE} bytes, got {len(raw)}")
    return raw


def _check_raw(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != KEY_SIZE:
        raise KeyFormatError(f"{what}: expected {KEY_SIZE} raw bytes")
    return bytes(value)


def x25519_public(raw: bytes) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(_check_raw(raw, "X25519 public key"))


def ed25519_public(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_check_raw(raw, "Ed25519 public key"))


@attrs.frozen
class PublicKeys:
    """A user's two raw 32-byte public keys, as registered in the directory."""

    x25519: bytes = attrs.field(converter=bytes)
    ed25519: bytes = attrs.field(converter=bytes)

    @x25519.validator
    @ed25519.validator
    def _size(self, attribute: attrs.Attribute, value: bytes) -> None:
        if len(value) != KEY_SIZE:
            raise KeyFormatError(f"{attribute.name}: expected {KEY_SIZE} bytes, got {len(value)}")

    def to_json(self) -> dict[str, str]:
        return {"x25519": b64encode(self.x25519), "ed25519": b64encode(self.ed25519)}

    @classmethod
    def from_json(cls, data: Any) -> PublicKeys:
        if not isinstance(data, dict):
            raise KeyFormatError('public keys: expected {"x25519": ..., "ed25519": ...}')
        return cls(
            x25519=b64decode_key(data.get("x25519"), "x25519"),
            ed25519=b64decode_key(data.get("ed25519"), "ed25519"),
        )


@attrs.frozen(repr=False)
class UserKeys:
    """A user's private key pair. ``repr`` never shows private material."""

    x25519_private: X25519PrivateKey
    ed25519_private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> UserKeys:
        return cls(X25519PrivateKey.generate(), Ed25519PrivateKey.generate())

    @property
    def public(self) -> PublicKeys:
        return PublicKeys(
            x25519=self.x25519_private.public_key().public_bytes_raw(),
            ed25519=self.ed25519_private.public_key().public_bytes_raw(),
        )

    def __repr__(self) -> str:
        return f"UserKeys(public={self.public.to_json()!r})"

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature over ``data`` (peer messages; rights are signed in ``rights``)."""
        return self.ed25519_private.sign(data)

    # -- serialisation ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The private key file's document (keys as base64 of their raw 32 bytes)."""
        return {
            "version": _KEYFILE_VERSION,
            "x25519": b64encode(self.x25519_private.private_bytes_raw()),
            "ed25519": b64encode(self.ed25519_private.private_bytes_raw()),
        }

    @classmethod
    def from_json(cls, doc: Any) -> UserKeys:
        if not isinstance(doc, dict) or doc.get("version") != _KEYFILE_VERSION:
            raise KeyFormatError(f"private key file: expected version {_KEYFILE_VERSION}")
        x_raw = b64decode_key(doc.get("x25519"), "private key file: x25519")
        e_raw = b64decode_key(doc.get("ed25519"), "private key file: ed25519")
        return cls(X25519PrivateKey.from_private_bytes(x_raw), Ed25519PrivateKey.from_private_bytes(e_raw))

    def to_bytes(self) -> bytes:
        """The private key file's content (``to_json`` as JSON text)."""
        return json.dumps(self.to_json(), indent=1).encode("ascii") + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> UserKeys:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise KeyFormatError("private key file: not valid JSON") from None
        return cls.from_json(doc)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key file atomically, readable by its owner only (mode 0600). Blocking."""
        atomic_write(path, self.to_bytes(), mode=0o600)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> UserKeys:
        """Read a key file written by ``save``. Blocking."""
        try:
            with open(path, "rb") as f:
                data = f.read(64 * 1024)
        except OSError as e:
            raise KeyFormatError(f"{os.fspath(path)}: cannot read: {e.strerror}") from None
        return cls.from_bytes(data)
