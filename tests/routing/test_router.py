"""The request router on the memory network, driven by task.Clock.

Membership is an oracle here (``FakeCluster``): the test decides who is alive,
who is coordinator and in which term, so that each test isolates one router
behaviour. The router's peer messages still travel as datagrams over the memory
network, with its faults. The real ClusterNode is exercised with the router in
tests/integration.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.internet.protocol import DatagramProtocol

from cloudp2p.errors import CloudUnreachable, RequestFailed
from cloudp2p.ops import OpError, OpRegistry
from cloudp2p.routing import client_wire as wire
from cloudp2p.routing.client import ClientRouter
from cloudp2p.routing.router import ClientProtocol, Router, RouterSettings
from cloudp2p.testing.memnet import Faults, MemoryNetwork

CLIENT_NODE = "client"


def label(sid: int) -> str:
    return f"s{sid}"


def cluster_addr(sid: int) -> tuple[str, int]:
    return (f"10.0.0.{sid}", 7000)


def client_addr(sid: int) -> tuple[str, int]:
    return (f"10.0.0.{sid}", 8000)


class _AppProtocol(DatagramProtocol):
    maxPacketSize = 70_000

    def __init__(self, node: FakeNode) -> None:
        self.node = node

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        msg = json.loads(data)
        handler = self.node.handlers.get(msg["kind"])
        if handler is not None and self.node.cluster.is_up(self.node.server_id):
            handler(msg["sender"], msg["body"])


class FakeNode:
    """The ClusterNode API the router uses, with the test as the failure detector and election."""

    def __init__(self, cluster: FakeCluster, server_id: int) -> None:
        self.cluster = cluster
        self.server_id = server_id
        self.term = cluster.term
        self.coordinator_id: int | None = cluster.coordinator
        self.handlers: dict[str, Any] = {}
        self.change_callbacks: list[Any] = []
        self.protocol = _AppProtocol(self)
        self.sent: list[tuple[int, str, dict[str, Any]]] = []

    @property
    def is_coordinator(self) -> bool:
        return self.coordinator_id == self.server_id and self.cluster.is_up(self.server_id)

    def live_members(self) -> list[int]:
        return sorted(self.cluster.alive)

    def ranked_members(self) -> list[int]:
        return sorted(self.cluster.alive, key=lambda m: (self.cluster.loads.get(m, 0.0), m))

    def load_of(self, server_id: int) -> float | None:
        return self.cluster.loads.get(server_id, 0.0) if server_id in self.cluster.alive else None

    def on_change(self, callback: Any) -> None:
        self.change_callbacks.append(callback)

    def on_app(self, kind: str, handler: Any) -> None:
        self.handlers[kind] = handler

    def send_app(self, peer_id: int, kind: str, body: dict[str, Any]) -> None:
        self.sent.append((peer_id, kind, body))
        data = json.dumps({"kind": kind, "sender": self.server_id, "body": body}).encode()
        self.protocol.transport.write(data, cluster_addr(peer_id))

    def broadcast_app(self, kind: str, body: dict[str, Any]) -> None:
        for peer in self.cluster.ids:
            if peer != self.server_id:
                self.send_app(peer, kind, body)

    def status(self) -> dict[str, Any]:
        return {"id": self.server_id, "term": self.term}


class FakeServer:
    def __init__(self, sid: int, clock: task.Clock) -> None:
        self.id = sid
        self.reactor = clock


class FakeCluster:
    """N routers on a memory network, an oracle membership, and ops that record their runs."""

    def __init__(
        self,
        n: int = 3,
        *,
        seed: int = 1,
        faults: Faults | None = None,
        settings: RouterSettings | None = None,
        coordinator: int | None = None,
    ) -> None:
        self.net = MemoryNetwork(seed=seed, faults=faults)
        self.ids = list(range(1, n + 1))
        self.alive = set(self.ids)
        self.paused: set[int] = set()
        self.term = 1
        self.coordinator = coordinator or self.ids[0]
        self.loads: dict[int, float] = {}
        self.runs: list[tuple[int, str]] = []  # (server, request id) each time a handler starts
        self.nodes: dict[int, FakeNode] = {}
        self.routers: dict[int, Router] = {}
        for sid in self.ids:
            clock = self.net.node_clock(label(sid))
            node = self.nodes[sid] = FakeNode(self, sid)
            registry = OpRegistry()
            registry.update(self._ops(sid, clock))
            router = self.routers[sid] = Router(
                node, registry, clock=clock, server=FakeServer(sid, clock), settings=settings
            )
            self.net.listen(node.protocol, cluster_addr(sid), node=label(sid))
            self.net.listen(ClientProtocol(router), client_addr(sid), node=label(sid))
            router.start()
        self.client_reactor = FakeReactor(self.net, CLIENT_NODE)
        self.client = ClientRouter(self.client_reactor, [client_addr(s) for s in self.ids], timeout=10.0)
        self.client.start()

    def _ops(self, sid: int, clock: task.Clock) -> dict[str, Any]:
        async def echo(ctx, args):
            self.runs.append((sid, ctx.request_id))
            return {"server": sid, "args": args}

        async def slow(ctx, args):
            self.runs.append((sid, ctx.request_id))
            await task.deferLater(clock, args.get("seconds", 1.0), lambda: None)
            return {"server": sid}

        async def refuse(ctx, args):
            raise OpError("nope", "refused on purpose")

        async def broken(ctx, args):
            raise RuntimeError("a bug")

        async def status(ctx, args):
            return self.routers[sid].status()

        return {"echo": echo, "slow": slow, "refuse": refuse, "broken": broken, "status": status}

    # -- the oracle -------------------------------------------------------------------------------

    def is_up(self, sid: int) -> bool:
        return sid in self.alive and sid not in self.paused

    def crash(self, sid: int) -> None:
        """kill -9: sockets closed, timers stopped; membership learns it at the next detect()."""
        self.net.crash(label(sid))
        self.routers[sid].stop()
        self.paused.add(sid)

    def detect(self, sid: int) -> None:
        """The failure detector declares ``sid`` dead everywhere."""
        self.alive.discard(sid)
        self._notify()

    def elect(self, new: int) -> None:
        self.term += 1
        self.coordinator = new
        for node in self.nodes.values():
            if self.is_up(node.server_id):
                node.term, node.coordinator_id = self.term, new
        self._notify()

    def _notify(self) -> None:
        for sid, node in self.nodes.items():
            if self.is_up(sid):
                for cb in node.change_callbacks:
                    cb()

    def submit_all(self, op: str, args_list: list[dict[str, Any]]) -> list[list[Any]]:
        outcomes = []
        for args in args_list:
            box: list[Any] = []
            self.client.submit(op, args).addBoth(box.append)
            outcomes.append(box)
        return outcomes

    def run_until_answered(self, outcomes: list[list[Any]], seconds: float = 15.0) -> None:
        assert self.net.run(seconds, until=lambda: all(outcomes)), "not every request was answered in time"

    def ran_once_each(self) -> bool:
        rids = [rid for _, rid in self.runs]
        return len(rids) == len(set(rids))


class FakeReactor:
    """Just enough reactor for a ClientRouter on the memory network."""

    def __init__(self, net: MemoryNetwork, node: str) -> None:
        self.net = net
        self.node = node
        self.clock = net.node_clock(node)

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, delay, f, *a, **kw):
        return self.clock.callLater(delay, f, *a, **kw)

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        return self.net.listen(protocol, ("10.9.9.9", port), node=self.node)


def results(outcomes: list[list[Any]]) -> list[Any]:
    return [box[0] for box in outcomes]


# -- tests ----------------------------------------------------------------------------------------


def test_coordinator_assigns_and_one_server_runs_each_request():
    c = FakeCluster(3)
    outcomes = c.submit_all("echo", [{"n": i} for i in range(20)])
    c.run_until_answered(outcomes)
    got = results(outcomes)
    assert [r["args"]["n"] for r in got] == list(range(20))
    assert len(c.runs) == 20 and c.ran_once_each()
    # Only the coordinator assigned; every server recorded the reply.
    assert c.routers[1].counters["assigned"] == 20
    assert c.routers[2].counters["assigned"] == c.routers[3].counters["assigned"] == 0
    c.net.run(0.5)
    for router in c.routers.values():
        assert router.status()["done_cached"] == 20 and router.status()["pending"] == 0


def test_assigns_to_best_priority_when_idle():
    c = FakeCluster(3)
    c.loads = {1: 0.9, 2: 0.1, 3: 0.5}
    outcomes = c.submit_all("echo", [{}])
    c.run_until_answered(outcomes)
    assert results(outcomes)[0]["server"] == 2


def test_burst_spreads_over_servers_by_outstanding_assignments():
    c = FakeCluster(3)
    c.loads = {1: 0.0, 2: 0.05, 3: 0.1}  # server 1 best, but not by enough to take the whole burst
    outcomes = c.submit_all("slow", [{"seconds": 1.0}] * 30)
    c.run_until_answered(outcomes)
    per_server = {s: sum(1 for r in results(outcomes) if r["server"] == s) for s in c.ids}
    assert all(count >= 8 for count in per_server.values()), per_server
    assert c.ran_once_each()


def test_reassigns_when_the_assigned_server_dies():
    c = FakeCluster(3)
    c.loads = {1: 0.5, 2: 0.0, 3: 0.9}  # server 2 gets it
    outcomes = c.submit_all("slow", [{"seconds": 2.0}])
    c.net.run(0.3)
    assert c.runs and c.runs[0][0] == 2
    c.crash(2)
    c.net.run(1.0)
    c.detect(2)
    c.run_until_answered(outcomes)
    assert results(outcomes)[0]["server"] in (1, 3)
    assert c.routers[1].counters["reassigned"] == 1
    # It ran on the dead server and on exactly one live one.
    assert sorted(s for s, _ in c.runs)[0] == 1 or len(c.runs) == 2
    assert len([s for s, _ in c.runs if s != 2]) == 1


def test_new_coordinator_takes_over_unassigned_requests():
    c = FakeCluster(3)
    c.crash(1)  # the coordinator dies before the requests arrive: nobody assigns them
    outcomes = c.submit_all("echo", [{"n": i} for i in range(5)])
    c.net.run(1.0)
    assert not any(outcomes) and c.runs == []
    for sid in (2, 3):
        assert c.routers[sid].status()["pending"] == 5
    c.detect(1)
    c.elect(3)
    c.run_until_answered(outcomes, seconds=3.0)
    assert sorted(r["args"]["n"] for r in results(outcomes)) == list(range(5))
    assert c.ran_once_each() and all(s in (2, 3) for s, _ in c.runs)


def test_new_coordinator_reassigns_what_the_dead_coordinator_was_running():
    c = FakeCluster(3)
    c.loads = {1: 0.0, 2: 0.5, 3: 0.5}  # the coordinator runs it itself
    outcomes = c.submit_all("slow", [{"seconds": 2.0}])
    c.net.run(0.2)
    assert c.runs == [(1, c.runs[0][1])]
    # Servers 2 and 3 know who runs it: the assignment was broadcast.
    assert c.routers[2]._pending[c.runs[0][1]].assigned_to == 1
    c.crash(1)
    c.net.run(1.0)
    c.detect(1)
    c.elect(2)
    c.run_until_answered(outcomes, seconds=5.0)
    assert results(outcomes)[0]["server"] in (2, 3)
    assert len([s for s, _ in c.runs if s != 1]) == 1


def test_new_coordinator_keeps_a_live_assignee():
    """Taking over must not run twice what a live server is already running."""
    c = FakeCluster(3)
    c.loads = {1: 0.5, 2: 0.5, 3: 0.0}  # server 3 runs it
    outcomes = c.submit_all("slow", [{"seconds": 2.0}])
    c.net.run(0.2)
    c.crash(1)
    c.net.run(0.5)
    c.detect(1)
    c.elect(2)
    c.run_until_answered(outcomes, seconds=5.0)
    assert results(outcomes)[0]["server"] == 3
    assert [s for s, _ in c.runs] == [3]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loss_duplicates_and_reordering_still_run_each_request_once(seed):
    faults = Faults(loss=0.2, duplicate=0.3, latency=0.002, jitter=0.05)
    c = FakeCluster(3, seed=seed, faults=faults)
    outcomes = c.submit_all("echo", [{"n": i} for i in range(40)])
    c.run_until_answered(outcomes, seconds=20.0)
    got = results(outcomes)
    assert all(isinstance(r, dict) for r in got), [r for r in got if not isinstance(r, dict)]
    assert [r["args"]["n"] for r in got] == list(range(40))
    assert len(c.runs) == 40 and c.ran_once_each()
    assert c.net.stats.dropped > 0 and c.net.stats.duplicated > 0


class RawClient(DatagramProtocol):
    def __init__(self):
        self.replies: list[tuple[wire.Reply, Any]] = []
        self.challenges: list[tuple[bytes, Any]] = []
        self.cookies: dict[Any, str] = {}

    def datagramReceived(self, data, addr):
        answer = wire.decode_answer(data)
        if isinstance(answer, wire.CookieChallenge):
            self.challenges.append((data, addr))
            self.cookies[addr] = answer.cookie
        else:
            self.replies.append((answer, addr))


class CookieTransport:
    """Puts the cookie each server gave into every request written to it (other bytes pass as they are)."""

    def __init__(self, transport: Any, proto: RawClient) -> None:
        self.transport = transport
        self.proto = proto

    def write(self, data: bytes, addr: Any) -> None:
        try:
            obj = json.loads(data)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and obj.get("t") in ("req", "query") and addr in self.proto.cookies:
            obj["cookie"] = self.proto.cookies[addr]
            data = json.dumps(obj).encode()
        self.transport.write(data, addr)


def raw_client(c: FakeCluster, *, prove: bool = True, host: str = "10.9.9.8") -> tuple[RawClient, Any]:
    """A hand-driven client socket; with ``prove`` it first gets every server's cookie."""
    proto = RawClient()
    transport = c.net.listen(proto, (host, 0), node=CLIENT_NODE)
    if not prove:
        return proto, transport
    for sid in c.ids:
        transport.write(wire.Request(wire.new_request_id(), "echo", {}).encode(), client_addr(sid))
    c.net.run(0.1)
    assert len(proto.cookies) == len(c.ids) and not proto.replies and not c.runs
    proto.challenges.clear()
    return proto, CookieTransport(transport, proto)


