"""Directory benchmark: ``make bench-directory`` (``python -m bench.directory [options]``).

On each backend (SQLite, MariaDB/MySQL), with 100,000 registered users of whom 10,000 are
online (each offering one image with a thumbnail), measure one request at a time the p50/p95
latency of ``sign_in``, ``heartbeat`` and one ``list_online`` page (50 users, from a random
cursor), and print one ``name: value`` line per figure.

``--via cluster`` (the default when the server wires the directory in): through a
``ClientRouter`` against a real 3-server cloud (``twistd`` processes sharing the database).
``--via store``: through the op handlers on a ``Store`` in this process; the lines then carry
a ``_store`` suffix. The users are inserted in bulk (one scrypt hash, computed once with the
production cost, shared by every benchmark user) so that populating takes seconds.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, task

from cloudp2p.directory import default_section, open_store, passwords
from cloudp2p.directory.ops import OPS
from cloudp2p.directory.token_seal import ReplyKey
from cloudp2p.ops import RequestContext

PASSWORD = "bench-password"
MYSQL_SERVER = os.environ.get("CLOUDP2P_BENCH_MYSQL", "mysql://root@127.0.0.1:3306")
CHUNK = 5000


def thumbnail(seed: int) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    image = Image.new("RGB", (64, 64))
    base = [rng.randrange(256) for _ in range(3)]
    image.putdata([((base[0] + x * 3) % 256, (base[1] + y * 3) % 256, (base[2] + x * y) % 256)
                   for y in range(64) for x in range(64)])  # fmt: skip
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def populate(tx: Any, users: int, online: int, now: float, pw_hash: str, thumbs: list[bytes]) -> dict:
    """Bulk insert ``users`` users, ``online`` of them signed in and online with one image each."""
    ids = [str(uuid.UUID(int=random.getrandbits(128), version=4)) for _ in range(users)]
    names = [f"bench{i:06d}" for i in range(users)]
    k = base64.b64encode(bytes(32)).decode()
    for start in range(0, users, CHUNK):
        tx.many(
            "INSERT INTO users (id, username, username_key, password, x25519, ed25519, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (ids[i], names[i], names[i], pw_hash, k, k, now)
                for i in range(start, min(users, start + CHUNK))
            ],
        )
    tokens = [secrets.token_urlsafe(32) for _ in range(online)]
    online_ids = ids[:online]
    for start in range(0, online, CHUNK):
        part = range(start, min(online, start + CHUNK))
        hashes = [hashlib.sha256(tokens[i].encode()).hexdigest() for i in part]
        tx.many(
            "INSERT INTO sessions (token_hash, user_id, created, expires) VALUES (?, ?, ?, ?)",
            [(h, online_ids[i], now, now + 86400) for h, i in zip(hashes, part, strict=True)],
        )
        tx.many(
            "INSERT INTO presence (user_id, token_hash, host, port, last_seen) VALUES (?, ?, ?, ?, ?)",
            [
                (online_ids[i], h, "127.0.0.1", 20000 + i % 40000, now)
                for h, i in zip(hashes, part, strict=True)
            ],
        )
        images = []
        for i in part:
            thumb = thumbs[i % len(thumbs)]
            images.append(
                (str(uuid.uuid4()), online_ids[i], f"holiday {i}.png", 2_000_000, "image/png", thumb, now)
            )
        tx.many(
            "INSERT INTO images (id, owner_id, name, size, mime, thumbnail, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            images,
        )
    return {"names": names, "tokens": tokens, "online_ids": online_ids}


class Direct:
    """Calls the op handlers in this process, as a server's router would."""

    def __init__(self, store: Any) -> None:
        self.server = SimpleNamespace(directory=store)

    def submit(self, op: str, args: dict) -> defer.Deferred:
        ctx = RequestContext(str(uuid.uuid4()), op, ("127.0.0.1", 40000), self.server)
        return defer.Deferred.fromCoroutine(OPS[op](ctx, args))


async def measure(client: Any, data: dict, samples: int, sign_in_samples: int) -> dict[str, list[float]]:
    rng = random.Random(7)
    times: dict[str, list[float]] = {"sign_in": [], "heartbeat": [], "list_online": []}
    page_bytes: list[int] = []
    page_users: list[int] = []
    for _ in range(sign_in_samples):
        name = rng.choice(data["names"])
        t0 = time.perf_counter()
        await client.submit("sign_in", {"username": name, "password": PASSWORD, **ReplyKey().args()})
        times["sign_in"].append(time.perf_counter() - t0)
    for _ in range(samples):
        token = rng.choice(data["tokens"])
        t0 = time.perf_counter()
        await client.submit(
            "heartbeat", {"token": token, "port": rng.randrange(1024, 65535), "host": "127.0.0.1"}
        )
        times["heartbeat"].append(time.perf_counter() - t0)
    ordered = sorted(data["online_ids"])
    for _ in range(samples):
        token = rng.choice(data["tokens"])
        start = rng.randrange(len(ordered))
        args = {"token": token, "limit": 50}
        if start:
            args["cursor"] = f"u.{ordered[start - 1]}"
        t0 = time.perf_counter()
        page = await client.submit("list_online", args)
        times["list_online"].append(time.perf_counter() - t0)
        page_bytes.append(len(json.dumps(page)))
        page_users.append(len(page["users"]))
    times["_page_bytes"] = page_bytes
    times["_page_users"] = page_users
    return times


