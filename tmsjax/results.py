"""One results layout for every experiment and sweep (docs/architecture.md, decision 5), written as
work finishes.

``--out DIR`` holds ``config.json`` (every setting plus library versions and the device),
``summary.json`` (small and readable), arrays as ``.npz`` and figures as PNG/GIF. Files are written
atomically (temp file + rename), so a crash or Ctrl-C never leaves a half-written result, and a
re-run with the same config finds what is done and skips it.
"""

import importlib.metadata
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Library versions and the device, recorded next to every result."""
    device = jax.devices()[0]
    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        **{name: _version(name) for name in ("jaxlib", "blackjax", "optax", "equinox", "numpyro")},
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "num_devices": jax.device_count(),
    }


def to_jsonable(value):
    """Converts numpy/jax scalars and arrays (and NaN) into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (jax.Array, np.ndarray)):
        return to_jsonable(np.asarray(value).tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ResultStore:
    """A results folder: config, summary, named arrays and figures, each written atomically.

    Args:
      root: the ``--out`` folder (created if missing).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name

    def write_json(self, name: str, data: dict) -> Path:
        text = json.dumps(to_jsonable(data), indent=2, sort_keys=False).encode()
        path = self.path(name)
        _atomic_write(path, lambda handle: handle.write(text))
        return path

    def read_json(self, name: str) -> dict | None:
        path = self.path(name)
        return json.loads(path.read_text()) if path.exists() else None

    def write_config(self, config: dict) -> None:
        """Records the settings; refuses to mix results of a different config in one folder."""
        settings = to_jsonable(config)
        previous = self.read_json("config.json")
        if previous is not None and previous.get("settings") != settings:
            old = previous.get("settings", {})
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(
                f"{self.root} holds results of another config (differs in {changed}); "
                "pass a new --out folder or delete the old one"
            )
        self.write_json("config.json", {"settings": settings, "environment": environment()})

    def write_summary(self, summary: dict) -> Path:
        return self.write_json("summary.json", summary)

    def has(self, name: str) -> bool:
        return self.path(name if name.endswith(".npz") else f"{name}.npz").exists()

    def save_arrays(self, name: str, **arrays) -> Path:
        path = self.path(name if name.endswith(".npz") else f"{name}.npz")
        host = {key: np.asarray(value) for key, value in arrays.items()}
        _atomic_write(path, lambda handle: np.savez(handle, **host))
        return path

    def load_arrays(self, name: str) -> dict[str, np.ndarray] | None:
        path = self.path(name if name.endswith(".npz") else f"{name}.npz")
        if not path.exists():
            return None
        with np.load(path) as data:
            return {key: data[key] for key in data.files}

    def save_figure(self, name: str, figure) -> Path:
        """Saves a matplotlib figure (PNG by default) and closes it."""
        import matplotlib.pyplot as plt

        path = self.path(name if "." in name else f"{name}.png")
        _atomic_write(
            path,
            lambda handle: figure.savefig(
                handle, format=path.suffix[1:], dpi=130, bbox_inches="tight"
            ),
        )
        plt.close(figure)
        return path


__all__ = ["ResultStore", "environment", "to_jsonable"]
