"""Can λ̂ be trusted? Deep linear networks against their exact learning coefficient (issue 14).

A known-answer benchmark: deep linear networks (DLN) y = W_L ⋯ W_1 x from 12 to 10⁴ parameters and
2 to 5 layers (``--preset large``, meant for a GPU: to 1.6·10⁵), at a true product
A₀ = U diag(s) Vᵀ of rank r (r singular values s drawn in [0.5, 1.5]), whose learning coefficient
λ is known exactly (Aoyagi 2024; :func:`tmsjax.llc.exact.deep_linear_network`). Each architecture
is estimated four ways, all with one settings rule:

- **population**: L(w) = ‖W_L ⋯ W_1 − A₀‖²_F (not divided by the output dimension): the expected
  squared error, summed over outputs, for x ~ N(0, I), less the noise constant. Full-batch SGLD, an
  explicit nβ = n / log n for a nominal n = 10⁴.
- **finite**: n = 10⁴ rows x ~ N(0, I), y = A₀x + N(0, σ²I), σ = 0.3; L_n = mean over rows of the
  squared error summed over outputs; minibatch SGLD, batch 256, nβ = n / log n, each draw's loss on
  the whole dataset. The rows are split once into 39 batches of 256 distinct rows (one shuffled
  epoch) and each step draws one of them; losses are computed from the rows' second moments, which
  equals the row-wise mean squared error exactly at a cost free of the row count. The finite-data
  minimum is not at w*, which lowers λ̂ by nβ(L_n(w*) − min L_n) even for an exact sampler
  (``displacement``, exact from the moments by Eckart–Young; about σ²r(in + out − r)/log n, 1-3%
  of λ here).

Each is centred at

- **singular**: the most singular true point, the zero-padded factorisation: with t = s^(1/L) and
  E = [I_r; 0], W_1 = E diag(t) Vᵀ, W_j = E diag(t) Eᵀ, W_L = U diag(t) Eᵀ; every other entry 0;
- **generic**: the same factors moved along the symmetry of the product, W_j → G_{j+1} W_j G_j⁻¹
  with random G = orthogonal · diag(e^u) · orthogonal, u ∈ [−0.5, 0.5] (condition numbers ≤ e): no
  entry is 0, the product is unchanged, and since the move is a diffeomorphism of parameter space
  that keeps the loss, λ is the same. (The localization term is not invariant under it.)

**The settings: the library's automatic calibration**, :func:`tmsjax.llc.auto_calibrate` (nothing
here knows it is a deep linear network; ``--calibrate`` uses the grid :func:`tmsjax.llc.calibrate`
started from :func:`tmsjax.llc.auto_settings` instead). Its only input beyond the problem is a step
budget S(d) = min(max_steps, param_steps / d) set by the preset (80,000 steps and 1.5·10⁸ / d on
the default preset, sized so that one run of each case takes ≤ 30 s on 2 CPU cores). With k* the
largest eigenvalue of the loss's Hessian at w* (power iteration on Hessian-vector products):

- ε = c / (nβ k* + 1), c = 0.2: the stiffest direction at w* moves a fifth of its posterior width
  per step;
- γ = max(1, 1 / (ε S(d))): the smallest localization (at least 1, in units where the true factors
  are of order 1) whose relaxation time 1/(εγ), the time a direction held only by the localization
  takes to spread, fits into the budget; where γ = 1 leaves steps to spare, ε drops to 1/S(d);
- 1/(εγ) steps (rounded up to 1000, at least 2000), the first half burn-in, thinned to ≤ 1000 draws
  per chain; 4 chains; on minibatches no MALA acceptance estimate (the bias below judges the step);
- the estimate is λ̂ less the run's own estimate of its discretisation bias,
  b = (ε/8)(E[∇(nβL)·∇U] − Cov(nβL, Δ(nβL)) + nβ²E‖∇L_batch − ∇L_n‖²) (the first order in ε of
  the Euler chain's invariant measure, and of the minibatch gradient noise's extra diffusion;
  :func:`tmsjax.llc.corrected_llc`); where b > 35% of λ̂ the run is repeated at a smaller ε in the
  same compiled program, γ again from the budget.

Per case: widths, rank, d, exact λ and its multiplicity m, ``llc_at_nbeta`` = λ − (m − 1)/log nβ
− displacement (what λ̂ estimates at this nβ and centre, to first order: the nβ-derivative of the
free energy's (m − 1) log log nβ term, and the finite data's displacement) and the error against
it (``rel_error_at_nbeta``, in units of λ), λ̂ ±
stderr (corrected), relative error, verdict (of the corrected estimate: "step size too large" only
above 35%), usable, the raw
λ̂, its error and verdict, the correction b, the settings, runs made, seconds (run and compile
apart: compile is the sum of jax.monitoring's compile events during the one ``auto_calibrate``
call, power iteration included) and ``chain_param_steps`` (SGLD steps × chains × parameters over
every run: the machine-independent cost). Summary rows, population and finite apart, over the
cases with d ≤ 10⁴: median and max |relative error|, median signed error, and
``num_bad_called_ok``: how many cases with |error| > 15% the verdict called "ok" (the target is
none). Each row also has ``localization_sensitivity`` (the estimated change of λ̂ when γ is halved,
from −(γ/2)Cov(nβL, ‖w − w*‖²)), which :mod:`tmsjax.llc.health` turns into "localization-limited".

devinterp 1.3.2 runs the same cases at the same ε, γ, nβ, chains, burn-in fraction and thinning
when the optional ``[devinterp]`` extra is installed (as benchmarks/llc_devinterp.py calls it:
row-wise loss on a shuffled DataLoader for the finite case, a one-element loader and the Frobenius
loss for the population), and is skipped with a message otherwise. Its chains run one after
another in PyTorch, 10²-10³ times slower per step than ours on CPU (measured under load 12: 25 ms
per step on the population case and 85 ms on the finite one of 3-2-3, whose DataLoader collates
256 rows per step), so ``--devinterp-only SUBSTRING`` picks the cases it runs and
``--devinterp-steps N`` caps its chains (same burn-in fraction; ``baseline_steps`` says how many
it ran, and ``ratio`` is its time per step over ours).

Typical result (CPU, 2 idle cores, jax 0.10.2, default preset, ``--devinterp-only "3-2-3 r=1"
--devinterp-steps 1000``, 7.7 min wall; the table is in
benchmarks/results/llc_accuracy-cpu-2core.json), and a second draw of the suite (``--seed 2000``:
other A₀, data and chains):

- population, 16 cases: median |error| 3.7% (second draw 4.0%), max 10.0% (12.6%);
- finite n, 16 cases: median |error| 3.3% (5.9%), max 13.3% (10.5%);
- no case off by more than 15% (so none called "ok"); every estimate usable, one run per case
  (b = −2% to 33%, below 35%); 24 (31) of 32 say "ok", the rest "localization-limited"
  (+6% to +16% per halving of γ: the 5-layer networks, the 10⁴-parameter ones), none "step size
  too large";
- what is left is below λ, and most of it is the target, not the sampler. At finite nβ the
  expected λ̂ at a multiplicity-m point is λ − (m − 1)/log nβ to first order, 4% and 5% below λ on
  the rank-1 2- and 3-layer networks (m = 2, 3); MALA (exact at any ε) at the same nβ and γ on the
  population 3-2-3 and 4-3-3-4 gives 3.31 / 3.34 (singular / generic; λ − 1/log nβ = 3.36) and
  5.21 / 5.16 (5.21), and the corrected SGLD λ̂ agrees with it on reduced-rank regression
  (``tests/test_calibrate.py``, slow). The finite-n centres add the displacement (1-3% of λ).
  Against ``llc_at_nbeta`` the median |error| is 2.1% / 2.3% (population / finite; second draw
  3.1% / 3.5%), max 8.2% (12.6%: 50-50-50-50-50 generic, +12.6% ± 5.0%, whose corrections carry
  one Hutchinson probe per draw in 10⁴ dimensions). The worst errors against λ are the 4-3-3-4
  cases (−8% to −13%: −5.2% multiplicity, −1 to −2% displacement) and the deep generic points
  at γ ≈ 2 (8-8-8-8-8-8 finite, −9%);
- the minibatch noise term: before it, the finite-n cases of the larger networks came out +4% to
  +10% above their population twins; with it, 1-5% below them (the displacement);
- time: run 1.0-22.2 s per case, compile 5-9 s apart, run + compile ≤ 28.7 s (a budget of 90,000
  steps put two cases at 30.0-30.1 s); the finite cases cost what the population ones do since
  the minibatch acceptance estimate is off;
- devinterp 1.3.2 on the four 3-2-3 cases, same ε, γ, nβ, capped at 1000 of the 80,000 steps:
  −19%, −23% (population), −49%, −259% (finite), 213-465× our time per step. The cap leaves its
  chains at an eightieth of the relaxation time 1/(εγ), so its error here is mostly that. Run
  for the whole 80,000 steps (``--only "3-2-3 r=1 pop sing" --devinterp-only "3-2-3 r=1 pop
  sing"``), devinterp gives 3.44 (−1.6% from λ, +4% from MALA's 3.31 at the same nβ and γ: its
  step bias is not corrected) in 181 s against our 0.96 s (3.30), 188× per step.

Before this calibration (settings from the same rule with c = 0.1 and no correction, load 12):
median 3.0% / 4.6%, max +22.5% / +23.6% (30-25-20-25 singular, called "step size too large"),
11 cases over 30 s. Closing the loop by shrinking ε instead (rerun at ε·0.05/b while b > 5%, γ
from the budget, so larger) gave max 19% at 12-16-16-16-16-12 singular (γ 8.5), called "ok": the
localization bias of deep networks grows with γ and the diagnostics do not see it there.

Usage: python -m benchmarks.llc_accuracy [--quick | --preset {quick,default,large}] [--calibrate]
       [--no-devinterp] [--only SUBSTRING] [--devinterp-only SUBSTRING] [--devinterp-steps N]
       [--seed S]
"""

