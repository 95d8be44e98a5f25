"""Several database nodes (a Galera cluster): config, choosing and leaving a node, retries,
``directory_unavailable``, failback and the cluster-wide schema lock.

The node-failure paths run against the real MariaDB on loopback with a node that refuses
connections listed first; Galera itself (a node killed, a node outside the primary component,
certification failures, IST) is exercised across real hosts in tests/hosts/.
"""

from __future__ import annotations

import socket
import threading
import time

import pymysql
import pytest
import pytest_twisted

from cloudp2p.config import Schema
from cloudp2p.directory import db, default_section, make_dialect, open_store
from cloudp2p.directory.config import SECTION, check_section, mysql_nodes, parse_mysql_url
from cloudp2p.directory.mysql import MySQLDialect
from cloudp2p.directory.schema import LATEST, migrate_database
from cloudp2p.errors import ConfigError
from cloudp2p.ops import OpError
from tests.directory.conftest import call


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connecting is refused at once
    return port


# -- config -----------------------------------------------------------------------------------


def test_urls_lists_the_nodes_in_order():
    section = default_section(
        backend="mysql", urls=["mysql://u:p@10.0.0.2/cp", "mysql://u:p@10.0.0.1:3307/cp"]
    )
    nodes = mysql_nodes(section)
    assert [(n.host, n.port) for n in nodes] == [("10.0.0.2", 3306), ("10.0.0.1", 3307)]
    assert [n.host for n in mysql_nodes(default_section(backend="mysql"))] == ["127.0.0.1"]


@pytest.mark.parametrize(
    "urls, fragment",
    [
        (["mysql://u@10.0.0.1/a", "mysql://u@10.0.0.2/b"], "same database"),
        (["mysql://u@10.0.0.1/a", "mysql://u@10.0.0.1:3306/a"], "twice"),
        (["http://10.0.0.1/a"], "expected a URL"),
        ([3306], "URL string"),
    ],
)
def test_bad_urls_are_refused_naming_the_key(urls, fragment):
    with pytest.raises(ConfigError) as info:
        Schema((SECTION,)).validate({"directory": {"urls": urls}}, "s.toml")
    assert "[directory] urls" in str(info.value) and fragment in str(info.value)


def test_url_and_urls_together_are_refused():
    section = default_section(backend="mysql", url="mysql://u@10.0.0.9/a", urls=["mysql://u@10.0.0.1/a"])
    with pytest.raises(ConfigError, match="either url"):
        check_section(section, "s.toml")


# -- errors: which are retried where ------------------------------------------------------------


@pytest.mark.parametrize(
    "code, kind",
    [
        (1213, db.RETRY),  # deadlock, and Galera's certification failure at commit
        (1047, db.RECONNECT),  # WSREP has not yet prepared node for application use
        (1180, db.RECONNECT),  # replication failed during COMMIT
        (2013, db.RECONNECT),  # lost connection (node killed)
        (1062, db.CONFLICT),
        (1045, db.FATAL),  # access denied: a configuration error, not a node failure
    ],
)
def test_galera_errors_are_classified(code, kind):
    dialect = MySQLDialect(parse_mysql_url("mysql://u@127.0.0.1/a"))
    assert dialect.classify(pymysql.err.OperationalError(code, "x")) == kind


class _FlakyDialect:
    """A dialect whose transactions fail with ``errors`` (one per attempt) before they work."""

    name = "fake"
    retry_budget = 30.0

    def __init__(self, errors):
        self.errors = list(errors)
        self.failed: list[object] = []
        self.connections = 0

    def connect(self):
        self.connections += 1
        return _FakeConn(self)

    def begin(self, conn, write):
        if self.errors:
            raise self.errors.pop(0)

    def classify(self, error):
        return MySQLDialect.classify(None, error)  # the real classification

    def sql(self, text):
        return text

    def connection_failed(self, conn):
        self.failed.append(conn)


class _FakeConn:
    def __init__(self, dialect):
        self.dialect = dialect

    def cursor(self):
        return _FakeCursor()

    def commit(self):
        pass

    def rollback(self):
        pass

    def close(self):
        pass


class _FakeCursor:
    def close(self):
        pass


