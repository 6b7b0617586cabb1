r"""The settings of a λ̂ estimate: one validated, hashable value.

An estimate is set by the SGLD step size ε, the localization γ, the inverse temperature nβ of the
localized tempered posterior

.. math:: p(w) \propto \exp\!\Big(-n\beta\,L_n(w) - \frac{\gamma}{2}\lVert w - w^*\rVert^2\Big),

and by how the chains run: how many, how long, burn-in, thinning, minibatches, how each draw's
loss is measured, and the sampler. :class:`LLCSettings` holds all of them and checks them once,
when it is built (as optax hands over a ready GradientTransformation rather than its
hyperparameters), so the entry points of :mod:`tmsjax.llc.api` take one value instead of a dozen
keywords.

Its two parts play different roles in the compiled program. ε, γ and nβ are traced arguments (a
grid over them, or a new value, reuses the program); the rest fixes shapes and code, so it is the
static argument of the jit, :attr:`LLCSettings.chains` (a :class:`ChainSettings`).

The defaults are the paper's protocol (Chen et al. 2023, App. K; Lau et al. 2023): ε = 1e-3, γ = 1,
4 chains × 500 steps, no burn-in, full batch, :math:`n\beta = n/\log n`.
"""

import dataclasses
import math
from typing import Any

import numpy as np

from tmsjax.checks import check_positive_int
from tmsjax.sampling.sgld import SGLD

#: How each draw's loss is measured in minibatch mode (see :class:`LLCSettings`).
DRAW_LOSSES = ("full", "batch")


