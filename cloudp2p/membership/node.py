"""``ClusterNode``: one server's view of the cluster.

It owns the cluster socket's protocol (framing, ``protocol.py``), the failure
detector (``failure.py``), the election state machine (``election.py``) and
the heartbeat loop, and carries the router's own messages (``send_app``)
over the same authenticated socket.

Heartbeats go to every configured peer each ``heartbeat_interval`` (alive or
not, so a returning server learns the state at once) and carry the sender's
load, the coordinator it follows and, from the coordinator, the successor
list. A server that hears from a peer it thought dead, or a message from an
older term, answers at once with a heartbeat (at most one per interval per
peer) so restarts and partitions heal in one round trip.

Stalls: the heartbeat loop notes when it last ran. If more than
``failure_timeout - heartbeat_interval`` passed since (SIGSTOP, a blocked
reactor), the peers may have declared this server dead, so
``is_coordinator`` is False from that instant and the election machine
steps down and re-learns the term before leading again.
"""

from __future__ import annotations

import collections
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.logger import Logger

from cloudp2p.config import format_hostport
from cloudp2p.membership.election import Election, State, priority_key
from cloudp2p.membership.failure import FailureDetector
from cloudp2p.membership.messages import (
    MALFORMED,
    Answer,
    App,
    BadMessageError,
    Codec,
    Envelope,
    Heartbeat,
    Message,
)
from cloudp2p.membership.protocol import ClusterProtocol

Address = tuple[str, int]
_LOGGED_EVENTS = {"claim", "follow", "step_down", "coordinator_failed", "suspect", "alive", "stall", "resume"}


