"""Samplers of the generic engine: one module each (sgld, psgld, mala for λ̂; nuts, smc, tempering
for sweeps over grids of targets; diagnostics).

Replica exchange is re-exported here: ``from tmsjax.sampling import make_tempering_sweep``.
"""

from tmsjax.sampling.tempering import (
    TemperingResult,
    build_tempering_chain,
    geometric_ladder,
    make_tempering_sweep,
)

__all__ = ["TemperingResult", "build_tempering_chain", "geometric_ladder", "make_tempering_sweep"]
