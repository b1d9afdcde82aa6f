import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttscale as tts
from ttscale import theory
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
    np.testing.assert_allclose(tts.scaling_law_error(cov, n, k), expected, rtol=20 * rtol_for(dtype))
    np.testing.assert_allclose(tts.overthinking_term(tts.gamma(cov, n), cov, k), expected, rtol=20 * rtol_for(dtype))


def test_cor35_upper_bounds_limit_error_for_aligned_spectra(dtype):
    for alpha in (0.5, 1.0, 2.0):
        cov = tts.rotated(jax.random.key(int(alpha * 10)), tts.power_law(8, alpha, dtype=dtype))
        for n in (5, 40):
            P = tts.gamma_inverse(cov, n)
            lim = tts.limit_error(P, cov, 10)
            bound = tts.scaling_law_error(cov, n, jnp.arange(11))
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
    Sig_rot = tts.rotated(jax.random.key(0), tts.power_law(d, 0.5, dtype=dtype))
    M = tts.theory.overthinking_matrix(Gamma, Sig_rot)
    general = [float(jnp.trace(jnp.linalg.matrix_power(M, j) @ Gamma @ jnp.linalg.matrix_power(M, j) @ P)) for j in range(9)]
    np.testing.assert_allclose(tts.limit_error(P, Sig_rot, 8), general, rtol=100 * rtol_for(dtype))
    assert not np.allclose(general, tts.overthinking_term(Gamma, Sig_rot, k), rtol=1e-3)


def test_one_step_error_limits(dtype):
    Lam = tts.rotated(jax.random.key(1), tts.power_law(5, 1.0, dtype=dtype))
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
                assert float(exact) <= float(tts.one_step_error_bound(cov, n, m)) * (1 + 1e-5)


def test_gamma_matches_monte_carlo_second_moment():
    """E[S²] = Γ Λ (Isserlis) with S = X Xᵀ / n."""
    d, n = 4, 6
    cov = tts.rotated(jax.random.key(2), tts.power_law(d, 1.0))
    prompts = tts.sample_prompts(jax.random.key(3), cov, n, 100000)
    S = jnp.einsum("bim,bjm->bij", prompts.X, prompts.X) / n
    S2 = np.asarray(jnp.einsum("bij,bjk->bik", S, S), dtype=np.float64)
    mean, se = S2.mean(0), S2.std(0) / np.sqrt(S2.shape[0])
    expected = np.asarray(tts.gamma(cov, n) @ cov.matrix())
    assert np.all(np.abs(mean - expected) < 4.5 * se + 1e-4), np.max(np.abs(mean - expected) / se)
    np.testing.assert_allclose(tts.second_moment(cov, n), expected, rtol=1e-5, atol=1e-6)


def test_mixture_preconditioner(dtype):
    cov = tts.rotated(jax.random.key(4), tts.power_law(5, 1.0, dtype=dtype))
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
    # docs/science.md §6: λ_i = 2/i training, Σ = I, n = 30 diverges even at m → ∞
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
                tts.one_step_error_bound(cov, n, 40.0), tts.scaling_law_error(cov, n, 3.0), tts.gamma(cov, n))

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
        tts.scaling_law_error(cov, 5, -1)
    with pytest.raises(ValueError, match="test"):
        tts.limit_error(P, tts.identity(4), 3)
    with pytest.raises(ValueError, match="symmetric"):
        tts.gamma(jnp.array([[1.0, 2.0], [0.0, 1.0]]), 5)
    with pytest.raises(ValueError, match="positive semi-definite"):
        tts.one_step_error_bound(jnp.array([[1.0, 2.0], [2.0, 1.0]]), 5, 5)
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
    cov = tts.rotated(jax.random.key(0), tts.power_law(4, 1.0))
    M, P = cov.matrix(), jnp.eye(4) * 0.3

    @jax.jit
    def f(x):
        c2, pl = tts.from_matrix(M), tts.power_law(4, 1.0)
        return (tts.limit_error(P, M, 3)[3] + tts.mixture_preconditioner([cov, pl], [5, 6], jnp.array([0.5, 0.5]))[0, 0]
                + tts.one_step_error(P, c2, 10.0) + tts.one_step_error_bound(M, 5, 5) + x)

    expected = (tts.limit_error(P, M, 3)[3] + tts.mixture_preconditioner([cov, tts.power_law(4, 1.0)], [5, 6], jnp.array([0.5, 0.5]))[0, 0]
                + tts.one_step_error(P, cov, 10.0) + tts.one_step_error_bound(cov, 5, 5) + 1.0)
    np.testing.assert_allclose(f(1.0), expected, rtol=1e-4)


