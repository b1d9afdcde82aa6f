"""Closed forms of the paper (docs/science.md §3–§5, §7), each checked against simulation in the tests.

Notation: training covariance ``Λ``, training prompt length ``n``, test covariance ``Σ``,
test prompt length ``m``, ``k`` LSA passes from ``w_0 = 0``, preconditioner ``P``
(``Γ⁻¹`` for one task). With ``S_m = X Xᵀ / m`` the CoT iterate is

    w_k = (I − (I − P S_m)^k) w.

All functions take covariances as :class:`~ttscale.spectra.Covariance` or dense ``[d, d]``
matrices, accept traced ``n``/``m`` and are ``jit``/``vmap``-compatible.

Validation: every argument is checked when it is concrete (never under a trace), with a
``ValueError``/``TypeError`` naming it; a :class:`Covariance` is checked however it was built
(:func:`~ttscale.spectra.check_covariance`). Results never contain ``nan`` for valid inputs: a
value too large for the dtype is ``inf`` (powers ``||B^k||_F²`` are computed with an exact
power-of-two rescaling, see :func:`limit_error`). A singular covariance has ``Hard = inf``
(:func:`~ttscale.spectra.hardness`), and the hardness-based bounds degrade gracefully rather than
raising: :func:`one_step_error_bound` is ``inf``, :func:`contraction_rate` is ``1`` (no contraction guaranteed),
:func:`scaling_law_error` is ``d`` and :func:`matching_k` is ``inf`` (``0`` when ``k_long = 0``).
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import _checks
from ttscale.spectra import Covariance, check_covariance, hardness, stack


def _matrix(name: str, cov) -> jax.Array:
    """Dense ``[d, d]`` matrix of a covariance; a concrete dense input must be symmetric PSD."""
    if isinstance(cov, Covariance):
        return _one_cov(name, cov).matrix()
    M = _checks.square_matrix(name, cov)
    if _checks.is_concrete(M):
        _as_cov(name, M)  # raises a named ValueError if not symmetric PSD
    return M


def _as_cov(name: str, cov) -> Covariance:
    """A validated :class:`Covariance` from a Covariance or a dense symmetric PSD matrix."""
    if isinstance(cov, Covariance):
        return check_covariance(name, cov)
    from ttscale.spectra import from_matrix

    try:
        return from_matrix(cov)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{name}: {exc}") from None


def _one_cov(name: str, cov) -> Covariance:
    """:func:`_as_cov` of exactly one covariance (a stack is refused: ``vmap`` over it instead)."""
    cov = _as_cov(name, cov)
    if cov.eigenvalues.ndim != 1:
        raise ValueError(f"{name} must be one covariance (eigenvalues [d]), got a stack of shape "
                         f"{cov.eigenvalues.shape}; jax.vmap over it instead")
    return cov


def _gamma_spectrum(cov: Covariance, n) -> jax.Array:
    """Eigenvalues ``g = (1 + 1/n) λ + tr Λ / n`` of ``Γ(Λ, n)`` (same basis as ``Λ``): the one formula for ``Γ``."""
    n = jnp.asarray(n, cov.dtype)
    return (1 + 1 / n) * cov.eigenvalues + cov.trace()[..., None] / n


def second_moment(cov, n) -> jax.Array:
    """``E[S_n²] = (1 + 1/n) Λ² + (tr Λ / n) Λ = Γ(Λ, n) Λ`` for ``S_n = X Xᵀ/n``, ``x ~ N(0, Λ)`` (Isserlis); ``[d, d]``.

    ``n = inf`` gives ``Λ²``.
    """
    _checks.positive_count("n", n, allow_inf=True)
    cov = _one_cov("cov", cov)
    return cov._dense(_gamma_spectrum(cov, n) * cov.eigenvalues)


def gamma(cov, n) -> jax.Array:
    """``Γ(Λ, n) = (1 + 1/n) Λ + (tr Λ / n) I_d`` → ``[d, d]`` (so that ``E[S_n²] = Γ Λ``), as ``U diag(g) Uᵀ``."""
    _checks.positive_count("n", n, allow_inf=True)
    cov = _one_cov("cov", cov)
    return cov._dense(_gamma_spectrum(cov, n))


def gamma_inverse(cov, n) -> jax.Array:
    """``Γ(Λ, n)⁻¹`` (the one-task learned preconditioner), from the spectrum: ``U diag(1/g) Uᵀ`` with
    ``g = (1 + 1/n) λ + tr Λ / n``; cheap when ``Λ`` is diagonal.

    ``Γ`` is singular exactly when ``g`` has a zero (``λ_min = 0`` with ``n = inf``, or ``Λ = 0``):
    a concrete such ``cov`` raises ``ValueError`` naming ``cov``.
    """
    _checks.positive_count("n", n, allow_inf=True)
    cov = _as_cov("cov", cov)
    g, inverse = _gamma_inverse(cov, _checks.float_array("n", n, cov.dtype))
    if _checks.is_concrete(g) and not np.all(np.asarray(g) > 0):
        raise ValueError(
            "cov: Γ(Λ, n) = (1 + 1/n) Λ + (tr Λ / n) I is singular (a zero eigenvalue of Λ with n = inf, "
            f"or Λ = 0; min eigenvalue of Γ {float(np.min(np.asarray(g))):.3g}), so it has no inverse"
        )
    return inverse


@jax.jit  # one program per shape, not one compile per operation
def _gamma_inverse(cov: Covariance, n) -> tuple[jax.Array, jax.Array]:
    g = _gamma_spectrum(cov, n)
    return g, cov._dense(1.0 / g)


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
    covs = check_covariance("covs", covs)
    if covs.eigenvalues.ndim != 2:
        raise ValueError(f"covs must be a stack of covariances [L, d], got eigenvalues of shape {covs.eigenvalues.shape}")
    L_tasks = covs.eigenvalues.shape[0]
    dtype = covs.dtype
    ns = _checks.float_array("ns", ns, dtype)
    ns = jnp.broadcast_to(ns, (L_tasks,)) if ns.ndim == 0 else ns
    probs = _checks.float_array("probs", probs, dtype)
    if ns.shape != (L_tasks,):
        raise ValueError(f"ns must have one prompt length per task ({L_tasks}), got shape {ns.shape}")
    if probs.shape != (L_tasks,):
        raise ValueError(f"probs must have one probability per task ({L_tasks}), got shape {probs.shape}")
    _checks.positive_count("ns", ns, allow_inf=True)
    check_simplex("probs", probs)
    _checks.real_number("noise", noise, minimum=0)
    Lbar, Q = _mixture_moments(covs, ns, probs, _checks.float_array("noise", noise, dtype))
    if _checks.is_concrete(Q):
        ev = np.linalg.eigvalsh(np.asarray((Q + Q.T) / 2, np.float64))
        if _singular(ev):
            raise ValueError("covs: the mixture's second moment Q is singular (the tasks with probs > 0 share a "
                             f"zero-variance direction; min eigenvalue {ev[0]:.3g}), so P = Λ̄ Q⁻¹ is undefined")
    return _right_solve(Lbar, Q)


@jax.jit  # one program per shape, not one compile per operation
def _mixture_moments(covs: Covariance, ns, probs, noise) -> tuple[jax.Array, jax.Array]:
    """``(Λ̄, Q)`` of :func:`mixture_preconditioner`."""
    mats = covs.matrix()
    second = jax.vmap(second_moment)(mats, ns) + (noise**2 / ns)[:, None, None] * mats
    return jnp.einsum("l,lij->ij", probs, mats), jnp.einsum("l,lij->ij", probs, second)


@jax.jit
def _right_solve(A, Q) -> jax.Array:
    """``A Q⁻¹`` (``Q`` invertible)."""
    return jnp.linalg.solve(Q.T, A.T).T


def check_simplex(name: str, probs, atol: float = 1e-5) -> None:
    """Raise ``ValueError`` unless a concrete ``probs`` is non-negative and sums to 1 (within ``atol``)."""
    _checks.simplex(name, probs, atol=atol, negative_atol=atol)


def _checked_iteration(P, test) -> tuple[jax.Array, jax.Array]:
    """Validated ``(P, Σ)``, dense ``[d, d]`` in ``P``'s dtype."""
    P = _checks.square_matrix("P", P)
    S = _matrix("test", test)
    if S.shape != P.shape:
        raise ValueError(f"P has shape {P.shape} but test has shape {S.shape}")
    return P, S.astype(P.dtype)


