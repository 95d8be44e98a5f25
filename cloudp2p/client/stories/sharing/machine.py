"""The share request's two state machines, in one place: the owner's inbox and the viewer's outbox.

Each request is a record of the state section ``inbox`` (requests made to us as an owner) or
``outbox`` (our requests to owners); its ``state`` moves only along these arrows (docs/client.md
draws them)::

    owner (inbox):    pending --accept--> sending --share_done--> accepted
                         |                   \\--viewer unreachable--> pending (accept again)
                         |                   \\--accept again--> sending
                         \\--reject--> rejected       accepted --more views accepted--> sending
    viewer (outbox):  sent | queued --share_offer--> fetching --fetched--> received
                         |  queued --delivered--> sent        \\--failed--> failed --resume--> fetching
                         \\--share_rejected--> rejected       received --new offer--> fetching
                         sent | queued --rights_update (more views given)--> received

Every move is checked (``StateError`` names the request, where it is and where it was asked to go),
saved, and told to the machine's observers as a ``Moved`` event: tests record them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from cloudp2p.client.state import State, StateError

INBOX_STATES = ("pending", "sending", "accepted", "rejected")
OUTBOX_STATES = ("sent", "queued", "fetching", "received", "rejected", "failed")

INBOX_MOVES: Mapping[str, frozenset[str]] = {
    "pending": frozenset({"sending", "rejected"}),
    "sending": frozenset({"accepted", "pending", "sending"}),
    "accepted": frozenset({"sending"}),  # more views granted on the same request
    "rejected": frozenset(),
}
OUTBOX_MOVES: Mapping[str, frozenset[str]] = {
    "sent": frozenset({"fetching", "rejected", "received"}),
    "queued": frozenset({"fetching", "rejected", "received", "sent"}),
    "fetching": frozenset({"received", "failed", "fetching"}),
    "failed": frozenset({"fetching", "received"}),
    "received": frozenset({"fetching", "received"}),
    "rejected": frozenset(),
}


@attrs.frozen
class Moved:
    """One transition: request ``key`` of ``section`` went from ``old`` to ``new``."""

    section: str
    key: str
    old: str
    new: str


class Machine:
    """The requests of one state section, moved only along ``moves``."""

    def __init__(self, section: str, moves: Mapping[str, frozenset[str]], state: Callable[[], State | None]):
        self.section = section
        self.moves = moves
        self._state = state
        self.observers: list[Callable[[Moved], None]] = []

    def move(self, key: str, new: str, **changes: Any) -> dict[str, Any]:
        """Move request ``key`` to ``new`` (with ``changes`` to its record); ``StateError`` if not allowed."""
        state = self._state()
        assert state is not None
        record = state.get(self.section, key)
        if record is None:
            raise StateError(f"no {self.section} entry {key!r}")
        old = record["state"]
        if new not in self.moves.get(old, frozenset()):
            raise StateError(f"request {key} is {old}; it cannot become {new}")
        updated = state.update(self.section, key, state=new, **changes)
        event = Moved(self.section, key, old, new)
        for observer in self.observers:
            observer(event)
        return updated


def inbox(state: Callable[[], State | None]) -> Machine:
    return Machine("inbox", INBOX_MOVES, state)


def outbox(state: Callable[[], State | None]) -> Machine:
    return Machine("outbox", OUTBOX_MOVES, state)
