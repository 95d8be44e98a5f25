"""Captured and forged server-to-server traffic against real servers.

``Relay`` sits on one link of a real cloud: a server's config names the relay's
port as a peer's cluster address, and the relay forwards every datagram to the
real peer, keeping a copy. ``capture_cluster`` writes the configs of a
``LocalCluster`` so that every server reaches every other through a relay.

``replay_scenario`` is the attack of issue 7: record real datagrams (heartbeats,
and the election traffic including COORDINATOR) in one term, make the cloud
move on (kill -9 of the coordinator, a new term, then its restart as a new
incarnation), replay everything recorded to every server and send forged
COORDINATOR claims of a far higher term; then check that no server changed its
coordinator or term and that the servers counted the datagrams as dropped.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from typing import Any

from cloudp2p.config import format_hostport
from cloudp2p.membership.messages import TAG_SIZE, Codec, Coordinator, Envelope, Heartbeat
from cloudp2p.testing.cluster import LocalCluster, dump_toml

Address = tuple[str, int]


class Relay:
    """Forwards datagrams from one port to ``target`` and records them (bounded)."""

    def __init__(self, target: Address, limit: int = 5000) -> None:
        self.target = target
        self.limit = limit
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.captured: list[bytes] = []
        self.times: list[float] = []  # time.monotonic() of each captured datagram
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def address(self) -> Address:
        return self.sock.getsockname()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(70_000)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if len(self.captured) < self.limit:
                self.captured.append(data)
                self.times.append(time.monotonic())
            try:
                self.sock.sendto(data, self.target)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def capture_cluster(
    cloud: LocalCluster, links: list[tuple[int, int]] | None = None
) -> dict[tuple[int, int], Relay]:
    """Put a relay on each ``(from, to)`` link (default: all) by rewriting the configs; before ``start``."""
    ids = sorted(cloud.servers)
    links = links or [(a, b) for a in ids for b in ids if a != b]
    relays: dict[tuple[int, int], Relay] = {}
    for a, b in links:
        relays[(a, b)] = Relay(cloud.cluster_addresses[b])
    for sid in ids:
        peers = []
        for p in ids:
            if p == sid:
                continue
            addr = relays[(sid, p)].address if (sid, p) in relays else cloud.cluster_addresses[p]
            peers.append(f"{p}@{format_hostport(addr)}")
        cloud.configs[sid]["cluster"]["peers"] = peers
        with open(cloud.servers[sid].config_path, "w", encoding="utf-8") as f:
            f.write(dump_toml(cloud.configs[sid]))
    return relays


def recipient_of(datagram: bytes) -> int | None:
    """The ``to`` field of a captured datagram (read without the secret; None if unreadable)."""
    import json

    try:
        obj = json.loads(datagram[:-TAG_SIZE])
        return int(obj["to"])
    except (ValueError, KeyError, TypeError):
        return None


def type_of(datagram: bytes) -> str:
    import json

    try:
        return str(json.loads(datagram[:-TAG_SIZE])["type"])
    except (ValueError, KeyError, TypeError):
        return "?"


def views(cloud: LocalCluster) -> dict[int, tuple[int, int | None]]:
    return {sid: (v["term"], v["coordinator"]) for sid, v in cloud.statuses(timeout=1.0).items()}


def drops(cloud: LocalCluster) -> dict[int, dict[str, int]]:
    return {sid: dict(v["cluster"]["counters"]["dropped"]) for sid, v in cloud.statuses(timeout=1.0).items()}


def replay_scenario(workdir: str, *, seed: int = 1, settle: float = 2.0) -> dict[str, Any]:
    """Run the scenario; returns the figures and ``ok`` (a dict the test and the bench both check)."""
    import random

    rng = random.Random(seed)
    cloud = LocalCluster(
        workdir,
        3,
        overrides={"directory": {"backend": "sqlite", "path": os.path.join(workdir, "dir.sqlite3")}},
    )
    relays = capture_cluster(cloud)
    out: dict[str, Any] = {"ok": False, "problems": []}
    try:
        cloud.start(60.0)
        first = cloud.wait_converged(30.0)
        time.sleep(1.0)  # a few heartbeats of the first term
        term0 = views(cloud)[first][0]
        # A new term: the coordinator dies, the others elect; then it comes back as a new incarnation.
        cloud.servers[first].kill()
        down_from = time.monotonic()
        second = cloud.wait_converged(30.0, members=set(cloud.servers) - {first})
        cloud.restart(first, 60.0)
        down_until = time.monotonic()
        cloud.wait_converged(30.0)
        time.sleep(1.0)
        before = views(cloud)
        out["term_first"], out["term_now"] = term0, before[second][0]
        out["coordinator_first"], out["coordinator_now"] = first, second
        captured = [d for r in relays.values() for d in r.captured]
        # Datagrams relayed to the dead server never reached it: replayed to it (the new
        # incarnation) they are late deliveries inside the replay window, not replays.
        undelivered = {
            d
            for (a, b), r in relays.items()
            if b == first
            for d, t in zip(r.captured, r.times, strict=True)
            if down_from <= t <= down_until
        }
        # Datagrams relayed to the killed server before it died were seen by its old incarnation
        # only: its new ReplayGuard has no memory of them, but they echo the old incarnation, so
        # they are refused as unfresh (docs/cluster-membership.md, Freshness). Counted for the record.
        before_restart = {
            d
            for (a, b), r in relays.items()
            if b == first
            for d, t in zip(r.captured, r.times, strict=True)
            if t < down_from
        }
        out["captured"] = len(captured)
        out["captured_undelivered"] = len(undelivered)
        out["captured_to_old_incarnation"] = len(before_restart)
        out["captured_by_type"] = {}
        for d in captured:
            t = type_of(d)
            out["captured_by_type"][t] = out["captured_by_type"].get(t, 0) + 1
        drops_before = drops(cloud)
        # Replay every recorded datagram to its own recipient and to the others.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = 0
        for i, d in enumerate(captured):
            for addr in cloud.cluster_addresses.values():
                s.sendto(d, addr)
                sent += 1
            if i % 100 == 0:
                time.sleep(0.01)
        # Forged claims: the coordinator role for a far higher term, under every member's id.
        forger = Codec(secrets.token_bytes(24), members=frozenset(cloud.servers))
        forged = 0
        for sender in cloud.servers:
            for to, addr in cloud.cluster_addresses.items():
                if to == sender:
                    continue
                for message in (
                    Coordinator(successors=[p for p in cloud.servers if p != sender]),
                    Heartbeat(load=0.0, coordinator=sender),
                ):
                    env = Envelope(
                        sender=sender,
                        recipient=to,
                        incarnation=2**50 + rng.randrange(1000),
                        seq=rng.randrange(1, 2**31),
                        term=before[to][0] + 1000,
                        message=message,
                    )
                    data = forger.encode(env)
                    s.sendto(data, addr)
                    s.sendto(data[:-TAG_SIZE] + bytes(TAG_SIZE), addr)  # zeroed tag
                    s.sendto(data[:-TAG_SIZE], addr)  # tag cut off
                    forged += 3
        s.close()
        time.sleep(settle)
        after = views(cloud)
        drops_after = drops(cloud)
        out["replayed"], out["forged"] = sent, forged
        out["views_before"] = {str(k): v for k, v in before.items()}
        out["views_after"] = {str(k): v for k, v in after.items()}
        delta: dict[str, int] = {}
        for sid in drops_after:
            for reason, n in drops_after[sid].items():
                delta[reason] = delta.get(reason, 0) + n - drops_before.get(sid, {}).get(reason, 0)
        out["dropped"] = delta
        if after != before:
            out["problems"].append(f"coordinator/term changed: {before} -> {after}")
        refused = sum(
            delta.get(k, 0)
            for k in ("replay", "unfresh", "misdirected", "forged", "own_message", "stale_term")
        )
        out["refused"] = refused
        out["accepted"] = sent + forged - refused
        # Every one must be refused now, including those the restarted server's previous life saw
        # and those sent to it while it was down (both echo an incarnation that is over).
        if refused < sent + forged:
            out["problems"].append(
                f"only {refused} of {sent + forged} replayed/forged datagrams counted as dropped "
                f"({len(undelivered)} sent to the dead server, "
                f"{len(before_restart)} seen by its previous life)"
            )
        alive = [sid for sid, p in cloud.servers.items() if p.alive]
        if len(alive) != 3:
            out["problems"].append(f"servers alive afterwards: {alive}")
        out["captured_datagrams"] = [d for d in captured if rng.random() < 0.5][:500]
        out["ok"] = not out["problems"]
        return out
    finally:
        cloud.stop()
        for r in relays.values():
            r.stop()


def replay_target(workdir: str, seconds: float, seed: int) -> Any:
    from bench.fuzz_net import TargetResult

    started = time.monotonic()
    result = TargetResult("cluster_replay")
    figures = replay_scenario(workdir, seed=seed)
    result.sent = figures.get("replayed", 0) + figures.get("forged", 0)
    result.kinds.update({"replay": figures.get("replayed", 0), "forged": figures.get("forged", 0)})
    result.rejected = sum(
        figures.get("dropped", {}).get(k, 0) for k in ("replay", "unfresh", "misdirected", "forged")
    )
    result.processed = sum(figures.get("dropped", {}).values())
    result.alive = not any("alive" in p for p in figures["problems"])
    result.answers = not any("changed" in p for p in figures["problems"])
    result.failures.extend(figures["problems"])
    result.extra.update({k: v for k, v in figures.items() if k not in ("ok", "problems")})
    result.seconds = round(time.monotonic() - started, 2)
    return result
