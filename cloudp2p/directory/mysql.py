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

    def __init__(self, url: MySQLURL, *, busy_timeout: float = 10.0, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.busy_timeout = busy_timeout
        self.connect_timeout = connect_timeout
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
        conn.commit()
        return conn

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
