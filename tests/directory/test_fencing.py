"""Regression (issue 7 stress run): a server stopped in the middle of a directory transaction.

With MySQL, a SIGSTOPped server keeps its row locks; every other server's transaction on those
rows waited until it came back (up to 20 s in the stress run: clients gave up after 10 s). Once the
cluster suspects the server, the others fence it: its connections are killed, its transactions
roll back, the locks are free.
"""

from __future__ import annotations

import threading
import time

import pymysql
import pytest

from cloudp2p.directory.config import parse_mysql_url
from cloudp2p.directory.mysql import MySQLDialect

pytestmark = pytest.mark.mysql


@pytest.fixture
def url(mysql_url_factory):
    from .conftest import mysql_admin

    raw = mysql_url_factory()
    parsed = parse_mysql_url(raw)
    mysql_admin(f"CREATE DATABASE IF NOT EXISTS `{parsed.database}`")
    conn = MySQLDialect(parsed).connect()
    with conn.cursor() as c:
        c.execute("CREATE TABLE t (k INT PRIMARY KEY, v INT) ENGINE=InnoDB")
        c.execute("INSERT INTO t VALUES (1, 0)")
    conn.commit()
    conn.close()
    return parsed


def test_fence_frees_the_locks_of_a_stopped_server(url):
    stopped = MySQLDialect(url, busy_timeout=5, owner=1).connect()
    other = MySQLDialect(url, busy_timeout=5, owner=2)
    stopped.begin()
    with stopped.cursor() as c:
        c.execute("UPDATE t SET v = 1 WHERE k = 1")  # holds the row lock, then "stops"

    result: dict[str, float] = {}

    def write() -> None:
        conn = other.connect()
        started = time.monotonic()
        conn.begin()
        with conn.cursor() as c:
            c.execute("UPDATE t SET v = 2 WHERE k = 1")
        conn.commit()
        result["waited"] = time.monotonic() - started
        conn.close()

    waiter = threading.Thread(target=write)
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive(), "the second writer should be waiting for the lock"
    assert other.fence(1) == 1
    waiter.join(timeout=4)
    assert not waiter.is_alive(), "the lock was not freed by the fence"
    assert result["waited"] < 3
    # The fenced server's transaction is gone: its connection is dead, its update rolled back.
    with pytest.raises(pymysql.err.MySQLError):
        with stopped.cursor() as c:
            c.execute("SELECT v FROM t WHERE k = 1")
    check = MySQLDialect(url).connect()
    with check.cursor() as c:
        c.execute("SELECT v FROM t WHERE k = 1")
        assert c.fetchone()[0] == 2
    check.close()


def test_fence_finds_only_that_servers_connections(url):
    mine = [MySQLDialect(url, owner=1).connect() for _ in range(3)]
    theirs = MySQLDialect(url, owner=2).connect()
    unmarked = MySQLDialect(url).connect()
    fencer = MySQLDialect(url, owner=3)
    assert fencer.fence(1) == 3
    assert fencer.fence(1) == 0  # already gone
    for conn in (theirs, unmarked):
        conn.ping(reconnect=False)  # still alive
    with pytest.raises(ValueError):
        fencer.fence(3)
    for conn in (*mine, theirs, unmarked):
        try:
            conn.close()
        except pymysql.err.Error:
            pass


def test_a_fenced_server_reconnects_and_keeps_answering_on_one_mariadb(url):
    """Regression (bench-stress --outages, 335 of 10,000 requests failed): a server SIGSTOPped in the
    middle of a transaction is fenced; on SIGCONT its killed connections must be replaced. They were
    taken for a dead database node: the only node was marked down, and every transaction of that
    server answered ``directory_unavailable`` for two seconds without trying to connect."""
    from concurrent.futures import ThreadPoolExecutor

    from cloudp2p.directory import db

    stopped = db.Database(MySQLDialect(url, busy_timeout=5, owner=1), reactor=None, pool_size=1)
    fencer = MySQLDialect(url, owner=2)
    idle = ThreadPoolExecutor(max_workers=1)  # a second pool thread of the stopped server
    runs: list[int] = []

    def bump(tx: db.Tx) -> int:
        runs.append(1)
        tx.execute("UPDATE t SET v = v + 1 WHERE k = 1")
        if len(runs) == 1:
            assert fencer.fence(1) == 2  # "stopped" here, holding the row lock: both connections killed
        return tx.one("SELECT v FROM t WHERE k = 1")[0]

    try:
        assert idle.submit(stopped.run_sync, lambda tx: tx.one("SELECT 1")[0], write=False).result(10) == 1
        assert stopped.run_sync(bump, write=True) == 1  # run again on a new connection, counted once
        assert len(runs) == 2
        # The other thread's connection was killed too: its next transaction reconnects as well.
        again = idle.submit(stopped.run_sync, lambda tx: tx.one("SELECT v FROM t")[0], write=False)
        assert again.result(10) == 1
        assert stopped.dialect.counters["broken_connections"] == 2
    finally:
        idle.submit(stopped.close).result(10)
        idle.shutdown()
