"""The heartbeat failure detector on task.Clock."""

import pytest
from twisted.internet import task

from cloudp2p.membership.failure import FailureDetector


def detector(timeout=1.0, peers=(2, 3)):
    clock = task.Clock()
    events = []
    d = FailureDetector(clock, timeout, peers, on_suspect=lambda p: events.append(("suspect", p)),
                        on_alive=lambda p: events.append(("alive", p)))
    d.start()
    return clock, d, events


def test_suspects_exactly_after_the_timeout_of_silence():
    clock, d, events = detector()
    clock.advance(0.6)
    d.heard(2)
    clock.advance(0.39)
    assert events == []
    clock.advance(0.02)
    assert events == [("suspect", 3)]
    assert d.alive() == {2} and d.suspected() == {3}
    clock.advance(0.6)
    assert events == [("suspect", 3), ("suspect", 2)]


def test_hearing_again_clears_the_suspicion_once():
    clock, d, events = detector()
    clock.advance(1.5)
    d.heard(3)
    d.heard(3)
    assert events == [("suspect", 2), ("suspect", 3), ("alive", 3)]
    assert d.is_alive(3) and not d.is_alive(2)
    assert d.last_seen(3) == 1.5 and d.last_seen(2) is None


def test_unknown_peers_are_ignored():
    clock, d, events = detector()
    d.heard(99)
    assert not d.is_alive(99) and d.last_seen(99) is None


def test_a_late_deadline_gives_grace_instead_of_suspecting():
    """A deadline firing long after it was due means we were stopped: we cannot judge the peer."""
    clock, d, events = detector()
    clock.advance(5.0)  # one jump, as after SIGCONT
    assert events == [] and d.late_deadlines == 2
    clock.advance(1.01)
    assert events == [("suspect", 2), ("suspect", 3)]


def test_grace_rearms_unsuspected_peers():
    clock, d, events = detector()
    clock.advance(0.9)
    d.grace()
    clock.advance(0.9)
    assert events == []
    clock.advance(0.2)
    assert events == [("suspect", 2), ("suspect", 3)]


def test_stop_cancels_everything():
    clock, d, events = detector()
    d.stop()
    clock.advance(10)
    assert events == [] and clock.getDelayedCalls() == []


def test_timeout_must_be_positive():
    with pytest.raises(ValueError):
        FailureDetector(task.Clock(), 0, [], on_suspect=print, on_alive=print)