def test_retry_after_reply_gets_the_same_reply_from_every_server_and_runs_once():
    c = FakeCluster(3)
    proto, transport = raw_client(c)
    request = wire.Request(wire.new_request_id(), "echo", {"x": 1})
    for sid in c.ids:
        transport.write(request.encode(), client_addr(sid))
    c.net.run(0.5)
    assert len(proto.replies) == 1
    first = proto.replies[0][0]
    proto.replies.clear()
    for _ in range(3):  # a client that did not hear, retrying, plus a duplicate in the network
        for sid in c.ids:
            transport.write(request.encode(), client_addr(sid))
    c.net.run(0.5)
    assert len(proto.replies) == 9
    assert {r.body == first.body for r, _ in proto.replies} == {True}
    assert len(c.runs) == 1


def test_errors_from_handlers_reach_the_client():
    c = FakeCluster(3)
    outcomes = c.submit_all("refuse", [{}])
    outcomes += c.submit_all("broken", [{}])
    outcomes += c.submit_all("no_such_op", [{}])
    c.run_until_answered(outcomes)
    codes = [box[0].value.code for box in outcomes]
    assert codes == ["nope", "internal_error", "unknown_op"]
    assert all(box[0].check(RequestFailed) for box in outcomes)


@pytest.mark.parametrize(
    "datagram, code, has_id",
    [
        (b"\xff\xfe not json", None, False),
        (b"[1, 2]", None, False),
        (json.dumps({"v": 1, "t": "rep", "id": "a" * 32, "server": 1, "body": {}}).encode(), None, False),
        (json.dumps({"v": 1, "t": "cookie", "cookie": "1.x"}).encode(), None, False),
        (json.dumps({"v": 1, "t": ["req"], "id": "a" * 32, "op": "echo", "args": {}}).encode(), None, False),
        (
            json.dumps({"v": 1, "t": "req", "id": "zz", "op": "echo", "args": {}}).encode(),
            "bad_request",
            False,
        ),
        (
            json.dumps({"v": 9, "t": "req", "id": "a" * 32, "op": "echo", "args": {}}).encode(),
            "bad_version",
            True,
        ),
        (
            json.dumps({"v": 1, "t": "req", "id": "a" * 32, "op": "echo", "args": []}).encode(),
            "bad_request",
            True,
        ),
        (
            json.dumps({"v": 1, "t": "req", "id": "a" * 32, "op": "Bad Op", "args": {}}).encode(),
            "bad_request",
            True,
        ),
        (
            json.dumps({"v": 1, "t": "req", "id": "a" * 32, "op": "echo", "args": {}, "x": 1}).encode(),
            "bad_request",
            True,
        ),
        (b"{" * 100_000, None, False),
    ],
)
def test_bad_datagrams_get_an_error_reply_or_none_and_the_listener_survives(datagram, code, has_id):
    """A proven source gets an error for a malformed request; what is not a request gets nothing."""
    c = FakeCluster(3)
    proto, transport = raw_client(c)
    transport.write(datagram, client_addr(2))
    c.net.run(0.1)
    if code is None:
        assert proto.replies == [] and proto.challenges == []
    else:
        assert len(proto.replies) == 1
        reply = proto.replies[0][0]
        assert not reply.ok and reply.body["error"]["code"] == code
        assert (reply.request_id == "a" * 32) == has_id
    outcomes = c.submit_all("echo", [{}])
    c.run_until_answered(outcomes)
    assert isinstance(results(outcomes)[0], dict)


