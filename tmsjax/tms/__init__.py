"""The TMS wing: the Toy Model of Superposition of Elhage et al. (2022) as studied by
Chen et al. (2023).

The model, its data, the closed-form potential, the k-gon critical points, the phase classifier, the
posterior, the free-energy theory, SGD ensembles and their plateaus, all built on the generic engine
(:mod:`tmsjax.llc`, :mod:`tmsjax.sampling`, :mod:`tmsjax.training`), which never imports this wing.

>>> from tmsjax import tms
>>> [round(p.loss, 5) for p in tms.critical_points(6)[:3]]
[0.04819, 0.0618, 0.06874]
"""

from tmsjax.tms.critical import CriticalPoint, critical_points
from tmsjax.tms.data import (
    Dataset,
    SparseLimitStats,
    make_dataset,
    nested_datasets,
    sample_sparse,
    sample_sparse_limit,
    sparse_limit_stats,
)
from tmsjax.tms.losses import potential_loss, row_loss, stats_loss
from tmsjax.tms.model import TMSParams, empirical_loss, init_near_kgon, init_params, reconstruct
from tmsjax.tms.phases import canonicalize, classify, classify_batch, make_classifier, phase_labels
from tmsjax.tms.plateaus import analyse_runs, find_plateaus
from tmsjax.tms.posterior import log_density, posterior_log_density
from tmsjax.tms.potential import population_loss, potential
from tmsjax.tms.sgd import Trajectory, init_kgon_ensemble, train
from tmsjax.tms.theory import catalogue_phases, crossing, free_energy, theoretical_occupancy

__all__ = [
    "CriticalPoint",
    "Dataset",
    "SparseLimitStats",
    "TMSParams",
    "Trajectory",
    "analyse_runs",
    "canonicalize",
    "catalogue_phases",
    "classify",
    "classify_batch",
    "critical_points",
    "crossing",
    "empirical_loss",
    "find_plateaus",
    "free_energy",
    "init_kgon_ensemble",
    "init_near_kgon",
    "init_params",
    "log_density",
    "make_classifier",
    "make_dataset",
    "nested_datasets",
    "phase_labels",
    "population_loss",
    "posterior_log_density",
    "potential",
    "potential_loss",
    "reconstruct",
    "row_loss",
    "sample_sparse",
    "sample_sparse_limit",
    "sparse_limit_stats",
    "stats_loss",
    "theoretical_occupancy",
    "train",
]
