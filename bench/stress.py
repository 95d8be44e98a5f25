"""Benchmark: a 3-server cloud under many simulated users, with periodic outages, then a consistency check.

    python -m bench.stress [--users 50] [--requests 10000] [--outages] [--seed N]
                           [--backend auto|sqlite|mysql] [--out DIR] [--max-seconds 900]

Starts three real ``twistd`` servers on free loopback ports (MariaDB at
127.0.0.1:3306 in a fresh database when it answers and ``--backend`` is auto,
else a shared SQLite file), then ``--users`` simulated users in this process
(bench/stress_users.py: register, sign_in, heartbeats, list_online pages,
lookups, publish/unpublish, queued messages, sign_out/sign_in, encrypt of a
small and of a ~1 MB photo) until ``--requests`` requests have been sent.

``--old-encrypt``: the servers encrypt the way they did before issue 16
(``[encryption] png_writer = "pillow"``, ``queue_order = "arrival"``: Pillow's
PNG encoder, one first-come-first-served queue, never busy), to measure the
new path against in the same session. (Running the old servers themselves is
not possible: the directory schema has moved on since.)

``--outages``: every few seconds one server chosen at random stops answering
for a random 2-20 s (SIGSTOP/SIGCONT, or one time in four kill -9 and a
restart), then must catch up: every running server's status must name the same
coordinator, term and members before the next outage. Bounded by
``--max-outages`` and by the end of the load.

Afterwards bench/stress_check.py compares the database with what the users
were told. Prints one ``name: value`` line per figure, writes ``stress.json``
and ``stress.png`` into ``--out``; exits 1 when a request failed or the
check found a problem.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from typing import Any

from twisted.internet import defer, task, threads

from bench.encrypt import percentile

# Outside the tracked tree (bench/out/ is ignored by git) wherever the command is run from.
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "stress")

# Defaults of --outage-gap and --outage-down: an outage starts 2-6 s after the previous one
# caught up, and lasts 2-20 s (uniform).
OUTAGE_GAP = 6.0
OUTAGE_DOWN = 20.0
KILL_SHARE = 0.25  # share of outages that are kill -9 + restart (the rest: SIGSTOP/SIGCONT)
CATCH_UP_LIMIT = 30.0


def mysql_reachable() -> bool:
    try:
        import pymysql

        pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=2).close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def mysql_admin(sql: str) -> None:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


class Outages:
    """Injects one outage at a time and waits for the cloud to agree again after each."""

    def __init__(
        self, reactor: Any, cloud: Any, rng: random.Random, t0: float, max_outages: int,
        gap: float = OUTAGE_GAP, down: float = OUTAGE_DOWN,
    ) -> None:
        self.gap = (gap / 3, gap)
        self.down = (down / 10, down)
        self.reactor = reactor
        self.cloud = cloud
        self.rng = rng
        self.t0 = t0
        self.max_outages = max_outages
        self.stopping = False
        self.events: list[dict[str, Any]] = []
        self.counters_before_kill: list[dict[str, Any]] = []  # status of a server just before kill -9

    async def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            await task.deferLater(self.reactor, min(0.2, end - time.monotonic()), lambda: None)

    async def run(self) -> None:
        while not self.stopping and len(self.events) < self.max_outages:
            await self.sleep(self.rng.uniform(*self.gap))
            if self.stopping:
                return
            sid = self.rng.choice(sorted(self.cloud.servers))
            kind = "kill" if self.rng.random() < KILL_SHARE else "stop"
            down = self.rng.uniform(*self.down)
            event = {"server": sid, "kind": kind, "start": time.monotonic() - self.t0}
            self.events.append(event)
            proc = self.cloud.servers[sid]
            if kind == "kill":
                status = await threads.deferToThread(self.cloud.status, sid, 1.0)
                if status is not None:
                    self.counters_before_kill.append(status)
                proc.kill()
            else:
                proc.pause()
            await self.sleep(down)  # cut short when the load ends
            if kind == "kill":
                await threads.deferToThread(self.cloud.restart, sid)
            else:
                proc.resume()
            event["end"] = time.monotonic() - self.t0
            event["down_s"] = round(event["end"] - event["start"], 3)
            event["caught_up_s"] = await self.catch_up()

    async def catch_up(self) -> float | None:
        """Seconds until every server names the same coordinator, term and members; None if never."""
        started = time.monotonic()
        want = set(self.cloud.servers)
        while time.monotonic() - started < CATCH_UP_LIMIT:
            views = await threads.deferToThread(self.cloud.statuses, 1.0)
            if set(views) == want:
                agreed = {(v["coordinator"], v["term"], tuple(sorted(v["members"]))) for v in views.values()}
                if len(agreed) == 1:
                    coordinator, _, members = agreed.pop()
                    if coordinator is not None and set(members) == want:
                        return round(time.monotonic() - started, 3)
            await task.deferLater(self.reactor, 0.2, lambda: None)
        return None


def latency_figures(records: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    by_op: dict[str, list[float]] = {}
    for r in records:
        if r["ok"]:
            by_op.setdefault(r["op"], []).append(r["latency_ms"])
    for op in sorted(by_op):
        values = by_op[op]
        out[f"count_{op}"] = len(values)
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            out[f"latency_{name}_ms_{op}"] = round(percentile(values, q), 1)
        out[f"latency_max_ms_{op}"] = round(max(values), 1)
    return out


def cluster_figures(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """Elections and message counts, summed over every server (and every life of a restarted one)."""
    from cloudp2p.membership.messages import ELECTION_TYPES

    elections = claims = 0
    sent: Counter[str] = Counter()
    for s in statuses:
        counters = s["cluster"]["counters"]
        elections += counters.get("elections", 0)
        claims += counters.get("claims", 0)
        sent.update(counters.get("sent", {}))
    election_messages = sum(v for k, v in sent.items() if k in ELECTION_TYPES)
    figures: dict[str, Any] = {
        "elections": elections,  # modified-bully elections started (no usable successor)
        "coordinator_claims": claims,  # a server became coordinator (after an election or a handover)
        "election_messages": election_messages,
        "heartbeat_messages": sent.get("heartbeat", 0),
        "router_messages": sent.get("app", 0),
    }
    for k in sorted(ELECTION_TYPES):
        figures[f"election_messages_{k}"] = sent.get(k, 0)
    return figures


async def stress(reactor: Any, args: argparse.Namespace) -> int:
    from bench import stress_check, stress_plot
    from bench.stress_users import Ledger, User, load_photos, make_thumbnail, run_users
    from cloudp2p.testing.cluster import LocalCluster
    from cloudp2p.transfer import TransferManager

    run_start = time.monotonic()
    rng = random.Random(args.seed)
    run = uuid.UUID(int=rng.getrandbits(128)).hex[:6]
    photos = await threads.deferToThread(load_photos)
    thumbnail = base64.b64encode(await threads.deferToThread(make_thumbnail)).decode()
    tmp = tempfile.mkdtemp(prefix="cloudp2p-bench-stress-")
    backend = args.backend
    if backend == "auto":
        backend = "mysql" if await threads.deferToThread(mysql_reachable) else "sqlite"
    cleanup: list[Any] = []
    if not args.keep:
        cleanup.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    else:
        print(f"# servers' configs and logs kept in {tmp}", file=sys.stderr)
    if backend == "mysql":
        database = f"cloudp2p_stress_{os.getpid()}_{run}"
        where = f"mysql://root@127.0.0.1:3306/{database}"
        directory = {"backend": "mysql", "url": where}
        cleanup.append(lambda: mysql_admin(f"DROP DATABASE IF EXISTS `{database}`"))
    else:
        where = os.path.join(tmp, "directory.sqlite3")
        directory = {"backend": "sqlite", "path": where}
    directory["scrypt_n"] = args.scrypt_n
    overrides = {
        "directory": directory,
        # Every simulated user is 127.0.0.1: let them all transfer at once.
        "transfer": {"max_per_peer": 4 * args.users},
        "encryption": {"workers": 1},
        # The simulated users sign out and in again far more often than people do (relogin is
        # 4 % of the mix): not the password guessing the per-user limit is there for.
        "server": {"auth_user_burst": 1000},
    }
    if args.old_encrypt:
        overrides["encryption"].update({"png_writer": "pillow", "queue_order": "arrival"})
    figures: dict[str, Any] = {"backend": backend, "users": args.users, "seed": args.seed}
    figures["encrypt_path"] = "old" if args.old_encrypt else "new"
    ok = False
    try:
        cloud = LocalCluster(tmp, 3, overrides=overrides)
        cleanup.insert(0, cloud.stop)
        await threads.deferToThread(cloud.start)
        await threads.deferToThread(cloud.wait_converged, 30.0)
        servers = cloud.client_list

        t0 = time.monotonic()
        # The load stops early enough for the catch-up, the check and the plot to fit the bound.
        deadline = run_start + max(1.0, args.max_seconds - 60.0)
        ledger = Ledger(args.requests, t0)
        transfers = TransferManager(reactor, interface="127.0.0.1", max_per_peer=4 * args.users)
        cleanup.insert(0, transfers.stop)
        peers: dict[str, str] = {}
        users = [
            User(i, run, reactor, servers, ledger, peers, random.Random(rng.getrandbits(64)), transfers,
                 photos, thumbnail, deadline)
            for i in range(args.users)
        ]
        outages = Outages(
            reactor, cloud, random.Random(rng.getrandbits(64)), t0, args.max_outages,
            args.outage_gap, args.outage_down,
        )
        outage_run = defer.ensureDeferred(outages.run()) if args.outages else defer.succeed(None)
        await run_users(users)
        wall = time.monotonic() - t0
        outages.stopping = True
        await outage_run
        # Every server back and in agreement before the check and the final status.
        for sid, proc in cloud.servers.items():
            if not proc.alive:
                await threads.deferToThread(cloud.restart, sid)
        await threads.deferToThread(cloud.wait_converged, 30.0)
        statuses = await threads.deferToThread(cloud.statuses, 2.0)
        await task.deferLater(reactor, 1.0, lambda: None)  # let the last transactions settle

        records = ledger.records
        succeeded = sum(1 for r in records if r["ok"])
        served = Counter(r["server"] for r in records if r["ok"] and r["server"] is not None)
        total_served = sum(served.values()) or 1
        figures.update({
            "sent": ledger.sent,
            "succeeded": succeeded,
            "failed": len(records) - succeeded,
            "success_rate": round(succeeded / max(1, len(records)), 5),
            "wall_s": round(wall, 2),
            "throughput_rps": round(succeeded / wall, 2),
        })
        for sid in sorted(cloud.servers):
            figures[f"share_server{sid}"] = round(served.get(sid, 0) / total_served, 4)
        figures.update(latency_figures(records))
        figures.update(cluster_figures(list(statuses.values()) + outages.counters_before_kill))
        figures["outages"] = len(outages.events)
        figures["outages_stop"] = sum(1 for e in outages.events if e["kind"] == "stop")
        figures["outages_kill"] = sum(1 for e in outages.events if e["kind"] == "kill")
        caught = [e.get("caught_up_s") for e in outages.events]
        figures["outages_caught_up"] = sum(1 for c in caught if c is not None)
        if any(c is not None for c in caught):
            figures["catch_up_max_s"] = max(c for c in caught if c is not None)
        figures["encrypt_asked_again"] = ledger.encrypt_refetches
        figures["client_retries"] = sum(u.router.counters["retries"] for u in users)
        check = await threads.deferToThread(stress_check.check, ledger, backend, where, f"s{run}")
        problems = check.pop("problems")
        figures.update(check)

        for name, value in figures.items():
            print(f"{name}: {value}")
        for err, n in ledger.errors.most_common(10):
            print(f"# error: {err} x{n}", file=sys.stderr)
        for p in problems:
            print(f"# consistency: {p}", file=sys.stderr)

        os.makedirs(args.out, exist_ok=True)
        result = {
            "figures": figures,
            "errors": dict(ledger.errors),
            "consistency_problems": problems,
            "outages": outages.events,
            "args": {k: v for k, v in vars(args).items()},
            "requests": [[r["op"], r["t"], r["latency_ms"], r["ok"], r["server"]] for r in records],
        }
        json_path = os.path.join(args.out, "stress.json")
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(result, f)
        png_path = os.path.join(args.out, "stress.png")
        await threads.deferToThread(stress_plot.draw, result, png_path)
        print(f"# wrote {json_path} and {png_path}", file=sys.stderr)
        consistent = not check["consistency_missing"] and not check["consistency_duplicates"]
        ok = figures["failed"] == 0 and consistent
    finally:
        for stop in cleanup:
            try:
                d = stop()
                if isinstance(d, defer.Deferred):
                    await d
            except Exception as e:  # noqa: BLE001
                print(f"# cleanup: {e}", file=sys.stderr)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stress", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--outages", action="store_true", help="stop or kill a server every few seconds")
    parser.add_argument("--max-outages", type=int, default=30, help="at most this many (with --outages)")
    parser.add_argument("--outage-gap", type=float, default=OUTAGE_GAP,
                        help="an outage starts gap/3 to gap seconds after the previous one caught up")
    parser.add_argument("--outage-down", type=float, default=OUTAGE_DOWN,
                        help="a server stays down down/10 to down seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--backend", choices=("auto", "sqlite", "mysql"), default="auto")
    parser.add_argument("--out", default=DEFAULT_OUT, help="directory for stress.json and stress.png")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="hard bound on the load phase")
    parser.add_argument("--scrypt-n", type=int, default=16384, help="directory password hashing cost")
    parser.add_argument("--keep", action="store_true", help="keep the servers' configs and logs")
    parser.add_argument(
        "--old-encrypt", action="store_true", help="Pillow PNG and a FIFO encrypt queue (before issue 16)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.users <= 500 or not 1 <= args.requests <= 1_000_000 or args.max_seconds <= 0:
        parser.error("--users 1..500, --requests 1..1000000, --max-seconds > 0")
    if not 0 <= args.max_outages <= 1000:
        parser.error("--max-outages 0..1000")
    if not 0 < args.outage_gap <= 600 or not 0 < args.outage_down <= 60:
        parser.error("--outage-gap 0..600 s, --outage-down 0..60 s")
    code = [1]

    async def go(reactor: Any) -> None:
        def overrun() -> None:
            print(f"bench.stress: still running {args.max_seconds} + 60 s after the start", file=sys.stderr)
            os._exit(3)

        watchdog = reactor.callLater(args.max_seconds + 60.0, overrun)
        try:
            code[0] = await stress(reactor, args)
        except Exception as e:
            print(f"bench.stress: failed: {type(e).__name__}: {e}", file=sys.stderr)
            code[0] = 2
        finally:
            if watchdog.active():
                watchdog.cancel()

    try:
        task.react(lambda reactor: defer.ensureDeferred(go(reactor)))
    except SystemExit:
        pass
    return code[0]


if __name__ == "__main__":
    sys.exit(main())
