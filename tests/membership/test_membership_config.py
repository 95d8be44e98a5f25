"""The [cluster] config section."""

import pytest

from cloudp2p.config import Schema
from cloudp2p.errors import ConfigError
from cloudp2p.membership import config as cc

SCHEMA = Schema((cc.SECTION,))
GOOD = {"listen": "127.0.0.1:9001", "secret": "s" * 20, "peers": ["2@127.0.0.1:9002", "3@10.0.0.3:9003"]}


def load(**changes):
    table = {**GOOD, **changes}
    return SCHEMA.validate({"cluster": {k: v for k, v in table.items() if v is not None}}, "s1.toml")


def test_defaults_and_settings():
    cfg = load()["cluster"]
    assert cfg.heartbeat_interval == 0.2 and cfg.failure_timeout == 1.0
    s = cc.settings(cfg, 1, "s1.toml")
    assert s.peers == {2: ("127.0.0.1", 9002), 3: ("10.0.0.3", 9003)}
    assert s.secret == b"s" * 20 and s.listen == ("127.0.0.1", 9001)
    assert s.node_kwargs()["election_timeout"] == 0.3


def test_own_entry_in_peers_is_ignored():
    cfg = load(peers=["1@127.0.0.1:9001", "2@127.0.0.1:9002"])["cluster"]
    assert cc.settings(cfg, 1).peers == {2: ("127.0.0.1", 9002)}


def test_integer_timers_are_accepted():
    cfg = load(heartbeat_interval=1, failure_timeout=3)["cluster"]
    assert cfg.failure_timeout == 3.0 and isinstance(cfg.failure_timeout, float)


@pytest.mark.parametrize("changes, words", [
    ({"peers": ["2127.0.0.1:9002"]}, "peers"),
    ({"peers": ["x@127.0.0.1:9002"]}, "peers"),
    ({"peers": ["0@127.0.0.1:9002"]}, "peers"),
    ({"peers": ["2@localhost:9002"]}, "IP address"),
    ({"peers": ["2@127.0.0.1:9002", "2@127.0.0.1:9003"]}, "listed twice"),
    ({"peers": ["2@127.0.0.1:9002", "3@127.0.0.1:9002"]}, "listed twice"),
    ({"peers": [2]}, "peers"),
    ({"secret": "short"}, "secret"),
    ({"secret": None}, "secret"),
    ({"listen": "9001"}, "listen"),
    ({"heartbeat_interval": 0}, "heartbeat_interval"),
    ({"heartbeat_interval": "fast"}, "heartbeat_interval"),
    ({"failure_timeout": True}, "failure_timeout"),
    ({"receive_buffer": 10}, "receive_buffer"),
    ({"heartbeats": 1}, "unknown key"),
])
def test_bad_values_name_file_and_key(changes, words):
    with pytest.raises(ConfigError) as info:
        load(**changes)
    assert "s1.toml" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("changes, key", [
    ({"heartbeat_interval": 0.6, "failure_timeout": 1.0}, "failure_timeout"),
    ({"election_timeout": 2.0}, "election_timeout"),
])
def test_cross_checks(changes, key):
    with pytest.raises(ConfigError) as info:
        cc.settings(load(**changes)["cluster"], 1, "s1.toml")
    assert f"s1.toml: [cluster] {key}" in str(info.value)
