"""Failover time with real processes: kill -9 the coordinator, time until a request is served again.

    python -m bench.failover [--trials 20] [--keep]        (make bench-failover ARGS="--trials 30")

Three ``twistd cloudp2p-server`` processes on 127.0.0.1 (free ports, default
timers: heartbeat 0.2 s, failure timeout 1.0 s). Each trial: find the
coordinator, check a ping is served, kill -9 the coordinator and at the same
instant submit a ping through a ClientRouter that knows all three servers; the
failover time is the time from the kill to that ping's reply. The killed server
is then restarted and the trial waits until all three agree on a coordinator
again. Prints ``name: value`` lines; target ``failover_p95_s`` < 1.5.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import tempfile
import time

from twisted.internet import defer, task

from cloudp2p.routing.client import ClientRouter
from cloudp2p.testing.cluster import LocalCluster


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def run(reactor, trials: int, keep: bool) -> None:
    directory = tempfile.mkdtemp(prefix="cloudp2p-bench-failover-")
    cloud = LocalCluster(directory, 3)
    router = ClientRouter(reactor, cloud.client_list, timeout=15.0)
    times: list[float] = []
    failures = 0
    try:
        cloud.start()
        cloud.wait_converged(20.0)
        router.start()
        for trial in range(trials):
            coordinator = cloud.wait_converged(20.0, members={1, 2, 3})
            await router.submit("ping", {})
            killed = time.monotonic()
            cloud.servers[coordinator].kill()
            try:
                reply = await router.submit("ping", {})
            except Exception as e:
                failures += 1
                print(f"# trial {trial}: the ping after the kill failed: {e}")
            else:
                elapsed = time.monotonic() - killed
                times.append(elapsed)
                print(
                    f"# trial {trial}: killed coordinator {coordinator}, served by {reply['server']} "
                    f"(term {reply['term']}) after {elapsed:.3f} s"
                )
            await task.deferLater(reactor, 0.2, lambda: None)
            cloud.restart(coordinator)
    finally:
        await router.stop()
        cloud.stop()
        if keep:
            print(f"# configs and logs kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    print("heartbeat_interval_s: 0.2")
    print("failure_timeout_s: 1.0")
    print(f"failover_trials: {len(times)}")
    print(f"failover_failed_trials: {failures}")
    if times:
        print(f"failover_min_s: {min(times):.3f}")
        print(f"failover_median_s: {statistics.median(times):.3f}")
        print(f"failover_p95_s: {percentile(times, 95):.3f}")
        print(f"failover_max_s: {max(times):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the servers' configs and logs")
    ns = parser.parse_args()
    if ns.trials < 1:
        parser.error("--trials must be at least 1")
    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor, ns.trials, ns.keep)))


if __name__ == "__main__":
    main()
