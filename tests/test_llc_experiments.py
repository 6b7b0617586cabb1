"""Smoke runs of the LLC experiments in a subprocess, as a user (and experiments.reproduce) runs
them.

The reproduction flow is exercised end to end at smoke size: sgd_plateaus → llc_trajectories --from
→ developmental_stages --from --llc. The BAH table logic, which the smoke ensemble (too short to
transition) leaves empty, is checked on hand-made plateaus.
"""

import json
import subprocess
import sys

import numpy as np
import pytest


def run_module(name, *argv):
    subprocess.run([sys.executable, "-m", f"experiments.{name}", *map(str, argv)], check=True)


@pytest.fixture(scope="module")
def sgd_smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("sgd")
    run_module("sgd_plateaus", "--out", out, "--smoke", "--no-progress")
    return out


@pytest.fixture(scope="module")
def trajectories_smoke(tmp_path_factory, sgd_smoke):
    out = tmp_path_factory.mktemp("llc_trajectories")
    run_module("llc_trajectories", "--out", out, "--smoke", "--from", sgd_smoke, "--no-progress")
    return out


def test_sgd_plateaus_smoke_writes_its_summary_and_figures(sgd_smoke):
    summary = json.loads((sgd_smoke / "summary.json").read_text())
    assert summary["num_runs"] == 6
    assert {"transition_counts", "plateaus_by_level"} <= set(summary)
    for name in ("config.json", "trajectory.npz", "loss_curves.png", "transition_graph.png"):
        assert (sgd_smoke / name).exists(), name


def test_llc_trajectories_from_sgd_plateaus(trajectories_smoke):
    summary = json.loads((trajectories_smoke / "summary.json").read_text())
    assert {
        "bah_table",
        "num_transitions",
        "num_consistent_with_bah",
        "llc_by_plateau_label",
        "verdict_counts",
        "runs_transitioning",
        "runs_control",
        "llc_protocol",
        "escaped_checkpoints",
    } <= set(summary)
    assert summary["dataset_check_max_error"] < 1e-4  # the rebuilt dataset is the one trained on
    with np.load(trajectories_smoke / "llc.npz") as data:
        runs = summary["runs_transitioning"] + summary["runs_control"]
        assert data["llc"].shape == (len(runs), data["steps"].size)
        assert sorted(data["runs"].tolist()) == sorted(runs)
    for figure in ("opposing_staircases.png", "loss_vs_complexity.png"):
        assert (trajectories_smoke / figure).stat().st_size > 10_000


@pytest.mark.slow  # 30 s: the fast suite must fit CI's 15 minutes
def test_llc_trajectories_with_the_library_calibration(tmp_path, sgd_smoke):
    # --llc-budget: auto_settings at each chosen run's last checkpoint, the smallest ε for all,
    # and λ̂ corrected for its estimated step bias.
    run_module("llc_trajectories", "--out", tmp_path, "--smoke", "--from", sgd_smoke,
               "--no-progress", "--llc-budget", 2000)  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    protocol = summary["llc_protocol"]
    assert protocol["rule"].startswith("tmsjax.llc.auto_settings at a budget of 2000")
    assert protocol["num_steps"] == 2000 and protocol["num_burnin"] == 1000
    expected_gamma = max(1.0, 1 / (protocol["step_size"] * 2000))  # γ = max(γ_min, 1/(εS))
    assert protocol["localization"] == pytest.approx(expected_gamma)
    with np.load(tmp_path / "llc.npz") as data:
        assert np.all(np.isfinite(data["llc"][data["usable"]]))


def test_developmental_stages_draws_llc(tmp_path, sgd_smoke, trajectories_smoke):
    # --llc names the llc_trajectories folder; the chosen run must be one of its runs.
    with np.load(trajectories_smoke / "llc.npz") as data:
        run = int(data["runs"][0])
    run_module(
        "developmental_stages",
        "--out",
        tmp_path,
        "--smoke",
        "--from",
        sgd_smoke,
        "--llc",
        trajectories_smoke,
        "--run",
        run,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["llc_panel"] and summary["run"] == run
    assert (tmp_path / "developmental_stages.gif").stat().st_size > 10_000
    assert (tmp_path / "final_frame.png").stat().st_size > 10_000


def test_developmental_stages_refuses_llc_of_another_ensemble(
    tmp_path, sgd_smoke, trajectories_smoke
):
    from experiments.developmental_stages import load_llc

    with np.load(sgd_smoke / "trajectory.npz") as data:
        steps, losses = data["steps"], data["population_loss"]
    with np.load(trajectories_smoke / "llc.npz") as data:
        arrays = {name: data[name] for name in data.files}
    run = int(arrays["runs"][0])
    llc, llc_steps, _, _ = load_llc(trajectories_smoke / "llc.npz", run, steps, losses)
    assert llc.shape == llc_steps.shape == arrays["steps"].shape
    arrays["population_loss"] = arrays["population_loss"] + 0.01
    np.savez(tmp_path / "other.npz", **arrays)
    with pytest.raises(ValueError, match="another ensemble"):
        load_llc(tmp_path / "other.npz", run, steps, losses)
    others = sorted(set(range(losses.shape[0])) - set(arrays["runs"].tolist()))
    if others:  # a run without λ̂ gets no panel (and a note), not someone else's λ̂
        llc, _, _, note = load_llc(trajectories_smoke / "llc.npz", others[0], steps, losses)
        assert llc is None and "no λ̂" in note


def test_llc_critical_points_smoke_with_the_papers_settings(tmp_path):
    # The reproduction's path (the paper's hand-set ε); the calibrated default is tested below.
    run_module("llc_critical_points", "--out", tmp_path, "--smoke", "--no-calibrate")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["label"] for row in summary["table"]] == ["6", "5+", "5"]
    assert {"llc_n50", "verdict_n100", "llc_population"} <= set(summary["table"][0])
    assert summary["settings"]["calibrated"] is False
    assert summary["settings"]["step_sizes"]["100"] == pytest.approx(1e-3)
    assert (tmp_path / "llc_critical_points.png").stat().st_size > 10_000


