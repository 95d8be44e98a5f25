"""Retransmission timeout from measured round-trip times (RFC 6298)."""

from __future__ import annotations

ALPHA = 1 / 8
BETA = 1 / 4
K = 4
GRANULARITY = 0.001  # G: the clock granularity we assume (1 ms)


class RttEstimator:
    """SRTT / RTTVAR smoothing, RTO with a floor and a ceiling, exponential backoff.

    Callers apply Karn's rule: ``sample()`` only with the RTT of a chunk that was
    sent exactly once (an ack for a retransmitted chunk is ambiguous).
    """

    def __init__(self, initial_rto: float = 1.0, min_rto: float = 0.2, max_rto: float = 60.0) -> None:
        self.min_rto = min_rto
        self.max_rto = max(max_rto, min_rto)
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self._base = self._clamp(initial_rto)
        self.backoffs = 0
        self.samples = 0

    def _clamp(self, rto: float) -> float:
        return min(self.max_rto, max(self.min_rto, rto))

    def sample(self, rtt: float) -> None:
        """Fold in one measurement (seconds) (RFC 6298 2.2 and 2.3); clears the backoff."""
        if rtt < 0:
            return
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            assert self.rttvar is not None
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt
        self._base = self._clamp(self.srtt + max(GRANULARITY, K * self.rttvar))
        self.backoffs = 0
        self.samples += 1

    def backoff(self) -> None:
        """A retransmission timer expired: double the timeout (RFC 6298 5.5)."""
        self.backoffs += 1

    @property
    def rto(self) -> float:
        return self._clamp(self._base * (2 ** min(self.backoffs, 16)))