class ClusterNode:
    """Membership, failure detection, load and election for one server.

    ``peers`` maps every *other* server's id to its cluster address.
    ``load_source()`` returns this server's load (see ``load.LoadMeter``).
    Bind ``node.protocol`` to the cluster socket, then call ``start()``.
    """

    log = Logger()

    def __init__(
        self,
        server_id: int,
        peers: dict[int, Address],
        secret: bytes,
        *,
        clock: Any,
        load_source: Callable[[], float],
        heartbeat_interval: float = 0.2,
        failure_timeout: float = 1.0,
        election_timeout: float = 0.3,
        incarnation: int | None = None,
        max_events: int = 1000,
    ) -> None:
        if not isinstance(server_id, int) or server_id < 1:
            raise ValueError(f"server_id must be an integer >= 1, got {server_id!r}")
        if server_id in peers:
            raise ValueError(f"server {server_id} lists itself as a peer")
        if not 0 < heartbeat_interval <= failure_timeout / 2:
            raise ValueError("heartbeat_interval must be positive and at most half of failure_timeout")
        if not 0 < election_timeout <= failure_timeout:
            raise ValueError("election_timeout must be positive and at most failure_timeout")
        self.server_id = server_id
        self.peers: dict[int, Address] = {int(k): (v[0], int(v[1])) for k, v in peers.items()}
        self.clock = clock
        self.load_source = load_source
        self.heartbeat_interval = heartbeat_interval
        self.failure_timeout = failure_timeout
        self.election_timeout = election_timeout
        self.stall_threshold = max(failure_timeout - heartbeat_interval, failure_timeout / 2)
        self.members = frozenset(self.peers) | {server_id}
        self.stride = max(self.members) + 1
        # Start time in microseconds, + 1 so that it is never 0 (an echo of 0 means "not known yet").
        self.incarnation = incarnation if incarnation is not None else int(clock.seconds() * 1_000_000) + 1
        if not isinstance(self.incarnation, int) or self.incarnation < 1:
            raise ValueError(f"incarnation must be an integer >= 1, got {self.incarnation!r}")
        self.codec = Codec(secret, self.members, me=server_id)
        self.protocol = ClusterProtocol(
            self.codec, self._receive, incarnation=self.incarnation, on_unfresh=self._unfresh,
        )
        self.detector = FailureDetector(
            clock, failure_timeout, self.peers, on_suspect=self._suspect, on_alive=self._alive,
        )
        self.election = Election(self)
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.node_dropped: Counter[str] = Counter()
        self.stalls = 0
        self.events: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=max_events)
        self._event_observers: list[Callable[[tuple[Any, ...]], None]] = []
        self._change_callbacks: list[Callable[[], None]] = []
        self._app_handlers: dict[str, Callable[[int, dict], None]] = {}
        self._app_message_handlers: dict[str, Callable[[Envelope], None]] = {}
        self._loads: dict[int, float] = {}
        self._own_load = 0.0
        self._seq = 0
        self._loop: task.LoopingCall | None = None
        self._last_tick: float | None = None
        self._last_prompt: dict[int, float] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start heartbeats and join: learn the coordinator and term from the peers (or elect)."""
        if self._loop is not None:
            return
        self._own_load = self._read_load()
        self._last_tick = self.clock.seconds()
        self.detector.start()
        self.election.start()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.heartbeat_interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self.detector.stop()
        self.election.stop()

    # -- the public view ------------------------------------------------------------------------

    @property
    def term(self) -> int:
        return self.election.term

    @property
    def coordinator_id(self) -> int | None:
        """The coordinator this server follows or is; None while unknown or electing."""
        e = self.election
        return e.coordinator if e.state in (State.FOLLOWING, State.LEADING) else None

    @property
    def state(self) -> State:
        return self.election.state

    @property
    def is_coordinator(self) -> bool:
        """True only while this server leads the current term and has not stalled since its last heartbeat."""
        return self.election.state is State.LEADING and not self._stalled_now()

    def live_members(self) -> list[int]:
        """Ids believed alive, this server included, ascending."""
        return sorted(self.detector.alive() | {self.server_id})

    def ranked_members(self) -> list[int]:
        """Live ids, best priority first (lower load first, then lower id)."""
        return sorted(self.live_members(), key=lambda m: priority_key(self.load_of(m), m))

    def load_of(self, server_id: int) -> float | None:
        if server_id == self.server_id:
            return self._own_load
        return self._loads.get(server_id)

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever the coordinator, the term or the live membership changes."""
        self._change_callbacks.append(callback)

    def on_event(self, observer: Callable[[tuple[Any, ...]], None]) -> None:
        """Call ``observer(event)`` for every event the state machine emits (tests, tracing)."""
        self._event_observers.append(observer)

    def on_app(self, kind: str, handler: Callable[[int, dict], None]) -> None:
        """Route app messages of ``kind`` to ``handler(sender_id, body)``."""
        if kind in self._app_handlers or kind in self._app_message_handlers:
            raise ValueError(f"app message kind {kind!r} already has a handler")
        self._app_handlers[kind] = handler

    def on_app_message(self, kind: str, handler: Callable[[Envelope], None]) -> None:
        """Like ``on_app`` but the handler gets the whole ``Envelope`` (sender, term, message.body)."""
        if kind in self._app_handlers or kind in self._app_message_handlers:
            raise ValueError(f"app message kind {kind!r} already has a handler")
        self._app_message_handlers[kind] = handler

    def send_app(self, peer_id: int, kind: str, body: dict) -> None:
        """Send an authenticated app message carrying this server's term.

        To this server's own id it is delivered locally on the next reactor
        turn. Raises ``BadMessageError``/``MessageTooLargeError`` if ``body``
        is not JSON or does not fit one datagram; ``ValueError`` for an
        unknown peer. Delivery is best effort (UDP): retry at the caller.
        """
        message = self._app(kind, body)
        if peer_id == self.server_id:
            envelope = self._envelope(message, self.server_id)
            self.codec.encode(envelope)  # same checks as for a remote peer
            self.clock.callLater(0, self._dispatch_app, envelope)
            return
        if peer_id not in self.peers:
            raise ValueError(f"server {peer_id} is not a peer")
        self.send(peer_id, message)

    def broadcast_app(self, kind: str, body: dict) -> None:
        """``send_app`` to every peer (not to this server)."""
        message = self._app(kind, body)
        self.codec.encode(self._envelope(message, self.server_id))  # raises before anything is sent
        for peer in self.peers:
            self.send(peer, message)

    def status(self) -> dict[str, Any]:
        now = self.clock.seconds()
        members = []
        for member in sorted(set(self.peers) | {self.server_id}):
            seen = now if member == self.server_id else self.detector.last_seen(member)
            address = self.peers.get(member) if member != self.server_id else self._own_address()
            members.append({
                "id": member,
                "address": format_hostport(address) if address else None,
                "alive": member == self.server_id or self.detector.is_alive(member),
                "load": self.load_of(member),
                "last_seen_ago": None if seen is None else round(now - seen, 3),
            })
        dropped = Counter(self.protocol.dropped)
        dropped.update(self.node_dropped)
        return {
            "id": self.server_id,
            "state": self.state.value,
            "term": self.term,
            "coordinator": self.coordinator_id,
            "is_coordinator": self.is_coordinator,
            "incarnation": self.incarnation,
            "ranked": self.ranked_members(),
            "successors": list(self.election.successors),
            "members": members,
            "counters": {
                "sent": dict(self.sent),
                "received": dict(self.received),
                "dropped": dict(dropped),
                "send_errors": self.protocol.send_errors,
                "elections": self.election.elections_started,
                "claims": self.election.claims,
                "stalls": self.stalls,
                "late_deadlines": self.detector.late_deadlines,
            },
        }

    def _own_address(self) -> Address | None:
        transport = self.protocol.transport
        if transport is None:
            return None
        host = transport.getHost()
        return (host.host, host.port)

    # -- the host interface of the election machine ---------------------------------------------

    def send(self, peer: int, message: Message) -> None:
        address = self.peers.get(peer)
        if address is None:
            return
        datagram = self.codec.encode(self._envelope(message, peer))
        if self.protocol.send(datagram, address):
            self.sent[message.TYPE] += 1

    def announce(self, message: Message, exclude: set[int]) -> None:
        """Send to every live peer except ``exclude`` (heartbeats reach the others)."""
        for peer in sorted(self.detector.alive() - exclude):
            self.send(peer, message)

    def is_alive(self, peer: int) -> bool:
        return peer == self.server_id or self.detector.is_alive(peer)

    def live_peers(self) -> set[int]:
        return self.detector.alive()

    def successors(self) -> list[int]:
        return [m for m in self.ranked_members() if m != self.server_id]

    def emit(self, *event: Any) -> None:
        self.events.append(event)
        if event[0] in _LOGGED_EVENTS:
            self.log.info("server {id}: {event}", id=self.server_id, event=" ".join(map(str, event)))
        for observer in list(self._event_observers):
            try:
                observer(event)
            except Exception:
                self.log.failure("an event observer failed")

    def changed(self) -> None:
        for callback in list(self._change_callbacks):
            try:
                callback()
            except Exception:
                self.log.failure("an on_change callback failed")

    def count_drop(self, reason: str) -> None:
        self.node_dropped[reason] += 1

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _app(kind: str, body: dict) -> App:
        try:
            return App(kind=kind, body=body)
        except (TypeError, ValueError) as e:
            raise BadMessageError(MALFORMED, str(e)) from None

    def _envelope(self, message: Message, recipient: int) -> Envelope:
        self._seq += 1
        return Envelope(
            sender=self.server_id, recipient=recipient, incarnation=self.incarnation, seq=self._seq,
            term=self.term, message=message, echo=self.protocol.freshness.echo_for(recipient),
        )

    def _read_load(self) -> float:
        try:
            load = float(self.load_source())
        except Exception:
            self.log.failure("the load source failed; keeping the previous load")
            return self._own_load
        return load if math.isfinite(load) and load >= 0 else self._own_load

    def _heartbeat(self) -> Heartbeat:
        successors: tuple[int, ...] = ()
        if self.election.state is State.LEADING:
            successors = tuple(self.successors())
            self.election.successors, self.election.successors_term = successors, self.term
        return Heartbeat(
            load=self._own_load, coordinator=self.election.heartbeat_coordinator, successors=successors,
        )

    def _stalled_now(self) -> bool:
        return self._last_tick is not None and self.clock.seconds() - self._last_tick > self.stall_threshold

    def _check_stall(self) -> None:
        if self._stalled_now():
            self.stalls += 1
            self._last_tick = self.clock.seconds()
            self.detector.grace()
            self.election.stalled()

    def _tick(self) -> None:
        self._check_stall()
        self._last_tick = self.clock.seconds()
        self._own_load = self._read_load()
        heartbeat = self._heartbeat()
        for peer in self.peers:
            self.send(peer, heartbeat)

    def _prompt(self, peer: int) -> None:
        """Answer a returning or stale peer with a heartbeat now, at most once per interval."""
        now = self.clock.seconds()
        last = self._last_prompt.get(peer)
        if last is not None and now - last < self.heartbeat_interval:
            return
        self._last_prompt[peer] = now
        self.send(peer, self._heartbeat())

    def _receive(self, envelope: Envelope, _address: Address) -> None:
        if self.election.state is State.STOPPED:
            self.count_drop("stopped")
            return
        self._check_stall()
        sender, message = envelope.sender, envelope.message
        if sender == self.server_id:
            self.count_drop("own_message")
            return
        self.received[message.TYPE] += 1
        returning = not self.detector.is_alive(sender) or self.detector.last_seen(sender) is None
        self.detector.heard(sender)
        if isinstance(message, Heartbeat | Answer):
            self._loads[sender] = message.load
        current = self.election.receive(envelope)
        if not current:
            self._prompt(sender)
        elif returning:
            self._prompt(sender)
        if isinstance(message, App):
            self._dispatch_app(envelope)

    def _unfresh(self, envelope: Envelope) -> None:
        """An authentic datagram that does not echo our incarnation: the sender needs to learn it.

        Nothing of it is used (no liveness, no term, no load); the heartbeat we
        answer with echoes the sender's incarnation, and the sender's next
        datagram echoes ours. At most one answer per interval per peer.
        """
        if self.election.state is State.STOPPED or envelope.sender == self.server_id:
            return
        self._prompt(envelope.sender)

    def _dispatch_app(self, envelope: Envelope) -> None:
        message = envelope.message
        assert isinstance(message, App)
        handler = self._app_handlers.get(message.kind)
        whole = self._app_message_handlers.get(message.kind)
        if handler is None and whole is None:
            self.count_drop("no_app_handler")
            return
        try:
            if handler is not None:
                handler(envelope.sender, message.body)
            else:
                whole(envelope)
        except Exception:
            self.log.failure("the handler of app message {kind!r} failed", kind=message.kind)

    def _suspect(self, peer: int) -> None:
        self.emit("suspect", peer)
        self.election.suspect(peer)
        self.changed()

    def _alive(self, peer: int) -> None:
        self.emit("alive", peer)
        self.changed()
