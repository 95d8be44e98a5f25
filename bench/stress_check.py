"""After a ``bench.stress`` run: the directory's database against what the users were told.

Blocking (sqlite3 / PyMySQL): run it in a thread, or after the reactor is done.

- missing: an acknowledged effect that is not in the database (a registered user
  gone or with another id, an acknowledged published image gone without an
  acknowledged unpublish, an acknowledged unpublish whose image is still there, an
  acknowledged message neither delivered nor waiting, an acknowledged sign_out
  whose session is still there);
- duplicates: an effect present twice (two users for one name, two image rows
  for one published name, one message nonce under two message ids, in the
  database or in what recipients fetched).
Outcomes the users were not told (a request that failed) may have happened or
not; they are counted apart (``unacknowledged_present``) and are not errors.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from typing import Any

from bench.stress_users import Ledger


def connect(backend: str, where: str) -> Any:
    if backend == "sqlite":
        return sqlite3.connect(f"file:{where}?mode=ro", uri=True, timeout=30)
    import pymysql

    from cloudp2p.directory.config import parse_mysql_url

    url = parse_mysql_url(where)
    return pymysql.connect(
        host=url.host, port=url.port, user=url.user, password=url.password or "", database=url.database
    )


def fetch(conn: Any, sql: str) -> list[tuple]:
    cur = conn.cursor()
    cur.execute(sql)
    rows = list(cur.fetchall())
    cur.close()
    return rows


def check(ledger: Ledger, backend: str, where: str, run_prefix: str) -> dict[str, Any]:
    conn = connect(backend, where)
    try:
        users = fetch(conn, "SELECT id, username, username_key FROM users")
        images = fetch(conn, "SELECT id, owner_id, name FROM images")
        messages = fetch(conn, "SELECT id, to_user, kind, body FROM messages")
        sessions = {row[0] for row in fetch(conn, "SELECT token_hash FROM sessions")}
    finally:
        conn.close()
    problems: list[str] = []
    missing = duplicates = 0

    ours = [u for u in users if u[1].startswith(run_prefix)]
    by_name = Counter(u[2] for u in ours)
    ids_by_name: dict[str, list[str]] = {}
    for uid, name, _ in ours:
        ids_by_name.setdefault(name, []).append(uid)
    for name, count in by_name.items():
        if count > 1:
            duplicates += count - 1
            problems.append(f"user {name} exists {count} times")
    for name, uid in ledger.registered.items():
        if ids_by_name.get(name.lower()) != [uid]:
            missing += 1
            problems.append(f"registered user {name} ({uid}) is {ids_by_name.get(name.lower())}")
    unacknowledged_present = sum(1 for n in ledger.register_unknown if n.lower() in ids_by_name)

    image_rows = {row[0]: row for row in images}
    our_image_names = Counter(row[2] for row in images if row[2].startswith(run_prefix))
    for name, count in our_image_names.items():
        if count > 1:
            duplicates += count - 1
            problems.append(f"image name {name} in {count} rows")
    for image_id, owner in ledger.published.items():
        if image_id in ledger.unpublished or image_id in ledger.unpublish_unknown:
            continue
        row = image_rows.get(image_id)
        if row is None or row[1] != owner:
            missing += 1
            problems.append(f"published image {image_id} of {owner} is {row}")
    for image_id in ledger.unpublished:
        if image_id in image_rows:
            missing += 1
            problems.append(f"unpublished image {image_id} is still there")
    unacknowledged_present += sum(1 for i in ledger.publish_unknown if i in image_rows)

    waiting: dict[str, list[int]] = {}
    for mid, _to, kind, body in messages:
        if kind != "stress_note":
            continue
        try:
            nonce = json.loads(body).get("nonce")
        except (ValueError, AttributeError):
            continue
        if isinstance(nonce, str):
            waiting.setdefault(nonce, []).append(int(mid))
    for nonce, to in ledger.queued.items():
        ids = set(waiting.get(nonce, [])) | ledger.delivered.get(nonce, set())
        if not ids:
            missing += 1
            problems.append(f"message {nonce} to {to} neither delivered nor waiting")
        elif len(ids) > 1:
            duplicates += len(ids) - 1
            problems.append(f"message {nonce} to {to} under ids {sorted(ids)}")
    for nonce in ledger.queue_unknown:
        ids = set(waiting.get(nonce, [])) | ledger.delivered.get(nonce, set())
        if ids:
            unacknowledged_present += 1
        if len(ids) > 1:
            duplicates += len(ids) - 1
            problems.append(f"unacknowledged message {nonce} under ids {sorted(ids)}")

    for token in ledger.signed_out:
        if hashlib.sha256(token.encode()).hexdigest() in sessions:
            missing += 1
            problems.append("a signed-out session is still there")

    return {
        "consistency_missing": missing,
        "consistency_duplicates": duplicates,
        "consistency_unacknowledged_present": unacknowledged_present,
        "checked_users": len(ledger.registered),
        "checked_images": len(ledger.published),
        "checked_unpublished": len(ledger.unpublished),
        "checked_messages": len(ledger.queued),
        "checked_messages_delivered": sum(1 for n in ledger.queued if ledger.delivered.get(n)),
        "checked_sign_outs": len(ledger.signed_out),
        "problems": problems[:50],
    }