def test_a_paused_assignee_does_not_run_an_assignment_queued_while_it_was_stopped():
    c = FakeCluster(3)
    c.loads = {1: 0.5, 2: 0.0, 3: 0.9}  # server 2 would get it
    c.net.pause(label(2))
    c.paused.add(2)
    outcomes = c.submit_all("echo", [{}])
    c.net.run(1.2)
    c.detect(2)  # server 2 is suspected: the coordinator gives the work to someone else
    c.run_until_answered(outcomes, seconds=2.0)
    assert results(outcomes)[0]["server"] in (1, 3)
    c.paused.discard(2)
    c.alive.add(2)
    c.net.resume(label(2))  # its queue holds the old request and the old assignment
    c.net.run(2.0)
    assert [s for s, _ in c.runs if s == 2] == []
    assert c.routers[2].counters["stall_dropped_assignments"] >= 1
    assert c.ran_once_each()


def test_an_assignment_from_an_older_term_is_refused():
    c = FakeCluster(3)
    c.elect(2)
    rid = wire.new_request_id()
    c.nodes[3].handlers["rt.assign"](
        1, {"id": rid, "op": "echo", "args": {}, "client": ["10.9.9.9", 1], "to": 3, "term": 1, "attempt": 1}
    )
    c.net.run(0.2)
    assert c.runs == [] and c.routers[3].counters["stale_assignments"] == 1


