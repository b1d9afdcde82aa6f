"""Sweep engine: Dataset contract, Monte Carlo vs closed forms, invariances, resumption, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttscale as tts
from ttscale import cot, lsa, models, store, sweep
from ttscale.prompts import prompts_at
from ttscale.sweep import SweepSpec, prompt_errors, run_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INF = float("inf")

# A few shapes shared by many tests, so compiled programs are reused within the session.
BASE = dict(d=3, alphas=(0.0, 1.0), ns=(4.0, 16.0), ms=(12.0, INF), k_max=4, prompts=600, chunk=256)


# jitted references (eager op-by-op dispatch would compile every primitive separately)
_limit_error = jax.jit(tts.limit_error, static_argnums=2)
_one_step_error = jax.jit(tts.one_step_error)
_gamma_inverse = jax.jit(tts.gamma_inverse)
_cor35_bound = jax.jit(tts.scaling_law_error)
_overthinking_term = jax.jit(tts.overthinking_term)
_best_k = jax.jit(tts.best_k, static_argnums=2)
_pseudo_newton_errors = jax.jit(cot.pseudo_newton_errors, static_argnums=2)
_lsa_errors = jax.jit(cot.lsa_errors, static_argnums=2)


def base_spec(**changes) -> SweepSpec:
    return SweepSpec(**dict(BASE, **changes))


@pytest.fixture(scope="module")
def base_ds():
    return run_sweep(base_spec(), progress=False)


def rotated_noisy_spec(**changes) -> SweepSpec:
    """Explicit rotated training spectra, a rotated test covariance, label noise: the dense paths."""
    k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
    covs = [tts.rotated(k1, tts.power_law(3, 0.5)), tts.rotated(k2, tts.power_law(3, 1.5))]
    test = tts.rotated(k3, tts.power_law(3, 1.0))
    kw = dict(d=3, spectra=covs, test=test, ns=(6.0, 30.0), ms=(12.0, INF), k_max=4,
              prompts=3000, chunk=1500, noise=0.5)
    kw.update(changes)
    return SweepSpec(**kw)


# ----------------------------------------------------------------------------- contract
def test_dataset_has_the_contracted_dims_coords_vars_and_attrs(base_ds):
    ds = base_ds
    assert dict(ds.sizes) == {"spectrum": 2, "n": 2, "m": 2, "k": 5}
    for name in ("mean", "stderr", "median"):
        assert ds[name].dims == ("spectrum", "n", "m", "k")
    for name in ("limit_error", "scaling_law_error", "overthinking_term"):
        assert ds[name].dims == ("spectrum", "n", "k")
    assert ds["one_step_error"].dims == ("spectrum", "n", "m")
    assert ds["best_k"].dims == ("spectrum", "n")
    np.testing.assert_array_equal(ds["alpha"], [0.0, 1.0])
    np.testing.assert_array_equal(ds["trace"], [3.0, 3.0])
    assert [str(x) for x in ds["spectrum_label"].values] == ["power_law:alpha=0", "power_law:alpha=1"]
    assert [str(x) for x in ds["spectrum_family"].values] == ["power_law", "power_law"]
    np.testing.assert_allclose(ds["hardness"], [float(tts.hardness(tts.power_law(3, a))) for a in (0.0, 1.0)], rtol=1e-5)
    np.testing.assert_array_equal(ds["n"], [4.0, 16.0])
    np.testing.assert_array_equal(ds["m"], [12.0, INF])
    np.testing.assert_array_equal(ds["k"], np.arange(5))
    assert ds["mean"].dtype == np.float32
    for key in ("spec", "ttscale_version", "jax_version", "devices"):
        assert isinstance(ds.attrs[key], str) and ds.attrs[key]
    assert ds.attrs["jax_version"] == jax.__version__
    assert json.loads(ds.attrs["devices"]) == [str(dev) for dev in jax.devices()]
    assert SweepSpec.from_json(ds.attrs["spec"]) == base_spec()  # enough to re-run it
    # k = 0 is ŵ_0 = 0: error ||w||² with mean d
    z0 = (ds["mean"].sel(k=0) - 3.0) / ds["stderr"].sel(k=0)
    assert float(np.max(np.abs(z0))) < 4


def test_closed_form_variables_match_theory(base_ds):
    ds = base_ds
    for s, a in enumerate((0.0, 1.0)):
        lam = tts.power_law(3, a)
        for i, n in enumerate((4.0, 16.0)):
            n = jnp.float32(n)
            P = _gamma_inverse(lam, n)
            lim = _limit_error(P, lam, 4)
            np.testing.assert_allclose(ds["limit_error"][s, i], lim, rtol=1e-5)
            np.testing.assert_allclose(ds["one_step_error"][s, i, 0], _one_step_error(P, lam, 12.0), rtol=1e-5)
            np.testing.assert_allclose(ds["one_step_error"][s, i, 1], lim[1], rtol=1e-5)
            np.testing.assert_allclose(ds["scaling_law_error"][s, i], _cor35_bound(lam, n, jnp.arange(5.0)), rtol=1e-5)
            gamma = tts.gamma_inverse(lam, n)
            np.testing.assert_allclose(ds["overthinking_term"][s, i],
                                       _overthinking_term(jnp.linalg.inv(gamma), lam, jnp.arange(5.0)), rtol=1e-4)
            assert int(ds["best_k"][s, i]) == int(_best_k(P, lam, 4).k)


def test_turns_up_and_spectral_radius_equal_theory_best_k(base_ds):
    """turns_up / spectral_radius / best_k of the engine equal ttscale.theory.best_k cell by cell.

    Grids: the base sweep (aligned, never turns up within k ≤ 4) and tilted training spectra
    λ_i = s/i tested on a rotated, mildly tilted Σ, where the m → ∞ error turns up (and
    diverges, ρ(I − PΣ) > 1, for s = 2.5). Both in float64, so agreement is to round-off.
    """
    assert base_ds["turns_up"].dims == base_ds["spectral_radius"].dims == ("spectrum", "n")
    assert base_ds["turns_up"].dtype == bool
    base_forms = sweep.theory_on_grid(base_spec())
    np.testing.assert_array_equal(base_ds["turns_up"], base_forms["turns_up"])
    np.testing.assert_allclose(base_ds["spectral_radius"], base_forms["spectral_radius"], rtol=1e-6)
    with jax.enable_x64(True):
        lam = [tts.from_eigenvalues(s / np.arange(1.0, 5.0), dtype=jnp.float64) for s in (1.0, 2.5)]
        test = tts.rotated(jax.random.key(3), tts.power_law(4, 0.3, dtype=jnp.float64))
        tilted = SweepSpec(d=4, spectra=lam, test=test, ns=(5.0, 30.0, INF), ms=(20.0,),
                           k_max=8, prompts=2, dtype="float64")
        tilted_forms = sweep.theory_on_grid(tilted)
        assert tilted_forms["turns_up"].any() and not tilted_forms["turns_up"].all()
        assert np.any(tilted_forms["spectral_radius"] > 1) and np.any(tilted_forms["spectral_radius"] < 1)
        base64 = [tts.power_law(3, a, dtype=jnp.float64) for a in (0.0, 1.0)]
        for spec, forms, covs, sig in ((base_spec(), base_forms, base64, None), (tilted, tilted_forms, lam, test)):
            for s, cov in enumerate(covs):
                for i, n in enumerate(spec.ns):
                    bk = _best_k(tts.gamma_inverse(cov, jnp.float64(n)), cov if sig is None else sig, spec.k_max)
                    assert int(forms["best_k"][s, i]) == int(bk.k)
                    assert bool(forms["turns_up"][s, i]) == bool(bk.turns_up)
                    np.testing.assert_allclose(forms["spectral_radius"][s, i], float(bk.spectral_radius), rtol=1e-10)


# ----------------------------------------------------------------------------- Monte Carlo vs closed forms
def test_monte_carlo_matches_limit_error_and_one_step_error(base_ds):
    ds = base_ds
    z_inf = (ds["mean"].sel(m=INF) - ds["limit_error"]) / ds["stderr"].sel(m=INF)
    assert float(np.max(np.abs(z_inf.sel(k=slice(1, None))))) < 4, z_inf.values
    z_one = (ds["mean"].sel(k=1) - ds["one_step_error"]) / ds["stderr"].sel(k=1)
    assert float(np.max(np.abs(z_one))) < 4, z_one.values
    # finite m is measurably worse than the limit at k = 1 for the hardest cell (O(1/m) excess)
    assert float(ds["one_step_error"].sel(m=12.0)[1, 1]) > float(ds["limit_error"].sel(k=1)[1, 1])


def test_monte_carlo_with_noise_rotations_and_dense_preconditioners():
    spec = rotated_noisy_spec()
    ds = run_sweep(spec, progress=False)
    z_inf = (ds["mean"].sel(m=INF) - ds["limit_error"]) / ds["stderr"].sel(m=INF)
    assert float(np.max(np.abs(z_inf.sel(k=slice(1, None))))) < 4, z_inf.values
    z_one = (ds["mean"].sel(k=1) - ds["one_step_error"]) / ds["stderr"].sel(k=1)
    assert float(np.max(np.abs(z_one))) < 4, z_one.values
    assert np.all(np.isnan(ds["alpha"]))


def test_sweep_prompts_are_the_core_prompts_and_errors_equal_the_core_rollout():
    """Cell (s, n) prompt p is prompts_at(fold_in chain(seed, m, s, n), p): errors equal cot.pseudo_newton_errors."""
    spec = rotated_noisy_spec(sampler="prompts")  # the prompt sampler: every prompt is prompts_at's
    errs = prompt_errors(spec, m_index=0, start=0, stop=1500)  # [S, N, 1500, K+1]
    keys = sweep.cell_keys(spec, 0)
    lam = spec.training_covariances()
    sig = spec.test_covariances()
    for s in range(2):
        for i, n in enumerate(spec.ns):
            cov_s = tts.unstack(sig)[s]
            key = jax.random.wrap_key_data(keys[s * 2 + i])
            prompts = prompts_at(key, np.arange(1500), cov_s, 12, noise=0.5)
            P = _gamma_inverse(tts.unstack(lam)[s], jnp.float32(n))
            ref = _pseudo_newton_errors(P, prompts, 4)
            np.testing.assert_allclose(errs[s, i], ref, rtol=2e-4, atol=2e-5)


# ----------------------------------------------------------------------------- invariances
def test_results_do_not_depend_on_chunk_size():
    spec = base_spec(ms=(12.0,), prompts=300)
    a = run_sweep(spec, progress=False)  # chunks of 256 (+ a padded one of 44)
    b = run_sweep(spec.replace(chunk=100), progress=False)
    for name in ("mean", "stderr", "median"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=0)
    assert a.attrs["spec_identity"] == b.attrs["spec_identity"]


def test_one_compiled_program_serves_every_chunk_and_every_cell_of_a_shape(monkeypatch):
    import chex

    sweep._chunk_program.cache_clear()
    chex.clear_trace_counter()

    def on_trace(shape, start):  # chex counts calls whose arguments hold tracers
        pass

    monkeypatch.setattr(sweep, "_on_trace", chex.assert_max_traces(on_trace, n=1))
    spec = divergent_spec(seed=5)
    run_sweep(spec, progress=False)  # 4 chunks, one trace
    # other spectra values, n values and seed: same shapes, no new trace
    run_sweep(spec.replace(alphas=(0.3, 2.0), ns=(7.0, 9.0), seed=11), progress=False)
    # the counter is live: a new shape (k_max) traces again and trips the limit
    with pytest.raises(AssertionError, match="trace"):
        run_sweep(spec.replace(k_max=spec.k_max + 1), progress=False)


def test_common_random_numbers_share_draws_and_shrink_the_variance_of_differences():
    indep = prompt_errors(base_spec(), m_index=0)
    crn = prompt_errors(base_spec(common_random_numbers=True), m_index=0)
    # k = 0: error ||w||², the same w in every cell under CRN, different without
    assert np.all(crn[..., 0] == crn[:1, :1, :, 0])
    assert not np.allclose(indep[0, 0, :, 0], indep[1, 1, :, 0])
    # the spread of a difference between two cells (n = 4 vs n = 16, k = 2) falls a lot. The
    # errors are heavy-tailed at m = 12, so the spread is the interquartile range (the ratio
    # of variances is dominated by a few prompts); measured 0.54-0.58 over seeds 0-3
    def iqr(x):
        return float(np.subtract(*np.percentile(x, [75, 25])))

    iqr_indep = iqr(indep[1, 0, :, 2] - indep[1, 1, :, 2])
    iqr_crn = iqr(crn[1, 0, :, 2] - crn[1, 1, :, 2])
    assert iqr_crn < 0.75 * iqr_indep, (iqr_crn, iqr_indep)
    # marginals are unchanged: each CRN cell still matches its closed form (m = inf)
    crn_inf = prompt_errors(base_spec(common_random_numbers=True), m_index=1)
    curve = cot.error_curve(np.moveaxis(crn_inf, -2, 0))
    mean, se = curve.mean, curve.stderr
    lim = sweep.theory_on_grid(base_spec())["limit_error"]
    assert np.max(np.abs(mean - lim)[..., 1:] / se[..., 1:]) < 4


_SUBPROCESS = """
import sys, numpy as np, jax
from ttscale.sweep import SweepSpec, prompt_errors
assert jax.device_count() == 4, jax.devices()
out = []
for crn in (False, True):
    spec = SweepSpec(d=3, alphas=(0.0, 1.0), ns=(4.0, 16.0), ms=(12.0, float('inf')), k_max=4, prompts=600, chunk=256,
                     common_random_numbers=crn)
    out.append(prompt_errors(spec, m_index=0))
