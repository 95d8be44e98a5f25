"""One cloud server: the cluster node, the request router and the areas' operations.

``Server`` is a ``MultiService`` with the attributes the op handlers use
(``ctx.server``, docs/INTERFACES.md): ``id``, ``reactor``, ``config``,
``directory``, ``transfers``, ``encryption``, ``log``, plus ``node`` (the
``ClusterNode``), ``router``, ``registry`` and ``cpu_pool``.

Adding an area's operations is one line in ``OP_PROVIDERS``; an area that needs
a long-lived object (the directory store, the transfer manager) creates it in
``Server.__init__`` (or a child service) and sets the attribute.

Sockets: the cluster socket ``[cluster] listen`` carries the node's
authenticated messages (the router's assignments ride on it as app
messages); the client socket ``[server] client_listen`` carries client
requests and replies. Both set ``maxPacketSize`` and ``SO_RCVBUF``. They are
bound in ``privilegedStartService`` so that a port in use stops the daemon at
start with a clear error instead of leaving a half-started server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from cloudp2p import directory
from cloudp2p.config import format_hostport
from cloudp2p.encryption import ops as encryption_ops
from cloudp2p.encryption.service import EncryptionEngine
from cloudp2p.errors import ConfigError
from cloudp2p.membership.load import LoadMeter
from cloudp2p.membership.node import ClusterNode
from cloudp2p.ops import Handler, Host, OpRegistry
from cloudp2p.routing import basic_ops, cookies
from cloudp2p.routing.router import ClientProtocol, Router
from cloudp2p.server import config as server_config
from cloudp2p.sockets import set_buffer
from cloudp2p.transfer import TransferManager

OpProvider = Callable[[Host], dict[str, Handler]]

# Each area's ops(server) -> {name: handler}; append one line per area.
OP_PROVIDERS: list[OpProvider] = [
    basic_ops.ops,
    directory.ops,
    encryption_ops.ops,
]

READY_FORMAT = "cloudp2p-server {id} ready: cluster {cluster} clients {clients}"


class Server(service.MultiService):
    log = Logger()

    def __init__(
        self, config: server_config.ServerConfig, reactor: Any = None, *, origin: str = "<config>"
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self.config = config
        self.origin = origin
        srv = config.server
        self.id: int = srv.id
        self.directory: directory.Store | None = None
        self.transfers: TransferManager | None = None
        self.encryption: EncryptionEngine | None = None
        self.cluster_settings = server_config.cluster_settings(config, origin)
        self.cpu_pool = ThreadPool(
            minthreads=0, maxthreads=srv.work_threads, name=f"cloudp2p-work-{self.id}"
        )
        self.work_queue = basic_ops.WorkQueue(srv.work_queue)
        self.test_ops: bool = srv.test_ops
        self.router: Router | None = None
        self.load_meter = LoadMeter(
            inflight=lambda: self.router.inflight() if self.router else 0,
            backlog=lambda: self.encryption.backlog_seconds() if self.encryption else 0.0,
        )
        self.node = ClusterNode(
            **self.cluster_settings.node_kwargs(), clock=reactor, load_source=self.load_meter.current
        )
        self.node.on_event(self._cluster_event)
        self.registry = OpRegistry()
        for provider in OP_PROVIDERS:
            self.registry.update(provider(self))
        self.router = Router(
            self.node,
            self.registry,
            clock=reactor,
            server=self,
            settings=srv,  # the [server] section is a RouterSettings: its limits are the router's
            cookie_key=cookies.derive_key(self.cluster_settings.secret),
        )
        self._ports: list[Any] = []
        self.cluster_address: tuple[str, int] | None = None
        self.client_address: tuple[str, int] | None = None

    def _listen(self, address: tuple[str, int], protocol: Any, key: str, buffer: int) -> tuple[str, int]:
        host, port = address
        try:
            listening = self.reactor.listenUDP(
                port, protocol, interface=host, maxPacketSize=protocol.maxPacketSize
            )
        except CannotListenError as e:
            raise ConfigError(
                f"{self.origin}: {key}: cannot listen on {format_hostport(address)}: {e.socketError}"
            ) from None
        self._ports.append(listening)
        if getattr(listening, "socket", None) is not None and set_buffer(listening, buffer) is None:
            self.log.warn("cannot set SO_RCVBUF on {key}", key=key)  # noqa: G010
        bound = listening.getHost()
        return bound.host, bound.port

    def privilegedStartService(self) -> None:
        srv = self.config.server
        self.cluster_address = self._listen(
            self.cluster_settings.listen,
            self.node.protocol,
            "[cluster] listen",
            self.cluster_settings.receive_buffer,
        )
        self.client_address = self._listen(
            srv.client_listen, ClientProtocol(self.router), "[server] client_listen", srv.receive_buffer
        )
        # Datagrams from these are never answered: two servers must not answer each other.
        self.router.server_addresses = {
            self.client_address,
            self.cluster_address,
            *self.cluster_settings.peers.values(),
        }
        super().privilegedStartService()

    def _open_areas(self) -> None:
        """The areas' long-lived objects. They need the real reactor (threads, sockets), so
        they are made at start, not in ``__init__``; handlers reach them through ``ctx.server``."""
        self.directory = directory.open_store(self.config.directory, self.reactor, owner=self.id)
        self.transfers = TransferManager(self.reactor, config=self.config.transfer)
        self.encryption = EncryptionEngine(self.reactor, self.config.encryption)

    def _cluster_event(self, event: tuple[Any, ...]) -> None:
        """A peer just suspected may be stopped in the middle of a directory transaction, holding
        row locks that every other server would wait for: fence its database connections."""
        if event[0] != "suspect" or self.directory is None:
            return
        peer = event[1]

        def done(killed: int) -> None:
            if killed:
                self.log.info(
                    "fenced server {peer}: {killed} directory connections closed", peer=peer, killed=killed
                )

        def failed(failure: Any) -> None:
            self.log.warn(  # noqa: G010
                "cannot fence server {peer}'s directory connections: {error}", peer=peer, error=failure.value
            )

        defer.ensureDeferred(self.directory.fence(peer)).addCallbacks(done, failed)

    def _close_areas(self) -> Any:
        if self.encryption is not None:
            self.encryption.stop()
        if self.transfers is not None:
            self.transfers.stop()
        closing = self.directory.close() if self.directory is not None else None
        self.directory = self.transfers = self.encryption = None
        return closing

    def startService(self) -> None:
        if not self._ports:
            self.privilegedStartService()
        self._open_areas()
        self.cpu_pool.start()
        self.node.start()
        self.router.start()
        super().startService()
        self.log.info(
            READY_FORMAT,
            id=self.id,
            cluster=format_hostport(self.cluster_address),
            clients=format_hostport(self.client_address),
        )

    def stopService(self) -> Any:
        d = super().stopService()
        self.router.stop()
        self.node.stop()
        for port in self._ports:
            port.stopListening()
        self._ports = []
        self.cpu_pool.stop()
        closing = self._close_areas()
        if closing is None:
            return d
        return defer.gatherResults([d, closing], consumeErrors=True)
