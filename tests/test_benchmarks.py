"""Benchmarks: every optimised path equals its reference on identical inputs; every script runs.

No timings are asserted. The equalities are float32 round-off checks:

* NumPy baselines (``benchmarks/numpy_baselines.py``) vs ttscale's core on the same prompts
  (pseudo-Newton, literal LSA, LSA SGD training; GPT-2 forward and CoT inside the
  ``gpt2_tokens`` quick run, which asserts a float32 relative error ≤ 2e-3);
* the sweep engine (pseudo-Newton and LSA, independent and common-random-number sampling) vs
  ``ttscale.cot.lsa_errors(method="full")`` on the very prompts the engine draws, rebuilt with
  its own ``cell_keys`` and ``prompts_at`` (the CRN path shares one key across cells);
* each benchmark script's ``main`` at its ``--quick`` size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttscale as tts

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_common as bc  # noqa: E402
import numpy_baselines as nb  # noqa: E402

RTOL = 2e-4


def test_numpy_diagonal_and_shared_gram_equal_dense():
    """The CRN baseline's shortcuts (S_m = D S_Z D, several n at once) equal the dense path."""
    d, m, b, k = 4, 16, 32, 5
    rng = np.random.default_rng(1)
    Z = rng.standard_normal((b, d, m), dtype=np.float32)
    w = rng.standard_normal((b, d), dtype=np.float32)
    lam = nb.power_law_eigenvalues(d, [0.7])[0]
    X = np.sqrt(lam)[None, :, None] * Z
    ps = np.stack([nb.gamma_inverse_diagonal(lam, n) for n in (5.0, 40.0)])
    multi = nb.pseudo_newton_errors_diagonal(np.sqrt(lam), ps, Z, w, k)
    for j in range(2):
        dense = nb.pseudo_newton_errors(np.diag(ps[j]), X, w, k)
        np.testing.assert_allclose(multi[j], dense, rtol=RTOL, atol=1e-6)


def test_numpy_sweep_schemes_and_summary():
    """CRN and independent NumPy sweeps estimate the same means; summaries match ttscale.error_curve."""
    kw = dict(d=4, alphas=[0.0, 1.0], ns=[10.0], m=40, k_max=3, prompts=4000)
    a = nb.sweep_numpy(**kw, scheme="crn", seed=0).summary
    b = nb.sweep_numpy(**kw, scheme="independent", seed=1, chunk=1500).summary
    agree = bc.agreement(a.mean, a.stderr, b.mean, b.stderr, z_max=5.0)
    assert agree["ok"], agree
    errs = np.abs(np.random.default_rng(0).standard_normal((50, 4))).astype(np.float32)
    errs[3, 2] = np.nan
    s = nb.summarise(errs)
    ref = tts.error_curve(jnp.asarray(errs))
    for got, want in zip(s, ref):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5)
    with pytest.raises(ValueError, match="scheme"):
        nb.sweep_numpy(**kw, scheme="bogus")


