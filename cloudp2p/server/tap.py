"""``twistd -n cloudp2p-server --config FILE``: one cloud server."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.python import usage

from cloudp2p.errors import ConfigError
from cloudp2p.server import config as server_config


class Options(usage.Options):
    synopsis = "--config FILE"
    longdesc = "Run one cloudp2p cloud server from a TOML config file (see etc/server1.toml)."
    optParameters = [["config", "c", None, "the server's TOML config file"]]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        try:
            self["parsed"] = server_config.load(self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Any, reactor: Any = None) -> service.MultiService:
    from cloudp2p.server.service import Server

    parsed = options.get("parsed") or server_config.load(options["config"])
    return Server(parsed, reactor, origin=options["config"])
