"""The keyed position sequence: a bijection, deterministic, keyed, O(count)."""

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudp2p.stego import positions as pos_mod


@given(n=st.integers(1, 5000), key=st.binary(min_size=1, max_size=40))
@settings(max_examples=60, deadline=None)
def test_feistel_is_a_bijection_and_inverse_undoes_it(n, key):
    net = pos_mod.Feistel.make(key, n)
    x = np.arange(n, dtype=np.int32)
    y = net.forward(x)
    assert sorted(y.tolist()) == list(range(n))
    assert np.array_equal(net.inverse(y), x)


@given(
    key=st.binary(min_size=1, max_size=32),
    total=st.integers(0, 200_000),
    data=st.data(),
)
@settings(max_examples=80, deadline=None)
def test_positions_are_distinct_in_range_and_deterministic(key, total, data):
    usable = pos_mod.usable_slots(total)
    start = data.draw(st.integers(0, usable))
    count = data.draw(st.integers(0, min(usable - start, 20_000)))
    pos = pos_mod.positions(key, total, start, count)
    assert pos.dtype == np.int64 and pos.shape == (count,)
    assert np.unique(pos).size == count
    if count:
        assert pos.min() >= 0 and pos.max() < total
    assert np.array_equal(pos, pos_mod.positions(key, total, start, count))


def test_a_run_is_the_matching_slice_of_the_whole_sequence():
    total = 300 * 400 * 3
    usable = pos_mod.usable_slots(total)
    whole = pos_mod.positions(b"k", total, 0, usable)
    assert np.array_equal(np.sort(whole), np.arange(usable))
    for start, count in [(0, 8), (5, 100), (8 * 1000, 8 * 5000), (usable - 77, 77)]:
        assert np.array_equal(pos_mod.positions(b"k", total, start, count), whole[start : start + count])


def test_the_key_decides_the_order():
    a = pos_mod.positions(b"key one", 10**6, 0, 4096)
    b = pos_mod.positions(b"key two", 10**6, 0, 4096)
    assert not np.array_equal(a, b)
    # Not clustered: a run of bytes is spread over the whole image.
    assert a.min() < 10**6 // 10 and a.max() > 9 * 10**6 // 10


def test_a_short_run_costs_O_count_even_on_a_huge_image():
    total = pos_mod.MAX_TOTAL
    pos_mod.layout(b"big", total)  # the key's tables: small (sqrt(total) words), built once
    started = time.perf_counter()
    pos = pos_mod.positions(b"big", total, 10**8, 800)
    assert time.perf_counter() - started < 0.05  # a full permutation of 2**31 would take minutes
    assert np.unique(pos).size == 800 and pos.max() < total


def test_beta_is_only_evaluated_on_the_blocks_a_run_touches(monkeypatch):
    lay = pos_mod.layout(b"count", 12_000_000 * 3)
    seen = []
    original = pos_mod.Feistel.forward

    def spy(self, x):
        seen.append(len(x))
        return original(self, x)

    monkeypatch.setattr(pos_mod.Feistel, "forward", spy)
    pos_mod.positions(b"count", 12_000_000 * 3, 123, 8 * 100)
    assert seen and max(seen) <= 101 < lay.nblocks


@pytest.mark.parametrize(
    "args",
    [(b"", 1000, 0, 1), (b"k", 1000, -1, 1), (b"k", 1000, 0, -1), (b"k", 1024, 1000, 100), (b"k", -5, 0, 0)],
)
def test_bad_arguments_are_refused(args):
    with pytest.raises(ValueError):
        pos_mod.positions(*args)
