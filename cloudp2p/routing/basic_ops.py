"""The cluster's own operations: ``ping``, ``status``, and for tests ``work`` and ``recent_runs``.

``status`` and ``recent_runs`` describe the server that answers; send them as
queries to one server (``ClientRouter.query``).

``work`` (CPU-bound hashing, for load tests and benchmarks) and ``recent_runs``
(the last request ids run here: whoever reads them could replay them) exist
only on a server started with ``[server] test_ops = true``; a production cloud
does not know them (``unknown_op``). Even then ``work`` is bounded by
``MAX_WORK_UNITS`` MiB per request and ``work_queue`` waiting requests.

They use, through ``ctx.server`` (``cloudp2p.ops.Host``): ``id``, ``reactor``,
``node`` (the ``ClusterNode``), ``router`` (the ``Router``), and for ``work``
``cpu_pool`` (a started ``twisted.python.threadpool.ThreadPool``) and
``work_queue`` (a ``WorkQueue``).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from twisted.internet import threads

from cloudp2p.ops import Handler, Host, OpError, RequestContext

WORK_UNIT_BYTES = 1 << 20  # one unit of work hashes one MiB (a few milliseconds of CPU)
MAX_WORK_UNITS = 256
_BLOCK = bytes(range(256)) * (WORK_UNIT_BYTES // 256)


def do_work(units: int) -> str:
    """Hash ``units`` MiB with SHA-256; runs in a pool thread (hashlib releases the GIL)."""
    digest = hashlib.sha256()
    for _ in range(units):
        digest.update(_BLOCK)
    return digest.hexdigest()


class WorkQueue:
    """Bounds how much ``work`` may wait for the pool: past ``limit`` waiting, refuse."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0


async def ping(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
    if args:
        raise OpError("bad_args", "ping takes no arguments")
    server = ctx.server
    return {"server": server.id, "term": server.node.term, "time": server.reactor.seconds()}


async def work(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
    units = args.get("units", 1)
    if set(args) - {"units"}:
        raise OpError("bad_args", "work takes only 'units'")
    if not isinstance(units, int) or isinstance(units, bool) or not 1 <= units <= MAX_WORK_UNITS:
        raise OpError("bad_args", f"units must be an integer from 1 to {MAX_WORK_UNITS}")
    server = ctx.server
    queue = server.work_queue
    if queue.waiting >= queue.limit:
        raise OpError("busy", "this server has too much work queued; try again later")
    queue.waiting += 1
    started = time.perf_counter()
    try:
        digest = await threads.deferToThreadPool(server.reactor, server.cpu_pool, do_work, units)
    finally:
        queue.waiting -= 1
    return {
        "server": server.id,
        "request_id": ctx.request_id,
        "units": units,
        "digest": digest,
        "seconds": round(time.perf_counter() - started, 6),
    }


async def status(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
    if args:
        raise OpError("bad_args", "status takes no arguments")
    return ctx.server.router.status()


async def recent_runs(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
    """The last handler runs on this server (a query to one server, for debugging and tests)."""
    if args:
        raise OpError("bad_args", "recent_runs takes no arguments")
    runs = [[rid, op, round(started, 6)] for rid, op, started in ctx.server.router.journal]
    return {"server": ctx.server.id, "runs": runs}


def ops(server: Host) -> dict[str, Handler]:
    if not server.test_ops:
        return {"ping": ping, "status": status}
    return {"ping": ping, "work": work, "status": status, "recent_runs": recent_runs}
