"""Seeded generators of hostile input for ``make fuzz``.

A ``Mutator`` turns valid seed inputs (real datagrams, real request lines, real
files) into malformed ones. Each produced input carries the *kind* of damage
done, so that the fuzzer can report what it sent and a failure can be replayed
from ``(seed, index)``:

- ``truncated``: cut at a random offset (also cut to 0 and to 1 byte);
- ``bitflip``: 1 to 8 random bits flipped;
- ``bytes``: bytes inserted, deleted, duplicated or replaced with edge values
  (0x00, 0xff, 0x7f, 0x80, quotes, braces);
- ``oversized``: the input repeated or padded past the listener's limit;
- ``random``: random bytes of a random length (0 to 70,000);
- ``wrong_type``: a JSON field replaced by a value of another type (null,
  booleans, huge or negative integers, floats, long strings, deep nesting,
  lists, objects) or removed, or an unexpected field added;
- ``wrong_version``: the version field replaced by another value;
- ``json``: random JSON documents that are not what the listener expects.

Everything is derived from ``random.Random(seed)``: the same seed gives the
same inputs.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

EDGE_BYTES = b'\x00\xff\x7f\x80"{}[],:\\\n'
EDGE_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**63,
    2**64 + 1,
    -(2**63),
    1e308,
    -1e-308,
    0.5,
    "",
    "x",
    "\x00",
    "é" * 40,
    "A" * 5000,
    [],
    [1, 2],
    {},
    {"a": {"b": {}}},
    "0" * 32,
    "ff" * 16,
)


def deep_nesting(rng: random.Random) -> Any:
    depth = rng.choice((50, 500, 5000))
    opener, closer = rng.choice((("[", "]"), ('{"a":', "}")))
    return opener * depth + "1" + closer * depth


class Mutator:
    """Makes malformed variants of seed inputs, reproducibly."""

    def __init__(self, seed: int, max_size: int = 70_000) -> None:
        self.rng = random.Random(seed)
        self.max_size = max_size

    # -- bytes ----------------------------------------------------------------------------------------

    def truncate(self, data: bytes) -> bytes:
        r = self.rng.random()
        if r < 0.05 or len(data) < 2:
            return b""
        if r < 0.1:
            return data[:1]
        return data[: self.rng.randrange(1, len(data))]

    def bitflip(self, data: bytes) -> bytes:
        if not data:
            return bytes([self.rng.randrange(256)])
        out = bytearray(data)
        for _ in range(self.rng.randint(1, 8)):
            i = self.rng.randrange(len(out))
            out[i] ^= 1 << self.rng.randrange(8)
        return bytes(out)

    def byte_edit(self, data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(self.rng.randint(1, 4)):
            op = self.rng.randrange(4)
            pos = self.rng.randrange(len(out) + 1)
            if op == 0:  # insert
                out[pos:pos] = bytes(self.rng.choice(EDGE_BYTES) for _ in range(self.rng.randint(1, 8)))
            elif op == 1 and out:  # delete
                del out[pos : pos + self.rng.randint(1, 16)]
            elif op == 2 and out:  # duplicate a slice
                end = min(len(out), pos + self.rng.randint(1, 64))
                out[pos:pos] = out[pos:end]
            elif out:  # replace with an edge byte
                out[min(pos, len(out) - 1)] = self.rng.choice(EDGE_BYTES)
        return bytes(out)

    def oversize(self, data: bytes, limit: int) -> bytes:
        target = self.rng.randint(limit + 1, min(self.max_size, limit * 2 + 64))
        filler = data or b"x"
        return (filler * (target // len(filler) + 1))[:target]

    def random_bytes(self) -> bytes:
        n = self.rng.choice((0, 1, 2, 7, 24, 31, 32, 33, 100, 1000, self.rng.randrange(self.max_size)))
        return self.rng.randbytes(n)

    # -- JSON -----------------------------------------------------------------------------------------

    def random_value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if depth > 3 or r < 0.5:
            return copy.deepcopy(self.rng.choice(EDGE_VALUES))  # never share a mutable edge value
        if r < 0.75:
            return [self.random_value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        return {
            self.rng.choice(("v", "id", "op", "type", "args", "x", "")): self.random_value(depth + 1)
            for _ in range(self.rng.randint(0, 4))
        }

    def _paths(self, obj: Any, prefix: tuple = ()) -> list[tuple]:
        out = [prefix] if prefix else []
        if len(prefix) > 8:
            return out
        if isinstance(obj, dict):
            for k, v in obj.items():
                out.extend(self._paths(v, (*prefix, k)))
        elif isinstance(obj, list):
            for i, v in enumerate(obj[:8]):
                out.extend(self._paths(v, (*prefix, i)))
        return out

    def wrong_type(self, obj: Any) -> Any:
        obj = copy.deepcopy(obj)
        paths = self._paths(obj)
        for _ in range(self.rng.randint(1, 3)):
            if not paths or not isinstance(obj, dict):
                return self.random_value()
            path = self.rng.choice(paths)
            parent = obj
            for key in path[:-1]:
                parent = parent[key]
            last = path[-1]
            op = self.rng.random()
            try:
                if op < 0.15 and isinstance(parent, dict):
                    del parent[last]
                elif op < 0.25 and isinstance(parent, dict):
                    parent[self.rng.choice(("extra", "v2", "__proto__", "x" * 70))] = self.random_value()
                else:
                    parent[last] = self.random_value()
            except (KeyError, IndexError, TypeError):
                pass
            paths = self._paths(obj)
        return obj

    def dumps(self, obj: Any) -> bytes:
        if self.rng.random() < 0.05:
            return deep_nesting(self.rng).encode()
        try:
            return json.dumps(obj, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            return b"{}"

    # -- one input ------------------------------------------------------------------------------------

    def mutate(
        self,
        seeds: Sequence[bytes],
        *,
        limit: int,
        json_seeds: Sequence[dict[str, Any]] = (),
        version_key: str | None = None,
        encode: Callable[[dict[str, Any]], bytes] | None = None,
    ) -> tuple[str, bytes]:
        """One malformed input and its kind. ``encode`` turns a JSON seed into wire bytes (default: JSON)."""
        encode = encode or self.dumps
        kinds = ["truncated", "bitflip", "bytes", "oversized", "random"]
        if json_seeds:
            kinds += ["wrong_type", "wrong_type", "wrong_type", "json"]
            if version_key:
                kinds.append("wrong_version")
        kind = self.rng.choice(kinds)
        if kind == "truncated":
            return kind, self.truncate(self.rng.choice(seeds))
        if kind == "bitflip":
            return kind, self.bitflip(self.rng.choice(seeds))
        if kind == "bytes":
            return kind, self.byte_edit(self.rng.choice(seeds))
        if kind == "oversized":
            return kind, self.oversize(self.rng.choice(seeds), limit)
        if kind == "random":
            return kind, self.random_bytes()
        if kind == "json":
            return kind, self.dumps(self.random_value())
        obj = copy.deepcopy(self.rng.choice(json_seeds))
        if kind == "wrong_version":
            obj[version_key] = self.rng.choice((0, 2, -1, 2**40, "1", 1.0, None, True, [1]))
            return kind, encode(obj)
        return kind, encode(self.wrong_type(obj))

    def stream(self, count: int, make: Callable[[], tuple[str, bytes]]) -> Iterator[tuple[str, bytes]]:
        for _ in range(count):
            yield make()
