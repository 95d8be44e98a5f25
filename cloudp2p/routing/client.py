"""The client side of the request router.

    router = ClientRouter(reactor, servers=[("127.0.0.1", 9101), ...], timeout=10.0)
    router.start()                                   # binds a UDP socket on port 0
    d = router.submit("ping", {})                    # Deferred[dict]: the handler's result
    d = router.query(("127.0.0.1", 9101), "status", {})   # one server answers for itself
    router.stop()

``submit`` sends the request, with a fresh random id, to every server at once,
then again with the same id and an exponential backoff (``retry_initial`` up to
``retry_max``) until a reply arrives or the deadline passes. The servers make
the retries harmless: a request id is run at most once per server and gets the
same reply every time. The first valid reply from a known server address
decides: ``{"ok": true}`` fires the Deferred with the result dict, ``{"ok":
false}`` errbacks with ``RequestFailed(code, message)``; no reply before the
deadline errbacks with ``CloudUnreachable``. One error is not final while other servers
may still answer: ``directory_unavailable`` (that server's database node is down or cut
off from the majority of a Galera cluster) is kept, the request goes on to the other
servers, and it decides only if every server said so or nobody else answered by the
deadline; so a client that reaches both sides of a partition gets the majority's answer,
and a client that reaches only the minority gets a clear error. Cancelling the Deferred forgets
the request. Replies from unknown addresses, late duplicates and malformed
datagrams are counted and dropped.

Return-routability cookies (cloudp2p/routing/cookies.py) are handled here, out
of sight of the caller: a server that does not know this socket's address yet
answers with a cookie challenge; the router keeps the cookie per server, sends
every outstanding request to that server again at once with it, and puts it in
every later request. Servers hand out a fresh cookie with each reply, so a
busy client pays the extra round trip once, at its first request.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from cloudp2p.errors import CloudUnreachable, RequestFailed, request_failed
from cloudp2p.routing import client_wire as wire
from cloudp2p.sockets import set_buffer

Address = tuple[str, int]
# Errors that say "not here": another server may still succeed (see the module docstring).
SOFT_ERRORS = frozenset({"directory_unavailable"})


@attrs.define
class _Outstanding:
    request: wire.Request
    datagram: bytes  # without a cookie
    targets: tuple[Address, ...]
    deferred: defer.Deferred[dict[str, Any]]
    deadline: float
    delay: float
    timer: Any = None
    sends: int = 0
    soft_error: RequestFailed | None = None  # kept until another server answers or time runs out
    soft_from: set[Address] = attrs.field(factory=set)
    with_cookie: dict[str, bytes] = attrs.field(factory=dict)  # cookie -> the datagram carrying it

    def datagram_for(self, cookie: str | None) -> bytes:
        if cookie is None:
            return self.datagram
        data = self.with_cookie.get(cookie)
        if data is None:
            self.with_cookie.clear()  # only the current cookie is worth keeping
            data = self.with_cookie[cookie] = self.request.with_cookie(cookie).encode()
        return data


class _ClientProtocol(DatagramProtocol):
    """Frames reply datagrams for the ClientRouter."""

    maxPacketSize = wire.MAX_DATAGRAM + 1024
    noisy = False  # no log line per start/stop

    def __init__(self, router: ClientRouter) -> None:
        self.router = router

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            try:
                answer = wire.decode_answer(data)
            except wire.WireError as e:
                self.router.counters["bad_replies"] += 1
                self.router.log.debug("bad reply from {addr}: {error}", addr=addr, error=e)
                return
            source = (addr[0], int(addr[1]))
            if isinstance(answer, wire.CookieChallenge):
                self.router.cookie_received(answer.cookie, source)
            else:
                self.router.reply_received(answer, source)
        except Exception:
            self.router.log.failure("unexpected error handling a reply from {addr}", addr=addr)


class ClientRouter:
    """Sends requests to the cloud and matches replies to them."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        servers: Iterable[Address],
        timeout: float = 10.0,
        *,
        retry_initial: float = 0.25,
        retry_max: float = 1.0,
        interface: str | None = None,
        receive_buffer: int = 1 << 20,
    ) -> None:
        self.reactor = reactor
        self.servers: tuple[Address, ...] = tuple((str(h), int(p)) for h, p in servers)
        if not self.servers:
            raise ValueError("ClientRouter needs at least one server address")
        if timeout <= 0 or retry_initial <= 0 or retry_max < retry_initial:
            raise ValueError("timeout and retry delays must be positive, retry_max >= retry_initial")
        self.timeout = timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.interface = interface if interface is not None else _interface_for(self.servers)
        self.receive_buffer = receive_buffer
        self.counters: Counter[str] = Counter()
        self._outstanding: dict[str, _Outstanding] = {}
        self._cookies: dict[Address, str] = {}  # server -> the cookie it gave this socket
        self._port: Any = None
        self._protocol = _ClientProtocol(self)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the UDP socket (an OS-allocated port)."""
        if self._port is not None:
            return
        self._port = self.reactor.listenUDP(
            0, self._protocol, interface=self.interface, maxPacketSize=_ClientProtocol.maxPacketSize
        )
        set_buffer(self._port, self.receive_buffer)

    def stop(self) -> defer.Deferred[None]:
        """Fail every outstanding request with CloudUnreachable and close the socket."""
        for rid in list(self._outstanding):
            self._finish(rid, CloudUnreachable("the client was stopped before the cloud answered"))
        port, self._port = self._port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)

    @property
    def address(self) -> Address | None:
        if self._port is None:
            return None
        host = self._port.getHost()
        return host.host, host.port

    # -- requests ---------------------------------------------------------------------------------

    def submit(
        self, op: str, args: dict[str, Any], *, timeout: float | None = None
    ) -> defer.Deferred[dict[str, Any]]:
        """Send ``op(args)`` to the cloud; the Deferred fires with the result dict."""
        return self._send(wire.Request(wire.new_request_id(), op, args), self.servers, timeout)

    def query(
        self, server: Address, op: str, args: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> defer.Deferred[dict[str, Any]]:
        """Ask one server a read-only question (``status``, ``ping``); it answers for itself."""
        target = (str(server[0]), int(server[1]))
        return self._send(
            wire.Request(wire.new_request_id(), op, args or {}, direct=True), (target,), timeout
        )

    def _send(
        self, request: wire.Request, targets: tuple[Address, ...], timeout: float | None
    ) -> defer.Deferred[dict[str, Any]]:
        if self._port is None:
            return defer.fail(CloudUnreachable("the client router is not started"))
        try:
            datagram = request.encode()
        except wire.WireError as e:
            return defer.fail(RequestFailed(e.code, e.message))
        except (TypeError, ValueError) as e:
            return defer.fail(RequestFailed("bad_args", f"arguments are not JSON: {e}"))
        rid = request.request_id
        d: defer.Deferred[dict[str, Any]] = defer.Deferred(lambda _: self._forget(rid))
        now = self.reactor.seconds()
        entry = _Outstanding(
            request, datagram, targets, d, now + (timeout or self.timeout), self.retry_initial
        )
        self._outstanding[rid] = entry
        self.counters["submitted"] += 1
        self._transmit(rid)
        return d

    def _transmit(self, rid: str) -> None:
        entry = self._outstanding.get(rid)
        if entry is None:
            return
        entry.timer = None
        now = self.reactor.seconds()
        if now >= entry.deadline and entry.soft_error is not None:
            self._finish(rid, entry.soft_error)
            return
        if now >= entry.deadline:
            self.counters["timeouts"] += 1
            where = ", ".join(f"{h}:{p}" for h, p in entry.targets)
            self._finish(
                rid,
                CloudUnreachable(f"no reply to {entry.request.op!r} from {where} (sent {entry.sends} times)"),
            )
            return
        for target in entry.targets:
            self._write(entry, target)
        entry.sends += 1
        if entry.sends > 1:
            self.counters["retries"] += 1
        wait = min(entry.delay, max(0.0, entry.deadline - now))
        entry.delay = min(entry.delay * 2, self.retry_max)
        entry.timer = self.reactor.callLater(wait, self._transmit, rid)

    def _write(self, entry: _Outstanding, target: Address) -> None:
        try:
            self._port.write(entry.datagram_for(self._cookies.get(target)), target)
            self.counters["datagrams_sent"] += 1
        except Exception as e:  # e.g. no route: the other servers may still answer
            self.counters["send_errors"] += 1
            self.log.debug("cannot send to {target}: {error}", target=target, error=e)

    def _known(self, source: Address) -> bool:
        return source in self.servers or any(source in e.targets for e in self._outstanding.values())

    def cookie_received(self, cookie: str, source: Address) -> None:
        """A server wants proof of our address: keep its cookie, send what it did not take again."""
        if not self._known(source):
            self.counters["foreign_replies"] += 1
            return
        self.counters["cookie_challenges"] += 1
        if self._cookies.get(source) == cookie:
            return  # already sent again with this one
        self._cookies[source] = cookie
        for entry in list(self._outstanding.values()):
            if source in entry.targets:
                self.counters["sent_with_new_cookie"] += 1
                self._write(entry, source)

    def reply_received(self, reply: wire.Reply, source: Address) -> None:
        if reply.cookie is not None and source in self.servers:
            self._cookies[source] = reply.cookie
        entry = self._outstanding.get(reply.request_id) if reply.request_id else None
        if entry is None:
            self.counters["unmatched_replies"] += 1
            return
        if source not in entry.targets:
            self.counters["foreign_replies"] += 1
            return
        if reply.cookie is not None:
            self._cookies[source] = reply.cookie
        self.counters["replies"] += 1
        if reply.ok:
            self._finish(reply.request_id, reply.body["result"])
        else:
            error = reply.body["error"]
            failure = request_failed(error["code"], error["message"])
            if error["code"] in SOFT_ERRORS:
                self.counters["soft_errors"] += 1
                entry.soft_error = failure
                entry.soft_from.add(source)
                if entry.soft_from < set(entry.targets):
                    return  # others may still answer
            self._finish(reply.request_id, failure)

    def _forget(self, rid: str) -> None:
        entry = self._outstanding.pop(rid, None)
        if entry is not None and entry.timer is not None and entry.timer.active():
            entry.timer.cancel()

    def _finish(self, rid: str, outcome: Any) -> None:
        entry = self._outstanding.pop(rid, None)
        if entry is None:
            return
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        if isinstance(outcome, Exception):
            entry.deferred.errback(outcome)
        else:
            entry.deferred.callback(outcome)


def _interface_for(servers: tuple[Address, ...]) -> str:
    """Loopback servers only: bind loopback; any IPv6 server: all IPv6; else all IPv4."""
    kinds = set()
    for host, _ in servers:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            kinds.add("v4")
            continue
        kinds.add("lo" if ip.is_loopback and ip.version == 4 else "v6" if ip.version == 6 else "v4")
    if kinds == {"lo"}:
        return "127.0.0.1"
    return "::" if "v6" in kinds else "0.0.0.0"
