"""``make hosts-demo``: the cloud on five hosts, as a readable transcript (needs root).

Builds five hosts as network namespaces on one bridge (cloudp2p/testing/hosts.py): three
server hosts, each with a ``twistd cloudp2p-server`` and a MariaDB Galera node, and two
client hosts with alice's and bob's daemons. Then: alice and bob register and share an image
across hosts; the Galera node under the coordinator is killed with kill -9 and bob keeps
viewing; server host 3 is cut off (its node leaves the primary component, its server refuses
without writing, the other two serve); the cut heals and node 3 catches up by IST. Every
namespace, link and process is removed at the end, also on an error or Ctrl-C.

    python -m cloudp2p.tools.hosts_demo [--keep]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from typing import Any

PASSWORD = "hosts-demo-password"


def say(text: str) -> None:
    print(text, flush=True)


def _photo(path: str) -> str:
    import numpy as np
    from PIL import Image

    arr = np.random.default_rng(15).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    with open(path, "wb") as f:
        f.write(out.getvalue())
    return path


def _ok(client: Any, *args: str, **kwargs: Any) -> dict[str, Any]:
    result = client.run(*args, **kwargs)
    if not result.ok:
        raise RuntimeError(f"{client.name} {' '.join(args)} failed ({result.code}): {result.stderr.strip()}")
    return result.result


def story(cloud: Any) -> None:
    from cloudp2p.testing import workload

    say("hosts:")
    for sid, host in cloud.server_hosts.items():
        say(
            f"  {host.name:3} {host.ip:12} server {sid} (udp {cloud.client_address(sid)[1]}), "
            f"Galera node g{sid}"
        )
    for host in cloud.client_hosts:
        say(f"  {host.name:3} {host.ip:12} client daemon")
    coordinator = cloud.wait_converged()
    say(
        f"cloud: coordinator is server {coordinator}; "
        f"Galera cluster size {cloud.db_node(1).status()['wsrep_cluster_size']}"
    )
    alice = cloud.client("alice", host=0)
    bob = cloud.client("bob", host=1)
    for who in (alice, bob):
        _ok(who, "register", who.name, password=PASSWORD)
        _ok(who, "login", password=PASSWORD)
        say(f"{who.name}: registered and signed in from {cloud.client_hosts[0 if who is alice else 1].ip}")
    enc = _ok(alice, "encrypt", _photo(os.path.join(cloud.workdir, "photo.png")))
    _ok(alice, "publish", enc["image_id"])
    say(f"alice: encrypted and published {enc['name']}")
    offered = {u["username"]: len(u["images"]) for u in _ok(bob, "users")["users"]}
    say(f"bob: online users and the images they offer: {offered}")
    req = _ok(bob, "request", "alice", enc["name"], "--views", "3")
    _ok(alice, "accept", req["request_id"])
    say(f"bob: asked for 3 views ({req['delivery']}); alice accepted; bob views: "
        f"{_ok(bob, 'view', enc['image_id'])['views_left']} left")  # fmt: skip

    say(f"\nfault: kill -9 the Galera node g{coordinator} under the coordinator")
    cloud.kill_db(coordinator)
    say(f"bob views again: {_ok(bob, 'view', enc['image_id'])['views_left']} left; "
        f"users online: {[u['username'] for u in _ok(alice, 'users')['users']]}")  # fmt: skip
    started = time.monotonic()
    cloud.restart_db(coordinator)
    say(f"g{coordinator} restarted, synced again after {time.monotonic() - started:.1f} s (IST)")

    minority = cloud.ids[-1]
    say(f"\nfault: server host {minority} cut off (its server and its node)")
    cloud.isolate(minority)
    node = cloud.db_node(minority)
    node.wait_state(lambda s: s.get("wsrep_cluster_status") == "non-Primary", 30)
    say(f"g{minority}: {node.status()['wsrep_cluster_status']} (refuses reads and writes)")
    cloud.wait_converged(20, members={s for s in cloud.ids if s != minority})
    _ok(alice, "set-views", "bob", enc["image_id"], "5")
    say(
        "alice: set bob's views to 5 through the majority; "
        f"online: {[u['username'] for u in _ok(bob, 'users')['users']]}"
    )
    out = os.path.join(cloud.workdir, "minority.jsonl")
    process = workload.spawn(cloud.server_hosts[minority].command, [cloud.client_address(minority)], out,
                             prefix="carol", users=1, ops=1, timeout=12)  # fmt: skip
    process.communicate(timeout=60)
    with open(out, encoding="utf-8") as f:
        answer = [line for line in f if '"invoke"' not in line]
    say(f"carol, on host {minority} itself, registers through server {minority}: {answer[0].strip()[:120]}")
    cloud.heal(minority)
    started = time.monotonic()
    node.wait_synced(90, size=len(cloud.ids))
    say(f"healed: g{minority} synced after {time.monotonic() - started:.1f} s; "
        f"IST in its log: {'IST received' in node.log_text()}")  # fmt: skip
    rows = cloud.sql("SELECT username_key FROM users ORDER BY username_key", sid=minority)
    say(f"g{minority} now holds users {[r[0] for r in rows]} (no carol: the minority wrote nothing)")
    say(f"bob views: {_ok(bob, 'view', enc['image_id'])['views_left']} left")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cloudp2p.tools.hosts_demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--keep", action="store_true", help="keep configs and logs")
    ns = parser.parse_args(argv)
    from cloudp2p.testing.hosts import HostsCloud, unavailable_reason

    reason = unavailable_reason("galera")
    if reason:
        print(f"hosts-demo: cannot run here: {reason}", file=sys.stderr)
        return 3
    workdir = tempfile.mkdtemp(prefix="cloudp2p-hosts-demo-")
    try:
        with HostsCloud(workdir, servers=3, clients=2) as cloud:
            say("starting 5 hosts, a 3-node Galera cluster and 3 servers ...")
            cloud.start()
            story(cloud)
            if ns.keep:
                cloud.keep_logs(workdir)
        say("\ndone: every namespace, link and process removed")
        return 0
    finally:
        if ns.keep:
            say(f"kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
