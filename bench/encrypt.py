"""Benchmark: end-to-end `encrypt` of a 1 MB photo from 10 concurrent clients.

    python -m bench.encrypt [--mode cluster|inprocess] [--clients 10] [--requests 3] [--servers 3]

``--mode cluster`` (default, what ``make bench-encrypt`` runs): starts a real
cloud of ``--servers`` ``twistd`` servers on free loopback ports (one shared
SQLite directory), registers and signs in one user per client, then every
client, concurrently, ``--requests`` times: offers the photo on its transfer
manager, submits ``encrypt`` through the ``ClientRouter`` and fetches the
result PNG from the server that ran it. A request's latency runs from the
submit to the verified result bytes in hand.

``--mode inprocess``: the same client side against the ``encrypt`` handler
called in this process (real UDP transfers, real process pool, no router and
no directory): the pipeline's own cost, for comparison.

In the same run a single client does the same first (the baseline), so the
figures include the concurrent p50 against the lone client's. Every figure is
one ``name: value`` line. Loops are bounded in count and time.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer, task

from cloudp2p.directory.token_seal import sign_in
from cloudp2p.encryption import keywrap

LOCAL = "127.0.0.1"
PHOTO_BYTES = 1_000_000
PHOTO_SOURCE = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "coffee.png")


def make_photo(target: int = PHOTO_BYTES) -> bytes:
    """A JPEG photograph of about ``target`` bytes (the coffee sample, scaled up)."""
    from PIL import Image

    img = Image.open(PHOTO_SOURCE).convert("RGB")
    img = img.resize((img.width * 4, img.height * 4), Image.Resampling.LANCZOS)
    best = b""
    for quality in range(50, 99, 2):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        best = buf.getvalue()
        if len(best) >= target:
            break
    return best


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Client:
    """One benchmark client: a transfer manager and a way to submit requests."""

    def __init__(self, reactor: Any, submit: Any, token: str) -> None:
        from cloudp2p.transfer import TransferManager

        self.reactor = reactor
        self.submit = submit
        self.token = token
        self.transfers = TransferManager(reactor, interface=LOCAL, max_per_peer=16)

    async def encrypt_once(self, photo: bytes) -> tuple[float, dict[str, Any], int]:
        started = time.monotonic()
        offer = self.transfers.offer(photo, timeout=120)
        try:
            reply = await self.submit(
                "encrypt", {"token": self.token, "image": offer.meta(), "cover": None, "name": "photo.jpg"}
            )
        finally:
            offer.close()
        meta = reply["result"]
        png = await self.transfers.fetch(
            (LOCAL, meta["port"]), meta["transfer_id"], meta["size"], meta["sha256"]
        )
        elapsed = time.monotonic() - started
        if len(base64.b64decode(reply["content_key_sealed"])) != keywrap.SEALED_SIZE or not png.startswith(
            b"\x89PNG"
        ):
            raise RuntimeError("bad encrypt reply")
        return elapsed, reply, len(png)

    def stop(self) -> None:
        self.transfers.stop()


async def run_clients(clients: list[Client], photo: bytes, requests: int, deadline: float) -> dict[str, Any]:
    latencies: list[float] = []
    psnrs: list[float] = []
    sizes: list[int] = []
    errors: list[str] = []

    async def one(client: Client) -> None:
        for _ in range(requests):
            if time.monotonic() > deadline:
                errors.append("deadline")
                return
            try:
                elapsed, reply, size = await client.encrypt_once(photo)
            except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
                errors.append(f"{type(e).__name__}: {e}")
                continue
            latencies.append(elapsed)
            sizes.append(size)
            if reply.get("psnr") is not None:
                psnrs.append(reply["psnr"])

    started = time.monotonic()
    await defer.gatherResults([defer.ensureDeferred(one(c)) for c in clients], consumeErrors=True)
    wall = time.monotonic() - started
    return {"latencies": latencies, "psnrs": psnrs, "sizes": sizes, "errors": errors, "wall": wall}


def report(prefix: str, result: dict[str, Any]) -> None:
    lat = result["latencies"]
    print(f"{prefix}completed: {len(lat)}")
    print(f"{prefix}errors: {len(result['errors'])}")
    if lat:
        print(f"{prefix}p50_latency_s: {percentile(lat, 0.5):.3f}")
        print(f"{prefix}p95_latency_s: {percentile(lat, 0.95):.3f}")
        print(f"{prefix}requests_per_s: {len(lat) / result['wall']:.3f}")
    if result["psnrs"]:
        print(f"{prefix}mean_psnr_db: {statistics.mean(result['psnrs']):.2f}")
    if result["sizes"]:
        print(f"{prefix}result_png_bytes: {int(statistics.mean(result['sizes']))}")
    for err in sorted(set(result["errors"]))[:5]:
        print(f"# {prefix}error: {err}", file=sys.stderr)


async def bench(reactor: Any, args: argparse.Namespace) -> None:
    photo = make_photo()
    print(f"photo_bytes: {len(photo)}")
    cleanup: list[Any] = []
    try:
        if args.mode == "cluster":
            submit, tokens = await start_cluster(reactor, args, cleanup)
        else:
            submit, tokens = await start_inprocess(reactor, args, cleanup)
        clients = [Client(reactor, submit, tokens[i]) for i in range(args.clients)]
        cleanup.extend(c.stop for c in clients)
        deadline = time.monotonic() + args.max_seconds
        # Warm-up: start the worker processes and load the cover library everywhere.
        await run_clients(clients[: args.servers], photo, 1, deadline)
        base = await run_clients(clients[:1], photo, args.requests, deadline)
        report("single_", base)
        result = await run_clients(clients, photo, args.requests, deadline)
        print(f"clients: {args.clients}")
        print(f"servers: {args.servers if args.mode == 'cluster' else 0}")
        report("", result)
        if base["latencies"] and result["latencies"]:
            ratio = percentile(result["latencies"], 0.5) / percentile(base["latencies"], 0.5)
            print(f"p50_vs_single_client: {ratio:.2f}")
            single_rate = len(base["latencies"]) / base["wall"]
            print(
                f"throughput_vs_single_client: {len(result['latencies']) / result['wall'] / single_rate:.2f}"
            )
    finally:
        for stop in reversed(cleanup):
            try:
                d = stop()
                if isinstance(d, defer.Deferred):
                    await d
            except Exception as e:  # noqa: BLE001
                print(f"# cleanup: {e}", file=sys.stderr)


async def start_cluster(reactor: Any, args: argparse.Namespace, cleanup: list[Any]):
    from cloudp2p.encryption.keys import UserKeys
    from cloudp2p.routing.client import ClientRouter
    from cloudp2p.testing.cluster import LocalCluster

    tmp = tempfile.mkdtemp(prefix="cloudp2p-bench-encrypt-")
    if args.keep:
        print(f"# servers' configs and logs kept in {tmp}", file=sys.stderr)
    else:
        cleanup.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    overrides = {
        "directory": {"backend": "sqlite", "path": os.path.join(tmp, "directory.sqlite3"), "scrypt_n": 1024},
        # Every benchmark client is 127.0.0.1: allow them all to transfer at once.
        "transfer": {"max_per_peer": 4 * args.clients},
        "encryption": {"workers": 2},
    }
    cloud = LocalCluster(tmp, args.servers, overrides=overrides)
    cleanup.append(cloud.stop)
    await task.deferLater(reactor, 0, cloud.start)
    await task.deferLater(reactor, 0, cloud.wait_converged)
    router = ClientRouter(reactor, cloud.client_list, timeout=120.0)
    router.start()
    cleanup.append(router.stop)
    tokens = []
    run = os.urandom(3).hex()
    for i in range(args.clients):
        keys = UserKeys.generate().public.to_json()
        name = f"bench{run}{i}"
        await router.submit("register", {"username": name, "password": "benchmark password", "keys": keys})
        session = await sign_in(router, {"username": name, "password": "benchmark password"})
        tokens.append(session["token"])
    return router.submit, tokens


async def start_inprocess(reactor: Any, args: argparse.Namespace, cleanup: list[Any]):
    from cloudp2p.encryption.config import EncryptionSettings
    from cloudp2p.encryption.ops import encrypt
    from cloudp2p.encryption.service import EncryptionEngine
    from cloudp2p.ops import RequestContext
    from cloudp2p.transfer import TransferManager

    async def authenticate(directory: Any, token: str) -> str:
        return token

    class Server:
        pass

    server = Server()
    server.reactor = reactor
    server.directory = None
    server.transfers = TransferManager(reactor, interface=LOCAL, max_per_peer=4 * args.clients)
    server.encryption = EncryptionEngine(reactor, EncryptionSettings(workers=2), authenticate=authenticate)
    server.config = None
    cleanup.append(server.transfers.stop)
    cleanup.append(server.encryption.stop)
    counter = iter(range(10**9))

    def submit(op: str, op_args: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        ctx = RequestContext(request_id=f"bench-{next(counter)}", op=op, client=(LOCAL, 0), server=server)
        return defer.ensureDeferred(encrypt(ctx, op_args))

    return submit, [f"user-{i}" for i in range(args.clients)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.encrypt", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("cluster", "inprocess"), default="cluster")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=3, help="requests per client")
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the servers' configs and logs")
    parser.add_argument(
        "--max-seconds", type=float, default=600.0, help="stop starting new requests after this"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 100 or not 1 <= args.requests <= 50 or not 1 <= args.servers <= 9:
        parser.error("--clients 1..100, --requests 1..50, --servers 1..9")

    async def go(reactor: Any) -> None:
        try:
            await bench(reactor, args)
        except Exception as e:
            print(f"bench.encrypt: failed: {type(e).__name__}: {e}", file=sys.stderr)
            raise SystemExit(1) from None

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))  # exits the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
