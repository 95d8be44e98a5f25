"""What the daemon remembers of other users' directory records: bounded, keyed by canonical name.

Before issue 11 every spelling of a name (``Alice``, ``aLice``...) got its own
entry, kept for ever, and a made-up sender name in a peer datagram cost a
directory lookup each time. Here records are keyed by the directory's
canonical form (``username_key``: user names are case-insensitive), at most
``max_known`` of them (least recently used go first) for ``known_ttl``
seconds; names the directory does not know are remembered ``unknown_ttl``
seconds, at most ``max_unknown`` of them.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from cloudp2p.directory.validate import username_key


class _Table:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: collections.OrderedDict[str, tuple[float, Any]] = collections.OrderedDict()

    def get(self, key: str, now: float) -> Any:
        entry = self.items.get(key)
        if entry is None:
            return None
        until, value = entry
        if until <= now:
            del self.items[key]
            return None
        self.items.move_to_end(key)
        return value

    def put(self, key: str, value: Any, until: float) -> None:
        self.items[key] = (until, value)
        self.items.move_to_end(key)
        while len(self.items) > self.limit:
            self.items.popitem(last=False)


class LookupCache:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_known: int = 1024,
        known_ttl: float = 3600.0,
        max_unknown: int = 4096,
        unknown_ttl: float = 60.0,
    ) -> None:
        self.clock = clock
        self.known_ttl = known_ttl
        self.unknown_ttl = unknown_ttl
        self._known = _Table(max_known)
        self._unknown = _Table(max_unknown)

    def __len__(self) -> int:
        return len(self._known.items) + len(self._unknown.items)

    def get(self, username: str) -> dict[str, Any] | None:
        return self._known.get(username_key(username), self.clock())

    def put(self, record: dict[str, Any]) -> None:
        key = username_key(record["username"])
        self._unknown.items.pop(key, None)
        self._known.put(key, record, self.clock() + self.known_ttl)

    def forget(self, username: str) -> None:
        self._known.items.pop(username_key(username), None)

    def is_unknown(self, username: str) -> bool:
        return self._unknown.get(username_key(username), self.clock()) is not None

    def mark_unknown(self, username: str) -> None:
        self._unknown.put(username_key(username), True, self.clock() + self.unknown_ttl)
