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
    if diag_P and diag_root and not group and S_Z is not None and S_Z.shape[-1] <= UNROLLED_MAX_D:
        # one cell: prompts-minor (measured faster); a group of cells sharing S_Z keeps the GEMM layout below,
        # which measured faster for groups (sweep-A CRN: 0.18 s vs 0.30 s prompts-minor)
        q = a * a * P
        drift = None if g is None else (noise * q * g)[None]
        return _diagonal_unrolled(q[None], a[None], w, S_Z, drift, k_max)[0]
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


#: Largest ``d`` for which the diagonal kernel runs prompts-minor with the matvec unrolled over ``j``
#: (:func:`_diagonal_unrolled`). ``python benchmarks/kernel_layouts.py`` (one CPU core, 80 cells × 2048
#: prompts × 32 steps, blocks of 8): d = 10: 0.075 s vs 0.148 s batched dot; d = 20: 0.172 vs 0.356; d = 28:
#: 0.289 vs 0.498; from d ≈ 32 the two are within noise (a block's ``S_Z``, d² · 8 · 4 B, leaves L1).
UNROLLED_MAX_D = 28


def _diagonal_unrolled(q, a, w, S_Z, drift, k_max: int):
    """The diagonal kernel ``u ← u − q ∘ (S_Z u) + drift`` of ``G`` cells sharing ``S_Z``, laid out prompts-minor.

    ``q = a² p``, ``a`` ``[G, d]``; ``w [b, d]``; ``S_Z [b, d, d]``; ``drift`` ``[G, b, d]`` (``σ q ∘ g``) or ``None``.
    The state is ``u [d, G, b]`` and ``(S_Z u)_i = Σ_j S_Z[i, j] u_j`` is written as ``d`` multiply-adds of
    ``[d, G, b]`` slabs (one XLA loop fusion, vectorised over prompts) instead of ``b`` tiny matrix products.
    ``||e||² = Σ_{a_i > 0} u_i²/a_i² + Σ_{a_i = 0} w_i²``. Returns ``[G, b, k_max + 1]``; the same numbers as the
    batched-dot layout up to round-off (another summation order), and a cell's numbers do not depend on ``G``.
    """
    d = w.shape[-1]
    St = jnp.transpose(S_Z, (2, 1, 0))[:, :, None, :]  # St[j, i, 0, p] = S_Z[p, i, j]
    cells = lambda v: v.T[:, :, None]  # noqa: E731  [G, d] -> [d, G, 1]
    positive = a > 0
    inv_a2 = cells(jnp.where(positive, 1.0 / jnp.where(positive, a * a, 1.0), 0.0))
    wt = w.T[:, None, :]  # [d, 1, b]
    fixed = jnp.sum(jnp.where(cells(positive), 0.0, wt * wt), axis=0)  # [G, b]: coordinates with a_i = 0 keep −w_i
    qc = cells(q)
    drift_t = None if drift is None else jnp.transpose(drift, (2, 0, 1))  # [d, G, b]

    def step(u, _):
        r = St[0] * u[0][None]
        for j in range(1, d):
            r = r + St[j] * u[j][None]
        u = u - qc * r
        if drift_t is not None:
            u = u + drift_t
        return u, jnp.sum(u * u * inv_a2, axis=0) + fixed

    _, errs = jax.lax.scan(step, -wt * cells(a), None, length=k_max)  # [k_max, G, b]
    e0 = jnp.broadcast_to(jnp.sum(wt * wt, axis=0), errs.shape[1:])[None]
    errs = jnp.transpose(jnp.concatenate([e0, errs], axis=0), (1, 2, 0))
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
