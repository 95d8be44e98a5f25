"""The directory's cluster operations: check the arguments, call the ``Store``.

``ops(server)`` maps op names to handlers for the server's ``OpRegistry``; each
handler reads ``ctx.server.directory`` (the ``Store``) when it runs. Arguments
come from the network and are checked here (``validate``); every failure is an
``OpError`` with a stable code:

- ``bad_request``: an argument is missing or malformed (the message names it), or ``host``
  is not the address the request came from;
- ``not_signed_in``: no valid session token; ``bad_credentials``;
- ``username_taken``, ``user_not_found``, ``image_id_taken``, ``image_not_found``,
  ``not_owner``, ``too_many_images``, ``bad_thumbnail``, ``queue_full``,
  ``bad_cursor``, ``request_id_reused``; for key shares (``shares.py``): ``share_not_found``,
  ``share_revoked``, ``no_views_left``, ``rights_outdated``;
- ``directory_unavailable``: this server has no directory or cannot reach its database.
"""

from __future__ import annotations

import uuid
from typing import Any

from cloudp2p.directory import shares
from cloudp2p.directory import validate as v
from cloudp2p.directory.store import Store
from cloudp2p.directory.token_seal import seal_token
from cloudp2p.ops import Handler, Host, JSONDict, OpError, RequestContext

LIST_LIMIT_MAX = 200
FETCH_LIMIT_MAX = 500
ACK_IDS_MAX = 1000
MESSAGE_ID_MAX = 2**62


def _store(ctx: RequestContext) -> Store:
    store = ctx.server.directory  # this area's own Store: the whole of it, not only ``Directory``
    if store is None:
        raise OpError("directory_unavailable", "this server has no directory; try another server")
    return store


def _request_id(ctx: RequestContext) -> str | None:
    rid = ctx.request_id
    return rid if isinstance(rid, str) and rid else None


def _token(args: Any) -> str:
    return v.token(v.require(args, "token"))


