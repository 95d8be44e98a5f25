"""Finding 9: presence is the address a user's requests come from; encrypt fetches only from a proven one."""

from __future__ import annotations

import secrets

from cloudp2p.testing.rawudp import parse, request_bytes, spoof_udp
from tests.security.conftest import register, sign_in


def test_presence_cannot_point_at_someone_else(cloud, raw):
    client, other = raw(), raw()
    name, _ = register(client, cloud)
    token = sign_in(client, cloud, name, port=client.address[1])
    moved = client.call(cloud.client_list, "heartbeat", {"token": token, "host": "10.1.2.3", "port": 4444})
    assert moved is not None
    assert moved["body"]["ok"] is False and moved["body"]["error"]["code"] == "bad_request", moved
    other_name, _ = register(other, cloud)
    peer = sign_in(other, cloud, other_name)
    found = other.result(cloud.client_list, "lookup_user", {"token": peer, "username": name})
    assert found["online"] and found["host"] == "127.0.0.1" and found["port"] == client.address[1], found


def test_encrypt_never_fetches_from_a_spoofed_source(cloud, raw):
    """An encrypt request forged to come from 127.0.0.2:P must not make a server send to that address."""
    owner = raw()
    name, _ = register(owner, cloud)
    token = sign_in(owner, cloud, name)
    victim = raw("127.0.0.2")
    image = {
        "port": victim.address[1],
        "transfer_id": secrets.token_hex(16),
        "size": 1000,
        "sha256": "0" * 64,
    }
    datagram = request_bytes("encrypt", {"token": token, "image": image, "cover": None, "name": "x"})
    for server in cloud.client_list:
        spoof_udp(victim.address, server, datagram)
    got = victim.receive(2.0)
    kinds = [(parse(d) or {}).get("t", "not json") for d, _ in got]
    print(f"the spoofed address received {len(got)} datagrams, {victim.received.total()} bytes: {kinds}")
    assert all(k == "cookie" for k in kinds), f"a server sent the spoofed address {kinds}"
    assert victim.received.total() <= len(datagram) * len(cloud.client_list)
