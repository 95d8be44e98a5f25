"""What the user holds and seeing it: ``images`` (own, received, requests under way) and ``view``.

A view decodes a received copy with this user's key, counts the view inside the file and in the
ledger, and writes the image (or, with no views left, the cover) under ``DIR/views``; with
``memory`` (the web app) it comes back in the result and no file is written. The owner sees
their own original without counting a view.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from cloudp2p.client.checks import MAX_VIEWS
from cloudp2p.client.identity import b64, unb64
from cloudp2p.client.stories.common import find, image_format, safe_stem, viewer_of
from cloudp2p.client.stories.parts import JSONDict, Parts, Progress, Story

_MIME = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "webp": "image/webp",
}


def _view_output(path: Any, data: bytes, ext: str, memory: bool) -> JSONDict:
    """Where a view went: the file written, or (``memory``) the bytes themselves, base64."""
    if not memory:
        return {"path": str(path)}
    return {"path": None, "data": b64(data), "mime": _MIME.get(ext, "application/octet-stream")}




class Viewing(Story):
    def __init__(self, parts: Parts, fetch_progress: Callable[[str], tuple[int, int] | None]) -> None:
        super().__init__(parts)
        self.fetch_progress = fetch_progress  # (done, total) of a copy being fetched (the viewer side)

    async def images(self, args: JSONDict, progress: Progress) -> JSONDict:
        owned = []
        for image_id, r in self.state.items("images"):
            grants = {v: g["views"] for v, g in (self.state.get("grants", image_id) or {}).items()}
            owned.append(
                {
                    "image_id": image_id,
                    "name": r["name"],
                    "published": r["published"],
                    "encrypted": str(self.session.home.resolve(r["encrypted"])),
                    "original": str(self.session.home.resolve(r["original"])),
                    "grants": grants,
                }
            )
        received = [
            {
                "image_id": image_id,
                "name": r["name"],
                "owner": r["owner"],
                "views_left": r["views_left"],
                "path": str(self.session.home.resolve(r["container"])),
            }
            for image_id, r in self.state.items("received")
        ]
        fetching = []
        for rid, r in self.state.items("outbox"):
            if r["state"] in ("sent", "queued", "fetching", "failed", "rejected"):
                done, total = self.fetch_progress(rid) or (0, r.get("transfer", {}).get("size", 0))
                fetching.append(
                    {
                        "request_id": rid,
                        "owner": r["to"],
                        "image_name": r["image_name"],
                        "views": r["views"],
                        "kind": r["kind"],
                        "state": r["state"],
                        "done": done,
                        "total": total,
                        "error": r.get("error"),
                    }
                )
        return {"owned": owned, "received": received, "requests": fetching}

    async def view(self, args: JSONDict, progress: Progress) -> JSONDict:
        from cloudp2p.encryption import container

        ref = args["image"]
        # memory: the decoded image (or the cover) comes back in the result, base64, and no file
        # is written; the web app shows it from memory and forgets it after the countdown.
        memory = args["memory"]
        assert self.session.identity is not None
        if os.path.isabs(ref) and os.path.isfile(ref):
            data = await self.work.read_file(ref, self.session.config.max_image_size)
            env = await self.work.run_blocking(container.peek, data, self.session.identity.x25519_private)
            image_id, record = find(self.state, "received", env.image_id, "received images")
            path = None
        else:
            owned = [(k, r) for k, r in self.state.items("images") if ref in (k, r["name"])]
            received = [k for k, r in self.state.items("received") if ref in (k, r["name"])]
            if len(owned) == 1 and not received:
                return await self._view_own(*owned[0], memory=memory)
            image_id, record = find(self.state, "received", ref, "received images")
            path = self.session.home.resolve(record["container"])
            data = await self.work.read_file(path)
        self.session.require_registered()
        # Raises the encryption area's errors (EncryptionError subclasses) with their own messages:
        # "not shared with you", "damaged or tampered with"...
        result = await self.work.run_blocking(
            container.open_for_view,
            data,
            viewer_of(self.session, record["owner_id"], unb64(record["owner_ed25519"], length=32)),
        )
        if path is not None and result.png != data:
            await self.work.write_file(path, result.png)
        stem = safe_stem(record["name"])
        views_dir = self.session.home.sub("views")
        shown = "image" if result.image is not None else "cover"
        if result.image is not None:
            data, ext = result.image, await self.work.run_blocking(image_format, result.image)
            out = views_dir / f"{stem}-{image_id[:8]}-view{result.status.views_used}.{ext}"
        else:
            data, ext = result.cover_png, "png"
            out = views_dir / f"{stem}-{image_id[:8]}-cover.png"
        if not memory:
            await self.work.write_file(out, data)
        self.state.update(
            "received",
            image_id,
            views_left=result.views_left,
            views_total=result.status.rights.views,
            views_used=result.status.views_used,
        )
        return {
            "image_id": image_id,
            "name": record["name"],
            "owner": record["owner"],
            "shown": shown,
            "views_left": result.views_left,
            "views_used": result.status.views_used,
            **_view_output(out, data, ext, memory),
        }

    async def _view_own(self, image_id: str, record: JSONDict, *, memory: bool) -> JSONDict:
        """The owner sees their own original: no view is counted."""
        out = self.session.home.resolve(record["original"])
        data = await self.work.read_file(out) if memory else b""
        return {
            "image_id": image_id,
            "name": record["name"],
            "owner": self.session.username,
            "shown": "image",
            "views_left": MAX_VIEWS,
            "views_used": 0,
            **_view_output(out, data, out.suffix.lstrip("."), memory),
        }
