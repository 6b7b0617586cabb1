"""Test configuration: CPU only (eight forced host devices), float64 available per test.

Library code never flips the x64 flag; tests that need float64 use ``jax.enable_x64(True)``
(the `x64` fixture) so float32 tests keep exercising the float32 path.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Eight host devices let the sharding tests run a real Mesh on a CPU-only machine.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("MPLBACKEND", "Agg")

import zlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture
def key(request):
    """A PRNG key whose seed is printed on failure (derived from the test's name, not hunted
    for)."""
    seed = zlib.crc32(request.node.name.encode()) % (2**31)
    request.node.user_properties.append(("seed", seed))
    print(f"[key fixture] seed={seed}")
    return jax.random.key(seed)
