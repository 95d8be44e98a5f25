"""The steganography engine: arrays in, arrays out, pure numpy.

``embed`` writes the bits of a payload into the least significant bits of the
cover's colour samples at the key's pseudo-random positions
(``cloudp2p.stego.positions``), by *LSB matching*: a sample whose LSB already
equals the bit is left alone, any other is moved by +1 or -1 chosen at random
(+1 at 0, -1 at 255). Unlike LSB replacement (``x ^ 1``), which only ever moves
values inside the pairs (2i, 2i+1) and leaves the "pairs of values" signature
that chi-square and RS steganalysis read, matching changes the histogram
symmetrically.

``start`` (in bytes) selects a region of the key's sequence: ``embed(..., start=s)``
writes the bits ``[8s, 8s + 8 len(payload))`` of the sequence and touches no
other slot, so a header at ``start=0`` can be rewritten in place without
disturbing a payload written at ``start=len(header)``.

Two equivalent code paths. A short region (fewer bytes than the cover has
blocks) is computed bit by bit from ``positions``. A long one works on whole
groups of 8 samples as little-endian 64-bit words (one word = one payload
byte): block by block in memory order, in chunks of 32 Ki words whose work
buffers stay in cache, it gathers the region's group words, matches all 8 lanes of a word at once with
carry-free SWAR arithmetic (a lane is only incremented below 255 and only
decremented above 0, so no carry or borrow crosses lanes; one random 64-bit
word gives the +-1 coins of 8 words) and puts the words back. Its cost is
O(len(payload)) plus O(blocks) = O(pixels / 170) (the blocks' ranks, cached
per key and size), with sequential memory access. Tests check that both paths
use the same slots.
"""

from __future__ import annotations

import functools
import hashlib
import os

import numpy as np

from cloudp2p.stego.capacity import CapacityError, capacity_bits, colour_channels, too_small
from cloudp2p.stego.positions import BLOCK, CLASSES, GROUPS, Layout, layout, positions

__all__ = ["CapacityError", "capacity_bits", "embed", "extract"]

_LANES_LSB = np.uint64(0x0101010101010101)
# (lanes 0/1) * _PACK >> 56 == the byte whose bit 7-i is lane i (products land on distinct bits).
_PACK = np.uint64(0x8040201008040201)
_FIFTY_SIX = np.uint64(56)
_SHIFTS = np.arange(8, dtype=np.uint64)[:, None]


def _check_array(array: np.ndarray, what: str) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, not {type(array).__name__}")
    if array.dtype != np.uint8:
        raise TypeError(f"{what} must be a uint8 array, not {array.dtype}")
    colour_channels(array.shape)  # raises ValueError for a shape that is not a cover's


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or not key:
        raise ValueError("the key must be non-empty bytes")
    return bytes(key)


def _colour_source(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """The colour samples as a contiguous 1-D array, and whether it is a private copy.

    For RGBA and grey+alpha the colour channels are copied out (alpha is never
    touched); otherwise a contiguous input is viewed, not copied.
    """
    if array.ndim == 3 and array.shape[2] in (2, 4):
        return np.ascontiguousarray(array[..., : array.shape[2] - 1]).reshape(-1), True
    contiguous = np.ascontiguousarray(array)
    return contiguous.reshape(-1), contiguous is not array


_shared_rng: list[np.random.Generator] = []


def _fresh_rng() -> None:
    """Seed this process's coin generator from the OS (at import, and again in a forked child)."""
    _shared_rng[:] = [np.random.default_rng()]


_fresh_rng()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_rng)


def _rng(rng_seed: bytes | None) -> np.random.Generator:
    if rng_seed is None:
        # One OS-seeded generator per process: seeding a new one cost 0.15 ms a call, 9 % of a
        # 1 MP embed. The coins only need to be unpredictable and unbiased, not fresh per call.
        return _shared_rng[0]
    digest = hashlib.sha256(b"cloudp2p/stego/rng/v1" + bytes(rng_seed)).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