import argparse
import dataclasses
import functools
import importlib.util
import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import print_table, report
from tmsjax.llc import (
    AutoCalibration,
    LLCSettings,
    auto_calibrate,
    auto_settings,
    calibrate,
    estimate_llc,
    exact,
    usable,
    verdict,
)
from tmsjax.llc.calibrate import MAX_DRAWS, MIN_STEPS, pooled_step_bias

NAME = "llc_accuracy"

# The problem.
NUM_DATA = 10_000  # finite-data rows; also the nominal n of the population case's nβ = n / log n
NOISE = 0.3  # σ of the finite-data noise
BATCH_SIZE = 256
SINGULAR_VALUES = (0.5, 1.5)  # the range of A₀'s nonzero singular values
GENERIC_SPREAD = 0.5  # log singular values of the generic point's G in [-spread, spread]

# The settings (tmsjax.llc.auto_calibrate, with a step budget set by the preset).
NUM_CHAINS = 4

# The accuracy summary.
SUMMARY_MAX_PARAMS = 10_000
BAD_ERROR = 0.15


@dataclasses.dataclass(frozen=True)
class Preset:
    """Architectures (widths input first, rank) and the step budget of the settings rule."""

    architectures: tuple[tuple[tuple[int, ...], int], ...]
    max_steps: int  # S(d) = min(max_steps, param_steps / d)
    param_steps: float


