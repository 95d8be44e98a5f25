"""Finding 10: sign_in and register are rate-limited, scrypt at a current cost, tables in byte budgets."""

from __future__ import annotations

import os
import sqlite3
import uuid

from cloudp2p.directory import passwords
from cloudp2p.directory.token_seal import ReplyKey
from tests.integration.conftest import cluster_factory, integration_dir  # noqa: F401 - fixtures
from tests.security.conftest import PASSWORD, fresh_name, register, sign_in
from tests.security.test_amplification import _noise_png


def _codes(client, cloud, name, n, password="wrong-password"):
    codes = []
    for _ in range(n):
        reply = client.call(
            cloud.client_list,
            "sign_in",
            {"username": name, "password": password, **ReplyKey().args()},
            timeout=20.0,
        )
        assert reply is not None
        codes.append("ok" if reply["body"]["ok"] else reply["body"]["error"]["code"])
    return codes


def test_password_guessing_on_one_user_is_rate_limited(cloud, raw):
    owner = raw()
    name, _ = register(owner, cloud)
    codes = []
    for _ in range(4):  # four different sources, four guesses each
        codes += _codes(raw(), cloud, name, 4)
    print("sign_in guesses on one user:", codes)
    assert "rate_limited" in codes and codes.count("bad_credentials") <= 10, codes


def test_one_source_is_rate_limited_over_many_users(cloud, raw):
    guesser = raw()
    codes = []
    for _ in range(14):  # a password too short to check: refused before any scrypt, but counted
        codes += _codes(guesser, cloud, fresh_name("nobody"), 1, password="short")
    print("sign_in guesses from one source:", codes)
    assert "rate_limited" in codes, codes


def test_register_is_rate_limited_per_source(cloud, raw):
    client = raw()
    codes = []
    for _ in range(12):
        reply = client.call(
            cloud.client_list,
            "register",
            {"username": fresh_name(), "password": "x", "keys": {}},
            timeout=20.0,
        )
        assert reply is not None
        codes.append(reply["body"]["error"]["code"])
    print("register attempts from one source:", codes)
    assert "rate_limited" in codes, codes


def test_an_old_password_hash_is_upgraded_to_the_current_cost_at_sign_in(cloud, raw):
    client = raw()
    name, _ = register(client, cloud)
    path = cloud.configs[1]["directory"]["path"]
    with sqlite3.connect(path, timeout=10) as db:
        (stored,) = db.execute("SELECT password FROM users WHERE username = ?", (name,)).fetchone()
        assert int(stored.split("$")[1]) >= 2**17, f"new hashes use scrypt N={stored.split('$')[1]}"
        old = passwords.hash_password(PASSWORD, n=2**14)
        db.execute("UPDATE users SET password = ? WHERE username = ?", (old, name))
    sign_in(client, cloud, name)
    with sqlite3.connect(path, timeout=10) as db:
        (stored,) = db.execute("SELECT password FROM users WHERE username = ?", (name,)).fetchone()
    assert int(stored.split("$")[1]) >= 2**17, f"the hash was not upgraded: N={stored.split('$')[1]}"
    assert passwords.verify_password(PASSWORD, stored)


def test_reply_cache_is_bounded_in_bytes(cluster_factory, raw, tmp_path):  # noqa: F811 - fixture
    budget = 200_000
    cloud = cluster_factory(
        1,
        overrides={
            "server": {"max_done_bytes": budget},
            "directory": {"backend": "sqlite", "path": os.path.join(tmp_path, "d.sqlite3"), "scrypt_n": 1024},
        },
    )
    client = raw()
    name, _ = register(client, cloud)
    token = sign_in(client, cloud, name, port=client.address[1])
    for i in range(3):
        client.result(
            cloud.client_list,
            "publish_image",
            {
                "token": token,
                "image_id": str(uuid.uuid4()),
                "name": f"n{i}",
                "size": 1,
                "thumbnail": _noise_png(i),
            },
        )
    for _ in range(12):  # ~38 KB each: far more than the budget
        assert client.result(cloud.client_list, "list_online", {"token": token})["users"]
    view = cloud.status(1, timeout=2.0)
    print({k: view.get(k) for k in ("done_cached", "done_bytes", "pending_bytes", "limits")})
    assert 1 <= view["done_cached"] < 12 and view["done_bytes"] <= budget, view
