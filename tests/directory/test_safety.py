"""Concurrency and crash safety, on both backends.

Two ``Store`` objects on one database stand for two servers (separate connections, as separate
processes would have). The crash tests interrupt a transaction between its change and its journal
record: by an exception, and by SIGKILL of a process holding the open transaction.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from cloudp2p.directory import default_section
from cloudp2p.ops import OpError
from tests.directory.conftest import call, keys, new_user


def deferLater(seconds: float):
    return task.deferLater(reactor, seconds, lambda: None)


async def _users_named(store, name: str) -> list[tuple]:
    return await store.db.run(
        lambda tx: tx.all("SELECT id FROM users WHERE username_key = ?", (name.lower(),)), write=False
    )


@pytest_twisted.ensureDeferred
async def test_username_race_between_two_servers(make_store):
    a, b = make_store(), make_store()
    names = [f"race{i}_{uuid.uuid4().hex[:6]}" for i in range(6)]
    calls = []
    for name in names:
        for server in (a, b):
            calls.append(call(server, "register", {"username": name, "password": "password", "keys": keys()}))
    results = await defer.DeferredList(calls, consumeErrors=True)
    for i, name in enumerate(names):
        pair = results[2 * i : 2 * i + 2]
        wins = [r for ok, r in pair if ok]
        losses = [r.value for ok, r in pair if not ok]
        assert len(wins) == 1, (name, pair)
        assert len(losses) == 1 and isinstance(losses[0], OpError) and losses[0].code == "username_taken", (
            losses
        )
        assert await _users_named(a, name) == [(wins[0]["user_id"],)]


@pytest_twisted.ensureDeferred
async def test_one_request_run_by_two_servers_at_once(make_store):
    """The router re-assigned a request while the first server was still running it."""
    a, b = make_store(), make_store()
    for i in range(4):
        args = {"username": f"twice{i}", "password": "password", "keys": keys()}
        rid = str(uuid.uuid4())
        first, second = await defer.gatherResults(
            [call(a, "register", args, request_id=rid), call(b, "register", args, request_id=rid)]
        )
        assert first == second
        assert await _users_named(a, args["username"]) == [(first["user_id"],)]


@pytest.mark.parametrize("backend", [pytest.param("mysql", marks=pytest.mark.mysql)], indirect=True)
@pytest_twisted.ensureDeferred
async def test_request_committed_by_another_server_after_our_journal_check(make_store):
    """Server B checks the journal, then server A runs and commits the same request: B's change
    fails (the name is taken by A's run) and B must answer with A's recorded reply.

    MySQL only: its READ COMMITTED lets both transactions pass the journal check at once, while
    SQLite's ``BEGIN IMMEDIATE`` makes the second wait for the first before it reads anything.
    """
    import threading

    a, b = make_store(), make_store()
    b_checked, a_committed = threading.Event(), threading.Event()

    def hold_b(where: str) -> None:
        if where == "register:journal_checked":
            b_checked.set()
            assert a_committed.wait(20), "server A never committed"

    b.fault_hook = hold_b
    args = {"username": "late", "password": "password", "keys": keys()}
    rid = str(uuid.uuid4())
    second = call(b, "register", args, request_id=rid)
    for _ in range(200):
        if b_checked.is_set():
            break
        await deferLater(0.05)
    assert b_checked.is_set()
    first = await call(a, "register", args, request_id=rid)
    a_committed.set()
    assert await second == first
    assert await _users_named(a, "late") == [(first["user_id"],)]


@pytest_twisted.ensureDeferred
async def test_queue_message_race_keeps_order_and_counts(make_store):
    a, b = make_store(), make_store()
    owner = await new_user(a)
    sender = await new_user(b)
    calls = []
    for i in range(20):
        server = (a, b)[i % 2]
        args = {"token": sender["token"], "to": owner["user_id"], "kind": "image_request", "body": {"i": i}}
        calls.append(call(server, "queue_message", args, request_id=f"m{i}"))
        calls.append(call(server, "queue_message", args, request_id=f"m{i}"))  # a duplicate delivery
    replies = await defer.gatherResults(calls)
    assert [r["message_id"] for r in replies[0::2]] == [r["message_id"] for r in replies[1::2]]
    fetched = await call(a, "fetch_queued", {"token": owner["token"]})
    ids = [m["id"] for m in fetched["messages"]]
    assert ids == sorted(ids) and len(ids) == 20
    assert sorted(m["body"]["i"] for m in fetched["messages"]) == list(range(20))


@pytest.mark.parametrize("op", ["register", "queue_message", "publish_image"])
@pytest_twisted.ensureDeferred
async def test_failure_between_statements_leaves_nothing(store, op):
    from tests.directory.conftest import png_b64

    user = await new_user(store)
    before = await store.db.run(
        lambda tx: [
            tx.one(f"SELECT COUNT(*) FROM {t}")[0] for t in ("users", "messages", "images", "journal")
        ],
        write=False,
    )

    def boom(where: str) -> None:
        raise RuntimeError(f"injected failure in {where}")

    args = {
        "register": {"username": "halfway", "password": "password", "keys": keys()},
        "queue_message": {"token": user["token"], "to": user["user_id"], "kind": "k", "body": {}},
        "publish_image": {
            "token": user["token"],
            "image_id": str(uuid.uuid4()),
            "name": "n",
            "size": 1,
            "thumbnail": png_b64(),
        },
    }[op]
    store.fault_hook = boom
    with pytest.raises(RuntimeError, match="injected"):
        await call(store, op, args, request_id="r1")
    after = await store.db.run(
        lambda tx: [
            tx.one(f"SELECT COUNT(*) FROM {t}")[0] for t in ("users", "messages", "images", "journal")
        ],
        write=False,
    )
    assert after == before
    store.fault_hook = None
    first = await call(store, op, args, request_id="r1")
    assert await call(store, op, args, request_id="r1") == first


def _wait_line(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            return proc.stdout.readline().decode()
        if proc.poll() is not None:
            break
    return ""


@pytest_twisted.ensureDeferred
async def test_killed_in_the_middle_of_a_registration(make_store, database, tmp_path):
    """SIGKILL a process that has written the user row but not committed: nothing is left."""
    section = default_section(**{"scrypt_n": 1024, "pool_size": 1, **database})
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.directory.hold_transaction", json.dumps(attrs.asdict(section))]
        + ["rid-kill", "victim"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "child.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    try:
        line = _wait_line(proc, 60)
        assert line.startswith("HOLDING register"), (line, (tmp_path / "child.log").read_text())
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    store = make_store()
    assert await _users_named(store, "victim") == []
    # The retried request (as the router would re-assign it) now succeeds, exactly once.
    args = {"username": "victim", "password": "password", "keys": keys()}
    reply = await call(store, "register", args, request_id="rid-kill")
    assert await call(store, "register", args, request_id="rid-kill") == reply
    assert await _users_named(store, "victim") == [(reply["user_id"],)]
