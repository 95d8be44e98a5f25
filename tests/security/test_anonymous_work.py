"""Finding 4: the load-test ``work`` operation (and ``recent_runs``) exist only behind the test switch."""

from __future__ import annotations


def test_work_is_not_an_operation_in_production(cloud, raw):
    client = raw()
    reply = client.call(cloud.client_list, "work", {"units": 1}, timeout=5.0)
    assert reply is not None, "no answer at all"
    assert reply["body"]["ok"] is False, f"a production cloud ran work for an anonymous source: {reply}"
    assert reply["body"]["error"]["code"] == "unknown_op"
