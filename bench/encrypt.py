"""Benchmark: end-to-end `encrypt` of a 1 MB photo from 10 concurrent clients.

    python -m bench.encrypt [--mode cluster|inprocess] [--clients 10] [--requests 3] [--servers 3]
                            [--baseline REF|none] [--writer-sizes 1,4,12]

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

In the same run a single client does the same first, so the figures include
the concurrent p50 against the lone client's.

``--baseline old-encrypt`` (cluster mode, the default): the same benchmark is
first run against servers that encrypt the way they did before issue 16
(``[encryption] png_writer = "pillow"``, ``queue_order = "arrival"``: Pillow's
PNG encoder, one first-come-first-served queue, never busy), and every figure
is printed again as ``baseline_NAME``, with ``NAME_vs_baseline`` ratios: the
old path and the new one, on the same machine in the same run. ``--baseline
REF`` runs REF's own servers instead (its ``cloudp2p`` package from ``git
archive``, first on their ``PYTHONPATH``; the clients are this tree's), which
works while REF speaks today's protocol: ``07a4944`` (main before issue 16)
did until the sealed sign-in tokens of issue 11. ``none`` skips it.

Before the cloud starts, the PNG writer is compared with Pillow's level 1 on
stego covers of ``--writer-sizes`` megapixels (``bench.stego.png_figures``),
and the viewer's side is timed on the result of a 1 MB photo, with the fast
PNG reader and writer and with Pillow's (the path before issue 16): ``grant``
(the owner's accept: decode, write the wrapped key, encode) and
``open_for_view`` (decode, use a view, encode), ``container_*`` lines.

Every figure is one ``name: value`` line. Loops are bounded in count and time.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer, task, threads

from cloudp2p.directory.token_seal import sign_in
from cloudp2p.encryption import keywrap

LOCAL = "127.0.0.1"
OLD_ENCRYPT = {"png_writer": "pillow", "queue_order": "arrival"}  # the encrypt path before issue 16
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
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


def report(prefix: str, result: dict[str, Any]) -> dict[str, float]:
    """Print the figures of one phase; return them by name (without ``prefix``'s ``baseline_``)."""
    lat = result["latencies"]
    figures: dict[str, float] = {"completed": len(lat), "errors": len(result["errors"])}
    if lat:
        figures["p50_latency_s"] = percentile(lat, 0.5)
        figures["p95_latency_s"] = percentile(lat, 0.95)
        figures["requests_per_s"] = len(lat) / result["wall"]
    if result["psnrs"]:
        figures["mean_psnr_db"] = statistics.mean(result["psnrs"])
    if result["sizes"]:
        figures["result_png_bytes"] = int(statistics.mean(result["sizes"]))
    formats = {"completed": "{:d}", "errors": "{:d}", "mean_psnr_db": "{:.2f}", "result_png_bytes": "{:d}"}
    for name, value in figures.items():
        text = formats.get(name, "{:.3f}").format(int(value) if formats.get(name) == "{:d}" else value)
        print(f"{prefix}{name}: {text}")
    for err in sorted(set(result["errors"]))[:5]:
        print(f"# {prefix}error: {err}", file=sys.stderr)
    base = prefix.removeprefix("baseline_")
    return {base + name: value for name, value in figures.items()}


def snapshot(ref: str, into: str) -> str:
    """REF's ``cloudp2p`` package extracted under ``into`` (a directory to put on PYTHONPATH)."""
    archive = subprocess.run(
        ["git", "-C", REPO, "archive", "--format=tar", ref, "cloudp2p"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", into], input=archive.stdout, check=True)
    return into


def writer_figures(sizes: list[float]) -> None:
    """The fast PNG writer against Pillow level 1 on stego covers (bench-stego's figures)."""
    from bench.stego import cover_of, png_figures
    from cloudp2p.stego import engine

    for mp in sizes:
        cover = cover_of(mp)
        stego = engine.embed(cover, os.urandom(engine.capacity_bits(cover.shape) // 16), b"bench-encrypt")
        png_figures(stego, f"{mp:g}mp", 3)


def container_figures(photo: bytes, repeat: int = 3) -> None:
    """``grant`` and ``open_for_view`` on a 1 MB photo's container: fast PNG path against Pillow's."""
    import math

    from bench.stego import best_of
    from cloudp2p.encryption import container
    from cloudp2p.encryption.keys import UserKeys
    from cloudp2p.encryption.ledger import Ledger
    from cloudp2p.stego import imaging

    owner, viewer = UserKeys.generate(), UserKeys.generate()
    sealed = container.seal_job(photo, None)
    tmp = tempfile.mkdtemp(prefix="cloudp2p-bench-view-")
    fast_reader = imaging.png_to_array

    def pillow_reader(data: bytes, *, max_pixels: int = imaging.DEFAULT_MAX_PIXELS):
        return imaging.to_cover_array(imaging.load_image(data, max_pixels=max_pixels))

    def grant(writer: str) -> bytes:
        carrier = container.load_carrier(sealed.png)
        container.grant_carrier(
            carrier,
            sealed.content_key,
            owner_ed25519=owner.ed25519_private,
            owner_id="owner",
            viewer_id="viewer",
            viewer_x25519_pub=viewer.public.x25519,
            views=10**6,
        )
        return container.save_carrier(carrier, writer=writer)

    def view(copy: bytes, writer: str, ledger: Ledger) -> bytes:
        carrier = container.load_carrier(copy)
        image, _, changed = container.view_carrier(
            carrier,
            viewer_x25519=viewer.x25519_private,
            viewer_id="viewer",
            owner_id="owner",
            owner_ed25519_pub=owner.public.ed25519,
            ledger=ledger,
        )
        assert image == photo and changed
        return container.save_carrier(carrier, writer=writer)

    times = {}
    try:
        for path, writer, reader in (("pillow", "pillow", pillow_reader), ("fast", "fast", fast_reader)):
            imaging.png_to_array = reader  # container.load_carrier reads through it
            try:
                grant_s, copy = best_of(repeat, grant, writer)
                ledger = Ledger(os.path.join(tmp, f"ledger-{path}.json"))
                view_s, _ = best_of(repeat, view, copy, writer, ledger)
            finally:
                imaging.png_to_array = fast_reader
            times[path] = (grant_s, view_s)
            print(f"container_grant_ms_{path}: {grant_s * 1e3:.1f}")
            print(f"container_view_ms_{path}: {view_s * 1e3:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for i, name in enumerate(("grant", "view")):
        ratio = times["pillow"][i] / times["fast"][i] if times["fast"][i] else math.nan
        print(f"container_{name}_speedup: {ratio:.2f}")


async def run_once(
    reactor: Any,
    args: argparse.Namespace,
    photo: bytes,
    prefix: str,
    baseline_path: str | None,
    encryption: dict[str, Any] | None = None,
):
    """One cloud, warm-up, one client alone, then all clients; prints the figures, returns them."""
    cleanup: list[Any] = []
    figures: dict[str, float] = {}
    try:
        if args.mode == "cluster":
            submit, tokens = await start_cluster(reactor, args, cleanup, baseline_path, encryption)
        else:
            submit, tokens = await start_inprocess(reactor, args, cleanup)
        clients = [Client(reactor, submit, tokens[i]) for i in range(args.clients)]
        cleanup.extend(c.stop for c in clients)
        deadline = time.monotonic() + args.max_seconds
        # Warm-up: start the worker processes and load the cover library everywhere.
        await run_clients(clients[: max(args.servers, 2 * args.servers)], photo, 1, deadline)
        base = await run_clients(clients[:1], photo, args.requests, deadline)
        figures.update(report(prefix + "single_", base))
        result = await run_clients(clients, photo, args.requests, deadline)
        print(f"{prefix}clients: {args.clients}")
        print(f"{prefix}servers: {args.servers if args.mode == 'cluster' else 0}")
        figures.update(report(prefix, result))
        if base["latencies"] and result["latencies"]:
            ratio = percentile(result["latencies"], 0.5) / percentile(base["latencies"], 0.5)
            print(f"{prefix}p50_vs_single_client: {ratio:.2f}")
            single_rate = len(base["latencies"]) / base["wall"]
            print(
                f"{prefix}throughput_vs_single_client: "
                f"{len(result['latencies']) / result['wall'] / single_rate:.2f}"
            )
    finally:
        for stop in reversed(cleanup):
            try:
                d = stop()
                if isinstance(d, defer.Deferred):
                    await d
            except Exception as e:  # noqa: BLE001
                print(f"# cleanup: {e}", file=sys.stderr)
    return figures


async def bench(reactor: Any, args: argparse.Namespace) -> None:
    photo = make_photo()
    print(f"photo_bytes: {len(photo)}")
    sizes = [float(x) for x in args.writer_sizes.split(",") if x.strip()]
    if sizes:
        await threads.deferToThread(writer_figures, sizes)
        await threads.deferToThread(container_figures, photo)
    old: dict[str, float] = {}
    if args.mode == "cluster" and args.baseline == "old-encrypt":
        print("baseline: old-encrypt")
        old = await run_once(reactor, args, photo, "baseline_", None, OLD_ENCRYPT)
    elif args.mode == "cluster" and args.baseline != "none":
        tmp = tempfile.mkdtemp(prefix="cloudp2p-bench-baseline-")
        try:
            try:
                path = snapshot(args.baseline, tmp)
            except (OSError, subprocess.CalledProcessError) as e:
                print(f"# baseline {args.baseline} unavailable: {e}", file=sys.stderr)
            else:
                print(f"baseline_ref: {args.baseline}")
                old = await run_once(reactor, args, photo, "baseline_", path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    new = await run_once(reactor, args, photo, "", None)
    for name in (
        "requests_per_s",
        "single_p50_latency_s",
        "p50_latency_s",
        "p95_latency_s",
        "result_png_bytes",
    ):
        if old.get(name) and new.get(name):
            print(f"{name}_vs_baseline: {new[name] / old[name]:.2f}")


async def start_cluster(
    reactor: Any,
    args: argparse.Namespace,
    cleanup: list[Any],
    pythonpath: str | None = None,
    encryption: dict[str, Any] | None = None,
):
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
        "encryption": {"workers": 2, **(encryption or {})},
        # Every benchmark client registers and signs in from 127.0.0.1 at once: not the password
        # guessing the per-source limit is there for.
        "server": {"auth_source_burst": 1000, "auth_user_burst": 1000},
    }
    cloud = LocalCluster(tmp, args.servers, overrides=overrides)
    if pythonpath is not None:  # the baseline: the servers run another tree's cloudp2p package
        for server in cloud.servers.values():
            server.env = {**os.environ, "PYTHONPATH": pythonpath}
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
    from cloudp2p.encryption.keys import UserKeys
    from cloudp2p.encryption.ops import encrypt
    from cloudp2p.encryption.service import EncryptionEngine, Owner
    from cloudp2p.ops import RequestContext
    from cloudp2p.transfer import TransferManager

    owner_key = UserKeys.generate().public.x25519

    async def authenticate(directory: Any, token: str) -> Owner:
        return Owner(token, owner_key)

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
        "--baseline", default="old-encrypt", help="old-encrypt (default), a git ref to run, or none"
    )
    parser.add_argument(
        "--writer-sizes", default="1,4,12", help="megapixels for the PNG writer figures, or ''"
    )
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
