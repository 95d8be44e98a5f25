"""Coordinator election: Gholipour's improved bully, falling back to Kordafshari's modified bully.

An explicit state machine (drawn in docs/cluster-membership.md). ``Election``
holds the role, the term and the coordinator; ``ClusterNode`` feeds it
decoded messages, failure-detector verdicts and stalls, and carries out what
it decides (sending, scheduling) through a small host interface.

Priority
    ``priority_key(load, id) = (load, id)``, smaller is better: the lower
    load wins and, at equal load, the *lower* server id. Unknown load counts
    as infinite (worst). The load is compared, never divided by.

Terms
    Every successful claim raises the term. Terms are ballot numbers: server
    ``i`` only ever claims terms ``t`` with ``t % stride == i % stride``
    (``stride`` = the largest configured server id + 1), the next one above
    every term it has seen. Two servers therefore can never claim the same
    term, so there is at most one coordinator per term by construction, and
    a claim whose term is not owned by its sender is rejected. Every message
    carries the sender's term; a coordinator that sees a higher term steps
    down, and claims with an older term than the receiver's are rejected.

Failover
    When the coordinator is suspected, the detecting server takes the
    coordinator's last published successor list (ordered by priority), skips
    the dead, and sends SUCCEED to the first live successor (or claims at once
    if that is itself); the successor claims the next term and announces
    COORDINATOR to the live servers. If no announcement comes within
    ``election_timeout``, the next live successor is tried. Without a usable
    list it runs Kordafshari's election: ELECTION to every live server with a
    better priority, which ANSWER with their load (without starting elections
    of their own); after ``election_timeout`` (or once all answered) it sends
    GRANT to the best, which claims and announces; a granted server that does
    not announce within ``election_timeout`` is replaced by the next best; if
    none remains, or nobody better answered, the initiator claims itself.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Protocol

from twisted.logger import Logger

from cloudp2p.membership.messages import (
    BAD_TERM_OWNER,
    STALE_TERM,
    Answer,
    Coordinator,
    Envelope,
    Grant,
    Heartbeat,
    Succeed,
)
from cloudp2p.membership.messages import Election as ElectionMessage


class State(enum.Enum):
    STOPPED = "stopped"
    JOINING = "joining"  # learning the coordinator and term from peers (after start, or after a stall)
    FOLLOWING = "following"  # a live coordinator is known
    LEADING = "leading"  # this server is the coordinator
    AWAITING_SUCCESSOR = "awaiting_successor"  # sent SUCCEED, waiting for the successor's announcement
    ELECTING = "electing"  # Kordafshari: sent ELECTION, collecting ANSWERs
    GRANTING = "granting"  # Kordafshari: sent GRANT, waiting for the granted server's announcement


def priority_key(load: float | None, server_id: int) -> tuple[float, int]:
    """Sort key, smaller = higher priority: lower load first, then lower server id."""
    return (math.inf if load is None else load, server_id)


def term_owner(term: int, stride: int) -> int | None:
    """The residue a claimant of ``term`` must have (its id modulo ``stride``); None for term 0."""
    return None if term <= 0 else term % stride


def next_term(current: int, server_id: int, stride: int) -> int:
    """The smallest term above ``current`` that ``server_id`` may claim."""
    residue = server_id % stride
    return current + 1 + (residue - current - 1) % stride


_FAILOVER = (State.AWAITING_SUCCESSOR, State.ELECTING, State.GRANTING)


class Host(Protocol):
    """What the state machine needs from the node around it."""

    server_id: int
    members: frozenset[int]
    clock: Any
    stride: int
    election_timeout: float
    failure_timeout: float

    def send(self, peer: int, message: Any) -> None: ...
    def announce(self, message: Any, exclude: set[int]) -> None: ...
    def is_alive(self, peer: int) -> bool: ...
    def live_peers(self) -> set[int]: ...
    def load_of(self, server_id: int) -> float | None: ...
    def successors(self) -> list[int]: ...
    def emit(self, *event: Any) -> None: ...
    def changed(self) -> None: ...
    def count_drop(self, reason: str) -> None: ...


class Election:
    """The election role of one server."""

    log = Logger()

    def __init__(self, host: Host) -> None:
        self.host = host
        self.me = host.server_id
        self.state = State.STOPPED
        self.term = 0
        self.coordinator: int | None = None
        self.successors: tuple[int, ...] = ()  # published by the coordinator of ``successors_term``
        self.successors_term = 0
        self.elections_started = 0
        self.claims = 0
        self._timer: Any = None
        self._failed: int | None = None  # the coordinator whose failure is being handled
        self._tried: set[int] = set()
        self._last_tried: int | None = None
        self._followed: tuple[int, int | None] = (0, None)
        self._asked: set[int] = set()
        self._answers: dict[int, float] = {}
        self._candidates: list[int] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._join()

    def stop(self) -> None:
        self._cancel_timer()
        self.state = State.STOPPED

    def stalled(self) -> None:
        """This process did not run for longer than the failure timeout (SIGSTOP, blocked reactor).

        A coordinator may have been replaced meanwhile: stop acting as one and
        re-learn the term from the peers before leading again.
        """
        self.host.emit("stall")
        if self.state is State.LEADING:
            self.host.emit("step_down", self.term)
            self._join()
            self.host.changed()

    @property
    def heartbeat_coordinator(self) -> int | None:
        """Whom this server's heartbeats name: its coordinator while following or leading, else None."""
        return self.coordinator if self.state in (State.FOLLOWING, State.LEADING) else None

    # -- inputs ---------------------------------------------------------------------------------

    def receive(self, envelope: Envelope) -> bool:
        """Handle a message's term and, for election messages, the message. False if it was stale."""
        sender, term, message = envelope.sender, envelope.term, envelope.message
        if isinstance(message, Heartbeat):
            return self._heartbeat(sender, term, message)
        if isinstance(message, Coordinator):
            return self._coordinator(sender, term, message)
        if term > self.term:
            self._higher_term(term, self._claimant(term))
        if isinstance(message, Succeed):
            self._succeed(sender, term, message)
        elif isinstance(message, ElectionMessage):
            self.host.send(sender, Answer(load=self.host.load_of(self.me) or 0.0))
        elif isinstance(message, Answer):
            self._answer(sender, message)
        elif isinstance(message, Grant):
            self._grant(sender, term)
        return term >= self.term

    def suspect(self, peer: int) -> None:
        if peer == self.coordinator and self.state is State.FOLLOWING:
            self._coordinator_failed()
        elif self.state is State.AWAITING_SUCCESSOR and peer in self._tried and peer == self._last_tried:
            self._try_successor()

    # -- term bookkeeping -----------------------------------------------------------------------

    def _claimant(self, term: int) -> int | None:
        """Who claimed ``term``: only its owner can, so a term names its coordinator."""
        owner = term_owner(term, self.host.stride)
        return owner if owner is not None and owner in self.host.members else None

    def _owns(self, claimant: int, term: int) -> bool:
        return term_owner(term, self.host.stride) == claimant % self.host.stride

    def _higher_term(self, term: int, coordinator: int | None) -> None:
        """A term above ours exists; follow its coordinator if known, else find it out."""
        was_leading = self.state is State.LEADING
        self.term = term
        if was_leading:
            self.host.emit("step_down", term)
        if coordinator is None:
            self.coordinator = None
            if self.state in (State.FOLLOWING, State.LEADING):
                self._join()
            self.host.changed()
        elif coordinator == self.me:
            # A term claimed by an earlier life of this server: claim afresh rather than lead blind.
            self._claim()
        else:
            self._follow(coordinator)

    def _heartbeat(self, sender: int, term: int, hb: Heartbeat) -> bool:
        c = hb.coordinator
        if c is not None and not self._owns(c, term):
            self.host.count_drop(BAD_TERM_OWNER)
            return False
        if term < self.term:
            return False
        if term > self.term:
            self._higher_term(term, c if c is not None else self._claimant(term))
        elif c is not None and c != self.me:
            # Same term. A joining server learns who leads it; a server in failover that hears
            # the coordinator it suspected name itself sees it is alive after all.
            if self.state is State.JOINING or (c == sender and self.state in _FAILOVER):
                self._follow(c)
        if sender == self.coordinator == c:
            self.successors, self.successors_term = hb.successors, term
        return True

    def _coordinator(self, sender: int, term: int, message: Coordinator) -> bool:
        if not self._owns(sender, term):
            self.host.count_drop(BAD_TERM_OWNER)
            return False
        if term < self.term:
            self.host.count_drop(STALE_TERM)
            return False
        if term > self.term or self.coordinator != sender or self.state is not State.FOLLOWING:
            if term > self.term:
                self._higher_term(term, sender)
            else:
                self._follow(sender)
        self.successors, self.successors_term = message.successors, term
        return True

    # -- transitions ----------------------------------------------------------------------------

    def _enter(self, state: State, timeout: float | None = None, on_timeout: Any = None) -> None:
        self._cancel_timer()
        self.state = state
        if timeout is not None:
            self._timer = self.host.clock.callLater(timeout, on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _join(self) -> None:
        self.host.emit("joining", self.term)
        self._enter(State.JOINING, self.host.failure_timeout, self._join_timeout)

    def _join_timeout(self) -> None:
        if self.coordinator == self.me and self._owns(self.me, self.term):
            self._enter(State.LEADING)
            self.host.emit("resume", self.term)
            self.host.changed()
        elif self.coordinator is not None and self.host.is_alive(self.coordinator):
            self._follow(self.coordinator)
        else:
            self._coordinator_failed()

    def _follow(self, coordinator: int) -> None:
        changed = (self.term, coordinator) != self._followed or self.state is not State.FOLLOWING
        self._followed = (self.term, coordinator)
        self.coordinator = coordinator
        self._enter(State.FOLLOWING)
        if changed:
            self.host.emit("follow", self.term, coordinator)
            self.host.changed()
        if not self.host.is_alive(coordinator):
            self._coordinator_failed()

    def _claim(self) -> None:
        self.term = next_term(self.term, self.me, self.host.stride)
        self.coordinator = self.me
        self.claims += 1
        self._enter(State.LEADING)
        self.host.emit("claim", self.term)
        successors = tuple(self.host.successors())
        self.successors, self.successors_term = successors, self.term
        exclude = {self._failed} if self._failed is not None else set()
        self.host.announce(Coordinator(successors=successors), exclude)
        self._failed = None
        self.host.changed()

    # -- Gholipour: successor list ----------------------------------------------------------------

    def _coordinator_failed(self) -> None:
        self._failed = self.coordinator
        if self.coordinator is None:
            self.host.emit("no_coordinator", self.term)
        else:
            self.host.emit("coordinator_failed", self.coordinator, self.term)
        self.coordinator = None
        self._tried = set()
        self._last_tried = None
        self.host.changed()
        self._try_successor()

    def _usable_successors(self) -> list[int]:
        if self.successors_term != self.term:
            return []
        return [
            s for s in self.successors
            if s != self._failed and s not in self._tried and (s == self.me or self.host.is_alive(s))
        ]

    def _try_successor(self) -> None:
        candidates = self._usable_successors()
        if not candidates:
            self._start_bully()
            return
        first = candidates[0]
        if first == self.me:
            self._claim()
            return
        self._tried.add(first)
        self._last_tried = first
        self.host.emit("contact_successor", first, self.term)
        self.host.send(first, Succeed(failed=self._failed or first))
        self._enter(State.AWAITING_SUCCESSOR, self.host.election_timeout, self._successor_timeout)

    def _successor_timeout(self) -> None:
        self._try_successor()

    def _succeed(self, sender: int, term: int, message: Succeed) -> None:
        if self.state is State.LEADING or term < self.term:
            return  # already leading (the sender hears it from our announcement or heartbeats), or stale
        self._failed = message.failed if message.failed != self.me else None
        self._claim()

    # -- Kordafshari: modified bully --------------------------------------------------------------

    def _start_bully(self) -> None:
        self.elections_started += 1
        self.host.emit("election_started", self.term)
        my_key = priority_key(self.host.load_of(self.me), self.me)
        better = {p for p in self.host.live_peers() if priority_key(self.host.load_of(p), p) < my_key}
        better.discard(self._failed)
        if not better:
            self._claim()
            return
        self._asked = better
        self._answers = {}
        for peer in sorted(better):
            self.host.send(peer, ElectionMessage())
        self._enter(State.ELECTING, self.host.election_timeout, self._answers_done)

    def _answer(self, sender: int, message: Answer) -> None:
        if self.state is not State.ELECTING or sender not in self._asked:
            return
        self._answers[sender] = message.load
        if set(self._answers) >= self._asked:
            self._answers_done()

    def _answers_done(self) -> None:
        self._candidates = sorted(self._answers, key=lambda p: priority_key(self._answers[p], p))
        self._grant_next()

    def _grant_next(self) -> None:
        while self._candidates:
            best = self._candidates.pop(0)
            if self.host.is_alive(best):
                self.host.emit("grant", best, self.term)
                self.host.send(best, Grant())
                self._enter(State.GRANTING, self.host.election_timeout, self._grant_next)
                return
        self._claim()

    def _grant(self, sender: int, term: int) -> None:
        if self.state is State.LEADING:
            self.host.send(sender, Coordinator(successors=self.successors))
        elif term >= self.term:
            self._claim()