np.save(sys.argv[1], np.stack(out))
"""


def test_four_devices_give_the_one_device_result(tmp_path):
    out = tmp_path / "errs.npy"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", _SUBPROCESS, str(out)], check=True, env=env, cwd=ROOT, timeout=300)
    four = np.load(out)
    assert jax.device_count() == 1
    for i, crn in enumerate((False, True)):
        one = prompt_errors(base_spec(common_random_numbers=crn), m_index=0)  # last chunk of 88 is padded
        np.testing.assert_array_equal(four[i], one)  # the same bits (README: per-prompt errors are device-invariant)


# ----------------------------------------------------------------------------- LSA paths
def _random_params(key, d, scale=0.05):
    """Generic W, V: the paper's optimum plus dense noise in every block."""
    lam = tts.power_law(d, 1.0)
    opt = tts.optimal_params(tts.gamma(lam, 8.0), c=0.9)
    k1, k2 = jax.random.split(key)
    D = 2 * d + 2
    return lsa.LSAParams(opt.W + scale * jax.random.normal(k1, (D, D)), opt.V + scale * jax.random.normal(k2, (D, D)))


@pytest.mark.parametrize("dtype,diag", [(jnp.float32, False)])  # diagonal Σ: covered by the sweep-level LSA test
def test_fast_lsa_recursion_equals_reference_lsa_for_generic_parameters(dtype, diag):
    from tests.conftest import x64_context

    with x64_context(dtype):
        _check_fast_lsa(jnp.dtype(dtype), diag)


def _check_fast_lsa(dtype, diag):
    d, m, k_max, b = 3, 9, 6, 16
    cov = tts.power_law(d, 0.7, dtype=dtype)
    if not diag:
        cov = tts.rotated(jax.random.key(3), cov)
    params = jax.tree_util.tree_map(lambda x: x.astype(dtype), _random_params(jax.random.key(1), d))
    key = jax.random.key(4)
    idx = jnp.arange(b)
    noise = 0.3
    prompts = prompts_at(key, idx, cov, m, noise=noise)
    ref = _lsa_errors(params, prompts, k_max)
    stats = tts.sample_statistics(key, cov, m, b, noise, method="prompts")  # the same prompts, as whitened statistics
    fast = jax.jit(models.lsa.errors, static_argnums=(2, 3))(params, stats, k_max, False)
    tol = 2e-4 if dtype == jnp.float32 else 1e-10
    np.testing.assert_allclose(fast, ref, rtol=tol, atol=tol)
    # the constant-M fast path, valid when V[ŵ, (ŵ, 1)] = 0 (here: the rest of V stays generic)
    d1 = d + 1
    params0 = params._replace(V=params.V.at[d1 : 2 * d + 1, d1:].set(0.0))
    ref0 = _lsa_errors(params0, prompts, k_max)
    assert models.lsa.hints(params0) == {"constant_M": True} and models.lsa.hints(params) == {"constant_M": False}
    fast0 = jax.jit(models.lsa.errors, static_argnums=(2, 3))(params0, stats, k_max, True)
    np.testing.assert_allclose(fast0, ref0, rtol=tol, atol=tol)