def test_a_node_leaving_the_primary_component_moves_the_transaction_to_a_new_connection():
    dialect = _FlakyDialect([pymysql.err.OperationalError(1047, "WSREP has not yet prepared node")])
    database = db.Database(dialect, reactor=None, pool_size=1)
    assert database.run_sync(lambda tx: "done", write=True) == "done"
    assert dialect.connections == 2 and len(dialect.failed) == 1


def test_a_certification_failure_runs_the_transaction_again_on_the_same_node():
    dialect = _FlakyDialect([pymysql.err.OperationalError(1213, "Deadlock found")] * 2)
    database = db.Database(dialect, reactor=None, pool_size=1)
    assert database.run_sync(lambda tx: "done", write=True) == "done"
    assert dialect.connections == 1 and dialect.failed == []


def test_no_node_answering_is_directory_unavailable_not_an_internal_error():
    dialect = _FlakyDialect([pymysql.err.OperationalError(2003, "can't connect")] * 20)
    database = db.Database(dialect, reactor=None, pool_size=1)
    with pytest.raises(OpError) as info:
        database.run_sync(lambda tx: "done", write=True)
    assert info.value.code == "directory_unavailable"


def test_retrying_stops_when_the_failover_budget_is_spent():
    dialect = _FlakyDialect([pymysql.err.OperationalError(2013, "lost")] * 20)
    dialect.retry_budget = 0.0
    database = db.Database(dialect, reactor=None, pool_size=1)
    with pytest.raises(OpError):
        database.run_sync(lambda tx: "done", write=True)
    assert dialect.connections == 1


# -- real MariaDB: a dead first node ------------------------------------------------------------


@pytest.fixture
def two_nodes(mysql_url_factory):
    """A refused node first, the real server second (same database)."""
    real = mysql_url_factory()
    dead = real.replace("127.0.0.1:3306", f"127.0.0.1:{_closed_port()}")
    assert dead != real
    return {"backend": "mysql", "urls": [dead, real], "connect_timeout": 1.0}


@pytest.mark.mysql
@pytest_twisted.ensureDeferred
async def test_a_dead_first_node_is_skipped_and_the_store_works(two_nodes):
    from twisted.internet import reactor

    store = open_store(default_section(**two_nodes), reactor)
    try:
        await store.when_ready()
        reply = await call(
            store,
            "register",
            {"username": "nodes", "password": "password-1", "keys": _keys()},
            request_id="r1",
        )
        again = await call(
            store,
            "register",
            {"username": "nodes", "password": "password-1", "keys": _keys()},
            request_id="r1",
        )
        assert again == reply  # the journal still answers a re-run with the first reply
        dialect = store.db.dialect
        assert dialect.counters["failovers"] >= 1 and dialect.counters["node_failures"] >= 1
        # the dead node is then tried last, not first: no second connect timeout per connection
        assert dialect._order() == [1, 0]
    finally:
        await store.close()


@pytest.mark.mysql
def test_a_connection_on_another_node_goes_home_after_failback_interval(two_nodes):
    section = default_section(**{**two_nodes, "urls": list(reversed(two_nodes["urls"]))})
    dialect = make_dialect(section)  # the real node first now, the dead one second
    dialect.create_database()
    conn = dialect.connect()
    try:
        assert conn.cloudp2p_node == 0 and dialect.keep(conn)
        conn.cloudp2p_node = 1  # pretend it had moved to the second node long ago
        conn.cloudp2p_opened = time.monotonic() - dialect.failback_interval - 1
        assert not dialect.keep(conn)
        dialect._mark_down(0)  # home is down: stay where it works
        assert dialect.keep(conn)
    finally:
        conn.close()


def test_every_node_dead_gives_directory_unavailable_quickly():
    from twisted.internet import reactor

    urls = [f"mysql://root@127.0.0.1:{port}/x" for port in {_closed_port(), _closed_port() + 1}]
    dialect = make_dialect(default_section(backend="mysql", urls=urls, connect_timeout=1.0))
    database = db.Database(dialect, reactor, pool_size=1)
    started = time.monotonic()
    with pytest.raises(OpError) as info:
        database.run_sync(lambda tx: 1, write=True)
    assert info.value.code == "directory_unavailable"
    assert time.monotonic() - started < 5


# -- the schema lock is a replicated row, not a node-local named lock ---------------------------


