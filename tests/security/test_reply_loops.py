"""Finding 2: one datagram with a forged source must not make two servers answer each other for ever."""

from __future__ import annotations

import json
import time

import pytest

from cloudp2p.testing.rawudp import spoof_udp
from tests.security.conftest import counters

PAYLOADS = {
    "garbage": b"hello",
    "reply": json.dumps(
        {
            "v": 1,
            "t": "rep",
            "id": "ab" * 16,
            "server": 1,
            "body": {"ok": False, "error": {"code": "x", "message": "y"}},
        }
    ).encode(),
    "bad_request": json.dumps({"v": 1, "t": "req", "id": "zz", "op": "ping", "args": {}}).encode(),
    "cookie": json.dumps({"v": 1, "t": "cookie", "cookie": "0.AAAA"}).encode(),
}


def _answered(view: dict[str, int]) -> int:
    """Every datagram the client socket answered or refused (whichever counters the server has)."""
    keys = (
        "bad_requests",
        "requests_received",
        "dropped_not_json",
        "dropped_replies",
        "dropped_from_servers",
        "cookie_challenges",
        "unproven_dropped",
        "error_replies_limited",
    )
    return sum(view.get(k, 0) for k in keys)


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_one_spoofed_datagram_does_not_start_a_reply_loop(cloud, kind):
    a, b = cloud.client_addresses[1], cloud.client_addresses[2]
    before = counters(cloud)
    spoof_udp(a, b, PAYLOADS[kind])  # "from" server 1's client socket, to server 2's
    time.sleep(1.0)
    after = counters(cloud)
    grown = {sid: _answered(after[sid]) - _answered(before[sid]) for sid in (1, 2)}
    bad = {sid: after[sid].get("bad_requests", 0) - before[sid].get("bad_requests", 0) for sid in (1, 2)}
    # Each status poll is one request; the spoofed datagram is at most one more.
    print(f"loop counter after one spoofed {kind} packet: bad_requests {bad}, datagrams handled {grown}")
    assert sum(bad.values()) <= 1, f"servers 1 and 2 answer each other: bad_requests grew by {bad}"
    assert all(n <= 4 for n in grown.values()), f"servers 1 and 2 answer each other: {grown}"
