"""A small bounded run of `make fuzz` against the real daemons: every target survives and counts."""

from __future__ import annotations

import json

import pytest

from bench import fuzz


@pytest.mark.timeout(240)
def test_real_fuzz_smoke_run(tmp_path, capsys):
    targets = (
        "server_client,server_cluster,client_peer,client_control,transfer_offer,transfer_fetch,boundary,files"
    )
    code = fuzz.main(
        [
            "--count",
            "400",
            "--file-count",
            "40",
            "--seconds",
            "90",
            "--seed",
            "3",
            "--targets",
            targets,
            "--out",
            str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert code == 0, printed
    assert set(summary["targets"]) == set(targets.split(","))
    for name, result in summary["targets"].items():
        assert result["failures"] == [], (name, result["failures"])
        assert result["alive"] and result["answers"], name
        assert result["rejected"] > 0, name
        if name != "files":
            assert result["sent"] == 400, name
            assert f"alive_{name}: yes" in printed and f"rejected_{name}: " in printed
    # The UDP listeners really processed what was sent (paced below the kernel's buffers).
    for name in ("server_client", "client_peer"):
        assert summary["targets"][name]["processed"] >= 0.95 * 400, (name, summary["targets"][name])
