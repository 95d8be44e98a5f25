"""The server's encryption engine: authenticates owners, runs seals in the worker pool, tracks result offers.

``ctx.server.encryption`` is an ``EncryptionEngine`` (the server service
builds it from the ``[encryption]`` section, an ``EncryptionSettings``); the ``encrypt`` op handler
(``cloudp2p/encryption/ops.py``) uses it. It holds no image and no content
key once a request has replied: the only thing it keeps is the open result
offers (the stego PNG, which is useless without the key) until they are
fetched or expire.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from cloudp2p.encryption import container
from cloudp2p.encryption.config import EncryptionSettings
from cloudp2p.encryption.scheduling import DEFAULT_AGEING_RATE, Scheduler, Ticket, estimate_work
from cloudp2p.ops import OpError

JobRunner = Callable[..., "defer.Deferred[Any]"]


@attrs.frozen
class Owner:
    """The signed-in user an ``encrypt`` acts for, with the key the content key is sealed to."""

    user_id: str
    x25519: bytes  # raw 32-byte public key registered in the directory


Authenticator = Callable[[Any, str], Awaitable[Owner]]


async def directory_authenticator(directory: Any, token: str) -> Owner:
    """The user behind a session token and their registered X25519 key; ``OpError`` if none."""
    if directory is None or getattr(directory, "session_user", None) is None:
        raise OpError("unavailable", "this server has no directory to check sessions; try again")
    user_id = await directory.session_user(token)
    user = await directory.lookup_user(token, user_id=user_id)
    try:
        x25519 = base64.b64decode(user["keys"]["x25519"], validate=True)
    except (KeyError, TypeError, ValueError):
        x25519 = b""
    if len(x25519) != 32:
        raise OpError("bad_keys", "your registered public key is unusable; register again")
    return Owner(user_id, x25519)


def _unmeasured() -> float | None:
    return None


class _LazyPool:
    """A process pool of ``workers`` for seals, created on first use."""

    def __init__(self, reactor: Any, workers: int) -> None:
        self.reactor = reactor
        self.workers = workers
        self.pool: Any = None

    def run(self, fn: Callable[..., Any], *args: Any, **order: Any) -> defer.Deferred[Any]:
        from cloudp2p.stego import pool

        if self.pool is None:
            self.pool = pool.WorkPool(self.reactor, max_workers=self.workers)
        return self.pool.run(fn, *args, **order)

    def rate(self) -> float | None:
        return None if self.pool is None else self.pool.rate

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)
            self.pool = None


class EncryptionEngine:
    """The encryption side of a server. All CPU work goes through ``run_job`` (the stego process pool)."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        settings: EncryptionSettings | None = None,
        *,
        run_job: JobRunner | None = None,
        authenticate: Authenticator = directory_authenticator,
    ) -> None:
        self.reactor = reactor
        self.settings = settings = settings or EncryptionSettings()
        self._shutdown: Callable[[], None] = lambda: None
        rate: Callable[[], float | None] = _unmeasured
        if run_job is None:
            lazy = _LazyPool(reactor, settings.workers)
            run_job, rate, self._shutdown = lazy.run, lazy.rate, lazy.shutdown
        self.run_job = run_job
        busy_after, queue_order = settings.busy_after, settings.queue_order
        self.queue_order = queue_order
        # "arrival": first come first served and never busy (the order before issue 16, to measure against).
        self.scheduler = Scheduler(
            reactor,
            settings.workers,
            busy_after=busy_after if busy_after > 0 and queue_order != "arrival" else float("inf"),
            ageing_rate=float("inf") if queue_order == "arrival" else DEFAULT_AGEING_RATE,
            rate_source=rate,
        )
        self.authenticate = authenticate
        self._offers: dict[str, tuple[Any, Any]] = {}  # transfer_id -> (offer, delayed close)
        self.sealed_count = 0

    def admit(self, secret_size: int, cover_size: int | None, *, may_refuse: bool) -> Ticket:
        """A place in this server's queue for an encrypt of these sizes, or ``Busy`` (see scheduling.py).

        Call ``release`` when the request is over, whatever happened.
        """
        return self.scheduler.admit(estimate_work(secret_size, cover_size), may_refuse=may_refuse)

    def release(self, ticket: Ticket) -> None:
        self.scheduler.release(ticket)

    def backlog_seconds(self) -> float:
        """Seconds of admitted encrypt work per worker: part of this server's load."""
        return self.scheduler.backlog_seconds()

    async def seal(
        self, secret: bytes, cover: bytes | None, ticket: Ticket | None = None
    ) -> container.Sealed:
        """Hide ``secret`` (in ``cover`` or a library cover) in a worker process, in ``ticket``'s turn."""
        s = self.settings
        level, covers_dir, writer = s.png_compress_level, s.covers_dir, s.png_writer
        order = {}
        if ticket is not None:
            order = {"priority": ticket.priority, "cost": ticket.cost, "on_start": ticket.started}
        sealed = await self.run_job(container.seal_job, secret, cover, level, covers_dir, writer, **order)
        self.sealed_count += 1
        return sealed

    def offer_result(self, transfers: Any, png: bytes) -> Any:
        """Offer the result PNG for one fetch; closed once fetched, idle or ``result_ttl`` old."""
        offer = transfers.offer(png, timeout=self.settings.result_ttl, max_fetches=1)
        tid = offer.transfer_id
        call = self.reactor.callLater(self.settings.result_ttl, self._expire, tid)
        self._offers[tid] = (offer, call)
        when_closed = getattr(offer, "when_closed", None)
        if when_closed is not None:
            when_closed().addBoth(lambda _: self._close(tid))
        return offer

    def _expire(self, tid: str) -> None:
        if tid in self._offers:
            ttl = self.settings.result_ttl
            self.log.info("encrypt result {tid} not fetched in {ttl} s; closed", tid=tid, ttl=ttl)
            self._close(tid, expired=True)

    def _close(self, tid: str, *, expired: bool = False) -> None:
        entry = self._offers.pop(tid, None)
        if entry is None:
            return
        offer, call = entry
        if not expired and call.active():
            call.cancel()
        try:
            offer.close()
        except Exception:
            self.log.failure("closing result offer {tid}", tid=tid)

    @property
    def open_offers(self) -> int:
        return len(self._offers)

    def stop(self) -> None:
        """Close the result offers and the worker pool (the server's stopService calls it)."""
        for tid in list(self._offers):
            self._close(tid)
        self._shutdown()
