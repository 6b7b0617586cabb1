"""Smoke run of experiments.bayesian_transitions in a subprocess, as a user would run it."""

import json
import subprocess
import sys


def test_bayesian_transitions_smoke(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.bayesian_transitions",
            "--smoke",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        check=True,
        capture_output=True,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in (
        "occupancy",
        "occupancy_stderr",
        "theoretical_occupancy",
        "theoretical_crossings",
        "empirical_crossings",
        "theory_leading_order",
        "crossing_note",
        "diagnostics",
    ):
        assert key in summary, key
    assert summary["sizes"] == [200, 600]
    assert abs(summary["theoretical_crossings"]["5->6"] - 601) < 1
    assert abs(summary["theory_leading_order"]["crossing_5_to_6_without_constant"] - 445) < 1
    for label, values in summary["occupancy"].items():
        assert len(values) == 2 and all(0 <= v <= 1 for v in values), label
    assert len(summary["diagnostics"]["per_n"]) == 2
    for name in ("occupancy.png", "tsne.png", "config.json", "n_00200.npz", "n_00600.npz"):
        assert (tmp_path / name).stat().st_size > 0, name