def test_malformed_peer_messages_are_counted_not_raised():
    c = FakeCluster(3)
    handler = c.nodes[2].handlers["rt.assign"]
    for body in (
        {},
        {"id": 5},
        {"id": "a" * 32, "op": "echo", "args": {}, "client": "x", "to": 2, "term": 1},
    ):
        handler(1, body)
    c.nodes[2].handlers["rt.done"](1, {"id": "a" * 32, "body": {"ok": "yes"}, "by": 1})
    assert c.routers[2].counters["bad_peer_messages"] == 4


def test_tables_are_bounded_and_the_coordinator_refuses_when_overloaded():
    settings = RouterSettings(max_pending=5, max_done=8, done_ttl=5.0)
    c = FakeCluster(3, settings=settings)
    outcomes = c.submit_all("slow", [{"seconds": 1.0}] * 12)
    c.net.run(0.1)
    assert all(r.status()["pending"] <= 5 for r in c.routers.values())
    c.run_until_answered(outcomes)
    got = results(outcomes)
    refused = [r for r in got if not isinstance(r, dict)]
    assert len(refused) == 7 and all(f.value.code == "overloaded" for f in refused)
    assert len(c.runs) == 5
    assert all(r.status()["done_cached"] <= 8 for r in c.routers.values())
    c.net.run(6.0)
    assert all(r.status()["done_cached"] == 0 for r in c.routers.values())


