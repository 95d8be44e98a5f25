"""The issue's engine promise: heartbeats keep flowing while a server encodes.

A cluster node in this test's reactor and a peer node in another process
exchange heartbeats over loopback UDP (every 0.2 s, suspicion after 1.0 s)
while this side runs about two seconds of encodes through the stego work pool.
The peer must never suspect this node. Run on the reactor thread instead, the
same encodes stop this node's heartbeats for longer than the failure timeout
and the peer suspects it (``test_the_control_an_encode_on_the_reactor_is_noticed``):
the test can fail.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from cloudp2p.membership.node import ClusterNode
from cloudp2p.stego import engine, pool

SECRET = b"heartbeat-test-secret-0123456789"
PEER_SCRIPT = Path(__file__).with_name("peer_node.py")
ROOT = Path(__file__).resolve().parent.parent.parent


def encode_burst(seconds: float) -> int:
    """Encode a 3 MP cover at full capacity again and again for at least ``seconds``."""
    cover = np.random.default_rng(1).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    payload = bytes(engine.capacity_bits(cover.shape) // 8)
    rounds = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds or rounds == 0:
        cover = engine.embed(cover, payload, b"heartbeats")
        rounds += 1
    return rounds


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def peer_suspicions_during(run_encode, tmp_path):
    """Start a peer process and a local node, run ``run_encode()``; the peer's suspicions of us then."""
    ports = {1: free_udp_port(), 2: free_udp_port()}
    log = tmp_path / "peer-events.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "w") as out:
        peer = subprocess.Popen(
            [sys.executable, str(PEER_SCRIPT), "2", str(ports[2]), "1", str(ports[1]), "30"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    node = ClusterNode(
        1, {2: ("127.0.0.1", ports[2])}, SECRET, clock=reactor, load_source=lambda: 0.0,
        heartbeat_interval=0.2, failure_timeout=1.0, election_timeout=0.3,
    )
    listener = reactor.listenUDP(ports[1], node.protocol, interface="127.0.0.1")
    try:
        node.start()
        deadline = time.monotonic() + 15
        while not node.is_alive(2):
            assert time.monotonic() < deadline, "the peer process never answered"
            yield sleep(0.1)
        yield sleep(1.2)  # both sides settled (the peer has heard us for a while)
        started = time.time()
        rounds = yield run_encode()
        assert rounds >= 2
        assert time.time() - started > 1.5  # the encode outlasted the failure timeout
        yield sleep(0.5)
        ended = time.time()
    finally:
        node.stop()
        yield listener.stopListening()
        peer.send_signal(signal.SIGTERM)
        for _ in range(50):
            if peer.poll() is not None:
                break
            yield sleep(0.1)
        else:
            peer.kill()
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("[")]
    return [e for e in events if e[1] == "suspect" and started <= e[0] <= ended]


@pytest.mark.slow
@pytest_twisted.inlineCallbacks
def test_no_peer_is_suspected_while_a_server_encodes_in_the_pool(tmp_path):
    work = pool.WorkPool(reactor, max_workers=1, kind="process")
    try:
        yield work.run(int, "0")  # the worker process is up before the clock starts
        suspicions = yield peer_suspicions_during(lambda: work.run(encode_burst, 2.0), tmp_path)
    finally:
        work.shutdown()
    assert suspicions == []


@pytest.mark.slow
@pytest_twisted.inlineCallbacks
def test_the_control_an_encode_on_the_reactor_is_noticed(tmp_path):
    suspicions = yield peer_suspicions_during(lambda: defer.succeed(encode_burst(2.0)), tmp_path)
    assert suspicions, "blocking the reactor for 2 s should have made the peer suspect this node"
