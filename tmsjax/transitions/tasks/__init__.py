"""Task families with known transitions (and null runs without), to score weight-only detectors.

One file per family: :mod:`~tmsjax.transitions.tasks.digits` (graduated training),
:mod:`~tmsjax.transitions.tasks.grokking` (modular addition),
:mod:`~tmsjax.transitions.tasks.legendre` (bounded polynomials),
:mod:`~tmsjax.transitions.tasks.transformer` (induction heads in a two-layer attention-only
transformer: a stage defined by behaviour); what they share is in
:mod:`~tmsjax.transitions.tasks.base`, and they train on :mod:`tmsjax.training.engine`. The TMS
family belongs to the TMS wing (:mod:`tmsjax.tms.task`); an experiment that wants it adds it to
:data:`FAMILIES` itself.
"""

from tmsjax.transitions.tasks.base import TaskRuns, first_crossing
from tmsjax.transitions.tasks.digits import graduated_digits_runs, load_digits_split
from tmsjax.transitions.tasks.grokking import EmbedMLP, grokking_runs
from tmsjax.transitions.tasks.legendre import legendre_runs, legendre_table
from tmsjax.transitions.tasks.transformer import AttentionOnlyTransformer, transformer_runs

#: The generic families by name: ``FAMILIES[name](key, num_runs=..., num_null=..., **settings)``.
FAMILIES = {
    "digits": graduated_digits_runs,
    "grokking": grokking_runs,
    "legendre": legendre_runs,
    "transformer": transformer_runs,
}

__all__ = [
    "FAMILIES",
    "AttentionOnlyTransformer",
    "EmbedMLP",
    "TaskRuns",
    "first_crossing",
    "graduated_digits_runs",
    "grokking_runs",
    "legendre_runs",
    "legendre_table",
    "load_digits_split",
    "transformer_runs",
]