async def register(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: username, password, keys {x25519, ed25519} -> user_id, username, created."""
    username = v.username(v.require(args, "username"))
    password = v.password(v.require(args, "password"))
    keys = v.public_keys(v.require(args, "keys"))
    return await _store(ctx).register(_request_id(ctx), username, password, keys)


def _optional_address(ctx: RequestContext, args: Any) -> tuple[str | None, int | None]:
    """The presence address: the host the request came from (proven by its cookie) and ``port``.

    ``host`` may be given only to say the same thing: presence never points at another machine.
    """
    port = v.optional(args, "port")
    if port is None:
        return None, None
    port = v.integer(port, "port", low=1, high=65535)
    source = v.host(ctx.client[0])
    host = v.optional(args, "host")
    if host is not None and v.host(host) != source:
        raise v.bad(
            f"host must be the address your requests come from ({source}); leave it out to use that one"
        )
    return source, port


async def sign_in(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: username, password, reply_key [, port [, host]] -> user_id, username, token_sealed, expires,
    queued.

    The token is sealed for ``reply_key`` (cloudp2p/directory/token_seal.py): servers keep and
    share the reply, never the token in clear.
    """
    username = v.username(v.require(args, "username"))
    password = v.password(v.require(args, "password"))
    reply_key = v.x25519_key(v.require(args, "reply_key"), "reply_key")
    host, port = _optional_address(ctx, args)
    reply = await _store(ctx).sign_in(username, password, host=host, port=port)
    token = reply.pop("token")
    return {**reply, "token_sealed": seal_token(token, reply_key)}


async def sign_out(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: token -> {}."""
    return await _store(ctx).sign_out(_request_id(ctx), _token(args))


async def heartbeat(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: token, port [, host (default: the address the request came from)] -> online_until, expires."""
    token = _token(args)
    host, port = _optional_address(ctx, args)
    if port is None:
        raise v.bad("missing argument 'port'")
    return await _store(ctx).heartbeat(token, host, port)


async def publish_image(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: token, image_id (UUID), name, size (bytes), thumbnail (base64 PNG/JPEG) -> image_id."""
    token = _token(args)
    image_id = v.uuid_text(v.require(args, "image_id"), "image_id")
    name = v.text(v.require(args, "name"), "name", max_chars=v.NAME_MAX)
    size = v.integer(v.require(args, "size"), "size", low=0, high=v.MAX_IMAGE_SIZE)
    thumbnail = v.b64decode(v.require(args, "thumbnail"), "thumbnail", max_chars=v.THUMBNAIL_B64_MAX)
    return await _store(ctx).publish_image(_request_id(ctx), token, image_id, name, size, thumbnail)


async def unpublish_image(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: token, image_id -> image_id."""
    token = _token(args)
    image_id = v.uuid_text(v.require(args, "image_id"), "image_id")
    return await _store(ctx).unpublish_image(_request_id(ctx), token, image_id)


def parse_cursor(value: Any) -> tuple | None:
    """The ``next_cursor`` of a ``list_online`` page, back to the tuple the Store takes."""
    if value is None:
        return None
    problem = OpError("bad_cursor", "cursor must be the next_cursor of a previous list_online page")
    if not isinstance(value, str) or len(value) > 100:
        raise problem
    parts = value.split(".")
    try:
        if parts[0] == "u" and len(parts) == 2:
            return ("u", str(uuid.UUID(parts[1])))
        if parts[0] == "i" and len(parts) == 3:
            return ("i", str(uuid.UUID(parts[1])), str(uuid.UUID(parts[2])) if parts[2] else "")
    except ValueError:
        raise problem from None
    raise problem


async def list_online(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: token [, cursor, limit (1..200, default 50)] -> users [...], next_cursor (null at the end)."""
    token = _token(args)
    cursor = parse_cursor(v.optional(args, "cursor"))
    limit = v.optional(args, "limit")
    limit = 50 if limit is None else v.integer(limit, "limit", low=1, high=LIST_LIMIT_MAX)
    return await _store(ctx).list_online(token, cursor, limit)


async def lookup_user(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: token, and username or user_id -> user_id, username, keys, created, online, host, port."""
    token = _token(args)
    username = v.optional(args, "username")
    user_id = v.optional(args, "user_id")
    if (username is None) == (user_id is None):
        raise v.bad("give exactly one of 'username' and 'user_id'")
    if user_id is not None:
        return await _store(ctx).lookup_user(token, user_id=v.uuid_text(user_id, "user_id"))
    return await _store(ctx).lookup_user(token, username=v.username(username))


async def queue_message(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: token, to (user id) or to_username, kind, body (JSON object) -> message_id, to."""
    token = _token(args)
    to = v.optional(args, "to")
    to_username = v.optional(args, "to_username")
    if (to is None) == (to_username is None):
        raise v.bad("give exactly one of 'to' (a user id) and 'to_username'")
    kind = v.kind(v.require(args, "kind"))
    store = _store(ctx)
    body = v.body(v.require(args, "body"), max_bytes=store.max_body)
    if to is not None:
        return await store.queue_message(
            _request_id(ctx), token, kind, body, to_user_id=v.uuid_text(to, "to")
        )
    return await store.queue_message(
        _request_id(ctx), token, kind, body, to_username=v.username(to_username, "to_username")
    )


async def fetch_queued(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: token [, after (id, default 0), limit (1..500, default 100)] -> messages [...], more."""
    token = _token(args)
    after = v.optional(args, "after")
    after = 0 if after is None else v.integer(after, "after", low=0, high=MESSAGE_ID_MAX)
    limit = v.optional(args, "limit")
    limit = 100 if limit is None else v.integer(limit, "limit", low=1, high=FETCH_LIMIT_MAX)
    return await _store(ctx).fetch_queued(token, after, limit)


async def ack_queued(ctx: RequestContext, args: JSONDict) -> JSONDict:
    """args: token, up_to (id) and/or ids [id, ...] -> removed (count; 0 when already acked)."""
    token = _token(args)
    up_to = v.optional(args, "up_to")
    ids = v.optional(args, "ids")
    if up_to is None and ids is None:
        raise v.bad("give 'up_to' (the last message id handled) or 'ids' (a list of message ids)")
    if up_to is not None:
        up_to = v.integer(up_to, "up_to", low=0, high=MESSAGE_ID_MAX)
    if ids is not None:
        if not isinstance(ids, list) or len(ids) > ACK_IDS_MAX:
            raise v.bad(f"ids must be a list of at most {ACK_IDS_MAX} message ids")
        ids = sorted({v.integer(i, "ids[]", low=1, high=MESSAGE_ID_MAX) for i in ids})
    return await _store(ctx).ack_queued(token, up_to=up_to, ids=ids)


OPS: dict[str, Handler] = {
    "register": register,
    "sign_in": sign_in,
    "sign_out": sign_out,
    "heartbeat": heartbeat,
    "publish_image": publish_image,
    "unpublish_image": unpublish_image,
    "list_online": list_online,
    "lookup_user": lookup_user,
    "queue_message": queue_message,
    "fetch_queued": fetch_queued,
    "ack_queued": ack_queued,
    **shares.OPS,  # enforced copies: key shares released once per view
}


def ops(server: Host) -> dict[str, Handler]:
    """The directory's handlers; they use ``server.directory`` (a ``Store``) when called."""
    return dict(OPS)
