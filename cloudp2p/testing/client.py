"""Run a client daemon as a real ``twistd`` process and drive it with the real `cloudp2p` command.

Used by ``make demo`` (cloudp2p/tools/demo.py) and the end-to-end tests::

    alice = ClientProcess(os.path.join(tmp, "alice"), servers=cloud.client_list)
    alice.init(); alice.start(); alice.wait_ready()
    result = alice.run("register", "alice", password="correct horse")   # -> CommandResult
    result.ok, result.code, result.json, result.stdout, result.stderr
    alice.kill()   # kill -9;  alice.stop(): SIGTERM, then SIGKILL
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import attrs

from cloudp2p.client import config as cconfig
from cloudp2p.client.home import Home
from cloudp2p.errors import CloudP2PError
from cloudp2p.testing.daemon import DaemonProcess

READY_RE = re.compile(r"cloudp2p client ready: control socket (\S+), peer port (\d+)")


class ClientFailedError(CloudP2PError):
    """A client daemon process did not start or stopped unexpectedly."""


@attrs.frozen
class CommandResult:
    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def json(self) -> dict[str, Any]:
        """The ``--json`` output (the command must have been run with ``json=True``)."""
        return json.loads(self.stdout.strip().splitlines()[-1])

    @property
    def result(self) -> dict[str, Any]:
        return self.json["result"]

    @property
    def error(self) -> dict[str, Any]:
        return self.json["error"]


class ClientProcess(DaemonProcess):
    """One ``twistd -n cloudp2p-client --home DIR`` and its `cloudp2p` commands."""

    failure = ClientFailedError

    def __init__(
        self, home: str, *, servers: Sequence[tuple[str, int]], name: str | None = None, **client_options: Any
    ) -> None:
        self.home = os.path.abspath(home)
        self.name = name or os.path.basename(self.home)
        super().__init__(os.path.join(os.path.dirname(self.home), f"{self.name}.log"), label=self.name)
        self.servers = list(servers)
        self.client_options = client_options

    # -- set-up ----------------------------------------------------------------------------------

    def init(self, transfer: dict[str, Any] | None = None, web: dict[str, Any] | None = None) -> None:
        """Create the home and write its client.toml (fast timeouts suit a local cloud)."""
        home = Home(self.home)
        home.create()
        options = {
            "request_timeout": 8.0,
            "heartbeat_interval": 1.0,
            "reconnect_max": 2.0,
            "peer_timeout": 1.5,
        }
        options.update(self.client_options)
        text = cconfig.render(self.servers, transfer or {"chunk_size": 32768}, web, **options)
        home.write_bytes(home.config_file, text.encode())

    def start(self) -> None:
        self._spawn(["cloudp2p-client", "--home", self.home], cwd=self.home)

    def wait_ready(self, timeout: float = 20.0) -> int:
        """Wait for the readiness line; returns the peer port."""
        return int(self.wait_for_line(READY_RE, timeout).group(2))

    # -- commands --------------------------------------------------------------------------------

    def run(
        self, *args: str, password: str | None = None, json: bool = True, timeout: float = 120.0
    ) -> CommandResult:
        """Run ``cloudp2p --home HOME [--json] ARGS...``; the password goes in on stdin."""
        argv = [sys.executable, "-m", "cloudp2p.client.cli", "--home", self.home]
        if json:
            argv.append("--json")
        argv += list(args)
        if password is not None:
            argv.append("--password-stdin")
        done = subprocess.run(
            argv,
            input=(password + "\n") if password is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
        )
        return CommandResult(tuple(args), done.returncode, done.stdout, done.stderr)
