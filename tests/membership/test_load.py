"""Load, priority and term numbering."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudp2p.membership.election import next_term, priority_key, term_owner
from cloudp2p.membership.load import LoadMeter, cpu_load


def test_load_mixes_cpu_and_inflight():
    inflight = [0]
    meter = LoadMeter(lambda: inflight[0], cpu=lambda: 0.5, weight=0.25)
    assert meter.current() == 0.5
    inflight[0] = 4
    assert meter.current() == 1.5
    assert meter() == 1.5


def test_idle_host_is_zero_not_infinite_priority():
    meter = LoadMeter(lambda: 0, cpu=lambda: 0.0)
    assert meter.current() == 0.0
    assert priority_key(0.0, 2) < priority_key(0.0, 3) < priority_key(0.01, 1)


@pytest.mark.parametrize("cpu", [float("nan"), float("inf"), -1.0])
def test_bad_cpu_readings_count_as_zero(cpu):
    assert LoadMeter(lambda: 2, cpu=lambda: cpu, weight=0.5).current() == 1.0


def test_failing_cpu_reader_counts_as_zero():
    def broken():
        raise OSError("no /proc")

    assert LoadMeter(lambda: 1, cpu=broken, weight=0.5).current() == 0.5


def test_negative_inflight_is_clamped():
    assert LoadMeter(lambda: -3, cpu=lambda: 0.2).current() == 0.2


@pytest.mark.parametrize("weight", [-1, float("nan"), float("inf")])
def test_weight_is_checked(weight):
    with pytest.raises(ValueError):
        LoadMeter(lambda: 0, weight=weight)


def test_real_cpu_load_is_finite():
    value = cpu_load()
    assert math.isfinite(value) and value >= 0
    assert LoadMeter(lambda: 0).current() >= 0


def test_priority_is_lower_load_then_lower_id_and_unknown_last():
    members = {3: 0.2, 1: 0.5, 2: 0.2, 4: None}
    assert sorted(members, key=lambda m: priority_key(members[m], m)) == [2, 3, 1, 4]


@given(st.integers(0, 10**6), st.integers(1, 50))
def test_next_term_is_above_and_owned(current, server_id):
    stride = 51
    term = next_term(current, server_id, stride)
    assert current < term <= current + stride
    assert term_owner(term, stride) == server_id % stride


@given(st.integers(0, 10**6), st.integers(1, 50), st.integers(1, 50))
def test_two_servers_never_claim_the_same_term(current, a, b):
    stride = 51
    if a != b:
        ta, tb = next_term(current, a, stride), next_term(current, b, stride)
        assert ta != tb
        assert term_owner(ta, stride) != term_owner(tb, stride)
