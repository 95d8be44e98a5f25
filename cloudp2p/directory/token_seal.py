"""The session token of a ``sign_in`` reply, sealed for a key that only the signing-in client holds.

Every reply is kept by every server to answer retries and travels in the
``done`` broadcast between servers: a token in clear there could be handed
to, or read by, someone else. So ``sign_in`` takes ``reply_key``, the public
half of an X25519 key pair the client makes for that one request, and the
reply carries ``token_sealed`` (cloudp2p.encryption.keywrap) instead of
``token``::

    key = ReplyKey()
    reply = await router.submit("sign_in", {"username": u, "password": p, **key.args()})
    token = key.open(reply)            # or: reply = await sign_in(router, {...}) with "token" filled in

A token is 32 random bytes written as unpadded URL-safe base64 (43 characters);
the 32 bytes are what is sealed.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloudp2p.encryption import keywrap
from cloudp2p.encryption.errors import WrongKeyError

CONTEXT = b"cloudp2p/session-token/v1"
TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def _raw(token: str) -> bytes:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    if len(raw) != TOKEN_BYTES:
        raise ValueError("not a session token")
    return raw


def seal_token(token: str, reply_key: bytes) -> str:
    """``token`` sealed for the X25519 public key ``reply_key`` (32 bytes), as base64."""
    return base64.b64encode(keywrap.seal_key(_raw(token), reply_key, CONTEXT)).decode("ascii")


class ReplyKey:
    """A one-request X25519 key pair: its public half goes in ``reply_key``, the private half opens."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()

    @property
    def public_b64(self) -> str:
        raw = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode("ascii")

    def args(self) -> dict[str, str]:
        return {"reply_key": self.public_b64}

    def open(self, reply: dict[str, Any]) -> str:
        """The token of a ``sign_in`` reply; ``WrongKeyError`` if it is missing or not sealed for us."""
        sealed = reply.get("token_sealed") if isinstance(reply, dict) else None
        if not isinstance(sealed, str):
            raise WrongKeyError("the sign_in reply carries no sealed token")
        try:
            blob = base64.b64decode(sealed, validate=True)
        except (binascii.Error, ValueError):
            raise WrongKeyError("the sealed token is not base64") from None
        raw = keywrap.open_key(blob, self._private, CONTEXT)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


async def sign_in(router: Any, args: dict[str, Any], **submit: Any) -> dict[str, Any]:
    """``router.submit("sign_in", args)`` with a fresh reply key; the reply with ``token`` opened."""
    key = ReplyKey()
    reply = await router.submit("sign_in", {**args, **key.args()}, **submit)
    return {**reply, "token": key.open(reply)}
