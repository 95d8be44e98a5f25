"""End-to-end fixtures: three real servers and three real client daemons (alice, bob, carol).

One deployment per backend (SQLite, then MariaDB/MySQL) is shared by the tests of
the module: starting it costs seconds, and the tests use their own images and
requests so they do not step on each other. Every command goes through the
real `cloudp2p` console entry point (``python -m cloudp2p.client.cli``) and the
daemons' control sockets.

MySQL: the server at ``CLOUDP2P_TEST_MYSQL`` (default ``mysql://root@127.0.0.1:3306``); a
uniquely named database is created and dropped. Outside CI with no server the MySQL run is
skipped with the reason; with ``CI=true`` it fails. ``KEEP_TMP=1`` keeps homes and logs.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cloudp2p.errors import CloudP2PError
from cloudp2p.testing.client import ClientProcess, CommandResult

MYSQL_SERVER = os.environ.get("CLOUDP2P_TEST_MYSQL", "mysql://root@127.0.0.1:3306")
PASSWORD = "e2e-password-123"
USERS = ("alice", "bob", "carol")
BACKENDS = ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.integration)


def _mysql(sql: str) -> None:
    import pymysql

    from cloudp2p.directory.config import parse_mysql_url

    url = parse_mysql_url(MYSQL_SERVER + "/x")
    conn = pymysql.connect(
        host=url.host, port=url.port, user=url.user, password=url.password, connect_timeout=3
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
        conn.commit()
    finally:
        conn.close()


def _require_mysql() -> None:
    import pymysql

    try:
        _mysql("SELECT 1")
    except pymysql.err.MySQLError as e:
        reason = f"no MySQL/MariaDB server reachable at {MYSQL_SERVER}: {e}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


def png_bytes(seed: int, size: tuple[int, int] = (48, 32)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


class Deployment:
    def __init__(self, workdir: str, backend: str, mysql_url: str | None) -> None:
        self.workdir = workdir
        self.backend = backend
        self.mysql_url = mysql_url
        self.cloud: Any = None
        self.clients: dict[str, ClientProcess] = {}
        self.images = 0

    # -- set-up ----------------------------------------------------------------------------------

    def start(self) -> None:
        from cloudp2p.testing.cluster import LocalCluster

        if self.backend == "sqlite":
            directory = {"backend": "sqlite", "path": os.path.join(self.workdir, "directory.sqlite3")}
        else:
            directory = {"backend": "mysql", "url": self.mysql_url}
        for attempt in range(3):  # a chosen free port can be taken before the server binds it
            self.cloud = LocalCluster(
                os.path.join(self.workdir, f"cloud{attempt}"), 3, overrides={"directory": directory}
            )
            try:
                self.cloud.start(60.0)
                break
            except CloudP2PError:
                self.cloud.stop()
                if attempt == 2:
                    raise
        self.cloud.wait_converged(30.0)
        for name in USERS:
            client = ClientProcess(os.path.join(self.workdir, name), servers=self.cloud.client_list)
            client.init()
            self.clients[name] = client
            client.start()
        for name in USERS:
            self.clients[name].wait_ready(30.0)
            first = self.cmd(name, "register", name, password=True)
            if not first.ok and "unknown_op" in first.stderr:
                pytest.fail(
                    "the servers do not offer the directory's operations (unknown_op): "
                    "cloudp2p/server must wire the directory, transfers and encryption in: " + first.stderr
                )
            assert first.ok, first.stderr
            self.ok(name, "login", password=True)

    def stop(self) -> None:
        for client in self.clients.values():
            client.stop(grace=5.0)
        if self.cloud is not None:
            self.cloud.stop()

    def logs(self) -> str:
        parts = []
        for name, client in self.clients.items():
            parts.append(f"----- {name} daemon log -----\n{client.tail(25)}")
        if self.cloud is not None:
            for sid, server in self.cloud.servers.items():
                parts.append(f"----- server {sid} log -----\n{server.tail(15)}")
        return "\n".join(parts)

    # -- helpers for tests -----------------------------------------------------------------------

    def cmd(self, who: str, *args: str, password: bool | str = False) -> CommandResult:
        pw = PASSWORD if password is True else (password or None)
        return self.clients[who].run(*args, password=pw)

    def ok(self, who: str, *args: str, password: bool | str = False) -> dict[str, Any]:
        result = self.cmd(who, *args, password=password)
        assert result.ok, f"{who}: cloudp2p {' '.join(args)} -> {result.code}\n{result.stderr}\n{self.logs()}"
        return result.result

    def fails(
        self, who: str, *args: str, code: int | None = None, password: bool | str = False
    ) -> CommandResult:
        result = self.cmd(who, *args, password=password)
        assert not result.ok, f"{who}: cloudp2p {' '.join(args)} should have failed"
        if code is not None:
            assert result.code == code, (result.code, result.stderr)
        assert result.stderr.startswith("cloudp2p: error: "), result.stderr
        return result

    def image(self, stem: str) -> str:
        """A fresh small PNG file with a name of its own."""
        self.images += 1
        path = os.path.join(self.workdir, f"{stem}-{self.images}.png")
        with open(path, "wb") as f:
            f.write(png_bytes(1000 + self.images))
        return path

    def ensure_up(self, who: str) -> None:
        """The user's daemon runs and is signed in (a test may have stopped it)."""
        client = self.clients[who]
        if not client.alive:
            client.start()
            client.wait_ready(30.0)
        if not self.ok(who, "status")["me"]["signed_in"]:
            self.ok(who, "login", password=True)

    def share(self, owner: str, viewer: str, views: int, stem: str) -> tuple[str, str]:
        """owner encrypts and publishes a new image; viewer requests it; owner accepts. -> (name, id)."""
        enc = self.ok(owner, "encrypt", self.image(stem))
        self.ok(owner, "publish", enc["image_id"])
        self.ok(viewer, "users")
        req = self.ok(viewer, "request", owner, enc["name"], "--views", str(views))
        acc = self.ok(owner, "accept", req["request_id"])
        assert acc["delivered"], acc
        return enc["name"], enc["image_id"]

    def snapshot(self, *who: str) -> dict[str, bytes]:
        """Every file of the users' homes except the daemon's socket and its lock."""
        out = {}
        for name in who:
            for root, _dirs, files in os.walk(self.clients[name].home):
                for f in files:
                    if f.startswith("control.sock"):
                        continue
                    path = os.path.join(root, f)
                    with open(path, "rb") as fh:
                        out[path] = fh.read()
        return out


@pytest.fixture(scope="module", params=BACKENDS)
def deploy(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    backend = request.param
    url = None
    if backend == "mysql":
        _require_mysql()
        name = f"cloudp2p_e2e_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        _mysql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        url = f"{MYSQL_SERVER}/{name}"
    workdir = tempfile.mkdtemp(prefix=f"cp2p-e2e-{backend}-")
    deployment = Deployment(workdir, backend, url)
    try:
        deployment.start()
        yield deployment
    except BaseException:
        print(deployment.logs())
        raise
    finally:
        deployment.stop()
        if url is not None:
            try:
                _mysql(f"DROP DATABASE IF EXISTS `{url.rsplit('/', 1)[1]}`")
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        if os.environ.get("KEEP_TMP", "") not in ("", "0"):
            print(f"\nKEEP_TMP: e2e homes and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