def test_query_is_answered_by_the_server_it_is_sent_to():
    c = FakeCluster(3)
    box: list[Any] = []
    c.client.query(client_addr(3), "status").addBoth(box.append)
    bad: list[Any] = []
    c.client.query(client_addr(3), "echo").addBoth(bad.append)
    c.net.run(0.5, until=lambda: box and bad)
    assert box[0]["server"] == 3 and box[0]["coordinator"] == 1 and box[0]["members"] == [1, 2, 3]
    assert bad[0].check(RequestFailed) and bad[0].value.code == "not_a_query"


def test_client_gives_up_with_cloud_unreachable_when_every_server_is_down():
    c = FakeCluster(3)
    for sid in c.ids:
        c.crash(sid)
    box: list[Any] = []
    c.client.submit("echo", {}, timeout=3.0).addBoth(box.append)
    c.net.run(4.0, until=lambda: box)
    assert box and box[0].check(CloudUnreachable)
    assert "echo" in str(box[0].value)
    # 3 s with backoff 0.25, 0.5, 1, 1: five rounds to three servers, not a flood.
    assert c.client.counters["datagrams_sent"] <= 6 * 3


def test_stop_fails_outstanding_requests():
    c = FakeCluster(3)
    c.crash(1)
    box: list[Any] = []
    c.client.submit("echo", {}).addBoth(box.append)
    d = c.client.stop()
    assert box[0].check(CloudUnreachable)
    assert isinstance(d, defer.Deferred)


