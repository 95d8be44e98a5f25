"""The daemon: twistd plugin, readiness line, config errors, ports in use, `make cluster` and Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from cloudp2p.testing.cluster import READY_RE, LocalCluster, dump_toml
from cloudp2p.testing.daemon import twistd_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def run_twistd(config_path: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *twistd_command(),
            "-n",
            "--pidfile=",
            "--logfile",
            str(tmp_path / "log"),
            "cloudp2p-server",
            "--config",
            config_path,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )


def test_twistd_lists_the_plugin():
    out = subprocess.run([*twistd_command(), "--help"], capture_output=True, text=True, timeout=30)
    assert "cloudp2p-server" in out.stdout


def test_a_bad_config_stops_the_daemon_naming_file_and_key(tmp_path):
    cloud = LocalCluster(str(tmp_path / "c"), 1, overrides={"server": {"max_pendign": 5}})
    path = cloud.servers[1].config_path
    out = run_twistd(path, tmp_path)
    assert out.returncode != 0
    assert path in out.stderr + out.stdout and "max_pendign" in out.stderr + out.stdout
    config = cloud.configs[1]
    del config["server"]["max_pendign"]
    config["cluster"]["peers"] = ["2@127.0.0.1:notaport"]
    (tmp_path / "bad.toml").write_text(dump_toml(config))
    out = run_twistd(str(tmp_path / "bad.toml"), tmp_path)
    assert out.returncode != 0 and "[cluster] peers" in out.stderr + out.stdout


def test_a_port_in_use_stops_the_daemon_with_a_clear_error(tmp_path):
    cloud = LocalCluster(str(tmp_path / "c"), 1)
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(cloud.client_addresses[1])
    try:
        out = run_twistd(cloud.servers[1].config_path, tmp_path)
    finally:
        busy.close()
    text = out.stderr + out.stdout + (tmp_path / "log").read_text()
    assert out.returncode != 0
    assert "[server] client_listen: cannot listen on 127.0.0.1:" in text


def test_one_server_alone_becomes_coordinator_and_serves(cluster_factory):
    cloud = cluster_factory(1)
    assert (
        READY_RE.search(cloud.servers[1].log_text()).group(0).startswith("cloudp2p-server 1 ready: cluster ")
    )
    view = cloud.status(1, timeout=2.0)
    assert view["coordinator"] == 1 and view["members"] == [1]


def test_cluster_tool_runs_three_servers_and_ctrl_c_stops_them_all(tmp_path):
    cloud = LocalCluster(str(tmp_path / "c"), 3)
    paths = [cloud.servers[s].config_path for s in (1, 2, 3)]
    tool = subprocess.Popen(
        [sys.executable, "-m", "cloudp2p.testing.cluster", *paths],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum("ready: cluster" in line for line in lines) < 3:
            line = tool.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert sum("ready: cluster" in line for line in lines) == 3, "".join(lines)
        assert any(line.startswith("[server2] ") for line in lines)
        cloud.wait_converged(15.0, members={1, 2, 3})
        os.killpg(tool.pid, signal.SIGINT)  # what Ctrl-C does to the foreground process group
        rest, _ = tool.communicate(timeout=30)
    finally:
        if tool.poll() is None:
            os.killpg(tool.pid, signal.SIGKILL)
            tool.wait()
    assert tool.returncode == 0, rest
    assert rest.count("Server Shut Down.") == 3, rest
    # Every port is free again: no server was left behind.
    for address in list(cloud.client_addresses.values()) + list(cloud.cluster_addresses.values()):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(address)
        s.close()
