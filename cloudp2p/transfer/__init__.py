"""Reliable chunked transfers over UDP, each on its own OS-allocated port (issue 4).

    manager = TransferManager(reactor, chunk_size=1200)
    offer = manager.offer(data)                 # the side that has the bytes
    meta = offer.meta()                         # {"port", "transfer_id", "size", "sha256"} -> JSON
    d = manager.fetch((host, meta["port"]), meta["transfer_id"], meta["size"], meta["sha256"])
    d = manager.fetch_to_file(path, (host, port), transfer_id, size, sha256, progress=cb)  # resumable

See docs/transfer.md for the datagram format and the state machines.
"""

from cloudp2p.transfer.config import DEFAULT_CHUNK_SIZE, LAN_CHUNK_SIZE, SECTION, TransferConfig
from cloudp2p.transfer.errors import (
    BadTransferMeta,
    FileTooLarge,
    IntegrityError,
    TooManyTransfers,
    TransferAborted,
    TransferError,
    TransferRefused,
    TransferTimeout,
)
from cloudp2p.transfer.host import TransferStats
from cloudp2p.transfer.manager import TransferManager
from cloudp2p.transfer.meta import TransferMeta
from cloudp2p.transfer.sender import Offer

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "LAN_CHUNK_SIZE",
    "SECTION",
    "BadTransferMeta",
    "FileTooLarge",
    "IntegrityError",
    "Offer",
    "TooManyTransfers",
    "TransferAborted",
    "TransferConfig",
    "TransferError",
    "TransferManager",
    "TransferMeta",
    "TransferRefused",
    "TransferStats",
    "TransferTimeout",
]
