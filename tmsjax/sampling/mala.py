r"""The Metropolis-adjusted Langevin algorithm (MALA) for the λ̂ engine: an exact sampler.

MALA targets the localized tempered posterior of :mod:`tmsjax.sampling.sgld` on the *full* batch,

.. math:: \log p(w) = -n\beta\,L_n(w) - \frac{\gamma}{2}\lVert w - w^*\rVert^2 + \text{const},

by proposing the SGLD step and accepting it with the Metropolis–Hastings probability:

.. math::
    w' &= w + \frac{\epsilon}{2}\nabla\log p(w) + \sqrt{\epsilon}\,\eta, \qquad \eta\sim N(0, I),\\
    \alpha(w, w') &= \min\Big(1,\ \frac{p(w')\,q(w\mid w')}{p(w)\,q(w'\mid w)}\Big), \qquad
    q(b\mid a) = N\big(b;\ a + \tfrac\epsilon2\nabla\log p(a),\ \epsilon I\big),

keeping :math:`w'` with probability α and :math:`w` otherwise (Roberts & Tweedie 1996). The chain
leaves p exactly invariant for *every* ε: unlike SGLD, a large step costs acceptance (mixing), not
bias. This makes it the reference sampler for checking λ̂ at a given (γ, nβ). The ratio needs the
exact log density at both ends, so MALA runs on the full batch only: a minibatch ratio is noisy,
and an accept/reject on it no longer leaves p invariant.

**Why not blackjax's kernel.** :func:`blackjax.mcmc.mala.build_kernel` is the same algorithm (its
step size is :math:`h = \epsilon/2`: proposal :math:`w + h\nabla\log p + \sqrt{2h}\eta`), but its
state holds :math:`\log p` and :math:`\nabla\log p`, while the λ̂ engine needs the loss
:math:`L_n` at every draw. Its log density has no auxiliary output, so getting :math:`L_n` back
means subtracting the localization term and dividing by nβ (rounding error in float32) or one more
loss evaluation per step. Instead the proposal and the ratio are the SGLD kernel's
(:func:`tmsjax.sampling.sgld.build_kernel`, which computes exactly this ratio as its acceptance
estimate, with the loss and gradient of both ends), and the accept/reject is three lines here. The
keys are split as blackjax splits them (proposal, then accept), so a MALA chain equals blackjax's
step for step (tests/test_samplers.py). One step costs one gradient evaluation, as SGLD.

References:
  Roberts, Tweedie, "Exponential convergence of Langevin distributions and their discrete
  approximations", Bernoulli 2(4), 1996.
  Lau, Furman, Wang, Murfet, Wei (2023), arXiv:2308.12108 (the localized tempered posterior).
"""

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from tmsjax.sampling.sgld import LossFn, SGLDState, StepInfo, build_kernel, init
from tmsjax.types import PRNGKey, PyTree


def _check_full_batch(full_batch: bool) -> None:
    if not full_batch:
        raise ValueError(
            "MALA needs the full batch (batch_size=None): a Metropolis-Hastings ratio on a "
            "minibatch is not exact; use SGLD or RMSPropSGLD with batch_size"
        )


@dataclasses.dataclass(frozen=True)
class MALA:
    r"""The Metropolis-adjusted Langevin algorithm as the λ̂ engine's sampler (full batch only).

    Proposal :math:`w' = w + \frac\epsilon2\nabla\log p(w) + \sqrt\epsilon\,\eta`, accepted with
    probability :math:`\min(1, p(w')q(w\mid w') / (p(w)q(w'\mid w)))` (module docstring). The
    StepInfo's ``acceptance`` is this probability (not an estimate); a proposal that is NaN or
    inf is rejected, so a chain never blows up, it stops moving (acceptance near 0).

    It has no options; ε, γ and nβ come from :class:`~tmsjax.llc.LLCSettings`, which should
    have ``batch_size=None`` (:attr:`requires_full_batch`).

    Examples:
      >>> from tmsjax.llc import LLCSettings
      >>> LLCSettings(step_size=1e-3, sampler=MALA()).sampler
      MALA()
    """

    #: Settings validation reads this: a minibatch ``batch_size`` is refused.
    requires_full_batch: ClassVar[bool] = True
    #: The health check's `low_acceptance` threshold. MALA is exact at any ε, so low acceptance is
    #: slow mixing, not bias; below about 0.2 (the optimum is near 0.57; Roberts & Rosenthal 1998)
    #: chains barely move, and a frozen chain would give λ̂ ≈ 0 without another flag.
    min_acceptance: ClassVar[float] = 0.2

    def init(
        self, position: PyTree, batch: Any, *, loss_fn: LossFn, full_batch: bool = True
    ) -> SGLDState:
        """A chain at `position`: the full-batch loss and gradient there.

        Raises:
          ValueError: in minibatch mode (naming ``batch_size``).
        """
        _check_full_batch(full_batch)
        return init(position, loss_fn, batch)

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
        """One MALA transition; every argument but `loss_fn` and `full_batch` may be traced.

        Raises:
          ValueError: in minibatch mode (naming ``batch_size``).
        """
        _check_full_batch(full_batch)
        # blackjax's order: the first key proposes, the second accepts (step-for-step equality).
        key_proposal, key_accept = jax.random.split(key)
        kernel = build_kernel(loss_fn, full_batch=True)
        proposal, info = kernel(key_proposal, state, batch, center, nbeta, step_size, localization)
        # info.acceptance is min(1, MH ratio), 0 for a NaN ratio; a non-finite proposal is refused
        # outright (an infinite log density could otherwise give ratio 1).
        accept = jax.random.bernoulli(key_accept, info.acceptance) & info.is_finite
        new_state = jax.tree.map(lambda new, old: jnp.where(accept, new, old), proposal, state)
        leaves = jax.tree.leaves(new_state.position)
        is_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        is_finite = is_finite & jnp.isfinite(new_state.loss)
        return new_state, StepInfo(new_state.loss, state.loss, info.acceptance, is_finite)


__all__ = ["MALA"]
