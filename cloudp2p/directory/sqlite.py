"""The SQLite backend: one database file shared by the servers of one machine.

WAL mode lets readers run beside the one writer; write transactions start with
``BEGIN IMMEDIATE`` so that they take the write lock at once (a deferred
transaction that upgrades from read to write can fail with "database is locked"
no matter how long it waits); ``busy_timeout`` makes a writer wait for the lock
instead of failing at once. ``synchronous=FULL``: a committed transaction
survives a power cut, not only a killed process.

The file holds password and token hashes, thumbnails and queued messages: it
is created 0600 (SQLite gives its -wal and -shm files the same mode) in a
folder created 0700; an existing file that others can read is tightened.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from cloudp2p.directory import db


class SQLiteDialect:
    name = "sqlite"
    placeholder = "?"
    for_update = ""
    types = {
        "id": "TEXT",
        "name": "TEXT",
        "text": "TEXT",
        "blob": "BLOB",
        "time": "REAL",
        "int": "INTEGER",
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
    }

    def __init__(self, path: str, *, busy_timeout: float = 10.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout

    def connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        _private_file(self.path)
        # isolation_level=None: the module issues no BEGIN of its own; begin() does.
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def begin(self, conn: sqlite3.Connection, write: bool) -> None:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def sql(self, text: str) -> str:
        return text

    def classify(self, error: BaseException) -> str:
        if isinstance(error, sqlite3.IntegrityError):
            return db.CONFLICT
        if isinstance(error, sqlite3.OperationalError):
            message = str(error).lower()
            if "locked" in message or "busy" in message:
                return db.RETRY
        return db.FATAL

    def upsert(self, table: str, key: str, columns: list[str]) -> str:
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
        return f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT ({key}) DO UPDATE SET {updates}"

    def schema_lock(self, tx: Any) -> None:
        """Migrations run in a ``BEGIN IMMEDIATE`` transaction: the write lock is the schema lock."""

    def schema_unlock(self, tx: Any) -> None:
        pass


def _private_file(path: str) -> None:
    """Create ``path`` 0600 if it is missing; take group and other access away if it has any."""
    if path == ":memory:" or path.startswith("file:"):
        return
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            st = os.stat(name)
        except FileNotFoundError:
            continue
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            os.chmod(name, st.st_mode & 0o700)
