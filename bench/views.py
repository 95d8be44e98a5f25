"""Benchmark: `view` latency of an enforced copy against an offline-capable one (issue 17).

    python -m bench.views [--views 100] [--side 512] [--keep]

Starts a real cloud (3 ``twistd`` servers, one SQLite directory) and two real client daemons
(alice, bob). Alice encrypts two photos of ``--side`` pixels square (random noise: they do not
compress) and shares each with bob: one offline-capable (the default), one with
``accept --enforced``. Bob then views them alternately, ``--views`` times each, through his
daemon's control socket (what ``cloudp2p view`` does, without starting a Python process): an
offline view decodes and counts locally; an enforced one first asks the cloud for the key
share (one routed, journaled ``share_view``). Alternating keeps both under the same load.

Prints ``name: value`` lines: p50/p95/mean (ms) for each mode and the enforced/offline ratios,
and the cloud's part alone (``share_view`` round trips through a ``ClientRouter``, same run).
Loops are bounded by ``--views`` (at most 1000, the largest grant) and a 600 s budget.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

from cloudp2p.client.cli import DaemonConnection
from cloudp2p.testing.client import ClientProcess
from cloudp2p.testing.cluster import LocalCluster

PASSWORD = "bench-password-123"
BUDGET = 600.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def photo(path: str, side: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path, format="PNG")
    return path


def ok(client: ClientProcess, *args: str, password: bool = False) -> dict:
    result = client.run(*args, password=PASSWORD if password else None)
    if not result.ok:
        raise SystemExit(f"cloudp2p {' '.join(args)} failed: {result.stderr}\n{client.tail(20)}")
    return result.result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, default=100, help="views of each copy (1..1000)")
    parser.add_argument("--side", type=int, default=512, help="photo side in pixels")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    opts = parser.parse_args()
    n = max(1, min(1000, opts.views))
    work = tempfile.mkdtemp(prefix="cp2p-bench-views-")
    cloud = LocalCluster(
        os.path.join(work, "cloud"),
        3,
        overrides={"directory": {"backend": "sqlite", "path": os.path.join(work, "directory.sqlite3")}},
    )
    clients: dict[str, ClientProcess] = {}
    try:
        cloud.start(60.0)
        cloud.wait_converged(30.0)
        for name in ("alice", "bob"):
            clients[name] = ClientProcess(os.path.join(work, name), servers=cloud.client_list)
            clients[name].init()
            clients[name].start()
        for name, client in clients.items():
            client.wait_ready(30.0)
            ok(client, "register", name, password=True)
            ok(client, "login", password=True)
        alice, bob = clients["alice"], clients["bob"]
        ids = {}
        for seed, mode in enumerate(("offline", "enforced")):
            enc = ok(alice, "encrypt", photo(os.path.join(work, f"{mode}.png"), opts.side, seed))
            ok(alice, "publish", enc["image_id"])
            ok(bob, "users")
            req = ok(bob, "request", "alice", enc["name"], "--views", str(n + 1))
            ok(alice, "accept", req["request_id"], *(["--enforced"] if mode == "enforced" else []))
            ids[mode] = enc["image_id"]
        size = os.path.getsize(os.path.join(bob.home, "received", f"{ids['offline']}.png"))
        times: dict[str, list[float]] = {"offline": [], "enforced": []}
        conn = DaemonConnection(os.path.join(bob.home, "control.sock"), 60.0)
        started = time.monotonic()
        try:
            for _ in range(n):
                for mode in ("offline", "enforced"):
                    t0 = time.perf_counter()
                    result = conn.call("view", {"image": ids[mode], "memory": True}, lambda p: None)
                    times[mode].append(time.perf_counter() - t0)
                    if result.get("shown") != "image":
                        raise SystemExit(f"{mode} view showed {result.get('shown')}")
                if time.monotonic() - started > BUDGET:
                    break
        finally:
            conn.close()
        print(f"views_per_mode: {len(times['offline'])}")
        print(f"photo_side_px: {opts.side}")
        print(f"received_png_bytes: {size}")
        for mode, values in times.items():
            ms = [v * 1000 for v in values]
            print(f"view_{mode}_p50_ms: {percentile(ms, 50):.1f}")
            print(f"view_{mode}_p95_ms: {percentile(ms, 95):.1f}")
            print(f"view_{mode}_mean_ms: {statistics.fmean(ms):.1f}")
        for p in (50, 95):
            ratio = percentile(times["enforced"], p) / percentile(times["offline"], p)
            print(f"view_enforced_vs_offline_p{p}: {ratio:.2f}")
        extra = percentile(times["enforced"], 50) - percentile(times["offline"], 50)
        print(f"view_enforced_extra_p50_ms: {extra * 1000:.1f}")
    finally:
        for client in clients.values():
            client.stop(grace=5.0)
        cloud.stop()
        if opts.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
