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


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_every_experiment_accepts_the_reproduction_arguments(tmp_path, preset):
    import importlib

    from experiments.reproduce import EXPERIMENTS

    for name, extra, cpu_extra in EXPERIMENTS:
        module = importlib.import_module(f"experiments.{name}")
        argv = [a.replace("{root}", str(tmp_path)) for a in extra] + ["--out", str(tmp_path / name)]
        argv += cpu_extra if preset == "cpu" else ["--preset", "paper"]
        module.parse_args(argv)  # argparse exits on an unknown argument


def test_unknown_experiment_name_is_an_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "experiments.reproduce", "--out", str(tmp_path), "--only", "sgd_plateau"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "sgd_plateau" in result.stderr
