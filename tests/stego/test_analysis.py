"""Promise 7: steganalysis sees stegano's LSB replacement and not this project's LSB matching."""

import base64

import numpy as np
import pytest
from PIL import Image
from stegano import lsb

from cloudp2p.stego import analysis, engine


def stegano_at(cover: np.ndarray, fraction: float) -> np.ndarray:
    rng = np.random.default_rng(3)
    pixels = cover.shape[0] * cover.shape[1]
    text = base64.b64encode(rng.bytes(int(pixels * 3 * fraction / 8 * 3 / 4) - 8)).decode()
    return np.asarray(lsb.hide(Image.fromarray(cover), text))


def project_at(cover: np.ndarray, fraction: float) -> np.ndarray:
    rng = np.random.default_rng(4)
    payload = rng.bytes(int(engine.capacity_bits(cover.shape) // 8 * fraction))
    return engine.embed(cover, payload, b"analysis", rng_seed=b"fixed")


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_rs_reads_stegano_at_half_and_not_the_project(name, request):
    cover = request.getfixturevalue(name)
    clean = analysis.rs_estimate(cover)
    assert abs(clean) < 0.05
    assert analysis.rs_estimate(stegano_at(cover, 0.5)) > 0.35
    assert abs(analysis.rs_estimate(project_at(cover, 0.5)) - clean) < 0.05
    assert abs(analysis.rs_estimate(project_at(cover, 1.0)) - clean) < 0.05


def test_rs_grows_with_the_replaced_fraction(coffee):
    rng = np.random.default_rng(5)
    estimates = []
    for fraction in (0.0, 0.2, 0.4, 0.8):
        stego = coffee.copy()
        flat = stego.reshape(-1)
        chosen = rng.random(flat.size) < fraction
        flat[chosen] = (flat[chosen] & 0xFE) | rng.integers(0, 2, chosen.sum(), dtype=np.uint8)
        estimates.append(analysis.rs_estimate(stego))
    assert estimates == sorted(estimates)
    assert abs(estimates[-1] - 0.8) < 0.15


def test_chi_square_flags_full_replacement_and_not_matching(coffee):
    rng = np.random.default_rng(6)
    replaced = (coffee & 0xFE) | rng.integers(0, 2, coffee.shape, dtype=np.uint8)
    assert analysis.chi_square(replaced).p_embedding > 0.9
    assert analysis.chi_square(coffee).p_embedding < 0.1
    assert analysis.chi_square(project_at(coffee, 1.0)).p_embedding < 0.1
    assert analysis.chi_square_prefix(replaced, 0.1).p_embedding > 0.5


def test_chi2_cdf_matches_tables():
    assert analysis.chi2_cdf(3.841, 1) == pytest.approx(0.95, abs=1e-3)
    assert analysis.chi2_cdf(18.307, 10) == pytest.approx(0.95, abs=1e-3)
    assert analysis.chi2_cdf(124.342, 100) == pytest.approx(0.95, abs=1e-3)
    assert analysis.chi2_cdf(0.0, 5) == 0.0


def test_analysis_refuses_what_it_cannot_read():
    with pytest.raises(TypeError):
        analysis.rs_estimate(np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError):
        analysis.rs_estimate(np.zeros((10, 3), np.uint8))
    assert analysis.rs_estimate(np.zeros((8, 8), np.uint8)) == 0.0
