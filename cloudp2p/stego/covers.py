"""Covers: the default library that ships with the server, and covers that clients supply.

``choose_cover(needed_bits, supplied)`` returns a cover array that holds at least
``needed_bits`` and a sentence that says what was done, for the user:

* a supplied cover (untrusted bytes, through ``imaging.load_image``) is used as
  it is when it is large enough, else scaled up (Pillow ``resize``, LANCZOS,
  same aspect ratio) just enough;
* without one, the smallest default cover that is large enough (smallest
  result file), else the largest default scaled up, to the next size of a
  ladder whose rungs are about 9 % apart in capacity: a scaled default cover is
  cached per worker process (LANCZOS on 3 MP took 40 ms, a quarter of a 1 MB
  photo's encrypt), and photos of similar sizes share a rung, so the cache
  hits; the result is at most 9 % larger than the payload needs, and its size
  tells less about the payload's;
* when the cover would have to exceed ``MAX_COVER_PIXELS``, ``CapacityError``
  says how many pixels the payload needs.

The default library is ``cloudp2p/data/covers/*.png`` (see its README for the
licences), plus the PNG/JPEG files of an optional extra directory
(``[encryption] covers_dir``). Covers are decoded once per process and cached
read-only; callers get copies.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from cloudp2p.stego import imaging
from cloudp2p.stego.capacity import CapacityError, capacity_bits, colour_channels, pixels_needed

DEFAULT_COVERS_DIR = Path(__file__).resolve().parent.parent / "data" / "covers"
MAX_COVER_PIXELS = 40_000_000  # below imaging.DEFAULT_MAX_PIXELS, so a result always loads again
LADDER_STEP = 2**0.125  # capacities of scaled default covers: about 9 % apart
CACHED_SCALED_PIXELS = 6_000_000  # larger scaled covers are made each time (18 MB each, 4 kept)
_EXTENSIONS = (".png", ".jpg", ".jpeg")


@functools.lru_cache(maxsize=8)
def library(extra_dir: str | None = None) -> tuple[tuple[str, np.ndarray], ...]:
    """(name, read-only array) of every cover, smallest first. Unreadable files are skipped."""
    found: list[tuple[str, np.ndarray]] = []
    dirs = [DEFAULT_COVERS_DIR] + ([Path(extra_dir)] if extra_dir else [])
    for directory in dirs:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if not name.lower().endswith(_EXTENSIONS):
                continue
            try:
                data = (directory / name).read_bytes()
                array = imaging.to_cover_array(imaging.load_image(data))
            except (OSError, imaging.InvalidImage):
                continue
            if array.shape[2] in (2, 4):
                array = np.ascontiguousarray(array[:, :, : array.shape[2] - 1])
            array.flags.writeable = False
            found.append((name, array))
    found.sort(key=lambda item: (item[1].shape[0] * item[1].shape[1], item[0]))
    return tuple(found)


def scale_to_fit(array: np.ndarray, needed_bits: int, *, max_pixels: int = MAX_COVER_PIXELS) -> np.ndarray:
    """``array`` resized (LANCZOS, same aspect ratio) to the smallest size that holds ``needed_bits``."""
    height, width = array.shape[:2]
    channels = colour_channels(array.shape)
    need = pixels_needed(-(-needed_bits // 8), channels)
    scale = math.sqrt(need / (height * width))
    w2, h2 = max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))
    # Rounding and the 64-slot blocks can leave it a little short: grow until it fits.
    while capacity_bits((h2, w2, array.shape[2])) < needed_bits:
        w2 += 1
        h2 = max(1, math.ceil(w2 * height / width))
    if w2 * h2 > max_pixels:
        raise CapacityError(
            f"{needed_bits // 8} bytes need a cover of {need} pixels ({w2}x{h2} at this aspect ratio), "
            f"more than the {max_pixels} pixels a cover may have"
        )
    img = imaging.to_image(array)
    resized = img.resize((w2, h2), Image.Resampling.LANCZOS)
    return imaging.to_cover_array(resized)


def ladder_bits(needed_bits: int) -> int:
    """The smallest rung of the ladder (powers of ``LADDER_STEP``) that holds ``needed_bits``."""
    if needed_bits <= 1:
        return 1
    rung = math.ceil(math.log(needed_bits) / math.log(LADDER_STEP) - 1e-9)
    return max(needed_bits, math.ceil(LADDER_STEP**rung))


def _scaled_default(covers_dir: str | None, name: str, needed_bits: int) -> np.ndarray:
    """A writable copy of default cover ``name`` scaled to the ladder rung above ``needed_bits``."""
    try:
        cached = _scaled_rung(covers_dir, name, ladder_bits(needed_bits))
    except CapacityError:  # the rung is past the pixel limit, the payload itself may not be
        return scale_to_fit(dict(library(covers_dir))[name], needed_bits)
    return cached.copy()


@functools.lru_cache(maxsize=4)
def _cached_rung(covers_dir: str | None, name: str, bits: int) -> np.ndarray:
    scaled = scale_to_fit(dict(library(covers_dir))[name], bits)
    scaled.flags.writeable = False
    return scaled


def _scaled_rung(covers_dir: str | None, name: str, bits: int) -> np.ndarray:
    source = dict(library(covers_dir))[name]
    pixels = source.shape[0] * source.shape[1] * bits / capacity_bits(source.shape)
    if pixels > CACHED_SCALED_PIXELS:
        return scale_to_fit(source, bits)
    return _cached_rung(covers_dir, name, bits)


def choose_cover(
    needed_bits: int, supplied: bytes | None, *, covers_dir: str | None = None
) -> tuple[np.ndarray, str]:
    """A writable cover array holding ``needed_bits``, and what was done to get it.

    Raises ``InvalidImage`` for a supplied cover that is not an image,
    ``CapacityError`` when no cover can be made large enough.
    """
    if needed_bits < 0:
        raise ValueError(f"needed_bits must be 0 or more, got {needed_bits}")
    if supplied is not None:
        array = imaging.to_cover_array(imaging.load_image(supplied))
        height, width = array.shape[:2]
        if capacity_bits(array.shape) >= needed_bits:
            return array, f"used the supplied cover as it is ({width}x{height})"
        scaled = scale_to_fit(array, needed_bits)
        h2, w2 = scaled.shape[:2]
        return scaled, (
            f"the supplied cover ({width}x{height}) was too small for {needed_bits // 8} bytes; "
            f"scaled it up to {w2}x{h2}"
        )
    covers = library(covers_dir)
    if not covers:
        raise CapacityError("no default cover is installed; supply a cover image")
    for name, array in covers:
        if capacity_bits(array.shape) >= needed_bits:
            height, width = array.shape[:2]
            return array.copy(), f"used the default cover {name} ({width}x{height})"
    name, array = covers[-1]
    height, width = array.shape[:2]
    scaled = _scaled_default(covers_dir, name, needed_bits)
    h2, w2 = scaled.shape[:2]
    return scaled, (
        f"no default cover holds {needed_bits // 8} bytes; scaled the largest, {name} ({width}x{height}), "
        f"up to {w2}x{h2}"
    )
