"""Token buckets per key (a source address, a user name), in a table bounded in entries.

``RateLimits(burst, interval)``: each key may spend ``burst`` tokens at once
and gets one back every ``interval`` seconds. ``allow(key)`` spends one if it
can. The table holds at most ``max_keys`` buckets: when it is full, buckets
that have refilled (they say nothing a fresh one would not) go first, then the
least recently used (down to 90 % of the table). ``retry_after(key)`` says how long until the next token.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable


class RateLimits:
    def __init__(
        self, burst: float, interval: float, *, clock: Callable[[], float], max_keys: int = 4096
    ) -> None:
        if burst < 1 or interval <= 0 or max_keys < 1:
            raise ValueError("burst >= 1, interval > 0 and max_keys >= 1 are needed")
        self.burst = float(burst)
        self.interval = float(interval)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: collections.OrderedDict[Hashable, tuple[float, float]] = collections.OrderedDict()
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: Hashable, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self.burst
        tokens, at = entry
        return min(self.burst, tokens + max(0.0, now - at) / self.interval)

    def allow(self, key: Hashable) -> bool:
        now = self.clock()
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            self._buckets.move_to_end(key)
            self.refused += 1
            return False
        self._buckets[key] = (tokens - 1.0, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._evict(now)
        return True

    def retry_after(self, key: Hashable) -> float:
        """Seconds until ``key`` has a token again (0 if it has one now)."""
        return max(0.0, (1.0 - self._tokens(key, self.clock())) * self.interval)

    def _evict(self, now: float) -> None:
        """Trim to 90 % of ``max_keys`` (so that a flood of new keys scans the table rarely)."""
        target = max(1, self.max_keys * 9 // 10)
        full = [
            k
            for k, (tokens, at) in self._buckets.items()
            if tokens + (now - at) / self.interval >= self.burst
        ]
        for key in full[: len(self._buckets) - target]:
            del self._buckets[key]
        while len(self._buckets) > target:
            self._buckets.popitem(last=False)
