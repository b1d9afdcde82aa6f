import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttscale as tts
from ttscale import cot


CASES = [  # (seed, d, n, m, k, alpha_train, alpha_test)
    pytest.param(0, 2, 5, 3, 1, 0.0, 0.0, marks=pytest.mark.full),  # k = 1, d = 2: covered by the larger cases (suite time)
    (1, 3, 10, 7, 4, 1.0, 0.5),
    (2, 5, 20, 12, 6, 0.7, 0.0),
    (3, 4, 8, 30, 9, 1.5, 1.0),
]


@pytest.mark.parametrize("seed,d,n,m,k,a_train,a_test", CASES)
def test_literal_lsa_cot_equals_pseudo_newton(dtype, seed, d, n, m, k, a_train, a_test):
    """Proposition 3.2: LSA with V* fed back k times == pseudo-Newton with Γ⁻¹, to round-off."""
    key = jax.random.key(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    Lam = tts.rotated(k1, tts.power_law(d, a_train, dtype=dtype))
    Sigma = tts.rotated(k2, tts.power_law(d, a_test, dtype=dtype))
    P = tts.gamma_inverse(Lam, n)
    params = tts.optimal_params(tts.gamma(Lam, n), c=0.8)
    prompts = tts.sample_prompts(k3, Sigma, m, 4)

    @jax.jit  # one compilation for every path of this case
    def all_paths(P, params, prompts):
        newton = jax.vmap(lambda X, y: tts.pseudo_newton_estimates(P, X, y, k))(prompts.X, prompts.y)
        lsa = {method: jax.vmap(lambda X, y: tts.lsa_estimates(params, X, y, k, method=method))(prompts.X, prompts.y)
               for method in cot.LSA_METHODS}
        return newton, lsa, tts.pseudo_newton_errors(P, prompts, k), tts.lsa_errors(params, prompts, k)

    newton, lsa_paths, errs, lsa_errs = all_paths(P, params, prompts)
    tol = 2e-4 if dtype == jnp.float32 else 1e-11
    scale = float(jnp.max(jnp.abs(newton))) + 1.0
    for method, lsa in lsa_paths.items():
        np.testing.assert_allclose(lsa, newton, atol=tol * scale, rtol=0, err_msg=method)
    # closed form w_k = (I - (I - P S)^k) w
    S = jnp.einsum("bim,bjm->bij", prompts.X, prompts.X) / m
    B = jnp.eye(d, dtype=dtype) - P @ S
    closed = prompts.w - jnp.einsum("bij,bj->bi", jnp.linalg.matrix_power(B, k), prompts.w)
    np.testing.assert_allclose(newton[:, -1], closed, atol=tol * scale * 10, rtol=0)
    np.testing.assert_allclose(errs, tts.squared_errors(newton, prompts.w), rtol=tol * 50, atol=tol * 50)
    np.testing.assert_allclose(lsa_errs, errs, rtol=tol * 50, atol=tol * 50)


@pytest.mark.parametrize("m", [3, 20, 100])
@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_one_step_monte_carlo_matches_exact_finite_m(m, noise):
    key = jax.random.key(m)
    Lam = tts.rotated(key, tts.power_law(6, 1.0))
    Sigma = tts.power_law(6, 0.5)
    P = tts.gamma_inverse(Lam, 15)
    prompts = tts.sample_prompts(jax.random.key(11), Sigma, m, 20000, noise=noise)
    curve = tts.error_curve(tts.pseudo_newton_errors(P, prompts, 1))
    exact = tts.one_step_error(P, Sigma, m, noise=noise)
    assert abs(float(curve.mean[1]) - float(exact)) < 4 * float(curve.stderr[1])
    assert abs(float(curve.mean[0]) - 6.0) < 4 * float(curve.stderr[0])


def test_monte_carlo_gap_to_limit_shrinks_like_one_over_m():
    cov = tts.identity(10)
    P = tts.gamma_inverse(cov, 20)
    k = 3
    limit = float(tts.limit_error(P, cov, k)[k])
    ms = [50, 100, 200, 400]
    gaps, ses = [], []
    for i, m in enumerate(ms):
        prompts = tts.sample_prompts(jax.random.key(100 + i), cov, m, 4000)
        curve = tts.error_curve(tts.pseudo_newton_errors(P, prompts, k))
        gaps.append(float(curve.mean[k]) - limit)
        ses.append(float(curve.stderr[k]))
    gaps, ses = np.array(gaps), np.array(ses)
    assert np.all(gaps > 4 * ses)  # finite m is measurably worse than the limit
    slope = np.polyfit(np.log(ms), np.log(gaps), 1)[0]
    assert -1.25 < slope < -0.8, (slope, gaps)


def test_divergent_cot_gives_inf_not_exception_and_finite_median():
    """Finite-m overthinking: λ_max(Γ⁻¹ S_m) > 2 for some prompts, so their error blows up."""
    cov = tts.identity(10)
    P = tts.gamma_inverse(cov, 200)
    prompts = tts.sample_prompts(jax.random.key(0), cov, 40, 512)
    errs = tts.pseudo_newton_errors(P, prompts, 400)
    assert not bool(jnp.any(jnp.isnan(errs)))
    diverged = jnp.mean(jnp.isinf(errs[:, -1]))
    assert 0.0 < float(diverged) < 0.5
    curve = tts.error_curve(errs)
    assert np.isinf(curve.mean[-1]) and np.isinf(curve.stderr[-1])
    assert np.isfinite(curve.median[-1])
    finite_k = np.asarray(jnp.all(jnp.isfinite(errs), axis=0))
    assert np.all(np.isfinite(curve.mean[finite_k]))
    np.testing.assert_allclose(curve.median, np.median(np.asarray(errs), axis=0), rtol=1e-6)


def test_error_curve_statistics_match_numpy():
    errs = jax.random.exponential(jax.random.key(2), (1000, 4))
    curve = tts.error_curve(errs)
    e = np.asarray(errs)
    np.testing.assert_allclose(curve.mean, e.mean(0), rtol=1e-5)
    np.testing.assert_allclose(curve.stderr, e.std(0, ddof=1) / np.sqrt(1000), rtol=1e-4)
    np.testing.assert_allclose(curve.median, np.median(e, 0), rtol=1e-6)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        tts.error_curve(errs[:1])


def _scans(jaxpr) -> list:
    """Every ``scan`` equation of a (closed) jaxpr, nested ones (inside pjit, scan, ...) included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            found.append(eqn)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    found += _scans(sub)
    return found


def test_rollout_is_one_scan_and_validates_k():
    P = jnp.eye(3) * 0.5
    prompts = tts.sample_prompts(jax.random.key(0), tts.identity(3), 5, 2)
    # one lax.scan of length k_max over the steps (not k_max unrolled steps, not a scan per step)
    params = tts.paper_init(3)
    for fn in (lambda pr: tts.pseudo_newton_errors(P, pr, 7),
               lambda pr: jax.vmap(lambda X, y: tts.pseudo_newton_estimates(P, X, y, 7))(pr.X, pr.y),
               *(lambda pr, m=m: tts.lsa_errors(params, pr, 7, method=m) for m in tts.cot.LSA_METHODS)):
        scans = _scans(jax.make_jaxpr(fn)(prompts))
        assert len(scans) == 1 and scans[0].params["length"] == 7, [e.params.get("length") for e in scans]
    assert tts.pseudo_newton_errors(P, prompts, 0).shape == (2, 1)
    with pytest.raises(ValueError, match="k_max"):
        tts.pseudo_newton_errors(P, prompts, -1)
    with pytest.raises(TypeError, match="k_max"):
        tts.pseudo_newton_errors(P, prompts, 2.5)
    with pytest.raises(ValueError, match="d=3"):
        tts.pseudo_newton_errors(jnp.eye(4), prompts, 2)
    with pytest.raises(ValueError, match="d=3"):
        tts.lsa_errors(tts.paper_init(4), prompts, 2)
    with pytest.raises(ValueError, match="method"):
        tts.lsa_estimates(tts.paper_init(3), prompts.X[0], prompts.y[0], 2, method="fast")
    with pytest.raises(TypeError, match="prompts"):
        tts.pseudo_newton_errors(P, (prompts.X, prompts.y), 2)
