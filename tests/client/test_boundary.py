"""Issue 11, the client's side of the open boundary: each test fails on the code before the fix.

The real daemon and stories code on the memory network with a fake cloud (tests/client/fakes.py);
raw datagrams go straight into the peer listener, as anyone on the network could send them.
"""

from __future__ import annotations

import base64
import json
import os

import pytest

from cloudp2p.client import errors as cerr
from cloudp2p.client import state as client_state
from cloudp2p.client.daemon import LOOKUP_BURST
from cloudp2p.client.images import make_thumbnail
from cloudp2p.client.peer import PeerMessage, PeerMessageError, new_message_id
from cloudp2p.client.state import State
from cloudp2p.encryption.keys import UserKeys

from .fakes import small_png

PW = "password-x"


def _published(world, tmp_path, *, preview=False):
    alice = world.signed_up("alice")
    path = tmp_path / "secret.png"
    path.write_bytes(small_png(5, (64, 48)))
    enc = alice.cmd("encrypt", path=str(path))
    args = {"preview": True} if preview else {}
    alice.cmd("publish", image=enc["image_id"], **args)
    return alice, enc, path


def _datagram(identity, sender, recipient, type, body, at):
    msg = PeerMessage(type, new_message_id(), sender, recipient, float(at), body).signed_by(identity)
    return msg.encode()


# -- finding 5: a viewer cannot inflate their own grant ---------------------------------------------


def test_share_request_used_is_capped_by_the_views_the_owner_granted(world, tmp_path):
    alice, enc, _ = _published(world, tmp_path)
    bob = world.signed_up("bob")
    bob.cmd("users")
    # bob's client lies: "my copy has used 998 views already, give me 2 more" (a first request)
    bob.daemon.state.put("received", enc["image_id"], {"views_used": 998})
    req = bob.cmd("request", user="alice", image=enc["image_id"], views=2)
    inbox = alice.cmd("inbox")["requests"]
    assert [r["used"] for r in inbox] == [0]
    acc = alice.cmd("accept", request_id=req["request_id"])
    assert acc["views"] == 2
    assert alice.daemon.state.get("grants", enc["image_id"])["bob"]["views"] == 2
    # a later "more" request may count at most what alice granted (2), not the claimed 998
    world.run(bob.sleep(1.0))
    bob.daemon.state.update("received", enc["image_id"], views_used=998)
    more = bob.cmd("more-views", image=enc["image_id"], views=3)
    assert alice.daemon.state.get("inbox", more["request_id"])["used"] == 2
    assert alice.cmd("accept", request_id=more["request_id"])["views"] == 5


# -- finding 6: the published thumbnail shows the cover -----------------------------------------------


def test_published_thumbnail_is_of_the_cover_unless_a_preview_is_asked_for(world, tmp_path):
    alice, enc, original = _published(world, tmp_path)
    published = base64.b64decode(world.directory.images[enc["image_id"]]["thumbnail"])
    encrypted = open(enc["encrypted"], "rb").read()
    assert published == make_thumbnail(encrypted)
    assert published != make_thumbnail(original.read_bytes())
    assert alice.daemon.state.get("images", enc["image_id"])["preview"] is False
    r = alice.cmd("publish", image=enc["image_id"], preview=True)
    assert r["preview"] is True
    published = base64.b64decode(world.directory.images[enc["image_id"]]["thumbnail"])
    assert published == make_thumbnail(original.read_bytes())
    assert isinstance(alice.fails("publish", image=enc["image_id"], preview="yes"), cerr.InvalidArgument)


# -- finding 11: untrusted names never reach paths -----------------------------------------------------


def test_users_ignores_offered_images_and_users_whose_names_could_leave_the_folder(world, tmp_path):
    alice, enc, _ = _published(world, tmp_path)
    bob = world.signed_up("bob")
    thumb = world.directory.images[enc["image_id"]]["thumbnail"]
    world.directory.images["../../escaped"] = {"owner": "alice", "name": "x", "size": 1, "thumbnail": thumb}
    world.directory.users[".."] = dict(world.directory.users["alice"])
    world.directory.presence[".."] = world.directory.presence["alice"]
    world.directory.images["a1b2c3d4-0000-4000-8000-000000000000"] = {
        "owner": "..",
        "name": "x",
        "size": 1,
        "thumbnail": thumb,
    }
    listing = bob.cmd("users")
    names = [u["username"] for u in listing["users"]]
    assert ".." not in names
    offered = [im["image_id"] for u in listing["users"] for im in u["images"]]
    assert offered == [enc["image_id"]]
    home = bob.daemon.home.path
    thumbs = home / "thumbnails"
    for root, _dirs, files in os.walk(home):
        for f in files:
            if f.endswith((".png", ".jpg")) and "escaped" in f or f.startswith("a1b2c3d4"):
                raise AssertionError(f"a thumbnail was written at {root}/{f}")
    assert sorted(os.listdir(thumbs)) == ["alice"]


