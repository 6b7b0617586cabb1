"""One skeleton for every experiment: the base flags, one preset mechanism, and calling one
experiment from another without an argv.

An experiment module defines

- ``PRESETS``: ``{"smoke": {...}, "cpu": {...}, "paper": {...}}``, values for the arguments it
  leaves at None (``smoke`` runs in seconds for the tests, ``cpu`` is the default, ``paper`` is
  paper scale for a GPU);
- ``add_arguments(parser)``: its own flags (default None where a preset fills them);
- optionally ``check(args)``: raises ValueError naming a bad flag;
- ``main(args) -> dict``: runs it and returns its summary.

Every experiment gets ``--out``, ``--preset``, ``--smoke`` (= ``--preset smoke``), ``--seed`` and
``--no-progress`` from :func:`base_parser`; ``args.progress`` is set for the code. The command line
goes through :func:`parse_args`; another experiment (or the reproduction) builds the same arguments
with :func:`configure`, passing typed values, and calls ``module.main`` directly.
"""

import argparse
import sys
from types import ModuleType

PRESET_NAMES = ("smoke", "cpu", "paper")


def base_parser(module: ModuleType) -> argparse.ArgumentParser:
    """The flags every experiment shares, then the module's own (``module.add_arguments``)."""
    presets = module.PRESETS
    missing = set(PRESET_NAMES) - set(presets)
    if missing:
        raise ValueError(f"{module.__name__}.PRESETS lacks {sorted(missing)}")
    parser = argparse.ArgumentParser(
        prog=f"python -m {module.__name__}",
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output folder (re-running resumes)")
    parser.add_argument(
        "--preset",
        choices=sorted(presets),
        default="cpu",
        help="sizes: smoke (seconds), cpu (default, minutes), paper (paper scale, GPU)",
    )
    parser.add_argument("--smoke", action="store_true", help="same as --preset smoke")
    parser.add_argument("--seed", type=int, default=0, help="root PRNG seed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    return parser


def finish(module: ModuleType, args: argparse.Namespace) -> argparse.Namespace:
    """Fills every argument left at None from the chosen preset, then checks the result."""
    if args.smoke:
        args.preset = "smoke"
    args.smoke = args.preset == "smoke"
    args.progress = not args.no_progress
    for name, value in module.PRESETS[args.preset].items():
        if not hasattr(args, name):
            raise ValueError(
                f"{module.__name__}.PRESETS[{args.preset!r}] sets unknown argument {name!r}"
            )
        if getattr(args, name) is None:
            setattr(args, name, value)
    if hasattr(module, "check"):
        module.check(args)
    return args


def parse_args(module: ModuleType, argv=None) -> argparse.Namespace:
    """The command line of `module` (``sys.argv`` by default), preset filled and checked."""
    parser = base_parser(module)
    args = parser.parse_args(argv)
    try:
        return finish(module, args)
    except ValueError as error:
        parser.error(str(error))


def configure(module: ModuleType, out, *, preset: str = "cpu", **overrides) -> argparse.Namespace:
    """The arguments `module.main` takes, built without a command line.

    The parser's defaults, then `overrides` (typed values, named as the attributes of ``args``: e.g.
    ``num_warmup=300``), then the preset for whatever is still None.

    Raises:
      ValueError: for an unknown override name or preset.
    """
    parser = base_parser(module)
    if preset not in module.PRESETS:
        raise ValueError(f"preset must be one of {sorted(module.PRESETS)}, got {preset!r}")
    args = parser.parse_args(["--out", str(out), "--preset", preset])
    for name, value in overrides.items():
        if not hasattr(args, name):
            raise ValueError(f"{module.__name__} has no argument {name!r}")
        setattr(args, name, value)
    return finish(module, args)


def settings(args: argparse.Namespace) -> dict:
    """Every setting of a run, for ``config.json`` (without the output folder and display flags)."""
    return {
        k: v for k, v in vars(args).items() if k not in ("out", "no_progress", "progress", "smoke")
    }


def run_module(module: ModuleType) -> dict:
    """The ``if __name__ == "__main__"`` body of every experiment."""
    return module.main(parse_args(module, sys.argv[1:]))
