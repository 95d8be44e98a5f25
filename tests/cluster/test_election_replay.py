"""Replays and old terms on the memory network change nothing."""

from cloudp2p.cluster.messages import Codec, Coordinator, Envelope, Heartbeat

from .sim import SECRET, Cluster, address


def started():
    c = Cluster(3, loads={1: 0.1, 2: 0.2, 3: 0.3})
    c.start()
    assert c.settle(3.0) == (1, 1)
    return c


def inject(c, src, dst, datagram):
    c.net._deliver(address(src), f"s{src}", address(dst), datagram)


def test_replayed_heartbeats_of_a_dead_coordinator_resurrect_nothing():
    c = started()
    recorded = c.nodes[1].protocol.transport.written[-12:]
    c.crash(1)
    assert c.settle(2.5) == (2, 2)
    for events in c.events.values():
        events.clear()
    for datagram, (host, _port) in recorded:  # an attacker replays what 1 sent while it led term 1
        inject(c, 1, int(host.rsplit(".", 1)[1]), datagram)
    c.run(0.5)
    assert c.settle(0.1) == (2, 2)
    assert not c.nodes[2].detector.is_alive(1) and not c.nodes[3].detector.is_alive(1)
    assert c.events[2] == c.events[3] == []
    assert c.nodes[2].protocol.dropped["replay"] + c.nodes[3].protocol.dropped["replay"] == len(recorded)


def test_recorded_datagram_replayed_to_another_server_is_misdirected():
    """Sequence numbers are per sender, not per link: the recipient id in the envelope closes that gap."""
    c = started()
    to_3 = [d for d, addr in c.nodes[1].protocol.transport.written[-6:] if addr == address(3)]
    c.crash(1)
    assert c.settle(2.5) == (2, 2)
    for datagram in to_3:
        inject(c, 1, 2, datagram)
    c.run(0.1)
    assert c.nodes[2].protocol.dropped["misdirected"] == len(to_3) > 0
    assert not c.nodes[2].detector.is_alive(1)


def test_authentic_messages_of_an_older_term_change_nothing():
    c = started()
    c.crash(1)
    assert c.settle(2.5) == (2, 2)
    for events in c.events.values():
        events.clear()
    codec = Codec(SECRET, c.ids)
    inc = 10**12  # a new incarnation of 1, still on term 1 (say, back from a long partition)

    def send(seq, term, message):
        inject(c, 1, 2, codec.encode(Envelope(1, 2, inc, seq, term, message)))

    send(1, 1, Coordinator(successors=(1,)))  # an old claim
    send(2, 6, Coordinator(successors=()))  # term 6 is 2's (6 mod 4), not 1's
    send(3, 1, Heartbeat(load=0.0, coordinator=1))  # an old heartbeat
    c.run(0.3)
    assert c.settle(0.1) == (2, 2)
    assert c.events[2] == [("alive", 1)]  # 1 is heard from again: that is all
    assert c.nodes[2].status()["counters"]["dropped"] == {"stale_term": 1, "bad_term_owner": 1}
