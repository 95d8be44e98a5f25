"""The wire format: round trips, and every kind of bad datagram rejected with BadMessageError."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudp2p.membership import messages as m
from cloudp2p.membership.messages import BadMessageError, Codec, Envelope, Freshness, ReplayGuard

SECRET = b"message-test-secret-0123456789"
MEMBERS = {1, 2, 3}
codec = Codec(SECRET, MEMBERS)

ids = st.integers(min_value=1, max_value=3)
counters = st.integers(min_value=0, max_value=2**63)
loads = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
id_lists = st.lists(st.integers(min_value=1, max_value=10_000), max_size=20).map(tuple)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
messages = st.one_of(
    st.builds(m.Heartbeat, load=loads, coordinator=st.none() | ids, successors=id_lists),
    st.builds(m.Succeed, failed=ids),
    st.just(m.Election()),
    st.builds(m.Answer, load=loads),
    st.just(m.Grant()),
    st.builds(m.Coordinator, successors=id_lists),
    st.builds(m.App, kind=st.text(min_size=1, max_size=m.MAX_KIND),
              body=st.dictionaries(st.text(max_size=8), json_values, max_size=5)),
)
envelopes = st.builds(
    Envelope, sender=ids, recipient=ids, incarnation=counters, seq=counters, term=counters, message=messages,
    echo=counters,
)


def sign(payload: bytes, key: bytes = SECRET) -> bytes:
    return payload + Codec(key, MEMBERS)._tag(payload)


def raw(obj: dict) -> bytes:
    return sign(json.dumps(obj).encode())


def reason_of(data: bytes, c: Codec = codec) -> str:
    with pytest.raises(BadMessageError) as info:
        c.decode(data)
    return info.value.reason


GOOD = {"v": 2, "type": "heartbeat", "from": 2, "to": 1, "inc": 7, "seq": 1, "term": 2, "echo": 3,
        "load": 0.5, "coordinator": 2, "successors": [1, 3]}


@given(envelopes)
def test_round_trip(envelope):
    assert codec.decode(codec.encode(envelope)) == envelope


@given(st.binary(max_size=400))
def test_random_bytes_are_rejected(data):
    assert reason_of(data) == m.FORGED


@settings(max_examples=200)
@given(envelopes, st.data())
def test_any_bit_flip_is_rejected(envelope, data):
    datagram = codec.encode(envelope)
    bit = data.draw(st.integers(0, len(datagram) * 8 - 1))
    flipped = bytearray(datagram)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert reason_of(bytes(flipped)) == m.FORGED


@given(envelopes)
def test_wrong_key_is_rejected(envelope):
    other = Codec(b"another-secret-0123456789", MEMBERS)
    assert reason_of(other.encode(envelope)) == m.FORGED


@given(envelopes)
def test_truncated_is_rejected(envelope):
    datagram = codec.encode(envelope)
    assert reason_of(datagram[:-1]) == m.FORGED
    assert reason_of(datagram[:10]) == m.FORGED


@given(st.one_of(st.integers(), st.text(max_size=3), st.none()).filter(lambda v: v != 1))
def test_wrong_version_is_rejected(version):
    assert reason_of(raw({**GOOD, "v": version})) == m.VERSION


@given(st.integers(min_value=4, max_value=10**9) | st.integers(max_value=0))
def test_unknown_sender_is_rejected(sender):
    assert reason_of(raw({**GOOD, "from": sender})) == (m.UNKNOWN_PEER if sender >= 1 else m.MALFORMED)


def test_misdirected_is_rejected_by_a_codec_that_knows_its_id():
    datagram = raw({**GOOD, "to": 3})
    assert reason_of(datagram, Codec(SECRET, MEMBERS, me=1)) == m.MISDIRECTED
    assert codec.decode(datagram).recipient == 3
    assert Codec(SECRET, MEMBERS, me=3).decode(datagram).recipient == 3


def test_oversized_is_rejected_and_not_sent():
    assert reason_of(b"x" * (m.MAX_DATAGRAM + 1)) == m.OVERSIZED
    big = Envelope(1, 2, 1, 1, 1, m.App(kind="k", body={"x": "y" * m.MAX_DATAGRAM}))
    with pytest.raises(m.MessageTooLargeError):
        codec.encode(big)


@pytest.mark.parametrize("change", [
    {"type": "nope"}, {"type": 3}, {"load": -1}, {"load": "1"}, {"load": True}, {"coordinator": 0},
    {"coordinator": 2.0}, {"successors": [0]}, {"successors": "12"}, {"seq": -1}, {"term": 1.5},
    {"inc": None}, {"extra": 1}, {"from": True}, {"to": 0}, {"to": None},
])
def test_bad_fields_are_malformed(change):
    assert reason_of(raw({**GOOD, **change})) == m.MALFORMED


@pytest.mark.parametrize("payload", [
    b"[]", b"1", b'"x"', b"{", b"\xff\xfe", b'{"v": 1, "load": NaN}', b'{"v": 1, "load": Infinity}',
    b"[" * 100_00 + b"]" * 100_00,
])
def test_signed_garbage_is_malformed(payload):
    assert reason_of(sign(payload)) in (m.MALFORMED, m.OVERSIZED)


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=8))
def test_signed_random_objects_never_raise_anything_else(obj):
    try:
        codec.decode(raw(obj))
    except BadMessageError:
        pass


def test_missing_field_is_malformed():
    obj = dict(GOOD)
    del obj["load"]
    assert reason_of(raw(obj)) == m.MALFORMED


# -- replay -----------------------------------------------------------------------------------------


def env(seq: int, inc: int = 5, sender: int = 2) -> Envelope:
    return Envelope(sender, 1, inc, seq, 1, m.Grant())


def test_replay_guard_rejects_duplicates_and_old_incarnations():
    guard = ReplayGuard()
    guard.check(env(10))
    with pytest.raises(BadMessageError) as info:
        guard.check(env(10))
    assert info.value.reason == m.REPLAY
    guard.check(env(8))  # reordered but new: accepted once
    with pytest.raises(BadMessageError):
        guard.check(env(8))
    guard.check(env(1, inc=6))  # the sender restarted
    with pytest.raises(BadMessageError):
        guard.check(env(11, inc=5))  # a recording from its previous life
    guard.check(env(1, sender=3))  # other senders are independent


def test_replay_guard_window():
    guard = ReplayGuard(window=4)
    guard.check(env(10))
    with pytest.raises(BadMessageError):
        guard.check(env(6))  # older than the window
    guard.check(env(7))
    guard.check(env(100))
    with pytest.raises(BadMessageError):
        guard.check(env(7))


@given(st.lists(st.integers(0, 200), max_size=60))
def test_replay_guard_accepts_each_sequence_number_at_most_once(seqs):
    guard = ReplayGuard()
    accepted = []
    for seq in seqs:
        try:
            guard.check(env(seq))
            accepted.append(seq)
        except BadMessageError as e:
            assert e.reason == m.REPLAY
    assert len(accepted) == len(set(accepted))
    # The highest number is always accepted the first time it arrives.
    if seqs:
        assert max(seqs) in accepted


def test_freshness_refuses_what_does_not_echo_this_incarnation_and_learns_the_sender():
    fresh = Freshness(incarnation=50)
    assert fresh.echo_for(2) == 0
    for echo in (0, 49, 51):  # not known yet; an earlier life of ours; not ours
        with pytest.raises(BadMessageError) as info:
            fresh.check(Envelope(2, 1, 7, echo + 1, 1, m.Grant(), echo=echo))
        assert info.value.reason == m.UNFRESH
    assert fresh.echo_for(2) == 7  # refused, but the sender's incarnation is learnt (to echo it)
    fresh.check(Envelope(2, 1, 5, 1, 1, m.Grant(), echo=50))
    assert fresh.echo_for(2) == 7  # the highest seen: an old recording cannot lower it
    with pytest.raises(ValueError):
        Freshness(incarnation=0)
