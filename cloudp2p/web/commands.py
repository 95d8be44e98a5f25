"""The web app's one door to the daemon's commands: the command table the CLI and the control socket use.

The web app defines no command of its own. It runs the daemon's commands by name with the
same ``args`` the control socket would carry, and offers exactly the commands the table marks
``web`` (``cloudp2p.client.table``): not ``encrypt`` with a path (a page must not make the
daemon read any file it likes; uploads go through ``/api/upload``, ``Web(upload=True)``), not
``shutdown``, ``web`` or ``counters``. The table also says which args the web app always adds
(``view`` runs with ``memory``: a web view never writes a file).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudp2p.client.table import COMMANDS, Handler, Progress, Web

WEB: Mapping[str, Web] = {c.name: c.web for c in COMMANDS if c.web is not None}
WEB_COMMANDS = frozenset(name for name, web in WEB.items() if not web.upload)


class UnknownCommand(KeyError):
    """The web app offers no such command."""


class CommandRunner:
    """Runs a command of the daemon's bound table by name (``ClientApp.commands()``)."""

    def __init__(self, commands: Mapping[str, Handler]) -> None:
        missing = set(WEB) - set(commands)
        if missing:
            raise ValueError(f"the command table lacks {sorted(missing)}")
        self._commands = commands

    def offered(self, name: str) -> bool:
        return name in WEB_COMMANDS

    async def run(self, name: str, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Run a command a page may call, with the args the table fixes for the web app."""
        if name not in WEB_COMMANDS:
            raise UnknownCommand(name)
        return await self._commands[name]({**args, **WEB[name].fixed}, progress)

    async def encrypt_upload(self, path: str, name: str, progress: Progress) -> dict[str, Any]:
        """``encrypt`` of a file the web app itself spooled from an upload."""
        return await self._commands["encrypt"]({"path": path, "name": name}, progress)
