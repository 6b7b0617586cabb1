"""Smoke runs of experiments.bayesian_transitions in a subprocess, as a user would run it: the
default sampler (replica exchange) and NUTS, the reference."""

import json
import subprocess
import sys

import pytest


# The NUTS path's kernel is tested in test_nuts.py; its end-to-end smoke run (~30 s) is slow-only to
# keep CI inside its budget.
@pytest.mark.parametrize("sampler", [None, pytest.param("nuts", marks=pytest.mark.slow)])
def test_bayesian_transitions_smoke(tmp_path, sampler):
    extra = [] if sampler is None else ["--sampler", sampler]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.bayesian_transitions",
            "--smoke",
            "--out",
            str(tmp_path),
            "--no-progress",
            *extra,
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
    assert summary["sampler"] == (sampler or "tempering")
    assert summary["sizes"] == [200, 600]
    assert abs(summary["theoretical_crossings"]["5->6"] - 601) < 1
    assert abs(summary["theory_leading_order"]["crossing_5_to_6_without_constant"] - 445) < 1
    for label, values in summary["occupancy"].items():
        assert len(values) == 2 and all(0 <= v <= 1 for v in values), label
    per_n = summary["diagnostics"]["per_n"]
    assert len(per_n) == 2
    if sampler is None:
        # n = 200 is at or below the hot size: every copy at β = 1; n = 600 gets a real ladder.
        assert per_n[0]["beta_min"] == 1 and per_n[1]["beta_min"] < 1
        assert 0 <= per_n[1]["min_swap_acceptance"] <= 1
        assert per_n[0]["gradients_per_draw"] == 3 * 4  # smoke preset: K = 3, L = 4
    for name in ("occupancy.png", "tsne.png", "config.json", "n_00200.npz", "n_00600.npz"):
        assert (tmp_path / name).stat().st_size > 0, name


@pytest.mark.slow  # builds three critical-point catalogues (~25 s on 2 busy cores)
def test_small_c_reports_the_lowest_catalogue_phases():
    from experiments.bayesian_transitions import sampled_phases

    assert sampled_phases(6, ["6", "5+", "5"]) == ["6", "5+", "5"]
    assert sampled_phases(5, ["5"]) == ["5", "4+", "4"]
    assert sampled_phases(4, []) == ["4", "4-", "4--"]
