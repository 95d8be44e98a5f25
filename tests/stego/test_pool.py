"""The work pool: heavy work runs off the reactor thread, bounded, results come back on the reactor."""

import concurrent.futures
import os
import threading
import time

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from cloudp2p.stego import engine, pool


def heavy_embed(rounds: int) -> int:
    """A real encode, several times: about a second of CPU in a worker process."""
    cover = np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    payload = bytes(engine.capacity_bits(cover.shape) // 8)
    for _ in range(rounds):
        cover = engine.embed(cover, payload, b"pool")
    return int(cover.sum())


def fail(message: str) -> None:
    raise KeyError(message)


def die() -> None:
    os._exit(9)  # a worker process killed in the middle of a job


@pytest_twisted.inlineCallbacks
def test_results_come_back_on_the_reactor_thread():
    work = pool.WorkPool(reactor, max_workers=2, kind="thread")
    seen = {}

    def job():
        seen["worker"] = threading.current_thread()
        return 42

    result = yield work.run(job)
    assert result == 42
    assert seen["worker"] is not threading.main_thread()
    assert threading.current_thread() is threading.main_thread()
    work.shutdown()


@pytest_twisted.inlineCallbacks
def test_errors_arrive_as_failures_of_their_own_type():
    work = pool.WorkPool(reactor, max_workers=1, kind="thread")
    with pytest.raises(KeyError):
        yield work.run(fail, "nope")
    work.shutdown()


@pytest_twisted.inlineCallbacks
def test_at_most_max_workers_run_at_once():
    work = pool.WorkPool(reactor, max_workers=2, kind="thread")
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def job(i):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return i

    results = yield defer.gatherResults([work.run(job, i) for i in range(8)])
    assert results == list(range(8))
    assert state["peak"] == 2
    work.shutdown()


@pytest_twisted.inlineCallbacks
def test_a_waiting_job_can_be_cancelled_and_never_runs():
    work = pool.WorkPool(reactor, max_workers=1, kind="thread")
    release = threading.Event()
    ran = []
    first = work.run(release.wait, 5)
    second = work.run(ran.append, "second")
    second.addErrback(lambda f: f.trap(defer.CancelledError))
    second.cancel()
    release.set()
    yield first
    yield second
    yield work.run(lambda: None)
    assert ran == []
    work.shutdown()
    with pytest.raises(RuntimeError):
        yield work.run(lambda: None)


@pytest.mark.slow
@pytest_twisted.inlineCallbacks
def test_the_reactor_keeps_ticking_during_a_heavy_encode_in_a_process():
    """Heartbeats keep flowing while a server encodes: the reactor never stalls on the work."""
    work = pool.WorkPool(reactor, max_workers=1, kind="process")
    yield work.run(int, "1")  # start the worker process first
    ticks = []
    loop = task.LoopingCall(lambda: ticks.append(time.monotonic()))
    loop.start(0.02)
    started = time.monotonic()
    total = yield work.run(heavy_embed, 8)
    elapsed = time.monotonic() - started
    loop.stop()
    work.shutdown()
    assert total > 0
    assert elapsed > 0.2  # it was real work
    gaps = np.diff(ticks)
    assert len(ticks) > elapsed / 0.02 * 0.5
    assert gaps.max() < 0.2  # cluster heartbeats are every 0.2 s, suspicion after 1.0 s


@pytest.mark.slow
@pytest_twisted.inlineCallbacks
def test_a_dead_worker_process_fails_its_job_and_the_pool_recovers():
    from concurrent.futures.process import BrokenProcessPool

    work = pool.WorkPool(reactor, max_workers=1, kind="process")
    try:
        with pytest.raises(BrokenProcessPool):
            yield work.run(die)
        assert (yield work.run(sum, [1, 2])) == 3
    finally:
        work.shutdown()


@pytest_twisted.inlineCallbacks
def test_run_in_pool_uses_a_shared_pool():
    value = yield pool.run_in_pool(reactor, sum, [1, 2, 3], pool=pool.WorkPool(reactor, kind="thread"))
    assert value == 6
    shared = pool.configure(reactor, max_workers=1, kind="thread")
    assert pool.default_pool(reactor) is shared
    assert (yield pool.run_in_pool(reactor, max, 3, 9)) == 9
    shared.shutdown()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        pool.WorkPool(reactor, kind="fibers")
    with pytest.raises(ValueError):
        pool.WorkPool(reactor, max_workers=0)


@pytest_twisted.inlineCallbacks
def test_without_process_pools_it_falls_back_to_threads(monkeypatch):
    import concurrent.futures

    def unavailable(*args, **kwargs):
        raise NotImplementedError("no sem_open on this platform")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", unavailable)
    work = pool.WorkPool(reactor, max_workers=1, kind="process")
    names = yield work.run(lambda: threading.current_thread().name)
    assert work.kind == "thread" and names.startswith("cloudp2p-stego")
    work.shutdown()


class SlowToStartPool(concurrent.futures.ThreadPoolExecutor):
    """A process pool as seen by its caller: ``submit`` starts a worker and waits for the
    forkserver's handshake (measured 0.17-0.52 s on a loaded 2-core machine)."""

    submitted_on: list[threading.Thread] = []

    def __init__(self, max_workers: int, mp_context: object = None, **_: object) -> None:
        super().__init__(max_workers=max_workers)

    def submit(self, fn, /, *args, **kwargs):
        SlowToStartPool.submitted_on.append(threading.current_thread())
        time.sleep(0.4)
        return super().submit(fn, *args, **kwargs)


@pytest_twisted.inlineCallbacks
def test_starting_worker_processes_never_stands_the_reactor_still(monkeypatch):
    """Regression: the first job of a process pool used to start the worker (forkserver
    handshake) on the reactor thread, and the server's reactor stood still for up to 0.5 s."""
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", SlowToStartPool)
    SlowToStartPool.submitted_on.clear()
    work = pool.WorkPool(reactor, max_workers=2, kind="process")
    ticks = []
    loop = task.LoopingCall(lambda: ticks.append(time.monotonic()))
    loop.start(0.02)
    try:
        results = yield defer.gatherResults([work.run(sum, [i, 1]) for i in range(3)])
    finally:
        loop.stop()
        work.shutdown()
    assert results == [1, 2, 3]
    assert SlowToStartPool.submitted_on and threading.main_thread() not in SlowToStartPool.submitted_on
    assert max(np.diff(ticks)) < 0.2  # three submits of 0.4 s each: 1.2 s, and the reactor ticked through


@pytest_twisted.inlineCallbacks
def test_a_job_cancelled_while_the_pool_starts_never_runs(monkeypatch):
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", SlowToStartPool)
    work = pool.WorkPool(reactor, max_workers=2, kind="process")
    ran = []
    first = work.run(ran.append, "first")  # its submit takes 0.4 s in the submitter thread
    second = work.run(ran.append, "second")  # waits behind it in the submitter thread
    second.addErrback(lambda f: f.trap(defer.CancelledError))
    second.cancel()
    yield first
    yield second
    yield work.run(ran.append, "third")
    work.shutdown()
    assert ran == ["first", "third"]


_ORPHAN_CHILD = """
import os, sys, time
from twisted.internet import reactor
from cloudp2p.stego import pool
work = pool.WorkPool(reactor, max_workers=1)
executor = work._get_executor()
print(executor.submit(os.getpid).result(timeout=60), flush=True)
time.sleep(120)
"""


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone for our purpose (its parent has not reaped it yet).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc (Linux)")
def test_workers_and_forkserver_end_when_their_server_is_killed():
    """kill -9 of a server must not leave its pool's processes behind (they used to live forever)."""
    import signal
    import subprocess
    import sys

    server = subprocess.Popen([sys.executable, "-c", _ORPHAN_CHILD], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(server.stdout.readline())
        forkserver = _ppid(worker)
        assert worker != server.pid and forkserver is not None
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        deadline = time.monotonic() + 10  # bounded: the worker checks once a second
        while time.monotonic() < deadline and not (_gone(worker) and _gone(forkserver)):
            time.sleep(0.1)
        assert _gone(worker), "the pool's worker outlived its server"
        assert _gone(forkserver), "the forkserver outlived its server"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)


@pytest_twisted.inlineCallbacks
def test_waiting_jobs_start_in_priority_order_and_the_pool_counts_their_work():
    work = pool.WorkPool(reactor, max_workers=1, kind="thread")
    release = threading.Event()
    order = []
    started = []
    first = work.run(release.wait, 5, cost=100, on_start=lambda: started.append("first"))
    big = work.run(order.append, "big", priority=50.0, cost=36_000_000)
    small = work.run(
        order.append, "small", priority=10.0, cost=400_000, on_start=lambda: started.append("small")
    )
    fifo = [work.run(order.append, f"fifo{i}", priority=60.0 + i) for i in range(3)]
    assert started == ["first"] and work.running == 1 and work.waiting == 5
    assert work.running_cost == 100 and work.waiting_cost == 36_400_000
    release.set()
    yield defer.gatherResults([first, big, small, *fifo])
    assert order == ["small", "big", "fifo0", "fifo1", "fifo2"]
    assert started == ["first", "small"]
    assert work.waiting_cost == work.running_cost == 0 and work.rate is not None and work.rate > 0
    work.shutdown()


@pytest_twisted.inlineCallbacks
def test_a_cancelled_waiting_job_gives_back_its_cost_and_shutdown_fails_the_waiting():
    work = pool.WorkPool(reactor, max_workers=1, kind="thread")
    release = threading.Event()
    first = work.run(release.wait, 5)
    second = work.run(int, "2", cost=1000)
    second.addErrback(lambda f: f.trap(defer.CancelledError))
    second.cancel()
    assert work.waiting_cost == 0 and work.waiting == 0
    third = work.run(int, "3", cost=500)
    work.shutdown()
    with pytest.raises(RuntimeError):
        yield third
    release.set()
    yield first
    with pytest.raises(ValueError):
        pool.WorkPool(reactor, kind="thread").run(int, "4", cost=-1)
