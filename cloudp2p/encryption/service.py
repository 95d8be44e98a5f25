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


def _pool_runner(reactor: Any, workers: int) -> tuple[JobRunner, Callable[[], None]]:
    """A process pool of ``workers`` for seals (created on first use) and its shutdown."""
    holder: list[Any] = []

    def run(fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        from cloudp2p.stego import pool

        if not holder:
            holder.append(pool.WorkPool(reactor, max_workers=workers))
        return pool.run_in_pool(reactor, fn, *args, pool=holder[0])

    def shutdown() -> None:
        if holder:
            holder.pop().shutdown(wait=False)

    return run, shutdown


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
        if run_job is None:
            run_job, self._shutdown = _pool_runner(reactor, settings.workers)
        self.run_job = run_job
        self.authenticate = authenticate
        self._offers: dict[str, tuple[Any, Any]] = {}  # transfer_id -> (offer, delayed close)
        self.sealed_count = 0

    async def seal(self, secret: bytes, cover: bytes | None) -> container.Sealed:
        """Hide ``secret`` (in ``cover`` or a library cover) in a worker process."""
        s = self.settings
        level, covers_dir, writer = s.png_compress_level, s.covers_dir, s.png_writer
        sealed = await self.run_job(container.seal_job, secret, cover, level, covers_dir, writer)
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
