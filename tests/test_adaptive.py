"""Adaptive stopping (ttscale.adaptive, model `adaptive`): w-free, equal to a NumPy reference, removes the blow-up."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttscale import adaptive, models, prompts, spectra, theory

_sample_prompts = jax.jit(prompts.sample_prompts, static_argnums=(2, 3))
_sample_statistics = jax.jit(prompts.sample_statistics, static_argnums=(2, 3))


def _reference(P, X, y, w, K):
    """Loop over prompts: explicit iterates, residuals ||y − Xᵀŵ_k||²/m, rules A and argmin, oracle (float64)."""
    out = {name: np.zeros((X.shape[0], K + 1), int) for name in ("first_increase", "argmin", "oracle")}
    errors = np.zeros((X.shape[0], K + 1))
    for i in range(X.shape[0]):
        Xi, yi, m = X[i], y[i], X.shape[-1]
        S, b = Xi @ Xi.T / m, Xi @ yi / m
        what = np.zeros(X.shape[1])
        r, e = [np.sum(yi**2) / m], [np.sum(w[i] ** 2)]
        for _ in range(K):
            what = what - P @ (S @ what - b)
            r.append(np.sum((yi - Xi.T @ what) ** 2) / m)
            e.append(np.sum((what - w[i]) ** 2))
        errors[i] = e
        for budget in range(K + 1):
            stop = next((k for k in range(budget) if r[k + 1] >= r[k]), budget)
            out["first_increase"][i, budget] = stop
            out["argmin"][i, budget] = int(np.argmin(r[: budget + 1]))
            out["oracle"][i, budget] = int(np.argmin(e[: budget + 1]))
    return out, errors


@pytest.fixture(scope="module")
def tilted():
    """Overthinking setting: Λ ∝ 1/i (tr Λ = d) at n = 30, Σ = I, finite m."""
    d, n = 6, 30
    with jax.enable_x64(True):
        train = spectra.power_law(d, 1.0, dtype=jnp.float64)
        P = np.asarray(theory.gamma_inverse(train, n))
    return d, n, train, P


def test_equals_numpy_reference_on_identical_prompts(tilted):
    d, n, _, P = tilted
    K = 14
    with jax.enable_x64(True):
        pr = _sample_prompts(jax.random.key(5), spectra.identity(d, jnp.float64), 12, 60)
        summary = adaptive.rollout_summary(jnp.asarray(P), prompts.statistics_of(pr), K)
        X, y, w = (np.asarray(a, np.float64) for a in pr)
    ref, ref_errors = _reference(P, X, y, w, K)
    np.testing.assert_allclose(np.asarray(summary.fixed), ref_errors, rtol=1e-8)
    for name in ("first_increase", "argmin", "oracle"):
        rule = getattr(summary, name)
        np.testing.assert_array_equal(np.asarray(rule.steps), ref[name], err_msg=name)
        np.testing.assert_allclose(np.asarray(rule.errors), np.take_along_axis(ref_errors, ref[name], 1), rtol=1e-8)
    np.testing.assert_array_equal(np.asarray(summary.first_increase.passes),
                                  np.minimum(ref["first_increase"] + 1, np.arange(K + 1)))
    assert np.any(ref["first_increase"][:, K] < K)  # the rule does stop early on some prompts


def test_rule_never_reads_w_or_sigma(tilted):
    d, n, _, P = tilted
    K = 14
    with jax.enable_x64(True):
        pr = _sample_prompts(jax.random.key(6), spectra.identity(d, jnp.float64), 12, 60)
        stats = prompts.statistics_of(pr)
        X, y = np.asarray(pr.X), np.asarray(pr.y)
        truth = {rule: np.asarray(adaptive.statistics_steps(P, stats, K, rule).steps) for rule in adaptive.RULES}
        # (1) from what a raw prompt gives, computed here without w: S = XXᵀ/m, b = Xy/m
        S, b = np.einsum("bim,bjm->bij", X, X) / 12, np.einsum("bim,bm->bi", X, y) / 12
        # (2) Statistics whose truth is a sentinel (w = 0) and whose data carry b and yᵀy/m: b = S·0 + 1·g
        blind = prompts.Statistics(jnp.asarray(S), jnp.asarray(b), jnp.sum(pr.y**2, -1) / 12,
                                   jnp.zeros_like(pr.w), jnp.ones(d), jnp.asarray(1.0), 12.0)
        np.testing.assert_allclose(np.asarray(blind.b()), b, rtol=1e-12)
        for rule in adaptive.RULES:
            np.testing.assert_array_equal(np.asarray(adaptive.stopping_steps(P, S, b, K, rule).steps), truth[rule])
            np.testing.assert_array_equal(np.asarray(adaptive.statistics_steps(P, blind, K, rule).steps), truth[rule])
        # (3) poisoning w with nan after b is taken changes nothing: stopping_steps has no w argument at all
        nan_stats = prompts.Statistics(jnp.asarray(S), jnp.asarray(b), None, jnp.full_like(pr.w, jnp.nan),
                                       jnp.ones(d), jnp.asarray(1.0), 12.0)
        steps_nan = adaptive.stopping_steps(P, nan_stats.apply_S, jnp.asarray(b), K).steps
        np.testing.assert_array_equal(np.asarray(steps_nan), truth["first_increase"])


def test_removes_the_blow_up_in_the_overthinking_setting():
    d, n, m, K, count = 10, 30, 40, 30, 2000
    train = spectra.power_law(d, 1.0)
    model = models.parse("adaptive:rule=first_increase")
    params = model.init(train, n)
    stats = _sample_statistics(jax.random.key(0), spectra.identity(d), m, count)
    summary = adaptive.rollout_summary(params.P, stats, K)
    errs = np.asarray(model.errors(params, stats, K))
    np.testing.assert_array_equal(errs, np.asarray(summary.first_increase.errors))
    fixed = np.asarray(summary.fixed).mean(0)
    rule = errs[:, K].mean()
    oracle = np.asarray(summary.oracle.errors)[:, K].mean()
    assert fixed[K] > 1e6 * rule  # fixed k = 30 blows up (a few prompts with λ_max(PS) > 2)
    assert rule < fixed[1:].min()  # better than the best fixed k (which knows Σ)
    assert rule < 2 * oracle  # within 2× of the per-prompt oracle that knows w
    assert np.asarray(summary.first_increase.passes)[:, K].mean() < K / 2  # at a fraction of the compute


def test_registered_and_runs_in_a_sweep():
    import ttscale as tts

    assert models.parse("adaptive:rule=argmin").name == "adaptive:rule=argmin"
    assert models.parse("adaptive:eta=0.5").name == "adaptive:eta=0.5,rule=first_increase"
    assert models.parse("adaptive").preconditioner is None  # no fixed-P closed forms for a stopping rule
    with pytest.raises(ValueError, match="rule"):
        models.parse("adaptive:rule=never")
    ds = tts.run_sweep(tts.SweepSpec(d=6, alphas=(1.0,), test="identity", ns=(30.0,), ms=(20.0,), k_max=6,
                                     model="adaptive:rule=argmin", prompts=256), progress=False)
    mean = ds["mean"].values.reshape(-1)
    assert np.all(np.isfinite(mean)) and "limit_error" not in ds


def test_validation_names_the_argument():
    b = jnp.zeros((3, 4))
    with pytest.raises(ValueError, match="rule"):
        adaptive.stopping_steps(jnp.eye(4), jnp.zeros((3, 4, 4)), b, 3, rule="x")
    with pytest.raises(ValueError, match="S must be"):
        adaptive.stopping_steps(jnp.eye(4), jnp.zeros((3, 4)), b, 3)
    with pytest.raises(ValueError, match="P must be"):
        adaptive.stopping_steps(jnp.eye(3), jnp.zeros((3, 4, 4)), b, 3)
    with pytest.raises(TypeError, match="statistics"):
        adaptive.rollout_summary(jnp.eye(4), "stats", 3)
