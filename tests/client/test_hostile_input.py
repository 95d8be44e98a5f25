"""Regressions from `make fuzz` (bench/fuzz.py): inputs that once escaped the client's listeners."""

from __future__ import annotations

import json
import os
from unittest import mock

import pytest
from twisted.internet.testing import StringTransport

from cloudp2p.client.control import ControlFactory
from cloudp2p.client.errors import PeerMessageError
from cloudp2p.client.peer import MAX_MESSAGE, PeerMessage, PeerProtocol

# JSON nested deeper than Python's parser recurses: json.loads raises RecursionError, not ValueError.
DEEP = [b"[" * 15_000, b'{"a":' * 3000 + b"1" + b"}" * 3000, b"[" * 100_000 + b"]" * 100_000]


async def _echo(args, progress):
    return {"echo": args}


def _control(factory: ControlFactory):
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    transport.getHandle = lambda: None
    with mock.patch("cloudp2p.client.control.peer_uid", lambda sock: os.getuid()):
        proto.makeConnection(transport)
    return proto, transport


@pytest.mark.parametrize("line", DEEP)
def test_control_deeply_nested_line_gets_an_error_reply_and_keeps_the_connection(line):
    factory = ControlFactory({"echo": _echo}, allowed_uid=os.getuid())
    proto, transport = _control(factory)
    proto.dataReceived(line + b"\n")
    proto.dataReceived(b'{"id": 2, "cmd": "echo", "args": {"x": 1}}\n')
    replies = [json.loads(x) for x in transport.value().splitlines()]
    assert replies[0]["ok"] is False and replies[0]["error"]["type"] == "ControlProtocolError"
    assert replies[1] == {"id": 2, "ok": True, "result": {"echo": {"x": 1}}}
    assert not transport.disconnecting
    assert factory.counters["bad_lines"] == 1


def test_control_counts_what_it_refuses():
    factory = ControlFactory({"echo": _echo}, allowed_uid=os.getuid())
    proto, transport = _control(factory)
    proto.dataReceived(b"not json\n")
    proto.dataReceived(b'{"id": 1, "cmd": "nope", "args": {}}\n')
    proto.dataReceived(b"x" * (300 * 1024) + b"\n")
    assert dict(factory.counters) == {"bad_lines": 1, "unknown_commands": 1, "long_lines": 1}


@pytest.mark.parametrize("data", [d[:MAX_MESSAGE] for d in DEEP])
def test_peer_deeply_nested_datagram_is_rejected_not_raised(data):
    with pytest.raises(PeerMessageError):
        PeerMessage.decode(data)
    messenger = mock.Mock()
    proto = PeerProtocol(messenger)
    proto.datagramReceived(data, ("127.0.0.1", 5000))  # must not raise
    assert (proto.received, proto.rejected) == (1, 1)
    messenger.received.assert_not_called()


def test_peer_protocol_counts_a_decoding_bug_and_keeps_listening():
    messenger = mock.Mock()
    proto = PeerProtocol(messenger)
    with mock.patch.object(PeerMessage, "decode", side_effect=KeyError("bug")):
        proto.datagramReceived(b"{}", ("127.0.0.1", 5000))
    assert (proto.received, proto.rejected) == (1, 1)


def test_counters_command_reports_what_the_peer_listener_refused(world):
    alice = world.signed_up("alice")
    before = alice.cmd("counters")
    proto = alice.daemon.messenger.protocol
    proto.datagramReceived(b"[" * 9000, ("127.0.0.1", 5000))
    proto.datagramReceived(b"not json", ("127.0.0.1", 5000))
    after = alice.cmd("counters")
    assert after["peer_received"] - before["peer_received"] == 2
    assert after["peer_rejected"] - before["peer_rejected"] == 2
    assert alice.cmd("status")["counters"]["peer_rejected"] == after["peer_rejected"]
    assert alice.cmd("counters")["control"] == {}  # no control socket in this world