@pytest.mark.parametrize("image_id", ["../../x", "..", "A1B2C3D4-0000-4000-8000-000000000000", "x" * 36])
def test_peer_messages_name_images_by_uuid_only(image_id):
    keys = UserKeys.generate()
    body = {"request_id": "r1", "image_id": image_id, "views": 1, "kind": "share", "used": 0}
    data = json.dumps(
        PeerMessage("share_request", new_message_id(), "bob", "alice", 1.0, body).signed_by(keys).to_json()
    ).encode()
    with pytest.raises(PeerMessageError, match="image_id"):
        PeerMessage.decode(data)


@pytest.mark.parametrize("name", ["..", ".hidden", "a", "-rf", "x" * 33])
def test_peer_user_names_follow_the_directorys_rules(name):
    keys = UserKeys.generate()
    body = {"ack": "0" * 32}
    data = json.dumps(
        PeerMessage("ack", new_message_id(), name, "alice", 1.0, body).signed_by(keys).to_json()
    )
    with pytest.raises(PeerMessageError, match="user names"):
        PeerMessage.decode(data.encode())


# -- pinned keys (the "honest limits" of issue 11) ------------------------------------------------------


def test_a_changed_key_is_refused_until_the_user_trusts_it(world, tmp_path):
    alice, enc, _ = _published(world, tmp_path)
    bob = world.signed_up("bob")
    bob.cmd("users")
    bob.cmd("request", user="alice", image=enc["image_id"], views=1)
    pinned = json.loads((bob.daemon.home.path / "known_keys.json").read_text())["users"]
    assert pinned["alice"]["ed25519"] == world.directory.users["alice"]["keys"]["ed25519"]
    # the directory (malicious, or alice on a new machine) now hands out other keys
    world.directory.users["alice"]["keys"] = UserKeys.generate().public.to_json()
    asked = len(alice.cmd("inbox")["requests"])
    err = bob.fails("request", user="ALICE", image=enc["image_id"], views=1)
    assert isinstance(err, cerr.KeyChanged) and err.exit_code == 28
    assert "cloudp2p trust alice" in str(err)
    assert len(alice.cmd("inbox")["requests"]) == asked  # nothing was sent
    # a message signed with the new key is dropped, not applied
    r = bob.cmd("trust", user="alice")
    assert r["changed"] is True and r["previous"] != r["ed25519"]
    again = bob.cmd("trust", user="alice")
    assert again["changed"] is False
    pinned = json.loads((bob.daemon.home.path / "known_keys.json").read_text())["users"]
    assert pinned["alice"]["ed25519"] == world.directory.users["alice"]["keys"]["ed25519"]
    bob.cmd("request", user="alice", image=enc["image_id"], views=1)  # works again (no error)


def test_the_pin_survives_a_restart(world, tmp_path):
    alice = world.signed_up("alice")
    bob = world.signed_up("bob")
    world.run(bob.daemon.lookup("alice"))
    world.stop("bob")
    world.directory.users["alice"]["keys"] = UserKeys.generate().public.to_json()
    bob = world.client("bob")
    assert isinstance(bob.fails("trust", user="nobody-here"), cerr.UnknownUser)
    with pytest.raises(cerr.KeyChanged):
        world.run(bob.daemon.lookup("alice", fresh=True))
    assert alice.daemon.username == "alice"


# -- finding 8: the daemon cannot be made to grow or work without bound ----------------------------


