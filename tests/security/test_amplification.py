"""Finding 3: to a source that has not proven it receives at its address, no server sends more than it got."""

from __future__ import annotations

import base64
import io
import random
import time
import uuid

from PIL import Image

from cloudp2p.testing.rawudp import request_bytes
from tests.security.conftest import PASSWORD, register, sign_in

# Every operation a production server knows, and some it does not, each with plausible arguments.
TOKEN = "A" * 43
OPS: list[tuple[str, dict, bool]] = [
    ("status", {}, True),
    ("ping", {}, True),
    ("recent_runs", {}, True),
    ("status", {}, False),
    ("ping", {}, False),
    ("work", {"units": 1}, False),
    ("register", {"username": "x", "password": "y", "keys": {}}, False),
    ("sign_in", {"username": "nobody-here", "password": PASSWORD}, False),
    ("sign_out", {"token": TOKEN}, False),
    ("heartbeat", {"token": TOKEN, "port": 9}, False),
    ("publish_image", {"token": TOKEN}, False),
    ("unpublish_image", {"token": TOKEN, "image_id": str(uuid.uuid4())}, False),
    ("list_online", {"token": TOKEN}, False),
    ("lookup_user", {"token": TOKEN, "username": "nobody"}, False),
    ("queue_message", {"token": TOKEN}, False),
    ("fetch_queued", {"token": TOKEN}, False),
    ("ack_queued", {"token": TOKEN, "up_to": 1}, False),
    ("share_view", {"token": TOKEN, "image_id": str(uuid.uuid4()), "owner_id": str(uuid.uuid4())}, False),
    ("share_limit", {"token": TOKEN}, False),
    ("encrypt", {"token": TOKEN}, False),
    ("no_such_op", {}, False),
    ("no_such_op", {}, True),
]
BAD = [b"x", b"{}", b'{"v":2,"t":"req","id":"' + b"a" * 32 + b'","op":"ping","args":{}}', b"[" * 50]


def _ratio(client, servers) -> float:
    received = sum(client.received[s] for s in servers)
    sent = sum(client.sent[s] for s in servers)
    return received / sent


def test_no_operation_answers_an_unproven_source_with_more_bytes_than_it_sent(cloud, raw):
    """Every op, and some malformed datagrams, each from its own fresh socket to every server."""
    probes = []
    for op, args, query in OPS:
        probes.append((f"{op}{'?' if query else ''}", raw(), request_bytes(op, args, query=query)))
    for data in BAD:
        probes.append((f"bad {data[:12]!r}", raw(), data))
    for _, client, data in probes:
        for server in cloud.client_list:
            client.send(data, server)
    time.sleep(2.0)  # answers wait in each socket's buffer; sign_in and register (scrypt) come last
    for _, client, _ in probes:
        client.receive(0.05)
    worst = {name: _ratio(client, cloud.client_list) for name, client, _ in probes}
    print("amplification per op:", {k: round(v, 2) for k, v in sorted(worst.items(), key=lambda kv: -kv[1])})
    assert max(worst.values()) <= 1.0, {k: round(v, 2) for k, v in worst.items() if v > 1.0}


def _noise_png(seed: int) -> str:
    rng = random.Random(seed)
    im = Image.frombytes("RGB", (64, 48), bytes(rng.randrange(256) for _ in range(64 * 48 * 3)))
    out = io.BytesIO()
    im.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_a_large_kept_reply_is_not_resent_to_another_source(cloud, raw):
    """The 299x case: a list_online page someone asked for, replayed from elsewhere."""
    victim, attacker = raw(), raw()
    name, _ = register(victim, cloud)
    token = sign_in(victim, cloud, name, port=victim.address[1])
    for i in range(3):
        victim.result(
            cloud.client_list,
            "publish_image",
            {
                "token": token,
                "image_id": str(uuid.uuid4()),
                "name": f"noise{i}",
                "size": 1000,
                "thumbnail": _noise_png(i),
            },
        )
    page = victim.call(cloud.client_list, "list_online", {"token": token}, timeout=5.0)
    assert page is not None and page["body"]["ok"]
    assert victim.received.total() > 30_000  # a big page indeed
    for server in cloud.client_list:  # the exact bytes the victim sent, from the attacker's address
        attacker.send(request_bytes("list_online", {"token": token}, rid=page["id"]), server)
    attacker.receive(1.0)
    ratio = _ratio(attacker, cloud.client_list)
    print(
        f"replayed list_online: {attacker.sent.total()} B in, "
        f"{attacker.received.total()} B out ({ratio:.2f}x)"
    )
    assert ratio <= 1.0
