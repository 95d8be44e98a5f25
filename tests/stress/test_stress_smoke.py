"""The stress driver itself, at a tiny size: real servers, a few users, one short outage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def run_stress(out: str, *extra: str) -> tuple[int, dict[str, str], dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.stress", "--users", "4", "--requests", "300", "--backend", "sqlite",
         "--scrypt-n", "1024", "--max-seconds", "90", "--out", out, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    figures = {}
    for line in proc.stdout.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            figures[name] = value
    path = os.path.join(out, "stress.json")
    result = json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}
    return proc.returncode, figures, result | {"stderr": proc.stderr}


def test_tiny_run_with_an_outage(tmp_path):
    code, figures, result = run_stress(
        str(tmp_path), "--outages", "--max-outages", "1", "--outage-gap", "0.3", "--outage-down", "1.5",
        "--seed", "3",
    )
    assert code == 0, result["stderr"][-3000:]
    assert int(figures["sent"]) == 300
    assert int(figures["succeeded"]) + int(figures["failed"]) == 300
    assert figures["failed"] == "0"
    assert figures["consistency_missing"] == "0"
    assert figures["consistency_duplicates"] == "0"
    # The check looked at real effects, not at nothing.
    assert int(figures["checked_users"]) == 4
    shares = [float(figures[f"share_server{s}"]) for s in (1, 2, 3)]
    assert abs(sum(shares) - 1.0) < 0.01
    assert "latency_p95_ms_heartbeat" in figures
    # One server went down during the load, came back and the cloud agreed again.
    assert figures["outages"] == "1"
    assert figures["outages_caught_up"] == "1"
    (event,) = result["outages"]
    assert event["start"] < max(r[1] for r in result["requests"])
    assert len(result["requests"]) == 300
    png = tmp_path / "stress.png"
    assert png.read_bytes().startswith(b"\x89PNG")


def test_consistency_check_sees_a_lost_effect(tmp_path):
    """The check is not blind: a registered user the database does not have is counted missing."""
    import sqlite3

    from bench.stress_check import check
    from bench.stress_users import Ledger

    db = tmp_path / "d.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE users (id TEXT, username TEXT, username_key TEXT);"
        "CREATE TABLE images (id TEXT, owner_id TEXT, name TEXT);"
        "CREATE TABLE messages (id INTEGER, to_user TEXT, kind TEXT, body TEXT);"
        "CREATE TABLE sessions (token_hash TEXT);"
        "INSERT INTO users VALUES ('u1', 'sabcu1', 'sabcu1'), ('u2', 'sabcu2', 'sabcu2'),"
        " ('u3', 'sabcu2', 'sabcu2');"
        "INSERT INTO messages VALUES (1, 'u1', 'stress_note', '{\"nonce\": \"n1\"}'),"
        " (2, 'u1', 'stress_note', '{\"nonce\": \"n1\"}');"
    )
    conn.commit()
    conn.close()
    ledger = Ledger(10, 0.0)
    ledger.registered = {"sabcu1": "u1", "sabcu9": "u9"}
    ledger.published = {"img1": "u1"}
    ledger.queued = {"n1": "u1", "n2": "u1"}
    result = check(ledger, "sqlite", str(db), "sabc")
    # u9 and img1 and n2 are missing; sabcu2 twice and n1 under two ids are duplicates.
    assert result["consistency_missing"] == 3, result["problems"]
    assert result["consistency_duplicates"] == 2, result["problems"]
