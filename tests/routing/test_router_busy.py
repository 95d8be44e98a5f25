"""A server whose work queue is long answers ``Busy``: the router gives the request to another server.

Same harness as test_router.py (memory network, oracle membership). The
``picky`` op refuses with ``Busy`` on the servers the test names, when the
router allows it (``ctx.may_refuse``), and records every run.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task

from cloudp2p.ops import Busy
from cloudp2p.routing.router import BUSY

from .test_router import FakeCluster, cluster_addr, results


class BusyCluster(FakeCluster):
    def __init__(self, *args: Any, busy: set[int] = frozenset(), **kwargs: Any) -> None:
        self.busy = set(busy)
        self.picky_runs: list[tuple[int, bool]] = []  # (server, may_refuse) of every run
        super().__init__(*args, **kwargs)

    def _ops(self, sid: int, clock: task.Clock) -> dict[str, Any]:
        ops = super()._ops(sid, clock)

        async def picky(ctx, args):
            self.picky_runs.append((sid, ctx.may_refuse))
            if ctx.may_refuse and sid in self.busy:
                raise Busy(f"server {sid} has a long queue")
            self.runs.append((sid, ctx.request_id))
            await task.deferLater(clock, args.get("seconds", 0.0), lambda: None)
            return {"server": sid, "forced": not ctx.may_refuse}

        return {**ops, "picky": picky}


def test_a_busy_server_hands_the_request_to_the_next_best_and_the_client_gets_one_reply():
    c = BusyCluster(3, busy={2})
    c.loads = {1: 0.5, 2: 0.0, 3: 0.9}  # server 2 is the first choice
    outcomes = c.submit_all("picky", [{}])
    c.run_until_answered(outcomes)
    reply = results(outcomes)[0]
    assert reply == {"server": 1, "forced": False}
    assert c.picky_runs == [(2, True), (1, True)] and c.ran_once_each()
    assert c.routers[2].counters["busy_refused"] == 1
    assert c.routers[1].counters["busy_reassigned"] == 1
    c.net.run(0.5)
    for router in c.routers.values():  # nobody cached a "busy" reply; everyone has the real one
        assert router.status()["pending"] == 0 and router.status()["done_cached"] == 1


def test_when_every_live_server_is_busy_the_best_one_must_queue_it():
    c = BusyCluster(3, busy={1, 2, 3})
    c.loads = {1: 0.5, 2: 0.0, 3: 0.9}
    outcomes = c.submit_all("picky", [{}])
    c.run_until_answered(outcomes)
    assert results(outcomes)[0] == {"server": 2, "forced": True}
    # Each server refused once, in priority order, then the best was forced: bounded, no loop.
    assert c.picky_runs == [(2, True), (1, True), (3, True), (2, False)]
    assert c.routers[1].counters["busy_forced"] == 1
    assert c.routers[1].counters["gave_up"] == 0


def test_busy_bounces_are_not_failed_attempts():
    from cloudp2p.routing.router import RouterSettings

    c = BusyCluster(3, busy={1, 2}, settings=RouterSettings(max_attempts=1))
    c.loads = {1: 0.0, 2: 0.1, 3: 0.9}
    outcomes = c.submit_all("picky", [{}])
    c.run_until_answered(outcomes)
    assert results(outcomes)[0] == {"server": 3, "forced": False}


def test_a_lost_busy_message_is_repaired_by_the_coordinators_resend():
    c = BusyCluster(3, busy={2})
    c.loads = {1: 0.5, 2: 0.0, 3: 0.9}
    dropped: list[bytes] = []

    def drop_first_busy(src, dst, data):
        if dst == cluster_addr(1) and BUSY.encode() in data and not dropped:
            dropped.append(data)
            return True
        return False

    c.net.filters.append(drop_first_busy)
    outcomes = c.submit_all("picky", [{}])
    c.run_until_answered(outcomes)
    assert dropped and results(outcomes)[0] == {"server": 1, "forced": False}
    assert c.picky_runs[:2] == [(2, True), (2, True)]  # asked again after resend_after, refused again


def test_the_forced_assignment_is_known_to_every_peer_and_survives_a_new_coordinator():
    c = BusyCluster(3, busy={1, 2, 3})
    c.loads = {1: 0.5, 2: 0.0, 3: 0.9}
    outcomes = c.submit_all("picky", [{"seconds": 3.0}])
    c.net.run(0.3)
    assert c.picky_runs == [(2, True), (1, True), (3, True), (2, False)]
    rid = c.runs[0][1]
    assert all(c.routers[sid]._pending[rid].forced for sid in (1, 2, 3))
    c.crash(1)
    c.detect(1)
    c.elect(3)  # the new coordinator confirms the assignment under its term, still forced
    c.run_until_answered(outcomes, seconds=6.0)
    assert results(outcomes)[0] == {"server": 2, "forced": True}
    assert [s for s, _ in c.runs] == [2]


def test_a_coordinator_that_is_busy_itself_reassigns_at_once():
    c = BusyCluster(3, busy={1})
    c.loads = {1: 0.0, 2: 0.5, 3: 0.9}  # the coordinator is the first choice
    outcomes = c.submit_all("picky", [{}])
    c.run_until_answered(outcomes)
    assert results(outcomes)[0] == {"server": 2, "forced": False}
    assert c.picky_runs == [(1, True), (2, True)]


def test_malformed_busy_messages_are_counted():
    c = BusyCluster(3)
    c.nodes[1].handlers[BUSY](2, {"id": 5})
    c.nodes[1].handlers[BUSY](2, {"id": "a" * 32})  # unknown request: ignored
    assert c.routers[1].counters["bad_peer_messages"] == 1
