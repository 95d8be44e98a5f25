"""The ``bench.stress`` plot: latency over time with the outages shaded, and the share per server."""

from __future__ import annotations

from typing import Any

OP_GROUPS = {
    "directory": ("heartbeat", "list_online", "lookup_user", "publish_image", "unpublish_image",
                  "queue_message", "fetch_queued", "ack_queued", "sign_in", "sign_out", "register"),
    "encrypt_small": ("encrypt_small",),
    "encrypt_1mb": ("encrypt_1mb",),
}
OUTAGE_LABELS = {"stop": "server stopped (SIGSTOP)", "kill": "server killed (kill -9, restart)"}
OUTAGE_COLORS = {"stop": "0.75", "kill": "salmon"}
COLORS = {"directory": "tab:blue", "encrypt_small": "tab:orange", "encrypt_1mb": "tab:red"}


def draw(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = result["figures"]
    requests = result["requests"]  # [op, t, latency_ms, ok, server]
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [4, 1]}, constrained_layout=True
    )
    labelled: set[str] = set()
    for event in result["outages"]:
        end = event.get("end", event["start"])
        kind = event["kind"]
        label = None if kind in labelled else OUTAGE_LABELS[kind]
        labelled.add(kind)
        ax.axvspan(event["start"], end, color=OUTAGE_COLORS[kind], alpha=0.5, lw=0, label=label)
        ax.text(event["start"], 0.01, f"s{event['server']}", transform=ax.get_xaxis_transform(),
                fontsize=7, va="bottom")
    for group, ops in OP_GROUPS.items():
        points = [(r[1], r[2]) for r in requests if r[0] in ops and r[3]]
        if points:
            xs, ys = zip(*points, strict=True)
            small = group == "directory"
            ax.scatter(xs, ys, s=2 if small else 8, alpha=0.35 if small else 0.8,
                       color=COLORS[group], label=f"{group} ({len(points)})", rasterized=True)
    failed = [(r[1], r[2]) for r in requests if not r[3]]
    if failed:
        xs, ys = zip(*failed, strict=True)
        ax.scatter(xs, ys, marker="x", s=20, color="black", label=f"failed ({len(failed)})")
    ax.set_yscale("log")
    ax.set_xlabel("time since start of load (s)")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title(
        f"{figures['sent']} requests, {figures['users']} users, {figures['backend']}: "
        f"{figures['failed']} failed, {figures['throughput_rps']} rps, {figures['outages']} outages"
    )
    ax.legend(loc="upper right", fontsize=7, markerscale=2)
    ax.grid(True, which="major", alpha=0.3)
    sids = sorted(int(k.removeprefix("share_server")) for k in figures if k.startswith("share_server"))
    shares = [figures[f"share_server{s}"] for s in sids]
    bx.bar([f"server{s}" for s in sids], shares, color="tab:green")
    bx.axhline(1 / max(1, len(sids)), color="0.4", lw=0.8, ls="--")
    bx.set_ylim(0, 1)
    bx.set_title("share of requests served")
    for i, v in enumerate(shares):
        bx.text(i, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
    fig.savefig(path, dpi=90)
    plt.close(fig)
