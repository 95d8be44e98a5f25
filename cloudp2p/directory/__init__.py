"""The Directory of Service: users, sessions, presence, shared images and queued messages.

Wiring into a server::

    from cloudp2p.directory import open_store, ops
    store = open_store(config["directory"], reactor)   # returns at once; migrates in the background
    registry.update(ops(server))                         # server.directory = store
    ...
    yield store.close()                                  # on stopService

Two backends behind one ``Store``: SQLite (``backend = "sqlite"``, one file the
local servers share) and MySQL/MariaDB (``backend = "mysql"``, ``url``, or ``urls``:
the nodes of a Galera cluster, this server's own node first).
See docs/directory.md.
"""

from __future__ import annotations

import os
from typing import Any

from cloudp2p.directory.config import SECTION, DirectorySettings, mysql_nodes
from cloudp2p.directory.db import Database
from cloudp2p.directory.ops import ops
from cloudp2p.directory.store import CRASH_ENV, Store, crash_hook

__all__ = ["SECTION", "DirectorySettings", "Store", "make_dialect", "open_store", "ops"]


def make_dialect(section: DirectorySettings, *, owner: int | None = None) -> Any:
    """The dialect for the ``[directory]`` section (``owner``: the server id, for fencing)."""
    if section.backend == "mysql":
        from cloudp2p.directory.mysql import MySQLDialect

        return MySQLDialect(
            mysql_nodes(section),
            busy_timeout=section.busy_timeout,
            connect_timeout=section.connect_timeout,
            failover_timeout=section.failover_timeout,
            failback_interval=section.failback_interval,
            owner=owner,
        )
    from cloudp2p.directory.sqlite import SQLiteDialect

    return SQLiteDialect(section.path, busy_timeout=section.busy_timeout)


def open_store(
    section: DirectorySettings, reactor: Any, *, clock: Any = None, owner: int | None = None
) -> Store:
    """A started ``Store`` for the ``[directory]`` section.

    The schema is created or upgraded on a database thread; operations wait for it, and
    ``store.when_ready()`` fires when it is done (or errbacks if the database cannot be opened).
    For MySQL the database named in the URL is created if it does not exist. ``owner`` (the
    server id) marks the connections so that the other servers can fence them
    (``Store.fence``) when the cluster suspects this server.
    """
    dialect = make_dialect(section, owner=owner)
    db = Database(dialect, reactor, pool_size=section.pool_size)
    store = Store(db, reactor, section, clock=clock)
    crash = os.environ.get(CRASH_ENV)
    if crash:
        store.fault_hook = crash_hook(crash)
    store.start()
    return store


def default_section(**overrides: Any) -> DirectorySettings:
    """The ``[directory]`` section: the defaults with ``overrides``, checked as a file's would be."""
    from cloudp2p.config import Schema

    return Schema((SECTION,)).validate({"directory": overrides})["directory"]
