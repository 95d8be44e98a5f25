"""DTLS under an existing datagram protocol: ``DtlsServer`` and ``DtlsClient``.

Both are Twisted ``DatagramProtocol``s that wrap an *inner* protocol (the
router's). The inner protocol keeps working with plain messages: it gets
``datagramReceived(message, address)`` for each authenticated message and
writes with ``self.transport.write(message, address)``; the wrapper protects
them in the association with that address. So the request router, its reply
cache and its counters do not change with the transport under them.

Server (``DtlsServer``), for a datagram from ``address``:

- not DTLS records at all -> dropped, ``not_dtls``;
- a ClientHello (from a new source, or a known one whose association is open:
  the client restarted or re-handshakes) -> ``DTLSv1_listen`` on a throw-away
  connection: without a valid cookie the answer is one HelloVerifyRequest,
  never larger than what arrived, and *no state is kept* (``hello_verify``);
  with a valid cookie the source has proven it receives at ``address`` and,
  within ``max_associations`` in total and ``max_per_source`` per IP, gets an
  association (the old one at that address, if any, is replaced);
- records for an association it does not have (it restarted, or the
  association idled out) -> dropped, ``unknown_association``, and at most one
  15-byte "lost association" hint per ``hint_interval`` back to that address,
  smaller than the record that caused it, so the client re-handshakes at once;
- anything else goes to the address's association (OpenSSL drops forgeries and
  replays silently; a datagram that does not decrypt whole is ``partial``).

Associations that do not finish their handshake in ``handshake_timeout`` or hear
nothing for ``idle_timeout`` are closed. A reply for an address without an open
association is dropped (``send_no_association``): nothing goes out in clear.

Client (``DtlsClient``): one association per configured server, opened at start
and kept: a keepalive every ``keepalive`` s of silence, a new handshake when the
server says it lost the association (kept rate-limited and in parallel with the
old one, since the hint is unauthenticated), after a failure with a backoff.
Messages written while no association is open wait in a short queue and leave
when it opens. The server's certificate is checked against the pinned CA and its
name with service_identity; a failure is recorded per server (``error_for``),
counted and logged, and that server gets nothing.
"""

from __future__ import annotations

import collections
from collections import Counter
from collections.abc import Iterable
from typing import Any

import attrs
from OpenSSL import SSL
from twisted.internet import task
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from cloudp2p.errors import CloudP2PError, SecureHandshakeFailed, ServerIdentityError
from cloudp2p.secure import records as rec
from cloudp2p.secure import tls
from cloudp2p.secure.association import Association, State
from cloudp2p.secure.tls import ConnInfo, CookieJar, ServerRef

Address = tuple[str, int]
MAX_DATAGRAM = 65_535


class _InnerTransport:
    """What the inner protocol sees as its transport: messages in the clear, protected below."""

    def __init__(self, endpoint: Any) -> None:
        self._endpoint = endpoint

    @property
    def connected(self) -> bool:
        transport = self._endpoint.transport
        return transport is not None and getattr(transport, "connected", True)

    def write(self, data: bytes, addr: Address) -> None:
        self._endpoint.send_message(data, (addr[0], int(addr[1])))

    def getHost(self) -> Any:
        return self._endpoint.transport.getHost()

    def stopListening(self) -> Any:
        return self._endpoint.transport.stopListening()


def _write(transport: Any, data: bytes, address: Address, counters: Counter[str]) -> None:
    if transport is None:
        counters["send_errors"] += 1
        return
    try:
        transport.write(data, address)
    except Exception:  # no route, socket closed: counted, the caller's retries recover
        counters["send_errors"] += 1


# -- server ------------------------------------------------------------------------------------------


@attrs.frozen
class DtlsServerSettings:
    handshake_timeout: float = 10.0
    idle_timeout: float = 120.0  # clients ping every 15 s while idle
    max_associations: int = 10_000
    max_per_source: int = 256  # per IP address
    cookie_lifetime: float = 60.0
    hint_interval: float = 0.5
    max_hinted: int = 4096  # addresses remembered for hint rate limiting
    mtu: int = 1400
    sweep_interval: float = 5.0


