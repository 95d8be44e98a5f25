"""The daemon's local state: one JSON document, ``DIR/state.json``, rewritten atomically.

The daemon saves it through a ``CoalescingWriter`` (``save=``): changes are
batched and written off the reactor, and whoever must not answer before a
change is on disk (a peer's ack, a command's reply) awaits ``flushed()``.
Without ``save`` (tools, tests) every change is written at once.

It records what the user owns and what happened to it; the bytes themselves
(originals, encrypted images, received containers) are files under the home
and the state holds their paths relative to it. Sections:

``images``    image_id -> the user's own encrypted images
              {name, original, encrypted, content_key, size, published, created}
``grants``    image_id -> {viewer -> {views, updated}}: what this owner granted
``received``  image_id -> copies shared with us {owner, name, container, views_granted, received_at}
``inbox``     request_id -> requests to us as an owner (``sharing.machine``)
``outbox``    request_id -> our requests to owners (``sharing.machine``)
``applied``   message_id -> the message's time: peer messages already applied (exactly-once),
              at most ``MAX_APPLIED``; ``applied_floor`` (top level) is the newest time evicted:
              messages that old or older are refused as replays
``catalog``   username -> images that user offered when last listed (`users`), to resolve names
``pending_rights`` image_id -> rights updates that arrived before the copy itself

The share requests' states and their moves are ``cloudp2p.client.stories.sharing.machine``.
"""

from __future__ import annotations

import copy
import heapq
import json
from collections.abc import Callable, Iterator
from typing import Any

from cloudp2p.client.errors import HomeError
from cloudp2p.client.home import Home

FORMAT = 1
SECTIONS = ("images", "grants", "received", "inbox", "outbox", "applied", "catalog", "pending_rights")

# Applied message ids are kept this long (seconds); older messages are refused outright.
APPLIED_RETENTION = 30 * 24 * 3600.0
# ... and at most this many: beyond it the oldest go, and the floor refuses anything as old.
MAX_APPLIED = 20_000


class StateError(HomeError):
    """The local state does not allow that."""


class State:
    """Load, query and change the state; every change is saved before the method returns."""

    def __init__(
        self,
        home: Home,
        listeners: list[Callable[[str], None]] | None = None,
        *,
        save: Callable[[], None] | None = None,
    ) -> None:
        self.home = home
        self._data: dict[str, Any] = self._load()
        # told the section's name after each saved change (the web app's live updates)
        self.listeners = listeners if listeners is not None else []
        self._save = save

    def _load(self) -> dict[str, Any]:
        data = self.home.read_json(self.home.state_file)
        if data is None:
            return {"format": FORMAT, **{s: {} for s in SECTIONS}}
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise HomeError(f"{self.home.state_file}: unknown state format")
        for s in SECTIONS:
            if not isinstance(data.setdefault(s, {}), dict):
                raise HomeError(f"{self.home.state_file}: section {s!r} is damaged")
        return data

    def encoded(self) -> bytes:
        """The whole state as the bytes of ``state.json`` (a consistent snapshot)."""
        return (json.dumps(self._data, indent=2, sort_keys=True) + "\n").encode()

    def save(self) -> None:
        if self._save is not None:
            self._save()
        else:
            self.home.write_json(self.home.state_file, self._data)

    def section(self, name: str) -> dict[str, Any]:
        """A deep copy of one section (callers change state through the methods below)."""
        return copy.deepcopy(self._data[name])

    def get(self, section: str, key: str) -> dict[str, Any] | None:
        found = self._data[section].get(key)
        return copy.deepcopy(found) if found is not None else None

    def put(self, section: str, key: str, record: dict[str, Any]) -> None:
        self._data[section][key] = copy.deepcopy(record)
        self.save()
        self._changed(section)

    def update(self, section: str, key: str, **changes: Any) -> dict[str, Any]:
        record = self._data[section].get(key)
        if record is None:
            raise StateError(f"no {section} entry {key!r}")
        record.update(copy.deepcopy(changes))
        self.save()
        self._changed(section)
        return copy.deepcopy(record)

    def delete(self, section: str, key: str) -> None:
        if self._data[section].pop(key, None) is not None:
            self.save()
            self._changed(section)

    def _changed(self, section: str) -> None:
        for listener in self.listeners:
            listener(section)

    def items(self, section: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, value in sorted(self._data[section].items()):
            yield key, copy.deepcopy(value)

    # -- exactly-once application of peer messages -------------------------------------------------

    def applied(self, message_id: str) -> bool:
        return message_id in self._data["applied"]

    def too_old(self, at: float, now: float) -> bool:
        """A message sent at ``at`` can no longer be told from a replay: refuse it."""
        floor = self._data.get("applied_floor")
        return at < now - APPLIED_RETENTION or (floor is not None and at <= float(floor))

    def mark_applied(self, message_id: str, now: float, at: float | None = None) -> None:
        """Remember ``message_id`` (sent at ``at``); keep at most ``MAX_APPLIED`` ids."""
        applied = self._data["applied"]
        applied[message_id] = now if at is None else min(float(at), now)
        cutoff = now - APPLIED_RETENTION
        if len(applied) > MAX_APPLIED or self._pruned_at + 3600.0 < now:
            self._pruned_at = now
            for old in [k for k, t in applied.items() if t < cutoff]:
                del applied[old]
        if len(applied) > MAX_APPLIED:
            excess = len(applied) - MAX_APPLIED * 9 // 10
            oldest = heapq.nsmallest(excess, applied.items(), key=lambda kv: kv[1])
            for k, _ in oldest:
                del applied[k]
            floor = max(t for _, t in oldest)
            self._data["applied_floor"] = max(float(self._data.get("applied_floor") or floor), floor)
        self.save()

    _pruned_at = float("-inf")

    def count(self, section: str, where: Callable[[dict[str, Any]], bool]) -> int:
        """How many records of ``section`` satisfy ``where`` (no copies made)."""
        return sum(1 for r in self._data[section].values() if where(r))
