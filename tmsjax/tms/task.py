r"""The TMS as a detector task family: SGD from small random weights, with the k-gon classifier's
phase changes as ground truth (Chen et al. 2023). Null runs start near the 6-gon, the global
minimum.

References:
  Chen, Lau, Mendel, Wei, Murfet (2023), arXiv:2310.06301 (TMS dynamics).
"""

import jax
import jax.numpy as jnp
import numpy as np

from tmsjax.checks import check_positive_int
from tmsjax.tms import phases, sgd
from tmsjax.tms.data import make_dataset, sample_sparse_limit
from tmsjax.tms.losses import row_loss
from tmsjax.tms.model import init_near_kgon, init_params
from tmsjax.training.schedule import checkpoint_schedule
from tmsjax.transitions.tasks.base import TaskRuns, check_num_null, check_window, in_window
from tmsjax.types import PRNGKey


def phase_change_steps(steps, labels, window) -> np.ndarray:
    """Steps where the classified phase changes, reading through "unknown" checkpoints.

    A change is counted at the first checkpoint of the new known phase (unknown checkpoints between
    two known phases are the crossing itself, not phases of their own).
    """
    changes, current = [], None
    for step, label in zip(np.asarray(steps), labels):
        if label == "unknown":
            continue
        if current is not None and label != current:
            changes.append(float(step))
        current = label
    return in_window(changes, window)


def tms_runs(
    key: PRNGKey,
    num_runs: int = 6,
    num_null: int = 2,
    *,
    num_features: int = 6,
    num_data: int = 1000,
    num_steps: int = 20_000,
    num_checkpoints: int = 100,
    learning_rate: float = 0.01,
    batch_size: int = 20,
    window: tuple = (100, 20_000),
    init_scale: float = 0.3,
) -> TaskRuns:
    r"""SGD on the TMS (Chen et al.'s data and minibatch, a shorter run at a larger learning rate)
    from small random weights N(0, init_scale²), with the phase classifier's changes as ground
    truth; null runs start near the 6-gon (c = 6), the global minimum, and stay there.

    Uses :func:`tmsjax.tms.sgd.train` and :func:`tmsjax.tms.phases.classify_batch`. Whether a run
    transitions inside the window is random; :attr:`TaskRuns.is_null` marks runs *initialised* as
    null, and runs whose phase never changes simply have no true transitions.

    Returns:
      :class:`TaskRuns` (metric: the exact potential L; events "labels": the phase label per
      checkpoint).
    """
    num_runs = check_positive_int("num_runs", num_runs)
    num_null = check_num_null(num_null)
    num_steps = check_positive_int("num_steps", num_steps)
    batch_size = check_positive_int("batch_size", batch_size)
    window = check_window(window, num_steps)
    total = num_runs + num_null
    key_data, key_init, key_null, key_train = jax.random.split(key, 4)

    @jax.jit  # one program for the setup (run eagerly, each sampler primitive compiles on its own)
    def setup(key_data, key_init, key_null):
        x = sample_sparse_limit(key_data, num_data, num_features)
        # Small random weights (scale 0.3): runs pass through several k-gon phases within ~10⁴
        # steps (4⁺⁺ → 4⁺ → 5 → 5⁺ ...), where runs started at a 4-gon mostly stay there for 10⁵.
        init = jax.vmap(lambda k: init_params(k, num_features, 2, scale=init_scale))(
            jax.random.split(key_init, num_runs)
        )
        if num_null:
            null = jax.vmap(
                lambda k: init_near_kgon(k, num_features, num_features, radius=1.32, bias=-0.6)
            )(jax.random.split(key_null, num_null))
            init = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), init, null)
        return x, init

    x, init = setup(key_data, key_init, key_null)
    dataset = make_dataset(x)
    schedule = checkpoint_schedule(num_steps, num_checkpoints, include_start=False)
    trajectory = sgd.train(
        jax.random.split(key_train, total),
        init,
        dataset,
        num_steps=num_steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        schedule=schedule,
        progress=False,
    )
    params = jax.tree.map(np.asarray, trajectory.params)
    flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), params)
    labels = phases.classify_batch(flat.W, flat.b).labels.reshape(total, -1)
    transitions = tuple(phase_change_steps(schedule, labels[run], window) for run in range(total))
    return TaskRuns(
        "tms",
        schedule,
        params,
        np.asarray(trajectory.train_loss),
        np.asarray(trajectory.population_loss),
        transitions,
        {"labels": tuple(tuple(row) for row in labels)},
        np.arange(total) >= num_runs,
        window,
        row_loss,
        dataset,
        int(num_data),
    )


__all__ = ["phase_change_steps", "tms_runs"]
