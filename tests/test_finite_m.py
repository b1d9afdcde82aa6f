"""Finite-m theory (ttscale.finite_m): exact Wishart moments, the MP limit, divergence, the MP best k."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate
from scipy.linalg import eigvalsh_tridiagonal

from ttscale import finite_m as fm
from ttscale import prompts, spectra, theory
from ttscale.models import pseudo_newton


def _wishart_eigenvalues(rng, d, m, count):
    """Eigenvalues of ``S = Z Zᵀ/m`` (``Z [d, m]``, ``d <= m``) by the bidiagonal model of Silverstein (1985) /
    Dumitriu–Edelman (2002): ``Z`` has the singular values of the bidiagonal matrix with diagonal ``χ_{m−i}``
    and sub-diagonal ``χ_{d−1−i}`` — an independent, O(d) sampler of the same law."""
    a = np.sqrt(rng.chisquare(m - np.arange(d), size=(count, d)))
    b = np.sqrt(rng.chisquare(d - 1 - np.arange(d - 1), size=(count, d - 1)))
    diag = a**2
    diag[:, 1:] += b**2
    off = a[:, :-1] * b
    return np.stack([eigvalsh_tridiagonal(diag[i], off[i]) for i in range(count)]) / m


def _isotropic_statistics(seed, d, m, count, noise=0.0):
    """Statistics of isotropic prompts (``Σ = I``) from NumPy normals, through :func:`ttscale.prompts.whitened_statistics`."""
    rng = np.random.default_rng(seed)
    Z = jnp.asarray(rng.standard_normal((count, d, m)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((count, d)), jnp.float32)
    eps = jnp.asarray(rng.standard_normal((count, m)), jnp.float32) if noise else None
    return prompts.whitened_statistics(Z, w, eps, jnp.ones(d, jnp.float32), noise, m)


def test_wishart_moments_match_known_polynomials():
    d, m = 7, 13
    W = fm.wishart_trace_moments(d, m, 3)
    assert W[0] == d and W[1] == d * m
    assert W[2] == d * m * (d + m + 1)
    assert W[3] == d * m * (m * m + d * d + 3 * m * d + 3 * m + 3 * d + 4)  # real Wishart, e.g. Letac–Massam


def test_exact_k1_equals_one_step_closed_form():
    d, m, p, sigma = 6, 15, 0.37, 0.5
    with jax.enable_x64(True):
        ref = float(theory.one_step_error(p * jnp.eye(d), spectra.identity(d, jnp.float64), m, sigma))
    assert fm.exact_error(d, m, 1, p, sigma)[1] == pytest.approx(ref, rel=1e-12)


def test_exact_value_within_monte_carlo_error_at_d10():
    """The exact finite-(d, m) mean vs simulated prompts through the pseudo-Newton kernel (several k, m; one noisy)."""
    d, count, p = 10, 8000, 0.4
    for m, noise in ((20, 0.0), (40, 0.5)):
        stats = _isotropic_statistics(m, d, m, count, noise)
        errs = np.asarray(pseudo_newton.errors(pseudo_newton.PseudoNewtonParams(jnp.full((d,), p)), stats, 6), np.float64)
        exact = fm.exact_error(d, m, 6, p, noise)
        for k in (1, 3, 6):
            se = errs[:, k].std() / math.sqrt(count)
            assert abs(errs[:, k].mean() - exact[k]) < 4 * se, (m, noise, k, errs[:, k].mean(), exact[k], se)


def test_mp_closed_form_moments_and_atom():
    with jax.enable_x64(True):
        d, m, p = 30, 60, 0.45
        q = d / m
        # k = 1: d ∫ (1 − pλ)² dMP = d (1 − 2p + p² (1 + q))
        assert float(fm.mp_error(d, m, 1, p)[1]) == pytest.approx(d * (1 - 2 * p + p * p * (1 + q)), rel=1e-12)
        # m = inf: d (1 − p)^{2k}
        np.testing.assert_allclose(fm.mp_error(d, math.inf, 5, p), d * (1 - p) ** (2 * np.arange(6)), rtol=1e-12)
        # q = 2 > 1: the atom at 0 keeps d (1 − 1/q) = d − m for ever; the bulk converges for p λ₊ < 2
        d, m = 20, 10
        assert float(fm.mp_error(d, m, 400, 0.2)[400]) == pytest.approx(d - m, rel=1e-8)


def test_mp_quadrature_matches_adaptive_integration_with_noise():
    d, m, p, sigma = 10, 25, 0.6, 0.7
    q = d / m
    lo, hi = (1 - math.sqrt(q)) ** 2, (1 + math.sqrt(q)) ** 2
    dens = lambda x: math.sqrt(max((hi - x) * (x - lo), 0)) / (2 * math.pi * q * x)  # noqa: E731
    with jax.enable_x64(True):
        mp = np.asarray(fm.mp_error(d, m, 9, p, sigma))
    for k in (0, 1, 4, 9):
        f = lambda x: (1 - p * x) ** (2 * k) + sigma**2 / m * (1 - (1 - p * x) ** k) ** 2 / x  # noqa: E731
        ref = d * integrate.quad(lambda x: f(x) * dens(x), lo, hi, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
        assert mp[k] == pytest.approx(ref, rel=1e-8)


def test_simulation_approaches_mp_with_gap_like_one_over_d():
    """Mean of tr (I − S/2)^{16} at q = 1/2 (m = 2d; p = 1/γ for n = d + 1) vs d ∫ … dMP: gap·d/MP constant."""
    rng = np.random.default_rng(7)
    k, p, count = 8, 0.5, 1200
    scaled, ses = [], []
    for d in (50, 100, 200):
        assert fm.isotropic_step(d, d + 1) == pytest.approx(p)
        ev = _wishart_eigenvalues(rng, d, 2 * d, count)
        sim = np.sum((1 - p * ev) ** (2 * k), axis=1)
        with jax.enable_x64(True):
            mp = float(fm.mp_error(d, 2 * d, k, p)[k])
        se = sim.std() / math.sqrt(count)
        gap = sim.mean() - mp
        assert gap > 5 * se, (d, gap, se)  # a real, resolved finite-d gap
        scaled.append(gap / mp * d)
        ses.append(se / mp * d)
    scaled, ses = np.array(scaled), np.array(ses)
    centre = np.average(scaled, weights=1 / ses**2)
    assert np.all(np.abs(scaled - centre) < 4 * ses), (scaled, ses)  # relative gap ∝ 1/d within noise
    assert scaled[0] / 50 > 3 * scaled[2] / 200  # the relative gap itself shrinks (4× expected)


def test_divergence_probability_tracy_widom_vs_simulation():
    d, m, count = 10, 40, 2000
    a, b = math.sqrt(m - 1), math.sqrt(d)
    mu, s = (a + b) ** 2, (a + b) * (1 / a + 1 / b) ** (1 / 3)
    p = 2 * m / (mu - 1.2 * s)  # λ_max at the centre of the TW law: P ≈ ½
    pred = float(fm.divergence_probability(d, m, p))
    assert 0.05 < pred < 0.95
    stats = _isotropic_statistics(11, d, m, count)
    frac, se = fm.divergence_fraction(p * jnp.eye(d), stats)
    assert abs(frac - pred) < 0.05 + 3 * se, (frac, pred, se)
    # the radius is the eigenvalue test of the iteration matrix, prompt by prompt
    rad = np.asarray(fm.spectral_radii(p * jnp.eye(d), stats))[:5]
    S = np.asarray(stats.S(), np.float64)[:5]
    ref = [np.max(np.abs(np.linalg.eigvals(np.eye(d) - p * Si))) for Si in S]
    np.testing.assert_allclose(rad, ref, rtol=1e-4)
    # m = inf: S = I, deterministic
    assert float(fm.divergence_probability(d, math.inf, 2.5)) == 1.0
    assert float(fm.divergence_probability(d, math.inf, 1.5)) == 0.0


def test_mp_best_k_is_the_argmin_of_an_independent_quadrature():
    d, m, p, sigma = 10, 100, 0.5, 0.5
    q = d / m
    lo, hi = (1 - math.sqrt(q)) ** 2, (1 + math.sqrt(q)) ** 2
    dens = lambda x: math.sqrt(max((hi - x) * (x - lo), 0)) / (2 * math.pi * q * x)  # noqa: E731
    ref = [integrate.quad(lambda x: ((1 - p * x) ** (2 * k) + sigma**2 / m * (1 - (1 - p * x) ** k) ** 2 / x)
                          * dens(x), lo, hi, epsabs=1e-13, limit=200)[0] for k in range(1, 31)]
    best = fm.mp_best_k(d, m, 30, p, sigma)
    assert best.k == int(np.argmin(ref)) + 1 and best.turns_up and 1 < best.k < 30
    assert not fm.mp_best_k(d, m, 30, p).turns_up  # noiseless, p λ₊ < 2: the typical prompt never turns up
    assert fm.mp_best_k(d, 2 * d, 30, 0.8).edge > 2 and fm.mp_best_k(d, 2 * d, 30, 0.8).turns_up


def test_validation_names_the_argument():
    with pytest.raises(ValueError, match="p"):
        fm.mp_error(10, 20, 5, -1.0)
    with pytest.raises(ValueError, match="k_max"):
        fm.exact_error(10, 20, 40, 0.5)
    with pytest.raises(ValueError, match="j_max"):
        fm.wishart_trace_moments(10, 20, 100)
    with pytest.raises(ValueError, match="m"):
        fm.mp_error(10, 0, 5, 0.5)
    stats = prompts.Statistics(jnp.ones((4, 3, 3)), None, None, jnp.zeros((4, 3)), jnp.ones(3), jnp.asarray(0.0), 5.0)
    with pytest.raises(ValueError, match="P"):
        fm.spectral_radii(jnp.array([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]]), stats)
    with pytest.raises(TypeError, match="statistics"):
        fm.spectral_radii(jnp.eye(3), "x")
