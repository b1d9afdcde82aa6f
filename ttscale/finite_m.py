"""Finite-``m`` theory of test-time CoT: random-matrix closed forms (docs/science.md §10).

At ``m → ∞`` the CoT error is ``||(I − PΣ)^k||_F²`` (:func:`ttscale.theory.limit_error`); at a finite
prompt length ``m`` the iteration matrix is ``I − P S_m`` with ``S_m = X Xᵀ/m`` random. In the
rotation-invariant case — ``Σ = I``, ``P = p I`` (``p = 1/γ``, ``γ = Γ(I, n)_{11} = 1 + (1 + d)/n``:
the trained LSA, :func:`isotropic_step`; or gradient descent, ``p = η``) — the error is a spectral
function of the Wishart matrix ``S = Z Zᵀ/m`` (``Z [d, m]`` standard normal). With
``e_k = ŵ_k − w = −(I − pS)^k w + Σ_{j<k} (I − pS)^j p ξ``, ``ξ = b − S w = σ Z ε/m``,
``E[ξ ξᵀ | Z] = σ² S/m`` and ``w ~ N(0, I_d)`` independent of ``S``:

    E||ŵ_k − w||² = E tr f_k(S),   f_k(λ) = (1 − pλ)^{2k} + (σ²/m) (1 − (1 − pλ)^k)² / λ,

(the second term is a polynomial in ``λ``: ``(1 − (1 − pλ)^k)/λ`` is). Three evaluations:

* :func:`mp_error` — the proportional limit ``d ∫ f_k dMP_q``, ``q = d/m`` (Marchenko–Pastur, support
  ``[(1 − √q)², (1 + √q)²]`` plus an atom ``1 − 1/q`` at 0 when ``q > 1``), by Gauss–Chebyshev
  quadrature that is exact (to round-off) for the polynomial ``f_k``. It is the error of the *typical*
  prompt (the median, as ``d`` grows): the spectrum of one ``S`` concentrates on the MP law.
* :func:`exact_error` — the exact finite-``(d, m)`` *mean*, from the exact Wishart trace moments
  ``E tr S^j`` (:func:`wishart_trace_moments`) in rational arithmetic (no cancellation). It includes
  the rare prompts whose ``λ_max`` leaves the MP bulk, so it shows the mean's eventual blow-up.
* simulation (the sweep), which the tests compare with both.

Divergence: a prompt's CoT diverges iff ``ρ(I − P S) > 1``; for ``P`` symmetric positive definite the
eigenvalues ``μ`` of ``P S`` (those of ``P^{1/2} S P^{1/2}``) are ``≥ 0``, so it diverges iff
``μ_max > 2``. :func:`spectral_radii` measures it per prompt from the statistics;
:func:`divergence_probability` predicts ``P(λ_max(pS) > 2)`` in the isotropic case from the
Tracy–Widom law of ``λ_max`` (Johnstone 2001 centring/scaling, :func:`tw1_cdf`: Chiani 2014's shifted
gamma approximation of TW₁). :func:`mp_best_k` is the typical prompt's best ``k`` (argmin of
:func:`mp_error`).

Aligned diagonal spectra (``Σ = diag(s)``, ``P = diag(p)``) are **not** covered: with
``T = D^{1/2} S_Z D^{1/2}``, ``D = PΣ``, the error is ``E tr(P (I − T)^k P⁻¹ (I − T)^k)``. For ``P ∝ I``
(gradient descent) this is ``E tr (I − T)^{2k}``, a spectral function of a sample covariance with
population ``D``, whose limit is the Marchenko–Pastur–Silverstein law (tractable through the
Silverstein fixed-point equation; not implemented here). For the trained ``P = Γ⁻¹`` (not ``∝ I``
unless ``Λ ∝ I``) the weights ``P, P⁻¹`` sit between the two resolvent factors, so its deterministic
equivalent needs a two-resolvent (second-order) equivalent ``E tr(A (T − z)⁻¹ B (T − w)⁻¹)``, not a
single spectral law: no one-dimensional integral like :func:`mp_error` exists for it.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import _checks, theory
from ttscale.spectra import identity

#: TW₁ ≈ Gamma(shape, scale) − shift (Chiani 2014, real case): matches TW₁'s mean, variance and skewness.
TW1_GAMMA = (46.446, 0.186054, 9.84801)

#: Largest ``2 k_max`` :func:`exact_error` accepts (its cost grows like the number of partitions reached).
EXACT_MAX_DEGREE = 48


# ============================================================================ the step of the trained LSA
def isotropic_step(d: int, n) -> float:
    """``p = 1/γ`` with ``γ = Γ(I_d, n)_{11} = 1 + (1 + d)/n`` (:func:`ttscale.theory.gamma`, float64): ``P = Γ⁻¹ = p I``."""
    d = _checks.static_int("d", d, minimum=1)
    _checks.positive_count("n", n, allow_inf=True)
    with jax.enable_x64(True):
        g = theory.gamma(identity(d, jnp.float64), float(n))
        return float(1.0 / np.asarray(g)[0, 0])


def _check_common(d, m, k_max, p, noise):
    d = _checks.static_int("d", d, minimum=1)
    _checks.positive_count("m", m, allow_inf=True)
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    _checks.real_number("p", p, minimum=0, exclusive=True)
    _checks.real_number("noise", noise, minimum=0)
    return d, k_max


# ============================================================================ Marchenko–Pastur
@functools.partial(jax.jit, static_argnames=("k_max", "nodes"))
def _mp_error(d, q, inv_m, p, noise, *, k_max: int, nodes: int):
    dtype = jnp.result_type(float)
    i = jnp.arange(1, nodes + 1, dtype=dtype)
    theta = i * jnp.pi / (nodes + 1)
    x, wts = jnp.cos(theta), jnp.pi / (nodes + 1) * jnp.sin(theta) ** 2  # Gauss–Chebyshev (2nd kind)
    lam = (1 + q) + 2 * jnp.sqrt(q) * x  # MP support; λ > 0 at every node
    u = 1 - p * lam
    ks = jnp.arange(k_max + 1, dtype=dtype)[:, None]
    # ∫ f dMP_q = f(0) + (2/π) ∫ h(1 + q + 2√q x) √(1 − x²) dx,  h(λ) = (f(λ) − f(0))/λ  (atom included)
    au = jnp.abs(u)
    log_au = jnp.log(jnp.where(au > 0, au, 1.0))
    pow2k = jnp.where(au > 0, jnp.exp(2 * ks * log_au), jnp.where(ks == 0, 1.0, 0.0))  # |u|^{2k}
    h_signal = jnp.where(ks == 0, 0.0, (pow2k - 1) / lam)
    signal = 1 + (2 / jnp.pi) * jnp.sum(wts * h_signal, axis=-1)
    uk = jnp.where(ks == 0, 1.0, jnp.sign(u) ** ks * jnp.sqrt(pow2k))  # u^k
    h_noise = ((1 - uk) / lam) ** 2  # f_noise(λ) = λ h_noise(λ), f_noise(0) = 0
    noise_term = (2 / jnp.pi) * jnp.sum(wts * h_noise, axis=-1)
    return d * (signal + noise**2 * inv_m * noise_term)


def mp_error(d: int, m, k_max: int, p, noise=0.0) -> jax.Array:
    """Marchenko–Pastur limit of the isotropic CoT error, ``k = 0..k_max`` → ``[k_max + 1]``.

    ``d ∫ [(1 − pλ)^{2k} + (σ²/m)(1 − (1 − pλ)^k)²/λ] dMP_q(λ)``, ``q = d/m``, for ``Σ = I``,
    ``P = p I`` (``p = isotropic_step(d, n)`` for the trained LSA, ``p = η`` for gradient descent),
    ``σ = noise``. ``m = inf`` gives ``d (1 − p)^{2k}`` (``= theory.limit_error``). Quadrature: with
    ``λ = 1 + q + 2√q x`` and ``h(λ) = (f(λ) − f(0))/λ`` (a polynomial of degree ``< 2k``),
    ``∫ f dMP_q = f(0) + (2/π) ∫ h(λ(x)) √(1 − x²) dx`` — the atom ``1 − 1/q`` at 0 (``q > 1``) included
    — and ``k_max + 1`` Gauss–Chebyshev (2nd kind) nodes integrate it exactly; round-off is
    ``≈ ε d max|f|`` absolute. It is the typical prompt's error (module docstring), not the mean.
    Computed in the default float dtype (float64 under ``jax.enable_x64``).
    """
    d, k_max = _check_common(d, m, k_max, p, noise)
    inv_m = 0.0 if math.isinf(float(m)) else 1.0 / float(m)
    return _mp_error(float(d), d * inv_m, inv_m, float(p), float(noise), k_max=k_max, nodes=k_max + 1)


class MPBestK(NamedTuple):
    """Result of :func:`mp_best_k`: ``k`` (argmin over ``1..k_max``), ``error`` (its MP value), ``turns_up``
    (the MP error rises again after ``k`` within the horizon, by more than ``1e-9`` relative) and ``edge``
    (``p λ₊``, ``λ₊ = (1 + √q)²``: the typical prompt diverges iff ``p λ₊ > 2``)."""

    k: int
    error: float
    turns_up: bool
    edge: float


def mp_best_k(d: int, m, k_max: int, p, noise=0.0) -> MPBestK:
    """The typical prompt's best number of CoT steps: argmin over ``k = 1..k_max`` of :func:`mp_error`."""
    k_max = _checks.static_int("k_max", k_max, minimum=1)
    with jax.enable_x64(True):
        err = np.asarray(mp_error(d, m, k_max, p, noise), np.float64)[1:]
    k = int(np.argmin(err))
    turns_up = bool(np.any(err[k + 1:] > err[k] * (1 + 1e-9)))
    q = 0.0 if math.isinf(float(m)) else d / float(m)
    return MPBestK(k + 1, float(err[k]), turns_up, float(p) * (1 + math.sqrt(q)) ** 2)


