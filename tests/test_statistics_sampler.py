"""The statistics sampler (Bartlett): sufficient statistics drawn directly, with the law of drawn prompts.

Checked against closed forms (moments of the Wishart law, the χ² CDF, ``ttscale.theory``'s exact
one-step and m → ∞ errors) within Monte-Carlo standard errors, and against the prompt sampler
(statistics of drawn prompts) cell by cell within combined standard errors — never against the
sampler's own helpers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import ttscale as tts
from ttscale import prompts as prompts_mod
from ttscale import store
from ttscale.sweep import SweepSpec, prompt_errors, run_sweep

KEY = jax.random.key(11)


def _cov3():
    """A dense (rotated) non-identity Σ, d = 3: exercises the dense root A."""
    return tts.rotated(jax.random.key(2), tts.from_eigenvalues(np.array([2.0, 0.7, 0.3])))


@pytest.fixture(scope="module")
def drawn():
    """20000 noisy statistics at m = 5 from each sampler (same key: the same w, different S)."""
    cov = _cov3()
    fn = jax.jit(lambda key, method: tts.sample_statistics(key, cov, 5, 20000, 0.5, method=method),
                 static_argnums=1)
    return cov, fn(KEY, "statistics"), fn(jax.random.key(12), "prompts")


def _mean_se(x):
    x = np.asarray(x, np.float64)
    return x.mean(0), x.std(0, ddof=1) / np.sqrt(x.shape[0])


# ----------------------------------------------------------------------------- the law of S, b, yᵀy/m
def test_S_has_the_wishart_mean_and_second_moment(drawn):
    """E[S] = Σ and E[S²] = (1 + 1/m) Σ² + (tr Σ/m) Σ for a dense Σ (m = 5, d = 3), within 4.5 s.e."""
    cov, st, _ = drawn
    m = 5
    Sig = np.asarray(cov.matrix(), np.float64)
    S = np.asarray(st.S(), np.float64)
    mean, se = _mean_se(S)
    assert np.all(np.abs(mean - Sig) < 4.5 * se), (mean - Sig) / se
    S2 = np.einsum("bij,bjk->bik", S, S)
    want = (1 + 1 / m) * Sig @ Sig + np.trace(Sig) / m * Sig
    mean2, se2 = _mean_se(S2)
    assert np.all(np.abs(mean2 - want) < 4.5 * se2), (mean2 - want) / se2
    # a wrong diagonal (e.g. χ²_{m−i} instead of χ²_{m−i+1}) moves E[S_Z] by 1/m: 20 s.e. here
    np.testing.assert_allclose(np.asarray(st.S_Z).mean(0), np.eye(3), atol=4.5 * np.sqrt(2 / m / 20000))


def test_noise_statistics_have_their_law_and_match_drawn_prompts(drawn):
    """E[b] = 0, E[b wᵀ] = Σ, E[ξ ξᵀ] = σ² Σ/m (ξ = b − S w), E[yᵀy/m] = tr Σ + σ², E[εᵀε/m] = 1 with
    Var = 2/m; and these statistics have the same means as the prompt-drawn ones (combined s.e.)."""
    cov, st, pr = drawn
    m, sigma = 5, 0.5
    Sig = np.asarray(cov.matrix(), np.float64)
    b, w, yy = (np.asarray(x, np.float64) for x in (st.b(), st.w, st.yy()))
    xi = np.asarray(st.noise_drift(), np.float64)
    ee = np.asarray(st.ee, np.float64)
    checks = {
        "b": (b, np.zeros(3)),
        "b w^T": (b[:, :, None] * w[:, None, :], Sig),
        "xi xi^T": (xi[:, :, None] * xi[:, None, :], sigma**2 * Sig / m),
        "yy": (yy, np.trace(Sig) + sigma**2),
        "ee": (ee, 1.0),
        "(ee - 1)^2": ((ee - 1) ** 2, 2 / m),
    }
    for name, (x, want) in checks.items():
        mean, se = _mean_se(x)
        assert np.all(np.abs(mean - want) < 4.5 * se), (name, (mean - want) / se)
    # the same statistics of prompt-drawn statistics: equal means within 4.5 combined s.e.
    for f in (lambda s: s.yy(), lambda s: jnp.sum(s.b() ** 2, -1), lambda s: jnp.sum(s.b() * s.w, -1),
              lambda s: s.ee, lambda s: jnp.sum(s.g ** 2, -1), lambda s: jnp.sum(s.g * (s.S_Z @ s.g[..., None])[..., 0], -1),
              lambda s: jnp.linalg.eigvalsh(s.S_Z)[:, 0]):
        (ma, sa), (mb, sb) = _mean_se(f(st)), _mean_se(f(pr))
        assert abs(ma - mb) < 4.5 * np.hypot(sa, sb), (ma, mb, sa, sb)


def test_smallest_eigenvalue_has_the_law_of_drawn_prompts():
    """λ_min(Z Zᵀ/m) at m = d + 1 (very sensitive to the χ² degrees of freedom): a two-sample KS test
    between the two samplers (critical value of α = 10⁻³)."""
    d, m, b = 4, 5, 8000
    cov = tts.identity(d)
    fn = jax.jit(lambda key, method: jnp.linalg.eigvalsh(tts.sample_statistics(key, cov, m, b, method=method).S_Z)[:, 0],
                 static_argnums=1)
    x = np.sort(np.asarray(fn(KEY, "statistics"), np.float64))
    y = np.sort(np.asarray(fn(jax.random.key(5), "prompts"), np.float64))
    grid = np.concatenate([x, y])
    ks = np.max(np.abs(np.searchsorted(x, grid, "right") / b - np.searchsorted(y, grid, "right") / b))
    assert ks < 1.95 * np.sqrt(2 / b), ks


def test_chi_squares_follow_the_chi_square_law():
    """Per degree of freedom k: mean k, variance 2k, and a one-sample KS test against the exact CDF
    P(k/2, x/2) (α = 10⁻³); k = 10⁶ checks the rejection test keeps its precision in float32."""
    b, dofs = 6000, [0, 1, 2, 3, 7, 40, 1000, 10**6]
    xs = np.asarray(jax.jit(lambda key: prompts_mod.chi_squares(key, 0, b, dofs))(KEY), np.float64)
    assert xs.shape == (b, len(dofs))
    assert np.all(xs[:, 0] == 0)
    for dof, x in zip(dofs[1:], xs[:, 1:].T):
        assert np.all(x > 0) and np.all(np.isfinite(x))
        assert abs(x.mean() - dof) < 4.5 * np.sqrt(2 * dof / b), dof
        assert abs(x.var() / (2 * dof) - 1) < 4.5 * np.sqrt(2 / b) * (1 + 6 / dof) ** 0.5, dof
        cdf = special.gammainc(dof / 2, np.sort(x) / 2)
        ks = np.max(np.maximum(np.arange(1, b + 1) / b - cdf, cdf - np.arange(b) / b))
        assert ks < 1.95 / np.sqrt(b), (dof, ks)


# ----------------------------------------------------------------------------- counter-based invariances
def test_draws_depend_only_on_the_prompt_index():
    """Any (start, count) slice equals the same prompts of one big call, bit for bit; noise on/off leaves
    S_Z and w unchanged; w is the prompt sampler's w (stream 2)."""
    d, m = 4, 9
    draw = jax.jit(prompts_mod.draw_statistics, static_argnums=(2, 3, 4, 5, 6))
    whole = draw(KEY, np.uint32(0), 64, d, m, jnp.float32, True)
    for start, count in [(5, 24), (40, 24)]:  # one count: one compile, two starts
        part = draw(KEY, np.uint32(start), count, d, m, jnp.float32, True)
        for a, b in zip(whole, part):
            np.testing.assert_array_equal(np.asarray(a)[start:start + count], np.asarray(b))
    quiet = draw(KEY, np.uint32(0), 64, d, m, jnp.float32, False)
    np.testing.assert_array_equal(quiet[0], whole[0])
    np.testing.assert_array_equal(quiet[3], whole[3])
    assert quiet[1] is None and quiet[2] is None
    _, w_prompts, _ = prompts_mod.draw_normals(KEY, 0, 64, d, m)
    np.testing.assert_array_equal(w_prompts, whole[3])
    # χ²_2 is rejected ~5 % of the time: slices retry different sets of draws, yet every draw is the same
    chi = jax.jit(prompts_mod.chi_squares, static_argnums=(2, 3))
    many = np.asarray(chi(KEY, np.uint32(0), 4000, (2, 2, 5)))
    np.testing.assert_array_equal(np.asarray(chi(KEY, np.uint32(1234), 300, (2, 2, 5))), many[1234:1534])


