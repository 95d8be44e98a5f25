"""Config section, MySQL URLs and password hashing."""

from __future__ import annotations

import pytest

from cloudp2p.config import Schema
from cloudp2p.directory import passwords
from cloudp2p.directory.config import SECTION, parse_mysql_url
from cloudp2p.errors import ConfigError


def test_defaults_make_a_working_section():
    section = Schema((SECTION,)).validate({})["directory"]
    assert section.backend == "sqlite" and section.presence_ttl == 30.0 and section.scrypt_n == 2**17


@pytest.mark.parametrize(
    "table, words",
    [
        ({"backend": "postgres"}, "backend"),
        ({"url": "http://x/y"}, "url"),
        ({"url": "mysql://root@127.0.0.1:3306/bad-name"}, "database name"),
        ({"url": "mysql://root@127.0.0.1:99999/db"}, "url"),
        ({"presence_ttl": 0}, "presence_ttl"),
        ({"scrypt_n": 1000}, "power of two"),
        ({"pool_size": True}, "pool_size"),
        ({"typo": 1}, "typo"),
    ],
)
def test_bad_config_names_the_key(table, words):
    with pytest.raises(ConfigError) as info:
        Schema((SECTION,)).validate({"directory": table}, "server.toml")
    assert words in str(info.value) and "server.toml" in str(info.value)


def test_mysql_url():
    url = parse_mysql_url("mysql://bob:p%40ss@10.0.0.5:3307/cloud_p2p")
    assert (url.user, url.password, url.host, url.port, url.database) == (
        "bob",
        "p@ss",
        "10.0.0.5",
        3307,
        "cloud_p2p",
    )
    assert parse_mysql_url("mysql://127.0.0.1/db").port == 3306


def test_password_hashes():
    encoded = passwords.hash_password("correct horse", n=1024)
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "1024", "8", "1")
    assert passwords.verify_password("correct horse", encoded)
    assert not passwords.verify_password("correct horsE", encoded)
    assert passwords.hash_password("correct horse", n=1024) != encoded  # a fresh salt each time
    for garbage in ("", "scrypt$x", "md5$1$2$3$4$5", "scrypt$1024$8$1$!!$!!", "scrypt$3$8$1$AAAA$AAAA"):
        assert passwords.verify_password("correct horse", garbage) is False
