"""Every story through the real daemon and stories code, on the memory network with a fake cloud.

The containers are real (cloudp2p.encryption.container with a generated cover),
so views, rights and the ledger behave as in production; only the cloud and the
transfer sockets are fakes.
"""

from __future__ import annotations

import os

import pytest

from cloudp2p.client import errors as cerr
from cloudp2p.encryption.errors import WrongKeyError
from cloudp2p.errors import CloudUnreachable, InvalidImage, RequestFailed

from .fakes import small_png

PW = "password-x"


def _image(tmp_path, name="cat.png", seed=1):
    path = tmp_path / name
    path.write_bytes(small_png(seed))
    return str(path)


def _snapshot(client):
    """Every file in a client's home, with its content (but the keys seen: looking a user up pins them)."""
    out = {}
    for root, _dirs, files in os.walk(client.daemon.home.path):
        for name in files:
            if name == "known_keys.json":
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[path] = f.read()
    return out


def _share(world, tmp_path, views=2):
    """alice encrypts and publishes cat.png; bob requests `views` views; alice accepts."""
    alice = world.signed_up("alice")
    bob = world.signed_up("bob")
    enc = alice.cmd("encrypt", path=_image(tmp_path))
    alice.cmd("publish", image=enc["image_id"])
    listing = bob.cmd("users")
    req = bob.cmd("request", user="alice", image="cat.png", views=views)
    assert req["delivery"] == "peer"
    acc = alice.cmd("accept", request_id=req["request_id"])
    assert acc["delivered"] is True
    return alice, bob, enc, listing, req


def test_register_login_logout(world):
    c = world.client("alice")
    with pytest.raises(cerr.NotRegistered):
        c.cmd("login", password=PW)
    r = c.cmd("register", username="alice", password=PW)
    assert r["username"] == "alice" and r["user_id"]
    assert isinstance(c.fails("register", username="alice2", password=PW), cerr.AlreadyRegistered)
    err = c.fails("login", password="wrong-password")
    assert isinstance(err, RequestFailed) and err.code == "bad_credentials"
    assert not c.daemon.token
    c.cmd("login", password=PW)
    assert c.daemon.token and world.directory.online("alice")
    c.cmd("logout")
    assert not c.daemon.token and not world.directory.online("alice")
    assert isinstance(c.fails("users"), cerr.NotSignedIn)


def test_username_taken_changes_nothing(world):
    world.signed_up("alice")
    other = world.client("impostor")
    err = other.fails("register", username="alice", password=PW)
    assert isinstance(err, RequestFailed) and err.code == "username_taken"
    assert other.daemon.username is None


def test_full_share_view_countdown_then_cover(world, tmp_path):
    alice, bob, enc, listing, req = _share(world, tmp_path, views=2)
    alice_entry = next(u for u in listing["users"] if u["username"] == "alice")
    thumb = alice_entry["images"][0]["thumbnail"]
    assert os.path.exists(thumb) and thumb.startswith(str(bob.daemon.home.path))
    assert alice.cmd("inbox")["requests"][0]["state"] == "accepted"
    images = bob.cmd("images")
    assert [(r["name"], r["views_left"]) for r in images["received"]] == [("cat.png", 2)]
    first = bob.cmd("view", image="cat.png")
    assert first["shown"] == "image" and first["views_left"] == 1
    with open(first["path"], "rb") as f:
        assert f.read() == small_png(1)
    second = bob.cmd("view", image="cat.png")
    assert second["shown"] == "image" and second["views_left"] == 0
    third = bob.cmd("view", image="cat.png")
    assert third["shown"] == "cover" and third["views_left"] == 0
    with open(third["path"], "rb") as f:
        assert f.read() != small_png(1)
    assert os.stat(third["path"]).st_mode & 0o777 == 0o600


