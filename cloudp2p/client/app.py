"""``ClientApp``: the client daemon and its stories, put together once, with every link explicit.

The app builds the ``ClientDaemon`` (session, presence, peer listener, home) and gives it itself
as its ``events``: the daemon asks the app which story handles a peer message and tells it when
the cloud is back. Each story gets the daemon's parts it uses (``stories.parts``) and its fellow
stories or state machines by name. ``commands()`` is the command table (``cloudp2p.client.table``)
bound to the stories' handlers: the control socket and the web app serve exactly that.

    tap ─▶ ClientApp ─▶ ClientDaemon (events = the app)
                     ─▶ Account, Images, OwnerSide(inbox), ViewerSide(outbox), Viewing, WebDoor
    table.bind(app.handler) ─▶ ControlFactory, web CommandRunner
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from cloudp2p.client import table
from cloudp2p.client.config import ClientConfig
from cloudp2p.client.daemon import ClientDaemon
from cloudp2p.client.home import Home
from cloudp2p.client.post import PeerHandler
from cloudp2p.client.stories.account import Account
from cloudp2p.client.stories.images import Images
from cloudp2p.client.stories.parts import Parts
from cloudp2p.client.stories.sharing import machine
from cloudp2p.client.stories.sharing.owner import OwnerSide
from cloudp2p.client.stories.sharing.viewer import ViewerSide
from cloudp2p.client.stories.viewing import Viewing
from cloudp2p.client.stories.web import WebDoor


class ClientApp:
    def __init__(
        self,
        reactor: Any,
        home: Home,
        config: ClientConfig,
        *,
        stop: Callable[[], None] = lambda: None,
        control_counters: collections.Counter[str] | None = None,
        **daemon_options: Any,
    ) -> None:
        self.daemon = ClientDaemon(reactor, home, config, events=self, **daemon_options)
        parts = Parts.of(self.daemon)

        def state() -> Any:
            return self.daemon.state

        self.inbox = machine.inbox(state)
        self.outbox = machine.outbox(state)
        self.owner = OwnerSide(parts, self.inbox)
        self.viewer = ViewerSide(parts, self.outbox)
        self.account = Account(
            parts, signed_in=self.viewer.resume_fetches, stop=stop, control_counters=control_counters
        )
        self.images = Images(parts)
        self.viewing = Viewing(parts, self.viewer.fetch_progress.get)
        self.web = WebDoor()
        self.stories: dict[str, Any] = {
            "account": self.account,
            "images": self.images,
            "owner": self.owner,
            "viewer": self.viewer,
            "viewing": self.viewing,
            "web": self.web,
        }
        self._peer: dict[str, PeerHandler] = {
            "share_request": self.owner.on_share_request,
            "share_offer": self.viewer.on_share_offer,
            "share_rejected": self.viewer.on_share_rejected,
            "share_done": self.owner.on_share_done,
            "rights_update": self.viewer.on_rights_update,
        }

    # -- what the command table and the daemon ask of the app ----------------------------------------

    def handler(self, ref: str) -> table.Handler:
        """The handler a table record names, ``"story.method"``."""
        story, _, method = ref.partition(".")
        return getattr(self.stories[story], method)

    def commands(self) -> dict[str, table.Handler]:
        """The daemon's commands: the table, bound; a reply waits until its state changes are on disk."""
        return self.daemon.saving(table.bind(self.handler))

    def peer_handler(self, kind: str) -> PeerHandler | None:
        return self._peer.get(kind)

    def back_online(self) -> None:
        """The cloud answers again: interrupted fetches resume."""
        self.viewer.resume_fetches()

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.daemon.start()

    async def stop(self) -> None:
        await self.owner.stop()
        await self.viewer.stop()
        await self.daemon.stop()
