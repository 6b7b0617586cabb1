r"""RMSProp-preconditioned SGLD (pSGLD) for the λ̂ engine, as devinterp's ``rmsprop_sgld``.

The target is the localized tempered posterior of :mod:`tmsjax.sampling.sgld`,
:math:`p(w) \propto \exp(-n\beta L_n(w) - \frac\gamma2\lVert w - w^*\rVert^2)`. One step, with
:math:`g_t = \nabla L_m(w_t)` the gradient of the *loss* on the step's batch (not of
:math:`\log p`: the running average sees neither nβ nor the localization, as in devinterp), is

.. math::
    V_t &= \alpha V_{t-1} + (1 - \alpha)\, g_t \odot g_t, \qquad V_{-1} = 0, \\
    G_t &= 1 / (\sqrt{V_t} + \delta) \quad\text{(elementwise)}, \\
    w_{t+1} &= w_t + \frac{\epsilon}{2}\, G_t \odot \big(-n\beta\, g_t - \gamma (w_t - w^*)\big)
              + \sqrt{\epsilon\, G_t} \odot \eta_t, \qquad \eta_t \sim N(0, I).

With :math:`G \equiv 1` this is the SGLD step of :mod:`tmsjax.sampling.sgld` (same ε convention).
A diagonal preconditioner rescales each coordinate's step: along an axis of curvature :math:`k_i`
of :math:`-\log p` the Euler chain has the effective step :math:`h_i = \epsilon G_i k_i` (stable for
:math:`h_i < 4`; its stationary variance is inflated by :math:`1 / (1 - h_i/4)`). Near a
minimum :math:`\sqrt{V_i}` tracks :math:`|\partial_i L|`, which grows with the curvature, so the
stiff axes get small :math:`G_i` and the soft ones large: the spread of :math:`h_i`, and with it
the trade-off between bias along stiff axes and slow mixing along soft ones, shrinks. Hitchcock &
Hoogland (2025) found this the most reliable of the local samplers they compared for λ̂.

**Conventions, as devinterp's** ``SGMCMC.rmsprop_sgld`` (``RMSpropPreconditioner``,
``devinterp/optim/preconditioner.py`` and ``sgmcmc.py``): V starts at zero and is updated with the
current gradient *before* it is used; no bias correction of V (unlike Adam); δ (devinterp's and
torch's ``eps``, default 0.1) is added to :math:`\sqrt V`, not under the root; the preconditioner
multiplies the gradient and the localization term alike, and its square root the noise; defaults
α = 0.99, δ = 0.1. Li et al. (2016) write the same with :math:`\lambda` for δ and the noise
variance :math:`\epsilon G`.

**The Γ term is dropped, and what that costs.** For a position-dependent preconditioner the exact
Langevin drift has an extra term :math:`\Gamma_i(w) = \sum_j \partial G_{ij}/\partial w_j`. Li et
al. (2016) drop it (V moves by a fraction :math:`1-\alpha` per step, and it would need the Hessian
diagonal); devinterp drops it too (its ``add_grad_correction=True`` raises NotImplementedError), and
so do we. The argument holds where a coordinate mixes faster than V forgets (about
:math:`1/(1-\alpha)` steps). Along a soft axis that mixes *slower*, V follows the current position,
:math:`G_i \approx 1/(|\partial_i L(w)| + \delta)`, and the uncorrected diffusion samples
:math:`\propto p(w)/G(w)`, not p: heavier tails, λ̂ biased upward. On a full-batch quadratic with
curvatures over three decades, devinterp's α = 0.99 overestimates λ by 25–35 % (measured in
tests/test_samplers.py). In minibatch mode gradient noise enters V as well, which may loosen the
link between V and w (not measured here). Two remedies: α closer to 1, or ``adapt_steps``: V is
updated for the first `adapt_steps` steps of each chain and then frozen, a fixed diagonal metric
for which the chain is exact up to the Euler error (what the acceptance estimate measures). Keep
``adapt_steps`` below ``num_burnin``, with burn-in to spare for the soft axes to relax under the
frozen metric.

**Starting at a minimum.** At :math:`w^*` the gradient is zero, so the first step has
:math:`G = 1/\delta` (10 with the default δ) and overshoots along stiff axes (on the quadratic of
tests/test_samplers.py, nβL jumps to 5–10 times its stationary mean); V then needs about
:math:`1/(1-\alpha)` steps to settle. The burn-in absorbs this transient.

**Acceptance estimate.** As for SGLD (:mod:`tmsjax.sampling.sgld`): the Metropolis–Hastings
ratio this step would have as a preconditioned MALA step with the step's :math:`G` held fixed,

.. math:: q(w'\mid w) = N\big(w';\ w + \tfrac\epsilon2 G\odot\nabla\log p(w),\
          \epsilon\,\mathrm{diag}(G)\big).

A mean well below 1 means ε is too large for the curvature in the preconditioned metric.

References:
  Li, Chen, Carlson, Carin, "Preconditioned stochastic gradient Langevin dynamics for deep neural
  networks", AAAI 2016, arXiv:1512.07666.
  Hitchcock, Hoogland, "From global to local: a scalable benchmark for local posterior sampling"
  (2025), arXiv:2507.21449.
  devinterp (Timaeus), ``SGMCMC.rmsprop_sgld``, https://github.com/timaeus-research/devinterp.
"""

