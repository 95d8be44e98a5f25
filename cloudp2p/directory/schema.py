"""The directory's schema and its migrations.

The database records the version of its schema in ``schema_version`` (one row).
``migrate`` applies, in order, every migration newer than that version and
records the new version, under a lock so that three servers starting at the
same moment do not race: in SQLite the ``BEGIN IMMEDIATE`` write lock (DDL is
transactional there: a failed migration leaves nothing), in MySQL a named lock
(``GET_LOCK``; MySQL commits DDL at once, so every statement is written to be
safe to run again: ``IF NOT EXISTS``). A database newer than this code is
refused rather than misused.

A migration is a list of tables and indexes written once with type names
(``{id}``, ``{text}``...) that each dialect maps to its own types. To change
the schema, append a migration; never edit one that has shipped.
"""

from __future__ import annotations

import time
from typing import Any

import attrs


@attrs.frozen
class Table:
    name: str
    columns: tuple[str, ...]  # "name {type} constraints", with {type} from the dialect
    indexes: tuple[tuple[str, str], ...] = ()  # (index name, "col, col")


@attrs.frozen
class Migration:
    version: int
    description: str
    tables: tuple[Table, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "users, sessions, presence, images, queued messages, request journal",
        (
            Table(
                "users",
                (
                    "id {id} NOT NULL PRIMARY KEY",
                    "username {id} NOT NULL",
                    "username_key {id} NOT NULL UNIQUE",
                    "password {name} NOT NULL",
                    "x25519 {id} NOT NULL",
                    "ed25519 {id} NOT NULL",
                    "created {time} NOT NULL",
                ),
            ),
            Table(
                "sessions",
                (
                    "token_hash {id} NOT NULL PRIMARY KEY",
                    "user_id {id} NOT NULL",
                    "created {time} NOT NULL",
                    "expires {time} NOT NULL",
                    "FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE",
                ),
                (("sessions_user", "user_id"), ("sessions_expires", "expires")),
            ),
            Table(
                "presence",
                (
                    "user_id {id} NOT NULL PRIMARY KEY",
                    "token_hash {id} NOT NULL",
                    "host {id} NOT NULL",
                    "port {int} NOT NULL",
                    "last_seen {time} NOT NULL",
                    "FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE",
                ),
                (("presence_seen", "last_seen"),),
            ),
            Table(
                "images",
                (
                    "id {id} NOT NULL PRIMARY KEY",
                    "owner_id {id} NOT NULL",
                    "name {name} NOT NULL",
                    "size {int} NOT NULL",
                    "mime {id} NOT NULL",
                    "thumbnail {blob} NOT NULL",
                    "created {time} NOT NULL",
                    "FOREIGN KEY (owner_id) REFERENCES users (id) ON DELETE CASCADE",
                ),
                (("images_owner", "owner_id, id"),),
            ),
            Table(
                "messages",
                (
                    "id {serial}",
                    "to_user {id} NOT NULL",
                    "from_user {id} NOT NULL",
                    "kind {id} NOT NULL",
                    "body {text} NOT NULL",
                    "created {time} NOT NULL",
                    "FOREIGN KEY (to_user) REFERENCES users (id) ON DELETE CASCADE",
                ),
                (("messages_to", "to_user, id"),),
            ),
            Table(
                "journal",
                (
                    "request_key {id} NOT NULL PRIMARY KEY",
                    "op {id} NOT NULL",
                    "reply {text} NOT NULL",
                    "created {time} NOT NULL",
                ),
                (("journal_created", "created"),),
            ),
        ),
    ),
    Migration(
        2,
        "key shares of enforced copies (issue 17: views counted by the cloud)",
        (
            Table(
                "shares",
                (
                    "image_id {id} NOT NULL",
                    "viewer_id {id} NOT NULL",
                    "owner_id {id} NOT NULL",
                    "share {blob} NOT NULL",  # sealed for the viewer; empty once revoked
                    "views {int} NOT NULL",
                    "used {int} NOT NULL",
                    "version {int} NOT NULL",
                    "updated {time} NOT NULL",
                    "PRIMARY KEY (image_id, viewer_id)",
                    "FOREIGN KEY (owner_id) REFERENCES users (id) ON DELETE CASCADE",
                    "FOREIGN KEY (viewer_id) REFERENCES users (id) ON DELETE CASCADE",
                ),
                (("shares_owner", "owner_id"), ("shares_viewer", "viewer_id")),
            ),
        ),
    ),
)

