"""Run CPU-bound work (Pillow, numpy, the stego engine) off the reactor thread.

``run_in_pool(reactor, fn, *args)`` returns a ``Deferred`` that fires, on the
reactor thread, with ``fn(*args)``'s result (or fails with its exception). The
work runs in a bounded pool:

* ``kind="process"`` (default): a ``concurrent.futures.ProcessPoolExecutor`` of
  ``max_workers`` processes started with the *forkserver* method (forking a
  process that runs a reactor and threads is unsafe). Processes also keep the
  GIL free for the reactor: heartbeats keep flowing while a server encodes.
  ``fn`` and its arguments must be picklable (module-level functions).
* ``kind="thread"``: a ``ThreadPoolExecutor``, for platforms without usable
  process pools and for tests. numpy, zlib and Pillow release the GIL in their
  heavy loops, so the reactor still runs, with more jitter.

At most ``max_workers`` jobs are handed to the executor at once; the others
wait in a ``DeferredSemaphore`` on the reactor, so cancelling a waiting job's
Deferred drops it without it ever running. The executor's future completes in
a worker-management thread; its result is carried back with
``reactor.callFromThread``, so the reactor thread never blocks on it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

KINDS = ("process", "thread")


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class WorkPool:
    """A bounded pool of worker processes (or threads) that hands results back to a reactor."""

    log = Logger()

    def __init__(self, reactor: Any, *, max_workers: int | None = None, kind: str = "process") -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        workers = default_workers() if max_workers is None else max_workers
        if not 1 <= workers <= 256:
            raise ValueError(f"max_workers must be 1..256, got {workers}")
        self.reactor = reactor
        self.kind = kind
        self.max_workers = workers
        self._executor: concurrent.futures.Executor | None = None
        self._semaphore = defer.DeferredSemaphore(workers)
        self._closed = False

    def _get_executor(self) -> concurrent.futures.Executor:
        if self._executor is None:
            if self.kind == "process":
                method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
                try:
                    self._executor = concurrent.futures.ProcessPoolExecutor(
                        max_workers=self.max_workers, mp_context=multiprocessing.get_context(method)
                    )
                except (ImportError, NotImplementedError, OSError) as e:
                    # No working multiprocessing here (no sem_open, a sandbox...): threads still keep
                    # the reactor free, because numpy, zlib and Pillow release the GIL.
                    self.log.emit(
                        LogLevel.warn, "no process pool ({error}); hiding images in threads", error=str(e)
                    )
                    self.kind = "thread"
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.max_workers, thread_name_prefix="cloudp2p-stego"
                )
        return self._executor

    def run(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """``fn(*args)`` in a worker; a Deferred that fires on the reactor thread."""
        if self._closed:
            return defer.fail(RuntimeError("the work pool is shut down"))
        return self._semaphore.run(self._submit, fn, *args)

    def _forget_broken(self, executor: concurrent.futures.Executor) -> None:
        """A worker process died (killed, out of memory): the next job gets a fresh pool."""
        if self._executor is executor:
            self.log.emit(LogLevel.warn, "a stego worker process died; starting a new pool for the next job")
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _submit(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        executor = self._get_executor()
        try:
            future = executor.submit(fn, *args)
        except concurrent.futures.BrokenExecutor:
            self._forget_broken(executor)
            future = self._get_executor().submit(fn, *args)

        def cancel(d: defer.Deferred[Any]) -> None:
            future.cancel()  # only works before it started; a running job finishes and is ignored

        d: defer.Deferred[Any] = defer.Deferred(cancel)

        def deliver(done: concurrent.futures.Future[Any]) -> None:
            # Runs in the executor's thread (or right here, if already done).
            if d.called:
                return
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                if isinstance(error, concurrent.futures.BrokenExecutor):
                    self._forget_broken(executor)
                d.errback(Failure(error))
            else:
                d.callback(done.result())

        future.add_done_callback(lambda done: self.reactor.callFromThread(deliver, done))
        return d

    def shutdown(self, wait: bool = False) -> None:
        """Stop accepting work; ``wait`` blocks until running jobs finish (never on the reactor)."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None


_default: WorkPool | None = None


def configure(reactor: Any, *, max_workers: int | None = None, kind: str = "process") -> WorkPool:
    """Replace the shared pool that ``run_in_pool`` uses (the server calls it with its config)."""
    global _default
    if _default is not None:
        _default.shutdown(wait=False)
    _default = WorkPool(reactor, max_workers=max_workers, kind=kind)
    return _default


def default_pool(reactor: Any) -> WorkPool:
    global _default
    if _default is None or _default._closed or _default.reactor is not reactor:
        if _default is not None:
            _default.shutdown(wait=False)
        _default = WorkPool(reactor)
    return _default


def run_in_pool(
    reactor: Any, fn: Callable[..., Any], *args: Any, pool: WorkPool | None = None
) -> defer.Deferred[Any]:
    """``fn(*args)`` off the reactor thread in ``pool`` (default: the shared process pool)."""
    return (pool or default_pool(reactor)).run(fn, *args)
