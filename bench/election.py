"""Election messages after a coordinator crash, in the memory-network simulator.

    python -m bench.election [--trials 20] [--sizes 3,5,10]

For each cluster size N: start N servers (fixed, distinct loads so the
priority order is known), let them elect, crash the coordinator, run until
every survivor follows the same new coordinator, and count the *election*
messages sent in between: SUCCEED, ELECTION, ANSWER, GRANT, COORDINATOR for
cloudp2p's algorithm (Gholipour's improved bully with the Kordafshari
fallback, ``cloudp2p.membership``), ELECTION, OK, COORDINATOR for the classic
bully of Garcia-Molina implemented below. Heartbeats are *not* counted (both
algorithms send the same heartbeats for failure detection).

Each trial starts the servers at random offsets within one heartbeat
interval, so survivors detect the crash at slightly different moments; the
maximum over trials is the worst case seen. The target is <= 2N - 3.

Prints ``name: value`` lines, e.g. ``messages_gholipour_n3: 2``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from collections import Counter
from typing import Any

from twisted.internet import task
from twisted.internet.protocol import DatagramProtocol

from cloudp2p.membership.messages import ELECTION_TYPES
from cloudp2p.membership.node import ClusterNode
from cloudp2p.testing.memnet import Faults, MemoryNetwork

SECRET = b"bench-election-secret-0123456789"
HEARTBEAT, TIMEOUT, ELECTION_TIMEOUT = 0.2, 1.0, 0.3


def _address(i: int) -> tuple[str, int]:
    return (f"127.0.0.{i}", 9000)


def _loads(n: int) -> dict[int, float]:
    return {i: 0.05 * i for i in range(1, n + 1)}  # server 1 best, then 2, ...


# -- cloudp2p's algorithm ----------------------------------------------------------------------------


def run_gholipour(n: int, seed: int) -> tuple[int, float]:
    rnd = random.Random(seed)
    net = MemoryNetwork(seed=seed, faults=Faults(latency=0.001, jitter=0.002))
    loads = _loads(n)
    nodes = {}
    for i in range(1, n + 1):
        nodes[i] = ClusterNode(
            i, {j: _address(j) for j in range(1, n + 1) if j != i}, SECRET,
            clock=net.node_clock(f"s{i}"), load_source=lambda i=i: loads[i],
            heartbeat_interval=HEARTBEAT, failure_timeout=TIMEOUT, election_timeout=ELECTION_TIMEOUT,
        )
        net.listen(nodes[i].protocol, _address(i), node=f"s{i}")
    offsets = {i: rnd.uniform(0, HEARTBEAT) for i in nodes}
    for i in sorted(nodes, key=offsets.get):
        net.run(offsets[i] - net.clock.seconds()) if offsets[i] > net.clock.seconds() else None
        nodes[i].start()

    def agreed(members: list[int]) -> bool:
        views = {(nodes[i].term, nodes[i].coordinator_id) for i in members}
        return len(views) == 1 and next(iter(views))[1] in members

    assert net.run(5.0, until=lambda: agreed(list(nodes))), "no initial coordinator"
    net.run(1.0)
    old = nodes[1].coordinator_id
    survivors = [i for i in nodes if i != old]
    before = _election_sent(nodes[i] for i in survivors)
    crashed_at = net.clock.seconds()
    net.crash(f"s{old}")
    nodes[old].stop()
    assert net.run(10.0, until=lambda: agreed(survivors)), "no new coordinator"
    took = net.clock.seconds() - crashed_at
    net.run(1.0)  # late messages of this election still count
    return _election_sent(nodes[i] for i in survivors) - before, took


def _election_sent(nodes: Any) -> int:
    return sum(c for node in nodes for kind, c in node.sent.items() if kind in ELECTION_TYPES)


# -- the classic bully, for comparison only (not product code) -----------------------------------------


class ClassicBully(DatagramProtocol):
    """Garcia-Molina's bully on the same simulator: the highest priority alive wins.

    On detecting the coordinator's failure (or on an ELECTION from a lower
    server, after answering OK) a server sends ELECTION to every higher
    server; with no OK within the election timeout it announces COORDINATOR
    to every lower server; after an OK it waits for that announcement and
    restarts the election if none comes. Priority is the same static order
    as in the cloudp2p run (server 1 highest).
    """

    maxPacketSize = 65536

    def __init__(self, me: int, n: int, clock: task.Clock) -> None:
        self.me, self.n, self.clock = me, n, clock
        self.coordinator: int | None = None
        self.sent: Counter[str] = Counter()
        self.electing = False
        self._timer: Any = None
        self._last_seen = 0.0
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = clock

    def higher(self) -> list[int]:
        return list(range(1, self.me))  # lower id = higher priority, as in the cloudp2p run

    def lower(self) -> list[int]:
        return list(range(self.me + 1, self.n + 1))

    def start(self) -> None:
        self._last_seen = self.clock.seconds()
        self._loop.start(HEARTBEAT, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self._cancel()

    def _send(self, peer: int, kind: str) -> None:
        if self.transport is None or not self.transport.connected:
            return
        if kind != "heartbeat":
            self.sent[kind] += 1
        self.transport.write(json.dumps({"type": kind, "from": self.me}).encode(), _address(peer))

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def _tick(self) -> None:
        if self.coordinator == self.me:
            for peer in range(1, self.n + 1):
                if peer != self.me:
                    self._send(peer, "heartbeat")
        elif not self.electing and self.clock.seconds() - self._last_seen > TIMEOUT:
            self.elect()

    def elect(self) -> None:
        self.electing = True
        self.coordinator = None
        higher = self.higher()
        if not higher:
            self._win()
            return
        for peer in higher:
            self._send(peer, "election")
        self._cancel()
        self._timer = self.clock.callLater(ELECTION_TIMEOUT, self._win)

    def _win(self) -> None:
        self.electing = False
        self.coordinator = self.me
        for peer in self.lower():
            self._send(peer, "coordinator")

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        msg = json.loads(data)
        kind, sender = msg["type"], msg["from"]
        if kind == "heartbeat" and sender == self.coordinator:
            self._last_seen = self.clock.seconds()
        elif kind == "election":
            self._send(sender, "ok")
            if not self.electing and self.coordinator != self.me:
                self.elect()
        elif kind == "ok" and self.electing:
            self._cancel()
            self._timer = self.clock.callLater(ELECTION_TIMEOUT * 3, self.elect)
        elif kind == "coordinator":
            self._cancel()
            self.electing = False
            self.coordinator = sender
            self._last_seen = self.clock.seconds()


def run_classic(n: int, seed: int) -> tuple[int, float]:
    rnd = random.Random(seed)
    net = MemoryNetwork(seed=seed, faults=Faults(latency=0.001, jitter=0.002))
    nodes = {i: ClassicBully(i, n, net.node_clock(f"s{i}")) for i in range(1, n + 1)}
    for i, node in nodes.items():
        net.listen(node, _address(i), node=f"s{i}")
    # The same starting point as the cloudp2p run: 1 leads, everyone follows it.
    for node in nodes.values():
        node.coordinator = 1
    offsets = {i: rnd.uniform(0, HEARTBEAT) for i in nodes}
    for i in sorted(nodes, key=offsets.get):
        net.run(offsets[i] - net.clock.seconds()) if offsets[i] > net.clock.seconds() else None
        nodes[i].start()
    net.run(1.0)
    survivors = [i for i in nodes if i != 1]
    before = sum(sum(nodes[i].sent.values()) for i in survivors)
    crashed_at = net.clock.seconds()
    net.crash("s1")
    nodes[1].stop()

    def agreed() -> bool:
        views = {nodes[i].coordinator for i in survivors}
        return views == {2} and not any(nodes[i].electing for i in survivors)

    assert net.run(10.0, until=agreed), "classic bully did not converge"
    took = net.clock.seconds() - crashed_at
    net.run(1.0)
    return sum(sum(nodes[i].sent.values()) for i in survivors) - before, took


# -- main -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--sizes", default="3,5,10")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print("# election messages (SUCCEED/ELECTION/ANSWER/GRANT/COORDINATOR; heartbeats not counted)")
    print(f"# after a coordinator crash, {args.trials} trials per size, simulated time")
    for n in sizes:
        for label, run in (("gholipour", run_gholipour), ("classic", run_classic)):
            results = [run(n, seed) for seed in range(args.trials)]
            counts = [m for m, _ in results]
            times = [t for _, t in results]
            print(f"messages_{label}_n{n}: {statistics.mean(counts):g}")
            print(f"messages_{label}_n{n}_max: {max(counts)}")
            print(f"election_time_{label}_n{n}_s: {statistics.median(times):.3f}")
        print(f"bound_2n_minus_3_n{n}: {2 * n - 3}")


if __name__ == "__main__":
    main()