# ============================================================================ best_k: robust turn-up
def _brute_force_limit_error(P, Sigma, k_max):
    """float64 NumPy ||(I − PΣ)^k||_F², k = 0..k_max."""
    B = np.eye(P.shape[0]) - np.asarray(P, np.float64) @ np.asarray(Sigma, np.float64)
    A, out = np.eye(P.shape[0]), []
    for _ in range(k_max + 1):
        out.append(np.sum(A * A))
        A = B @ A
    return np.array(out)


def test_best_k_does_not_take_underflow_for_a_minimum():
    """The error falls to ~1e-77 (0 in float32 from k ≈ 15): still falling, so k = k_max, no turn-up."""
    cov = tts.identity(10)
    res = tts.best_k(tts.gamma_inverse(cov, 200), cov, 30)
    assert int(res.k) == 30 and not bool(res.turns_up)
    with jax.enable_x64(True):
        cov64 = tts.identity(10, jnp.float64)
        res = tts.best_k(tts.gamma_inverse(cov64, 200), cov64, 400)   # below float64's range too
        assert int(res.k) == 400 and not bool(res.turns_up) and float(res.error) == 0.0
    # a plateau (B a projection: ρ = 1) is not a turn-up, whatever the rounding does
    P = jnp.diag(jnp.array([1.0, 1.0, 0.0]))
    res = tts.best_k(P, tts.identity(3), 50)
    assert not bool(res.turns_up) and float(res.error) == pytest.approx(1.0)


@pytest.mark.parametrize("scale, n, rotate", [(1.2, 10, False), (2.0, 30, False), (10 / np.sum(1 / np.arange(1, 11)), 30, False),
                                              (1.4, 10, False), (1.6, 10, False), (1.2, 10, True), (1.5, 10, True)])
def test_best_k_matches_float64_brute_force(scale, n, rotate):
    """Tilted training λ_i = s/i, Σ = I (or a rotated Σ): argmin and turn-up as a float64 brute force.

    ``s = 1.6``: the error falls below float32's range (~1e-62 at k = 120) and must still be falling."""
    d, k_max = 10, 120
    train = tts.from_eigenvalues(scale / jnp.arange(1, d + 1, dtype=jnp.float32))
    test = tts.rotated(jax.random.key(0), tts.identity(d)) if not rotate else tts.rotated(jax.random.key(1), tts.power_law(d, 0.5))
    P = tts.gamma_inverse(train, n)
    res = tts.best_k(P, test, k_max)
    ref = _brute_force_limit_error(P, test.matrix(), k_max)[1:]
    k_ref = int(np.argmin(ref)) + 1
    turns_ref = bool(np.any(ref[k_ref:] > ref[k_ref - 1] * (1 + 1e-6)))
    assert int(res.k) == k_ref and bool(res.turns_up) == turns_ref
    assert float(res.error) == pytest.approx(ref[k_ref - 1], rel=1e-3)
    if (scale, n) in ((1.2, 10), (2.0, 30)):
        assert turns_ref                      # the cases that really turn up are among them
    if scale == 1.2 and not rotate:
        assert 1 < k_ref < k_max              # an interior minimum


def test_best_k_under_vmap_float64():
    with jax.enable_x64(True):
        scales = jnp.array([1.2, 2.0, 1.4])
        d = 10
        i = jnp.arange(1, d + 1, dtype=jnp.float64)

        def cell(s):
            return tts.best_k(tts.gamma_inverse(tts.from_eigenvalues(s / i), 10.0), tts.identity(d, jnp.float64), 60)

        batched = jax.jit(jax.vmap(cell))(scales)
        for j, s in enumerate([1.2, 2.0, 1.4]):
            single = cell(s)
            assert int(batched.k[j]) == int(single.k) and bool(batched.turns_up[j]) == bool(single.turns_up)