def test_more_views_then_revoke_while_viewer_offline(world, tmp_path):
    alice, bob, enc, _, _ = _share(world, tmp_path, views=1)
    bob.cmd("view", image="cat.png")
    more = bob.cmd("more-views", image="cat.png", views=3)
    assert more["delivery"] == "peer"
    inbox = alice.cmd("inbox")["requests"]
    pending = [r for r in inbox if r["state"] == "pending"]
    assert [(r["kind"], r["views"]) for r in pending] == [("more", 3)]
    alice.cmd("accept", request_id=pending[0]["request_id"])
    assert bob.cmd("images")["received"][0]["views_left"] == 3
    assert bob.daemon.state.get("outbox", more["request_id"])["state"] == "received"
    # bob goes away; alice revokes: the update waits in the directory
    bob.cmd("logout")
    world.stop("bob")
    rev = alice.cmd("revoke", user="bob", image="cat.png")
    assert rev["delivery"] == "queued" and rev["views"] == 0
    assert len(world.directory.queue) == 1
    bob = world.client("bob")
    login = bob.cmd("login", password=PW)
    assert any("revoked" in line for line in login["applied"])
    assert world.directory.queue == []
    assert bob.cmd("images")["received"][0]["views_left"] == 0
    assert bob.cmd("view", image="cat.png")["shown"] == "cover"


def test_more_views_after_a_revocation_give_what_was_asked(world, tmp_path):
    alice, bob, *_ = _share(world, tmp_path, views=2)
    bob.cmd("view", image="cat.png")
    bob.cmd("view", image="cat.png")
    alice.cmd("revoke", user="bob", image="cat.png")
    more = bob.cmd("more-views", image="cat.png", views=3)
    (entry,) = [r for r in alice.cmd("inbox")["requests"] if r["request_id"] == more["request_id"]]
    assert entry["used"] == 2
    alice.cmd("accept", request_id=more["request_id"])
    assert bob.cmd("images")["received"][0]["views_left"] == 3
    # a new request for the whole image replaces the rights: N views from now on
    again = bob.cmd("request", user="alice", image="cat.png", views=1)
    assert alice.cmd("accept", request_id=again["request_id"])["views"] == 3  # 2 used + 1
    assert bob.cmd("images")["received"][0]["views_left"] == 1


def test_set_views_online_applies_at_once(world, tmp_path):
    alice, bob, *_ = _share(world, tmp_path, views=2)
    r = alice.cmd("set-views", user="BOB", image="cat.png", views=5)  # names are case-insensitive
    assert r["delivery"] == "peer"
    assert bob.cmd("images")["received"][0]["views_left"] == 5
    assert alice.cmd("images")["owned"][0]["grants"] == {"bob": 5}


def test_request_to_offline_owner_waits_in_directory(world, tmp_path):
    alice = world.signed_up("alice")
    enc = alice.cmd("encrypt", path=_image(tmp_path))
    alice.cmd("publish", image=enc["image_id"])
    bob = world.signed_up("bob")
    bob.cmd("users")
    alice.cmd("logout")
    req = bob.cmd("request", user="alice", image="cat.png", views=2)
    assert req["delivery"] == "queued"
    assert alice.cmd("inbox")["requests"] == []
    login = alice.cmd("login", password=PW)
    assert any("bob asks for 2 views" in line for line in login["applied"])
    (entry,) = alice.cmd("inbox")["requests"]
    assert entry["state"] == "pending" and entry["from"] == "bob"
    alice.cmd("accept", request_id=entry["request_id"])
    assert bob.cmd("images")["received"][0]["views_left"] == 2


def test_reject(world, tmp_path):
    alice = world.signed_up("alice")
    enc = alice.cmd("encrypt", path=_image(tmp_path))
    bob = world.signed_up("bob")
    req = bob.cmd("request", user="alice", image=enc["image_id"], views=1)
    alice.cmd("reject", request_id=req["request_id"])
    assert bob.daemon.state.get("outbox", req["request_id"])["state"] == "rejected"
    assert isinstance(alice.fails("accept", request_id=req["request_id"]), cerr.ClientError)


def test_accept_needs_viewer_online_and_keeps_request(world, tmp_path):
    alice = world.signed_up("alice")
    enc = alice.cmd("encrypt", path=_image(tmp_path))
    bob = world.signed_up("bob")
    req = bob.cmd("request", user="alice", image=enc["image_id"], views=1)
    bob.cmd("logout")
    assert isinstance(alice.fails("accept", request_id=req["request_id"]), cerr.UserOffline)
    assert alice.cmd("inbox")["requests"][0]["state"] == "pending"


def test_interrupted_share_is_resumed(world, tmp_path):
    alice = world.signed_up("alice")
    enc = alice.cmd("encrypt", path=_image(tmp_path))
    bob = world.signed_up("bob")
    req = bob.cmd("request", user="alice", image=enc["image_id"], views=1)
    world.hub.fail_next = 2  # the first two fetch attempts break off
    acc = alice.cmd("accept", request_id=req["request_id"])
    assert acc["delivered"] is True
    assert bob.cmd("images")["received"][0]["views_left"] == 1


