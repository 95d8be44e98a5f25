"""``TransferManager``: offers and fetches, each on its own OS-allocated UDP port.

Pull model (docs/INTERFACES.md): the side that has the bytes calls ``offer(data)``
and sends ``offer.meta()`` to the other side in a request, reply or peer
message; the other side calls ``fetch((host, port), transfer_id, size, sha256)``.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import random
import secrets
import socket
import sys
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from cloudp2p.transfer import wire
from cloudp2p.transfer.config import TransferConfig
from cloudp2p.transfer.errors import (
    BadTransferMeta,
    FileTooLarge,
    TooManyTransfers,
    TransferError,
)
from cloudp2p.transfer.receiver import Fetch, FetchProtocol, FileSink, MemorySink
from cloudp2p.transfer.sender import OfferProtocol, SendSession, decode_have
from cloudp2p.transfer.udp import listen_coalescing

Address = tuple[str, int]
Progress = Callable[[int, int], object]
Listen = Callable[[Any], Any]  # protocol -> started transport with getHost() and stopListening()


@attrs.define
class TransferStats:
    """Counters of what the manager dropped and did (all its ports together)."""

    corrupt: int = 0  # checksum mismatch: corrupted or truncated datagrams
    malformed: int = 0  # bad magic/version/type/length/index: hostile or broken datagrams
    foreign: int = 0  # wrong transfer id, wrong source address, unknown session or nonce
    internal: int = 0  # bugs caught at the protocol edge (logged)
    refused: int = 0  # requests this side refused
    offers: int = 0
    fetches: int = 0
    sessions_done: int = 0
    sessions_failed: int = 0
    dropped_by_hook: int = 0

    def count_wire_error(self, error: wire.WireError) -> None:
        if isinstance(error, wire.ChecksumError):
            self.corrupt += 1
        else:
            self.malformed += 1


@attrs.frozen
class TransferMeta:
    """What a fetcher needs, as it travels in JSON: ``{"port", "transfer_id", "size", "sha256"}``."""

    port: int
    transfer_id: str
    size: int
    sha256: str

    @classmethod
    def from_json(cls, obj: Any) -> TransferMeta:
        """Validate a meta dict that came from the network; ``BadTransferMeta`` says what is wrong."""
        if not isinstance(obj, dict):
            raise BadTransferMeta("expected an object with port, transfer_id, size, sha256")
        try:
            port, tid, size, sha = obj["port"], obj["transfer_id"], obj["size"], obj["sha256"]
        except KeyError as e:
            raise BadTransferMeta(f"missing {e.args[0]}") from None
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise BadTransferMeta(f"port must be 1..65535, got {port!r}")
        _check_tid(tid)
        _check_size(size)
        _check_sha(sha)
        return cls(port, tid, size, sha)

    def to_json(self) -> dict[str, Any]:
        return {"port": self.port, "transfer_id": self.transfer_id, "size": self.size, "sha256": self.sha256}


def _check_tid(tid: Any) -> None:
    try:
        wire.tid_to_bytes(tid)
    except wire.WireError as e:
        raise BadTransferMeta(str(e)) from None


def _check_size(size: Any) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadTransferMeta(f"size must be a whole number of bytes, got {size!r}")


def _check_sha(sha: Any) -> None:
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise BadTransferMeta("sha256 must be 64 lower-case hex digits")


class Offer:
    """Bytes served on one port until closed, idle for ``timeout`` s, or fetched ``max_fetches`` times."""

    log = Logger()

    def __init__(
        self,
        manager: TransferManager,
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
        self.write: Callable[[bytes, Address], Any] = _unbound_write
        self.write_parts: Callable[[tuple[bytes, Any], Address], Any] = lambda parts, addr: _unbound_write(
            b"", addr
        )
        self.send_batch: Callable[[list[tuple[bytes, Any]], Address], Any] = lambda batch, addr: None
        self.gso = False
        self._idle: Any = None
        self._finished: deque[str] = deque(maxlen=64)
        self._waiting: list[defer.Deferred[Offer]] = []

    def meta(self) -> dict[str, Any]:
        """The JSON the fetching side needs (add the host: this side's address)."""
        return {"port": self.port, "transfer_id": self.transfer_id, "size": self.size, "sha256": self.sha256}

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
        self.manager._offer_closed(self)
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
        if not self.manager._acquire(addr[0]):
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
        self.manager._release(session.peer[0])
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


def _guarded(write: Callable[[bytes, Address], Any]) -> Callable[[bytes, Address], Any]:
    """A non-socket transport's write, with its errors (e.g. "closed") reported as ``OSError``."""

    def guarded(datagram: bytes, addr: Address) -> Any:
        try:
            return write(datagram, addr)
        except (RuntimeError, ValueError) as e:
            raise OSError(str(e)) from None

    return guarded


def _unbound_write(datagram: bytes, addr: Address) -> None:
    raise OSError("not listening")


class TransferManager:
    """Creates offers and fetches; enforces the size and per-peer limits; owns every transfer port.

    ``reactor`` provides ``callLater``/``seconds`` (and ``listenUDP`` unless
    ``listen`` is given). ``listen(protocol) -> transport`` binds a protocol
    elsewhere, e.g. on the memory network in unit tests. Keyword overrides
    (``chunk_size=...``) are applied on top of ``config``.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        *,
        config: TransferConfig | None = None,
        listen: Listen | None = None,
        drop_rate: float = 0.0,
        seed: int | None = None,
        hash_thread: bool | None = None,
        **overrides: Any,
    ) -> None:
        config = config or TransferConfig()
        if overrides:
            config = attrs.evolve(config, **overrides)
        self.config = config
        self.reactor = reactor
        self.clock = reactor
        self._listen_fn = listen
        self.stats = TransferStats()
        self.drop_rate = drop_rate  # test and benchmark hook: drop this fraction of outgoing datagrams
        self._random = random.Random(seed)
        self._offers: set[Offer] = set()
        self._fetches: set[Fetch] = set()
        self._per_peer: Counter[str] = Counter()
        self._paths: set[str] = set()
        self.stopped = False
        self._gso_ok = True
        # SHA-256 of memory fetches on a thread (hashlib releases the GIL), when the reactor is real.
        if hash_thread is None:
            hash_thread = listen is None and hasattr(reactor, "callFromThread")
        self._hash_pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="transfer-sha256") if hash_thread else None
        )

    @classmethod
    def from_config(cls, reactor: Any, section: dict[str, Any], **kwargs: Any) -> TransferManager:
        """From the validated ``[transfer]`` section of a config file."""
        return cls(reactor, config=TransferConfig.from_section(section), **kwargs)

    # -- public API ---------------------------------------------------------------------------------

    def offer(
        self,
        data: bytes,
        *,
        timeout: float | None = None,
        max_fetches: int | None = None,
        progress: Progress | None = None,
    ) -> Offer:
        """Serve ``data`` on a fresh port. Raises ``FileTooLarge``, or ``TransferError`` if no port."""
        if self.stopped:
            raise TransferError("the transfer manager is stopped")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("offer() takes bytes")
        if len(data) > self.config.max_file_size:
            raise FileTooLarge(
                f"{len(data)} bytes is more than the limit of {self.config.max_file_size} bytes"
            )
        offer = Offer(
            self, data, self.config.offer_timeout if timeout is None else timeout, max_fetches, progress
        )
        protocol = OfferProtocol(offer)
        transport, _ = self._listen(protocol, receive=False)
        offer.transport = transport
        offer.port = transport.getHost().port
        offer.write = self._make_writer(transport)
        offer.write_parts = self._make_parts_writer(transport, offer.write)
        offer.send_batch, offer.gso = self._make_batch_sender(transport, offer.write_parts)
        self._offers.add(offer)
        self.stats.offers += 1
        offer._arm_idle()
        return offer

    def fetch(
        self,
        address: Address,
        transfer_id: str,
        size: int,
        sha256: str,
        progress: Progress | None = None,
        *,
        chunk_size: int | None = None,
    ) -> defer.Deferred[bytes]:
        """Pull an offer into memory: fires with the bytes once their SHA-256 matched."""
        try:
            peer = self._check(address, transfer_id, size, sha256)
            sink = MemorySink(size)
        except TransferError as e:
            return defer.fail(e)
        return self._start(peer, transfer_id, size, sha256, chunk_size, sink, progress)

    def fetch_to_file(
        self,
        path: str | os.PathLike[str],
        address: Address,
        transfer_id: str,
        size: int,
        sha256: str,
        progress: Progress | None = None,
        *,
        chunk_size: int | None = None,
    ) -> defer.Deferred[str]:
        """Pull an offer into ``path``, resuming from ``path + ".part"`` if an earlier try left one.

        Fires with ``path`` once the file is complete, verified and renamed into place.
        """
        path = os.path.abspath(os.fspath(path))
        try:
            peer = self._check(address, transfer_id, size, sha256)
            if path in self._paths:
                raise TransferError(f"{path} is already being fetched")
            try:
                sink = FileSink(path, size, sha256)
            except OSError as e:
                raise TransferError(f"cannot write {path}.part: {e.strerror}") from None
        except TransferError as e:
            return defer.fail(e)
        self._paths.add(path)
        d = self._start(peer, transfer_id, size, sha256, chunk_size, sink, progress)

        def done(result: Any) -> Any:
            self._paths.discard(path)
            return result

        return d.addBoth(done)

    def stop(self) -> None:
        """Close every offer and fetch (file fetches keep their resume state)."""
        self.stopped = True
        for offer in list(self._offers):
            offer.close()
        for fetch in list(self._fetches):
            fetch.abort("the transfer manager stopped")
        if self._hash_pool is not None:
            self._hash_pool.shutdown(wait=False, cancel_futures=True)

    def open_ports(self) -> int:
        """Transfer ports currently open (offers, fetches, lingering fetches)."""
        return len(self._offers) + len(self._fetches)

    # -- internals ----------------------------------------------------------------------------------

    def _check(self, address: Any, transfer_id: Any, size: Any, sha256: Any) -> Address:
        if self.stopped:
            raise TransferError("the transfer manager is stopped")
        try:
            host, port = address
            ip = ipaddress.ip_address(host)
            if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
                raise ValueError
        except (TypeError, ValueError):
            raise BadTransferMeta(f"address must be (IP address, port), got {address!r}") from None
        if ip.version != ipaddress.ip_address(self.config.interface).version:
            raise BadTransferMeta(
                f"cannot reach {host} from transfer sockets bound to {self.config.interface}"
            )
        _check_tid(transfer_id)
        _check_size(size)
        _check_sha(sha256)
        if size > self.config.max_file_size:
            raise FileTooLarge(f"{size} bytes is more than the limit of {self.config.max_file_size} bytes")
        return (str(host), port)

    def _start(
        self,
        peer: Address,
        transfer_id: str,
        size: int,
        sha256: str,
        chunk_size: int | None,
        sink: MemorySink | FileSink,
        progress: Progress | None,
    ) -> defer.Deferred[Any]:
        if not self._acquire(peer[0]):
            sink.release()
            return defer.fail(
                TooManyTransfers(f"{peer[0]} already has {self.config.max_per_peer} transfers running")
            )
        fetch = Fetch(
            self, peer, transfer_id, size, sha256, chunk_size or self.config.chunk_size, sink, progress
        )
        protocol = FetchProtocol(fetch, max(fetch.cs + wire.DATA_HEADER_SIZE, 4096))
        try:
            transport, rcvbuf = self._listen(protocol, receive=True)
        except TransferError as e:
            self._release(peer[0])
            sink.release()
            return defer.fail(e)
        self._fetches.add(fetch)
        self.stats.fetches += 1
        fetch.write = self._make_writer(transport)
        fetch.start(transport, rcvbuf, lambda f: self._release(peer[0]))
        return fetch.deferred

    def _acquire(self, host: str) -> bool:
        if self._per_peer[host] >= self.config.max_per_peer:
            return False
        self._per_peer[host] += 1
        return True

    def _release(self, host: str) -> None:
        self._per_peer[host] -= 1
        if self._per_peer[host] <= 0:
            del self._per_peer[host]

    def _offer_closed(self, offer: Offer) -> None:
        self._offers.discard(offer)

    def _fetch_closed(self, fetch: Fetch) -> None:
        self._fetches.discard(fetch)

    def _listen(self, protocol: Any, *, receive: bool) -> tuple[Any, int]:
        config = self.config
        if self._listen_fn is not None:
            try:
                return self._listen_fn(protocol), config.recv_buffer
            except OSError as e:
                raise TransferError(f"cannot open a transfer port: {e}") from None
        try:
            if receive and config.gso:
                port = listen_coalescing(self.reactor, protocol, config.interface, protocol.maxPacketSize)
            else:
                port = self.reactor.listenUDP(
                    0, protocol, interface=config.interface, maxPacketSize=protocol.maxPacketSize
                )
        except CannotListenError as e:
            raise TransferError(f"cannot open a transfer port: {e}") from None
        sock = port.socket
        want_rcv = config.recv_buffer if receive else min(config.recv_buffer, 1024 * 1024)
        _set_buffer(sock, socket.SO_RCVBUF, want_rcv)
        _set_buffer(sock, socket.SO_SNDBUF, config.send_buffer)
        # Linux reports twice the requested size (bookkeeping overhead included).
        return port, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def _make_parts_writer(
        self, transport: Any, write: Callable[[bytes, Address], Any]
    ) -> Callable[[tuple[bytes, Any], Address], Any]:
        """Sends a datagram given as ``(header, payload)``: real sockets gather the two pieces
        with ``sendmsg`` (no copy of the payload in user space); other transports get one join."""
        sock = getattr(transport, "socket", None)
        if sock is None or self.drop_rate:
            return lambda parts, addr: write(b"".join(parts), addr)
        sendmsg = sock.sendmsg
        return lambda parts, addr: sendmsg(parts, (), 0, addr)

    def _make_batch_sender(
        self, transport: Any, write_parts: Callable[[tuple[bytes, Any], Address], Any]
    ) -> tuple[Callable[[list[tuple[bytes, Any]], Address], Any], bool]:
        """``(send_batch, whether a batch may go in one call)``.

        With UDP GSO one ``sendmsg`` carries a batch of equal-size datagrams
        (gathered from their header and payload pieces) and the kernel cuts it
        up; otherwise, or once the kernel refuses GSO, one call per datagram.
        """
        sock = getattr(transport, "socket", None)

        def one_by_one(batch: list[tuple[bytes, Any]], addr: Address) -> None:
            for parts in batch:
                write_parts(parts, addr)

        if sock is None or not self.config.gso or not self._gso_ok:
            return one_by_one, False
        sendmsg = sock.sendmsg
        rate, rnd, stats = self.drop_rate, self._random.random, self.stats

        def gso(batch: list[tuple[bytes, Any]], addr: Address) -> None:
            if rate:  # the drop hook decides per datagram, once
                kept = [parts for parts in batch if rnd() >= rate]
                stats.dropped_by_hook += len(batch) - len(kept)
                batch = kept
            if len(batch) > 1 and self._gso_ok:
                size = len(batch[0][0]) + len(batch[0][1])
                pieces = [piece for parts in batch for piece in parts]
                segment = [(socket.SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
                try:
                    sendmsg(pieces, segment, 0, addr)
                    return
                except OSError as e:
                    if e.errno not in _GSO_UNSUPPORTED:
                        raise
                    self._gso_ok = False  # this kernel or path cannot: one datagram per call from now on
                    self.log.info("UDP GSO refused ({err}); sending one datagram per call", err=str(e))
            for parts in batch:
                sendmsg(parts, (), 0, addr)

        return gso, True

    def _make_writer(self, transport: Any) -> Callable[[bytes, Address], Any]:
        sock = getattr(transport, "socket", None)
        if sock is not None:
            # Real sockets: call sendto directly (udp.Port.write re-parses the address on every call).
            write = sock.sendto
        else:
            write = _guarded(transport.write)
        if not self.drop_rate:
            return write
        rnd = self._random.random
        rate = self.drop_rate
        stats = self.stats

        def lossy_write(datagram: bytes, addr: Address) -> Any:
            if rnd() < rate:
                stats.dropped_by_hook += 1
                return None
            return write(datagram, addr)

        return lossy_write


UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # Linux 4.18: segmentation offload for UDP
UDP_GRO = getattr(socket, "UDP_GRO", 104)  # Linux 5.0: coalesced receive
_GSO_UNSUPPORTED = {errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP}

_FORCE = {
    socket.SO_RCVBUF: getattr(socket, "SO_RCVBUFFORCE", None),
    socket.SO_SNDBUF: getattr(socket, "SO_SNDBUFFORCE", None),
}


def _set_buffer(sock: socket.socket, option: int, size: int) -> None:
    """Ask for ``size`` bytes; past the system maximum, try the privileged FORCE option."""
    sock.setsockopt(socket.SOL_SOCKET, option, size)
    if sock.getsockopt(socket.SOL_SOCKET, option) < size and _FORCE[option] is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _FORCE[option], size)
        except OSError:
            pass  # not privileged: keep what the system allows; the window is sized from it