@pytest.mark.mysql
def test_schema_lease_blocks_a_second_migrator_until_released(mysql_url_factory):
    url = mysql_url_factory()
    section = default_section(backend="mysql", url=url)
    first, second = make_dialect(section), make_dialect(section)
    assert migrate_database(first) == (0, LATEST)
    holder = first.connect()
    first.schema_lock(db.Tx(holder.cursor(), first))  # first holds the lease (as if migrating)
    done: list[tuple[int, int]] = []
    waiter = threading.Thread(target=lambda: done.append(migrate_database(second)))
    waiter.start()
    time.sleep(1.0)
    assert done == []  # waits for the lease, which lives in a table every node replicates
    first.schema_unlock(None)
    waiter.join(30)
    holder.close()
    assert done == [(LATEST, LATEST)]


@pytest.mark.mysql
def test_an_expired_lease_of_a_dead_migrator_is_taken_over(mysql_url_factory):
    url = mysql_url_factory()
    dialect = make_dialect(default_section(backend="mysql", url=url))
    assert migrate_database(dialect) == (0, LATEST)
    conn = dialect.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO schema_lock (id, holder, expires) VALUES (1, 'dead', %s)", (time.time() - 1,)
            )
        conn.commit()
    finally:
        conn.close()
    assert migrate_database(dialect) == (LATEST, LATEST)


def _keys() -> dict[str, str]:
    import base64
    import os

    return {
        "x25519": base64.b64encode(os.urandom(32)).decode(),
        "ed25519": base64.b64encode(os.urandom(32)).decode(),
    }


def test_every_node_failed_just_now_answers_at_once_without_connecting():
    """A server cut off with its node must not queue requests behind connect timeouts."""
    dialect = _FlakyDialect([])
    dialect.all_down = lambda: True
    database = db.Database(dialect, reactor=None, pool_size=1)
    with pytest.raises(OpError) as info:
        database.run_sync(lambda tx: "done", write=True)
    assert info.value.code == "directory_unavailable" and dialect.connections == 0


@pytest.mark.mysql
def test_all_down_is_true_only_while_every_node_is_marked(two_nodes):
    dialect = make_dialect(default_section(**two_nodes))
    assert not dialect.all_down()
    dialect._mark_down(0)
    assert not dialect.all_down()
    dialect._mark_down(1)
    assert dialect.all_down()


def test_a_broken_connection_sends_the_next_one_elsewhere_but_is_no_dead_node():
    """A killed connection (fenced, or its node left the primary component) says nothing about the
    next connect: the node is tried last, but ``all_down`` needs connects that failed."""
    from types import SimpleNamespace

    for urls in (["mysql://u@127.0.0.1/a"], ["mysql://u@127.0.0.1/a", "mysql://u@127.0.0.2/a"]):
        dialect = MySQLDialect([parse_mysql_url(u) for u in urls])
        for index in range(len(urls)):
            dialect.connection_failed(SimpleNamespace(cloudp2p_node=index))
        assert not dialect.all_down()
        assert dialect.counters["broken_connections"] == len(urls)
    dialect = MySQLDialect([parse_mysql_url(u) for u in urls])
    dialect.connection_failed(SimpleNamespace(cloudp2p_node=0))
    assert dialect._order() == [1, 0] and not dialect.all_down()


def test_a_causality_wait_that_times_out_at_begin_moves_to_another_node():
    """BEGIN with wsrep_sync_wait gives 1205 when the node lags: not a lock conflict, a node problem."""
    dialect = MySQLDialect([parse_mysql_url("mysql://u@10.0.0.1/a"), parse_mysql_url("mysql://u@10.0.0.2/a")])

    class Lagging:
        host, port = "10.0.0.1", 3306

        def begin(self):
            raise pymysql.err.OperationalError(1205, "Lock wait timeout exceeded; try restarting transaction")

    with pytest.raises(pymysql.err.OperationalError) as info:
        dialect.begin(Lagging(), True)
    assert dialect.classify(info.value) == db.RECONNECT
    single = MySQLDialect(parse_mysql_url("mysql://u@10.0.0.1/a"))
    with pytest.raises(pymysql.err.OperationalError) as info:
        single.begin(Lagging(), True)
    assert single.classify(info.value) == db.RETRY  # one server: a plain lock wait timeout
