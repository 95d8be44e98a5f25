"""Simulated users for ``bench.stress``: what each one does, and the ledger of what it was told.

A ``User`` registers once, signs in, then picks operations from the ``MIX``
until the run's request budget is spent. Every request it submits is recorded
in the shared ``Ledger`` (op, start, latency, outcome, answering server), and
every acknowledged durable effect is written down in ``Ledger.told`` so that
``bench.stress_check`` can compare it with the database afterwards.
"""

from __future__ import annotations

import io
import os
import random
import time
import uuid
from collections import Counter
from typing import Any

from twisted.internet import defer

from cloudp2p.client.stories.images import ENCRYPT_ATTEMPTS
from cloudp2p.directory.token_seal import ReplyKey
from cloudp2p.encryption import keywrap
from cloudp2p.errors import CloudUnreachable, RequestFailed
from cloudp2p.routing import client_wire as wire
from cloudp2p.routing.client import ClientRouter
from cloudp2p.transfer.errors import TransferError

LOCAL = "127.0.0.1"
DATA = os.path.join(os.path.dirname(__file__), "..", "tests", "data")
PASSWORD = "stress test password"

# Share of each user action (weights out of 100). One action is one request, except
# ``relogin`` (sign_out + sign_in) and ``inbox`` (fetch_queued, then ack_queued when
# something came): those are two. See docs/stress.md for why the mix is what it is.
MIX: dict[str, float] = {
    "heartbeat": 33.0,
    "list_online": 27.0,
    "lookup_user": 6.0,
    "publish_image": 9.0,
    "unpublish_image": 2.0,
    "queue_message": 8.0,
    "inbox": 7.0,
    "relogin": 4.0,
    "encrypt_small": 3.0,
    "encrypt_1mb": 1.0,
}

# Client deadlines: what a user would wait for before calling it a failure.
TIMEOUT = 10.0  # directory operations
ENCRYPT_TIMEOUT = 30.0  # submit of an encrypt (a 1 MB photo, queued behind others on 2 cores)
FETCH_TIMEOUT = 30.0  # fetching the encrypted result


def make_thumbnail() -> bytes:
    from PIL import Image

    img = Image.open(os.path.join(DATA, "camera.png")).convert("L")
    img.thumbnail((64, 64))
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def load_photos() -> dict[str, bytes]:
    """The two photo sizes: the small JPEG sample and a ~1 MB JPEG made from a sample."""
    from bench.encrypt import make_photo

    with open(os.path.join(DATA, "rocket.jpg"), "rb") as f:
        small = f.read()
    return {"small": small, "1mb": make_photo()}


