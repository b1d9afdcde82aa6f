import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttscale as tts
from tests.conftest import rtol_for


@pytest.mark.parametrize("n", [1, 10, 30])
@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_limit_error_is_d_r_2k_for_isotropic(dtype, n, scale):
    d = 10
    cov = tts.from_eigenvalues(jnp.full((d,), scale, dtype))
    P = tts.gamma_inverse(cov, n)
    k = jnp.arange(13)
    r = (1 + d) / (n + 1 + d)
    expected = d * r ** (2 * np.arange(13))
    np.testing.assert_allclose(tts.limit_error(P, cov, 12), expected, rtol=20 * rtol_for(dtype))
    np.testing.assert_allclose(tts.cor35_bound(cov, n, k), expected, rtol=20 * rtol_for(dtype))
    np.testing.assert_allclose(tts.overthinking_term(tts.gamma(cov, n), cov, k), expected, rtol=20 * rtol_for(dtype))


def test_cor35_upper_bounds_limit_error_for_aligned_spectra(dtype):
    for alpha in (0.5, 1.0, 2.0):
        cov = tts.rotated(tts.power_law(8, alpha, dtype=dtype), jax.random.key(int(alpha * 10)))
        for n in (5, 40):
            P = tts.gamma_inverse(cov, n)
            lim = tts.limit_error(P, cov, 10)
            bound = tts.cor35_bound(cov, n, jnp.arange(11))
            assert np.all(np.asarray(lim) <= np.asarray(bound) * (1 + 20 * rtol_for(dtype)))


def test_matching_k_for_identity_example():
    assert float(tts.matching_k(tts.identity(10), 10, 30)) == pytest.approx(2.0347, abs=1e-3)


def test_limit_error_general_form_and_commuting_overthinking(dtype):
    d = 6
    Lam = tts.power_law(d, 1.0, dtype=dtype)
    Sigma = tts.identity(d, dtype)
    Gamma = tts.gamma(Lam, 20)
    P = jnp.linalg.inv(Gamma)
    k = jnp.arange(9)
    # diagonal (commuting) case: Remark 4.1 is exact
    np.testing.assert_allclose(tts.limit_error(P, Sigma, 8), tts.overthinking_term(Gamma, Sigma, k), rtol=50 * rtol_for(dtype))
    # rotated test covariance: the general formula tr(M^k Γ M^k Γ⁻¹)
    Sig_rot = tts.rotated(tts.power_law(d, 0.5, dtype=dtype), jax.random.key(0))
    M = tts.theory.overthinking_matrix(Gamma, Sig_rot)
    general = [float(jnp.trace(jnp.linalg.matrix_power(M, j) @ Gamma @ jnp.linalg.matrix_power(M, j) @ P)) for j in range(9)]
    np.testing.assert_allclose(tts.limit_error(P, Sig_rot, 8), general, rtol=100 * rtol_for(dtype))
    assert not np.allclose(general, tts.overthinking_term(Gamma, Sig_rot, k), rtol=1e-3)


def test_one_step_error_limits(dtype):
    Lam = tts.rotated(tts.power_law(5, 1.0, dtype=dtype), jax.random.key(1))
    P = tts.gamma_inverse(Lam, 12)
    np.testing.assert_allclose(tts.one_step_error(P, Lam, jnp.inf), tts.limit_error(P, Lam, 1)[1], rtol=20 * rtol_for(dtype))
    # finite m: excess over the limit is exactly tr(P ((Σ² + tr Σ Σ)/m) Pᵀ)
    S = Lam.matrix()
    excess = jnp.trace(P @ (S @ S + jnp.trace(S) * S) @ P.T) / 50
    np.testing.assert_allclose(tts.one_step_error(P, Lam, 50) - tts.one_step_error(P, Lam, jnp.inf), excess, rtol=100 * rtol_for(dtype))


def test_thm33_bound_dominates_exact_one_step_error():
    for alpha in (0.0, 0.5, 1.0, 1.5):
        cov = tts.power_law(10, alpha)
        for n in (5, 20, 80):
            for m in (10, 100, 1000):
                exact = tts.one_step_error(tts.gamma_inverse(cov, n), cov, m)
                assert float(exact) <= float(tts.thm33_bound(cov, n, m)) * (1 + 1e-5)


def test_gamma_matches_monte_carlo_second_moment():
    """E[S²] = Γ Λ (Isserlis) with S = X Xᵀ / n."""
    d, n = 4, 6
    cov = tts.rotated(tts.power_law(d, 1.0), jax.random.key(2))
    prompts = tts.sample_prompts(jax.random.key(3), cov, n, 100000)
    S = jnp.einsum("bim,bjm->bij", prompts.X, prompts.X) / n
    S2 = np.asarray(jnp.einsum("bij,bjk->bik", S, S), dtype=np.float64)
    mean, se = S2.mean(0), S2.std(0) / np.sqrt(S2.shape[0])
    expected = np.asarray(tts.gamma(cov, n) @ cov.matrix())
    assert np.all(np.abs(mean - expected) < 4.5 * se + 1e-4), np.max(np.abs(mean - expected) / se)
    np.testing.assert_allclose(tts.second_moment(cov, n), expected, rtol=1e-5, atol=1e-6)


