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
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import attrs

from cloudp2p.client import config as cconfig
from cloudp2p.client.home import Home
from cloudp2p.errors import CloudP2PError

READY_RE = re.compile(r"cloudp2p client ready: control socket (\S+), peer port (\d+)")


class ClientFailedError(CloudP2PError):
    """A client daemon process did not start or stopped unexpectedly."""


def _twistd() -> list[str]:
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(candidate, os.X_OK):
        return [candidate]
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; run()"]


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


class ClientProcess:
    """One ``twistd -n cloudp2p-client --home DIR`` and its `cloudp2p` commands."""

    def __init__(
        self, home: str, *, servers: Sequence[tuple[str, int]], name: str | None = None, **client_options: Any
    ) -> None:
        self.home = os.path.abspath(home)
        self.name = name or os.path.basename(self.home)
        self.servers = list(servers)
        self.client_options = client_options
        self.log_path = os.path.join(os.path.dirname(self.home), f"{self.name}.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- set-up ----------------------------------------------------------------------------------

    def init(self, transfer: dict[str, Any] | None = None) -> None:
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
        text = cconfig.render(self.servers, transfer or {"chunk_size": 32768}, **options)
        home.write_bytes(home.config_file, text.encode())

    def start(self) -> None:
        if self.alive:
            raise ClientFailedError(f"{self.name} is already running")
        if os.path.exists(self.log_path):
            os.replace(self.log_path, f"{self.log_path}.{self.starts}")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        cmd = [
            *_twistd(),
            "-n",
            "--pidfile=",
            "--logfile",
            self.log_path,
            "cloudp2p-client",
            "--home",
            self.home,
        ]
        self.process = subprocess.Popen(
            cmd,
            cwd=self.home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.starts += 1

    def wait_ready(self, timeout: float = 20.0) -> int:
        """Wait for the readiness line; returns the peer port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = READY_RE.search(self.log_text())
            if match:
                return int(match.group(2))
            if not self.alive:
                code = self.process.returncode if self.process else None
                raise ClientFailedError(f"{self.name} exited with {code}:\n{self.tail()}")
            time.sleep(0.05)
        raise ClientFailedError(f"{self.name} not ready after {timeout} s:\n{self.tail()}")

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

    # -- process control -------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_exit(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.process is not None and self.alive:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.process is None:
            return None
        if self.alive:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode
