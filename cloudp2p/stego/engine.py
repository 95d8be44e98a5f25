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

Two equivalent code paths: a short region is computed directly from
``positions`` (O(len(payload)) work); a long one (more than 1/8 of the cover's
capacity) walks the cover block by block in memory order, which reads and
writes memory sequentially, so the cost is a few passes over the cover
instead of millions of cache misses. Tests check that both give the same
slots.
"""

from __future__ import annotations

import hashlib

import numpy as np

from cloudp2p.stego.capacity import CapacityError, capacity_bits, colour_channels, too_small
from cloudp2p.stego.positions import BLOCK, CLASSES, Layout, layout, positions

__all__ = ["CapacityError", "capacity_bits", "embed", "extract"]

# A region of at least this fraction of the blocks' bytes takes the block-by-block path.
_SEQUENTIAL_FRACTION = 1 / 8


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


def _colour_flat(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """A contiguous 1-D copy of the colour samples; True if alpha was left out (needs a write-back)."""
    if array.ndim == 3 and array.shape[2] in (2, 4):
        return np.ascontiguousarray(array[..., : array.shape[2] - 1]).reshape(-1), True
    return np.array(array, order="C", copy=True).reshape(-1), False


def _rng(rng_seed: bytes | None) -> np.random.Generator:
    if rng_seed is None:
        return np.random.default_rng()
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


def _region(lay: Layout, start: int, nbytes: int) -> tuple[int, int]:
    if start < 0:
        raise ValueError(f"start must be 0 or more, got {start}")
    return start, start + nbytes


def _sequential(lay: Layout, nbytes: int) -> bool:
    return nbytes >= lay.nblocks * (BLOCK // 8) * _SEQUENTIAL_FRACTION


def _block_offsets(lay: Layout, rank_of_phys: np.ndarray, u0: int, nu: int) -> np.ndarray:
    """(nblocks, 8*nu) slot offsets inside each physical block for rank offsets [8*u0, 8*(u0+nu))."""
    sub = lay.pi[:, 8 * u0 : 8 * (u0 + nu)]
    return sub[rank_of_phys % CLASSES]


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
    flat, alpha = _colour_flat(cover)
    lay = layout(key, flat.size)
    m0, m1 = _region(lay, start, len(payload))
    if m1 * 8 > lay.usable:
        raise too_small(m1, cover.shape)
    if m1 > m0:
        rng = _rng(rng_seed)
        if _sequential(lay, m1 - m0):
            _embed_blocks(flat, lay, payload, m0, m1, rng)
        else:
            pos = positions(key, flat.size, 8 * m0, 8 * (m1 - m0))
            bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))
            flat[pos] = _match(flat[pos], bits, rng)
    if alpha:
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


def _embed_blocks(flat: np.ndarray, lay: Layout, payload: bytes, m0: int, m1: int, rng) -> None:
    nb = lay.nblocks
    u0, nu, lo, hi = _edges(lay, m0, m1)
    grid = np.zeros(nu * nb, dtype=np.uint8)
    grid[lo:hi] = np.frombuffer(payload, dtype=np.uint8)
    rank_of_phys = lay.beta.inverse(np.arange(nb, dtype=np.int32))
    # Bytes in physical block order, one row per block: (nb, nu) -> bits (nb, 8 nu).
    per_block = np.ascontiguousarray(grid.reshape(nu, nb)[:, rank_of_phys].T)
    bits = np.unpackbits(per_block, axis=1)
    valid = None
    if lo > 0 or hi < nu * nb:
        byte_index = np.arange(nu, dtype=np.int64)[None, :] * nb + rank_of_phys[:, None]
        valid_bytes = ((byte_index >= lo) & (byte_index < hi)).astype(np.uint8)
        valid = np.repeat(valid_bytes, 8, axis=1)
    blocks = flat[: nb * BLOCK].reshape(nb, BLOCK)
    offsets = _block_offsets(lay, rank_of_phys, u0, nu)
    values = np.take_along_axis(blocks, offsets, axis=1)
    np.put_along_axis(blocks, offsets, _match(values, bits, rng, valid), axis=1)


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
    m0, m1 = _region(lay, start, nbytes)
    if m1 * 8 > lay.usable:
        raise too_small(m1, stego.shape, "the image")
    if m1 == m0:
        return b""
    if not _sequential(lay, m1 - m0):
        pos = positions(key, flat.size, 8 * m0, 8 * (m1 - m0))
        return np.packbits(flat[pos] & 1).tobytes()
    nb = lay.nblocks
    u0, nu, lo, hi = _edges(lay, m0, m1)
    rank_of_phys = lay.beta.inverse(np.arange(nb, dtype=np.int32))
    blocks = flat[: nb * BLOCK].reshape(nb, BLOCK)
    offsets = _block_offsets(lay, rank_of_phys, u0, nu)
    per_block = np.packbits(np.take_along_axis(blocks, offsets, axis=1) & 1, axis=1)  # (nb, nu)
    grid = np.empty((nu, nb), dtype=np.uint8)
    grid[:, rank_of_phys] = per_block.T
    return grid.reshape(-1)[lo:hi].tobytes()
