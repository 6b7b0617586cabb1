r"""Localized, tempered stochastic-gradient Langevin dynamics (SGLD) for any loss of a pytree.

The target is the localized tempered posterior around a centre :math:`w^*` (Lau et al. 2023,
eq. (9)),

.. math:: p(w) \propto \exp\!\Big(-n\beta\,L_n(w) - \frac{\gamma}{2}\lVert w - w^*\rVert^2\Big),

and one step (Welling & Teh 2011, with the localization term of Lau et al.) is

.. math:: w_{t+1} = w_t + \frac{\epsilon}{2}\Big(-n\beta\,\nabla L_m(w_t) - \gamma\,(w_t - w^*)\Big)
          + \sqrt{\epsilon}\,\eta_t, \qquad \eta_t \sim N(0, I),

with :math:`L_m` the loss on the step's batch (the full dataset in full-batch mode). The position
update is blackjax's Euler solver of the overdamped Langevin diffusion
(:func:`blackjax.sgmcmc.diffusions.overdamped_langevin`, which steps
:math:`w + h\nabla\log p + \sqrt{2h}\,\eta`) with :math:`h = \epsilon/2`. The rest is a small
kernel of our own instead of :func:`blackjax.sgld`, for three reasons: (1) blackjax's kernel returns
only the new position, while the LLC needs the loss of every draw, which the gradient computation
yields for free; (2) in full-batch mode the state carries the loss and gradient at the current
position, so each step costs one gradient evaluation and the MALA acceptance estimate below comes
at no extra cost; (3) the centre :math:`w^*`, :math:`n\beta`, ε and γ stay traced arguments, so a
grid over them or over many centres (runs × checkpoints) vmaps in one compiled program.

**The sampler interface.** The λ̂ engine (:mod:`tmsjax.llc`) takes its sampler as a small hashable
object, here :class:`SGLD`, and calls two methods of it:

- ``init(position, batch, *, loss_fn, full_batch) -> state``: one chain's state, a NamedTuple whose
  first fields are ``position``, ``loss`` and ``grad`` (a preconditioned sampler adds its own
  per-chain fields after them, e.g. a running average of squared gradients);
- ``step(key, state, batch, center, nbeta, step_size, localization, *, loss_fn, full_batch)
  -> (state, StepInfo)``: one transition, every argument but `loss_fn` and `full_batch` traceable.

A sampler is a frozen dataclass of its own static options (compared by class and value, so two
samplers with equal options share a compiled program and two different samplers never do).

**Acceptance estimate.** SGLD never rejects, but the Metropolis–Hastings ratio it *would* have (the
MALA ratio on the same batch) measures the discretisation error: with
:math:`\log p(w) = -n\beta L_m(w) - \frac\gamma2\lVert w - w^*\rVert^2` and
:math:`q(w'\mid w) = N(w';\ w + \frac\epsilon2\nabla\log p(w),\ \epsilon I)`,

.. math:: \alpha = \min\Big(1,\ \frac{p(w')\,q(w\mid w')}{p(w)\,q(w'\mid w)}\Big).

A mean α well below 1 means ε is too large for the local curvature, which biases λ̂ upward.

References:
  Welling, Teh, "Bayesian learning via stochastic gradient Langevin dynamics", ICML 2011.
  Lau, Furman, Wang, Murfet, Wei, "The local learning coefficient: a singularity-aware complexity
  measure" (2023), arXiv:2308.12108.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.sgmcmc.diffusions import overdamped_langevin

from tmsjax.types import Array, Bool, Float, PRNGKey, PyTree

LossFn = Callable[[PyTree, Any], Float[Array, ""]]


class SGLDState(NamedTuple):
    """State of one chain.

    Attributes:
      position: the current parameters w (any pytree).
      loss: :math:`L_m(w)` on the batch the gradient was taken on (full-batch: :math:`L_n(w)`).
      grad: :math:`\\nabla L_m(w)` on that batch, same pytree as `position`.
    """

    position: PyTree
    loss: Float[Array, ""]
    grad: PyTree


class StepInfo(NamedTuple):
    """Per-step diagnostics (the same for every sampler of the λ̂ engine).

    Attributes:
      loss: the batch loss at the *new* position (full-batch: :math:`L_n(w_{t+1})`); NaN in
        minibatch mode without the acceptance estimate, where it is not computed.
      batch_loss: the loss at the *pre-step* position on this step's batch (what devinterp records).
      acceptance: the MALA acceptance probability the step would have had (NaN when not estimated).
      is_finite: False once the position or loss is NaN/inf; the chain has blown up.
    """

    loss: Float[Array, ""]
    batch_loss: Float[Array, ""]
    acceptance: Float[Array, ""]
    is_finite: Bool[Array, ""]


def _sum_squares(tree: PyTree) -> Float[Array, ""]:
    return sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(tree))


def _tree_difference(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(lambda x, y: x - y, a, b)


def localized_log_density(
    loss: Float[Array, ""], position: PyTree, center: PyTree, nbeta, localization
):
    r""":math:`\log p(w) = -n\beta L(w) - \frac{\gamma}{2}\lVert w - w^*\rVert^2` + constant."""
    return -nbeta * loss - 0.5 * localization * _sum_squares(_tree_difference(position, center))


def _drift(grad: PyTree, position: PyTree, center: PyTree, nbeta, localization) -> PyTree:
    r""":math:`\nabla \log p(w) = -n\beta\nabla L(w) - \gamma (w - w^*)`."""
    return jax.tree.map(lambda g, w, c: -nbeta * g - localization * (w - c), grad, position, center)


def init(position: PyTree, loss_fn: LossFn, batch: Any) -> SGLDState:
    """Starts a chain at `position` (usually the centre w*): the loss and gradient on `batch`."""
    loss, grad = jax.value_and_grad(loss_fn)(position, batch)
    return SGLDState(position, loss, grad)


def build_kernel(loss_fn: LossFn, *, full_batch: bool = True, estimate_acceptance: bool = True):
    r"""Builds the localized tempered SGLD transition kernel.

    Args:
      loss_fn: ``loss_fn(position, batch) -> scalar``, the loss :math:`L` of a parameter pytree on a
        batch of data (any pytree; ``None`` for a population potential).
      full_batch: True when every step sees the same batch (the whole dataset). Then the state's
        loss and gradient are reused: one gradient evaluation per step, and the next step's
        gradient doubles as the acceptance estimate's. False re-evaluates the gradient on each new
        batch.
      estimate_acceptance: in minibatch mode, spend a second gradient evaluation per step (at the
        new position, same batch) on the MALA acceptance estimate. Always on in full-batch mode.

    Returns:
      ``kernel(key, state, batch, center, nbeta, step_size, localization) -> (state, StepInfo)``;
      every argument may be traced (vmap over chains, centres, or a grid of ε, γ, nβ).
    """
    value_and_grad = jax.value_and_grad(loss_fn)
    langevin = overdamped_langevin()

    def kernel(
        key: PRNGKey, state: SGLDState, batch: Any, center: PyTree, nbeta, step_size, localization
    ) -> tuple[SGLDState, StepInfo]:
        position = state.position
        if full_batch:
            loss, grad = state.loss, state.grad
        else:
            loss, grad = value_and_grad(position, batch)
        drift = _drift(grad, position, center, nbeta, localization)
        # blackjax steps w + h ∇log p + sqrt(2h) η; h = ε/2 gives the ε-convention of Welling & Teh.
        new_position = langevin(key, position, drift, 0.5 * step_size)

        if full_batch or estimate_acceptance:
            new_loss, new_grad = value_and_grad(new_position, batch)
            new_drift = _drift(new_grad, new_position, center, nbeta, localization)

            # log q(b | a) = -|b - a - (ε/2) drift(a)|² / (2ε), the Langevin proposal density.
            def residual(to, frm, d):
                return to - frm - 0.5 * step_size * d

            forward = _sum_squares(jax.tree.map(residual, new_position, position, drift))
            backward = _sum_squares(jax.tree.map(residual, position, new_position, new_drift))
            log_ratio = (
                localized_log_density(new_loss, new_position, center, nbeta, localization)
                - localized_log_density(loss, position, center, nbeta, localization)
                + (forward - backward) / (2 * step_size)
            )
            # A NaN ratio (blown-up chain) counts as a rejection: it must not look healthy.
            acceptance = jnp.where(jnp.isnan(log_ratio), 0.0, jnp.exp(jnp.minimum(log_ratio, 0.0)))
        else:
            new_loss, new_grad = jnp.full_like(loss, jnp.nan), grad
            acceptance = jnp.full_like(loss, jnp.nan)

        leaves = jax.tree.leaves(new_position)
        is_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        is_finite = is_finite & jnp.isfinite(loss)
        if full_batch or estimate_acceptance:
            is_finite = is_finite & jnp.isfinite(new_loss)
        info = StepInfo(new_loss, loss, acceptance, is_finite)
        return SGLDState(new_position, new_loss, new_grad), info

    return kernel


@dataclasses.dataclass(frozen=True)
class SGLD:
    r"""Localized tempered SGLD as the λ̂ engine's sampler (see the module docstring).

    Attributes:
      estimate_acceptance: in minibatch mode, spend a second gradient evaluation per step (at the
        new position, same batch) on the MALA acceptance estimate. Full-batch mode always has it,
        for free.

    Examples:
      >>> from tmsjax.llc import LLCSettings
      >>> LLCSettings(batch_size=64, sampler=SGLD(estimate_acceptance=False)).sampler
      SGLD(estimate_acceptance=False)
    """

    estimate_acceptance: bool = True
    #: The λ̂ engine estimates this sampler's discretisation bias from the full-data gradient at the
    #: draws (:mod:`tmsjax.llc.health`): the Euler bias formula is plain SGLD's.
    estimates_bias: ClassVar[bool] = True

    def __post_init__(self):
        if not isinstance(self.estimate_acceptance, (bool, np.bool_)):
            value = self.estimate_acceptance
            raise ValueError(f"estimate_acceptance must be True or False, got {value!r}")
        object.__setattr__(self, "estimate_acceptance", bool(self.estimate_acceptance))

    def init(
        self, position: PyTree, batch: Any, *, loss_fn: LossFn, full_batch: bool = True
    ) -> SGLDState:
        """A chain at `position`. Full batch: the loss and gradient on `batch` (reused by the first
        step). Minibatch: placeholders of the right shapes (each step evaluates its own batch)."""
        if full_batch:
            return init(position, loss_fn, batch)
        # The placeholder loss must carry the loss's dtype: the scan carry keeps its type.
        dtype = jax.eval_shape(loss_fn, position, batch).dtype
        return SGLDState(position, jnp.zeros((), dtype), position)

    def step(
        self,
        key: PRNGKey,
        state: SGLDState,
        batch: Any,
        center: PyTree,
        nbeta,
        step_size,
        localization,
        *,
        loss_fn: LossFn,
        full_batch: bool = True,
    ) -> tuple[SGLDState, StepInfo]:
        """One SGLD transition (:func:`build_kernel`'s kernel)."""
        kernel = build_kernel(
            loss_fn, full_batch=full_batch, estimate_acceptance=self.estimate_acceptance
        )
        return kernel(key, state, batch, center, nbeta, step_size, localization)


__all__ = ["SGLD", "SGLDState", "StepInfo", "init", "build_kernel", "localized_log_density"]
