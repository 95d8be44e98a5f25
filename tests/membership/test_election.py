"""Election and failover on the memory network.

Every test runs through ``Cluster.run``, which asserts after each 5 ms step
that no term ever had two coordinators (claims and ``is_coordinator`` of every
node, over the whole run), and ends with ``Cluster.settle``, which asserts
that the connected nodes agree on one coordinator within a bounded time.
Loads are fixed per server so that priorities are known: lower load first.
"""

import pytest

from cloudp2p.membership.election import State
from cloudp2p.membership.messages import Codec, Grant, Succeed
from cloudp2p.testing.memnet import Faults

from .sim import SECRET, Cluster, address, name

TIMEOUT = 1.0
# Detection takes failure_timeout after the last heartbeat; the claim follows within a few
# election timeouts even when one contacted server is dead.
FAILOVER_BOUND = TIMEOUT + 0.2 + 3 * 0.3


def ranked_loads(n):
    """Server 1 best, then 2, ..."""
    return {i: 0.1 * i for i in range(1, n + 1)}


def started(n, **kw):
    kw.setdefault("loads", ranked_loads(n))
    c = Cluster(n, **kw)
    c.start()
    assert c.settle(3.0) == (1, 1)
    for events in c.events.values():
        events.clear()
    return c


def test_the_invariant_checks_can_fail():
    c = started(3)
    c.nodes[3].election.state = State.LEADING  # a forged second coordinator of term 1
    c.nodes[3].election.term = 1
    with pytest.raises(AssertionError, match="term 1 has coordinators"):
        c.check()
    c.nodes[3].election.state = State.FOLLOWING
    c.claims.clear()
    c.nodes[3].election.coordinator = 2  # disagreement
    with pytest.raises(AssertionError, match="no agreement"):
        c.settle(0.01)


def test_cold_start_elects_the_lowest_load_then_lowest_id():
    c = Cluster(3, loads={1: 0.5, 2: 0.2, 3: 0.2})
    c.start()
    term, coordinator = c.settle(2.0)
    assert coordinator == 2  # 2 and 3 tie on load; the lower id wins
    assert term == 2  # the first term server 2 may claim (stride 4)
    assert c.events[2] == [("joining", 0), ("no_coordinator", 0), ("election_started", 0), ("claim", 2)]
    assert c.events[1][-1] == ("follow", 2, 2)
    assert c.nodes[2].status()["successors"] == [3, 1]


@pytest.mark.parametrize("n", [3, 5, 10])
def test_coordinator_crash_is_taken_over_by_the_first_successor(n):
    c = started(n)
    base = c.election_messages()
    c.crash(1)
    assert c.settle(FAILOVER_BOUND) == (2, 2)
    # Every survivor detected the crash at once; the successor claimed, the others contacted it.
    assert c.events[2] == [("suspect", 1), ("coordinator_failed", 1, 1), ("claim", 2)]
    for i in range(3, n + 1):
        assert c.events[i] == [
            ("suspect", 1), ("coordinator_failed", 1, 1), ("contact_successor", 2, 1), ("follow", 2, 2),
        ]
    assert c.election_messages() - base <= 2 * n - 3
    assert all(c.nodes[i].election.elections_started == 1 for i in c.live())  # only the cold start's


def test_non_coordinator_crash_changes_membership_only():
    c = started(3)
    c.crash(2)
    c.run(TIMEOUT + 0.5)
    assert c.settle(0.1) == (1, 1)
    assert c.events[1] == [("suspect", 2)]
    assert c.events[3] == [("suspect", 2)]
    assert c.nodes[1].live_members() == [1, 3]
    assert c.nodes[1].status()["successors"] == [3]
    c.run(0.5)
    assert c.nodes[3].election.successors == (3,)


def test_several_detectors_produce_one_claim():
    c = started(5)
    c.crash(1)
    c.settle(FAILOVER_BOUND)
    new_claims = [t for t, who in c.claims.items() if t > 1]
    assert len(new_claims) == 1
    assert sum(1 for i in c.live() for e in c.events[i] if e[0] == "contact_successor") == 3


def crash_on_receiving(c, victim, message_type):
    """Crash ``victim`` the moment a datagram of ``message_type`` is sent to it (it never handles it)."""
    codec = Codec(SECRET, c.ids)

    def filt(src, dst, data):
        if dst == address(victim) and victim not in c.down:
            if isinstance(codec.decode(data).message, message_type):
                c.crash(victim)
                return True
        return False

    c.net.filters.append(filt)


