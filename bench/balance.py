"""Load balance with real processes: 1,000 ``work`` requests from 20 concurrent clients.

    python -m bench.balance [--requests 1000] [--clients 20] [--units 4] [--work-threads 2]

First against one server (the baseline), then against three, in the same run,
on 127.0.0.1. Each client is its own ClientRouter (its own UDP socket) sending
one request at a time. Prints the share of requests each server executed,
Jain's fairness index over those shares (1.0 = perfectly even, 1/3 = one server
did everything), and the throughput of three servers against one
(``throughput_ratio_vs_1``). The machine's cores are shared by all servers, so
the ratio is bounded by the cores, not by the number of servers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import Counter
from typing import Any

from twisted.internet import defer, task

from cloudp2p.routing.client import ClientRouter
from cloudp2p.testing.cluster import LocalCluster


def jain(values: list[float]) -> float:
    """Jain's fairness index: (sum x)^2 / (n * sum x^2)."""
    total, squares = sum(values), sum(v * v for v in values)
    return (total * total) / (len(values) * squares) if squares else 0.0


async def load(reactor: Any, cloud: LocalCluster, requests: int, clients: int, units: int) -> dict[str, Any]:
    routers = [ClientRouter(reactor, cloud.client_list, timeout=60.0) for _ in range(clients)]
    for r in routers:
        r.start()
    by_server: Counter[int] = Counter()
    failures: list[str] = []
    quotas = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]

    async def client(router: ClientRouter, count: int) -> None:
        for _ in range(count):
            try:
                result = await router.submit("work", {"units": units})
                by_server[result["server"]] += 1
            except Exception as e:
                failures.append(str(e))

    started = time.monotonic()
    try:
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(client(r, q)) for r, q in zip(routers, quotas, strict=True)]
        )
    finally:
        elapsed = time.monotonic() - started
        for r in routers:
            await r.stop()
    return {"by_server": by_server, "failures": failures, "seconds": elapsed}


async def run(reactor: Any, ns: argparse.Namespace) -> None:
    directory = tempfile.mkdtemp(prefix="cloudp2p-bench-balance-")
    overrides = {"server": {"work_threads": ns.work_threads, "test_ops": True}}  # the work op
    figures: dict[int, dict[str, Any]] = {}
    try:
        for n in (1, 3):
            cloud = LocalCluster(os.path.join(directory, f"cloud{n}"), n, overrides=overrides)
            try:
                cloud.start()
                cloud.wait_converged(20.0)
                await load(reactor, cloud, 50, ns.clients, ns.units)  # warm up
                figures[n] = await load(reactor, cloud, ns.requests, ns.clients, ns.units)
            finally:
                cloud.stop()
    finally:
        if ns.keep:
            print(f"# configs and logs kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    one, three = figures[1], figures[3]
    print(f"cores: {os.cpu_count()}")
    print(f"requests: {ns.requests}")
    print(f"clients: {ns.clients}")
    print(f"work_units_mib: {ns.units}")
    print(f"work_threads_per_server: {ns.work_threads}")
    shares = [three["by_server"].get(s, 0) / max(1, sum(three["by_server"].values())) for s in (1, 2, 3)]
    for sid, share in zip((1, 2, 3), shares, strict=True):
        print(f"share_server{sid}: {share:.3f}")
    print(f"fairness: {jain(shares):.4f}")
    rps1 = ns.requests / one["seconds"]
    rps3 = ns.requests / three["seconds"]
    print(f"throughput_1_server_rps: {rps1:.1f}")
    print(f"throughput_3_servers_rps: {rps3:.1f}")
    print(f"throughput_ratio_vs_1: {rps3 / rps1:.2f}")
    print(f"failed_requests_1_server: {len(one['failures'])}")
    print(f"failed_requests_3_servers: {len(three['failures'])}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.balance", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--units", type=int, default=40, help="MiB hashed per work request")
    parser.add_argument("--work-threads", type=int, default=2, help="[server] work_threads of every server")
    parser.add_argument("--keep", action="store_true", help="keep the servers' configs and logs")
    ns = parser.parse_args()
    if ns.requests < ns.clients or ns.clients < 1 or ns.units < 1:
        parser.error("need --requests >= --clients >= 1 and --units >= 1")
    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor, ns)))


if __name__ == "__main__":
    main()
