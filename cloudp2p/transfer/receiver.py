"""The receiving side: a ``Fetch`` pulls one offer into memory or into a file.

State machine of a ``Fetch`` (see docs/transfer.md)::

    REQUESTING --(ACCEPT or first DATA)--> RECEIVING --(all chunks)--> VERIFYING
        |                                     |                          |
        |--(REFUSE)-------> FAILED <----------|--(CLOSE, silence,        |--(SHA-256 mismatch)--> FAILED
        `--(silence)------> FAILED              cancel, stop)            `--(match)--> LINGER
                                                                           --(linger s)--> CLOSED

Data are written where they belong as they arrive (a ``bytearray`` or a
``.part`` file); the SHA-256 is computed incrementally over the contiguous
prefix, so the final check costs little. A ``.part`` file's resume state (which
chunks are held) lives next to it in ``.part.json`` and is saved every
``state_interval`` seconds and whenever the fetch stops without finishing.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from cloudp2p.transfer import wire
from cloudp2p.transfer.errors import (
    IntegrityError,
    TransferAborted,
    TransferError,
    TransferTimeout,
    refusal,
)
from cloudp2p.transfer.host import Address, Progress, TransferHost, not_listening
from cloudp2p.transfer.sender import PROGRESS_INTERVAL, encode_have

HASH_STEP = 4 * 1024 * 1024  # most bytes read back from a .part file per ack, for the running hash
HASH_BATCH = 512 * 1024  # least bytes handed to the hash thread at a time
STATE_VERSION = 1


def estimate_truesize(datagram: int) -> int:
    """Bytes of socket receive buffer one datagram of ``datagram`` bytes uses up on Linux.

    Measured on loopback: 1,200 B -> 2,304; 8 KiB -> 16.6 KiB; 32 KiB -> 33.7 KiB;
    60,000 B -> 61.2 KiB. This errs on the large side.
    """
    if datagram <= 1800:
        return 2304
    if datagram + 576 <= 16384:
        size = 4096
        while size < datagram + 576:
            size *= 2
        return size + 512
    return datagram + 1024 + datagram // 32


def window_for(rcvbuf: int, chunk_size: int, max_window: int) -> int:
    """Chunks in flight that the receive buffer can hold even if the receiver stalls.

    Only 60 % of the buffer counts: Linux frees the memory of datagrams already
    read in batches of about a quarter of the buffer (udp_rmem_release), so a
    busy socket holds fewer datagrams than an idle one.
    """
    per = estimate_truesize(chunk_size + wire.DATA_HEADER_SIZE + 28)
    return max(2, min(max_window, int(rcvbuf * 0.6) // per))


class MemorySink:
    """Chunks are kept as views of the datagrams they came in; the result is one ``join``.

    That is one copy of the data in user space (as a TCP reader's ``join``),
    instead of a copy into a zeroed buffer and another into ``bytes``.
    """

    resumable = False

    def __init__(self, size: int) -> None:
        self.size = size
        self.parts: list[Any] = []
        self.cs = 1

    def load(self, sha256: str, size: int) -> tuple[int, bytearray] | None:
        return None

    def open(self, chunk_size: int, chunks: int) -> None:
        self.cs = chunk_size
        self.parts = [b""] * chunks

    def write(self, seq: int, payload: memoryview) -> None:
        self.parts[seq] = payload

    def pieces(self, first: int, end: int) -> list[Any]:
        """The payloads of chunks ``first`` to ``end - 1``, in order."""
        return self.parts[first:end]

    def save(self, chunk_size: int, have: bytearray) -> None:
        pass

    def finish(self) -> bytes:
        data = b"".join(self.parts)
        self.parts = []
        return data

    def suspend(self, chunk_size: int, have: bytearray) -> None:
        self.parts = []

    def discard(self) -> None:
        self.parts = []

    def release(self) -> None:
        self.parts = []


class FileSink:
    """Chunks go into ``path + ".part"``; resume state in ``path + ".part.json"``.

    The finished file appears at ``path`` only by an atomic rename after the
    SHA-256 matched; until then nothing is at ``path``.
    """

    resumable = True
    log = Logger()

    def __init__(self, path: str, size: int, sha256: str) -> None:
        self.path = path
        self.part = path + ".part"
        self.state_path = path + ".part.json"
        self.size = size
        self.sha256 = sha256
        self.cs = 1
        self.fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o600)

    def load(self, sha256: str, size: int) -> tuple[int, bytearray] | None:
        """``(chunk_size, have)`` from a previous attempt at the same bytes, else None (and start clean)."""
        from cloudp2p.transfer.sender import decode_have

        try:
            with open(self.state_path, encoding="utf-8") as f:
                state = json.load(f)
            if (
                not isinstance(state, dict)
                or state.get("version") != STATE_VERSION
                or state.get("sha256") != sha256
                or state.get("size") != size
            ):
                raise ValueError("state is for other data")
            chunk_size = state["chunk_size"]
            if (
                not isinstance(chunk_size, int)
                or not wire.MIN_CHUNK_SIZE <= chunk_size <= wire.MAX_CHUNK_SIZE
            ):
                raise ValueError("bad chunk size")
            have = decode_have(state["have"], max(1, -(-size // chunk_size)))
            if have is None:
                raise ValueError("no usable data")
            return chunk_size, have
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.log.info("{path}: not resuming ({why}); starting over", path=self.part, why=str(e))
        os.ftruncate(self.fd, 0)
        return None

    def open(self, chunk_size: int, chunks: int) -> None:
        self.cs = chunk_size

    def write(self, seq: int, payload: memoryview) -> None:
        os.pwrite(self.fd, payload, seq * self.cs)

    def pieces(self, first: int, end: int) -> list[bytes]:
        start = first * self.cs
        return [os.pread(self.fd, min(end * self.cs, self.size) - start, start)]

    def save(self, chunk_size: int, have: bytearray) -> None:
        state = {
            "version": STATE_VERSION,
            "size": self.size,
            "sha256": self.sha256,
            "chunk_size": chunk_size,
            "have": encode_have(have),
        }
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
        os.replace(tmp, self.state_path)

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def finish(self) -> str:
        os.ftruncate(self.fd, self.size)
        self._close()
        os.replace(self.part, self.path)
        _unlink(self.state_path)
        return self.path

    def suspend(self, chunk_size: int, have: bytearray) -> None:
        try:
            self.save(chunk_size, have)
        finally:
            self._close()

    def release(self) -> None:
        self._close()

    def discard(self) -> None:
        self._close()
        _unlink(self.part)
        _unlink(self.state_path)


def _update(hasher: Any, pieces: list[Any]) -> None:
    # hashlib releases the GIL only for inputs of 2 KiB or more: small pieces are joined first
    # (one copy) so that the hash thread does not hold the GIL against the reactor thread.
    if len(pieces) > 1 and len(pieces[0]) < 2048:
        hasher.update(b"".join(pieces))
        return
    for piece in pieces:
        hasher.update(piece)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Fetch:
    """Pulls one offer: REQUEST, then chunks in, selective acks out, SHA-256 check, result."""

    log = Logger()

    def __init__(
        self,
        manager: TransferHost,
        peer: Address,
        transfer_id: str,
        size: int,
        sha256: str,
        chunk_size: int,
        sink: MemorySink | FileSink,
        progress: Progress | None,
    ) -> None:
        self.manager = manager
        self.clock = manager.clock
        config = manager.config
        self.config = config
        self.peer = peer
        self.transfer_id = transfer_id
        self.tid = wire.tid_to_bytes(transfer_id)
        self.size = size
        self.sha256 = sha256
        self.sink = sink
        self.progress = progress
        self.nonce = secrets.token_hex(8)
        loaded = sink.load(sha256, size)
        if loaded is not None:
            chunk_size, self.have = loaded
        self.cs = chunk_size
        self.n = n = max(1, -(-size // chunk_size))
        if loaded is None:
            self.have = bytearray(n)
        sink.open(chunk_size, n)
        have = self.have
        self.got = have.count(1)
        self.resumed_chunks = self.got
        cum = have.find(0)
        self.cum = n if cum < 0 else cum
        self.high = have.rfind(1) + 1
        self.last_len = size - (n - 1) * chunk_size
        self.hasher = hashlib.sha256()
        self.hashed = 0
        self.state = "REQUESTING"
        self.deferred: defer.Deferred[Any] = defer.Deferred(self._cancel)
        self.transport: Any = None
        self.window = 2
        self.ack_every = 16
        self.echo = -1
        self.pending = 0
        self.heard = False
        self.last_heard = self.clock.seconds()
        self.last_progress = float("-inf")
        self.last_save = self.clock.seconds()
        self.duplicates = 0
        self.acks_sent = 0
        self._flush_call: Any = None
        self._request_call: Any = None
        self._request_delay = config.request_interval
        self._watchdog: Any = None
        self._linger_call: Any = None
        self._write = sink.write
        self._hash_pool = manager.hash_pool if isinstance(sink, MemorySink) else None
        self.write: Callable[[bytes, Address], Any] = not_listening
        self._on_end: Callable[[Fetch], None] | None = None
        self._on_closed: Callable[[Fetch], None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(
        self,
        transport: Any,
        rcvbuf: int,
        on_end: Callable[[Fetch], None],
        on_closed: Callable[[Fetch], None],
    ) -> None:
        """``on_end`` once the transfer is over (its peer slot is free), ``on_closed`` once its port is."""
        self.transport = transport
        self._on_end = on_end
        self._on_closed = on_closed
        self.window = window_for(rcvbuf, self.cs, self.config.max_window)
        self.ack_every = max(1, min(32, self.window // 4))
        if self.got >= self.n:
            self._complete()
            return
        self._send_request()
        self._watchdog = self.clock.callLater(self._tick_interval(), self._tick)

    def _tick_interval(self) -> float:
        return max(0.01, min(0.5, self.config.peer_timeout / 4))

    def _send(self, datagram: bytes) -> None:
        try:
            self.write(datagram, self.peer)
        except OSError as e:
            self.log.debug("fetch {tid}: send failed: {err}", tid=self.transfer_id, err=str(e))

    def _send_request(self) -> None:
        self._request_call = None
        if self.state != "REQUESTING":
            return
        have = None
        if self.got:
            have = encode_have(self.have)
            if len(have) > wire.MAX_CONTROL_SIZE // 2:  # too fragmented: offer only the prefix
                prefix = bytearray(self.n)
                prefix[: self.cum] = b"\x01" * self.cum
                have = encode_have(prefix)
        body = {
            "nonce": self.nonce,
            "chunk_size": self.cs,
            "window": self.window,
            "size": self.size,
            "sha256": self.sha256,
            "have": have,
        }
        self._send(wire.encode_control(wire.REQUEST, self.tid, body))
        self._request_call = self.clock.callLater(self._request_delay, self._send_request)
        self._request_delay = min(self._request_delay * 2, 2.0)

    def _cancel_timers(self) -> None:
        for name in ("_flush_call", "_request_call", "_watchdog", "_linger_call"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)

    def _close_port(self) -> None:
        self._cancel_timers()
        if self.transport is not None:
            transport, self.transport = self.transport, None
            transport.stopListening()
        if self._on_closed is not None:
            on_closed, self._on_closed = self._on_closed, None
            on_closed(self)
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end(self)

    def _fail(self, error: Exception, *, keep: bool = True, tell_peer: bool = True) -> None:
        if self.state in ("FAILED", "LINGER", "CLOSED"):
            return
        self.state = "FAILED"
        if tell_peer and self.transport is not None:
            self._send(wire.encode_control(wire.CLOSE, self.tid, {"nonce": self.nonce, "reason": str(error)}))
        try:
            if keep:
                self.sink.suspend(self.cs, self.have)
            else:
                self.sink.discard()
        except OSError as e:
            self.log.warning(
                "fetch {tid}: could not keep the partial data: {err}", tid=self.transfer_id, err=str(e)
            )
        self._close_port()
        self.deferred.errback(error)

    def _cancel(self, d: defer.Deferred[Any]) -> None:
        self._fail(TransferAborted("cancelled"))

    def abort(self, reason: str = "stopped") -> None:
        """Stop now; a file fetch keeps its ``.part`` state for a later resume."""
        if self.state == "LINGER":
            self.state = "CLOSED"
            self._close_port()
        else:
            self._fail(TransferAborted(reason))

    def _tick(self) -> None:
        self._watchdog = None
        if self.state not in ("REQUESTING", "RECEIVING"):
            return
        now = self.clock.seconds()
        if self.heard:
            self.heard = False
            self.last_heard = now
        elif now - self.last_heard >= self.config.peer_timeout:
            self._fail(
                TransferTimeout(
                    f"no data from {self.peer[0]}:{self.peer[1]} for {self.config.peer_timeout:g}s"
                ),
                tell_peer=False,
            )
            return
        elif self.state == "RECEIVING":
            self._send_ack()  # nudge a sender whose acks were all lost
        self._watchdog = self.clock.callLater(self._tick_interval(), self._tick)

    # -- datagrams ----------------------------------------------------------------------------------

    def on_data(self, seq: int, payload: memoryview) -> None:
        state = self.state
        if state != "RECEIVING":
            if state == "REQUESTING":
                self._accepted()
            elif state in ("LINGER", "VERIFYING"):
                self._send_ack()
                return
            else:
                return
        n = self.n
        if seq >= n:
            self.manager.stats.malformed += 1
            return
        if len(payload) != (self.cs if seq < n - 1 else self.last_len):
            self.manager.stats.malformed += 1
            return
        self.heard = True
        have = self.have
        if have[seq]:
            self.duplicates += 1
        else:
            self._write(seq, payload)
            have[seq] = 1
            self.got += 1
            if seq == self.cum:
                cum = have.find(0, seq + 1)
                self.cum = n if cum < 0 else cum
            if seq >= self.high:
                self.high = seq + 1
            if self.got >= n:
                self._complete()
                return
        self.echo = seq
        self.pending += 1
        if self.pending >= self.ack_every:
            self._send_ack()
        elif self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._send_ack)

    def on_control(self, kind: int, body: dict[str, Any]) -> None:
        if body.get("nonce") != self.nonce:
            self.manager.stats.foreign += 1
            return
        if kind == wire.ACCEPT:
            if body.get("chunk_size") != self.cs or body.get("chunks") != self.n:
                self._fail(TransferError("the sender accepted with other parameters"))
            elif self.state == "REQUESTING":
                self._accepted()
        elif kind == wire.REFUSE:
            if self.state in ("REQUESTING", "RECEIVING"):
                code, message = str(body.get("code", "refused")), str(body.get("message", ""))
                self._fail(refusal(code, message), tell_peer=False)
        elif kind == wire.CLOSE:
            if self.state in ("REQUESTING", "RECEIVING"):
                self._fail(TransferAborted(f"the sender stopped: {body.get('reason', '')}"), tell_peer=False)

    def _accepted(self) -> None:
        self.state = "RECEIVING"
        self.heard = True
        if self._request_call is not None and self._request_call.active():
            self._request_call.cancel()
        self._request_call = None

    def _missing(self) -> tuple[list[tuple[int, int]], int]:
        have, high = self.have, self.high
        ranges: list[tuple[int, int]] = []
        pos = self.cum
        while pos < high:
            a = have.find(0, pos, high)
            if a < 0:
                break
            if len(ranges) == wire.MAX_ACK_RANGES:
                return ranges, a  # describe only up to the first range left out
            b = have.find(1, a, high)
            if b < 0:
                b = high
            ranges.append((a, b))
            pos = b
        return ranges, high

    def _send_ack(self) -> None:
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if self.transport is None:
            return
        self.pending = 0
        if self.cum >= self.n:
            ranges, high = [], self.n
        else:
            ranges, high = self._missing()
        self._send(wire.encode_ack(self.tid, self.cum, high, self.window, self.echo, ranges))
        self.acks_sent += 1
        if self.state != "RECEIVING":
            return
        self._hash_prefix(HASH_STEP)
        now = self.clock.seconds()
        if self.progress is not None and now - self.last_progress >= PROGRESS_INTERVAL:
            self.last_progress = now
            self._report_progress()
        if self.sink.resumable and now - self.last_save >= self.config.state_interval:
            self.last_save = now
            try:
                self.sink.save(self.cs, self.have)
            except OSError as e:
                self.log.warning(
                    "fetch {tid}: cannot save resume state: {err}", tid=self.transfer_id, err=str(e)
                )

    def _report_progress(self) -> None:
        try:
            done = self.size if self.got >= self.n else min(self.got * self.cs, self.size)
            self.progress(done, self.size)
        except Exception:
            self.log.failure("fetch {tid}: progress callback failed", tid=self.transfer_id)

    def _hash_prefix(self, step: int | None) -> None:
        """Fold the contiguous prefix received so far into the running SHA-256.

        With a hash thread (memory fetches on a real reactor), batches of at
        least ``HASH_BATCH`` bytes go to it: hashlib releases the GIL, so the
        hashing overlaps with receiving. Batches are queued in order on one
        thread, and received chunks are never rewritten. Without one, at most
        ``step`` bytes are hashed per call (all of them if ``step`` is None).
        """
        first, end = self.hashed, self.cum
        if end <= first:
            return
        if self._hash_pool is not None:
            if step is None or (end - first) * self.cs >= HASH_BATCH:
                self._hash_pool.submit(_update, self.hasher, self.sink.pieces(first, end))
                self.hashed = end
            return
        if step is not None:
            end = min(end, first + max(1, step // self.cs))
        _update(self.hasher, self.sink.pieces(first, end))
        self.hashed = end

    def _complete(self) -> None:
        self.state = "VERIFYING"
        self.echo = self.n - 1
        if self.transport is not None:
            self._send_ack()
            self._send_ack()  # the final ack twice: its loss costs the sender a timeout
        try:
            self._hash_prefix(None)
        except OSError as e:
            self._fail(TransferError(f"cannot read back the received data: {e}"), keep=False)
            return
        if self._hash_pool is None:
            self._verified(self.hasher.hexdigest())
            return
        future = self._hash_pool.submit(self.hasher.hexdigest)
        call_from_thread = self.manager.reactor.callFromThread
        future.add_done_callback(
            lambda f: call_from_thread(self._verified, None if f.cancelled() or f.exception() else f.result())
        )

    def _verified(self, digest: str | None) -> None:
        if self.state != "VERIFYING":
            return  # stopped or cancelled while the hash thread finished
        if digest is None:
            self._fail(TransferError("could not compute the SHA-256 of the received data"), keep=False)
            return
        if digest != self.sha256:
            self._fail(
                IntegrityError(f"from {self.peer[0]}:{self.peer[1]} (transfer {self.transfer_id})"),
                keep=False,
            )
            return
        try:
            result = self.sink.finish()
        except OSError as e:
            self._fail(TransferError(f"cannot store the received data: {e}"), keep=True)
            return
        if self.progress is not None:
            self._report_progress()
        self.state = "LINGER"
        self._cancel_timers()
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end(self)
        if self.config.linger > 0 and self.transport is not None:
            self._linger_call = self.clock.callLater(self.config.linger, self._end_linger)
        else:
            self._end_linger()
        self.deferred.callback(result)

    def _end_linger(self) -> None:
        self._linger_call = None
        self.state = "CLOSED"
        self._close_port()


class FetchProtocol(DatagramProtocol):
    """Framing for a fetch's port: only datagrams from the offer's address and transfer id get through."""

    log = Logger()

    def __init__(self, fetch: Fetch, max_packet: int) -> None:
        self.fetch = fetch
        self.maxPacketSize = max_packet

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        fetch = self.fetch
        stats = fetch.manager.stats
        try:
            if addr == fetch.peer and len(datagram) > 7 and datagram[7] == wire.DATA:  # the hot path
                tid, seq, payload = wire.parse_data_datagram(datagram)
                if tid != fetch.tid:
                    stats.foreign += 1
                    return
                fetch.on_data(seq, payload)
                return
            relocate = False
            if addr[0] != fetch.peer[0] or addr[1] != fetch.peer[1]:
                # A multi-homed sender may answer from another of its addresses: until the
                # first valid answer, the right port and transfer id are enough.
                if fetch.state != "REQUESTING" or addr[1] != fetch.peer[1]:
                    stats.foreign += 1
                    return
                relocate = True
            kind, tid = wire.parse_header(datagram)
            if tid != fetch.tid:
                stats.foreign += 1
                return
            if relocate:
                fetch.peer = (addr[0], addr[1])
            if kind == wire.DATA:
                fetch.on_data(*wire.parse_data(datagram))
            elif kind in (wire.ACCEPT, wire.REFUSE, wire.CLOSE):
                fetch.on_control(kind, wire.parse_control(datagram))
            else:
                stats.malformed += 1
        except wire.WireError as e:
            stats.count_wire_error(e)
        except Exception:
            stats.internal += 1
            self.log.failure(
                "fetch {tid}: error handling a datagram from {addr}", tid=fetch.transfer_id, addr=addr
            )