class DtlsServer(DatagramProtocol):
    """A DTLS 1.2 server under ``inner`` (see the module docstring)."""

    log = Logger()
    maxPacketSize = MAX_DATAGRAM
    noisy = False

    def __init__(
        self,
        inner: DatagramProtocol,
        *,
        certificate: str,
        key: str,
        clock: Any,
        settings: DtlsServerSettings | None = None,
    ) -> None:
        self.inner = inner
        self.clock = clock
        self.settings = settings or DtlsServerSettings()
        self.cookies = CookieJar(clock, self.settings.cookie_lifetime)
        self.context = tls.server_context(certificate, key, self.cookies)
        self.counters: Counter[str] = Counter()
        self._associations: dict[Address, Association] = {}
        self._per_source: Counter[str] = Counter()
        self._hinted: collections.OrderedDict[Address, float] = collections.OrderedDict()
        self._sweep: task.LoopingCall | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def startProtocol(self) -> None:
        self.inner.makeConnection(_InnerTransport(self))
        self._sweep = task.LoopingCall(self._expire_idle)
        self._sweep.clock = self.clock
        self._sweep.start(self.settings.sweep_interval, now=False)

    def stopProtocol(self) -> None:
        if self._sweep is not None and self._sweep.running:
            self._sweep.stop()
        for assoc in list(self._associations.values()):
            assoc.close("stopped")
        self.inner.doStop()

    # -- datagrams in -----------------------------------------------------------------------------

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            address = (addr[0], int(addr[1]))
            try:
                records = rec.split(data)
            except rec.RecordError:
                self.counters["not_dtls"] += 1
                return
            assoc = self._associations.get(address)
            if rec.is_client_hello(records[0]) and (assoc is None or assoc.state is State.OPEN):
                self._hello(records, len(data), address, assoc)
            elif assoc is None:
                self._unknown(records, len(data), address)
            else:
                assoc.receive(records)
        except Exception:
            self.counters["internal"] += 1
            self.log.failure("unexpected error on a DTLS datagram from {addr}", addr=addr)

    def _hello(self, records: list[bytes], size: int, address: Address, existing: Association | None) -> None:
        if len(records) != 1:
            self.counters["bad_hello"] += 1
            return
        conn = SSL.Connection(self.context, None)
        info = ConnInfo(address)
        conn.set_app_data(info)
        conn.set_ciphertext_mtu(self.settings.mtu)
        conn.bio_write(records[0])
        try:
            conn.DTLSv1_listen()
        except SSL.WantReadError:
            answer = _drain(conn)
            if answer and len(answer) <= size:  # never more bytes to an unproven source than it sent
                self.counters["hello_verify"] += 1
                _write(self.transport, answer, address, self.counters)
            else:
                self.counters["bad_hello"] += 1
            return
        except SSL.Error:
            self.counters["bad_hello"] += 1
            return
        # A valid cookie: the source receives at this address.
        if existing is None:
            if len(self._associations) >= self.settings.max_associations:
                self.counters["association_limit"] += 1
                return
            if self._per_source[address[0]] >= self.settings.max_per_source:
                self.counters["source_limit"] += 1
                return
        else:
            existing.close("replaced")
        assoc = Association(
            conn,
            info,
            clock=self.clock,
            transmit=lambda datagram: _write(self.transport, datagram, address, self.counters),
            opened=self._opened,
            message=self._message,
            closed=self._closed,
            handshake_timeout=self.settings.handshake_timeout,
            counters=self.counters,
        )
        self._associations[address] = assoc
        self._per_source[address[0]] += 1
        self.counters["handshakes_started"] += 1
        assoc.start_server(records[0])

    def _unknown(self, records: list[bytes], size: int, address: Address) -> None:
        self.counters["unknown_association"] += 1
        if not any(rec.content_type(r) == rec.APPLICATION_DATA and rec.epoch(r) > 0 for r in records):
            return
        hint = rec.lost_association_hint()
        now = self.clock.seconds()
        last = self._hinted.get(address)
        if len(hint) >= size or (last is not None and now - last < self.settings.hint_interval):
            return
        self._hinted[address] = now
        self._hinted.move_to_end(address)
        while len(self._hinted) > self.settings.max_hinted:
            self._hinted.popitem(last=False)
        self.counters["hints_sent"] += 1
        _write(self.transport, hint, address, self.counters)

    # -- association events -----------------------------------------------------------------------

    def _opened(self, assoc: Association) -> None:
        self.counters["handshakes_completed"] += 1

    def _message(self, assoc: Association, payload: bytes) -> None:
        self.counters["messages_received"] += 1
        self.inner.datagramReceived(payload, assoc.peer)

    def _closed(self, assoc: Association, reason: str) -> None:
        self.counters[f"closed_{reason}"] += 1
        if self._associations.get(assoc.peer) is assoc:
            del self._associations[assoc.peer]
        host = assoc.peer[0]
        self._per_source[host] -= 1
        if self._per_source[host] <= 0:
            del self._per_source[host]

    def _expire_idle(self) -> None:
        now = self.clock.seconds()
        for assoc in list(self._associations.values()):
            if assoc.state is State.OPEN and now - assoc.last_received >= self.settings.idle_timeout:
                assoc.close("idle")

    # -- for the inner protocol and the areas -----------------------------------------------------

    def send_message(self, data: bytes, address: Address) -> None:
        assoc = self._associations.get(address)
        if assoc is None or not assoc.send(data):
            self.counters["send_no_association"] += 1
            return
        self.counters["messages_sent"] += 1

    def export_key(self, address: Address, context: bytes, length: int = 32) -> bytes:
        """Keying material of the association with ``address``; ``LookupError`` if there is none open."""
        assoc = self._associations.get((address[0], int(address[1])))
        if assoc is None:
            raise LookupError(f"no secure association with {address}")
        return assoc.export(context, length)

    def associations(self) -> int:
        return len(self._associations)

    def status(self) -> dict[str, Any]:
        return {
            "associations": len(self._associations),
            "sources": len(self._per_source),
            "counters": dict(self.counters),
        }