def test_sweep_errors_are_bit_identical_across_chunk_sizes():
    spec = SweepSpec(d=3, alphas=(0.0, 1.0), ns=(4.0, 16.0), ms=(7.0,), k_max=3, prompts=100, chunk=100,
                     noise=0.2, sampler="statistics")
    ref = prompt_errors(spec)
    for chunk in (24, 33):  # every block a full one (as for the prompt sampler, tests/test_sweep.py)
        np.testing.assert_array_equal(prompt_errors(spec.replace(chunk=chunk)), ref)
    np.testing.assert_array_equal(prompt_errors(spec, start=37, stop=61), ref[:, :, 37:61])


# ----------------------------------------------------------------------------- m ≤ d and m = ∞
def test_short_prompts_and_infinite_m_fall_back_to_the_prompt_route():
    cov = tts.power_law(4, 1.0)
    for m in (3, math.inf):
        auto = tts.sample_statistics(KEY, cov, m, 16, 0.3)
        old = tts.sample_statistics(KEY, cov, m, 16, 0.3, method="prompts")
        for a, b in zip(jax.tree_util.tree_leaves(auto), jax.tree_util.tree_leaves(old)):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(ValueError, match="method=\"statistics\" needs a finite length >= d"):
            tts.sample_statistics(KEY, cov, m, 16, method="statistics")
    with pytest.raises(ValueError, match="method must be one of"):
        tts.sample_statistics(KEY, cov, 8, 16, method="bartlett")
    # m = d is the smallest Bartlett case (χ²_1 on the last diagonal, χ²_0 for the noise remainder)
    st = tts.sample_statistics(KEY, tts.identity(4), 4, 20000, 1.0, method="statistics")
    np.testing.assert_allclose(np.asarray(st.S_Z).mean(0), np.eye(4), atol=4.5 * np.sqrt(2 / 4 / 20000))
    ee = np.asarray(st.ee, np.float64)
    assert abs(ee.mean() - 1) < 4.5 * np.sqrt(2 / 4 / 20000)
    # a sweep whose m are all < d draws prompts whatever the sampler: same numbers, same identity
    spec = SweepSpec(d=4, ns=(8.0,), ms=(3.0,), k_max=2, prompts=16, chunk=16, sampler="statistics")
    np.testing.assert_array_equal(prompt_errors(spec), prompt_errors(spec.replace(sampler="prompts")))
    assert spec.identity() == spec.replace(sampler="prompts").identity()


