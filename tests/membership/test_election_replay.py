"""Replays and old terms on the memory network change nothing."""

from cloudp2p.membership.messages import Codec, Coordinator, Envelope, Heartbeat

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
    c.nodes[2].protocol.dropped.clear()  # (the peers' first heartbeats at start: unfresh)
    inc = 10**12  # a new incarnation of 1, still on term 1 (say, back from a long partition)

    def send(seq, term, message):
        inject(c, 1, 2, codec.encode(Envelope(1, 2, inc, seq, term, message, echo=c.nodes[2].incarnation)))

    send(1, 1, Coordinator(successors=(1,)))  # an old claim
    send(2, 6, Coordinator(successors=()))  # term 6 is 2's (6 mod 4), not 1's
    send(3, 1, Heartbeat(load=0.0, coordinator=1))  # an old heartbeat
    c.run(0.3)
    assert c.settle(0.1) == (2, 2)
    assert c.events[2] == [("alive", 1)]  # 1 is heard from again: that is all
    assert c.nodes[2].status()["counters"]["dropped"] == {"stale_term": 1, "bad_term_owner": 1}


# -- a restarted node and the recordings of its previous life (docs/cluster-membership.md, Freshness) --


def sent_to(c, src, dst, last):
    return [d for d, addr in c.nodes[src].protocol.transport.written if addr == address(dst)][-last:]


def test_recordings_replayed_to_a_restarted_node_are_not_liveness():
    """2 stays alive; 3 restarts; 2's datagrams to 3's previous life, replayed first, prove nothing."""
    c = started()
    c.run(3.0)
    recorded = sent_to(c, 2, 3, 20)  # 2 s of heartbeats, well inside a 64-datagram replay window
    c.crash(3)
    node = c.restart(3)  # a new incarnation, with an empty ReplayGuard
    block = lambda src, dst, _data: src == address(2) and dst == address(3)  # noqa: E731
    c.net.filters.append(block)  # the attacker's copies arrive before 2's next genuine datagram
    for datagram in recorded:
        inject(c, 2, 3, datagram)
    c.run(0.1)
    assert node.detector.last_seen(2) is None  # not heard from: no liveness, no load, no term
    assert node.load_of(2) is None
    unfresh = node.protocol.dropped["unfresh"]
    assert unfresh >= len(recorded)  # (and 2's datagrams still in flight when 3 restarted)
    assert c.settle(0.5) == (1, 1)  # 3 learned the coordinator from 1, without an election
    c.net.filters.remove(block)
    assert c.run(0.5, until=lambda: node.detector.last_seen(2) is not None)  # 2 itself: one round trip
    for datagram in recorded:  # and still nothing of the recording is accepted
        inject(c, 2, 3, datagram)
    c.run(0.1)
    assert node.protocol.dropped["unfresh"] == unfresh + len(recorded)
    assert list(node.events) == [("joining", 0), ("follow", 1, 1)]


def test_recordings_do_not_delay_noticing_a_dead_peer_after_a_restart():
    """2 dies while 3 restarts; 2's recorded heartbeats replayed to the new 3 do not keep 2 alive."""
    c = started()
    c.run(3.0)
    recorded = sent_to(c, 2, 3, 20)
    assert len(recorded) == 20
    c.crash(2)
    c.crash(3)
    node = c.restart(3)
    start = c.net.clock.seconds()
    for datagram in recorded:  # one every 0.1 s for 2 s: each would reset 3's deadline for 2
        inject(c, 2, 3, datagram)
        c.run(0.1)
    suspected = [e for e in node.events if e == ("suspect", 2)]
    assert suspected and not node.detector.is_alive(2)
    assert node.detector.last_seen(2) is None
    assert c.settle(0.1) == (1, 1)
    assert c.net.clock.seconds() - start >= 1.9
    # Suspected at the first deadline, failure_timeout after the start, as without the attacker.
    assert c.kinds(3, "suspect") == [("suspect", 2)]
