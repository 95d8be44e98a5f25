"""Steganalysis, to measure how detectable an embedding is (tests and ``bench/detect.py``).

Two classic attacks on LSB *replacement*, written from their papers and vectorised:

* ``chi_square``: the Westfeld-Pfitzmann attack ("Attacks on Steganographic
  Systems", 2000). Replacing LSBs with random bits equalises the counts of each
  pair of values (2i, 2i+1). The statistic compares the count of 2i with the
  pair's mean; a small statistic means equalised pairs. It returns the
  probability of embedding, ``1 - CDF(chi2, dof)``: near 1 when the samples
  tested are full of replaced LSBs, near 0 for a natural image.
* ``rs_estimate``: RS analysis (Fridrich, Goljan, Du, "Reliable Detection of
  LSB Steganography in Color and Grayscale Images", 2001). Groups of 4
  neighbouring samples are classified Regular / Singular by whether flipping
  their LSBs under a mask raises or lowers their noise (sum of absolute
  differences); flipping with F1 (0<->1, 2<->3...) and F-1 (-1<->0, 1<->2...)
  behave alike on natural images, and LSB replacement breaks that symmetry in a
  way that reveals the fraction ``p`` of samples carrying message bits. Returns
  the estimated ``p`` (about 0.0-0.05 on clean photographs; about 0.5 for
  stegano's replacement at half of its capacity).

LSB matching (+-1 at random, this project's engine) changes the histogram
symmetrically and moves values across pairs, so neither attack sees it.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

_MASK = np.array([0, 1, 1, 0], dtype=bool)


# -- chi-square --------------------------------------------------------------------------------------------


def _gammainc_lower_regularised(a: float, x: float) -> float:
    """P(a, x), the regularised lower incomplete gamma function (series / continued fraction)."""
    if x <= 0:
        return 0.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = 1.0 / a
        total = term
        n = a
        for _ in range(10_000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return min(1.0, total * math.exp(log_prefix))
    # Continued fraction for Q(a, x) (modified Lentz).
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return max(0.0, 1.0 - math.exp(log_prefix) * h)


def chi2_cdf(statistic: float, dof: int) -> float:
    return _gammainc_lower_regularised(dof / 2.0, statistic / 2.0)


@attrs.frozen
class ChiSquare:
    statistic: float
    dof: int
    p_embedding: float  # 1 - CDF: the probability that the samples carry replaced LSBs


def chi_square(samples: np.ndarray, *, min_expected: float = 5.0) -> ChiSquare:
    """The Westfeld-Pfitzmann chi-square attack on uint8 ``samples`` (any shape)."""
    samples = np.asarray(samples)
    if samples.dtype != np.uint8:
        raise TypeError(f"expected uint8 samples, got {samples.dtype}")
    hist = np.bincount(samples.reshape(-1), minlength=256).astype(np.float64)
    even = hist[0::2]
    expected = (hist[0::2] + hist[1::2]) / 2
    keep = expected >= min_expected  # pairs too rare for the chi-square approximation are left out
    if keep.sum() < 2:
        return ChiSquare(0.0, 0, 0.0)
    statistic = float(np.sum((even[keep] - expected[keep]) ** 2 / expected[keep]))
    dof = int(keep.sum()) - 1
    return ChiSquare(statistic, dof, 1.0 - chi2_cdf(statistic, dof))


def chi_square_prefix(samples: np.ndarray, fraction: float) -> ChiSquare:
    """The attack on the first ``fraction`` of the samples in memory order (where sequential tools write)."""
    flat = np.asarray(samples).reshape(-1)
    return chi_square(flat[: max(1, int(flat.size * fraction))])


# -- RS analysis -------------------------------------------------------------------------------------------


def _groups(array: np.ndarray) -> np.ndarray:
    """(n, 4) int16 groups of 4 horizontally adjacent samples, every channel."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image array, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"expected an (H, W[, C]) array, got shape {array.shape}")
    if array.shape[2] in (2, 4):
        array = array[:, :, : array.shape[2] - 1]  # alpha is not image content
    height, width, channels = array.shape
    usable = (width // 4) * 4
    if usable == 0 or height == 0:
        raise ValueError("the image is too small for RS analysis (needs 4 columns)")
    per_channel = np.moveaxis(array[:, :usable, :], 2, 0)  # (C, H, usable)
    return per_channel.reshape(channels * height * (usable // 4), 4).astype(np.int16)


def _noise(groups: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(groups, axis=1)).sum(axis=1)


def _flip_pos(x: np.ndarray) -> np.ndarray:
    return x ^ 1  # F1: 0<->1, 2<->3, ...


def _flip_neg(x: np.ndarray) -> np.ndarray:
    return ((x + 1) ^ 1) - 1  # F-1: -1<->0, 1<->2, ...


def _rs_counts(groups: np.ndarray) -> tuple[float, float, float, float]:
    """(R_M, S_M, R_-M, S_-M) as fractions of the groups."""
    base = _noise(groups)
    n = groups.shape[0]
    out = []
    for flip in (_flip_pos, _flip_neg):  # mask M uses F1 where it is 1; -M uses F-1 there
        changed = groups.copy()
        changed[:, _MASK] = flip(groups[:, _MASK])
        noise = _noise(changed)
        out.append(np.count_nonzero(noise > base) / n)
        out.append(np.count_nonzero(noise < base) / n)
    return out[0], out[1], out[2], out[3]


def rs_estimate(array: np.ndarray) -> float:
    """RS steganalysis: the estimated fraction of samples carrying LSB-replaced message bits."""
    groups = _groups(array)
    r_m, s_m, r_nm, s_nm = _rs_counts(groups)
    r1_m, s1_m, r1_nm, s1_nm = _rs_counts(groups ^ 1)  # every LSB flipped: the "1 - p/2" point
    d0, d1 = r_m - s_m, r1_m - s1_m
    dn0, dn1 = r_nm - s_nm, r1_nm - s1_nm
    a = 2 * (d1 + d0)
    b = dn0 - dn1 - d1 - 3 * d0
    c = d0 - dn0
    if abs(a) < 1e-12:
        if abs(b) < 1e-12:
            return 0.0
        z = -c / b
    else:
        disc = b * b - 4 * a * c
        if disc < 0:
            return 0.0  # no real root: nothing like LSB replacement
        roots = ((-b + math.sqrt(disc)) / (2 * a), (-b - math.sqrt(disc)) / (2 * a))
        z = min(roots, key=abs)
    if abs(z - 0.5) < 1e-12:
        return 1.0
    return float(z / (z - 0.5))
