"""The two sharded sweeps, as one process of a jax.distributed job (tests/test_multiprocess.py).

Run it through the launcher, which starts jax.distributed first: as N local processes
(``python -m tmsjax.launch -n 2 tests/multiprocess_worker.py OUT.npz``) or as one process with as
many devices (``-n 1 --devices-per-process 2``), the reference. Every process computes the same
inputs from the same seeds; both sweeps are sharded over the global mesh of all processes' CPU
devices and gathered; process 0 writes OUT.npz.

- NUTS over an (n, chain) grid: the TMS posterior at 3 nested dataset sizes × 3 chains = 9 cells,
  20 warmup + 20 draws (9 is odd, so 2 devices pad the grid).
- λ̂ along training: 3 runs × 3 checkpoints = 9 cells of TMS row_loss, 2 chains × 50 SGLD steps,
  in groups of 2 cells per device (``cell_batch=2``: a group never spans devices).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from tmsjax import sharding
from tmsjax.llc import LLCSettings, llc_along_training
from tmsjax.sampling.nuts import make_nuts_sweep
from tmsjax.tms.data import make_dataset, nested_datasets, sample_sparse_limit
from tmsjax.tms.losses import row_loss
from tmsjax.tms.model import TMSParams
from tmsjax.tms.posterior import make_logdensity_fn

NUM_FEATURES, NUM_HIDDEN = 4, 2
SIZES = (10, 20, 40)  # nested dataset sizes n of the NUTS grid
NUM_CHAINS = 3  # NUTS chains per n
NUM_RUNS, NUM_CHECKPOINTS = 3, 3  # the λ̂ grid


def nuts_sweep(mesh) -> dict[str, np.ndarray]:
    """NUTS on the TMS posterior over the (n, chain) grid, flattened n-major."""
    key_data, key_init, key_chains = jax.random.split(jax.random.key(0), 3)
    x = sample_sparse_limit(key_data, max(SIZES), NUM_FEATURES)
    datasets = nested_datasets(x, np.repeat(SIZES, NUM_CHAINS))
    num_cells = len(SIZES) * NUM_CHAINS
    init = TMSParams(
        W=0.5 * jax.random.normal(key_init, (num_cells, NUM_HIDDEN, NUM_FEATURES)),
        b=jnp.zeros((num_cells, NUM_FEATURES)),
    )
    sweep = make_nuts_sweep(make_logdensity_fn(), num_warmup=20, num_samples=20, mesh=mesh)
    result = sweep(jax.random.split(key_chains, num_cells), init, datasets)
    result = sharding.gather(result)
    return {
        "nuts_W": result.positions.W,
        "nuts_b": result.positions.b,
        "nuts_logdensity": result.info.logdensity,
        "nuts_step_size": result.step_size,
        "nuts_inverse_mass_matrix": result.inverse_mass_matrix,
    }


def llc_sweep(mesh) -> dict[str, np.ndarray]:
    """λ̂ at every checkpoint of a few training runs (random weights stand in for checkpoints)."""
    key_data, key_params, key_llc = jax.random.split(jax.random.key(1), 3)
    data = make_dataset(sample_sparse_limit(key_data, 50, NUM_FEATURES))
    shape = (NUM_RUNS, NUM_CHECKPOINTS)
    params = TMSParams(
        W=jax.random.normal(key_params, (*shape, NUM_HIDDEN, NUM_FEATURES)),
        b=jnp.zeros((*shape, NUM_FEATURES)),
    )
    settings = LLCSettings(num_chains=2, num_steps=50)
    result = llc_along_training(key_llc, row_loss, params, data, settings, cell_batch=2, mesh=mesh)
    result = jax.device_get(result)
    return {
        "llc": result.llc,
        "llc_per_chain": result.llc_per_chain,
        "llc_init_loss": result.init_loss,
        "llc_loss_trace": result.loss_trace,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the .npz process 0 writes")
    args = parser.parse_args()
    mesh = sharding.grid_mesh()  # every device of every process
    arrays = {**nuts_sweep(mesh), **llc_sweep(mesh)}
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    print(
        f"process {jax.process_index()}/{jax.process_count()}: {jax.device_count()} devices, "
        f"{jax.local_device_count()} local",
        flush=True,
    )
    if jax.process_index() == 0:
        np.savez(
            args.out,
            process_count=jax.process_count(),
            device_count=jax.device_count(),
            **arrays,
        )


if __name__ == "__main__":
    main()
