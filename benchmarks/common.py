"""Shared timing and reporting for the benchmark modules.

Each benchmark module exposes ``run(quick: bool = False) -> list[dict]`` whose rows carry at least
``workload``, ``tmsjax_s``, ``baseline``, ``baseline_s`` and ``ratio`` (baseline time / tmsjax
time, so > 1 means tmsjax is faster); ``python -m benchmarks.NAME`` prints them as a table and
writes JSON.
"""

import json
import re
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import jax

RESULTS = Path(__file__).resolve().parent / "results"


def device_name() -> str:
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    if device.platform == "cpu":
        import os

        kind = f"cpu-{os.cpu_count()}core"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(kind)).strip("-").lower()


def block(tree):
    return jax.tree.map(
        lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree
    )


def time_jax(fn: Callable, *args, repeat: int = 3, number: int = 1) -> tuple[float, float]:
    """(first-call seconds, i.e. compile + one run; best steady-state seconds per call)."""
    start = time.perf_counter()
    block(fn(*args))
    first = time.perf_counter() - start
    best = min(timeit.repeat(lambda: block(fn(*args)), repeat=repeat, number=number)) / number
    return first, best


def time_python(fn: Callable, *args, repeat: int = 3, number: int = 1) -> float:
    return min(timeit.repeat(lambda: fn(*args), repeat=repeat, number=number)) / number


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or ["workload", "tmsjax_s", "baseline", "baseline_s", "ratio", "device"]

    def fmt(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    cells = [[fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def report(name: str, rows: list[dict]) -> Path:
    """Prints the table and writes ``benchmarks/results/{name}-{device}.json``."""
    device = device_name()
    for row in rows:
        row.setdefault("device", device)
    print_table(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{device}.json"
    payload = {
        "benchmark": name,
        "device": device,
        "jax": jax.__version__,
        "argv": sys.argv[1:],
        "rows": rows,
    }
    path.write_text(json.dumps(payload, indent=2, default=float))
    print(f"wrote {path}")
    return path