# ============================================================================ exact Wishart moments
def wishart_trace_moments(d: int, m: int, j_max: int) -> list:
    """Exact ``E tr (Z Zᵀ)^j`` for ``j = 0..j_max`` (Python ints), ``Z [d, m]`` real standard normal.

    From the Stein (Gaussian integration by parts) identity on ``W = Z Zᵀ``, for moments of products of
    traces ``M(a, μ) = E[tr W^a Π_{c ∈ μ} tr W^c]`` (``tr W^0 = d``), ``a = k + 1 ≥ 1``:

        M(k + 1, μ) = (m + k) M(k, μ) + Σ_{r=0}^{k−1} M(r + 1, k − 1 − r, μ) + Σ_{c ∈ μ} 2c M(k + c, μ − c),

    (e.g. ``E tr W = dm``, ``E tr W² = dm(d + m + 1)``, ``E (tr W)² = dm(dm + 2)``), memoised over the
    partitions reached from ``(j_max)`` — exact integers, no cancellation. Cost grows like the number of
    partitions reached: 0.4 s at ``j_max = 32``, ~10 s at 48 (the cap, :data:`EXACT_MAX_DEGREE`), minutes at 64.
    Cached per ``(d, m, j_max)``.
    """
    d = _checks.static_int("d", d, minimum=1)
    m = _checks.static_int("m", m, minimum=1)
    j_max = _checks.static_int("j_max", j_max, minimum=0)
    if j_max > EXACT_MAX_DEGREE:
        raise ValueError(f"j_max must be <= {EXACT_MAX_DEGREE} (the exact recursion's cost grows like the number of "
                         f"integer partitions), got {j_max}")
    return list(_trace_moments(d, m, j_max))


