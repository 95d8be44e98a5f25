"""Checks for the arguments of directory requests.

Arguments come from the network: every check accepts any JSON value and either
returns a clean Python value or raises ``OpError("bad_request", ...)`` whose
message names the argument and says what is expected. Nothing else escapes.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import unicodedata
import uuid
from typing import Any

from cloudp2p.ops import OpError

USERNAME_MIN = 3
USERNAME_MAX = 32
USERNAME_RULE = (
    f"{USERNAME_MIN} to {USERNAME_MAX} characters: ASCII letters, digits, '_', '.' and '-', "
    "starting with a letter or a digit"
)
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
PASSWORD_MIN = 8
PASSWORD_MAX = 1024
NAME_MAX = 255
TOKEN_MAX = 128
KIND_MAX = 32
_KIND = re.compile(r"[a-z][a-z0-9_]*")
KEY_NAMES = ("x25519", "ed25519")
THUMBNAIL_B64_MAX = 16384  # base64 of the 12 KiB limit, with room for padding
MAX_IMAGE_SIZE = 2**40


def bad(message: str) -> OpError:
    return OpError("bad_request", message)


def require(args: Any, name: str) -> Any:
    if not isinstance(args, dict):
        raise bad("arguments must be a JSON object")
    if name not in args or args[name] is None:
        raise bad(f"missing argument {name!r}")
    return args[name]


def optional(args: Any, name: str) -> Any:
    if not isinstance(args, dict):
        raise bad("arguments must be a JSON object")
    return args.get(name)


def text(value: Any, name: str, *, max_chars: int, min_chars: int = 1) -> str:
    """Printable Unicode text: no control characters, no lone surrogates (not UTF-8 encodable)."""
    if not isinstance(value, str):
        raise bad(f"{name} must be a string")
    if not min_chars <= len(value) <= max_chars:
        raise bad(f"{name} must be {min_chars} to {max_chars} characters long, got {len(value)}")
    for ch in value:
        category = unicodedata.category(ch)
        if category == "Cs":
            raise bad(f"{name} is not valid Unicode text (it contains a lone surrogate)")
        if category == "Cc":
            raise bad(f"{name} must not contain control characters such as {ch!r}")
    return value


def username(value: Any, name: str = "username") -> str:
    if not isinstance(value, str):
        raise bad(f"{name} must be a string")
    if not (USERNAME_MIN <= len(value) <= USERNAME_MAX and _USERNAME.fullmatch(value)):
        raise bad(f"{name} must be {USERNAME_RULE}")
    return value


def is_username(value: Any) -> bool:
    """True if ``value`` follows the directory's rule for user names (no ``..``, no ``/``)."""
    return (
        isinstance(value, str)
        and USERNAME_MIN <= len(value) <= USERNAME_MAX
        and _USERNAME.fullmatch(value) is not None
    )


def username_key(value: str) -> str:
    """Usernames are unique regardless of case: ``Alice`` and ``alice`` are one name."""
    return value.lower()


def password(value: Any) -> str:
    if not isinstance(value, str):
        raise bad("password must be a string")
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise bad(f"password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad("password is not valid Unicode text (it contains a lone surrogate)") from None
    return value


def uuid_text(value: Any, name: str) -> str:
    """A UUID in its canonical lower-case 36-character form."""
    if not isinstance(value, str) or len(value) != 36:
        raise bad(f"{name} must be a UUID such as 123e4567-e89b-12d3-a456-426614174000")
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise bad(f"{name} must be a UUID such as 123e4567-e89b-12d3-a456-426614174000") from None
    return str(parsed)


def b64decode(value: Any, name: str, *, max_chars: int) -> bytes:
    """Standard base64 with padding, strictly (no whitespace, no URL-safe alphabet)."""
    if not isinstance(value, str):
        raise bad(f"{name} must be a base64 string")
    if len(value) > max_chars:
        raise bad(f"{name} is too long ({len(value)} characters, at most {max_chars})")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise bad(f"{name} must be standard base64 with padding") from None


def public_keys(value: Any) -> dict[str, str]:
    """``{"x25519": b64, "ed25519": b64}``, each the base64 of exactly 32 bytes."""
    if not isinstance(value, dict) or set(value) != set(KEY_NAMES):
        raise bad('keys must be an object with exactly "x25519" and "ed25519"')
    out = {}
    for key in KEY_NAMES:
        raw = b64decode(value[key], f"keys.{key}", max_chars=64)
        if len(raw) != 32:
            raise bad(f"keys.{key} must be the base64 of exactly 32 bytes, got {len(raw)} bytes")
        out[key] = base64.b64encode(raw).decode("ascii")
    return out


def x25519_key(value: Any, name: str) -> bytes:
    """The raw 32 bytes of a base64 X25519 public key."""
    raw = b64decode(value, name, max_chars=64)
    if len(raw) != 32:
        raise bad(f"{name} must be the base64 of a 32-byte X25519 public key, got {len(raw)} bytes")
    return raw


def token(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= TOKEN_MAX or not value.isascii():
        raise OpError("not_signed_in", "this request needs a valid session token; sign in first")
    return value


def integer(value: Any, name: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{name} must be an integer")
    if not low <= value <= high:
        raise bad(f"{name} must be between {low} and {high}, got {value}")
    return value


def host(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise bad("host must be an IP address such as 192.0.2.7")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise bad("host must be an IP address such as 192.0.2.7") from None


def kind(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= KIND_MAX or not _KIND.fullmatch(value):
        raise bad(
            f"kind must be 1 to {KIND_MAX} characters: lower-case letters, digits and '_', "
            "starting with a letter (for example image_request or rights_change)"
        )
    return value


def body(value: Any, *, max_bytes: int) -> str:
    """A JSON object, returned serialised (ASCII, so any string in it survives every backend)."""
    if not isinstance(value, dict):
        raise bad("body must be a JSON object")
    try:
        encoded = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise bad("body must be plain JSON (objects, lists, strings, numbers, booleans, null)") from None
    if len(encoded) > max_bytes:
        raise bad(f"body is {len(encoded)} bytes of JSON, at most {max_bytes} are allowed")
    return encoded
