"""``TransferMeta``: what a fetcher needs to pull an offer, as it crosses packages and the network."""

from __future__ import annotations

from typing import Any

import attrs

from cloudp2p.transfer import wire
from cloudp2p.transfer.errors import BadTransferMeta


@attrs.frozen
class TransferMeta:
    """What a fetcher needs, as it travels in JSON: ``{"port", "transfer_id", "size", "sha256"}``."""

    port: int
    transfer_id: str
    size: int
    sha256: str

    @classmethod
    def from_json(cls, obj: Any) -> TransferMeta:
        """Validate a meta dict that came from the network; ``BadTransferMeta`` says what is wrong."""
        if not isinstance(obj, dict):
            raise BadTransferMeta("expected an object with port, transfer_id, size, sha256")
        try:
            port, tid, size, sha = obj["port"], obj["transfer_id"], obj["size"], obj["sha256"]
        except KeyError as e:
            raise BadTransferMeta(f"missing {e.args[0]}") from None
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise BadTransferMeta(f"port must be 1..65535, got {port!r}")
        check_tid(tid)
        check_size(size)
        check_sha(sha)
        return cls(port, tid, size, sha)

    def to_json(self) -> dict[str, Any]:
        return {"port": self.port, "transfer_id": self.transfer_id, "size": self.size, "sha256": self.sha256}


def check_tid(tid: Any) -> None:
    try:
        wire.tid_to_bytes(tid)
    except wire.WireError as e:
        raise BadTransferMeta(str(e)) from None


def check_size(size: Any) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadTransferMeta(f"size must be a whole number of bytes, got {size!r}")


def check_sha(sha: Any) -> None:
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise BadTransferMeta("sha256 must be 64 lower-case hex digits")
