"""MariaDB Galera nodes inside the hosts of a ``netns.Network`` (for tests and benchmarks).

Each node is a ``mariadbd`` started with its own option file (never the machine's
``/etc/mysql``), its own data folder, socket and log under a temporary folder owned by the
``mysql`` user (mariadbd drops to that user; as root the rsync state transfer fails), and its
own address inside its host, so it cannot collide with the machine's MariaDB on 127.0.0.1.

Start-up is quick because a joining node is given a copy of a bootstrapped data folder
(``template``): its state (cluster UUID and seqno) matches the first node's, so it joins with no
state transfer at all. Later a node that was killed or cut off catches up by IST (incremental
state transfer) from a donor, as in production. The tests reach each node as root over its
UNIX socket; the servers reach it over TCP as ``cloudp2p`` with a password.

Galera timeouts are shortened (suspect a silent node after 3 s, evict it after at most 6 s) so
that tests see a partition handled in seconds, not the default 15 s (4 s proved too short on two
busy cores: a view change after a kill timed out and left the survivors without a primary); a causality wait
(``wsrep_sync_wait``) gives up after 4 s instead of 30 s, so that a server moves to another
node while its own lags, within the client's deadline.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import pymysql

from cloudp2p.testing.netns import Host

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "/usr/bin/mariadb-install-db"
PROVIDER = "/usr/lib/galera/libgalera_smm.so"
USER, PASSWORD = "cloudp2p", "cloudp2p-test-password"
PORT = 3306
PROVIDER_OPTIONS = (
    "gcache.size=64M; evs.keepalive_period=PT0.5S; evs.suspect_timeout=PT3S; "
    "evs.inactive_timeout=PT6S; evs.inactive_check_period=PT0.5S; evs.install_timeout=PT6S; "
    "evs.join_retrans_period=PT0.5S; pc.recovery=false; repl.causal_read_timeout=PT4S"
)


class GaleraError(Exception):
    """A Galera node did not start, or did not reach the state asked for in time."""


def can_run() -> str | None:
    """None when Galera nodes can run here, else the reason."""
    for path in (MARIADBD, INSTALL_DB, PROVIDER, "/usr/bin/rsync"):
        if not os.path.exists(path):
            return f"{path} is missing (apt-get install mariadb-server galera-4 rsync)"
    try:
        pwd.getpwnam("mysql")
    except KeyError:
        return "there is no mysql user"
    return None


def _chown_mysql(path: str) -> None:
    entry = pwd.getpwnam("mysql")
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid)


class GaleraNode:
    """One ``mariadbd`` with wsrep in ``host``; ``name`` is unique in the cluster."""

    def __init__(
        self, host: Host, name: str, folder: str, members: Sequence[str] | None, cluster: str = "cloudp2p"
    ) -> None:
        self.host = host
        self.name = name
        self.folder = folder
        self.datadir = os.path.join(folder, "data")
        self.socket = os.path.join(folder, "mysqld.sock")
        self.error_log = os.path.join(folder, "error.log")
        self.option_file = os.path.join(folder, "my.cnf")
        self.members = list(members) if members is not None else None  # None: a plain MariaDB
        self.cluster = cluster
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"mysql://{USER}:{PASSWORD}@{self.host.ip}:{PORT}/cloudp2p"

    def write_options(self) -> None:
        lines = [
            "[mysqld]",
            "user = mysql",
            f"datadir = {self.datadir}",
            f"socket = {self.socket}",
            f"pid-file = {os.path.join(self.folder, 'mysqld.pid')}",
            f"log-error = {self.error_log}",
            f"bind-address = {self.host.ip}",
            f"port = {PORT}",
            "skip-name-resolve",
            "character-set-server = utf8mb4",
            "collation-server = utf8mb4_bin",
            "binlog_format = ROW",
            "default_storage_engine = InnoDB",
            "innodb_autoinc_lock_mode = 2",
            "innodb_buffer_pool_size = 32M",
            "innodb_log_file_size = 16M",
            "innodb_flush_log_at_trx_commit = 1",
            "performance_schema = OFF",
            "max_connections = 200",
        ]
        if self.members is not None:
            lines += self._wsrep_options()
        with open(self.option_file, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.option_file, 0o644)

    def _wsrep_options(self) -> list[str]:
        return [
            "wsrep_on = ON",
            f"wsrep_provider = {PROVIDER}",
            f"wsrep_cluster_name = {self.cluster}",
            f"wsrep_cluster_address = gcomm://{','.join(self.members)}",
            f"wsrep_node_address = {self.host.ip}",
            f"wsrep_node_name = {self.name}",
            "wsrep_sst_method = rsync",
            f'wsrep_provider_options = "{PROVIDER_OPTIONS}"',
            "wsrep_slave_threads = 2",
        ]

    def recover_position(self) -> str | None:
        """``uuid:seqno`` this node had committed, read from InnoDB (``--wsrep-recover``), as
        systemd's galera_recovery does: a node killed with kill -9 has no saved position, and
        without it would ask for a full state transfer (SST) instead of the missing write sets (IST)."""
        log = os.path.join(self.folder, "recover.log")
        argv = [MARIADBD, f"--defaults-file={self.option_file}", "--wsrep-recover", f"--log-error={log}"]
        subprocess.run(self.host.command(argv), capture_output=True, timeout=120)
        try:
            with open(log, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        found = re.findall(r"WSREP: Recovered position: (\S+:-?\d+)", text)
        return found[-1] if found and not found[-1].endswith(":-1") else None

    def start(self, *, bootstrap: bool = False, recover: bool = False) -> None:
        if self.alive:
            raise GaleraError(f"{self.name} is already running")
        self.write_options()
        position = self.recover_position() if recover and self.members is not None else None
        if os.path.exists(self.error_log):
            os.replace(self.error_log, f"{self.error_log}.{self.starts}")
        argv = [MARIADBD, f"--defaults-file={self.option_file}"]
        if position:
            argv.append(f"--wsrep-start-position={position}")
        if bootstrap:
            argv.append("--wsrep-new-cluster")
        self.process = subprocess.Popen(
            self.host.command(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def connect(self, database: str | None = None, timeout: float = 5.0) -> pymysql.Connection:
        """A root connection over the node's UNIX socket (from the machine's own namespace)."""
        return pymysql.connect(
            unix_socket=self.socket, user="root", database=database, connect_timeout=timeout,
            read_timeout=timeout, write_timeout=timeout, autocommit=True,
        )  # fmt: skip

    def status(self) -> dict[str, str]:
        """``wsrep_%`` status variables (empty if the node does not answer)."""
        try:
            conn = self.connect(timeout=2.0)
        except pymysql.err.MySQLError:
            return {}
        try:
            with conn.cursor() as cursor:
                cursor.execute("SHOW GLOBAL STATUS LIKE 'wsrep_%'")
                return {"answering": "yes", **{k: str(v) for k, v in cursor.fetchall()}}
        except pymysql.err.MySQLError:
            return {}
        finally:
            conn.close()

    def synced(self) -> bool:
        s = self.status()
        return s.get("wsrep_local_state_comment") == "Synced" and s.get("wsrep_cluster_status") == "Primary"

    def wait_synced(self, timeout: float = 60.0, size: int | None = None) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        s: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.process is not None and not self.alive:
                raise GaleraError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            s = self.status()
            if self.members is None and s:
                return s  # a plain MariaDB: answering is enough
            if (
                s.get("wsrep_local_state_comment") == "Synced"
                and s.get("wsrep_cluster_status") == "Primary"
                and (size is None or s.get("wsrep_cluster_size") == str(size))
            ):
                return s
            time.sleep(0.1)
        raise GaleraError(f"{self.name} not synced after {timeout} s: {s}\n{self.log_tail()}")

    def wait_state(self, predicate: Any, timeout: float = 30.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        s: dict[str, str] = {}
        while time.monotonic() < deadline:
            s = self.status()
            if predicate(s):
                return s
            time.sleep(0.1)
        raise GaleraError(f"{self.name}: state not reached after {timeout} s: {s}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.error_log, encoding="utf-8", errors="replace") as f:
                return "\n".join(f.read().splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        parts = []
        for path in [*(f"{self.error_log}.{i}" for i in range(1, self.starts)), self.error_log]:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    parts.append(f.read())
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    def kill(self) -> None:
        """kill -9 (continued first if it was stopped), and reap it."""
        if self.process is not None and self.alive:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)

    def pause(self) -> None:
        if self.alive:
            self.process.send_signal(19)  # SIGSTOP

    def resume(self) -> None:
        if self.alive:
            self.process.send_signal(18)  # SIGCONT

    def stop(self, grace: float = 30.0) -> None:
        if self.process is None or not self.alive:
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()


def install(node: GaleraNode, *, bootstrap: bool) -> None:
    """A fresh data folder for ``node`` with the ``cloudp2p`` user; leaves the node running."""
    os.makedirs(node.folder)
    subprocess.run(
        [INSTALL_DB, "--no-defaults", f"--datadir={node.datadir}", "--user=mysql",
         "--auth-root-authentication-method=socket", "--skip-test-db"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    _chown_mysql(node.folder)
    node.start(bootstrap=bootstrap)
    node.wait_synced()
    conn = node.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'")
            cursor.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'%'")
    finally:
        conn.close()


def temp_root() -> str:
    root = tempfile.mkdtemp(prefix="cp2p-mariadb-")
    os.chmod(root, 0o755)  # mariadbd (user mysql) must reach its folder
    return root


class SingleMariaDB:
    """One plain MariaDB (no replication) in ``host``: the baseline the Galera figures compare to."""

    def __init__(self, host: Host) -> None:
        reason = can_run()
        if reason:
            raise GaleraError(reason)
        self.root = temp_root()
        self.node = GaleraNode(host, "db", os.path.join(self.root, "db"), None)
        self.nodes = [self.node]

    def start(self) -> None:
        install(self.node, bootstrap=False)

    def urls(self, first: int = 0) -> list[str]:
        return [self.node.url]

    def close(self) -> None:
        if self.node.alive:
            self.node.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class GaleraCluster:
    """One Galera node in each of ``hosts``; ``start()`` bootstraps the first and joins the rest."""

    def __init__(self, hosts: Sequence[Host], *, name: str = "cloudp2p") -> None:
        reason = can_run()
        if reason:
            raise GaleraError(reason)
        self.root = temp_root()
        members = [h.ip for h in hosts]
        self.nodes = [
            GaleraNode(h, f"g{i + 1}", os.path.join(self.root, f"g{i + 1}"), members, name)
            for i, h in enumerate(hosts)
        ]

    def _template(self) -> str:
        """A bootstrapped, cleanly stopped data folder with the ``cloudp2p`` user."""
        first = self.nodes[0]
        install(first, bootstrap=True)
        first.stop()
        return first.datadir

    def start(self, timeout: float = 90.0) -> None:
        template = self._template()
        for node in self.nodes[1:]:
            os.makedirs(node.folder)
            shutil.copytree(template, node.datadir, symlinks=True)
            for leftover in ("gvwstate.dat", "mysqld.pid"):
                path = os.path.join(node.datadir, leftover)
                if os.path.exists(path):
                    os.remove(path)
        _chown_mysql(self.root)
        self.nodes[0].start(bootstrap=True)
        self.nodes[0].wait_synced(timeout)
        for node in self.nodes[1:]:
            node.start()
        for node in self.nodes:
            node.wait_synced(timeout, size=len(self.nodes))

    def restart(self, node: GaleraNode, timeout: float = 90.0) -> None:
        """Start a stopped or killed node again; it rejoins (IST from a donor) and syncs."""
        node.start(recover=True)
        node.wait_synced(timeout)

    def urls(self, first: int) -> list[str]:
        """Every node's URL, the node at index ``first`` first (a server's local node)."""
        order = [self.nodes[first], *(n for i, n in enumerate(self.nodes) if i != first)]
        return [n.url for n in order]

    def close(self) -> None:
        for node in self.nodes:
            if node.alive:
                node.kill()
        shutil.rmtree(self.root, ignore_errors=True)
