"""Two transfer managers on the memory network, and a way to wait for a Deferred on it."""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from cloudp2p.testing.memnet import Faults, MemoryNetwork
from cloudp2p.transfer import TransferManager

HOST_A = "10.0.0.1"
HOST_B = "10.0.0.2"

# Timings suited to a 1 ms memory network: quick retransmissions, short give-ups.
FAST = {"min_rto": 0.02, "initial_rto": 0.1, "max_rto": 1.0, "peer_timeout": 2.0, "linger": 0.2}


def manager(net: MemoryNetwork, host: str, node: str | None = None, **overrides: Any) -> TransferManager:
    node = node or host
    options = {**FAST, **overrides}
    return TransferManager(
        net.node_clock(node), listen=lambda protocol: net.listen(protocol, (host, 0), node=node), **options
    )


def pair(seed: int = 1, faults: Faults | None = None, **overrides: Any):
    net = MemoryNetwork(seed=seed, faults=faults or Faults())
    a = manager(net, HOST_A, **overrides)
    b = manager(net, HOST_B, **overrides)
    return net, a, b


def run(net: MemoryNetwork, d: defer.Deferred, seconds: float = 60.0) -> Any:
    """Advance the network until ``d`` fires; return its result or raise its failure."""
    box: list[Any] = []
    d.addBoth(box.append)
    net.run(seconds, until=lambda: bool(box))
    assert box, f"the transfer did not finish within {seconds} simulated seconds"
    result = box[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


def failure_of(net: MemoryNetwork, d: defer.Deferred, seconds: float = 60.0) -> tuple[Failure, float]:
    """Advance until ``d`` fails; return the failure and the simulated time it took."""
    box: list[Any] = []
    start = net.clock.seconds()
    d.addBoth(box.append)
    net.run(seconds, until=lambda: bool(box))
    assert box, "the transfer neither finished nor failed"
    assert isinstance(box[0], Failure), "the transfer should have failed"
    return box[0], net.clock.seconds() - start


def fetch_offer(b: TransferManager, offer, host: str = HOST_A, **kwargs: Any) -> defer.Deferred:
    return b.fetch((host, offer.port), offer.transfer_id, offer.size, offer.sha256, **kwargs)


def fetch_offer_to_file(b: TransferManager, offer, target, host: str = HOST_A) -> tuple[defer.Deferred, list]:
    """Start ``b.fetch_to_file`` of ``offer`` into ``target``; returns (Deferred, bytes-done list)."""
    progress: list[int] = []
    d = b.fetch_to_file(
        target,
        (host, offer.port),
        offer.transfer_id,
        offer.size,
        offer.sha256,
        progress=lambda done, total: progress.append(done),
    )
    return d, progress


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
