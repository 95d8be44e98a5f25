"""The sender's congestion window: additive increase, multiplicative decrease scaled by the loss rate."""

from __future__ import annotations


class Aimd:
    """A congestion window counted in chunks.

    Slow start (``cwnd += acked``) up to ``ssthresh``, then congestion avoidance
    (``cwnd += increase * acked / cwnd``: ``increase`` chunks per round trip).

    A loss event (the caller reports at most one per window of data) cuts the
    window by a factor that depends on how much is being lost, as DCTCP does
    with its congestion marks: ``cwnd *= 1 - alpha / 2`` where ``alpha`` is a
    moving average of the fraction of chunks lost per round trip (``on_round``).
    It starts at 1, so the first loss halves the window as Reno would; a path
    that drops heavily (a full queue) keeps ``alpha`` high and the window is
    halved on every loss event; a path with light random loss (radio, or the
    benchmark's 5 % drop) keeps ``alpha`` near its loss rate and the sender
    keeps most of its window. A retransmission timeout drops the window to
    ``minimum`` and starts slow start again. The window never exceeds
    ``maximum``, which the caller also caps by the receiver's socket buffer.
    """

    def __init__(
        self,
        initial: float = 16,
        minimum: float = 2,
        maximum: float = 4096,
        increase: float = 1,
        gain: float = 1 / 4,
    ) -> None:
        self.minimum = minimum
        self.maximum = max(maximum, minimum)
        self.cwnd = float(min(max(initial, minimum), self.maximum))
        self.ssthresh = float("inf")
        self.increase = increase
        self.gain = gain
        self.alpha = 1.0
        self.loss_events = 0
        self.timeouts = 0

    def on_ack(self, acked: int) -> None:
        if acked <= 0:
            return
        if self.cwnd < self.ssthresh:
            self.cwnd = min(self.cwnd + acked, self.maximum)
        else:
            self.cwnd = min(self.cwnd + self.increase * acked / self.cwnd, self.maximum)

    def on_round(self, lost: int, sent: int) -> None:
        """One round trip's worth of data is acknowledged: fold its loss fraction into ``alpha``."""
        if sent > 0:
            fraction = min(1.0, lost / sent)
            self.alpha += self.gain * (fraction - self.alpha)

    def on_loss(self) -> None:
        self.loss_events += 1
        self.cwnd = max(self.cwnd * (1 - self.alpha / 2), self.minimum)
        self.ssthresh = self.cwnd

    def on_timeout(self) -> None:
        self.timeouts += 1
        self.ssthresh = max(self.cwnd / 2, self.minimum)
        self.cwnd = self.minimum
