"""A heavy seal runs in the worker pool while the reactor keeps its 200 ms heartbeat timer on time."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import pytest_twisted
from PIL import Image
from twisted.internet import reactor, task

from cloudp2p.encryption import container as c
from cloudp2p.encryption.config import EncryptionSettings
from cloudp2p.encryption.service import EncryptionEngine
from cloudp2p.errors import InvalidImage
from cloudp2p.membership.failure import FailureDetector

HEARTBEAT = 0.2  # [cluster] heartbeat_interval
FAILURE_TIMEOUT = 1.0  # [cluster] failure_timeout: a longer gap gets a peer suspected


def big_photo() -> bytes:
    rng = np.random.default_rng(11)
    arr = rng.integers(0, 256, (700, 700, 3), dtype=np.uint8)  # incompressible: ~1.5 MB PNG
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def replay(beats: list[float]) -> list[int]:
    """Suspicions a failure detector on a clock raises when peer 1's heartbeats arrive at ``beats``."""
    clock = task.Clock()
    suspected: list[int] = []
    detector = FailureDetector(
        clock, FAILURE_TIMEOUT, [1], on_suspect=suspected.append, on_alive=lambda p: None
    )
    detector.start()
    previous = beats[0]
    for t in beats:
        clock.advance(t - previous)
        previous = t
        detector.heard(1)
    clock.advance(HEARTBEAT)
    detector.stop()
    return suspected


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_heartbeats_keep_flowing_during_a_heavy_seal():
    secret = big_photo()
    engine = EncryptionEngine(reactor, EncryptionSettings(workers=1))
    beats: list[float] = []
    loop = task.LoopingCall(lambda: beats.append(time.monotonic()))
    loop.start(HEARTBEAT)
    try:
        started = time.monotonic()
        seals = 0
        # at least 2 s of heavy work, however fast one seal got (bounded: at most 64 seals)
        while seals < 64 and time.monotonic() - started < 2.0:
            sealed = await engine.seal(secret, None)
            seals += 1
        took = time.monotonic() - started
    finally:
        loop.stop()
        engine.stop()
    print(f"{seals} seals in {took:.2f} s, {len(beats)} beats")
    assert took > 5 * HEARTBEAT, f"{seals} seals took only {took:.2f} s: too light to test anything"
    gaps = np.diff(beats)
    assert len(gaps) >= 4 and gaps.max() < FAILURE_TIMEOUT, f"largest heartbeat gap {gaps.max():.3f} s"
    # The peer that receives these heartbeats (the cluster's failure detector) suspects no one...
    assert replay(beats) == []
    # ...while the same detector does suspect a sender that stalls for longer than the timeout.
    assert replay([0.0, 0.2, 0.4, 0.4 + 1.5, 2.1]) == [1]
    # The work really happened, in another process, and the result opens.
    own = await task.deferLater(reactor, 0, c.open_own, sealed.png, sealed.content_key)
    assert own.image == secret


def small_photo() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_worker_results_and_errors_cross_the_process_boundary():
    """Exceptions come back as the project's classes, so the op can map them to error codes."""
    engine = EncryptionEngine(reactor, EncryptionSettings(workers=1))
    try:
        with pytest.raises(InvalidImage, match="not a PNG or JPEG"):
            await engine.seal(b"not an image at all", None)
        tiny_cover = io.BytesIO()
        Image.new("RGB", (4, 4), (200, 100, 50)).save(tiny_cover, "PNG")
        sealed = await engine.seal(small_photo(), tiny_cover.getvalue())
        assert "scaled" in sealed.cover  # a supplied cover too small is scaled up, and says so
        assert engine.sealed_count == 1
    finally:
        engine.stop()
