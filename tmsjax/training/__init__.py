"""Training ensembles: many runs as one jitted, vmapped, chunked program with checkpoints.

:func:`~tmsjax.training.engine.run_ensemble` runs any per-run step function (vmapped over runs) and
records at a :func:`~tmsjax.training.schedule.checkpoint_schedule`, chunked through
:func:`~tmsjax.training.loop.run_chunked` (progress bar, resume from a store, bounded memory).
"""

from tmsjax.training.engine import (
    Checkpoints,
    TrainState,
    chunk_program,
    init_train_state,
    optimizer_step,
    run_ensemble,
    set_learning_rate,
    sgd_optimizer,
)
from tmsjax.training.loop import concatenate_chunks, run_chunked
from tmsjax.training.schedule import SegmentPlan, checkpoint_schedule, plan_segments

__all__ = [
    "Checkpoints",
    "SegmentPlan",
    "TrainState",
    "checkpoint_schedule",
    "chunk_program",
    "concatenate_chunks",
    "init_train_state",
    "optimizer_step",
    "plan_segments",
    "run_chunked",
    "run_ensemble",
    "set_learning_rate",
    "sgd_optimizer",
]
