"""The ``boundary`` target of ``make fuzz``: the attacks of issue 11 against the real rig.

Where the other targets send malformed input, this one sends *well-formed* input from
the wrong place, as an attacker on the same network would (raw sockets, 127.0.0.0/8 only):

- ``spoofed_from_server``: a reply, garbage, a request or a cookie challenge whose source is
  another server's client or cluster socket, sent to a server's client socket (the reply loop
  of finding 2);
- ``spoofed_source``: valid requests of every kind from made-up addresses that never proved
  they receive there (finding 3: only a cookie challenge, never more bytes than arrived);
- ``replayed_id``: the ids of a victim's real ``sign_in`` and ``list_online`` sent again by
  the attacker, with the attacker's own valid cookie (finding 1: ``request_id_taken``, the
  kept reply goes only to the victim);
- ``reflected_reply``: the victim's real replies and cookies sent back at the servers, from
  the attacker and spoofed from another server, and at alice's peer port;
- ``peer_spoofed``: share requests from made-up senders with forged signatures, from made-up
  addresses, to alice's peer port (finding 8: a few directory lookups, not one each).

Failures: a process dies or stops answering; a server keeps counting after the attack ended
(a loop: more than ``LOOP_SLACK`` refusals per server in the quiet ``QUIET`` seconds); the
attacker gets a successful reply to a replayed id; alice's daemon makes more directory
lookups than its limit allows; nothing was counted as refused.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
import uuid
from typing import Any

from bench.fuzz_net import (
    CLIENT_SOCKET_REFUSALS,
    PASSWORD,
    ControlConnection,
    Rig,
    TargetResult,
    _finish,
    control_counters,
)
from cloudp2p.client.daemon import LOOKUP_BURST, LOOKUP_INTERVAL
from cloudp2p.client.peer import PeerMessage, new_message_id
from cloudp2p.directory.token_seal import ReplyKey
from cloudp2p.encryption.keys import UserKeys
from cloudp2p.testing.rawudp import RawClient, parse, request_bytes, spoof_udp

QUIET = 1.5  # seconds after the attack in which no server may keep counting refusals
LOOP_SLACK = 5
OPS = ("ping", "status", "list_online", "lookup_user", "heartbeat", "fetch_queued", "sign_in", "encrypt")


def _refusals(rig: Rig) -> dict[int, int]:
    assert rig.cloud is not None
    views = rig.cloud.statuses(timeout=2.0)
    return {sid: sum(v["counters"].get(k, 0) for k in CLIENT_SOCKET_REFUSALS) for sid, v in views.items()}


def _victim(rig: Rig) -> tuple[RawClient, list[bytes], list[bytes], list[tuple[str, dict[str, Any]]]]:
    """A user who signs in and lists who is online: (socket, its requests, replies it got, id+args)."""
    assert rig.cloud is not None
    servers = rig.cloud.client_list
    victim = RawClient()
    name = "vic" + secrets.token_hex(5)
    victim.result(
        servers,
        "register",
        {"username": name, "password": PASSWORD, "keys": UserKeys.generate().public.to_json()},
        timeout=20.0,
    )
    key = ReplyKey()
    sign_in_id = secrets.token_hex(16)
    args = {"username": name, "password": PASSWORD, **key.args()}
    reply = victim.call(servers, "sign_in", args, rid=sign_in_id, timeout=20.0)
    assert reply is not None and reply["body"]["ok"], reply
    result = reply["body"]["result"]
    token = result["token"] if "token" in result else key.open(result)
    list_id = secrets.token_hex(16)
    page = victim.call(servers, "list_online", {"token": token}, rid=list_id, timeout=5.0)
    assert page is not None and page["body"]["ok"], page
    replies = [json.dumps(r, separators=(",", ":")).encode() for r in (reply, page)]
    replies += [json.dumps({"v": 1, "t": "cookie", "cookie": c}).encode() for c in victim.cookies.values()]
    requests = [
        request_bytes("sign_in", args, rid=sign_in_id),
        request_bytes("list_online", {"token": token}, rid=list_id),
    ]
    return victim, requests, replies, [(sign_in_id, args), (list_id, {"token": token})]


def fuzz_boundary(rig: Rig, count: int, seconds: float, seed: int) -> TargetResult:
    assert rig.cloud is not None
    started, deadline = time.monotonic(), time.monotonic() + seconds
    result = TargetResult("boundary")
    rng = random.Random(seed)
    cloud = rig.cloud
    servers = cloud.client_list
    server_sources = servers + list(cloud.cluster_addresses.values())
    alice = rig.clients["alice"]
    peer = ("127.0.0.1", rig.peer_ports["alice"])
    victim, requests, replies, ids = _victim(rig)
    attacker = RawClient()
    for server in servers:
        attacker.prove(server)
    forger = UserKeys.generate()
    conn = ControlConnection(os.path.join(alice.home, "control.sock"))
    before_peer = control_counters(conn)
    before = _refusals(rig)
    garbage = [b"x" * 70, b"{}", b"[" * 100]

    def spoofed_address() -> tuple[str, int]:
        return (
            f"127.{rng.randrange(1, 255)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            rng.randrange(1024, 65535),
        )

    def one() -> str:
        r = rng.random()
        if r < 0.25:
            src, dst = rng.sample(server_sources, 1)[0], rng.choice(servers)
            if src == dst:
                return "skipped"
            spoof_udp(src, dst, rng.choice(replies + garbage + requests))
            return "spoofed_from_server"
        if r < 0.45:
            op = rng.choice(OPS)
            spoof_udp(spoofed_address(), rng.choice(servers), request_bytes(op, {"token": "A" * 43}))
            return "spoofed_source"
        if r < 0.6:
            rid, args = rng.choice(ids)
            op = "sign_in" if "username" in args else "list_online"
            server = rng.choice(servers)
            attacker.send(request_bytes(op, args, rid=rid, cookie=attacker.cookies.get(server)), server)
            return "replayed_id"
        if r < 0.8:
            data = rng.choice(replies)
            target = rng.choice([*servers, peer])
            if rng.random() < 0.5:
                attacker.send(data, target)
            else:
                spoof_udp(rng.choice(server_sources), target, data)
            return "reflected_reply"
        body = {
            "request_id": secrets.token_hex(4),
            "image_id": str(uuid.uuid4()),
            "views": 1,
            "kind": "share",
            "used": 0,
        }
        sender = f"nobody{rng.randrange(10**9)}"
        msg = PeerMessage("share_request", new_message_id(), sender, "alice", time.time(), body)
        spoof_udp(spoofed_address(), peer, msg.signed_by(forger).encode())
        return "peer_spoofed"

    attack_started = time.monotonic()
    while result.sent < count and time.monotonic() < deadline:
        for _ in range(min(100, count - result.sent)):
            kind = one()
            if kind == "skipped":
                continue
            result.kinds[kind] += 1
            result.sent += 1
        attacker.receive(0.02)
        time.sleep(0.02)
    attack_seconds = time.monotonic() - attack_started
    time.sleep(2.0)
    got = attacker.receive(0.2)
    settled = _refusals(rig)
    time.sleep(QUIET)
    quiet = _refusals(rig)
    after_peer = control_counters(conn)
    # -- checks -------------------------------------------------------------------------------------
    taken = [d for d, _ in got if (parse(d) or {}).get("t") == "rep"]
    leaked = [
        d
        for d in taken
        if (parse(d) or {}).get("id") in {rid for rid, _ in ids}
        and (parse(d) or {}).get("body", {}).get("ok")
    ]
    if leaked:
        result.failures.append(f"{len(leaked)} successful replies to replayed ids reached the attacker")
    grown = {sid: quiet.get(sid, 0) - settled.get(sid, 0) for sid in settled}
    result.extra["loop_counter_after_quiet"] = max(grown.values()) if grown else 0
    if any(n > LOOP_SLACK for n in grown.values()):
        result.failures.append(f"servers kept counting after the attack ended (a loop?): {grown}")
    if "peer_guard" not in after_peer:
        result.failures.append("alice's daemon reports no peer_guard counters (no limits on lookups?)")
    guard = after_peer.get("peer_guard", {})
    lookups = guard.get("directory_lookups", 0) - before_peer.get("peer_guard", {}).get(
        "directory_lookups", 0
    )
    allowed = LOOKUP_BURST + (attack_seconds + 3.0) / LOOKUP_INTERVAL + 2
    result.extra["peer_lookups"] = lookups
    result.extra["peer_lookups_allowed"] = int(allowed)
    if lookups > allowed:
        result.failures.append(
            f"alice made {lookups} directory lookups for spoofed senders (at most {allowed:.0f})"
        )
    server_refused = sum(settled.values()) - sum(before.get(s, 0) for s in settled)
    peer_refused = (after_peer["peer_rejected"] - before_peer["peer_rejected"]) + (
        after_peer["peer_dropped"] - before_peer["peer_dropped"]
    )
    result.extra["server_refused"] = server_refused
    result.extra["peer_refused"] = peer_refused
    result.rejected = server_refused + peer_refused
    result.processed = (after_peer["peer_received"] - before_peer["peer_received"]) + server_refused
    # -- still alive and answering ------------------------------------------------------------------------
    result.alive = alice.alive and all(s.alive for s in cloud.servers.values())
    probe = RawClient()
    try:
        reply = probe.call(servers, "ping", timeout=5.0)
        alice_status = conn.call("status", {}, rid=5)
        result.answers = bool(reply and reply["body"]["ok"] and alice_status and alice_status.get("ok"))
    finally:
        probe.close()
        attacker.close()
        victim.close()
        conn.close()
    return _finish(result, started)