def _scalar(name: str, value) -> float:
    """A real number (Python or NumPy scalar, or a 0-d array), as a float; arrays are refused."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if array.ndim != 0:
        raise ValueError(f"{name} must be a scalar (sweep with llc_grid), got shape {array.shape}")
    return float(array)


def _check_sampler(sampler: Any, batch_size: int | None) -> None:
    if not (callable(getattr(sampler, "init", None)) and callable(getattr(sampler, "step", None))):
        raise ValueError(
            f"sampler must be an object with init and step methods (e.g. SGLD()), got {sampler!r}"
        )
    try:
        hash(sampler)
    except TypeError:
        raise ValueError(f"sampler must be hashable (frozen dataclass), got {sampler!r}") from None
    # An adjusted sampler (MALA) needs the exact log density: a minibatch MH ratio is not exact.
    if batch_size is not None and getattr(sampler, "requires_full_batch", False):
        raise ValueError(
            f"batch_size={batch_size}: {type(sampler).__name__} needs the full batch "
            "(batch_size=None); a Metropolis-Hastings ratio on a minibatch is not exact"
        )


@dataclasses.dataclass(frozen=True)
class ChainSettings:
    """The static part of :class:`LLCSettings`: what fixes the shapes and code of the program.

    Built by :attr:`LLCSettings.chains` (already validated); the core
    (:func:`tmsjax.llc.sample_llc`) reads only this, and takes ε, γ and nβ as traced arguments.

    Attributes:
      num_chains, num_steps, num_burnin, thinning, batch_size, draw_loss, sampler,
        trace_curvature: as in :class:`LLCSettings`.
    """

    num_chains: int = 4
    num_steps: int = 500
    num_burnin: int = 0
    thinning: int = 1
    batch_size: int | None = None
    draw_loss: str = "full"
    sampler: Any = SGLD()
    trace_curvature: bool = False

    @property
    def full_batch(self) -> bool:
        """Whether every step sees the whole dataset."""
        return self.batch_size is None

    @property
    def draw_mask(self) -> np.ndarray:
        """(num_steps,) bool: the steps kept as draws (after burn-in, every `thinning`-th)."""
        mask = np.zeros(self.num_steps, dtype=bool)
        mask[self.num_burnin :: self.thinning] = True
        return mask

    @property
    def num_draws(self) -> int:
        return len(range(self.num_burnin, self.num_steps, self.thinning))


@dataclasses.dataclass(frozen=True)
class LLCSettings:
    r"""Every setting of a λ̂ estimate, validated once when built; frozen and hashable.

    Attributes:
      step_size: the SGLD step ε (> 0). Too large biases λ̂ upward (the verdict "step size too
        large"); too small does not equilibrate in `num_steps` ("drifting").
      localization: γ ≥ 0, the strength of the Gaussian that keeps the chains near :math:`w^*`.
      nbeta: :math:`n\beta` (> 0); None means the paper's :math:`n/\log n`, with n read from the
        data (or the ``num_data`` of the entry point).
      num_chains: independent chains, all started at :math:`w^*`.
      num_steps: steps per chain, burn-in included.
      num_burnin: leading steps whose draws are discarded (< num_steps).
      thinning: keep every `thinning`-th step after burn-in as a draw.
      batch_size: minibatch size; None for full batch (every step sees the whole dataset).
      draw_loss: "full" measures each draw's loss on the whole dataset (exact; in minibatch mode one
        more loss evaluation per draw); "batch" uses the step's minibatch loss (devinterp's choice).
        Full-batch mode measures every draw on the whole dataset either way.
      sampler: the sampler object (its options travel with it): :class:`~tmsjax.sampling.sgld.SGLD`
        (default), :class:`~tmsjax.sampling.psgld.RMSPropSGLD` (devinterp's ``rmsprop_sgld``) or
        :class:`~tmsjax.sampling.mala.MALA` (exact for any ε; full batch only).
      trace_curvature: measure :math:`\Delta(n\beta L_n)` at the draws (one Hessian-vector
        product each, Hutchinson; at most a quarter of the steps) so that the SGLD step-bias
        estimate includes its covariance term (:mod:`tmsjax.llc.health`; exact to first order
        beyond Gaussians). Off by default: it makes the program larger (an equinox MLP's estimate
        compiled in 18 s instead of 11 s) and the first term alone is exact for Gaussians;
        :func:`tmsjax.llc.auto_calibrate` turns it on.

    Raises:
      ValueError: naming the bad field.

    Examples:
      >>> LLCSettings().num_steps, LLCSettings(step_size=1e-4).step_size
      (500, 0.0001)
      >>> LLCSettings(num_burnin=500)
      Traceback (most recent call last):
      ...
      ValueError: num_burnin=500 leaves no draws out of num_steps=500
    """

    step_size: float = 1e-3
    localization: float = 1.0
    nbeta: float | None = None
    num_chains: int = 4
    num_steps: int = 500
    num_burnin: int = 0
    thinning: int = 1
    batch_size: int | None = None
    draw_loss: str = "full"
    sampler: Any = SGLD()
    trace_curvature: bool = False

    def __post_init__(self):
        # Normalised types (int, float) make equal settings hash equal, whatever types they came in.
        def set_field(name, value):
            object.__setattr__(self, name, value)

        step_size = _scalar("step_size", self.step_size)
        if not (math.isfinite(step_size) and step_size > 0):
            raise ValueError(f"step_size must be finite and positive, got {self.step_size!r}")
        localization = _scalar("localization", self.localization)
        if not (math.isfinite(localization) and localization >= 0):
            raise ValueError(f"localization must be finite and >= 0, got {self.localization!r}")
        if self.nbeta is not None:
            nbeta = _scalar("nbeta", self.nbeta)
            if not (math.isfinite(nbeta) and nbeta > 0):
                raise ValueError(f"nbeta must be finite and positive (or None), got {self.nbeta!r}")
            set_field("nbeta", nbeta)
        set_field("step_size", step_size)
        set_field("localization", localization)
        for name in ("num_chains", "num_steps", "thinning"):
            set_field(name, check_positive_int(name, getattr(self, name)))
        if self.num_burnin != 0:
            try:
                check_positive_int("num_burnin", self.num_burnin)
            except ValueError:
                message = f"num_burnin must be a non-negative integer, got {self.num_burnin!r}"
                raise ValueError(message) from None
        set_field("num_burnin", int(self.num_burnin))
        if self.num_burnin >= self.num_steps:
            raise ValueError(
                f"num_burnin={self.num_burnin} leaves no draws out of num_steps={self.num_steps}"
            )
        if self.batch_size is not None:
            set_field("batch_size", check_positive_int("batch_size", self.batch_size))
        if self.draw_loss not in DRAW_LOSSES:
            raise ValueError(f"draw_loss must be one of {DRAW_LOSSES}, got {self.draw_loss!r}")
        _check_sampler(self.sampler, self.batch_size)
        if not isinstance(self.trace_curvature, (bool, np.bool_)):
            raise ValueError(f"trace_curvature must be a bool, got {self.trace_curvature!r}")
        set_field("trace_curvature", bool(self.trace_curvature))

    @property
    def chains(self) -> ChainSettings:
        """The static part (everything but ε, γ, nβ): the jit's static argument."""
        return ChainSettings(
            self.num_chains,
            self.num_steps,
            self.num_burnin,
            self.thinning,
            self.batch_size,
            self.draw_loss,
            self.sampler,
            self.trace_curvature,
        )

    @property
    def num_draws(self) -> int:
        """Draws per chain: the steps after burn-in, thinned."""
        return self.chains.num_draws

    def replace(self, **changes) -> "LLCSettings":
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as JSON-ready values (the sampler as its repr), for config and summaries."""
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return fields | {"sampler": repr(self.sampler)}


__all__ = ["ChainSettings", "DRAW_LOSSES", "LLCSettings"]
