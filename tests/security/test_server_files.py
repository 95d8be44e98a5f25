"""Finding 7: the development secret stays on loopback, secret files and the directory file are private."""

from __future__ import annotations

import os
import stat
import subprocess

from cloudp2p.testing.cluster import dump_toml, free_udp_ports
from cloudp2p.testing.daemon import twistd_command

DEV_SECRET = "cloudp2p-local-development-secret-change-me"  # the one in etc/server*.toml


def _config(tmp_path, *, secret=None, secret_file=None, client_host="127.0.0.1"):
    ports = free_udp_ports(3)
    cluster = {"listen": f"127.0.0.1:{ports[0]}", "peers": [f"2@127.0.0.1:{ports[2]}"]}
    if secret is not None:
        cluster["secret"] = secret
    if secret_file is not None:
        cluster["secret_file"] = secret_file
    config = {
        "server": {"id": 1, "client_listen": f"{client_host}:{ports[1]}"},
        "cluster": cluster,
        "directory": {"backend": "sqlite", "path": str(tmp_path / "d.sqlite3"), "scrypt_n": 1024},
    }
    path = tmp_path / "server.toml"
    path.write_text(dump_toml(config))
    return path


def _start(path, timeout=20.0):
    """Run the server; (exit code or None if it came up, its output). A server that comes up is stopped."""
    proc = subprocess.Popen(
        [*twistd_command(), "-n", "--pidfile=", "cloudp2p-server", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=str(path.parent),
    )
    out = b""
    try:
        import selectors
        import time

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(0.2):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
                if b"ready: cluster" in out:
                    return None, out.decode("utf-8", "replace")
        proc.wait(timeout=5)
        return proc.returncode, out.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


def test_the_development_secret_is_refused_off_loopback(tmp_path):
    code, out = _start(_config(tmp_path, secret=DEV_SECRET, client_host="0.0.0.0"))
    assert code not in (None, 0), "a server with the development secret started on 0.0.0.0"
    assert "development secret" in out and "client_listen" in out, out[-600:]


def test_the_development_secret_still_runs_on_loopback(tmp_path):
    code, out = _start(_config(tmp_path, secret=DEV_SECRET))
    assert code is None, out[-600:]


def test_a_secret_file_others_can_read_is_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("a-long-random-secret-for-this-test\n")
    secret.chmod(0o644)
    code, out = _start(_config(tmp_path, secret_file=str(secret)))
    assert code not in (None, 0), "a server started with a world-readable secret file"
    assert str(secret) in out and "chmod 600" in out, out[-600:]


def test_the_directory_database_is_private(cloud):
    path = cloud.configs[1]["directory"]["path"]
    folder = os.path.dirname(path)
    modes = {
        p: stat.S_IMODE(os.stat(p).st_mode) for p in [path, path + "-wal", path + "-shm"] if os.path.exists(p)
    }
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, oct(os.stat(folder).st_mode)
    assert modes and all(m == 0o600 for m in modes.values()), {p: oct(m) for p, m in modes.items()}
