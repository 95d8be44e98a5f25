"""A reader of the format stegano 3.0's ``lsb.hide`` writes, in numpy.

stegano is the reference steganography library of the design card. Its LSB
format, as its 3.0 source (``stegano/lsb/lsb.py``, ``stegano/tools.py``) writes it:

* the image is read as RGB (RGBA keeps its alpha, which carries nothing; other
  modes are converted to RGB first);
* pixels are visited in the order of a generator of pixel numbers ``n``
  (default: 0, 1, 2, ...; pixel ``n`` is column ``n % width``, row
  ``n // width``), after skipping the generator's first ``shift`` values;
* each visited pixel carries 3 bits, in the least significant bits of R, G
  and B (LSB *replacement*: ``x & ~1 | bit``);
* the bit stream is the ASCII decimal length of the message's encoded bytes,
  a colon, then those bytes (UTF-8 by default), each byte most significant bit
  first, padded with 0 bits to a multiple of 3.

``reveal_bytes`` / ``reveal`` read that back from an array or a Pillow image
without a Python loop over pixels. This module is ours; nothing is copied from
stegano. It exists so that tests can check that this project's extractor and
stegano agree on stegano's own format, and so that benchmarks can compare.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from cloudp2p.errors import CloudP2PError

ENCODINGS = ("UTF-8", "UTF-32LE")
_MAX_PREFIX = 20  # digits of the length, plus the colon


class NoSteganoMessageError(CloudP2PError, ValueError):
    """The image carries no message in stegano's LSB format."""


def _rgb_lsbs(image: Image.Image | np.ndarray) -> np.ndarray:
    """(pixels, 3) array of the R, G, B least significant bits, pixels in row-major order."""
    if isinstance(image, Image.Image):
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGB")
        array = np.asarray(image, dtype=np.uint8)
    else:
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"expected a uint8 (H, W, 3 or 4) array, got {array.dtype} {array.shape}")
    return (array[:, :, :3] & 1).reshape(-1, 3)


def _bits_to_bytes(bits: np.ndarray) -> bytes:
    return np.packbits(bits[: (bits.size // 8) * 8]).tobytes()


def reveal_bytes(
    image: Image.Image | np.ndarray, *, shift: int = 0, pixel_order: Sequence[int] | np.ndarray | None = None
) -> bytes:
    """The message bytes stegano's ``lsb.hide`` wrote in ``image``.

    ``pixel_order``: the pixel numbers stegano's generator would yield (default
    0, 1, 2, ...); ``shift`` skips its first values, as stegano's ``shift`` does.
    Raises ``NoSteganoMessageError`` if there is no well-formed message.
    """
    if shift < 0:
        raise ValueError(f"shift must be 0 or more, got {shift}")
    lsbs = _rgb_lsbs(image)
    npixels = lsbs.shape[0]
    if pixel_order is None:
        order = None
        available = npixels - shift
    else:
        order = np.asarray(pixel_order, dtype=np.int64)[shift:]
        if order.size and (order.min() < 0 or order.max() >= npixels):
            raise ValueError("pixel_order names a pixel outside the image")
        available = order.size

    def bits_of(first_pixels: int) -> np.ndarray:
        count = min(first_pixels, available)
        if order is None:
            return lsbs[shift : shift + count].reshape(-1)
        return lsbs[order[:count]].reshape(-1)

    head = _bits_to_bytes(bits_of(-(-_MAX_PREFIX * 8 // 3)))
    colon = head.find(b":")
    digits = head[:colon] if colon >= 0 else b""
    if colon <= 0 or not digits.isdigit():
        raise NoSteganoMessageError("no '<length>:' prefix at the start of the LSB stream")
    length = int(digits)
    total = colon + 1 + length
    need_pixels = -(-total * 8 // 3)
    if need_pixels > available:
        raise NoSteganoMessageError(f"the prefix announces {length} bytes, more than the image holds")
    data = _bits_to_bytes(bits_of(need_pixels))
    return data[colon + 1 : total]


def reveal(
    image: Image.Image | np.ndarray,
    *,
    shift: int = 0,
    encoding: str = "UTF-8",
    pixel_order: Sequence[int] | np.ndarray | None = None,
) -> str:
    """The text message stegano's ``lsb.hide`` wrote, decoded with ``encoding`` (UTF-8 or UTF-32LE)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported encoding {encoding!r}; stegano knows {', '.join(ENCODINGS)}")
    data = reveal_bytes(image, shift=shift, pixel_order=pixel_order)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        raise NoSteganoMessageError(f"the message is not valid {encoding}") from None
