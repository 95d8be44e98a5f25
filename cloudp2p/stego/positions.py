"""Keyed pseudo-random positions: which LSB slot holds which payload bit.

The slots of a cover (its colour samples, in memory order) are cut into
*groups* of 8 consecutive slots (one payload byte each, its bits in order,
most significant first), and the groups into *blocks* of 64 groups (512
slots); the ``total % 512`` slots at the end are never used. The key's
*position sequence* is a bijection between bit numbers ``j`` in
``[0, usable)`` and slots, built from three keyed pieces:

* bit ``j`` is bit ``k = j % 8`` of byte ``m = j // 8``;
* byte ``m`` goes to the block of *rank* ``b = m % nblocks``, as its
  ``u = m // nblocks``-th byte (``u`` in 0..63): consecutive bytes go to
  different blocks, so any run of bytes is spread evenly over the image; at
  50 % of capacity every block carries exactly 32 bytes in 32 of its groups;
* the block of rank ``b`` is the physical block ``beta(b)``, where ``beta`` is a
  keyed pseudo-random permutation of ``[0, nblocks)`` (a Feistel network, below);
* inside the block, byte ``u`` goes to group ``pi[b % 64][u]``, one of 64 keyed
  permutations of 0..63, so which groups of a block carry a run of bytes
  differs from block to block.

So ``slot(j) = 8 * (64 * beta(b) + pi[b % 64][u]) + k``. A run
``[start, start+count)`` of the sequence costs O(count) to compute
(``positions``): it evaluates ``beta`` on at most ``count/8`` block ranks and
never builds a permutation of all the slots. Disjoint runs use disjoint
slots, which is what lets the container rewrite a small header in place
without touching the payload.

``beta`` is a Feistel network over a mixed-radix domain, vectorised with numpy:
``[0, A*B)`` with ``B = 2**k`` close to ``sqrt(n)`` and ``A = ceil(n / B)`` covers
``[0, n)`` with fewer than ``B`` extra values; ``x`` is split into
``(L, R) = (x >> k, x & (B-1))``, a round maps ``(L, R)`` to
``(R, (L + F_i(R)) mod |L|)`` (the halves swap radix each round; after an even
number of rounds the pair is back in ``Z_A x Z_B``); the round functions are
keyed tables of ``A`` or ``B`` words derived from the key with SHAKE-256, so
one round is a gather from a table that stays in cache, an add and a
conditional subtract. Values that land in ``[n, A*B)`` are mapped again
("cycle walking") until they fall inside; this touches fewer than
``1/sqrt(n)`` of the values.

The order is pseudo-random to anyone without the key; it is not meant to be a
cryptographic pseudo-random permutation (its tables are small): what protects
the payload's content is the container's authenticated encryption. The
positions scatter the changes evenly over the whole image so that no region
or fixed pattern carries them. The granularity is a group of 8 samples
(2-3 pixels): that is what lets the engine move whole groups as 64-bit words
(see ``engine``), several times faster than bit-by-bit scattering.
"""

from __future__ import annotations

import functools
import hashlib

import attrs
import numpy as np

GROUP = 8  # slots per group: one payload byte
GROUPS = 64  # groups per block
BLOCK = GROUP * GROUPS  # 512 slots per block
CLASSES = 64  # distinct within-block permutations
ROUNDS = 6  # even, so (L, R) ends in Z_A x Z_B again
MAX_TOTAL = 2**31 - 1
_PERSONAL = b"cloudp2p/stego/positions/v1"


