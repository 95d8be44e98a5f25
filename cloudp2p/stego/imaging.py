"""Image handling: every byte string that claims to be an image goes through ``load_image``.

Accepted formats: PNG and JPEG (``ACCEPTED_FORMATS``). Anything else (GIF, BMP,
WebP, TIFF, a text file...) is refused with ``InvalidImage`` saying which formats
are accepted: each extra decoder is more attack surface, and the product needs
only photos (JPEG) and lossless images (PNG).

Limits, all deliberate:

* ``DEFAULT_MAX_PIXELS`` (50 megapixels): Pillow's own decompression-bomb limit
  (``Image.MAX_IMAGE_PIXELS``) is set to it at import, its warning (between 1x
  and 2x the limit) is turned into an error, and ``load_image`` checks the
  declared size against ``max_pixels`` *before* decoding any pixel, so a small
  file that declares a huge canvas costs nothing.
* ``MAX_INPUT_BYTES`` (64 MiB): larger byte strings are refused before parsing.
* Truncated files are refused: the image is decoded in full
  (``Image.load()``) with ``ImageFile.LOAD_TRUNCATED_IMAGES`` left False.

``to_cover_array`` turns any accepted image into the engine's uint8 array:
RGB -> (H, W, 3); RGBA -> (H, W, 4) whose alpha the engine never touches;
L -> (H, W, 1); LA -> (H, W, 2) (alpha untouched); P (palette) -> converted to
RGB, or RGBA when the palette has transparency, because LSB changes to palette
indices would jump between unrelated colours; 1-bit, 16-bit and other modes
-> converted to L or RGB. The result is always saved as PNG (``save_png``).
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageFile

from cloudp2p.errors import InvalidImage
from cloudp2p.stego import pngcodec

ACCEPTED_FORMATS = ("PNG", "JPEG")
DEFAULT_MAX_PIXELS = 50_000_000
MAX_INPUT_BYTES = 64 * 1024 * 1024
# zlib level for the images the cloud sends back. Level 1 measured (bench/stego.py) 4-5x faster to
# encode than Pillow's default 6 on photographs, for files about 15-20 % larger; LSB-carrying photos
# barely compress anyway, and the encode runs on every request while the extra bytes cost little.
DEFAULT_PNG_LEVEL = 1
THUMBNAIL_MAX_BYTES = 12 * 1024

Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False


def load_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft: bool = False) -> Image.Image:
    """Decode untrusted ``data`` into a fully loaded Pillow image, or raise ``InvalidImage``.

    Refuses: non-bytes, empty or oversized input, formats other than PNG and
    JPEG, images of more than ``max_pixels`` pixels (decompression bombs),
    truncated or corrupt files. Never raises anything else for bad bytes.

    ``draft=True`` is for checking only: a JPEG is decoded at 1/8 scale (every
    coefficient is still read, so truncation is still caught; the inverse DCT
    at full size, most of the time, is skipped). The image returned is smaller.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidImage(f"expected the bytes of an image file, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidImage("the file is empty")
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidImage(f"the file is {len(data)} bytes; at most {MAX_INPUT_BYTES} are accepted")
    accepted = " or ".join(ACCEPTED_FORMATS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
            width, height = img.size
            if width <= 0 or height <= 0:
                raise InvalidImage(f"the image declares an empty size {width}x{height}")
            if width * height > max_pixels:
                raise InvalidImage(
                    f"the image declares {width}x{height} = {width * height} pixels, more than the limit "
                    f"of {max_pixels} (a decompression bomb, or simply too large)"
                )
            if draft and img.format == "JPEG":
                img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
            img.load()
    except InvalidImage:
        raise
    except Image.UnidentifiedImageError:
        raise InvalidImage(f"not a {accepted} image; only PNG and JPEG files are accepted") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidImage(f"decompression bomb refused: {e}") from None
    except MemoryError:
        raise InvalidImage("the image is too large to decode") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure on untrusted bytes is "not an image"
        text = str(e) or type(e).__name__
        if "truncated" in text.lower() or isinstance(e, EOFError):
            raise InvalidImage(f"the image file is truncated ({text})") from None
        raise InvalidImage(f"the {accepted} file is corrupt: {text}") from None
    return img


def to_cover_array(img: Image.Image) -> np.ndarray:
    """A uint8 (H, W, C) array for the engine: C is 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA)."""
    mode = img.mode
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("1", "I;16", "I;16B", "I;16L", "I", "F"):
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit greyscale: keep the top 8 bits rather than Pillow's clipping of I -> L.
            arr = np.asarray(img, dtype=np.int64)
            arr = (np.clip(arr, 0, 65535) >> 8) if arr.max(initial=0) > 255 else np.clip(arr, 0, 255)
            return arr.astype(np.uint8)[:, :, None]
        img = img.convert("L")
    elif mode not in ("RGB", "RGBA", "L", "LA"):
        img = img.convert("RGBA" if "A" in mode else "RGB")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.array(arr, dtype=np.uint8, order="C", copy=True)


def to_image(array_or_image) -> Image.Image:
    """A Pillow image for a cover array ((H, W) or (H, W, C), C in 1..4) or an image itself."""
    if isinstance(array_or_image, Image.Image):
        return array_or_image
    arr = np.asarray(array_or_image)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected a uint8 array, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(arr))  # 2-D uint8 -> mode L
    if arr.ndim == 3 and arr.shape[2] in (2, 3, 4):
        return Image.fromarray(np.ascontiguousarray(arr))
    raise ValueError(f"not an image array: shape {arr.shape}")


PNG_WRITERS = ("fast", "pillow")


def save_png(array_or_image, *, compress_level: int = DEFAULT_PNG_LEVEL, writer: str = "fast") -> bytes:
    """Lossless PNG bytes of an image or cover array; ``compress_level`` is zlib's 0-9.

    ``writer="fast"`` (default): ``pngcodec.encode`` (numpy filter, ISA-L deflate at
    ``pngcodec.isal_level(compress_level)``) for grey, grey+alpha, RGB and RGBA;
    ``"pillow"``: Pillow's encoder at zlib ``compress_level`` (the old path, kept to
    measure against and for other modes).
    """
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be 0..9, got {compress_level}")
    if writer not in PNG_WRITERS:
        raise ValueError(f"writer must be one of {PNG_WRITERS}, got {writer!r}")
    if writer == "fast":
        if isinstance(array_or_image, Image.Image):
            if array_or_image.mode in ("L", "LA", "RGB", "RGBA"):
                return pngcodec.encode(np.asarray(array_or_image), level=pngcodec.isal_level(compress_level))
        else:
            return pngcodec.encode(array_or_image, level=pngcodec.isal_level(compress_level))
    img = to_image(array_or_image)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


def png_to_array(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``to_cover_array(load_image(data))``: the array a stego PNG carries.

    PNGs that ``pngcodec.decode`` handles (every one ``save_png`` writes) are read
    there, several times faster; anything else, damaged files included, goes
    through ``load_image`` and its checks and errors.
    """
    if isinstance(data, bytes | bytearray) and len(data) <= MAX_INPUT_BYTES:
        array = pngcodec.decode(bytes(data), max_pixels=max_pixels)
        if array is not None:
            return array
    return to_cover_array(load_image(data, max_pixels=max_pixels))


def thumbnail(data: bytes, max_side: int = 128) -> bytes:
    """A small JPEG preview (long side <= ``max_side`` px, <= ~12 KB) of untrusted image ``data``."""
    if not 8 <= max_side <= 1024:
        raise ValueError(f"max_side must be 8..1024, got {max_side}")
    img = load_image(data)
    if img.mode not in ("RGB", "L"):
        # Flatten transparency on white: JPEG has no alpha.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    img = img.copy()
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    for quality in (80, 65, 50, 35, 20):
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=quality, optimize=True)
        if out.tell() <= THUMBNAIL_MAX_BYTES:
            break
    return out.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of ``b`` against ``a`` (8-bit, peak 255); inf if identical."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(diff * diff)) if diff.size else 0.0
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0 * 255.0 / mse)
