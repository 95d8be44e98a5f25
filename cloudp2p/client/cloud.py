"""The cloud as the client daemon sees it: one async method per request it makes.

This is the only module that knows operation names and argument spellings
(cloudp2p/directory/ops.py, the ``encrypt`` op, the cluster's ``status``); the
daemon calls these methods and unit tests replace the whole object with a
fake. Every method raises ``RequestFailed(code, message)`` when the cloud
refuses and ``CloudUnreachable`` when no server answered in time (both from
``ClientRouter.submit``).

Image ids are canonical lower-case UUID strings everywhere (container,
directory, client state); ids from the cloud are normalised here.
"""

from __future__ import annotations

import uuid
from typing import Any

from cloudp2p.directory.token_seal import ReplyKey
from cloudp2p.encryption.errors import EncryptionError
from cloudp2p.errors import RequestFailed


def to_uuid(image_id: str) -> str:
    return str(uuid.UUID(image_id))


def from_uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except (ValueError, TypeError, AttributeError):
        raise RequestFailed(
            "bad_reply", f"the cloud sent an image id that is not a UUID: {text!r:.60}"
        ) from None


class Cloud:
    def __init__(self, router: Any, *, timeout: float = 10.0, slow_timeout: float = 120.0) -> None:
        self.router = router
        self.timeout = timeout
        self.slow_timeout = slow_timeout

    async def _call(self, op: str, args: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        result = await self.router.submit(op, args, timeout=timeout or self.timeout)
        return result if isinstance(result, dict) else {}

    # -- accounts and sessions ---------------------------------------------------------------------

    async def register(self, username: str, password: str, public_keys: dict[str, str]) -> dict[str, Any]:
        """-> {user_id, username, created}."""
        args = {"username": username, "password": password, "keys": public_keys}
        return await self._call("register", args, self.slow_timeout)

    async def sign_in(self, username: str, password: str, host: str, port: int) -> dict[str, Any]:
        """-> {user_id, username, token, expires, queued}; presence starts at our address, ``port``.

        The cloud records the address our requests come from, not ``host`` (the peer listener
        must be on this machine); the token comes sealed for a key made for this request.
        """
        key = ReplyKey()
        args = {"username": username, "password": password, "port": port, **key.args()}
        reply = await self._call("sign_in", args, self.slow_timeout)
        try:
            token = key.open(reply)
        except EncryptionError as e:
            raise RequestFailed("bad_reply", f"the cloud's sign_in reply is unusable: {e}") from None
        return {**reply, "token": token}

    async def sign_out(self, token: str) -> None:
        await self._call("sign_out", {"token": token})

    async def heartbeat(self, token: str, host: str, port: int) -> dict[str, Any]:
        """-> {online_until, expires}; presence at our source address, ``port`` (see ``sign_in``)."""
        return await self._call("heartbeat", {"token": token, "port": port})

    # -- discovery ---------------------------------------------------------------------------------

    async def publish_image(self, token: str, image_id: str, name: str, size: int, thumbnail: str) -> None:
        args = {
            "token": token,
            "image_id": to_uuid(image_id),
            "name": name,
            "size": size,
            "thumbnail": thumbnail,
        }
        await self._call("publish_image", args)

    async def unpublish_image(self, token: str, image_id: str) -> None:
        await self._call("unpublish_image", {"token": token, "image_id": to_uuid(image_id)})

    async def list_online(self, token: str) -> list[dict[str, Any]]:
        """Every online user ``{user_id, username, host, port, images: [{image_id, name, size, mime,
        thumbnail (base64)}]}``, all pages merged by user id."""
        users: dict[str, dict[str, Any]] = {}
        cursor: Any = None
        for _ in range(1000):
            args: dict[str, Any] = {"token": token}
            if cursor is not None:
                args["cursor"] = cursor
            page = await self._call("list_online", args)
            for u in page.get("users", []):
                entry = users.setdefault(u["user_id"], {**u, "images": []})
                for im in u.get("images", []):
                    entry["images"].append({**im, "image_id": from_uuid(im["image_id"])})
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return list(users.values())

    async def lookup_user(
        self, token: str, username: str | None = None, user_id: str | None = None
    ) -> dict[str, Any]:
        """-> {user_id, username, keys {x25519, ed25519}, online, host, port}."""
        args: dict[str, Any] = {"token": token}
        if user_id is not None:
            args["user_id"] = user_id
        else:
            args["username"] = username
        return await self._call("lookup_user", args)

    # -- the offline queue -------------------------------------------------------------------------

    async def queue_message(self, token: str, recipient: str, kind: str, body: dict[str, Any]) -> int:
        args = {"token": token, "to_username": recipient, "kind": kind, "body": body}
        result = await self._call("queue_message", args)
        return int(result.get("message_id", 0))

    async def fetch_queued(self, token: str, after: int = 0) -> tuple[list[dict[str, Any]], bool]:
        """-> ([{id, from, from_username, kind, body, created}], more)."""
        result = await self._call("fetch_queued", {"token": token, "after": after})
        return list(result.get("messages", [])), bool(result.get("more"))

    async def ack_queued(self, token: str, message_ids: list[int]) -> None:
        await self._call("ack_queued", {"token": token, "ids": message_ids})

    # -- key shares of enforced copies (cloudp2p/directory/shares.py) -----------------------------

    async def share_put(
        self, token: str, image_id: str, viewer_id: str, share: str, views: int, version: int
    ) -> dict[str, Any]:
        args = {"token": token, "image_id": image_id, "viewer_id": viewer_id, "share": share}
        return await self._call("share_put", {**args, "views": views, "version": version})

    async def share_limit(
        self, token: str, image_id: str, viewer_id: str, views: int, version: int
    ) -> dict[str, Any]:
        args = {"token": token, "image_id": image_id, "viewer_id": viewer_id}
        return await self._call("share_limit", {**args, "views": views, "version": version})

    async def share_view(self, token: str, image_id: str, owner_id: str) -> dict[str, Any]:
        """One view counted by the cloud -> {share (sealed for us, base64), views_left, ...}."""
        return await self._call("share_view", {"token": token, "image_id": image_id, "owner_id": owner_id})

    # -- encryption and status ---------------------------------------------------------------------

    async def encrypt(
        self, token: str, image: dict[str, Any], cover: dict[str, Any] | None, name: str
    ) -> dict[str, Any]:
        args = {"token": token, "image": image, "cover": cover, "name": name}
        return await self._call("encrypt", args, self.slow_timeout)

    async def status(self) -> dict[str, Any]:
        return await self._call("status", {})
