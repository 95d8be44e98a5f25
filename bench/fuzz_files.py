"""The file readers under hostile input: images, containers, rights blobs.

Readers and what they may raise (anything else is a failure):

- ``image``: ``cloudp2p.stego.imaging.load_image`` on corrupted PNG and JPEG
  files: bit flips, truncation, byte edits, PNG chunk edits with the CRC fixed
  (so the decoder goes past the checksum), IHDR/SOF headers declaring huge or
  zero dimensions, chunks duplicated, dropped or reordered; only
  ``InvalidImage``.
- ``container``: the hidden container stream read through the viewer's and the
  owner's paths (``peek_carrier``, ``status_carrier``, ``view_carrier``,
  ``open_own_carrier``) over a ``BytesCarrier`` holding a real granted
  container with bytes flipped, cut, edited or replaced; only the project's own
  errors (``CloudP2PError`` subclasses).
- ``container_png``: the same on whole PNG files (``peek``, ``open_own``):
  corrupted PNG bytes and valid PNGs whose hidden bits were corrupted.
- ``rights``: ``SignedRights.from_bytes`` and ``verify`` on mutated blobs;
  only ``RightsError``.

The readers run in a child process with an address-space limit
(``MEMORY_LIMIT``) and a per-input alarm (``INPUT_TIMEOUT``): a hang or a
memory blow-up is reported as a failure instead of stopping the run.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import random
import resource
import signal
import struct
import tempfile
import time
import traceback
import zlib
from collections import Counter
from typing import Any

from bench.fuzz_gen import Mutator

MEMORY_LIMIT = 3 * 1024**3
INPUT_TIMEOUT = 10.0


class InputTimeout(Exception):
    pass


# -- seed files ---------------------------------------------------------------------------------------------


def seed_images(rng: random.Random) -> dict[str, bytes]:
    import numpy as np
    from PIL import Image

    gen = np.random.default_rng(rng.randrange(2**32))
    out: dict[str, bytes] = {}

    def save(name: str, img: Any, fmt: str, **kw: Any) -> None:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        out[name] = buf.getvalue()

    rgb = Image.fromarray(gen.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    save("rgb.png", rgb, "PNG")
    save("rgba.png", Image.fromarray(gen.integers(0, 255, (16, 16, 4), dtype=np.uint8)), "PNG")
    save("l16.png", Image.fromarray(gen.integers(0, 65535, (16, 16), dtype=np.uint16)), "PNG")
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    save("palette.png", pal, "PNG", transparency=0)
    save("interlaced.png", rgb, "PNG", optimize=False)
    save("base.jpg", rgb, "JPEG", quality=80)
    save("progressive.jpg", rgb, "JPEG", quality=70, progressive=True)
    save("gray.jpg", rgb.convert("L"), "JPEG")
    return out


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    pos, chunks = 8, []
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunks.append((kind, data[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return chunks


def png_build(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, body in chunks:
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
    return b"".join(out)


def mutate_png_chunks(m: Mutator, data: bytes) -> tuple[str, bytes]:
    chunks = png_chunks(data)
    if not chunks:
        return "bitflip", m.bitflip(data)
    op = m.rng.randrange(6)
    if op == 0:  # huge or zero dimensions declared in IHDR, the CRC fixed
        kind, body = chunks[0]
        w = m.rng.choice((0, 1, 65535, 2**31 - 1, 2**32 - 1, 100_000))
        h = m.rng.choice((0, 1, 65535, 2**31 - 1, 2**32 - 1, 100_000))
        chunks[0] = (kind, struct.pack(">II", w, h) + body[8:])
        return "huge_dimensions", png_build(chunks)
    if op == 1:  # a chunk's data edited, CRC fixed
        i = m.rng.randrange(len(chunks))
        kind, body = chunks[i]
        chunks[i] = (kind, m.byte_edit(body) if m.rng.random() < 0.5 else m.bitflip(body))
        return "chunk_edit", png_build(chunks)
    if op == 2:  # drop a chunk
        del chunks[m.rng.randrange(len(chunks))]
        return "chunk_drop", png_build(chunks)
    if op == 3:  # duplicate a chunk
        i = m.rng.randrange(len(chunks))
        chunks.insert(m.rng.randrange(len(chunks) + 1), chunks[i])
        return "chunk_dup", png_build(chunks)
    if op == 4:  # reorder
        m.rng.shuffle(chunks)
        return "chunk_reorder", png_build(chunks)
    # a decompression bomb: a valid IDAT of zeros for a large declared image
    return "bomb", _bomb(m.rng.choice((3000, 8000, 20000)))


_BOMBS: dict[int, bytes] = {}


def _bomb(side: int) -> bytes:
    if side not in _BOMBS:
        raw = zlib.compress(b"\x00" * min((side * 3 + 1) * side, 64 * 1024 * 1024), 9)
        chunks = [
            (b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)),
            (b"IDAT", raw),
            (b"IEND", b""),
        ]
        _BOMBS[side] = png_build(chunks)
    return _BOMBS[side]


def mutate_jpeg(m: Mutator, data: bytes) -> tuple[str, bytes]:
    sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    if sof > 0 and m.rng.random() < 0.5:
        out = bytearray(data)
        h = m.rng.choice((0, 1, 65535, 30000))
        w = m.rng.choice((0, 1, 65535, 30000))
        out[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
        return "huge_dimensions", bytes(out)
    markers = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] not in (0, 0xFF)]
    if markers and m.rng.random() < 0.5:
        i = m.rng.choice(markers)
        out = bytearray(data)
        out[i + 1] = m.rng.choice((0xC0, 0xC2, 0xC4, 0xDB, 0xDA, 0xD9, 0xD8, 0xE1, 0xFE, 0xDD))
        return "marker_edit", bytes(out)
    return "bitflip", m.bitflip(data)


def mutate_file(m: Mutator, data: bytes) -> tuple[str, bytes]:
    r = m.rng.random()
    if r < 0.2:
        return "truncated", m.truncate(data)
    if r < 0.4:
        return "bitflip", m.bitflip(data)
    if r < 0.5:
        return "bytes", m.byte_edit(data)
    if r < 0.52:
        return "random", m.random_bytes()
    if data.startswith(b"\x89PNG"):
        return mutate_png_chunks(m, data)
    return mutate_jpeg(m, data)


# -- the worker ---------------------------------------------------------------------------------------------


def _alarm(signum: int, frame: Any) -> None:
    raise InputTimeout()


def _classify(
    outcomes: Counter[str],
    failures: list[str],
    reader: str,
    kind: str,
    fn: Any,
    allowed: tuple[type, ...],
    sample: bytes,
) -> None:
    signal.setitimer(signal.ITIMER_REAL, INPUT_TIMEOUT)
    try:
        fn()
        outcomes[f"{reader}:accepted"] += 1
    except allowed as e:
        outcomes[f"{reader}:{type(e).__name__}"] += 1
    except InputTimeout:
        outcomes[f"{reader}:TIMEOUT"] += 1
        failures.append(f"{reader}/{kind}: no result after {INPUT_TIMEOUT} s ({len(sample)} bytes)")
    except MemoryError:
        outcomes[f"{reader}:MemoryError"] += 1
        failures.append(f"{reader}/{kind}: MemoryError ({len(sample)} bytes)")
    except Exception as e:  # noqa: BLE001 - this is what the fuzzer looks for
        outcomes[f"{reader}:BUG:{type(e).__name__}"] += 1
        if len(failures) < 50:
            tb = traceback.format_exc(limit=-3).strip().splitlines()
            failures.append(
                f"{reader}/{kind}: {type(e).__name__}: {e} | {' / '.join(tb[-4:])}"
                f" | input {sample[:48].hex()}... ({len(sample)} bytes)"
            )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _work(count: int, seconds: float, seed: int, conn: Any) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, _alarm)
    import numpy as np

    from cloudp2p.encryption import container as ct
    from cloudp2p.encryption import format as fmt
    from cloudp2p.encryption.keys import UserKeys
    from cloudp2p.encryption.ledger import Ledger
    from cloudp2p.encryption.rights import RightsError, SignedRights
    from cloudp2p.errors import CloudP2PError, InvalidImage
    from cloudp2p.stego.imaging import load_image

    deadline = time.monotonic() + seconds
    rng = random.Random(seed)
    m = Mutator(seed, max_size=200_000)
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    failures: list[str] = []
    sent: Counter[str] = Counter()

    # Seeds: images, a real container granted to a viewer (over bytes and inside a PNG), rights.
    images = list(seed_images(rng).values())
    owner, viewer = UserKeys.generate(), UserKeys.generate()
    secret = images[0]
    buffer = bytearray(os.urandom(1500 + len(secret)))
    sealed = ct.seal_carrier(fmt.BytesCarrier(buffer), ct.prepare_secret(secret))
    ct.grant_carrier(
        fmt.BytesCarrier(buffer),
        sealed.content_key,
        owner_ed25519=owner.ed25519_private,
        owner_id="owner",
        viewer_id="viewer",
        viewer_x25519_pub=viewer.public.x25519,
        views=5,
    )
    container = bytes(buffer)
    cover = np.random.default_rng(seed).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    sealed_png = ct.seal(secret, cover)
    granted_png = ct.grant(
        sealed_png.png,
        sealed_png.content_key,
        owner_ed25519=owner.ed25519_private,
        owner_id="owner",
        viewer_id="viewer",
        viewer_x25519_pub=viewer.public.x25519,
        views=5,
    )
    blob = ct.sign_rights(
        owner_ed25519=owner.ed25519_private,
        owner_id="owner",
        viewer_id="viewer",
        image_id=sealed.image_id,
        payload_hash=sealed.payload_hash,
        views=5,
        version=1,
    )
    tmp = tempfile.mkdtemp(prefix="cp2p-fuzz-ledger-")
    allowed = (CloudP2PError,)

    def view(carrier: Any) -> None:
        ledger = Ledger(os.path.join(tmp, "ledger.json"))
        ct.peek_carrier(carrier, viewer.x25519_private)
        as_viewer = ct.Viewer(viewer.x25519_private, "viewer", "owner", owner.public.ed25519, ledger)
        ct.status_carrier(carrier, as_viewer)
        ct.view_carrier(carrier, as_viewer)

    readers = ("image", "container", "container_png", "rights")
    per_reader = {"image": count, "container": count, "container_png": max(1, count // 10), "rights": count}
    for reader in readers:
        while sent[reader] < per_reader[reader] and time.monotonic() < deadline:
            sent[reader] += 1
            if reader == "image":
                kind, data = mutate_file(m, rng.choice(images))
                kinds[kind] += 1
                _classify(
                    outcomes, failures, reader, kind, lambda d=data: load_image(d), (InvalidImage,), data
                )
            elif reader == "container":
                r = rng.random()
                if r < 0.7:  # damage inside the regions that are read
                    kind, data = (
                        ("bitflip", m.bitflip(container[:600]))
                        if r < 0.35
                        else ("bytes", m.byte_edit(container[:600]))
                    )
                    data = data + container[len(data) :] if len(data) < len(container) else data
                elif r < 0.85:
                    kind, data = "truncated", m.truncate(container)
                else:
                    kind, data = "random", m.rng.randbytes(m.rng.choice((0, 60, 452, 2000, len(container))))
                kinds["container_" + kind] += 1

                def run(d: bytes = data) -> None:
                    view(fmt.BytesCarrier(bytearray(d)))
                    ct.open_own_carrier(fmt.BytesCarrier(bytearray(d)), sealed.content_key)

                _classify(outcomes, failures, reader, kind, run, allowed, data)
            elif reader == "container_png":
                if rng.random() < 0.5:
                    kind, data = mutate_file(m, granted_png)
                else:  # a valid PNG whose hidden container bits are damaged
                    carrier = ct.load_carrier(granted_png)
                    hidden = carrier.read(0, 600)
                    carrier.write(0, m.bitflip(hidden))
                    kind, data = "hidden_bitflip", ct.save_carrier(carrier)
                kinds["png_" + kind] += 1

                def run_png(d: bytes = data) -> None:
                    ct.peek(d, viewer.x25519_private)
                    ct.open_own(d, sealed_png.content_key)

                _classify(outcomes, failures, reader, kind, run_png, allowed, data)
            else:
                kind, data = m.mutate([blob], limit=300)
                kinds["rights_" + kind] += 1

                def run_rights(d: bytes = data) -> None:
                    SignedRights.from_bytes(d).verify(owner.public.ed25519)

                _classify(outcomes, failures, reader, kind, run_rights, (RightsError,), data)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conn.send(
        json.dumps(
            {
                "sent": dict(sent),
                "outcomes": dict(outcomes),
                "kinds": dict(kinds),
                "failures": failures,
                "peak_rss_mb": round(peak_mb, 1),
            }
        )
    )
    conn.close()


def run_files(count: int, seconds: float, seed: int) -> dict[str, Any]:
    """Run the readers in a child process; its report, or a failure if it died or overran."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_work, args=(count, seconds, seed, child), daemon=True)
    proc.start()
    child.close()
    report: dict[str, Any] | None = None
    if parent.poll(seconds + 120):
        try:
            report = json.loads(parent.recv())
        except EOFError:
            report = None
    proc.join(timeout=10)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if report is None:
        return {
            "sent": {},
            "outcomes": {},
            "kinds": {},
            "peak_rss_mb": None,
            "failures": [f"the file worker died or hung (exit code {proc.exitcode})"],
        }
    return report


def files_target(count: int, seconds: float, seed: int) -> Any:
    from bench.fuzz_net import TargetResult

    started = time.monotonic()
    report = run_files(count, seconds, seed)
    result = TargetResult("files")
    result.sent = sum(report["sent"].values())
    result.kinds.update(report["kinds"])
    result.rejected = sum(
        n for k, n in report["outcomes"].items() if not k.endswith(":accepted") and ":BUG:" not in k
    )
    result.processed = sum(report["outcomes"].values())
    result.alive = True
    result.answers = True
    result.failures.extend(report["failures"])
    result.extra["peak_rss_mb"] = report["peak_rss_mb"]
    for reader, n in report["sent"].items():
        result.extra[f"sent_{reader}"] = n
    for outcome, n in sorted(report["outcomes"].items()):
        result.extra["outcome_" + outcome.replace(":", "_")] = n
    result.seconds = round(time.monotonic() - started, 2)
    return result
