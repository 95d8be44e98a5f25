"""Transactions on a bounded pool of database threads, one connection per thread.

``Database.run(fn, *args, write=...)`` runs ``fn(tx, *args)`` in a transaction on a
pool thread and returns a Deferred with its result. The transaction commits if
``fn`` returns and rolls back if it raises, so a failure between two statements
(or a process killed in the middle) leaves nothing half written. Transient
failures (lock timeouts, deadlocks, SQLite busy, a lost MySQL connection, a
unique-key race) roll back and run ``fn`` again from the start, a bounded number
of times; ``fn`` must therefore only touch the database.

A backend is described by a *dialect* (``sqlite.SQLiteDialect``,
``mysql.MySQLDialect``): how to connect, how to begin a read or a write
transaction, which SQL types to use and how to classify its errors. SQL is
written once with ``?`` placeholders; the dialect converts it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet import threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from cloudp2p.ops import OpError

T = TypeVar("T")

# What to do after an exception: give up, run the transaction again, or reconnect first.
FATAL, RETRY, RECONNECT, CONFLICT = "fatal", "retry", "reconnect", "conflict"
MAX_ATTEMPTS = 8


def _unavailable() -> OpError:
    return OpError(
        "directory_unavailable",
        "this server cannot reach a working directory database node (down, or cut off from the "
        "majority of the cluster); another server may answer, or try again",
    )


class Dialect(Protocol):
    name: str

    def connect(self) -> Any: ...
    def begin(self, conn: Any, write: bool) -> None: ...
    def classify(self, error: BaseException) -> str: ...
    def sql(self, text: str) -> str: ...


class Tx:
    """The cursor a transaction function gets: ``execute``, ``one``, ``all``, ``many``."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self.dialect = dialect

    def execute(self, sql: str, params: tuple | list = ()) -> int:
        self._cursor.execute(self.dialect.sql(sql), tuple(params))
        return self._cursor.rowcount

    def many(self, sql: str, rows: list[tuple]) -> None:
        self._cursor.executemany(self.dialect.sql(sql), rows)

    def one(self, sql: str, params: tuple | list = ()) -> tuple | None:
        self._cursor.execute(self.dialect.sql(sql), tuple(params))
        return self._cursor.fetchone()

    def all(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        self._cursor.execute(self.dialect.sql(sql), tuple(params))
        return list(self._cursor.fetchall())

    @property
    def lastrowid(self) -> int:
        return self._cursor.lastrowid


class Database:
    log = Logger()

    def __init__(self, dialect: Dialect, reactor: Any, *, pool_size: int = 4) -> None:
        self.dialect = dialect
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=pool_size, maxthreads=pool_size, name=f"directory-{dialect.name}")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._started = False
        self._closed = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._pool.start()

    def close(self) -> None:
        """Wait for the running transactions, then close every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._pool.stop()
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may fail; nothing to do
                pass

    def run(self, fn: Callable[..., T], *args: Any, write: bool) -> Any:
        """Deferred firing with ``fn(tx, *args)``, run in one transaction on a pool thread."""
        if self._closed:
            raise RuntimeError("the directory database is closed")
        self.start()
        return threads.deferToThreadPool(self._reactor, self._pool, self.run_sync, fn, *args, write=write)

    def call(self, fn: Callable[..., T], *args: Any) -> Any:
        """Deferred firing with ``fn(*args)`` run on a pool thread, outside any transaction."""
        if self._closed:
            raise RuntimeError("the directory database is closed")
        self.start()
        return threads.deferToThreadPool(self._reactor, self._pool, fn, *args)

    # -- on a pool thread ----------------------------------------------------------------------

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        keep = getattr(self.dialect, "keep", None)
        if conn is not None and keep is not None and not keep(conn):
            self._drop_connection()  # moved to another node a while ago: go back to the first
            conn = None
        if conn is None:
            conn = self.dialect.connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def run_sync(self, fn: Callable[..., T], *args: Any, write: bool) -> T:
        """Run ``fn(tx, *args)`` in a transaction on the calling thread (a pool thread).

        A database that stays unreachable (every node down or outside the primary component)
        past the dialect's ``retry_budget`` gives ``OpError("directory_unavailable")``.
        """
        budget = getattr(self.dialect, "retry_budget", None)
        give_up = time.monotonic() + budget if budget is not None else None
        all_down = getattr(self.dialect, "all_down", None)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            conn = None
            try:
                if all_down is not None and getattr(self._local, "conn", None) is None and all_down():
                    raise _unavailable()
                conn = self._connection()
                self.dialect.begin(conn, write)
                cursor = conn.cursor()
                try:
                    result = fn(Tx(cursor, self.dialect), *args)
                finally:
                    cursor.close()
                conn.commit()
                return result
            except OpError:
                self._rollback(conn)
                raise
            except Exception as e:
                kind = self.dialect.classify(e)
                if kind == RECONNECT:
                    failed = getattr(self.dialect, "connection_failed", None)
                    if failed is not None and conn is not None:
                        failed(conn)
                    self._drop_connection()
                else:
                    self._rollback(conn)
                out_of_time = give_up is not None and time.monotonic() > give_up
                if kind == RECONNECT and (attempt == MAX_ATTEMPTS or out_of_time):
                    raise _unavailable() from e
                if kind == FATAL or attempt == MAX_ATTEMPTS or out_of_time:
                    raise
                # Back off a little, with jitter, so that two racing servers do not collide again.
                time.sleep(min(0.5, 0.005 * 2**attempt) * random.random())
        raise AssertionError("unreachable")

    def _rollback(self, conn: Any) -> None:
        if conn is None:
            return
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001 - the connection is broken: start afresh next time
            self._drop_connection()