def test_sweep_lsa_model_equals_pseudo_newton_and_trained_path_equals_reference_lsa():
    spec = base_spec(ms=(12.0,), sampler="prompts")
    pn = prompt_errors(spec, stop=64)
    lsa_errs = prompt_errors(spec.replace(model="lsa:c=0.7"), stop=64)
    np.testing.assert_allclose(lsa_errs, pn, rtol=2e-4, atol=2e-5)
    params = _random_params(jax.random.key(9), 3, scale=0.03)
    trained = spec.replace(model="lsa", params=params)
    got = prompt_errors(trained, stop=64)
    keys = sweep.cell_keys(trained, 0)
    sig = tts.unstack(trained.test_covariances())
    for c in range(4):
        prompts = prompts_at(jax.random.wrap_key_data(keys[c]), np.arange(64), sig[c // 2], 12)
        ref = _lsa_errors(params, prompts, 4)
        np.testing.assert_allclose(got[c // 2, c % 2], ref, rtol=2e-4, atol=2e-5)


# ----------------------------------------------------------------------------- float64, divergence
def test_float64_sweep_matches_limit_error(dtype):
    spec = base_spec(ms=(INF,), dtype=np.dtype(dtype).name)
    ds = run_sweep(spec, progress=False)
    assert ds["mean"].dtype == dtype and ds["limit_error"].dtype == dtype
    z = (ds["mean"] - ds["limit_error"]) / ds["stderr"]
    assert float(np.max(np.abs(z.sel(k=slice(1, None))))) < 4


def divergent_spec(**changes) -> SweepSpec:
    kw = dict(d=2, alphas=(0.0, 1.0), ns=(200.0, 400.0), ms=(3.0,), k_max=40, prompts=200, chunk=64)
    return SweepSpec(**dict(kw, **changes))


def test_divergent_prompts_give_inf_mean_and_finite_median():
    """Finite-m overthinking: λ_max(Γ⁻¹ S_m) > 2 for some prompts of length 3; they overflow to inf."""
    ds = run_sweep(divergent_spec(), progress=False)
    last = ds.sel(k=40)
    assert np.any(np.isinf(last["mean"])) and np.all(np.isinf(last["stderr"]) == np.isinf(last["mean"]))
    assert np.all(np.isfinite(last["median"]))


# ----------------------------------------------------------------------------- persistence
def test_out_file_round_trip_skip_and_refusal(tmp_path, base_ds, monkeypatch):
    out = tmp_path / "sub" / "sweep.nc"
    ds = run_sweep(base_spec(), out=out, progress=False)
    assert out.exists() and not os.path.exists(store.partial_dir(str(out)))
    np.testing.assert_array_equal(ds["mean"], base_ds["mean"])
    disk = store.read_dataset(str(out))
    for name in base_ds.data_vars:
        np.testing.assert_array_equal(disk[name], base_ds[name])
    assert disk.attrs["spec"] == base_ds.attrs["spec"]

    def no_compute(*a, **k):
        raise AssertionError("finished work was recomputed")

    monkeypatch.setattr(sweep, "_chunk_program", no_compute)
    again = run_sweep(base_spec(chunk=100), out=out, progress=False)  # chunk size is not part of the identity
    np.testing.assert_array_equal(again["median"], base_ds["median"])
    with pytest.raises(store.SpecMismatchError, match="k_max"):
        run_sweep(base_spec(k_max=5), out=out, progress=False)


_KILLED = """
import sys, time
from ttscale import store
from ttscale.sweep import SweepSpec, run_sweep
orig = store.PartialStore.save
def slow_save(self, *a, **k):
    orig(self, *a, **k)
    time.sleep(0.5)
store.PartialStore.save = slow_save
spec = SweepSpec(d=3, alphas=(0.0, 1.0), ns=(4.0, 16.0), ms=(12.0, float('inf')), k_max=4, prompts=600, chunk=256)
run_sweep(spec, out=sys.argv[1], progress=False)
"""


def test_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path, base_ds):
    out = tmp_path / "killed.nc"
    part = store.partial_dir(str(out))
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(out)], cwd=ROOT,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if os.path.isdir(part) and sum(f.endswith(".npz") for f in os.listdir(part)) >= 2:
                break
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = [f for f in os.listdir(part) if f.endswith(".npz")]
    assert 2 <= len(done) < 6 and not out.exists(), done  # killed mid-way
    resumed = run_sweep(base_spec(), out=out, progress=False)
    for name in ("mean", "stderr", "median"):
        np.testing.assert_allclose(resumed[name], base_ds[name], rtol=1e-6, atol=0)
    assert out.exists() and not os.path.exists(part)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "changes, exc, match",
    [
        (dict(alphas=()), ValueError, "alphas must not be empty"),
        (dict(ns=[]), ValueError, "ns must not be empty"),
        (dict(ms=()), ValueError, "ms must not be empty"),
        (dict(k_max=-1), ValueError, "k_max"),
        (dict(prompts=1), ValueError, "prompts"),
        (dict(family="gaussian"), ValueError, "family"),
        (dict(model="lsa"), ValueError, "inf"),
        (dict(ms=(12.5,)), ValueError, "whole numbers"),
        (dict(ms=(0.0,)), ValueError, "ms must be >= 1"),
        (dict(ns=(4.0, 4.0)), ValueError, "duplicates"),
        (dict(ns=(float("nan"),)), ValueError, "nan"),
        (dict(noise=-1.0), ValueError, "noise"),
        (dict(dtype="float16"), ValueError, "dtype"),
        (dict(test="rotated"), ValueError, "test"),
        (dict(model="trained", ms=(12.0,)), TypeError, "params"),
        (dict(model="magic"), ValueError, "unknown model 'magic'"),
        (dict(model="gd:eta=-1"), ValueError, "eta"),
        (dict(model="gd:step=1"), ValueError, "model gd"),
        (dict(model="lsa:c=0", ms=(12.0,)), ValueError, "c must be"),
        (dict(model=42), TypeError, "model"),
        (dict(model="lsa", params=lsa.LSAParams(np.zeros((3, 3)), np.zeros((3, 3))), ms=(12.0,)), ValueError, "params"),
        (dict(family="explicit"), ValueError, "covariances"),
        (dict(chunk=0), ValueError, "chunk"),
        (dict(k_max=2.5), TypeError, "k_max"),
        (dict(seed=-1), ValueError, "seed"),
    ],
)
def test_bad_specs_are_refused_on_construction(changes, exc, match):
    with pytest.raises(exc, match=match):
        base_spec(**changes)


def test_unwritable_out_is_refused_before_compute(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "_run", lambda *a, **k: pytest.fail("compute started"))
    with pytest.raises(ValueError, match="directory"):
        run_sweep(base_spec(), out=tmp_path, progress=False)
    blocker = tmp_path / "a_file"  # a parent that is a regular file cannot be created, even by root
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot create the directory"):
        run_sweep(base_spec(), out=blocker / "sub" / "x.nc", progress=False)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access  # root ignores permission bits: make the directory read-only as the check sees it
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == str(locked) else real_access(p, mode))
    with pytest.raises(ValueError, match="not writable"):
        run_sweep(base_spec(), out=locked / "x.nc", progress=False)
    monkeypatch.setattr(os, "access", real_access)
    with pytest.raises(TypeError, match="spec"):
        run_sweep({"d": 3})


