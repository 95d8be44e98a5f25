"""ClientRouter on the memory network against scripted fake servers (the real router: test_router*.py)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol

from cloudp2p.errors import CloudUnreachable, RequestFailed
from cloudp2p.routing import client_wire as wire
from cloudp2p.routing.client import ClientRouter
from cloudp2p.testing.memnet import MemoryNetwork

SERVERS = [("10.0.0.1", 8000), ("10.0.0.2", 8000)]


class FakeReactor:
    def __init__(self, net: MemoryNetwork) -> None:
        self.net, self.clock = net, net.node_clock("client")

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, delay, f, *a, **kw):
        return self.clock.callLater(delay, f, *a, **kw)

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.interface = interface
        return self.net.listen(protocol, ("10.9.9.9", port), node="client")


class ScriptedServer(DatagramProtocol):
    """Records requests; answers the n-th copy of each request (or never) with ``body``."""

    def __init__(self, sid: int, body: dict[str, Any] | None, answer_copy: int = 1) -> None:
        self.sid, self.body, self.answer_copy = sid, body, answer_copy
        self.received: list[tuple[wire.Request, float]] = []
        self.clock = None

    def datagramReceived(self, data, addr):
        request = wire.decode_request(data)
        self.received.append((request, self.clock.seconds()))
        copies = sum(1 for r, _ in self.received if r.request_id == request.request_id)
        if self.body is not None and copies == self.answer_copy:
            self.transport.write(wire.Reply(request.request_id, self.body, self.sid).encode(), addr)


def setup(bodies, answer_copy=1, **kwargs):
    net = MemoryNetwork(seed=1)
    servers = []
    for (host, port), body in zip(SERVERS, bodies, strict=True):
        server = ScriptedServer(int(host[-1]), body, answer_copy)
        server.clock = net.node_clock(host)
        net.listen(server, (host, port), node=host)
        servers.append(server)
    reactor = FakeReactor(net)
    router = ClientRouter(reactor, SERVERS, **kwargs)
    router.start()
    return net, servers, router


def outcome(d: defer.Deferred) -> list[Any]:
    box: list[Any] = []
    d.addBoth(box.append)
    return box


def test_sends_to_every_server_and_takes_the_first_reply():
    net, servers, router = setup([{"ok": True, "result": {"n": 1}}, {"ok": True, "result": {"n": 2}}])
    box = outcome(router.submit("ping", {"a": 1}))
    net.run(0.1)
    assert box[0] in ({"n": 1}, {"n": 2})
    ids = {r.request_id for s in servers for r, _ in s.received}
    assert len(ids) == 1 and all(len(s.received) == 1 for s in servers)
    assert servers[0].received[0][0].args == {"a": 1} and not servers[0].received[0][0].direct


def test_retries_with_the_same_id_and_backoff_until_answered():
    net, servers, router = setup(
        [None, {"ok": True, "result": {}}], answer_copy=4, retry_initial=0.25, retry_max=1.0
    )
    box = outcome(router.submit("ping", {}))
    net.run(3.0, until=lambda: box)
    assert box == [{}]
    times = [t for _, t in servers[1].received]
    gaps = [round(b - a, 2) for a, b in zip(times, times[1:], strict=False)]
    assert gaps == [0.25, 0.5, 1.0]
    assert len({r.request_id for r, _ in servers[0].received}) == 1 and len(servers[0].received) == 4


def test_error_reply_is_request_failed_with_code():
    net, servers, router = setup(
        [{"ok": False, "error": {"code": "username_taken", "message": "pick another"}}, None]
    )
    box = outcome(router.submit("register", {}))
    net.run(0.1)
    assert box[0].check(RequestFailed)
    assert box[0].value.code == "username_taken" and box[0].value.message == "pick another"


UNAVAILABLE = {"ok": False, "error": {"code": "directory_unavailable", "message": "minority"}}


def test_a_minority_servers_directory_unavailable_waits_for_the_majority():
    """One server's database node is cut off (it answers at once): the other's success wins."""
    net, servers, router = setup([UNAVAILABLE, {"ok": True, "result": {"user_id": "u"}}], answer_copy=1)
    servers[1].answer_copy = 3  # the majority side answers only the third copy (1.75 s later)
    box = outcome(router.submit("register", {}))
    net.run(5.0, until=lambda: box)
    assert box == [{"user_id": "u"}]
    assert router.counters["soft_errors"] >= 1


def test_directory_unavailable_from_every_server_fails_at_once():
    net, servers, router = setup([UNAVAILABLE, UNAVAILABLE], timeout=10.0)
    box = outcome(router.submit("register", {}))
    net.run(0.1)
    assert box and box[0].check(RequestFailed) and box[0].value.code == "directory_unavailable"


def test_directory_unavailable_and_silence_fails_with_that_error_at_the_deadline():
    net, servers, router = setup([UNAVAILABLE, None], timeout=2.0)
    box = outcome(router.submit("register", {}))
    assert not net.run(1.9, until=lambda: box)
    net.run(0.3, until=lambda: box)
    assert box and box[0].check(RequestFailed) and box[0].value.code == "directory_unavailable"


def test_deadline_gives_cloud_unreachable_naming_the_op_and_servers():
    net, servers, router = setup([None, None], timeout=2.0)
    box = outcome(router.submit("sign_in", {}))
    assert not net.run(1.9, until=lambda: box)
    net.run(0.3, until=lambda: box)
    assert box[0].check(CloudUnreachable)
    assert "sign_in" in str(box[0].value) and "10.0.0.2:8000" in str(box[0].value)
    assert router.counters["timeouts"] == 1


def test_per_request_timeout_overrides_the_default():
    net, servers, router = setup([None, None], timeout=30.0)
    box = outcome(router.submit("ping", {}, timeout=0.5))
    net.run(0.7, until=lambda: box)
    assert box and box[0].check(CloudUnreachable)


def test_replies_from_unknown_addresses_and_garbage_are_ignored():
    net, servers, router = setup([None, None], timeout=1.0)
    box = outcome(router.submit("ping", {}))
    net.run(0.05)
    rid = servers[0].received[0][0].request_id
    intruder = DatagramProtocol()
    transport = net.listen(intruder, ("10.6.6.6", 8000), node="intruder")
    client = router.address
    transport.write(wire.Reply(rid, {"ok": True, "result": {"forged": True}}, 1).encode(), client)
    transport.write(b"\x00garbage", client)
    transport.write(wire.Reply("b" * 32, {"ok": True, "result": {}}, 1).encode(), client)
    net.run(1.5, until=lambda: box)
    assert box[0].check(CloudUnreachable)
    assert router.counters["foreign_replies"] == 1 and router.counters["bad_replies"] == 1
    assert router.counters["unmatched_replies"] == 1


def test_cancel_forgets_the_request():
    net, servers, router = setup([None, None])
    d = router.submit("ping", {})
    box = outcome(d)
    net.run(0.1)
    d.cancel()
    assert box[0].check(defer.CancelledError)
    net.run(3.0)
    assert sum(len(s.received) for s in servers) == 2  # the first send, no retry after cancel
    assert router._outstanding == {}


def test_arguments_that_do_not_fit_or_are_not_json_fail_at_once():
    net, servers, router = setup([None, None])
    big = outcome(router.submit("ping", {"x": "y" * 70_000}))
    assert big[0].check(RequestFailed) and big[0].value.code == "too_large"
    odd = outcome(router.submit("ping", {"x": object()}))
    assert odd[0].check(RequestFailed) and odd[0].value.code == "bad_args"
    with pytest.raises(ValueError):
        router.submit("Bad Op", {})


def test_query_goes_to_one_server_only():
    net, servers, router = setup(
        [{"ok": True, "result": {"server": 1}}, {"ok": True, "result": {"server": 2}}]
    )
    box = outcome(router.query(SERVERS[1], "status"))
    net.run(0.1)
    assert box == [{"server": 2}]
    assert servers[0].received == [] and servers[1].received[0][0].direct


def test_not_started_and_stopped():
    net = MemoryNetwork()
    router = ClientRouter(FakeReactor(net), SERVERS)
    assert outcome(router.submit("ping", {}))[0].check(CloudUnreachable)
    with pytest.raises(ValueError):
        ClientRouter(FakeReactor(net), [])


def test_binds_loopback_for_loopback_servers():
    net = MemoryNetwork()
    reactor = FakeReactor(net)
    ClientRouter(reactor, [("127.0.0.1", 9101)]).start()
    assert reactor.interface == "127.0.0.1"
    ClientRouter(reactor, [("192.0.2.1", 9101)]).start()
    assert reactor.interface == "0.0.0.0"
    ClientRouter(reactor, [("::1", 9101)]).start()
    assert reactor.interface == "::"
