"""Fixtures for the tests across hosts: network namespaces, a Galera node per server host.

They need root (network namespaces) and MariaDB with galera-4 and rsync: without them the
tests are skipped with the reason, except under ``CI=true``, where they must run (CI runs as
root; .ci/run installs what is missing). ``KEEP_TMP=1`` keeps the configs and logs (the
database logs are copied next to them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from cloudp2p.testing.hosts import HostsCloud, unavailable_reason


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.integration)


def require_hosts(database: str = "galera") -> None:
    reason = unavailable_reason(database)
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the hosts tests cannot run: {reason}")
        pytest.skip(reason)


def keep_tmp() -> bool:
    return os.environ.get("KEEP_TMP", "") not in ("", "0")


@pytest.fixture(scope="module")
def hosts_dir(request: pytest.FixtureRequest) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=f"cloudp2p-hosts-{request.module.__name__.rsplit('.', 1)[-1]}-")
    yield path
    if keep_tmp():
        print(f"\nKEEP_TMP: hosts' configs and logs kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cloud(hosts_dir: str) -> Iterator[HostsCloud]:
    """Three server hosts, each with a server and a Galera node, and two client hosts."""
    require_hosts()
    made = HostsCloud(hosts_dir, servers=3, clients=2)
    try:
        made.start()
        yield made
    finally:
        if keep_tmp():
            made.keep_logs(hosts_dir)
        made.close()
