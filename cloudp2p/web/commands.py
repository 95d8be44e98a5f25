"""The web app's one door to the daemon's commands: the same table the CLI and the control socket use.

The web app defines no command of its own. It runs the daemon's commands by name
with the same ``args`` the control socket would carry, and only decides which of
them a web page may call (``WEB_COMMANDS``): not ``encrypt`` with a path (a page
must not make the daemon read any file it likes; uploads go through
``/api/upload``), not ``shutdown``, ``web`` or ``counters``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Progress = Callable[[str, int, int], None]
Command = Callable[[dict[str, Any], Progress], Awaitable[dict[str, Any]]]

WEB_COMMANDS = frozenset(
    {
        "register",
        "login",
        "logout",
        "publish",
        "unpublish",
        "users",
        "request",
        "inbox",
        "accept",
        "reject",
        "images",
        "view",
        "more-views",
        "set-views",
        "revoke",
        "status",
    }
)


class UnknownCommand(KeyError):
    """The web app offers no such command."""


class CommandRunner:
    """Runs a command of the daemon's table by name (the table: ``Stories.commands()``)."""

    def __init__(self, table: Mapping[str, Command]) -> None:
        missing = (WEB_COMMANDS | {"encrypt"}) - set(table)
        if missing:
            raise ValueError(f"the command table lacks {sorted(missing)}")
        self._table = table

    def offered(self, name: str) -> bool:
        return name in WEB_COMMANDS

    async def run(self, name: str, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Run a command a page may call; ``encrypt`` only through ``encrypt_upload``."""
        if name not in WEB_COMMANDS:
            raise UnknownCommand(name)
        if name == "view":
            args = {**args, "memory": True}  # a web view never writes a file
        return await self._table[name](args, progress)

    async def encrypt_upload(self, path: str, name: str, progress: Progress) -> dict[str, Any]:
        """``encrypt`` of a file the web app itself spooled from an upload."""
        return await self._table["encrypt"]({"path": path, "name": name}, progress)
