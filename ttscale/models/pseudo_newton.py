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


def errors(params: PseudoNewtonParams, stats: Statistics, k_max: int, unroll=None, group: bool = False) -> jax.Array:
    """Squared errors ``||ŵ_k − w||² [b, k_max + 1]`` of ``k_max`` pseudo-Newton steps from ``ŵ_0 = 0`` (module docstring).

    ``group=True`` (the sweep's common-random-numbers path, :attr:`Model.groups`): ``params.P`` and
    ``stats.root``/``stats.noise`` carry a leading axis of ``G`` cells that share ``S_Z``; the state is laid
    out ``[b, d, G]`` so each step is one small GEMM ``S_Z [d, d] @ [d, G]`` per prompt, and the result is
    ``[G, b, k_max + 1]`` — the same numbers as ``G`` separate calls. ``unroll``: CoT steps per loop trip
    (default 2: XLA's per-trip overhead dominates these small steps on CPU; measured on sweep-A).
    """
    unroll = 2 if unroll is None else unroll
    dtype = stats.w.dtype
    P, a, w = params.P.astype(dtype), stats.root.astype(dtype), stats.w
    cell_ndim = 1 if group else 0
    diag_P, diag_root = P.ndim == 1 + cell_ndim, a.ndim == 1 + cell_ndim
    S_Z, g = stats.S_Z, stats.g
    noise = stats.noise
    if group:  # cells last: vectors [G, d] -> [1, d, G]; matrices [G, d, d]; the state [b, d, G]
        G = P.shape[0]
        col = lambda v: v.T[None]  # noqa: E731
        apply = lambda M, v, diag, t=False: col(M) * v if diag else jnp.einsum(  # noqa: E731
            "gji,bjg->big" if t else "gij,bjg->big", M, v)
        matvec = lambda v: v if S_Z is None else jnp.einsum("bij,bjg->big", S_Z, v)  # noqa: E731
        lift = lambda v: jnp.broadcast_to(v[:, :, None], v.shape + (G,))  # noqa: E731
        noise_c = noise[None, None, :] if noise.ndim else noise
        sumsq = lambda v: jnp.sum(v, axis=1)  # noqa: E731  [b, d, G] -> [b, G]
    else:
        col = lambda v: v  # noqa: E731
        apply = lambda M, v, diag, t=False: _apply(M, v, transpose=t) if not diag else M * v  # noqa: E731
        matvec = lambda v: v if S_Z is None else jnp.einsum("bij,bj->bi", S_Z, v)  # noqa: E731
        lift = lambda v: v  # noqa: E731
        noise_c = noise
        sumsq = lambda v: jnp.sum(v, axis=-1)  # noqa: E731
    w_state = lift(w)
    if diag_P and diag_root:
        q = col(a * a * P)
        ac = col(a)
        positive = ac > 0
        inv_a2 = jnp.where(positive, 1.0 / jnp.where(positive, ac * ac, 1.0), 0.0)
        fixed = sumsq(jnp.where(positive, 0.0, w_state * w_state))  # coordinates with a_i = 0 keep e_i = −w_i
        drift = None if g is None else noise_c * q * lift(g)

        def step(u, _):
            u = u - q * matvec(u)
            if drift is not None:
                u = u + drift
            return u, sumsq(u * u * inv_a2) + fixed

        state0 = -w_state * ac
    else:
        xi = None if g is None else noise_c * apply(a, lift(g), diag_root)

        def step(e, _):
            r = apply(a, matvec(apply(a, e, diag_root, True)), diag_root)
            if xi is not None:
                r = r - xi
            e = e - apply(P, r, diag_P)
            return e, sumsq(e * e)

        state0 = -w_state
    _, errs = jax.lax.scan(step, state0, None, length=k_max, unroll=unroll)  # [k_max, b(, G)]
    e0 = sumsq(w_state * w_state)[None]
    errs = jnp.concatenate([e0, errs], axis=0)
    errs = jnp.transpose(errs, (2, 1, 0)) if group else errs.T
    return jnp.where(jnp.isnan(errs), jnp.inf, errs)


def make(P=None) -> Model:
    """The pseudo-Newton model: ``P = Γ(Λ, n)⁻¹`` of each training cell (default) or one fixed ``P [d, d]``/``[d]``."""
    if P is None:
        return Model("pseudo_newton", learned_preconditioner, errors, "statistics", preconditioner, groups=True)
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
    return Model(f"pseudo_newton:{digest}", init, errors, "statistics", preconditioner, groups=True)


def _digest(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a, np.float64).tobytes() + str(a.shape).encode()).hexdigest()[:16]
