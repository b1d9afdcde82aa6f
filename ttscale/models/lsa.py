"""The one-layer linear self-attention (LSA) with CoT feedback, on prompt statistics (any ``W``, ``V``).

The literal model (:mod:`ttscale.lsa`): embedding ``E_0 = embed(X, y, 0)``, one pass reads
``ŵ_{k+1}`` from the last column of ``f(E_k) = E_k + V E_k (E_kᵀ W E_k)/ρ`` and appends the column
``q_{k+1} = [0; 0; ŵ_{k+1}; 1]``; ``ρ = m``. This module evaluates that *same function* exactly
from the sufficient statistics: rows ``I = [x; y]`` carry the data, rows ``J = [ŵ; 1]`` the
query columns, so ``G_k = E_k E_kᵀ`` is block diagonal with

    G_II = m C,   C = [[S, b], [bᵀ, yᵀy/m]],      G_JJ = Σ_{i ≤ k} q_i q_iᵀ,

and the ŵ block of the last column of ``f(E_k)`` is ``ŵ_{k+1} = ŵ_k + M_k q_k`` with
``M_k = V[ŵ, :] G_k W[:, J] / m``, updated by the rank one
``M_{k+1} = M_k + (V[ŵ, J] q_{k+1})(W[J, J]ᵀ q_{k+1})ᵀ / m`` — ``O(d²)`` per step instead of
``O(D² m)``. When ``V[ŵ, J] = 0`` (the paper's structure, e.g. the Theorem 3.1 optimum) the rank-one
terms vanish and ``M_k = M_0``: the hint ``constant_M`` selects that exact fast path.
The tests check this against the literal forward (:func:`ttscale.cot.lsa_estimates`).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import lsa as lsa_core
from ttscale.lsa import LSAParams
from ttscale.models import pseudo_newton
from ttscale.models.base import Model, format_options
from ttscale.prompts import Statistics


def errors(params: LSAParams, stats: Statistics, k_max: int, constant_M: bool = False) -> jax.Array:
    """Squared errors ``[b, k_max + 1]`` of the literal LSA CoT (``ρ = m``) from prompt statistics (module docstring)."""
    w = stats.w
    b, d = w.shape
    dtype = w.dtype
    m = stats.m
    W, V = params.W.astype(dtype), params.V.astype(dtype)
    Vw = V[d + 1 : 2 * d + 1]  # [d, D]
    VwI, VwJ = Vw[:, : d + 1], Vw[:, d + 1 :]
    WIJ, WJJ = W[: d + 1, d + 1 :], W[d + 1 :, d + 1 :]
    S, xy, yy = stats.S(), stats.b(), stats.yy()
    C = jnp.concatenate(
        [jnp.concatenate([S, xy[:, :, None]], axis=2), jnp.concatenate([xy, yy[:, None]], axis=1)[:, None, :]],
        axis=1,
    )  # [b, d+1, d+1]
    q0 = jnp.zeros((d + 1,), dtype).at[d].set(1.0)
    M0 = jnp.einsum("ik,bkl,lj->bij", VwI, C, WIJ) + jnp.outer(VwJ @ q0, WJJ.T @ q0)[None] / m

    if constant_M:
        M_w, M_one = M0[:, :, :d], M0[:, :, d]

        def constant_step(w_hat, _):
            w_next = w_hat + jnp.einsum("bij,bj->bi", M_w, w_hat) + M_one
            diff = w_next - w
            return w_next, jnp.sum(diff * diff, axis=-1)

        _, errs = jax.lax.scan(constant_step, jnp.zeros((b, d), dtype), None, length=k_max)
    else:

        def step(state, _):
            M, w_hat = state
            q = jnp.concatenate([w_hat, jnp.ones((b, 1), dtype)], axis=1)
            w_next = w_hat + jnp.einsum("bij,bj->bi", M, q)
            q_next = jnp.concatenate([w_next, jnp.ones((b, 1), dtype)], axis=1)
            M = M + jnp.einsum("ij,bj,lk,bl->bik", VwJ, q_next, WJJ, q_next) / m
            diff = w_next - w
            return (M, w_next), jnp.sum(diff * diff, axis=-1)

        _, errs = jax.lax.scan(step, (M0, jnp.zeros((b, d), dtype)), None, length=k_max)
    errs = jnp.concatenate([jnp.sum(w * w, axis=-1)[None], errs], axis=0).T
    return jnp.where(jnp.isnan(errs), jnp.inf, errs)


def hints(params) -> dict:
    """``constant_M``: ``V[ŵ, (ŵ, 1)] = 0`` in every cell (appended query columns do not move ``M``)."""
    V = np.asarray(params.V)
    d = (V.shape[-1] - 2) // 2
    return {"constant_M": not np.any(V[..., d + 1 : 2 * d + 1, d + 1 :])}


def load(path) -> LSAParams:
    """``W``, ``V`` from an ``.npz`` (as :func:`ttscale.training.save_params` writes), as float64 NumPy arrays."""
    try:
        with np.load(os.fspath(path)) as f:
            return LSAParams(np.asarray(f["W"], np.float64), np.asarray(f["V"], np.float64))
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"params: {path} must be an .npz holding W and V ({exc})") from None


def make(c: float = 1.0, params=None) -> Model:
    """The literal LSA: the Theorem 3.1 optimum ``V[ŵ, x] = −Γ(Λ, n)⁻¹/c`` with the paper's ``W`` (scale ``c``),
    or fixed parameters ``params`` (an :class:`~ttscale.lsa.LSAParams` of ``[D, D]`` arrays, or an ``.npz`` path)."""
    c = float(c)
    if not np.isfinite(c) or c == 0:
        raise ValueError(f"c must be finite and non-zero (the LSA score scale), got {c}")
    if params is None:

        def init(train, n):
            P = pseudo_newton.dense(pseudo_newton.learned_preconditioner(train, n).P)
            return lsa_core.params_from_preconditioner(P, c)

        name = "lsa" if c == 1.0 else f"lsa:{format_options({'c': c})}"
        return Model(name, init, errors, "statistics", lsa_core.effective_preconditioner, hints, finite_m=True)
    if isinstance(params, (str, os.PathLike)):
        params = load(params)
    fixed = LSAParams(np.asarray(params.W, np.float64), np.asarray(params.V, np.float64))
    D = fixed.W.shape[-1]
    if fixed.W.shape != (D, D) or fixed.V.shape != (D, D) or D % 2 or D < 4:
        raise ValueError(f"params.W and params.V must both be [D, D] with D = 2d + 2, got {fixed.W.shape} and {fixed.V.shape}"
                         " (per-cell parameters [spectra, n, D, D] go in SweepSpec.params)")
    if not (np.all(np.isfinite(fixed.W)) and np.all(np.isfinite(fixed.V))):
        raise ValueError("params has non-finite entries")

    def init_fixed(train, n):
        del n
        if lsa_core.embed_dim(train.d) != D:
            raise ValueError(f"params are for D = {D} (d = {(D - 2) // 2}) but the training spectra have d = {train.d}")
        return LSAParams(jnp.asarray(fixed.W, train.dtype), jnp.asarray(fixed.V, train.dtype))

    name = f"lsa:{format_options({'params': 'sha256:' + pseudo_newton._digest(np.concatenate([fixed.W, fixed.V]))})}"
    return Model(name, init_fixed, errors, "statistics", lsa_core.effective_preconditioner, hints, finite_m=True)