# ----------------------------------------------------------------------------- sweeps: closed forms, and the two samplers agree
@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_statistics_sweep_matches_the_one_step_and_infinite_m_errors(noise):
    """k = 1 against one_step_error (noise included) at m = 8 and m = 10⁶ (cheap with this sampler); without
    noise, k ≥ 1 at m = 10⁶ against limit_error (the O(k/m) bias is ~10⁻⁵ of a s.e.; with noise the
    σ²-floor of order 1/m is not, at large n and k). Within 4.5 s.e."""
    spec = SweepSpec(d=3, alphas=(0.0, 1.5), ns=(4.0, 20.0), ms=(8.0, 1e6), k_max=4, prompts=4000, chunk=4000,
                     noise=noise, sampler="statistics")
    ds = run_sweep(spec, progress=False)
    mean, se = ds["mean"].values, ds["stderr"].values  # [S, N, M, K1]
    z1 = (mean[..., 1] - ds["one_step_error"].values) / se[..., 1]
    assert np.all(np.abs(z1) < 4.5), z1
    if noise == 0:
        zinf = (mean[:, :, 1, 1:] - ds["limit_error"].values[..., 1:]) / se[:, :, 1, 1:]
        assert np.all(np.abs(zinf) < 4.5), zinf


@pytest.mark.parametrize("model", ["pseudo_newton", "lsa", "gd:eta=0.5"])
@pytest.mark.parametrize("noise", [0.0, 0.4])
def test_statistics_and_prompt_sweeps_agree_cell_by_cell(model, noise):
    """Two independent sweeps (seeds 1 and 2), one per sampler: every cell and k = 1..k_max within 4 combined s.e."""
    base = SweepSpec(d=3, alphas=(0.0, 1.5), ns=(4.0, 20.0), ms=(24.0,), k_max=3, prompts=2500, chunk=2500,
                     noise=noise, model=model)
    a = run_sweep(base.replace(sampler="statistics", seed=1), progress=False)
    b = run_sweep(base.replace(sampler="prompts", seed=2), progress=False)
    diff = a["mean"].values - b["mean"].values
    se = np.hypot(a["stderr"].values, b["stderr"].values)
    assert np.all(np.isfinite(se))
    z = diff[..., 1:] / se[..., 1:]
    assert np.all(np.abs(z) < 4), z


