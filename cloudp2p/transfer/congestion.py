"""The sender's congestion window: additive increase, multiplicative decrease."""

from __future__ import annotations


class Aimd:
    """A congestion window counted in chunks.

    Slow start (``cwnd += acked``) up to ``ssthresh``, then congestion avoidance
    (``cwnd += increase * acked / cwnd``: ``increase`` chunks per round trip).
    A loss event (the caller reports at most one per round trip) multiplies the
    window by ``beta``; a retransmission timeout drops it to ``minimum`` and
    starts slow start again. The window never exceeds ``maximum``, which the
    caller also caps by what the receiver's socket buffer can absorb.
    """

    def __init__(
        self,
        initial: float = 16,
        minimum: float = 2,
        maximum: float = 4096,
        beta: float = 0.5,
        increase: float = 1,
    ) -> None:
        self.minimum = minimum
        self.maximum = max(maximum, minimum)
        self.cwnd = float(min(max(initial, minimum), self.maximum))
        self.ssthresh = float("inf")
        self.beta = beta
        self.increase = increase
        self.loss_events = 0
        self.timeouts = 0

    def on_ack(self, acked: int) -> None:
        if acked <= 0:
            return
        if self.cwnd < self.ssthresh:
            self.cwnd = min(self.cwnd + acked, self.maximum)
        else:
            self.cwnd = min(self.cwnd + self.increase * acked / self.cwnd, self.maximum)

    def on_loss(self) -> None:
        self.loss_events += 1
        self.cwnd = max(self.cwnd * self.beta, self.minimum)
        self.ssthresh = self.cwnd

    def on_timeout(self) -> None:
        self.timeouts += 1
        self.ssthresh = max(self.cwnd * self.beta, self.minimum)
        self.cwnd = self.minimum
