"""``WebService``: the web app as one more service of ``twistd cloudp2p-client``.

``web_service(daemon, door, commands, settings, reactor)`` is the one hook the client's tap
calls; it returns ``None`` when ``[web] enabled = false``. Starting the service binds the TCP
port (``[web] port``, 0 = the OS chooses), logs ``cloudp2p web app on URL``, hands the
``WebDoor`` its ``mint`` (the link ``cloudp2p web`` prints) and subscribes the live events
to the daemon's state. Stopping closes the port and the event streams.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.web import resource

from cloudp2p.client.stories.web import WebDoor
from cloudp2p.client.table import Handler
from cloudp2p.web.app import WebApp, WebSite
from cloudp2p.web.commands import CommandRunner
from cloudp2p.web.config import NETWORK_WARNING, WebSettings, is_loopback
from cloudp2p.web.events import EventHub
from cloudp2p.web.security import TICKET_SECONDS, Guard
from cloudp2p.web.shown import ShownImages

MAX_CONNECTIONS = 64


class CappedFactory(WrappingFactory):
    """Refuses connections beyond ``MAX_CONNECTIONS`` (local processes can open many)."""

    def buildProtocol(self, addr: Any) -> Any:
        if len(self.protocols) >= MAX_CONNECTIONS:
            return None
        return super().buildProtocol(addr)


class WebService(service.Service):
    log = Logger()

    def __init__(
        self, daemon: Any, door: WebDoor, commands: Mapping[str, Handler], settings: WebSettings, reactor: Any
    ) -> None:
        self.daemon = daemon
        self.door = door
        self.commands = commands
        self.settings = settings
        self.reactor = reactor
        self.port: Any = None
        self.app: WebApp | None = None
        self.hub = EventHub(reactor)

    def startService(self) -> None:
        super().startService()
        s = self.settings
        max_upload = int(self.daemon.config.max_image_size)
        site = WebSite(resource.Resource(), max_body=max_upload)
        self.port = self.reactor.listenTCP(s.port, CappedFactory(site), interface=s.host)
        port = self.port.getHost().port
        extra = None if is_loopback(s.host) or ipaddress.ip_address(s.host).is_unspecified else s.host
        guard = Guard(port, extra_host=extra, clock=self.reactor.seconds)
        self.app = WebApp(
            host=self.daemon,
            runner=CommandRunner(self.commands),
            guard=guard,
            hub=self.hub,
            shown=ShownImages(self.reactor.seconds, s.view_seconds),
            view_seconds=s.view_seconds,
            max_upload=max_upload,
        )
        site.resource = self.app
        self._url_host = extra or ("[::1]" if s.host == "::1" else "127.0.0.1")
        self.door.mint = self.link
        self.daemon.state_listeners.append(self.hub.state_changed)
        self.hub.start()
        self._clean_spool()
        if not is_loopback(s.host):
            self.log.warn("warning: {warning}", warning=NETWORK_WARNING.format(host=s.host))  # noqa: G010
        self.log.info("cloudp2p web app on http://{host}:{port}/", host=self._url_host, port=port)

    def link(self) -> dict[str, Any]:
        """A one-time link for ``cloudp2p web``."""
        assert self.app is not None
        ticket = self.app.guard.new_ticket()
        host = self.settings.host
        warnings = [] if is_loopback(host) else [NETWORK_WARNING.format(host=host)]
        return {
            "url": f"http://{self._url_host}:{self.app.guard.port}/auth?ticket={ticket}",
            "expires_in": TICKET_SECONDS,
            "warnings": warnings,
        }

    def _clean_spool(self) -> None:
        """Uploads left behind by a daemon that died during an encrypt."""
        spool = self.daemon.home.path / "uploads"
        if spool.is_dir():
            for leftover in spool.glob("*.upload"):
                os.remove(leftover)

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        self.door.mint = None
        if self.hub.state_changed in self.daemon.state_listeners:
            self.daemon.state_listeners.remove(self.hub.state_changed)
        self.hub.stop()
        if self.port is not None:
            port, self.port = self.port, None
            return defer.maybeDeferred(port.stopListening)
        return None


def web_service(
    daemon: Any, door: WebDoor, commands: Mapping[str, Handler], settings: WebSettings, reactor: Any
) -> WebService | None:
    """The web app over ``commands`` (the daemon's bound command table), or None when it is off."""
    return WebService(daemon, door, commands, settings, reactor) if settings.enabled else None
