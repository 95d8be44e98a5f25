"""A twistd daemon run as a child process, for ``make cluster``, ``make demo``, tests and benchmarks.

``ServerProcess`` (cloudp2p/testing/cluster.py) and ``ClientProcess``
(cloudp2p/testing/client.py) add what is particular to each daemon (its
command line and its readiness line); starting, signalling (SIGSTOP/SIGCONT
to simulate a stalled host, kill -9 to simulate a crash) and stopping are
the same for both and live here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from cloudp2p.errors import CloudP2PError


def twistd_command() -> list[str]:
    """The venv's twistd (next to this Python), or twistd run through this Python."""
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(candidate, os.X_OK):
        return [candidate]
    return [
        sys.executable,
        "-c",
        "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
    ]


class DaemonProcess:
    """One child ``twistd -n`` process logging to ``log_path``."""

    failure: type[CloudP2PError] = CloudP2PError  # what wait_ready raises

    def __init__(self, log_path: str | None, *, label: str) -> None:
        self.log_path = os.path.abspath(log_path) if log_path else None
        self.label = label
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # Put before the command line, e.g. ``["ip", "netns", "exec", NS]`` to run it in another
        # network namespace (cloudp2p/testing/hosts.py); that command must exec, not fork.
        self.prefix: list[str] = []

    def _spawn(
        self, args: list[str], *, cwd: str, env: Mapping[str, str] | None = None, stdout: Any = None
    ) -> None:
        """Start ``twistd -n --logfile LOG ARGS``; the previous run's log is kept as ``LOG.N``."""
        if self.alive:
            raise self.failure(f"{self.label} is already running")
        if self.log_path and os.path.exists(self.log_path):
            os.replace(self.log_path, f"{self.log_path}.{self.starts}")
        environment = dict(os.environ if env is None else env)
        environment.setdefault("PYTHONUNBUFFERED", "1")
        logfile = self.log_path or "-"
        command = [*self.prefix, *twistd_command(), "-n", "--pidfile=", "--logfile", logfile, *args]
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if stdout is not None else subprocess.DEVNULL,
        )
        self.starts += 1

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float, accept: Any = None) -> re.Match[str]:
        """The first match of ``pattern`` in the log (that ``accept(match)`` allows); raises
        ``failure`` if the process exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for match in pattern.finditer(self.log_text()):
                if accept is None or accept(match):
                    return match
            if not self.alive:
                code = self.process.returncode if self.process else None
                raise self.failure(f"{self.label} exited with {code}:\n{self.tail()}")
            time.sleep(0.05)
        raise self.failure(f"{self.label} not ready after {timeout} s:\n{self.tail()}")

    def signal(self, sig: int) -> None:
        if self.alive:
            self.process.send_signal(sig)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.process is not None and self.alive:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)

    def wait_exit(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM (continuing it first if paused), then SIGKILL after ``grace`` seconds."""
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
