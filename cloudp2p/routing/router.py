"""The server side of the request router.

A client sends every request to every server (``client_wire``). Each server
records it as *pending*. The coordinator *assigns* it to the live server with
the best priority, counting the assignments it has outstanding so that a burst
spreads over the servers; the assignment is broadcast to every peer so that any
of them can take over as coordinator knowing who runs what. The assigned server
runs the handler, replies to the client directly and broadcasts *done* with the
reply, so every server can answer a retry from its cache.

Lifecycle of one request id on one server (text diagram in docs/cluster-router.md)::

    (unknown) --request/assign--> PENDING --assign(to me)--> RUNNING --handler returns--> DONE
                                  PENDING --done from peer-----------------------------> DONE
                                  PENDING --pending_ttl------------------------------------> (forgotten)
                                  DONE    --done_ttl or size limit-------------------------> (forgotten)

The coordinator's tick assigns what is unassigned, re-assigns what was given to
a server that is no longer live, and re-sends assignments that take long (the
datagram may have been lost; the executor ignores an assignment it is already
running and answers one it finished from its cache).

Two guards keep a request from running on two live servers:
- an assignment carries the coordinator's term; an executor drops assignments
  from an older term than it knows;
- a server that notices its reactor stood still (SIGSTOP, a long stall) for
  more than ``stall_threshold`` drops assignments that were queued meanwhile
  and does not act as coordinator for a short grace period: during the stall the
  coordinator may have given the work to someone else. A current coordinator
  re-sends the assignment if it still stands.

The open boundary (docs/cluster-router.md): anyone can send to the client
socket, from any claimed address. So the router
- never answers what is not a request: replies, cookie challenges, non-JSON,
  and anything from a server address (two servers must not answer each other);
- does nothing for a source that has not proven its address with a cookie
  (``cookies.py``) but send it a challenge no larger than what it sent;
- keeps each reply for the address that sent the request, and answers a copy
  of the id from another address with ``request_id_taken``;
- rate-limits error replies and challenges per source, and ``sign_in`` and
  ``register`` per source and per user name (``rate_limited``);
- bounds its tables in entries and in bytes.

Busy: a handler run with ``ctx.may_refuse`` may answer ``Busy`` (its work
queue is long, ``cloudp2p/encryption/scheduling.py``). The executor then does
not reply; it broadcasts *busy* and the coordinator gives the request to a live
server that has not refused it, without counting an attempt. When every live
server has refused, the request is *forced* on the best of them, which must
queue it: a request bounces at most once per server.

``ClientProtocol`` only frames datagrams; ``Router`` decides.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from cloudp2p.config import at_least, in_range, seconds, setting
from cloudp2p.ops import Host, OpError, OpRegistry, RequestContext, is_busy
from cloudp2p.routing import client_wire as wire
from cloudp2p.routing.cookies import CookieJar
from cloudp2p.routing.ratelimit import RateLimits

ASSIGN = "rt.assign"
DONE = "rt.done"
BUSY = "rt.busy"
_UNKNOWN_LOAD = 1e9


class Membership(Protocol):
    """What the router needs of the membership component (``cloudp2p.membership.ClusterNode``).

    The router never imports ``membership/``: the server hands it its node, and this is all of
    the node the router may use (who leads which term, who is alive, their loads, app messages).
    """

    server_id: int

    @property
    def term(self) -> int: ...

    @property
    def coordinator_id(self) -> int | None: ...

    @property
    def is_coordinator(self) -> bool: ...

    def live_members(self) -> list[int]: ...

    def ranked_members(self) -> list[int]: ...

    def load_of(self, server_id: int) -> float | None: ...

    def on_change(self, callback: Callable[[], None]) -> None: ...

    def on_app(self, kind: str, handler: Callable[[int, dict], None]) -> None: ...

    def send_app(self, peer_id: int, kind: str, body: dict) -> None: ...

    def broadcast_app(self, kind: str, body: dict) -> None: ...

    def status(self) -> dict[str, Any]: ...


_count = at_least(1)
_bytes = at_least(65536, "bytes")


@attrs.frozen(kw_only=True)
class RouterSettings:
    """The router's limits: the ``setting`` fields are keys of ``[server]`` (``server.config``), the
    others the code's own tunables."""

    max_pending: int = setting(10_000, _count, "requests tracked and not yet done")
    pending_ttl: float = setting(60.0, seconds, "seconds before an unfinished request is forgotten")
    max_done: int = setting(20_000, _count, "replies kept to answer retries")
    done_ttl: float = setting(120.0, seconds, "seconds a reply is kept")
    max_running: int = setting(256, _count, "handlers running at once")
    resend_after: float = setting(0.5, seconds, "coordinator re-sends an unfinished assignment")
    outstanding_weight: float = setting(0.25, in_range(0, 100), "load per outstanding assignment")
    max_pending_bytes: int = setting(64 << 20, _bytes, "bytes of pending requests kept")
    max_done_bytes: int = setting(64 << 20, _bytes, "bytes of replies kept for retries")
    cookie_ttl: float = setting(600.0, in_range(10, 86400), "seconds an address cookie is good")
    auth_source_burst: int = setting(10, in_range(1, 100_000), "sign_in/register one source may send at once")
    auth_source_interval: float = setting(2.0, in_range(0.0001, 3600), "then one per this many seconds")
    auth_user_burst: int = setting(5, in_range(1, 100_000), "sign_in attempts for one user name at once")
    auth_user_interval: float = setting(10.0, in_range(0.0001, 3600), "then one per this many seconds")
    # the code's own tunables (not keys of the file)
    tick_interval: float = 0.1
    max_attempts: int = 6  # assignments to different servers before the request fails
    stall_threshold: float = 0.5  # reactor gap that counts as a stall (SIGSTOP)
    stall_grace: float = 0.3  # after a stall: no coordinator action, queued assignments dropped
    direct_ops: frozenset[str] = frozenset({"status", "ping", "recent_runs"})  # if registered
    journal_size: int = 400  # recent handler runs kept for ``recent_runs`` (fits one reply)
    error_burst: int = 20  # error replies to one source at once ...
    error_interval: float = 0.1  # ... then one per this many seconds
    challenge_burst: int = 10  # cookie challenges to one source at once ...
    challenge_interval: float = 0.2  # ... then one per this many seconds
    challenge_rate: float = 2000.0  # cookie challenges per second to all sources together
    auth_ops: frozenset[str] = frozenset({"sign_in", "register"})  # each runs scrypt
    rate_table_size: int = 4096  # keys per rate-limit table


@attrs.define
class Pending:
    request_id: str
    op: str
    args: dict[str, Any]
    client: tuple[str, int]
    first_seen: float
    assigned_to: int | None = None
    assigned_at: float = 0.0
    assign_term: int = -1
    attempts: int = 0
    from_client: bool = True  # False while known only from a peer's assignment
    size: int = 0  # bytes counted against max_pending_bytes
    refused: set[int] = attrs.field(factory=set)  # servers that answered busy
    forced: bool = False  # every live server refused: the assignee must queue it


@attrs.define
class Done:
    body: dict[str, Any]
    by: int | None
    at: float
    seen: bool = True  # this server has had the client's request (so a new copy is a retry)
    client: tuple[str, int] | None = None  # the only address the kept reply goes to
    size: int = 0  # bytes counted against max_done_bytes


class ClientProtocol(DatagramProtocol):
    """Frames client datagrams; the router decides what to do with them."""

    maxPacketSize = wire.MAX_DATAGRAM + 1024
    noisy = False  # no log line per start/stop

    def __init__(self, router: Router) -> None:
        self.router = router

    def startProtocol(self) -> None:
        self.router.attach_client_transport(self.transport)

    def stopProtocol(self) -> None:
        self.router.attach_client_transport(None)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            client = (addr[0], int(addr[1]))
            try:
                obj = wire.load_datagram(data)
            except wire.WireError:
                obj = None
            self.router.datagram_received(obj, len(data), client)
        except Exception:
            # Never raise out of datagramReceived: a bug here must not close the listener.
            self.router.counters["internal_errors"] += 1
            self.router.log.failure("unexpected error handling a client datagram from {addr}", addr=addr)


