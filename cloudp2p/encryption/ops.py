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
from cloudp2p.errors import CloudP2PError, InvalidImage
from cloudp2p.ops import Engine, Handler, Host, JSONDict, OpError, RequestContext
from cloudp2p.stego.capacity import CapacityError
from cloudp2p.transfer.errors import BadTransferMeta
from cloudp2p.transfer.meta import TransferMeta

log = Logger(namespace="cloudp2p.encryption.ops")

_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")
MAX_NAME = 255
MAX_TOKEN = 512


def _bad(message: str) -> OpError:
    return OpError("bad_request", message)


def transfer_meta(value: Any, name: str, max_size: int) -> TransferMeta:
    """The client's offer ``{"port", "transfer_id", "size", "sha256"}`` from the network, checked."""
    size = value.get("size") if isinstance(value, dict) else None
    if isinstance(size, int) and not isinstance(size, bool) and size > max_size:
        raise OpError("image_too_large", f"{name} is {size} bytes; this server accepts at most {max_size}")
    try:
        meta = TransferMeta.from_json(value)
    except BadTransferMeta as e:
        raise _bad(f"{name}: {e.detail}") from None
    if meta.size < 1:
        raise _bad(f"{name}.size must be a positive integer")
    return meta


def _engine(server: Host) -> Engine:
    engine = server.encryption
    if engine is None:
        raise OpError("unavailable", "this server cannot encrypt images right now; try again")
    return engine


async def _fetch(ctx: RequestContext, engine: Engine, meta: TransferMeta, name: str) -> bytes:
    transfers = ctx.server.transfers
    if transfers is None:
        raise OpError("unavailable", "this server cannot transfer images right now; try again")
    d = transfers.fetch((ctx.client[0], meta.port), meta.transfer_id, meta.size, meta.sha256)
    d.addTimeout(engine.settings.fetch_timeout, engine.reactor)
    try:
        return await d
    except defer.TimeoutError:
        limit = engine.settings.fetch_timeout
        raise OpError("transfer_failed", f"fetching the {name} took more than {limit:g} s") from None
    except BadTransferMeta as e:
        raise _bad(f"{name}: {e}") from None
    except CloudP2PError as e:
        raise OpError("transfer_failed", f"fetching the {name} failed: {e}") from None


def _transfer_host(server: Host) -> str | None:
    """The address clients fetch results from, when this server knows it (a specific interface)."""
    config = server.config
    interface = config.transfer.interface if config is not None else None
    client_listen = config.server.client_listen if config is not None else (None, None)
    for host in (interface, client_listen[0]):
        if isinstance(host, str) and host not in ("0.0.0.0", "::", ""):
            return host
    return None


async def encrypt(ctx: RequestContext, args: JSONDict) -> JSONDict:
    engine = _engine(ctx.server)
    if not isinstance(args, dict):
        raise _bad("args must be an object")
    token = args.get("token")
    if not isinstance(token, str) or not 1 <= len(token) <= MAX_TOKEN or not token.isascii():
        raise OpError("not_signed_in", "this request needs a valid session token; sign in first")
    limit = engine.settings.max_image_size
    image = transfer_meta(args.get("image"), "image", limit)
    cover_arg = args.get("cover")
    cover_meta = None if cover_arg is None else transfer_meta(cover_arg, "cover", limit)
    name = args.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise _bad(f"name must be a string of at most {MAX_NAME} characters")
    cover_size = None if cover_meta is None else cover_meta.size
    ticket = engine.admit(image.size, cover_size, may_refuse=ctx.may_refuse)  # may raise Busy
    try:
        return await _encrypt_admitted(ctx, engine, ticket, token, image, cover_meta, name)
    finally:
        engine.release(ticket)


async def _encrypt_admitted(
    ctx: RequestContext,
    engine: Engine,
    ticket: Any,
    token: str,
    image: TransferMeta,
    cover_meta: TransferMeta | None,
    name: str,
) -> JSONDict:
    owner = await engine.authenticate(ctx.server.directory, token)
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
        "result": offer.meta(),
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


def ops(server: Host) -> dict[str, Handler]:
    return {"encrypt": encrypt}
