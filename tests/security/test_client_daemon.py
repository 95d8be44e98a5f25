"""Findings 8 and the pinned keys, against real client daemons (twistd) on the real security cloud.

The attacker sends raw UDP datagrams to a daemon's peer port, from source addresses it makes up
(``spoof_udp``); the daemons are driven with the real `cloudp2p` command.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
import uuid

import pytest

from cloudp2p.client.cli import DaemonConnection
from cloudp2p.client.daemon import LOOKUP_BURST
from cloudp2p.client.peer import PeerMessage, new_message_id
from cloudp2p.encryption.keys import UserKeys
from cloudp2p.testing.client import ClientProcess
from cloudp2p.testing.rawudp import spoof_udp
from tests.security.conftest import PASSWORD, fresh_name


def _counters(client: ClientProcess) -> dict:
    """The daemon's listener counters (a control-socket command the CLI does not offer)."""
    conn = DaemonConnection(os.path.join(client.home, "control.sock"), 10.0)
    try:
        return conn.call("counters", {}, lambda p: None)
    finally:
        conn.close()


@pytest.fixture
def clients(cloud):
    """A factory of signed-in client daemons: (process, username, peer port); stopped at teardown."""
    root = tempfile.mkdtemp(prefix="b11c-")
    made: list[ClientProcess] = []

    def make(label: str):
        c = ClientProcess(os.path.join(root, label), servers=cloud.client_list)
        c.init()
        c.start()
        made.append(c)
        port = c.wait_ready()
        name = fresh_name(label[:3])
        assert c.run("register", name, password=PASSWORD).ok
        assert c.run("login", name, password=PASSWORD).ok
        return c, name, port

    yield make
    for c in made:
        c.stop()
    if os.environ.get("KEEP_TMP", "") in ("", "0"):
        shutil.rmtree(root, ignore_errors=True)


def test_spoofed_peer_datagrams_from_made_up_senders_cost_a_few_lookups(cloud, clients):
    alice, name, port = clients("alice")
    forger = UserKeys.generate()
    sent = 300
    for i in range(sent):
        body = {"request_id": f"r{i}", "image_id": str(uuid.uuid4()), "views": 1, "kind": "share", "used": 0}
        msg = PeerMessage("share_request", new_message_id(), f"nobody{i}", name, time.time(), body)
        source = (f"127.0.{1 + i // 250}.{1 + i % 250}", 20000 + i)
        spoof_udp(source, ("127.0.0.1", port), msg.signed_by(forger).encode())
    deadline = time.monotonic() + 10.0
    while True:
        counters = _counters(alice)
        if counters["peer_received"] >= sent or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    guard = counters["peer_guard"]
    assert counters["peer_received"] >= sent * 0.9, counters
    # one lookup per made-up sender before issue 11; now the burst plus one a second
    assert guard.get("directory_lookups", 0) <= LOOKUP_BURST + 10, guard
    assert guard["refused_lookups_limited"] >= sent * 0.9 - LOOKUP_BURST - 10, guard
    assert counters["lookup_cache"] <= LOOKUP_BURST + 10
    assert alice.run("inbox").result["requests"] == []
    assert alice.run("status").ok  # the daemon still answers


def test_a_key_changed_in_the_directory_is_refused_with_exit_28_until_trusted(cloud, clients):
    alice, a_name, _ = clients("alice")
    bob, _, _ = clients("bob")
    image = str(uuid.uuid4())
    assert bob.run("request", a_name, image, "--views", "1").ok  # pins alice's keys
    # the directory (a malicious server, or alice on a new machine) now gives other keys
    new = UserKeys.generate().public.to_json()
    with sqlite3.connect(cloud.overrides["directory"]["path"], timeout=10.0) as db:
        db.execute(
            "UPDATE users SET x25519 = ?, ed25519 = ? WHERE username_key = ?",
            (new["x25519"], new["ed25519"], a_name.lower()),
        )
    refused = bob.run("request", a_name, image, "--views", "1")
    assert refused.code == 28, refused
    assert refused.error["type"] == "KeyChanged" and f"cloudp2p trust {a_name}" in refused.stderr
    trusted = bob.run("trust", a_name, json=False)
    assert trusted.ok and "NEW keys" in trusted.stdout, trusted
    assert bob.run("request", a_name, image, "--views", "1").ok
