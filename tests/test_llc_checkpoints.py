"""stack_checkpoints: a training loop's list of models in the layout llc_along_training takes."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmsjax.llc import LLCSettings, llc_along_training
from tmsjax.llc.checkpoints import stack_checkpoints


def _mlps(key, count, activation=jax.nn.relu):
    return [
        eqx.nn.MLP(3, 2, 4, 1, activation=activation, key=k) for k in jax.random.split(key, count)
    ]


def test_one_run_of_equinox_modules_gets_axes_one_by_checkpoints(key):
    models = _mlps(key, 3)
    stacked = stack_checkpoints(models)
    assert stacked.layers[0].weight.shape == (1, 3, 4, 3)
    assert stacked.layers[1].bias.shape == (1, 3, 2)
    assert stacked.activation is models[0].activation
    for c, model in enumerate(models):
        cell = jax.tree.map(lambda x: x[0, c], eqx.filter(stacked, eqx.is_inexact_array))
        assert eqx.tree_equal(
            eqx.combine(cell, eqx.filter(model, eqx.is_inexact_array, inverse=True)), model
        )


def test_many_runs_keep_run_then_checkpoint_order(key):
    runs = [[{"w": jnp.full(2, 10.0 * r + c)} for c in range(4)] for r in range(3)]
    stacked = stack_checkpoints(*runs)
    assert stacked["w"].shape == (3, 4, 2)
    np.testing.assert_array_equal(
        stacked["w"][:, :, 0], 10.0 * np.arange(3)[:, None] + np.arange(4)
    )


def test_llc_along_training_accepts_the_stack(key):
    def loss_fn(model, data):
        x, y = data
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    key_x, key_models, key_llc = jax.random.split(key, 3)
    x = jax.random.normal(key_x, (64, 3))
    data = (x, jnp.stack([x[:, 0], x[:, 1]], axis=1))
    settings = LLCSettings(nbeta=10.0, num_chains=2, num_steps=20, step_size=1e-4)
    result = llc_along_training(
        key_llc, loss_fn, stack_checkpoints(_mlps(key_models, 3)), data, settings
    )
    assert result.llc.shape == (1, 3)
    assert np.all(np.isfinite(np.asarray(result.llc)))


@pytest.mark.parametrize(
    "runs, match",
    [
        ((), "at least one run"),
        (([],), "same number"),
        (([{"w": jnp.zeros(2)}], [{"w": jnp.zeros(2)}] * 2), "same number"),
        (({"w": jnp.zeros(2)},), "list or tuple"),
        (([{"w": jnp.zeros(2)}, {"w": jnp.zeros(3)}],), "checkpoint 1 of run 0.*shape"),
        (([{"w": jnp.zeros(2)}, {"v": jnp.zeros(2)}],), "checkpoint 1 of run 0.*structure"),
        (([{"w": jnp.zeros(2), "n": 1}, {"w": jnp.zeros(2), "n": 2}],), "non-floating"),
    ],
)
def test_refuses_what_cannot_be_one_stack(runs, match):
    with pytest.raises(ValueError, match=match):
        stack_checkpoints(*runs)


def test_refuses_checkpoints_with_another_activation(key):
    first, second = _mlps(key, 2)
    other = eqx.tree_at(lambda m: m.activation, second, jax.nn.tanh)
    with pytest.raises(ValueError, match="checkpoint 1 of run 0: its non-floating"):
        stack_checkpoints([first, other])
