"""A heartbeat failure detector on an injected clock.

Each peer has a deadline ``timeout`` seconds after it was last heard from;
when the deadline passes the peer is *suspected* and ``on_suspect(peer)`` is
called; hearing from it again clears the suspicion and calls
``on_alive(peer)``.

A deadline that fires much later than it was due means this process did not
run (SIGSTOP, a blocked reactor): the peer's silence is then unknowable, so
the detector gives it a fresh deadline instead of suspecting it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.logger import Logger


class FailureDetector:
    log = Logger()

    def __init__(
        self,
        clock: Any,
        timeout: float,
        peers: Iterable[int],
        *,
        on_suspect: Callable[[int], None],
        on_alive: Callable[[int], None],
        late_tolerance: float | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("the failure timeout must be positive")
        self.clock = clock
        self.timeout = timeout
        self.late_tolerance = timeout / 2 if late_tolerance is None else late_tolerance
        self.peers = tuple(peers)
        self.on_suspect = on_suspect
        self.on_alive = on_alive
        self._last_seen: dict[int, float | None] = {p: None for p in self.peers}
        self._suspected: set[int] = set()
        self._deadlines: dict[int, Any] = {}
        self.late_deadlines = 0

    def start(self) -> None:
        """Give every peer one timeout from now to be heard from."""
        for peer in self.peers:
            self._arm(peer)

    def stop(self) -> None:
        for call in self._deadlines.values():
            if call.active():
                call.cancel()
        self._deadlines.clear()

    def heard(self, peer: int) -> None:
        if peer not in self._last_seen:
            return
        self._last_seen[peer] = self.clock.seconds()
        self._arm(peer)
        if peer in self._suspected:
            self._suspected.discard(peer)
            self.on_alive(peer)

    def grace(self) -> None:
        """After this process stalled: give every unsuspected peer a fresh timeout from now."""
        for peer in self.peers:
            if peer not in self._suspected:
                self._arm(peer)

    def is_alive(self, peer: int) -> bool:
        return peer in self._last_seen and peer not in self._suspected

    def alive(self) -> set[int]:
        return {p for p in self.peers if p not in self._suspected}

    def suspected(self) -> set[int]:
        return set(self._suspected)

    def last_seen(self, peer: int) -> float | None:
        return self._last_seen.get(peer)

    def _arm(self, peer: int) -> None:
        due = self.clock.seconds() + self.timeout
        call = self._deadlines.get(peer)
        if call is not None and call.active():
            call.cancel()
        self._deadlines[peer] = self.clock.callLater(self.timeout, self._expired, peer, due)

    def _expired(self, peer: int, due: float) -> None:
        late = self.clock.seconds() - due
        if late > self.late_tolerance:
            # We were not running; we cannot tell whether the peer was silent.
            self.late_deadlines += 1
            self._arm(peer)
            return
        if peer not in self._suspected:
            self._suspected.add(peer)
            self.on_suspect(peer)
