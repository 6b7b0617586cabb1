"""The main job: every experiment at CPU scale, and one report with every figure and key number.

Runs, in order, the critical-point catalogue, SGD plateaus and the developmental animation, λ̂ at
critical points and along training, the Bayesian phase transitions, and the transition detectors;
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
# on 2 cores. Values are typed, as ``args`` holds them; "{root}" is the --out folder.
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
    ("detect_transitions", {}, {}),
]
NAMES = [name for name, *_ in EXPERIMENTS]

DONE = ".done"
PRESETS = {"smoke": {}, "cpu": {}, "paper": {}}


def add_arguments(parser):
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(NAMES)}")


def check(args):
    if args.only is not None:
        unknown = sorted(set(args.only.split(",")) - set(NAMES))
        if unknown:
            raise ValueError(f"--only names unknown experiments {unknown}; choose from {NAMES}")


def _run_one(name: str, inputs: dict, cpu_settings: dict, out: Path, args) -> dict:
    module = importlib.import_module(f"experiments.{name}")
    overrides = {key: value.replace("{root}", str(out.parent)) for key, value in inputs.items()}
    if args.preset == "cpu":
        overrides.update(cpu_settings)
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
    selected = (
        EXPERIMENTS
        if args.only is None
        else [e for e in EXPERIMENTS if e[0] in args.only.split(",")]
    )
    status = {}
    bar = tqdm(selected, desc="reproduce", unit="experiment", disable=not args.progress)
    for name, inputs, cpu_settings in bar:
        bar.set_postfix_str(name)
        out = root / name
        if (out / DONE).exists():
            status[name] = {"status": "done (resumed)", "seconds": None}
            continue
        start = time.perf_counter()
        try:
            _run_one(name, inputs, cpu_settings, out, args)
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
