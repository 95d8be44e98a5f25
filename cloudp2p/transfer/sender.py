"""The sending side: an ``Offer`` (one port, one payload) serving ``SendSession`` s (one per fetch).

State machine of a ``SendSession`` (see docs/transfer.md)::

    (REQUEST accepted) --> SENDING --(every chunk acked)--> DONE
                              |--(receiver sent CLOSE)-----> CLOSED
                              |--(peer silent peer_timeout)-> TIMED_OUT
                              `--(offer closed)------------> CLOSED

The offer answers every REQUEST for its transfer id: it refuses (REFUSE, with a
code) a request whose size or SHA-256 does not match, whose parameters are bad,
or that goes over the per-peer limit; otherwise it replies ACCEPT and starts a
session that pushes chunks under a window of ``min(cwnd, receiver window)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from cloudp2p.transfer import wire
from cloudp2p.transfer.congestion import Aimd
from cloudp2p.transfer.host import Address, Progress, TransferHost, not_listening
from cloudp2p.transfer.meta import TransferMeta
from cloudp2p.transfer.rtt import RttEstimator

PROGRESS_INTERVAL = 0.05  # seconds between progress callbacks (the last one always comes)
INCREASE_BYTES = 16384  # congestion avoidance adds this much window per round trip (13 default chunks)
MIN_PTO = 0.002  # a probe sooner than this would mostly race the ack already on its way


def decode_have(text: Any, chunks: int) -> bytearray | None:
    """The REQUEST ``have`` field (base64 of zlib of one 0/1 byte per chunk) -> bytearray.

    Raises ``ValueError`` if it is not that."""
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > wire.MAX_CONTROL_SIZE:
        raise ValueError("have must be a base64 string")
    try:
        d = zlib.decompressobj()
        raw = d.decompress(base64.b64decode(text, validate=True), chunks + 1)
    except (binascii.Error, zlib.error):
        raise ValueError("have is not base64 of zlib data") from None
    if len(raw) != chunks or d.unconsumed_tail:
        raise ValueError("have does not have one byte per chunk")
    if raw.count(0) + raw.count(1) != chunks:
        raise ValueError("have bytes must be 0 or 1")
    return bytearray(raw)


def encode_have(have: bytearray) -> str:
    return base64.b64encode(zlib.compress(bytes(have), 6)).decode()


class Offer:
    """Bytes served on one port until closed, idle for ``timeout`` s, or fetched ``max_fetches`` times."""

    log = Logger()

    def __init__(
        self,
        manager: TransferHost,
        data: bytes,
        timeout: float,
        max_fetches: int | None,
        progress: Progress | None,
    ) -> None:
        self.manager = manager
        self.data = bytes(data)
        self.view = memoryview(self.data)
        self.size = len(self.data)
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.transfer_id = secrets.token_hex(16)
        self.tid = bytes.fromhex(self.transfer_id)
        self.timeout = timeout
        self.max_fetches = max_fetches
        self.progress = progress
        self.sessions: dict[Address, SendSession] = {}
        self.completed = 0
        self.closed = False
        self.transport: Any = None
        self.port = 0
        self.write: Callable[[bytes, Address], Any] = not_listening
        self.write_parts: Callable[[tuple[bytes, Any], Address], Any] = lambda parts, addr: not_listening(
            b"", addr
        )
        self.send_batch: Callable[[list[tuple[bytes, Any]], Address], Any] = lambda batch, addr: None
        self.gso = False
        self._idle: Any = None
        self._finished: deque[str] = deque(maxlen=64)
        self._waiting: list[defer.Deferred[Offer]] = []

    def meta(self) -> dict[str, Any]:
        """The JSON the fetching side needs (add the host: this side's address)."""
        return TransferMeta(self.port, self.transfer_id, self.size, self.sha256).to_json()

    def when_closed(self) -> defer.Deferred[Offer]:
        """Fires (with the offer) once the offer's port is closed."""
        if self.closed:
            return defer.succeed(self)
        d: defer.Deferred[Offer] = defer.Deferred()
        self._waiting.append(d)
        return d

    def close(self) -> None:
        """Stop serving: running fetches are told (CLOSE) and the port is closed. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        for session in list(self.sessions.values()):
            session.close()
        if self.transport is not None:
            transport, self.transport = self.transport, None
            transport.stopListening()
        self.manager.offer_closed(self)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self)

    def _arm_idle(self) -> None:
        if self.closed:
            return
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.timeout)
        else:
            self._idle = self.manager.clock.callLater(self.timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._idle = None
        if not self.sessions:
            self.log.debug("offer {tid}: idle for {t}s, closing", tid=self.transfer_id, t=self.timeout)
            self.close()

    def _send_control(self, kind: int, body: dict[str, Any], addr: Address) -> None:
        if self.transport is None:
            return
        try:
            self.write(wire.encode_control(kind, self.tid, body), addr)
        except OSError as e:
            self.log.debug("offer {tid}: send failed: {err}", tid=self.transfer_id, err=str(e))

    def _refuse(self, addr: Address, nonce: Any, code: str, message: str) -> None:
        self.manager.stats.refused += 1
        self._send_control(wire.REFUSE, {"nonce": nonce, "code": code, "message": message}, addr)

    def _on_request(self, addr: Address, body: dict[str, Any]) -> None:
        if self.closed:
            return
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not 0 < len(nonce) <= 64:
            self.manager.stats.malformed += 1
            return
        existing = self.sessions.get(addr)
        if existing is not None and existing.nonce == nonce:  # our ACCEPT was lost: say it again
            self._send_control(
                wire.ACCEPT, {"nonce": nonce, "chunks": existing.n, "chunk_size": existing.cs}, addr
            )
            return
        if nonce in self._finished:
            return  # a late duplicate of a request already served
        if existing is not None:
            existing.on_close()
        size, sha, cs, window = (
            body.get("size"),
            body.get("sha256"),
            body.get("chunk_size"),
            body.get("window"),
        )
        if size != self.size or sha != self.sha256:
            self._refuse(addr, nonce, "mismatch", "size or sha256 do not match this transfer")
            return
        if (
            not isinstance(cs, int)
            or isinstance(cs, bool)
            or not wire.MIN_CHUNK_SIZE <= cs <= wire.MAX_CHUNK_SIZE
        ):
            self._refuse(
                addr, nonce, "bad_request", f"chunk_size must be {wire.MIN_CHUNK_SIZE}..{wire.MAX_CHUNK_SIZE}"
            )
            return
        if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= 1 << 20:
            self._refuse(addr, nonce, "bad_request", "window must be 1..1048576")
            return
        chunks = max(1, -(-self.size // cs))
        try:
            have = decode_have(body.get("have"), chunks)
        except ValueError as e:
            self._refuse(addr, nonce, "bad_request", str(e))
            return
        if not self.manager.acquire_peer(addr[0]):
            self._refuse(
                addr, nonce, "busy", f"{addr[0]} already has {self.manager.config.max_per_peer} transfers"
            )
            return
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        session = SendSession(self, addr, nonce, cs, window, have)
        self.sessions[addr] = session
        self._send_control(wire.ACCEPT, {"nonce": nonce, "chunks": chunks, "chunk_size": cs}, addr)
        session.start()

    def _session_ended(self, session: SendSession) -> None:
        if self.sessions.get(session.peer) is session:
            del self.sessions[session.peer]
        self.manager.release_peer(session.peer[0])
        self._finished.append(session.nonce)
        stats = self.manager.stats
        if session.state == "DONE":
            stats.sessions_done += 1
            self.completed += 1
            if self.max_fetches is not None and self.completed >= self.max_fetches:
                self.manager.clock.callLater(0, self.close)
                return
        else:
            stats.sessions_failed += 1
        if not self.sessions:
            self._arm_idle()


class SendSession:
    """Pushes one offer's chunks to one receiver, reliably, with congestion control."""

    log = Logger()

    def __init__(
        self,
        offer: Offer,
        peer: Address,
        nonce: str,
        chunk_size: int,
        window: int,
        have: bytearray | None,
    ) -> None:
        self.offer = offer
        self.manager: TransferHost = offer.manager
        config = self.manager.config
        self.clock = self.manager.clock
        self.peer = peer
        self.nonce = nonce
        self.cs = chunk_size
        self.size = offer.size
        self.n = n = max(1, -(-offer.size // chunk_size))
        self.view = offer.view
        self.encoder = wire.DataEncoder(offer.tid)
        # Datagrams per GSO batch: the kernel takes at most 64, in one IP packet's worth of bytes.
        self.batch_max = min(64, 65000 // (chunk_size + wire.DATA_HEADER_SIZE)) if offer.gso else 1
        self.rwnd = max(1, window)
        self.rtt = RttEstimator(config.initial_rto, config.min_rto, config.max_rto)
        self.cc = Aimd(
            initial=config.initial_window,
            minimum=2,
            maximum=config.max_window,
            increase=max(1, INCREASE_BYTES // chunk_size),
        )
        self.burst = config.burst
        self.peer_timeout = config.peer_timeout
        self.acked = bytearray(n) if have is None else bytearray(have)
        self.sent_at = [-1.0] * n  # send time of each chunk's latest transmission; -1: never sent
        self.retx = bytearray(n)
        self.lost = bytearray(n)
        self.queue: deque[int] = deque()
        self.lost_pending = 0
        self.outstanding = 0
        self.acked_count = self.acked.count(1)
        self.una = self.acked.find(0)
        if self.una < 0:
            self.una = n
        self.next_new = self.una
        self.round_end = self.una  # a round trip ends when every chunk sent before it is acked
        self.round_sent = 0
        self.round_lost = 0
        self.recovery_point = 0  # no new window reduction for losses of chunks sent before this one
        self.probe_sent = False
        self.probes = 0
        self.rto_time = 0.0
        self.undo: tuple[float, float] | None = None  # (cwnd, ssthresh) before the last timeout
        self.spurious_timeouts = 0
        self.last_heard = self.clock.seconds()
        self.state = "SENDING"
        self.last_progress = float("-inf")
        self.retransmits = 0
        self.sent = 0
        self._timer: Any = None
        self._pump_call: Any = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._arm(self.rtt.rto)
        if self.una >= self.n:  # the receiver already had everything
            self._end("DONE")
            return
        self._pump()

    def _end(self, state: str) -> None:
        if self.state != "SENDING":
            return
        self.state = state
        for call in (self._timer, self._pump_call):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._pump_call = None
        self.offer._session_ended(self)

    def close(self) -> None:
        """The offer is closing: tell the receiver and stop."""
        if self.state == "SENDING":
            self.offer._send_control(wire.CLOSE, {"nonce": self.nonce, "reason": "offer closed"}, self.peer)
            self._end("CLOSED")

    def on_close(self) -> None:
        self._end("CLOSED")

    # -- acks ---------------------------------------------------------------------------------------

    def _mark(self, a: int, b: int) -> int:
        acked = self.acked
        fresh = acked.count(0, a, b)
        if fresh:
            acked[a:b] = b"\x01" * (b - a)
            lost = self.lost.count(1, a, b)
            if lost:
                self.lost_pending -= lost
                self.lost[a:b] = bytes(b - a)
        return fresh

    def on_ack(self, cum: int, high: int, window: int, echo: int, missing: list[tuple[int, int]]) -> None:
        if self.state != "SENDING":
            return
        n = self.n
        if high > n or cum > n:
            self.manager.stats.malformed += 1
            return
        now = self.clock.seconds()
        self.last_heard = now
        self.rwnd = max(1, window)
        sent_at = self.sent_at
        t_ref = -1.0
        if 0 <= echo < n:
            t_ref = sent_at[echo]
        fresh = 0
        if cum > self.una:
            fresh += self._mark(self.una, cum)
            self.una = cum
        pos = cum
        for a, b in missing:
            if a > pos:
                fresh += self._mark(pos, a)
            pos = b
        if high > pos:
            fresh += self._mark(pos, high)
        if fresh:
            # Karn's rule: no sample from a retransmitted chunk (nor from a duplicate's ack).
            if t_ref >= 0 and not self.retx[echo]:
                self.rtt.sample(now - t_ref)
            self.outstanding = max(0, self.outstanding - fresh)
            self.acked_count += fresh
            self.cc.on_ack(fresh)
            self.probe_sent = False
            self._arm(self._pto())
            if self.offer.progress is not None and (
                self.acked_count >= n or now - self.last_progress >= PROGRESS_INTERVAL
            ):
                self.last_progress = now
                self._report_progress()
        if self.una >= n or self.acked_count >= n:
            self._end("DONE")
            return
        if self.una >= self.round_end:
            self.cc.on_round(self.round_lost, self.round_sent)
            self.round_lost = self.round_sent = 0
            self.round_end = max(self.next_new, self.una + 1)
        if self.undo is not None and t_ref >= 0:
            if t_ref < self.rto_time:
                self._undo_timeout()
            else:
                self.undo = None  # what arrives now was sent after the timeout: the loss was real
        # Loss detection (time-based, as RACK): a missing chunk sent before the
        # one that just arrived, by more than a reordering allowance, is lost.
        if t_ref >= 0 and missing:
            srtt = self.rtt.srtt or 0.0
            limit = t_ref - srtt / 4
            lost = self.lost
            acked = self.acked
            queue = self.queue
            newly_lost = 0
            first_lost = n
            for a, b in missing:
                for s in range(a, min(b, self.next_new)):
                    if not lost[s] and not acked[s] and sent_at[s] < limit:
                        lost[s] = 1
                        queue.append(s)
                        newly_lost += 1
                        if s < first_lost:
                            first_lost = s
            if newly_lost:
                self.lost_pending += newly_lost
                self.round_lost += newly_lost
                if first_lost >= self.recovery_point:  # one reduction per window of data (NewReno)
                    self.cc.on_loss()
                    self.recovery_point = self.next_new
        self._pump()

    def _report_progress(self) -> None:
        try:
            self.offer.progress(min(self.acked_count * self.cs, self.size), self.size)
        except Exception:
            self.log.failure("transfer {tid}: progress callback failed", tid=self.offer.transfer_id)

    def _undo_timeout(self) -> None:
        """An ack for a chunk sent before the timeout: the peer was slow, not the network lossy.

        Like F-RTO (RFC 5682): take back the retransmissions still queued and
        the window reduction, so that a stalled receiver does not come back to
        a burst of duplicates that overflows its socket buffer.
        """
        for s in self.queue:
            self.lost[s] = 0
        self.queue.clear()
        self.lost_pending = 0
        assert self.undo is not None
        self.cc.cwnd, self.cc.ssthresh = self.undo
        self.undo = None
        self.spurious_timeouts += 1

    # -- sending ------------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Send what the window allows: queued retransmissions first, then new chunks.

        Where the socket supports it, full-size chunks go out in batches of up
        to ``batch_max`` datagrams per system call (UDP GSO: the kernel
        cuts one buffer into equal datagrams); a batch the socket refuses
        counts as lost on the network and is recovered like any loss.
        """
        self._pump_call = None
        if self.state != "SENDING":
            return
        limit = min(self.cc.cwnd, self.rwnd)
        budget = self.burst
        n = self.n
        cs = self.cs
        view = self.view
        encode = self.encoder.encode_parts
        write = self.offer.write_parts
        send_batch = self.offer.send_batch
        batch_max = self.batch_max
        batch: list[tuple[bytes, Any]] = []
        peer = self.peer
        now = self.clock.seconds()
        sent_at = self.sent_at
        queue = self.queue
        lost = self.lost
        acked = self.acked
        pushed_back = False
        while budget and self.outstanding - self.lost_pending < limit:
            retransmit = bool(queue)
            if retransmit:
                s = queue.popleft()
                if not lost[s]:
                    continue
            else:
                s = self.next_new
                while s < n and acked[s]:
                    s += 1
                if s >= n:
                    self.next_new = n
                    break
            off = s * cs
            parts = encode(s, view[off : off + cs])
            if batch_max > 1 and len(parts[1]) == cs:
                batch.append(parts)
                if len(batch) >= batch_max:
                    try:
                        send_batch(batch, peer)
                    except OSError:
                        pushed_back = True
                    batch = []
            else:
                try:
                    if batch:
                        send_batch(batch, peer)
                        batch = []
                    write(parts, peer)
                except OSError:
                    if retransmit:
                        queue.appendleft(s)
                    pushed_back = True
                    break
            if retransmit:
                lost[s] = 0
                self.lost_pending -= 1
                self.retx[s] = 1
                self.retransmits += 1
            else:
                self.next_new = s + 1
                self.outstanding += 1
            sent_at[s] = now
            budget -= 1
            if pushed_back:
                break
        if batch:
            try:
                send_batch(batch, peer)
            except OSError:
                pushed_back = True
        sent = self.burst - budget
        self.sent += sent
        self.round_sent += sent
        # Out of budget, or the socket pushed back: let the reactor read acks, then go on.
        if (pushed_back or not budget) and self._pump_call is None:
            self._pump_call = self.clock.callLater(0.001 if pushed_back else 0, self._pump)

    def _pto(self) -> float:
        """Tail-loss probe timeout (RFC 8985): two smoothed RTTs, never past the RTO."""
        srtt = self.rtt.srtt
        if srtt is None:
            return self.rtt.rto
        return min(self.rtt.rto, max(2 * srtt, MIN_PTO))

    def _probe(self) -> bool:
        """Send one chunk outside the window so that an ack reports what the tail lost."""
        s = self.next_new
        while s < self.n and self.acked[s]:
            s += 1
        fresh = s < self.n
        if not fresh:
            s = self.acked.rfind(0, self.una, self.next_new)
            if s < 0 or self.lost[s]:
                return False
        off = s * self.cs
        try:
            self.offer.write(self.encoder.encode(s, self.view[off : off + self.cs]), self.peer)
        except OSError:
            return False
        if fresh:
            self.next_new = s + 1
            self.outstanding += 1
        else:
            self.retx[s] = 1
            self.retransmits += 1
        self.sent_at[s] = self.clock.seconds()
        self.sent += 1
        self.round_sent += 1
        self.probes += 1
        return True

    def _arm(self, delay: float) -> None:
        delay = min(delay, self.peer_timeout)
        if self._timer is not None and self._timer.active():
            self._timer.reset(delay)
        else:
            self._timer = self.clock.callLater(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.state != "SENDING":
            return
        now = self.clock.seconds()
        if now - self.last_heard >= self.peer_timeout:
            self.log.info(
                "transfer {tid} to {peer}: no ack for {timeout}s, giving up",
                tid=self.offer.transfer_id,
                peer=self.peer,
                timeout=self.peer_timeout,
            )
            self._end("TIMED_OUT")
            return
        if not self.probe_sent and self.rtt.srtt is not None and self.outstanding > self.lost_pending:
            self.probe_sent = True  # first the tail-loss probe, then (one RTO later) the timeout
            if self._probe():
                self._arm(self.rtt.rto)
                return
        # Retransmission timeout: everything sent and unacked is presumed lost.
        acked, lost, queue = self.acked, self.lost, self.queue
        marked = 0
        s = acked.find(0, self.una, self.next_new)
        while s >= 0:
            if not lost[s]:
                lost[s] = 1
                queue.append(s)
                marked += 1
            s = acked.find(0, s + 1, self.next_new)
        self.lost_pending += marked
        if marked:
            if self.undo is None:
                self.undo = (self.cc.cwnd, self.cc.ssthresh)
            self.rto_time = now
            self.cc.on_timeout()
            self.rtt.backoff()
            self.recovery_until = now + self.rtt.rto
        self._arm(self.rtt.rto)
        self._pump()


class OfferProtocol(DatagramProtocol):
    """Framing for an offer's port: decode, check the transfer id, hand to the offer; never raise."""

    log = Logger()

    def __init__(self, offer: Offer) -> None:
        self.offer = offer
        self.maxPacketSize = wire.MAX_CONTROL_SIZE + 1024

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        offer = self.offer
        stats = offer.manager.stats
        try:
            kind, tid = wire.parse_header(datagram)
            if tid != offer.tid:
                stats.foreign += 1
                return
            addr = (addr[0], addr[1])
            if kind == wire.ACK:
                session = offer.sessions.get(addr)
                if session is None:
                    stats.foreign += 1
                    return
                session.on_ack(*wire.parse_ack(datagram))
            elif kind == wire.REQUEST:
                offer._on_request(addr, wire.parse_control(datagram))
            elif kind == wire.CLOSE:
                session = offer.sessions.get(addr)
                body = wire.parse_control(datagram)
                if session is not None and body.get("nonce") == session.nonce:
                    session.on_close()
            else:
                stats.malformed += 1
        except wire.WireError as e:
            stats.count_wire_error(e)
        except Exception:
            stats.internal += 1
            self.log.failure(
                "transfer offer {tid}: error handling a datagram from {addr}",
                tid=offer.transfer_id,
                addr=addr,
            )
