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
        "heldout",
        "selected",
        "split",
        "verdicts",
        "cost",
        "truth",
        "llc_health",
        "findings",
        "seconds",
    }
    assert list(summary["table"]) == families
    for family in families:
        rows = summary["heldout"][family]
        # every probe × method (curvature and multivariate probes included) and every baseline
        names = [
            "weight_norm/pelt_rate",
            "hessian_trace/pelt_rate",
            "free_energy/slope_sign",
            "multi_weights/pelt_level",
            "multi_all/pelt_rate",
            "baseline_loss/pelt_rate",
            "baseline_evenly_spaced",
            "baseline_random",
        ]
        for name in names + (["llc/slope_sign"] if llc and family != "digits" else []):
            assert set(rows[name]) >= {"heldout", "settings", "train", "f1_curve"}
            for metric in ("f1", "covering"):
                value = rows[name]["heldout"][metric]
                assert 0.0 <= value["low"] <= value["value"] <= value["high"] <= 1.0
            assert set(summary["table"][family][name]) == {
                "f1",
                "precision",
                "recall",
                "covering",
                "false_positives_per_null_run",
            }
        # the seed split holds out live and null runs, and the chosen rows exist
        split = summary["split"][family]
        assert min(split["train_live"], split["heldout_live"], split["heldout_null"]) >= 1
        assert set(summary["selected"][family]) == {
            "any",
            "weight_only",
            "loss_only",
            "f1_only",
            "loss_f1_only",
        }
        assert summary["selected"][family]["weight_only"].split("/")[0] in (
            "weight_norm",
            "log_spectral_product",
            "stable_rank",
            "top_singular",
            "step_distance",
            "multi_weights",
        )
        assert family in summary["verdicts"][family]
        assert summary["cost"][family]["curvature_seconds_per_checkpoint"] > 0
        if llc and family != "digits":
            counts = summary["llc_health"][family]["counts"]
            assert counts["total"] > 0 and 0 <= counts["excluded"] <= counts["total"]
        assert (tmp_path / f"probes_{family}.png").stat().st_size > 0
        assert (tmp_path / f"probes_{family}.npz").exists()
    for name in ("f1_curves.png", "heldout.png", "weight_histogram.png", "scores.npz"):
        assert (tmp_path / name).exists()


def test_smoke_one_family_without_llc(tmp_path):
    # Mostly compiling the training, probe and curvature programs; λ̂ (another ~10 s of compile)
    # is covered by the slow test below and by tests/test_probes.py.
    _check(_run(tmp_path, "digits", "--no-llc"), tmp_path, ["digits"], llc=False)


@pytest.mark.slow
def test_smoke_all_families_with_llc(tmp_path):
    families = ["tms", "digits", "grokking", "legendre", "transformer"]
    _check(_run(tmp_path, ",".join(families)), tmp_path, families)
