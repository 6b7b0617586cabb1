"""tmsjax: a JAX sampling engine for the Toy Model of Superposition and singular learning theory.

The closed-form TMS potential and its k-gon critical points, vmapped SGD ensembles, SGLD local
learning coefficients, blackjax NUTS and tempered-SMC posteriors across dataset sizes, the k-gon coarse-graining of
samples, free-energy theory, and weight-only phase-transition probes.
"""

from tmsjax.critical import CriticalPoint, critical_points
from tmsjax.data import (
    Dataset,
    SparseLimitStats,
    make_dataset,
    nested_datasets,
    sample_sparse,
    sample_sparse_limit,
    sparse_limit_stats,
)
from tmsjax.llc import LLCResult, estimate_llc, llc_along_training, llc_grid, verdict
from tmsjax.model import TMSParams, empirical_loss, init_near_kgon, init_params, reconstruct
from tmsjax.phases import canonicalize, classify, classify_batch, make_classifier, phase_labels
from tmsjax.plateaus import analyse_runs, find_plateaus
from tmsjax.posterior import log_density, posterior_log_density
from tmsjax.potential import population_loss, potential
from tmsjax.probes import compute_probes
from tmsjax.sampling.nuts import make_chees_sweep, make_nuts_sweep
from tmsjax.sampling.smc import make_smc_sweep
from tmsjax.sgd import Trajectory, train
from tmsjax.sharding import grid_mesh, shard_grid
from tmsjax.theory import catalogue_phases, crossing, free_energy, theoretical_occupancy

__version__ = "0.1.0"

__all__ = [
    "CriticalPoint",
    "Dataset",
    "LLCResult",
    "SparseLimitStats",
    "TMSParams",
    "Trajectory",
    "analyse_runs",
    "canonicalize",
    "catalogue_phases",
    "classify",
    "classify_batch",
    "compute_probes",
    "critical_points",
    "crossing",
    "empirical_loss",
    "estimate_llc",
    "find_plateaus",
    "free_energy",
    "grid_mesh",
    "init_near_kgon",
    "init_params",
    "llc_along_training",
    "llc_grid",
    "log_density",
    "make_chees_sweep",
    "make_classifier",
    "make_dataset",
    "make_nuts_sweep",
    "make_smc_sweep",
    "nested_datasets",
    "phase_labels",
    "population_loss",
    "posterior_log_density",
    "potential",
    "reconstruct",
    "sample_sparse",
    "sample_sparse_limit",
    "shard_grid",
    "sparse_limit_stats",
    "theoretical_occupancy",
    "train",
    "verdict",
]
