"""Password hashing with scrypt (blocking: call these off the reactor thread).

A stored hash records its own parameters, so the cost can be raised later
without invalidating old hashes; the directory re-hashes a password stored at
a lower cost when its user next signs in (``cost``)::

    scrypt$<n>$<r>$<p>$<salt, base64>$<hash, base64>

``DEFAULT_N`` = 2**17 with r = 8, p = 1 (128 MiB, OWASP's 2023 guidance); the
sign_in latency it costs is measured by ``make bench-boundary``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

DEFAULT_N = 2**17
R = 8
P = 1
SALT_BYTES = 16
HASH_BYTES = 32


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # scrypt needs 128 * n * r bytes; give it that plus slack (OpenSSL's default cap is 32 MiB).
    maxmem = 128 * n * r * 2 + 2**20
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)


def hash_password(password: str, *, n: int = DEFAULT_N) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, R, P, HASH_BYTES)
    return "$".join(
        ["scrypt", str(n), str(R), str(P), base64.b64encode(salt).decode(), base64.b64encode(digest).decode()]
    )


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches ``encoded``; constant time in the comparison."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p), len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def cost(encoded: str) -> int | None:
    """The scrypt ``n`` a stored hash was made with (None if it is not one of ours)."""
    parts = encoded.split("$") if isinstance(encoded, str) else []
    if len(parts) != 6 or parts[0] != "scrypt" or not parts[1].isdigit():
        return None
    return int(parts[1])


# A hash of nothing anyone knows, checked against when the username does not exist, so that
# "no such user" takes as long as "wrong password" and the two cannot be told apart.
def dummy_hash(n: int) -> str:
    return hash_password(secrets.token_urlsafe(16), n=n)
