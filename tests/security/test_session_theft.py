"""Finding 1: nobody learns other clients' request ids; a kept reply (a session token) goes to no one else."""

from __future__ import annotations

import json

import pytest

from cloudp2p.directory.token_seal import ReplyKey
from cloudp2p.encryption.errors import WrongKeyError
from cloudp2p.testing.rawudp import parse, request_bytes
from tests.security.conftest import PASSWORD, register


def test_recent_runs_is_not_served_without_the_test_switch(cloud, raw):
    attacker = raw()
    for sid, address in cloud.client_addresses.items():
        reply = attacker.call(address, "recent_runs", query=True, timeout=2.0)
        assert reply is not None, f"server {sid} did not answer"
        assert reply["body"]["ok"] is False, f"server {sid} listed its recent runs: {str(reply)[:200]}"


def test_a_replayed_sign_in_id_gives_another_source_nothing(cloud, raw):
    victim, attacker = raw(), raw()
    name, _ = register(victim, cloud)
    key = ReplyKey()
    args = {"username": name, "password": PASSWORD, **key.args()}
    reply = victim.call(cloud.client_list, "sign_in", args, timeout=20.0)
    assert reply is not None and reply["body"]["ok"], reply
    rid = reply["id"]
    # The attacker knows the id (it is in clear on the wire) and sends the same request again,
    # first as the victim's own bytes, then from an address it has proven.
    for server in cloud.client_list:
        attacker.send(request_bytes("sign_in", args, rid=rid), server)
    attacker.receive(1.0)
    answer = attacker.call(cloud.client_list, "sign_in", args, rid=rid, timeout=2.0)
    if answer is not None:
        assert answer["body"]["ok"] is False and answer["body"]["error"]["code"] == "request_id_taken", answer
    leaked = [d for d, _ in attacker.receive(0.5)]
    everything = json.dumps(answer) + "".join(d.decode("utf-8", "replace") for d in leaked)
    assert "token" not in everything, everything[:300]


def test_no_server_keeps_or_shares_the_session_token_in_clear(cloud, raw):
    """A retry from the original source gets the kept reply from every server (the executor's own
    cache, the others' from the ``done`` broadcast): the token is sealed in all of them, and it
    opens only with the request's one-time key."""
    client = raw()
    name, _ = register(client, cloud)
    key = ReplyKey()
    args = {"username": name, "password": PASSWORD, **key.args()}
    first = client.call(cloud.client_list, "sign_in", args, timeout=20.0)
    assert first is not None and first["body"]["ok"], first
    rid = first["id"]
    kept = []
    for server in cloud.client_list:
        again = client.call(server, "sign_in", args, rid=rid, timeout=2.0)
        assert again is not None, f"{server} did not answer the retry from the original source"
        kept.append(again["body"])
    for body in [first["body"], *kept]:
        assert body["ok"] and "token" not in body["result"], body
    tokens = {key.open(body["result"]) for body in [first["body"], *kept]}
    assert len(tokens) == 1
    with pytest.raises(WrongKeyError):
        ReplyKey().open(first["body"]["result"])


def test_a_duplicate_from_another_source_does_not_redirect_a_pending_reply(cloud, raw):
    """While a request is still running, a copy of it from elsewhere must not steal its reply."""
    victim, attacker = raw(), raw()
    name, _ = register(victim, cloud)
    key = ReplyKey()
    args = {"username": name, "password": PASSWORD, **key.args()}
    for server in cloud.client_list:  # the attacker proves its own address first
        attacker.prove(server)
        victim.prove(server)
    rid = "ab" * 16
    for server in cloud.client_list:
        victim.send(request_bytes("sign_in", args, rid=rid, cookie=victim.cookies.get(server)), server)
    for server in cloud.client_list:  # while scrypt runs
        attacker.send(request_bytes("sign_in", args, rid=rid, cookie=attacker.cookies.get(server)), server)
    got_attacker = attacker.receive(3.0)
    got_victim = victim.receive(3.0, until=lambda d, a: (parse(d) or {}).get("id") == rid)
    assert any((parse(d) or {}).get("id") == rid for d, _ in got_victim), "the victim got no reply"
    for data, _ in got_attacker:
        obj = parse(data) or {}
        assert not (obj.get("body") or {}).get("ok"), f"the attacker got the victim's reply: {data[:200]!r}"