@pytest.mark.slow
def test_llc_critical_points_smoke(tmp_path):
    run_module("llc_critical_points", "--out", tmp_path, "--smoke")
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = summary["table"]
    assert [row["label"] for row in rows] == ["6", "5+", "5"]
    assert {
        "llc_theory",
        "llc_n50",
        "stderr_n100",
        "verdict_n100",
        "acceptance_n100",
        "llc_healthy_chains_n100",
        "llc_population",
        "verdict_population",
    } <= set(rows[0])
    # The paper's hand-set ε is recorded beside the calibrated one that was used (at n = 100 the
    # reference n₀ = 1000 is clipped to the largest n, so ε is the calibration's own there).
    assert summary["paper_settings"]["step_sizes"]["100"] == pytest.approx(1e-3)
    finite = summary["calibration"]["finite"]
    assert {"calibrated", "step_size", "localization", "reason"} <= set(finite)
    assert summary["settings"]["step_sizes"]["100"] == pytest.approx(finite["step_size"])
    assert summary["settings"]["localization"] == pytest.approx(finite["localization"])
    assert {"calibrated", "reason"} <= set(summary["calibration"]["population"])
    assert (tmp_path / "llc_critical_points.png").stat().st_size > 10_000


def test_llc_grid_smoke(tmp_path):
    run_module("llc_grid", "--out", tmp_path, "--smoke")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["cells"]) == 2 and {
        "step_size",
        "localization",
        "llc",
        "stderr",
        "verdict",
    } <= set(summary["cells"][0])
    assert (tmp_path / "llc_vs_step_size.png").stat().st_size > 10_000


@pytest.mark.slow
def test_llc_trajectories_trains_its_own_ensemble(tmp_path):
    run_module("llc_trajectories", "--out", tmp_path, "--smoke", "--no-progress")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["source"].startswith("trained here")
    assert (tmp_path / "trajectory.npz").exists() and (tmp_path / "llc.npz").exists()


def test_bah_rows_on_hand_made_plateaus():
    from experiments.llc_trajectories import bah_rows, llc_by_label
    from tmsjax.tms.critical import critical_points

    def plateau(label, loss, value, error, escaped=0):
        return {
            "label": label,
            "start_step": 0,
            "stop_step": 1,
            "train_loss": loss,
            "population_loss": loss,
            "llc": value,
            "llc_stderr": error,
            "llc_all": value - 0.5,
            "llc_all_stderr": error,
            "num_checkpoints": 10,
            "num_used": 10 - escaped,
            "num_escaped_or_nonfinite": escaped,
        }

    plateaus = [
        plateau("4+", 0.104, 4.5, 0.1, escaped=3),
        plateau("5", 0.069, 6.6, 0.2),
        plateau("5", 0.069, 6.5, 0.2),
    ]
    rows = bah_rows(7, plateaus)
    assert len(rows) == 1  # a level split in two by the detector is no transition
    (row,) = rows
    assert (row["run"], row["from"], row["to"]) == (7, "4+", "5")
    assert row["delta_loss"] == pytest.approx(-0.035) and row["delta_llc"] == pytest.approx(2.1)
    assert row["delta_llc_stderr"] == pytest.approx(np.hypot(0.1, 0.2))
    assert (
        row["loss_decreases"]
        and row["llc_increases"]
        and row["llc_increase_significant"]
        and row["consistent_with_bah"]
    )
    table = llc_by_label({7: plateaus}, critical_points(6))
    assert (
        table["5"]["num_plateaus"] == 2
        and table["5"]["llc_theory"] == 7.0
        and table["4+"]["llc_theory"] is None
    )
    assert table["4+"]["fraction_checkpoints_escaped"] == pytest.approx(0.3)
    # A rise in loss or a fall in λ̂ is reported as inconsistent with the BAH.
    (up,) = bah_rows(0, [plateau("5", 0.069, 6.6, 0.2), plateau("4+", 0.104, 4.5, 0.1)])
    assert not up["loss_decreases"] and not up["llc_increases"] and not up["consistent_with_bah"]