def test_made_up_senders_cost_a_few_directory_lookups_not_one_each(world):
    alice = world.signed_up("alice")
    forger = UserKeys.generate()
    now = world.net.clock.seconds()
    before = world.directory.calls.count("lookup_user")
    proto = alice.daemon.messenger.protocol
    for i in range(300):
        body = {
            "request_id": f"r{i}",
            "image_id": "a1b2c3d4-0000-4000-8000-000000000000",
            "views": 1,
            "kind": "share",
            "used": 0,
        }
        proto.datagramReceived(
            _datagram(forger, f"made-up-{i}", "alice", "share_request", body, now), ("127.0.0.9", 4000 + i)
        )
    world.run(alice.sleep(0.5))
    lookups = world.directory.calls.count("lookup_user") - before
    assert lookups <= LOOKUP_BURST + 1, lookups
    guard = alice.cmd("counters")["peer_guard"]
    assert guard["refused_lookups_limited"] >= 300 - LOOKUP_BURST - 1
    assert alice.cmd("counters")["lookup_cache"] <= LOOKUP_BURST + 1
    # offers, rejections, rights from strangers are not even worth a lookup
    body = {"request_id": "r1", "image_id": "a1b2c3d4-0000-4000-8000-000000000000"}
    proto.datagramReceived(
        _datagram(forger, "stranger", "alice", "share_rejected", body, now), ("127.0.0.9", 1)
    )
    assert alice.cmd("counters")["peer_guard"]["refused_implausible"] == 1


def test_every_spelling_of_a_name_is_one_cache_entry_and_one_lookup(world):
    alice = world.signed_up("alice")
    world.signed_up("bob")
    forger = UserKeys.generate()
    now = world.net.clock.seconds()
    before = world.directory.calls.count("lookup_user")
    proto = alice.daemon.messenger.protocol
    spellings = ["bob", "Bob", "bOb", "boB", "BOB", "BoB", "bOB", "BOb"]
    for i, name in enumerate(spellings * 3):
        body = {
            "request_id": f"r{i}",
            "image_id": "a1b2c3d4-0000-4000-8000-000000000000",
            "views": 1,
            "kind": "share",
            "used": 0,
        }
        proto.datagramReceived(
            _datagram(forger, name, "alice", "share_request", body, now), ("127.0.0.9", 4000)
        )
        world.run(alice.sleep(0.01))
    assert world.directory.calls.count("lookup_user") - before == 1
    assert alice.cmd("counters")["lookup_cache"] == 1
    assert alice.cmd("inbox")["requests"] == []  # forged signatures: nothing applied


def test_one_sender_fills_at_most_its_share_of_the_inbox(world, tmp_path):
    from cloudp2p.client.stories.sharing.owner import MAX_PENDING_PER_SENDER

    alice, enc, _ = _published(world, tmp_path)
    bob = world.signed_up("bob")
    for i in range(MAX_PENDING_PER_SENDER + 10):
        body = {"request_id": f"r{i}", "image_id": enc["image_id"], "views": 1, "kind": "share", "used": 0}
        world.run(bob.daemon.send_message("alice", "share_request", body))
    pending = [r for r in alice.cmd("inbox")["requests"] if r["state"] == "pending"]
    assert len(pending) == MAX_PENDING_PER_SENDER
    assert alice.cmd("counters")["peer_guard"]["refused_inbox_full"] == 10


def test_applied_ids_are_bounded_and_evicted_ids_stay_refused(tmp_path, monkeypatch):
    from cloudp2p.client.home import Home

    monkeypatch.setattr(client_state, "MAX_APPLIED", 100)
    home = Home(tmp_path / "h")
    home.create()
    state = State(home)
    now = 1_000_000.0
    for i in range(250):
        state.mark_applied(f"{i:032x}", now, at=now - 250 + i)
    assert len(state.section("applied")) <= 100
    assert state.too_old(now - 250 + 10, now)  # evicted: a replay of it is refused as too old
    assert not state.too_old(now - 1, now)
    assert State(home).too_old(now - 250 + 10, now)  # the floor is saved


def test_a_burst_of_messages_is_saved_in_a_few_batched_writes(world, tmp_path):
    alice, enc, _ = _published(world, tmp_path)
    bob = world.signed_up("bob")
    writes = alice.cmd("counters")["state_writes"]
    sends = []
    for i in range(12):
        body = {"request_id": f"b{i}", "image_id": enc["image_id"], "views": 1, "kind": "share", "used": 0}
        sends.append(bob.daemon.send_message("alice", "share_request", body))
    from twisted.internet import defer

    world.run(defer.gatherResults([defer.Deferred.fromCoroutine(s) for s in sends]))
    assert alice.cmd("counters")["state_writes"] - writes <= 4
    saved = json.loads(alice.daemon.home.state_file.read_text())
    assert {f"b{i}" for i in range(12)} <= set(saved["inbox"])  # acked only once on disk
