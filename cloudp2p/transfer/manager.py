"""``TransferManager``: offers and fetches, each on its own OS-allocated UDP port.

Pull model (docs/INTERFACES.md): the side that has the bytes calls ``offer(data)``
and sends ``offer.meta()`` to the other side in a request, reply or peer
message; the other side calls ``fetch((host, port), transfer_id, size, sha256)``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import socket
import sys
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from cloudp2p import sockets
from cloudp2p.sockets import set_buffer
from cloudp2p.transfer import wire
from cloudp2p.transfer.config import TransferConfig
from cloudp2p.transfer.errors import (
    BadTransferMeta,
    FileTooLarge,
    TooManyTransfers,
    TransferError,
)
from cloudp2p.transfer.host import Address, Progress, TransferStats
from cloudp2p.transfer.meta import check_sha, check_size, check_tid
from cloudp2p.transfer.receiver import Fetch, FetchProtocol, FileSink, MemorySink
from cloudp2p.transfer.sender import Offer, OfferProtocol
from cloudp2p.transfer.udp import listen_coalescing

Listen = Callable[[Any], Any]  # protocol -> started transport with getHost() and stopListening()


def _guarded(write: Callable[[bytes, Address], Any]) -> Callable[[bytes, Address], Any]:
    """A non-socket transport's write, with its errors (e.g. "closed") reported as ``OSError``."""

    def guarded(datagram: bytes, addr: Address) -> Any:
        try:
            return write(datagram, addr)
        except (RuntimeError, ValueError) as e:
            raise OSError(str(e)) from None

    return guarded


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
        self.hash_pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="transfer-sha256") if hash_thread else None
        )

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
        if self.hash_pool is not None:
            self.hash_pool.shutdown(wait=False, cancel_futures=True)

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
        check_tid(transfer_id)
        check_size(size)
        check_sha(sha256)
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
        if not self.acquire_peer(peer[0]):
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
            self.release_peer(peer[0])
            sink.release()
            return defer.fail(e)
        self._fetches.add(fetch)
        self.stats.fetches += 1
        fetch.write = self._make_writer(transport)
        fetch.start(transport, rcvbuf, lambda f: self.release_peer(peer[0]), self._fetches.discard)
        return fetch.deferred

    def acquire_peer(self, host: str) -> bool:
        if self._per_peer[host] >= self.config.max_per_peer:
            return False
        self._per_peer[host] += 1
        return True

    def release_peer(self, host: str) -> None:
        self._per_peer[host] -= 1
        if self._per_peer[host] <= 0:
            del self._per_peer[host]

    def offer_closed(self, offer: Offer) -> None:
        self._offers.discard(offer)


    def _listen(self, protocol: Any, *, receive: bool) -> tuple[Any, int]:
        config = self.config
        if self._listen_fn is not None:
            try:
                return self._listen_fn(protocol), config.receive_buffer
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
        want_rcv = config.receive_buffer if receive else min(config.receive_buffer, 1024 * 1024)
        set_buffer(port, config.send_buffer, sockets.SEND)
        # Linux reports twice the requested size (bookkeeping overhead included).
        return port, set_buffer(port, want_rcv) or want_rcv

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
