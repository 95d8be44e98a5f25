"""Check a recorded history (cloudp2p/testing/workload.py) against the directory afterwards.

A history is the list of events of every workload process: ``invoke`` then ``ok`` / ``fail``
(definitely not applied) / ``info`` (unknown) per request. ``check(history, state)`` takes
the database's final rows (``read_state``) and returns a ``Report`` with the counts and every
violation found, by invariant:

- ``unique_usernames``: no name registered twice (in the table, and no two acknowledged
  registrations of one name with different user ids);
- ``lost_acknowledged_writes``: every acknowledged ``register`` and ``publish_image`` is in the
  database, and every acknowledged ``queue_message`` was delivered or is still queued;
- ``duplicated_writes``: no write present more than once (a message's nonce under two ids);
- ``redelivered_after_ack``: no message handed out again after its recipient acknowledged it;
- ``stale_rights_raised_views``: the viewer's ledger (the real ``encryption.ledger.Ledger``)
  fed the delivered rights changes in delivery order always holds the views of the highest
  version delivered so far: a stale version never raises (or lowers) the count;
- ``replicas_differ`` (``compare_nodes``): every database node holds the same rows.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import attrs


@attrs.define
class Report:
    ops: int = 0
    ok: int = 0
    failed: int = 0  # definite refusals other than the expected ones (username_taken in a race)
    unknown: int = 0
    violations: dict[str, list[str]] = attrs.field(factory=lambda: defaultdict(list))

    @property
    def valid(self) -> bool:
        return not any(self.violations.values())

    def count(self, name: str) -> int:
        return len(self.violations.get(name, []))

    def lines(self) -> list[str]:
        names = ("unique_usernames", "lost_acknowledged_writes", "duplicated_writes",
                 "redelivered_after_ack", "stale_rights_raised_views", "replicas_differ")  # fmt: skip
        out = [f"ops: {self.ops}", f"ok: {self.ok}", f"failed: {self.failed}", f"unknown: {self.unknown}"]
        out += [f"{name}: {self.count(name)}" for name in names]
        return out


def load(paths: Iterable[str]) -> list[dict[str, Any]]:
    events = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            events += [json.loads(line) for line in f if line.strip()]
    return sorted(events, key=lambda e: e["t"])


def read_state(sql: Any) -> dict[str, Any]:
    """The rows the checker needs, through ``sql(query) -> rows`` (e.g. ``HostsCloud.sql``)."""
    return {
        "users": sql("SELECT id, username_key FROM users"),
        "images": sql("SELECT id, owner_id FROM images"),
        "messages": sql("SELECT id, to_user, from_user, kind, body FROM messages"),
    }


def _pairs(history: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(invoke, completion or None) per request, in invocation order."""
    done = {e["k"]: e for e in history if e["type"] != "invoke"}
    return [(e, done.get(e["k"])) for e in history if e["type"] == "invoke"]


def check(history: list[dict[str, Any]], state: dict[str, Any]) -> Report:
    report = Report()
    v = report.violations
    pairs = _pairs(history)
    users = {uid: name for uid, name in state["users"]}
    ids_by_name: dict[str, list[str]] = defaultdict(list)
    for uid, name in state["users"]:
        ids_by_name[name].append(uid)
    images = {iid: owner for iid, owner in state["images"]}
    user_of_proc: dict[str, str] = {}
    acked_registrations: dict[str, set[str]] = defaultdict(set)

    for invoke, end in pairs:
        report.ops += 1
        kind = end["type"] if end else "info"
        if kind == "ok":
            report.ok += 1
        elif kind == "info":
            report.unknown += 1
        elif not (invoke["op"] == "register" and end.get("error") == "username_taken"):
            report.failed += 1
        if (
            kind == "ok"
            and invoke["op"] in ("register", "sign_in")
            and invoke["args"]["username"] == invoke["proc"]
        ):
            user_of_proc[invoke["proc"]] = end["result"]["user_id"]

    # unique usernames, acknowledged registrations present
    for name, ids in ids_by_name.items():
        if len(ids) > 1:
            v["unique_usernames"].append(f"{name!r} has {len(ids)} rows")
    for invoke, end in pairs:
        if end and end["type"] == "ok" and invoke["op"] == "register":
            name, uid = invoke["args"]["username"].lower(), end["result"]["user_id"]
            acked_registrations[name].add(uid)
            if users.get(uid) != name:
                v["lost_acknowledged_writes"].append(
                    f"register {name!r} -> {uid} acknowledged, not in the database"
                )
    for name, ids in acked_registrations.items():
        if len(ids) > 1:
            v["unique_usernames"].append(f"{name!r} acknowledged to {len(ids)} different users")

    # acknowledged publications present, owned by the publisher
    for invoke, end in pairs:
        if end and end["type"] == "ok" and invoke["op"] == "publish_image":
            iid = invoke["args"]["image_id"]
            if iid not in images:
                v["lost_acknowledged_writes"].append(f"publish_image {iid} acknowledged, not in the database")
            elif invoke["proc"] in user_of_proc and images[iid] != user_of_proc[invoke["proc"]]:
                v["lost_acknowledged_writes"].append(f"image {iid} has another owner")

    _check_messages(pairs, state, report)
    return report


