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
wait on the reactor in a queue ordered by ``priority`` (default: arrival
time, so first come first served), so cancelling a waiting job's Deferred
drops it without it ever running. Each job may say what it ``cost``s (bytes of
work): the pool keeps the total of waiting and running work and learns its
throughput (bytes per second per worker) from finished jobs, which the
encryption scheduler turns into load and ``busy`` answers
(``cloudp2p/encryption/scheduling.py``). The executor's future completes in
a worker-management thread; its result is carried back with
``reactor.callFromThread``, so the reactor thread never blocks on it.

A process pool starts its worker processes lazily, inside ``submit``: the first
job of a server (and the first after a worker died) starts the forkserver and
waits for it to fork. That handshake took 0.17-0.52 s on a loaded 2-core
machine and stood the reactor still, so a process pool's
``submit`` runs in one dedicated *submitter* thread, never on the reactor.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

KINDS = ("process", "thread")


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


ORPHAN_CHECK_INTERVAL = 1.0  # seconds between a worker's checks that its server still lives


def _watch_parent(parent_pid: int, interval: float) -> None:
    while True:
        time.sleep(interval)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:  # the pid was reused by someone else's process: ours is gone
            os._exit(0)


def exit_with_parent(parent_pid: int, interval: float = ORPHAN_CHECK_INTERVAL) -> None:
    """Worker initializer: end this worker soon after the server that made the pool dies.

    A server killed with kill -9 cannot shut its pool down, and its workers would live on:
    each holds both ends of its own job pipe (so it never reads end-of-file) and the
    forkserver's liveness pipe (so the forkserver and the resource tracker live on too).
    Measured before this: every `make test` left about 20 such processes, up to 70 MB each.
    """
    threading.Thread(target=_watch_parent, args=(parent_pid, interval), daemon=True).start()


RATE_SMOOTHING = 0.3  # weight of the newest finished job in the throughput average


