"""Server-sent events: the page learns at once when a request, a grant or rights arrive.

The daemon's state tells ``EventHub.state_changed`` which section changed; every
open ``/api/events`` stream gets ``event: change`` with ``{"section": ...}`` (no peer
data: the page asks the API for the new content). Command progress goes out as
``event: progress``. Streams are few (``MAX_STREAMS``) and get a comment line every
``KEEPALIVE`` seconds so that dead ones are noticed.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import task
from twisted.logger import Logger

MAX_STREAMS = 16
KEEPALIVE = 15.0
LIVE_SECTIONS = frozenset({"images", "grants", "received", "inbox", "outbox"})


class EventHub:
    log = Logger()

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.streams: set[Any] = set()
        self._keepalive: task.LoopingCall | None = None

    def start(self) -> None:
        self._keepalive = task.LoopingCall(self._ping)
        self._keepalive.clock = self.reactor
        self._keepalive.start(KEEPALIVE, now=False)

    def stop(self) -> None:
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        for request in list(self.streams):
            self._drop(request)
            request.finish()

    def full(self) -> bool:
        return len(self.streams) >= MAX_STREAMS

    def add(self, request: Any) -> None:
        """Keep ``request`` (headers already set) open as an event stream."""
        self.streams.add(request)
        request.write(b"retry: 2000\n\n")
        request.notifyFinish().addBoth(lambda _: self._drop(request))

    def _drop(self, request: Any) -> None:
        self.streams.discard(request)

    def state_changed(self, section: str) -> None:
        if section in LIVE_SECTIONS:
            self.publish("change", {"section": section})

    def publish(self, event: str, data: dict[str, Any]) -> None:
        frame = f"event: {event}\ndata: {json.dumps(data, sort_keys=True)}\n\n".encode()
        self._send(frame)

    def _ping(self) -> None:
        self._send(b": keepalive\n\n")

    def _send(self, frame: bytes) -> None:
        for request in list(self.streams):
            try:
                request.write(frame)
            except Exception:  # a stream that went away between two events
                self._drop(request)