PRESETS = {
    # Smoke use: three tiny networks, short chains (well under a minute on 2 CPU cores).
    "quick": Preset((((3, 2, 3), 1), ((4, 3, 3, 4), 1), ((6, 5, 4, 5, 6), 2)), 20_000, 2e8),
    # 12 to 10⁴ parameters, 2 to 5 layers; each case ≤ 30 s on 2 CPU cores.
    "default": Preset(
        (
            ((3, 2, 3), 1),  # d = 12, L = 2 (reduced-rank regression)
            ((4, 3, 3, 4), 1),  # d = 33, L = 3
            ((6, 5, 4, 5, 6), 2),  # d = 100, L = 4
            ((8, 8, 8, 8, 8, 8), 3),  # d = 320, L = 5
            ((20, 15, 20), 5),  # d = 600, L = 2
            ((30, 25, 20, 25), 8),  # d = 1750, L = 3
            ((12, 16, 16, 16, 16, 12), 4),  # d = 1152, L = 5
            ((50, 50, 50, 50, 50), 10),  # d = 10⁴, L = 4
        ),
        80_000,  # 90,000 put two cases at 30.0-30.1 s, run and compile together
        1.5e8,
    ),
    # A GPU: the default cases with longer chains, and 4·10⁴ to 1.6·10⁵ parameters.
    "large": Preset(
        (
            ((4, 3, 3, 4), 1),
            ((8, 8, 8, 8, 8, 8), 3),
            ((30, 25, 20, 25), 8),
            ((50, 50, 50, 50, 50), 10),
            ((100, 100, 100, 100, 100), 20),  # d = 4·10⁴, L = 4
            ((150, 150, 150, 150, 150, 150), 30),  # d = 112,500, L = 5
            ((200, 250, 250, 200), 40),  # d = 162,500, L = 3
        ),
        200_000,
        2e10,
    ),
}


# ----------------------------------------------------------------------------------------------
# The networks, their losses and data


def product(factors):
    """W_L ⋯ W_1 (factors input first)."""
    out = factors[0]
    for w in factors[1:]:
        out = w @ out
    return out


def population_loss(factors, target):
    """‖W_L ⋯ W_1 − A₀‖²_F: the expected squared error (summed over outputs) minus the noise."""
    return jnp.sum((product(factors) - target) ** 2)


class Moments(NamedTuple):
    """Second moments of a batch of rows: mean x xᵀ (in × in), mean x yᵀ (in × out), mean |y|²."""

    xx: jax.Array
    xy: jax.Array
    yy: jax.Array