def _random_bits(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    raw = np.frombuffer(rng.bytes((n + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw, count=n).reshape(shape)


def _match(values: np.ndarray, bits: np.ndarray, rng: np.random.Generator, valid=None) -> np.ndarray:
    """LSB matching: the new values (uint8) for ``values`` to carry ``bits`` (0/1 uint8)."""
    need = (values & 1) ^ bits
    if valid is not None:
        need &= valid
    up = _random_bits(rng, values.shape)
    up |= values == 0
    up &= values != 255
    # up=1 -> +1, up=0 -> -1 (255 in uint8 arithmetic, which wraps).
    delta = (up << 1) - np.uint8(1)
    delta *= need
    return values + delta


def _region(start: int, nbytes: int) -> tuple[int, int]:
    if start < 0:
        raise ValueError(f"start must be 0 or more, got {start}")
    return start, start + nbytes


def _by_words(lay: Layout, nbytes: int) -> bool:
    # With at least one byte per block, the O(blocks) part is O(nbytes) too.
    return nbytes >= lay.nblocks


def _word_indices(
    sub: np.ndarray, classes: np.ndarray, r0: int, r1: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Indices of the region's group words in physical blocks r0..r1-1, flat, block-major.

    ``sub`` is ``pi[:, u0:u0+nu]`` (contiguous), ``classes`` each physical block's class.
    """
    nu = sub.shape[1]
    shaped = None if out is None else out.reshape(r1 - r0, nu)
    index = np.take(sub, classes[r0:r1], axis=0, out=shaped)
    index += (np.arange(r0, r1, dtype=np.intp) * GROUPS)[:, None]
    return index.reshape(-1)


class _Scratch:
    """Work buffers for one chunk of words, allocated once per call and reused chunk after chunk.

    Fresh temporaries for every chunk would cost a page fault per 4 KiB each
    time (the allocator hands large freed blocks back to the system).
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        size = shape[0] * shape[1]
        self.index = np.empty(size, dtype=np.intp)
        self.up = np.empty(8 * -(-size // 8), dtype="<u8")
        self.flags = np.empty(8 * size, dtype=bool)

    def view(self, name: str, n: int) -> np.ndarray:
        return getattr(self, name)[:n]


def _match_words(words: np.ndarray, target: np.ndarray, rng, skip, scratch: _Scratch) -> np.ndarray:
    """LSB matching on 64-bit words, 8 lanes (samples) at a time, in place in ``words``.

    ``target`` holds the wanted LSBs (and is overwritten). A lane that needs a
    change goes up or down at random, up at 0 and down at 255; so a lane is only
    incremented below 255 and only decremented above 0, and no carry or borrow
    ever crosses into the next lane.
    """
    n = words.size
    need = target
    need ^= words
    need &= _LANES_LSB
    if skip is not None:
        skip(need)  # clears ``need`` for the bytes outside the region
    # One random 64-bit word gives the up/down coins of 8 words: bit k of each of its lanes.
    coins = -(-n // 8)
    random_words = np.frombuffer(rng.bytes(8 * coins), dtype="<u8")
    spread = scratch.up[: 8 * coins].reshape(8, coins)
    np.right_shift(random_words[None, :], _SHIFTS, out=spread)
    up = scratch.up[:n]
    up &= _LANES_LSB
    lanes = words.view(np.uint8)
    flags = scratch.view("flags", 8 * n)
    flag_words = flags.view("<u8")
    np.equal(lanes, 0, out=flags)  # a bool is one byte 0/1: as words, 1 in the lanes that are 0
    up |= flag_words
    np.not_equal(lanes, 255, out=flags)
    up &= flag_words
    up &= need
    need ^= up  # now: the lanes that go down
    words += up
    words -= need
    return words


def embed(
    cover: np.ndarray, payload: bytes, key: bytes, *, start: int = 0, rng_seed: bytes | None = None
) -> np.ndarray:
    """A new uint8 array like ``cover`` carrying ``payload`` at bits ``[8 start, 8 (start+len))``.

    Raises ``CapacityError`` when the region does not fit the cover, ``TypeError``
    / ``ValueError`` for arrays that are not uint8 covers and for a bad key.
    ``rng_seed`` makes the +-1 choices reproducible (tests); by default they are
    fresh randomness.
    """
    _check_array(cover, "the cover")
    key = _check_key(key)
    payload = bytes(payload)
    source, private = _colour_source(cover)
    lay = layout(key, source.size)
    m0, m1 = _region(start, len(payload))
    if m1 * 8 > lay.usable:
        raise too_small(m1, cover.shape)
    flat = source if private else np.empty_like(source)
    if m1 > m0 and _by_words(lay, m1 - m0):
        _embed_words(source, flat, lay, payload, m0, m1, _rng(rng_seed))
    else:
        if flat is not source:
            np.copyto(flat, source)
        if m1 > m0:
            pos = positions(key, flat.size, 8 * m0, 8 * (m1 - m0))
            bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))
            flat[pos] = _match(flat[pos], bits, _rng(rng_seed))
    if cover.ndim == 3 and cover.shape[2] in (2, 4):
        out = cover.copy()
        out[..., : cover.shape[2] - 1] = flat.reshape(*cover.shape[:2], cover.shape[2] - 1)
        return out
    return flat.reshape(cover.shape)


def _edges(lay: Layout, m0: int, m1: int) -> tuple[int, int, int, int]:
    """(u0, nu, lo, hi): rows u0..u0+nu-1 of the (u, rank) byte grid, region = [lo, hi) of it."""
    nb = lay.nblocks
    u0 = m0 // nb
    nu = (m1 - 1) // nb - u0 + 1
    return u0, nu, m0 - u0 * nb, m1 - u0 * nb


@functools.lru_cache(maxsize=16)
def _block_ranks(lay: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Every physical block's rank (``beta`` inverted) and class (rank % 64), cached per layout.

    Two nblocks intp arrays, 1/32 of the image's size, computed once per key and size.
    """
    ranks = lay.beta.inverse(np.arange(lay.nblocks, dtype=np.int32)).astype(np.intp)
    classes = ranks % CLASSES
    ranks.flags.writeable = False
    classes.flags.writeable = False
    return ranks, classes


def _grid_setup(lay: Layout, m0: int, m1: int):
    nb = lay.nblocks
    u0, nu, lo, hi = _edges(lay, m0, m1)
    ranks, classes = _block_ranks(lay)
    sub = np.ascontiguousarray(lay.pi[:, u0 : u0 + nu], dtype=np.intp)
    return nb, nu, lo, hi, ranks, classes, sub


_CHUNK_WORDS = 1 << 16  # 512 KiB of words per step: stays in cache, half the Python steps of 256 KiB


def _edge_skipper(rank_of_phys: np.ndarray, nb: int, nu: int, lo: int, hi: int, r0: int, r1: int):
    """For a chunk of blocks: a function that clears ``need`` for bytes outside ``[lo, hi)``, or None.

    Byte (u, rank) of the grid is number ``u * nb + rank``: only the first and the
    last row (u) can reach outside the region.
    """
    ranks = rank_of_phys[r0:r1]
    before = ranks < lo if lo > 0 else None
    after = (nu - 1) * nb + ranks >= hi if hi < nu * nb else None
    if before is None and after is None:
        return None

    def skip(need: np.ndarray) -> None:
        grid = need.reshape(r1 - r0, nu)
        if before is not None:
            grid[before, 0] = 0
        if after is not None:
            grid[after, nu - 1] = 0

    return skip


def _embed_words(
    source: np.ndarray, flat: np.ndarray, lay: Layout, payload: bytes, m0: int, m1: int, rng
) -> None:
    """The word path: ``flat`` (``source`` itself, or a new array to fill from it) gets the region."""
    nb, nu, lo, hi, rank_of_phys, classes, sub = _grid_setup(lay, m0, m1)
    grid = np.zeros(nu * nb, dtype=np.uint8)
    grid[lo:hi] = np.frombuffer(payload, dtype=np.uint8)
    # Byte u * nb + rank of the grid, rearranged to (physical block, u): one row per block.
    per_block = np.take(np.ascontiguousarray(grid.reshape(nu, nb).T), rank_of_phys, axis=0)
    if flat is not source:
        np.copyto(flat, source)  # one bulk copy measured faster than a copy per chunk
    all_words = flat[: nb * BLOCK].view("<u8")
    rows = max(1, _CHUNK_WORDS // nu)
    scratch = _Scratch((min(rows, nb), nu))
    for r0 in range(0, nb, rows):  # a loop over chunks of blocks, each chunk vectorised
        r1 = min(nb, r0 + rows)
        n = (r1 - r0) * nu
        index = _word_indices(sub, classes, r0, r1, out=scratch.view("index", n))
        words = all_words[index]
        # Lane i of a target word is bit 7-i of its byte: unpackbits writes bits most significant first.
        target = np.unpackbits(per_block[r0:r1].reshape(-1)).view("<u8")
        skip = _edge_skipper(rank_of_phys, nb, nu, lo, hi, r0, r1)
        all_words[index] = _match_words(words, target, rng, skip, scratch)


def extract(stego: np.ndarray, key: bytes, nbytes: int, *, start: int = 0) -> bytes:
    """The ``nbytes`` bytes at bits ``[8 start, 8 (start+nbytes))`` of ``key``'s sequence in ``stego``.

    Raises ``CapacityError`` if that region is beyond the image's capacity.
    """
    _check_array(stego, "the image")
    key = _check_key(key)
    if nbytes < 0:
        raise ValueError(f"nbytes must be 0 or more, got {nbytes}")
    if stego.ndim == 3 and stego.shape[2] in (2, 4):
        flat = np.ascontiguousarray(stego[..., : stego.shape[2] - 1]).reshape(-1)
    else:
        flat = np.ascontiguousarray(stego).reshape(-1)
    lay = layout(key, flat.size)
    m0, m1 = _region(start, nbytes)
    if m1 * 8 > lay.usable:
        raise too_small(m1, stego.shape, "the image")
    if m1 == m0:
        return b""
    if not _by_words(lay, m1 - m0):
        pos = positions(key, flat.size, 8 * m0, 8 * (m1 - m0))
        return np.packbits(flat[pos] & 1).tobytes()
    nb, nu, lo, hi, rank_of_phys, classes, sub = _grid_setup(lay, m0, m1)
    index = _word_indices(sub, classes, 0, nb)
    words = np.take(flat[: nb * BLOCK].view("<u8"), index).reshape(nb, nu)
    per_block = (((words & _LANES_LSB) * _PACK) >> _FIFTY_SIX).astype(np.uint8)  # (nb, nu)
    grid = np.empty((nu, nb), dtype=np.uint8)
    grid[:, rank_of_phys] = per_block.T
    return grid.reshape(-1)[lo:hi].tobytes()
