"""Attack tests against real servers and real client daemons (issue 11), all on 127.0.0.1.

One cloud of three real ``twistd cloudp2p-server`` processes (SQLite directory,
production settings: no test switch, the default scrypt cost) serves the whole
session; tests create their own users with fresh names so that they do not
interfere. The attacker is ``cloudp2p.testing.rawudp``: a plain UDP socket
that sends exactly the bytes a test chooses, and ``spoof_udp`` for datagrams
whose source address is someone else's (a raw socket: these tests run as root,
as ``make test`` does here).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from cloudp2p.directory.token_seal import ReplyKey
from cloudp2p.encryption.keys import UserKeys
from cloudp2p.testing.cluster import LocalCluster
from cloudp2p.testing.rawudp import RawClient

PASSWORD = "security-test-pw"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cloud() -> Iterator[LocalCluster]:
    """Three production-configured servers, shared by the security tests."""
    path = tempfile.mkdtemp(prefix="cloudp2p-security-")
    directory = {"backend": "sqlite", "path": os.path.join(path, "db", "directory.sqlite3")}
    cluster = LocalCluster(os.path.join(path, "cloud"), 3, overrides={"directory": directory})
    try:
        cluster.start(60.0)
        cluster.wait_converged(30.0)
        yield cluster
    finally:
        cluster.stop()
        if os.environ.get("KEEP_TMP", "") in ("", "0"):
            shutil.rmtree(path, ignore_errors=True)
        else:
            print(f"\nKEEP_TMP: security cloud kept in {path}")


@pytest.fixture
def raw() -> Iterator[Any]:
    """A factory of attacker sockets, closed at teardown."""
    made: list[RawClient] = []

    def make(host: str = "127.0.0.1") -> RawClient:
        client = RawClient(host)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def fresh_name(prefix: str = "u") -> str:
    return f"{prefix}{secrets.token_hex(5)}"


def register(client: RawClient, cloud: LocalCluster, name: str | None = None) -> tuple[str, UserKeys]:
    """A new user registered through ``client``; (name, identity)."""
    name = name or fresh_name()
    identity = UserKeys.generate()
    client.result(
        cloud.client_list,
        "register",
        {"username": name, "password": PASSWORD, "keys": identity.public.to_json()},
        timeout=20.0,
    )
    return name, identity


def sign_in(client: RawClient, cloud: LocalCluster, name: str, **extra: Any) -> str:
    """A session token for ``name``, signed in through ``client``."""
    key = ReplyKey()
    result = client.result(
        cloud.client_list,
        "sign_in",
        {"username": name, "password": PASSWORD, **key.args(), **extra},
        timeout=20.0,
    )
    return result["token"] if "token" in result else key.open(result)


def counters(cloud: LocalCluster) -> dict[int, dict[str, int]]:
    return {sid: dict(view["counters"]) for sid, view in cloud.statuses(timeout=2.0).items()}
