"""The fuzzer's generators: reproducible, bounded, and really malformed."""

from __future__ import annotations

import json

from bench.fuzz_files import mutate_file, png_build, png_chunks, seed_images
from bench.fuzz_gen import Mutator

SEEDS_JSON = [{"v": 1, "t": "req", "id": "0" * 32, "op": "ping", "args": {"a": [1, 2]}}]
SEEDS = [json.dumps(s).encode() for s in SEEDS_JSON]


def _run(seed: int, n: int = 500) -> list[tuple[str, bytes]]:
    m = Mutator(seed, max_size=65_507)
    return [m.mutate(SEEDS, limit=1000, json_seeds=SEEDS_JSON, version_key="v") for _ in range(n)]


def test_same_seed_same_inputs_and_other_seed_other_inputs():
    assert _run(3) == _run(3)
    assert _run(3) != _run(4)


def test_inputs_are_bounded_bytes_of_every_kind():
    out = _run(5, 3000)
    assert all(isinstance(d, bytes) and len(d) <= 65_507 for _, d in out)
    kinds = {k for k, _ in out}
    assert kinds == {
        "truncated",
        "bitflip",
        "bytes",
        "oversized",
        "random",
        "wrong_type",
        "json",
        "wrong_version",
    }
    assert all(len(d) > 1000 for k, d in out if k == "oversized")
    assert sum(d in SEEDS for _, d in out) < len(out) // 20  # almost never the valid seed itself


def test_wrong_type_never_mutates_the_seed_or_shares_values():
    m = Mutator(1)
    before = json.dumps(SEEDS_JSON)
    for _ in range(2000):
        m.dumps(m.wrong_type(SEEDS_JSON[0]))
    assert json.dumps(SEEDS_JSON) == before


def test_png_chunk_edits_keep_valid_crcs():
    import random

    images = seed_images(random.Random(1))
    png = images["rgb.png"]
    assert png_build(png_chunks(png)) == png
    m = Mutator(2)
    kinds = {mutate_file(m, png)[0] for _ in range(400)}
    assert {"huge_dimensions", "chunk_edit", "chunk_drop", "truncated", "bitflip"} <= kinds
