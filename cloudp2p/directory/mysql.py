"""The MySQL/MariaDB backend, through PyMySQL.

InnoDB tables in utf8mb4 with binary collation (text is compared and stored
exactly, byte for byte); READ COMMITTED isolation, so that a transaction that
lost a unique-key race and runs again sees the winner's row. The database named
in the URL is created when missing.
"""

from __future__ import annotations

from typing import Any

import pymysql
from pymysql.constants import CLIENT

from cloudp2p.directory import db
from cloudp2p.directory.config import MySQLURL

# Server error numbers (see the MariaDB error reference).
_RETRY = {1205, 1213}  # lock wait timeout, deadlock
_RECONNECT = {2003, 2006, 2013, 2055, 1927, 1053}  # can't connect, gone away, lost, shutdown
_CONFLICT = {1062, 1586}  # duplicate key
FENCE_SLOTS = 32  # at most this many directory connections per server (pool_size is far below)


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
        url: MySQLURL,
        *,
        busy_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        owner: int | None = None,
    ) -> None:
        self.url = url
        self.busy_timeout = busy_timeout
        self.connect_timeout = connect_timeout
        self.owner = owner  # the server id whose connections these are (for fencing), or None
        self._sql_cache: dict[str, str] = {}

    def _connect(self, database: str | None) -> pymysql.Connection:
        return pymysql.connect(
            host=self.url.host,
            port=self.url.port,
            user=self.url.user,
            password=self.url.password,
            database=database,
            charset="utf8mb4",
            autocommit=False,
            connect_timeout=self.connect_timeout,
            client_flag=CLIENT.FOUND_ROWS,
        )

    def create_database(self) -> None:
        conn = self._connect(None)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{self.url.database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
        finally:
            conn.close()

    def connect(self) -> pymysql.Connection:
        conn = self._connect(self.url.database)
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {max(1, int(self.busy_timeout))}")
            cursor.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
            if self.owner is not None:
                self._mark(cursor)
        conn.commit()
        return conn

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
        """Kill every connection of server ``owner`` (blocking); the number killed."""
        if owner == self.owner:
            raise ValueError("a server does not fence itself")
        conn = self._connect(self.url.database)
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
        conn.begin()

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

    def schema_lock(self, tx: Any) -> None:
        """DDL commits implicitly in MySQL, so migrations are serialised by a named lock instead."""
        got = tx.one("SELECT GET_LOCK(?, ?)", (self._lock_name(), 60))
        if not got or got[0] != 1:
            raise RuntimeError("could not take the schema lock within 60 s")

    def schema_unlock(self, tx: Any) -> None:
        tx.one("SELECT RELEASE_LOCK(?)", (self._lock_name(),))

    def _lock_name(self) -> str:
        return f"cloudp2p_schema_{self.url.database}"[:64]