class Rows(NamedTuple):
    """The finite dataset: its rows, their moments, and the moments of each minibatch.

    The rows are split once into num_data // BATCH_SIZE batches of distinct rows (a shuffled
    partition, as one epoch of a data loader), whose moments are computed up front; each SGLD step
    draws one of them uniformly. Defines ``num_data`` and ``minibatch(key, batch_size)``, which the
    λ̂ engine reads."""

    x: jax.Array
    y: jax.Array
    xx: jax.Array
    xy: jax.Array
    yy: jax.Array
    batches: Moments  # leading axis: the batches

    @property
    def num_data(self) -> int:
        return self.x.shape[0]

    def minibatch(self, key, batch_size: int) -> Moments:
        num_batches = self.batches.yy.shape[0]
        if batch_size != self.x.shape[0] // num_batches:
            raise ValueError(f"batch_size {batch_size} is not the precomputed one")
        index = jax.random.randint(key, (), 0, num_batches)
        return jax.tree.map(lambda m: m[index], self.batches)


def finite_loss(factors, data):
    """Mean over rows of ‖W_L⋯W_1 x − y‖², from the rows' moments (exact for any batch)."""
    p = product(factors)
    return jnp.sum((p @ data.xx) * p) - 2 * jnp.sum(p * data.xy.T) + data.yy


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


def true_factors(seed: int, widths, rank: int, generic: bool):
    """(factors, A₀) in float64: the zero-padded factorisation, or its generic image (docstring)."""
    rng = np.random.default_rng(seed)
    num_layers = len(widths) - 1
    u = _orthonormal(rng, widths[-1], rank)
    v = _orthonormal(rng, widths[0], rank)
    s = rng.uniform(*SINGULAR_VALUES, size=rank)
    target = u @ np.diag(s) @ v.T
    t = np.diag(s ** (1.0 / num_layers))
    factors = []
    for j in range(num_layers):
        left = u if j == num_layers - 1 else np.eye(widths[j + 1], rank)
        right = v if j == 0 else np.eye(widths[j], rank)
        factors.append(left @ t @ right.T)
    if generic:
        rng = np.random.default_rng([seed, 1])  # same A₀ and zero-padded point, then G
        gs = [None]
        for h in widths[1:-1]:
            scales = np.exp(rng.uniform(-GENERIC_SPREAD, GENERIC_SPREAD, size=h))
            gs.append(_orthonormal(rng, h, h) @ np.diag(scales) @ _orthonormal(rng, h, h))
        gs.append(None)
        moved = []
        for j, w in enumerate(factors):
            if gs[j + 1] is not None:
                w = gs[j + 1] @ w
            if gs[j] is not None:
                w = w @ np.linalg.inv(gs[j])
            moved.append(w)
        factors = moved
    error = np.max(np.abs(product(factors) - target))
    if error > 1e-8:
        raise RuntimeError(f"true factors do not multiply to A₀ (error {error:.2e})")
    return factors, target


def finite_data(seed: int, target: np.ndarray, num_data: int, batch_size: int) -> Rows:
    """n rows x ~ N(0, I), y = A₀x + N(0, σ²I); moments in float64, stored as float32."""
    rng = np.random.default_rng([seed, 2])
    x = rng.standard_normal((num_data, target.shape[1]))
    y = x @ target.T + NOISE * rng.standard_normal((num_data, target.shape[0]))
    num_batches = num_data // batch_size
    order = rng.permutation(num_data)[: num_batches * batch_size].reshape(num_batches, batch_size)
    xb, yb = x[order], y[order]  # (batches, batch_size, ·)
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    batches = Moments(
        f32(np.einsum("bri,brj->bij", xb, xb) / batch_size),
        f32(np.einsum("bri,brj->bij", xb, yb) / batch_size),
        f32(np.sum(yb * yb, axis=(1, 2)) / batch_size),
    )
    return Rows(
        f32(x),
        f32(y),
        f32(x.T @ x / num_data),
        f32(x.T @ y / num_data),
        f32(np.sum(y * y) / num_data),
        batches,
    )


# ----------------------------------------------------------------------------------------------
# Cases


@dataclasses.dataclass
class Case:
    """One estimate's problem: an architecture, a loss (population or finite), a centre."""

    widths: tuple[int, ...]
    rank: int
    kind: str  # "population" | "finite"
    point: str  # "singular" | "generic"
    seed: int
    center: tuple  # the factors W_1, ..., W_L (float32)
    data: Any  # A₀ (population) or Rows (finite)
    loss_fn: Callable
    nbeta: float
    batch_size: int | None
    exact: exact.LearningCoefficient
    max_steps: int
    param_steps: float

    @property
    def num_params(self) -> int:
        return sum(a * b for a, b in itertools.pairwise(self.widths))

    @property
    def num_layers(self) -> int:
        return len(self.widths) - 1

    @property
    def label(self) -> str:
        widths = "-".join(map(str, self.widths))
        return f"{widths} r={self.rank} {self.kind[:3]} {self.point[:4]}"


