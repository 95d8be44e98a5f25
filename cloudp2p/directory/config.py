"""The ``[directory]`` section of the server configuration.

::

    [directory]
    backend = "sqlite"                      # or "mysql"
    path = "var/directory.sqlite3"          # sqlite: one file shared by the local servers
    url = "mysql://root@127.0.0.1:3306/cloudp2p"   # mysql, one server
    urls = ["mysql://u:p@10.0.0.1/cloudp2p", "mysql://u:p@10.0.0.2/cloudp2p"]   # or a Galera
                                            # cluster's nodes, this server's own node first
    presence_ttl = 30.0                     # seconds without a heartbeat before a user shows offline
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs

from cloudp2p.config import in_range, one_of, positive, section, setting
from cloudp2p.errors import ConfigError

DEFAULT_URL = "mysql://root@127.0.0.1:3306/cloudp2p"
_DB_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


@attrs.frozen
class MySQLURL:
    host: str
    port: int
    user: str
    password: str
    database: str


def parse_mysql_url(value: str) -> MySQLURL:
    """``mysql://user:password@host:port/database`` -> ``MySQLURL``; ``ValueError`` says what is wrong."""
    try:
        parts = urlsplit(value)
        port = parts.port or 3306
    except ValueError as e:
        raise ValueError(f"not a valid URL {value!r}: {e}") from None
    if parts.scheme != "mysql":
        raise ValueError(f"expected a URL like {DEFAULT_URL}, got {value!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"no query or fragment allowed in {value!r}")
    database = parts.path.lstrip("/")
    if not _DB_NAME.fullmatch(database):
        raise ValueError(f"database name in {value!r} must be 1 to 64 characters: letters, digits and '_'")
    return MySQLURL(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=database,
    )


def _check_url(value: str) -> str:
    parse_mysql_url(value)
    return value


def _check_urls(value: list[Any]) -> list[str]:
    parsed = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"each node must be a URL string like {DEFAULT_URL}, got {item!r}")
        parsed.append(parse_mysql_url(item))
    if len({(u.host, u.port) for u in parsed}) != len(parsed):
        raise ValueError("lists a node twice")
    if len({u.database for u in parsed}) > 1:
        raise ValueError("every node must name the same database (they are one cluster)")
    return list(value)


def mysql_nodes(section: DirectorySettings) -> list[MySQLURL]:
    """The database nodes to use, in order of preference: ``urls`` if given, else ``url``."""
    return [parse_mysql_url(u) for u in (section.urls or [section.url])]


def check_section(section: DirectorySettings, origin: str) -> None:
    """Cross-checks between keys (``ConfigError`` names the file and the key)."""
    if section.urls and section.url != DEFAULT_URL:
        raise ConfigError(f"{origin}: [directory] urls: give either url (one server) or urls (a cluster)")


def _check_path(value: str) -> str:
    if not value or "\x00" in value:
        raise ValueError("must be a file path")
    return value


def _power_of_two(value: int) -> int:
    if value < 2 or value & (value - 1) or value > 2**20:
        raise ValueError(f"must be a power of two between 2 and 2**20, got {value}")
    return value


@section("directory")
class DirectorySettings:
    """The Directory of Service: users, sessions, presence, shared images and queued messages."""

    backend: str = setting("sqlite", one_of("sqlite", "mysql"), "sqlite (embedded file) or mysql")
    path: str = setting("var/directory.sqlite3", _check_path, "sqlite: the database file")
    url: str = setting(DEFAULT_URL, _check_url, "mysql: mysql://user:password@host:port/database")
    urls: list[str] = setting(
        [], _check_urls, "mysql: the nodes of a Galera cluster, this server's own node first"
    )
    connect_timeout: float = setting(5.0, positive, "mysql: seconds to wait for a node to answer")
    failover_timeout: float = setting(5.0, positive, "mysql: seconds a transaction keeps trying other nodes")
    failback_interval: float = setting(
        30.0, positive, "mysql: seconds before a connection moved to another node goes home"
    )
    pool_size: int = setting(4, in_range(1, 64), "database threads (one connection each)")
    presence_ttl: float = setting(30.0, positive, "seconds of silence before a user is offline")
    session_ttl: float = setting(86400.0, positive, "seconds a session lives after its last use")
    journal_ttl: float = setting(3600.0, positive, "seconds a request's recorded reply is kept")
    cleanup_interval: float = setting(60.0, positive, "seconds between purges of expired rows")
    busy_timeout: float = setting(10.0, positive, "seconds to wait for a database lock")
    scrypt_n: int = setting(
        2**17, _power_of_two, "scrypt cost of password hashes (cheaper ones are upgraded at sign-in)"
    )
    max_queue: int = setting(1000, in_range(1, 1_000_000), "queued messages kept per user")
    max_body: int = setting(16384, in_range(256, 40_000), "bytes of JSON in one queued message")
    max_images: int = setting(256, in_range(1, 100_000), "images one user may publish")


SECTION = DirectorySettings.SECTION