class Router:
    """Decides, for every request id, who runs it, and keeps the reply for retries."""

    log = Logger()

    def __init__(
        self,
        node: Membership,
        registry: OpRegistry,
        *,
        clock: IReactorTime,
        server: Host | None = None,
        settings: RouterSettings | None = None,
        wall: Callable[[], float] = time.time,
        cookie_key: bytes | None = None,
    ) -> None:
        self.node = node
        self.id: int = node.server_id
        self.registry = registry
        self.clock = clock
        self.server = server
        self.settings = settings or RouterSettings()
        self.wall = wall
        # (request id, op, wall-clock start) of the last handler runs: what ran here, and when.
        self.journal: collections.deque[tuple[str, str, float]] = collections.deque(
            maxlen=self.settings.journal_size
        )
        self._transport: Any = None
        self._pending: collections.OrderedDict[str, Pending] = collections.OrderedDict()
        self._done: collections.OrderedDict[str, Done] = collections.OrderedDict()
        self._pending_bytes = 0
        self._done_bytes = 0
        settings = self.settings
        self.cookies = CookieJar(cookie_key, ttl=settings.cookie_ttl, wall=wall)
        # Sources never answered: this server's sockets and its peers' (set by the server once bound).
        self.server_addresses: set[tuple[str, int]] = set()
        now = clock.seconds
        size = settings.rate_table_size
        self._error_limits = RateLimits(
            settings.error_burst, settings.error_interval, clock=now, max_keys=size
        )
        self._challenge_limits = RateLimits(
            settings.challenge_burst, settings.challenge_interval, clock=now, max_keys=size
        )
        self._challenge_total = RateLimits(
            max(1.0, settings.challenge_rate / 10), 1.0 / settings.challenge_rate, clock=now, max_keys=1
        )
        self._auth_sources = RateLimits(
            settings.auth_source_burst, settings.auth_source_interval, clock=now, max_keys=size
        )
        self._auth_users = RateLimits(
            settings.auth_user_burst, settings.auth_user_interval, clock=now, max_keys=size
        )
        self._running: dict[str, defer.Deferred[Any]] = {}
        self._outstanding: collections.Counter[int] = collections.Counter()
        self.counters: collections.Counter[str] = collections.Counter()
        self.handled_here: collections.Counter[str] = collections.Counter()  # op -> runs on this server
        self.handled_by: collections.Counter[int] = collections.Counter()  # server -> replies learnt
        self._loop: task.LoopingCall | None = None
        self._last_tick = clock.seconds()
        self._grace_until = 0.0
        self._tick_soon: Any = None
        node.on_app(ASSIGN, self._assign_received)
        node.on_app(DONE, self._done_received)
        node.on_app(BUSY, self._busy_received)
        node.on_change(self._membership_changed)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._last_tick = self.clock.seconds()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.settings.tick_interval, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._tick_soon is not None and self._tick_soon.active():
            self._tick_soon.cancel()
        for d in list(self._running.values()):
            d.cancel()

    def attach_client_transport(self, transport: Any) -> None:
        self._transport = transport

    def inflight(self) -> int:
        """Handlers running on this server now (for the load meter)."""
        return len(self._running)

    # -- client datagrams -------------------------------------------------------------------------

    def datagram_received(self, obj: dict[str, Any] | None, size: int, client: tuple[str, int]) -> None:
        """Every datagram of the client socket (``obj``: its JSON object, None if it is not one).

        What is not a request is never answered (a reply, a cookie challenge, non-JSON, anything
        from a server's own address): two servers must not answer each other for ever. A request
        without a valid cookie gets a challenge and nothing else.
        """
        self.counters["datagrams"] += 1
        if client in self.server_addresses:
            self.counters["dropped_from_servers"] += 1
            return
        if obj is None:
            self.counters["dropped_not_json"] += 1
            return
        if not wire.is_request_type(obj):
            self.counters["dropped_not_requests"] += 1
            return
        if not self.cookies.valid(obj.get("cookie"), client):
            self._challenge(client, size)
            return
        try:
            request = wire.request_from(obj, size)
        except wire.WireError as e:
            self.bad_request(e, client)
            return
        self.request_received(request, client, size)

    def _challenge(self, client: tuple[str, int], size: int) -> None:
        data = wire.CookieChallenge(self.cookies.issue(client)).encode()
        if len(data) > size:  # never more bytes than the source sent
            self.counters["unproven_dropped"] += 1
            return
        if not self._challenge_limits.allow(client) or not self._challenge_total.allow(None):
            self.counters["challenges_limited"] += 1
            return
        self.counters["cookie_challenges"] += 1
        self._write(data, client)

    def bad_request(self, error: wire.WireError, client: tuple[str, int]) -> None:
        self.counters["bad_requests"] += 1
        self.log.debug("bad request from {client}: {error}", client=client, error=error.message)
        self._send_error(client, error.request_id, error.code, error.message)

    def _send_error(self, client: tuple[str, int], rid: str | None, code: str, message: str) -> None:
        """An error reply that no cache keeps, at most ``error_burst`` at once per source."""
        if not self._error_limits.allow(client):
            self.counters["error_replies_limited"] += 1
            return
        self._send_reply(client, rid, wire.error_body(code, message))

    def _foreign_copy(self, client: tuple[str, int], rid: str) -> None:
        self.counters["foreign_copies"] += 1
        self._send_error(
            client, rid, "request_id_taken", "another address sent this request id first; use a new id"
        )

    def request_received(self, request: wire.Request, client: tuple[str, int], size: int = 0) -> None:
        """A request from a source that proved its address."""
        self.counters["requests_received"] += 1
        rid = request.request_id
        if request.direct:
            self._query(request, client)
            return
        done = self._done.get(rid)
        if done is not None:
            if done.client is not None and done.client != client:
                self._foreign_copy(client, rid)
                return
            if not done.seen and done.by != self.id:
                # The executor's "done" overtook the client's own datagram to this server: the
                # executor has answered; only a retry (a second copy) deserves our cached reply.
                done.seen = True
                self.counters["request_after_done"] += 1
                return
            self.counters["answered_from_cache"] += 1
            self._send_reply(client, rid, done.body)
            return
        if self.registry.get(request.op) is None:
            self.counters["unknown_op"] += 1
            self._send_error(client, rid, "unknown_op", f"this cloud has no operation {request.op!r}")
            return
        pending = self._pending.get(rid)
        if pending is not None:  # a retry or a duplicate
            if pending.client != client:  # the first address wins; a copy cannot redirect the reply
                self._foreign_copy(client, rid)
                return
            self.counters["duplicates"] += 1
            pending.from_client = True
            if pending.assigned_to is None and self._acting_coordinator():
                self._assign(pending)
            return
        now = self.clock.seconds()
        size = max(size, 1)
        if self._full(size):
            self._expire(now)
        if self._full(size):
            self.counters["overloaded"] += 1
            if self._acting_coordinator():
                # The coordinator decides: the refusal is recorded and shared like any reply,
                # so that no other server runs it later.
                body = wire.error_body(
                    "overloaded", "the cloud has too many requests in progress; try again later"
                )
                self._complete(rid, body, by=None, client=client, op=request.op)
            return
        limited = self._rate_limited(request, client)  # every server charges: they see the same requests
        if limited is not None:
            self.counters["rate_limited"] += 1
            if self._acting_coordinator():
                self._complete(rid, limited, by=None, client=client, op=request.op)
                return
        pending = Pending(rid, request.op, request.args, client, now, size=size)
        self._add_pending(pending)
        if self._acting_coordinator():
            self._assign(pending)

    def _full(self, size: int) -> bool:
        return (
            len(self._pending) >= self.settings.max_pending
            or self._pending_bytes + size > self.settings.max_pending_bytes
        )

    def _rate_limited(self, request: wire.Request, client: tuple[str, int]) -> dict[str, Any] | None:
        """The ``rate_limited`` reply if this sign_in/register is over a limit, else None."""
        if request.op not in self.settings.auth_ops:
            return None
        if not self._auth_sources.allow(client):
            wait = math.ceil(self._auth_sources.retry_after(client))
            return wire.error_body(
                "rate_limited",
                f"too many sign-in and register attempts from your address; try again in {wait} s",
            )
        name = request.args.get("username")
        if isinstance(name, str) and len(name) <= 64:
            key = name.lower()
            if not self._auth_users.allow(key):
                wait = math.ceil(self._auth_users.retry_after(key))
                return wire.error_body(
                    "rate_limited", f"too many attempts for the user {name!r}; try again in {wait} s"
                )
        return None

    def _add_pending(self, pending: Pending) -> None:
        self._pending[pending.request_id] = pending
        self._pending_bytes += pending.size

    def _drop_pending(self, rid: str) -> Pending | None:
        pending = self._pending.pop(rid, None)
        if pending is not None:
            self._pending_bytes -= pending.size
        return pending

    def _query(self, request: wire.Request, client: tuple[str, int]) -> None:
        """A read-only op answered by this server itself, without routing."""
        if request.op not in self.settings.direct_ops or self.registry.get(request.op) is None:
            self._send_error(
                client,
                request.request_id,
                "not_a_query",
                f"{request.op!r} cannot be sent to a single server; send a request",
            )
            return
        self.counters["queries"] += 1
        d = defer.Deferred.fromCoroutine(
            self._run_handler(request.request_id, request.op, request.args, client)
        )
        d.addCallback(lambda body: self._send_reply(client, request.request_id, body))
        d.addErrback(lambda f: f.trap(defer.CancelledError))

    # -- coordinator ------------------------------------------------------------------------------

    def _stalled(self, now: float) -> bool:
        return now - self._last_tick > self.settings.stall_threshold or now < self._grace_until

    def _acting_coordinator(self) -> bool:
        return bool(self.node.is_coordinator) and not self._stalled(self.clock.seconds())

    def _choose(self, exclude: set[int]) -> int | None:
        """The live server with the best priority, counting assignments still outstanding."""
        best: tuple[float, int, int] | None = None
        for rank, member in enumerate(self.node.ranked_members()):
            if member in exclude:
                continue
            load = self.node.load_of(member)
            if load is None:  # not heard yet: after everyone whose load is known
                load = _UNKNOWN_LOAD
            score = load + self.settings.outstanding_weight * self._outstanding[member]
            key = (score, rank, member)
            if best is None or key < best:
                best = key
        return None if best is None else best[2]

    def _set_assignee(self, pending: Pending, member: int | None) -> None:
        if pending.assigned_to is not None:
            self._outstanding[pending.assigned_to] -= 1
            if self._outstanding[pending.assigned_to] <= 0:
                del self._outstanding[pending.assigned_to]
        pending.assigned_to = member
        if member is not None:
            self._outstanding[member] += 1

    def _assign(self, pending: Pending, exclude: set[int] | None = None, *, bounce: bool = False) -> None:
        if pending.attempts >= self.settings.max_attempts and not bounce:
            self.counters["gave_up"] += 1
            body = wire.error_body(
                "unavailable",
                f"no server could finish the request after {pending.attempts} attempts; try again",
            )
            self._complete(pending.request_id, body, by=None, client=pending.client, op=pending.op)
            return
        target = self._choose(exclude or set())
        if target is None:
            return
        self._set_assignee(pending, target)
        pending.assigned_at = self.clock.seconds()
        pending.assign_term = self.node.term
        if not bounce:  # a busy server's refusal is not a failed attempt
            pending.attempts += 1
        self.counters["assigned"] += 1
        self._to_peers(None, ASSIGN, self._assign_body(pending))
        if target == self.id:
            self._execute(pending)

    def _assign_body(self, pending: Pending) -> dict[str, Any]:
        return {
            "id": pending.request_id,
            "op": pending.op,
            "args": pending.args,
            "client": [pending.client[0], pending.client[1]],
            "to": pending.assigned_to,
            "term": self.node.term,
            "attempt": pending.attempts,
            "force": pending.forced,
        }

    def _tick(self) -> None:
        now = self.clock.seconds()
        if now - self._last_tick > self.settings.stall_threshold:
            self.counters["stalls"] += 1
            self._grace_until = now + self.settings.stall_grace
            self.log.warn(  # noqa: G010
                "reactor stood still for {gap:.2f} s; not acting as coordinator for {grace} s",
                gap=now - self._last_tick,
                grace=self.settings.stall_grace,
            )
        self._last_tick = now
        self._expire(now)
        if self._acting_coordinator():
            self._coordinate(now)

    def _coordinate(self, now: float) -> None:
        live = set(self.node.live_members())
        term = self.node.term
        for pending in list(self._pending.values()):
            if pending.request_id in self._running or pending.request_id not in self._pending:
                continue
            if pending.assigned_to is None:
                self._assign(pending)
            elif pending.assigned_to not in live:
                self.counters["reassigned"] += 1
                self.log.info(
                    "server {dead} is down; re-assigning request {rid}",
                    dead=pending.assigned_to,
                    rid=pending.request_id,
                )
                self._assign(pending, exclude={pending.assigned_to})
            elif pending.assign_term != term or now - pending.assigned_at >= self.settings.resend_after:
                # Taken over from an older coordinator, or slow: confirm the assignment under our
                # term, to every peer, so that one who missed the first broadcast learns who runs it
                # before it may have to take over.
                self.counters["resent"] += 1
                pending.assigned_at = now
                pending.assign_term = term
                self._to_peers(None, ASSIGN, self._assign_body(pending))
                if pending.assigned_to == self.id:
                    self._execute(pending)

    def _membership_changed(self) -> None:
        # A new coordinator takes over at once instead of waiting for its next tick.
        if self._tick_soon is None or not self._tick_soon.active():
            self._tick_soon = self.clock.callLater(0, self._changed_tick)

    def _changed_tick(self) -> None:
        if self._acting_coordinator():
            self._coordinate(self.clock.seconds())

    # -- peers ------------------------------------------------------------------------------------

    def _assign_received(self, sender: int, body: dict[str, Any]) -> None:
        try:
            rid, op, args = body["id"], body["op"], body["args"]
            host, port = body["client"]
            to, term = body["to"], body["term"]
            if not (
                wire.is_request_id(rid)
                and wire.is_op_name(op)
                and isinstance(args, dict)
                and isinstance(host, str)
                and type(port) is int
                and type(to) is int
                and type(term) is int
            ):
                raise TypeError("bad field types")
        except (KeyError, TypeError, ValueError):
            self.counters["bad_peer_messages"] += 1
            self.log.warn(  # noqa: G010
                "malformed assignment from server {sender}", sender=sender
            )
            return
        now = self.clock.seconds()
        if term < self.node.term or (
            term == self.node.term and self.node.coordinator_id not in (None, sender)
        ):
            self.counters["stale_assignments"] += 1
            return
        if self._stalled(now):
            # Queued while this process stood still; the coordinator may have moved it since.
            self.counters["stall_dropped_assignments"] += 1
            return
        done = self._done.get(rid)
        if done is not None:
            if to == self.id:  # our done may have been lost: say it again
                self._send_reply(done.client or (host, port), rid, done.body)
                self._to_peers(None, DONE, self._done_body(rid, done.body, done.by, done.client))
            return
        pending = self._pending.get(rid)
        if pending is None:
            size = len(wire._dumps(args)) + 100
            if self._full(size):
                self.counters["overloaded"] += 1
                return
            pending = Pending(rid, op, args, (host, port), now, from_client=False, size=size)
            self._add_pending(pending)
        self._set_assignee(pending, to)
        pending.assigned_at = now
        pending.assign_term = term
        attempt = body.get("attempt")
        if type(attempt) is int:
            pending.attempts = max(pending.attempts, attempt)
        pending.forced = body.get("force") is True
        if to == self.id:
            self._execute(pending)

    def _done_received(self, sender: int, body: dict[str, Any]) -> None:
        rid, reply, by = body.get("id"), body.get("body"), body.get("by")
        client = _address(body.get("client"))
        if (
            not wire.is_request_id(rid)
            or wire.body_problem(reply)
            or not (by is None or type(by) is int)
            or client is None
        ):
            self.counters["bad_peer_messages"] += 1
            self.log.warn(  # noqa: G010
                "malformed completion from server {sender}", sender=sender
            )
            return
        if rid in self._done:
            return
        pending = self._drop_pending(rid)
        self._remember(rid, reply, by, client, seen=pending is not None and pending.from_client)
        if pending is not None:
            self._set_assignee(pending, None)

    def _busy_received(self, sender: int, body: dict[str, Any]) -> None:
        """``sender`` refused a request it was given (``Busy``): the coordinator gives it to another."""
        rid = body.get("id")
        if not wire.is_request_id(rid):
            self.counters["bad_peer_messages"] += 1
            self.log.warn("malformed busy from server {sender}", sender=sender)  # noqa: G010
            return
        pending = self._pending.get(rid)
        if pending is None or rid in self._done:
            return
        pending.refused.add(sender)
        if pending.assigned_to != sender or not self._acting_coordinator():
            return  # already moved on, or the coordinator will do it
        live = set(self.node.live_members())
        if live - pending.refused:
            self.counters["busy_reassigned"] += 1
            self._assign(pending, exclude=pending.refused, bounce=True)
        else:
            self.counters["busy_forced"] += 1
            pending.forced = True
            self._assign(pending, bounce=True)

    @staticmethod
    def _done_body(
        rid: str, body: dict[str, Any], by: int | None, client: tuple[str, int] | None
    ) -> dict[str, Any]:
        return {"id": rid, "body": body, "by": by, "client": list(client) if client else None}

    # -- execution --------------------------------------------------------------------------------

    def _execute(self, pending: Pending) -> None:
        rid = pending.request_id
        if rid in self._running or rid in self._done:
            return
        if len(self._running) >= self.settings.max_running:
            self.counters["busy_deferred"] += 1  # the coordinator re-sends; by then a slot may be free
            return
        self.journal.append((rid, pending.op, self.wall()))
        may_refuse = not pending.forced
        d = defer.Deferred.fromCoroutine(
            self._run_handler(rid, pending.op, pending.args, pending.client, may_refuse=may_refuse)
        )
        self._running[rid] = d

        def finished(body: dict[str, Any]) -> None:
            self._running.pop(rid, None)
            if may_refuse and is_busy(body):
                self._refuse(pending)
                return
            client = pending.client
            self.handled_here[pending.op] += 1
            self.counters["executed"] += 1
            self._complete(rid, body, by=self.id, client=client, op=pending.op)

        def cancelled(failure: Failure) -> None:
            self._running.pop(rid, None)
            failure.trap(defer.CancelledError)

        d.addCallbacks(finished, cancelled)
        d.addErrback(lambda f: self.log.failure("completing request {rid}", f, rid=rid))

    def _refuse(self, pending: Pending) -> None:
        """This server answered ``Busy``: no reply; tell the coordinator (maybe this server)."""
        self.counters["busy_refused"] += 1
        body = {"id": pending.request_id, "by": self.id}
        self._to_peers(None, BUSY, body)
        self._busy_received(self.id, body)

    async def _run_handler(
        self, rid: str, op: str, args: dict[str, Any], client: tuple[str, int], *, may_refuse: bool = False
    ) -> dict[str, Any]:
        handler = self.registry.get(op)
        if handler is None:
            return wire.error_body("unknown_op", f"this cloud has no operation {op!r}")
        ctx = RequestContext(request_id=rid, op=op, client=client, server=self.server, may_refuse=may_refuse)
        try:
            result = await handler(ctx, args)
            if not isinstance(result, dict):
                raise TypeError(f"handler for {op!r} returned {type(result).__name__}, not a dict")
            body = {"ok": True, "result": result}
            size = len(wire.Reply(rid, body, self.id).encode())
            if size > wire.MAX_PAYLOAD:
                self.log.error("reply to {op} is {size} bytes, over the datagram limit", op=op, size=size)
                return wire.error_body(
                    "reply_too_large", "the reply does not fit in a datagram; this is a bug"
                )
            return body
        except OpError as e:
            return e.to_reply()
        except defer.CancelledError:
            raise
        except Exception:
            self.log.failure("handler for {op} failed on request {rid}", op=op, rid=rid)
            return wire.error_body(
                "internal_error", "the server failed to handle the request; it has been logged"
            )

    def _complete(
        self, rid: str, body: dict[str, Any], *, by: int | None, client: tuple[str, int], op: str
    ) -> None:
        pending = self._drop_pending(rid)
        if pending is not None:
            self._set_assignee(pending, None)
            client = pending.client
        existing = self._done.get(rid)
        if existing is not None:
            body, by = existing.body, existing.by  # the first reply known wins: one reply per id
            client = existing.client or client
        else:
            self._remember(rid, body, by, client)
            self._to_peers(None, DONE, self._done_body(rid, body, by, client))
        self._send_reply(client, rid, body)

    def _remember(
        self,
        rid: str,
        body: dict[str, Any],
        by: int | None,
        client: tuple[str, int] | None,
        *,
        seen: bool = True,
    ) -> None:
        size = len(wire._dumps(body)) + 100
        self._done[rid] = Done(body, by, self.clock.seconds(), seen, client, size)
        self._done_bytes += size
        if by is not None:
            self.handled_by[by] += 1
        while len(self._done) > self.settings.max_done or (
            self._done_bytes > self.settings.max_done_bytes and len(self._done) > 1
        ):
            _, old = self._done.popitem(last=False)
            self._done_bytes -= old.size
            self.counters["done_evicted"] += 1

    def _expire(self, now: float) -> None:
        while self._done:
            rid, done = next(iter(self._done.items()))
            if now - done.at < self.settings.done_ttl:
                break
            del self._done[rid]
            self._done_bytes -= done.size
        while self._pending:
            rid, pending = next(iter(self._pending.items()))
            if now - pending.first_seen < self.settings.pending_ttl:
                break
            self._drop_pending(rid)
            self._set_assignee(pending, None)
            self.counters["pending_expired"] += 1
            running = self._running.get(rid)
            if running is not None:
                running.cancel()

    def _to_peers(self, peer: int | None, kind: str, body: dict[str, Any]) -> None:
        """Send to one peer, or to all when ``peer`` is None; a failure is counted, never raised."""
        try:
            if peer is None:
                self.node.broadcast_app(kind, body)
            else:
                self.node.send_app(peer, kind, body)
        except Exception as e:
            self.counters["peer_send_errors"] += 1
            self.log.warn(  # noqa: G010
                "cannot send {kind} to {peer}: {error}",
                kind=kind,
                peer="all" if peer is None else peer,
                error=e,
            )

    def _send_reply(self, client: tuple[str, int], rid: str | None, body: dict[str, Any]) -> None:
        """A reply to a proven source, with a fresh cookie so that the client never needs a challenge."""
        try:
            data = wire.Reply(rid, body, self.id, cookie=self.cookies.issue(client)).encode()
        except Exception as e:
            self.counters["reply_errors"] += 1
            self.log.warn("cannot encode a reply to {client}: {error}", client=client, error=e)  # noqa: G010
            return
        if self._write(data, client):
            self.counters["replies_sent"] += 1

    def _write(self, data: bytes, client: tuple[str, int]) -> bool:
        if self._transport is None:
            return False
        try:
            self._transport.write(data, client)
            return True
        except Exception as e:  # an unreachable client must not break the router
            self.counters["reply_errors"] += 1
            self.log.warn(  # noqa: G010
                "cannot send to {client}: {error}", client=client, error=e
            )
            return False

    # -- introspection ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """JSON-able: this server's view of the cluster and of the requests it handled."""
        node = self.node
        members = sorted(node.live_members())
        return {
            "server": self.id,
            "term": node.term,
            "coordinator": node.coordinator_id,
            "is_coordinator": bool(node.is_coordinator),
            "members": members,
            "ranked": list(node.ranked_members()),
            "loads": {str(m): node.load_of(m) for m in members},
            "handled_here": dict(self.handled_here),
            "handled_total": sum(self.handled_here.values()),
            "handled_by": {str(k): v for k, v in sorted(self.handled_by.items())},
            "pending": len(self._pending),
            "pending_bytes": self._pending_bytes,
            "running": len(self._running),
            "done_cached": len(self._done),
            "done_bytes": self._done_bytes,
            "limits": {
                "max_pending": self.settings.max_pending,
                "max_pending_bytes": self.settings.max_pending_bytes,
                "max_done": self.settings.max_done,
                "max_done_bytes": self.settings.max_done_bytes,
            },
            "counters": dict(self.counters),
            "cluster": node.status(),
        }


def _address(value: Any) -> tuple[str, int] | None:
    """``[host, port]`` from a peer message, or None if it is not one."""
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and type(value[1]) is int
        and 0 <= value[1] <= 65535
    ):
        return (value[0], value[1])
    return None