@attrs.define(eq=False)
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    cost: int
    result: defer.Deferred[Any]
    on_start: Callable[[], None] | None = None
    state: str = "waiting"  # -> running -> done, or waiting -> cancelled
    running: defer.Deferred[Any] | None = None


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
        # One thread that creates the process pool and hands it jobs (starting a worker process
        # blocks): only it creates executors, so they need no lock.
        self._submitter: concurrent.futures.ThreadPoolExecutor | None = None
        self._waiting: list[tuple[float, int, _Job]] = []  # a heap: (priority, arrival number, job)
        self._arrivals = itertools.count()
        self._running = 0
        self.waiting_cost = 0  # bytes of work of the jobs that wait
        self.running_cost = 0  # ... and of those in the workers
        self.rate: float | None = None  # bytes of work per second per worker, from finished jobs
        self._closed = False

    def _get_executor(self) -> concurrent.futures.Executor:
        if self._executor is None:
            if self.kind == "process":
                method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
                try:
                    self._executor = concurrent.futures.ProcessPoolExecutor(
                        max_workers=self.max_workers,
                        mp_context=multiprocessing.get_context(method),
                        initializer=exit_with_parent,
                        initargs=(os.getpid(),),
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

    def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        priority: float | None = None,
        cost: int = 0,
        on_start: Callable[[], None] | None = None,
    ) -> defer.Deferred[Any]:
        """``fn(*args)`` in a worker; a Deferred that fires on the reactor thread.

        Waiting jobs start lowest ``priority`` first (default: now, i.e. in order of
        arrival; ties in order of arrival). ``cost`` is the job's bytes of work;
        ``on_start()`` is called on the reactor thread when a worker takes the job.
        """
        if self._closed:
            return defer.fail(RuntimeError("the work pool is shut down"))
        if cost < 0:
            raise ValueError(f"cost must be >= 0, got {cost}")
        key = self.reactor.seconds() if priority is None else priority

        def cancel(_: defer.Deferred[Any]) -> None:
            if job.state == "waiting":  # left in the heap, skipped when it comes up
                job.state = "cancelled"
                self.waiting_cost -= job.cost
            elif job.state == "running" and job.running is not None:
                job.running.cancel()

        job = _Job(fn, args, cost, defer.Deferred(cancel), on_start)
        heapq.heappush(self._waiting, (key, next(self._arrivals), job))
        self.waiting_cost += cost
        self._dispatch()
        return job.result

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, job in self._waiting if job.state == "waiting")

    @property
    def running(self) -> int:
        return self._running

    def _dispatch(self) -> None:
        while self._running < self.max_workers and self._waiting and not self._closed:
            _, _, job = heapq.heappop(self._waiting)
            if job.state != "waiting":
                continue
            job.state = "running"
            self._running += 1
            self.waiting_cost -= job.cost
            self.running_cost += job.cost
            started = self.reactor.seconds()
            if job.on_start is not None:
                try:
                    job.on_start()
                except Exception:
                    self.log.failure("a job's on_start callback failed")
            job.running = self._submit(job.fn, *job.args)
            job.running.addBoth(self._finished, job, started)

    def _finished(self, outcome: Any, job: _Job, started: float) -> None:
        job.state = "done"
        self._running -= 1
        self.running_cost -= job.cost
        elapsed = self.reactor.seconds() - started
        if job.cost > 0 and elapsed > 0 and not isinstance(outcome, Failure):
            rate = job.cost / elapsed
            old = rate if self.rate is None else self.rate
            self.rate = (1 - RATE_SMOOTHING) * old + RATE_SMOOTHING * rate
        self._dispatch()
        if not job.result.called:
            if isinstance(outcome, Failure):
                job.result.errback(outcome)
            else:
                job.result.callback(outcome)
        elif isinstance(outcome, Failure):
            outcome.trap(defer.CancelledError)

    def _forget_broken(self, executor: concurrent.futures.Executor) -> None:
        """A worker process died (killed, out of memory): the next job gets a fresh pool."""
        if self._executor is executor:
            self.log.emit(LogLevel.warn, "a stego worker process died; starting a new pool for the next job")
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _start(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, concurrent.futures.Future[Any]]:
        """Hand one job to the executor (created here if needed); may start a worker process."""
        executor = self._get_executor()
        try:
            return executor, executor.submit(fn, *args)
        except concurrent.futures.BrokenExecutor:
            self._forget_broken(executor)
            executor = self._get_executor()
            return executor, executor.submit(fn, *args)

    def _submit(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        cancelled = threading.Event()
        started: list[concurrent.futures.Future[Any]] = []

        def cancel(d: defer.Deferred[Any]) -> None:
            cancelled.set()  # not handed to the executor yet: it never will be
            if started:
                started[0].cancel()  # only works before it started; a running job finishes, ignored

        d: defer.Deferred[Any] = defer.Deferred(cancel)

        def deliver(executor: Any, done: concurrent.futures.Future[Any]) -> None:
            # On the reactor thread.
            if d.called or done.cancelled():
                return
            error = done.exception()
            if error is not None:
                if isinstance(error, concurrent.futures.BrokenExecutor):
                    self._forget_broken(executor)
                d.errback(Failure(error))
            else:
                d.callback(done.result())

        def refused(failure: Failure) -> None:
            if not d.called:
                d.errback(failure)

        def start() -> None:
            # In the submitter thread (process pools) or right here (thread pools).
            if cancelled.is_set() or self._closed:
                return
            try:
                executor, future = self._start(fn, *args)
            except Exception:
                self.reactor.callFromThread(refused, Failure())
                return
            if self._closed:  # shut down while this job was being handed over
                self.shutdown()
            started.append(future)
            if cancelled.is_set():
                future.cancel()
            future.add_done_callback(lambda done: self.reactor.callFromThread(deliver, executor, done))

        if self.kind == "process":
            if self._submitter is None:
                self._submitter = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="cloudp2p-stego-submit"
                )
            self._submitter.submit(start)
        else:
            start()
        return d

    def shutdown(self, wait: bool = False) -> None:
        """Stop accepting work; ``wait`` blocks until running jobs finish (never on the reactor)."""
        self._closed = True
        waiting, self._waiting = self._waiting, []
        self.waiting_cost = 0
        for _, _, job in waiting:
            if job.state == "waiting":
                job.state = "cancelled"
                job.result.errback(Failure(RuntimeError("the work pool is shut down")))
        if self._submitter is not None:
            self._submitter.shutdown(wait=False, cancel_futures=True)
            self._submitter = None
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
    reactor: Any,
    fn: Callable[..., Any],
    *args: Any,
    pool: WorkPool | None = None,
    **order: Any,
) -> defer.Deferred[Any]:
    """``fn(*args)`` off the reactor thread in ``pool`` (default: the shared process pool).

    ``order``: ``WorkPool.run``'s ``priority``, ``cost`` and ``on_start``.
    """
    return (pool or default_pool(reactor)).run(fn, *args, **order)
