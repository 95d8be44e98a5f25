"""The datagrams between clients and servers' client sockets.

One JSON object per UDP datagram, no cluster secret (clients never hold it):

request (client -> every server)::

    {"v": 1, "t": "req", "id": "<32 lowercase hex>", "op": "ping", "args": {...}, "cookie": "..."}

query (client -> one server; answered by that server itself, no routing; only
read-only operations such as ``status`` are allowed)::

    {"v": 1, "t": "query", "id": ..., "op": "status", "args": {}}

reply (server -> client; ``cookie``, a fresh one, is optional)::

    {"v": 1, "t": "rep", "id": "<request id or null>", "server": 2,
     "body": {"ok": true, "result": {...}} | {"ok": false, "error": {"code": ..., "message": ...}},
     "cookie": "..."}

cookie challenge (server -> client, at most as large as the request it answers)::

    {"v": 1, "t": "cookie", "cookie": "<issue time, hex>.<MAC, base64url>"}

``cookie`` is the return-routability cookie (cloudp2p/routing/cookies.py): a
server answers a source that sends no valid cookie with a challenge only, and
the client sends its requests again with the cookie, which proves that it
receives at its address (docs/cluster-router.md, "The open boundary").

``decode_request`` and ``decode_reply`` validate every field and raise
``WireError`` for anything else (never another exception), so a listener can
answer or drop bad input without crashing. A ``WireError`` carries the request
id when one could be read, so that the server can address its error reply.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import attrs

VERSION = 1
MAX_DATAGRAM = 65_000  # bytes a client socket accepts (maxPacketSize); the JSON limit below plus envelope
MAX_PAYLOAD = 60_000  # bytes of JSON per request or reply (docs/INTERFACES.md)
MAX_OP_LENGTH = 64
MAX_COOKIE = 64

_ID_RE = re.compile(r"[0-9a-f]{32}")
_OP_RE = re.compile(r"[a-z][a-z0-9_]*")
_REQUEST_TYPES = {"req": False, "query": True}
REQUEST_KEYS = frozenset({"v", "t", "id", "op", "args"})
REPLY_KEYS = frozenset({"v", "t", "id", "server", "body"})


class WireError(ValueError):
    """A datagram that is not a valid client request or reply.

    ``code`` is the error code to put in a reply (``bad_request``,
    ``too_large``); ``request_id`` is the id if one could be read, else None.
    """

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


def new_request_id() -> str:
    """A random 128-bit request id, 32 lowercase hex digits."""
    return secrets.token_hex(16)


def is_request_id(value: Any) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def is_op_name(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_OP_LENGTH and _OP_RE.fullmatch(value) is not None


def _check_request_id(instance: Any, attribute: Any, value: Any) -> None:
    if not is_request_id(value):
        raise ValueError(f"request id must be 32 lowercase hex digits, got {value!r}")


def _check_op(instance: Any, attribute: Any, value: Any) -> None:
    if not is_op_name(value):
        raise ValueError(f"op must match [a-z][a-z0-9_]* (at most {MAX_OP_LENGTH} characters), got {value!r}")


def _check_body(instance: Any, attribute: Any, value: Any) -> None:
    problem = body_problem(value)
    if problem:
        raise ValueError(problem)


@attrs.frozen
class Request:
    request_id: str = attrs.field(validator=_check_request_id)
    op: str = attrs.field(validator=_check_op)
    args: dict[str, Any] = attrs.field(validator=attrs.validators.instance_of(dict))
    direct: bool = False  # a query: answered by the server it is sent to, no routing
    cookie: str | None = None  # the return-routability cookie the server gave this client

    def with_cookie(self, cookie: str | None) -> Request:
        return attrs.evolve(self, cookie=cookie)

    def encode(self) -> bytes:
        """The datagram; raises ``WireError("too_large")`` past MAX_PAYLOAD, ValueError if not JSON-able."""
        obj: dict[str, Any] = {
            "v": VERSION,
            "t": "query" if self.direct else "req",
            "id": self.request_id,
            "op": self.op,
            "args": self.args,
        }
        if self.cookie is not None:
            obj["cookie"] = self.cookie
        data = _dumps(obj)
        if len(data) > MAX_PAYLOAD:
            raise WireError(
                "too_large", f"request of {len(data)} bytes exceeds {MAX_PAYLOAD}", self.request_id
            )
        return data


@attrs.frozen
class Reply:
    request_id: str | None = attrs.field(
        validator=attrs.validators.optional(_check_request_id)  # None: the request id could not be read
    )
    body: dict[str, Any] = attrs.field(validator=_check_body)
    server_id: int | None = None
    cookie: str | None = None  # a fresh cookie for the client (it replaces the one it has)

    @property
    def ok(self) -> bool:
        return self.body["ok"] is True

    def encode(self) -> bytes:
        obj: dict[str, Any] = {
            "v": VERSION, "t": "rep", "id": self.request_id, "server": self.server_id, "body": self.body
        }
        if self.cookie is not None:
            obj["cookie"] = self.cookie
        data = _dumps(obj)
        if len(data) > MAX_DATAGRAM:
            raise WireError(
                "too_large", f"reply of {len(data)} bytes exceeds {MAX_DATAGRAM}", self.request_id
            )
        return data


@attrs.frozen
class CookieChallenge:
    """The only answer to a source without a valid cookie: "send again with this cookie".

    No request id, so that it stays smaller than the smallest request (76 bytes).
    """

    cookie: str

    def encode(self) -> bytes:
        return _dumps({"v": VERSION, "t": "cookie", "cookie": self.cookie})


def is_cookie(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_COOKIE and value.isascii()


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def body_problem(body: Any) -> str | None:
    """Why ``body`` is not a valid reply body, or None if it is."""
    if not isinstance(body, dict):
        return "reply body must be an object"
    ok = body.get("ok")
    if ok is True:
        if set(body) != {"ok", "result"} or not isinstance(body["result"], dict):
            return "a successful reply body is {ok: true, result: {...}}"
        return None
    if ok is False:
        error = body.get("error")
        if (
            set(body) != {"ok", "error"}
            or not isinstance(error, dict)
            or not isinstance(error.get("code"), str)
            or not isinstance(error.get("message"), str)
        ):
            return "a failed reply body is {ok: false, error: {code, message}}"
        return None
    return "reply body needs ok: true or false"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load_object(data: bytes, what: str) -> dict[str, Any]:
    if not isinstance(data, bytes):
        raise WireError("bad_request", f"{what} must be bytes")
    if len(data) > MAX_DATAGRAM:
        raise WireError("too_large", f"{what} of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WireError("bad_request", f"{what} is not UTF-8 JSON: {e}") from None
    if not isinstance(obj, dict):
        raise WireError("bad_request", f"{what} must be a JSON object")
    return obj


def load_datagram(data: bytes) -> dict[str, Any]:
    """The JSON object in a datagram (no other checks); ``WireError`` if it is not one."""
    return _load_object(data, "datagram")


def is_request_type(obj: dict[str, Any]) -> bool:
    """True if the object says it is a request or a query (anything else is never answered)."""
    kind = obj.get("t")
    return isinstance(kind, str) and kind in _REQUEST_TYPES


def decode_request(data: bytes) -> Request:
    """Parse and validate a client request datagram; ``WireError`` on anything wrong."""
    return request_from(_load_object(data, "request"), len(data))


def request_from(obj: dict[str, Any], size: int) -> Request:
    """Validate a request already parsed from a datagram of ``size`` bytes."""
    request_id = obj.get("id")
    rid = request_id if is_request_id(request_id) else None
    if type(obj.get("v")) is not int or obj["v"] != VERSION:  # true == 1 in Python: not a version
        raise WireError(
            "bad_version", f"unsupported protocol version {obj.get('v')!r}; this server speaks {VERSION}", rid
        )
    kind = obj.get("t")
    if not isinstance(kind, str) or kind not in _REQUEST_TYPES:  # a list or an object is unhashable
        raise WireError("bad_request", f"unknown datagram type {kind!r}", rid)
    if not REQUEST_KEYS <= set(obj) <= REQUEST_KEYS | {"cookie"}:
        raise WireError("bad_request", "a request has exactly the keys v, t, id, op, args (and cookie)", rid)
    cookie = obj.get("cookie")
    if cookie is not None and not is_cookie(cookie):
        raise WireError("bad_request", f"cookie must be a short ASCII string (at most {MAX_COOKIE})", rid)
    if rid is None:
        raise WireError("bad_request", "id must be 32 lowercase hex digits")
    if not is_op_name(obj["op"]):
        raise WireError("bad_request", "op must be a short lowercase name", rid)
    if not isinstance(obj["args"], dict):
        raise WireError("bad_request", "args must be a JSON object", rid)
    if size > MAX_PAYLOAD:
        raise WireError("too_large", f"request of {size} bytes exceeds {MAX_PAYLOAD}", rid)
    return Request(rid, obj["op"], obj["args"], direct=_REQUEST_TYPES[kind], cookie=cookie)


def decode_reply(data: bytes) -> Reply:
    """Parse and validate a reply datagram; ``WireError`` on anything wrong."""
    answer = decode_answer(data)
    if not isinstance(answer, Reply):
        raise WireError("bad_reply", "not a version-1 reply")
    return answer


def decode_answer(data: bytes) -> Reply | CookieChallenge:
    """A server's datagram to a client: a reply or a cookie challenge; ``WireError`` otherwise."""
    obj = _load_object(data, "reply")
    if type(obj.get("v")) is not int or obj["v"] != VERSION:
        raise WireError("bad_reply", "not a version-1 reply")
    if obj.get("t") == "cookie":
        if set(obj) != {"v", "t", "cookie"} or not is_cookie(obj["cookie"]):
            raise WireError("bad_reply", "a cookie challenge has exactly the keys v, t, cookie")
        return CookieChallenge(obj["cookie"])
    if obj.get("t") != "rep":
        raise WireError("bad_reply", "not a version-1 reply")
    if not REPLY_KEYS <= set(obj) <= REPLY_KEYS | {"cookie"}:
        raise WireError("bad_reply", "a reply has exactly the keys v, t, id, server, body (and cookie)")
    rid, server, cookie = obj["id"], obj["server"], obj.get("cookie")
    if rid is not None and not is_request_id(rid):
        raise WireError("bad_reply", "reply id must be null or 32 lowercase hex digits")
    if server is not None and (not isinstance(server, int) or isinstance(server, bool)):
        raise WireError("bad_reply", "reply server must be an integer or null")
    if cookie is not None and not is_cookie(cookie):
        raise WireError("bad_reply", "reply cookie must be a short ASCII string")
    problem = body_problem(obj["body"])
    if problem:
        raise WireError("bad_reply", problem)
    return Reply(rid, obj["body"], server, cookie)