def test_share_broken_off_is_resumed_after_the_viewer_restarts(world, tmp_path):
    alice = world.signed_up("alice")
    enc = alice.cmd("encrypt", path=_image(tmp_path))
    bob = world.signed_up("bob")
    req = bob.cmd("request", user="alice", image=enc["image_id"], views=2)
    world.hub.fail_next = 1000  # every try breaks off
    acc = alice.cmd("accept", request_id=req["request_id"])
    assert acc["delivered"] is False  # alice waited transfer_timeout, the offer stays open
    assert world.net.run(
        20, until=lambda: bob.daemon.state.get("outbox", req["request_id"])["state"] == "failed"
    )
    world.stop("bob")
    world.hub.fail_next = 0
    bob = world.client("bob")  # restarted: resumes on its first heartbeat, no command needed
    world.net.run(5)
    assert bob.daemon.state.get("outbox", req["request_id"])["state"] == "received"
    assert bob.cmd("images")["received"][0]["views_left"] == 2
    assert alice.daemon.state.get("inbox", req["request_id"])["state"] == "accepted"


def test_another_users_copy_does_not_open(world, tmp_path):
    alice, bob, *_ = _share(world, tmp_path, views=2)
    carol = world.signed_up("carol")
    bobs_copy = bob.cmd("images")["received"][0]["path"]
    stolen = tmp_path / "stolen.png"
    stolen.write_bytes(open(bobs_copy, "rb").read())
    assert isinstance(carol.fails("view", image=str(stolen)), WrongKeyError)
    assert isinstance(carol.fails("view", image="cat.png"), cerr.UnknownImage)


def test_bad_input_changes_nothing(world, tmp_path):
    alice = world.signed_up("alice")
    bob = world.signed_up("bob")
    enc = alice.cmd("encrypt", path=_image(tmp_path))
    before = (_snapshot(alice), _snapshot(bob))
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    assert isinstance(alice.fails("encrypt", path=str(not_image)), InvalidImage)
    assert isinstance(alice.fails("encrypt", path=str(tmp_path / "missing.png")), cerr.ClientError)
    assert isinstance(alice.fails("encrypt", path="relative.png"), cerr.InvalidArgument)
    assert isinstance(bob.fails("request", user="nobody", image=enc["image_id"], views=1), cerr.UnknownUser)
    for views in (-1, 0, 10**6, "3", True, None):
        assert isinstance(
            bob.fails("request", user="alice", image=enc["image_id"], views=views), cerr.InvalidArgument
        )
    assert isinstance(bob.fails("request", user="alice", image="no-such-image", views=1), cerr.UnknownImage)
    assert isinstance(alice.fails("set-views", user="bob", image=enc["image_id"], views=3), cerr.UnknownUser)
    assert isinstance(alice.fails("accept", request_id="deadbeef"), cerr.UnknownRequest)
    assert isinstance(bob.fails("view", image="nothing"), cerr.UnknownImage)
    assert isinstance(bob.fails("request", user="../../etc", image="x", views=1), cerr.InvalidArgument)
    after = (_snapshot(alice), _snapshot(bob))
    assert before == after
    assert world.directory.queue == []


def test_cloud_outage_commands_say_so_and_daemon_reconnects(world, tmp_path):
    alice = world.signed_up("alice")
    bob = world.signed_up("bob")
    enc = bob.cmd("encrypt", path=_image(tmp_path))
    world.directory.reachable = False
    assert isinstance(alice.fails("users"), CloudUnreachable)
    before = world.directory.calls.count("heartbeat")
    world.net.run(20)
    assert bob.daemon.reachable is False and alice.daemon.reachable is False
    # backoff: two daemons, 20 s, interval 1 s, at most 4 s apart -> far fewer than 40 heartbeats
    during = world.directory.calls.count("heartbeat") - before
    assert 4 <= during <= 20
    # A message queued for bob meanwhile (signed by alice) is fetched as soon as the cloud returns,
    # without a new login.
    msg = alice.daemon.messenger.message(
        "share_request",
        "bob",
        {"request_id": "0a0b0c0d", "image_id": enc["image_id"], "views": 1, "kind": "share", "used": 0},
    )
    world.directory.queue.append(
        {
            "id": 99,
            "to": "bob",
            "from": "x",
            "from_username": "alice",
            "kind": "share_request",
            "body": msg.to_json(),
            "created": 0.0,
        }
    )
    world.directory.reachable = True
    world.net.run(6)
    assert bob.daemon.reachable is True and alice.daemon.reachable is True
    assert world.directory.online("bob") and world.directory.online("alice")
    assert world.directory.queue == []
    assert [r["from"] for r in bob.cmd("inbox")["requests"]] == ["alice"]


