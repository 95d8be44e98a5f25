"""``make fuzz``: hostile input against every listener and reader of the product.

    python -m bench.fuzz [--count N] [--seconds S] [--seed N] [--targets a,b] [--out DIR]

Starts a real 3-server cloud and two real client daemons on 127.0.0.1 (plus
the transfer peer of ``bench.fuzz_transfer_peer``), then, target by target,
sends ``--count`` generated malformed inputs (default 100,000) within a share
of the ``--seconds`` budget (default 840 s for the whole run):

- ``server_client``: a server's client socket; ``server_cluster``: its
  HMAC-authenticated cluster socket (forged, malformed, replayed datagrams);
- ``client_peer``: the client daemon's peer listener; ``client_control``: its
  UNIX control socket;
- ``transfer_offer`` / ``transfer_fetch``: the ports of an open offer and of a
  running fetch (the fuzzer plays the hostile sender);
- ``cluster_replay``: captured real server-to-server datagrams replayed after a
  new term and a restart, and forged COORDINATOR claims: coordinator and term
  must not move;
- ``boundary``: the attacks of issue 11 (``bench.fuzz_boundary``): spoofed
  sources (other servers' addresses, made-up ones), replayed request ids,
  reflected replies, forged peer senders; no loop, no reply to a replayed id,
  a few directory lookups (needs a raw socket: root);
- ``files``: corrupted PNG/JPEG files for ``load_image`` and corrupted
  containers and rights blobs for the encryption readers.

Prints one ``name: value`` line per figure (``sent_<t>``, ``rejected_<t>``,
``alive_<t>``, ...) and writes ``summary.json`` into ``--out``. Exit code 1 if
any target failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

NET_TARGETS = (
    "server_client",
    "server_cluster",
    "client_peer",
    "client_control",
    "transfer_offer",
    "transfer_fetch",
    "boundary",
)
ALL_TARGETS = (*NET_TARGETS, "cluster_replay", "files")
# Shares of the time budget (the files and replay targets are bounded by their own work).
WEIGHTS = {
    "server_client": 1.0,
    "server_cluster": 1.0,
    "client_peer": 1.5,
    "client_control": 1.0,
    "transfer_offer": 1.0,
    "transfer_fetch": 1.0,
    "boundary": 0.5,
    "cluster_replay": 0.3,
    "files": 1.5,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=100_000, help="inputs per target (default 100000)")
    p.add_argument(
        "--file-count",
        type=int,
        default=None,
        help="corrupted inputs per file reader (default: --count; whole-PNG containers get a tenth)",
    )
    p.add_argument("--seconds", type=float, default=840.0, help="time budget of the whole run (default 840)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma-separated subset")
    p.add_argument("--out", default=None, help="directory for summary.json (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the daemons' homes and logs")
    ns = p.parse_args(argv)
    ns.targets = [t for t in ns.targets.split(",") if t]
    unknown = set(ns.targets) - set(ALL_TARGETS)
    if unknown:
        p.error(f"unknown targets {sorted(unknown)}; known: {', '.join(ALL_TARGETS)}")
    if ns.count < 1 or ns.seconds <= 0:
        p.error("--count and --seconds must be positive")
    return ns


def emit(name: str, value: Any) -> None:
    print(f"{name}: {value}", flush=True)


def report(result: Any) -> None:
    t = result.name
    emit(f"sent_{t}", result.sent)
    emit(f"rejected_{t}", result.rejected)
    emit(f"processed_{t}", result.processed)
    emit(f"alive_{t}", "yes" if result.alive else "no")
    emit(f"answers_{t}", "yes" if result.answers else "no")
    emit(f"seconds_{t}", result.seconds)
    emit(f"rate_{t}", round(result.sent / result.seconds) if result.seconds else 0)
    for key, value in sorted(result.extra.items()):
        if isinstance(value, int | float | str):
            emit(f"{key}_{t}", value)
    emit(f"failures_{t}", len(result.failures))
    for failure in result.failures:
        print(f"  FAILURE {t}: {failure}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    from bench import fuzz_boundary, fuzz_files, fuzz_net, fuzz_replay

    started = time.monotonic()
    out_dir = ns.out or tempfile.mkdtemp(prefix="cp2p-fuzz-out-")
    os.makedirs(out_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="cp2p-fuzz-")
    total_weight = sum(WEIGHTS[t] for t in ns.targets)
    results: list[Any] = []
    file_count = ns.file_count or ns.count

    def budget(target: str) -> float:
        left = ns.seconds - (time.monotonic() - started)
        return max(1.0, min(left, ns.seconds * WEIGHTS[target] / total_weight))

    rig = None
    failed = False
    try:
        net = [t for t in ns.targets if t in NET_TARGETS]
        if net:
            rig = fuzz_net.Rig(workdir)
            rig.start()
            emit("rig_seconds", round(time.monotonic() - started, 1))
        for i, target in enumerate(ns.targets):
            seed = ns.seed * 1000 + i
            if target == "boundary":
                result = fuzz_boundary.fuzz_boundary(rig, ns.count, budget(target), seed)
            elif target in NET_TARGETS:
                result = fuzz_net.TARGETS[target](rig, ns.count, budget(target), seed)
            elif target == "cluster_replay":
                result = fuzz_replay.replay_target(os.path.join(workdir, "replay"), budget(target), seed)
                result.extra.pop("captured_datagrams", None)
            else:
                result = fuzz_files.files_target(file_count, budget(target), seed)
            results.append(result)
            report(result)
            failed = failed or bool(result.failures)
    except BaseException:
        if rig is not None:
            print(rig.logs(), file=sys.stderr)
        raise
    finally:
        if rig is not None:
            rig.stop()
        if ns.keep:
            emit("kept", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - started
    emit("inputs_total", sum(r.sent for r in results))
    emit("seconds_total", round(total, 1))
    emit("failures_total", sum(len(r.failures) for r in results))
    summary = {
        "count": ns.count,
        "seconds_budget": ns.seconds,
        "seed": ns.seed,
        "seconds": round(total, 1),
        "targets": {r.name: r.to_json() for r in results},
    }
    path = os.path.join(out_dir, "summary.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=str)
    emit("summary", path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
