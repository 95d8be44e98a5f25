"""Every user story end to end: real servers, real daemons, the real `cloudp2p` command.

Runs once on the embedded SQLite directory and once on MariaDB/MySQL (see conftest).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from cloudp2p.client import errors as cerr
from cloudp2p.errors import InvalidImage, RequestFailed

from .conftest import png_bytes


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_share_view_countdown_cover_more_views(deploy):
    for who in ("alice", "bob"):
        deploy.ensure_up(who)
    enc = deploy.ok("alice", "encrypt", deploy.image("story"))
    original = _read(enc["original"])
    assert enc["encrypted"].startswith(deploy.clients["alice"].home)
    assert os.stat(enc["encrypted"]).st_mode & 0o777 == 0o600
    deploy.ok("alice", "publish", enc["image_id"])
    users = deploy.ok("bob", "users")
    offered = {u["username"]: u for u in users["users"]}
    (item,) = [im for im in offered["alice"]["images"] if im["image_id"] == enc["image_id"]]
    assert os.path.isfile(item["thumbnail"]) and item["thumbnail"].startswith(deploy.clients["bob"].home)
    req = deploy.ok("bob", "request", "alice", enc["name"], "--views", "2")
    assert req["delivery"] == "peer"
    inbox = deploy.ok("alice", "inbox")["requests"]
    assert any(r["request_id"] == req["request_id"] and r["state"] == "pending" for r in inbox)
    accepted = deploy.ok("alice", "accept", req["request_id"])
    assert accepted["delivered"] is True
    received = {r["image_id"]: r for r in deploy.ok("bob", "images")["received"]}
    assert received[enc["image_id"]]["views_left"] == 2
    first = deploy.ok("bob", "view", enc["image_id"])
    assert (first["shown"], first["views_left"]) == ("image", 1) and _read(first["path"]) == original
    second = deploy.ok("bob", "view", enc["image_id"])
    assert (second["shown"], second["views_left"]) == ("image", 0)
    third = deploy.ok("bob", "view", enc["image_id"])
    assert third["shown"] == "cover" and _read(third["path"]) != original
    more = deploy.ok("bob", "more-views", enc["image_id"], "2")
    pending = [r for r in deploy.ok("alice", "inbox")["requests"] if r["request_id"] == more["request_id"]]
    assert pending and pending[0]["kind"] == "more"
    deploy.ok("alice", "accept", more["request_id"])
    again = deploy.ok("bob", "view", enc["image_id"])
    assert again["shown"] == "image" and again["views_left"] == 1
    # the text output a person reads
    text = deploy.clients["bob"].run("images", json=False)
    assert text.ok and "1 view left" in text.stdout
    # everything in the homes is private: directories 0700, files 0600 (the socket too)
    for who in ("alice", "bob"):
        for root, dirs, files in os.walk(deploy.clients[who].home):
            for d in dirs:
                assert os.stat(os.path.join(root, d)).st_mode & 0o777 == 0o700, os.path.join(root, d)
            for f in files:
                path = os.path.join(root, f)
                if not os.path.islink(path):  # control.sock.lock is twistd's lock symlink
                    assert os.stat(path).st_mode & 0o777 == 0o600, path


def test_revoke_and_set_views_while_viewer_offline(deploy):
    for who in ("alice", "bob"):
        deploy.ensure_up(who)
    name, image_id = deploy.share("alice", "bob", 3, "offline-rights")
    deploy.ok("bob", "shutdown")
    assert deploy.clients["bob"].wait_exit(15.0) == 0
    revoked = deploy.ok("alice", "revoke", "bob", image_id)
    assert revoked["delivery"] == "queued"
    deploy.ensure_up("bob")  # starts bob's daemon, signs in: the queued revocation applies
    received = {r["image_id"]: r for r in deploy.ok("bob", "images")["received"]}
    assert received[image_id]["views_left"] == 0
    assert deploy.ok("bob", "view", image_id)["shown"] == "cover"
    # and the other way: more views granted while bob is offline
    deploy.ok("bob", "logout")
    assert deploy.ok("alice", "set-views", "bob", image_id, "4")["delivery"] == "queued"
    login = deploy.ok("bob", "login", password=True)
    assert any("set your views" in line for line in login["applied"])
    assert deploy.ok("bob", "view", image_id)["views_left"] == 3


def test_own_cover_unpublish_and_open_in_the_system_viewer(deploy, tmp_path):
    from PIL import Image

    for who in ("alice", "bob"):
        deploy.ensure_up(who)
    cover = tmp_path / "my-cover.png"
    cover.write_bytes(png_bytes(4242, (320, 240)))
    enc = deploy.ok(
        "alice", "encrypt", deploy.image("own-cover"), "--cover", str(cover), "--name", "mine.png"
    )
    assert enc["name"] == "mine.png"
    with Image.open(enc["encrypted"]) as im:
        assert im.size == (320, 240)  # hidden in the cover alice chose
    deploy.ok("alice", "publish", "mine.png")
    offered = {
        im["name"]
        for u in deploy.ok("bob", "users")["users"]
        if u["username"] == "alice"
        for im in u["images"]
    }
    assert "mine.png" in offered
    deploy.ok("alice", "unpublish", "mine.png")
    offered = {
        im["name"]
        for u in deploy.ok("bob", "users")["users"]
        if u["username"] == "alice"
        for im in u["images"]
    }
    assert "mine.png" not in offered
    # `view --open` hands the decoded file to the desktop's viewer (xdg-open; a stand-in here)
    name, image_id = deploy.share("alice", "bob", 1, "opened")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opened = tmp_path / "opened.txt"
    (bin_dir / "xdg-open").write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    (bin_dir / "xdg-open").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    home = deploy.clients["bob"].home
    done = subprocess.run(
        [sys.executable, "-m", "cloudp2p.client.cli", "--home", home, "--json", "view", image_id, "--open"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    path = json.loads(done.stdout)["result"]["path"]
    deadline = time.monotonic() + 10
    while not opened.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert opened.read_text().strip() == path


def test_set_views_online_applies_at_once(deploy):
    for who in ("alice", "carol"):
        deploy.ensure_up(who)
    name, image_id = deploy.share("alice", "carol", 1, "online-rights")
    assert deploy.ok("alice", "set-views", "carol", image_id, "5")["delivery"] == "peer"
    received = {r["image_id"]: r for r in deploy.ok("carol", "images")["received"]}
    assert received[image_id]["views_left"] == 5


def test_request_reaches_an_offline_owner_at_sign_in(deploy):
    for who in ("alice", "bob"):
        deploy.ensure_up(who)
    enc = deploy.ok("alice", "encrypt", deploy.image("offline-owner"))
    deploy.ok("alice", "publish", enc["image_id"])
    deploy.ok("bob", "users")
    deploy.ok("alice", "logout")
    req = deploy.ok("bob", "request", "alice", enc["name"], "--views", "1")
    assert req["delivery"] == "queued"
    login = deploy.ok("alice", "login", password=True)
    assert any("bob asks for 1 views" in line for line in login["applied"]), login
    deploy.ok("alice", "accept", req["request_id"])
    assert deploy.ok("bob", "view", enc["image_id"])["shown"] == "image"


def test_request_wait_shows_the_image_arriving(deploy):
    for who in ("alice", "carol"):
        deploy.ensure_up(who)
    enc = deploy.ok("alice", "encrypt", deploy.image("waited"))
    client = deploy.clients["carol"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloudp2p.client.cli",
            "--home",
            client.home,
            "request",
            "alice",
            enc["image_id"],
            "--views",
            "2",
            "--wait",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    pending = []
    while not pending and time.monotonic() < deadline:
        pending = [
            r
            for r in deploy.ok("alice", "inbox")["requests"]
            if r["from"] == "carol" and r["image_id"] == enc["image_id"] and r["state"] == "pending"
        ]
        time.sleep(0.1)
    assert pending, "carol's request never reached alice"
    deploy.ok("alice", "accept", pending[0]["request_id"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "alice accepted" in out and "2 views left" in out
    assert f"receiving {enc['name']} from alice [" in err and "100%" in err  # the progress bar


def test_reject(deploy):
    for who in ("alice", "carol"):
        deploy.ensure_up(who)
    enc = deploy.ok("alice", "encrypt", deploy.image("rejected"))
    req = deploy.ok("carol", "request", "alice", enc["image_id"], "--views", "1")
    deploy.ok("alice", "reject", req["request_id"])
    deploy.fails("alice", "accept", req["request_id"], code=cerr.ClientError.exit_code)
    assert enc["image_id"] not in {r["image_id"] for r in deploy.ok("carol", "images")["received"]}


def test_carol_cannot_view_bobs_copy(deploy):
    for who in ("alice", "bob", "carol"):
        deploy.ensure_up(who)
    name, image_id = deploy.share("alice", "bob", 2, "not-carols")
    bobs = {r["image_id"]: r for r in deploy.ok("bob", "images")["received"]}[image_id]["path"]
    stolen = os.path.join(deploy.workdir, "stolen-copy.png")
    shutil.copyfile(bobs, stolen)
    result = deploy.fails("carol", "view", stolen, code=cerr.AccessDenied.exit_code)
    assert "not shared with you" in result.stderr
    deploy.fails("carol", "view", image_id, code=cerr.UnknownImage.exit_code)
    # bob still has both views
    assert deploy.ok("bob", "view", image_id)["views_left"] == 1


def test_tampered_view_count_and_older_copy_restored(deploy):
    for who in ("alice", "bob"):
        deploy.ensure_up(who)
    name, image_id = deploy.share("alice", "bob", 2, "tamper")
    bob_home = deploy.clients["bob"].home
    copy = {r["image_id"]: r for r in deploy.ok("bob", "images")["received"]}[image_id]["path"]
    fresh = _read(copy)  # an older copy, with no view used
    assert deploy.ok("bob", "view", image_id)["views_left"] == 1
    # 1. restore the older copy: the ledger remembers the view
    with open(copy, "wb") as f:
        f.write(fresh)
    assert deploy.ok("bob", "view", image_id)["views_left"] == 0
    # 2. edit the ledger's count back to zero: the copy itself remembers
    ledger_path = os.path.join(bob_home, "ledger", "ledger.json")
    ledger = json.loads(_read(ledger_path))
    ledger["images"][image_id]["views_used"] = 0
    with open(ledger_path, "w") as f:
        json.dump(ledger, f)
    assert deploy.ok("bob", "view", image_id)["shown"] == "cover"
    # 3. both at once (older copy and zeroed ledger): the copy's own counter is older but the
    #    ledger then holds nothing -- so a damaged ledger rights blob must not open it either
    ledger = json.loads(_read(ledger_path))
    ledger["images"][image_id]["rights"] = ledger["images"][image_id]["rights"][:-8] + "AAAAAAA="
    with open(ledger_path, "w") as f:
        json.dump(ledger, f)
    before = deploy.snapshot("bob")
    deploy.fails("bob", "view", image_id)
    assert deploy.snapshot("bob") == before


def test_tampered_copy_is_refused(deploy):
    for who in ("alice", "bob"):
        deploy.ensure_up(who)
    name, image_id = deploy.share("alice", "bob", 2, "corrupt")
    copy = {r["image_id"]: r for r in deploy.ok("bob", "images")["received"]}[image_id]["path"]
    from PIL import Image

    with Image.open(copy) as im:
        arr = __import__("numpy").array(im)
    arr ^= 1  # flip every least significant bit: every hidden byte changes
    Image.fromarray(arr).save(copy, format="PNG")
    result = deploy.fails("bob", "view", image_id, code=cerr.AccessDenied.exit_code)
    assert "damaged" in result.stderr or "not" in result.stderr


def test_bad_input_on_every_command_changes_nothing(deploy, tmp_path):
    for who in ("alice", "bob"):
        deploy.ensure_up(who)
    enc = deploy.ok("alice", "encrypt", deploy.image("bad-input"))
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    before = deploy.snapshot("alice", "bob")
    usage = 2
    deploy.fails("alice", "encrypt", str(tmp_path / "missing.png"), code=usage)
    deploy.fails("alice", "encrypt", str(not_image), code=InvalidImage.exit_code)
    deploy.fails("alice", "encrypt", deploy.image("cover-missing"), "--cover", "/nope.png", code=usage)
    deploy.fails(
        "bob",
        "request",
        "nobody-here",
        enc["image_id"],
        "--views",
        "1",
        code=cerr.UnknownUser.exit_code,
    )
    for views in ("-1", "0", "1000000", "abc"):
        deploy.fails("bob", "request", "alice", enc["image_id"], "--views", views, code=usage)
        deploy.fails("bob", "more-views", enc["image_id"], views, code=usage)
    deploy.fails(
        "bob", "request", "alice", "no-such-image", "--views", "1", code=cerr.UnknownImage.exit_code
    )
    deploy.fails("alice", "set-views", "bob", enc["image_id"], "-3", code=usage)
    deploy.fails("alice", "set-views", "bob", enc["image_id"], "3", code=cerr.UnknownUser.exit_code)
    deploy.fails("alice", "revoke", "nobody-here", enc["image_id"], code=cerr.UnknownUser.exit_code)
    deploy.fails("alice", "publish", "no-such-image", code=cerr.UnknownImage.exit_code)
    deploy.fails("alice", "accept", "ffffffff", code=cerr.UnknownRequest.exit_code)
    deploy.fails("alice", "reject", "ffffffff", code=cerr.UnknownRequest.exit_code)
    deploy.fails("bob", "view", "no-such-image", code=cerr.UnknownImage.exit_code)
    deploy.fails("bob", "more-views", "no-such-image", "2", code=cerr.UnknownImage.exit_code)
    wrong = deploy.fails("bob", "login", password="wrong-password-9", code=RequestFailed.exit_code)
    assert "bad_credentials" in wrong.stderr
    deploy.fails("carol", "register", "alice", password=True, code=cerr.AlreadyRegistered.exit_code)
    assert deploy.snapshot("alice", "bob") == before
    assert deploy.ok("bob", "status")["me"]["signed_in"]  # a wrong password does not sign you out


def test_status_and_cloud_unreachable(deploy):
    deploy.ensure_up("carol")
    st = deploy.ok("carol", "status")
    assert st["cloud"]["reachable"] and st["cloud"]["coordinator"] == deploy.cloud.coordinator()
    for server in deploy.cloud.servers.values():
        server.pause()
    try:
        result = deploy.fails("carol", "users", code=4)
        assert "No server of the cloud answered" in result.stderr
        assert deploy.ok("carol", "images")  # local commands keep working
    finally:
        for server in deploy.cloud.servers.values():
            server.resume()
    deploy.cloud.wait_converged(30.0)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not deploy.cmd("carol", "users").ok:
        time.sleep(0.5)
    assert deploy.ok("carol", "status")["me"]["signed_in"]  # reconnected by itself, still signed in


# The last two tests kill a coordinator each (3 servers -> 2 -> 1): they run last in the module.


def test_coordinator_killed_during_an_encrypt(deploy):
    """The coordinator is frozen (SIGSTOP) when the request arrives, then killed: the request is
    outstanding at that moment for sure; the two others take over and the user sees a success."""
    deploy.cloud.wait_converged(30.0)
    deploy.ensure_up("alice")
    coordinator = deploy.cloud.coordinator()
    client = deploy.clients["alice"]
    path = deploy.image("failover-encrypt")
    deploy.cloud.servers[coordinator].pause()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudp2p.client.cli", "--home", client.home, "--json", "encrypt", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.6)
    assert proc.poll() is None  # still waiting for the cloud when its coordinator dies
    deploy.cloud.servers[coordinator].kill()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err + deploy.logs()
    image_id = json.loads(out)["result"]["image_id"]
    mine = {r["image_id"] for r in deploy.ok("alice", "images")["owned"]}
    assert image_id in mine
    deploy.cloud.wait_converged(30.0)


def test_coordinator_killed_during_a_share(deploy):
    deploy.cloud.wait_converged(30.0)
    for who in ("alice", "carol"):
        deploy.ensure_up(who)
    enc = deploy.ok("alice", "encrypt", deploy.image("failover-share"))
    req = deploy.ok("carol", "request", "alice", enc["image_id"], "--views", "2")
    coordinator = deploy.cloud.coordinator()
    client = deploy.clients["alice"]
    deploy.cloud.servers[coordinator].pause()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloudp2p.client.cli",
            "--home",
            client.home,
            "--json",
            "accept",
            req["request_id"],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.6)
    assert proc.poll() is None  # the accept is looking carol up when the coordinator dies
    deploy.cloud.servers[coordinator].kill()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err + deploy.logs()
    assert json.loads(out)["result"]["delivered"] is True
    assert deploy.ok("carol", "view", enc["image_id"])["views_left"] == 1
