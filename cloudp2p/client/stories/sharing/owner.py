"""The owner's side of sharing: the inbox of requests, accept (grant a copy and offer it) or reject,
and the rights of copies already given (``set-views``, ``revoke``, more views).

The inbox machine (``machine.inbox``) holds each request's state. Accepting writes the viewer's
wrapped key and signed rights into a copy of the container, offers it for ``OFFER_LIFETIME`` and
sends ``share_offer``; the viewer's ``share_done`` ends the offer. Rights changes are signed with a
new version each (a version is never reused, even if sending fails) and sent as ``rights_update``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from cloudp2p.client import errors as cerr
from cloudp2p.client.checks import MAX_VIEWS
from cloudp2p.client.identity import b64, unb64
from cloudp2p.client.peer import PeerMessage
from cloudp2p.client.stories.common import background, owned
from cloudp2p.client.stories.parts import JSONDict, Parts, Progress, Story
from cloudp2p.client.stories.sharing.machine import Machine
from cloudp2p.directory.validate import username_key

OFFER_LIFETIME = 900.0  # seconds an accepted share stays offered for the viewer to (re)fetch
# Requests waiting in the inbox: per sender, and in all. More are dropped (logged, counted).
MAX_PENDING_PER_SENDER = 16
MAX_PENDING = 512


def most_granted(grant: JSONDict | None) -> int:
    """The most views this owner ever granted one viewer for one image (0 if never)."""
    if grant is None:
        return 0
    return max(int(grant.get("views", 0)), int(grant.get("max_views", 0)))




class OwnerSide(Story):
    log = Logger()

    def __init__(self, parts: Parts, machine: Machine) -> None:
        super().__init__(parts)
        self.machine = machine  # the inbox: every move of a request's state goes through it
        self._offers: dict[str, tuple[Any, defer.Deferred[None], Any]] = {}

    async def stop(self) -> None:
        for rid in list(self._offers):
            self._close_offer(rid)

    async def on_share_request(self, msg: PeerMessage, addr: Any) -> str | None:
        b = msg.body
        rid, image_id = b["request_id"], b["image_id"]
        existing = self.state.get("inbox", rid)
        if existing is not None:
            return None
        record = self.state.get("images", image_id)
        grant = (self.state.get("grants", image_id) or {}).get(msg.sender)
        sender = username_key(msg.sender)
        pending = self.state.count("inbox", lambda r: r["state"] == "pending")
        theirs = self.state.count(
            "inbox", lambda r: r["state"] == "pending" and username_key(r["from"]) == sender
        )
        if theirs >= MAX_PENDING_PER_SENDER or pending >= MAX_PENDING:
            self.peers.guard["refused_inbox_full"] += 1
            self.log.warn(  # noqa: G010
                "dropped request {rid} from {sender}: {n} of their requests wait already",
                rid=rid,
                sender=msg.sender,
                n=theirs,
            )
            return None
        problem = None
        if record is None:
            problem = "no such image"
        elif b["kind"] == "more" and grant is None:
            problem = "more views asked for a copy never shared"
        if problem is not None:
            self.log.info(
                "refusing request {rid} from {sender}: {why}", rid=rid, sender=msg.sender, why=problem
            )
            background(
                self.peers.send_message(
                    msg.sender, "share_rejected", {"request_id": rid, "image_id": image_id}
                )
            )
            return None
        self.state.put(
            "inbox",
            rid,
            {
                "from": msg.sender,
                "image_id": image_id,
                "image_name": record["name"],
                "views": b["views"],
                # The viewer says how many views their copy used; never believe more than this
                # owner granted them (0 for a first request): "2 views, used 998" gives 2.
                "used": min(b["used"], most_granted(grant)),
                "claimed_used": b["used"],
                "kind": b["kind"],
                "state": "pending",
                "received_at": self.work.wall_clock(),
            },
        )
        what = "more views" if b["kind"] == "more" else "views"
        return f"{msg.sender} asks for {b['views']} {what} of {record['name']} (request {rid})"


    async def inbox(self, args: JSONDict, progress: Progress) -> JSONDict:
        requests = [
            {
                "request_id": rid,
                "used": r.get("used", 0),
                **{
                    k: r[k]
                    for k in ("from", "image_id", "image_name", "views", "kind", "state", "received_at")
                },
            }
            for rid, r in self.state.items("inbox")
        ]
        requests.sort(key=lambda r: r["received_at"])
        return {"requests": requests}

    def _request(self, args: JSONDict) -> tuple[str, JSONDict]:
        rid = args["request_id"]
        record = self.state.get("inbox", rid)
        if record is None:
            raise cerr.UnknownRequest(f"({rid!r})")
        return rid, record

    async def reject(self, args: JSONDict, progress: Progress) -> JSONDict:
        rid, record = self._request(args)
        if record["state"] != "pending":
            raise cerr.ClientError(
                f"(request {rid} is {record['state']}, only a pending request can be rejected)"
            )
        self.session.require_token()
        delivery = await self.peers.send_message(
            record["from"], "share_rejected", {"request_id": rid, "image_id": record["image_id"]}
        )
        self.machine.move(rid, "rejected")
        return {"request_id": rid, "state": "rejected", "delivery": delivery}

    async def accept(self, args: JSONDict, progress: Progress) -> JSONDict:
        rid, record = self._request(args)
        views = args["views"] or record["views"]
        if record["state"] in ("rejected", "accepted"):
            raise cerr.ClientError(f"(request {rid} is already {record['state']})")
        self.session.require_token()
        image_id, viewer = record["image_id"], record["from"]
        image = self.state.get("images", image_id)
        if image is None:
            raise cerr.UnknownImage(f"({image_id} was deleted)")
        info = await self.peers.lookup(viewer, fresh=True)
        if record["kind"] == "more":
            grant = (self.state.get("grants", image_id) or {}).get(viewer)
            if grant is None:
                raise cerr.ClientError(f"({viewer} has no copy of {image['name']} to add views to)")
            total = min(MAX_VIEWS, max(grant["views"], record.get("used", 0)) + views)
            delivery = await self._send_rights(viewer, info, image_id, image, total, "more")
            self.state.update("inbox", rid, state="accepted", granted=views)
            return {
                "kind": "more",
                "request_id": rid,
                "viewer": viewer,
                "image_id": image_id,
                "image_name": image["name"],
                "views": total,
                "delivery": delivery,
            }
        if not (info.get("online") and info.get("host") and info.get("port")):
            raise cerr.UserOffline(
                f"({viewer} must be online to receive the image; the request stays in the inbox)"
            )
        total = min(MAX_VIEWS, record.get("used", 0) + views)  # a copy held before: its used views count
        return await self._share(rid, record, image_id, image, viewer, info, total, progress)

    async def _share(
        self,
        rid: str,
        record: JSONDict,
        image_id: str,
        image: JSONDict,
        viewer: str,
        info: JSONDict,
        views: int,
        progress: Progress,
    ) -> JSONDict:
        from cloudp2p.encryption import container

        assert self.session.identity is not None
        png = await self.work.read_file(self.session.home.resolve(image["encrypted"]))
        previous = (self.state.get("grants", image_id) or {}).get(viewer)
        version = (previous["version"] + 1) if previous else 1
        copy = await self.work.run_blocking(
            container.grant,
            png,
            unb64(image["content_key"], length=32),
            owner_ed25519=self.session.identity.ed25519_private,
            owner_id=self.session.user_id,
            viewer_id=info["user_id"],
            viewer_x25519_pub=self.peers.owner_public(info, "x25519"),
            views=views,
            version=version,
        )
        self._close_offer(rid)
        label = f"sending {image['name']} to {viewer}"
        offer = self.work.transfers.offer(
            copy, timeout=OFFER_LIFETIME, progress=lambda done, total: progress(label, done, total)
        )
        waiter: defer.Deferred[None] = defer.Deferred()
        timer = self.work.reactor.callLater(OFFER_LIFETIME, self._close_offer, rid)
        self._offers[rid] = (offer, waiter, timer)
        if record["state"] == "pending":
            self.machine.move(rid, "sending")
        body = {
            "request_id": rid,
            "image_id": image_id,
            "image_name": image["name"],
            "views": views,
            "transfer": offer.meta(),
        }
        assert self.peers.messenger is not None
        msg = self.peers.messenger.message("share_offer", viewer, body)
        progress(label, 0, len(copy))
        if not await self.peers.messenger.send(
            msg, (info["host"], int(info["port"])), self.session.config.peer_timeout
        ):
            self._close_offer(rid)
            self.machine.move(rid, "pending")
            raise cerr.UserOffline(f"({viewer} did not answer; the request stays in the inbox)")
        grants = self.state.get("grants", image_id) or {}
        grants[viewer] = {
            "user_id": info["user_id"],
            "views": views,
            "version": version,
            "max_views": max(most_granted(previous), views),
        }
        self.state.put("grants", image_id, grants)
        delivered = await self._wait_delivery(waiter, label, len(copy), progress)
        return {
            "request_id": rid,
            "viewer": viewer,
            "image_id": image_id,
            "image_name": image["name"],
            "views": views,
            "delivery": "peer",
            "delivered": delivered,
        }

    async def _wait_delivery(
        self, waiter: defer.Deferred[None], label: str, size: int, progress: Progress
    ) -> bool:
        """Wait (at most ``transfer_timeout``) for the viewer's share_done: their fetch finished."""
        if not waiter.called:
            either: defer.Deferred[None] = defer.Deferred()

            def fire(result: Any = None) -> Any:
                if not either.called:
                    either.callback(None)
                return result

            waiter.addBoth(fire)
            timer = self.work.reactor.callLater(self.session.config.transfer_timeout, fire)
            await either
            if timer.active():
                timer.cancel()
        if waiter.called:
            progress(label, size, size)
            return True
        return False


    def _close_offer(self, rid: str) -> None:
        entry = self._offers.pop(rid, None)
        if entry is None:
            return
        offer, waiter, timer = entry
        if timer is not None and timer.active():
            timer.cancel()
        try:
            offer.close()
        except Exception:
            self.log.failure("closing an offer failed")

    async def on_share_done(self, msg: PeerMessage, addr: Any) -> str | None:
        rid = msg.body["request_id"]
        record = self.state.get("inbox", rid)
        if record is None or record["from"] != msg.sender:
            return None
        if record["state"] == "sending":
            self.machine.move(rid, "accepted")
        entry = self._offers.get(rid)
        if entry is not None and not entry[1].called:
            entry[1].callback(None)
        self._close_offer(rid)
        return f"{msg.sender} received {record['image_name']}"

    # -- receiving a copy (viewer side) ---------------------------------------------------------------


    async def _send_rights(
        self, viewer: str, info: JSONDict, image_id: str, image: JSONDict, views: int, reason: str
    ) -> str:
        from cloudp2p.encryption import container

        assert self.session.identity is not None
        grants = self.state.get("grants", image_id) or {}
        grant = grants.get(viewer)
        if grant is None:
            raise cerr.ClientError(f"({viewer} has no copy of {image['name']})")
        png = await self.work.read_file(self.session.home.resolve(image["encrypted"]))
        own = await self.work.run_blocking(container.open_own, png, unb64(image["content_key"], length=32))
        version = grant["version"] + 1
        blob = container.sign_rights(
            owner_ed25519=self.session.identity.ed25519_private,
            owner_id=self.session.user_id,
            viewer_id=grant["user_id"],
            image_id=image_id,
            payload_hash=own.payload_hash,
            views=views,
            version=version,
        )
        body = {"image_id": image_id, "views": views, "rights": b64(blob), "reason": reason}
        # Record first: a version number must never be reused, even if sending fails.
        most = max(most_granted(grant), views)
        grants[viewer] = {**grant, "views": views, "version": version, "max_views": most}
        self.state.put("grants", image_id, grants)
        return await self.peers.send_message(viewer, "rights_update", body)

    async def _set_views(self, args: JSONDict, views: int, reason: str) -> JSONDict:
        typed = args["user"]
        image_id, image = owned(self.state, args["image"])
        self.session.require_token()
        holders = {v.lower(): v for v in self.state.get("grants", image_id) or {}}
        viewer = holders.get(typed.lower())
        if viewer is None:
            raise cerr.UnknownUser(f"({typed} has no copy of {image['name']})")
        info = await self.peers.lookup(viewer, fresh=True)
        delivery = await self._send_rights(viewer, info, image_id, image, views, reason)
        return {
            "viewer": viewer,
            "image_id": image_id,
            "image_name": image["name"],
            "views": views,
            "delivery": delivery,
        }

    async def set_views(self, args: JSONDict, progress: Progress) -> JSONDict:
        return await self._set_views(args, args["views"], "set")

    async def revoke(self, args: JSONDict, progress: Progress) -> JSONDict:
        return await self._set_views(args, 0, "revoke")

