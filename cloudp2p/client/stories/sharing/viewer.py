"""The viewer's side of sharing: ask an owner (``request``, ``more-views``), receive the copy, apply rights.

The outbox machine (``machine.outbox``) holds each request's state. A ``share_offer`` starts a
resumable fetch of the copy; the copy must open for this user before it counts as received, and
``share_done`` tells the owner. Interrupted fetches resume after a restart or a reconnection
(``resume_fetches``), at most ``MAX_RESUMES`` rounds of ``FETCH_ATTEMPTS`` tries each.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from cloudp2p.client import errors as cerr
from cloudp2p.client.identity import unb64
from cloudp2p.client.peer import PeerMessage
from cloudp2p.client.stories.common import UUID, background, find, sleep, viewer_of
from cloudp2p.client.stories.parts import JSONDict, Parts, Progress, Story
from cloudp2p.client.stories.sharing.machine import Machine
from cloudp2p.errors import CloudUnreachable, RequestFailed
from cloudp2p.transfer.errors import BadTransferMeta
from cloudp2p.transfer.meta import TransferMeta

FETCH_ATTEMPTS = 4  # tries of one fetch (each resumes where the last stopped)
MAX_RESUMES = 5  # later rounds of FETCH_ATTEMPTS, after a restart or a reconnection
MAX_PENDING_RIGHTS = 8  # rights updates kept per image until its copy arrives
# what makes a fetch end as failed (retried on the next offer or resume) rather than crash
_FAILURES = (cerr.ClientError, CloudUnreachable, RequestFailed, OSError)


class ViewerSide(Story):
    log = Logger()

    def __init__(self, parts: Parts, machine: Machine) -> None:
        super().__init__(parts)
        self.machine = machine  # the outbox: every move of a request's state goes through it
        self._fetching: dict[str, defer.Deferred[Any]] = {}
        self.fetch_progress: dict[str, tuple[int, int]] = {}

    async def stop(self) -> None:
        for d in list(self._fetching.values()):
            d.cancel()

    def _catalog_image(self, owner: str, ref: str) -> tuple[str, str]:
        """(image id, name) of ``owner``'s image ``ref`` (an id, or a name from the last `users`)."""
        catalog = (self.state.get("catalog", owner) or {}).get("images", {})
        if ref in catalog:
            return ref, catalog[ref]["name"]
        named = [
            (k, v["name"])
            for k, v in catalog.items()
            if v["name"] == ref or (len(ref) >= 4 and k.startswith(ref))
        ]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise cerr.UnknownImage(f"({owner} offers several images called {ref!r}; give the id)")
        if UUID.match(ref):
            return ref, ref
        raise cerr.UnknownImage(f"({owner} offers no image {ref!r}; run `cloudp2p users` to list them)")

    async def request(self, args: JSONDict, progress: Progress) -> JSONDict:
        owner, ref, views, wait = args["user"], args["image"], args["views"], args["wait"]
        self.session.require_token()
        if owner.lower() == (self.session.username or "").lower():
            raise cerr.InvalidArgument("(you own your images already; `cloudp2p view` shows them)")
        info = await self.peers.lookup(owner, fresh=True)
        owner = info["username"]
        image_id, name = self._catalog_image(owner, ref)
        result = await self._ask(owner, image_id, name, views, "share")
        return await self._wait_answer(result, wait, progress)

    async def _wait_answer(self, result: JSONDict, wait: float, progress: Progress) -> JSONDict:
        """With ``--wait S``: stay until the owner answered and the copy arrived (progress bar), or S s."""
        rid = result["request_id"]
        if wait <= 0:
            return result
        deadline = self.work.reactor.seconds() + wait
        state = "sent"
        record: JSONDict | None = None
        while self.work.reactor.seconds() < deadline:
            record = self.state.get("outbox", rid)
            state = record["state"] if record else "gone"
            # the owner's offer names the image (a request by id did not know the name)
            label = f"receiving {(record or result)['image_name']} from {result['owner']}"
            if rid in self.fetch_progress:
                progress(label, *self.fetch_progress[rid])
            if state in ("received", "rejected", "gone") or (state == "failed" and rid not in self._fetching):
                break
            await sleep(self.work.reactor, 0.1)
        if state == "received":
            copy = self.state.get("received", result["image_id"]) or {}
            total = (record or {}).get("transfer", {}).get("size", 0)
            if total:
                progress(f"receiving {copy.get('name')} from {result['owner']}", total, total)
            result["views_left"] = copy.get("views_left")
            result["image_name"] = copy.get("name", result["image_name"])
        result["state"] = state
        return result

    async def _ask(self, owner: str, image_id: str, name: str, views: int, kind: str) -> JSONDict:
        request_id = os.urandom(4).hex()
        self.state.put(
            "outbox",
            request_id,
            {
                "to": owner,
                "image_id": image_id,
                "image_name": name,
                "views": views,
                "kind": kind,
                "state": "sent",
                "created": self.work.wall_clock(),
            },
        )
        # Rights count views in total: tell the owner how many this copy has used already, so that
        # "N more" (or a new share after a revocation) really gives N.
        held = self.state.get("received", image_id)
        used = 0 if held is None else int(held.get("views_used", 0))
        body = {"request_id": request_id, "image_id": image_id, "views": views, "kind": kind, "used": used}
        try:
            delivery = await self.peers.send_message(owner, "share_request", body)
        except BaseException:
            self.state.delete("outbox", request_id)
            raise
        if delivery == "queued":
            self.state.update("outbox", request_id, state="queued")
        return {
            "request_id": request_id,
            "owner": owner,
            "image_id": image_id,
            "image_name": name,
            "views": views,
            "delivery": delivery,
        }

    async def more_views(self, args: JSONDict, progress: Progress) -> JSONDict:
        image_id, record = find(self.state, "received", args["image"], "received images")
        views, wait = args["views"], args["wait"]
        self.session.require_token()
        result = await self._ask(record["owner"], image_id, record["name"], views, "more")
        return await self._wait_answer(result, wait, progress)

    # -- requests (owner side) -----------------------------------------------------------------------


    async def on_share_offer(self, msg: PeerMessage, addr: Any) -> str | None:
        b = msg.body
        rid = b["request_id"]
        record = self.state.get("outbox", rid)
        if record is None or record["to"] != msg.sender or record["image_id"] != b["image_id"]:
            self.log.info("ignored an unsolicited share offer from {sender}", sender=msg.sender)
            return None
        if record["state"] in ("rejected",):
            return None
        host = addr[0] if addr is not None else None
        if host is None:
            info = await self.peers.lookup(msg.sender, fresh=True)
            host = info.get("host")
        self.state.update(
            "outbox",
            rid,
            state="fetching",
            transfer=b["transfer"],
            host=host,
            views=b["views"],
            image_name=b["image_name"],
            resumes=0,
            error=None,
        )
        self._start_fetch(rid)
        return f"{msg.sender} accepted: {b['image_name']} with {b['views']} views is on its way"

    def resume_fetches(self) -> None:
        """Resume interrupted fetches (after a restart, a reconnection): at most MAX_RESUMES times each."""
        for rid, record in self.state.items("outbox"):
            if rid in self._fetching or record["state"] not in ("fetching", "failed"):
                continue
            if record.get("resumes", 0) >= MAX_RESUMES:
                continue
            self.state.update("outbox", rid, resumes=record.get("resumes", 0) + 1)
            if record["state"] == "failed":
                self.machine.move(rid, "fetching", error=None)
            self._start_fetch(rid)

    def _start_fetch(self, rid: str) -> None:
        if rid in self._fetching:
            return
        d = defer.Deferred.fromCoroutine(self._fetch(rid))
        self._fetching[rid] = d

        def done(result: Any) -> None:
            self._fetching.pop(rid, None)
            self.fetch_progress.pop(rid, None)
            return None

        d.addBoth(done)

    async def _fetch(self, rid: str) -> None:
        from cloudp2p.encryption import container
        from cloudp2p.encryption.errors import EncryptionError

        record = self.state.get("outbox", rid)
        if record is None:
            return
        host = record["host"]
        image_id = record["image_id"]
        incoming = self.session.home.sub("received") / f"{image_id}.incoming"
        attempts = 0
        try:
            # checked when the share_offer arrived (peer.py); a damaged state file fails here, named
            meta = TransferMeta.from_json(record["transfer"])
            while True:
                attempts += 1
                try:
                    await self.work.transfers.fetch_to_file(
                        str(incoming),
                        (host, meta.port),
                        meta.transfer_id,
                        meta.size,
                        meta.sha256,
                        progress=lambda done, total=meta.size: self._fetch_tick(rid, done, total),
                    )
                    break
                except defer.CancelledError:
                    raise
                except Exception as e:
                    if attempts >= FETCH_ATTEMPTS:
                        raise cerr.TransferFailed(f"({e})") from None
                    self.log.info("fetching {rid} failed ({why}); resuming", rid=rid, why=str(e))
                    await sleep(self.work.reactor, 1.0 * attempts)
            data = await self.work.read_file(incoming)
            owner = await self.peers.lookup(record["to"])
            assert self.session.identity is not None
            env = await self.work.run_blocking(container.peek, data, self.session.identity.x25519_private)
            if (
                env.image_id != image_id
                or env.owner_id != str(owner["user_id"])
                or env.viewer_id != str(self.session.user_id)
            ):
                raise cerr.AccessDenied("(the copy received is not the one requested)")
            status = await self.work.run_blocking(
                container.status,
                data,
                viewer_of(self.session, owner["user_id"], self.peers.owner_public(owner, "ed25519")),
            )
            final = self.session.home.sub("received") / f"{image_id}.png"
            os.replace(incoming, final)
            os.chmod(final, 0o600)
            self.state.put(
                "received",
                image_id,
                {
                    "owner": record["to"],
                    "owner_id": owner["user_id"],
                    "owner_ed25519": owner["keys"]["ed25519"],
                    "name": record["image_name"],
                    "container": self.session.home.relative(final),
                    "views_left": status.views_left,
                    "views_total": status.rights.views,
                    "views_used": status.views_used,
                    "received_at": self.work.wall_clock(),
                    "request_id": rid,
                },
            )
            self.machine.move(rid, "received")
        except defer.CancelledError:
            raise
        except (EncryptionError, BadTransferMeta, *_FAILURES) as e:
            self.log.warn(  # noqa: G010
                "could not receive {rid} from {owner}: {why}", rid=rid, owner=record["to"], why=str(e)
            )
            current = self.state.get("outbox", rid)
            if current is not None and current["state"] == "fetching":
                self.machine.move(rid, "failed", error=str(e))
            return
        background(
            self.peers.send_message(
                record["to"], "share_done", {"request_id": rid, "image_id": image_id}, queue=False
            )
        )
        for blob in (self.state.get("pending_rights", image_id) or {}).get("blobs", []):
            try:
                await self._apply_rights(image_id, unb64(blob))
            except Exception as e:
                self.log.info("a rights update kept for later does not apply: {why}", why=str(e))
        self.state.delete("pending_rights", image_id)

    def _fetch_tick(self, rid: str, done: int, total: int) -> None:
        self.fetch_progress[rid] = (done, total)


    async def on_share_rejected(self, msg: PeerMessage, addr: Any) -> str | None:
        rid = msg.body["request_id"]
        record = self.state.get("outbox", rid)
        if record is None or record["to"] != msg.sender or record["state"] not in ("sent", "queued"):
            return None
        self.machine.move(rid, "rejected")
        return f"{msg.sender} rejected your request {rid} for {record['image_name']}"

    # -- rights --------------------------------------------------------------------------------------


    async def on_rights_update(self, msg: PeerMessage, addr: Any) -> str | None:
        from cloudp2p.encryption.errors import RightsOutdatedError

        image_id = msg.body["image_id"]
        blob = unb64(msg.body["rights"])
        record = self.state.get("received", image_id)
        if record is None:
            waiting = [
                r
                for _, r in self.state.items("outbox")
                if r["image_id"] == image_id and r["to"] == msg.sender
            ]
            if waiting:
                kept = self.state.get("pending_rights", image_id) or {"blobs": []}
                kept["blobs"] = (kept["blobs"] + [msg.body["rights"]])[-MAX_PENDING_RIGHTS:]
                self.state.put("pending_rights", image_id, kept)
            return None
        if record["owner"] != msg.sender:
            self.log.warn(  # noqa: G010
                "{sender} sent rights for {image}, owned by {owner}: ignored",
                sender=msg.sender,
                image=image_id,
                owner=record["owner"],
            )
            return None
        try:
            left = await self._apply_rights(image_id, blob)
        except RightsOutdatedError:
            return None
        if msg.body["reason"] == "more":  # the owner accepted our more-views request(s)
            for rid, r in self.state.items("outbox"):
                if r["image_id"] == image_id and r["kind"] == "more" and r["state"] in ("sent", "queued"):
                    self.machine.move(rid, "received")
            return f"{msg.sender} gave you more views of {record['name']} ({left} left)"
        if msg.body["reason"] == "revoke":
            return f"{msg.sender} revoked your views of {record['name']}"
        return (
            f"{msg.sender} set your views of {record['name']} to {msg.body['views']} in total ({left} left)"
        )

    async def _apply_rights(self, image_id: str, blob: bytes) -> int:
        from cloudp2p.encryption import container

        assert self.session.identity is not None
        record = self.state.get("received", image_id)
        assert record is not None
        path = self.session.home.resolve(record["container"])
        png = await self.work.read_file(path)
        new_png, status = await self.work.run_blocking(
            container.apply_rights,
            png,
            blob,
            viewer_of(self.session, record["owner_id"], unb64(record["owner_ed25519"], length=32)),
        )
        await self.work.write_file(path, new_png)
        self.state.update(
            "received",
            image_id,
            views_left=status.views_left,
            views_total=status.rights.views,
            views_used=status.views_used,
        )
        return status.views_left

    # -- images and viewing --------------------------------------------------------------------------

