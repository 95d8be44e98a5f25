"""Helper process for the crash test: start a registration and stop in the middle of its transaction.

    python -m tests.directory.hold_transaction '<section JSON>' REQUEST_ID USERNAME

It prints ``HOLDING`` once the user row is written but not committed, then sleeps until killed.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time

from twisted.internet import defer, task

from cloudp2p.directory import DirectorySettings, open_store


def hold(op: str) -> None:
    print("HOLDING", op, flush=True)
    time.sleep(120)


async def main(reactor, section: dict, request_id: str, username: str) -> None:
    store = open_store(DirectorySettings(**section), reactor)
    await store.when_ready()
    store.fault_hook = hold
    keys = {name: base64.b64encode(os.urandom(32)).decode() for name in ("x25519", "ed25519")}
    await store.register(request_id, username, "password", keys)
    print("COMMITTED", flush=True)  # only if the parent failed to kill us


if __name__ == "__main__":
    section, request_id, username = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, section, request_id, username)))