def build_case(widths, rank, kind, point, seed, preset: Preset) -> Case:
    factors, target = true_factors(seed, widths, rank, generic=point == "generic")
    center = tuple(jnp.asarray(w, jnp.float32) for w in factors)
    if kind == "population":
        data, loss_fn, batch_size = jnp.asarray(target, jnp.float32), population_loss, None
    else:
        data = finite_data(seed, target, NUM_DATA, BATCH_SIZE)
        loss_fn, batch_size = finite_loss, BATCH_SIZE
    case = Case(
        tuple(widths),
        rank,
        kind,
        point,
        seed,
        center,
        data,
        loss_fn,
        NUM_DATA / math.log(NUM_DATA),
        batch_size,
        exact.deep_linear_network(widths, rank),
        preset.max_steps,
        preset.param_steps,
    )
    return case


def cases_of(preset: Preset, seed: int = 1000) -> list[Case]:
    """Every architecture × loss × centre; architecture i draws A₀, data and keys from seed + i."""
    cases = []
    for index, (widths, rank) in enumerate(preset.architectures):
        for kind in ("population", "finite"):
            for point in ("singular", "generic"):
                cases.append(build_case(widths, rank, kind, point, seed + index, preset))
    return cases


# ----------------------------------------------------------------------------------------------
# Settings


def step_budget(case: Case) -> int:
    """S(d) = min(max_steps, param_steps / d): the steps per chain a run may take."""
    return max(MIN_STEPS, int(min(case.max_steps, case.param_steps / case.num_params)))


def base_settings(case: Case) -> LLCSettings:
    """What the calibration keeps: nβ, chains, batch size, full-data draws."""
    return LLCSettings(
        nbeta=case.nbeta, num_chains=NUM_CHAINS, batch_size=case.batch_size, draw_loss="full"
    )


def auto_estimate(case: Case) -> AutoCalibration:
    """The library default: :func:`tmsjax.llc.auto_calibrate` at the preset's step budget."""
    return auto_calibrate(
        jax.random.key(case.seed),
        case.loss_fn,
        case.center,
        case.data,
        base_settings(case),
        step_budget=step_budget(case),
    )


def calibrated_estimate(case: Case) -> AutoCalibration:
    """``--calibrate``: :func:`tmsjax.llc.calibrate`'s grid, started from auto_settings' ε and γ,
    then one estimate at its choice (wrapped like auto_calibrate's answer)."""
    start = auto_settings(
        jax.random.key(case.seed + 7),
        case.loss_fn,
        case.center,
        case.data,
        base_settings(case),
        step_budget=step_budget(case),
    )
    found = calibrate(jax.random.key(case.seed + 7), case.loss_fn, case.center, case.data, start)
    result = estimate_llc(
        jax.random.key(case.seed), case.loss_fn, case.center, case.data, found.settings,
        on_failure="return",
    )  # fmt: skip
    nan = float("nan")  # no bias correction: the grid's choice is judged raw
    return AutoCalibration(
        float(result.llc), float(result.stderr), nan, found.settings, result, found.curvature, (),
        found.reason,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Timing: compile apart from run, in one call


_COMPILE_SECONDS: list[float] = []
_LISTENING = False


def _listen_for_compiles() -> None:
    global _LISTENING
    if _LISTENING:
        return

    def listener(event: str, duration: float, **_) -> None:
        if event.startswith("/jax/core/compile/"):
            _COMPILE_SECONDS.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    _LISTENING = True


def timed(rule: Callable[[Case], AutoCalibration], case: Case):
    """(the rule's answer, run seconds, compile seconds) of one call: every run it makes and its
    power iteration, compiles apart."""
    _listen_for_compiles()
    _COMPILE_SECONDS.clear()
    start = time.perf_counter()
    found = jax.block_until_ready(rule(case))
    total = time.perf_counter() - start
    compile_s = min(sum(_COMPILE_SECONDS), total)
    return found, total - compile_s, compile_s


# ----------------------------------------------------------------------------------------------
# devinterp 1.3.2 on the same cases (optional extra)


def devinterp_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("devinterp", "torch"))