# ----------------------------------------------------------------------------- CLI
def test_parse_grid():
    from ttscale.commands.sweep import parse_grid

    np.testing.assert_allclose(parse_grid("alpha", "0:2:16"), np.linspace(0, 2, 16))
    assert parse_grid("n", "5,10,20,40,80") == (5.0, 10.0, 20.0, 40.0, 80.0)
    assert parse_grid("m", "40,inf") == (40.0, INF)
    for bad in ("", "1:2", "a,b", "0:1:x"):
        with pytest.raises(ValueError, match="--x|--m"):
            parse_grid("m" if bad else "x", bad)


def test_cli_writes_the_same_dataset(tmp_path, base_ds, capsys):
    from ttscale.cli import main

    out = tmp_path / "cli.nc"
    rc = main(["sweep", "--d", "3", "--alpha", "0,1", "--n", "4,16", "--m", "12,inf", "--k-max", "4",
               "--prompts", "600", "--chunk", "256", "--out", str(out), "--no-progress"])
    assert rc == 0 and out.exists()
    disk = store.read_dataset(str(out))
    np.testing.assert_array_equal(disk["mean"], base_ds["mean"])
    assert "wrote" in capsys.readouterr().out
    assert main(["sweep", "--m", "40,inf", "--model", "lsa", "--no-progress"]) == 2
    assert "inf" in capsys.readouterr().err


def test_pseudo_newton_kernel_forms_agree_and_blocks_change_nothing():
    """The scaled diagonal form u = A e, the general form (dense A and P) and the literal ŵ iteration agree,
    and the engine's prompt blocks and cell groups change no number (one cell run alone = in a group)."""
    d, b, k = 5, 24, 6
    cov = tts.from_eigenvalues(np.array([2.0, 1.0, 0.5, 0.25, 0.0]))  # a zero eigenvalue: that coordinate never moves
    stats = tts.sample_statistics(jax.random.key(3), cov, 11, b, noise=0.2, method="prompts")
    P = jnp.abs(jax.random.normal(jax.random.key(5), (d,))) * 0.3
    pn = models.pseudo_newton
    scaled = pn.errors(pn.PseudoNewtonParams(P), stats, k)
    dense_stats = tts.Statistics(stats.S_Z, stats.g, stats.ee, stats.w, jnp.diag(stats.root), stats.noise, stats.m)
    general = pn.errors(pn.PseudoNewtonParams(jnp.diag(P)), dense_stats, k)
    np.testing.assert_allclose(scaled, general, rtol=2e-5, atol=1e-6)
    # the literal iterate ŵ ← ŵ − P(S ŵ − b) on the raw prompts of the same key
    prompts = prompts_at(jax.random.key(3), np.arange(b), cov, 11, noise=0.2)
    est = jax.vmap(lambda X, y: cot.pseudo_newton_estimates(jnp.diag(P), X, y, k))(prompts.X, prompts.y)
    np.testing.assert_allclose(scaled, cot.squared_errors(est, prompts.w), rtol=2e-4, atol=2e-5)
    # engine: a one-cell sweep equals the same cell inside a CRN group of 4 cells
    spec = base_spec(ms=(12.0,), prompts=40, chunk=40, common_random_numbers=True)
    whole = prompt_errors(spec)
    alone = prompt_errors(spec.replace(alphas=(1.0,), ns=(16.0,)))
    np.testing.assert_allclose(alone[0, 0], whole[1, 1], rtol=1e-6)


@pytest.mark.parametrize("d", [5, 12])
def test_prompts_minor_kernel_equals_the_batched_dot_kernel(monkeypatch, d):
    """The diagonal kernel's two layouts (prompts-minor for d <= UNROLLED_MAX_D, batched dot beyond) give the
    same errors to float32 round-off, with label noise and a zero eigenvalue (a coordinate that never moves)."""
    eig = np.linspace(2.0, 0.3, d)
    eig[-1] = 0.0
    cov = tts.from_eigenvalues(eig)
    stats = tts.sample_statistics(jax.random.key(11), cov, 3 * d, 40, noise=0.3, method="prompts")
    P = jnp.abs(jax.random.normal(jax.random.key(12), (d,))) * 0.2
    pn = models.pseudo_newton
    assert d <= pn.UNROLLED_MAX_D
    minor = pn.errors(pn.PseudoNewtonParams(P), stats, 12)
    monkeypatch.setattr(pn, "UNROLLED_MAX_D", 0)
    batched = pn.errors(pn.PseudoNewtonParams(P), stats, 12)
    assert minor.shape == batched.shape == (40, 13)
    np.testing.assert_allclose(minor, batched, rtol=2e-5, atol=1e-7)
    assert not np.allclose(minor[:, 1:], minor[:, :1])  # the iteration moved


def _legacy_spec() -> SweepSpec:
    return base_spec(d=12, ms=(40.0,), k_max=8, prompts=256, chunk=256, noise=0.3)


