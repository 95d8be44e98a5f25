"""The contract between the request router and the work a server does.

A client request names an operation (``op``) and carries JSON ``args``. The
router decides *which* server runs it; the server then looks the operation up
in an ``OpRegistry`` and awaits its handler. Each area adds its operations to
the registry (the cluster: ``ping``, ``work``; the directory: ``register``,
``sign_in``...; encryption: ``encrypt``) without knowing anything about
routing, retries or failover.

Every area has the same entry point, ``ops(server: Host) -> {name: handler}``
(``cloudp2p.server.service.OP_PROVIDERS`` lists them): the server is passed only
to choose which operations exist (test-only ones); a handler reaches the server
and its areas through ``ctx.server`` when it runs, never through a captured
object. ``Host`` and the protocols below name what a handler may use.

A handler is ``async def handler(ctx: RequestContext, args: dict) -> dict``.
It must validate ``args`` itself (they come from the network) and raise
``OpError(code, message)`` for anything the user should hear about. Any other
exception is a bug: the router answers ``internal_error`` and logs it.

Handlers may run more than once for one request id (a server can crash after
doing the work and before the reply is recorded): an operation that changes
durable state must make that harmless, which the directory does by recording
the reply under the request id in the same transaction as the change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import attrs

JSONDict = dict[str, Any]


# -- what a handler may use: the server and its areas, as interfaces ---------------------------------


class Offered(Protocol):
    """Bytes a server serves on a transfer port (``cloudp2p.transfer.Offer``)."""

    transfer_id: str

    def meta(self) -> JSONDict:
        """``{"port", "transfer_id", "size", "sha256"}`` for the fetching side."""

    def close(self) -> None: ...


class Transfers(Protocol):
    """The transfer layer (``cloudp2p.transfer.TransferManager``) as handlers use it."""

    def offer(self, data: bytes, *, timeout: float | None = None, max_fetches: int | None = None) -> Offered:
        """Serve ``data`` on a fresh port."""

    def fetch(self, address: tuple[str, int], transfer_id: str, size: int, sha256: str) -> Any:
        """A Deferred that fires with the bytes of the offer at ``address``."""


class Directory(Protocol):
    """The directory (``cloudp2p.directory.Store``) as other areas' handlers use it.

    The directory's own handlers (``cloudp2p.directory.ops``) use the whole ``Store``."""

    async def session_user(self, token: str) -> str:
        """The user id behind a valid session token; ``OpError(not_signed_in)`` otherwise."""

    async def lookup_user(
        self, token: str, *, username: str | None = None, user_id: str | None = None
    ) -> JSONDict:
        """A user's id, name and registered public keys."""


class Engine(Protocol):
    """The encryption engine (``cloudp2p.encryption.service.EncryptionEngine``) as ``encrypt`` uses it."""

    reactor: Any
    settings: Any  # the ``[encryption]`` section: ``max_image_size``, ``fetch_timeout``...

    async def authenticate(self, directory: Directory | None, token: str) -> Any:
        """The owner behind ``token``, with the key their content key is sealed to."""

    def admit(self, secret_size: int, cover_size: int | None, *, may_refuse: bool) -> Any:
        """A place in the queue of encrypt work (a ticket), or ``Busy``."""

    def release(self, ticket: Any) -> None:
        """Give the ticket's place back."""

    async def seal(self, secret: bytes, cover: bytes | None, ticket: Any = None) -> Any:
        """Hide ``secret`` in a cover, off the reactor, in the ticket's turn."""

    def offer_result(self, transfers: Transfers, png: bytes) -> Offered:
        """Offer the result PNG until fetched once or expired."""


class Term(Protocol):
    """The server's membership node as handlers see it: the term it is in."""

    @property
    def term(self) -> int: ...


class RouterView(Protocol):
    """The server's router as handlers see it: its status and the handler runs it journals."""

    journal: Iterable[tuple[str, str, float]]

    def status(self) -> JSONDict: ...


class Host(Protocol):
    """The server as handlers see it (``ctx.server``, a ``cloudp2p.server.service.Server``).

    Each area's object is None until the area is open (at start) or when it cannot be used:
    a handler answers ``unavailable`` then.
    """

    id: int
    reactor: Any  # the reactor: time, threads, sockets
    config: Any  # the ServerConfig (``config.server``, ``config.transfer``...), None in unit tests
    directory: Directory | None
    transfers: Transfers | None
    encryption: Engine | None
    node: Term  # the ClusterNode
    router: RouterView  # the Router
    cpu_pool: Any  # a started twisted ThreadPool for CPU-bound work (no Twisted imported here)
    work_queue: Any  # bounds the work waiting for ``cpu_pool`` (``routing.basic_ops.WorkQueue``)
    test_ops: bool  # whether test-only operations exist on this server


class OpError(Exception):
    """A request failed for a reason the user should be told (bad input, not allowed, not found...).

    ``code`` is a short stable identifier scripts can test (``username_taken``),
    ``message`` a sentence for people that says what to do.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_reply(self) -> JSONDict:
        return {"ok": False, "error": {"code": self.code, "message": self.message}}


BUSY = "busy"


class Busy(OpError):
    """This server has more work queued than it can start soon: another server should run the request.

    A handler raises it only when ``ctx.may_refuse``; the router then hands the
    request to another server instead of replying (docs/cluster-router.md,
    "Busy"). The client never sees it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(BUSY, message)


def is_busy(body: JSONDict) -> bool:
    """Whether a reply body is a ``Busy`` refusal."""
    error = body.get("error") if not body.get("ok") else None
    return isinstance(error, dict) and error.get("code") == BUSY


@attrs.frozen
class RequestContext:
    """What a handler knows about the request it is running."""

    request_id: str
    op: str
    client: tuple[str, int]
    server: Host
    may_refuse: bool = False  # the router can give the request to another server if this one is ``Busy``


Handler = Callable[[RequestContext, JSONDict], Awaitable[JSONDict]]


@attrs.define
class OpRegistry:
    """Operation name -> handler."""

    _handlers: dict[str, Handler] = attrs.field(factory=dict)

    def add(self, name: str, handler: Handler) -> None:
        if name in self._handlers:
            raise ValueError(f"operation {name!r} is registered twice")
        self._handlers[name] = handler

    def update(self, handlers: Mapping[str, Handler]) -> None:
        for name, handler in handlers.items():
            self.add(name, handler)

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)


def ok(result: JSONDict | None = None) -> JSONDict:
    """The reply for a successful request."""
    return {"ok": True, "result": result or {}}
