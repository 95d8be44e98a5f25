"""Run cloud servers as real ``twistd`` processes.

``make cluster`` runs ``python -m cloudp2p.testing.cluster etc/server1.toml ...``:
one ``twistd -n cloudp2p-server`` per file in the foreground, their log lines
prefixed with the file name; Ctrl-C (or SIGTERM) stops them all cleanly
(SIGTERM, then SIGKILL after a grace period). If one server exits by itself
(a config error, a port in use) the others are stopped too.

The same classes drive the integration tests and the benchmarks:

- ``ServerProcess``: one daemon; ``start()``, ``wait_ready()`` (the readiness
  line in its log), ``kill()`` (SIGKILL), ``pause()``/``resume()``
  (SIGSTOP/SIGCONT), ``stop()``;
- ``LocalCluster``: writes N config files on free loopback ports into a
  directory, starts the servers, waits until they agree on a coordinator, and
  knows their client addresses.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from cloudp2p.config import format_hostport
from cloudp2p.errors import CloudP2PError, CloudUnreachable, RequestFailed
from cloudp2p.testing.daemon import DaemonProcess
from cloudp2p.tools import status as status_tool

Address = tuple[str, int]
READY_RE = re.compile(r"cloudp2p-server (\d+) ready: cluster (\S+) clients (\S+)")


class ServerFailedError(CloudP2PError):
    """A cloud server process did not start or stopped unexpectedly."""


def free_udp_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct UDP ports free right now (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


def dump_toml(config: Mapping[str, Mapping[str, Any]]) -> str:
    """``{section: {key: value}}`` as TOML text (scalars, lists, one level of sub-tables)."""
    out: list[str] = []
    for section, table in config.items():
        out.append(f"[{section}]")
        subtables = []
        for key, value in table.items():
            if isinstance(value, Mapping):
                subtables.append((key, value))
            else:
                out.append(f"{key} = {toml_value(value)}")
        out.append("")
        for key, sub in subtables:
            out.append(f"[{section}.{key}]")
            out.extend(f"{k} = {toml_value(v)}" for k, v in sub.items())
            out.append("")
    return "\n".join(out)


class ServerProcess(DaemonProcess):
    """One ``twistd -n cloudp2p-server --config FILE`` process."""

    failure = ServerFailedError

    def __init__(
        self,
        config_path: str,
        log_path: str | None = None,
        *,
        server_id: int | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config_path = os.path.abspath(config_path)
        super().__init__(log_path, label=self.config_path)
        self.server_id = server_id
        self.cwd = cwd or os.path.dirname(self.config_path)
        self.env = dict(env) if env is not None else None
        self.ready_line: str | None = None

    def start(self, *, stdout: Any = None) -> None:
        self.ready_line = None
        args = ["cloudp2p-server", "--config", self.config_path]
        self._spawn(args, cwd=self.cwd, env=self.env, stdout=stdout)

    def wait_ready(self, timeout: float = 20.0) -> str:
        """Wait for the readiness line in the log; ServerFailedError if the process exits or times out."""

        def ours(match: re.Match[str]) -> bool:
            return self.server_id is None or int(match.group(1)) == self.server_id

        self.ready_line = self.wait_for_line(READY_RE, timeout, ours).group(0)
        return self.ready_line


class LocalCluster:
    """N servers on 127.0.0.1 with fresh ports and config files in ``directory``.

    ``overrides`` are merged into every server's config, section by section
    (new sections allowed: ``{"directory": {"backend": "sqlite", ...}}``);
    ``per_server(server_id)`` returns more overrides for one server.
    """

    def __init__(
        self,
        directory: str,
        n: int = 3,
        *,
        host: str = "127.0.0.1",
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        per_server: Callable[[int], Mapping[str, Mapping[str, Any]]] | None = None,
        secret: str | None = None,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.n = n
        self.host = host
        self.secret = secret or secrets.token_hex(24)
        self.overrides = overrides or {}
        self.per_server = per_server
        self.servers: dict[int, ServerProcess] = {}
        self.cluster_addresses: dict[int, Address] = {}
        self.client_addresses: dict[int, Address] = {}
        self.configs: dict[int, dict[str, dict[str, Any]]] = {}
        os.makedirs(self.directory, exist_ok=True)
        self._write_configs()

    def _write_configs(self) -> None:
        ports = free_udp_ports(2 * self.n, self.host)
        ids = list(range(1, self.n + 1))
        for i, sid in enumerate(ids):
            self.cluster_addresses[sid] = (self.host, ports[2 * i])
            self.client_addresses[sid] = (self.host, ports[2 * i + 1])
        for sid in ids:
            state_dir = os.path.join(self.directory, f"server{sid}")
            os.makedirs(state_dir, exist_ok=True)
            config: dict[str, dict[str, Any]] = {
                "server": {
                    "id": sid,
                    "client_listen": format_hostport(self.client_addresses[sid]),
                    "state_dir": state_dir,
                },
                "cluster": {
                    "listen": format_hostport(self.cluster_addresses[sid]),
                    "secret": self.secret,
                    "peers": [f"{p}@{format_hostport(self.cluster_addresses[p])}" for p in ids if p != sid],
                },
            }
            for extra in (self.overrides, self.per_server(sid) if self.per_server else {}):
                for section, table in extra.items():
                    config.setdefault(section, {}).update(table)
            self.configs[sid] = config
            path = os.path.join(self.directory, f"server{sid}.toml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(dump_toml(config))
            self.servers[sid] = ServerProcess(
                path, os.path.join(self.directory, f"server{sid}.log"), server_id=sid
            )

    @property
    def client_list(self) -> list[Address]:
        return [self.client_addresses[s] for s in sorted(self.client_addresses)]

    def start(self, timeout: float = 30.0) -> None:
        for server in self.servers.values():
            server.start()
        for server in self.servers.values():
            server.wait_ready(timeout)

    def restart(self, sid: int, timeout: float = 30.0) -> None:
        self.servers[sid].start()
        self.servers[sid].wait_ready(timeout)

    def status(self, sid: int, timeout: float = 0.5) -> dict[str, Any] | None:
        try:
            return status_tool.query(self.client_addresses[sid], "status", timeout=timeout)
        except (CloudUnreachable, RequestFailed, OSError):
            return None

    def statuses(self, timeout: float = 0.5) -> dict[int, dict[str, Any]]:
        out = {}
        for sid, server in self.servers.items():
            if server.process is None or server.alive:  # not started by us, or running
                view = self.status(sid, timeout)
                if view is not None:
                    out[sid] = view
        return out

    def wait_converged(self, timeout: float = 15.0, *, members: set[int] | None = None) -> int:
        """Wait until every running server names the same coordinator and sees the same members; return it."""
        want = (
            members
            if members is not None
            else {s for s, p in self.servers.items() if p.process is None or p.alive}
        )
        deadline = time.monotonic() + timeout
        views: dict[int, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            views = self.statuses()
            coordinators = {v["coordinator"] for v in views.values()}
            if (
                set(views) == want
                and len(coordinators) == 1
                and None not in coordinators
                and all(set(v["members"]) == want for v in views.values())
                and views[next(iter(coordinators))]["is_coordinator"]
            ):
                return coordinators.pop()
            time.sleep(0.1)
        raise ServerFailedError(
            f"servers {sorted(want)} did not agree on a coordinator within {timeout} s: {views}"
        )

    def coordinator(self) -> int | None:
        for view in self.statuses().values():
            if view["is_coordinator"]:
                return view["server"]
        return None

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


# -- make cluster ---------------------------------------------------------------------------------


def _pump(prefix: str, stream: Any, out: Any, lock: threading.Lock) -> None:
    for raw in iter(stream.readline, b""):
        with lock:
            out.write(f"[{prefix}] {raw.decode('utf-8', 'replace').rstrip()}\n")
            out.flush()


def run_foreground(config_paths: list[str], out: Any = None) -> int:
    out = out or sys.stdout
    lock = threading.Lock()
    servers = [ServerProcess(path, None) for path in config_paths]
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    threads = []
    code = 0
    try:
        for path, server in zip(config_paths, servers, strict=True):
            server.start(stdout=subprocess.PIPE)
            name = os.path.splitext(os.path.basename(path))[0]
            t = threading.Thread(target=_pump, args=(name, server.process.stdout, out, lock), daemon=True)
            t.start()
            threads.append(t)
        while not stopping.wait(0.2):
            dead = [s for s in servers if not s.alive]
            if dead:
                with lock:
                    for s in dead:
                        out.write(
                            f"cluster: {s.config_path} exited ({s.process.returncode}); stopping the rest\n"
                        )
                code = 1
                break
    finally:
        with lock:
            out.write("cluster: stopping all servers\n")
        for server in servers:
            server.stop(grace=10.0)
        for t in threads:
            t.join(timeout=2)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cloudp2p.testing.cluster",
        description="Run cloud servers in the foreground; Ctrl-C stops them all.",
    )
    parser.add_argument("configs", nargs="+", help="server config files (etc/server1.toml ...)")
    ns = parser.parse_args(argv)
    missing = [p for p in ns.configs if not os.path.isfile(p)]
    if missing:
        print(f"error: no such config file: {', '.join(missing)}", file=sys.stderr)
        return 3
    return run_foreground(ns.configs)


if __name__ == "__main__":
    sys.exit(main())
