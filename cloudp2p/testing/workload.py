"""A recorded client workload against the cloud: the "history" half of a Jepsen-style test.

``python -m cloudp2p.testing.workload --servers H:P,... --users 10 --ops 300 --out FILE``
runs ``users`` simulated users at once (each one a sequence of directory requests through
the real ``ClientRouter``) and writes one JSON line per event to ``FILE``: ``invoke`` when a
request is sent, then ``ok`` (with its result), ``fail`` (a definite refusal, with its code) or
``info`` (the outcome is unknown: a timeout, or an error that may follow a lost commit).
``cloudp2p.testing.history`` checks such a history against the database afterwards.

What each user does: register (and, for a few contested names, race the others to register
the same one), sign in, then a random mix of heartbeats, publishing images, queueing
``rights_change`` messages to other users (each with a unique nonce and, per viewer and
image, an increasing rights version), fetching and acknowledging its own messages, and
reads. Bounded: ``ops`` requests in all, and ``--max-seconds`` of wall time.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task

from cloudp2p.config import hostport
from cloudp2p.directory.token_seal import ReplyKey
from cloudp2p.errors import CloudUnreachable, RequestFailed

PASSWORD = "workload-password-1"
# Refusals that say for sure the request changed nothing.
DEFINITE = frozenset(
    {
        "username_taken", "bad_request", "not_signed_in", "user_not_found", "image_not_found",
        "not_owner", "image_id_taken", "too_many_images", "queue_full", "bad_credentials",
        "request_id_reused", "bad_cursor", "bad_thumbnail", "overloaded", "unknown_op", "bad_args",
    }
)  # fmt: skip


def _thumbnail() -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 200)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def _keys() -> dict[str, str]:
    return {k: base64.b64encode(os.urandom(32)).decode() for k in ("x25519", "ed25519")}


def _public(args: dict[str, Any]) -> dict[str, Any]:
    """The arguments as recorded: no password, no token, no thumbnail bytes."""
    hidden = {"password": "<password>", "token": "<token>", "thumbnail": "<png>", "keys": "<keys>"}
    return {k: hidden.get(k, v) if k in hidden else v for k, v in args.items()}


class Recorder:
    def __init__(self, path: str) -> None:
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.counts = {"ok": 0, "fail": 0, "info": 0}

    def write(self, event: dict[str, Any]) -> None:
        self._file.write(json.dumps(event, sort_keys=True) + "\n")

    def close(self) -> None:
        self._file.close()


class Workload:
    def __init__(
        self, reactor: Any, router: Any, recorder: Recorder, *, prefix: str, users: int, ops: int,
        seed: int, deadline: float, pause: float = 0.0,
    ) -> None:  # fmt: skip
        self.pause = pause  # each user waits up to this many seconds (at random) between requests
        self.reactor = reactor
        self.router = router
        self.recorder = recorder
        self.rng = random.Random(seed)
        self.names = [f"{prefix}{k}" for k in range(users)]
        self.contested = [f"{prefix}race{k}" for k in range(max(1, users // 5))]
        self.budget = ops
        self.deadline = deadline
        self.thumbnail = _thumbnail()
        self.versions: dict[tuple[str, str], int] = {}

    async def request(self, proc: str, op: str, args: dict[str, Any]) -> tuple[str, Any]:
        """Send one request, record invoke and outcome; ("ok", result) / ("fail", code) / ("info", why)."""
        self.budget -= 1
        if self.pause:
            await task.deferLater(self.reactor, self.rng.uniform(0, self.pause), lambda: None)
        key = uuid.uuid4().hex
        self.recorder.write({"k": key, "proc": proc, "type": "invoke", "op": op, "args": _public(args),
                             "t": time.time()})  # fmt: skip
        try:
            result = await self.router.submit(op, args)
            outcome: tuple[str, Any] = ("ok", result)
        except RequestFailed as e:
            outcome = ("fail" if e.code in DEFINITE else "info", e.code)
        except CloudUnreachable:
            outcome = ("info", "timeout")
        kind, value = outcome
        self.recorder.counts[kind] += 1
        event = {"k": key, "proc": proc, "type": kind, "op": op, "t": time.time()}
        event["result" if kind == "ok" else "error"] = value if kind != "ok" else _strip(op, value)
        self.recorder.write(event)
        return outcome

    def more(self) -> bool:
        return self.budget > 0 and time.monotonic() < self.deadline

    async def user(self, name: str) -> None:
        token = None
        registered = False
        while self.more() and not registered:
            kind, value = await self.request(
                name, "register", {"username": name, "password": PASSWORD, "keys": _keys()}
            )
            registered = kind == "ok" or value == "username_taken"
        race = self.rng.choice(self.contested)
        if self.more():
            await self.request(name, "register", {"username": race, "password": PASSWORD, "keys": _keys()})
        while self.more() and token is None:
            key = ReplyKey()  # the token comes back sealed for this request's key
            kind, value = await self.request(
                name, "sign_in", {"username": name, "password": PASSWORD, **key.args()}
            )
            if kind == "ok":
                token = key.open(value)
        images: list[str] = []
        while self.more() and token is not None:
            roll = self.rng.random()
            if roll < 0.2:
                await self.request(
                    name, "heartbeat", {"token": token, "port": 40000 + self.names.index(name)}
                )
            elif roll < 0.35:
                image_id = str(uuid.uuid4())
                kind, _ = await self.request(
                    name, "publish_image",
                    {"token": token, "image_id": image_id, "name": f"{image_id[:8]}.png", "size": 1234,
                     "thumbnail": self.thumbnail},
                )  # fmt: skip
                if kind == "ok":
                    images.append(image_id)
            elif roll < 0.6:
                await self.rights_change(name, token, images)
            elif roll < 0.85:
                await self.fetch_and_ack(name, token)
            elif roll < 0.95:
                await self.request(name, "list_online", {"token": token, "limit": 20})
            else:
                other = self.rng.choice(self.names)
                await self.request(name, "lookup_user", {"token": token, "username": other})

    async def rights_change(self, name: str, token: str, images: list[str]) -> None:
        viewer = self.rng.choice([n for n in self.names if n != name] or [name])
        image = self.rng.choice(images) if images else f"{name}-image"
        version = self.versions.get((viewer, image), 0) + 1
        self.versions[(viewer, image)] = version
        body = {
            "nonce": uuid.uuid4().hex,
            "image": image,
            "version": version,
            "views": self.rng.randint(0, 9),
        }
        await self.request(
            name,
            "queue_message",
            {"token": token, "to_username": viewer, "kind": "rights_change", "body": body},
        )

    async def fetch_and_ack(self, name: str, token: str) -> None:
        kind, value = await self.request(name, "fetch_queued", {"token": token, "after": 0, "limit": 50})
        if kind == "ok" and value["messages"] and self.more():
            up_to = max(m["id"] for m in value["messages"])
            await self.request(name, "ack_queued", {"token": token, "up_to": up_to})

    async def run(self) -> None:
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(self.user(n)) for n in self.names], consumeErrors=True
        )


def _strip(op: str, result: Any) -> Any:
    """What the checker needs of a result (tokens and thumbnails left out)."""
    if op == "sign_in":
        return {"user_id": result.get("user_id")}
    if op == "fetch_queued":
        return {
            "messages": [
                {"id": m["id"], "from": m["from"], "kind": m["kind"], "body": m["body"]}
                for m in result["messages"]
            ]
        }
    if op == "list_online":
        return {"count": len(result.get("users", []))}
    if op == "lookup_user":
        return {"user_id": result.get("user_id")}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cloudp2p.testing.workload", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--servers", required=True, help="client sockets, host:port,...")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--prefix", default="w")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds one request may take")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--pause", type=float, default=0.0, help="most seconds a user waits between requests")
    parser.add_argument("--out", required=True)
    ns = parser.parse_args(argv)
    servers = [hostport(s) for s in ns.servers.split(",")]

    def run(reactor: Any) -> Any:
        from cloudp2p.routing.client import ClientRouter

        router = ClientRouter(reactor, servers, timeout=ns.timeout)
        router.start()
        recorder = Recorder(ns.out)
        work = Workload(
            reactor, router, recorder, prefix=ns.prefix, users=ns.users, ops=ns.ops, seed=ns.seed,
            deadline=time.monotonic() + ns.max_seconds, pause=ns.pause,
        )  # fmt: skip

        async def body() -> None:
            try:
                await work.run()
            finally:
                recorder.close()
                await router.stop()
                print(json.dumps(recorder.counts), flush=True)

        return defer.Deferred.fromCoroutine(body())

    task.react(run)
    return 0


def spawn(
    command: Callable[[list[str]], list[str]], servers: list[tuple[str, int]], out: str, **options: Any
) -> Any:
    """Start a workload process (``command`` wraps the argv, e.g. to run it inside a host)."""
    import subprocess

    argv = [sys.executable, "-m", "cloudp2p.testing.workload", "--servers",
            ",".join(f"{h}:{p}" for h, p in servers), "--out", out]  # fmt: skip
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return subprocess.Popen(command(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


if __name__ == "__main__":
    sys.exit(main())
