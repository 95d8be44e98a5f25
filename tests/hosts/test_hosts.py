"""The cloud across real hosts: 3 server hosts (each a server and a Galera node), 2 client hosts.

One deployment for the module (tests run in file order; each leaves the cloud whole again):
the whole story between two users on different hosts; a Galera node killed with kill -9 in
the middle of a recorded workload; a partition (the servers' hosts split, then one host cut
off entirely) with the majority serving, the minority refusing without writing and catching
up by IST after the heal; and a Jepsen-style history under random partitions and kills.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from cloudp2p.directory.schema import LATEST
from cloudp2p.testing import history, workload
from cloudp2p.testing.hosts import submit_blocking

PASSWORD = "hosts-password-1"


def _image(path: str, seed: int) -> str:
    arr = np.random.default_rng(seed).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    with open(path, "wb") as f:
        f.write(out.getvalue())
    return path


def _ok(client, *args, **kwargs):
    result = client.run(*args, **kwargs)
    assert result.ok, f"{client.name} {args}: exit {result.code}\n{result.stdout}\n{result.stderr}"
    return result.result


def _run_workload(cloud, name, *, host=0, servers=None, wait=True, **options):
    out = os.path.join(cloud.workdir, f"{name}.jsonl")
    target = servers or cloud.client_list
    process = workload.spawn(cloud.client_hosts[host].command, target, out, prefix=name, **options)
    if not wait:
        return process, out
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1]), out


def _lines(path):
    try:
        with open(path, encoding="utf-8") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def _check(cloud, paths, sid=None):
    report = history.check(history.load(paths), history.read_state(lambda q: cloud.sql(q, sid=sid)))
    return report


def _wait_synced_everywhere(cloud, timeout=90.0):
    for node in cloud.db.nodes:
        node.wait_synced(timeout, size=len(cloud.db.nodes))
    # wait until every node applied the same last write set
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        committed = {n.status().get("wsrep_last_committed") for n in cloud.db.nodes}
        if len(committed) == 1:
            return
        time.sleep(0.2)
    raise AssertionError(f"nodes did not converge on one last committed write set: {committed}")


def _rows_per_node(cloud):
    queries = (
        "SELECT id, username_key FROM users ORDER BY id",
        "SELECT id, owner_id FROM images ORDER BY id",
        "SELECT id, to_user, body FROM messages ORDER BY id",
    )
    return {f"g{sid}": [cloud.sql(q, sid=sid) for q in queries] for sid in cloud.ids}


def test_the_whole_story_across_hosts(cloud):
    alice = cloud.client("alice", host=0)
    bob = cloud.client("bob", host=1)
    for who in (alice, bob):
        _ok(who, "register", who.name, password=PASSWORD)
        _ok(who, "login", password=PASSWORD)
    photo = _image(os.path.join(cloud.workdir, "photo.png"), 7)
    enc = _ok(alice, "encrypt", photo)
    _ok(alice, "publish", enc["image_id"])
    assert {"alice", "bob"} <= {u["username"] for u in _ok(bob, "users")["users"]}
    presence = dict(cloud.sql("SELECT u.username, p.host FROM presence p JOIN users u ON u.id = p.user_id"))
    assert presence == {"alice": cloud.client_hosts[0].ip, "bob": cloud.client_hosts[1].ip}  # their own hosts
    req = _ok(bob, "request", "alice", enc["name"], "--views", "2")
    assert req["delivery"] == "peer"  # straight from bob's host to alice's
    assert _ok(alice, "accept", req["request_id"])["delivered"] is True
    assert _ok(bob, "view", enc["image_id"])["views_left"] == 1
    assert _ok(bob, "view", enc["image_id"])["views_left"] == 0
    assert _ok(bob, "view", enc["image_id"])["shown"] == "cover"
    # bob offline: alice's revocation is queued in the replicated directory and applied at sign-in
    _ok(bob, "logout")
    assert _ok(alice, "set-views", "bob", enc["image_id"], "5")["delivery"] == "queued"
    _ok(bob, "login", password=PASSWORD)
    assert _ok(bob, "view", enc["image_id"])["views_left"] == 2
    for sid in cloud.ids:  # every server's own node has the users
        assert {"alice", "bob"} <= {r[0] for r in cloud.sql("SELECT username_key FROM users", sid=sid)}
    # three servers started together on three nodes: the schema was migrated by exactly one
    line = f"schema version 0 -> {LATEST}"
    migrated = [sid for sid, server in cloud.servers.items() if line in server.log_text()]
    assert len(migrated) == 1, migrated


def test_db_node_killed_mid_stream_every_request_once(cloud):
    coordinator = cloud.wait_converged()
    victim = coordinator  # the coordinator's own node: its server must move to another node
    process, out = _run_workload(cloud, "kill", users=6, ops=360, wait=False)
    deadline = time.monotonic() + 60
    while _lines(out) < 150 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    killed_at = time.time()
    cloud.kill_db(victim)
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    counts = json.loads(stdout.strip().splitlines()[-1])
    assert counts["info"] == 0, counts  # no request with an unknown outcome
    report = _check(cloud, [out], sid=next(s for s in cloud.ids if s != victim))
    assert report.valid, dict(report.violations)
    assert report.failed == 0 and report.unknown == 0, report.lines()
    # the victim's server went on running directory requests after its node died
    runs = cloud.query(victim, "recent_runs")["runs"]
    assert any(started > killed_at + 0.5 and op != "ping" for _, op, started in runs), runs[-5:]
    cloud.restart_db(victim)  # rejoins by IST
    _wait_synced_everywhere(cloud)
    assert "IST received" in cloud.db_node(victim).log_text()
    report = _check(cloud, [out], sid=victim)  # the restarted node has every acknowledged write
    assert report.valid, dict(report.violations)


def test_partition_majority_serves_minority_refuses_heal_catches_up(cloud):
    cloud.wait_converged()
    minority = cloud.ids[-1]
    majority = [s for s in cloud.ids if s != minority]
    # 1. the servers' hosts split; the client hosts still reach every server
    cloud.split(majority, [minority])
    try:
        cloud.db_node(minority).wait_state(lambda s: s.get("wsrep_cluster_status") == "non-Primary", 30)
        cloud.wait_converged(20, members=set(majority))
        counts, during = _run_workload(cloud, "split", host=1, users=4, ops=80)
        assert counts == {"ok": counts["ok"], "fail": counts["fail"], "info": 0}, counts
        report = _check(cloud, [during], sid=majority[0])
        assert report.valid and report.failed == 0, (report.lines(), dict(report.violations))
        # a client that reaches only the minority's server gets a clear error, and nothing is written
        counts, alone = _run_workload(
            cloud, "alone", host=0, servers=[cloud.client_address(minority)], users=1, ops=1, timeout=12
        )
        events = history.load([alone])
        assert [e.get("error") for e in events if e["type"] != "invoke"] == ["directory_unavailable"]
        runs = cloud.query(minority, "recent_runs")["runs"]
        assert any(op == "register" for _, op, _ in runs)  # it ran it, and refused
    finally:
        cloud.heal_all()
    # 2. after the heal the minority's node catches up by IST and its server serves again
    _wait_synced_everywhere(cloud)
    assert "IST received" in cloud.db_node(minority).log_text()
    cloud.wait_converged(20)
    assert cloud.sql("SELECT COUNT(*) FROM users WHERE username_key = 'alone0'", sid=minority) == [(0,)]
    report = _check(cloud, [during], sid=minority)
    assert report.valid, dict(report.violations)
    # its server runs requests on its own node again: with the two others paused it is alone
    # (a request that reaches only a follower waits for the coordinator, so it must coordinate)
    for sid in majority:
        cloud.pause_server(sid)
    try:
        cloud.wait_converged(20, members={minority})
        counts, after = _run_workload(
            cloud, "rejoined", host=0, servers=[cloud.client_address(minority)], users=2, ops=20
        )
    finally:
        for sid in majority:
            cloud.resume_server(sid)
    report = _check(cloud, [after], sid=minority)
    assert report.valid and report.failed == 0 and report.unknown == 0, report.lines()
    cloud.wait_converged(20)
    # 3. one host cut off entirely (its server and node): the others go on
    cloud.isolate(minority)
    try:
        counts, cut = _run_workload(cloud, "cut", host=1, users=3, ops=45)
        assert counts["info"] == 0, counts
    finally:
        cloud.heal(minority)
    _wait_synced_everywhere(cloud)
    cloud.wait_converged(20)
    assert history.check(history.load([cut]), history.read_state(lambda q: cloud.sql(q, sid=minority))).valid


def test_requests_through_a_lossy_slow_relay_still_succeed(cloud):
    """The userspace relay (there is no netem here) delays and drops datagrams both ways."""
    relay_host = cloud.net.hosts.get("relay") or cloud.net.add_host("relay")
    fronts = [(relay_host.ip, 7200 + i) for i in range(len(cloud.ids))]
    routes = []
    for front, sid in zip(fronts, cloud.ids, strict=True):
        routes += ["--route", "%s:%d=%s:%d" % (*front, *cloud.client_address(sid))]
    argv = [sys.executable, "-m", "cloudp2p.testing.relay", *routes, "--delay", "0.05", "--loss", "0.2",
            "--max-seconds", "60"]  # fmt: skip
    relay = subprocess.Popen(relay_host.command(argv), stdout=subprocess.PIPE, text=True)
    assert "relay ready" in relay.stdout.readline()
    try:
        probe = cloud.client_hosts[0]
        direct = []
        for _ in range(5):
            t = time.perf_counter()
            cloud.in_host(probe, submit_blocking, cloud.client_list, "ping", {})
            direct.append(time.perf_counter() - t)
        relayed = []
        for _ in range(10):
            t = time.perf_counter()
            cloud.in_host(probe, submit_blocking, fronts, "ping", {}, 10.0)
            relayed.append(time.perf_counter() - t)
        assert min(relayed) >= 0.1  # 50 ms each way at least
        assert max(direct) < 0.1
    finally:
        relay.terminate()
    counts = json.loads(relay.communicate(timeout=10)[0].strip().splitlines()[-1])
    assert counts["dropped_loss"] > 0 and counts["returned"] >= 10


def test_history_with_random_partitions_and_kills(cloud):
    """Two recorded workloads from two client hosts while faults strike at random; then every
    invariant of cloudp2p.testing.history is checked, and every node holds the same rows."""
    cloud.wait_converged()
    rng = random.Random(int(os.environ.get("HOSTS_SEED", "15")))
    runs = [
        _run_workload(
            cloud, f"h{i}", host=i, users=6, ops=450, pause=0.5, seed=rng.randint(1, 10**6), wait=False
        )
        for i in (0, 1)
    ]
    faults = ["isolate", "kill_db", "kill_server", "split"]
    rng.shuffle(faults)
    applied = []
    for fault in faults:
        if all(p.poll() is not None for p, _ in runs):
            break  # the workloads are over: a fault now would test nothing
        sid = rng.choice(cloud.ids)
        time.sleep(rng.uniform(0.5, 1.5))
        cloud.strike(fault, sid, rng.uniform(1, 3))  # one at a time, each healed before the next
        applied.append((fault, sid))
    paths = []
    for process, out in runs:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        paths.append(out)
    _wait_synced_everywhere(cloud)
    cloud.wait_converged(30)
    report = _check(cloud, paths)
    history.compare_nodes(_rows_per_node(cloud), report)
    print("\nfaults:", applied, "\n" + "\n".join(report.lines()))
    assert len(applied) == len(faults), "the workloads ended before every fault struck"
    assert report.valid, dict(report.violations)
    assert report.ok > 500
