"""The main job: the reproduction driver writes a report, resumes, and reports failures."""

import json
import subprocess
import sys

import pytest


def _reproduce(out, *extra):
    return subprocess.run(
        [sys.executable, "-m", "experiments.reproduce", "--out", str(out), "--smoke", *extra],
        check=True, capture_output=True, text=True,
    )


def test_reproduce_writes_report_and_resumes(tmp_path):
    _reproduce(tmp_path, "--only", "critical_points")
    report = (tmp_path / "report.md").read_text()
    assert "| critical_points | ok |" in report
    assert "critical_points/energy_levels_c6.png" in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    losses = {row["quantity"]: row["tmsjax"] for row in summary["key_numbers"]}
    assert losses["loss 6"] == pytest.approx(0.04819, abs=5e-6)
    # A second run finds the finished experiment and skips it.
    _reproduce(tmp_path, "--only", "critical_points")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"]["critical_points"]["status"] == "done (resumed)"


@pytest.mark.slow
def test_reproduce_every_experiment_at_smoke_size(tmp_path):
    _reproduce(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    failed = {name: s for name, s in summary["status"].items() if s["status"] == "failed"}
    assert not failed, failed
