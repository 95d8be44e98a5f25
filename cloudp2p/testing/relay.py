"""A userspace UDP relay that delays and drops datagrams (this kernel has no ``netem``).

    python -m cloudp2p.testing.relay --route 10.231.0.9:7201=10.231.0.1:7100 \\
        --route 10.231.0.9:7202=10.231.0.2:7100 --delay 0.05 --jitter 0.02 --loss 0.1 \\
        [--seed 1] [--max-seconds 600]

Run it on a host of its own (``HostsCloud.net`` host, started with ``Host.command``) and give
clients its front addresses instead of the servers'. Each client address gets one upstream
socket, used towards every target: all servers see one client at one address, as without the
relay (servers bind a request id to the address that sent it). A target's replies go back to
the client through that target's front port. Every datagram,
both ways, is dropped with probability ``loss`` or else delivered after ``delay`` plus a uniform
``jitter``. Bounded: at most ``max_clients`` upstream sockets and ``max_queue`` datagrams in flight;
it exits by itself after ``max-seconds``. It prints one readiness line, then on exit a JSON line
with its counts.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any

from twisted.internet import defer, task
from twisted.internet.protocol import DatagramProtocol

from cloudp2p.config import format_hostport, hostport


class Relay:
    def __init__(
        self, reactor: Any, *, delay: float, jitter: float, loss: float, seed: int,
        max_clients: int = 256, max_queue: int = 10_000,
    ) -> None:  # fmt: skip
        self.reactor = reactor
        self.fronts: dict[tuple[str, int], Any] = {}  # target -> its listening front port
        self.delay, self.jitter, self.loss = delay, jitter, loss
        self.rng = random.Random(seed)
        self.max_clients, self.max_queue = max_clients, max_queue
        self.interface = ""
        self.upstream: dict[tuple[str, int], Any] = {}  # client address -> its port towards the target
        self.in_flight = 0
        self.counts = {"forwarded": 0, "returned": 0, "dropped_loss": 0, "dropped_full": 0}

    def _later(self, send: Any, data: bytes, address: tuple[str, int], counter: str) -> None:
        if self.rng.random() < self.loss:
            self.counts["dropped_loss"] += 1
            return
        if self.in_flight >= self.max_queue:
            self.counts["dropped_full"] += 1
            return
        self.in_flight += 1

        def deliver() -> None:
            self.in_flight -= 1
            try:
                send(data, address)
                self.counts[counter] += 1
            except OSError:
                pass

        self.reactor.callLater(max(0.0, self.delay + self.rng.uniform(-self.jitter, self.jitter)), deliver)

    def add_route(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.interface = listen[0]
        self.fronts[target] = self.reactor.listenUDP(listen[1], _Front(self, target), interface=listen[0])

    def from_client(self, data: bytes, client: tuple[str, int], target: tuple[str, int]) -> None:
        port = self.upstream.get(client)
        if port is None:
            if len(self.upstream) >= self.max_clients:
                self.counts["dropped_full"] += 1
                return
            port = self.reactor.listenUDP(0, _Upstream(self, client), interface=self.interface)
            self.upstream[client] = port
        self._later(port.write, data, target, "forwarded")

    def from_target(self, data: bytes, client: tuple[str, int], target: tuple[str, int]) -> None:
        self._later(self.fronts[target].write, data, client, "returned")


class _Front(DatagramProtocol):
    def __init__(self, relay: Relay, target: tuple[str, int]) -> None:
        self.relay, self.target = relay, target

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.relay.from_client(data, (addr[0], int(addr[1])), self.target)


class _Upstream(DatagramProtocol):
    def __init__(self, relay: Relay, client: tuple[str, int]) -> None:
        self.relay, self.client = relay, client

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        source = (addr[0], int(addr[1]))
        if source in self.relay.fronts:  # only the targets' replies go back
            self.relay.from_target(data, self.client, source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cloudp2p.testing.relay", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--route", required=True, action="append", help="LISTEN=TARGET, both host:port")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    ns = parser.parse_args(argv)

    def run(reactor: Any) -> defer.Deferred[None]:
        relay = Relay(reactor, delay=ns.delay, jitter=ns.jitter, loss=ns.loss, seed=ns.seed)
        routes = [tuple(hostport(part) for part in route.split("=", 1)) for route in ns.route]
        for listen, target in routes:
            relay.add_route(listen, target)
        shown = ", ".join(f"{format_hostport(a)} -> {format_hostport(b)}" for a, b in routes)
        print(f"relay ready: {shown}", flush=True)
        done: defer.Deferred[None] = task.deferLater(reactor, ns.max_seconds, lambda: None)
        reactor.addSystemEventTrigger(
            "before", "shutdown", lambda: print(json.dumps(relay.counts), flush=True)
        )
        return done

    task.react(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
