"""ClusterNode's API and its protocol: drops counted by reason, app messages, status, stalls, real UDP."""

import json
import socket

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from cloudp2p.membership.election import State
from cloudp2p.membership.messages import (
    MAX_DATAGRAM,
    BadMessageError,
    Codec,
    Envelope,
    Heartbeat,
    MessageTooLargeError,
)
from cloudp2p.membership.node import ClusterNode
from cloudp2p.membership.protocol import ClusterProtocol, listen_udp
from cloudp2p.sockets import set_buffer
from cloudp2p.testing.memnet import Faults

from .sim import SECRET, Cluster, address


def started(n=3, **kw):
    c = Cluster(n, loads={i: 0.1 * i for i in range(1, n + 1)}, **kw)
    c.start()
    assert c.settle(3.0) == (1, 1)
    return c


# -- the protocol ----------------------------------------------------------------------------------


def test_protocol_drops_and_counts_bad_datagrams():
    got = []
    codec = Codec(SECRET, {1, 2}, me=1)
    unfresh = []
    proto = ClusterProtocol(
        codec, lambda env, addr: got.append(env), incarnation=5, on_unfresh=unfresh.append,
    )
    good = codec.encode(Envelope(2, 1, 1, 1, 0, Heartbeat(load=0.1), echo=5))
    proto.datagramReceived(good, ("127.0.0.1", 1))
    proto.datagramReceived(good, ("127.0.0.1", 1))  # replayed
    proto.datagramReceived(b"garbage" * 10, ("127.0.0.1", 1))
    proto.datagramReceived(b"x" * (MAX_DATAGRAM + 1), ("127.0.0.1", 1))
    proto.datagramReceived(Codec(b"wrong-key-0123456789", {1, 2}).encode(
        Envelope(2, 1, 1, 2, 0, Heartbeat(load=0.1))), ("127.0.0.1", 1))
    proto.datagramReceived(Codec(SECRET, {1, 2, 9}).encode(
        Envelope(9, 1, 1, 1, 0, Heartbeat(load=0.1))), ("127.0.0.1", 1))
    proto.datagramReceived(codec.encode(Envelope(1, 2, 1, 3, 0, Heartbeat(load=0.1))), ("127.0.0.1", 1))
    stale = Envelope(2, 1, 1, 4, 0, Heartbeat(load=0.1), echo=4)  # meant for an earlier incarnation
    proto.datagramReceived(codec.encode(stale), ("127.0.0.1", 1))
    assert len(got) == 1
    assert unfresh == [stale]
    assert dict(proto.dropped) == {
        "replay": 1, "forged": 2, "oversized": 1, "unknown_peer": 1, "misdirected": 1, "unfresh": 1,
    }
    assert proto.maxPacketSize > MAX_DATAGRAM


def test_protocol_never_raises_out_of_datagram_received():
    codec = Codec(SECRET, {1, 2})

    def broken(env, addr):
        raise RuntimeError("handler bug")

    proto = ClusterProtocol(codec, broken, incarnation=5)
    good = codec.encode(Envelope(2, 1, 1, 1, 0, Heartbeat(load=0.1), echo=5))
    proto.datagramReceived(good, ("127.0.0.1", 1))
    proto.datagramReceived(None, ("127.0.0.1", 1))  # not even bytes
    assert dict(proto.dropped) == {"handler_error": 1, "internal": 1}


def test_corrupted_datagrams_are_counted_and_the_cluster_still_works():
    c = started(faults=Faults(corrupt=0.2), seed=3)
    c.crash(1)
    assert c.settle(2.5) == (2, 2)
    assert sum(n.protocol.dropped["forged"] for n in c.nodes.values()) > 5


def test_sending_on_a_closed_socket_is_counted_not_raised():
    c = started()
    c.net.crash("s2")  # sockets gone, timers still running
    c.run(0.5)
    assert c.nodes[2].protocol.send_errors > 0


# -- app messages ------------------------------------------------------------------------------------


def test_app_messages_carry_sender_body_and_term():
    c = started()
    got, whole = [], []
    c.nodes[2].on_app("assign", lambda sender, body: got.append((sender, body)))
    c.nodes[3].on_app_message("assign", whole.append)
    c.nodes[1].send_app(2, "assign", {"id": "r1", "args": {"n": [1, 2]}})
    c.nodes[1].broadcast_app("assign", {"id": "r2"})
    c.run(0.1)
    assert got == [(1, {"id": "r1", "args": {"n": [1, 2]}}), (1, {"id": "r2"})]
    assert [(e.sender, e.term, e.message.body) for e in whole] == [(1, 1, {"id": "r2"})]


def test_app_message_to_self_is_delivered_locally():
    c = started()
    got = []
    c.nodes[1].on_app("done", lambda sender, body: got.append((sender, body)))
    c.nodes[1].send_app(1, "done", {"id": "r"})
    assert got == []
    c.run(0.01)
    assert got == [(1, {"id": "r"})]


def test_app_message_errors():
    c = started()
    node = c.nodes[1]
    with pytest.raises(ValueError):
        node.send_app(7, "x", {})
    with pytest.raises(MessageTooLargeError):
        node.send_app(2, "x", {"blob": "a" * MAX_DATAGRAM})
    with pytest.raises(BadMessageError):
        node.send_app(2, "x", {"not json": object()})
    with pytest.raises(BadMessageError):
        node.send_app(2, "", {})
    node.on_app("x", lambda s, b: None)
    with pytest.raises(ValueError):
        node.on_app("x", lambda s, b: None)