def _iteration(P, test) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Validated ``(P, Σ, B = I − PΣ)``, dense ``[d, d]`` in ``P``'s dtype."""
    P, S = _checked_iteration(P, test)
    return P, S, jnp.eye(P.shape[-1], dtype=P.dtype) - P @ S


@_checks.renamed_argument("Sigma", "test")
def iteration_matrix(P, test) -> jax.Array:
    """``B = I − P Σ`` (``m → ∞``): ``w − w_k = B^k w``."""
    return _iteration(P, test)[2]


def _power_norms(B: jax.Array, k_max: int) -> tuple[jax.Array, jax.Array]:
    """``(s, e)``, both ``[k_max + 1]``, with ``||B^k||_F² = s_k · 4^{e_k}`` exactly (``e`` int32).

    Rescaled power iteration: ``A_k = B^k / 2^{e_k}`` is renormalised after every product so that
    ``max |A_k| ∈ [½, 1)``. Scaling by powers of two is exact, so ``s_k = ||A_k||_F²`` carries the
    rounding of plain ``B @ A`` products and nothing else, while neither ``A_k`` nor ``s_k`` can
    overflow or underflow: ``||B^k||_F²`` far outside the dtype's range stays representable as
    ``(s, e)``, and ``log ||B^k||_F² = log s_k + 2 e_k log 2``.
    """
    _, fb = jnp.frexp(jnp.max(jnp.abs(B)))
    Bs = jnp.ldexp(B, -fb)

    def step(carry, _):
        A, e = carry
        out = (jnp.sum(A * A), e)
        A = Bs @ A
        _, f = jnp.frexp(jnp.max(jnp.abs(A)))  # f = 0 for A = 0: zeros stay zeros, s = 0
        return (jnp.ldexp(A, -f), e + fb + f), out

    init = (jnp.eye(B.shape[-1], dtype=B.dtype), jnp.zeros((), fb.dtype))
    _, (s, e) = jax.lax.scan(step, init, None, length=k_max + 1)
    return s, e


