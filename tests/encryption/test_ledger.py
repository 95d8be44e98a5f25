"""The viewer's view ledger: monotonic, atomic, safe under concurrency, never overwrites damage."""

from __future__ import annotations

import json
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudp2p.encryption.errors import LedgerError
from cloudp2p.encryption.ledger import Ledger, LedgerEntry


def test_empty_ledger_and_first_record(tmp_path):
    ledger = Ledger(tmp_path / "l.json")
    assert ledger.get("abc") == LedgerEntry(0, -1, None)
    entry = ledger.update("abc", lambda e: LedgerEntry(1, 1, b"r1"))
    assert entry == LedgerEntry(1, 1, b"r1")
    assert Ledger(tmp_path / "l.json").get("abc") == entry  # persisted
    assert (tmp_path / "l.json").stat().st_mode & 0o777 == 0o600


def test_ledger_only_moves_forward(tmp_path):
    ledger = Ledger(tmp_path / "l.json")
    ledger.update("i", lambda e: LedgerEntry(5, 3, b"v3"))
    after = ledger.update("i", lambda e: LedgerEntry(2, 2, b"v2"))  # lower count, older rights
    assert after == LedgerEntry(5, 3, b"v3")
    after = ledger.update("i", lambda e: LedgerEntry(6, 4, b"v4"))
    assert after == LedgerEntry(6, 4, b"v4")


def test_failed_change_leaves_the_file_alone(tmp_path):
    path = tmp_path / "l.json"
    ledger = Ledger(path)
    ledger.update("i", lambda e: LedgerEntry(1, 1, b"x"))
    before = path.read_bytes()

    def boom(entry):
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        ledger.update("i", boom)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["l.json", "l.json.lock"]  # no temporary file left behind


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"format": 2, "images": {}}',
        b'{"format": 1, "images": {"a": {"views_used": -1}}}',
        json.dumps(
            {"format": 1, "images": {"a": {"views_used": 1, "rights_version": 1, "rights": "%%"}}}
        ).encode(),
    ],
)
def test_damaged_ledger_is_refused_and_kept(tmp_path, content):
    path = tmp_path / "l.json"
    path.write_bytes(content)
    ledger = Ledger(path)
    with pytest.raises(LedgerError, match="damaged"):
        ledger.get("a")
    with pytest.raises(LedgerError):
        ledger.update("a", lambda e: LedgerEntry(1, 1, None))
    assert path.read_bytes() == content


def test_concurrent_updates_lose_nothing(tmp_path):
    path = tmp_path / "l.json"
    ledgers = [Ledger(path), Ledger(path)]  # two objects on one file: the flock serialises them too
    n_threads, per_thread = 4, 25

    def work(k):
        for _ in range(per_thread):
            ledgers[k % 2].update("img", lambda e: LedgerEntry(e.views_used + 1, 0, None))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert Ledger(path).get("img").views_used == n_threads * per_thread


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
entry_like = st.fixed_dictionaries(
    {"views_used": json_values, "rights_version": json_values, "rights": json_values}
)


@settings(max_examples=200)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "format": st.just(1),
                "images": st.dictionaries(
                    st.text(max_size=8), st.one_of(entry_like, json_values), max_size=3
                ),
            }
        ),
    )
)
def test_any_json_ledger_is_read_or_refused_with_ledger_error(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("ledger") / "l.json"
    path.write_text(json.dumps(doc))
    try:
        entries = Ledger(path).entries()
    except LedgerError:
        return
    for entry in entries.values():
        assert isinstance(entry, LedgerEntry) and entry.views_used >= 0
