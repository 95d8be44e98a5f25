"""What offers, send sessions and fetches use of the ``TransferManager`` that made them.

They are handed the manager typed as ``TransferHost``, so that ``sender`` and ``receiver`` never
import ``manager`` (which imports both): the manager is the one module that knows all three.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import attrs

from cloudp2p.transfer import wire
from cloudp2p.transfer.config import TransferConfig

Address = tuple[str, int]
Progress = Callable[[int, int], object]


@attrs.define
class TransferStats:
    """Counters of what the manager dropped and did (all its ports together)."""

    corrupt: int = 0  # checksum mismatch: corrupted or truncated datagrams
    malformed: int = 0  # bad magic/version/type/length/index: hostile or broken datagrams
    foreign: int = 0  # wrong transfer id, wrong source address, unknown session or nonce
    internal: int = 0  # bugs caught at the protocol edge (logged)
    refused: int = 0  # requests this side refused
    offers: int = 0
    fetches: int = 0
    sessions_done: int = 0
    sessions_failed: int = 0
    dropped_by_hook: int = 0

    def count_wire_error(self, error: wire.WireError) -> None:
        if isinstance(error, wire.ChecksumError):
            self.corrupt += 1
        else:
            self.malformed += 1


class TransferHost(Protocol):
    """The manager as its offers and fetches see it: time, limits, counters, per-peer slots."""

    reactor: Any  # ``callFromThread`` for hashes computed off the reactor
    clock: Any  # ``callLater`` / ``seconds``
    config: TransferConfig
    stats: TransferStats
    hash_pool: ThreadPoolExecutor | None

    def acquire_peer(self, host: str) -> bool:
        """Take one of ``host``'s ``max_per_peer`` transfer slots; False if none is free."""

    def release_peer(self, host: str) -> None:
        """Give back a slot taken by ``acquire_peer``."""

    def offer_closed(self, offer: Any) -> None:
        """An offer closed its port: forget it."""


def not_listening(datagram: bytes, addr: Address) -> None:
    """The write of an offer or fetch before its port is bound."""
    raise OSError("not listening")
