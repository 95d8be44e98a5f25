"""One file written off the reactor, atomically, with the changes made meanwhile coalesced.

Before issue 11 every peer message rewrote and fsynced the whole ``state.json``
on the reactor thread: a flood of messages stalled the daemon on the disk.
``CoalescingWriter`` takes a snapshot on the reactor (so it is consistent),
writes it in a thread with ``cloudp2p.files.atomic_write`` (temporary file,
fsync, rename, fsync of the folder) and, if more changes came while it wrote,
writes once more with all of them: N changes in one burst cost at most two
writes. ``flushed()`` fires once everything changed before the call is on
disk; whoever must not answer before that (an ack to a peer, a command's
reply) waits for it.

    clean --changed--> due (write in `delay` s) --start--> writing --done--> clean
                                                     writing --changed--> writing + due
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from cloudp2p.files import atomic_write

RETRY_AFTER = 1.0  # seconds before a failed write is tried again


class CoalescingWriter:
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        run_blocking: Callable[..., defer.Deferred],
        path: Any,
        snapshot: Callable[[], bytes],
        *,
        delay: float = 0.02,
    ) -> None:
        self.reactor = reactor
        self.run_blocking = run_blocking
        self.path = path
        self.snapshot = snapshot
        self.delay = delay
        self.writes = 0  # completed writes (tests and counters)
        self._dirty = False
        self._call: Any = None
        self._writing = False
        self._next: list[defer.Deferred[None]] = []  # wait for the write that starts next
        self._current: list[defer.Deferred[None]] = []  # wait for the write in progress

    def changed(self) -> None:
        self._dirty = True
        self._schedule(self.delay)

    def _schedule(self, delay: float) -> None:
        if self._call is None and not self._writing:
            self._call = self.reactor.callLater(delay, self._start)

    def _start(self) -> None:
        self._call = None
        if not self._dirty or self._writing:
            return
        self._dirty = False
        self._writing = True
        self._current, self._next = self._next, []
        try:
            data = self.snapshot()
        except Exception:
            self._done(Failure())
            return
        d = self.run_blocking(atomic_write, self.path, data)
        d.addBoth(self._done)

    def _done(self, result: Any) -> None:
        self._writing = False
        waiters, self._current = self._current, []
        if isinstance(result, Failure):
            self.log.failure("writing {path} failed; trying again", result, path=str(self.path))
            self._dirty = True
            self._next = waiters + self._next  # they still wait for their changes to be saved
            self._schedule(RETRY_AFTER)
            return
        self.writes += 1
        for w in waiters:
            w.callback(None)
        if self._dirty:
            self._schedule(self.delay)

    def flushed(self) -> defer.Deferred[None]:
        """Fires once every change made before this call is on disk."""
        if self._dirty:
            d: defer.Deferred[None] = defer.Deferred()
            self._next.append(d)
            return d
        if self._writing:
            d = defer.Deferred()
            self._current.append(d)
            return d
        return defer.succeed(None)

    def stop(self) -> None:
        """Write what is pending now, on the calling thread (the daemon is stopping)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._dirty:
            self._dirty = False
            atomic_write(self.path, self.snapshot())
            self.writes += 1
            waiters, self._next = self._next, []
            for w in waiters:
                w.callback(None)
