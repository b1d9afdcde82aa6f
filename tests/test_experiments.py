"""Presets, claim checks and the report: numbers against closed forms, verdicts driven by the data."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttscale as tts
from ttscale import experiments as ex
from ttscale import report, theory


# ----------------------------------------------------------------------------- measurement helpers
def test_crossing_k_exact_on_geometric_curve():
    # log-linear interpolation is exact for d r^{2k}: the crossing of d r^{2 k0} is k0
    d, r = 10.0, 0.37
    k = np.arange(21)
    curve = d * r ** (2 * k)
    for k0 in (0.0, 1.0, 2.04, 7.5, 19.99):
        assert ex.crossing_k(curve, d * r ** (2 * k0)) == pytest.approx(k0, abs=1e-9)
    assert math.isnan(ex.crossing_k(curve, d * r ** (2 * 25)))  # never reached
    assert math.isnan(ex.crossing_k(curve, -1.0))


def test_matching_k_identity_matches_theory():
    # the closed form for Λ = Σ = I, m → ∞ crosses at theory.matching_k (≈ 2.04, SPEC §5)
    cov = tts.identity(10)
    lim10 = np.asarray(theory.limit_error(theory.gamma_inverse(cov, 10), cov, 10), float)
    lim30 = np.asarray(theory.limit_error(theory.gamma_inverse(cov, 30), cov, 1), float)
    assert ex.crossing_k(lim10, lim30[1]) == pytest.approx(float(theory.matching_k(cov, 10, 30)), rel=1e-4)
    k, lo, hi = ex.matching_k_interval(lim10, np.zeros_like(lim10), lim30[1], 0.0)
    assert lo == pytest.approx(k) and hi == pytest.approx(k)


def test_argmin_set():
    mean = np.array([10.0, 5.0, 1.0, 1.05, 3.0, 8.0])
    se = np.array([0.0, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert ex.argmin_set(mean, se) == (2, 2, 3)
    assert ex.argmin_set(mean, np.zeros(6)) == (2, 2, 2)


# ----------------------------------------------------------------------------- sweeps (through ttscale.sweep.run_sweep)
def test_sweep_against_closed_forms():
    """MC mean at m = ∞ within 4.5 s.e. of limit_error; k = 1 at finite m within 4.5 s.e. of one_step_error."""
    covs = [tts.identity(6), tts.power_law(6, 1.0)]
    ds = ex.sweep(covs, "aligned", (8, 20), (30.0, math.inf), 4, 2048, seed=1, alphas=(0.0, 1.0))
    assert dict(ds.sizes) == {"spectrum": 2, "n": 2, "m": 2, "k": 5}
    assert ds.attrs["engine"] == "ttscale.sweep.run_sweep"
    np.testing.assert_array_equal(ds["alpha"], [0.0, 1.0])
    z_inf = ((ds["mean"].sel(m=math.inf) - ds["limit_error"]) / ds["stderr"].sel(m=math.inf)).sel(k=slice(1, None))
    assert float(np.abs(z_inf).max()) < 4.5
    z_one = (ds["mean"].sel(m=30.0, k=1) - ds["one_step_error"].sel(m=30.0)) / ds["stderr"].sel(m=30.0, k=1)
    assert float(np.abs(z_one).max()) < 4.5
    # common random numbers: at k = 0 (error ||w||², independent of Λ and n) every cell of one m is identical
    k0 = ds["mean"].sel(k=0, m=30.0).values
    np.testing.assert_allclose(k0, k0[0, 0], rtol=1e-6)
    # theory columns agree with ttscale.theory.best_k cell by cell
    bk = theory.best_k(theory.gamma_inverse(covs[1], 20), covs[1], 4)
    assert int(ds["best_k"].sel(spectrum=1, n=20)) == int(bk.k)
    assert bool(ds["turns_up"].sel(spectrum=1, n=20)) == bool(bk.turns_up)
    assert float(ds["spectral_radius"].sel(spectrum=1, n=20)) == pytest.approx(float(bk.spectral_radius), rel=1e-4)


def test_sweep_with_trained_params_runs_the_literal_lsa():
    """params [S, N, D, D] → model="trained": with the Theorem 3.1 optimum it reproduces the pseudo-Newton sweep."""
    covs = [tts.identity(4), tts.power_law(4, 1.0)]
    ns = (6.0, 12.0)
    P = np.stack([[np.asarray(theory.gamma_inverse(c, n)) for n in ns] for c in covs])  # [S, N, d, d]
    params = jax.vmap(jax.vmap(tts.params_from_preconditioner))(jnp.asarray(P))
    pn = ex.sweep(covs, "aligned", ns, (16.0,), 3, 64, seed=2)
    tr = ex.sweep(covs, "aligned", ns, (16.0,), 3, 64, seed=2, params=params)
    np.testing.assert_allclose(tr["mean"], pn["mean"], rtol=2e-3)
    np.testing.assert_allclose(tr["limit_error"], pn["limit_error"], rtol=1e-5)
    with pytest.raises(ValueError, match="ms"):
        ex.sweep(covs, "aligned", ns, (16.0, math.inf), 3, 64, params=params)


def test_sweep_rejects_bad_input():
    cov = tts.identity(3)
    with pytest.raises(ValueError, match="ms"):
        ex.sweep([cov], "aligned", (5,), (2.5,), 2, 16)
    with pytest.raises(ValueError, match="k_max"):
        ex.sweep([cov], "aligned", (5,), (10.0,), -1, 16)
    with pytest.raises(TypeError, match="train"):
        ex.sweep(np.eye(3), "aligned", (5,), (10.0,), 2, 16)
    with pytest.raises(TypeError, match="test"):
        ex.sweep([cov], [np.eye(3)], (5,), (10.0,), 2, 16)
    with pytest.raises(ValueError, match="test"):
        ex.sweep([cov], "sideways", (5,), (10.0,), 2, 16)
    with pytest.raises(ValueError, match="alphas"):
        ex.sweep([cov], "aligned", (5,), (10.0,), 2, 16, alphas=(0.0, 1.0))


# ----------------------------------------------------------------------------- presets and claims
def _tiny_overthinking(**kw):
    base = ex.OverthinkingConfig(d=6, spectra=(("power", 1.0),), ns=(10, 30), ms=(20.0, math.inf), k_max=12, prompts=256)
    return dataclasses.replace(base, **kw)


def test_overthinking_claim_fails_when_perturbed(tmp_path):
    """A perturbed preset (training spectrum = test spectrum = I, m → large) cannot overthink: the report says DOES NOT HOLD."""
    cfg = _tiny_overthinking(spectra=(("power", 0.0),), ms=(400.0, math.inf))
    res = ex.run_preset("overthinking", config=cfg, out=tmp_path, progress=False)
    verdicts = {c.name: c.verdict for c in res.claims}
    assert verdicts["falls_then_rises"] == ex.FAILS
    report.write_report([res], tmp_path)
    md = (tmp_path / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| falls_then_rises"))
    assert "DOES NOT HOLD" in row
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html
    claims = json.loads((tmp_path / "claims.json").read_text())
    assert {c["name"] for c in claims} >= {"falls_then_rises", "argmin_earlier_with_n"}
    # rerun: the sweep comes from the cache, same claims
    again = ex.run_preset("overthinking", config=cfg, out=tmp_path, progress=False, save_figures=False)
    assert again.cached and [c.verdict for c in again.claims] == [c.verdict for c in res.claims]


def test_overthinking_claim_holds_for_tilted_training():
    # the paper's setting at small m: n = 30 falls then rises (mean), larger n worse late
    res = ex.run_preset("overthinking", config=_tiny_overthinking(), out=None, progress=False)
    verdicts = {c.name: c.verdict for c in res.claims}
    assert verdicts["falls_then_rises"] in (ex.HOLDS, ex.PARTLY)
    assert res.dataset["mean"].sel(n=30, m=20.0, spectrum=0).values[-1] > res.dataset["mean"].sel(n=30, m=20.0, spectrum=0, k=slice(1, None)).min()


def test_paper_summary_claim_is_measured_not_typed():
    """n = 10 matches n = 30 at k ≈ 2, so the summary's k = 20 fails; the same data with k = 2 holds."""
    cfg = ex.TestTimeScalingConfig(d=10, alphas=(0.0,), ms=(math.inf,), k_max=6, prompts=512, train=False)
    res = ex.run_preset("test_time_scaling", config=cfg, out=None, progress=False)
    claim = next(c for c in res.claims if c.name == "paper_summary_k20")
    assert claim.verdict == ex.FAILS
    assert claim.value == pytest.approx(float(theory.matching_k(tts.identity(10), 10, 30)), abs=0.15)
    res.dataset.attrs["paper_matching_k"] = 2.0
    flipped = {c.name: c.verdict for c in ex.claims_test_time_scaling(res.dataset)}
    assert flipped["paper_summary_k20"] == ex.HOLDS
    assert flipped["k_compensates_n"] == ex.HOLDS


def test_config_hash_and_registry():
    p = ex.REGISTRY["overthinking"]
    q, f = p.config("quick"), p.config("full")
    assert ex.config_hash("overthinking", q) == ex.config_hash("overthinking", dataclasses.replace(q))
    assert ex.config_hash("overthinking", q) != ex.config_hash("overthinking", f)
    assert set(ex.REGISTRY) >= {"test_time_scaling", "scaling_law", "theorem33", "overthinking", "best_k", "task_selection", "gpt2"}
    with pytest.raises(ValueError, match="size"):
        p.config("medium")
    with pytest.raises(ValueError, match="unknown preset"):
        ex.reproduce(["nope"], out="/tmp/never-written")


def test_missing_module_skips_cleanly(tmp_path):
    preset = ex.Preset("ghost", "a preset whose module is absent", "ghost", {"quick": "quick", "full": "full"},
                       "compute", "plot", "claims", module="ttscale._no_such_module")
    res = ex.run_preset(preset, out=tmp_path, progress=False)
    assert res.skipped and "_no_such_module" in res.skipped
    md = report.render_markdown([res], tmp_path)
    assert "SKIPPED" in md
