"""pyOpenSSL contexts for DTLS 1.2, the HelloVerifyRequest cookies, and the check of a server's identity.

Both sides speak DTLS 1.2 only, with ECDHE-ECDSA and AEAD ciphers, no session
tickets, no renegotiation, and the MTU set by us (OpenSSL cannot ask a memory
BIO for one).

A server answers a ClientHello without a valid cookie with a HelloVerifyRequest
carrying ``HMAC(secret, source address)``; the secret rotates every
``lifetime`` seconds and the previous one is still accepted, so a cookie lives
one to two lifetimes and a spoofed source never costs the server any state.

A client trusts exactly one CA, the one pinned in its home, and after the
handshake checks with **service_identity** that the certificate names the
server configured for that address (a DNS name such as ``server1.cloud``, or
the IP address when no name is configured). What went wrong decides the error:
another CA -> ``ServerUntrusted``, out of its validity -> ``ServerCertificateExpired``,
another name -> ``ServerNameMismatch``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import stat
from collections.abc import Callable
from typing import Any

import attrs
import service_identity
from OpenSSL import SSL
from service_identity.pyopenssl import verify_hostname, verify_ip_address

from cloudp2p.config import format_hostport, hostport
from cloudp2p.errors import (
    ConfigError,
    ServerCertificateExpired,
    ServerIdentityError,
    ServerNameMismatch,
    ServerUntrusted,
)
from cloudp2p.secure.pki import check_name

Address = tuple[str, int]
DTLS_1_2 = 0xFEFD
CIPHERS = b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"
OPTIONS = SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION
COOKIE_SIZE = 16

# X509_V_ERR_* codes that mean "outside its validity period".
_EXPIRED = {9, 10}  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED
_VERIFY_TEXT = {
    2: "unable to get the issuer's certificate",
    7: "bad certificate signature",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in the chain",
    20: "unable to get the local issuer certificate",
    21: "unable to verify the first certificate",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
}


@attrs.frozen
class ServerRef:
    """One cloud server as a client knows it: where it listens and which name its certificate must carry.

    ``name`` None means the certificate must carry the address's IP in its SAN.
    """

    address: Address
    name: str | None = None

    @property
    def label(self) -> str:
        where = format_hostport(self.address)
        return f"{self.name} ({where})" if self.name else where

    def render(self) -> str:
        where = format_hostport(self.address)
        return f"{self.name}@{where}" if self.name else where


def parse_server(text: str) -> ServerRef:
    """``"server1.cloud@127.0.0.1:9101"`` or ``"127.0.0.1:9101"``; ``ValueError`` saying what is expected."""
    if not isinstance(text, str):
        raise ValueError(f'a server is "NAME@host:port" or "host:port", got {text!r}')
    name = None
    if "@" in text:
        name, _, text = text.partition("@")
        check_name(name)
    return ServerRef(hostport(text), name)


@attrs.define
class ConnInfo:
    """What a connection's callbacks need and record (pyOpenSSL app data)."""

    peer: Address
    verify_error: int | None = None
    verify_depth: int = 0


class CookieJar:
    """Stateless HelloVerifyRequest cookies: ``HMAC(secret, address)``, the secret rotating."""

    def __init__(
        self, clock: Any, lifetime: float = 60.0, random: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self._random = random
        self._secrets = [random(32), random(32)]  # current, previous
        self._rotated = clock.seconds()

    def _rotate(self) -> None:
        now = self.clock.seconds()
        if now - self._rotated >= self.lifetime:
            stale = now - self._rotated >= 2 * self.lifetime
            self._secrets = [self._random(32), self._random(32) if stale else self._secrets[0]]
            self._rotated = now

    @staticmethod
    def _mac(secret: bytes, address: Address) -> bytes:
        return hmac.new(secret, format_hostport(address).encode(), hashlib.sha256).digest()[:COOKIE_SIZE]

    def make(self, address: Address) -> bytes:
        self._rotate()
        return self._mac(self._secrets[0], address)

    def check(self, address: Address, cookie: bytes) -> bool:
        self._rotate()
        return any(hmac.compare_digest(self._mac(s, address), cookie) for s in self._secrets)


def _base_context() -> SSL.Context:
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.set_min_proto_version(DTLS_1_2)
    ctx.set_max_proto_version(DTLS_1_2)
    ctx.set_options(OPTIONS)
    ctx.set_cipher_list(CIPHERS)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    return ctx


def check_key_file(path: str) -> None:
    """A private key must be readable by its owner only (0600)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the key: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path}: the private key is readable by others (mode {mode & 0o777:o}); chmod 600 it"
        )


def server_context(certificate: str, key: str, cookies: CookieJar) -> SSL.Context:
    """A DTLS server context with this server's identity and stateless cookies."""
    check_key_file(key)
    ctx = _base_context()
    ctx.set_options(SSL.OP_COOKIE_EXCHANGE)
    try:
        ctx.use_certificate_chain_file(certificate)
    except SSL.Error as e:
        raise ConfigError(f"{certificate}: not a usable PEM certificate: {e}") from None
    try:
        ctx.use_privatekey_file(key)
        ctx.check_privatekey()
    except SSL.Error as e:
        raise ConfigError(f"{key}: not the private key of {certificate}: {e}") from None

    def generate(conn: SSL.Connection) -> bytes:
        return cookies.make(conn.get_app_data().peer)

    def verify(conn: SSL.Connection, cookie: bytes) -> bool:
        return cookies.check(conn.get_app_data().peer, cookie)

    ctx.set_cookie_generate_callback(generate)
    ctx.set_cookie_verify_callback(verify)
    return ctx


def client_context(ca_file: str) -> SSL.Context:
    """A DTLS client context trusting only ``ca_file``; the first verification error is recorded."""
    ctx = _base_context()
    try:
        ctx.load_verify_locations(ca_file)
    except SSL.Error as e:
        raise ConfigError(f"{ca_file}: not a usable CA certificate: {e}") from None

    def record(conn: SSL.Connection, _cert: Any, errnum: int, depth: int, ok: int) -> bool:
        if not ok:
            info = conn.get_app_data()
            if info.verify_error is None:
                info.verify_error, info.verify_depth = errnum, depth
        return bool(ok)

    ctx.set_verify(SSL.VERIFY_PEER, record)
    return ctx


def verification_error(info: ConnInfo, ref: ServerRef) -> ServerIdentityError | None:
    """The user-facing error for a failed certificate check recorded during the handshake."""
    code = info.verify_error
    if code is None:
        return None
    text = _VERIFY_TEXT.get(code, f"verification error {code}")
    if code in _EXPIRED:
        return ServerCertificateExpired(f"{ref.label}: {text}")
    return ServerUntrusted(f"{ref.label}: {text}")


def check_identity(conn: SSL.Connection, ref: ServerRef) -> None:
    """After a verified handshake: the certificate must name ``ref`` (service_identity)."""
    try:
        if ref.name is not None:
            verify_hostname(conn, ref.name)
        else:
            ipaddress.ip_address(ref.address[0])
            verify_ip_address(conn, ref.address[0])
    except (service_identity.VerificationError, service_identity.CertificateError) as e:
        want = ref.name or ref.address[0]
        raise ServerNameMismatch(f"{ref.label}: the certificate is not for {want} ({e})") from None
    except ValueError:
        raise ServerNameMismatch(
            f"{ref.label}: no server name configured and {ref.address[0]!r} is not an IP address"
        ) from None
