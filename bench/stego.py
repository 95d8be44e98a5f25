"""bench-stego: the engine against stegano 3.0, a numpy copy and PNG coding, at 1, 4 and 12 megapixels.

    python -m bench.stego [--sizes 1,4,12] [--repeat 5] [--stegano-max-mp 12]

Covers are the sample photo coffee.png (600x400) scaled up with LANCZOS to the
size asked. Every figure is measured in the same run, at 50 % of capacity:

* stegano 3.0 ``lsb.hide`` / ``lsb.reveal`` (Pillow image in and out) with a text
  message of half its capacity (3 bits per pixel);
* this project's ``embed`` / ``extract`` (uint8 array in and out) with random
  bytes of half its capacity;
* ``cover.copy()``: the memory-speed limit of anything that returns a new array;
* PNG: the project's writer (``pngcodec``: numpy filter, ISA-L deflate) against
  Pillow at zlib level 1 (the path before it), time and size; decode with the
  project's reader against Pillow's.

Times are the best of ``--repeat`` runs (stegano: best of ``--stegano-repeat``
below 10 MP and a single run above, it is slow;
sizes above ``--stegano-max-mp`` are extrapolated linearly from the largest
measured one, and say so). Prints one ``name: value`` line per figure; the
headline ``speedup_vs_stegano`` and ``embed_vs_copy`` are the worst over the
sizes.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cloudp2p.stego import engine, imaging

SOURCE = Path(__file__).resolve().parent.parent / "cloudp2p" / "data" / "covers" / "coffee.png"


def best_of(repeat: int, fn, *args, **kwargs) -> tuple[float, object]:
    best, result = math.inf, None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - started)
    return best, result


def decode_png(data: bytes) -> np.ndarray:
    """Pillow's decode (today's path before the fast reader)."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def png_figures(stego: np.ndarray, tag: str, repeat: int) -> None:
    """The fast PNG writer and reader against Pillow at level 1 (the path before them), same image."""
    pil_s, pil_png = best_of(repeat, imaging.save_png, stego, compress_level=1, writer="pillow")
    fast_s, fast_png = best_of(repeat, imaging.save_png, stego, compress_level=1)
    pil_dec_s, _ = best_of(repeat, decode_png, pil_png)
    fast_dec_s, back = best_of(repeat, imaging.png_to_array, fast_png)
    if not np.array_equal(back, stego) or not np.array_equal(decode_png(fast_png), stego):
        raise SystemExit("the fast PNG does not read back as the image")
    print(f"png_encode_ms_pillow1_{tag}: {pil_s * 1e3:.1f}")
    print(f"png_encode_ms_fast_{tag}: {fast_s * 1e3:.1f}")
    print(f"png_bytes_pillow1_{tag}: {len(pil_png)}")
    print(f"png_bytes_fast_{tag}: {len(fast_png)}")
    print(f"png_encode_speedup_vs_pillow1_{tag}: {pil_s / fast_s:.2f}")
    print(f"png_size_vs_pillow1_{tag}: {len(fast_png) / len(pil_png):.3f}")
    print(f"png_decode_ms_pillow_{tag}: {pil_dec_s * 1e3:.1f}")
    print(f"png_decode_ms_fast_{tag}: {fast_dec_s * 1e3:.1f}")
    print(f"png_decode_speedup_vs_pillow_{tag}: {pil_dec_s / fast_dec_s:.2f}")


def cover_of(megapixels: float) -> np.ndarray:
    with Image.open(SOURCE) as img:
        ratio = img.width / img.height
        height = round(math.sqrt(megapixels * 1e6 / ratio))
        width = round(height * ratio)
        return np.asarray(img.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)).copy()


def stegano_times(cover: np.ndarray, repeat: int) -> tuple[float, float]:
    """Best-of-``repeat`` seconds of stegano's hide and reveal at half of its capacity."""
    from stegano import lsb

    pixels = cover.shape[0] * cover.shape[1]
    message = os.urandom(pixels * 3 // 2 // 8 // 2 - 8).hex()  # half of 3 bits per pixel, as text
    image = Image.fromarray(cover)
    hide = reveal = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        hidden = lsb.hide(image.copy(), message)
        hide = min(hide, time.perf_counter() - started)
        started = time.perf_counter()
        revealed = lsb.reveal(hidden)
        reveal = min(reveal, time.perf_counter() - started)
        if revealed != message:
            raise SystemExit("stegano did not read back its own message")
    return hide, reveal


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stego", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,12", help="megapixels, comma-separated")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--stegano-max-mp", type=float, default=12.0)
    parser.add_argument("--stegano-repeat", type=int, default=3, help="best of N below 10 MP (1 above)")
    args = parser.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]

    speedups, vs_copy = [], []
    stegano_rate: tuple[float, float] | None = None  # seconds per pixel, hide and reveal
    for mp in sizes:
        tag = f"{mp:g}mp"
        cover = cover_of(mp)
        pixels = cover.shape[0] * cover.shape[1]
        payload = os.urandom(engine.capacity_bits(cover.shape) // 8 // 2)
        key = b"bench-stego"
        engine.embed(cover[:64, :64], b"warm", key)  # import-time and first-call costs out of the way

        copy_s, _ = best_of(args.repeat, cover.copy)
        embed_s, stego = best_of(args.repeat, engine.embed, cover, payload, key)
        extract_s, back = best_of(args.repeat, engine.extract, stego, key, len(payload))
        if back != payload:
            raise SystemExit("extract did not return the payload")
        if mp <= args.stegano_max_mp:
            hide_s, reveal_s = stegano_times(cover, args.stegano_repeat if mp < 10 else 1)
            stegano_rate = (hide_s / pixels, reveal_s / pixels)
            note = ""
        elif stegano_rate is not None:
            hide_s, reveal_s = stegano_rate[0] * pixels, stegano_rate[1] * pixels
            note = " (extrapolated linearly from the largest measured size)"
        else:
            hide_s = reveal_s = math.nan
            note = " (not measured)"
        print(f"cover_{tag}: {cover.shape[1]}x{cover.shape[0]}")
        print(f"payload_bytes_{tag}: {len(payload)}")
        print(f"copy_ms_{tag}: {copy_s * 1e3:.2f}")
        print(f"embed_ms_{tag}: {embed_s * 1e3:.2f}")
        print(f"extract_ms_{tag}: {extract_s * 1e3:.2f}")
        print(f"stegano_hide_ms_{tag}: {hide_s * 1e3:.0f}{note}")
        print(f"stegano_reveal_ms_{tag}: {reveal_s * 1e3:.0f}{note}")
        speedup = hide_s / embed_s
        speedups.append(speedup)
        vs_copy.append(embed_s / copy_s)
        print(f"speedup_vs_stegano_{tag}: {speedup:.0f}")
        print(f"extract_speedup_vs_stegano_{tag}: {reveal_s / extract_s:.0f}")
        print(f"embed_vs_copy_{tag}: {embed_s / copy_s:.1f}")
        print(f"psnr_db_{tag}: {imaging.psnr(cover, stego):.2f}")
        png_figures(stego, tag, args.repeat)
    print(f"speedup_vs_stegano: {min(speedups):.0f}")
    print(f"embed_vs_copy: {max(vs_copy):.1f}")


if __name__ == "__main__":
    main()
