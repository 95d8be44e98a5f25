"""Property: any byte string arrives intact under any loss/duplication/reordering that lets chunks through."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cloudp2p.testing.memnet import Faults

from .helpers import fetch_offer, pair, run


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=5_000),
        st.builds(lambda n, s: random.Random(s).randbytes(n), st.integers(0, 150_000), st.integers(0, 2**32)),
    ),
    loss=st.floats(0.0, 0.3),
    duplicate=st.floats(0.0, 0.3),
    jitter=st.floats(0.0, 0.03),
    chunk_size=st.sampled_from([64, 333, 1200, 4096]),
    seed=st.integers(0, 2**16),
)
@example(random.Random(1).randbytes(150_000), 0.3, 0.3, 0.03, 64, 1)
@example(random.Random(2).randbytes(100_000), 0.2, 0.0, 0.0, 1200, 2)
@example(b"", 0.3, 0.3, 0.03, 64, 3)
def test_any_bytes_transfer_intact(data, loss, duplicate, jitter, chunk_size, seed):
    faults = Faults(loss=loss, duplicate=duplicate, jitter=jitter)
    net, a, b = pair(seed=seed, faults=faults, chunk_size=chunk_size, peer_timeout=30.0)
    offer = a.offer(data)
    assert run(net, fetch_offer(b, offer), 120.0) == data
    a.stop()
    b.stop()
