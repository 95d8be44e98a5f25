"""The cloud across hosts (network namespaces, cloudp2p/testing/hosts.py): load with faults,
failover and election messages on a real network, directory latency on Galera vs one MariaDB.

    python -m bench.hosts [--parts load,failover,latency] [--requests 10000] [--users 50]
                          [--sizes 3,5,7] [--trials 10] [--samples 200] [--seed 1] [--keep]

``load``: 3 server hosts (server + Galera node each), 2 client hosts running the recorded
workload (cloudp2p/testing/workload.py; ``users`` split between them, ``requests`` in all,
each user pausing up to ``pause`` seconds between requests so that the run outlasts the faults)
while at least 6 faults strike in turn: 2 partitions (a host cut off; the servers' hosts
split), 2 server kills (kill -9, restart), 2 Galera node kills (kill -9, restart: IST). Then
the history is checked (cloudp2p/testing/history.py) and the nodes compared.

``failover``: N server hosts (N in ``sizes``); each trial kills the coordinator with kill -9
and at that instant sends a ping from a client host; the failover time is until its reply.
Election messages (ELECTION, ANSWER, GRANT, SUCCEED, COORDINATOR) sent by the survivors are
read from their status counters, real datagrams on the veth links.

``latency``: the same 3 server hosts with a Galera cluster, then with one plain MariaDB on its
own host (same network, same run): p50/p95 of sign_in, heartbeat and list_online from a
client host, one request at a time.

Prints ``name: value`` lines. Needs root (and MariaDB with galera-4 and rsync).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from cloudp2p.directory.token_seal import ReplyKey
from cloudp2p.membership.messages import ELECTION_TYPES
from cloudp2p.testing import history, workload
from cloudp2p.testing.hosts import HostsCloud, submit_blocking, unavailable_reason


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else float("nan")


def emit(name: str, value: Any) -> None:
    print(f"{name}: {value}", flush=True)


# -- load with faults ------------------------------------------------------------------------------


FAULTS = ("isolate", "kill_server", "kill_db", "split", "kill_server", "kill_db")


def part_load(workdir: str, requests: int, users: int, seed: int, pause: float) -> None:
    rng = random.Random(seed)
    with HostsCloud(os.path.join(workdir, "load"), servers=3, clients=2) as cloud:
        try:
            _load_with_faults(cloud, requests, users, seed, pause, rng)
        finally:
            cloud.keep_logs(cloud.workdir)  # the database logs, before their folder goes


def _load_with_faults(
    cloud: HostsCloud, requests: int, users: int, seed: int, pause: float, rng: random.Random
) -> None:
    cloud.start()
    started = time.monotonic()
    runs = []
    for i in (0, 1):
        out = os.path.join(cloud.workdir, f"load{i}.jsonl")
        process = workload.spawn(
            cloud.client_hosts[i].command, cloud.client_list, out, prefix=f"l{i}u",
            users=users // 2 + (users % 2 if i == 0 else 0), ops=requests // 2, seed=seed + i, timeout=20,
            max_seconds=1500, pause=pause,
        )  # fmt: skip
        runs.append((process, out))
    faults = list(FAULTS)
    rng.shuffle(faults)
    applied = []
    for fault in faults:
        time.sleep(rng.uniform(3, 6))
        if all(p.poll() is not None for p, _ in runs):
            break
        sid = rng.choice(cloud.ids)
        cloud.strike(fault, sid, rng.uniform(1, 4))  # one at a time, each healed before the next
        applied.append(f"{fault}:{sid}")
        print(f"# {time.monotonic() - started:6.1f} s {fault} server host {sid}", flush=True)
    for process, _ in runs:
        _, stderr = process.communicate(timeout=1800)
        if process.returncode != 0:
            print(stderr, file=sys.stderr)
    elapsed = time.monotonic() - started
    for node in cloud.db.nodes:
        node.wait_synced(120, size=3)
    time.sleep(1.0)
    report = history.check(history.load([out for _, out in runs]), history.read_state(cloud.sql))
    queries = (
        "SELECT id, username_key FROM users ORDER BY id",
        "SELECT id, owner_id FROM images ORDER BY id",
        "SELECT id, to_user, body FROM messages ORDER BY id",
    )
    history.compare_nodes({f"g{s}": [cloud.sql(q, sid=s) for q in queries] for s in cloud.ids}, report)
    emit("load_users", users)
    emit("load_faults", len(applied))
    emit("load_fault_list", ",".join(applied))
    emit("load_seconds", round(elapsed, 1))
    emit("load_requests_per_s", round(report.ops / elapsed, 1))
    emit("load_username_races_lost", report.ops - report.ok - report.failed - report.unknown)
    for line in report.lines():
        name, value = line.split(": ")
        emit(f"load_{name}" if name not in ("failed", "lost_acknowledged_writes") else name, value)
    for name, items in report.violations.items():
        for item in items[:5]:
            print(f"# {name}: {item}")


# -- failover and election messages ---------------------------------------------------------------


def part_failover(workdir: str, sizes: list[int], trials: int) -> None:
    for n in sizes:
        with HostsCloud(
            os.path.join(workdir, f"failover{n}"), servers=n, clients=1, database="sqlite"
        ) as cloud:
            cloud.start()
            probe = cloud.client_hosts[0]
            times, messages = [], []
            for trial in range(trials):
                coordinator = cloud.wait_converged(30, members=set(cloud.ids))
                cloud.in_host(probe, submit_blocking, cloud.client_list, "ping", {})
                survivors = [s for s in cloud.ids if s != coordinator]
                before = {s: cloud.status(s)["cluster"]["counters"]["sent"] for s in survivors}
                killed = time.monotonic()
                cloud.kill_server(coordinator)
                reply = cloud.in_host(probe, submit_blocking, cloud.client_list, "ping", {}, 15.0)
                took = time.monotonic() - killed
                cloud.wait_converged(30, members=set(survivors))
                time.sleep(1.0)  # late messages of this election still count
                after = {s: cloud.status(s)["cluster"]["counters"]["sent"] for s in survivors}
                sent = sum(
                    after[s].get(kind, 0) - before[s].get(kind, 0)
                    for s in survivors
                    for kind in ELECTION_TYPES
                )
                times.append(took)
                messages.append(sent)
                print(f"# n={n} trial {trial}: killed {coordinator}, ping served by {reply['server']} after "
                      f"{took:.3f} s, {sent} election messages", flush=True)  # fmt: skip
                cloud.restart_server(coordinator)
            emit(f"failover_n{n}_p50_s", round(statistics.median(times), 3))
            emit(f"failover_n{n}_p95_s", round(percentile(times, 95), 3))
            emit(f"election_messages_n{n}_max", max(messages))
            emit(f"election_messages_n{n}_target", 2 * n - 3)


# -- directory latency: Galera vs one MariaDB ------------------------------------------------------


def _latencies(servers: list[tuple[str, int]], samples: int, users: int) -> dict[str, list[float]]:
    """Runs inside a client host: register ``users``, then time one request at a time."""
    keys = {k: __import__("base64").b64encode(os.urandom(32)).decode() for k in ("x25519", "ed25519")}
    names = [f"lat{os.getpid()}x{i}" for i in range(users)]
    tokens = []
    for name in names:
        submit_blocking(servers, "register", {"username": name, "password": "latency-pass-1", "keys": keys})
        key = ReplyKey()
        reply = submit_blocking(
            servers, "sign_in", {"username": name, "password": "latency-pass-1", **key.args()}
        )
        tokens.append(key.open(reply))
    for i, token in enumerate(tokens):
        submit_blocking(servers, "heartbeat", {"token": token, "port": 41000 + i})
    out: dict[str, list[float]] = {"sign_in": [], "heartbeat": [], "list_online": []}
    for i in range(samples):
        token = tokens[i % len(tokens)]
        for op, args in (
            (
                "sign_in",
                {"username": names[i % len(names)], "password": "latency-pass-1", **ReplyKey().args()},
            ),
            ("heartbeat", {"token": token, "port": 41000 + i % len(tokens)}),
            ("list_online", {"token": token, "limit": 50}),
        ):
            t = time.perf_counter()
            submit_blocking(servers, op, args)
            out[op].append(time.perf_counter() - t)
    return out


def part_latency(workdir: str, samples: int) -> None:
    results = {}
    for database in ("galera", "mariadb"):
        with HostsCloud(os.path.join(workdir, f"latency-{database}"), servers=3, clients=1,
                        database=database, overrides={"directory": {"scrypt_n": 1024}}) as cloud:  # fmt: skip
            cloud.start()
            results[database] = cloud.in_host(
                cloud.client_hosts[0], _latencies, cloud.client_list, samples, 50
            )
    for op in ("sign_in", "heartbeat", "list_online"):
        for database in ("galera", "mariadb"):
            values = results[database][op]
            emit(f"{op}_{database}_p50_ms", round(1000 * statistics.median(values), 2))
            emit(f"{op}_{database}_p95_ms", round(1000 * percentile(values, 95), 2))
        ratio = statistics.median(results["galera"][op]) / statistics.median(results["mariadb"][op])
        emit(f"{op}_galera_over_mariadb_p50", round(ratio, 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hosts", description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="load,failover,latency")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--sizes", default="3,5,7")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--pause",
        type=float,
        default=1.4,
        help="load: most seconds a user waits between requests (paces the run)",
    )
    parser.add_argument("--keep", action="store_true", help="keep configs, logs and histories")
    ns = parser.parse_args(argv)
    reason = unavailable_reason("galera")
    if reason:
        print(f"bench-hosts: cannot run here: {reason}", file=sys.stderr)
        return 3
    workdir = tempfile.mkdtemp(prefix="cloudp2p-bench-hosts-")
    parts = ns.parts.split(",")
    try:
        if "latency" in parts:
            part_latency(workdir, ns.samples)
        if "failover" in parts:
            part_failover(workdir, [int(n) for n in ns.sizes.split(",")], ns.trials)
        if "load" in parts:
            part_load(workdir, ns.requests, ns.users, ns.seed, ns.pause)
    finally:
        if ns.keep:
            print(f"# kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
