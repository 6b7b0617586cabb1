"""tmsjax: a JAX sampling engine for the Toy Model of Superposition and singular learning theory.

The closed-form TMS potential and its k-gon critical points, vmapped SGD ensembles, SGLD local
learning coefficients, blackjax NUTS posteriors across dataset sizes, the k-gon coarse-graining of
samples, free-energy theory, and weight-only phase-transition probes.
"""

from tmsjax.critical import CriticalPoint, critical_points
from tmsjax.data import Dataset, make_dataset, nested_datasets, sample_sparse, sample_sparse_limit
from tmsjax.model import TMSParams, empirical_loss, init_near_kgon, init_params, reconstruct
from tmsjax.phases import canonicalize, classify, classify_batch, make_classifier, phase_labels
from tmsjax.potential import population_loss, potential

__version__ = "0.1.0"

__all__ = [
    "CriticalPoint",
    "canonicalize",
    "classify",
    "classify_batch",
    "critical_points",
    "make_classifier",
    "phase_labels",
    "Dataset",
    "TMSParams",
    "empirical_loss",
    "init_near_kgon",
    "init_params",
    "make_dataset",
    "nested_datasets",
    "population_loss",
    "potential",
    "reconstruct",
    "sample_sparse",
    "sample_sparse_limit",
]
