"""This server's load: the CPU load average per core, a weight per request in flight, and queued work.

Servers that share one host see the same load average; their own in-flight
work is what tells them apart. Queued work (``backlog``: seconds of encrypt
work admitted and not finished, from the encryption scheduler) counts one
load unit per second, so that a server with a few 12-megapixel jobs queued
weighs more than one with a few directory requests in flight. Lower load means higher priority (ties broken
by the lower server id, see ``election.priority_key``); the load is only ever
compared, never divided by, so an idle host gets no infinite priority.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import psutil
from twisted.logger import Logger

DEFAULT_INFLIGHT_WEIGHT = 0.25
DEFAULT_BACKLOG_WEIGHT = 1.0  # load units per second of queued work


def cpu_load() -> float:
    """The 1-minute load average divided by the number of logical CPUs (0.0 = idle, 1.0 = all busy).

    Reads /proc/loadavg on Linux: cheap and non-blocking, fine on the reactor thread.
    """
    one_minute = psutil.getloadavg()[0]
    return one_minute / (psutil.cpu_count() or os.cpu_count() or 1)


class LoadMeter:
    """``current() = cpu() + weight * inflight() + backlog_weight * backlog()``, finite and >= 0."""

    log = Logger()

    def __init__(
        self,
        inflight: Callable[[], int],
        cpu: Callable[[], float] = cpu_load,
        *,
        weight: float = DEFAULT_INFLIGHT_WEIGHT,
        backlog: Callable[[], float] = lambda: 0.0,
        backlog_weight: float = DEFAULT_BACKLOG_WEIGHT,
    ) -> None:
        for name, value in (("in-flight", weight), ("backlog", backlog_weight)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"the {name} weight must be a finite number >= 0, got {value!r}")
        self.inflight = inflight
        self.cpu = cpu
        self.weight = weight
        self.backlog = backlog
        self.backlog_weight = backlog_weight

    def current(self) -> float:
        try:
            cpu = float(self.cpu())
        except Exception:
            self.log.failure("reading the CPU load failed; counting it as 0")
            cpu = 0.0
        if not math.isfinite(cpu) or cpu < 0:
            cpu = 0.0
        try:
            queued = float(self.backlog())
        except Exception:
            self.log.failure("reading the work backlog failed; counting it as 0")
            queued = 0.0
        if not math.isfinite(queued) or queued < 0:
            queued = 0.0
        return cpu + self.weight * max(0, int(self.inflight())) + self.backlog_weight * queued

    __call__ = current