class RecordingRouter(ClientRouter):
    """A ``ClientRouter`` that also tells which server sent the first reply of each request."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.answered_by: dict[str, int | None] = {}

    def reply_received(self, reply: wire.Reply, source: Any) -> None:
        rid = reply.request_id
        if rid is not None and rid in self._outstanding and rid not in self.answered_by:
            self.answered_by[rid] = reply.server_id
        super().reply_received(reply, source)

    async def call(self, op: str, args: dict[str, Any], timeout: float) -> tuple[dict[str, Any], int | None]:
        request = wire.Request(wire.new_request_id(), op, args)
        try:
            result = await self._send(request, self.servers, timeout)
        finally:
            server = self.answered_by.pop(request.request_id, None)
        return result, server


class Ledger:
    """Everything the run sent and everything the users were told."""

    def __init__(self, budget: int, t0: float) -> None:
        self.budget = budget
        self.t0 = t0
        self.sent = 0
        self.records: list[dict[str, Any]] = []  # one per request
        self.errors: Counter[str] = Counter()
        # What the cloud acknowledged (for the consistency check):
        self.registered: dict[str, str] = {}  # username -> user_id
        self.register_unknown: set[str] = set()  # register failed: may or may not exist
        self.published: dict[str, str] = {}  # image_id -> owner user_id (acknowledged)
        self.publish_unknown: set[str] = set()
        self.unpublished: set[str] = set()  # acknowledged unpublish
        self.unpublish_unknown: set[str] = set()
        self.queued: dict[str, str] = {}  # nonce -> recipient user id (acknowledged)
        self.queue_unknown: set[str] = set()
        self.delivered: dict[str, set[int]] = {}  # nonce -> message ids fetched by the recipient
        self.signed_out: list[str] = []  # tokens whose sign_out was acknowledged
        self.encrypt_refetches = 0  # encrypt results lost with their server: asked again

    def take(self) -> bool:
        """Reserve one request of the budget."""
        if self.sent >= self.budget:
            return False
        self.sent += 1
        return True

    def record(self, op: str, started: float, ok: bool, server: int | None, error: str | None) -> None:
        now = time.monotonic()
        self.records.append({
            "op": op,
            "t": round(started - self.t0, 4),
            "latency_ms": round((now - started) * 1000, 2),
            "ok": ok,
            "server": server,
            "error": error,
        })
        if error:
            self.errors[f"{op}: {error}"] += 1


def error_text(e: BaseException) -> str:
    if isinstance(e, RequestFailed):
        return f"{e.code}"
    if isinstance(e, CloudUnreachable):
        return "unreachable"
    return f"{type(e).__name__}: {e}"[:120]


class User:
    def __init__(
        self,
        index: int,
        run: str,
        reactor: Any,
        servers: list[tuple[str, int]],
        ledger: Ledger,
        peers: dict[str, str],
        rng: random.Random,
        transfers: Any,
        photos: dict[str, bytes],
        thumbnail: str,
        deadline: float,
    ) -> None:
        self.username = f"s{run}u{index}"
        self.reactor = reactor
        self.ledger = ledger
        self.peers = peers  # username -> user id of every registered user (shared)
        self.rng = rng
        self.transfers = transfers
        self.photos = photos
        self.thumbnail = thumbnail
        self.deadline = deadline
        self.router = RecordingRouter(reactor, servers, timeout=TIMEOUT)
        self.user_id: str | None = None
        self.keys: Any = None
        self.token: str | None = None
        self.port = 20000 + index  # the peer port it reports (nothing listens: simulated users)
        self.mine: list[str] = []  # acknowledged published image ids not yet unpublished

    async def request(self, op: str, args: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any] | None:
        """One request; None when it failed (recorded)."""
        if not self.ledger.take():
            raise _BudgetSpent()
        started = time.monotonic()
        try:
            result, server = await self.router.call(op, args, timeout)
        except Exception as e:  # noqa: BLE001 - counted, the user goes on
            self.ledger.record(op, started, False, None, error_text(e))
            return None
        self.ledger.record(op, started, True, server, None)
        return result

    async def run(self) -> None:
        self.router.start()
        try:
            await self._run()
        except _BudgetSpent:
            pass
        finally:
            await self.router.stop()

    async def _run(self) -> None:
        from cloudp2p.encryption.keys import UserKeys

        self.keys = UserKeys.generate()
        args = {"username": self.username, "password": PASSWORD, "keys": self.keys.public.to_json()}
        result = await self.request("register", args)
        if result is None:
            self.ledger.register_unknown.add(self.username)
            return
        self.user_id = result["user_id"]
        self.ledger.registered[self.username] = self.user_id
        self.peers[self.username] = self.user_id
        while self.token is None:
            if time.monotonic() > self.deadline:
                return
            await self.sign_in()
        actions = list(MIX)
        weights = [MIX[a] for a in actions]
        while time.monotonic() < self.deadline:
            action = self.rng.choices(actions, weights)[0]
            await getattr(self, "do_" + action)()

    async def sign_in(self) -> None:
        key = ReplyKey()  # the token comes sealed for it
        result = await self.request(
            "sign_in",
            {"username": self.username, "password": PASSWORD, "port": self.port, "host": LOCAL, **key.args()},
        )
        if result is not None:
            self.token = key.open(result)

    async def do_heartbeat(self) -> None:
        await self.request("heartbeat", {"token": self.token, "port": self.port, "host": LOCAL})

    async def do_list_online(self) -> None:
        cursor = None
        for _ in range(2):  # the first page or two, as a person scrolling would
            args: dict[str, Any] = {"token": self.token, "limit": 25}
            if cursor:
                args["cursor"] = cursor
            result = await self.request("list_online", args)
            if result is None or not result.get("next_cursor"):
                return
            cursor = result["next_cursor"]

    async def do_lookup_user(self) -> None:
        if self.peers:
            name = self.rng.choice(sorted(self.peers))
            await self.request("lookup_user", {"token": self.token, "username": name})

    async def do_publish_image(self) -> None:
        image_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        result = await self.request(
            "publish_image",
            {
                "token": self.token,
                "image_id": image_id,
                "name": f"{self.username}-{image_id[:8]}.png",
                "size": 1000 + self.rng.randrange(100_000),
                "thumbnail": self.thumbnail,
            },
        )
        if result is None:
            self.ledger.publish_unknown.add(image_id)
        else:
            self.ledger.published[image_id] = self.user_id
            self.mine.append(image_id)

    async def do_unpublish_image(self) -> None:
        if not self.mine:
            return await self.do_publish_image()
        image_id = self.mine.pop(self.rng.randrange(len(self.mine)))
        result = await self.request("unpublish_image", {"token": self.token, "image_id": image_id})
        if result is None:
            self.ledger.unpublish_unknown.add(image_id)
        else:
            self.ledger.unpublished.add(image_id)

    async def do_queue_message(self) -> None:
        others = sorted(n for n in self.peers if n != self.username)
        if not others:
            return
        to = self.peers[self.rng.choice(others)]
        nonce = "%032x" % self.rng.getrandbits(128)
        result = await self.request(
            "queue_message", {"token": self.token, "to": to, "kind": "stress_note", "body": {"nonce": nonce}}
        )
        if result is None:
            self.ledger.queue_unknown.add(nonce)
        else:
            self.ledger.queued[nonce] = to

    async def do_inbox(self) -> None:
        result = await self.request("fetch_queued", {"token": self.token, "limit": 100})
        if not result or not result["messages"]:
            return
        up_to = 0
        for message in result["messages"]:
            nonce = message["body"].get("nonce")
            if message["kind"] == "stress_note" and isinstance(nonce, str):
                self.ledger.delivered.setdefault(nonce, set()).add(message["id"])
            up_to = max(up_to, message["id"])
        await self.request("ack_queued", {"token": self.token, "up_to": up_to})

    async def do_relogin(self) -> None:
        token = self.token
        if await self.request("sign_out", {"token": token}) is not None:
            self.ledger.signed_out.append(token)
        # A failed sign_out may still have happened: sign in again in any case.
        self.token = None
        while self.token is None and time.monotonic() < self.deadline:
            await self.sign_in()
        if self.token is None:
            raise _BudgetSpent()

    async def do_encrypt_small(self) -> None:
        await self.encrypt("small")

    async def do_encrypt_1mb(self) -> None:
        await self.encrypt("1mb")

    async def encrypt(self, size: str) -> None:
        """Offer the photo, ``encrypt``, fetch the result: one request, timed end to end.

        As the client daemon does (cloudp2p.client.stories.images): when the result cannot be
        fetched (the server that ran it died after replying), ask the cloud again, at most
        ``ENCRYPT_ATTEMPTS`` times in all; the photo stays offered meanwhile.
        """
        op = f"encrypt_{size}"
        if not self.ledger.take():
            raise _BudgetSpent()
        photo = self.photos[size]
        started = time.monotonic()
        offer = self.transfers.offer(photo, timeout=ENCRYPT_ATTEMPTS * (ENCRYPT_TIMEOUT + FETCH_TIMEOUT))
        server = None
        try:
            for attempt in range(1, ENCRYPT_ATTEMPTS + 1):
                reply, server = await self.router.call(
                    "encrypt",
                    {"token": self.token, "image": offer.meta(), "cover": None, "name": f"{size}.jpg"},
                    ENCRYPT_TIMEOUT,
                )
                content_key = keywrap.open_reply_key(reply, self.keys.x25519_private)
                meta = reply["result"]
                where = (reply.get("host") or LOCAL, meta["port"])
                fetched = self.transfers.fetch(where, meta["transfer_id"], meta["size"], meta["sha256"])
                fetched.addTimeout(FETCH_TIMEOUT, self.reactor)
                try:
                    png = await fetched
                    break
                except (TransferError, defer.TimeoutError):
                    self.ledger.encrypt_refetches += 1
                    if attempt == ENCRYPT_ATTEMPTS:
                        raise
            if not png.startswith(b"\x89PNG") or len(content_key) != 32:
                raise ValueError("bad encrypt result")
        except Exception as e:  # noqa: BLE001 - counted, the user goes on
            self.ledger.record(op, started, False, server, error_text(e))
            return
        finally:
            offer.close()
        self.ledger.record(op, started, True, server, None)


class _BudgetSpent(Exception):
    """The run's request budget is used up: the user stops."""


async def run_users(users: list[User]) -> None:
    await defer.gatherResults([defer.ensureDeferred(u.run()) for u in users], consumeErrors=True)