import dataclasses
import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.util import generate_gaussian_noise

from tmsjax.checks import check_nonnegative_int
from tmsjax.sampling.sgld import LossFn, StepInfo, _drift, localized_log_density
from tmsjax.types import Array, Float, Int, PRNGKey, PyTree


class RMSPropSGLDState(NamedTuple):
    r"""State of one chain (the engine's three fields, then the preconditioner's).

    Attributes:
      position: the current parameters w (any pytree).
      loss: :math:`L_m(w)` on the batch the gradient was taken on (full-batch: :math:`L_n(w)`).
      grad: :math:`\nabla L_m(w)` on that batch, same pytree as `position`.
      square_avg: V, the running average of :math:`(\nabla L_m)^2` (devinterp's and torch's
        ``square_avg``), same pytree as `position`; zero at the start.
      count: steps taken so far (frozen V after ``adapt_steps`` of them).
    """

    position: PyTree
    loss: Float[Array, ""]
    grad: PyTree
    square_avg: PyTree
    count: Int[Array, ""]


def _sum(tree: PyTree) -> Float[Array, ""]:
    return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(tree))


def _all_finite(tree: PyTree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _real(name: str, value, requirement: str) -> float:
    """`value` as a float; a ValueError naming `name` unless it is a real number (not a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {requirement}, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class RMSPropSGLD:
    r"""RMSProp-preconditioned localized tempered SGLD (pSGLD) as the λ̂ engine's sampler.

    The update (module docstring; ε, γ, nβ come from :class:`~tmsjax.llc.LLCSettings`):

    .. math:: V \leftarrow \alpha V + (1-\alpha) g^2,\quad G = \frac{1}{\sqrt V + \delta},\quad
              w \leftarrow w + \frac\epsilon2 G\odot\big(-n\beta g - \gamma(w - w^*)\big)
              + \sqrt{\epsilon G}\odot\eta.

    Attributes:
      alpha: α, the decay of the running average of squared gradients, in [0, 1] (devinterp's
        default 0.99: V averages about the last 100 steps). α = 1 freezes V at zero, a constant
        preconditioner 1/δ.
      eps: δ > 0, added to :math:`\sqrt V` (devinterp's default 0.1); it caps the preconditioner at
        1/δ where the gradient is small. Not the step size ε. Since δ is absolute, how much a
        coordinate is preconditioned depends on the scale of the loss's gradient.
      adapt_steps: None (devinterp): V is updated at every step. An integer ≥ 0: V is updated
        during each chain's first `adapt_steps` steps only, then frozen (a fixed metric: no
        bias from the dropped Γ term; module docstring). Keep it below ``num_burnin``.
      estimate_acceptance: in minibatch mode, spend a second gradient evaluation per step on the
        acceptance estimate (as :class:`~tmsjax.sampling.sgld.SGLD`); full batch always has it.

    Examples:
      >>> from tmsjax.llc import LLCSettings
      >>> LLCSettings(step_size=1e-4, sampler=RMSPropSGLD(alpha=0.9)).sampler
      RMSPropSGLD(alpha=0.9, eps=0.1, adapt_steps=None, estimate_acceptance=True)
    """

    alpha: float = 0.99
    eps: float = 0.1
    adapt_steps: int | None = None
    estimate_acceptance: bool = True

    def __post_init__(self):
        # Plain floats, so that equal options hash equal whatever type they came in (jit cache).
        alpha = _real("alpha", self.alpha, "a number in [0, 1]")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be a number in [0, 1], got {self.alpha!r}")
        eps = _real("eps", self.eps, "finite and positive")
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be finite and positive, got {self.eps!r}")
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "eps", eps)
        if self.adapt_steps is not None:
            steps = check_nonnegative_int("adapt_steps", self.adapt_steps)
            object.__setattr__(self, "adapt_steps", steps)
        if not isinstance(self.estimate_acceptance, (bool, np.bool_)):
            value = self.estimate_acceptance
            raise ValueError(f"estimate_acceptance must be True or False, got {value!r}")
        object.__setattr__(self, "estimate_acceptance", bool(self.estimate_acceptance))

    def init(
        self, position: PyTree, batch: Any, *, loss_fn: LossFn, full_batch: bool = True
    ) -> RMSPropSGLDState:
        """A chain at `position` with V = 0 (as devinterp). Full batch: the loss and gradient on
        `batch` (reused by the first step). Minibatch: placeholders of the right shapes."""
        square_avg = jax.tree.map(jnp.zeros_like, position)
        count = jnp.zeros((), jnp.int32)
        if full_batch:
            loss, grad = jax.value_and_grad(loss_fn)(position, batch)
            return RMSPropSGLDState(position, loss, grad, square_avg, count)
        # The placeholder loss must carry the loss's dtype: the scan carry keeps its type.
        dtype = jax.eval_shape(loss_fn, position, batch).dtype
        return RMSPropSGLDState(position, jnp.zeros((), dtype), position, square_avg, count)

    def preconditioner(self, square_avg: PyTree) -> PyTree:
        r""":math:`G = 1/(\sqrt V + \delta)`, elementwise (same pytree as V)."""
        return jax.tree.map(lambda v: 1.0 / (jnp.sqrt(v) + self.eps), square_avg)

    def step(
        self,
        key: PRNGKey,
        state: RMSPropSGLDState,
        batch: Any,
        center: PyTree,
        nbeta,
        step_size,
        localization,
        *,
        loss_fn: LossFn,
        full_batch: bool = True,
    ) -> tuple[RMSPropSGLDState, StepInfo]:
        """One pSGLD transition (the update of the class docstring); every argument but `loss_fn`
        and `full_batch` may be traced."""
        value_and_grad = jax.value_and_grad(loss_fn)
        position = state.position
        if full_batch:
            loss, grad = state.loss, state.grad
        else:
            loss, grad = value_and_grad(position, batch)
        alpha = self.alpha

        if self.adapt_steps is None:
            adapting = True
        else:
            adapting = state.count < self.adapt_steps

        def update(v, g):
            return jnp.where(adapting, alpha * v + (1 - alpha) * g**2, v)

        square_avg = jax.tree.map(update, state.square_avg, grad)
        precond = self.preconditioner(square_avg)

        drift = _drift(grad, position, center, nbeta, localization)  # ∇log p
        noise = generate_gaussian_noise(key, position)
        new_position = jax.tree.map(
            lambda w, G, d, z: w + 0.5 * step_size * G * d + jnp.sqrt(step_size * G) * z,
            position,
            precond,
            drift,
            noise,
        )

        if full_batch or self.estimate_acceptance:
            new_loss, new_grad = value_and_grad(new_position, batch)
            new_drift = _drift(new_grad, new_position, center, nbeta, localization)

            # log q(b | a) = -Σ (b - a - (ε/2) G drift(a))² / (2εG): the proposal with this step's G
            # held fixed in both directions (a fixed-metric MALA ratio).
            def energy(to, frm, d):
                return _sum(
                    jax.tree.map(
                        lambda t, f, di, G: (t - f - 0.5 * step_size * G * di) ** 2 / G,
                        to,
                        frm,
                        d,
                        precond,
                    )
                ) / (2 * step_size)

            log_ratio = (
                localized_log_density(new_loss, new_position, center, nbeta, localization)
                - localized_log_density(loss, position, center, nbeta, localization)
                + energy(new_position, position, drift)
                - energy(position, new_position, new_drift)
            )
            # A NaN ratio (blown-up chain) counts as a rejection: it must not look healthy.
            acceptance = jnp.where(jnp.isnan(log_ratio), 0.0, jnp.exp(jnp.minimum(log_ratio, 0.0)))
        else:
            new_loss, new_grad = jnp.full_like(loss, jnp.nan), grad
            acceptance = jnp.full_like(loss, jnp.nan)

        is_finite = _all_finite(new_position) & jnp.isfinite(loss)
        if full_batch or self.estimate_acceptance:
            is_finite = is_finite & jnp.isfinite(new_loss)
        info = StepInfo(new_loss, loss, acceptance.astype(loss.dtype), is_finite)
        new_state = RMSPropSGLDState(new_position, new_loss, new_grad, square_avg, state.count + 1)
        return new_state, info


__all__ = ["RMSPropSGLD", "RMSPropSGLDState"]