def _drain(conn: SSL.Connection) -> bytes:
    out = []
    while True:
        try:
            chunk = conn.bio_read(MAX_DATAGRAM)
        except SSL.WantReadError:
            break
        if not chunk:
            break
        out.append(chunk)
    return b"".join(out)


# -- client ------------------------------------------------------------------------------------------


@attrs.frozen
class DtlsClientSettings:
    handshake_timeout: float = 5.0
    keepalive: float = 15.0  # a ping after this long without sending (below the server's idle_timeout)
    retry_initial: float = 0.5  # after a failed handshake, doubling
    retry_max: float = 10.0
    rehandshake_interval: float = 1.0  # at most one hint-triggered handshake per server per this long
    queue_limit: int = 64  # messages waiting per server while no association is open
    tick: float = 0.25
    mtu: int = 1400


@attrs.define
class _Link:
    ref: ServerRef
    current: Association | None = None
    pending: Association | None = None
    suspect: bool = False  # the server said it lost ``current``: hold messages until ``pending`` opens
    queue: collections.deque[bytes] = attrs.field(factory=collections.deque)
    error: CloudP2PError | None = None
    failures: int = 0
    next_attempt: float = 0.0
    last_rehandshake: float = float("-inf")


class DtlsClient(DatagramProtocol):
    """One kept-alive DTLS association per configured server, under ``inner``."""

    log = Logger()
    maxPacketSize = MAX_DATAGRAM
    noisy = False

    def __init__(
        self,
        inner: DatagramProtocol,
        servers: Iterable[ServerRef],
        *,
        ca_file: str,
        clock: Any,
        settings: DtlsClientSettings | None = None,
    ) -> None:
        self.inner = inner
        self.clock = clock
        self.settings = settings or DtlsClientSettings()
        self.context = tls.client_context(ca_file)
        self.counters: Counter[str] = Counter()
        self._links: dict[Address, _Link] = {ref.address: _Link(ref) for ref in servers}
        self._loop: task.LoopingCall | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def startProtocol(self) -> None:
        self.inner.makeConnection(_InnerTransport(self))
        for link in self._links.values():
            self._connect(link)
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.settings.tick, now=False)

    def stopProtocol(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for link in self._links.values():
            for assoc in (link.current, link.pending):
                if assoc is not None:
                    assoc.close("stopped")
        self.inner.doStop()

    # -- connecting -------------------------------------------------------------------------------

    def _connect(self, link: _Link) -> None:
        if link.pending is not None or self.transport is None:
            return
        ref = link.ref
        conn = SSL.Connection(self.context, None)
        info = ConnInfo(ref.address)
        conn.set_app_data(info)
        conn.set_ciphertext_mtu(self.settings.mtu)
        if ref.name is not None:
            conn.set_tlsext_host_name(ref.name.encode("ascii"))
        assoc = Association(
            conn,
            info,
            clock=self.clock,
            transmit=lambda datagram: _write(self.transport, datagram, ref.address, self.counters),
            opened=self._opened,
            message=self._message,
            closed=self._closed,
            handshake_timeout=self.settings.handshake_timeout,
            counters=self.counters,
        )
        link.pending = assoc
        self.counters["handshakes_started"] += 1
        assoc.start_client()

    def _opened(self, assoc: Association) -> None:
        link = self._links.get(assoc.peer)
        if link is None or link.pending is not assoc:
            assoc.close("superseded")
            return
        try:
            tls.check_identity(assoc.connection, link.ref)
        except ServerIdentityError as e:
            self._failed(link, e, "name_mismatch")
            assoc.close("name_mismatch")
            return
        old, link.current, link.pending = link.current, assoc, None
        link.suspect = False
        link.error = None
        link.failures = 0
        self.counters["handshakes_completed"] += 1
        if old is not None:
            old.close("replaced")
        while link.queue and assoc.state is State.OPEN:
            if assoc.send(link.queue.popleft()):
                self.counters["messages_sent"] += 1

    def _message(self, assoc: Association, payload: bytes) -> None:
        self.counters["messages_received"] += 1
        self.inner.datagramReceived(payload, assoc.peer)

    def _closed(self, assoc: Association, reason: str) -> None:
        link = self._links.get(assoc.peer)
        if link is None:
            return
        self.counters[f"closed_{reason}"] += 1
        if link.pending is assoc:
            link.pending = None
            link.suspect = False
            if reason == "verify_failed":
                error = tls.verification_error(assoc.info, link.ref)
                if error is not None:
                    self._failed(link, error, type(error).__name__)
            elif reason == "handshake_failed":
                self._failed(
                    link, SecureHandshakeFailed(f"{link.ref.label}: the server refused it"), reason
                )
            elif reason != "name_mismatch":
                self._backoff(link)
        elif link.current is assoc:
            link.current = None

    def _failed(self, link: _Link, error: CloudP2PError, counter: str) -> None:
        if link.error is None or str(link.error) != str(error):
            self.log.error(
                "cannot use cloud server {server}: {error}", server=link.ref.label, error=str(error)
            )
        link.error = error
        self.counters[counter] += 1
        self._backoff(link)

    def _backoff(self, link: _Link) -> None:
        link.failures += 1
        delay = min(self.settings.retry_initial * 2 ** (link.failures - 1), self.settings.retry_max)
        link.next_attempt = self.clock.seconds() + delay

    def _tick(self) -> None:
        now = self.clock.seconds()
        for link in self._links.values():
            current = link.current
            if current is not None and current.state is State.OPEN:
                if now - current.last_sent >= self.settings.keepalive:
                    current.ping()
                    self.counters["pings_sent"] += 1
            elif link.pending is None and now >= link.next_attempt:
                self._connect(link)

    # -- datagrams in -----------------------------------------------------------------------------

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            link = self._links.get((addr[0], int(addr[1])))
            if link is None:
                self.counters["foreign"] += 1
                return
            if rec.is_lost_association_hint(data):
                self._hinted(link)
                return
            try:
                records = rec.split(data)
            except rec.RecordError:
                self.counters["not_dtls"] += 1
                return
            app = all(rec.content_type(r) == rec.APPLICATION_DATA for r in records)
            if link.pending is not None and (link.current is None or not app):
                link.pending.receive(records)
            elif link.current is not None:
                link.current.receive(records)
            else:
                self.counters["no_association"] += 1
        except Exception:
            self.counters["internal"] += 1
            self.log.failure("unexpected error on a DTLS datagram from {addr}", addr=addr)

    def _hinted(self, link: _Link) -> None:
        self.counters["hints_received"] += 1
        if link.current is None or link.pending is not None:
            return
        if self.clock.seconds() - link.last_rehandshake < self.settings.rehandshake_interval:
            self.counters["hints_ignored"] += 1
            return
        link.suspect = True
        link.last_rehandshake = self.clock.seconds()
        self.counters["rehandshakes"] += 1
        self._connect(link)

    # -- for the inner protocol -------------------------------------------------------------------

    def send_message(self, data: bytes, address: Address) -> None:
        link = self._links.get(address)
        if link is None:
            self.counters["send_unknown_server"] += 1
            return
        current = link.current
        if current is not None and current.state is State.OPEN and not link.suspect:
            if current.send(data):
                self.counters["messages_sent"] += 1
                return
        if len(link.queue) >= self.settings.queue_limit:
            link.queue.popleft()
            self.counters["queue_dropped"] += 1
        link.queue.append(data)
        self.counters["queued"] += 1
        if link.pending is None and self.clock.seconds() >= link.next_attempt:
            self._connect(link)

    def error_for(self, address: Address) -> CloudP2PError | None:
        """Why the last handshake with that server failed (None after a success)."""
        link = self._links.get(address)
        return None if link is None else link.error

    def is_open(self, address: Address) -> bool:
        link = self._links.get(address)
        return link is not None and link.current is not None and link.current.state is State.OPEN

    def export_key(self, address: Address, context: bytes, length: int = 32) -> bytes:
        link = self._links.get(address)
        if link is None or link.current is None:
            raise LookupError(f"no secure association with {address}")
        return link.current.export(context, length)

    def status(self) -> dict[str, Any]:
        return {
            "servers": {
                link.ref.label: {
                    "open": link.current is not None and link.current.state is State.OPEN,
                    "error": None if link.error is None else str(link.error),
                }
                for link in self._links.values()
            },
            "counters": dict(self.counters),
        }
