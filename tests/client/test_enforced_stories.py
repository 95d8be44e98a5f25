"""Enforced copies through the real daemon and stories code, with the fake cloud's key shares
(the real ones are tested in tests/directory and end to end in tests/e2e/test_enforced_e2e.py):
the grant mode, the client setting, the cloud needed for a view, the share never stored."""

from __future__ import annotations

import base64

import pytest

from cloudp2p.client import errors as cerr
from cloudp2p.client.identity import unb64
from cloudp2p.encryption import keywrap
from cloudp2p.errors import CloudUnreachable

from .test_stories import PW, _image, _snapshot


def _user(world, name, **config):
    c = world.client(name, **config)
    c.cmd("register", username=name, password=PW)
    c.cmd("login", password=PW)
    return c


def _ask(alice, bob, tmp_path, name, views=2):
    enc = alice.cmd("encrypt", path=_image(tmp_path, name))
    alice.cmd("publish", image=enc["image_id"])
    bob.cmd("users")
    return enc, bob.cmd("request", user="alice", image=name, views=views)


def test_the_setting_makes_enforced_the_default_and_offline_overrides_it(world, tmp_path):
    alice = _user(world, "alice", enforced_default=True)
    bob = _user(world, "bob")
    enc, req = _ask(alice, bob, tmp_path, "cat.png")
    assert alice.cmd("accept", request_id=req["request_id"])["mode"] == "enforced"
    enc2, req2 = _ask(alice, bob, tmp_path, "dog.png")
    assert alice.cmd("accept", request_id=req2["request_id"], offline=True)["mode"] == "offline"
    modes = {r["name"]: r["mode"] for r in bob.cmd("images")["received"]}
    assert modes == {"cat.png": "enforced", "dog.png": "offline"}
    owned = {r["name"]: r["grant_modes"] for r in alice.cmd("images")["owned"]}
    assert owned == {"cat.png": {"bob": "enforced"}, "dog.png": {"bob": "offline"}}
    assert (enc["image_id"], bob.daemon.user_id) in world.directory.shares
    assert (enc2["image_id"], bob.daemon.user_id) not in world.directory.shares


def test_viewing_needs_the_cloud_and_never_stores_the_share(world, tmp_path):
    alice, bob = _user(world, "alice"), _user(world, "bob")
    enc, req = _ask(alice, bob, tmp_path, "cat.png", views=2)
    alice.cmd("accept", request_id=req["request_id"], enforced=True)
    row = world.directory.shares[(enc["image_id"], bob.daemon.user_id)]
    share = keywrap.open_share(unb64(row["share"]), bob.daemon.identity.x25519_private, enc["image_id"])
    world.directory.reachable = False
    assert isinstance(bob.fails("view", image="cat.png"), CloudUnreachable)
    world.directory.reachable = True
    assert row["used"] == 0 and bob.cmd("images")["received"][0]["views_left"] == 2  # no view used
    first = bob.cmd("view", image="cat.png")
    assert first["shown"] == "image" and first["views_left"] == 1 and row["used"] == 1
    for data in _snapshot(bob).values():  # neither the share nor the sealed share is in the home
        assert share not in data and base64.b64encode(share) not in data
        assert row["share"].encode() not in data
    # the cloud's limit wins over the copy's rights: revoked in the cloud only, the copy shows the cover
    row["share"] = ""
    assert bob.cmd("view", image="cat.png")["shown"] == "cover"
    assert row["used"] == 1


def test_set_views_and_revoke_reach_the_cloud_first(world, tmp_path):
    alice, bob = _user(world, "alice"), _user(world, "bob")
    enc, req = _ask(alice, bob, tmp_path, "cat.png", views=1)
    alice.cmd("accept", request_id=req["request_id"], enforced=True)
    row = world.directory.shares[(enc["image_id"], bob.daemon.user_id)]
    alice.cmd("set-views", user="bob", image="cat.png", views=4)
    assert row["views"] == 4
    alice.cmd("revoke", user="bob", image="cat.png")
    assert row["views"] == 0 and row["share"] == ""
    err = alice.fails("set-views", user="bob", image="cat.png", views=2)
    assert isinstance(err, cerr.ClientError) and "share the image again" in str(err)


@pytest.mark.parametrize("flag", [{"enforced": "yes"}, {"offline": 1}, {"enforced": True, "offline": True}])
def test_bad_mode_arguments_change_nothing(world, tmp_path, flag):
    alice, bob = _user(world, "alice"), _user(world, "bob")
    _enc, req = _ask(alice, bob, tmp_path, "cat.png")
    assert isinstance(alice.fails("accept", request_id=req["request_id"], **flag), cerr.InvalidArgument)
    assert alice.cmd("inbox")["requests"][0]["state"] == "pending"
    assert world.directory.shares == {}