def test_mixture_preconditioner(dtype):
    cov = tts.rotated(tts.power_law(5, 1.0, dtype=dtype), jax.random.key(4))
    np.testing.assert_allclose(tts.mixture_preconditioner([cov], [7], [1.0]), tts.gamma_inverse(cov, 7), rtol=50 * rtol_for(dtype), atol=50 * rtol_for(dtype))
    # two tasks: P minimises tr(P Q Pᵀ) − 2 tr(P Λ̄): gradient P Q − Λ̄ = 0
    other = tts.power_law(5, 0.0, dtype=dtype)
    probs = jnp.array([0.3, 0.7], dtype)
    P = tts.mixture_preconditioner([cov, other], [7, 30], probs)
    Q = 0.3 * tts.second_moment(cov, 7) + 0.7 * tts.second_moment(other, 30)
    Lbar = 0.3 * cov.matrix() + 0.7 * other.matrix()
    np.testing.assert_allclose(P @ Q, Lbar, atol=100 * rtol_for(dtype))


def test_best_k_aligned_never_turns_up_and_mismatch_turns_up():
    d = 10
    cov = tts.identity(d)
    res = tts.best_k(tts.gamma_inverse(cov, 20), cov, 30)
    assert not bool(res.turns_up) and int(res.k) == 30 and float(res.spectral_radius) < 1
    # SPEC §6: λ_i = 2/i training, Σ = I, n = 30 diverges even at m → ∞
    i = jnp.arange(1, d + 1, dtype=jnp.float32)
    train = tts.from_eigenvalues(2.0 / i)
    P = tts.gamma_inverse(train, 30)
    res = tts.best_k(P, tts.identity(d), 60)
    errs = tts.limit_error(P, tts.identity(d), 60)
    assert bool(res.turns_up) and float(res.spectral_radius) > 1
    assert int(res.k) == int(jnp.argmin(errs[1:])) + 1
    assert float(errs[-1]) > float(errs[int(res.k)])


def test_vmap_over_spectra_equals_separate_calls():
    alphas = jnp.linspace(0.0, 2.0, 8)
    ns = jnp.array([5.0, 10, 20, 40, 5, 10, 20, 40])
    covs = tts.power_law(6, alphas)

    def per_cell(cov, n):
        P = tts.gamma_inverse(cov, n)
        return (tts.limit_error(P, cov, 5), tts.one_step_error(P, cov, 40.0),
                tts.thm33_bound(cov, n, 40.0), tts.cor35_bound(cov, n, 3.0), tts.gamma(cov, n))

    batched = jax.jit(jax.vmap(per_cell))(covs, ns)
    for i in range(8):
        single = per_cell(tts.power_law(6, float(alphas[i])), float(ns[i]))
        for b, s in zip(batched, single):
            np.testing.assert_allclose(b[i], s, rtol=1e-4, atol=1e-6)


def test_bad_input_is_named():
    cov = tts.identity(3)
    P = jnp.eye(3)
    with pytest.raises(ValueError, match="n must be >= 1"):
        tts.gamma(cov, 0)
    with pytest.raises(ValueError, match="m must be >= 1"):
        tts.one_step_error(P, cov, 0.5)
    with pytest.raises(ValueError, match="m must not be nan"):
        tts.one_step_error(P, cov, float("nan"))
    with pytest.raises(ValueError, match="k_max must be >= 0"):
        tts.limit_error(P, cov, -1)
    with pytest.raises(ValueError, match="k must be >= 0"):
        tts.cor35_bound(cov, 5, -1)
    with pytest.raises(ValueError, match="Sigma"):
        tts.limit_error(P, tts.identity(4), 3)
    with pytest.raises(ValueError, match="symmetric"):
        tts.gamma(jnp.array([[1.0, 2.0], [0.0, 1.0]]), 5)
    with pytest.raises(ValueError, match="positive semi-definite"):
        tts.thm33_bound(jnp.array([[1.0, 2.0], [2.0, 1.0]]), 5, 5)
    with pytest.raises(ValueError, match="non-finite"):
        tts.limit_error(jnp.full((3, 3), jnp.nan), cov, 3)
    with pytest.raises(TypeError, match="n must be a number"):
        tts.gamma(cov, "ten")
    with pytest.raises(ValueError, match="probs must sum to 1"):
        tts.mixture_preconditioner([cov, cov], [5, 5], [0.5, 0.6])
    with pytest.raises(ValueError, match="probs must be non-negative"):
        tts.mixture_preconditioner([cov, cov], [5, 5], [1.5, -0.5])
    with pytest.raises(ValueError, match="at least one task"):
        tts.mixture_preconditioner([], [], [])
    with pytest.raises(ValueError, match="one dimension"):
        tts.mixture_preconditioner([cov, tts.identity(4)], [5, 5], [0.5, 0.5])
    with pytest.raises(TypeError, match="P must be a real"):
        tts.limit_error(jnp.eye(3, dtype=jnp.complex64), cov, 3)


def test_closed_forms_accept_concrete_constants_inside_jit():
    """Input checks run on concrete values only, so closure constants inside a trace are fine."""
    cov = tts.rotated(tts.power_law(4, 1.0), jax.random.key(0))
    M, P = cov.matrix(), jnp.eye(4) * 0.3

    @jax.jit
    def f(x):
        c2, pl = tts.from_matrix(M), tts.power_law(4, 1.0)
        return (tts.limit_error(P, M, 3)[3] + tts.mixture_preconditioner([cov, pl], [5, 6], jnp.array([0.5, 0.5]))[0, 0]
                + tts.one_step_error(P, c2, 10.0) + tts.thm33_bound(M, 5, 5) + x)

    expected = (tts.limit_error(P, M, 3)[3] + tts.mixture_preconditioner([cov, tts.power_law(4, 1.0)], [5, 6], jnp.array([0.5, 0.5]))[0, 0]
                + tts.one_step_error(P, cov, 10.0) + tts.thm33_bound(cov, 5, 5) + 1.0)
    np.testing.assert_allclose(f(1.0), expected, rtol=1e-4)
