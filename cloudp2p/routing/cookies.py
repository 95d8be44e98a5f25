"""Return-routability cookies: proof that a client receives at the address it sends from.

A UDP source address is only a claim. Before a server does any work for a
source, or sends it more bytes than it received, the source proves the claim
the way DTLS's HelloVerifyRequest and QUIC's Retry do: the server answers a
request that carries no valid cookie with a small challenge holding one, and
the client sends the request again with it. Only a client that received the
challenge at that address can do so.

A cookie is ``<issue time, hex seconds>.<MAC>`` where the MAC is the first 16
bytes of HMAC-SHA256(key, "time|host|port"), base64url (31 characters in all).
The servers of one cloud derive the key from the cluster secret, so a cookie
from one server is good at every server; a cookie is good for ``ttl`` seconds
after it was issued (allowing ``skew`` seconds of clock difference between
servers), and servers hand out a fresh one with every reply.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

_LABEL = b"cloudp2p/client-cookie/v1"
MAC_BYTES = 16


def derive_key(cluster_secret: bytes) -> bytes:
    """The cookie key of a cloud: the same on every server, useless for anything else."""
    return hmac.new(cluster_secret, _LABEL, hashlib.sha256).digest()


class CookieJar:
    """Issues and checks cookies bound to a source address."""

    def __init__(
        self,
        key: bytes | None = None,
        *,
        ttl: float = 600.0,
        skew: float = 60.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.key = key if key is not None else secrets.token_bytes(32)
        self.ttl = ttl
        self.skew = skew
        self.wall = wall

    def _mac(self, issued: str, address: tuple[str, int]) -> str:
        message = f"{issued}|{address[0]}|{address[1]}".encode()
        digest = hmac.new(self.key, message, hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def issue(self, address: tuple[str, int]) -> str:
        issued = format(int(self.wall()), "x")
        return f"{issued}.{self._mac(issued, address)}"

    def valid(self, cookie: object, address: tuple[str, int]) -> bool:
        """True if ``cookie`` was issued (by this cloud) to ``address`` and has not expired."""
        if not isinstance(cookie, str) or len(cookie) > 64:
            return False
        issued, dot, mac = cookie.partition(".")
        if not dot or not 1 <= len(issued) <= 12:
            return False
        try:
            when = int(issued, 16)
        except ValueError:
            return False
        if format(when, "x") != issued:  # one spelling per time: "0a" and "A" are not cookies
            return False
        now = self.wall()
        if not now - self.ttl <= when <= now + self.skew:
            return False
        return hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(issued, address).encode())
