"""A small world for the client's unit tests: daemons on the memory network, a fake cloud, fake transfers."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from cloudp2p.client.app import ClientApp
from cloudp2p.client.config import ClientConfig
from cloudp2p.client.home import Home
from cloudp2p.client.stories.common import sleep
from cloudp2p.testing.memnet import MemoryNetwork

from .fakes import FakeCloud, FakeDirectory, FakeTransfers, TransferHub, sync_runner


class Client:
    def __init__(self, world: World, name: str, app: ClientApp) -> None:
        self.world = world
        self.name = name
        self.app = app
        self.daemon = app.daemon
        self.progress: list[tuple[str, int, int]] = []

    def cmd(self, command: str, **args: Any) -> dict[str, Any]:
        """Run a control command to completion on the memory network's time."""
        fn = self.app.commands()[command]
        return self.world.run(fn(args, lambda label, done, total: self.progress.append((label, done, total))))

    async def sleep(self, seconds: float) -> None:
        await sleep(self.daemon.reactor, seconds)

    def fails(self, command: str, **args: Any) -> BaseException:
        try:
            self.cmd(command, **args)
        except Exception as e:  # noqa: BLE001 - the test inspects it
            return e
        raise AssertionError(f"{command} {args} did not fail")


class World:
    def __init__(self, tmp_path: Any) -> None:
        self.tmp_path = tmp_path
        self.net = MemoryNetwork(seed=3)
        self.hub = TransferHub()
        self.directory = FakeDirectory(self.net.clock, self.hub)
        self.clients: dict[str, Client] = {}

    def run(self, coro: Any, seconds: float = 60.0) -> Any:
        d = defer.Deferred.fromCoroutine(coro) if not isinstance(coro, defer.Deferred) else coro
        box: list[Any] = []
        d.addBoth(box.append)
        self.net.run(seconds, until=lambda: bool(box))
        assert box, "the operation did not finish in time"
        if isinstance(box[0], Failure):
            box[0].raiseException()
        return box[0]

    def client(self, name: str, **config: Any) -> Client:
        home = Home(self.tmp_path / name)
        options = {
            "heartbeat_interval": 1.0,
            "peer_timeout": 1.0,
            "reconnect_max": 4.0,
            "transfer_timeout": 5.0,
        }
        options.update(config)
        cfg = ClientConfig(servers=(("127.0.0.1", 9101),), **options)
        clock = self.net.node_clock(name)

        def listen(port: int, protocol: Any, interface: str) -> Any:
            return self.net.listen(protocol, ("127.0.0.1", 0), node=name)

        app = ClientApp(
            clock,
            home,
            cfg,
            cloud=FakeCloud(self.directory),
            transfers=FakeTransfers(self.hub),
            run_blocking=sync_runner,
            listen_udp=listen,
            wall_clock=clock.seconds,
        )
        self.run(app.start())
        client = Client(self, name, app)
        self.clients[name] = client
        return client

    def stop(self, name: str) -> None:
        client = self.clients.pop(name)
        self.run(client.app.stop())

    def signed_up(self, name: str, password: str = "password-" + "x") -> Client:
        c = self.client(name)
        c.cmd("register", username=name, password=password)
        c.cmd("login", password=password)
        return c


@pytest.fixture
def world(tmp_path: Any) -> World:
    return World(tmp_path)
