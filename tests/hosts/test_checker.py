"""The history checker finds each kind of violation in a hand-made history (and none in a good one)."""

from __future__ import annotations

import itertools
import json

from cloudp2p.testing import history

_t = itertools.count(1)


def _op(events, proc, op, args, kind, value=None):
    key = f"k{next(_t)}"
    events.append({"k": key, "proc": proc, "type": "invoke", "op": op, "args": args, "t": next(_t)})
    end = {"k": key, "proc": proc, "type": kind, "op": op, "t": next(_t)}
    end["result" if kind == "ok" else "error"] = value
    events.append(end)


def _msg(nonce, version=1, views=3, image="img"):
    return {"nonce": nonce, "image": image, "version": version, "views": views}


def _good():
    events = []
    _op(events, "a", "register", {"username": "a"}, "ok", {"user_id": "ua"})
    _op(events, "b", "register", {"username": "b"}, "ok", {"user_id": "ub"})
    _op(events, "b", "register", {"username": "race"}, "ok", {"user_id": "ur"})
    _op(events, "a", "register", {"username": "race"}, "fail", "username_taken")
    _op(events, "a", "publish_image", {"image_id": "i1"}, "ok", {"image_id": "i1"})
    for n, version, views in (("n1", 1, 3), ("n2", 2, 5), ("n3", 3, 1)):
        _op(events, "a", "queue_message", {"to_username": "b", "body": _msg(n, version, views)}, "ok", {})
    fetched = [{"id": i, "from": "ua", "kind": "rights_change", "body": _msg(n, v, w)}
               for i, n, v, w in ((1, "n1", 1, 3), (2, "n2", 2, 5))]  # fmt: skip
    _op(events, "b", "fetch_queued", {"after": 0}, "ok", {"messages": fetched})
    _op(events, "b", "ack_queued", {"up_to": 2}, "ok", {"removed": 2})
    state = {
        "users": [("ua", "a"), ("ub", "b"), ("ur", "race")],
        "images": [("i1", "ua")],
        "messages": [(3, "ub", "ua", "rights_change", json.dumps(_msg("n3", 3, 1)))],
    }
    return events, state


def test_a_good_history_passes():
    events, state = _good()
    report = history.check(events, state)
    assert report.valid, dict(report.violations)
    assert (report.ops, report.ok, report.failed, report.unknown) == (10, 9, 0, 0)


def test_a_lost_registration_image_and_message_are_found():
    events, state = _good()
    state["users"].remove(("ub", "b"))
    state["images"] = []
    state["messages"] = []  # n3 was acknowledged, never fetched, and is gone
    report = history.check(events, state)
    assert report.count("lost_acknowledged_writes") == 3, dict(report.violations)


def test_a_name_given_to_two_users_is_found():
    events, state = _good()
    _op(events, "c", "register", {"username": "race"}, "ok", {"user_id": "uc"})
    state["users"].append(("uc", "race"))
    report = history.check(events, state)
    assert report.count("unique_usernames") == 2  # two rows, and two acknowledged owners


def test_a_message_stored_twice_is_a_duplicate():
    events, state = _good()
    state["messages"].append((4, "ub", "ua", "rights_change", json.dumps(_msg("n3", 3, 1))))
    assert history.check(events, state).count("duplicated_writes") == 1


def test_a_message_handed_out_again_after_its_ack_is_found():
    events, state = _good()
    again = [{"id": 2, "from": "ua", "kind": "rights_change", "body": _msg("n2", 2, 5)}]
    _op(events, "b", "fetch_queued", {"after": 0}, "ok", {"messages": again})
    assert history.check(events, state).count("redelivered_after_ack") == 1


def test_the_ledger_keeps_the_newest_version_when_a_stale_one_arrives_later():
    events, state = _good()
    stale = [{"id": 5, "from": "ua", "kind": "rights_change", "body": _msg("n0", 1, 9)}]
    _op(events, "b", "fetch_queued", {"after": 2}, "ok", {"messages": stale})
    report = history.check(events, state)
    assert report.valid, dict(report.violations)  # the real ledger ignores version 1 after 2


def test_the_rights_check_fails_when_the_ledger_takes_a_stale_version(monkeypatch):
    """The check itself can fail: with a ledger that lets the last message win, a stale version
    delivered after a newer one raises the views, and the checker says so."""
    from cloudp2p.encryption import ledger

    def last_wins(self, image_id, change):
        entry = change(ledger.LedgerEntry())
        self.__dict__.setdefault("_mem", {})[image_id] = entry
        return entry

    monkeypatch.setattr(ledger.Ledger, "update", last_wins)
    events, state = _good()
    stale = [{"id": 5, "from": "ua", "kind": "rights_change", "body": _msg("n0", 1, 9)}]
    _op(events, "b", "fetch_queued", {"after": 2}, "ok", {"messages": stale})
    assert history.check(events, state).count("stale_rights_raised_views") == 1


def test_unknown_outcomes_may_or_may_not_have_happened():
    events, state = _good()
    _op(events, "a", "publish_image", {"image_id": "i9"}, "info", "timeout")
    _op(events, "a", "queue_message", {"to_username": "b", "body": _msg("n9")}, "info", "timeout")
    report = history.check(events, state)
    assert report.valid and report.unknown == 2


def test_replicas_that_differ_are_found():
    report = history.Report()
    history.compare_nodes({"g1": [[(1, "a")]], "g2": [[(1, "a")]], "g3": [[]]}, report)
    assert report.count("replicas_differ") == 1
