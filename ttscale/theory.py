"""Closed forms of the paper (SPEC §3–§5, §7), each checked against simulation in the tests.

Notation: training covariance ``Λ``, training prompt length ``n``, test covariance ``Σ``,
test prompt length ``m``, ``k`` LSA passes from ``w_0 = 0``, preconditioner ``P``
(``Γ⁻¹`` for one task). With ``S_m = X Xᵀ / m`` the CoT iterate is

    w_k = (I − (I − P S_m)^k) w.

All functions take covariances as :class:`~ttscale.spectra.Covariance` or dense ``[d, d]``
matrices, accept traced ``n``/``m`` and are ``jit``/``vmap``-compatible.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import _checks
from ttscale.spectra import Covariance, hardness, stack


def _matrix(name: str, cov) -> jax.Array:
    """Dense ``[d, d]`` matrix of a covariance; a concrete dense input must be symmetric PSD."""
    if isinstance(cov, Covariance):
        return cov.matrix()
    M = _checks.square_matrix(name, cov)
    if _checks.is_concrete(M):
        _as_cov(name, M)  # raises a named ValueError if not symmetric PSD
    return M


def _as_cov(name: str, cov) -> Covariance:
    if isinstance(cov, Covariance):
        return cov
    from ttscale.spectra import from_matrix

    try:
        return from_matrix(cov)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{name}: {exc}") from None


def second_moment(cov, n) -> jax.Array:
    """``E[S_n²] = (1 + 1/n) Λ² + (tr Λ / n) Λ`` for ``S_n = X Xᵀ/n``, ``x ~ N(0, Λ)`` (Isserlis); ``[d, d]``.

    ``n = inf`` gives ``Λ²``.
    """
    _checks.positive_count("n", n, allow_inf=True)
    L = _matrix("cov", cov)
    n = jnp.asarray(n, L.dtype)
    return (1 + 1 / n) * (L @ L) + (jnp.trace(L) / n) * L


def gamma(cov, n) -> jax.Array:
    """``Γ(Λ, n) = (1 + 1/n) Λ + (tr Λ / n) I_d`` → ``[d, d]`` (so that ``E[S_n²] = Γ Λ``)."""
    _checks.positive_count("n", n, allow_inf=True)
    L = _matrix("cov", cov)
    n = jnp.asarray(n, L.dtype)
    d = L.shape[-1]
    return (1 + 1 / n) * L + (jnp.trace(L) / n) * jnp.eye(d, dtype=L.dtype)


def gamma_inverse(cov, n) -> jax.Array:
    """``Γ(Λ, n)⁻¹`` (the one-task learned preconditioner); cheap when ``Λ`` is diagonal."""
    if isinstance(cov, Covariance) and cov.is_diagonal:
        _checks.positive_count("n", n, allow_inf=True)
        n = jnp.asarray(n, cov.dtype)
        g = (1 + 1 / n) * cov.eigenvalues + cov.trace() / n
        return jnp.diag(1.0 / g)
    return jnp.linalg.inv(gamma(cov, n))


def mixture_preconditioner(covs, ns, probs, noise=0.0) -> jax.Array:
    """Learned preconditioner of a task mixture: ``P = Λ̄ Q⁻¹``.

    ``Λ̄ = Σ_ℓ π_ℓ Λ_ℓ``, ``Q = Σ_ℓ π_ℓ (Γ(Λ_ℓ, n_ℓ) Λ_ℓ + σ² Λ_ℓ / n_ℓ)`` (``σ = noise``, the label-noise
    standard deviation; ``E[b bᵀ] = E[S²] + σ² Λ / n`` for ``b = X y / n``); it minimises the one-step
    training loss ``E ||P b − w||²`` over the mixture and reduces to ``Γ⁻¹`` for one noiseless task.

    ``covs``: a stacked :class:`Covariance` (``[L, d]``) or a list of them; ``ns [L]``;
    ``probs [L]`` on the simplex. Returns ``[d, d]``.
    """
    if isinstance(covs, (list, tuple)):
        if len(covs) == 0:
            raise ValueError("covs must hold at least one task")
        covs = stack(covs)
    if not isinstance(covs, Covariance):
        raise TypeError(f"covs must be a stacked Covariance or a list of them, got {type(covs).__name__}")
    if covs.eigenvalues.ndim != 2:
        raise ValueError(f"covs must be a stack of covariances [L, d], got eigenvalues of shape {covs.eigenvalues.shape}")
    L_tasks = covs.eigenvalues.shape[0]
    dtype = covs.dtype
    ns = jnp.broadcast_to(jnp.asarray(ns, dtype), (L_tasks,)) if np.ndim(ns) == 0 else jnp.asarray(ns, dtype)
    probs = _checks.float_array("probs", probs, dtype)
    if ns.shape != (L_tasks,):
        raise ValueError(f"ns must have one prompt length per task ({L_tasks}), got shape {ns.shape}")
    if probs.shape != (L_tasks,):
        raise ValueError(f"probs must have one probability per task ({L_tasks}), got shape {probs.shape}")
    _checks.positive_count("ns", ns, allow_inf=True)
    check_simplex("probs", probs)
    mats = covs.matrix()
    noise = jnp.asarray(noise, dtype)
    second = jax.vmap(second_moment)(mats, ns) + (noise**2 / ns)[:, None, None] * mats
    Lbar = jnp.einsum("l,lij->ij", probs, mats)
    Q = jnp.einsum("l,lij->ij", probs, second)
    return jnp.linalg.solve(Q.T, Lbar.T).T


def check_simplex(name: str, probs, atol: float = 1e-5) -> None:
    """Raise ``ValueError`` unless a concrete ``probs`` is non-negative and sums to 1."""
    if not _checks.is_concrete(probs):
        return
    _checks.check_finite(name, probs)
    probs = np.asarray(probs)
    if np.any(probs < -atol):
        raise ValueError(f"{name} must be non-negative, got {probs}")
    total = float(np.sum(probs))
    if abs(total - 1.0) > atol * max(1, probs.shape[-1]):
        raise ValueError(f"{name} must sum to 1, got sum {total:.6g}")


def iteration_matrix(P, Sigma) -> jax.Array:
    """``B = I − P Σ`` (``m → ∞``): ``w − w_k = B^k w``."""
    P = _checks.square_matrix("P", P)
    S = _matrix("Sigma", Sigma)
    if S.shape != P.shape:
        raise ValueError(f"P has shape {P.shape} but Sigma has shape {S.shape}")
    return jnp.eye(P.shape[-1], dtype=P.dtype) - P @ S.astype(P.dtype)


def limit_error(P, Sigma, k_max: int) -> jax.Array:
    """Exact ``m → ∞`` error ``E ||w_k − w||² = ||(I − PΣ)^k||_F² = tr(B^k B^{kᵀ})`` for ``k = 0..k_max``.

    Valid for any ``P`` and ``Σ`` (no commuting assumption); returns ``[k_max + 1]`` with
    entry 0 equal to ``d``. For ``Σ = Λ ∝ I`` and ``P = Γ⁻¹`` it is ``d r^{2k}``,
    ``r = (1 + Hard)/(n + 1 + Hard)``.
    """
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    B = iteration_matrix(P, Sigma)

    def step(A, _):
        return B @ A, jnp.sum(A * A)

    _, errs = jax.lax.scan(step, jnp.eye(B.shape[-1], dtype=B.dtype), None, length=k_max + 1)
    return errs


def one_step_error(P, Sigma, m, noise=0.0) -> jax.Array:
    """Exact finite-``m`` error at ``k = 1``: ``d − 2 tr(PΣ) + tr(P E[S_m²] Pᵀ) + σ² tr(P Σ Pᵀ)/m``.

    ``E[S_m²] = (1 + 1/m) Σ² + (tr Σ / m) Σ``; ``m = inf`` gives ``limit_error(P, Σ, 1)[1]``;
    ``σ = noise`` is the label-noise standard deviation (0 in the paper).
    """
    _checks.positive_count("m", m, allow_inf=True)
    P = _checks.square_matrix("P", P)
    S = _matrix("Sigma", Sigma).astype(P.dtype)
    m = jnp.asarray(m, P.dtype)
    d = P.shape[-1]
    M2 = second_moment(S, m)
    noise = jnp.asarray(noise, P.dtype)
    return d - 2 * jnp.trace(P @ S) + jnp.trace(P @ M2 @ P.T) + noise**2 * jnp.trace(P @ S @ P.T) / m


def thm33_bound(cov, n, m) -> jax.Array:
    """Theorem 3.3 bound (``k = 1``, ``Σ = Λ``): ``(d/n²)(1 + Hard)² + (d/m)(1 + Hard)``."""
    _checks.positive_count("n", n)
    _checks.positive_count("m", m, allow_inf=True)
    cov = _as_cov("cov", cov)
    H = hardness(cov)
    d = cov.d
    n = jnp.asarray(n, cov.dtype)
    m = jnp.asarray(m, cov.dtype)
    return (d / n**2) * (1 + H) ** 2 + (d / m) * (1 + H)


def cor35_rate(cov, n) -> jax.Array:
    """Per-step contraction of Corollary 3.5: ``r = (1 + Hard)/(n + 1 + Hard) = (1 + n/(1 + Hard))^{-1}``."""
    _checks.positive_count("n", n, allow_inf=True)
    cov = _as_cov("cov", cov)
    H = hardness(cov)
    return 1.0 / (1.0 + jnp.asarray(n, cov.dtype) / (1.0 + H))


def cor35_bound(cov, n, k) -> jax.Array:
    """Corollary 3.5 scaling law (``Σ = Λ``, ``m → ∞``): ``d (1 + n/(1 + Hard))^{-2k}``.

    Exact for ``Λ ∝ I``. ``k`` may be an array (e.g. ``jnp.arange(k_max + 1)``).
    """
    cov = _as_cov("cov", cov)
    r = cor35_rate(cov, n)
    k = jnp.asarray(k, cov.dtype)
    if _checks.is_concrete(k) and np.any(np.asarray(k) < 0):
        raise ValueError(f"k must be >= 0, got {k}")
    return cov.d * r ** (2 * k)


def matching_k(cov, n_short, n_long, k_long=1) -> jax.Array:
    """Steps ``k`` at which training length ``n_short`` matches ``n_long`` at ``k_long`` steps under Cor 3.5.

    Solves ``r(n_short)^{2k} = r(n_long)^{2 k_long}``: ``k = k_long · log r(n_long) / log r(n_short)``.
    For ``Λ = I``, ``d = 10``: ``matching_k(identity(10), 10, 30) ≈ 2.04``.
    """
    return k_long * jnp.log(cor35_rate(cov, n_long)) / jnp.log(cor35_rate(cov, n_short))


def _inverse_sqrt_psd(M: jax.Array) -> jax.Array:
    eig, U = jnp.linalg.eigh((M + M.T) / 2)
    return (U / jnp.sqrt(eig)[None, :]) @ U.T


def overthinking_matrix(Gamma, Sigma) -> jax.Array:
    """``M = I − Γ^{-1/2} Σ Γ^{-1/2}`` (Remark 4.1), symmetric ``[d, d]``."""
    G = _checks.square_matrix("Gamma", Gamma)
    S = _matrix("Sigma", Sigma).astype(G.dtype)
    R = _inverse_sqrt_psd(G)
    return jnp.eye(G.shape[-1], dtype=G.dtype) - R @ S @ R


def overthinking_term(Gamma, Sigma, k) -> jax.Array:
    """Remark 4.1's ``tr(M^{2k})``, ``M = I − Γ^{-1/2} Σ Γ^{-1/2}``; ``k`` scalar or array.

    Equals :func:`limit_error` (with ``P = Γ⁻¹``) only when ``Γ`` and ``Σ`` commute; in
    general the exact ``m → ∞`` error is ``tr(M^k Γ M^k Γ⁻¹)``. It grows without bound iff
    ``Γ^{-1/2} Σ Γ^{-1/2}`` has an eigenvalue above 2.
    """
    mu = jnp.linalg.eigvalsh(overthinking_matrix(Gamma, Sigma))
    k = jnp.asarray(k, mu.dtype)
    if _checks.is_concrete(k) and np.any(np.asarray(k) < 0):
        raise ValueError(f"k must be >= 0, got {k}")
    return jnp.sum(mu ** (2 * k[..., None]), axis=-1)


class BestK(NamedTuple):
    """Result of :func:`best_k`.

    ``k``: argmin over ``1..k_max`` of the ``m → ∞`` error; ``error``: its value;
    ``turns_up``: the error rises again within ``k_max`` steps (``k < k_max``), i.e. more
    thinking hurts; ``spectral_radius``: ``ρ(I − PΣ)``, above 1 iff the error eventually
    diverges.
    """

    k: jax.Array
    error: jax.Array
    turns_up: jax.Array
    spectral_radius: jax.Array


def best_k(P, Sigma, k_max: int) -> BestK:
    """The number of CoT steps that minimises :func:`limit_error` over ``k = 1..k_max``.

    When ``turns_up`` is false the error is still falling at ``k_max`` ("never turns up"
    within the horizon; with ``spectral_radius ≤ 1`` it never does).
    """
    k_max = _checks.static_int("k_max", k_max, minimum=1)
    errs = limit_error(P, Sigma, k_max)[1:]
    errs = jnp.where(jnp.isnan(errs), jnp.inf, errs)
    idx = jnp.argmin(errs)
    B = iteration_matrix(P, Sigma)
    rho = jnp.max(jnp.abs(jnp.linalg.eigvals(B))).astype(B.dtype)
    return BestK(idx + 1, errs[idx], idx + 1 < k_max, rho)
