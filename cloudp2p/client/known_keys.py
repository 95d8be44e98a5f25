"""The public keys this client has seen per user, like SSH's known_hosts (``DIR/known_keys.json``).

The directory is trusted for a user's keys the first time this client meets
that user (trust on first use). From then on the keys are pinned: a directory
that answers with other keys (the user made new ones, or a malicious server
hands out its own to read what we grant or to forge what we accept) makes every
story that needs them fail with ``KeyChanged`` (exit 28), and peer messages
signed with the new key are dropped, until the user runs `cloudp2p trust USER`.

Entries are keyed by the directory's canonical name (user names are
case-insensitive): ``{"format": 1, "users": {"alice": {"username", "user_id",
"x25519", "ed25519", "first_seen"}}}``.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from typing import Any

from cloudp2p.client.errors import HomeError, KeyChanged
from cloudp2p.client.home import Home
from cloudp2p.directory.validate import username_key

FORMAT = 1
KEY_NAMES = ("x25519", "ed25519")


def fingerprint(key_b64: str) -> str:
    """A short, comparable name for a public key: SHA256:<first 16 hex digits>."""
    return "SHA256:" + hashlib.sha256(key_b64.encode("ascii", "replace")).hexdigest()[:16]


def _entry(record: dict[str, Any], now: float) -> dict[str, Any]:
    keys = record["keys"]
    return {
        "username": record["username"],
        "user_id": str(record["user_id"]),
        **{k: keys[k] for k in KEY_NAMES},
        "first_seen": now,
    }


class KnownKeys:
    """Check a directory record against the pinned keys; pin the first ones seen."""

    def __init__(
        self, home: Home, save: Callable[[], None] | None = None, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.home = home
        self.path = home.path / "known_keys.json"
        self.wall_clock = wall_clock
        self._users: dict[str, dict[str, Any]] = self._load()
        self._save = save or self.write_now

    def _load(self) -> dict[str, dict[str, Any]]:
        data = self.home.read_json(self.path)
        if data is None:
            return {}
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict) or data.get("format") != FORMAT:
            raise HomeError(f"{self.path}: unknown or damaged format")
        return users

    def snapshot(self) -> dict[str, Any]:
        return {"format": FORMAT, "users": copy.deepcopy(self._users)}

    def write_now(self) -> None:
        self.home.write_json(self.path, self.snapshot())

    def get(self, username: str) -> dict[str, Any] | None:
        found = self._users.get(username_key(username))
        return dict(found) if found is not None else None

    def check(self, record: dict[str, Any]) -> None:
        """Pin ``record`` (a ``lookup_user`` reply) if the user is new; ``KeyChanged`` if it differs."""
        key = username_key(record["username"])
        known = self._users.get(key)
        if known is None:
            self._users[key] = _entry(record, self.wall_clock())
            self._save()
            return
        same_keys = all(known[k] == record["keys"].get(k) for k in KEY_NAMES)
        if same_keys and known["user_id"] == str(record["user_id"]):
            return
        what = "account" if known["user_id"] != str(record["user_id"]) else "keys"
        was, now = fingerprint(known["ed25519"]), fingerprint(str(record["keys"].get("ed25519", "")))
        raise KeyChanged(
            f"({record['username']}: the directory now gives another {what} than the one this client "
            f"pinned (ed25519 {was}, now {now}); `cloudp2p trust {record['username']}` accepts them)"
        )

    def trust(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Pin ``record``'s keys whatever was pinned before; returns the previous entry, if any."""
        key = username_key(record["username"])
        previous = self._users.get(key)
        self._users[key] = _entry(record, self.wall_clock())
        self._save()
        return dict(previous) if previous is not None else None
