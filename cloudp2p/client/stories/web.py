"""`cloudp2p web`: a one-time link to the web app, minted by the web app while it runs."""

from __future__ import annotations

from collections.abc import Callable

from cloudp2p.client import errors as cerr
from cloudp2p.client.stories.parts import JSONDict, Progress


class WebDoor:
    """Where the web app (``cloudp2p.web.service.WebService``) hands in its ``mint`` while it serves."""

    def __init__(self) -> None:
        self.mint: Callable[[], JSONDict] | None = None

    async def link(self, args: JSONDict, progress: Progress) -> JSONDict:
        """A one-time link to the web app (the web app mints it; see cloudp2p/web/security.py)."""
        if self.mint is None:
            raise cerr.ClientError("(the web app is off: [web] enabled = false in client.toml)")
        return self.mint()