def test_contacted_successor_crashing_is_replaced_by_the_next():
    c = started(4)
    crash_on_receiving(c, 2, Succeed)
    c.nodes[2].detector.timeout = 10.0  # so that 2 does not detect 1's crash (and claim) itself
    c.nodes[2].detector.start()
    c.crash(1)
    assert c.settle(FAILOVER_BOUND + 0.5) == (3, 3)
    # 4 waited election_timeout for 2, then went on to 3; 3 had claimed on its own detection.
    assert c.events[4] == [
        ("suspect", 1), ("coordinator_failed", 1, 1), ("contact_successor", 2, 1),
        ("contact_successor", 3, 1), ("follow", 3, 3),
    ]
    assert c.events[3] == [
        ("suspect", 1), ("coordinator_failed", 1, 1), ("contact_successor", 2, 1), ("claim", 3),
    ]


def test_granted_node_crashing_is_replaced_by_the_next_best():
    # Cold start (no successor list, so Kordafshari's election): the best server, 1, starts late,
    # so 2 and 3 elect first and GRANT it; it dies on receiving the GRANT.
    c = Cluster(3, loads=ranked_loads(3))
    c.start(2, 3)
    c.run(0.3)
    c.start(1)
    crash_on_receiving(c, 1, Grant)
    term, coordinator = c.settle(2.5)
    assert coordinator == 2
    assert c.events[1] == [("joining", 0)]
    # 2 had only 1 above it: once 1 did not announce, it claimed. 3 granted 1, then 2.
    assert c.events[2] == [("joining", 0), ("no_coordinator", 0), ("election_started", 0), ("grant", 1, 0),
                           ("claim", 2)]
    assert c.events[3] == [("joining", 0), ("no_coordinator", 0), ("election_started", 0), ("grant", 1, 0),
                           ("grant", 2, 0), ("follow", 2, 2)]


def test_recovered_higher_priority_node_joins_without_an_election():
    c = started(3)
    c.crash(1)
    assert c.settle(FAILOVER_BOUND) == (2, 2)
    terms = dict(c.claims)
    node = c.restart(1)  # still the lowest load: the highest priority
    assert c.settle(0.5) == (2, 2)
    assert list(node.events) == [("joining", 0), ("follow", 2, 2)]
    c.run(3.0)
    assert c.settle(0.1) == (2, 2)
    assert dict(c.claims) == terms
    assert c.nodes[2].ranked_members()[0] == 1  # 1 is ranked first for the router, not elected