def test_legacy_fusion_emitters_are_asked_for_only_where_known(monkeypatch):
    """The independent-prompt CPU chunk program asks for XLA's legacy fusion emitters on the jaxlib series that was
    measured (an option XLA does not know fails the compile), and never with common random numbers."""
    import jaxlib

    from ttscale import devices

    spec = _legacy_spec()
    engine = sweep._Engine(spec)
    mesh = devices.prompt_mesh(engine.n_devices)
    independent = engine.shape(0, engine.padded(256))
    crn = sweep._Engine(spec.replace(common_random_numbers=True)).shape(0, engine.padded(256))
    for version, legacy in (("0.10.2", True), ("0.10.9", True), ("0.11.0", False), ("1.0.0", False)):
        monkeypatch.setattr(jaxlib, "__version__", version)
        options = sweep._compiler_options(independent, mesh)
        assert options["xla_cpu_prefer_vector_width"] == 512
        assert ("xla_cpu_use_fusion_emitters" in options) is legacy, version
        assert sweep._compiler_options(crn, mesh) is None


@pytest.mark.skipif(not sweep._legacy_emitters_known(),
                    reason="this jaxlib is not one the legacy-emitter option was measured on: the engine does not pass "
                           "it (XLA may not know it, and an unknown option fails the compile), so there is nothing to compare")
def test_legacy_fusion_emitters_give_the_same_numbers(monkeypatch):
    """Per-prompt errors of the independent-prompt chunk program with XLA's legacy fusion emitters (the engine's choice
    here) equal those with XLA's default emitters to float32 round-off (label noise, Bartlett draws, d = 12)."""
    spec = _legacy_spec()
    sweep._chunk_program.cache_clear()
    try:
        legacy = prompt_errors(spec)
        monkeypatch.setattr(sweep, "_LEGACY_EMITTERS_JAXLIB", ())
        sweep._chunk_program.cache_clear()
        default = prompt_errors(spec)
    finally:
        sweep._chunk_program.cache_clear()
    assert legacy.shape == default.shape == (2, 2, 256, 9)
    np.testing.assert_allclose(legacy, default, rtol=2e-5, atol=1e-7)
    assert not np.allclose(legacy[..., 1:], legacy[..., :1])  # the iteration moved


# ----------------------------------------------------------------------------- statistics in bounded memory
def test_per_prompt_errors_spill_to_disk_beyond_the_host_budget_and_change_nothing(monkeypatch, base_ds):
    from ttscale import summary

    made = []
    orig = summary.PromptErrors.__init__

    def spy(self, *a, **k):
        orig(self, *a, **k)
        made.append(self.in_memory)

    monkeypatch.setattr(summary.PromptErrors, "__init__", spy)
    monkeypatch.setattr(sweep, "HOST_MEMORY", 4096)  # bytes: far below one m's errors
    spilled = run_sweep(base_spec(), progress=False)
    assert made and not any(made)  # every test length went through the memory-mapped store
    for name in ("mean", "stderr", "median"):
        np.testing.assert_array_equal(spilled[name], base_ds[name])


def test_standard_errors_stay_right_when_errors_are_tiny():
    """Λ = Σ = I, n = 60: e_k = r^k w with r^(2k) ≈ 1e-20 at k = 20. The standard error must be
    ≈ sd(||w||²)/mean/√P = √(2/d)/√P of the mean (float32 squared deviations would underflow)."""
    spec = SweepSpec(d=10, alphas=(0.0,), ns=(60.0,), ms=(INF,), k_max=20, prompts=512, chunk=256)
    ds = run_sweep(spec, progress=False).isel(spectrum=0, n=0, m=0)
    assert float(ds["limit_error"].sel(k=20)) < 1e-15
    rel_se = (ds["stderr"] / ds["mean"]).values[1:]
    np.testing.assert_allclose(rel_se, np.sqrt(2 / 10) / np.sqrt(512), rtol=0.25)
    z = ((ds["mean"] - ds["limit_error"]) / ds["stderr"]).values[1:]
    assert np.max(np.abs(z)) < 4, z


# ----------------------------------------------------------------------------- the model protocol
def _heavy_ball(eta=0.3, beta=0.4) -> models.Model:
    """A model defined outside the package: CoT with momentum, ŵ_{k+1} = ŵ_k − η(S ŵ_k − b) + β(ŵ_k − ŵ_{k−1})."""

    def init(train, n):
        # the step depends on the training task: η scaled by 1 / (mean eigenvalue of Λ + 1/n)
        return {"eta": eta / (jnp.mean(train.eigenvalues) + 1.0 / n), "beta": jnp.asarray(beta, train.dtype)}

    def errors(params, stats, k_max):
        b = stats.b()

        def step(state):
            w_hat, w_prev = state
            w_next = w_hat - params["eta"] * (stats.apply_S(w_hat) - b) + params["beta"] * (w_hat - w_prev)
            return (w_next, w_hat), w_next

        zero = jnp.zeros_like(stats.w)
        est = models.rollout(step, (zero, zero), k_max)
        return models.squared_errors_of(jnp.moveaxis(est, 0, -2), stats.w)

    return models.Model("heavy_ball", init, errors)


def test_a_model_defined_outside_the_package_sweeps_like_a_builtin():
    """run_sweep with a test-file model gives, cell by cell, its own rollout on the cell's prompts,
    and that rollout equals a plain NumPy loop over the raw prompts (independent of the model's code)."""
    model = _heavy_ball()
    spec = base_spec(ms=(12.0,), prompts=96, chunk=64, model=model, noise=0.3, sampler="prompts")
    ds = run_sweep(spec, progress=False)
    assert ds.attrs["model"] == "heavy_ball" and "limit_error" not in ds  # no preconditioner: no closed forms
    errs = prompt_errors(spec)  # [S, N, P, K+1]
    keys = sweep.cell_keys(spec, 0)
    for s, alpha in enumerate(spec.alphas):
        for i, n in enumerate(spec.ns):
            cov = tts.power_law(3, alpha)
            prompts = prompts_at(jax.random.wrap_key_data(keys[s * 2 + i]), np.arange(96), cov, 12, noise=0.3)
            params = model.init(cov, jnp.float32(n))
            own = jax.jit(model.errors, static_argnums=2)(params, tts.statistics_of(prompts), 4)
            np.testing.assert_allclose(errs[s, i], own, rtol=2e-4, atol=2e-5)
            X, y, w = (np.asarray(a, np.float64) for a in prompts)
            eta, beta = float(params["eta"]), float(params["beta"])
            cur, prev = np.zeros_like(w), np.zeros_like(w)
            ref = [np.sum(w * w, -1)]
            for _ in range(4):
                grad = np.einsum("bim,bm->bi", X, np.einsum("bim,bi->bm", X, cur) - y) / 12
                cur, prev = cur - eta * grad + beta * (cur - prev), cur
                ref.append(np.sum((cur - w) ** 2, -1))
            np.testing.assert_allclose(errs[s, i], np.stack(ref, -1), rtol=2e-4, atol=2e-5)
    mean = errs.mean(axis=2)
    np.testing.assert_allclose(ds["mean"].values[:, :, 0], mean, rtol=1e-5)