def devinterp_estimate(case: Case, settings: LLCSettings, seed: int = 0) -> dict:
    """One λ̂ with devinterp's SGLD at the same ε, γ, nβ, chains, burn-in and thinning (as
    benchmarks/llc_devinterp.py calls it); returns the estimate and wall time."""
    import torch
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary

    torch.set_num_threads(os.cpu_count() or 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def tensor(array):
        return torch.tensor(np.asarray(array), dtype=torch.float32, device=device)

    class TorchDLN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            factors = [torch.nn.Parameter(tensor(w)) for w in case.center]
            self.factors = torch.nn.ParameterList(factors)

        def forward(self, inputs):  # rows (batch, in) -> (batch, out)
            for w in self.factors:
                inputs = inputs @ w.T
            return inputs

        def product(self):
            out = self.factors[0]
            for w in self.factors[1:]:
                out = w @ out
            return out

    if case.kind == "population":
        target = tensor(case.data)
        dataset = torch.utils.data.TensorDataset(torch.zeros(1, 1, device=device))
        loader = torch.utils.data.DataLoader(dataset, batch_size=1)

        def evaluate(model, batch):
            return ((model.product() - target) ** 2).sum()

    else:
        dataset = torch.utils.data.TensorDataset(tensor(case.data.x), tensor(case.data.y))
        loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, shuffle=True)

        def evaluate(model, batch):
            inputs, targets = batch
            return ((model(inputs) - targets) ** 2).sum(-1).mean()

    start = time.perf_counter()
    summary = estimate_learning_coeff_with_summary(
        TorchDLN().to(device),
        loader,
        evaluate=evaluate,
        sampling_method=SGLD,
        optimizer_kwargs=dict(
            lr=settings.step_size, localization=settings.localization, nbeta=settings.nbeta
        ),
        num_chains=settings.num_chains,
        num_draws=settings.num_draws,
        num_burnin_steps=settings.num_burnin,
        num_steps_bw_draws=settings.thinning,
        device=device,
        verbose=False,
        seed=seed,
    )
    return {
        "llc": float(summary["llc/mean"]),
        "llc_std": float(summary["llc/std"]),
        "seconds": time.perf_counter() - start,
    }


# ----------------------------------------------------------------------------------------------
# Rows


def _nan_max(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.max(values)) if np.all(np.isfinite(values)) else float("nan")


def displacement(case: Case) -> float:
    """nβ (L_n(w*) − min L_n over rank-r products): how far the finite data's minimum lies below
    the true point, in λ units (0 for the population loss).

    With Σ_xx = C Cᵀ, L_n(P) = ‖(P − P_ols) C‖²_F + const, so the rank-r minimum leaves the
    squared singular values of P_ols C beyond the r-th (Eckart–Young), in float64."""
    if case.kind == "population":
        return 0.0
    xx, xy = (np.asarray(m, np.float64) for m in (case.data.xx, case.data.xy))
    chol = np.linalg.cholesky(xx)
    ols = np.linalg.solve(xx, xy).T  # (out, in)
    target = np.asarray(product([np.asarray(w, np.float64) for w in case.center]))
    singular = np.linalg.svd(ols @ chol, compute_uv=False)
    gap = np.sum(((target - ols) @ chol) ** 2) - np.sum(singular[case.rank :] ** 2)
    return case.nbeta * float(gap)


def llc_at_nbeta(coefficient: exact.LearningCoefficient, nbeta: float, shift: float) -> float:
    r"""What λ̂ estimates at this nβ and centre, to first order (NaN if m is unknown):
    λ − (m − 1)/log nβ (from Z(t) ∝ t^−λ (log t)^(m−1)), less the finite data's
    :func:`displacement` `shift` (the draws measure L_n from w*, not from the minimum they gather
    at)."""
    if coefficient.multiplicity is None:
        return float("nan")
    return coefficient.llc - (coefficient.multiplicity - 1) / math.log(nbeta) - shift


