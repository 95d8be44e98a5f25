"""The host network itself: addresses, silent faults, running code inside a host, and cleanup
(also of what a killed run left behind)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from cloudp2p.testing import netns

from .conftest import require_hosts


@pytest.fixture
def net():
    require_hosts("sqlite")
    made = netns.Network()
    yield made
    made.close()


def _delivered(net, src, dst, port=5000) -> bool:
    """One datagram from ``src`` to ``dst``: did it arrive (within 0.3 s)?"""
    receiver = net.run_in(dst, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    sender = net.run_in(src, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind((dst.ip, port))
        receiver.settimeout(0.3)
        sender.sendto(b"x", (dst.ip, port))
        receiver.recv(16)
        return True
    except TimeoutError:
        return False
    finally:
        receiver.close()
        sender.close()


def test_hosts_reach_each_other_and_faults_drop_silently(net):
    a, b, c = (net.add_host(n) for n in "abc")
    assert {a.ip, b.ip, c.ip} <= {str(ip) for ip in netns.SUBNET.hosts()}
    assert _delivered(net, a, b) and _delivered(net, b, a)
    net.isolate(b)  # both ways, and nobody else is affected
    assert not _delivered(net, a, b) and not _delivered(net, b, a) and _delivered(net, a, c)
    net.heal(b)
    assert _delivered(net, a, b)
    net.drop(a, b)  # one way only
    assert not _delivered(net, a, b) and _delivered(net, b, a) and _delivered(net, c, b)
    net.heal_drops()
    assert _delivered(net, a, b)
    # the machine's own namespace never sees these addresses
    with pytest.raises(OSError):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((a.ip, 0))
        finally:
            s.close()


def test_close_kills_the_hosts_processes_and_deletes_every_namespace(net):
    host = net.add_host("a")
    sleeper = subprocess.Popen(host.command(["sleep", "300"]))
    _wait_inside(host, sleeper.pid)
    names = [n for n in os.listdir("/run/netns") if n.startswith(net.tag)]
    assert len(names) == 2  # the bridge and the host
    net.close()
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    assert not [n for n in os.listdir("/run/netns") if n.startswith(net.tag)]


def test_a_killed_runs_leftovers_are_swept_by_the_next_network():
    require_hosts("sqlite")
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        from cloudp2p.testing import netns
        net = netns.Network()
        host = net.add_host("a")
        sleeper = subprocess.Popen(host.command(["sleep", "300"]))
        while str(sleeper.pid) not in subprocess.run(["ip", "netns", "pids", host.ns],
                                                     capture_output=True, text=True).stdout.split():
            time.sleep(0.01)
        print(net.tag, sleeper.pid, flush=True)
        time.sleep(300)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    tag, sleeper = child.stdout.readline().split()
    sleeper = int(sleeper)
    assert tag.startswith(netns.PREFIX)
    child.kill()  # kill -9: no finalizer, no atexit
    child.wait(timeout=10)
    assert [n for n in os.listdir("/run/netns") if n.startswith(tag)]
    later = netns.Network()  # sweeps what a dead owner left
    try:
        assert not [n for n in os.listdir("/run/netns") if n.startswith(tag)]
        assert not _running(sleeper)  # its process inside the host was killed too
    finally:
        later.close()


def _wait_inside(host, pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if (
            str(pid)
            in subprocess.run(["ip", "netns", "pids", host.ns], capture_output=True, text=True).stdout.split()
        ):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never entered {host.ns}")


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
