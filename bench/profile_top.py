"""Summarise a py-spy ``--format raw`` profile of a benchmark: where the samples went, per role.

    py-spy record --subprocesses --format raw -r 20 -o prof.txt -- python -m bench.encrypt
    python -m bench.profile_top prof.txt [--top 12]

Each line of the raw format is ``frame;frame;...;leaf COUNT``, the first frames
naming the processes. Samples are grouped by role (the benchmark's own
process, a server's reactor thread, a worker process) and, within a role, by
the innermost frame (self time) and by every project frame (inclusive time).
Samples of threads that wait (``epoll``, a condition, a pipe, a sleep; py-spy
does not always tell them from running ones) are counted apart as idle.
"""

from __future__ import annotations

import argparse
import collections
import re

IDLE_LEAVES = (
    "Condition.wait ",
    "EPollReactor.doPoll ",
    "_PollLikeSelector.select ",
    "_worker (concurrent/futures/thread.py",
    "Connection._recv ",
    "_watch_parent ",
    "Event.wait ",
    "Thread._wait_for_tstate_lock ",
)
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def role(frames: list[str]) -> str:
    text = ";".join(f for f in frames if f.startswith("process "))
    if "forkserver" in text or "_process_worker" in ";".join(frames):
        return "worker"
    if "cloudp2p-server" in text:
        return "server"
    return "bench client"


def name(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m.group('func')} ({path})"


def summarise(lines: list[str], top: int) -> list[str]:
    self_time: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    for line in lines:
        line = line.strip()
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = stack.split(";")
        who = role(frames)
        code = [name(f) for f in frames if not f.startswith("process ")]
        if not code:
            continue
        if code[-1].startswith(IDLE_LEAVES):
            totals["idle (waiting threads)"] += n
            continue
        totals[who] += n
        self_time[who][code[-1]] += n
        for frame in set(code):
            inclusive[who][frame] += n
    out = []
    grand = sum(n for who, n in totals.items() if not who.startswith("idle")) or 1
    for who, total in totals.most_common():
        if who.startswith("idle"):
            out.append(f"## {who}: {total} samples, not counted below")
            continue
        out.append(f"## {who}: {total} samples ({100 * total / grand:.1f} % of all)")
        out.append("self:")
        for frame, n in self_time[who].most_common(top):
            out.append(f"  {100 * n / grand:5.1f} %  {frame}")
        out.append("inclusive (project frames):")
        shown = 0
        for frame, n in inclusive[who].most_common():
            if "cloudp2p/" in frame or "bench/" in frame:
                out.append(f"  {100 * n / grand:5.1f} %  {frame}")
                shown += 1
                if shown >= top:
                    break
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_top", description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    with open(args.path, encoding="utf-8", errors="replace") as f:
        print("\n".join(summarise(f.readlines(), args.top)))


if __name__ == "__main__":
    main()