def _check_messages(pairs: list, state: dict[str, Any], report: Report) -> None:
    v = report.violations
    # Where each nonce ended up: delivered (fetched) under some id, or still queued under some id.
    ids_of_nonce: dict[str, set[int]] = defaultdict(set)
    queued_nonces: set[str] = set()
    for mid, _to, _from, kind, body in state["messages"]:
        if kind == "rights_change":
            nonce = json.loads(body)["nonce"]
            ids_of_nonce[nonce].add(int(mid))
            queued_nonces.add(nonce)
    delivered: dict[str, list[dict[str, Any]]] = defaultdict(list)  # recipient proc -> messages in order
    acked_up_to: dict[str, int] = {}
    for invoke, end in pairs:
        proc = invoke["proc"]
        if invoke["op"] == "fetch_queued" and end and end["type"] == "ok":
            for m in end["result"]["messages"]:
                if m["kind"] != "rights_change":
                    continue
                if m["id"] <= acked_up_to.get(proc, 0):
                    v["redelivered_after_ack"].append(f"{proc}: message {m['id']} fetched after ack up to "
                                                      f"{acked_up_to[proc]}")  # fmt: skip
                ids_of_nonce[m["body"]["nonce"]].add(m["id"])
                delivered[proc].append(m)
        if invoke["op"] == "ack_queued" and end and end["type"] == "ok":
            acked_up_to[proc] = max(acked_up_to.get(proc, 0), invoke["args"]["up_to"])
    for nonce, ids in ids_of_nonce.items():
        if len(ids) > 1:
            v["duplicated_writes"].append(f"message nonce {nonce} stored under ids {sorted(ids)}")
    for invoke, end in pairs:
        if invoke["op"] == "queue_message" and end and end["type"] == "ok":
            nonce = invoke["args"]["body"]["nonce"]
            if nonce not in ids_of_nonce:
                v["lost_acknowledged_writes"].append(
                    f"queue_message {nonce} to {invoke['args']['to_username']} acknowledged, never delivered "
                    "and not queued"
                )
    _check_rights(delivered, report)


def _check_rights(delivered: dict[str, list[dict[str, Any]]], report: Report) -> None:
    """Feed each viewer's delivered rights changes, in delivery order, to the real ledger."""
    from cloudp2p.encryption.ledger import Ledger, LedgerEntry

    v = report.violations
    with tempfile.TemporaryDirectory(prefix="cp2p-history-") as folder:
        for proc, messages in delivered.items():
            ledger = Ledger(f"{folder}/{proc}.json")
            seen: set[int] = set()
            highest: dict[str, tuple[int, int]] = {}
            for m in messages:
                if m["id"] in seen:
                    continue  # fetched twice before its ack: the client deduplicates by id
                seen.add(m["id"])
                body = m["body"]
                key = f"{m['from']}:{body['image']}"
                blob = json.dumps({"views": body["views"]}).encode()
                entry = ledger.update(
                    key, lambda old, b=body, blob=blob: LedgerEntry(old.views_used, b["version"], blob)
                )
                if body["version"] > highest.get(key, (-1, 0))[0]:
                    highest[key] = (body["version"], body["views"])
                views = json.loads(entry.rights)["views"] if entry.rights else None
                if views != highest[key][1] or entry.rights_version != highest[key][0]:
                    v["stale_rights_raised_views"].append(
                        f"{proc} {key}: ledger has version {entry.rights_version} ({views} views), "
                        f"highest delivered is {highest[key]}"
                    )


def compare_nodes(rows_per_node: dict[str, Any], report: Report) -> None:
    """Every node's rows of the checked tables must be the same."""
    baseline_name, baseline = next(iter(rows_per_node.items()))
    for name, rows in rows_per_node.items():
        if rows != baseline:
            diff = Counter(map(repr, rows)) - Counter(map(repr, baseline))
            report.violations["replicas_differ"].append(
                f"{name} differs from {baseline_name}: {list(diff)[:3]}"
            )
