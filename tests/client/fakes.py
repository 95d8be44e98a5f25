"""Fakes for the client's unit tests: a directory + encrypt op in memory, transfers in memory.

``FakeDirectory`` keeps the same rules the real one has where the client
depends on them (one session per token, presence with host/port, a queue
handed over in order until acked, ``bad_credentials``, ``user_not_found``...).
``FakeCloud(directory, clock)`` is what one daemon sees; ``directory.reachable
= False`` makes every call raise ``CloudUnreachable`` (a cloud outage).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import secrets
import uuid
from typing import Any

import numpy as np
from PIL import Image
from twisted.internet import defer

from cloudp2p.encryption import keywrap
from cloudp2p.errors import CloudUnreachable, RequestFailed
from cloudp2p.transfer.errors import TransferError


def small_png(seed: int = 1, size: tuple[int, int] = (24, 24)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def cover_array(seed: int = 7, side: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, side, dtype=np.float64)
    arr = np.stack([np.add.outer(base, base) / 2] * 3, axis=-1)
    arr += rng.normal(0, 12, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


# -- transfers ---------------------------------------------------------------------------------------


class FakeOffer:
    def __init__(self, hub: TransferHub, data: bytes, progress: Any) -> None:
        self.hub = hub
        self.data = data
        self.port = next(hub.ports)
        self.transfer_id = secrets.token_hex(16)
        self.size = len(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.progress = progress
        self.closed = False
        hub.offers[self.port] = self

    def meta(self) -> dict[str, Any]:
        return {"port": self.port, "transfer_id": self.transfer_id, "size": self.size, "sha256": self.sha256}

    def close(self) -> None:
        self.closed = True
        self.hub.offers.pop(self.port, None)


class TransferHub:
    """Offers of every fake manager, by port (hosts are ignored: one machine)."""

    def __init__(self) -> None:
        self.offers: dict[int, FakeOffer] = {}
        self.ports = itertools.count(30000)
        self.fail_next: int = 0  # make this many fetches fail (an interrupted transfer)
        self.fetches = 0


class FakeTransfers:
    def __init__(self, hub: TransferHub) -> None:
        self.hub = hub
        self.stopped = False

    def offer(
        self, data: bytes, *, timeout: float | None = None, progress: Any = None, **_: Any
    ) -> FakeOffer:
        return FakeOffer(self.hub, bytes(data), progress)

    def _get(self, address: tuple[str, int], transfer_id: str, size: int, sha256: str) -> bytes:
        self.hub.fetches += 1
        if self.hub.fail_next > 0:
            self.hub.fail_next -= 1
            raise TransferError("interrupted (fake)")
        offer = self.hub.offers.get(int(address[1]))
        if offer is None or offer.transfer_id != transfer_id:
            raise TransferError("no such offer (fake)")
        if offer.size != size or offer.sha256 != sha256:
            raise TransferError("meta mismatch (fake)")
        if offer.progress is not None:
            offer.progress(size, size)
        return offer.data

    def fetch(self, address, transfer_id, size, sha256, progress=None, **_):
        try:
            data = self._get(address, transfer_id, size, sha256)
        except TransferError as e:
            return defer.fail(e)
        if progress:
            progress(size, size)
        return defer.succeed(data)

    def fetch_to_file(self, path, address, transfer_id, size, sha256, progress=None, **_):
        try:
            data = self._get(address, transfer_id, size, sha256)
        except TransferError as e:
            return defer.fail(e)
        with open(path, "wb") as f:
            f.write(data)
        if progress:
            progress(size, size)
        return defer.succeed(path)

    def stop(self) -> None:
        self.stopped = True


# -- the directory -------------------------------------------------------------------------------------


class FakeDirectory:
    def __init__(self, clock: Any, hub: TransferHub, presence_ttl: float = 30.0) -> None:
        self.clock = clock
        self.hub = hub
        self.presence_ttl = presence_ttl
        self.reachable = True
        self.users: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, str] = {}
        self.presence: dict[str, tuple[str, int, float]] = {}
        self.images: dict[str, dict[str, Any]] = {}
        self.queue: list[dict[str, Any]] = []
        self.shares: dict[tuple[str, str], dict[str, Any]] = {}
        self.ids = itertools.count(1)
        self.calls: list[str] = []
        self.server_transfers = FakeTransfers(hub)

    def _check(self, op: str) -> None:
        self.calls.append(op)
        if not self.reachable:
            raise CloudUnreachable("(fake outage)")

    def _user(self, token: str) -> str:
        name = self.sessions.get(token)
        if name is None:
            raise RequestFailed("not_signed_in", "this request needs a valid session token; sign in first")
        return name

    def online(self, name: str) -> bool:
        p = self.presence.get(name)
        return p is not None and p[2] > self.clock.seconds() - self.presence_ttl


class FakeCloud:
    """One client's view of the FakeDirectory (the same async methods as cloudp2p.client.cloud.Cloud)."""

    def __init__(self, directory: FakeDirectory) -> None:
        self.dir = directory

    async def register(self, username, password, public_keys):
        self.dir._check("register")
        if username.lower() in (u.lower() for u in self.dir.users):
            raise RequestFailed("username_taken", "that username is taken")
        if len(password) < 8:
            raise RequestFailed("bad_request", "password must be at least 8 characters")
        user_id = str(uuid.uuid4())
        self.dir.users[username] = {"user_id": user_id, "password": password, "keys": dict(public_keys)}
        return {"user_id": user_id, "username": username, "created": 0.0}

    async def sign_in(self, username, password, host, port):
        self.dir._check("sign_in")
        user = self.dir.users.get(username)
        if user is None or user["password"] != password:
            raise RequestFailed("bad_credentials", "unknown username or wrong password")
        token = secrets.token_urlsafe(16)
        self.dir.sessions[token] = username
        self.dir.presence[username] = (host, port, self.dir.clock.seconds())
        queued = sum(1 for m in self.dir.queue if m["to"] == username)
        return {
            "user_id": user["user_id"],
            "username": username,
            "token": token,
            "expires": 1e12,
            "queued": queued,
        }

    async def sign_out(self, token):
        self.dir._check("sign_out")
        name = self.dir._user(token)
        del self.dir.sessions[token]
        self.dir.presence.pop(name, None)

    async def heartbeat(self, token, host, port):
        self.dir._check("heartbeat")
        name = self.dir._user(token)
        self.dir.presence[name] = (host, port, self.dir.clock.seconds())
        return {"online_until": self.dir.clock.seconds() + 30, "expires": 1e12}

    async def publish_image(self, token, image_id, name, size, thumbnail):
        self.dir._check("publish_image")
        owner = self.dir._user(token)
        self.dir.images[image_id] = {"owner": owner, "name": name, "size": size, "thumbnail": thumbnail}

    async def unpublish_image(self, token, image_id):
        self.dir._check("unpublish_image")
        self.dir._user(token)
        if self.dir.images.pop(image_id, None) is None:
            raise RequestFailed("image_not_found", "no such image")

    async def list_online(self, token):
        self.dir._check("list_online")
        self.dir._user(token)
        out = []
        for name, user in self.dir.users.items():
            if not self.dir.online(name):
                continue
            host, port, _ = self.dir.presence[name]
            images = [
                {
                    "image_id": i,
                    "name": im["name"],
                    "size": im["size"],
                    "mime": "image/png",
                    "thumbnail": im["thumbnail"],
                }
                for i, im in self.dir.images.items()
                if im["owner"] == name
            ]
            out.append(
                {"user_id": user["user_id"], "username": name, "host": host, "port": port, "images": images}
            )
        return out

    async def lookup_user(self, token, username=None, user_id=None):
        self.dir._check("lookup_user")
        self.dir._user(token)
        for name, user in self.dir.users.items():
            if name.lower() == (username or "").lower() or user["user_id"] == user_id:
                online = self.dir.online(name)
                host, port, _ = self.dir.presence.get(name, (None, None, 0))
                return {
                    "user_id": user["user_id"],
                    "username": name,
                    "keys": user["keys"],
                    "online": online,
                    "host": host if online else None,
                    "port": port if online else None,
                }
        raise RequestFailed("user_not_found", "no user has that name or id")

    async def queue_message(self, token, recipient, kind, body):
        self.dir._check("queue_message")
        sender = self.dir._user(token)
        target = next((n for n in self.dir.users if n.lower() == recipient.lower()), None)
        if target is None:
            raise RequestFailed("user_not_found", "no user has that name or id")
        mid = next(self.dir.ids)
        self.dir.queue.append(
            {
                "id": mid,
                "to": target,
                "from": self.dir.users[sender]["user_id"],
                "from_username": sender,
                "kind": kind,
                "body": body,
                "created": 0.0,
            }
        )
        return mid

    async def fetch_queued(self, token, after=0):
        self.dir._check("fetch_queued")
        name = self.dir._user(token)
        mine = [dict(m) for m in self.dir.queue if m["to"] == name and m["id"] > after]
        return mine[:2], len(mine) > 2  # small pages: exercise paging

    async def ack_queued(self, token, message_ids):
        self.dir._check("ack_queued")
        name = self.dir._user(token)
        self.dir.queue = [m for m in self.dir.queue if not (m["to"] == name and m["id"] in message_ids)]

    async def encrypt(self, token, image, cover, name):
        from cloudp2p.encryption import container

        self.dir._check("encrypt")
        owner = self.dir._user(token)
        secret = await self.dir.server_transfers.fetch(
            ("127.0.0.1", image["port"]), image["transfer_id"], image["size"], image["sha256"]
        )
        sealed = container.seal(secret, cover_array())
        offer = self.dir.server_transfers.offer(sealed.png)
        import base64

        return {
            "image_id": sealed.image_id,
            "result": offer.meta(),
            "content_key_sealed": base64.b64encode(
                keywrap.seal_key(
                    sealed.content_key,
                    base64.b64decode(self.dir.users[owner]["keys"]["x25519"]),
                    sealed.image_id.encode("ascii"),
                )
            ).decode(),
            "cover": "fake",
            "owner_id": self.dir.users[owner]["user_id"],
            "name": name,
        }

    # key shares of enforced copies: the rules of cloudp2p/directory/shares.py, in memory

    async def share_put(self, token, image_id, viewer_id, share, views, version):
        self.dir._check("share_put")
        owner = self.dir.users[self.dir._user(token)]["user_id"]
        row = self.dir.shares.get((image_id, viewer_id))
        self._may_change(row, owner, version)
        used = row["used"] if row else 0
        self.dir.shares[(image_id, viewer_id)] = {
            "owner": owner, "share": share, "views": views, "used": used, "version": version
        }
        return {"views": views, "used": used, "views_left": max(0, views - used)}

    def _may_change(self, row, owner, version):
        if row is not None and row["owner"] != owner:
            raise RequestFailed("not_owner", "another user holds that share")
        if row is not None and version <= row["version"]:
            raise RequestFailed("rights_outdated", "not newer")

    async def share_limit(self, token, image_id, viewer_id, views, version):
        self.dir._check("share_limit")
        owner = self.dir.users[self.dir._user(token)]["user_id"]
        row = self.dir.shares.get((image_id, viewer_id))
        if row is None:
            raise RequestFailed("share_not_found", "no share")
        self._may_change(row, owner, version)
        if not row["share"] and views > 0:
            raise RequestFailed("share_revoked", "revoked")
        row.update(views=views, version=version, share=row["share"] if views else "")
        return {"views": views, "used": row["used"], "views_left": max(0, views - row["used"])}

    async def share_view(self, token, image_id, owner_id):
        self.dir._check("share_view")
        viewer = self.dir.users[self.dir._user(token)]["user_id"]
        row = self.dir.shares.get((image_id, viewer))
        if row is None or row["owner"] != owner_id:
            raise RequestFailed("share_not_found", "no share")
        if not row["share"]:
            raise RequestFailed("share_revoked", "revoked")
        if row["used"] >= row["views"]:
            raise RequestFailed("no_views_left", "no views left")
        row["used"] += 1
        return {"share": row["share"], "views": row["views"], "used": row["used"],
                "views_left": row["views"] - row["used"]}

    async def status(self):
        self.dir._check("status")
        return {"coordinator": 1, "members": [1, 2, 3], "server": 1}


def sync_runner(f: Any, *args: Any, **kwargs: Any) -> defer.Deferred:
    """Blocking work run inline (unit tests on task.Clock have no thread pool)."""
    return defer.maybeDeferred(f, *args, **kwargs)
