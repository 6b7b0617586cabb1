"""Smoke runs of the core experiments in a subprocess, as a user would run them."""

import json
import subprocess
import sys


def test_critical_points_experiment(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "experiments.critical_points", "--out", str(tmp_path), "--smoke"],
        check=True,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    records = summary["catalogues"]["6"]
    assert len(records) == 18 and records[0]["label"] == "6" and records[0]["llc"] == 8.5
    assert {
        "label",
        "k",
        "sigma_plus",
        "sigma_minus",
        "loss",
        "llc",
        "grad_norm",
        "hessian_num_zero",
        "hessian_num_negative",
        "constant",
    } <= set(records[0])
    assert (tmp_path / "energy_levels_c6.png").stat().st_size > 10_000
    assert (tmp_path / "config.json").exists()
