"""Decoded images on screen: kept in memory for the countdown, then forgotten.

A web view never writes the decoded image to a file. ``ShownImages.keep`` holds the
bytes under a random id for ``seconds`` (plus a little grace for the browser to load
it); ``get`` returns them while that lasts. At most ``MAX_SHOWN`` are kept.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable

import attrs

MAX_SHOWN = 8
GRACE = 2.0


@attrs.frozen
class Shown:
    data: bytes
    mime: str
    until: float


class ShownImages:
    def __init__(self, clock: Callable[[], float], seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self._kept: OrderedDict[str, Shown] = OrderedDict()

    def keep(self, data: bytes, mime: str) -> str:
        self._expire()
        key = secrets.token_urlsafe(18)
        self._kept[key] = Shown(data, mime, self.clock() + self.seconds + GRACE)
        while len(self._kept) > MAX_SHOWN:
            self._kept.popitem(last=False)
        return key

    def get(self, key: str) -> Shown | None:
        self._expire()
        return self._kept.get(key)

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._kept.items() if s.until < now]:
            del self._kept[key]

    def __len__(self) -> int:
        self._expire()
        return len(self._kept)