def test_a_request_overtaken_by_the_executors_done_is_not_answered_twice():
    c = FakeCluster(3)
    c.loads = {1: 0.0, 2: 0.5, 3: 0.5}
    proto, transport = raw_client(c)
    request = wire.Request(wire.new_request_id(), "echo", {})
    transport.write(request.encode(), client_addr(1))
    c.net.run(0.5)
    assert len(proto.replies) == 1  # from the executor, server 1
    transport.write(request.encode(), client_addr(2))  # first copy, late: 2 knows the reply
    c.net.run(0.5)
    assert len(proto.replies) == 1 and c.routers[2].counters["request_after_done"] == 1
    transport.write(request.encode(), client_addr(2))  # a retry: answered from the cache
    c.net.run(0.5)
    assert len(proto.replies) == 2 and proto.replies[1][0].body == proto.replies[0][0].body
    assert proto.replies[1][1] == client_addr(2) and len(c.runs) == 1


def test_gives_up_with_unavailable_after_max_attempts():
    c = FakeCluster(3, settings=RouterSettings(max_attempts=1))
    c.loads = {1: 0.5, 2: 0.0, 3: 0.9}
    outcomes = c.submit_all("slow", [{"seconds": 5.0}])
    c.net.run(0.3)
    c.crash(2)
    c.detect(2)
    c.run_until_answered(outcomes, seconds=2.0)
    failure = results(outcomes)[0]
    assert failure.check(RequestFailed) and failure.value.code == "unavailable"
    assert c.routers[1].counters["gave_up"] == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
peer_bodies = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["a" * 32, "zz", 5]) | json_values,
        "op": st.sampled_from(["echo", "Bad", ""]) | json_values,
        "args": json_values,
        "client": st.sampled_from([["10.9.9.9", 1], ["x"], "x"]) | json_values,
        "to": st.sampled_from([1, 2, 3, -1]) | json_values,
        "term": st.sampled_from([0, 1, 2]) | json_values,
        "attempt": json_values,
        "force": st.booleans() | json_values,
        "body": st.sampled_from([{"ok": True, "result": {}}, {"ok": False}]) | json_values,
        "by": st.sampled_from([1, None, "x"]) | json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["rt.assign", "rt.done", "rt.busy"]), peer_bodies), max_size=6))
def test_any_peer_message_body_is_handled_without_raising(messages):
    c = FakeCluster(3)
    for kind, body in messages:
        c.nodes[2].handlers[kind](1, body)
    c.net.run(0.3)
    outcomes = c.submit_all("echo", [{}])
    c.run_until_answered(outcomes)
    assert isinstance(results(outcomes)[0], dict)


def test_a_peer_that_missed_the_assignment_learns_it_before_taking_over():
    c = FakeCluster(3)
    c.loads = {1: 0.5, 2: 0.0, 3: 0.5}  # server 2 runs it
    dropped: list[bytes] = []

    def drop_first_assign_to_3(src, dst, data):
        if dst == cluster_addr(3) and b"rt.assign" in data and not dropped:
            dropped.append(data)
            return True
        return False

    c.net.filters.append(drop_first_assign_to_3)
    outcomes = c.submit_all("slow", [{"seconds": 3.0}])
    c.net.run(0.2)
    rid = c.runs[0][1]
    assert dropped and c.routers[3]._pending[rid].assigned_to is None
    c.net.run(0.6)  # the coordinator's re-broadcast
    assert c.routers[3]._pending[rid].assigned_to == 2
    c.crash(1)
    c.detect(1)
    c.elect(3)
    c.run_until_answered(outcomes, seconds=5.0)
    assert results(outcomes)[0]["server"] == 2 and [s for s, _ in c.runs] == [2]
