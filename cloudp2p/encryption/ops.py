"""The ``encrypt`` op: fetch the client's image (and cover), hide it, offer the result, reply with the key.

args::

    {"token": str,
     "image": {"port", "transfer_id", "size", "sha256"},   # the client's offer of the secret image
     "cover": {...same...} | null,                       # the client's own cover, or a library cover
     "name": str}

reply::

    {"image_id": UUID, "result": {"port", "transfer_id", "size", "sha256"},
     "content_key_sealed": base64 (the 32-byte content key sealed for the owner's
     registered X25519 key, cloudp2p.encryption.keywrap, bound to the image id),
     "payload_hash": base64 (32 bytes), "host": the server's transfer address or null,
     "cover": how the cover was chosen, "psnr": dB, "owner_id": user id, "name": str}

The result stays offered for ``[encryption] result_ttl`` seconds (closed
earlier once fetched, if the transfer layer says so). Nothing else is kept:
the secret image and the content key exist only in this coroutine and the
worker process and are dropped when it returns. A re-assigned request runs
again from the client's offers and produces a new image id and key; the
router delivers one reply.

Error codes: ``bad_request``, ``not_signed_in``, ``image_too_large``,
``transfer_failed``, ``invalid_image``, ``cover_too_small``, ``unavailable``;
and ``busy`` (never seen by the client): when the router allows it
(``ctx.may_refuse``) and this server's queue would make the job wait longer
than ``[encryption] busy_after``, before anything is fetched, so that the
router gives the request to another server (``scheduling.py``).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from cloudp2p.encryption import keywrap
from cloudp2p.encryption.errors import EncryptionError
from cloudp2p.encryption.service import EncryptionEngine
from cloudp2p.errors import CloudP2PError, InvalidImage
from cloudp2p.ops import JSONDict, OpError, RequestContext
from cloudp2p.stego.capacity import CapacityError

log = Logger(namespace="cloudp2p.encryption.ops")

_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")
MAX_NAME = 255
MAX_TOKEN = 512


def _bad(message: str) -> OpError:
    return OpError("bad_request", message)


def transfer_meta(value: Any, name: str, max_size: int) -> dict[str, Any]:
    """Check ``{"port", "transfer_id", "size", "sha256"}`` from the network."""
    if not isinstance(value, dict):
        raise _bad(f"{name} must be an object with port, transfer_id, size and sha256")
    port, tid, size, digest = (value.get(k) for k in ("port", "transfer_id", "size", "sha256"))
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise _bad(f"{name}.port must be a port number (1-65535)")
    if not isinstance(tid, str) or not 1 <= len(tid) <= 128 or not tid.isascii():
        raise _bad(f"{name}.transfer_id must be a short ASCII string")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise _bad(f"{name}.size must be a positive integer")
    if size > max_size:
        raise OpError("image_too_large", f"{name} is {size} bytes; this server accepts at most {max_size}")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise _bad(f"{name}.sha256 must be 64 lowercase hex characters")
    return {"port": port, "transfer_id": tid, "size": size, "sha256": digest}


def _engine(server: Any) -> EncryptionEngine:
    engine = getattr(server, "encryption", None)
    if engine is None:
        raise OpError("unavailable", "this server cannot encrypt images right now; try again")
    return engine


async def _fetch(ctx: RequestContext, engine: EncryptionEngine, meta: dict[str, Any], name: str) -> bytes:
    transfers = getattr(ctx.server, "transfers", None)
    if transfers is None:
        raise OpError("unavailable", "this server cannot transfer images right now; try again")
    d = transfers.fetch((ctx.client[0], meta["port"]), meta["transfer_id"], meta["size"], meta["sha256"])
    d.addTimeout(engine.fetch_timeout, engine.reactor)
    try:
        return await d
    except defer.TimeoutError:
        limit = engine.fetch_timeout
        raise OpError("transfer_failed", f"fetching the {name} took more than {limit:g} s") from None
    except CloudP2PError as e:
        if type(e).__name__ == "BadTransferMeta":
            raise _bad(f"{name}: {e}") from None
        raise OpError("transfer_failed", f"fetching the {name} failed: {e}") from None


def _transfer_host(server: Any) -> str | None:
    """The address clients fetch results from, when this server knows it (a specific interface)."""
    config = getattr(server, "config", None) or {}
    interface = config.get("transfer", {}).get("interface")
    client_listen = config.get("server", {}).get("client_listen") or (None, None)
    for host in (interface, client_listen[0]):
        if isinstance(host, str) and host not in ("0.0.0.0", "::", ""):
            return host
    return None


def offer_meta(offer: Any) -> dict[str, Any]:
    return {"port": offer.port, "transfer_id": offer.transfer_id, "size": offer.size, "sha256": offer.sha256}


async def encrypt(ctx: RequestContext, args: JSONDict) -> JSONDict:
    engine = _engine(ctx.server)
    if not isinstance(args, dict):
        raise _bad("args must be an object")
    token = args.get("token")
    if not isinstance(token, str) or not 1 <= len(token) <= MAX_TOKEN or not token.isascii():
        raise OpError("not_signed_in", "this request needs a valid session token; sign in first")
    image = transfer_meta(args.get("image"), "image", engine.max_image_size)
    cover_arg = args.get("cover")
    cover_meta = None if cover_arg is None else transfer_meta(cover_arg, "cover", engine.max_image_size)
    name = args.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise _bad(f"name must be a string of at most {MAX_NAME} characters")
    cover_size = None if cover_meta is None else cover_meta["size"]
    ticket = engine.admit(image["size"], cover_size, may_refuse=ctx.may_refuse)  # may raise Busy
    try:
        return await _encrypt_admitted(ctx, engine, ticket, token, image, cover_meta, name)
    finally:
        engine.release(ticket)


async def _encrypt_admitted(
    ctx: RequestContext,
    engine: EncryptionEngine,
    ticket: Any,
    token: str,
    image: dict[str, Any],
    cover_meta: dict[str, Any] | None,
    name: str,
) -> JSONDict:
    owner = await engine.authenticate(getattr(ctx.server, "directory", None), token)
    owner_id = owner.user_id

    secret = await _fetch(ctx, engine, image, "image")
    cover = None if cover_meta is None else await _fetch(ctx, engine, cover_meta, "cover")
    try:
        sealed = await engine.seal(secret, cover, ticket)
    except InvalidImage as e:
        raise OpError("invalid_image", str(e)) from None
    except EncryptionError as e:
        raise OpError("invalid_image", str(e)) from None
    except CapacityError as e:
        raise OpError("cover_too_small", str(e)) from None
    except CloudP2PError as e:
        raise OpError("invalid_image", str(e)) from None
    del secret, cover
    offer = engine.offer_result(ctx.server.transfers, sealed.png)
    log.info(
        "encrypt {request_id}: image {image_id} for {owner} ({size} bytes, {cover}, PSNR {psnr:.1f} dB)",
        request_id=ctx.request_id,
        image_id=sealed.image_id,
        owner=owner_id,
        size=len(sealed.png),
        cover=sealed.cover,
        psnr=sealed.psnr or 0.0,
    )
    reply = {
        "image_id": sealed.image_id,
        "result": offer_meta(offer),
        # Never the key in clear: this reply crosses UDP and is cached by every server.
        "content_key_sealed": base64.b64encode(
            keywrap.seal_key(sealed.content_key, owner.x25519, sealed.image_id.encode("ascii"))
        ).decode("ascii"),
        "payload_hash": base64.b64encode(sealed.payload_hash).decode("ascii"),
        "cover": sealed.cover,
        "psnr": None if sealed.psnr is None or sealed.psnr == float("inf") else round(sealed.psnr, 2),
        "owner_id": owner_id,
        "name": name,
        "host": _transfer_host(ctx.server),
    }
    del sealed  # the server forgets the key: only the reply (to this client) holds it now
    return reply


def ops(server: Any) -> dict[str, Any]:
    return {"encrypt": encrypt}
