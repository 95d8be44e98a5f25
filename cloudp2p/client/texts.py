"""How each command's result reads as text (the `cloudp2p` command prints it; ``--json`` prints the
result itself). The command table (``cloudp2p.client.table``) names one of these per command.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

JSONDict = dict[str, Any]


def _views(n: Any) -> str:
    return f"{n} view{'s' if n != 1 else ''}"


def login(r: JSONDict) -> str:
    lines = [f"Signed in as {r['username']} (id {r['user_id']})."]
    lines += [f"  applied while you were away: {a}" for a in r.get("applied", [])]
    return "\n".join(lines)


def published(r: JSONDict) -> str:
    state = "now offered to others" if r["published"] else "no longer offered"
    text = f"Image {r['name']} ({r['image_id']}) is {state}."
    if r["published"]:
        shows = "a preview of the original" if r.get("preview") else "the cover, not the image"
        text += f"\n  its thumbnail shows {shows}"
    return text


def trusted(r: JSONDict) -> str:
    if r.get("previous") is None:
        return f"Now trusting {r['user']}'s keys (ed25519 {r['ed25519']})."
    if r.get("changed"):
        return f"Now trusting {r['user']}'s NEW keys (ed25519 {r['ed25519']}; was {r['previous']})."
    return f"{r['user']}'s keys are unchanged (ed25519 {r['ed25519']})."


def users(r: JSONDict) -> str:
    if not r["users"]:
        return "Nobody else is online."
    lines = []
    for u in r["users"]:
        lines.append(f"{u['username']}{' (you)' if u.get('me') else ''}")
        if not u["images"]:
            lines.append("    (offers no image)")
        for im in u["images"]:
            lines.append(
                f"    {im['name']}  id {im['image_id']}  {im['size']} bytes  thumbnail: {im['thumbnail']}"
            )
    return "\n".join(lines)


_WAITED = {
    "received": "\n{owner} accepted: {name} received, {left} left.",
    "rejected": "\n{owner} rejected the request.",
    "failed": "\nThe owner accepted but the transfer failed; it resumes on its own.",
    "sent": "\nNo answer yet; `cloudp2p images` shows when it arrives.",
    "queued": "\nNo answer yet; `cloudp2p images` shows when it arrives.",
    "fetching": "\nStill receiving; `cloudp2p images` shows when it arrives.",
}


def asked(more: bool) -> Callable[[JSONDict], str]:
    def text(r: JSONDict) -> str:
        how = "sent to" if r["delivery"] == "peer" else "queued in the directory (offline) for"
        name = r.get("image_name") or r["image_id"]
        plural = "s" if r["views"] != 1 else ""
        out = (
            f"Request {r['request_id']} for {r['views']} {'more ' if more else ''}view{plural} "
            f"of {name} {how} {r['owner']}."
        )
        waited = _WAITED.get(r.get("state", ""), "")
        return out + waited.format(owner=r["owner"], name=name, left=_views(r.get("views_left")))

    return text


def inbox(r: JSONDict) -> str:
    if not r["requests"]:
        return "No request."
    return "\n".join(
        f"{q['request_id']}  {q['from']} asks {_views(q['views'])} of {q['image_name']} "
        f"({q['kind']}{', has used ' + str(q['used']) if q.get('used') else ''})  [{q['state']}]"
        for q in r["requests"]
    )


def accepted(r: JSONDict) -> str:
    if r.get("kind") == "more":
        return f"{r['viewer']} may now view {r['image_name']} {_views(r['views'])} in total."
    if r.get("delivered") is False:
        return f"Offered {r['image_name']} to {r['viewer']}; they have not finished fetching it yet."
    return f"Sent {r['image_name']} to {r['viewer']} with {_views(r['views'])}."


def images(r: JSONDict) -> str:
    lines = ["Your images:"] if r["owned"] else ["You own no image yet."]
    for im in r["owned"]:
        pub = "published" if im["published"] else "private"
        lines.append(f"    {im['name']}  id {im['image_id']}  {pub}  {im['encrypted']}")
        for viewer, n in sorted(im.get("grants", {}).items()):
            lines.append(f"        {viewer}: {_views(n)} granted")
    lines.append("Received images:" if r["received"] else "No received image.")
    for im in r["received"]:
        lines.append(
            f"    {im['name']}  id {im['image_id']}  from {im['owner']}  {_views(im['views_left'])} left"
        )
    waiting = [q for q in r.get("requests", []) if q["state"] != "received"]
    if waiting:
        lines.append("Your requests:")
    for q in waiting:
        extra = f" {q['done']}/{q['total']} bytes" if q["state"] == "fetching" else ""
        extra += f" ({q['error']})" if q.get("error") else ""
        lines.append(f"    {q['request_id']}  {q['image_name']} from {q['owner']}: {q['state']}{extra}")
    return "\n".join(lines)


def viewed(r: JSONDict) -> str:
    if r["shown"] == "cover":
        return f"No views left for {r['name']}: the cover is shown instead.\n  {r['path']}"
    return f"Decoded {r['name']} ({_views(r['views_left'])} left).\n  {r['path']}"


def rights_sent(r: JSONDict) -> str:
    how = "applied at once" if r["delivery"] == "peer" else "queued until they sign in"
    name = r.get("image_name") or r["image_id"]
    return f"{r['viewer']} may now view {name} {_views(r['views'])} in total ({how})."


def status(r: JSONDict) -> str:
    me, cloud = r["me"], r["cloud"]
    coordinator = cloud.get("coordinator")
    lines = [
        f"user:        {me.get('username') or '(not registered)'}"
        + (f" (id {me['user_id']})" if me.get("user_id") else ""),
        f"session:     {'signed in' if me.get('signed_in') else 'signed out'}",
        f"peer:        {me.get('peer')}",
        f"cloud:       {'reachable' if cloud.get('reachable') else 'unreachable'}",
        f"coordinator: {coordinator if coordinator is not None else 'unknown'}",
    ]
    return "\n".join(lines + [f"  {s}" for s in cloud.get("servers", [])])


def web_link(r: JSONDict) -> str:
    lines = [f"Open {r['url']}", f"  (the link works once, within {r['expires_in']:.0f} s)"]
    return "\n".join(lines + [f"warning: {w}" for w in r.get("warnings", [])])


def as_json(r: JSONDict) -> str:
    return json.dumps(r, indent=2, sort_keys=True)
