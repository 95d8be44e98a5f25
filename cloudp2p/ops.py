"""The contract between the request router and the work a server does.

A client request names an operation (``op``) and carries JSON ``args``. The
router decides *which* server runs it; the server then looks the operation up
in an ``OpRegistry`` and awaits its handler. Each area adds its operations to
the registry (the cluster: ``ping``, ``work``; the directory: ``register``,
``sign_in``...; encryption: ``encrypt``) without knowing anything about
routing, retries or failover.

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

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

JSONDict = dict[str, Any]


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
    server: Any  # the server's service object: directory, transfers, worker pool...
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
