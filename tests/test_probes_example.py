"""The README's probes example (docs/probes_example.py, run verbatim): weight-only and curvature
probes in a user's own optax loop, change points on several probes at the end.

Checked: it runs as a user runs it; every probe is finite and positive where it must be (norms,
the Hessian's trace and top eigenvalue of a trained cross-entropy network, whose Hessian is close to
its positive semi-definite Gauss-Newton part; the free energy, a mean loss increase around a point
that training has made near-minimal); the top eigenvalue does not exceed the trace (true for a
positive semi-definite Hessian, which the last checkpoint's nearly is); transitions lie inside the
probed steps; the README shows the example verbatim.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "probes_example.py"
README_HEADING = "## Transition probes in your training loop"


@pytest.mark.slow
def test_the_example_runs_and_its_probes_are_sound():
    # ~20 s of CPU (95 s of wall clock at load 10): 2000 steps, 11 probe points' compile.
    output = subprocess.run(
        [sys.executable, str(EXAMPLE)], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    rows = re.findall(r"^(.+?): (\S+) → (\S+)$", output, flags=re.M)
    last = {name: float(end) for name, _, end in rows}
    assert set(last) == {
        "weight norm",
        "log Πσ₁",
        "Hessian trace",
        "top eigenvalue",
        "free energy (σ = 0.01)",
    }
    assert last["weight norm"] > 0 and last["free energy (σ = 0.01)"] > 0
    assert 0 < last["top eigenvalue"] <= last["Hessian trace"]
    steps = re.search(r"transitions at steps \[(.*)\]", output).group(1)
    found = [int(s) for s in steps.split(",") if s.strip()]
    assert all(10 <= s <= 2000 for s in found)


def test_readme_shows_the_example_verbatim():
    readme = (ROOT / "README.md").read_text()
    assert README_HEADING in readme
    section = readme.split(README_HEADING, 1)[1]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    assert block == EXAMPLE.read_text()
