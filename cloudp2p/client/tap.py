"""``twistd -n cloudp2p-client --home DIR``: the client daemon as a twistd plugin.

``Options`` checks everything it can before the reactor starts (the home is
usable, ``DIR/client.toml`` is valid); ``makeService`` returns a
``MultiService`` of the daemon itself and the control socket's
``StreamServerEndpointService`` on ``unix:DIR/control.sock:mode=600``.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.python import usage

from cloudp2p.client import config as cconfig
from cloudp2p.client import identity
from cloudp2p.client.commands import Stories
from cloudp2p.client.control import ControlFactory
from cloudp2p.client.daemon import ClientDaemon
from cloudp2p.client.errors import HomeError
from cloudp2p.client.home import Home, default_home
from cloudp2p.client.known_keys import KnownKeys
from cloudp2p.client.state import State
from cloudp2p.errors import CloudP2PError
from cloudp2p.web.service import web_service


class Options(usage.Options):
    synopsis = "--home DIR"
    longdesc = (
        "The cloudp2p client daemon: keeps the user's session and presence, listens for peers, "
        "and serves the `cloudp2p` command on DIR/control.sock. Write DIR/client.toml first "
        "(`cloudp2p --home DIR init --server HOST:PORT ...`)."
    )
    optParameters = [
        [
            "home",
            None,
            None,
            "the client home directory (default: $CLOUDP2P_HOME or ~/.local/share/cloudp2p)",
        ],
    ]

    def postOptions(self) -> None:
        home = Home(self["home"] or default_home())
        try:
            home.create()
            self["client_config"] = cconfig.load(str(home.config_file))
            # damaged key or state files stop the daemon here, with their name, not half-started
            identity.load(home)
            State(home)
            KnownKeys(home)
            if not isinstance(home.read_json(home.session_file, {}), dict):
                raise HomeError(f"{home.session_file}: not a JSON object")
        except CloudP2PError as e:
            raise usage.UsageError(str(e)) from None
        self["home_dir"] = home


class ClientService(service.Service):
    """Starts and stops the ``ClientDaemon`` with the application."""

    log = Logger()

    def __init__(self, daemon: ClientDaemon, stories: Stories) -> None:
        self.daemon = daemon
        self.stories = stories

    def startService(self) -> None:
        super().startService()
        d = defer.Deferred.fromCoroutine(self.daemon.start())
        d.addErrback(self._failed)

    def _failed(self, failure: Any) -> None:
        self.log.failure("the client daemon could not start", failure)
        self.daemon.stop_requested()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()

        async def stop() -> None:
            await self.stories.stop()
            await self.daemon.stop()

        return defer.Deferred.fromCoroutine(stop())


class ReadyService(service.Service):
    """Logs the readiness line once every sibling service is running."""

    log = Logger()

    def __init__(self, daemon: ClientDaemon, socket_path: str) -> None:
        self.daemon = daemon
        self.socket_path = socket_path

    def startService(self) -> None:
        super().startService()
        self.daemon.reactor.callLater(0, self._ready)

    def _ready(self) -> None:
        addr = self.daemon.peer_address
        self.log.info(
            "cloudp2p client ready: control socket {path}, peer port {port}",
            path=self.socket_path,
            port=addr[1] if addr else None,
        )


def makeService(options: Options, reactor: Any = None) -> service.MultiService:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    home: Home = options["home_dir"]
    daemon = ClientDaemon(reactor, home, options["client_config"])
    daemon.stop_requested = lambda: reactor.stop() if reactor.running else None
    stories = Stories(daemon)
    top = service.MultiService()
    ClientService(daemon, stories).setServiceParent(top)
    path = str(home.control_socket)
    endpoint = endpoints.serverFromString(
        reactor, f"unix:{endpoints.quoteStringArgument(path)}:mode=600:lockfile=1"
    )
    # a command's reply waits until its state changes are on disk (they are written in batches)
    commands = daemon.saving(stories.commands())
    factory = ControlFactory(commands)
    stories.control_counters = factory.counters
    control = StreamServerEndpointService(endpoint, factory)
    control._raiseSynchronously = True
    control.setServiceParent(top)
    web = web_service(daemon, commands, options["client_config"].web, reactor)
    if web is not None:
        web.setServiceParent(top)
    ReadyService(daemon, path).setServiceParent(top)
    return top