@functools.lru_cache(maxsize=64)
def _trace_moments(d: int, m: int, j_max: int) -> tuple:
    memo: dict = {(): 1}

    def M(parts: tuple) -> int:  # parts: sorted descending, all >= 1
        if parts in memo:
            return memo[parts]
        a, rest = parts[0], parts[1:]
        k = a - 1

        def val(*new):
            extra = [x for x in new if x > 0]
            zeros = len(new) - len(extra)
            return d**zeros * M(tuple(sorted(extra + list(rest), reverse=True)))

        out = (m + k) * val(k)
        for r in range(k):
            out += val(r + 1, k - 1 - r)
        for i, c in enumerate(rest):
            others = rest[:i] + rest[i + 1:]
            out += 2 * c * _with(M, k + c, others, d)
        memo[parts] = out
        return out

    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20 * (j_max + 10)))
    try:
        return tuple([d] + [M((j,)) for j in range(1, j_max + 1)])
    finally:
        sys.setrecursionlimit(old)


def _with(M, a: int, others: tuple, d: int) -> int:
    """``M`` of the partition ``{a} ∪ others`` (``a = 0`` contributes a factor ``d``)."""
    if a == 0:
        return d * M(tuple(others))
    return M(tuple(sorted((a,) + tuple(others), reverse=True)))


def _fraction(name: str, x) -> Fraction:
    if isinstance(x, Fraction):
        return x
    if isinstance(x, (int, np.integer)):
        return Fraction(int(x))
    return Fraction(float(x))  # a float is a dyadic rational: exact


