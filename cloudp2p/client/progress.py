"""A text progress bar for transfers, drawn by the `cloudp2p` command from the daemon's progress lines.

On a terminal the bar is redrawn in place; elsewhere (a pipe, a log file) a
line is printed at the start, every 25 % and at the end, so logs stay short.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def render(label: str, done: int, total: int, width: int = 30, rate: float | None = None) -> str:
    """``label [#########.........]  45%  1.2 MiB / 2.6 MiB``."""
    done = max(0, done)
    fraction = 1.0 if total <= 0 else min(1.0, done / total)
    filled = int(round(fraction * width))
    bar = "#" * filled + "." * (width - filled)
    text = f"{label} [{bar}] {fraction * 100:3.0f}%  {human_size(done)} / {human_size(max(total, 0))}"
    if rate:
        text += f"  {human_size(rate)}/s"
    return text


class ProgressBar:
    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.width = width
        self.clock = clock
        self._label: str | None = None
        self._started = 0.0
        self._last_quarter = -1
        self._drawn = False

    def update(self, label: str, done: int, total: int) -> None:
        now = self.clock()
        if label != self._label:
            self.finish()
            self._label, self._started, self._last_quarter = label, now, -1
        elapsed = now - self._started
        rate = done / elapsed if elapsed > 0.2 else None
        line = render(label, done, total, self.width, rate)
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self._drawn = True
        else:
            quarter = 4 if total <= 0 else min(4, done * 4 // total)
            if quarter != self._last_quarter:
                self._last_quarter = quarter
                self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = False
        self._label = None
