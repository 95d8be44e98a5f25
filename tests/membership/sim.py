"""A cluster of ``ClusterNode``s on the memory network, with the invariants every test checks.

Each server ``i`` is memory-network node ``"s<i>"`` at ``127.0.0.<i>:9000`` with its own
clock, so it can be crashed, paused and partitioned on its own. ``Cluster.run`` checks after
every step that no term ever had two coordinators (collected from every ``claim`` event and
from every node whose ``is_coordinator`` is True).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from cloudp2p.membership.messages import ELECTION_TYPES
from cloudp2p.membership.node import ClusterNode
from cloudp2p.testing.memnet import Faults, MemoryNetwork

SECRET = b"cluster-test-secret-0123456789"


def name(i: int) -> str:
    return f"s{i}"


def address(i: int) -> tuple[str, int]:
    return (f"127.0.0.{i}", 9000)


class Cluster:
    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        faults: Faults | None = None,
        loads: dict[int, float] | None = None,
        heartbeat_interval: float = 0.2,
        failure_timeout: float = 1.0,
        election_timeout: float = 0.3,
    ) -> None:
        self.net = MemoryNetwork(seed=seed, faults=faults)
        self.ids = list(range(1, n + 1))
        self.loads = dict(loads) if loads else {i: 0.0 for i in self.ids}
        self.timers = {
            "heartbeat_interval": heartbeat_interval,
            "failure_timeout": failure_timeout,
            "election_timeout": election_timeout,
        }
        self.nodes: dict[int, ClusterNode] = {}
        self.down: set[int] = set()
        self.events: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        self.claims: dict[int, set[int]] = defaultdict(set)  # term -> servers that claimed/led it
        for i in self.ids:
            self.nodes[i] = self._make(i)

    def _make(self, i: int) -> ClusterNode:
        peers = {j: address(j) for j in self.ids if j != i}
        node = ClusterNode(
            i, peers, SECRET, clock=self.net.node_clock(name(i)),
            load_source=lambda i=i: self.loads[i], **self.timers,
        )
        self.net.listen(node.protocol, address(i), node=name(i))

        def record(event: tuple[Any, ...], i: int = i) -> None:
            self.events[i].append(event)
            if event[0] == "claim":
                self.claims[event[1]].add(i)

        node.on_event(record)
        return node

    # -- driving --------------------------------------------------------------------------------

    def start(self, *ids: int) -> None:
        for i in ids or self.ids:
            self.nodes[i].start()

    def crash(self, i: int) -> None:
        """kill -9: sockets closed, timers gone."""
        self.net.crash(name(i))
        self.nodes[i].stop()
        self.down.add(i)

    def restart(self, i: int) -> ClusterNode:
        self.nodes[i] = self._make(i)
        self.down.discard(i)
        self.nodes[i].start()
        return self.nodes[i]

    def check(self) -> None:
        for i, node in self.nodes.items():
            if i not in self.down and node.is_coordinator:
                self.claims[node.term].add(i)
        for term, who in self.claims.items():
            assert len(who) <= 1, f"term {term} has coordinators {sorted(who)}"

    def run(self, seconds: float, until: Any = None) -> bool:
        def step() -> bool:
            self.check()
            return bool(until and until())

        return self.net.run(seconds, until=step if until else lambda: step() and False)

    # -- what the tests assert -------------------------------------------------------------------

    def live(self, group: set[int] | None = None) -> list[int]:
        return [i for i in (sorted(group) if group else self.ids) if i not in self.down]

    def agreement(self, group: set[int] | None = None) -> tuple[int, int] | None:
        """(term, coordinator) if every live node of ``group`` agrees and exactly that node leads."""
        members = self.live(group)
        views = {(self.nodes[i].term, self.nodes[i].coordinator_id) for i in members}
        if len(views) != 1:
            return None
        term, coordinator = views.pop()
        if coordinator is None or coordinator not in members:
            return None
        leaders = [i for i in members if self.nodes[i].is_coordinator]
        return (term, coordinator) if leaders == [coordinator] else None

    def settle(self, within: float, group: set[int] | None = None) -> tuple[int, int]:
        """Run until ``group`` agrees; fail if that takes longer than ``within`` seconds."""
        start = self.net.clock.seconds()
        agreed = self.run(within, until=lambda: self.agreement(group) is not None)
        assert agreed, f"no agreement within {within}s: " + "; ".join(
            f"{i}: {self.nodes[i].state.value} term {self.nodes[i].term} coord {self.nodes[i].coordinator_id}"
            for i in self.live(group)
        )
        self.settle_time = self.net.clock.seconds() - start
        result = self.agreement(group)
        assert result is not None
        return result

    def election_messages(self) -> int:
        return sum(
            count
            for node in self.nodes.values()
            for kind, count in node.sent.items()
            if kind in ELECTION_TYPES
        )

    def kinds(self, i: int, *kinds: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events[i] if e[0] in kinds]
