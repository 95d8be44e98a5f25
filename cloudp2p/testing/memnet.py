"""A datagram network in memory, driven by ``task.Clock``, for unit tests without sockets.

It can drop, delay, duplicate, reorder, corrupt and truncate datagrams, partition
nodes from each other and pause a node as ``SIGSTOP`` would: a paused node's
timers stand still and datagrams sent to it wait in its receive queue; on
resume its clock jumps to the present (firing every overdue timer at once) and
the queue is delivered, exactly what a real process sees after ``SIGCONT``.

A *node* is a label that groups the sockets of one process (a server has a
cluster socket and a client socket); partitions and pauses act on nodes. By
default a socket's node is its host string.

Usage::

    net = MemoryNetwork(seed=1)
    clock_a = net.node_clock("a")
    transport = net.listen(protocol, ("127.0.0.1", 9001), node="a")
    net.run(2.0)            # advance time by 2 s in small steps
    net.partition({"a"}, {"b", "c"}); net.heal()
    net.pause("a"); net.resume("a")

Randomness comes from one seeded ``random.Random`` so that a failing test can
be replayed exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IUDPTransport
from zope.interface import implementer

Address = tuple[str, int]


@attrs.define
class Faults:
    """Probabilities and delays applied to every datagram (per direction, independently)."""

    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    latency: float = 0.001
    jitter: float = 0.0  # extra uniform random delay; non-zero jitter reorders datagrams


@attrs.define
class Stats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    corrupted: int = 0
    truncated: int = 0


@implementer(IUDPTransport)
class MemoryDatagramTransport:
    """The transport a protocol sees; writes go to the network."""

    def __init__(self, network: MemoryNetwork, protocol: Any, address: Address, node: str) -> None:
        self.network = network
        self.protocol = protocol
        self.address = address
        self.node = node
        self.connected = True
        self.written: list[tuple[bytes, Address]] = []

    def write(self, datagram: bytes, addr: Address | None = None) -> None:
        if not self.connected:
            raise RuntimeError("write on a closed memory transport")
        if addr is None:
            raise ValueError("memory transport needs an explicit address")
        if not isinstance(datagram, bytes):
            raise TypeError("datagram must be bytes")
        self.written.append((datagram, addr))
        self.network._send(self, datagram, (addr[0], int(addr[1])))

    def getHost(self) -> IPv4Address | IPv6Address:
        host, port = self.address
        if ":" in host:
            return IPv6Address("UDP", host, port)
        return IPv4Address("UDP", host, port)

    def stopListening(self) -> defer.Deferred[None]:
        if self.connected:
            self.connected = False
            self.network._unbind(self)
            self.protocol.doStop()
        return defer.succeed(None)

    loseConnection = stopListening

    # The rest of IUDPTransport, for protocols that call them.
    def connect(self, host: str, port: int) -> None:
        raise NotImplementedError("connected UDP is not used by cloudp2p")

    def getBroadcastAllowed(self) -> bool:
        return False

    def setBroadcastAllowed(self, enabled: bool) -> None:
        pass


class MemoryNetwork:
    """Many memory transports, one shared timeline, configurable faults."""

    def __init__(self, *, seed: int = 0, faults: Faults | None = None, step: float = 0.005) -> None:
        self.clock = task.Clock()  # the network's own time (delivery scheduling)
        self.random = random.Random(seed)
        self.faults = faults or Faults()
        self.stats = Stats()
        self.step = step
        self._bound: dict[Address, MemoryDatagramTransport] = {}
        self._node_clocks: dict[str, task.Clock] = {}
        self._paused: dict[str, list[Callable[[], None]]] = {}
        self._groups: list[set[str]] | None = None
        self._link_faults: dict[tuple[str, str], Faults] = {}
        self._next_port = 40000
        self.filters: list[Callable[[Address, Address, bytes], bool]] = []

    # -- set-up ---------------------------------------------------------------------------------

    def node_clock(self, node: str) -> task.Clock:
        """The clock a node's code should use; it stands still while the node is paused."""
        clock = self._node_clocks.get(node)
        if clock is None:
            clock = self._node_clocks[node] = task.Clock()
            clock.advance(self.clock.seconds())
        return clock

    def listen(
        self, protocol: Any, address: Address = ("127.0.0.1", 0), *, node: str | None = None
    ) -> MemoryDatagramTransport:
        """Bind ``protocol`` at ``address`` (port 0 picks a free one) and start it."""
        host, port = address
        if port == 0:
            while (host, self._next_port) in self._bound:
                self._next_port += 1
            port = self._next_port
            self._next_port += 1
        if (host, port) in self._bound:
            raise OSError(f"address {host}:{port} already in use in the memory network")
        transport = MemoryDatagramTransport(self, protocol, (host, port), node or host)
        self._bound[(host, port)] = transport
        protocol.makeConnection(transport)
        return transport

    def set_link_faults(self, src_node: str, dst_node: str, faults: Faults) -> None:
        """Faults for one direction of one link, overriding the network-wide ones."""
        self._link_faults[(src_node, dst_node)] = faults

    # -- failures -------------------------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        """Only nodes in the same group can talk; nodes in no group are cut off from all."""
        self._groups = [set(g) for g in groups]

    def heal(self) -> None:
        self._groups = None

    def pause(self, node: str) -> None:
        """Stop a node as SIGSTOP would: its timers freeze, its incoming datagrams queue up."""
        self._paused.setdefault(node, [])

    def resume(self, node: str) -> None:
        """Continue a paused node: overdue timers fire, then queued datagrams are delivered."""
        queued = self._paused.pop(node, [])
        clock = self._node_clocks.get(node)
        if clock is not None:
            behind = self.clock.seconds() - clock.seconds()
            if behind > 0:
                clock.advance(behind)
        for deliver in queued:
            deliver()

    def crash(self, node: str) -> None:
        """Close every socket of ``node`` (a kill -9); its clock is left to the test."""
        for transport in [t for t in self._bound.values() if t.node == node]:
            transport.stopListening()

    # -- time -----------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move every unpaused clock forward by ``seconds`` in one jump."""
        self.clock.advance(seconds)
        now = self.clock.seconds()
        for node, clock in self._node_clocks.items():
            if node not in self._paused and clock.seconds() < now:
                clock.advance(now - clock.seconds())

    def run(self, seconds: float, *, until: Callable[[], bool] | None = None) -> bool:
        """Advance time in steps of ``self.step`` for at most ``seconds``.

        Returns True as soon as ``until()`` holds (if given), False if time ran out.
        """
        steps = max(1, round(seconds / self.step))
        for _ in range(steps):
            if until is not None and until():
                return True
            self.advance(self.step)
        return until() if until is not None else True

    # -- delivery -------------------------------------------------------------------------------

    def _unbind(self, transport: MemoryDatagramTransport) -> None:
        if self._bound.get(transport.address) is transport:
            del self._bound[transport.address]

    def _connected(self, a: str, b: str) -> bool:
        if self._groups is None or a == b:
            return True
        return any(a in g and b in g for g in self._groups)

    def _send(self, sender: MemoryDatagramTransport, datagram: bytes, dst: Address) -> None:
        self.stats.sent += 1
        if any(f(sender.address, dst, datagram) for f in self.filters):
            self.stats.dropped += 1
            return
        receiver = self._bound.get(dst)
        dst_node = receiver.node if receiver is not None else dst[0]
        faults = self._link_faults.get((sender.node, dst_node), self.faults)
        rnd = self.random
        if rnd.random() < faults.loss:
            self.stats.dropped += 1
            return
        copies = 1
        if rnd.random() < faults.duplicate:
            copies = 2
            self.stats.duplicated += 1
        for _ in range(copies):
            data = datagram
            if data and rnd.random() < faults.corrupt:
                i = rnd.randrange(len(data))
                data = data[:i] + bytes([data[i] ^ (1 << rnd.randrange(8))]) + data[i + 1 :]
                self.stats.corrupted += 1
            delay = faults.latency + (rnd.random() * faults.jitter if faults.jitter else 0.0)
            self.clock.callLater(delay, self._deliver, sender.address, sender.node, dst, data)

    def _deliver(self, src: Address, src_node: str, dst: Address, data: bytes) -> None:
        receiver = self._bound.get(dst)
        if receiver is None or not receiver.connected or not self._connected(src_node, receiver.node):
            self.stats.dropped += 1
            return
        if receiver.node in self._paused:
            self._paused[receiver.node].append(lambda: self._deliver(src, src_node, dst, data))
            return
        limit = getattr(receiver.protocol, "maxPacketSize", 8192)
        if len(data) > limit:  # what a real socket does with a too-small buffer
            data = data[:limit]
            self.stats.truncated += 1
        self.stats.delivered += 1
        receiver.protocol.datagramReceived(data, src)
