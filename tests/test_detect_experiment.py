"""The detection experiment runs end to end at its smoke size and writes its table, health and
figures."""

import json
import os
import subprocess
import sys

import pytest


def _run(tmp_path, families, *extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    env.pop("XLA_FLAGS", None)  # one host device is enough (and faster to start)
    command = [
        sys.executable,
        "-m",
        "experiments.detect_transitions",
        "--smoke",
        "--families",
        families,
        "--out",
        str(tmp_path),
        *extra,
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=600, env=env)
    return json.loads((tmp_path / "summary.json").read_text())


def _check(summary, tmp_path, families, llc=True):
    assert set(summary) >= {
        "reference_tolerance_decades",
        "table",
        "truth",
        "llc_health",
        "findings",
        "seconds",
    }
    assert list(summary["table"]) == families
    for family in families:
        rows = summary["table"][family]
        # every probe × detector and every baseline is scored
        names = [
            "weight_norm/pelt_rate",
            "baseline_loss/pelt_rate",
            "baseline_evenly_spaced",
            "baseline_random",
        ]
        for name in names + (["llc/slope_sign"] if llc else []):
            assert set(rows[name]) == {"f1", "precision", "recall", "false_positives_per_null_run"}
            assert 0.0 <= rows[name]["f1"] <= 1.0
        if llc:
            counts = summary["llc_health"][family]["counts"]
            assert counts["total"] > 0 and 0 <= counts["excluded"] <= counts["total"]
        assert set(summary["seconds"][family]) == {"tasks", "probes", "llc", "scoring", "total"}
        assert (tmp_path / f"probes_{family}.png").stat().st_size > 0
        assert (tmp_path / f"probes_{family}.npz").exists()
    assert family in summary["findings"]
    for name in ("f1_curves.png", "weight_histogram.png", "scores.npz", "config.json"):
        assert (tmp_path / name).exists()


def test_smoke_one_family_without_llc(tmp_path):
    # ~20 s on 2 loaded cores, mostly compiling the training program; λ̂ (another ~10 s of compile)
    # is covered by the slow test below and by tests/test_probes.py.
    _check(_run(tmp_path, "digits", "--no-llc"), tmp_path, ["digits"], llc=False)


@pytest.mark.slow
def test_smoke_all_families_with_llc(tmp_path):
    families = ["tms", "digits", "grokking", "legendre"]
    _check(_run(tmp_path, ",".join(families)), tmp_path, families)
