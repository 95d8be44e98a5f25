"""``make bench-amplification``: bytes out per byte in, for every op, to a source that proved nothing.

    python -m bench.amplification [--rounds N] [--keep]

Starts a real 3-server cloud (``twistd`` processes, SQLite directory, production
settings: no test switch) on 127.0.0.1 and a victim user who signed in, offers
three images with thumbnails (so that a ``list_online`` page is about 40 KB)
and keeps a session. Then, from fresh UDP sockets that never received anything
(each stands for an attacker who spoofs the victim's address: it cannot see
the answers, so it can never prove its address), it sends to every server:

- every op a server knows, and unknown ones, as a request and as a query, with
  plausible arguments (the victim's real token included);
- malformed datagrams (garbage, ``{}``, a wrong version, deep nesting);
- the victim's own requests, byte for byte (same id and arguments: the kept
  replies of ``list_online`` and ``sign_in``), the "reflected" case of issue 11.

It counts the bytes each socket received against the bytes it sent, over all
servers, and prints one line per case (``amplification_<case>: ratio``),
``amplification_max`` (target <= 1.0), and, as the baseline of the same run,
the ratio the victim itself gets for ``list_online`` once it has proven its
address (``proven_list_online``): that is what a spoofer would reach without
the cookie.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
import uuid
from typing import Any

from cloudp2p.directory.token_seal import ReplyKey
from cloudp2p.encryption.keys import UserKeys
from cloudp2p.testing.cluster import LocalCluster
from cloudp2p.testing.rawudp import RawClient, request_bytes

PASSWORD = "bench-amplification-pw"


def emit(name: str, value: Any) -> None:
    print(f"{name}: {value}", flush=True)


def _png(seed: int) -> str:
    import base64
    import io
    import random

    from PIL import Image

    rng = random.Random(seed)
    im = Image.frombytes("RGB", (64, 48), bytes(rng.randrange(256) for _ in range(64 * 48 * 3)))
    out = io.BytesIO()
    im.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def cases(token: str, name: str) -> list[tuple[str, bytes]]:
    """(case name, datagram): every op with plausible arguments, as request and as query."""
    image = {"port": 9, "transfer_id": "a" * 32, "size": 1000, "sha256": "0" * 64}
    ops: list[tuple[str, dict[str, Any]]] = [
        ("status", {}),
        ("ping", {}),
        ("recent_runs", {}),
        ("work", {"units": 1}),
        ("register", {"username": "amp" + uuid.uuid4().hex[:8], "password": PASSWORD, "keys": {}}),
        ("sign_in", {"username": name, "password": PASSWORD}),
        ("sign_out", {"token": token}),
        ("heartbeat", {"token": token, "port": 9}),
        ("publish_image", {"token": token}),
        ("unpublish_image", {"token": token, "image_id": str(uuid.uuid4())}),
        ("list_online", {"token": token}),
        ("lookup_user", {"token": token, "username": name}),
        ("queue_message", {"token": token, "recipient": name, "kind": "x", "body": {}}),
        ("fetch_queued", {"token": token}),
        ("ack_queued", {"token": token, "message_ids": [1]}),
        ("encrypt", {"token": token, "image": image, "cover": None, "name": "x"}),
        ("no_such_op", {}),
    ]
    out = []
    for op, args in ops:
        out.append((op, request_bytes(op, args)))
        out.append((f"{op}_query", request_bytes(op, args, query=True)))
    bad = {
        "garbage": b"x" * 80,
        "empty_object": b"{}",
        "wrong_version": b'{"v":2,"t":"req","id":"' + b"a" * 32 + b'","op":"ping","args":{}}',
        "nested": b"[" * 200,
        "reply": b'{"v":1,"t":"rep","id":"' + b"b" * 32 + b'","server":1,"body":{"ok":true,"result":{}}}',
    }
    out += [(f"bad_{k}", v) for k, v in bad.items()]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.amplification", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="times each case is sent (fresh socket each)")
    p.add_argument("--keep", action="store_true", help="keep the servers' directory and logs")
    ns = p.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="cp2p-amp-")
    directory = {"backend": "sqlite", "path": os.path.join(workdir, "db", "directory.sqlite3")}
    cloud = LocalCluster(os.path.join(workdir, "cloud"), 3, overrides={"directory": directory})
    sockets: list[RawClient] = []
    started = time.monotonic()
    try:
        cloud.start(60.0)
        cloud.wait_converged(30.0)
        servers = cloud.client_list
        victim = RawClient()
        sockets.append(victim)
        name = "amp" + uuid.uuid4().hex[:10]
        victim.result(
            servers,
            "register",
            {"username": name, "password": PASSWORD, "keys": UserKeys.generate().public.to_json()},
            timeout=20.0,
        )
        key = ReplyKey()
        reply = victim.result(
            servers,
            "sign_in",
            {"username": name, "password": PASSWORD, "port": victim.address[1], **key.args()},
            timeout=20.0,
        )
        token = reply["token"] if "token" in reply else key.open(reply)
        for i in range(3):
            victim.result(
                servers,
                "publish_image",
                {
                    "token": token,
                    "image_id": str(uuid.uuid4()),
                    "name": f"n{i}",
                    "size": 1000,
                    "thumbnail": _png(i),
                },
            )
        emit("setup_seconds", round(time.monotonic() - started, 1))
        # the baseline: the victim, proven, asks for a list_online page
        before_in, before_out = victim.received.total(), victim.sent.total()
        page_id = uuid.uuid4().hex
        page = victim.call(servers, "list_online", {"token": token}, rid=page_id, timeout=5.0)
        assert page is not None and page["body"]["ok"], page
        assert len(page["body"]["result"]["users"]) >= 1, page  # the victim is online: a big page
        victim.receive(1.0)  # every server's copy of the reply
        proven = (victim.received.total() - before_in) / (victim.sent.total() - before_out)
        # what an attacker at a spoofed (unproven) address can make the servers send
        probes: list[tuple[str, RawClient, bytes]] = []
        for _ in range(ns.rounds):
            for case, data in cases(token, name):
                probes.append((case, RawClient(), data))
            # the victim's own list_online, byte for byte (the kept reply), and with its cookie
            replayed = request_bytes("list_online", {"token": token}, rid=page_id)
            probes.append(("replayed_list_online", RawClient(), replayed))
            for server in servers:
                cookie = victim.cookies.get(server)
                data = request_bytes("list_online", {"token": token}, rid=page_id, cookie=cookie)
                probes.append((f"replayed_with_victims_cookie_{server[1]}", RawClient(), data))
        sockets += [c for _, c, _ in probes]
        for case, client, data in probes:
            targets = (
                servers
                if not case.startswith("replayed_with")
                else [s for s in servers if f"_{s[1]}" in case]
            )
            for server in targets:
                client.send(data, server)
        time.sleep(3.0)  # sign_in and register (scrypt) answer last
        worst: dict[str, float] = {}
        for case, client, _ in probes:
            client.receive(0.02)
            ratio = client.received.total() / max(1, client.sent.total())
            case = re.sub(r"_\d+$", "", case)
            worst[case] = max(worst.get(case, 0.0), ratio)
        for case in sorted(worst):
            emit(f"amplification_{case}", round(worst[case], 3))
        emit("probes", len(probes))
        emit("proven_list_online", round(proven, 1))
        emit("proven_list_online_bytes", victim.received.total() - before_in)
        top = max(worst, key=lambda k: worst[k])
        emit("amplification_max", f"{worst[top]:.3f} ({top}; target <= 1.0)")
        return 0 if worst[top] <= 1.0 else 1
    finally:
        for client in sockets:
            client.close()
        cloud.stop()
        if ns.keep:
            emit("kept", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
