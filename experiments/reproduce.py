"""The main job: every experiment at CPU scale, and one report with every figure and key number.

Runs, in order, the critical-point catalogue, SGD plateaus and the developmental animation, λ̂ at
critical points and along training, the Bayesian phase transitions (c = 6, then the paper's c = 5
and c = 4 sweeps over n = 100..600 in folders of their own), the local free energies per phase
that account for where the posterior crosses, and the transition detectors;
then writes ``DIR/report.md`` with each figure and the key numbers next to the paper's, and
``DIR/summary.json`` with the same numbers for programs.

Each experiment writes into its own sub-folder as it goes; a re-run skips every experiment whose
``summary.json`` exists, so an interrupted reproduction resumes where it stopped. A failing
experiment is reported (with its error) and does not stop the others.

Usage:
  python -m experiments.reproduce --out results            # CPU scale, minutes
  python -m experiments.reproduce --out results --preset paper   # paper scale, for a GPU
"""

import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from tqdm.auto import tqdm

from experiments import common, report
from tmsjax.results import ResultStore, to_jsonable

# (name, settings read from other experiments' folders, settings at the cpu preset) in run order:
# λ̂ along training reuses the SGD ensemble, and the animation reuses both. At CPU scale the Bayesian
# sweep uses fewer n and draws than its own cpu preset so the whole reproduction fits in 15 minutes
# on 2 cores (c = 6, 5 and 4: 89, 68 and 59 s at load average 4-5, 17, 12 and 12 of them
# sampling). Values are typed, as ``args`` holds them; "{root}" is the --out folder.
EXPERIMENTS = [
    ("critical_points", {}, {}),
    ("sgd_plateaus", {}, {}),
    ("llc_trajectories", {"source": "{root}/sgd_plateaus"}, {}),
    (
        "developmental_stages",
        {"source": "{root}/sgd_plateaus", "llc": "{root}/llc_trajectories"},
        {},
    ),
    ("llc_critical_points", {}, {}),
    ("llc_grid", {}, {}),
    (
        "bayesian_transitions",
        {},
        {"sizes": "250,350,450,550,650,800", "num_warmup": 300, "num_samples": 300},
    ),
    ("local_free_energy", {}, {}),
    ("detect_transitions", {}, {}),
]
# Settings every preset gets, per experiment: at the paper preset bayesian_transitions would
# otherwise run c = 6, 5 and 4 into sub-folders of its folder, leaving none a summary.json.
# llc_critical_points keeps the paper's hand-set ε in the reproduction: calibrated at the 6-gon,
# its exact-potential λ̂ of the 5- and 5⁺-gon came out 11% and 8% low (6.22 vs 7, 7.83 vs 8.5), where
# the paper's settings are within 3% (issue 14 is open on it).
FIXED = {"bayesian_transitions": {"num_features": 6}, "llc_critical_points": {"calibrate": False}}
# Further runs of an experiment, each in a folder of its own, right after it (and selected with it
# by --only): {experiment: [(folder, {preset: settings})]}. The paper's c = 5 and c = 4 sweeps
# (n from 100 to 600); at CPU scale 8 sizes × 9 chains (3 near each of the three lowest phases)
# × 300 + 300 rounds of replica exchange.
SMALL_C_CPU = {
    "sizes": "100,150,200,250,300,400,500,600",
    "chains_per_phase": 3,
    "num_warmup": 300,
    "num_samples": 300,
    "block_sizes": 8,
    "tsne_points": 500,  # the t-SNE of 1500 points took longer than the sampling
}
VARIANTS = {
    "bayesian_transitions": [
        (
            f"bayesian_transitions_c{c}",
            {
                "smoke": {"num_features": c},
                "cpu": {"num_features": c, **SMALL_C_CPU},
                "paper": {"num_features": c, "sizes": "100,150,200,250,300,400,500,600"},
            },
        )
        for c in (5, 4)
    ]
}
NAMES = [name for name, *_ in EXPERIMENTS]
VARIANT_NAMES = [folder for runs in VARIANTS.values() for folder, _ in runs]

DONE = ".done"
PRESETS = {"smoke": {}, "cpu": {}, "paper": {}}


def add_arguments(parser):
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated subset of {','.join(NAMES + VARIANT_NAMES)}",
    )


def check(args):
    if args.only is not None:
        unknown = sorted(set(args.only.split(",")) - set(NAMES + VARIANT_NAMES))
        if unknown:
            raise ValueError(
                f"--only names unknown experiments {unknown}; choose from {NAMES + VARIANT_NAMES}"
            )


def runs(args) -> list[tuple[str, str, dict]]:
    """(folder, module, typed overrides) of every run --only selects, in run order."""
    selected = None if args.only is None else set(args.only.split(","))
    out = []
    for name, inputs, cpu_settings in EXPERIMENTS:
        overrides = {
            key: value.replace("{root}", str(Path(args.out))) for key, value in inputs.items()
        }
        overrides.update(FIXED.get(name, {}))
        if args.preset == "cpu":
            overrides.update(cpu_settings)
        if selected is None or name in selected:
            out.append((name, name, overrides))
        for folder, settings in VARIANTS.get(name, []):
            if selected is None or name in selected or folder in selected:
                out.append((folder, name, dict(settings.get(args.preset, {}))))
    return out


def _run_one(module_name: str, overrides: dict, out: Path, args) -> dict:
    module = importlib.import_module(f"experiments.{module_name}")
    module.main(
        common.configure(
            module,
            out,
            preset=args.preset,
            seed=args.seed,
            no_progress=args.no_progress,
            **overrides,
        )
    )
    return json.loads((out / "summary.json").read_text())


def main(args) -> dict:
    root = Path(args.out)
    store = ResultStore(root)
    # --only picks what runs now, not what the folder holds: a later run may add the rest.
    store.write_config({k: v for k, v in common.settings(args).items() if k != "only"})
    selected = runs(args)
    status = {}
    bar = tqdm(selected, desc="reproduce", unit="experiment", disable=not args.progress)
    for name, module_name, overrides in bar:
        bar.set_postfix_str(name)
        out = root / name
        if (out / DONE).exists():
            status[name] = {"status": "done (resumed)", "seconds": None}
            continue
        start = time.perf_counter()
        try:
            _run_one(module_name, overrides, out, args)
            # The marker is written only once main() returned, figures included: an experiment
            # interrupted after its summary.json is run again (and resumes from its own files).
            (out / DONE).write_text(f"{time.perf_counter() - start:.1f} s\n")
            status[name] = {"status": "ok", "seconds": time.perf_counter() - start}
        except KeyboardInterrupt:
            raise
        except (
            Exception,
            SystemExit,
        ) as error:  # reported (argparse exits too); the others still run
            status[name] = {
                "status": "failed",
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - start,
            }
            tqdm.write(f"[reproduce] {name} failed: {error}")
    summaries = {
        name: json.loads((root / name / "summary.json").read_text())
        for name, *_ in selected
        if (root / name / "summary.json").exists()
    }
    key_numbers = report.key_numbers(summaries)
    (root / "report.md").write_text(report.render(root, status, key_numbers))
    summary = {"status": status, "key_numbers": key_numbers}
    store.write_summary(to_jsonable(summary))
    print(f"wrote {root / 'report.md'}")
    failed = [n for n, s in status.items() if s["status"] == "failed"]
    if failed:
        print(f"failed experiments: {failed} (see report.md)")
    return summary


if __name__ == "__main__":
    common.run_module(sys.modules[__name__])
