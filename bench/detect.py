"""bench-detect: can steganalysis see the hidden payload? Chi-square and RS on the sample photos.

    python -m bench.detect [--seed 1]

For each sample photo (coffee, chelsea, astronaut; camera in greyscale) and
for: the clean cover; stegano 3.0's ``lsb.hide`` (LSB replacement, pixels in
order) at 10 % and 50 % of its capacity; this project's ``embed`` (LSB matching
at keyed positions) at 10 % and 50 % of its capacity, it prints

Also ``replace_10`` / ``replace_50``: plain sequential LSB replacement of random
bits, the model both attacks were designed for (an encrypted payload hidden by
a stegano-like tool).

* ``rs_<photo>_<case>``: the RS estimate (Fridrich, Goljan, Du) of the fraction
  of samples carrying LSB-replaced bits;
* ``chi_<photo>_<case>``: the Westfeld-Pfitzmann chi-square probability of
  embedding over the whole image, and ``chi10_<photo>_<case>`` over the first
  10 % of the samples (where a sequential tool such as stegano writes first).

stegano's message is base64 text of random bytes (stegano hides text; its own
tools turn binary files into base64); the project's payload is random bytes
(in production it is always ciphertext). The target: at 50 % capacity the
project's RS estimate stays within 0.05 of the clean cover's on coffee and
chelsea (``rs_target_met``), while stegano's reads about 0.5.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import numpy as np
from PIL import Image

from cloudp2p.stego import analysis, engine

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = {
    "coffee": (ROOT / "cloudp2p" / "data" / "covers" / "coffee.png", "RGB"),
    "chelsea": (ROOT / "cloudp2p" / "data" / "covers" / "chelsea.png", "RGB"),
    "astronaut": (ROOT / "tests" / "data" / "astronaut.png", "RGB"),  # not a default cover: see docs/stego.md
    "camera": (ROOT / "tests" / "data" / "camera.png", "L"),
}
TARGETED = ("coffee", "chelsea")


def stegano_hide(cover: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    from stegano import lsb

    rgb = cover if cover.ndim == 3 else np.repeat(cover[:, :, None], 3, axis=2)
    pixels = rgb.shape[0] * rgb.shape[1]
    text_bytes = int(pixels * 3 * fraction / 8) - 10
    message = base64.b64encode(rng.bytes(text_bytes * 3 // 4)).decode()
    out = np.asarray(lsb.hide(Image.fromarray(rgb), message))
    return out if cover.ndim == 3 else out[:, :, 0]  # greyscale: stegano wrote R=G=B; keep one plane


def replace_sequential(cover: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """LSB replacement of random bits in the first ``fraction`` of the samples: what the attacks model."""
    out = cover.copy()
    flat = out.reshape(-1)
    n = int(flat.size * fraction)
    flat[:n] = (flat[:n] & 0xFE) | rng.integers(0, 2, n, dtype=np.uint8)
    return out


def project_embed(cover: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    payload = rng.bytes(int(engine.capacity_bits(cover.shape) // 8 * fraction))
    return engine.embed(cover, payload, rng.bytes(32), rng_seed=rng.bytes(16))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.detect", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    met = True
    for name, (path, mode) in PHOTOS.items():
        with Image.open(path) as img:
            cover = np.array(img.convert(mode), dtype=np.uint8)
        cases = {"clean": cover}
        for fraction in (0.1, 0.5):
            percent = int(fraction * 100)
            cases[f"stegano_{percent}"] = stegano_hide(cover, fraction, rng)
            cases[f"replace_{percent}"] = replace_sequential(cover, fraction, rng)
            cases[f"project_{percent}"] = project_embed(cover, fraction, rng)
        rs = {case: analysis.rs_estimate(array) for case, array in cases.items()}
        for case in cases:
            print(f"rs_{name}_{case}: {rs[case]:.4f}")
        for case, array in cases.items():
            print(f"chi_{name}_{case}: {analysis.chi_square(array).p_embedding:.4f}")
            print(f"chi10_{name}_{case}: {analysis.chi_square_prefix(array, 0.1).p_embedding:.4f}")
        shift = abs(rs["project_50"] - rs["clean"])
        print(f"rs_shift_{name}_project_50: {shift:.4f}")
        if name in TARGETED and shift > 0.05:
            met = False
    print(f"rs_target_met: {'yes' if met else 'no'}")


if __name__ == "__main__":
    main()
