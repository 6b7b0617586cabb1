"""Tests of plateau and transition detection, on synthetic staircases with known answers, plus smoke
runs of the dynamics experiments in a subprocess."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tmsjax.tms.plateaus import (
    PlateauThresholds,
    analyse_runs,
    energy_levels,
    find_plateaus,
    run_path,
)
from tmsjax.training.schedule import checkpoint_schedule

LEVELS = energy_levels(6)
LOSS = dict(zip(*LEVELS))
STEPS = checkpoint_schedule(225_000, 200)


def staircase(rng, stages, noise=1e-4, spike_at=None):
    """A loss curve at log-spaced checkpoints: (level, first step) stages joined by sharp drops,
    plus noise.

    Before the first stage the curve descends smoothly from 0.115 (the approach from the init)."""
    curve = np.full(STEPS.size, 0.115)
    first = stages[0][1]
    approach = STEPS < first
    curve[approach] = 0.115 + (LOSS[stages[0][0]] - 0.115) * np.log1p(STEPS[approach]) / np.log1p(
        first
    )
    for label, start in stages:
        curve[STEPS >= start] = LOSS[label]
    curve = curve + noise * rng.standard_normal(STEPS.size)
    if spike_at is not None:
        curve[spike_at] += 6e-4
    return curve


def test_staircase_gives_plateaus_on_levels_and_the_path():
    rng = np.random.default_rng(0)
    curve = staircase(rng, [("4", 1_000), ("4+", 10_000), ("5", 100_000)], spike_at=150)
    run = run_path(STEPS, curve, *LEVELS)
    assert [p.label for p in run.plateaus] == ["4", "4+", "5"]
    assert run.plateau_path == ("4", "4+", "5")
    assert run.path == (
        "4",
        "4+",
        "5",
    )  # the init (0.115) is nearest the 4 level: collapsed into it
    assert run.final_label == "5"
    for plateau, level in zip(run.plateaus, ["4", "4+", "5"]):
        assert plateau.on_level and abs(plateau.loss - LOSS[level]) < 1e-4
    # The 4 plateau starts once the approach has flattened, the others right after their jump.
    assert (
        10_000 <= run.plateaus[1].start_step <= 12_000
        and 100_000 <= run.plateaus[2].start_step <= 115_000
    )


def test_off_catalogue_plateau_is_reported_unknown():
    rng = np.random.default_rng(1)
    curve = staircase(rng, [("4", 1_000)])
    curve[STEPS >= 20_000] = 0.0900 + 1e-4 * rng.standard_normal(np.sum(STEPS >= 20_000))
    analysis = analyse_runs(STEPS, curve[None], levels=LEVELS)
    labels = [p.label for p in analysis.plateaus]
    assert labels == ["4", "unknown"]
    assert analysis.fraction_on_level == 0.5
    summary = analysis.summary()
    assert (
        summary["off_level_plateau_losses"]
        and abs(summary["off_level_plateau_losses"][0] - 0.09) < 2e-4
    )
    assert summary["final_phase_counts"] == {"unknown": 1}


def test_smooth_descent_has_no_plateau():
    curve = 0.115 - 0.05 * np.log1p(STEPS) / np.log1p(
        STEPS[-1]
    )  # ≈ 1.4e-3 per lag window: never flat
    assert find_plateaus(STEPS, curve, *LEVELS) == []


def test_transition_graph_final_phases_and_classifier_labels():
    rng = np.random.default_rng(2)
    stages = [
        [("4+", 3_000), ("5", 50_000)],
        [("4+", 3_000), ("5", 120_000)],
        [("4++", 3_000), ("5+", 80_000)],
        [("4", 3_000)],
    ]
    curves = np.stack([staircase(rng, s) for s in stages])
    curves[3, -1] = np.nan  # a run diverging at the end
    phase_labels = np.full(curves.shape, "4+", dtype=object)
    analysis = analyse_runs(STEPS, curves, num_features=6, phase_labels=phase_labels)
    counts = analysis.transition_counts(include_initial=False)
    assert counts == {("4+", "5"): 2, ("4++", "5+"): 1}
    assert analysis.transition_counts()[("4", "4+")] == 2  # the init is nearest the 4 level
    assert analysis.final_counts() == {"5": 2, "5+": 1, "diverged": 1}
    summary = analysis.summary()
    assert (
        summary["num_runs_multi_step_plateau_path"] == 0
        and summary["num_runs_multi_step_path"] == 3
    )
    assert summary["path_counts"]["4 -> 4+ -> 5"] == 2
    assert (
        analysis.runs[0].plateaus[0].phase_label == "4+"
        and analysis.runs[0].plateaus[0].phase_fraction == 1.0
    )
    json.dumps(summary)  # JSON-ready


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: find_plateaus(STEPS[::-1], np.zeros(STEPS.size), *LEVELS), "steps"),
        (lambda: find_plateaus(STEPS, np.zeros(3), *LEVELS), "losses"),
        (
            lambda: find_plateaus(
                STEPS,
                np.zeros(STEPS.size),
                *LEVELS,
                thresholds=PlateauThresholds(flat_tolerance=0.0),
            ),
            "flat_tolerance",
        ),
        (lambda: analyse_runs(STEPS, np.zeros(STEPS.size)), "losses"),
        (lambda: analyse_runs(STEPS, np.zeros((2, STEPS.size))), "num_features"),
        (
            lambda: analyse_runs(
                STEPS, np.zeros((2, STEPS.size)), num_features=6, phase_labels=np.zeros((1, 2))
            ),
            "phase_labels",
        ),
    ],
)
def test_rejects_bad_arguments(call, name):
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.slow  # the fast suite runs both in-process: tests/test_llc_experiments.py
def test_experiments_smoke(tmp_path):
    """sgd_plateaus then developmental_stages (reading its output) in a subprocess, as a user runs
    them."""
    out = tmp_path / "sgd"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.sgd_plateaus",
            "--out",
            str(out),
            "--smoke",
            "--no-progress",
        ],
        check=True,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["num_runs"] == 6
        and "transition_counts" in summary
        and "plateaus_by_level" in summary
    )
    for name in ("config.json", "trajectory.npz", "loss_curves.png", "transition_graph.png"):
        assert (out / name).exists(), name
    stages = tmp_path / "stages"
    # A made-up λ̂ trace exercises the LLC panel hook (the LLC engine writes the real one).
    llc = tmp_path / "llc.npz"
    steps = np.load(out / "trajectory.npz")["steps"]
    np.savez(llc, steps=steps, llc=np.linspace(4.0, 7.0, steps.size)[None].repeat(6, axis=0))
    command = [
        "-m",
        "experiments.developmental_stages",
        "--out",
        str(stages),
        "--from",
        str(out),
        "--smoke",
        "--llc",
        str(llc),
    ]
    subprocess.run([sys.executable, *command], check=True)
    assert (stages / "developmental_stages.gif").stat().st_size > 10_000
    assert json.loads((stages / "summary.json").read_text())["path"][0] == "4"