# ============================================================================ inf, never nan
def test_limit_error_overflow_is_inf_not_nan():
    errs = np.asarray(tts.limit_error(5 * jnp.eye(3), tts.identity(3), 500))   # B = −4 I: 3 · 16^k
    assert not np.any(np.isnan(errs))
    finite = np.isfinite(errs)
    k = np.arange(501)
    np.testing.assert_allclose(errs[finite], 3.0 * 16.0 ** k[finite], rtol=1e-6)
    assert finite[:31].all() and np.isposinf(errs[33:]).all()
    res = tts.best_k(5 * jnp.eye(3), tts.identity(3), 500)
    assert int(res.k) == 1 and bool(res.turns_up)
    # zero iteration matrix: exact zeros, no nan
    np.testing.assert_array_equal(tts.limit_error(jnp.eye(2), tts.identity(2), 3), [2.0, 0.0, 0.0, 0.0])


def test_one_step_error_never_nan_and_noise_validated():
    cov = tts.identity(3)
    big = 1e30 * jnp.eye(3)
    for m in (10.0, jnp.inf):
        out = float(tts.one_step_error(big, cov, m))
        assert out == np.inf
    with pytest.raises(ValueError, match="noise must not be nan"):
        tts.one_step_error(jnp.eye(3), cov, 10, noise=float("nan"))
    with pytest.raises(ValueError, match="noise must be >= 0"):
        tts.one_step_error(jnp.eye(3), cov, 10, noise=-0.1)
    with pytest.raises(ValueError, match="noise must be finite"):
        tts.one_step_error(jnp.eye(3), cov, 10, noise=np.inf)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        tts.mixture_preconditioner([cov], [5], [1.0], noise=-1.0)
    # the non-negative-terms form agrees with the textbook expansion
    P = tts.gamma_inverse(tts.power_law(3, 1.0), 7)
    S = cov.matrix()
    M2 = tts.second_moment(S, 20)
    textbook = 3 - 2 * jnp.trace(P @ S) + jnp.trace(P @ M2 @ P.T) + 0.25 * jnp.trace(P @ S @ P.T) / 20
    np.testing.assert_allclose(tts.one_step_error(P, cov, 20, noise=0.5), textbook, rtol=1e-5)


def test_overthinking_term_refuses_bad_gamma_and_k():
    Sigma = tts.identity(2)
    for Gamma in ([[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, -1.0]], [[1.0, 0.5], [0.0, 1.0]]):
        with pytest.raises(ValueError, match="Gamma must be symmetric positive definite"):
            tts.overthinking_term(jnp.array(Gamma), Sigma, 3)
    with pytest.raises(ValueError, match="k must not be nan"):
        tts.overthinking_term(jnp.eye(2), Sigma, float("nan"))
    with pytest.raises(ValueError, match="Gamma has shape"):
        tts.overthinking_term(jnp.eye(3), Sigma, 1)
    # negative μ and fractional / huge k: |μ|^{2k}, inf on overflow, never nan
    out = np.asarray(tts.overthinking_term(0.1 * jnp.eye(2), Sigma, jnp.array([0.5, 1.0, 1e4, jnp.inf])))
    assert not np.any(np.isnan(out))
    np.testing.assert_allclose(out[:2], [18.0, 162.0], rtol=1e-5)
    assert np.isposinf(out[2:]).all()


def test_hardness_bounds_with_a_zero_eigenvalue_are_inf_not_nan():
    sing = tts.from_eigenvalues([1.0, 0.0])
    zero = tts.from_eigenvalues([0.0, 0.0])
    for cov in (sing, zero):
        assert float(tts.hardness(cov)) == np.inf
        assert float(tts.one_step_error_bound(cov, 5, 10)) == np.inf
        assert float(tts.one_step_error_bound(cov, 5, np.inf)) == np.inf
        for n in (5, np.inf):
            assert float(tts.contraction_rate(cov, n)) == 1.0
        np.testing.assert_array_equal(tts.scaling_law_error(cov, 5, jnp.array([0.0, 3.0, jnp.inf])), [2.0, 2.0, 2.0])
        assert float(tts.matching_k(cov, 10, 30)) == np.inf
        assert float(tts.matching_k(cov, 10, 30, k_long=0)) == 0.0
    # n_long = inf reaches 0 at once: a finite n_short needs infinitely many steps; the reverse none
    assert float(tts.matching_k(tts.identity(3), 10, np.inf)) == np.inf
    assert float(tts.matching_k(tts.identity(3), np.inf, 10)) == 0.0
    assert float(tts.matching_k(tts.identity(3), np.inf, np.inf, k_long=2)) == 2.0
    assert float(tts.one_step_error_bound(tts.identity(3), 5, np.inf)) == pytest.approx(3 / 25 * 16)
    with pytest.raises(ValueError, match="k must not be nan"):
        tts.scaling_law_error(tts.identity(3), 5, float("nan"))
    with pytest.raises(ValueError, match="k_long must not be nan"):
        tts.matching_k(tts.identity(3), 10, 30, k_long=float("nan"))
    with pytest.raises(ValueError, match="k_long must be >= 0"):
        tts.matching_k(tts.identity(3), 10, 30, k_long=-1)
    with pytest.raises(TypeError, match="k must be a real"):
        tts.scaling_law_error(tts.identity(3), 5, 1j)