def _log_limit_error(B: jax.Array, k_max: int) -> tuple[jax.Array, jax.Array]:
    """``(||B^k||_F², log ||B^k||_F²)`` for ``k = 0..k_max``; the log is exact even where the value over/underflows."""
    s, e = _power_norms(B, k_max)
    log_err = jnp.log(s) + (2 * e).astype(s.dtype) * jnp.log(jnp.asarray(2.0, s.dtype))
    return jnp.ldexp(s, 2 * e), log_err


@_checks.renamed_argument("Sigma", "test")
def limit_error(P, test, k_max: int) -> jax.Array:
    """Exact ``m → ∞`` error ``E ||w_k − w||² = ||(I − PΣ)^k||_F² = tr(B^k B^{kᵀ})`` for ``k = 0..k_max``.

    Valid for any ``P`` and ``Σ`` (no commuting assumption); returns ``[k_max + 1]`` with
    entry 0 equal to ``d``. For ``Σ = Λ ∝ I`` and ``P = Γ⁻¹`` it is ``d r^{2k}``,
    ``r = (1 + Hard)/(n + 1 + Hard)``. Computed by a rescaled power iteration (exact powers of
    two), so an error beyond the dtype's range is ``inf`` (or ``0``), never ``nan``.
    """
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    if isinstance(test, Covariance):  # validated here, made dense inside the program
        P, test = _checks.square_matrix("P", P), _one_cov("test", test)
        if (test.d, test.d) != P.shape:
            raise ValueError(f"P has shape {P.shape} but test has shape {(test.d, test.d)}")
    else:
        P, test = _checked_iteration(P, test)
    return _limit_error(P, test, k_max)


