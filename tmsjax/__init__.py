"""tmsjax: a JAX sampling engine for singular learning theory and developmental interpretability.

The generic engine, for any JAX model (a loss of a parameter pytree): local learning coefficients
λ̂ with localized SGLD (:mod:`tmsjax.llc`), blackjax NUTS / ChEES / tempered-SMC sweeps over grids
(:mod:`tmsjax.sampling`), vmapped training ensembles with checkpoints (:mod:`tmsjax.training`), and
weight-only phase-transition probes, change points and scoring (:mod:`tmsjax.transitions`).

The Toy Model of Superposition lives in its own wing, :mod:`tmsjax.tms`
(``from tmsjax import tms``), which uses the engine; the engine never imports it.
"""

from tmsjax.llc import LLCResult, calibrate, estimate_llc, llc_along_training, llc_grid, verdict
from tmsjax.sampling.nuts import make_chees_sweep, make_nuts_sweep
from tmsjax.sampling.smc import make_smc_sweep
from tmsjax.sharding import grid_mesh, shard_grid
from tmsjax.transitions.changepoints import detect_changepoints
from tmsjax.transitions.probes import compute_probes

__version__ = "0.2.0"

__all__ = [
    "LLCResult",
    "calibrate",
    "compute_probes",
    "detect_changepoints",
    "estimate_llc",
    "grid_mesh",
    "llc_along_training",
    "llc_grid",
    "make_chees_sweep",
    "make_nuts_sweep",
    "make_smc_sweep",
    "shard_grid",
    "verdict",
]