def exact_error(d: int, m: int, k_max: int, p, noise=0.0) -> np.ndarray:
    """Exact finite-``(d, m)`` mean error ``E tr f_k(S)`` of isotropic CoT (module docstring), ``k = 0..k_max``.

    ``Σ = I``, ``P = p I``, ``S = Z Zᵀ/m``; returns float64 ``[k_max + 1]``. ``E tr (I − pS)^{2k} =
    Σ_j C(2k, j) (−p)^j E tr S^j`` and the noise term ``(σ²/m) E tr [(1 − (1 − pS)^k)² S⁻¹]`` (a
    polynomial in ``S``) are summed in exact rational arithmetic from :func:`wishart_trace_moments`
    (``p``, ``σ`` as given: a float is taken as its exact binary value, or pass a ``Fraction``), so
    the binomial expansion's cancellation costs nothing; the result is rounded once. ``2 k_max`` is at
    most :data:`EXACT_MAX_DEGREE`. Only finite ``m`` (``m = inf``: use :func:`ttscale.theory.limit_error`).
    """
    d = _checks.static_int("d", d, minimum=1)
    m = _checks.static_int("m", m, minimum=1)
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    if not isinstance(p, Fraction):
        _checks.real_number("p", p, minimum=0, exclusive=True)
    if not isinstance(noise, Fraction):
        _checks.real_number("noise", noise, minimum=0)
    if 2 * k_max > EXACT_MAX_DEGREE:
        raise ValueError(f"k_max must be <= {EXACT_MAX_DEGREE // 2} for the exact value, got {k_max}")
    p, s2 = _fraction("p", p), _fraction("noise", noise) ** 2
    W = wishart_trace_moments(d, m, 2 * k_max)
    mom = [Fraction(W[j], m**j) for j in range(2 * k_max + 1)]  # E tr S^j
    out = []
    for k in range(k_max + 1):
        signal = sum(Fraction(math.comb(2 * k, j)) * (-p) ** j * mom[j] for j in range(2 * k + 1))
        # (1 − (1 − pλ)^k)/λ = Σ_{j=1}^{k} C(k, j) (−1)^{j+1} p^j λ^{j−1} =: Σ_i c_i λ^i; f_noise = λ (Σ c_i λ^i)²
        c = [Fraction(math.comb(k, i + 1)) * (-1) ** i * p ** (i + 1) for i in range(k)]
        noise_term = Fraction(0)
        if s2 and k:
            for i, ci in enumerate(c):
                for j, cj in enumerate(c):
                    noise_term += ci * cj * mom[i + j + 1]
            noise_term *= s2 / m
        out.append(float(signal + noise_term))
    return np.asarray(out, np.float64)


# ============================================================================ divergence
def spectral_radii(P, statistics, method: str = "eigh") -> jax.Array:
    """``ρ(I − P S)`` per prompt → ``[b]``, from the statistics only (``S = A S_Z Aᵀ``; never ``w``).

    ``P [d, d]`` (or ``[d]`` diagonal), ``statistics`` a :class:`~ttscale.prompts.Statistics` batch.
    ``method="eigh"`` (``P`` symmetric positive semi-definite, e.g. ``Γ⁻¹``, ``η I``): the eigenvalues of
    ``P S`` are those of ``R S R``, ``R = P^{1/2}`` — ``jnp.linalg.eigvalsh`` per prompt, so
    ``ρ = max(|1 − μ_min|, |1 − μ_max|)``; a concrete ``P`` that is not symmetric raises ``ValueError``.
    ``method="eig"``: any ``P`` (e.g. a mixture's ``Λ̄Q⁻¹``), ``jnp.linalg.eigvals`` (CPU only in JAX).
    The prompt's CoT diverges iff the radius exceeds 1 (:func:`divergence_fraction`).
    """
    from ttscale.prompts import Statistics

    if not isinstance(statistics, Statistics):
        raise TypeError(f"statistics must be ttscale.prompts.Statistics, got {type(statistics).__name__}")
    if method not in ("eigh", "eig"):
        raise ValueError(f"method must be 'eigh' or 'eig', got {method!r}")
    d = statistics.d
    P = jnp.asarray(P)
    if P.ndim == 1:
        if P.shape != (d,):
            raise ValueError(f"P has shape {P.shape} but the statistics have d={d}")
        P = jnp.diag(P)
    P = _checks.square_matrix("P", P, d).astype(statistics.w.dtype)
    if method == "eigh" and _checks.is_concrete(P):
        Pn = np.asarray(P, np.float64)
        if np.max(np.abs(Pn - Pn.T)) > 1e-5 * max(np.max(np.abs(Pn)), 1e-300):
            raise ValueError("P must be symmetric for method='eigh' (use method='eig')")
    S = statistics.S()
    if method == "eig":
        ev = jnp.linalg.eigvals(jnp.eye(d, dtype=S.dtype) - P @ S)
        return jnp.max(jnp.abs(ev), axis=-1).astype(S.dtype)
    lam, U = jnp.linalg.eigh((P + P.T) / 2)
    R = (U * jnp.sqrt(jnp.maximum(lam, 0))[None, :]) @ U.T
    M = jnp.einsum("ij,bjk,kl->bil", R, S, R)
    mu = jnp.linalg.eigvalsh((M + jnp.swapaxes(M, -1, -2)) / 2)
    return jnp.maximum(jnp.abs(1 - mu[..., 0]), jnp.abs(1 - mu[..., -1]))