def test_from_step_builds_a_model_whose_sweep_equals_its_rollout():
    """A one-line CoT step (sign-preconditioned GD, nonlinear in ŵ) through models.from_step."""
    step = lambda params, stats, w_hat: w_hat - params * jnp.tanh(stats.apply_S(w_hat) - stats.b())  # noqa: E731
    model = models.from_step("tanh_gd", lambda train, n: jnp.asarray(0.4, train.dtype), step)
    spec = base_spec(ms=(12.0, INF), prompts=64, chunk=64, model=model, common_random_numbers=True, sampler="prompts")
    errs = prompt_errors(spec, m_index=0)
    key = jax.random.wrap_key_data(sweep.cell_keys(spec, 0))
    for s, alpha in enumerate(spec.alphas):
        prompts = prompts_at(key, np.arange(64), tts.power_law(3, alpha), 12)
        X, y, w = (np.asarray(a, np.float64) for a in prompts)
        cur, ref = np.zeros_like(w), [np.sum(w * w, -1)]
        for _ in range(4):
            cur = cur - 0.4 * np.tanh(np.einsum("bim,bm->bi", X, np.einsum("bim,bi->bm", X, cur) - y) / 12)
            ref.append(np.sum((cur - w) ** 2, -1))
        for i in range(2):  # the model ignores n: both cells equal
            np.testing.assert_allclose(errs[s, i], np.stack(ref, -1), rtol=2e-4, atol=2e-5)


def test_gd_equals_its_closed_form_on_identical_prompts():
    """gd: ||(I − ηS)^k w||² per prompt (NumPy, on the cell's raw prompts); at m = ∞ the closed form
    limit_error(ηI, Σ, k), and with Σ = I every prompt scales by exactly (1 − η)^{2k}."""
    spec = base_spec(ms=(12.0, INF), prompts=64, chunk=64, model="gd:eta=0.5", sampler="prompts")
    errs = prompt_errors(spec, m_index=0)
    keys = sweep.cell_keys(spec, 0)
    for s, alpha in enumerate(spec.alphas):
        prompts = prompts_at(jax.random.wrap_key_data(keys[2 * s]), np.arange(64), tts.power_law(3, alpha), 12)
        X, w = np.asarray(prompts.X, np.float64), np.asarray(prompts.w, np.float64)
        B = np.eye(3) - 0.5 * np.einsum("bim,bjm->bij", X, X) / 12
        e, ref = -w, [np.sum(w * w, -1)]
        for _ in range(4):
            e = np.einsum("bij,bj->bi", B, e)
            ref.append(np.sum(e * e, -1))
        np.testing.assert_allclose(errs[s, 0], np.stack(ref, -1), rtol=2e-4, atol=2e-5)
    ds = run_sweep(spec, progress=False)
    for s, alpha in enumerate(spec.alphas):
        lim = _limit_error(0.5 * jnp.eye(3), tts.power_law(3, alpha), 4)
        np.testing.assert_allclose(ds["limit_error"][s, 0], lim, rtol=1e-5)
        z = (ds["mean"].sel(m=INF)[s, 0] - lim) / ds["stderr"].sel(m=INF)[s, 0]
        assert float(np.max(np.abs(z[1:]))) < 4
    iso = prompt_errors(base_spec(alphas=(0.0,), ns=(20.0,), ms=(INF,), model="gd:eta=0.5", prompts=64, chunk=64))
    np.testing.assert_allclose(iso[0, 0] / iso[0, 0, :, :1], np.broadcast_to(0.25 ** np.arange(5), (64, 5)), rtol=1e-6)


def test_cli_sweeps_gd_to_its_closed_form(tmp_path, capsys):
    """ttscale sweep --d 10 --alpha 0 --n 20 --m inf --k-max 6 --model gd:eta=0.5: mean d (1 − η)^{2k}."""
    from ttscale.cli import main

    out = tmp_path / "gd.nc"
    assert main(["sweep", "--d", "10", "--alpha", "0", "--n", "20", "--m", "inf", "--k-max", "6",
                 "--model", "gd:eta=0.5", "--out", str(out), "--no-progress"]) == 0
    ds = store.read_dataset(str(out)).isel(spectrum=0, n=0, m=0)
    assert ds.attrs["model"] == "gd:eta=0.5"
    theory_curve = 10 * 0.25 ** np.arange(7)
    np.testing.assert_allclose(ds["limit_error"], theory_curve, rtol=1e-6)
    z = (ds["mean"] - theory_curve) / ds["stderr"]
    assert float(np.max(np.abs(z))) < 4, z.values
    np.testing.assert_allclose(ds["mean"] / ds["mean"][0], 0.25 ** np.arange(7), rtol=1e-5)
    assert main(["sweep", "--model", "newton:order=2", "--no-progress"]) == 2
    assert "unknown model 'newton'" in capsys.readouterr().err


def test_registry_names_round_trip_through_the_spec_json():
    for name in ("pseudo_newton", "gd:eta=0.25", "lsa:c=0.7"):
        spec = base_spec(ms=(12.0,), model=name)
        again = SweepSpec.from_json(spec.to_json())
        assert again == spec and again.model_object.name == spec.model_object.name
    assert base_spec(model="gd:eta=0.25").identity() != base_spec(model="gd:eta=0.5").identity()


