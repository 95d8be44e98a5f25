"""The user stories: one method per `cloudp2p` command, and the peer messages that carry them.

Each ``cmd_*`` takes the control request's ``args`` (checked here again: the
socket is an API too) and a ``progress(label, done, total)`` callback, and
returns the result dict the command prints. Bad input raises before anything
changes; each state change is saved before the next step starts.

Sharing, step by step::

    viewer: request ──share_request──▶ owner: inbox (pending)          (peer, or queued if offline)
    owner:  accept: grant a copy for the viewer's key, offer it ──share_offer──▶ viewer
    viewer: fetch (resumable) ──▶ check it opens ──▶ received ──share_done──▶ owner: accepted
    owner:  set-views / revoke / accepted more-views ──rights_update──▶ viewer   (peer, or queued)
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from cloudp2p.client import errors as cerr
from cloudp2p.client.daemon import ClientDaemon
from cloudp2p.client.enforced import ENFORCED, OFFLINE, EnforcedCopies, mode_of
from cloudp2p.client.identity import b64, unb64
from cloudp2p.client.images import check_image, make_thumbnail
from cloudp2p.client.peer import MAX_VIEWS, PeerMessage, valid_image_id, valid_username
from cloudp2p.directory.validate import username_key
from cloudp2p.encryption import keywrap
from cloudp2p.encryption.errors import WrongKeyError
from cloudp2p.errors import CloudUnreachable, RequestFailed

Progress = Callable[[str, int, int], None]
Command = Callable[[dict[str, Any], Progress], Awaitable[dict[str, Any]]]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_FORMATS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif"}
FETCH_ATTEMPTS = 4  # tries of one fetch (each resumes where the last stopped)
MAX_RESUMES = 5  # later rounds of FETCH_ATTEMPTS, after a restart or a reconnection
OFFER_LIFETIME = 900.0  # seconds an accepted share stays offered for the viewer to (re)fetch
# Requests waiting in the inbox: per sender, and in all. More are dropped (logged, counted).
MAX_PENDING_PER_SENDER = 16
MAX_PENDING = 512
MAX_PENDING_RIGHTS = 8  # rights updates kept per image until its copy arrives


# -- argument checks -------------------------------------------------------------------------------


def arg_str(args: dict[str, Any], name: str, *, optional: bool = False, limit: int = 4096) -> str | None:
    value = args.get(name)
    if value is None:
        if optional:
            return None
        raise cerr.InvalidArgument(f"({name} is missing)")
    if not isinstance(value, str) or not value or len(value) > limit:
        raise cerr.InvalidArgument(f"({name} must be a non-empty string of at most {limit} characters)")
    return value


def arg_views(
    args: dict[str, Any], name: str = "views", *, low: int = 1, optional: bool = False
) -> int | None:
    value = args.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_VIEWS:
        raise cerr.InvalidArgument(
            f"({name} must be a whole number from {low} to {MAX_VIEWS}, got {value!r})"
        )
    return value


def arg_wait(args: dict[str, Any]) -> float:
    value = args.get("wait")
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 86400:
        raise cerr.InvalidArgument(f"(wait must be a number of seconds from 0 to 86400, got {value!r})")
    return float(value)


def arg_flag(args: dict[str, Any], name: str) -> bool:
    value = args.get(name, False)
    if not isinstance(value, bool):
        raise cerr.InvalidArgument(f"({name} must be true or false, got {value!r})")
    return value


def arg_user(args: dict[str, Any], name: str = "user") -> str:
    value = arg_str(args, name, limit=64)
    assert value is not None
    if not valid_username(value):
        raise cerr.InvalidArgument(f"({name} {value!r} is not a user name)")
    return value


def transfer_meta(offer: Any) -> dict[str, Any]:
    meta = getattr(offer, "meta", None)
    if callable(meta):
        return dict(meta())
    return {"port": offer.port, "transfer_id": offer.transfer_id, "size": offer.size, "sha256": offer.sha256}


def _check_meta(meta: Any) -> None:
    """A transfer meta from the cloud: {port, transfer_id, size, sha256}; ValueError otherwise."""
    if not isinstance(meta, dict):
        raise ValueError("no transfer meta")
    port, size, tid, sha = meta.get("port"), meta.get("size"), meta.get("transfer_id"), meta.get("sha256")
    if not (isinstance(port, int) and 1 <= port <= 65535 and isinstance(size, int) and size >= 0):
        raise ValueError("bad port or size")
    if not (isinstance(tid, str) and isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise ValueError("bad transfer id or sha256")


def _image_format(data: bytes) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return _FORMATS.get(im.format or "", "img")
    except Exception:
        return "img"


def _safe_stem(name: str) -> str:
    stem = os.path.splitext(os.path.basename(name))[0]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "image"
    return stem[:60]


def _describe_servers(st: dict[str, Any], configured: Any) -> list[str]:
    """One line per server from a ``status`` reply: role, load, or that it does not answer."""
    members = {str(m) for m in st.get("members") or []}
    loads = st.get("loads") or {}
    known = st.get("cluster", {}).get("members") if isinstance(st.get("cluster"), dict) else None
    ids = sorted({str(m.get("id")) for m in known or [] if isinstance(m, dict)} | members, key=str)
    lines = []
    for sid in ids:
        if sid in members:
            role = "coordinator" if sid == str(st.get("coordinator")) else "member"
            load = loads.get(sid)
            lines.append(
                f"server {sid}: {role}" + (f", load {load:.2f}" if isinstance(load, (int, float)) else "")
            )
        else:
            lines.append(f"server {sid}: not answering (failed)")
    return lines or [f"{h}:{p}" for h, p in configured]


_MIME = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "webp": "image/webp",
}


def _view_output(path: Any, data: bytes, ext: str, memory: bool) -> dict[str, Any]:
    """Where a view went: the file written, or (``memory``) the bytes themselves, base64."""
    if not memory:
        return {"path": str(path)}
    return {"path": None, "data": b64(data), "mime": _MIME.get(ext, "application/octet-stream")}


def _most_granted(grant: dict[str, Any] | None) -> int:
    """The most views this owner ever granted one viewer for one image (0 if never)."""
    if grant is None:
        return 0
    return max(int(grant.get("views", 0)), int(grant.get("max_views", 0)))


ENCRYPT_ATTEMPTS = 3  # encrypt requests per `encrypt` command when results cannot be fetched


class Stories:
    log = Logger()

    def __init__(self, daemon: ClientDaemon) -> None:
        self.d = daemon
        daemon.handlers.update(
            {
                "share_request": self.on_share_request,
                "share_offer": self.on_share_offer,
                "share_rejected": self.on_share_rejected,
                "share_done": self.on_share_done,
                "rights_update": self.on_rights_update,
            }
        )
        self._offers: dict[str, tuple[Any, defer.Deferred[None], Any]] = {}
        self._fetching: dict[str, defer.Deferred[Any]] = {}
        self.fetch_progress: dict[str, tuple[int, int]] = {}
        self.control_counters: Any = None  # the control socket's counters (set by the tap)
        self.enforced = EnforcedCopies(daemon)  # the cloud's half of enforced copies (issue 17)
        daemon.online_hooks.append(self.resume_fetches)

    @property
    def state(self) -> Any:
        return self.d.state

    def commands(self) -> dict[str, Command]:
        return {
            "register": self.cmd_register,
            "login": self.cmd_login,
            "logout": self.cmd_logout,
            "encrypt": self.cmd_encrypt,
            "publish": self.cmd_publish,
            "unpublish": self.cmd_unpublish,
            "users": self.cmd_users,
            "request": self.cmd_request,
            "inbox": self.cmd_inbox,
            "accept": self.cmd_accept,
            "reject": self.cmd_reject,
            "images": self.cmd_images,
            "view": self.cmd_view,
            "more-views": self.cmd_more_views,
            "set-views": self.cmd_set_views,
            "revoke": self.cmd_revoke,
            "trust": self.cmd_trust,
            "status": self.cmd_status,
            "counters": self.cmd_counters,
            "web": self.cmd_web,
            "shutdown": self.cmd_shutdown,
        }

    async def stop(self) -> None:
        for rid in list(self._offers):
            self._close_offer(rid)
        for d in list(self._fetching.values()):
            d.cancel()

    # -- accounts ------------------------------------------------------------------------------------

    async def cmd_register(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        username = arg_user(args, "username")
        password = arg_str(args, "password", limit=1024)
        if self.d.username:
            raise cerr.AlreadyRegistered(f"(it belongs to {self.d.username})")
        assert self.d.identity is not None
        reply = await self.d.call("register", username, password, self.d.identity.public.to_json())
        self.d.save_session(username=reply["username"], user_id=reply["user_id"])
        return {"username": reply["username"], "user_id": reply["user_id"]}

    async def cmd_login(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        username = arg_str(args, "username", optional=True, limit=64) or self.d.username
        password = arg_str(args, "password", limit=1024)
        self.d.require_registered()
        if username.lower() != (self.d.username or "").lower():
            raise cerr.NotRegistered(f"(this home holds the keys of {self.d.username}, not {username})")
        addr = self.d.peer_address
        assert addr is not None and password is not None
        reply = await self.d.call("sign_in", username, password, addr[0], addr[1])
        if reply.get("user_id") != self.d.user_id:
            raise cerr.HomeError(f"(the directory's {username} is another account than this home's)")
        self.d.signed_in(reply)
        applied: list[str] = []
        try:
            applied = await self.d.drain_queue()
        except (CloudUnreachable, RequestFailed) as e:
            self.log.info("queued messages will be fetched later: {why}", why=str(e))
        self.resume_fetches()
        return {
            "username": reply["username"],
            "user_id": reply["user_id"],
            "expires": reply.get("expires"),
            "applied": applied,
        }

    async def cmd_logout(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        token = self.d.require_token()
        try:
            await self.d.call("sign_out", token)
        except cerr.NotSignedIn:
            pass
        finally:
            self.d.signed_out("logout")
        return {"username": self.d.username}

    # -- encrypt and publish -------------------------------------------------------------------------

    async def cmd_encrypt(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        path = arg_str(args, "path")
        cover_path = arg_str(args, "cover", optional=True)
        name = arg_str(args, "name", optional=True, limit=200)
        assert path is not None
        for p in (path, cover_path):
            if p is not None and not os.path.isabs(p):
                raise cerr.InvalidArgument(f"({p}: paths must be absolute)")
        name = name or os.path.basename(path)
        token = self.d.require_token()
        limit = self.d.config.max_image_size
        data = await self.d.read_file(path, limit)
        fmt, width, height = await self.d.run_blocking(check_image, data, os.path.basename(path))
        cover = None
        if cover_path is not None:
            cover = await self.d.read_file(cover_path, limit)
            await self.d.run_blocking(check_image, cover, os.path.basename(cover_path))
        upload = f"uploading {name}"
        offers = [self.d.transfers.offer(data, progress=lambda done, total: progress(upload, done, total))]
        if cover is not None:
            offers.append(self.d.transfers.offer(cover))
        try:
            # The result lives only in the memory of the server that ran the encrypt: if that
            # server dies (or stops answering) after replying, before the result is fetched, the
            # result is gone. The photo is still offered here, so ask the cloud again (a new
            # request, which another server runs); bounded by ENCRYPT_ATTEMPTS.
            for attempt in range(1, ENCRYPT_ATTEMPTS + 1):
                progress(upload, 0, len(data))
                cover_meta = transfer_meta(offers[1]) if cover else None
                reply = await self.d.call("encrypt", token, transfer_meta(offers[0]), cover_meta, name)
                progress(upload, len(data), len(data))
                image_id = reply.get("image_id")
                if not isinstance(image_id, str) or not _UUID.match(image_id):
                    raise RequestFailed("bad_reply", f"the cloud sent an unusable image id {image_id!r:.60}")
                try:
                    content_key = keywrap.open_reply_key(reply, self.d.identity.x25519_private)
                    _check_meta(reply.get("result"))
                except (ValueError, WrongKeyError) as e:
                    raise RequestFailed("bad_reply", f"the cloud's encrypt reply is unusable: {e}") from None
                target = self.d.home.sub("encrypted") / f"{image_id}.png"
                label = f"downloading {name} (encrypted)"
                try:
                    png = await self._fetch_from_cloud(target, reply, label, progress)
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
        original = self.d.home.sub("originals") / f"{image_id}.{_FORMATS.get(fmt, 'img')}"
        await self.d.write_file(original, data)
        record = {
            "name": name,
            "original": self.d.home.relative(original),
            "encrypted": self.d.home.relative(target),
            "content_key": b64(content_key),
            "size": len(png),
            "width": width,
            "height": height,
            "published": False,
            "created": self.d.wall_clock(),
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
        self, target: Any, reply: dict[str, Any], label: str, progress: Progress
    ) -> bytes:
        """Fetch an encrypt result from the server that offered it.

        The reply does not say which server answered; every server's host is
        tried in turn (on one machine they are all the same host).
        """
        result = reply["result"]
        hosts = [reply["host"]] if isinstance(reply.get("host"), str) else []
        hosts += [h for h, _ in self.d.config.servers if h not in hosts]
        last: Exception | None = None
        for host in hosts:
            try:
                return await self._fetch_bytes(target, host, result, label, progress)
            except cerr.TransferFailed as e:
                last = e
        assert last is not None
        raise last

    async def _fetch_bytes(
        self, target: Any, host: str, meta: dict[str, Any], label: str, progress: Progress
    ) -> bytes:
        size, sha = int(meta["size"]), meta["sha256"]
        progress(label, 0, size)
        try:
            await self.d.transfers.fetch_to_file(
                str(target),
                (host, int(meta["port"])),
                meta["transfer_id"],
                size,
                sha,
                progress=lambda done, total=size: progress(label, done, total),
            )
        except Exception as e:
            if isinstance(e, (cerr.ClientError,)):
                raise
            raise cerr.TransferFailed(f"({e})") from None
        os.chmod(target, 0o600)
        progress(label, size, size)
        return await self.d.read_file(target)

    def owned(self, ref: str) -> tuple[str, dict[str, Any]]:
        return self._find("images", ref, "your images")

    def _find(self, section: str, ref: str, what: str) -> tuple[str, dict[str, Any]]:
        record = self.state.get(section, ref)
        if record is not None:
            return ref, record
        matches = [(k, r) for k, r in self.state.items(section) if r.get("name") == ref or k.startswith(ref)]
        if len(ref) < 4:
            matches = [(k, r) for k, r in matches if r.get("name") == ref]
        if not matches:
            raise cerr.UnknownImage(f"({ref!r} is not among {what})")
        if len(matches) > 1:
            ids = ", ".join(k for k, _ in matches)
            raise cerr.UnknownImage(f"({ref!r} matches several of {what}: {ids}; give the id)")
        return matches[0]

    async def cmd_publish(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Offer an image; the directory keeps its thumbnail and shows it to every signed-in user.

        The thumbnail is made from the *encrypted* image, which looks like its cover: others learn
        the cover, the name and the size. ``preview: true`` makes it from the original instead (a
        128-pixel preview of the secret image, kept by the directory until unpublished).
        """
        image_id, record = self.owned(arg_str(args, "image") or "")
        preview = arg_flag(args, "preview")
        token = self.d.require_token()
        source = record["original"] if preview else record["encrypted"]
        data = await self.d.read_file(self.d.home.resolve(source))
        thumb = await self.d.run_blocking(make_thumbnail, data)
        await self.d.call("publish_image", token, image_id, record["name"], record["size"], b64(thumb))
        self.state.update("images", image_id, published=True, preview=preview)
        return {"image_id": image_id, "name": record["name"], "published": True, "preview": preview}

    async def cmd_unpublish(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        image_id, record = self.owned(arg_str(args, "image") or "")
        token = self.d.require_token()
        try:
            await self.d.call("unpublish_image", token, image_id)
        except RequestFailed as e:
            if e.code != "image_not_found":
                raise
        self.state.update("images", image_id, published=False)
        return {"image_id": image_id, "name": record["name"], "published": False}

    # -- discovery -----------------------------------------------------------------------------------

    async def cmd_users(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        token = self.d.require_token()
        users = await self.d.call("list_online", token)
        out = []
        for u in sorted(users, key=lambda u: u["username"].lower()):
            name = u["username"]
            if not valid_username(name):
                continue
            folder = self.d.home.sub("thumbnails") / name
            images = []
            catalog: dict[str, Any] = {}
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
                    await self.d.run_blocking(self._save_thumbnail, folder, path, thumb)
                images.append(
                    {
                        "image_id": im["image_id"],
                        "name": im["name"],
                        "size": im["size"],
                        "thumbnail": str(path) if thumb else None,
                    }
                )
                catalog[im["image_id"]] = {"name": im["name"], "size": im["size"]}
            if name != self.d.username:
                self.state.put("catalog", name, {"images": catalog, "seen": self.d.wall_clock()})
            out.append(
                {
                    "username": name,
                    "user_id": u.get("user_id"),
                    "me": name == self.d.username,
                    "images": images,
                }
            )
        return {"users": out, "thumbnails_dir": str(self.d.home.sub("thumbnails"))}

    def _save_thumbnail(self, folder: Any, path: Any, data: bytes) -> None:
        folder.mkdir(mode=0o700, exist_ok=True)
        self.d.home.write_bytes(path, data)

    # -- requests (viewer side) ----------------------------------------------------------------------

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
        if _UUID.match(ref):
            return ref, ref
        raise cerr.UnknownImage(f"({owner} offers no image {ref!r}; run `cloudp2p users` to list them)")

    async def cmd_request(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        owner = arg_user(args)
        ref = arg_str(args, "image", limit=255) or ""
        views = arg_views(args)
        self.d.require_token()
        if owner.lower() == (self.d.username or "").lower():
            raise cerr.InvalidArgument("(you own your images already; `cloudp2p view` shows them)")
        wait = arg_wait(args)
        info = await self.d.lookup(owner, fresh=True)
        owner = info["username"]
        image_id, name = self._catalog_image(owner, ref)
        result = await self._ask(owner, image_id, name, views, "share")
        return await self._wait_answer(result, wait, progress)

    async def _wait_answer(self, result: dict[str, Any], wait: float, progress: Progress) -> dict[str, Any]:
        """With ``--wait S``: stay until the owner answered and the copy arrived (progress bar), or S s."""
        rid = result["request_id"]
        if wait <= 0:
            return result
        deadline = self.d.reactor.seconds() + wait
        state = "sent"
        record: dict[str, Any] | None = None
        while self.d.reactor.seconds() < deadline:
            record = self.state.get("outbox", rid)
            state = record["state"] if record else "gone"
            # the owner's offer names the image (a request by id did not know the name)
            label = f"receiving {(record or result)['image_name']} from {result['owner']}"
            if rid in self.fetch_progress:
                progress(label, *self.fetch_progress[rid])
            if state in ("received", "rejected", "gone") or (state == "failed" and rid not in self._fetching):
                break
            await self.sleep(0.1)
        if state == "received":
            copy = self.state.get("received", result["image_id"]) or {}
            total = (record or {}).get("transfer", {}).get("size", 0)
            if total:
                progress(f"receiving {copy.get('name')} from {result['owner']}", total, total)
            result["views_left"] = copy.get("views_left")
            result["image_name"] = copy.get("name", result["image_name"])
        result["state"] = state
        return result

    async def _ask(self, owner: str, image_id: str, name: str, views: int, kind: str) -> dict[str, Any]:
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
                "created": self.d.wall_clock(),
            },
        )
        # Rights count views in total: tell the owner how many this copy has used already, so that
        # "N more" (or a new share after a revocation) really gives N.
        held = self.state.get("received", image_id)
        used = 0 if held is None else int(held.get("views_used", 0))
        body = {"request_id": request_id, "image_id": image_id, "views": views, "kind": kind, "used": used}
        try:
            delivery = await self.d.send_message(owner, "share_request", body)
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

    async def cmd_more_views(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        image_id, record = self._find("received", arg_str(args, "image") or "", "received images")
        views = arg_views(args)
        wait = arg_wait(args)
        self.d.require_token()
        result = await self._ask(record["owner"], image_id, record["name"], views, "more")
        return await self._wait_answer(result, wait, progress)

    # -- requests (owner side) -----------------------------------------------------------------------

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
            self.d.guard["refused_inbox_full"] += 1
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
            self._background(
                self.d.send_message(msg.sender, "share_rejected", {"request_id": rid, "image_id": image_id})
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
                "used": min(b["used"], _most_granted(grant)),
                "claimed_used": b["used"],
                "kind": b["kind"],
                "state": "pending",
                "received_at": self.d.wall_clock(),
            },
        )
        what = "more views" if b["kind"] == "more" else "views"
        return f"{msg.sender} asks for {b['views']} {what} of {record['name']} (request {rid})"

    def _background(self, coro: Any) -> None:
        d = defer.Deferred.fromCoroutine(coro)
        d.addErrback(lambda f: self.log.info("background message not sent: {why}", why=f.getErrorMessage()))

    async def cmd_inbox(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
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

    def _inbox(self, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rid = arg_str(args, "request_id", limit=64) or ""
        record = self.state.get("inbox", rid)
        if record is None:
            raise cerr.UnknownRequest(f"({rid!r})")
        return rid, record

    async def cmd_reject(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        rid, record = self._inbox(args)
        if record["state"] != "pending":
            raise cerr.ClientError(
                f"(request {rid} is {record['state']}, only a pending request can be rejected)"
            )
        self.d.require_token()
        delivery = await self.d.send_message(
            record["from"], "share_rejected", {"request_id": rid, "image_id": record["image_id"]}
        )
        self.state.move_inbox(rid, "rejected")
        return {"request_id": rid, "state": "rejected", "delivery": delivery}

    async def cmd_accept(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        rid, record = self._inbox(args)
        views = arg_views(args, optional=True) or record["views"]
        enforced = self.enforced.wanted(args)  # checked before anything changes
        if record["state"] in ("rejected", "accepted"):
            raise cerr.ClientError(f"(request {rid} is already {record['state']})")
        self.d.require_token()
        image_id, viewer = record["image_id"], record["from"]
        image = self.state.get("images", image_id)
        if image is None:
            raise cerr.UnknownImage(f"({image_id} was deleted)")
        info = await self.d.lookup(viewer, fresh=True)
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
        return await self._share(rid, record, image_id, image, viewer, info, total, progress, enforced)

    async def _share(
        self,
        rid: str,
        record: dict[str, Any],
        image_id: str,
        image: dict[str, Any],
        viewer: str,
        info: dict[str, Any],
        views: int,
        progress: Progress,
        enforced: bool = False,
    ) -> dict[str, Any]:
        from cloudp2p.encryption import container

        assert self.d.identity is not None
        png = await self.d.read_file(self.d.home.resolve(image["encrypted"]))
        previous = (self.state.get("grants", image_id) or {}).get(viewer)
        version = (previous["version"] + 1) if previous else 1
        if enforced:  # share B is in the cloud (sealed for the viewer) before the copy leaves
            key = unb64(image["content_key"], length=32)
            copy = await self.enforced.grant(
                png, key, image_id=image_id, info=info, views=views, version=version
            )
        else:
            copy = await self.d.run_blocking(
                container.grant,
                png,
                unb64(image["content_key"], length=32),
                owner_ed25519=self.d.identity.ed25519_private,
                owner_id=self.d.user_id,
                viewer_id=info["user_id"],
                viewer_x25519_pub=self.d.owner_public(info, "x25519"),
                views=views,
                version=version,
            )
        self._close_offer(rid)
        label = f"sending {image['name']} to {viewer}"
        offer = self.d.transfers.offer(
            copy, timeout=OFFER_LIFETIME, progress=lambda done, total: progress(label, done, total)
        )
        waiter: defer.Deferred[None] = defer.Deferred()
        timer = self.d.reactor.callLater(OFFER_LIFETIME, self._close_offer, rid)
        self._offers[rid] = (offer, waiter, timer)
        if record["state"] == "pending":
            self.state.move_inbox(rid, "sending")
        body = {
            "request_id": rid,
            "image_id": image_id,
            "image_name": image["name"],
            "views": views,
            "transfer": transfer_meta(offer),
        }
        assert self.d.messenger is not None
        msg = self.d.messenger.message("share_offer", viewer, body)
        progress(label, 0, len(copy))
        if not await self.d.messenger.send(
            msg, (info["host"], int(info["port"])), self.d.config.peer_timeout
        ):
            self._close_offer(rid)
            self.state.move_inbox(rid, "pending")
            raise cerr.UserOffline(f"({viewer} did not answer; the request stays in the inbox)")
        grants = self.state.get("grants", image_id) or {}
        grants[viewer] = {
            "user_id": info["user_id"],
            "views": views,
            "version": version,
            "max_views": max(_most_granted(previous), views),
            "mode": mode_of(enforced),
        }
        self.state.put("grants", image_id, grants)
        delivered = await self._wait_delivery(waiter, label, len(copy), progress)
        return {
            "request_id": rid,
            "viewer": viewer,
            "image_id": image_id,
            "image_name": image["name"],
            "views": views,
            "mode": mode_of(enforced),
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
            timer = self.d.reactor.callLater(self.d.config.transfer_timeout, fire)
            await either
            if timer.active():
                timer.cancel()
        if waiter.called:
            progress(label, size, size)
            return True
        return False

    async def sleep(self, seconds: float) -> None:
        d: defer.Deferred[None] = defer.Deferred()
        self.d.reactor.callLater(seconds, d.callback, None)
        await d

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
            self.state.move_inbox(rid, "accepted")
        entry = self._offers.get(rid)
        if entry is not None and not entry[1].called:
            entry[1].callback(None)
        self._close_offer(rid)
        return f"{msg.sender} received {record['image_name']}"

    # -- receiving a copy (viewer side) ---------------------------------------------------------------

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
            info = await self.d.lookup(msg.sender, fresh=True)
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
                self.state.move_outbox(rid, "fetching", error=None)
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
        meta, host = record["transfer"], record["host"]
        image_id = record["image_id"]
        incoming = self.d.home.sub("received") / f"{image_id}.incoming"
        attempts = 0
        try:
            while True:
                attempts += 1
                try:
                    await self.d.transfers.fetch_to_file(
                        str(incoming),
                        (host, int(meta["port"])),
                        meta["transfer_id"],
                        int(meta["size"]),
                        meta["sha256"],
                        progress=lambda done, total=int(meta["size"]): self._fetch_tick(rid, done, total),
                    )
                    break
                except defer.CancelledError:
                    raise
                except Exception as e:
                    if attempts >= FETCH_ATTEMPTS:
                        raise cerr.TransferFailed(f"({e})") from None
                    self.log.info("fetching {rid} failed ({why}); resuming", rid=rid, why=str(e))
                    await self.sleep(1.0 * attempts)
            data = await self.d.read_file(incoming)
            owner = await self.d.lookup(record["to"])
            assert self.d.identity is not None
            env = await self.d.run_blocking(container.peek, data, self.d.identity.x25519_private)
            if (
                env.image_id != image_id
                or env.owner_id != str(owner["user_id"])
                or env.viewer_id != str(self.d.user_id)
            ):
                raise cerr.AccessDenied("(the copy received is not the one requested)")
            status = await self.d.run_blocking(
                container.status,
                data,
                self.viewer(owner["user_id"], self.d.owner_public(owner, "ed25519")),
            )
            final = self.d.home.sub("received") / f"{image_id}.png"
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
                    "container": self.d.home.relative(final),
                    "views_left": status.views_left,
                    "views_total": status.rights.views,
                    "views_used": status.views_used,
                    "received_at": self.d.wall_clock(),
                    "request_id": rid,
                    "mode": mode_of(env.enforced),
                },
            )
            self.state.move_outbox(rid, "received")
        except defer.CancelledError:
            raise
        except (EncryptionError, cerr.ClientError, CloudUnreachable, RequestFailed, OSError) as e:
            self.log.warn(  # noqa: G010
                "could not receive {rid} from {owner}: {why}", rid=rid, owner=record["to"], why=str(e)
            )
            current = self.state.get("outbox", rid)
            if current is not None and current["state"] == "fetching":
                self.state.move_outbox(rid, "failed", error=str(e))
            return
        self._background(
            self.d.send_message(
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

    def ledger(self) -> Any:
        from cloudp2p.encryption.ledger import Ledger

        return Ledger(self.d.home.sub("ledger") / "ledger.json")

    def viewer(self, owner_id: str, owner_ed25519: bytes) -> Any:
        """This user as the viewer of ``owner_id``'s images (their key from the directory)."""
        from cloudp2p.encryption.container import Viewer

        assert self.d.identity is not None
        return Viewer(self.d.identity.x25519_private, self.d.user_id, owner_id, owner_ed25519, self.ledger())

    async def on_share_rejected(self, msg: PeerMessage, addr: Any) -> str | None:
        rid = msg.body["request_id"]
        record = self.state.get("outbox", rid)
        if record is None or record["to"] != msg.sender or record["state"] not in ("sent", "queued"):
            return None
        self.state.move_outbox(rid, "rejected")
        return f"{msg.sender} rejected your request {rid} for {record['image_name']}"

    # -- rights --------------------------------------------------------------------------------------

    async def _send_rights(
        self, viewer: str, info: dict[str, Any], image_id: str, image: dict[str, Any], views: int, reason: str
    ) -> str:
        from cloudp2p.encryption import container

        assert self.d.identity is not None
        grants = self.state.get("grants", image_id) or {}
        grant = grants.get(viewer)
        if grant is None:
            raise cerr.ClientError(f"({viewer} has no copy of {image['name']})")
        png = await self.d.read_file(self.d.home.resolve(image["encrypted"]))
        own = await self.d.run_blocking(container.open_own, png, unb64(image["content_key"], length=32))
        version = grant["version"] + 1
        blob = container.sign_rights(
            owner_ed25519=self.d.identity.ed25519_private,
            owner_id=self.d.user_id,
            viewer_id=grant["user_id"],
            image_id=image_id,
            payload_hash=own.payload_hash,
            views=views,
            version=version,
        )
        body = {"image_id": image_id, "views": views, "rights": b64(blob), "reason": reason}
        # Record first: a version number must never be reused, even if sending fails.
        most = max(_most_granted(grant), views)
        grants[viewer] = {**grant, "views": views, "version": version, "max_views": most}
        self.state.put("grants", image_id, grants)
        if grant.get("mode") == ENFORCED:  # the cloud's limit changes now, viewer online or not
            await self.enforced.set_limit(image_id, grant["user_id"], views, version)
        return await self.d.send_message(viewer, "rights_update", body)

    async def _set_views(self, args: dict[str, Any], views: int, reason: str) -> dict[str, Any]:
        typed = arg_user(args)
        image_id, image = self.owned(arg_str(args, "image") or "")
        self.d.require_token()
        holders = {v.lower(): v for v in self.state.get("grants", image_id) or {}}
        viewer = holders.get(typed.lower())
        if viewer is None:
            raise cerr.UnknownUser(f"({typed} has no copy of {image['name']})")
        info = await self.d.lookup(viewer, fresh=True)
        delivery = await self._send_rights(viewer, info, image_id, image, views, reason)
        return {
            "viewer": viewer,
            "image_id": image_id,
            "image_name": image["name"],
            "views": views,
            "delivery": delivery,
        }

    async def cmd_set_views(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        return await self._set_views(args, arg_views(args, low=0) or 0, "set")

    async def cmd_revoke(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        return await self._set_views(args, 0, "revoke")

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
                    self.state.move_outbox(rid, "received")
            return f"{msg.sender} gave you more views of {record['name']} ({left} left)"
        if msg.body["reason"] == "revoke":
            return f"{msg.sender} revoked your views of {record['name']}"
        return (
            f"{msg.sender} set your views of {record['name']} to {msg.body['views']} in total ({left} left)"
        )

    async def _apply_rights(self, image_id: str, blob: bytes) -> int:
        from cloudp2p.encryption import container

        assert self.d.identity is not None
        record = self.state.get("received", image_id)
        assert record is not None
        path = self.d.home.resolve(record["container"])
        png = await self.d.read_file(path)
        new_png, status = await self.d.run_blocking(
            container.apply_rights,
            png,
            blob,
            self.viewer(record["owner_id"], unb64(record["owner_ed25519"], length=32)),
        )
        await self.d.write_file(path, new_png)
        self.state.update(
            "received",
            image_id,
            views_left=status.views_left,
            views_total=status.rights.views,
            views_used=status.views_used,
        )
        return status.views_left

    # -- images and viewing --------------------------------------------------------------------------

    async def cmd_images(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        owned = []
        for image_id, r in self.state.items("images"):
            held = (self.state.get("grants", image_id) or {}).items()
            grants = {v: g["views"] for v, g in held}
            owned.append(
                {
                    "image_id": image_id,
                    "name": r["name"],
                    "published": r["published"],
                    "encrypted": str(self.d.home.resolve(r["encrypted"])),
                    "original": str(self.d.home.resolve(r["original"])),
                    "grants": grants,
                    "grant_modes": {v: g.get("mode", OFFLINE) for v, g in held},
                }
            )
        received = [
            {
                "image_id": image_id,
                "name": r["name"],
                "owner": r["owner"],
                "views_left": r["views_left"],
                "mode": r.get("mode", OFFLINE),
                "path": str(self.d.home.resolve(r["container"])),
            }
            for image_id, r in self.state.items("received")
        ]
        fetching = []
        for rid, r in self.state.items("outbox"):
            if r["state"] in ("sent", "queued", "fetching", "failed", "rejected"):
                done, total = self.fetch_progress.get(rid, (0, r.get("transfer", {}).get("size", 0)))
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

    async def cmd_view(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        from cloudp2p.encryption import container

        ref = arg_str(args, "image") or ""
        # memory: the decoded image (or the cover) comes back in the result, base64, and no file
        # is written; the web app shows it from memory and forgets it after the countdown.
        memory = arg_flag(args, "memory")
        assert self.d.identity is not None
        if os.path.isabs(ref) and os.path.isfile(ref):
            data = await self.d.read_file(ref, self.d.config.max_image_size)
            env = await self.d.run_blocking(container.peek, data, self.d.identity.x25519_private)
            image_id, record = self._find("received", env.image_id, "received images")
            path = None
        else:
            owned = [(k, r) for k, r in self.state.items("images") if ref in (k, r["name"])]
            received = [k for k, r in self.state.items("received") if ref in (k, r["name"])]
            if len(owned) == 1 and not received:
                return await self._view_own(*owned[0], memory=memory)
            image_id, record = self._find("received", ref, "received images")
            path = self.d.home.resolve(record["container"])
            data = await self.d.read_file(path)
        self.d.require_registered()
        # Raises the encryption area's errors (EncryptionError subclasses) with their own messages:
        # "not shared with you", "damaged or tampered with"...
        viewer = self.viewer(record["owner_id"], unb64(record["owner_ed25519"], length=32))
        if record.get("mode") == ENFORCED:  # the key share comes from the cloud, for this view only
            result = await self.enforced.view(data, viewer, image_id, record["owner_id"])
        else:
            result = await self.d.run_blocking(container.open_for_view, data, viewer)
        if path is not None and result.png != data:
            await self.d.write_file(path, result.png)
        stem = _safe_stem(record["name"])
        views_dir = self.d.home.sub("views")
        shown = "image" if result.image is not None else "cover"
        if result.image is not None:
            data, ext = result.image, await self.d.run_blocking(_image_format, result.image)
            out = views_dir / f"{stem}-{image_id[:8]}-view{result.status.views_used}.{ext}"
        else:
            data, ext = result.cover_png, "png"
            out = views_dir / f"{stem}-{image_id[:8]}-cover.png"
        if not memory:
            await self.d.write_file(out, data)
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
            "mode": record.get("mode", OFFLINE),
            **_view_output(out, data, ext, memory),
        }

    async def _view_own(self, image_id: str, record: dict[str, Any], *, memory: bool) -> dict[str, Any]:
        """The owner sees their own original: no view is counted."""
        out = self.d.home.resolve(record["original"])
        data = await self.d.read_file(out) if memory else b""
        return {
            "image_id": image_id,
            "name": record["name"],
            "owner": self.d.username,
            "shown": "image",
            "views_left": MAX_VIEWS,
            "views_used": 0,
            **_view_output(out, data, out.suffix.lstrip("."), memory),
        }

    # -- pinned keys ---------------------------------------------------------------------------------

    async def cmd_trust(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Accept the keys the directory has for USER now (they made new keys, and said so)."""
        return await self.d.trust(arg_user(args))

    # -- status and shutdown -------------------------------------------------------------------------

    async def cmd_status(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        addr = self.d.peer_address
        me = {
            "username": self.d.username,
            "user_id": self.d.user_id,
            "signed_in": bool(self.d.token),
            "peer": f"{addr[0]}:{addr[1]}" if addr else None,
            "home": str(self.d.home.path),
            "pid": os.getpid(),
        }
        cloud: dict[str, Any] = {
            "reachable": False,
            "servers": [f"{h}:{p}" for h, p in self.d.config.servers],
        }
        try:
            st = await self.d.call("status")
            cloud.update(reachable=True, coordinator=st.get("coordinator"), detail=st)
            cloud["servers"] = _describe_servers(st, self.d.config.servers)
        except CloudUnreachable:
            pass
        except RequestFailed as e:
            cloud.update(reachable=True, error=str(e))
        return {"me": me, "cloud": cloud, "counters": self.counters()}

    async def cmd_counters(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """The listeners' counters only (no call to the cloud): cheap enough to poll."""
        return self.counters()

    def counters(self) -> dict[str, Any]:
        """What the daemon's listeners refused or dropped (for operators and the fuzzer)."""
        messenger = self.d.messenger
        out: dict[str, Any] = {
            "peer_received": messenger.protocol.received if messenger else 0,
            "peer_rejected": messenger.protocol.rejected if messenger else 0,
            "peer_dropped": messenger.dropped if messenger else 0,
            "peer_guard": dict(self.d.guard),
            "lookup_cache": len(self.d.lookups),
            "state_writes": self.d.state_writer.writes if self.d.state_writer else 0,
            "control": dict(self.control_counters) if self.control_counters is not None else {},
        }
        stats = getattr(self.d.transfers, "stats", None)
        if stats is not None:
            out["transfer"] = attrs.asdict(stats)
        return out

    async def cmd_web(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """A one-time link to the web app (the web app mints it; see cloudp2p/web/security.py)."""
        if self.d.web_link is None:
            raise cerr.ClientError("(the web app is off: [web] enabled = false in client.toml)")
        return self.d.web_link()

    async def cmd_shutdown(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        token = self.d.token
        told = False
        if token:
            try:
                await self.d.call("sign_out", token)
                told = True
            except (CloudUnreachable, RequestFailed, cerr.NotSignedIn) as e:
                self.log.info("could not tell the cloud before stopping: {why}", why=str(e))
            self.d.signed_out("shutdown")
        self.d.reactor.callLater(0.2, self.d.stop_requested)
        return {"stopping": True, "signed_out": told}