LATEST = MIGRATIONS[-1].version


class SchemaTooNewError(Exception):
    """The database was upgraded by a newer release of cloudp2p; upgrade this server too."""


def table_statements(table: Table, dialect: Any) -> list[str]:
    columns = [c.format(**dialect.types) for c in table.columns]
    if dialect.name == "mysql":
        # MySQL has no CREATE INDEX IF NOT EXISTS: declare the indexes in the table.
        columns += [f"INDEX {name} ({cols})" for name, cols in table.indexes]
        options = dialect.table_options
        return [f"CREATE TABLE IF NOT EXISTS {table.name} ({', '.join(columns)}){options}"]
    statements = [f"CREATE TABLE IF NOT EXISTS {table.name} ({', '.join(columns)})"]
    statements += [
        f"CREATE INDEX IF NOT EXISTS {name} ON {table.name} ({cols})" for name, cols in table.indexes
    ]
    return statements


def current_version(tx: Any) -> int:
    row = tx.one("SELECT MAX(version) FROM schema_version")
    return int(row[0]) if row and row[0] is not None else 0


def migrate(tx: Any, migrations: tuple[Migration, ...] = MIGRATIONS) -> tuple[int, int]:
    """Apply the missing migrations in the transaction ``tx``; return ``(version before, after)``.

    The caller holds the schema lock: use ``migrate_database``.
    """
    dialect = tx.dialect
    options = getattr(dialect, "table_options", "")
    tx.execute(f"CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL){options}")
    before = current_version(tx)
    latest = migrations[-1].version if migrations else 0
    if before > latest:
        raise SchemaTooNewError(
            f"the database has schema version {before}; this release knows up to {latest}"
        )
    for migration in migrations:
        if migration.version <= before:
            continue
        for table in migration.tables:
            for statement in table_statements(table, dialect):
                tx.execute(statement)
        tx.execute("DELETE FROM schema_version")
        tx.execute("INSERT INTO schema_version (version) VALUES (?)", (migration.version,))
    return before, max(before, latest)


def migrate_database(dialect: Any, migrations: tuple[Migration, ...] = MIGRATIONS) -> tuple[int, int]:
    """Bring the database's schema up to date, on a connection of its own (blocking).

    SQLite: one ``BEGIN IMMEDIATE`` transaction is both the lock and the atomic unit.
    MySQL: a named lock held from before the first read of the version until after the commit.
    A transient failure (a lock timeout, a lost connection) is tried again a few times.
    """
    from cloudp2p.directory import db

    for attempt in range(1, 6):
        try:
            return _migrate_once(dialect, migrations)
        except SchemaTooNewError:
            raise
        except Exception as e:
            if dialect.classify(e) not in (db.RETRY, db.RECONNECT) or attempt == 5:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def _migrate_once(dialect: Any, migrations: tuple[Migration, ...]) -> tuple[int, int]:
    from cloudp2p.directory.db import Tx

    create = getattr(dialect, "create_database", None)
    if create is not None:
        create()
    conn = dialect.connect()
    try:
        cursor = conn.cursor()
        tx = Tx(cursor, dialect)
        dialect.schema_lock(tx)
        try:
            dialect.begin(conn, True)
            try:
                result = migrate(tx, migrations)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        finally:
            dialect.schema_unlock(tx)
        cursor.close()
        return result
    finally:
        conn.close()
