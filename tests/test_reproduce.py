"""The main job: the reproduction driver writes a report, resumes, and reports failures."""

import importlib
import json
import subprocess
import sys

import pytest

from experiments import common, report
from experiments.reproduce import EXPERIMENTS, FIXED


def _reproduce(out, *extra):
    return subprocess.run(
        [sys.executable, "-m", "experiments.reproduce", "--out", str(out), "--smoke", *extra],
        check=True,
        capture_output=True,
        text=True,
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


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
def test_every_experiment_accepts_the_reproduction_settings(tmp_path, preset):
    for name, inputs, cpu_settings in EXPERIMENTS:
        module = importlib.import_module(f"experiments.{name}")
        overrides = {key: value.replace("{root}", str(tmp_path)) for key, value in inputs.items()}
        overrides.update(FIXED.get(name, {}))
        if preset == "cpu":
            overrides.update(cpu_settings)
        args = common.configure(module, tmp_path / name, preset=preset, **overrides)
        assert args.preset == preset and args.smoke == (preset == "smoke")
        # Every preset value reached the arguments unless an override set it.
        for key, value in module.PRESETS[preset].items():
            assert getattr(args, key) == overrides.get(key, value), (name, key)


def test_configure_rejects_unknown_settings(tmp_path):
    from experiments import sgd_plateaus

    with pytest.raises(ValueError, match="no argument 'lr'"):
        common.configure(sgd_plateaus, tmp_path, lr=0.1)
    with pytest.raises(ValueError, match="preset"):
        common.configure(sgd_plateaus, tmp_path, preset="huge")


def test_unknown_experiment_name_is_an_error(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.reproduce",
            "--out",
            str(tmp_path),
            "--only",
            "sgd_plateau",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "sgd_plateau" in result.stderr


def test_report_reads_small_c_sweeps():
    rows = report.key_numbers(
        {
            "bayesian_transitions_c5": {"num_features": 5, "empirical_crossings": {"4->5": 109.4}},
            "bayesian_transitions_c4": {"num_features": 4, "empirical_crossings": {}},
        }
    )
    by_quantity = {row["quantity"]: row["tmsjax"] for row in rows}
    assert by_quantity["c = 5: n_c 4 → 5 (sampled posterior)"] == 109.4
    assert by_quantity["c = 4: sampled crossings"] == "none in the sizes run"