def divergence_fraction(P, statistics, method: str = "eigh") -> tuple[float, float]:
    """Simulated ``P(ρ(I − PS) > 1)``: the fraction of prompts whose CoT diverges and its standard error."""
    rad = np.asarray(spectral_radii(P, statistics, method))
    frac = float(np.mean(rad > 1))
    return frac, math.sqrt(max(frac * (1 - frac), 0.0) / max(rad.size - 1, 1))


def tw1_cdf(x) -> jax.Array:
    """CDF of the Tracy–Widom law TW₁ (real case), by Chiani (2014)'s shifted gamma approximation.

    ``TW₁ ≈ Γ(κ, θ) − α`` with ``(κ, θ, α) = (46.446, 0.186054, 9.84801)`` (:data:`TW1_GAMMA`), the gamma
    law whose first three moments (mean −1.2065, variance 1.6078, skewness 0.2935) are TW₁'s; Chiani reports
    it accurate to about 10⁻³ in the CDF over the bulk of the law (less so far in the left tail, where
    the gamma has a hard edge at ``−α``).
    """
    k, theta, alpha = TW1_GAMMA
    x = jnp.asarray(x, jnp.result_type(float))
    z = jnp.maximum(x + alpha, 0) / theta
    return jax.scipy.special.gammainc(k, z)


def lambda_max_sf(d: int, m, t) -> jax.Array:
    """``P(λ_max(S) > t)``, ``S = Z Zᵀ/m``, ``Z [d, m]`` real standard normal, by the Tracy–Widom law.

    Johnstone (2001): with ``N = max(d, m)``, ``n = min(d, m)`` (``Z Zᵀ`` and ``Zᵀ Z`` share their non-zero
    eigenvalues), ``μ = (√(N − 1) + √n)²``, ``s = (√(N − 1) + √n)(1/√(N − 1) + 1/√n)^{1/3}``, and
    ``(λ_max(Z Zᵀ) − μ)/s ≈ TW₁`` (:func:`tw1_cdf`). ``m = inf`` (``S = I``): ``1`` if ``t < 1`` else ``0``.
    Needs ``max(d, m) >= 2``.
    """
    d = _checks.static_int("d", d, minimum=1)
    _checks.positive_count("m", m, allow_inf=True)
    t = jnp.asarray(t, jnp.result_type(float))
    if math.isinf(float(m)):
        return jnp.where(t < 1, 1.0, 0.0).astype(t.dtype)
    m = float(m)
    N, n = max(d, m), min(d, m)
    if N < 2:
        raise ValueError(f"lambda_max_sf needs max(d, m) >= 2, got d={d}, m={m}")
    a, b = math.sqrt(N - 1), math.sqrt(n)
    mu, s = (a + b) ** 2, (a + b) * (1 / a + 1 / b) ** (1 / 3)
    return 1 - tw1_cdf((m * t - mu) / s)


def divergence_probability(d: int, m, p) -> jax.Array:
    """Predicted probability that isotropic CoT (``Σ = I``, ``P = p I``) diverges on a prompt: ``P(λ_max(pS) > 2)``.

    :func:`lambda_max_sf` at ``t = 2/p``. The deterministic (``d → ∞``) prediction is the MP edge:
    divergence for the typical prompt iff ``p (1 + √(d/m))² > 2``.
    """
    _checks.real_number("p", p, minimum=0, exclusive=True)
    return lambda_max_sf(d, m, 2.0 / float(p))
