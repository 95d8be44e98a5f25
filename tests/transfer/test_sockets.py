"""Real UDP sockets on 127.0.0.1: a 10 MB file, socket buffers, and no socket leak after 1,000 transfers."""

from __future__ import annotations

import os
import socket
import sys

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import DatagramProtocol

from cloudp2p.transfer import TransferManager, TransferRefused, TransferTimeout
from cloudp2p.transfer.manager import UDP_SEGMENT
from cloudp2p.transfer.udp import listen_coalescing

LOCAL = "127.0.0.1"


def open_fds() -> dict[str, str]:
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return fds


def managers(**overrides):
    options = {"interface": LOCAL, "peer_timeout": 5.0, "min_rto": 0.05, **overrides}
    return TransferManager(reactor, **options), TransferManager(reactor, **options)


@pytest_twisted.inlineCallbacks
def test_10mb_random_file_over_loopback(tmp_path):
    a, b = managers()
    try:
        data = os.urandom(10 * 1024 * 1024)
        offer = a.offer(data)
        assert offer.transport.socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 1024 * 1024
        progress = []
        target = tmp_path / "big.bin"
        path = yield b.fetch_to_file(
            target,
            (LOCAL, offer.port),
            offer.transfer_id,
            offer.size,
            offer.sha256,
            progress=lambda done, total: progress.append((done, total)),
        )
        assert path == str(target)
        assert target.read_bytes() == data
        assert progress[-1] == (len(data), len(data))
        got = yield b.fetch(
            (LOCAL, offer.port), offer.transfer_id, offer.size, offer.sha256, chunk_size=32768
        )
        assert got == data
    finally:
        a.stop()
        b.stop()


@pytest_twisted.inlineCallbacks
def test_receive_buffer_is_set_explicitly():
    a, b = managers(linger=5.0)
    try:
        offer = a.offer(b"x" * 100)
        yield b.fetch((LOCAL, offer.port), offer.transfer_id, offer.size, offer.sha256)
        (fetch,) = b._fetches  # lingering: its socket is still open
        rcvbuf = fetch.transport.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert rcvbuf > 212992  # more than the system default
        assert fetch.transport.maxPacketSize >= 1200 + 30
        assert fetch.window * 2304 <= rcvbuf  # never more in flight than the buffer holds
    finally:
        a.stop()
        b.stop()


@pytest_twisted.inlineCallbacks
def test_no_socket_leak_after_1000_transfers_successful_or_failed():
    a, b = managers(linger=0.0, max_per_peer=128, peer_timeout=10.0)
    impatient = TransferManager(reactor, interface=LOCAL, linger=0.0, max_per_peer=128, peer_timeout=0.3)
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind((LOCAL, 0))
    dead_port = dead.getsockname()[1]  # bound, never answers: fetches to it time out
    before = open_fds()
    outcomes = {"ok": 0, "refused": 0, "timeout": 0}

    def one(i):
        if i < 100:  # 100 time-outs, all at once
            d = impatient.fetch((LOCAL, dead_port), "ab" * 16, 10, "0" * 64)
            return d.addCallbacks(lambda _: "ok", lambda f: f.trap(TransferTimeout) and "timeout")
        data = os.urandom(2000 + i)
        offer = a.offer(data, max_fetches=1)
        sha = offer.sha256 if i % 9 else "1" * 64  # 100 refusals: wrong hash
        d = b.fetch((LOCAL, offer.port), offer.transfer_id, offer.size, sha)

        def done(result):
            offer.close()
            if isinstance(result, bytes):
                assert result == data
                return "ok"
            result.trap(TransferRefused)
            return "refused"

        return d.addBoth(done)

    try:
        for start in range(0, 1000, 100):
            results = yield defer.gatherResults(
                [one(i) for i in range(start, start + 100)], consumeErrors=True
            )
            for r in results:
                outcomes[r] += 1
        assert outcomes == {"ok": 800, "refused": 100, "timeout": 100}
        assert a.open_ports() == b.open_ports() == impatient.open_ports() == 0
        yield task.deferLater(reactor, 0.05, lambda: None)  # udp.Port closes its socket on the next turn
        assert open_fds() == before
    finally:
        dead.close()
        a.stop()
        b.stop()
        impatient.stop()


class Recorder(DatagramProtocol):
    maxPacketSize = 2048

    def __init__(self):
        self.got = []

    def datagramReceived(self, datagram, addr):
        self.got.append(bytes(datagram))


@pytest_twisted.inlineCallbacks
def test_coalescing_port_hands_out_gso_batches_one_datagram_at_a_time():
    recorder = Recorder()
    port = listen_coalescing(reactor, recorder, LOCAL, 2048)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        target = (LOCAL, port.getHost().port)
        datagrams = [bytes([i]) * 1230 for i in range(10)] + [b"tail"]
        try:
            sender.sendmsg(
                datagrams, [(socket.SOL_UDP, UDP_SEGMENT, (1230).to_bytes(2, sys.byteorder))], 0, target
            )
        except OSError:
            pytest.skip("this kernel has no UDP GSO")
        sender.sendto(b"single", target)
        for _ in range(100):
            if len(recorder.got) >= 12:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        assert recorder.got == datagrams + [b"single"]
        assert port.coalesced == 1  # the batch came up in one read and was split here
    finally:
        sender.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_lossy_sender_with_batched_sends():
    a = TransferManager(reactor, interface=LOCAL, drop_rate=0.05, seed=3, min_rto=0.05)
    b = TransferManager(reactor, interface=LOCAL, min_rto=0.05)
    try:
        data = os.urandom(3_000_000)
        offer = a.offer(data)
        got = yield b.fetch((LOCAL, offer.port), offer.transfer_id, offer.size, offer.sha256)
        assert got == data
        assert a.stats.dropped_by_hook > 0
    finally:
        a.stop()
        b.stop()
