"""Benchmark: a 10 MiB random file over loopback between two processes.

    python -m bench.transfer [--runs 7] [--mib 10]

In one run, medians of ``--runs`` transfers each of: Twisted TCP (Protocol +
transport.write) as the reference; this transfer layer with the default chunk
size (1,200 B) and with 32 KB chunks; then both again with 5 % of the sender's
datagrams dropped at random (the manager's ``drop_rate`` hook). The sender runs
in a child process (``--serve``); the receiver, which times each transfer
from its start to the verified bytes in hand, runs here. Prints one
``name: value`` line per figure: medians of MB/s (10^6 bytes per second), of
the receiving process's CPU time per transfer (user + system, all threads: less
disturbed by other work on the machine than wall time), and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater

LOCAL = "127.0.0.1"


def make_data(mib: int) -> bytes:
    return random.Random(2026).randbytes(mib * 1024 * 1024)


# -- the sending process -----------------------------------------------------------------------------


class Push(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(self.factory.data)
        self.transport.loseConnection()


def serve(mib: int, loss: float) -> None:
    from cloudp2p.transfer import TransferManager

    data = make_data(mib)
    clean = TransferManager(reactor, interface=LOCAL, max_per_peer=8)
    lossy = TransferManager(reactor, interface=LOCAL, max_per_peer=8, drop_rate=loss, seed=1)
    offers = {"clean": clean.offer(data, timeout=3600), "lossy": lossy.offer(data, timeout=3600)}
    factory = protocol.Factory.forProtocol(Push)
    factory.data = data
    tcp = reactor.listenTCP(0, factory, interface=LOCAL)

    def ready():
        meta = {name: offer.meta() for name, offer in offers.items()}
        meta["tcp_port"] = tcp.getHost().port
        print(json.dumps(meta), flush=True)

    reactor.callWhenRunning(ready)
    reactor.run()


# -- the receiving process ---------------------------------------------------------------------------


class Drain(protocol.Protocol):
    def connectionMade(self):
        self.parts = []

    def dataReceived(self, data):
        self.parts.append(data)

    def connectionLost(self, reason):
        self.factory.done.callback(b"".join(self.parts))


def tcp_once(port: int, expected: int) -> defer.Deferred[float]:
    factory = protocol.ClientFactory.forProtocol(Drain)
    factory.done = defer.Deferred()
    start = time.perf_counter()
    reactor.connectTCP(LOCAL, port, factory)

    def check(data: bytes) -> float:
        elapsed = time.perf_counter() - start
        assert len(data) == expected, f"TCP got {len(data)} of {expected} bytes"
        return elapsed

    return factory.done.addCallback(check)


async def measure(meta: dict, runs: int, size: int) -> dict[str, float]:
    from cloudp2p.transfer import TransferManager

    fetcher = TransferManager(reactor, interface=LOCAL, max_per_peer=8)
    figures: dict[str, list[float]] = {}

    async def udp_once(offer: dict, chunk_size: int) -> float:
        start = time.perf_counter()
        got = await fetcher.fetch(
            (LOCAL, offer["port"]),
            offer["transfer_id"],
            offer["size"],
            offer["sha256"],
            chunk_size=chunk_size,
        )
        elapsed = time.perf_counter() - start
        assert len(got) == size
        return elapsed

    cases = [
        ("tcp", None, None),
        ("udp_default", "clean", 1200),
        ("udp_32k", "clean", 32768),
        ("udp_default_loss5", "lossy", 1200),
        ("udp_32k_loss5", "lossy", 32768),
    ]
    cpu: dict[str, list[float]] = {}
    for _ in range(runs):  # interleaved, so that noise from other work hits every case alike
        for name, which, chunk in cases:
            before = resource.getrusage(resource.RUSAGE_SELF)
            if which is None:
                seconds = await tcp_once(meta["tcp_port"], size)
            else:
                seconds = await udp_once(meta[which], chunk)
            after = resource.getrusage(resource.RUSAGE_SELF)
            figures.setdefault(name, []).append(size / seconds / 1e6)
            used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            cpu.setdefault(name, []).append(used * 1e3)
            await deferLater(reactor, 0.05, lambda: None)  # let the sender see the final ack
    fetcher.stop()
    result = {name: statistics.median(values) for name, values in figures.items()}
    result.update({f"{name}_cpu": statistics.median(values) for name, values in cpu.items()})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--mib", type=int, default=10)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.mib, args.loss)
        return
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.transfer", "--serve", "--mib", str(args.mib), "--loss", str(args.loss)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        line = child.stdout.readline()
        if not line:
            raise SystemExit("bench.transfer: the sending process did not start")
        meta = json.loads(line)
        size = args.mib * 1024 * 1024
        result: dict[str, float] = {}

        async def run() -> None:
            result.update(await measure(meta, args.runs, size))

        def go() -> None:
            d = defer.Deferred.fromCoroutine(run())
            d.addErrback(lambda f: print(f.getTraceback(), file=sys.stderr))
            d.addBoth(lambda _: reactor.stop())

        reactor.callWhenRunning(go)
        reactor.run()
    finally:
        child.terminate()
        child.wait(10)
    if not result:
        raise SystemExit(1)
    tcp = result["tcp"]
    print(f"file_mib: {args.mib}")
    print(f"runs: {args.runs}")
    for name in ("tcp", "udp_default", "udp_32k", "udp_default_loss5", "udp_32k_loss5"):
        print(f"{name}_mbps: {result[name]:.1f}")
    for name in ("tcp", "udp_default", "udp_32k", "udp_default_loss5", "udp_32k_loss5"):
        print(f"{name}_receiver_cpu_ms: {result[name + '_cpu']:.1f}")
    print(f"ratio_vs_tcp: {result['udp_32k'] / tcp:.2f}")
    print(f"ratio_default_vs_tcp: {result['udp_default'] / tcp:.2f}")
    print(f"loss5_vs_lossfree_default: {result['udp_default_loss5'] / result['udp_default']:.2f}")
    print(f"loss5_vs_lossfree_32k: {result['udp_32k_loss5'] / result['udp_32k']:.2f}")


if __name__ == "__main__":
    main()
