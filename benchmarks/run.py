"""The benchmark harness: runs every benchmark module, prints one table, writes one JSON.

Each module in benchmarks/ with a ``run(quick)`` function answers one speed question against a
baseline measured in the same run; the harness collects their rows into
``benchmarks/results/<device>.json``.

The JSON is rewritten after every module, so a run cut short keeps what finished; ``--append``
keeps the rows of modules not run this time (``benchmarks/gpu.sh`` runs one module per process,
each under its own time limit).

Usage: python -m benchmarks [--quick] [--only core,llc_devinterp] [--append]
"""

import argparse
import importlib
import json
import pkgutil
import traceback

import jax

import benchmarks
from benchmarks.common import RESULTS, device_name, print_table


def discover() -> list[str]:
    names = []
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name in {"common", "run", "__main__"}:
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        if hasattr(module, "run"):
            names.append(info.name)
    return sorted(names)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller workloads (minutes)")
    parser.add_argument("--only", default=None, help="comma-separated benchmark modules")
    parser.add_argument(
        "--append", action="store_true", help="keep other modules' rows already in the JSON"
    )
    args = parser.parse_args(argv)
    names = discover() if args.only is None else args.only.split(",")
    device = device_name()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{device}.json"
    rows, errors = [], {}
    if args.append and path.exists():
        old = json.loads(path.read_text())
        rows = [row for row in old["rows"] if row["benchmark"] not in names]
        errors = {name: e for name, e in old.get("errors", {}).items() if name not in names}
    payload = {"device": device, "jax": jax.__version__, "quick": args.quick}
    for name in names:
        print(f"== {name}", flush=True)
        try:
            for row in importlib.import_module(f"benchmarks.{name}").run(quick=args.quick):
                rows.append({"benchmark": name, "device": device, **row})
        except Exception as error:  # one broken benchmark does not hide the others
            errors[name] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        payload |= {"rows": rows, "errors": errors}
        path.write_text(json.dumps(payload, indent=2, default=float))
    print()
    print_table(
        rows, ["benchmark", "workload", "tmsjax_s", "baseline", "baseline_s", "ratio", "device"]
    )
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