# ----------------------------------------------------------------------------- the spec: field, identity, refusal
def test_sampler_field_identity_and_validation():
    spec = SweepSpec(d=3, ns=(8.0,), ms=(12.0,), k_max=2, prompts=16, chunk=16)
    assert spec.sampler == "auto" and spec.draws_statistics(12.0) and not spec.draws_statistics(math.inf)
    stats, prompts = spec.replace(sampler="statistics"), spec.replace(sampler="prompts")
    assert spec.identity() == stats.identity() != prompts.identity()
    assert SweepSpec.from_json(prompts.to_json()) == prompts
    with pytest.raises(ValueError, match="sampler must be one of"):
        spec.replace(sampler="bartlett")
    reader = tts.models.from_step("raw_gd", lambda train, n: jnp.asarray(0.3, train.dtype),
                                  lambda p, pr, w_hat: w_hat, reads="prompts")
    with pytest.raises(ValueError, match='sampler="statistics" needs a model that reads statistics'):
        spec.replace(model=reader, sampler="statistics")
    raw = spec.replace(model=reader)  # auto: prompts for a prompt-reading model
    assert not raw.draws_statistics(12.0) and raw.identity() == raw.replace(sampler="prompts").identity()


def test_a_prompts_result_is_never_resumed_as_statistics(tmp_path):
    """A finished file and a partial directory written by sampler="prompts" are refused by sampler="statistics"."""
    spec = SweepSpec(d=3, ns=(8.0,), ms=(12.0,), k_max=2, prompts=16, chunk=8, sampler="prompts")
    out = str(tmp_path / "p.nc")
    run_sweep(spec, out=out, progress=False)
    with pytest.raises(store.SpecMismatchError):
        run_sweep(spec.replace(sampler="statistics"), out=out, progress=False)
    run_sweep(spec, out=out, progress=False)  # the same spec is still returned
    partial = str(tmp_path / "q.nc")
    store.PartialStore(partial, spec.identity())  # a partial run of the prompt sampler
    with pytest.raises(store.SpecMismatchError):
        run_sweep(spec.replace(sampler="auto"), out=partial, progress=False)


def test_cli_sampler_option():
    import argparse

    from ttscale.commands import sweep as cmd

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    assert cmd.spec_from_args(parser.parse_args(["--d", "3"])).sampler == "auto"
    assert cmd.spec_from_args(parser.parse_args(["--d", "3", "--sampler", "prompts"])).sampler == "prompts"
    with pytest.raises(SystemExit):
        parser.parse_args(["--sampler", "wishart"])
