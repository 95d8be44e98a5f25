"""The user's own images: encrypt one in the cloud, publish or unpublish it, list who offers what.

``encrypt`` offers the photo (and the user's cover, if any) on the transfer layer, asks the
cloud to hide it, opens the content key sealed for this user, and fetches the result; if the
result cannot be fetched (its server died), it asks again, ``ENCRYPT_ATTEMPTS`` times in all.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from twisted.logger import Logger

from cloudp2p.client import errors as cerr
from cloudp2p.client.identity import b64
from cloudp2p.client.images import check_image, make_thumbnail
from cloudp2p.client.peer import valid_image_id, valid_username
from cloudp2p.client.stories.common import FORMATS, UUID, owned
from cloudp2p.client.stories.parts import JSONDict, Progress, Story
from cloudp2p.encryption import keywrap
from cloudp2p.encryption.errors import WrongKeyError
from cloudp2p.errors import RequestFailed
from cloudp2p.transfer.errors import BadTransferMeta
from cloudp2p.transfer.meta import TransferMeta

ENCRYPT_ATTEMPTS = 3  # encrypt requests per `encrypt` command when results cannot be fetched


class Images(Story):
    log = Logger()

    async def encrypt(self, args: JSONDict, progress: Progress) -> JSONDict:
        path, cover_path = args["path"], args["cover"]  # absolute: the table checked them
        name = args["name"] or os.path.basename(path)
        token = self.session.require_token()
        limit = self.session.config.max_image_size
        data = await self.work.read_file(path, limit)
        fmt, width, height = await self.work.run_blocking(check_image, data, os.path.basename(path))
        cover = None
        if cover_path is not None:
            cover = await self.work.read_file(cover_path, limit)
            await self.work.run_blocking(check_image, cover, os.path.basename(cover_path))
        upload = f"uploading {name}"
        offers = [self.work.transfers.offer(data, progress=lambda done, total: progress(upload, done, total))]
        if cover is not None:
            offers.append(self.work.transfers.offer(cover))
        try:
            # The result lives only in the memory of the server that ran the encrypt: if that
            # server dies (or stops answering) after replying, before the result is fetched, the
            # result is gone. The photo is still offered here, so ask the cloud again (a new
            # request, which another server runs); bounded by ENCRYPT_ATTEMPTS.
            for attempt in range(1, ENCRYPT_ATTEMPTS + 1):
                progress(upload, 0, len(data))
                cover_meta = offers[1].meta() if cover else None
                reply = await self.cloud.call("encrypt", token, offers[0].meta(), cover_meta, name)
                progress(upload, len(data), len(data))
                image_id = reply.get("image_id")
                if not isinstance(image_id, str) or not UUID.match(image_id):
                    raise RequestFailed("bad_reply", f"the cloud sent an unusable image id {image_id!r:.60}")
                try:
                    content_key = keywrap.open_reply_key(reply, self.session.identity.x25519_private)
                    result = TransferMeta.from_json(reply.get("result"))
                except (ValueError, WrongKeyError, BadTransferMeta) as e:
                    raise RequestFailed("bad_reply", f"the cloud's encrypt reply is unusable: {e}") from None
                target = self.session.home.sub("encrypted") / f"{image_id}.png"
                label = f"downloading {name} (encrypted)"
                try:
                    png = await self._fetch_from_cloud(target, reply.get("host"), result, label, progress)
                    break
                except cerr.TransferFailed as e:
                    for leftover in (str(target), f"{target}.part", f"{target}.part.json"):
                        if os.path.exists(leftover):
                            os.remove(leftover)
                    if attempt == ENCRYPT_ATTEMPTS:
                        raise
                    self.log.warn(  # noqa: G010
                        "encrypt {name}: the result of attempt {attempt} could not be fetched ({error});"
                        " asking the cloud again",
                        name=name,
                        attempt=attempt,
                        error=e,
                    )
        finally:
            for offer in offers:
                offer.close()
        original = self.session.home.sub("originals") / f"{image_id}.{FORMATS.get(fmt, 'img')}"
        await self.work.write_file(original, data)
        record = {
            "name": name,
            "original": self.session.home.relative(original),
            "encrypted": self.session.home.relative(target),
            "content_key": b64(content_key),
            "size": len(png),
            "width": width,
            "height": height,
            "published": False,
            "created": self.work.wall_clock(),
        }
        self.state.put("images", image_id, record)
        return {
            "image_id": image_id,
            "name": name,
            "original": str(original),
            "encrypted": str(target),
            "size": len(png),
            "cover": reply.get("cover"),
        }

    async def _fetch_from_cloud(
        self, target: Any, host: Any, result: TransferMeta, label: str, progress: Progress
    ) -> bytes:
        """Fetch an encrypt result from the server that offered it.

        The reply does not say which server answered; every server's host is
        tried in turn (on one machine they are all the same host).
        """
        hosts = [host] if isinstance(host, str) else []
        hosts += [h for h, _ in self.session.config.servers if h not in hosts]
        last: Exception | None = None
        for host in hosts:
            try:
                return await self._fetch_bytes(target, host, result, label, progress)
            except cerr.TransferFailed as e:
                last = e
        assert last is not None
        raise last

    async def _fetch_bytes(
        self, target: Any, host: str, meta: TransferMeta, label: str, progress: Progress
    ) -> bytes:
        size = meta.size
        progress(label, 0, size)
        try:
            await self.work.transfers.fetch_to_file(
                str(target),
                (host, meta.port),
                meta.transfer_id,
                size,
                meta.sha256,
                progress=lambda done, total=size: progress(label, done, total),
            )
        except Exception as e:
            if isinstance(e, (cerr.ClientError,)):
                raise
            raise cerr.TransferFailed(f"({e})") from None
        os.chmod(target, 0o600)
        progress(label, size, size)
        return await self.work.read_file(target)


    async def publish(self, args: JSONDict, progress: Progress) -> JSONDict:
        """Offer an image; the directory keeps its thumbnail and shows it to every signed-in user.

        The thumbnail is made from the *encrypted* image, which looks like its cover: others learn
        the cover, the name and the size. ``preview: true`` makes it from the original instead (a
        128-pixel preview of the secret image, kept by the directory until unpublished).
        """
        image_id, record = owned(self.state, args["image"])
        preview = args["preview"]
        token = self.session.require_token()
        source = record["original"] if preview else record["encrypted"]
        data = await self.work.read_file(self.session.home.resolve(source))
        thumb = await self.work.run_blocking(make_thumbnail, data)
        await self.cloud.call("publish_image", token, image_id, record["name"], record["size"], b64(thumb))
        self.state.update("images", image_id, published=True, preview=preview)
        return {"image_id": image_id, "name": record["name"], "published": True, "preview": preview}

    async def unpublish(self, args: JSONDict, progress: Progress) -> JSONDict:
        image_id, record = owned(self.state, args["image"])
        token = self.session.require_token()
        try:
            await self.cloud.call("unpublish_image", token, image_id)
        except RequestFailed as e:
            if e.code != "image_not_found":
                raise
        self.state.update("images", image_id, published=False)
        return {"image_id": image_id, "name": record["name"], "published": False}

    # -- discovery -----------------------------------------------------------------------------------

    async def users(self, args: JSONDict, progress: Progress) -> JSONDict:
        token = self.session.require_token()
        users = await self.cloud.call("list_online", token)
        out = []
        for u in sorted(users, key=lambda u: u["username"].lower()):
            name = u["username"]
            if not valid_username(name):
                continue
            folder = self.session.home.sub("thumbnails") / name
            images = []
            catalog: JSONDict = {}
            for im in u.get("images", []):
                if not isinstance(im, dict) or not valid_image_id(im.get("image_id")):
                    self.log.warn("ignored an offered image of {user} with a bad id", user=name)  # noqa: G010
                    continue
                try:
                    thumb = base64.b64decode(im.get("thumbnail") or "", validate=True)
                except ValueError:
                    thumb = b""
                ext = "jpg" if im.get("mime") == "image/jpeg" else "png"
                path = folder / f"{im['image_id']}.{ext}"
                if thumb:
                    await self.work.run_blocking(self._save_thumbnail, folder, path, thumb)
                images.append(
                    {
                        "image_id": im["image_id"],
                        "name": im["name"],
                        "size": im["size"],
                        "thumbnail": str(path) if thumb else None,
                    }
                )
                catalog[im["image_id"]] = {"name": im["name"], "size": im["size"]}
            if name != self.session.username:
                self.state.put("catalog", name, {"images": catalog, "seen": self.work.wall_clock()})
            out.append(
                {
                    "username": name,
                    "user_id": u.get("user_id"),
                    "me": name == self.session.username,
                    "images": images,
                }
            )
        return {"users": out, "thumbnails_dir": str(self.session.home.sub("thumbnails"))}

    def _save_thumbnail(self, folder: Any, path: Any, data: bytes) -> None:
        folder.mkdir(mode=0o700, exist_ok=True)
        self.session.home.write_bytes(path, data)

    # -- requests (viewer side) ----------------------------------------------------------------------