def estimate_case(
    case: Case,
    rule: Callable[[Case], AutoCalibration],
    with_devinterp: bool,
    devinterp_steps: int | None = None,
) -> dict:
    found, run_s, compile_s = timed(rule, case)
    settings, result = found.settings, found.result
    num_runs = max(1, len(found.rounds))
    lam = case.exact.llc
    llc, stderr = found.llc, found.stderr
    shift = displacement(case)
    target = llc_at_nbeta(case.exact, settings.nbeta, shift)
    row = {
        "workload": f"DLN {case.label}",
        "tmsjax_s": run_s,
        "compile_s": compile_s,
        # Machine-independent cost: SGLD steps × chains × parameters over every run made.
        "chain_param_steps": num_runs * settings.num_steps * NUM_CHAINS * case.num_params,
        "rounds": len(found.rounds),
        "kind": case.kind,
        "point": case.point,
        "widths": list(case.widths),
        "rank": case.rank,
        "layers": case.num_layers,
        "params": case.num_params,
        "llc_exact": lam,
        "multiplicity": case.exact.multiplicity,
        "llc": llc,
        "stderr": stderr,
        "rel_error": (llc - lam) / lam,
        # What λ̂ estimates at this nβ and centre, to first order: the error against it is the
        # sampler's and the settings'.
        "llc_at_nbeta": target,
        "rel_error_at_nbeta": (llc - target) / lam,
        "displacement": shift,
        "verdict": found.verdict,
        # The last run before the correction, and the correction removed (a fraction of it).
        "llc_raw": float(result.llc),
        "rel_error_raw": (float(result.llc) - lam) / lam,
        "verdict_raw": verdict(result),
        "correction": found.step_bias,
        "usable": bool(usable(result)),
        "acceptance": float(np.nanmean(np.asarray(result.diagnostics.acceptance))),
        "step_bias": _nan_max(result.diagnostics.step_bias),
        "step_bias_pooled": pooled_step_bias(result)[0],
        "first_llc": found.rounds[0]["llc"] if found.rounds else float("nan"),
        "first_step_bias": found.rounds[0]["step_bias"] if found.rounds else float("nan"),
        "localization_sensitivity": float(
            np.asarray(result.diagnostics.localization_sensitivity)[0]
        ),
        "curvature": found.curvature,
        "nbeta": settings.nbeta,
        "step_size": settings.step_size,
        "localization": settings.localization,
        "num_steps": settings.num_steps,
        "num_burnin": settings.num_burnin,
        "thinning": settings.thinning,
        "num_chains": settings.num_chains,
        "batch_size": settings.batch_size,
        "baseline": "devinterp 1.3.2" if with_devinterp else "devinterp (not run)",
        "baseline_s": float("nan"),
        "ratio": float("nan"),
    }
    if with_devinterp:
        # devinterp runs the same ε, γ, nβ, chains, burn-in fraction and thinning; capped at
        # `devinterp_steps` steps (its chains run one after another, ~10² times slower per step on
        # CPU), with the same burn-in fraction. Its error is then that of the shorter chain, and the
        # time ratio is per step.
        theirs_settings = settings
        if devinterp_steps is not None and devinterp_steps < settings.num_steps:
            burnin = int(devinterp_steps * settings.num_burnin / settings.num_steps)
            thinning = max(1, (devinterp_steps - burnin) // MAX_DRAWS)
            theirs_settings = settings.replace(
                num_steps=devinterp_steps, num_burnin=burnin, thinning=thinning
            )
        theirs = devinterp_estimate(case, theirs_settings, seed=case.seed)
        per_step = theirs["seconds"] / theirs_settings.num_steps
        row.update(
            baseline_s=theirs["seconds"],
            baseline_steps=theirs_settings.num_steps,
            ratio=per_step / (run_s / settings.num_steps),
            llc_baseline=theirs["llc"],
            rel_error_baseline=(theirs["llc"] - lam) / lam,
        )
    return row


def summary_rows(rows: list[dict], total_s: float) -> list[dict]:
    """Median / max |relative error| per loss kind over d ≤ 10⁴, and bad estimates called "ok"."""
    out = []
    small = [r for r in rows if r["params"] <= SUMMARY_MAX_PARAMS]
    for kind in ("population", "finite", "all"):
        group = [r for r in small if kind == "all" or r["kind"] == kind]
        if not group:
            continue
        errors = [abs(r["rel_error"]) for r in group]
        worst = max(group, key=lambda r: abs(r["rel_error"]))
        bad = [r for r in group if abs(r["rel_error"]) > BAD_ERROR]
        bad_ok = [r for r in bad if r["verdict"] == "ok"]
        ok = [r for r in group if r["verdict"] == "ok"]
        row = {
            "workload": f"summary {kind} (d <= {SUMMARY_MAX_PARAMS}, {len(group)} cases)",
            "tmsjax_s": sum(r["tmsjax_s"] for r in group),
            "compile_s": sum(r["compile_s"] for r in group),
            "baseline": "",
            "kind": f"summary {kind}",
            "cases": len(group),
            "median_abs_rel_error": statistics.median(errors),
            "max_abs_rel_error": max(errors),
            "worst_case": worst["workload"],
            "median_rel_error": statistics.median(r["rel_error"] for r in group),
            "median_abs_rel_error_at_nbeta": statistics.median(
                abs(r["rel_error_at_nbeta"]) for r in group
            ),
            "max_abs_rel_error_at_nbeta": max(abs(r["rel_error_at_nbeta"]) for r in group),
            "num_bad": len(bad),
            "num_bad_called_ok": len(bad_ok),
            "bad_called_ok_fraction": len(bad_ok) / len(bad) if bad else 0.0,
            "num_ok": len(ok),
            "ok_but_bad_fraction": len(bad_ok) / len(ok) if ok else 0.0,
            "num_usable": sum(r["usable"] for r in group),
        }
        if kind == "all":
            row["wall_s"] = total_s  # the whole run: settings, compiles and runs
        baseline = [r["rel_error_baseline"] for r in group if "rel_error_baseline" in r]
        if baseline:
            row["median_abs_rel_error_baseline"] = statistics.median(abs(e) for e in baseline)
            row["max_abs_rel_error_baseline"] = max(abs(e) for e in baseline)
        out.append(row)
    return out


def run(
    quick: bool = False,
    *,
    preset: str | None = None,
    use_calibration: bool = False,
    devinterp: bool = True,
    only: str | None = None,
    devinterp_only: str | None = None,
    devinterp_steps: int | None = None,
    seed: int = 1000,
) -> list[dict]:
    """Every case of the preset (``quick`` picks the quick one), then the summary rows."""
    name = preset or ("quick" if quick else "default")
    chosen = PRESETS[name]
    rule = calibrated_estimate if use_calibration else auto_estimate
    with_devinterp = devinterp and devinterp_available()
    if devinterp and not with_devinterp:
        print(
            "devinterp unavailable (pip install -e .[devinterp]); running tmsjax only",
            file=sys.stderr,
        )
    start = time.perf_counter()
    rows = []
    for case in cases_of(chosen, seed):
        if only and only not in case.label:
            continue
        theirs = with_devinterp and (devinterp_only is None or devinterp_only in case.label)
        row = estimate_case(case, rule, theirs, devinterp_steps)
        row["preset"] = name
        row["rule"] = "calibrate" if use_calibration else "auto_calibrate"
        rows.append(row)
        print(
            f"{row['workload']:<40} d={row['params']:<6} λ={row['llc_exact']:<8.4g} "
            f"λ̂={row['llc']:.4g}±{row['stderr']:.2g} err={row['rel_error']:+.3f} "
            f"(raw {row['rel_error_raw']:+.3f}, bias {row['correction']:+.3f}) "
            f"γ={row['localization']:.3g} steps={row['num_steps']}×{row['rounds']} "
            f"half-γ={row['localization_sensitivity']:+.3f} "
            f"run={row['tmsjax_s']:.1f}s compile={row['compile_s']:.1f}s {row['verdict']}",
            flush=True,
        )
    return rows + summary_rows(rows, time.perf_counter() - start)


CASE_COLUMNS = [
    "workload",
    "params",
    "layers",
    "llc_exact",
    "multiplicity",
    "llc_at_nbeta",
    "llc",
    "stderr",
    "rel_error",
    "usable",
    "verdict",
    "localization",
    "num_steps",
    "rounds",
    "tmsjax_s",
    "compile_s",
]
SUMMARY_COLUMNS = [
    "workload",
    "median_abs_rel_error",
    "max_abs_rel_error",
    "median_rel_error",
    "median_abs_rel_error_at_nbeta",
    "num_bad",
    "num_bad_called_ok",
    "num_ok",
    "num_usable",
    "worst_case",
]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick preset (smoke use)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument(
        "--calibrate", action="store_true", help="settings from tmsjax.llc.calibrate"
    )
    parser.add_argument("--no-devinterp", action="store_true", help="skip devinterp even if there")
    parser.add_argument("--only", default=None, help="only cases whose label contains this")
    parser.add_argument(
        "--devinterp-only", default=None, help="run devinterp only on cases whose label has this"
    )
    parser.add_argument(
        "--devinterp-steps", type=int, default=None, help="cap devinterp's chains at these steps"
    )
    parser.add_argument(
        "--seed", type=int, default=1000, help="A₀, data and chains of architecture i from seed + i"
    )
    args = parser.parse_args(argv)
    rows = run(
        args.quick,
        preset=args.preset,
        use_calibration=args.calibrate,
        devinterp=not args.no_devinterp,
        only=args.only,
        devinterp_only=args.devinterp_only,
        devinterp_steps=args.devinterp_steps,
        seed=args.seed,
    )
    cases = [r for r in rows if not r["kind"].startswith("summary")]
    summaries = [r for r in rows if r["kind"].startswith("summary")]
    report(NAME, rows)
    if not cases:
        return rows
    print()
    with_baseline = any("llc_baseline" in case for case in cases)
    columns = CASE_COLUMNS + (
        ["llc_baseline", "baseline_steps", "baseline_s"] if with_baseline else []
    )
    print_table(cases, columns)
    print()
    print_table(summaries, SUMMARY_COLUMNS)
    return rows


if __name__ == "__main__":
    main()