def usable_slots(total: int) -> int:
    """The number of slots of ``[0, total)`` the sequence covers: whole blocks only."""
    return (total // BLOCK) * BLOCK


def _shake(key: bytes, label: bytes, n: int) -> bytes:
    h = hashlib.shake_256()
    h.update(_PERSONAL)
    h.update(len(key).to_bytes(4, "big") + key)
    h.update(len(label).to_bytes(2, "big") + label)
    return h.digest(n)


@attrs.frozen(eq=False)
class Feistel:
    """A keyed bijection of ``[0, n)`` (``n >= 1``), vectorised; ``forward`` and ``inverse``."""

    n: int
    k: int
    a: int
    b: int
    tables: tuple[np.ndarray, ...]

    @classmethod
    def make(cls, key: bytes, n: int) -> Feistel:
        k = max(1, (max(n, 2) - 1).bit_length() // 2)
        b = 1 << k
        a = max(1, -(-n // b))
        tables = []
        for i in range(ROUNDS):
            # Round i reads a value of radix B (even rounds) or A (odd rounds)
            # and adds into a value of radix A (even) or B (odd).
            size_in, modulus = (b, a) if i % 2 == 0 else (a, b)
            raw = np.frombuffer(_shake(key, b"feistel %d %d" % (n, i), 4 * size_in), dtype="<u4")
            # 32-bit words reduced mod a small modulus: the bias is below 2**-15, harmless here.
            table = (raw % np.uint32(modulus)).astype(np.int32)
            table.flags.writeable = False
            tables.append(table)
        return cls(n, k, a, b, tuple(tables))

    def _rounds(self, x: np.ndarray, *, inverse: bool) -> np.ndarray:
        k, a, b = self.k, self.a, self.b
        left = x >> k
        right = x & (b - 1)
        if not inverse:
            for i, table in enumerate(self.tables):
                modulus = a if i % 2 == 0 else b
                new = table[right]
                new += left
                # left < modulus and table < modulus: one conditional subtract is the whole "mod".
                new -= np.where(new >= modulus, modulus, 0).astype(np.int32, copy=False)
                left, right = right, new
        else:
            for i in reversed(range(len(self.tables))):
                modulus = a if i % 2 == 0 else b
                old = right - self.tables[i][left]
                old += np.where(old < 0, modulus, 0).astype(np.int32, copy=False)
                left, right = old, left
        return (left << k) + right

    def _walk(self, x: np.ndarray, *, inverse: bool) -> np.ndarray:
        x = np.asarray(x, dtype=np.int32)
        out = self._rounds(x, inverse=inverse)
        outside = np.flatnonzero(out >= self.n)
        while outside.size:
            # Cycle walking: the orbit of a value of [0, n) returns to [0, n) before it repeats.
            walked = self._rounds(out[outside], inverse=inverse)
            out[outside] = walked
            outside = outside[walked >= self.n]
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._walk(x, inverse=False)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return self._walk(y, inverse=True)


@attrs.frozen(eq=False)
class Layout:
    """Everything the sequence of ``key`` over ``total`` slots needs; cached per (key, total)."""

    total: int
    nblocks: int
    beta: Feistel
    pi: np.ndarray  # (CLASSES, GROUPS) int64: byte number in the block -> group, per class

    @property
    def usable(self) -> int:
        return self.nblocks * BLOCK


@functools.lru_cache(maxsize=64)
def layout(key: bytes, total: int) -> Layout:
    if not isinstance(key, bytes) or not key:
        raise ValueError("the key must be non-empty bytes")
    if not 0 <= total <= MAX_TOTAL:
        raise ValueError(f"the number of slots must be between 0 and {MAX_TOTAL}, got {total}")
    nblocks = total // BLOCK
    beta = Feistel.make(key, max(nblocks, 1))
    raw = np.frombuffer(_shake(key, b"groups", 8 * CLASSES * GROUPS), dtype="<u8").reshape(CLASSES, GROUPS)
    pi = np.argsort(raw, axis=1, kind="stable").astype(np.int64)
    pi.flags.writeable = False
    return Layout(total, nblocks, beta, pi)


def positions(key: bytes, total: int, start: int, count: int) -> np.ndarray:
    """Entries ``[start, start+count)`` of the key's position sequence over ``total`` slots.

    Returns an int64 array of distinct slot indices in ``[0, total)``; the same
    ``(key, total, j)`` always gives the same slot. Only the first
    ``usable_slots(total)`` entries exist: ``ValueError`` if ``start + count``
    goes beyond them. Costs O(count).
    """
    key = bytes(key)
    if start < 0 or count < 0:
        raise ValueError(f"start and count must be 0 or more, got {start} and {count}")
    lay = layout(key, total)
    if start + count > lay.usable:
        raise ValueError(
            f"entries [{start}, {start + count}) go beyond the {lay.usable} usable slots of {total}"
        )
    if count == 0:
        return np.empty(0, dtype=np.int64)
    j = np.arange(start, start + count, dtype=np.int64)
    m = j >> 3
    rank = m % lay.nblocks
    u = m // lay.nblocks
    # beta only on the distinct block ranks touched: at most count/8 + 2 of them.
    first, last = int(m[0]), int(m[-1])
    if last - first + 1 >= lay.nblocks:
        block_of_rank = lay.beta.forward(np.arange(lay.nblocks, dtype=np.int32)).astype(np.int64)
        phys = block_of_rank[rank]
    else:
        byte_ranks = np.arange(first, last + 1, dtype=np.int64) % lay.nblocks
        phys_bytes = lay.beta.forward(byte_ranks.astype(np.int32)).astype(np.int64)
        phys = phys_bytes[m - first]
    return ((phys * GROUPS + lay.pi[rank % CLASSES, u]) << 3) | (j & 7)
