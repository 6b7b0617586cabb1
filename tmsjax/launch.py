r"""Many processes: start ``jax.distributed`` from the environment, then run a script.

A sharded sweep (:mod:`tmsjax.sharding`) runs unchanged on many processes once each of them has
called ``jax.distributed.initialize``: ``jax.devices()`` then lists every process's devices, the
grid mesh spans them all, and each process computes the cells its own devices hold. This module
only decides *how* to call it; jax does the rest (the coordinator, device discovery, and on CPU the
gloo collectives, jax's default ``jax_cpu_collectives_implementation``).

The call must come before anything starts jax's backend, and importing blackjax does (a default
argument computed with ``jnp`` at import), so before ``import tmsjax``. Hence a launcher, as
``torchrun`` is one: ``python -m tmsjax.launch [-n N] script.py [args]`` (or ``-m module``) runs the
script in a fresh interpreter that first calls :func:`initialize_from_env`, loading this file alone
(it imports only jax and the standard library). Scripts need no change.

- Local processes (one machine, CPU devices): ``-n N`` starts N copies with
  ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` set (:func:`run_local`).
- SLURM: without ``-n``, under ``srun``, each task calls ``jax.distributed.initialize()``, which
  reads the coordinator (first node of the step, port from the job id), the process count
  (``SLURM_NTASKS``) and id (``SLURM_PROCID``) from the ``SLURM_*`` variables.
- Neither: a single process; the script just runs.

Recipes, and what is sharded: docs/multihost.md.
"""

import argparse
import os
import runpy
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

import jax

#: Set by :func:`run_local` (or by hand) for each local process; jax itself reads only the address.
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"

# What srun exports to every task of a step; jax's SLURM detection needs all of them.
_SLURM_STEP = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
)


