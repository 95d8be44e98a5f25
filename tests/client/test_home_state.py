"""The home directory (permissions, atomic writes), the client config, keys and the local state."""

from __future__ import annotations

import os
import stat

import pytest

from cloudp2p.client import config as cconfig
from cloudp2p.client import identity
from cloudp2p.client.errors import HomeError
from cloudp2p.client.home import Home
from cloudp2p.client.identity import verify
from cloudp2p.client.state import State, StateError
from cloudp2p.client.stories.sharing import machine
from cloudp2p.errors import ConfigError


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_home_is_private_and_tightened(tmp_path):
    path = tmp_path / "home"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    home = Home(path)
    home.create()
    assert _mode(path) == 0o700
    assert all(_mode(path / d) == 0o700 for d in ("originals", "received", "ledger", "views", "thumbnails"))
    written = home.write_bytes(path / "x.bin", b"data")
    assert _mode(written) == 0o600 and written.read_bytes() == b"data"
    assert [p.name for p in path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_home_refuses_paths_too_long_for_a_socket(tmp_path):
    with pytest.raises(HomeError, match="too long"):
        Home(tmp_path / ("x" * 120)).create()


def test_home_resolve_stays_inside(tmp_path):
    home = Home(tmp_path)
    assert home.resolve("received/a.png") == (tmp_path / "received" / "a.png").resolve()
    with pytest.raises(HomeError):
        home.resolve("../../etc/passwd")


def test_config_render_and_load(tmp_path):
    text = cconfig.render([("127.0.0.1", 9101), ("::1", 9102)], {"chunk_size": 32768}, peer_timeout=1.5)
    path = tmp_path / "client.toml"
    path.write_text(text)
    cfg = cconfig.load(str(path))
    assert cfg.servers == (("127.0.0.1", 9101), ("::1", 9102))
    assert cfg.peer_timeout == 1.5 and cfg.transfer.chunk_size == 32768


@pytest.mark.parametrize(
    "body,needle",
    [
        ("servers = []", "at least one server"),
        ('servers = ["127.0.0.1:1", "127.0.0.1:1"]', "twice"),
        ('servers = ["127.0.0.1:99999"]', "between 1 and 65535"),
        ('servers = ["127.0.0.1:1"]\nheartbeat_interval = 0', "greater than 0"),
        ('servers = ["127.0.0.1:1"]\npeer_host = "example.org"', "IP address"),
        ('servers = ["127.0.0.1:1"]\nrequest_timeout = true', "boolean"),
    ],
)
def test_config_errors_name_the_key(tmp_path, body, needle):
    path = tmp_path / "client.toml"
    path.write_text("[client]\n" + body + "\n")
    with pytest.raises(ConfigError, match=needle) as info:
        cconfig.load(str(path))
    assert str(path) in str(info.value)


def test_identity_persists_with_mode_0600(tmp_path):
    home = Home(tmp_path)
    home.create()
    ident = identity.load_or_create(home)
    assert _mode(home.identity_file) == 0o600
    again = identity.load_or_create(home)
    assert again.public == ident.public
    assert verify(ident.public.to_json()["ed25519"], ident.sign(b"m"), b"m")
    home.identity_file.write_text('{"version": 1, "x25519": "!!", "ed25519": ""}')
    with pytest.raises(HomeError, match="damaged"):
        identity.load(home)


def test_state_machines_and_persistence(tmp_path):
    home = Home(tmp_path)
    home.create()
    state = State(home)
    inbox, outbox = machine.inbox(lambda: state), machine.outbox(lambda: state)
    moved = []
    inbox.observers.append(moved.append)
    outbox.observers.append(moved.append)
    state.put("inbox", "r1", {"state": "pending", "from": "bob"})
    inbox.move("r1", "sending")
    inbox.move("r1", "accepted")
    with pytest.raises(StateError, match="cannot become rejected"):
        inbox.move("r1", "rejected")
    state.put("outbox", "q1", {"state": "sent"})
    outbox.move("q1", "rejected")
    with pytest.raises(StateError):
        outbox.move("q1", "fetching")
    assert moved == [  # the refused moves emit nothing
        machine.Moved("inbox", "r1", "pending", "sending"),
        machine.Moved("inbox", "r1", "sending", "accepted"),
        machine.Moved("outbox", "q1", "sent", "rejected"),
    ]
    state.mark_applied("m1", 1000.0)
    reloaded = State(home)
    assert reloaded.get("inbox", "r1")["state"] == "accepted" and reloaded.applied("m1")
    reloaded.mark_applied("m2", 1000.0 + 31 * 24 * 3600)  # m1 is past the retention window
    assert not reloaded.applied("m1") and reloaded.applied("m2")
    assert _mode(home.state_file) == 0o600


def test_damaged_state_is_refused(tmp_path):
    home = Home(tmp_path)
    home.create()
    home.state_file.write_text("{not json")
    with pytest.raises(HomeError, match="cannot read"):
        State(home)
