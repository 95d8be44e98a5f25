"""A process that holds the project's transfer ports open for the fuzzer.

    python -m bench.fuzz_transfer_peer

It runs a real ``TransferManager`` on the real reactor (real UDP sockets on
127.0.0.1) and obeys one JSON command per line on stdin, answering one JSON
line on stdout:

- ``{"cmd": "offer", "size": N}`` -> the meta of a new offer of N random bytes
  (kept open until the process ends: no idle timeout);
- ``{"cmd": "fetch", "port": P, "transfer_id": T, "size": N, "sha256": H}`` ->
  ``{"port": <the fetch's own port>}``: starts a fetch from 127.0.0.1:P and
  keeps its outcome (``fetches`` in ``stats``);
- ``{"cmd": "selftest"}`` -> fetches a fresh offer of its own and checks the
  bytes (the transfer code still works after the fuzzing);
- ``{"cmd": "stats"}`` -> the manager's counters and fetch outcomes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

import attrs
from twisted.internet import defer, stdio
from twisted.protocols.basic import LineReceiver

from cloudp2p.transfer import TransferManager
from cloudp2p.transfer.errors import TransferError


class Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.manager = TransferManager(
            reactor,
            chunk_size=1024,
            interface="127.0.0.1",
            offer_timeout=3600.0,
            peer_timeout=3600.0,
        )
        self.offers: list[Any] = []
        self.outcomes: dict[str, str] = {}
        self.fetch_ports: dict[str, int] = {}

    def lineReceived(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            d = defer.maybeDeferred(getattr(self, "do_" + request["cmd"]), request)
        except Exception as e:  # noqa: BLE001 - reported to the fuzzer, never fatal here
            d = defer.fail(e)
        d.addCallbacks(self._answer, lambda f: self._answer({"error": repr(f.value)}))

    def _answer(self, obj: dict[str, Any]) -> None:
        self.sendLine(json.dumps(obj).encode())

    def do_offer(self, request: dict[str, Any]) -> dict[str, Any]:
        offer = self.manager.offer(os.urandom(int(request.get("size", 65536))), timeout=3600.0)
        self.offers.append(offer)
        return offer.meta()

    def do_fetch(self, request: dict[str, Any]) -> dict[str, Any]:
        tid = request["transfer_id"]
        d = self.manager.fetch(("127.0.0.1", request["port"]), tid, request["size"], request["sha256"])
        self.outcomes[tid] = "running"

        def done(data: bytes) -> None:
            self.outcomes[tid] = "ok"

        def failed(f: Any) -> None:
            self.outcomes[tid] = f"failed: {type(f.value).__name__}"

        d.addCallbacks(done, failed)
        fetch = next((f for f in self.manager._fetches if f.transfer_id == tid), None)
        port = fetch.transport.getHost().port if fetch is not None and fetch.transport is not None else None
        return {"port": port}

    async def _selftest(self) -> dict[str, Any]:
        data = os.urandom(300_000)
        offer = self.manager.offer(data, timeout=60.0)
        try:
            got = await self.manager.fetch(
                ("127.0.0.1", offer.port), offer.transfer_id, offer.size, offer.sha256
            )
        except TransferError as e:
            return {"ok": False, "error": str(e)}
        finally:
            offer.close()
        return {"ok": hashlib.sha256(got).digest() == hashlib.sha256(data).digest()}

    def do_selftest(self, request: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        return defer.Deferred.fromCoroutine(self._selftest())

    def do_stats(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "stats": attrs.asdict(self.manager.stats),
            "fetches": dict(self.outcomes),
            "open_offers": sum(1 for o in self.offers if not o.closed),
        }

    def connectionLost(self, reason: Any = None) -> None:
        if self.reactor.running:
            self.reactor.stop()


def main() -> int:
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    stdio.StandardIO(Commands(reactor))
    reactor.callWhenRunning(lambda: print(json.dumps({"ready": True}), flush=True))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