@functools.partial(jax.jit, static_argnums=2)  # one program per shape, not one compile per operation
def _limit_error(P, test, k_max: int) -> jax.Array:
    S = (test.matrix() if isinstance(test, Covariance) else test).astype(P.dtype)
    return _log_limit_error(jnp.eye(P.shape[-1], dtype=P.dtype) - P @ S, k_max)[0]


@_checks.renamed_argument("Sigma", "test")
def one_step_error(P, test, m, noise=0.0) -> jax.Array:
    """Exact finite-``m`` error at ``k = 1``: ``d − 2 tr(PΣ) + tr(P E[S_m²] Pᵀ) + σ² tr(P Σ Pᵀ)/m``.

    ``E[S_m²] = (1 + 1/m) Σ² + (tr Σ / m) Σ``; ``m = inf`` gives ``limit_error(P, Σ, 1)[1]``;
    ``σ = noise`` (finite, ``>= 0``) is the label-noise standard deviation (0 in the paper).
    Evaluated as a sum of non-negative terms,
    ``||I − PΣ||_F² + (||PΣ||_F² + (tr Σ + σ²) ||PΣ^{1/2}||_F²) / m``, so it never cancels to a
    negative value or ``nan``; it is ``inf`` where it overflows.
    """
    _checks.positive_count("m", m, allow_inf=True)
    _checks.real_number("noise", noise, minimum=0)
    P = _checks.square_matrix("P", P)
    cov = _as_cov("test", test).astype(P.dtype)
    if cov.eigenvalues.shape != P.shape[-1:]:
        raise ValueError(f"P has shape {P.shape} but test has dimension {cov.eigenvalues.shape}")
    return _one_step_error(P, cov, _checks.float_array("m", m, P.dtype), _checks.float_array("noise", noise, P.dtype))


@jax.jit  # one program per shape, not one compile per operation
def _one_step_error(P, cov: Covariance, m, noise) -> jax.Array:
    S = cov.matrix()
    PS, PR = P @ S, P @ cov.sqrt_matrix()
    B = jnp.eye(P.shape[-1], dtype=P.dtype) - PS
    excess = jnp.sum(PS * PS) + (jnp.trace(S) + noise**2) * jnp.sum(PR * PR)  # m × (finite-m excess)
    inv_m = 1 / m
    return jnp.sum(B * B) + jnp.where(inv_m == 0, jnp.zeros_like(excess), excess * inv_m)


def one_step_error_bound(cov, n, m) -> jax.Array:
    """Theorem 3.3 bound (``k = 1``, ``Σ = Λ``): ``(d/n²)(1 + Hard)² + (d/m)(1 + Hard)``.

    ``inf`` for a singular ``Λ`` (``Hard = inf``); the second term is 0 for ``m = inf``.
    """
    _checks.positive_count("n", n)
    _checks.positive_count("m", m, allow_inf=True)
    cov = _as_cov("cov", cov)
    H = hardness(cov)
    d = cov.d
    n = jnp.asarray(n, cov.dtype)
    m = jnp.asarray(m, cov.dtype)
    second = jnp.where(jnp.isinf(m), jnp.zeros_like(H), (d / m) * (1 + H))
    return (d / n**2) * (1 + H) ** 2 + second


def contraction_rate(cov, n) -> jax.Array:
    """Per-step contraction of Corollary 3.5: ``r = (1 + Hard)/(n + 1 + Hard) = (1 + n/(1 + Hard))^{-1}``.

    ``r = 1`` (no contraction guaranteed) for a singular ``Λ`` (``Hard = inf``), also with ``n = inf``.
    """
    _checks.positive_count("n", n, allow_inf=True)
    cov = _as_cov("cov", cov)
    H = hardness(cov)
    r = 1.0 / (1.0 + jnp.asarray(n, cov.dtype) / (1.0 + H))
    return jnp.where(jnp.isinf(H), jnp.ones_like(r), r)