def drop_mysql_database(name: str) -> None:
    import pymysql

    from cloudp2p.directory.config import parse_mysql_url

    url = parse_mysql_url(f"{MYSQL_SERVER}/{name}")
    conn = pymysql.connect(host=url.host, port=url.port, user=url.user, password=url.password)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def directory_wired() -> bool:
    try:
        from cloudp2p.server import config as server_config
    except ImportError:
        return False
    return "directory" in {s.name for s in server_config.schema().sections}


async def run_backend(reactor: Any, backend: str, opts: argparse.Namespace, work: str) -> dict[str, float]:
    if backend == "sqlite":
        location = {"backend": "sqlite", "path": os.path.join(work, "directory.sqlite3")}
        drop = None
    else:
        name = f"cloudp2p_bench_{os.getpid()}_{secrets.token_hex(4)}"
        location = {"backend": "mysql", "url": f"{MYSQL_SERVER}/{name}"}
        drop = name
    # Everyone stays online for the whole run: the presence TTL is longer than the benchmark.
    section = default_section(**location, presence_ttl=3600.0, pool_size=4)
    store = open_store(section, reactor)
    out: dict[str, float] = {}
    try:
        await store.when_ready()
        pw_hash = passwords.hash_password(PASSWORD, n=section.scrypt_n)
        thumbs = [thumbnail(i) for i in range(16)]
        t0 = time.perf_counter()
        data = await store.db.run(
            populate, opts.users, opts.online, reactor.seconds(), pw_hash, thumbs, write=True
        )
        out["populate_s"] = time.perf_counter() - t0
        out["thumbnail_bytes_avg"] = statistics.mean(len(t) for t in thumbs)
        if opts.via == "cluster":
            from cloudp2p.routing.client import ClientRouter
            from cloudp2p.testing.cluster import LocalCluster

            cloud = LocalCluster(
                os.path.join(work, f"cloud-{backend}"),
                3,
                overrides={
                    "directory": {**location, "presence_ttl": 3600.0},
                    # one client signs in as many users in a row: not an attack here
                    "server": {"auth_source_burst": 100_000, "auth_user_burst": 100_000},
                },
            )
            try:
                cloud.start(60)
                cloud.wait_converged(30)
                router = ClientRouter(reactor, cloud.client_list, timeout=30.0)
                router.start()
                try:
                    times = await measure(router, data, opts.samples, opts.sign_in_samples)
                finally:
                    router.stop()
            finally:
                cloud.stop()
        else:
            times = await measure(Direct(store), data, opts.samples, opts.sign_in_samples)
    finally:
        await store.close()
        if drop:
            drop_mysql_database(drop)

    for op in ("sign_in", "heartbeat", "list_online"):
        out[f"{op}_p50_ms"] = percentile(times[op], 50) * 1000
        out[f"{op}_p95_ms"] = percentile(times[op], 95) * 1000
    out["list_online_page_users_avg"] = statistics.mean(times["_page_users"])
    out["list_online_page_bytes_max"] = max(times["_page_bytes"])
    return out


async def main(reactor: Any, opts: argparse.Namespace) -> None:
    suffix = "" if opts.via == "cluster" else "_store"
    print(f"# {opts.users} users, {opts.online} online, one image each; via {opts.via}", flush=True)
    work = tempfile.mkdtemp(prefix="bench-directory-")
    try:
        for backend in opts.backends:
            try:
                figures = await run_backend(reactor, backend, opts, work)
            except Exception as e:  # noqa: BLE001 - report and go on with the other backend
                print(f"# {backend}: failed: {e!r}", flush=True)
                continue
            for name, value in figures.items():
                print(f"{name}_{backend}{suffix}: {value:.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.directory", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--online", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=300, help="heartbeat and list_online requests")
    parser.add_argument("--sign-in-samples", type=int, default=100, help="sign_in requests (scrypt: slow)")
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "mysql"], default=["sqlite", "mysql"])
    parser.add_argument(
        "--via",
        choices=["auto", "cluster", "store"],
        default="auto",
        help="cluster: through a real 3-server cloud; store: in this process (auto: cluster if wired)",
    )
    opts = parser.parse_args(argv)
    if not 0 < opts.online <= opts.users:
        parser.error("--online must be between 1 and --users")
    if opts.via == "auto":
        opts.via = "cluster" if directory_wired() else "store"
    return opts


if __name__ == "__main__":
    options = parse_args(sys.argv[1:])
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, options)))
