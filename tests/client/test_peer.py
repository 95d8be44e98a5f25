"""Peer messages: the codec, signatures, the listener's robustness and acknowledged delivery."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer

from cloudp2p.client.peer import MAX_MESSAGE, PeerMessage, PeerMessageError, PeerMessenger, PeerProtocol
from cloudp2p.encryption.keys import UserKeys
from cloudp2p.testing.memnet import Faults, MemoryNetwork

ALICE, BOB = UserKeys.generate(), UserKeys.generate()
KEYS = {"alice": ALICE.public.to_json()["ed25519"], "bob": BOB.public.to_json()["ed25519"]}
REQUEST = {
    "request_id": "0a0b0c0d",
    "image_id": "123e4567-e89b-12d3-a456-426614174000",
    "views": 2,
    "kind": "share",
    "used": 0,
}


def _msg(**body):
    return PeerMessage.create(ALICE, "share_request", "alice", "bob", {**REQUEST, **body}, 100.0)


def test_roundtrip_and_signature():
    msg = _msg()
    back = PeerMessage.decode(msg.encode())
    assert back == msg
    assert back.verify(KEYS["alice"])
    assert not back.verify(KEYS["bob"])


@pytest.mark.parametrize(
    "field,value",
    [("from", "bob"), ("to", "carol"), ("at", 101.0), ("type", "share_rejected"), ("id", "0" * 32)],
)
def test_any_change_breaks_the_signature(field, value):
    obj = _msg().to_json()
    obj[field] = value
    if field == "type":
        obj["body"] = {"request_id": "0a0b0c0d", "image_id": REQUEST["image_id"]}
    assert not PeerMessage.from_json(obj).verify(KEYS["alice"])


def test_body_change_breaks_the_signature():
    obj = _msg().to_json()
    obj["body"]["views"] = 50
    assert not PeerMessage.from_json(obj).verify(KEYS["alice"])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.update(v=2),
        lambda o: o.update(type="launch_missiles"),
        lambda o: o.pop("sig"),
        lambda o: o.update(extra=1),
        lambda o: o.update(sig="not base64!"),
        lambda o: o.update(sig="AAAA"),
        lambda o: o.update(id="xyz"),
        lambda o: o.update(at=float("nan")),
        lambda o: o.update(at=-1),
        lambda o: o.update(at=True),
        lambda o: o.update(to="../etc/passwd"),
        lambda o: o["body"].update(views=0),
        lambda o: o["body"].update(views=10**9),
        lambda o: o["body"].update(views=True),
        lambda o: o["body"].update(kind="steal"),
        lambda o: o["body"].update(used=-1),
        lambda o: o["body"].pop("used"),
        lambda o: o["body"].update(surplus="x"),
        lambda o: o["body"].pop("image_id"),
        lambda o: o["body"].update(image_id="a" * 500),
    ],
)
def test_malformed_messages_are_refused(mutate):
    obj = _msg().to_json()
    mutate(obj)
    with pytest.raises(PeerMessageError):
        PeerMessage.decode(json.dumps(obj).encode())


def test_size_limit():
    with pytest.raises(PeerMessageError):
        PeerMessage.decode(b"{" + b" " * MAX_MESSAGE + b"}")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_garbage_bytes_raise_only_our_error(data):
    try:
        PeerMessage.decode(data)
    except PeerMessageError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["v", "type", "id", "from", "to", "at", "body", "sig", "x"]), json_values)
)
def test_garbage_json_raise_only_our_error(obj):
    try:
        PeerMessage.from_json(obj)
    except PeerMessageError:
        pass


@settings(max_examples=100, deadline=None)
@given(views=st.integers(1, 1000), rid=st.from_regex(r"[A-Za-z0-9_.:-]{1,40}", fullmatch=True))
def test_property_encode_decode(views, rid):
    msg = _msg(views=views, request_id=rid)
    assert PeerMessage.decode(msg.encode()) == msg


def test_listener_never_raises():
    got = []

    class Boom:
        def received(self, msg, addr):
            got.append(msg)
            raise RuntimeError("bug in the application")

    proto = PeerProtocol(Boom())
    proto.datagramReceived(b"\xff\x00garbage", ("127.0.0.1", 1))
    proto.datagramReceived(_msg().encode(), ("127.0.0.1", 1))
    assert proto.rejected == 1 and len(got) == 1


# -- acknowledged delivery on the memory network ------------------------------------------------------


class Node:
    def __init__(self, net, name, identity, fail_apply=False):
        self.applied = []
        self.fail_apply = fail_apply
        clock = net.node_clock(name)

        async def resolve(user):
            return KEYS.get(user)

        async def deliver(msg, addr):
            if self.fail_apply:
                raise RuntimeError("cannot apply")
            if msg.id not in {m.id for m in self.applied}:
                self.applied.append(msg)

        self.messenger = PeerMessenger(clock, identity, lambda: name, resolve, deliver, retry_interval=0.1)
        self.transport = net.listen(self.messenger.protocol, node=name)
        self.address = self.transport.address


def _send(net, sender, msg, to, timeout=2.0):
    box = []
    defer.Deferred.fromCoroutine(sender.messenger.send(msg, to.address, timeout)).addBoth(box.append)
    net.run(timeout + 1, until=lambda: bool(box))
    return box[0]


def test_delivered_once_and_acked_despite_loss_and_duplicates():
    net = MemoryNetwork(seed=5, faults=Faults(loss=0.3, duplicate=0.3, jitter=0.02))
    alice, bob = Node(net, "alice", ALICE), Node(net, "bob", BOB)
    results = [
        _send(net, alice, alice.messenger.message("share_request", "bob", REQUEST), bob) for _ in range(10)
    ]
    assert results.count(True) >= 8
    assert len(bob.applied) == 10  # every message arrives (retransmissions) and is applied once


def test_unacknowledged_when_peer_is_gone():
    net = MemoryNetwork(seed=1)
    alice, bob = Node(net, "alice", ALICE), Node(net, "bob", BOB)
    net.crash("bob")
    assert _send(net, alice, alice.messenger.message("share_request", "bob", REQUEST), bob) is False


def test_not_acked_when_apply_fails():
    net = MemoryNetwork(seed=1)
    alice, bob = Node(net, "alice", ALICE), Node(net, "bob", BOB, fail_apply=True)
    assert _send(net, alice, alice.messenger.message("share_request", "bob", REQUEST), bob) is False


def test_forged_and_misaddressed_messages_are_dropped():
    net = MemoryNetwork(seed=1)
    alice, bob = Node(net, "alice", ALICE), Node(net, "bob", BOB)
    mallory = UserKeys.generate()
    forged = PeerMessage.create(mallory, "share_request", "alice", "bob", REQUEST, 1.0)
    assert _send(net, alice, forged, bob) is False
    wrong_to = PeerMessage.create(ALICE, "share_request", "alice", "carol", REQUEST, 1.0)
    assert _send(net, alice, wrong_to, bob) is False
    assert bob.applied == [] and bob.messenger.dropped >= 2  # every retransmission is dropped