def test_a_failing_app_handler_or_callback_does_not_break_the_node():
    c = started()

    def boom(*args):
        raise RuntimeError("bug")

    c.nodes[2].on_app("x", boom)
    c.nodes[2].on_change(boom)
    c.nodes[1].send_app(2, "x", {})
    c.nodes[1].send_app(2, "unknown-kind", {})
    c.crash(1)
    assert c.settle(2.5) == (2, 2)
    dropped = c.nodes[2].status()["counters"]["dropped"]
    dropped.pop("unfresh", None)  # the peers' first heartbeats, sent before they knew 2's incarnation
    assert dropped == {"no_app_handler": 1}


def test_on_change_fires_on_coordinator_and_membership_changes():
    c = started()
    seen = []
    c.nodes[3].on_change(lambda: seen.append((c.nodes[3].coordinator_id, c.nodes[3].live_members())))
    c.crash(1)
    c.settle(2.5)
    assert seen[0] == (None, [2, 3])  # suspected and failover started
    assert seen[-1] == (2, [2, 3])


# -- status and the public view ------------------------------------------------------------------------


def test_status_is_json_and_complete():
    c = started()
    c.crash(3)
    c.run(1.5)
    status = json.loads(json.dumps(c.nodes[1].status()))
    assert status["id"] == 1 and status["term"] == 1 and status["coordinator"] == 1
    assert status["is_coordinator"] is True and status["state"] == "leading"
    assert status["members"][0]["address"] == "127.0.0.1:9000"
    assert [(m["id"], m["alive"], m["load"]) for m in status["members"]] == [
        (1, True, pytest.approx(0.1)), (2, True, pytest.approx(0.2)), (3, False, pytest.approx(0.3)),
    ]
    assert status["members"][2]["last_seen_ago"] >= 1.0
    assert status["counters"]["sent"]["heartbeat"] > 10
    assert status["counters"]["claims"] == 1
    assert c.nodes[2].ranked_members() == [1, 2]
    assert c.nodes[2].load_of(1) == pytest.approx(0.1) and c.nodes[2].load_of(3) == pytest.approx(0.3)


def test_ranking_follows_load_changes():
    c = started()
    c.loads[3] = 0.0
    c.run(0.5)
    assert c.nodes[1].ranked_members() == [3, 1, 2]
    assert c.nodes[2].election.successors == (3, 2)
    assert c.settle(0.1) == (1, 1)  # a load change alone never forces an election


def test_is_coordinator_is_false_the_moment_a_stall_is_visible():
    """Real reactors deliver datagrams before overdue timers after SIGCONT: the property must not wait."""
    c = started()
    node = c.nodes[1]
    clock = c.net.node_clock("s1")
    assert node.is_coordinator
    clock.rightNow += 1.5  # time passed, no timer has run yet
    assert not node.is_coordinator
    assert node.state is State.LEADING


def test_constructor_checks():
    clock = task.Clock()
    kw = dict(clock=clock, load_source=lambda: 0.0)
    with pytest.raises(ValueError):
        ClusterNode(0, {}, SECRET, **kw)
    with pytest.raises(ValueError):
        ClusterNode(1, {1: address(1)}, SECRET, **kw)
    with pytest.raises(ValueError):
        ClusterNode(1, {}, SECRET, heartbeat_interval=0.6, failure_timeout=1.0, **kw)
    with pytest.raises(ValueError):
        ClusterNode(1, {}, b"", **kw)


def test_single_server_leads_alone():
    c = Cluster(1)
    c.start()
    assert c.settle(2.0) == (1, 1)


def test_load_source_failure_keeps_the_last_load():
    c = started()
    c.loads[2] = float("nan")
    c.run(0.5)
    assert c.nodes[2].load_of(2) == 0.2
    del c.loads[2]  # KeyError inside the load source
    c.run(0.5)
    assert c.nodes[1].load_of(2) == 0.2


# -- real sockets ---------------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_three_nodes_over_real_udp():
    ids = [1, 2, 3]
    nodes, ports = {}, {}
    for i in ids:
        # Addresses are filled in once every socket is bound on an OS-chosen port.
        nodes[i] = ClusterNode(i, {j: ("127.0.0.1", 1) for j in ids if j != i}, SECRET,
                               clock=reactor, load_source=lambda i=i: 0.1 * i)
        ports[i] = listen_udp(reactor, nodes[i].protocol, ("127.0.0.1", 0), receive_buffer=1 << 20)
    try:
        for i in ids:
            for j in ids:
                if j != i:
                    nodes[i].peers[j] = ("127.0.0.1", ports[j].getHost().port)
            assert ports[i].socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 1 << 16
            assert set_buffer(ports[i], 1 << 18) >= 1 << 16
        got = []
        nodes[3].on_app("big", lambda sender, body: got.append((sender, len(body["blob"]))))
        for node in nodes.values():
            node.start()
        for _ in range(100):
            views = {(n.term, n.coordinator_id) for n in nodes.values()}
            if views == {(1, 1)} and nodes[1].is_coordinator:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert {(n.term, n.coordinator_id) for n in nodes.values()} == {(1, 1)}
        nodes[1].send_app(3, "big", {"blob": "z" * 50_000})  # far above Twisted's 8192 default
        for _ in range(40):
            if got:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert got == [(1, 50_000)]
        # Only the first heartbeats, sent before the peers knew each other's incarnation.
        assert all(set(n.protocol.dropped) <= {"unfresh"} for n in nodes.values())
    finally:
        for i in ids:
            nodes[i].stop()
            yield ports[i].stopListening()
