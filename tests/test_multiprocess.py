"""Many processes: the sharded sweeps as a 2-process jax.distributed job on CPU equal one process.

tests/multiprocess_worker.py runs NUTS over an (n, chain) grid and λ̂ along training, each sharded
over the global mesh, launched by ``tmsjax.launch`` twice, side by side: as 2 processes of 1 CPU
device each (gloo collectives between them), and as 1 process of 2 CPU devices. The two meshes
have the same size, so every device runs the same compiled program on the same cells, and the
results must be bitwise equal: a tolerance would hide a rounding-level bug, and there is no
rounding to allow for. (Against the *unsharded* call, whose vmaps are wider, NUTS agrees only to
rounding that its discrete tree decisions can amplify; tests/test_nuts.py checks that in float64,
and tests/test_sharding.py checks that λ̂ along training is bitwise unchanged by a mesh.)
"""

import concurrent.futures
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from jax._src import lib as jax_lib

from tmsjax import launch

WORKER = pathlib.Path(__file__).with_name("multiprocess_worker.py")
ROOT = WORKER.parents[1]
NUM_CELLS = 9  # both grids of the worker: 3 × 3, odd so 2 devices pad them
TIMEOUT = 600  # seconds; a healthy run takes ~1-2 minutes on 2 busy cores


def _has_gloo_cpu_collectives() -> bool:
    """Whether this jaxlib can run collectives between CPU processes (jax's default: gloo)."""
    return hasattr(getattr(jax_lib, "_jax", None), "make_gloo_tcp_collectives")


def _run(name: str, tmp_path: pathlib.Path, num_processes: int, devices_per_process: int):
    folder = tmp_path / name
    folder.mkdir()
    codes = launch.run_local(
        [str(WORKER), str(folder / "out.npz")],
        num_processes,
        devices_per_process=devices_per_process,
        timeout=TIMEOUT,
        log_dir=folder,
        cwd=ROOT,
    )
    logs = "\n".join(
        f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(folder.glob("*.log"))
    )
    assert codes == [0] * num_processes, f"{name}: exit codes {codes}\n{logs}"
    return dict(np.load(folder / "out.npz"))


@pytest.mark.slow
@pytest.mark.skipif(
    not _has_gloo_cpu_collectives(),
    reason="this jaxlib has no gloo CPU collectives: CPU processes cannot form one jax job",
)
def test_two_processes_equal_one_process(tmp_path):
    # Side by side: the two jobs share no state (separate interpreters, separate coordinators).
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        job = pool.submit(_run, "two_processes", tmp_path, 2, 1)
        reference = pool.submit(_run, "one_process", tmp_path, 1, 2)
        sharded, single = job.result(), reference.result()

    assert (int(sharded["process_count"]), int(sharded["device_count"])) == (2, 2)
    assert (int(single["process_count"]), int(single["device_count"])) == (1, 2)
    names = sorted(set(sharded) - {"process_count", "device_count"})
    assert {"nuts_W", "nuts_step_size", "llc", "llc_loss_trace"} <= set(names)
    assert names == sorted(set(single) - {"process_count", "device_count"})
    for name in names:
        cells = sharded[name].reshape(NUM_CELLS, -1)  # λ̂ leads with (run, checkpoint): 3 × 3
        # Each cell has its own key, data or start: a dropped cell (padding shown in its place)
        # or a duplicated one would make two cells equal.
        assert len(np.unique(cells, axis=0)) == NUM_CELLS, name
        assert np.all(np.isfinite(cells)), name
        np.testing.assert_array_equal(sharded[name], single[name], err_msg=name)


def test_local_env_sets_the_job_and_drops_a_forced_device_count():
    base = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_cpu_foo=1", "A": "b"}
    env = launch.local_env(1, 3, 1234, devices_per_process=2, base=base)
    assert env["JAX_COORDINATOR_ADDRESS"] == "localhost:1234"
    assert (env["JAX_NUM_PROCESSES"], env["JAX_PROCESS_ID"]) == ("3", "1")
    assert (env["JAX_PLATFORMS"], env["JAX_NUM_CPU_DEVICES"]) == ("cpu", "2")
    assert env["XLA_FLAGS"] == "--xla_cpu_foo=1" and env["A"] == "b"


def test_initialize_from_env_does_nothing_for_one_process():
    assert launch.initialize_from_env({}) is False
    assert launch.initialize_from_env({"JAX_NUM_PROCESSES": "1"}) is False
    slurm_one_task = dict.fromkeys(launch._SLURM_STEP, "0") | {"SLURM_NTASKS": "1"}
    assert launch.initialize_from_env(slurm_one_task) is False
    with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
        launch.initialize_from_env({"JAX_NUM_PROCESSES": "2", "JAX_COORDINATOR_ADDRESS": "x:1"})


def _without_bootstrap(monkeypatch):
    """run_local's supervision alone: targets run as plain scripts, jax.distributed not started."""
    monkeypatch.setattr(launch, "launcher_command", lambda target: [sys.executable, *target])


def test_run_local_kills_the_rest_when_one_process_fails(tmp_path, monkeypatch):
    _without_bootstrap(monkeypatch)
    script = tmp_path / "fail.py"  # process 0 fails at once; process 1 would wait for it forever
    script.write_text(
        "import os, time\n"
        "if os.environ['JAX_PROCESS_ID'] == '0':\n"
        "    raise SystemExit(3)\n"
        "time.sleep(600)\n"
    )
    codes = launch.run_local([str(script)], 2, timeout=60, log_dir=tmp_path)
    assert codes[0] == 3 and codes[1] < 0  # killed


def test_run_local_times_out(tmp_path, monkeypatch):
    _without_bootstrap(monkeypatch)
    script = tmp_path / "sleep.py"
    script.write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        launch.run_local([str(script)], 2, timeout=1, log_dir=tmp_path)


@pytest.mark.parametrize(
    "argv, options, target",
    [
        (["-n", "2", "run.py", "--out", "x"], ["-n", "2"], ["run.py", "--out", "x"]),
        (
            ["--timeout", "9", "-m", "pkg.mod", "-n", "1"],
            ["--timeout", "9"],
            ["-m", "pkg.mod", "-n", "1"],
        ),
        (["-n", "2", "--", "run.py"], ["-n", "2"], ["run.py"]),
        (["run.py"], [], ["run.py"]),
    ],
)
def test_launcher_leaves_the_targets_options_to_it(argv, options, target):
    assert launch._split_argv(argv) == (options, target)
