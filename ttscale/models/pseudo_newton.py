"""Pseudo-Newton CoT: ``ŵ_{k+1} = ŵ_k − P (S ŵ_k − b)`` with a fixed preconditioner ``P`` (Proposition 3.2).

With ``P = Γ(Λ, n)⁻¹`` (the default ``init``) this is exactly the trained LSA's test-time CoT;
any ``P`` may be given instead. On the error ``e = ŵ − w`` the map is affine,

    e_0 = −w,   e_{k+1} = e_k − P (S e_k − ξ),   ξ = b − S w = σ A g   (zero without label noise),

so ``w − w_k = (I − P S)^k w`` without noise. The kernel iterates ``e`` directly (no cancellation
in ``ŵ − w``: converged errors stay accurate far below float32 round-off of ``||w||²``) and applies
``S = A S_Z Aᵀ`` through the whitened statistics (:meth:`~ttscale.prompts.Statistics.apply_S`),
so many cells sharing ``S_Z`` (common random numbers) turn each step into one small GEMM when
``vmap``-ed over cells. For diagonal ``A = diag(a)`` and ``P = diag(p)`` it iterates ``u = A e``:
``u_{k+1} = u_k − q ∘ (S_Z u_k) + σ q ∘ g``, ``q = a² p`` — one elementwise product per step —
with ``||e||² = Σ_{a_i > 0} u_i²/a_i² + Σ_{a_i = 0} w_i²`` (a coordinate with ``a_i = 0`` never moves).

Parameters: :class:`PseudoNewtonParams` ``(P)``, ``P [d]`` (diagonal) or ``[d, d]``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import theory
from ttscale.models.base import Model, format_options
from ttscale.prompts import Statistics, _apply


class PseudoNewtonParams(NamedTuple):
    """``P [d]`` (diagonal preconditioner) or ``[d, d]``."""

    P: jax.Array


def learned_preconditioner(train, n) -> PseudoNewtonParams:
    """``P = Γ(Λ, n)⁻¹`` (Theorem 3.1's optimum), diagonal ``[d]`` when ``Λ`` is diagonal; ``train``, ``n`` may be traced."""
    P = theory.gamma_inverse(train, n)
    return PseudoNewtonParams(jnp.diagonal(P) if train.is_diagonal else P)


def dense(P: jax.Array) -> jax.Array:
    """``P [d]`` (diagonal) or ``[d, d]`` → dense ``[d, d]``."""
    return jnp.diag(P) if P.ndim == 1 else P


def preconditioner(params: PseudoNewtonParams) -> jax.Array:
    """The dense ``P [d, d]`` (what :mod:`ttscale.theory` takes)."""
    return dense(params.P)


def errors(params: PseudoNewtonParams, stats: Statistics, k_max: int, unroll: int = 1) -> jax.Array:
    """Squared errors ``||ŵ_k − w||² [b, k_max + 1]`` of ``k_max`` pseudo-Newton steps from ``ŵ_0 = 0`` (module docstring)."""
    P = params.P.astype(stats.w.dtype)
    w = stats.w
    a = stats.root
    if P.ndim == 1 and a.ndim == 1:
        q = a * a * P
        positive = a > 0
        inv_a2 = jnp.where(positive, 1.0 / jnp.where(positive, a * a, 1.0), 0.0)
        fixed = jnp.sum(jnp.where(positive, 0.0, w * w), axis=-1)  # coordinates with a_i = 0 keep e_i = −w_i
        drift = None if stats.g is None else stats.noise * q * stats.g

        def step(u, _):
            v = u if stats.S_Z is None else jnp.einsum("bij,bj->bi", stats.S_Z, u)
            u = u - q * v
            if drift is not None:
                u = u + drift
            return u, jnp.sum(u * u * inv_a2, axis=-1) + fixed

        state0 = -w * a
    else:
        xi = stats.noise_drift()

        def step(e, _):
            r = stats.apply_S(e)
            if xi is not None:
                r = r - xi
            e = e - _apply(P, r)
            return e, jnp.sum(e * e, axis=-1)

        state0 = -w
    _, errs = jax.lax.scan(step, state0, None, length=k_max, unroll=unroll)  # [k_max, b]
    errs = jnp.concatenate([jnp.sum(w * w, axis=-1)[None], errs], axis=0).T
    return jnp.where(jnp.isnan(errs), jnp.inf, errs)


def make(P=None) -> Model:
    """The pseudo-Newton model: ``P = Γ(Λ, n)⁻¹`` of each training cell (default) or one fixed ``P [d, d]``/``[d]``."""
    if P is None:
        return Model("pseudo_newton", learned_preconditioner, errors, "statistics", preconditioner)
    P = np.asarray(P, np.float64)
    if P.ndim not in (1, 2) or (P.ndim == 2 and P.shape[0] != P.shape[1]) or not np.all(np.isfinite(P)):
        raise ValueError(f"P must be a finite [d] or [d, d] array, got shape {P.shape}")
    fixed = P

    def init(train, n):
        del n
        if fixed.shape[-1] != train.d:
            raise ValueError(f"P has d={fixed.shape[-1]} but the training spectra have d={train.d}")
        return PseudoNewtonParams(jnp.asarray(fixed, train.dtype))

    digest = format_options({"P": f"sha256:{_digest(fixed)}"})
    return Model(f"pseudo_newton:{digest}", init, errors, "statistics", preconditioner)


def _digest(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a, np.float64).tobytes() + str(a.shape).encode()).hexdigest()[:16]
