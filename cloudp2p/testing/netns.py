"""Linux network namespaces as separate hosts on one bridge, with faults (needs root).

``Network`` makes a bridge namespace and, per host, a namespace joined to the bridge by a veth
pair, with a private address (``10.231.0.0/24``) that exists only inside those namespaces: no
address, route or firewall rule of the machine itself changes. Processes start inside a host
with ``ip netns exec``; a Python thread can enter one (``run_in``) to open sockets there.

Faults, all silent drops as a real network would show them:

- ``isolate(host)``: its veth is taken off the bridge (every packet to or from it vanishes);
  ``heal(host)`` puts it back;
- ``drop(src, dst)``: one-way, packets from ``src`` never reach ``dst`` (an nftables rule in
  ``dst``'s namespace); ``heal_drops()`` removes them all.

Everything is named ``cp2ph<pid>n<k>-...`` after the process that made it. ``close()`` (also
run by ``atexit`` and by the owner's finalizer) kills every process left in the namespaces and
deletes them; ``sweep()``, called before a new network is made, removes what a process that
died without cleaning up left behind.
"""

from __future__ import annotations

import atexit
import ctypes
import ipaddress
import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

PREFIX = "cp2ph"
SUBNET = ipaddress.ip_network("10.231.0.0/24")
CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_counter = itertools.count(1)


class NetworkError(Exception):
    """The host network could not be built (not root, or a command failed)."""


def can_build() -> str | None:
    """None when namespaces can be built here, else the reason why not."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) to create network namespaces"
    for tool in ("/usr/sbin/ip", "/usr/sbin/nft"):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing (apt-get install iproute2 nftables)"
    return None


def _run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=30)
    if check and done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _namespaces() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def _pid_alive(pid: int) -> bool:
    """Running (a zombie, killed and not yet reaped by its parent, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def kill_namespace(name: str) -> int:
    """SIGKILL every process inside namespace ``name`` (SIGCONT first: a stopped one too); the count."""
    done = _run("ip", "netns", "pids", name, check=False)
    pids = [int(p) for p in done.stdout.split() if p.isdigit()]
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _pid_alive(p)]
        time.sleep(0.02)
    return len(pids)


def delete_namespace(name: str) -> None:
    kill_namespace(name)
    _run("ip", "netns", "del", name, check=False)


def sweep(prefix: str = PREFIX) -> list[str]:
    """Delete the namespaces (and their processes) left by harness processes that no longer run."""
    removed = []
    for name in _namespaces():
        if not name.startswith(prefix):
            continue
        owner = name[len(prefix) :].split("n", 1)[0]
        if owner.isdigit() and _pid_alive(int(owner)):
            continue  # a live run's network (this process's too)
        delete_namespace(name)
        removed.append(name)
    return removed


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Host:
    """One namespace on the bridge: ``name``, ``ns`` (namespace name), ``ip``."""

    def __init__(self, network: Network, name: str, ns: str, ip: str, port: str) -> None:
        self.network = network
        self.name = name
        self.ns = ns
        self.ip = ip
        self.port = port  # the veth end on the bridge, in the bridge namespace

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(
        self, *argv: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return _run(*self.command(list(argv)), check=check, input=input)

    def __repr__(self) -> str:
        return f"Host({self.name} {self.ip})"


class Network:
    """A bridge and its hosts; see the module docstring. Use as a context manager or call close()."""

    def __init__(self, prefix: str = PREFIX) -> None:
        reason = can_build()
        if reason:
            raise NetworkError(reason)
        sweep(prefix)
        self.tag = f"{prefix}{os.getpid()}n{next(_counter)}"
        self.bridge_ns = f"{self.tag}-br"
        self.hosts: dict[str, Host] = {}
        self._addresses = SUBNET.hosts()
        self._drops: set[tuple[str, str]] = set()
        self._closed = False
        self._made: list[str] = []
        atexit.register(self.close)
        try:
            self._add_namespace(self.bridge_ns)
            _run("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._made.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str) -> Host:
        if name in self.hosts or not name.isidentifier() or len(name) > 12:
            raise ValueError(f"bad or duplicate host name {name!r}")
        ns = f"{self.tag}-{name}"
        ip = str(next(self._addresses))
        port = f"v{len(self.hosts) + 1}"
        self._add_namespace(ns)
        # Both ends are made in the host's namespace (no interface ever appears in the machine's
        # own namespace), then one end moves to the bridge.
        _run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port)
        _run("ip", "-n", ns, "link", "set", port, "netns", self.bridge_ns)
        _run("ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
        _run("ip", "-n", ns, "addr", "add", f"{ip}/{SUBNET.prefixlen}", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "netns", "exec", ns, "nft", "add", "table", "inet", "cp2p")
        _run(
            "ip", "netns", "exec", ns, "nft", "add", "chain", "inet", "cp2p", "input",
            "{ type filter hook input priority 0 ; policy accept ; }",
        )  # fmt: skip
        host = Host(self, name, ns, ip, port)
        self.hosts[name] = host
        return host

    # -- faults ----------------------------------------------------------------------------------

    def isolate(self, host: Host) -> None:
        """Cut ``host`` off the bridge: its packets, both ways, are silently lost."""
        _run("ip", "-n", self.bridge_ns, "link", "set", host.port, "nomaster")

    def heal(self, host: Host) -> None:
        _run("ip", "-n", self.bridge_ns, "link", "set", host.port, "master", "br0")

    def isolated(self, host: Host) -> bool:
        out = _run("ip", "-n", self.bridge_ns, "-o", "link", "show", host.port).stdout
        return " master br0 " not in out

    def drop(self, src: Host, dst: Host) -> None:
        """Packets from ``src`` to ``dst`` are lost (one way); the other direction still works."""
        if (src.name, dst.name) in self._drops:
            return
        dst.run("nft", "add", "rule", "inet", "cp2p", "input", "ip", "saddr", src.ip, "drop")
        self._drops.add((src.name, dst.name))

    def split(self, side_a: list[Host], side_b: list[Host]) -> None:
        """Drop everything between the two groups, both ways."""
        for a in side_a:
            for b in side_b:
                self.drop(a, b)
                self.drop(b, a)

    def heal_drops(self) -> None:
        for _, dst in list(self._drops):
            self.hosts[dst].run("nft", "flush", "chain", "inet", "cp2p", "input")
        self._drops.clear()

    def heal_all(self) -> None:
        self.heal_drops()
        for host in self.hosts.values():
            if self.isolated(host):
                self.heal(host)

    # -- code inside a host ----------------------------------------------------------------------

    def run_in(self, host: Host, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args)`` on a new thread that lives in ``host``'s namespace: the sockets it opens
        stay there (a thread's network namespace is its own; the caller's is never changed)."""
        result: list[Any] = []

        def body() -> None:
            try:
                fd = os.open(f"/run/netns/{host.ns}", os.O_RDONLY)
                try:
                    _setns(fd)
                finally:
                    os.close(fd)
                result.append((True, fn(*args, **kwargs)))
            except BaseException as e:  # noqa: BLE001 - handed back to the caller
                result.append((False, e))

        thread = threading.Thread(target=body, name=f"in-{host.name}")
        thread.start()
        thread.join()
        ok, value = result[0]
        if not ok:
            raise value
        return value

    # -- teardown --------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every process in the hosts, delete every namespace (and with them every link)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for name in reversed(self._made):
            delete_namespace(name)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
