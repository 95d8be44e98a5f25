"""Schema creation and upgrades: recorded version, ordered migrations, no race between servers."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted

from cloudp2p.directory import make_dialect, open_store
from cloudp2p.directory.db import Tx
from cloudp2p.directory.schema import (
    LATEST,
    MIGRATIONS,
    Migration,
    SchemaTooNewError,
    Table,
    migrate_database,
)
from cloudp2p.ops import OpError
from tests.directory.conftest import TABLES, call


def _query(dialect, sql: str) -> list[tuple]:
    conn = dialect.connect()
    try:
        cursor = conn.cursor()
        cursor.execute(sql)
        rows = list(cursor.fetchall())
        conn.commit()
        return rows
    finally:
        conn.close()


def _tables(dialect) -> set[str]:
    if dialect.name == "sqlite":
        return {r[0] for r in _query(dialect, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {r[0] for r in _query(dialect, "SHOW TABLES")}


def test_create_then_reopen(fresh_section):
    dialect = make_dialect(fresh_section)
    assert migrate_database(dialect) == (0, LATEST)
    assert set(TABLES) | {"schema_version"} <= _tables(dialect)
    assert _query(dialect, "SELECT version FROM schema_version") == [(LATEST,)]
    assert migrate_database(dialect) == (LATEST, LATEST)
    assert _query(dialect, "SELECT version FROM schema_version") == [(LATEST,)]


def test_three_servers_starting_at_once(fresh_section):
    results, errors = [], []
    barrier = threading.Barrier(3)

    def start() -> None:
        dialect = make_dialect(fresh_section)  # one per "server", as in three processes
        barrier.wait()
        try:
            results.append(migrate_database(dialect))
        except Exception as e:  # noqa: BLE001 - recorded and asserted below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(results) == [(0, LATEST), (LATEST, LATEST), (LATEST, LATEST)]
    assert _query(make_dialect(fresh_section), "SELECT version FROM schema_version") == [(LATEST,)]


def test_a_later_migration_is_applied_in_order(fresh_section):
    dialect = make_dialect(fresh_section)
    migrate_database(dialect)
    extra = Migration(
        LATEST + 1, "test table", (Table("later", ("id {id} NOT NULL PRIMARY KEY", "n {int}")),)
    )
    assert migrate_database(dialect, MIGRATIONS + (extra,)) == (LATEST, LATEST + 1)
    assert "later" in _tables(dialect)
    assert _query(dialect, "SELECT version FROM schema_version") == [(LATEST + 1,)]


def test_a_failed_migration_leaves_nothing_on_sqlite(fresh_section):
    if fresh_section.backend != "sqlite":
        pytest.skip("MySQL commits DDL at once; its migrations are written to be re-runnable instead")
    dialect = make_dialect(fresh_section)
    migrate_database(dialect)
    broken = Migration(
        LATEST + 1, "broken", (Table("half", ("id {id}",)), Table("bad", ("id {id} NOT A TYPE ((",)))
    )
    with pytest.raises(Exception):  # noqa: B017 - whatever SQLite says about the bad statement
        migrate_database(dialect, MIGRATIONS + (broken,))
    assert "half" not in _tables(dialect)
    assert _query(dialect, "SELECT version FROM schema_version") == [(LATEST,)]


@pytest_twisted.ensureDeferred
async def test_a_newer_database_is_refused(fresh_section):
    from twisted.internet import reactor

    dialect = make_dialect(fresh_section)
    migrate_database(dialect)
    conn = dialect.connect()
    dialect.begin(conn, True)
    Tx(conn.cursor(), dialect).execute("UPDATE schema_version SET version = ?", (LATEST + 5,))
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNewError):
        migrate_database(dialect)
    store = open_store(fresh_section, reactor)
    try:
        with pytest.raises(SchemaTooNewError):
            await store.when_ready()
        with pytest.raises(OpError) as info:
            await call(store, "sign_in", {"username": "alice", "password": "password"})
        assert info.value.code == "directory_unavailable"
    finally:
        await store.close()