def initialize_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Calls ``jax.distributed.initialize`` when the environment describes several processes.

    It must run before anything starts jax's backend, which ``import tmsjax`` does: the launcher
    (:func:`launcher_command`) calls it before the script runs. In your own entry point, call
    ``jax.distributed.initialize`` yourself before importing tmsjax instead.

    Args:
      environ: the environment (default ``os.environ``).

    Returns:
      Whether jax.distributed was started (False: one process, nothing done).

    Raises:
      ValueError: if ``JAX_NUM_PROCESSES`` is set without ``JAX_PROCESS_ID`` or
        ``JAX_COORDINATOR_ADDRESS``.
    """
    environ = os.environ if environ is None else environ
    if ENV_NUM_PROCESSES in environ:
        num_processes = int(environ[ENV_NUM_PROCESSES])
        if num_processes <= 1:
            return False
        missing = [name for name in (ENV_PROCESS_ID, ENV_COORDINATOR) if name not in environ]
        if missing:
            raise ValueError(f"{ENV_NUM_PROCESSES}={num_processes} needs {' and '.join(missing)}")
        jax.distributed.initialize(
            coordinator_address=environ[ENV_COORDINATOR],
            num_processes=num_processes,
            process_id=int(environ[ENV_PROCESS_ID]),
        )
        return True
    if all(name in environ for name in _SLURM_STEP) and int(environ["SLURM_NTASKS"]) > 1:
        jax.distributed.initialize()  # jax reads the SLURM_* variables itself
        return True
    return False


def free_port() -> int:
    """A TCP port free on localhost now (for the coordinator of local processes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def local_env(
    process_id: int,
    num_processes: int,
    port: int,
    *,
    devices_per_process: int = 1,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of local process `process_id`: coordinator, count, id, and CPU devices.

    ``JAX_NUM_CPU_DEVICES`` sets the CPU devices per process; a forced device count in
    ``XLA_FLAGS`` (e.g. a test session's eight) is dropped so it cannot override it.
    """
    env = dict(os.environ if base is None else base)
    flags = [
        flag
        for flag in env.get("XLA_FLAGS", "").split()
        if not flag.startswith("--xla_force_host_platform_device_count")
    ]
    env["XLA_FLAGS"] = " ".join(flags)
    env.update(
        {
            ENV_COORDINATOR: f"localhost:{port}",
            ENV_NUM_PROCESSES: str(num_processes),
            ENV_PROCESS_ID: str(process_id),
            "JAX_PLATFORMS": "cpu",
            "JAX_NUM_CPU_DEVICES": str(devices_per_process),
        }
    )
    return env


# Loads this file as a standalone module (not through the tmsjax package, whose import starts jax's
# backend) and hands it the target.
_BOOTSTRAP = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_tmsjax_launch', sys.argv[1])\n"
    "launch = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(launch)\n"
    "launch._initialize_and_run(sys.argv[2:])\n"
)


def launcher_command(target: Sequence[str]) -> list[str]:
    """A command running `target` after :func:`initialize_from_env`, in a fresh interpreter.

    Args:
      target: ``["script.py", *args]`` or ``["-m", "package.module", *args]``, as after ``python``.
    """
    target = list(target)
    if not target or (target[0] == "-m" and len(target) < 2):
        raise ValueError(f"target must be a script or -m module, with arguments; got {target}")
    return [sys.executable, "-c", _BOOTSTRAP, os.path.abspath(__file__), *target]


def _initialize_and_run(target: list[str]) -> None:
    initialize_from_env()
    if target[0] == "-m":
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        # As `python script.py`: the script's folder first on the path, argv[0] the script.
        sys.argv = target
        sys.path[0] = os.path.dirname(os.path.abspath(target[0]))
        runpy.run_path(target[0], run_name="__main__")


def run_local(
    target: Sequence[str],
    num_processes: int,
    *,
    devices_per_process: int = 1,
    timeout: float | None = None,
    log_dir: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> list[int]:
    """Runs `num_processes` copies of `target` on this machine as one jax.distributed job on CPU.

    Each copy gets :func:`local_env` (one fresh coordinator port for all) and runs through
    :func:`launcher_command`. If one copy fails, the others are killed: they would otherwise wait
    for it until jax's heartbeat timeout.

    Args:
      target: ``["script.py", *args]`` or ``["-m", "package.module", *args]``.
      num_processes: how many copies (1: a plain single process).
      devices_per_process: CPU devices of each copy.
      timeout: seconds before every copy is killed and ``subprocess.TimeoutExpired`` raised.
      log_dir: if given, copy i writes its stdout and stderr to ``log_dir/process_{i}.log``;
        otherwise to this process's.
      env: base environment (default ``os.environ``).
      cwd: working directory of the copies.

    Returns:
      The exit codes, by process id (negative: killed by that signal).
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    command = launcher_command(target)
    port = free_port()
    logs = []
    processes = []
    start = time.monotonic()
    try:
        for process_id in range(num_processes):
            log = None
            if log_dir is not None:
                log = open(os.path.join(log_dir, f"process_{process_id}.log"), "w")
                logs.append(log)
            processes.append(
                subprocess.Popen(
                    command,
                    env=local_env(
                        process_id,
                        num_processes,
                        port,
                        devices_per_process=devices_per_process,
                        base=env,
                    ),
                    stdout=log,
                    stderr=subprocess.STDOUT if log is not None else None,
                    cwd=cwd,
                )
            )
        while True:
            codes = [process.poll() for process in processes]
            if all(code is not None for code in codes) or any(code for code in codes):
                break
            if timeout is not None and time.monotonic() - start > timeout:
                raise subprocess.TimeoutExpired(list(target), timeout)
            time.sleep(0.1)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        for log in logs:
            log.close()
    return [process.returncode for process in processes]


def _split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(launcher options, target): the target starts at ``-m``, at ``--`` or at the first
    positional, so its own options (``--out``) are left to it."""
    with_value = {"-n", "--num-processes", "--devices-per-process", "--timeout"}
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            return argv[:index], argv[index + 1 :]
        if token == "-m" or not token.startswith("-"):
            break
        index += 2 if token in with_value else 1
    return argv[:index], argv[index:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tmsjax.launch",
        usage="%(prog)s [-n N] [--devices-per-process D] [--timeout S] script.py|-m module [args]",
        description="Run a script (or -m module) with jax.distributed started first: as N local "
        "CPU processes with -n, else as this process (e.g. one srun task of a SLURM step).",
    )
    parser.add_argument("-n", "--num-processes", type=int, default=None)
    parser.add_argument("--devices-per-process", type=int, default=1, help="with -n")
    parser.add_argument("--timeout", type=float, default=None, help="seconds, with -n")
    options, target = _split_argv(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(options)
    if not target or target == ["-m"]:
        parser.error("give a script or -m module to run")
    if args.num_processes is None:
        # This interpreter has imported tmsjax (and started jax's backend): replace it by a fresh
        # one that initialises first.
        command = launcher_command(target)
        os.execv(command[0], command)
    codes = run_local(
        target,
        args.num_processes,
        devices_per_process=args.devices_per_process,
        timeout=args.timeout,
    )
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "initialize_from_env",
    "free_port",
    "local_env",
    "launcher_command",
    "run_local",
]
