"""Fixtures for the directory suite: every ``store`` test runs on SQLite and on MariaDB/MySQL.

MySQL: the server at ``CLOUDP2P_TEST_MYSQL`` (default ``mysql://root@127.0.0.1:3306``); the
session creates its own uniquely named database and drops it at the end. Outside CI, with no
server reachable, MySQL tests are skipped with the reason; with ``CI=true`` they fail instead.
"""

from __future__ import annotations

import base64
import io
import os
import uuid
from types import SimpleNamespace
from typing import Any

import pymysql
import pytest
import pytest_twisted
from PIL import Image
from twisted.internet import defer

from cloudp2p.directory import default_section, open_store
from cloudp2p.directory.ops import OPS
from cloudp2p.directory.token_seal import ReplyKey
from cloudp2p.ops import RequestContext

MYSQL_SERVER = os.environ.get("CLOUDP2P_TEST_MYSQL", "mysql://root@127.0.0.1:3306")
TABLES = ("journal", "shares", "messages", "images", "presence", "sessions", "users")
BACKENDS = ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)]


def _mysql_connect(database: str | None = None) -> pymysql.Connection:
    from cloudp2p.directory.config import parse_mysql_url

    url = parse_mysql_url(MYSQL_SERVER + "/x")
    return pymysql.connect(
        host=url.host,
        port=url.port,
        user=url.user,
        password=url.password,
        database=database,
        connect_timeout=3,
    )


def mysql_admin(sql: str) -> None:
    conn = _mysql_connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
        conn.commit()
    finally:
        conn.close()


def _require_mysql() -> None:
    try:
        _mysql_connect().close()
    except pymysql.err.MySQLError as e:
        reason = f"no MySQL/MariaDB server reachable at {MYSQL_SERVER}: {e}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


class FakeTime:
    """A clock the test moves by hand (the Store reads time through it)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def mysql_url_factory():
    """Make uniquely named MySQL databases (``mysql://.../name``); all are dropped at the end."""
    created: list[str] = []

    def make() -> str:
        _require_mysql()
        name = f"cloudp2p_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
        created.append(name)
        return f"{MYSQL_SERVER}/{name}"

    yield make
    for name in created:
        try:
            mysql_admin(f"DROP DATABASE IF EXISTS `{name}`")
        except pymysql.err.MySQLError:
            pass


@pytest.fixture(scope="session")
def shared_mysql_url(mysql_url_factory):
    """One database for the whole session; tests empty its tables before they start."""
    return mysql_url_factory()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def _empty_mysql(url: str) -> None:
    """Delete every row the previous test left (the tables exist once a store has opened)."""
    name = url.rsplit("/", 1)[1]
    conn = _mysql_connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )
            cursor.execute(f"USE `{name}`")
            cursor.execute("SHOW TABLES")
            present = {row[0] for row in cursor.fetchall()}
            for table in TABLES:
                if table in present:
                    cursor.execute(f"DELETE FROM {table}")
        conn.commit()
    finally:
        conn.close()


@pytest.fixture
def database(backend, tmp_path, request) -> dict[str, Any]:
    """Where the test's stores live: a fresh SQLite file, or the session's MySQL database, emptied."""
    if backend == "sqlite":
        return {"backend": "sqlite", "path": str(tmp_path / "directory.sqlite3")}
    url = request.getfixturevalue("shared_mysql_url")
    _empty_mysql(url)
    return {"backend": "mysql", "url": url}


@pytest.fixture
def make_store(database):
    """``make_store(clock=None, **section_overrides)`` -> a Store on the test's database.

    It returns at once (callable from async tests); operations wait until the schema is ready.
    """
    from twisted.internet import reactor

    stores = []

    def make(clock: Any = None, **overrides: Any):
        section = default_section(**{"scrypt_n": 1024, "pool_size": 3, **database, **overrides})
        store = open_store(section, reactor, clock=clock)
        stores.append(store)
        return store

    yield make
    for store in stores:
        pytest_twisted.blockon(store.close())


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def store(make_store, clock):
    return make_store(clock=clock)


# -- helpers ---------------------------------------------------------------------------------------


def keys() -> dict[str, str]:
    return {name: base64.b64encode(os.urandom(32)).decode() for name in ("x25519", "ed25519")}


def png(side: int = 16, *, noise: bool = False, fmt: str = "PNG") -> bytes:
    if noise:
        image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    else:
        image = Image.new("RGB", (side, side), (30, 120, 200))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def png_b64(side: int = 16, **kw: Any) -> str:
    return base64.b64encode(png(side, **kw)).decode()


def call(store: Any, op: str, args: Any, *, request_id: str | None = None, client=("127.0.0.1", 40000)):
    """Run the op handler as the router would, and return a Deferred with its result.

    A ``sign_in`` without ``reply_key`` gets a one-time key here, and its result the opened
    ``token`` next to ``token_sealed``, as the client library does.
    """
    key = None
    if op == "sign_in" and isinstance(args, dict) and "reply_key" not in args:
        key = ReplyKey()
        args = {**args, **key.args()}
    ctx = RequestContext(
        request_id=request_id or str(uuid.uuid4()),
        op=op,
        client=client,
        server=SimpleNamespace(directory=store),
    )
    d = defer.Deferred.fromCoroutine(OPS[op](ctx, args))
    if key is not None:
        d.addCallback(lambda reply: {**reply, "token": key.open(reply)})
    return d


def run(store: Any, op: str, args: Any, **kw: Any) -> Any:
    """``call`` and wait for it (for synchronous tests, such as hypothesis ones)."""
    return pytest_twisted.blockon(call(store, op, args, **kw))


async def new_user(store: Any, name: str | None = None, password: str = "correct horse", **kw: Any) -> dict:
    """Register and sign in; the sign-in reply (with ``token``) plus ``keys`` and ``password``."""
    name = name or "u" + uuid.uuid4().hex[:12]
    k = keys()
    await call(store, "register", {"username": name, "password": password, "keys": k})
    reply = await call(store, "sign_in", {"username": name, "password": password, **kw})
    return {**reply, "keys": k, "password": password}


@pytest.fixture
def fresh_section(backend, tmp_path, request) -> dict[str, Any]:
    """A validated ``[directory]`` section for a database nobody has opened yet."""
    if backend == "sqlite":
        return default_section(backend="sqlite", path=str(tmp_path / "fresh.sqlite3"), scrypt_n=1024)
    url = request.getfixturevalue("mysql_url_factory")()
    return default_section(backend="mysql", url=url, scrypt_n=1024)


@pytest.fixture(autouse=True)
def _fresh_hypothesis_inner_test(request):
    """pytest-twisted wraps a hypothesis test's ``inner_test`` in place, on the function object
    that all parametrised items share; put the original back after each item, or the next item
    would run the previous item's wrapper (and fail with "blockon cannot be called...")."""
    hypothesis = getattr(request.function, "hypothesis", None)
    saved = getattr(hypothesis, "inner_test", None)
    yield
    if hypothesis is not None:
        hypothesis.inner_test = saved
