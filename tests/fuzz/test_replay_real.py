"""Replayed and forged server-to-server datagrams against a real 3-server cloud.

Real traffic is recorded by relays on every link (bench/fuzz_replay.py); the
coordinator is killed (a new term), restarted (a new incarnation), then every
recorded datagram is replayed to every server and forged COORDINATOR claims of
a far higher term are sent under every member's id. No server may change its
coordinator or term, and the servers must count the datagrams as dropped.
"""

from __future__ import annotations

import pytest

from bench.fuzz_replay import replay_scenario


@pytest.mark.timeout(180)
def test_real_replayed_and_forged_cluster_traffic_changes_no_coordinator_or_term(tmp_path):
    out = replay_scenario(str(tmp_path / "cloud"), seed=11)
    assert out["term_now"] > out["term_first"]  # the recording spans an earlier term
    assert out["captured_by_type"].get("heartbeat", 0) > 10
    assert out["captured_by_type"].get("coordinator", 0) >= 1
    assert out["views_after"] == out["views_before"], out
    assert out["dropped"].get("forged", 0) >= out["forged"], out  # every forged datagram refused
    assert out["dropped"].get("replay", 0) > 0 and out["dropped"].get("misdirected", 0) > 0, out
    # The restarted server refuses what its previous life was sent (it echoes an incarnation that is over).
    assert out["captured_to_old_incarnation"] > 0 and out["dropped"].get("unfresh", 0) > 0, out
    assert out["accepted"] == 0, out
    assert out["ok"], out["problems"]