def scaling_law_error(cov, n, k) -> jax.Array:
    """Corollary 3.5 scaling law (``Σ = Λ``, ``m → ∞``): ``d (1 + n/(1 + Hard))^{-2k}``.

    Exact for ``Λ ∝ I``. ``k >= 0`` (``inf`` allowed) may be an array (e.g. ``jnp.arange(k_max + 1)``).
    """
    _checks.real_number("k", k, minimum=0, allow_inf=True)
    cov = _as_cov("cov", cov)
    r = contraction_rate(cov, n)
    k = _checks.float_array("k", k, cov.dtype)
    return cov.d * r ** (2 * k)


def _deprecated_alias(old: str, new: Callable) -> Callable:
    """``old`` (a paper-number name) → ``new`` (the name that says the math), warning once per call site."""

    @functools.wraps(new)
    def alias(*args, **kwargs):
        warnings.warn(f"ttscale.theory.{old} is deprecated; use {new.__name__} (same formula)", DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated alias of :func:`{new.__name__}` (kept one release)."
    return alias


thm33_bound = _deprecated_alias("thm33_bound", one_step_error_bound)
cor35_rate = _deprecated_alias("cor35_rate", contraction_rate)
cor35_bound = _deprecated_alias("cor35_bound", scaling_law_error)


def matching_k(cov, n_short, n_long, k_long=1) -> jax.Array:
    """Steps ``k`` at which training length ``n_short`` matches ``n_long`` at ``k_long`` steps under Cor 3.5.

    Solves ``r(n_short)^{2k} = r(n_long)^{2 k_long}``: ``k = k_long · log r(n_long) / log r(n_short)``.
    For ``Λ = I``, ``d = 10``: ``matching_k(identity(10), 10, 30) ≈ 2.04``. ``k_long`` must be finite
    and ``>= 0``. Degenerate cases (never ``nan``): ``0`` when ``k_long = 0``; ``inf`` when
    ``r(n_short) = 1`` (the bound for ``n_short`` never contracts, so it never catches up; e.g. a
    singular ``Λ``, ``Hard = inf``); ``0`` when only ``r(n_long) = 1``; ``k_long`` when both rates
    are 0 (``n_short = n_long = inf``).
    """
    _checks.real_number("k_long", k_long, minimum=0)
    a = jnp.log(contraction_rate(cov, n_long))
    b = jnp.log(contraction_rate(cov, n_short))
    k_long = _checks.float_array("k_long", k_long, a.dtype)
    safe_b = jnp.where(b == 0, -1.0, b)
    k = k_long * a / safe_b
    k = jnp.where(jnp.isinf(a) & jnp.isinf(b), k_long, k)
    k = jnp.where(a == 0, jnp.zeros_like(k), k)
    k = jnp.where(b == 0, jnp.inf, k)
    return jnp.where(k_long == 0, jnp.zeros_like(k), k)


def _singular(ev: np.ndarray) -> bool:
    """Whether ascending eigenvalues ``ev`` of a symmetric matrix show it singular or indefinite.

    The threshold is float64 round-off (``10 d ε₆₄ max |λ|``), not the matrix's dtype: an
    ill-conditioned but invertible float32 matrix still has a finite inverse and is accepted.
    """
    return not ev[0] > 10 * ev.shape[-1] * float(np.finfo(np.float64).eps) * max(abs(ev[-1]), 1e-300)


def _positive_definite(name: str, M) -> jax.Array:
    """A square matrix that, when concrete, is symmetric positive definite (``ValueError`` naming ``name`` otherwise)."""
    M = _checks.square_matrix(name, M)
    if _checks.is_concrete(M):
        Mn = np.asarray(M, np.float64)
        eps = float(jnp.finfo(M.dtype).eps)
        d = Mn.shape[0]
        scale = max(float(np.max(np.abs(Mn))), 1e-300)
        asym = float(np.max(np.abs(Mn - Mn.T)))
        if asym > 100 * eps * scale * d:
            raise ValueError(f"{name} must be symmetric positive definite; max |M − Mᵀ| = {asym:.3e}")
        ev = np.linalg.eigvalsh((Mn + Mn.T) / 2)
        if _singular(ev):
            raise ValueError(f"{name} must be symmetric positive definite; min eigenvalue {ev[0]:.3e} "
                             f"(max {ev[-1]:.3e}) is not positive")
    return M


def _inverse_sqrt_psd(M: jax.Array) -> jax.Array:
    eig, U = jnp.linalg.eigh((M + M.T) / 2)
    eig = jnp.maximum(eig, jnp.finfo(M.dtype).tiny)  # only reachable under a trace (concrete Γ is checked PD)
    return (U / jnp.sqrt(eig)[None, :]) @ U.T


@_checks.renamed_argument("Sigma", "test")
def overthinking_matrix(Gamma, test) -> jax.Array:
    """``M = I − Γ^{-1/2} Σ Γ^{-1/2}`` (Remark 4.1), symmetric ``[d, d]``; ``Γ`` symmetric positive definite."""
    G = _positive_definite("Gamma", Gamma)
    S = _matrix("test", test).astype(G.dtype)
    if S.shape != G.shape:
        raise ValueError(f"Gamma has shape {G.shape} but test has shape {S.shape}")
    R = _inverse_sqrt_psd(G)
    return jnp.eye(G.shape[-1], dtype=G.dtype) - R @ S @ R


@_checks.renamed_argument("Sigma", "test")
def overthinking_term(Gamma, test, k) -> jax.Array:
    """Remark 4.1's ``tr(M^{2k})``, ``M = I − Γ^{-1/2} Σ Γ^{-1/2}``; ``k >= 0`` scalar or array (``inf`` allowed).

    Equals :func:`limit_error` (with ``P = Γ⁻¹``) only when ``Γ`` and ``Σ`` commute; in
    general the exact ``m → ∞`` error is ``tr(M^k Γ M^k Γ⁻¹)``. It grows without bound iff
    ``Γ^{-1/2} Σ Γ^{-1/2}`` has an eigenvalue above 2. Computed as ``Σ_i |μ_i|^{2k}`` over the
    eigenvalues ``μ`` of ``M`` (``inf`` on overflow, never ``nan``). A concrete ``Γ`` that is not
    symmetric positive definite raises ``ValueError`` naming ``Gamma``.
    """
    _checks.real_number("k", k, minimum=0, allow_inf=True)
    mu = jnp.abs(jnp.linalg.eigvalsh(overthinking_matrix(Gamma, test)))
    k = _checks.float_array("k", k, mu.dtype)
    return jnp.sum(mu ** (2 * k[..., None]), axis=-1)


class BestK(NamedTuple):
    """Result of :func:`best_k`.

    ``k``: argmin over ``1..k_max`` of the ``m → ∞`` error (the first, on ties); ``error``: its
    value; ``turns_up``: the error *rises again after* ``k`` within the horizon — some
    ``k < j <= k_max`` has ``error_j > error_k · (1 + tol)`` (``tol`` of :func:`best_k`: rounding,
    not a rise) — i.e. more thinking hurts; ``spectral_radius``: ``ρ(I − PΣ)``, above 1 iff the
    error eventually diverges.
    """

    k: jax.Array
    error: jax.Array
    turns_up: jax.Array
    spectral_radius: jax.Array


@_checks.renamed_argument("Sigma", "test")
def best_k(P, test, k_max: int) -> BestK:
    """The number of CoT steps that minimises :func:`limit_error` over ``k = 1..k_max``.

    The argmin is taken over ``log ||B^k||_F²`` from the rescaled power iteration of
    :func:`limit_error`, so neither underflow (a falling error that reaches 0 in the dtype) nor
    overflow can fake a minimum. ``turns_up`` (see :class:`BestK`) compares logs with the rounding
    tolerance ``tol = 4 ε (k_max + 1)(d + ||P||_F ||Σ||_F)`` (``ε`` the dtype's epsilon: the relative
    rounding ``k`` products, and the rounding of ``B = I − PΣ`` itself, can accumulate), so a plateau
    (e.g. ``ρ(B) = 1``) is not a turn-up. When ``turns_up`` is false the error is non-increasing
    after ``k`` within the horizon (typically ``k = k_max``: "never turns up"; with
    ``spectral_radius ≤ 1`` and ``B`` normal it never does).
    """
    k_max = _checks.static_int("k_max", k_max, minimum=1)
    return _best_k_and_limit_error(P, test, k_max)[0]


def _best_k_and_limit_error(P, test, k_max: int):
    """``(best_k(P, Σ, k_max), limit_error(P, Σ, k_max))`` from one power iteration (:func:`on_grid` needs both)."""
    P, S, B = _iteration(P, test)
    all_errs, all_logs = _log_limit_error(B, k_max)
    errs, log_errs = all_errs[1:], all_logs[1:]
    log_errs = jnp.where(jnp.isnan(log_errs), jnp.inf, log_errs)
    idx = jnp.argmin(log_errs)
    tol = 4 * jnp.finfo(B.dtype).eps * (k_max + 1) * (B.shape[-1] + jnp.linalg.norm(P) * jnp.linalg.norm(S))
    later = jnp.arange(k_max) > idx
    turns_up = jnp.any(later & (log_errs > log_errs[idx] + tol))
    rho = jnp.max(jnp.abs(jnp.linalg.eigvals(B))).astype(B.dtype)
    return BestK(idx + 1, errs[idx], turns_up, rho), all_errs


@functools.partial(jax.jit, static_argnames=("k_max",))
def on_grid(P, train: Covariance, test: Covariance, ns, ms, noise, *, k_max: int) -> dict:
    """Every closed form on a grid of cells: ``P [S, N, d, d]`` (each cell's preconditioner), stacked training
    and test covariances ``[S, d]``, ``ns [N]``, ``ms [M]``, label noise ``σ`` → a dict of arrays.

    ``limit_error``, ``scaling_law_error``, ``overthinking_term [S, N, k_max + 1]`` (the latter with
    ``Γ = sym(P)⁻¹``), ``one_step_error [S, N, M]``, ``best_k``, ``turns_up``, ``spectral_radius [S, N]``
    (:func:`best_k`; ``best_k = 0`` when ``k_max = 0``), ``hardness [S]``. ``vmap`` of the functions above,
    one ``jit`` per shape (the sweep calls it in float64).
    """
    ks = jnp.arange(k_max + 1, dtype=P.dtype)
    Gamma = jnp.linalg.inv((P + jnp.swapaxes(P, -1, -2)) / 2)  # = Γ(Λ, n) for P = Γ⁻¹

    def cell(P, G, train, test, n):
        best, limit = _best_k_and_limit_error(P, test, max(k_max, 1))
        return dict(
            limit_error=limit[: k_max + 1],
            one_step_error=jax.vmap(lambda m: one_step_error(P, test, m, noise))(ms),
            overthinking_term=overthinking_term(G, test, ks),
            scaling_law_error=scaling_law_error(train, n, ks),
            best_k=best.k if k_max >= 1 else jnp.zeros((), jnp.int32),
            turns_up=best.turns_up if k_max >= 1 else jnp.zeros((), bool),
            spectral_radius=best.spectral_radius,
        )

    per_n = jax.vmap(cell, in_axes=(0, 0, None, None, 0))
    out = jax.vmap(per_n, in_axes=(0, 0, 0, 0, None))(P, Gamma, train, test, ns)
    out["hardness"] = hardness(train)
    return out
