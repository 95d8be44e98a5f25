"""The MySQL/MariaDB backend, through PyMySQL: one server, or the nodes of a Galera cluster.

InnoDB tables in utf8mb4 with binary collation (text is compared and stored
exactly, byte for byte); READ COMMITTED isolation, so that a transaction that
lost a unique-key race and runs again sees the winner's row. The database named
in the URL is created when missing.

**Several nodes** (``[directory] urls``, a MariaDB Galera cluster, this server's
own node first): a new connection goes to the first node that answers and is
ready, skipping for ``NODE_RETRY`` seconds a node that just failed. A node that
dies (lost connection) or leaves the primary component (error 1047, "WSREP has
not yet prepared node for application use") makes the transaction run again on
the next node; a Galera certification failure (1213 at commit: another node
committed a conflicting change first) runs it again too; the request journal
keeps the effect single either way. A connection that moved away from the first
node goes back after ``failback_interval``. On a Galera node every transaction
starts with a causality wait (``wsrep_sync_wait = 1``): a server reads what any
other server committed on any node before, e.g. a user registered through another
server signs in at once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pymysql
from pymysql.constants import CLIENT

from cloudp2p.directory import db
from cloudp2p.directory.config import MySQLURL

# Server error numbers (see the MariaDB error reference).
_RETRY = {1205, 1213}  # lock wait timeout, deadlock (and Galera's certification failure)
# can't connect, gone away, lost, shutdown, server shutdown, WSREP not ready (not in the primary
# component), "Got error ... during COMMIT" (replication failed at commit)
_RECONNECT = {2003, 2006, 2013, 2055, 1927, 1053, 1047, 1180}
_CONFLICT = {1062, 1586}  # duplicate key
FENCE_SLOTS = 32  # at most this many directory connections per server (pool_size is far below)
NODE_RETRY = 2.0  # seconds a node that failed is tried only after the others
SCHEMA_LEASE = 120.0  # seconds a migrating server holds the schema lock before another may take it


class NodeNotReady(pymysql.err.OperationalError):
    """A Galera node that answers but is not in the primary component (or not synced yet)."""


class MySQLDialect:
    name = "mysql"
    placeholder = "%s"
    for_update = " FOR UPDATE"
    types = {
        "id": "VARCHAR(64)",
        "name": "VARCHAR(255)",
        "text": "MEDIUMTEXT",
        "blob": "MEDIUMBLOB",
        "time": "DOUBLE",
        "int": "BIGINT",
        "serial": "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
    }
    table_options = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"

    def __init__(
        self,
        url: MySQLURL | Sequence[MySQLURL],
        *,
        busy_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        owner: int | None = None,
        failback_interval: float = 30.0,
        failover_timeout: float = 5.0,
    ) -> None:
        self.nodes: tuple[MySQLURL, ...] = (url,) if isinstance(url, MySQLURL) else tuple(url)
        if not self.nodes:
            raise ValueError("no database node given")
        self.url = self.nodes[0]
        self.busy_timeout = busy_timeout
        self.connect_timeout = connect_timeout
        # A statement may wait busy_timeout for a lock, and a Galera commit a few seconds for a
        # silent node to be evicted; a connection to a node cut off by a partition would wait
        # for ever without a read timeout.
        self.read_timeout = busy_timeout + 10.0
        self.owner = owner  # the server id whose connections these are (for fencing), or None
        self.failback_interval = failback_interval
        self.retry_budget = failover_timeout  # seconds a transaction keeps trying (db.Database)
        self._sql_cache: dict[str, str] = {}
        self._down: dict[int, float] = {}  # node index -> monotonic time it may be tried first again
        self._unreachable: dict[int, float] = {}  # node index -> until when its failed connect counts
        self._down_lock = threading.Lock()
        self.counters = {"failovers": 0, "node_failures": 0, "failbacks": 0, "broken_connections": 0}
        self._lease_conn: pymysql.Connection | None = None
        self._lease_holder = ""

    def _connect(
        self, database: str | None, node: MySQLURL | None = None, timeout: float | None = None
    ) -> pymysql.Connection:
        node = node or self.url
        return pymysql.connect(
            host=node.host,
            port=node.port,
            user=node.user,
            password=node.password,
            database=database,
            charset="utf8mb4",
            autocommit=False,
            connect_timeout=timeout or self.connect_timeout,
            read_timeout=self.read_timeout,
            write_timeout=self.read_timeout,
            client_flag=CLIENT.FOUND_ROWS,
        )

    # -- choosing a node --------------------------------------------------------------------------

    def _order(self) -> list[int]:
        """Node indexes to try: the healthy ones in preference order, then those that just failed."""
        now = time.monotonic()
        with self._down_lock:
            down = {i for i, until in self._down.items() if until > now}
        indexes = range(len(self.nodes))
        return [i for i in indexes if i not in down] + [i for i in indexes if i in down]

    def _mark_down(self, index: int) -> None:
        """Connecting to node ``index`` failed (refused, timed out, not ready): try it last, and
        count it towards ``all_down``."""
        with self._down_lock:
            until = time.monotonic() + NODE_RETRY
            self._down[index] = until
            self._unreachable[index] = until
        self.counters["node_failures"] += 1

    def all_down(self) -> bool:
        """A connect to every node failed within the last ``NODE_RETRY`` seconds: answer at once,
        do not wait for connect timeouts again (a server cut off with its node would pile requests
        up). Only failed connects count: a connection that broke says nothing about the next one
        (a fenced server's connections were killed, the node is fine)."""
        now = time.monotonic()
        with self._down_lock:
            return all(self._unreachable.get(i, 0.0) > now for i in range(len(self.nodes)))

    def connection_failed(self, conn: Any) -> None:
        """``db.Database`` says ``conn`` broke (lost, killed by a fence, or its node left the primary
        component): the next connection tries the other nodes first, then this one again."""
        index = getattr(conn, "cloudp2p_node", None)
        if index is None:
            return
        with self._down_lock:
            self._down[index] = time.monotonic() + NODE_RETRY
        self.counters["broken_connections"] += 1

    def keep(self, conn: Any) -> bool:
        """False for a connection to another node than the first that is due to go home."""
        index = getattr(conn, "cloudp2p_node", 0)
        if index == 0 or len(self.nodes) == 1:
            return True
        if time.monotonic() - getattr(conn, "cloudp2p_opened", 0.0) < self.failback_interval:
            return True
        with self._down_lock:
            home_down = self._down.get(0, 0.0) > time.monotonic()
        if home_down:
            return True
        self.counters["failbacks"] += 1
        return False

    def _ready(self, conn: pymysql.Connection) -> bool:
        """Session set-up; False when the node is a Galera node outside the primary component."""
        with conn.cursor() as cursor:
            cursor.execute("SHOW VARIABLES LIKE 'wsrep_on'")
            row = cursor.fetchone()
            galera = bool(row) and str(row[1]).upper() == "ON"
            if galera:
                cursor.execute("SHOW STATUS LIKE 'wsrep_ready'")
                row = cursor.fetchone()
                if not row or str(row[1]).upper() != "ON":
                    return False
                cursor.execute("SET SESSION wsrep_sync_wait = 1")
        return True

    def connect(self) -> pymysql.Connection:
        """A set-up connection to the first node that answers and is ready (see the module doc)."""
        failures = []
        for index in self._order():
            node = self.nodes[index]
            try:
                conn = self._connect(node.database, node)
            except pymysql.err.MySQLError as e:
                if self.classify(e) == db.FATAL or len(self.nodes) == 1:
                    raise  # bad credentials, unknown database...: a configuration error
                failures.append(f"{node.host}:{node.port}: {e.args[-1] if e.args else e}")
                self._mark_down(index)
                continue
            try:
                if not self._ready(conn):
                    raise NodeNotReady(1047, f"node {node.host}:{node.port} is not in the primary component")
                self._session(conn)
            except pymysql.err.MySQLError as e:
                conn.close()
                if self.classify(e) == db.FATAL or len(self.nodes) == 1:
                    raise
                failures.append(f"{node.host}:{node.port}: {e.args[-1] if e.args else e}")
                self._mark_down(index)
                continue
            conn.cloudp2p_node = index
            conn.cloudp2p_opened = time.monotonic()
            if index != 0:
                self.counters["failovers"] += 1
            return conn
        raise pymysql.err.OperationalError(2003, "no directory node is ready: " + "; ".join(failures))

    def _session(self, conn: pymysql.Connection) -> None:
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {max(1, int(self.busy_timeout))}")
            cursor.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
            if self.owner is not None:
                self._mark(cursor)
        conn.commit()

    def create_database(self) -> None:
        conn = self.connect_server()
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{self.url.database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
        finally:
            conn.close()

    def connect_server(self) -> pymysql.Connection:
        """A connection without a database (to create it), to the first node that answers and is ready."""
        last: Exception | None = None
        for index in self._order():
            node = self.nodes[index]
            try:
                conn = self._connect(None, node)
            except pymysql.err.MySQLError as e:
                if self.classify(e) == db.FATAL:
                    raise
                last = e
                continue
            try:
                if self._ready(conn):
                    return conn
            except pymysql.err.MySQLError as e:
                last = e
            conn.close()
            last = last or NodeNotReady(1047, f"node {node.host}:{node.port} is not in the primary component")
        assert last is not None
        raise last

    # -- fencing ----------------------------------------------------------------------------------
    # A server that is stopped (SIGSTOP, a long stall, a partition) in the middle of a transaction
    # keeps its row locks: every other server's transaction on those rows waits until it comes
    # back, which may be much longer than a client waits. Once the cluster suspects that server,
    # any live server kills its connections (``fence``): MySQL rolls their transactions back and
    # the locks are free. To find them, each connection holds a named lock that says whose it is
    # (``IS_USED_LOCK`` gives the holder's connection id). A fenced server that was only slow
    # sees a lost connection and runs its transaction again (exactly-once through the journal).

    def _owner_lock(self, owner: int, slot: int) -> str:
        return f"{self.url.database[:40]}.cloudp2p.s{owner}.c{slot}"

    def _mark(self, cursor: Any) -> None:
        for slot in range(FENCE_SLOTS):
            cursor.execute("SELECT GET_LOCK(%s, 0)", (self._owner_lock(self.owner, slot),))
            row = cursor.fetchone()
            if row and row[0] == 1:
                return
        raise RuntimeError(f"more than {FENCE_SLOTS} directory connections for server {self.owner}")

    def fence(self, owner: int) -> int:
        """Kill every connection of server ``owner`` on every node that answers (blocking); the
        number killed. Named locks and connections are per node, so each node is asked."""
        if owner == self.owner:
            raise ValueError("a server does not fence itself")
        killed = 0
        errors: list[Exception] = []
        for node in self.nodes:
            try:
                killed += self._fence_on(node, owner)
            except pymysql.err.MySQLError as e:
                if len(self.nodes) == 1:
                    raise
                errors.append(e)
        if len(errors) == len(self.nodes):
            raise errors[0]
        return killed

    def _fence_on(self, node: MySQLURL, owner: int) -> int:
        conn = self._connect(self.url.database, node, timeout=min(self.connect_timeout, 2.0))
        killed = 0
        try:
            with conn.cursor() as cursor:
                names = [self._owner_lock(owner, slot) for slot in range(FENCE_SLOTS)]
                cursor.execute("SELECT " + ", ".join(["IS_USED_LOCK(%s)"] * len(names)), names)
                row = cursor.fetchone() or ()
                for connection_id in sorted({int(i) for i in row if i is not None}):
                    try:
                        cursor.execute(f"KILL CONNECTION {connection_id}")
                        killed += 1
                    except pymysql.err.MySQLError as e:
                        if not (e.args and e.args[0] == 1094):  # unknown thread: already gone
                            raise
        finally:
            conn.close()
        return killed

    def begin(self, conn: pymysql.Connection, write: bool) -> None:
        try:
            conn.begin()
        except pymysql.err.OperationalError as e:
            # On a Galera node BEGIN waits for the node to apply what the cluster committed before
            # (wsrep_sync_wait); a timeout there means this node lags or stalls, not a lock conflict:
            # try another node rather than this one again.
            if e.args and e.args[0] == 1205 and len(self.nodes) > 1:
                raise NodeNotReady(1047, f"causality wait timed out on {conn.host}:{conn.port}") from e
            raise

    def sql(self, text: str) -> str:
        converted = self._sql_cache.get(text)
        if converted is None:
            if "%" in text:
                raise ValueError("SQL for the directory must not contain '%'")
            converted = text.replace("?", "%s")
            self._sql_cache[text] = converted
        return converted

    def classify(self, error: BaseException) -> str:
        if isinstance(error, pymysql.err.InterfaceError):
            return db.RECONNECT
        if isinstance(error, pymysql.err.MySQLError) and error.args and isinstance(error.args[0], int):
            code = error.args[0]
            if code in _CONFLICT:
                return db.CONFLICT
            if code in _RETRY:
                return db.RETRY
            if code in _RECONNECT:
                return db.RECONNECT
        if isinstance(error, (ConnectionError, TimeoutError)):
            return db.RECONNECT
        return db.FATAL

    def upsert(self, table: str, key: str, columns: list[str]) -> str:
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        updates = ", ".join(f"{c} = VALUES({c})" for c in columns if c != key)
        return f"INSERT INTO {table} ({names}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {updates}"

    # -- migrations: once per cluster --------------------------------------------------------------
    # DDL commits at once in MySQL, so migrations are serialised by a lock, not a transaction. A
    # named lock (GET_LOCK) is local to one Galera node; the lock is therefore a row, whose
    # insert is replicated like any write: of two servers inserting it on two nodes, one commits
    # and the other gets a duplicate key or a certification failure, waits and then finds the
    # schema up to date. A server that dies while migrating leaves its row: the lease expires
    # after SCHEMA_LEASE seconds and another server takes over (every migration is re-runnable).

    def schema_lock(self, tx: Any) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_lock (id INTEGER NOT NULL PRIMARY KEY,"
            f" holder VARCHAR(64) NOT NULL, expires DOUBLE NOT NULL){self.table_options}"
        )
        self._lease_holder = uuid.uuid4().hex
        conn = self.connect()
        deadline = time.monotonic() + SCHEMA_LEASE + 30
        try:
            while True:
                try:
                    with conn.cursor() as cursor:
                        now = time.time()
                        cursor.execute("DELETE FROM schema_lock WHERE id = 1 AND expires < %s", (now,))
                        cursor.execute(
                            "INSERT INTO schema_lock (id, holder, expires) VALUES (1, %s, %s)",
                            (self._lease_holder, now + SCHEMA_LEASE),
                        )
                    conn.commit()
                    break
                except pymysql.err.MySQLError as e:
                    conn.rollback()
                    if self.classify(e) not in (db.CONFLICT, db.RETRY) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        except BaseException:
            conn.close()
            raise
        self._lease_conn = conn

    def schema_unlock(self, tx: Any) -> None:
        conn, self._lease_conn = self._lease_conn, None
        if conn is None:
            return
        try:
            with conn.cursor() as cursor:
                cursor.execute("DELETE FROM schema_lock WHERE id = 1 AND holder = %s", (self._lease_holder,))
            conn.commit()
        finally:
            conn.close()
