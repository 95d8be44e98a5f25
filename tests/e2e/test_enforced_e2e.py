"""Enforced copies end to end (issue 17): real servers, real daemons, the real `cloudp2p` command,
and a *modified client*: the ten lines of the issue that unwrap a received copy with the
viewer's own key and decrypt it, ignoring every count.

Runs once on the embedded SQLite directory and once on MariaDB/MySQL (see conftest).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys

import pytest

from cloudp2p.client import identity
from cloudp2p.client.home import Home
from cloudp2p.encryption import container
from cloudp2p.encryption import format as fmt
from cloudp2p.encryption.errors import WrongKeyError
from cloudp2p.errors import RequestFailed

from .test_stories_e2e import _read

ASK = """
import json, sys
from twisted.internet import defer, task
from cloudp2p.errors import RequestFailed
from cloudp2p.routing.client import ClientRouter

async def main(reactor, servers, args):
    router = ClientRouter(reactor, [tuple(s) for s in json.loads(servers)], timeout=20.0)
    router.start()
    try:
        print(json.dumps({"ok": await router.submit("share_view", json.loads(args))}))
    except RequestFailed as e:
        print(json.dumps({"code": e.code}))
    finally:
        router.stop()

task.react(lambda reactor: defer.ensureDeferred(main(reactor, *sys.argv[1:])))
"""


def ask_cloud(deploy, who: str, image_id: str, owner: str) -> bytes:
    """A modified client's other move: ask the cloud for the share itself (its own program), with
    the viewer's session and key, whatever the local rights say. -> share B, or RequestFailed."""
    from cloudp2p.encryption import keywrap

    home = Home(deploy.clients[who].home)
    args = {
        "token": home.read_json(home.session_file)["token"],
        "image_id": image_id,
        "owner_id": deploy.ok(owner, "status")["me"]["user_id"],
    }
    done = subprocess.run(
        [sys.executable, "-c", ASK, json.dumps(deploy.cloud.client_list), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    if "code" in reply:
        raise RequestFailed(reply["code"], "refused")
    sealed = base64.b64decode(reply["ok"]["share"])
    return keywrap.open_share(sealed, identity.load(home).x25519_private, image_id)


def full_bypass(deploy, who: str, path: str, image_id: str, owner: str) -> bytes:
    """Both moves together: share B from the cloud, share A from the copy, decrypt, count nothing."""
    share_b = ask_cloud(deploy, who, image_id, owner)
    keys = identity.load(Home(deploy.clients[who].home))
    carrier = container.load_carrier(_read(path))
    header = fmt.read_header(carrier)
    share_a, _ = fmt.unwrap(carrier.read(fmt.WRAP_START, fmt.WRAP_SIZE), keys.x25519_private, header.image_id)
    compressed = fmt.decrypt_payload(
        fmt.join_key(share_a, share_b), header, fmt.read_payload(carrier, header)
    )
    return fmt.decompress_secret(compressed, limit=container.MAX_SECRET_SIZE)


def modified_client(deploy, who: str, path: str) -> bytes:
    """The bypass: the viewer's own X25519 key unwraps the copy's key; decrypt; no count anywhere."""
    keys = identity.load(Home(deploy.clients[who].home))
    carrier = container.load_carrier(_read(path))
    header = fmt.read_header(carrier)
    key, _rights = fmt.unwrap(
        carrier.read(fmt.WRAP_START, fmt.WRAP_SIZE), keys.x25519_private, header.image_id
    )
    compressed = fmt.decrypt_payload(key, header, fmt.read_payload(carrier, header))
    return fmt.decompress_secret(compressed, limit=container.MAX_SECRET_SIZE)


def share(deploy, owner, viewer, views, stem, *flags):
    enc = deploy.ok(owner, "encrypt", deploy.image(stem))
    deploy.ok(owner, "publish", enc["image_id"])
    deploy.ok(viewer, "users")
    req = deploy.ok(viewer, "request", owner, enc["name"], "--views", str(views))
    acc = deploy.ok(owner, "accept", req["request_id"], *flags)
    assert acc["delivered"], acc
    received = {r["image_id"]: r for r in deploy.ok(viewer, "images")["received"]}[enc["image_id"]]
    return enc, received


def test_offline_copy_is_open_to_the_modified_client_and_enforced_is_not(deploy):
    for who in ("alice", "carol"):
        deploy.ensure_up(who)
    enc, offline = share(deploy, "alice", "carol", 1, "bypass-offline")
    assert offline["mode"] == "offline"
    assert modified_client(deploy, "carol", offline["path"]) == _read(enc["original"])  # today's hole
    enc, enforced = share(deploy, "alice", "carol", 2, "bypass-enforced", "--enforced")
    assert enforced["mode"] == "enforced"
    with pytest.raises(WrongKeyError):
        modified_client(deploy, "carol", enforced["path"])
    # asking the cloud itself, the modified client gets what was granted, counted: no more
    assert full_bypass(deploy, "carol", enforced["path"], enc["image_id"], "alice") == _read(enc["original"])
    view = deploy.ok("carol", "view", enc["image_id"])
    assert view["shown"] == "image" and _read(view["path"]) == _read(enc["original"])
    assert view["views_left"] == 0  # the cloud's count (2 used) wins over the local one (1)
    with pytest.raises(RequestFailed) as refused:
        full_bypass(deploy, "carol", enforced["path"], enc["image_id"], "alice")
    assert refused.value.code == "no_views_left"
    text = deploy.clients["carol"].run("images", json=False)
    assert text.ok and "enforced" in text.stdout and "offline" in text.stdout


def test_revoked_before_any_view_nobody_decrypts_it(deploy):
    for who in ("alice", "bob"):
        deploy.ensure_up(who)
    enc, received = share(deploy, "alice", "bob", 3, "revoke-unviewed", "--enforced")
    deploy.ok("bob", "shutdown")  # the viewer is offline: the cloud's limit changes anyway
    assert deploy.clients["bob"].wait_exit(15.0) == 0
    assert deploy.ok("alice", "revoke", "bob", enc["image_id"])["delivery"] == "queued"
    with pytest.raises(WrongKeyError):
        modified_client(deploy, "bob", received["path"])
    deploy.ensure_up("bob")
    with pytest.raises(RequestFailed) as refused:  # the modified client asks the cloud itself
        full_bypass(deploy, "bob", received["path"], enc["image_id"], "alice")
    assert refused.value.code == "share_revoked"
    view = deploy.ok("bob", "view", enc["image_id"])
    assert view["shown"] == "cover" and view["views_left"] == 0
    assert deploy.fails("alice", "set-views", "bob", enc["image_id"], "2").stderr  # the key is gone


def test_restored_file_and_deleted_ledger_give_no_extra_view(deploy):
    for who in ("alice", "bob"):
        deploy.ensure_up(who)
    enc, received = share(deploy, "alice", "bob", 1, "restore", "--enforced")
    before = _read(received["path"])
    assert deploy.ok("bob", "view", enc["image_id"])["shown"] == "image"
    deploy.ok("bob", "shutdown")
    assert deploy.clients["bob"].wait_exit(15.0) == 0
    home = deploy.clients["bob"].home
    shutil.rmtree(os.path.join(home, "ledger"))
    with open(received["path"], "wb") as f:
        f.write(before)  # the file as it was before the view: counter 0
    deploy.ensure_up("bob")
    again = deploy.ok("bob", "view", enc["image_id"])
    assert again["shown"] == "cover" and again["views_left"] == 0
    # the owner's set-views reaches the cloud at once: one more view, and only one
    deploy.ok("alice", "set-views", "bob", enc["image_id"], "2")
    assert deploy.ok("bob", "view", enc["image_id"])["shown"] == "image"
    assert deploy.ok("bob", "view", enc["image_id"])["shown"] == "cover"
