"""Fixtures that run real cloud servers (``twistd -n cloudp2p-server``) on 127.0.0.1.

Reuse them from any test directory (e2e, directory...) through the
``cloudp2p.testing.cluster`` classes they wrap:

    pytestmark = pytest.mark.integration

    def test_something(cluster_factory):
        cloud = cluster_factory(3, overrides={"directory": {"backend": "sqlite"}},
                                per_server=lambda sid: {"server": {"work_threads": 1}})
        cloud.client_list            # [(host, port), ...] for ClientRouter(servers=...)
        cloud.coordinator()          # id of the current coordinator
        cloud.servers[2].kill()      # kill -9; .pause() / .resume(); .stop(); cloud.restart(2)
        cloud.statuses()             # {id: status dict} of every server that answers

- every server gets fresh free ports (never fixed ones) and its own state dir;
- ``overrides`` merge into every server's config, section by section (new
  sections allowed); ``per_server(id)`` adds per-server overrides;
- the factory waits for each server's readiness line and (``converge=True``)
  until all agree on a coordinator;
- every process is stopped (SIGTERM, then SIGKILL) in the finalizer; the
  temp dir (configs and logs) is removed unless ``KEEP_TMP=1``; a failed test
  prints the tail of every server's log.

``client_router`` gives a started ``ClientRouter`` factory bound to the
global reactor (for ``pytest_twisted`` tests), stopped at teardown.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from cloudp2p.routing.client import ClientRouter
from cloudp2p.testing.cluster import LocalCluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    report = yield
    setattr(item, f"_cloudp2p_rep_{report.when}", report)
    return report


def keep_tmp() -> bool:
    return os.environ.get("KEEP_TMP", "") not in ("", "0")


@pytest.fixture
def integration_dir(request: pytest.FixtureRequest) -> Iterator[str]:
    """A temp dir for this test's servers; kept when KEEP_TMP=1."""
    path = tempfile.mkdtemp(prefix=f"cloudp2p-{request.node.name[:40]}-".replace("/", "_"))
    yield path
    if keep_tmp():
        print(f"\nKEEP_TMP: servers' configs and logs kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


ClusterFactory = Callable[..., LocalCluster]


@pytest.fixture
def cluster_factory(request: pytest.FixtureRequest, integration_dir: str) -> Iterator[ClusterFactory]:
    made: list[LocalCluster] = []

    def make(
        n: int = 3,
        *,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        per_server: Callable[[int], Mapping[str, Mapping[str, Any]]] | None = None,
        start: bool = True,
        converge: bool = True,
        timeout: float = 30.0,
    ) -> LocalCluster:
        cloud = LocalCluster(
            os.path.join(integration_dir, f"cloud{len(made) + 1}"),
            n,
            overrides=overrides,
            per_server=per_server,
        )
        made.append(cloud)
        if start:
            cloud.start(timeout)
            if converge:
                cloud.wait_converged(timeout)
        return cloud

    yield make
    failed = any(
        getattr(getattr(request.node, f"_cloudp2p_rep_{w}", None), "failed", False) for w in ("setup", "call")
    )
    for cloud in made:
        cloud.stop()
        if failed:
            for sid, server in cloud.servers.items():
                print(f"\n----- server {sid} log tail ({server.log_path}) -----\n{server.tail(40)}")


@pytest.fixture
def cluster3(cluster_factory: ClusterFactory) -> LocalCluster:
    """Three running servers that agree on a coordinator, with the test ops (work, recent_runs)."""
    return cluster_factory(3, overrides={"server": {"test_ops": True}})


@pytest.fixture
def client_router() -> Iterator[Callable[..., ClientRouter]]:
    from twisted.internet import reactor

    routers: list[ClientRouter] = []

    def make(servers: list[tuple[str, int]], **kwargs: Any) -> ClientRouter:
        router = ClientRouter(reactor, servers, **kwargs)
        router.start()
        routers.append(router)
        return router

    yield make
    for router in routers:
        router.stop()
