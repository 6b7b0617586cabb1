r"""Scale-out: shard the leading grid axis of a sweep over every device of a `jax.sharding.Mesh`.

Every sweep in tmsjax stacks what varies (dataset size n, chain, seed, hyperparameters) on one
leading "grid" axis and vmaps over it (docs/architecture.md, decision 3). Grid elements never talk
to each other, so the grid can be split across devices with no communication: put each input with
``NamedSharding(mesh, P("grid"))`` and jit propagates that sharding through the vmapped program
(GSPMD), each device running its slice.

The grid is padded to a multiple of the device count by repeating its last element (a valid input,
so padded elements cannot produce NaNs or divergences that pollute diagnostics), and the padding is
sliced off the outputs.

Many hosts (e.g. several GPU nodes), or many CPU processes on one machine: every process calls
``jax.distributed.initialize()`` before importing tmsjax (``python -m tmsjax.launch`` does it; see
docs/multihost.md), then runs the *same* program. :func:`grid_mesh` takes ``jax.devices()``, which
after initialisation lists the devices of all processes, and :func:`shard_grid` builds the global
arrays with ``jax.make_array_from_callback``, so each process materialises only the slices its own
devices hold; :func:`replicate` places the inputs every cell shares. Outputs are global arrays;
:func:`gather` brings them to every process (``multihost_utils.process_allgather``) for writing
results, which one process (``jax.process_index() == 0``) should do.

Example::

    mesh = grid_mesh()                                  # all devices, axis name "grid"
    sharded, size = shard_grid((keys, datasets, init), mesh)
    out = jax.jit(jax.vmap(run_one))(*sharded)          # one program, each device its slice
    out = unpad(gather(out), size)
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tmsjax.types import PyTree

GRID_AXIS = "grid"


def grid_mesh(devices=None) -> Mesh:
    """A one-axis mesh named "grid" over `devices` (default: every device of every host)."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 0:
        raise ValueError("devices must not be empty")
    return Mesh(np.asarray(devices), (GRID_AXIS,))


def grid_size(tree: PyTree) -> int:
    """The common leading-axis length of every leaf (raises if they disagree)."""
    sizes = {int(np.shape(leaf)[0]) for leaf in jax.tree.leaves(tree) if np.ndim(leaf) > 0}
    if len(sizes) != 1:
        raise ValueError(f"tree leaves must share one leading grid axis, got sizes {sorted(sizes)}")
    return sizes.pop()


def pad_grid(tree: PyTree, multiple: int) -> tuple[PyTree, int]:
    """Pads the leading axis to a multiple of `multiple` by repeating the last element.

    Returns:
      The padded tree and the original grid size.
    """
    size = grid_size(tree)
    padded_size = -(-size // multiple) * multiple

    def pad(leaf):
        leaf = jnp.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf
        if padded_size == size:
            return leaf
        index = jnp.concatenate([jnp.arange(size), jnp.full(padded_size - size, size - 1)])
        return leaf[index]

    return jax.tree.map(pad, tree), size


def _grid_mesh_or_default(mesh: Mesh | None) -> Mesh:
    mesh = grid_mesh() if mesh is None else mesh
    if GRID_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must have an axis named {GRID_AXIS!r}, got {mesh.axis_names}")
    return mesh


def _put(leaf, sharding: NamedSharding) -> jax.Array:
    """One leaf as a global array laid out by `sharding` (PRNG key arrays included)."""
    if jax.process_count() == 1:
        return jax.device_put(leaf, sharding)
    # Many hosts: every host holds the full (small) input; each builds only its devices' slices.
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(leaf)
        data = np.asarray(jax.random.key_data(leaf))
        raw = jax.make_array_from_callback(data.shape, sharding, lambda index: data[index])
        return jax.random.wrap_key_data(raw, impl=impl)
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_grid(tree: PyTree, mesh: Mesh | None = None) -> tuple[PyTree, int]:
    """Pads the leading grid axis to a multiple of the mesh size and shards it with ``P("grid")``.

    Args:
      tree: inputs of a vmapped sweep; every leaf has the grid as its leading axis (PRNG key arrays
        included).
      mesh: a mesh with a "grid" axis (default: :func:`grid_mesh` over all devices).

    Returns:
      The sharded tree and the original grid size (pass it to :func:`unpad`).
    """
    mesh = _grid_mesh_or_default(mesh)
    padded, size = pad_grid(tree, mesh.shape[GRID_AXIS])
    sharding = NamedSharding(mesh, P(GRID_AXIS))
    return jax.tree.map(lambda leaf: _put(leaf, sharding), padded), size


def replicate(tree: PyTree, mesh: Mesh | None = None) -> PyTree:
    """Every leaf whole on every device of `mesh` (``P()``): the shared inputs of a sharded sweep.

    On many hosts a jitted program may only mix global arrays, so shared inputs (a dataset every
    grid element reads, nβ per run) are placed like the sharded ones, from each host's own copy.
    """
    sharding = NamedSharding(_grid_mesh_or_default(mesh), P())
    return jax.tree.map(lambda leaf: _put(leaf, sharding), tree)


def map_grid(fn, mesh: Mesh, num_grid_args: int):
    """``fn`` run by every device on its own slice of the grid (``jax.shard_map``).

    The first `num_grid_args` arguments are sharded on their leading grid axis (padded to a multiple
    of the mesh size by :func:`shard_grid`), the rest are replicated (:func:`replicate`); every
    output leaf has the grid axis. Unlike a vmap left to GSPMD, `fn` sees only the local cells, so
    a ``lax.map`` over groups of cells inside it runs over each device's cells, not across devices.
    """
    mesh = _grid_mesh_or_default(mesh)

    def mapped(*args):
        specs = tuple(P(GRID_AXIS) if i < num_grid_args else P() for i in range(len(args)))
        return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(GRID_AXIS))(*args)

    return mapped


def unpad(tree: PyTree, size: int) -> PyTree:
    """Drops the padding added by :func:`shard_grid` (slices the leading axis to `size`)."""
    return jax.tree.map(lambda leaf: leaf[:size], tree)


def gather(tree: PyTree) -> PyTree:
    """Host copies of (possibly multi-host) global arrays, identical on every host."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def run_sharded(fn, *args, mesh: Mesh | None = None):
    """Calls ``fn(*args)`` (a jitted, vmapped sweep) with every arg's grid axis sharded over `mesh`,
    and returns its output unpadded. Args that are not arrays with the grid axis must be closed
    over."""
    sharded, size = shard_grid(args, mesh)
    return unpad(fn(*sharded), size)


__all__ = [
    "GRID_AXIS",
    "grid_mesh",
    "grid_size",
    "pad_grid",
    "shard_grid",
    "replicate",
    "map_grid",
    "unpad",
    "gather",
    "run_sharded",
]