def test_gamma_inverse_of_a_singular_gamma_is_refused():
    with pytest.raises(ValueError, match="cov: .*singular"):
        tts.gamma_inverse(tts.from_eigenvalues(jnp.zeros(3)), np.inf)
    with pytest.raises(ValueError, match="cov: .*singular"):
        tts.gamma_inverse(jnp.zeros((3, 3)), 5)
    with pytest.raises(ValueError, match="cov: .*singular"):
        tts.gamma_inverse(tts.from_eigenvalues([1.0, 0.0]), np.inf)
    np.testing.assert_allclose(tts.gamma_inverse(tts.from_eigenvalues([1.0, 0.0]), 4), np.diag([1 / 1.5, 4.0]), rtol=1e-6)
    rot = tts.rotated(jax.random.key(0), tts.power_law(4, 1.0))
    np.testing.assert_allclose(tts.gamma_inverse(rot, 9), jnp.linalg.inv(tts.gamma(rot, 9)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tts.gamma_inverse(rot.matrix(), 9), jnp.linalg.inv(tts.gamma(rot, 9)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="covs: .*singular"):
        tts.mixture_preconditioner([tts.from_eigenvalues([1.0, 0.0])], [np.inf], [1.0])


def test_directly_built_covariance_is_validated_by_theory():
    bad = [tts.Covariance(jnp.array([1.0, -1.0])), tts.Covariance(jnp.array([1.0, jnp.nan])),
           tts.Covariance(jnp.array([1.0, 2.0]), jnp.array([[1.0, 1.0], [0.0, 1.0]]))]
    for cov in bad:
        for call in (lambda c: tts.limit_error(jnp.eye(2), c, 2), lambda c: tts.gamma(c, 5),
                     lambda c: tts.gamma_inverse(c, 5), lambda c: tts.one_step_error(jnp.eye(2), c, 5),
                     lambda c: tts.one_step_error_bound(c, 5, 5), lambda c: tts.scaling_law_error(c, 5, 1),
                     lambda c: tts.overthinking_term(jnp.eye(2), c, 1), lambda c: tts.best_k(jnp.eye(2), c, 3),
                     lambda c: tts.mixture_preconditioner([c], [5], [1.0])):
            with pytest.raises(ValueError, match=r"(test|cov|covs)\.(eigenvalues|basis)"):
                call(cov)
    with pytest.raises(TypeError, match="test.eigenvalues must be a real"):
        tts.limit_error(jnp.eye(2), tts.Covariance(jnp.array([1.0, 2.0], jnp.complex64)), 2)
    # traced Covariance leaves skip the value checks (jit/vmap-compatible)
    f = jax.jit(lambda e: tts.limit_error(jnp.eye(2) * 0.5, tts.Covariance(e), 2))
    np.testing.assert_allclose(f(jnp.array([1.0, 1.0])), [2.0, 0.5, 0.125])
    with pytest.raises(ValueError, match="cov must be one covariance"):
        tts.gamma(tts.stack([tts.identity(2), tts.identity(2)]), 5)    # jnp.trace would sum the wrong axes


# ============================================================================ values against formulas written out here
def _numpy_power_law(d, alpha):
    """``λ_i ∝ i^{-α}`` scaled to ``tr Λ = d`` (README convention), float64."""
    lam = np.arange(1, d + 1, dtype=np.float64) ** (-alpha)
    return lam * d / lam.sum()


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
def test_thm33_bound_value_is_the_theorem_formula(alpha):
    """``(d/n²)(1 + Hard)² + (d/m)(1 + Hard)``, ``Hard = tr Λ / λ_min``, for diagonal and rotated Λ and m = ∞."""
    d = 6
    lam = _numpy_power_law(d, alpha)
    hard = lam.sum() / lam.min()
    rot = tts.rotated(jax.random.key(3), tts.power_law(d, alpha))
    for cov in (tts.power_law(d, alpha), rot, rot.matrix()):
        for n, m in ((4, 7), (25, 300), (9, np.inf)):
            second = 0.0 if np.isinf(m) else (d / m) * (1 + hard)
            expected = (d / n**2) * (1 + hard) ** 2 + second
            np.testing.assert_allclose(float(tts.one_step_error_bound(cov, n, m)), expected, rtol=1e-5)


def test_mixture_preconditioner_of_non_commuting_tasks():
    """Two tasks in different bases (Λ̄ and Q do not commute): ``P = Λ̄ Q⁻¹`` (not ``Q⁻¹ Λ̄``) written out in
    NumPy, and it is the minimiser of the mixture's one-step loss ``Σ π_ℓ E||P S_ℓ w − w||²`` (with noise:
    ``Σ π_ℓ E||P b_ℓ − w||²``): every perturbation of P raises the loss by exactly ``tr(ΔP Q ΔPᵀ) > 0``."""
    d = 4
    with jax.enable_x64(True):
        covs = [tts.rotated(jax.random.key(10), tts.power_law(d, 1.5, dtype=jnp.float64)),
                tts.rotated(jax.random.key(11), tts.power_law(d, 0.7, dtype=jnp.float64))]
        mats = [np.asarray(c.matrix(), np.float64) for c in covs]
        ns, probs = np.array([5.0, 30.0]), np.array([0.35, 0.65])
        for noise in (0.0, 0.6):
            P = np.asarray(tts.mixture_preconditioner(covs, ns, probs, noise=noise), np.float64)
            # NumPy reference: Γ = (1 + 1/n) Λ + (tr Λ / n) I, E[b bᵀ] = Γ Λ + σ² Λ / n
            Gam = [(1 + 1 / n) * L + np.trace(L) / n * np.eye(d) for L, n in zip(mats, ns)]
            Q = sum(p * (G @ L + noise**2 * L / n) for p, G, L, n in zip(probs, Gam, mats, ns))
            Lbar = sum(p * L for p, L in zip(probs, mats))
            assert np.max(np.abs(Lbar @ Q - Q @ Lbar)) > 0.05  # the tasks really do not commute
            np.testing.assert_allclose(P, Lbar @ np.linalg.inv(Q), rtol=1e-9, atol=1e-11)
            assert np.max(np.abs(P - np.linalg.inv(Q) @ Lbar)) > 0.01  # the other order is measurably different

            def loss(P):
                return sum(p * (d - 2 * np.trace(P @ L) + np.trace(P @ (G @ L + noise**2 * L / n) @ P.T))
                           for p, G, L, n in zip(probs, Gam, mats, ns))

            # the NumPy loss is theory.one_step_error at m = n per task (an independent formula in ttscale)
            ose = sum(p * float(tts.one_step_error(jnp.asarray(P), c, n, noise)) for p, c, n in zip(probs, covs, ns))
            np.testing.assert_allclose(loss(P), ose, rtol=1e-9)
            rng = np.random.default_rng(0)
            for _ in range(8):
                dP = 1e-2 * rng.standard_normal((d, d))
                np.testing.assert_allclose(loss(P + dP) - loss(P), np.trace(dP @ Q @ dP.T), rtol=1e-6)
                assert loss(P + dP) > loss(P) and loss(P - dP) > loss(P)
            assert loss(np.linalg.inv(Q) @ Lbar) > loss(P) + 1e-4


def test_sweep_overthinking_term_uses_gamma_equal_to_the_inverse_of_p():
    """The sweep's ``overthinking_term`` for an LSA with given parameters (``P`` SPD, not ``Γ⁻¹`` of the
    training spectrum): ``Γ = sym(P)⁻¹``, so ``tr(M^{2k})`` with ``M = I − P^{1/2} Σ P^{1/2}``, i.e.
    ``Σ_i (1 − μ_i)^{2k}`` over the eigenvalues ``μ`` of ``P^{1/2} Σ P^{1/2}`` — computed here in NumPy."""
    from ttscale.sweep import SweepSpec, theory_on_grid

    d = 4
    rng = np.random.default_rng(5)
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    P = (U * np.array([0.25, 0.5, 0.9, 1.4])) @ U.T  # SPD, rotated, far from any Γ(Λ, n)⁻¹
    params = tts.params_from_preconditioner(jnp.asarray(P, jnp.float32), 1.0)
    alphas, k_max = (0.0, 1.0), 5
    spec = SweepSpec(d=d, alphas=alphas, ns=(8.0,), ms=(16.0,), k_max=k_max, prompts=2, model="lsa", params=params)
    forms = theory_on_grid(spec)
    P32 = np.asarray(jnp.asarray(P, jnp.float32), np.float64)  # the preconditioner the params carry
    for s, alpha in enumerate(alphas):
        Sigma = np.diag(_numpy_power_law(d, alpha))  # test = "aligned": Σ = Λ_s
        e, V = np.linalg.eigh(P32)
        root = (V * np.sqrt(e)) @ V.T
        mu = np.linalg.eigvalsh(root @ Sigma @ root)
        expected = [np.sum((1 - mu) ** (2 * k)) for k in range(k_max + 1)]
        np.testing.assert_allclose(forms["overthinking_term"][s, 0], expected, rtol=1e-5)
        # and it is not Remark 4.1 evaluated with Γ = P (the other reading of "Γ")
        mu_wrong = np.linalg.eigvalsh(np.linalg.inv(root) @ Sigma @ np.linalg.inv(root))
        assert abs(np.sum((1 - mu_wrong) ** 2) - expected[1]) > 0.1


def test_paper_number_names_are_deprecated_aliases_of_the_math_names():
    """thm33_bound / cor35_rate / cor35_bound warn and return exactly the renamed functions' values."""
    cov = tts.power_law(6, 1.0)
    pairs = [(theory.thm33_bound, theory.one_step_error_bound, (cov, 10, 50)),
             (theory.cor35_rate, theory.contraction_rate, (cov, 10)),
             (theory.cor35_bound, theory.scaling_law_error, (cov, 10, jnp.arange(4)))]
    for old, new, args in pairs:
        with pytest.warns(DeprecationWarning, match=new.__name__):
            got = old(*args)
        np.testing.assert_array_equal(got, new(*args))
    # the closed form itself, independently: Hard(I_d) = d, rate (1 + d)/(n + 1 + d)
    np.testing.assert_allclose(float(theory.contraction_rate(tts.identity(6), 10)), 7 / 17, rtol=1e-6)


def test_the_test_covariance_is_called_test_and_Sigma_still_works_one_release():
    cov, P = tts.power_law(4, 1.0), tts.gamma_inverse(tts.power_law(4, 1.0), 8)
    new = theory.limit_error(P, test=cov, k_max=3)
    with pytest.warns(DeprecationWarning, match="now called test"):
        old = theory.limit_error(P, Sigma=cov, k_max=3)
    np.testing.assert_array_equal(old, new)
    with pytest.raises(TypeError, match="both"):
        theory.limit_error(P, Sigma=cov, test=cov, k_max=3)
    with pytest.raises(ValueError, match="but test has shape"):  # messages name the argument by its new name
        theory.limit_error(P, tts.power_law(5, 1.0), 3)


def test_closed_forms_compile_one_program_per_shape_outside_jit():
    """limit_error, one_step_error and gamma_inverse outside ``jit``: one compiled program each (the power iteration's
    scan and every small operation are not compiled one by one), none for a second call of the same shapes."""
    names = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            names.append(kwargs.get("fun_name"))

    # d = 11 with a basis: a shape no other test uses (one that another test compiled first would compile nothing here)
    lam = np.array([2.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.1, 0.1, 0.05], np.float32)
    cov = tts.Covariance(jnp.asarray(lam), jnp.eye(11))
    P = jax.block_until_ready(jnp.eye(11) * 0.3)
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        for name, call in {"gamma_inverse": lambda: tts.gamma_inverse(cov, 7),
                           "limit_error": lambda: tts.limit_error(P, cov, 9),
                           "one_step_error": lambda: tts.one_step_error(P, cov, 11)}.items():
            names.clear()
            value = jax.block_until_ready(call())
            assert len(names) == 1 and name in names[0], (name, names)
            names.clear()
            np.testing.assert_array_equal(np.asarray(call()), np.asarray(value))
            assert names == [], name
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    # the iteration itself: B = I − 0.3 Λ is diagonal, so ||B^k||_F² = Σ_i (1 − 0.3 λ_i)^{2k}
    b = 1 - 0.3 * lam.astype(np.float64)
    np.testing.assert_allclose(np.asarray(tts.limit_error(P, cov, 9)),
                               [np.sum(b ** (2 * k)) for k in range(10)], rtol=1e-5)