# ----------------------------------------------------------------------------- resume: exactly the finished chunks
def test_resume_reuses_exactly_the_finished_chunks_and_recomputes_a_corrupt_one(tmp_path, base_ds, monkeypatch):
    """Keep every chunk of a finished run, corrupt one value of one chunk (m index 1) and rerun: only that
    chunk is recomputed (a warning names it), every other chunk is loaded, and the result equals the
    uninterrupted run for every m — so chunks are reused for the right m and prompt range."""
    out = tmp_path / "sweep.nc"
    monkeypatch.setattr(store.PartialStore, "remove", lambda self: None)
    run_sweep(base_spec(), out=out, progress=False)
    partial = store.partial_dir(str(out))
    names = sorted(n for n in os.listdir(partial) if n.endswith(".npz"))
    assert len(names) == 2 * 3  # 2 test lengths × chunks [0, 256), [256, 512), [512, 600)
    victim = os.path.join(partial, names[4])  # m index 1
    with np.load(victim) as z:
        arrays = dict(z)
    arrays["errors"] = arrays["errors"] * 1.01  # valid file, altered values, stale checksum
    with open(victim, "wb") as fh:
        np.savez(fh, **arrays)
    os.unlink(out)
    computed = []
    orig = sweep._Engine.chunk

    def spy(self, m_index, start, stop, batch=None):
        computed.append((m_index, start, stop))
        return orig(self, m_index, start, stop, batch)

    monkeypatch.setattr(sweep._Engine, "chunk", spy)
    with pytest.warns(RuntimeWarning, match=os.path.basename(victim)):
        again = run_sweep(base_spec(), out=out, progress=False)
    assert computed == [(1, 256, 512)]
    for name in ("mean", "stderr", "median"):
        np.testing.assert_array_equal(again[name], base_ds[name])


def test_a_second_writer_on_the_same_out_is_refused(tmp_path):
    out = tmp_path / "sweep.nc"
    with store.lock(out):
        with pytest.raises(store.LockedError, match=str(os.getpid())):
            run_sweep(base_spec(), out=out, progress=False)
    assert not os.path.exists(store.lock_path(out))


# ----------------------------------------------------------------------------- impossible sizes, refused up front
def test_impossible_sizes_are_refused_before_compute_with_the_numbers(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(sweep, "_run", lambda *a, **k: pytest.fail("compute started"))
    with pytest.raises(ValueError, match=r"prompts must be <= 2\*\*32"):
        SweepSpec(d=3, ns=(10.0,), ms=(10.0,), k_max=2, prompts=5_000_000_000, chunk=16)
    with pytest.raises(ValueError, match=r"chunk: one chunk of 4096 prompts .* needs ≈ .* GiB of memory.*lower chunk"):
        run_sweep(SweepSpec(d=3, ns=(10.0,), ms=(3e7,), k_max=2, prompts=4096, sampler="prompts"), progress=False)
    with pytest.raises(ValueError, match=r"lower m, d or the grid"):
        run_sweep(SweepSpec(d=100_000, ns=(10.0,), ms=(10.0,), k_max=2, prompts=2, chunk=1), progress=False)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 2**30 - 2**20, 2**20))
    with pytest.raises(ValueError, match=r"writes ≈ .* GiB .* has 0.000977 GiB free"):
        run_sweep(base_spec(prompts=100_000, chunk=4096), out=tmp_path / "x.nc", progress=False)
    assert os.listdir(tmp_path) == []
    with pytest.warns(RuntimeWarning, match="compiled calls"), pytest.raises(pytest.fail.Exception):
        run_sweep(base_spec(ms=(12.0,), prompts=200_002, chunk=2), progress=False)


def test_per_prompt_errors_and_medians_are_bit_identical_across_chunk_sizes():
    """Every block of prompts is a full one whatever the chunk, so the per-prompt errors (and the exact
    medians) are the same bits; means and standard errors merge chunk moments and agree to ~1e-7."""
    spec = base_spec(ms=(12.0,), prompts=300, noise=0.2)
    a = prompt_errors(spec)
    for chunk in (100, 37):
        np.testing.assert_array_equal(prompt_errors(spec.replace(chunk=chunk)), a)
    x, y = run_sweep(spec, progress=False), run_sweep(spec.replace(chunk=37), progress=False)
    np.testing.assert_array_equal(x["median"], y["median"])
    np.testing.assert_allclose(x["mean"], y["mean"], rtol=1e-6)


def test_ctrl_c_during_a_sweep_says_where_it_stopped_and_the_rerun_resumes(tmp_path, monkeypatch, capsys, base_ds):
    """KeyboardInterrupt after the 4th chunk: one line on stderr (exit 130) naming the test length and how many
    chunks are saved; rerunning the same command finishes with the uninterrupted numbers."""
    from ttscale.cli import main

    orig, seen = sweep._Engine.chunk, []

    def interrupt_after_three(self, *a, **k):
        if len(seen) == 3:
            raise KeyboardInterrupt
        seen.append(a)
        return orig(self, *a, **k)

    monkeypatch.setattr(sweep._Engine, "chunk", interrupt_after_three)
    out = tmp_path / "s.nc"
    argv = ["sweep", "--d", "3", "--alpha", "0,1", "--n", "4,16", "--m", "12,inf", "--k-max", "4", "--prompts", "600",
            "--chunk", "256", "--out", str(out), "--no-progress"]
    assert main(argv) == 130
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "interrupted" in err[0] and "rerun the same command to resume" in err[0]
    assert "m = inf (index 1); 3 of 6 chunks are saved" in err[0], err[0]
    monkeypatch.setattr(sweep._Engine, "chunk", orig)
    assert main(argv) == 0
    np.testing.assert_array_equal(store.read_dataset(str(out))["mean"], base_ds["mean"])

