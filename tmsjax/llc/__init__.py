r"""Local learning coefficient (λ̂) estimation for any loss of any model, with health diagnostics.

.. math:: \hat\lambda(w^*) = n\beta\,\big(\mathbb{E}_w[L_n(w)] - L_n(w^*)\big), \quad
          p(w) \propto e^{-n\beta L_n(w) - \frac\gamma2\lVert w - w^*\rVert^2},
          \quad \beta = 1/\log n

(Lau et al. 2023), sampled with localized tempered SGLD chains started at :math:`w^*`.

The package, file by file:

- :mod:`~tmsjax.llc.settings`: :class:`LLCSettings`, every setting of an estimate in one validated,
  hashable value (defaults: the paper's protocol);
- :mod:`~tmsjax.llc.core`: :func:`sample_llc`, one estimate (no validation, no jit: vmap it) and
  :class:`LLCResult`;
- :mod:`~tmsjax.llc.health`: per-chain diagnostics as booleans, the one rule :func:`usable`, and the
  words for people (:func:`verdict`, :func:`grid_verdicts`, :func:`summarize`);
- :mod:`~tmsjax.llc.partition`: equinox modules and pytrees with non-array leaves
  (:class:`PartitionedLoss`);
- :mod:`~tmsjax.llc.api`: the entry points :func:`estimate_llc`, :func:`llc_grid`,
  :func:`llc_along_training`;
- :mod:`~tmsjax.llc.calibrate`: :func:`calibrate`, recommended ε, γ, nβ from one compiled grid,
  with the evidence (:class:`Calibration`; :class:`CalibrationError` when no cell is stable), and
  the cheap automatic calibration: :func:`auto_settings` (ε from the curvature at the centre, γ
  and the chain length from a step budget) and :func:`auto_calibrate` (runs them and returns λ̂
  less the run's own estimated step bias, :func:`corrected_llc`; reruns at a smaller ε where that
  bias is too large to remove; :class:`AutoCalibration`);
- :mod:`~tmsjax.llc.exact`: exact learning coefficients to check λ̂ against (deep linear networks,
  reduced-rank regression, normal crossings, sums of monomials, regular models).

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from tmsjax import llc
  >>> def loss_fn(w, data):          # a regular quadratic in 2 dimensions: λ = 1
  ...     return jnp.sum(w**2)
  >>> settings = llc.LLCSettings(5e-4, nbeta=100.0, num_steps=2000, num_burnin=200)
  >>> result = llc.estimate_llc(jax.random.key(0), loss_fn, jnp.zeros(2), settings=settings)
  >>> bool(llc.usable(result)), llc.verdict(result)
  (True, 'ok')

References:
  Lau, Furman, Wang, Murfet, Wei, "The local learning coefficient: a singularity-aware complexity
  measure" (2023), arXiv:2308.12108.
  Chen, Lau, Mendel, Wei, Murfet, "Dynamical versus Bayesian phase transitions in a toy model of
  superposition" (2023), arXiv:2310.06301.
"""

from tmsjax.llc import exact
from tmsjax.llc.api import (
    DEFAULT_CELL_BATCH,
    LLCError,
    LLCGrid,
    estimate_llc,
    llc_along_training,
    llc_grid,
)
from tmsjax.llc.calibrate import (
    AutoCalibration,
    Calibration,
    CalibrationError,
    auto_calibrate,
    auto_settings,
    calibrate,
    corrected_llc,
    stable_region,
)
from tmsjax.llc.checkpoints import stack_checkpoints
from tmsjax.llc.core import LLCResult, default_minibatch, default_nbeta, num_data_of, sample_llc
from tmsjax.llc.health import (
    DRIFT_RELATIVE,
    DRIFT_Z,
    ESCAPE_FRACTION,
    LOCALIZATION_RELATIVE,
    MIN_ACCEPTANCE,
    PROBLEMS,
    STEP_BIAS_RELATIVE,
    LLCDiagnostics,
    all_clear,
    grid_verdicts,
    problem_counts,
    summarize,
    usable,
    usable_chains,
    verdict,
)
from tmsjax.llc.partition import PartitionedLoss, partition_model
from tmsjax.llc.settings import ChainSettings, LLCSettings
from tmsjax.sampling.mala import MALA
from tmsjax.sampling.psgld import RMSPropSGLD
from tmsjax.sampling.sgld import SGLD

__all__ = [
    "DEFAULT_CELL_BATCH",
    "DRIFT_RELATIVE",
    "DRIFT_Z",
    "ESCAPE_FRACTION",
    "LOCALIZATION_RELATIVE",
    "MALA",
    "MIN_ACCEPTANCE",
    "PROBLEMS",
    "RMSPropSGLD",
    "SGLD",
    "STEP_BIAS_RELATIVE",
    "AutoCalibration",
    "Calibration",
    "CalibrationError",
    "ChainSettings",
    "LLCDiagnostics",
    "LLCError",
    "LLCGrid",
    "LLCResult",
    "LLCSettings",
    "PartitionedLoss",
    "all_clear",
    "auto_calibrate",
    "auto_settings",
    "calibrate",
    "corrected_llc",
    "default_minibatch",
    "exact",
    "default_nbeta",
    "estimate_llc",
    "grid_verdicts",
    "llc_along_training",
    "llc_grid",
    "num_data_of",
    "partition_model",
    "problem_counts",
    "sample_llc",
    "stable_region",
    "stack_checkpoints",
    "summarize",
    "usable",
    "usable_chains",
    "verdict",
]
