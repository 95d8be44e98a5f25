"""Which encrypt runs next on this server, how much work it has taken on, and when to say ``busy``.

Three rules keep small jobs small (issue 16; docs/encryption.md, "Scheduling"):

* **Work is counted in bytes**: an encrypt's cost is the size of the cover array
  it will write (8 cover samples per hidden byte, or a supplied cover's
  decoded size), estimated from the sizes in the request before anything is
  fetched (``estimate_work``).
* **Smallest first, with ageing**: a job's priority is its admission time plus
  ``cost / ageing_rate``, so a 50 KB photo (0.4 MB of work: +0.02 s) goes
  before a 12-megapixel one (36 MB: +1.8 s) admitted up to 1.8 s earlier, and
  a big job never waits for ever: after ``cost / ageing_rate`` seconds it
  comes before anything newer. The process pool runs waiting jobs in this order.
* **Busy instead of a long queue**: a job whose estimated wait exceeds
  ``busy_after`` seconds is refused with ``Busy`` when the router allows it
  (``RequestContext.may_refuse``); the router then gives it to another
  server, and only when every live server has refused does one take it
  anyway (docs/cluster-router.md). The wait is the work ahead of it, divided
  by the workers' measured throughput: half of what the workers are running
  (on average half done; a running job is never pre-empted) plus every
  admitted job not yet running that comes before it in priority order.

``backlog_seconds()`` (admitted work / throughput) is added to the server's
load, so the coordinator sends new work to the server with the least queued.
The state is per server and in memory only: admitted tickets, released when
their request replies.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import attrs

from cloudp2p.ops import Busy

SAMPLES_PER_HIDDEN_BYTE = 8  # one bit per colour sample
COVER_EXPANSION = 10  # a supplied cover file decodes to about this many times its size
MIN_WORK = 400_000  # the smallest library cover (chelsea, 451x300 RGB)
DEFAULT_RATE = 60e6  # bytes of work per second per worker until jobs have been measured
DEFAULT_AGEING_RATE = 20e6  # bytes of work that count as one second of waiting


def estimate_work(secret_size: int, cover_size: int | None = None) -> int:
    """Bytes of cover array an encrypt of these file sizes will write (hide, encode, check)."""
    need = SAMPLES_PER_HIDDEN_BYTE * max(0, secret_size)
    if cover_size:
        need = max(need, COVER_EXPANSION * cover_size)
    return max(MIN_WORK, need)


@attrs.define(eq=False)
class Ticket:
    """One admitted job: its place in the order and its bytes of work."""

    cost: int
    priority: float
    number: int
    running: bool = False  # a worker has taken it

    def started(self) -> None:
        """The pool's ``on_start``: from now on the job holds a worker whatever its priority."""
        self.running = True


@attrs.define(eq=False)
class Scheduler:
    """Admission and ordering of encrypt jobs on one server (see the module docstring)."""

    clock: Any  # .seconds()
    workers: int
    busy_after: float = 1.0  # seconds of estimated wait before a refusable job is refused
    ageing_rate: float = DEFAULT_AGEING_RATE
    rate_source: Callable[[], float | None] = lambda: None  # measured bytes/s per worker
    _tickets: dict[int, Ticket] = attrs.field(factory=dict)
    _numbers: Any = attrs.field(factory=itertools.count)
    refused: int = 0

    def rate(self) -> float:
        measured = self.rate_source()
        return measured if measured and measured > 0 else DEFAULT_RATE

    def priority(self, cost: int, now: float | None = None) -> float:
        return (self.clock.seconds() if now is None else now) + cost / self.ageing_rate

    def wait_before(self, priority: float) -> float:
        """Estimated seconds until a job of this priority starts (module docstring)."""
        ahead = 0.0
        for t in self._tickets.values():
            if t.running:
                ahead += t.cost / 2
            elif t.priority <= priority:
                ahead += t.cost
        return ahead / (self.rate() * self.workers)

    def admit(self, cost: int, *, may_refuse: bool) -> Ticket:
        """A ticket for a job of ``cost`` bytes, or ``Busy`` (only when ``may_refuse``)."""
        if cost < 0:
            raise ValueError(f"cost must be >= 0, got {cost}")
        priority = self.priority(cost)
        wait = self.wait_before(priority)
        if may_refuse and wait > self.busy_after and self._tickets:
            self.refused += 1
            raise Busy(f"this server would start the job in about {wait:.1f} s; another server will take it")
        ticket = Ticket(cost, priority, next(self._numbers))
        self._tickets[ticket.number] = ticket
        return ticket

    def release(self, ticket: Ticket) -> None:
        self._tickets.pop(ticket.number, None)

    @property
    def admitted(self) -> int:
        return len(self._tickets)

    @property
    def backlog_bytes(self) -> int:
        return sum(t.cost for t in self._tickets.values())

    def backlog_seconds(self) -> float:
        """Admitted work divided by what the workers get through per second: part of the load."""
        return self.backlog_bytes / (self.rate() * self.workers)

    def status(self) -> dict[str, Any]:
        return {
            "admitted": self.admitted,
            "backlog_bytes": self.backlog_bytes,
            "backlog_seconds": round(self.backlog_seconds(), 3),
            "rate_bytes_per_s": round(self.rate()),
            "refused": self.refused,
        }
