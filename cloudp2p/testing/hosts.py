"""The cloud across separate hosts: each server in its own network namespace, with its own
Galera node, and client daemons on further hosts (tests, ``make hosts-demo``, ``make bench-hosts``).

::

    with HostsCloud(workdir, servers=3, clients=2) as cloud:   # needs root
        cloud.start()                          # Galera cluster, then the servers, then convergence
        alice = cloud.client("alice", host=0)  # a ClientProcess on client host 0
        cloud.kill_db(1); cloud.restart_db(1)  # kill -9 / restart the Galera node of server 1
        cloud.isolate(3); cloud.heal(3)        # cut server 3's host (server and node) off
        cloud.split([1, 2], [3])               # servers' hosts cannot talk; clients reach all

Hosts are ``netns.Host``: server ``i`` runs on host ``s<i>`` (address ``10.231.0.x``),
clients on ``c0``, ``c1``..., the single MariaDB of ``database="mariadb"`` on ``db``. Server
configs are written by ``server_config`` only (one place, so certificates can be added there);
the cluster secret is a 0600 file, as a server off loopback requires.

Everything is removed by ``close()`` (called by ``with``, by the test fixtures' finalizers and
at exit): processes in the namespaces are killed, namespaces (and with them every link and
firewall rule) deleted, the database folders removed. Leftovers of a run that died are swept
when the next ``Network`` is made.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from cloudp2p.config import format_hostport
from cloudp2p.errors import CloudUnreachable, RequestFailed, request_failed
from cloudp2p.routing import client_wire as wire
from cloudp2p.testing import galera, netns
from cloudp2p.testing.client import ClientProcess
from cloudp2p.testing.cluster import ServerFailedError, ServerProcess, dump_toml
from cloudp2p.tools import status as status_tool

T = TypeVar("T")
CLUSTER_PORT, CLIENT_PORT = 7000, 7100


def unavailable_reason(database: str = "galera") -> str | None:
    """Why the hosts harness cannot run here (None if it can)."""
    reason = netns.can_build()
    if reason is None and database in ("galera", "mariadb"):
        reason = galera.can_run()
    return reason


def submit_blocking(
    servers: list[tuple[str, int]], op: str, args: dict[str, Any], timeout: float = 10.0
) -> dict[str, Any]:
    """One request to every server, sent again with the same id every 0.25 s until a reply
    (blocking; run it inside a host with ``HostsCloud.in_host``). Cookie challenges are answered."""
    request = wire.Request(wire.new_request_id(), op, args)
    cookies: dict[tuple[str, int], str] = {}
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:

        def send(server: tuple[str, int]) -> None:
            cookie = cookies.get(server)
            sock.sendto((request.with_cookie(cookie) if cookie else request).encode(), server)

        while time.monotonic() < deadline:
            for server in servers:
                send(server)
            resend = time.monotonic() + 0.25
            while (left := min(resend, deadline) - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    payload, source = sock.recvfrom(wire.MAX_DATAGRAM + 1024)
                except TimeoutError:
                    break
                try:
                    answer = wire.decode_answer(payload)
                except wire.WireError:
                    continue
                source = (source[0], int(source[1]))
                if isinstance(answer, wire.CookieChallenge):
                    if source in servers and cookies.get(source) != answer.cookie:
                        cookies[source] = answer.cookie
                        send(source)
                    continue
                if answer.request_id == request.request_id and source in servers:
                    if not answer.ok:
                        raise request_failed(answer.body["error"]["code"], answer.body["error"]["message"])
                    return answer.body["result"]
    raise CloudUnreachable(f"no reply to {op!r} within {timeout} s")


class HostsCloud:
    """``servers`` server hosts and ``clients`` client hosts on one bridge; see the module doc.

    ``database``: ``"galera"`` (a node on every server host; each server lists its own node
    first), ``"mariadb"`` (one plain MariaDB on its own host, the baseline) or ``"sqlite"`` (a
    file the servers share through the file system: for membership-only runs).
    ``overrides``: sections merged into every server config; ``cluster`` timing defaults are
    those of etc/server1.toml.
    """

    def __init__(
        self,
        workdir: str,
        *,
        servers: int = 3,
        clients: int = 2,
        database: str = "galera",
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if database not in ("galera", "mariadb", "sqlite"):
            raise ValueError(f"unknown database {database!r}")
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.database = database
        self.overrides = overrides or {}
        self.ids = list(range(1, servers + 1))
        self.net = netns.Network()
        self.db: galera.GaleraCluster | galera.SingleMariaDB | None = None
        self.servers: dict[int, ServerProcess] = {}
        self.clients: dict[str, ClientProcess] = {}
        try:
            self.server_hosts = {sid: self.net.add_host(f"s{sid}") for sid in self.ids}
            self.client_hosts = [self.net.add_host(f"c{i}") for i in range(clients)]
            if database == "galera":
                self.db = galera.GaleraCluster([self.server_hosts[s] for s in self.ids])
            elif database == "mariadb":
                self.db = galera.SingleMariaDB(self.net.add_host("db"))
            self.secret_file = os.path.join(self.workdir, "cluster.secret")
            fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            for sid in self.ids:
                self._make_server(sid)
        except BaseException:
            self.close()
            raise

    # -- addresses and configs -----------------------------------------------------------------

    def cluster_address(self, sid: int) -> tuple[str, int]:
        return (self.server_hosts[sid].ip, CLUSTER_PORT)

    def client_address(self, sid: int) -> tuple[str, int]:
        return (self.server_hosts[sid].ip, CLIENT_PORT)

    @property
    def client_list(self) -> list[tuple[str, int]]:
        return [self.client_address(s) for s in self.ids]

    def directory_section(self, sid: int) -> dict[str, Any]:
        if self.database == "sqlite":
            return {
                "backend": "sqlite",
                "path": os.path.join(self.workdir, "directory.sqlite3"),
                "scrypt_n": 16384,
            }
        assert self.db is not None
        return {
            "backend": "mysql",
            "urls": self.db.urls(self.ids.index(sid)),
            "connect_timeout": 1.0,
            "pool_size": 4,
            # Passwords hashed at 16384 (as bench-stress does), not the product's 2**17: dozens of
            # users signing up at once on two cores must measure the cloud, not scrypt.
            "scrypt_n": 16384,
        }

    def server_config(self, sid: int) -> dict[str, dict[str, Any]]:
        """The whole config of server ``sid``: the one place server configs are made."""
        host = self.server_hosts[sid]
        state_dir = os.path.join(self.workdir, f"server{sid}")
        os.makedirs(state_dir, exist_ok=True)
        config: dict[str, dict[str, Any]] = {
            "server": {
                "id": sid,
                "client_listen": format_hostport(self.client_address(sid)),
                "state_dir": state_dir,
                "test_ops": True,  # recent_runs, for the tests' checks
                # Dozens of simulated users share two client hosts (one source address each) and
                # sign in again and again: the per-source and per-user limits are opened wide.
                "auth_source_burst": 100_000,
                "auth_source_interval": 0.0001,
                "auth_user_burst": 100_000,
                "auth_user_interval": 0.0001,
            },
            "cluster": {
                "listen": format_hostport(self.cluster_address(sid)),
                "secret_file": self.secret_file,
                "peers": [f"{p}@{format_hostport(self.cluster_address(p))}" for p in self.ids if p != sid],
                "heartbeat_interval": 0.2,
                "failure_timeout": 1.0,
            },
            "directory": self.directory_section(sid),
            "transfer": {"interface": host.ip},
            "encryption": {"workers": 1},
        }
        for section, table in self.overrides.items():
            config.setdefault(section, {}).update(table)
        return config

    def _make_server(self, sid: int) -> None:
        path = os.path.join(self.workdir, f"server{sid}.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(dump_toml(self.server_config(sid)))
        server = ServerProcess(path, os.path.join(self.workdir, f"server{sid}.log"), server_id=sid)
        server.prefix = self.server_hosts[sid].command([])
        self.servers[sid] = server

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        if self.db is not None:
            self.db.start()
        for server in self.servers.values():
            server.start()
        for server in self.servers.values():
            server.wait_ready(timeout)
        self.wait_converged(30.0)

    def client(self, name: str, host: int = 0, **options: Any) -> ClientProcess:
        """A started client daemon named ``name`` on client host ``host`` (its home in the workdir)."""
        where = self.client_hosts[host]
        options.setdefault("peer_host", where.ip)
        process = ClientProcess(os.path.join(self.workdir, name), servers=self.client_list, **options)
        process.prefix = where.command([])
        process.init({"chunk_size": 32768, "interface": where.ip})
        process.start()
        process.wait_ready()
        self.clients[name] = process
        return process

    def close(self) -> None:
        for process in [*self.clients.values(), *self.servers.values()]:
            try:
                process.kill()
            except Exception:  # noqa: BLE001 - the namespaces' processes are killed below anyway
                pass
        try:
            self.net.close()
        finally:
            if self.db is not None:
                self.db.close()

    def __enter__(self) -> HostsCloud:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- looking at the cloud --------------------------------------------------------------------

    def in_host(self, host: netns.Host, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.net.run_in(host, fn, *args, **kwargs)

    def status(self, sid: int, timeout: float = 0.5) -> dict[str, Any] | None:
        """Server ``sid``'s own status, asked from its own host (works when it is cut off)."""
        try:
            return self.in_host(
                self.server_hosts[sid], status_tool.query, self.client_address(sid), "status", timeout=timeout
            )
        except (CloudUnreachable, RequestFailed, OSError):
            return None

    def query(self, sid: int, op: str, timeout: float = 1.0) -> dict[str, Any]:
        return self.in_host(
            self.server_hosts[sid], status_tool.query, self.client_address(sid), op, timeout=timeout
        )

    def running(self) -> list[int]:
        return [s for s, p in self.servers.items() if p.alive]

    def wait_converged(self, timeout: float = 15.0, members: set[int] | None = None) -> int:
        """Until every server in ``members`` (default: the running ones) names the same coordinator
        and sees exactly ``members``; the coordinator."""
        want = members if members is not None else set(self.running())
        deadline = time.monotonic() + timeout
        views: dict[int, Any] = {}
        while time.monotonic() < deadline:
            views = {s: self.status(s) for s in want}
            coordinators = {v["coordinator"] for v in views.values() if v}
            if (
                all(views.values())
                and len(coordinators) == 1
                and None not in coordinators
                and all(set(v["members"]) == want for v in views.values())
            ):
                return coordinators.pop()
            time.sleep(0.1)
        raise ServerFailedError(f"servers {sorted(want)} did not converge within {timeout} s: {views}")

    def wait_whole(self, timeout: float = 90.0) -> None:
        """Until every database node is Synced in one primary component of all the nodes (the same
        view everywhere) and every running server agrees on one coordinator: what a fault must
        wait for before the next one (a second node lost before the first rejoined leaves no
        majority, and Galera stops until someone bootstraps it again)."""
        if self.database == "galera":
            n = len(self.db.nodes)
            deadline = time.monotonic() + timeout
            while True:
                states = [node.status() for node in self.db.nodes]
                if (
                    all(
                        s.get("wsrep_local_state_comment") == "Synced"
                        and s.get("wsrep_cluster_status") == "Primary"
                        and s.get("wsrep_cluster_size") == str(n)
                        for s in states
                    )
                    and len({s.get("wsrep_cluster_conf_id") for s in states}) == 1
                ):
                    break
                if time.monotonic() > deadline:
                    raise galera.GaleraError(f"the database nodes did not come back together: {states}")
                time.sleep(0.1)
        self.wait_converged(timeout)

    def _wait_view(self, lost: int) -> None:
        """Until the nodes other than server ``lost``'s have installed a view without it (so that
        a size-3 status read after the heal is not the stale view from before the fault)."""
        others = [s for s in self.ids if s != lost]
        for sid in others:
            self.db_node(sid).wait_state(
                lambda s: (
                    s.get("wsrep_cluster_status") == "Primary"
                    and s.get("wsrep_cluster_size") == str(len(others))
                ),
                60,
            )

    def strike(self, fault: str, sid: int, hold: float) -> None:
        """One fault on server host ``sid`` for ``hold`` seconds (at least until the database
        noticed it), then heal or restart, then ``wait_whole``. Faults: ``isolate`` (the host
        cut off), ``split`` (the servers' hosts split, clients reach all), ``kill_db``,
        ``kill_server`` (kill -9, then restart)."""
        galera_db = self.database == "galera"
        if fault in ("isolate", "split"):
            if fault == "isolate":
                self.isolate(sid)
            else:
                self.split([s for s in self.ids if s != sid], [sid])
            time.sleep(hold)
            if galera_db:
                self.db_node(sid).wait_state(lambda s: s.get("wsrep_cluster_status") == "non-Primary", 60)
                self._wait_view(sid)
            self.heal_all()
        elif fault == "kill_db":
            self.kill_db(sid)
            time.sleep(hold)
            self._wait_view(sid)
            self.restart_db(sid)
        elif fault == "kill_server":
            self.kill_server(sid)
            time.sleep(hold)
            self.restart_server(sid)
        else:
            raise ValueError(f"unknown fault {fault!r}")
        self.wait_whole()

    def db_node(self, sid: int) -> galera.GaleraNode:
        assert self.db is not None
        return self.db.nodes[self.ids.index(sid)] if self.database == "galera" else self.db.nodes[0]

    def sql(self, query: str, params: tuple = (), *, sid: int | None = None) -> list[tuple]:
        """Rows of ``query`` on the ``cloudp2p`` database of server ``sid``'s node (or any live node)."""
        nodes = [self.db_node(sid)] if sid is not None else [n for n in self.db.nodes if n.alive]
        conn = nodes[0].connect("cloudp2p")
        try:
            with conn.cursor() as cursor:
                cursor.execute(query, params)
                return list(cursor.fetchall())
        finally:
            conn.close()

    # -- faults ----------------------------------------------------------------------------------

    def kill_server(self, sid: int) -> None:
        self.servers[sid].kill()

    def pause_server(self, sid: int) -> None:
        self.servers[sid].pause()

    def resume_server(self, sid: int) -> None:
        self.servers[sid].resume()

    def restart_server(self, sid: int, timeout: float = 60.0) -> None:
        self.servers[sid].start()
        self.servers[sid].wait_ready(timeout)

    def kill_db(self, sid: int) -> None:
        self.db_node(sid).kill()

    def pause_db(self, sid: int) -> None:
        self.db_node(sid).pause()

    def resume_db(self, sid: int) -> None:
        self.db_node(sid).resume()

    def restart_db(self, sid: int, timeout: float = 90.0) -> None:
        """Start the killed node of server ``sid`` again; it rejoins by IST and syncs."""
        assert isinstance(self.db, galera.GaleraCluster)
        self.db.restart(self.db_node(sid), timeout)

    def isolate(self, sid: int) -> None:
        """Cut server ``sid``'s host (its server and its database node) off every other host."""
        self.net.isolate(self.server_hosts[sid])

    def heal(self, sid: int) -> None:
        self.net.heal(self.server_hosts[sid])

    def split(self, side_a: list[int], side_b: list[int]) -> None:
        """The server hosts of the two sides cannot reach each other; client hosts reach all."""
        self.net.split([self.server_hosts[s] for s in side_a], [self.server_hosts[s] for s in side_b])

    def heal_all(self) -> None:
        self.net.heal_all()

    def keep_logs(self, into: str) -> None:
        """Copy the database logs next to the server logs (the database folder is removed on close)."""
        if self.db is None:
            return
        for node in self.db.nodes:
            if os.path.exists(node.error_log):
                shutil.copy(node.error_log, os.path.join(into, f"{node.name}.error.log"))