def test_forged_queued_message_is_dropped(world, tmp_path):
    alice = world.signed_up("alice")
    bob = world.signed_up("bob")
    enc = bob.cmd("encrypt", path=_image(tmp_path))
    mallory = world.signed_up("mallory")
    msg = mallory.daemon.messenger.message(
        "share_request",
        "bob",
        {"request_id": "0a0b0c0d", "image_id": enc["image_id"], "views": 1, "kind": "share", "used": 0},
    )
    forged = {**msg.to_json(), "from": "alice"}  # mallory's signature, alice's name
    world.directory.queue.append(
        {
            "id": 5,
            "to": "bob",
            "from": "x",
            "from_username": "alice",
            "kind": "share_request",
            "body": forged,
            "created": 0.0,
        }
    )
    del alice
    bob.cmd("logout")
    bob.cmd("login", password=PW)
    assert world.directory.queue == []  # acknowledged (dropped), never applied
    assert bob.cmd("inbox")["requests"] == []


def test_owner_sees_own_image(world, tmp_path):
    alice = world.signed_up("alice")
    alice.cmd("encrypt", path=_image(tmp_path))
    r = alice.cmd("view", image="cat.png")
    assert r["shown"] == "image" and open(r["path"], "rb").read() == small_png(1)


def test_status(world):
    alice = world.signed_up("alice")
    st = alice.cmd("status")
    assert st["me"]["username"] == "alice" and st["me"]["signed_in"]
    assert st["cloud"]["reachable"] and st["cloud"]["coordinator"] == 1
    world.directory.reachable = False
    assert alice.cmd("status")["cloud"]["reachable"] is False


def test_restarted_daemon_keeps_its_session_and_catches_up(world, tmp_path):
    world.signed_up("alice")
    bob = world.signed_up("bob")
    enc = bob.cmd("encrypt", path=_image(tmp_path))
    world.stop("alice")  # the daemon dies without logging out: the directory still shows her online
    # bob tells alice something while her daemon is down: no acknowledgement, so it is queued
    body = {"request_id": "cafe0002", "image_id": enc["image_id"]}
    assert world.run(bob.daemon.send_message("alice", "share_rejected", body)) == "queued"
    assert len(world.directory.queue) == 1
    alice = world.client("alice")  # restart, no login: the session is still valid
    assert alice.daemon.token
    world.net.run(5)
    assert world.directory.queue == []  # fetched, applied and acknowledged after the first heartbeat
    assert world.directory.online("alice") and alice.daemon.reachable


def test_request_wait_stays_until_the_copy_has_arrived(world, tmp_path):
    from twisted.internet import defer

    alice = world.signed_up("alice")
    enc = alice.cmd("encrypt", path=_image(tmp_path))
    bob = world.signed_up("bob")
    bars = []
    args = {"user": "alice", "image": enc["image_id"], "views": 2, "wait": 30}
    waiting = defer.Deferred.fromCoroutine(bob.app.commands()["request"](args, lambda *bar: bars.append(bar)))
    world.net.run(0.5)
    assert not waiting.called
    (req,) = alice.cmd("inbox")["requests"]
    alice.cmd("accept", request_id=req["request_id"])
    result = world.run(waiting)
    assert result["state"] == "received" and result["views_left"] == 2
    label, done, total = bars[-1]
    assert label == "receiving cat.png from alice" and done == total > 0


def test_request_wait_gives_up_after_the_time_given(world, tmp_path):
    alice = world.signed_up("alice")
    enc = alice.cmd("encrypt", path=_image(tmp_path))
    bob = world.signed_up("bob")
    result = bob.cmd("request", user="alice", image=enc["image_id"], views=1, wait=2)
    assert result["state"] == "sent"
    assert isinstance(
        bob.fails("request", user="alice", image=enc["image_id"], views=1, wait=-1), cerr.InvalidArgument
    )
