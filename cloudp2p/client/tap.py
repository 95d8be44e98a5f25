"""``twistd -n cloudp2p-client --home DIR``: the client daemon as a twistd plugin.

``Options`` checks everything it can before the reactor starts (the home is
usable, ``DIR/client.toml`` is valid); ``makeService`` returns a
``MultiService`` of the client (``ClientApp``: the daemon and its stories), the
control socket's ``StreamServerEndpointService`` on ``unix:DIR/control.sock:mode=600``
and the web app, both serving the same command table.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.python import usage

from cloudp2p.client import config as cconfig
from cloudp2p.client import identity
from cloudp2p.client.app import ClientApp
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
    """Starts and stops the client (``ClientApp``: the daemon and its stories) with the application."""

    log = Logger()

    def __init__(self, app: ClientApp, stop: Callable[[], None]) -> None:
        self.app = app
        self.stop = stop

    def startService(self) -> None:
        super().startService()
        d = defer.Deferred.fromCoroutine(self.app.start())
        d.addErrback(self._failed)

    def _failed(self, failure: Any) -> None:
        self.log.failure("the client daemon could not start", failure)
        self.stop()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.Deferred.fromCoroutine(self.app.stop())


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

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    counters: collections.Counter[str] = collections.Counter()  # the control socket's, shown by status
    app = ClientApp(reactor, home, options["client_config"], stop=stop, control_counters=counters)
    top = service.MultiService()
    ClientService(app, stop).setServiceParent(top)
    path = str(home.control_socket)
    endpoint = endpoints.serverFromString(
        reactor, f"unix:{endpoints.quoteStringArgument(path)}:mode=600:lockfile=1"
    )
    commands = app.commands()  # the command table, bound to the stories
    control = StreamServerEndpointService(endpoint, ControlFactory(commands, counters=counters))
    control._raiseSynchronously = True
    control.setServiceParent(top)
    web = web_service(app.daemon, app.web, commands, options["client_config"].web, reactor)
    if web is not None:
        web.setServiceParent(top)
    ReadyService(app.daemon, path).setServiceParent(top)
    return top
