"""Gradient-descent CoT: ``ŵ_{k+1} = ŵ_k − η (S ŵ_k − b)`` (the von Oswald et al. construction).

Plain gradient descent on the in-context loss ``||y − Xᵀŵ||²/(2m)`` with a fixed step ``η``,
from ``ŵ_0 = 0``. It is pseudo-Newton with the preconditioner ``P = η I`` that ignores the
training task, so the kernel is :func:`ttscale.models.pseudo_newton.errors` and every closed form
of :mod:`ttscale.theory` applies with ``P = η I``: at ``m = ∞``,
``E ||w_k − w||² = Σ_i (1 − η σ_i)^{2k}`` over the eigenvalues ``σ_i`` of ``Σ``
(``limit_error(η I, Σ, k)``), e.g. ``d (1 − η)^{2k}`` for ``Σ = I``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from ttscale.models import pseudo_newton
from ttscale.models.base import Model, format_options


def make(eta: float = 0.5) -> Model:
    """Gradient-descent CoT with step ``eta`` (``> 0``, finite)."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)):
        raise TypeError(f"eta must be a real number, got {type(eta).__name__} {eta!r}")
    eta = float(eta)
    if not math.isfinite(eta) or eta <= 0:
        raise ValueError(f"eta must be a finite step size > 0, got {eta}")

    def init(train, n):
        del n
        return pseudo_newton.PseudoNewtonParams(jnp.full(train.eigenvalues.shape, eta, train.dtype))

    return Model(f"gd:{format_options({'eta': eta})}", init, pseudo_newton.errors, "statistics",
                 pseudo_newton.preconditioner, groups=True)