def test_box_muller_and_bartlett_have_the_right_moments():
    """float32 Box–Muller normals: mean 0, variance 1, kurtosis 3; Bartlett S_Z: E[S_Z] = I, E[S_Z²] = (1 + (d + 1)/m) I."""
    rng = np.random.Generator(np.random.SFC64(3))
    x = nb.box_muller(rng, (400_001,)).astype(np.float64)
    n = x.size
    assert nb.box_muller(rng, (3, 5)).shape == (3, 5) and nb.box_muller(rng, (3, 5)).dtype == np.float32
    assert abs(x.mean()) < 5 / np.sqrt(n) and abs(x.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(np.mean(x**4) - 3) < 5 * np.sqrt(96 / n)  # Var[x⁴] = 105 − 9
    d, m, b = 4, 9, 40_000
    S = nb.wishart_whitened(rng, b, d, m).astype(np.float64)
    np.testing.assert_allclose(S, np.swapaxes(S, 1, 2), atol=1e-6)
    # Z Zᵀ ~ Wishart(m, I): E[S_Z] = I, Var[(S_Z)_ij] = (1 + δ_ij)/m, E[S_Z²] = (1 + 1/m) I + (d/m) I
    se = np.sqrt((1 + np.eye(d)) / m / b)
    assert np.all(np.abs(S.mean(0) - np.eye(d)) < 6 * se)
    S2 = np.einsum("bij,bjk->bik", S, S)
    want = (1 + (d + 1) / m) * np.eye(d)
    assert np.all(np.abs(S2.mean(0) - want) < 6 * S2.std(0) / np.sqrt(b) + 1e-9)
    with pytest.raises(ValueError, match="m must be >= d"):
        nb.wishart_whitened(rng, 2, 5, 4)


def test_strong_numpy_baseline_agrees_with_the_ttscale_sweep():
    """Every variant of the strong baseline (schemes × samplers × normal generators) estimates the same means as
    ``run_sweep`` (z ≤ 5 on every cell and k), and its k = 1 mean matches the exact finite-m one-step error."""
    d, alphas, ns, m, k_max, prompts = 4, (0.0, 1.5), (5.0, 40.0), 24, 4, 3000
    spec = tts.SweepSpec(d=d, alphas=alphas, ns=ns, ms=(float(m),), k_max=k_max, prompts=prompts, chunk=prompts,
                         model="pseudo_newton", seed=11)
    ds = tts.run_sweep(spec, progress=False)
    mean_tt, se_tt = ds["mean"].values[:, :, 0], ds["stderr"].values[:, :, 0]  # [S, N, K1]
    one_step = ds["one_step_error"].values[:, :, 0]  # closed form, [S, N]
    variants = [("independent", "prompts", "box_muller"), ("independent", "wishart", "generator"),
                ("crn", "prompts", "generator"), ("crn", "wishart", "box_muller")]
    for i, (scheme, sampler, method) in enumerate(variants):
        res = nb.sweep_numpy_strong(d, alphas, ns, m, k_max, prompts, scheme=scheme, sampler=sampler, seed=i,
                                    block=256, threads=2, method=method).summary
        assert res.mean.shape == res.stderr.shape == res.median.shape == (2, 2, k_max + 1)
        w2 = res.mean[..., 0]
        assert np.all(np.abs(w2 - d) < 5 * res.stderr[..., 0])  # E||w||² = d
        z = np.abs(res.mean - mean_tt) / np.sqrt(res.stderr**2 + se_tt**2)
        assert np.all(z[..., 1:] < 5), (scheme, sampler, method, z.max())
        z1 = np.abs(res.mean[..., 1] - one_step) / res.stderr[..., 1]
        assert np.all(z1 < 5), (scheme, sampler, method, z1.max())
        # the medians estimate the same quantity: within a loose 15 % at k = 1 (3000 prompts)
        np.testing.assert_allclose(res.median[..., 1], ds["median"].values[:, :, 0, 1], rtol=0.15)
    # the baseline does not depend on the thread count or (for a given seed) on the generator's order
    a = nb.sweep_numpy_strong(d, alphas, ns, m, k_max, 512, seed=5, threads=1)
    b = nb.sweep_numpy_strong(d, alphas, ns, m, k_max, 512, seed=5, threads=2)
    for f in nb.Summary._fields:
        np.testing.assert_array_equal(getattr(a.summary, f), getattr(b.summary, f))
    with pytest.raises(ValueError, match="sampler"):
        nb.sweep_numpy_strong(d, alphas, ns, m, k_max, 16, sampler="bartlett")
    with pytest.raises(ValueError, match="scheme"):
        nb.sweep_numpy_strong(d, alphas, ns, m, k_max, 16, scheme="shared")


def test_numpy_sweep_script_writes_its_summary(tmp_path):
    import numpy_sweep_a

    out = tmp_path / "np.npz"
    res = numpy_sweep_a.main(["--d", "4", "--alpha", "0,1", "--n", "10", "--m", "8", "--k-max", "3", "--prompts", "64",
                              "--sampler", "wishart", "--out", str(out)])
    z = np.load(out)
    assert z["mean"].shape == (2, 1, 4) and str(z["sampler"]) == "wishart"
    np.testing.assert_array_equal(z["mean"], res["summary"].mean)


def test_agreement_detects_a_shift():
    mean = np.zeros(100)
    se = np.full(100, 0.1)
    assert bc.agreement(mean, se, mean + 0.05, se)["ok"]
    bad = bc.agreement(mean, se, mean + 1.0, se)
    assert not bad["ok"] and bad["max_z"] > 5


# ----------------------------------------------------------------------------- sweep engine vs reference
# Same shapes as the scripts' --quick size, so the compiled sweep programs are shared.
QUICK = dict(d=6, alphas=tuple(np.linspace(0, 2, 3)), ns=(5.0, 20.0), ms=(12.0,), k_max=6, prompts=256)


@jax.jit
def _reference_errors(P, prompts):
    """Per-prompt errors of the literal LSA forward (``method="full"``) with the Theorem 3.1 optimum for ``P``."""
    return tts.lsa_errors(tts.params_from_preconditioner(P), prompts, QUICK["k_max"], method="full")


def _quick_prompts(s: int, n: float, seed: int = 5, crn: bool = False):
    """The engine's prompts for cell (s, n) of the QUICK grid, and that cell's ``P = Γ(Λ_s, n)⁻¹``."""
    from ttscale.prompts import prompts_at
    from ttscale.sweep import SweepSpec, cell_keys

    spec = SweepSpec(**QUICK, seed=seed, common_random_numbers=crn)
    lam = nb.power_law_eigenvalues(spec.d, spec.alphas)[s]
    keys = jax.random.wrap_key_data(jnp.asarray(cell_keys(spec, 0)))
    key = keys if crn else keys[s * len(spec.ns) + spec.ns.index(n)]
    pr = prompts_at(key, np.arange(spec.prompts), tts.from_eigenvalues(jnp.asarray(lam)), int(spec.ms[0]))
    return pr, np.diag(nb.gamma_inverse_diagonal(lam, n)).astype(np.float32)


def test_numpy_baselines_equal_ttscale_literal_lsa():
    """NumPy pseudo-Newton and the NumPy literal LSA forward vs ttscale's literal forward, same prompts."""
    pr, P = _quick_prompts(1, 5.0)
    ref = np.asarray(_reference_errors(jnp.asarray(P), pr))
    X, w = np.asarray(pr.X), np.asarray(pr.w)
    np.testing.assert_allclose(nb.pseudo_newton_errors(P, X, w, QUICK["k_max"]), ref, rtol=1e-3, atol=1e-5)
    W, V = nb.lsa_optimal_params(P)
    params = tts.params_from_preconditioner(jnp.asarray(P))
    np.testing.assert_array_equal(W, np.asarray(params.W))
    np.testing.assert_array_equal(V, np.asarray(params.V))
    np.testing.assert_allclose(nb.lsa_literal_errors(W, V, X, w, QUICK["k_max"]), ref, rtol=1e-3, atol=1e-5)
    lam = nb.power_law_eigenvalues(6, QUICK["alphas"])[1]
    np.testing.assert_allclose(P, np.asarray(tts.gamma_inverse(tts.from_eigenvalues(jnp.asarray(lam)), 5.0)), rtol=1e-6)


@pytest.mark.parametrize("model, crn", [("pseudo_newton", True), ("pseudo_newton", False), ("lsa", True)])
def test_sweep_equals_literal_lsa_on_same_normals(model, crn):
    """run_sweep (CRN: one key shared by all cells; independent: a key per cell) vs the literal forward."""
    from ttscale.sweep import SweepSpec, run_sweep

    spec = SweepSpec(**QUICK, model=model, seed=5, common_random_numbers=crn, sampler="prompts")  # the same normals
    ds = run_sweep(spec, progress=False)
    for s in range(len(spec.alphas)):
        for j, n in enumerate(spec.ns):
            pr, P = _quick_prompts(s, n, seed=5, crn=crn)
            ref = nb.summarise(np.asarray(_reference_errors(jnp.asarray(P), pr)))
            cell = ds.isel(spectrum=s, n=j, m=0)
            np.testing.assert_allclose(cell["mean"].values, np.asarray(ref.mean), rtol=2e-3)
            np.testing.assert_allclose(cell["median"].values, np.asarray(ref.median), rtol=2e-3)
            np.testing.assert_allclose(cell["stderr"].values, np.asarray(ref.stderr), rtol=1e-2, atol=1e-6)
    if crn:  # every cell saw the same w: the k = 0 errors ||w||² agree across cells
        k0 = ds["mean"].isel(m=0, k=0).values
        np.testing.assert_allclose(k0, k0[0, 0], rtol=1e-6)


# ----------------------------------------------------------------------------- training
def test_numpy_sgd_equals_make_train_on_same_prompts():
    from ttscale.tasks import task_mixture
    from ttscale.training import TrainConfig, make_train, sample_batch

    d, n, steps, batch, lr = 3, 8, 6, 32, 0.01
    cov = tts.power_law(d, 1.0)
    config = TrainConfig(d=d, tasks=task_mixture([cov], [n]), steps=steps, batch=batch, optimizer="sgd",
                         learning_rate=lr, schedule="constant", w_mode="frozen", v_mode="full")
    key = jax.random.key(4)
    res = make_train(config)(key)
    tasks = config.mixture()

    def draw(t):
        bt = sample_batch(jax.random.fold_in(key, t), tasks, config.n_max, batch, 0.0)
        return np.asarray(bt.X), np.asarray(bt.w)

    V, losses = nb.lsa_sgd_train(d, np.asarray(cov.eigenvalues), n, steps, batch, lr, draw=draw)
    np.testing.assert_allclose(losses, np.asarray(res.losses), rtol=1e-4)
    np.testing.assert_allclose(V, np.asarray(res.params.V), rtol=1e-3, atol=1e-6)


# ----------------------------------------------------------------------------- FLOP counts, memory probe
def test_flop_counts_match_the_issue():
    import bench_sweep as bs

    per_prompt = bs.minimal_flops_per_prompt(20, 40, 32)
    assert abs(per_prompt - 75e3) / 75e3 < 0.01  # "≈ 75 kFLOP per prompt"
    assert abs(per_prompt * 80 * 4096 - 24.5e9) / 24.5e9 < 0.01  # "24.5 GFLOP in all"
    D, N = 42, 41
    assert bs.literal_lsa_flops_per_prompt(20, 40, 1) == 4 * D * D * N + 4 * D * N * N


def test_peak_rss_probe_sees_an_allocation():
    small = bc.peak_rss_mib_of("x = 1")["maxrss_mib"]
    big = bc.peak_rss_mib_of("x = b\"1\" * (200 * 2**20)")["maxrss_mib"]
    assert big - small > 150


# ----------------------------------------------------------------------------- scripts run
def test_sweep_scripts_run_quick(capsys):
    import gpu_sweep
    import sweep_a
    import sweep_a_lsa

    out = sweep_a.main(["--quick", "--no-peak", "--repeats", "1"])
    assert [r["scheme"] for r in out["rows"]] == ["crn", "independent"]
    assert all(r["agreement"]["ok"] for r in out["rows"])
    assert all(r["ttscale"]["compiles_steady"] == 0 for r in out["rows"]), "a warm run_sweep recompiled"
    out = sweep_a_lsa.main(["--quick", "--no-peak", "--repeats", "1", "--schemes", "crn"])
    assert out["rows"][0]["agreement"]["ok"]
    out = gpu_sweep.main(["--cpu", "--repeats", "1", "--schemes", "crn"])
    assert out["rows"][0]["flops"] > 0
    text = capsys.readouterr().out
    assert "prompts·k/s" in text and "× NumPy" in text


def test_other_scripts_import_cleanly():
    import profile_sweep  # noqa: F401  (run via `ttscale bench profile`)
    import sweep_parts  # noqa: F401  (likewise: `ttscale bench parts`)
    import rng_transforms  # noqa: F401  (run by hand; its variants are timed, not compared)
    import compile_profile  # a pytest plugin (`-p compile_profile`): its classifier of eager operations

    assert compile_profile.is_eager_operation("jit(multiply)") and compile_profile.is_eager_operation("jit(_einsum)")
    assert not compile_profile.is_eager_operation("jit(device_program)") and not compile_profile.is_eager_operation("jit(scan)")


def test_numpy_partition_times_each_kernel_and_the_medians(capsys):
    import numpy_partition

    numpy_partition.main(["--repeats", "1", "--rows", "4", "--prompts", "64"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# machine:") and lines[2].startswith("# NPY_DISABLE_CPU_FEATURES=")
    assert lines[3].startswith("# dispatch targets on:")
    assert len(lines) == 10 and lines[-1].startswith("median_rows, 2640 x 64") and all(" ms" in x for x in lines[4:])


def test_compile_profile_summary_adds_up_each_workers_events(tmp_path, capsys):
    import compile_profile

    rows = [["backend_compile_duration", "jit(device_program)", "t::a", 2.0],
            ["backend_compile_duration", "jit(multiply)", "t::a", 0.25],
            ["jaxpr_trace_duration", "jit(multiply)", "t::b", 0.5]]
    (tmp_path / "compile_gw0.json").write_text(json.dumps(rows[:2]))
    (tmp_path / "compile_gw1.json").write_text(json.dumps(rows[2:]))
    out = compile_profile.summarise(str(tmp_path))
    assert out["total_s"] == 2.75 and out["eager_s"] == 0.75
    assert out["by_event"] == {"backend_compile_duration": 2.25, "jaxpr_trace_duration": 0.5}
    assert out["eager_by_test"] == {"t::a": 0.25, "t::b": 0.5}
    assert "single operations run eagerly: 0.8 s (27 %)" in capsys.readouterr().out


# one test per script, so that xdist can run them on both workers (together they took 53 s on one)
def test_train_lsa_runs_quick():
    import train_lsa

    out = train_lsa.main(["--quick", "--no-peak", "--repeats", "1"])
    assert out["ok"]


def test_scaling_runs_quick():
    import scaling

    out = scaling.main(["--quick", "--no-peak", "--repeats", "1"])
    assert len(out["rows"]) == 1 and all(r["rate"] > 0 for r in out["rows"])


def test_gpt2_tokens_runs_quick():
    import gpt2_tokens

    out = gpt2_tokens.main(["--quick", "--no-peak", "--repeats", "1"])
    assert out.get("skipped") or all(r["ok"] for r in out["rows"])


def test_engine_settings_runs_quick(tmp_path, monkeypatch):
    import engine_settings

    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)  # the children compile: each reports XLA's seconds
    out = engine_settings.main(["--quick", "--rounds", "1", "--repeats", "1", "--workloads", "crn",
                                "--compile-json", str(tmp_path / "compile.json")])
    assert sorted(out) == ["crn | 512-bit forced", "crn | block 8", "crn | engine", "crn | legacy emitters forced"]
    assert all(v[0] > 0 for v in out.values())
    compiled = json.loads((tmp_path / "compile.json").read_text())
    assert sorted(compiled) == sorted(out) and all(v[0] > 0 for v in compiled.values())  # 0: the chunk program was missed


def test_first_calls_times_every_listed_function():
    import first_calls

    out = first_calls.main(["--quick", "--json"])
    assert len(out["rows"]) == 9 and all(r["first_s"] > 0 and r["warm_s"] > 0 for r in out["rows"].values())


def test_netcdf_engines_time_ttscale_engine_and_read_back_what_they_wrote():
    """benchmarks/netcdf_engines.py --quick: ttscale's own engine is installed and timed (the script checks each file
    it wrote against the Dataset, so a lossy engine raises)."""
    import netcdf_engines

    from ttscale import store

    out = netcdf_engines.main(["--quick", "--repeats", "1"])
    assert store.NETCDF_ENGINE in out
    assert all(v["write_best"] > 0 for v in out.values())


def test_sampler_variants_time_the_engine_and_agree_with_it():
    """benchmarks/sampler_variants.py --quick: each variant times the engine's own program; the factor kernel and the
    slice-built L compute the engine's errors (round-off), an ablation is not compared."""
    import sampler_variants

    out = sampler_variants.main(["--quick", "--rounds", "1", "--repeats", "1", "--variants", "engine,factor,slices,no LLt"])
    assert sorted(out["seconds"]) == ["engine", "factor", "no LLt", "slices"]
    assert all(v[0] > 0 for v in out["seconds"].values())
    assert sorted(out["max_relative_difference"]) == ["factor", "slices"]
    assert out["max_relative_difference"]["slices"] <= 1e-6  # the same L (measured: bit for bit), the same product
    assert out["max_relative_difference"]["factor"] < 1e-2


def test_gpu_script_is_valid_bash_and_cli_lists_benchmarks():
    for script in ("gpu.sh", "whole_process.sh", "compare_fixed_cost.sh"):
        assert subprocess.run(["bash", "-n", str(BENCH / script)]).returncode == 0, script
    from ttscale.cli import main

    assert main(["bench", "list"]) == 0
    assert main(["bench", "no-such-benchmark"]) == 2


def test_crn_ceiling_kernel_computes_the_engines_errors():
    """benchmarks/crn_ceiling.py --quick: the hand-tiled C kernel, on 10 cells padded to 16 and the engine's own S_Z,
    computes the engine's per-prompt errors (a wrong index of q, S_Z or a cell, or a lost padding row would not)."""
    import crn_ceiling

    out = crn_ceiling.main(["--quick", "--rounds", "1", "--repeats", "1", "--no-peak"])
    if "skipped" in out:
        pytest.skip(out["skipped"])
    assert out["max_relative_difference"] < 1e-4  # measured 0 at this size, 4.7e-7 at sweep-A's
    assert len(out["seconds"]) == 4 and all(t[0] > 0 for t in out["seconds"].values())


def test_crn_kernel_layouts_compute_the_engines_errors():
    """benchmarks/crn_kernel.py --quick: the other layouts of the CRN kernel and a split cell group compute the engine's
    per-prompt errors (round-off only: a wrong transpose, a missing ``q`` or a cell mixed up with another would not)."""
    import crn_kernel

    variants = ["engine", "group 5", "cells-minor", "transposed"]  # prompts-minor is the engine's own single-cell kernel
    out = crn_kernel.main(["--quick", "--rounds", "1", "--repeats", "1", "--variants", ",".join(variants)])
    assert sorted(out["seconds"]) == sorted(variants)
    assert all(v[0] > 0 for v in out["seconds"].values())
    assert sorted(out["max_relative_difference"]) == sorted(variants[1:])
    assert max(out["max_relative_difference"].values()) < 1e-4  # measured ≤ 5.5e-6 (float32, another summation order)
