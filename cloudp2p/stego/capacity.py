"""How much a cover holds, and the error raised when it is not enough.

A cover array is ``uint8`` of shape ``(H, W)`` or ``(H, W, C)`` with ``C`` in 1..4.
Its *slots* are its colour samples: all of them for greyscale (``C`` = 1, or 2-D)
and RGB (``C`` = 3); for ``C`` = 2 (grey + alpha) and ``C`` = 4 (RGBA) the alpha
channel is never touched (changing the alpha of transparent pixels is both
visible to statistics and useless), so they have 1 and 3 slots per pixel. Each
slot holds one payload bit, in whole blocks of 64 slots (see ``positions``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cloudp2p.errors import CloudP2PError
from cloudp2p.stego.positions import BLOCK, usable_slots


class CapacityError(CloudP2PError, ValueError):
    """The cover image is too small to hide this payload."""


def colour_channels(shape: Sequence[int]) -> int:
    """Slots per pixel for an array of ``shape``; ``ValueError`` if it is not a cover shape."""
    if len(shape) == 2:
        return 1
    if len(shape) == 3 and 1 <= shape[2] <= 4:
        return {1: 1, 2: 1, 3: 3, 4: 3}[shape[2]]
    raise ValueError(f"a cover array has shape (H, W) or (H, W, C) with C in 1..4, not {tuple(shape)}")


def colour_slots(shape: Sequence[int]) -> int:
    return int(shape[0]) * int(shape[1]) * colour_channels(shape)


def capacity_bits(shape: Sequence[int]) -> int:
    """Usable LSB slots (payload bits) of a uint8 cover array of ``shape`` (H, W[, C])."""
    return usable_slots(colour_slots(shape))


def capacity_bytes(shape: Sequence[int]) -> int:
    return capacity_bits(shape) // 8


def pixels_needed(nbytes: int, channels: int = 3) -> int:
    """The fewest pixels a cover with ``channels`` colour samples per pixel needs for ``nbytes``."""
    bits = nbytes * 8
    slots = -(-bits // BLOCK) * BLOCK
    return -(-slots // channels)


def too_small(nbytes: int, shape: Sequence[int], what: str = "the cover") -> CapacityError:
    """A ``CapacityError`` that says how large a cover ``nbytes`` would need."""
    channels = colour_channels(shape)
    need = pixels_needed(nbytes, channels)
    height, width = int(shape[0]), int(shape[1])
    # Same aspect ratio as the given cover, scaled up just enough.
    scale = math.sqrt(need / max(1, height * width))
    w2, h2 = math.ceil(width * scale), math.ceil(height * scale)
    kind = {1: "greyscale", 3: "colour"}[channels]
    return CapacityError(
        f"{nbytes} bytes need {need} {kind} pixels; {what} is {width}x{height} "
        f"({height * width} pixels, room for {capacity_bytes(shape)} bytes). "
        f"Use a cover of at least {need} pixels, for example {w2}x{h2}."
    )