def test_restarted_coordinator_claims_a_new_term_instead_of_leading_blind():
    c = started(3)
    changes = []
    c.nodes[2].on_change(lambda: changes.append((c.nodes[2].term, c.nodes[2].coordinator_id)))
    c.crash(1)
    c.restart(1)  # back before the others noticed: they still follow "1 in term 1"
    assert c.settle(1.0) == (5, 1)  # 1 claims its next own term (stride 4) rather than lead term 1 blind
    assert c.events[1] == [("joining", 0), ("claim", 5)]
    assert c.events[2] == c.events[3] == [("follow", 5, 1)]
    assert changes == [(5, 1)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loss(seed):
    c = started(5, faults=Faults(loss=0.2), seed=seed)
    c.run(5.0)  # lossy heartbeats may cause false suspicions; the invariant must hold regardless
    c.settle(3.0)
    c.crash(c.agreement()[1])
    c.settle(FAILOVER_BOUND + 2.0)


def test_duplicates_change_nothing():
    clean, dup = started(4), started(4, faults=Faults(duplicate=0.5))
    for c in (clean, dup):
        c.crash(1)
        assert c.settle(FAILOVER_BOUND) == (2, 2)
    assert dict(dup.events) == dict(clean.events)
    assert sum(n.protocol.dropped["replay"] for n in dup.nodes.values()) > 10


@pytest.mark.parametrize("seed", [1, 2])
def test_reordering(seed):
    c = started(5, faults=Faults(latency=0.01, jitter=0.08), seed=seed)
    c.crash(1)
    assert c.settle(FAILOVER_BOUND + 0.2)[1] == 2
    assert sum(n.protocol.dropped["replay"] for n in c.nodes.values()) == 0


def test_paused_coordinator_resumes_as_a_follower():
    c = started(3)
    c.net.pause("s1")
    assert c.settle(FAILOVER_BOUND, {2, 3}) == (2, 2)
    c.run(2.0)
    c.net.resume("s1")
    assert not c.nodes[1].is_coordinator
    assert c.settle(0.5) == (2, 2)
    assert c.events[1] == [("stall",), ("step_down", 1), ("joining", 1), ("follow", 2, 2)]
    assert c.nodes[1].status()["counters"]["stalls"] == 1


def test_short_pause_changes_nothing():
    c = started(3)
    c.net.pause("s1")
    c.run(0.5)
    c.net.resume("s1")
    c.run(2.0)
    assert c.settle(0.1) == (1, 1)
    assert all(events == [] for events in c.events.values())


def test_paused_coordinator_not_replaced_resumes_leading():
    # Paused long enough to doubt itself, not long enough for the others to act.
    c = started(3)
    c.nodes[2].detector.timeout = c.nodes[3].detector.timeout = 5.0
    c.net.pause("s1")
    c.run(0.95)
    c.net.resume("s1")
    assert not c.nodes[1].is_coordinator
    assert c.nodes[1].state is State.JOINING
    assert c.settle(1.5) == (1, 1)
    assert c.events[1] == [("stall",), ("step_down", 1), ("joining", 1), ("resume", 1)]


def test_follower_pause_does_not_suspect_everyone():
    c = started(3)
    c.net.pause("s3")
    c.run(3.0)
    c.net.resume("s3")
    c.run(2.0)
    assert c.settle(0.1) == (1, 1)
    assert c.kinds(3, "suspect", "coordinator_failed", "claim") == []


def test_partition_then_heal():
    c = started(5)
    c.net.partition({name(1), name(2)}, {name(3), name(4), name(5)})
    minority, majority = {1, 2}, {3, 4, 5}
    assert c.settle(FAILOVER_BOUND, majority) == (3, 3)  # 3 was the best of its side
    assert c.settle(0.1, minority) == (1, 1)
    c.run(2.0)
    assert c.settle(0.1, minority) == (1, 1) and c.settle(0.1, majority) == (3, 3)
    c.net.heal()
    assert c.settle(0.5) == (3, 3)  # the higher term wins
    assert c.events[1][-3:] == [("step_down", 3), ("follow", 3, 3), ("alive", 3)] or (
        ("step_down", 3) in c.events[1]
    )


def test_isolated_node_rejoins():
    c = started(3)
    c.net.partition({name(1), name(2)}, {name(3)})
    c.run(3.0)
    assert c.settle(0.1, {1, 2}) == (1, 1)
    assert c.agreement({3}) == (3, 3)
    c.net.heal()
    assert c.settle(0.5) == (3, 3)


@pytest.mark.parametrize("seed", range(6))
def test_chaos(seed):
    """Random crashes, restarts, pauses, partitions and faults; invariants hold, and it heals."""
    import random

    rnd = random.Random(seed)
    n = 5
    c = Cluster(n, loads={i: rnd.random() for i in range(1, n + 1)}, seed=seed,
                faults=Faults(loss=0.05, duplicate=0.05, latency=0.005, jitter=0.02))
    c.start()
    c.settle(3.0)
    for _ in range(8):
        action = rnd.choice(["crash", "restart", "pause", "partition", "load"])
        target = rnd.randint(1, n)
        if action == "crash" and len(c.down) < n - 1 and target not in c.down:
            c.crash(target)
        elif action == "restart" and c.down:
            c.restart(sorted(c.down)[0])
        elif action == "pause" and target not in c.down:
            c.net.pause(name(target))
            c.run(rnd.uniform(0.2, 2.5))
            c.net.resume(name(target))
        elif action == "partition":
            cut = set(rnd.sample(range(1, n + 1), rnd.randint(1, 2)))
            c.net.partition({name(i) for i in cut}, {name(i) for i in range(1, n + 1) if i not in cut})
            c.run(rnd.uniform(0.5, 3.0))
            c.net.heal()
        else:
            c.loads[target] = rnd.random()
        c.run(rnd.uniform(0.1, 1.5))
    c.settle(4.0)


def test_any_message_in_a_newer_term_names_its_coordinator():
    """Only a term's owner can claim it, so an app message of term 2 from 2 means 2 leads."""
    c = started(3)
    codec = Codec(SECRET, c.ids)
    blocked = {"on": True}

    def only_app_to_3(src, dst, data):
        return blocked["on"] and dst == address(3) and codec.decode(data).message.TYPE != "app"

    c.net.filters.append(only_app_to_3)
    c.nodes[2].election._claim()  # as if 2 had been told to take over
    c.nodes[2].send_app(3, "assign", {"id": "r1"})
    c.run(0.05)
    assert c.events[3] == [("follow", 2, 2)]
    assert c.nodes[3].coordinator_id == 2 and c.nodes[1].coordinator_id == 2
    blocked["on"] = False
    assert c.settle(0.5) == (2, 2)
