"""The strict server config as the daemon uses it: every error names the file and the key."""

from __future__ import annotations

import os
import pathlib

import pytest
from twisted.python import usage

from cloudp2p.errors import ConfigError
from cloudp2p.server import config as server_config
from cloudp2p.server import tap
from cloudp2p.testing.cluster import dump_toml

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECRET = "a-test-secret-that-is-long-enough"


def base() -> dict:
    return {
        "server": {"id": 1, "client_listen": "127.0.0.1:9101"},
        "cluster": {
            "listen": "127.0.0.1:9001",
            "secret": SECRET,
            "peers": ["2@127.0.0.1:9002", "3@127.0.0.1:9003"],
        },
    }


def write(tmp_path, config: dict, text: str | None = None) -> str:
    path = tmp_path / "server.toml"
    path.write_text(text if text is not None else dump_toml(config))
    return str(path)


def load_error(tmp_path, config: dict | None = None, text: str | None = None) -> str:
    path = write(tmp_path, config or {}, text)
    with pytest.raises(ConfigError) as info:
        server_config.load(path)
    message = str(info.value)
    assert path in message
    return message


@pytest.mark.parametrize("name", ["server1.toml", "server2.toml", "server3.toml"])
def test_the_shipped_files_are_valid(name):
    config = server_config.load(ROOT / "etc" / name)
    sid = int(name[6])
    assert config.server.id == sid
    assert config.server.client_listen == ("127.0.0.1", 9100 + sid)
    assert config.cluster.listen == ("127.0.0.1", 9000 + sid)
    assert sorted(config.cluster.peers) == sorted({1, 2, 3} - {sid})


def test_minimal_file_gets_defaults(tmp_path):
    config = server_config.load(write(tmp_path, base()))
    assert config.server.max_pending == 10_000
    assert config.cluster.heartbeat_interval == 0.2 and config.cluster.failure_timeout == 1.0
    assert config.cluster.secret == SECRET


def test_unknown_key(tmp_path):
    config = base()
    config["server"]["client_lisen"] = "127.0.0.1:1"
    message = load_error(tmp_path, config)
    assert "[server] unknown key 'client_lisen'" in message


def test_unknown_section(tmp_path):
    config = base()
    config["severs"] = {"id": 1}
    assert "[severs]" in load_error(tmp_path, config)


def test_bad_type(tmp_path):
    config = base()
    config["server"]["id"] = "one"
    message = load_error(tmp_path, config)
    assert "[server] id" in message and "expected an integer" in message


def test_bad_value(tmp_path):
    config = base()
    config["server"]["client_listen"] = "localhost:9101"
    message = load_error(tmp_path, config)
    assert "[server] client_listen" in message and "IP address" in message


def test_missing_peers(tmp_path):
    config = base()
    del config["cluster"]["peers"]
    message = load_error(tmp_path, config)
    assert "[cluster] peers" in message and "missing" in message


def test_one_server_cloud_says_so_explicitly(tmp_path):
    config = base()
    config["cluster"]["peers"] = []
    assert server_config.load(write(tmp_path, config)).cluster.peers == {}


def test_missing_required_section_and_key(tmp_path):
    config = base()
    del config["server"]
    assert "[server]" in load_error(tmp_path, config)
    config = base()
    del config["server"]["id"]
    assert "[server] id: missing required key" in load_error(tmp_path, config)


def test_peer_with_bad_syntax(tmp_path):
    config = base()
    config["cluster"]["peers"] = ["127.0.0.1:9002"]
    assert "[cluster] peers" in load_error(tmp_path, config)


def test_duplicate_peer_ids_and_addresses(tmp_path):
    config = base()
    config["cluster"]["peers"] = ["2@127.0.0.1:9002", "2@127.0.0.1:9003"]
    assert "[cluster] peers" in load_error(tmp_path, config)
    config["cluster"]["peers"] = ["2@127.0.0.1:9002", "3@127.0.0.1:9002"]
    assert "[cluster] peers" in load_error(tmp_path, config)


def test_own_id_at_another_address_and_peer_at_own_address(tmp_path):
    config = base()
    config["cluster"]["peers"] = ["1@127.0.0.1:9005", "2@127.0.0.1:9002"]
    assert "own id 1" in load_error(tmp_path, config)
    config["cluster"]["peers"] = ["2@127.0.0.1:9001"]
    assert "[cluster] peers: server 2" in load_error(tmp_path, config)
    # Its own entry at its own address is fine: every server can share one peer list.
    config["cluster"]["peers"] = ["1@127.0.0.1:9001", "2@127.0.0.1:9002"]
    assert list(server_config.load(write(tmp_path, config)).cluster.peers) == [1, 2]


def test_client_and_cluster_sockets_must_differ(tmp_path):
    config = base()
    config["server"]["client_listen"] = "127.0.0.1:9001"
    assert "[server] client_listen" in load_error(tmp_path, config)


def test_short_secret_is_refused(tmp_path):
    config = base()
    config["cluster"]["secret"] = "short"
    assert "[cluster] secret" in load_error(tmp_path, config)


def test_secret_file(tmp_path):
    secret_path = tmp_path / "secret"
    secret_path.write_text(SECRET + "\n")
    os.chmod(secret_path, 0o600)
    config = base()
    del config["cluster"]["secret"]
    config["cluster"]["secret_file"] = str(secret_path)
    assert server_config.load(write(tmp_path, config)).cluster.secret == SECRET
    secret_path.write_text("tiny")
    assert "[cluster] secret_file" in load_error(tmp_path, config)
    config["cluster"]["secret_file"] = str(tmp_path / "nope")
    assert "[cluster] secret_file: cannot read" in load_error(tmp_path, config)
    config["cluster"]["secret"] = SECRET
    assert "not both" in load_error(tmp_path, config)
    del config["cluster"]["secret"], config["cluster"]["secret_file"]
    assert "[cluster] secret: missing" in load_error(tmp_path, config)


def test_timers_cross_checked(tmp_path):
    config = base()
    config["cluster"]["failure_timeout"] = 0.1
    assert "[cluster] failure_timeout" in load_error(tmp_path, config)


def test_not_toml(tmp_path):
    assert "not valid TOML" in load_error(tmp_path, text="[server\nid = 1")


def test_tap_options_turn_config_errors_into_usage_errors(tmp_path):
    config = base()
    config["server"]["bogus"] = 1
    path = write(tmp_path, config)
    with pytest.raises(usage.UsageError) as info:
        tap.Options().parseOptions(["--config", path])
    assert path in str(info.value) and "bogus" in str(info.value)
    with pytest.raises(usage.UsageError, match="--config"):
        tap.Options().parseOptions([])
    options = tap.Options()
    options.parseOptions(["--config", str(ROOT / "etc" / "server1.toml")])
    assert options["parsed"].server.id == 1


def test_the_png_writer_is_fast_or_pillow(tmp_path):
    config = base()
    assert server_config.load(write(tmp_path, config)).encryption.png_writer == "fast"
    config["encryption"] = {"png_writer": "pillow"}
    assert server_config.load(write(tmp_path, config)).encryption.png_writer == "pillow"
    config["encryption"] = {"png_writer": "libpng"}
    message = load_error(tmp_path, config)
    assert "png_writer" in message and "libpng" in message
