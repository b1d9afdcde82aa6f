"""The science presets finite_m, adaptive, gd_vs_newton: each claim's logic on small constructed Datasets (a case that
must hold and one that must fail), and each compute at a tiny config producing its declared schema."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import xarray as xr

from ttscale.experiments import adaptive as ad
from ttscale.experiments import finite_m as fmx
from ttscale.experiments import gd_vs_newton as gvn
from ttscale.experiments.claims import FAILS, HOLDS, PARTLY


# ============================================================================ finite_m
def _finite_m_ds(*, mean_up=True, median_up=False, exact_shift=0.0, gap_power=1.0, mp_k=None, sim_div=None):
    """A hand-built finite_m Dataset: n = (10, 30), m = (20, 400), k = 0..12; cell (30, 20) diverges (P = 0.2)."""
    K, ns, ms = 12, [10.0, 30.0], [20.0, 400.0]
    k = np.arange(K + 1)
    base = 2.0 * 0.6 ** k  # falls for ever
    mean = np.broadcast_to(base, (2, 2, K + 1)).copy()
    median = 0.8 * mean
    if mean_up:
        mean[1, 0] = base + 1e-3 * 3.0 ** k  # turns up through a few diverging prompts
    if median_up:
        median[1, 0, 8:] = median[1, 0, 7] * 2.0 ** np.arange(1, K - 6)
    stderr = 0.01 * mean
    exact = mean + exact_shift * stderr
    exact[1, 0] = mean[1, 0] * 10  # heavy tail: the sample mean falls short there (allowed)
    pred = np.array([[0.0, 0.0], [0.2, 0.0]])
    sim = pred.copy() if sim_div is None else sim_div
    ds_ = np.array([10, 20, 40])
    ps = np.array([0.5, 0.75])
    mp_scale = np.broadcast_to(base, (3, 2, K + 1)).copy()
    med_scale = mp_scale * (1 - 0.5 * (10.0 / ds_[:, None, None]) ** gap_power)
    med_scale[:, 1, 8:] = med_scale[:, 1, 7:8] * 1.5  # the median's argmin at k = 7 for p = 0.75
    best = np.full((2, 2), K)
    return xr.Dataset(
        {"mean": (fmx._GRID, mean), "stderr": (fmx._GRID, stderr), "median": (fmx._GRID, median),
         "exact_error": (fmx._GRID, exact), "mp_error": (fmx._GRID, mean / 0.9),
         "divergence_predicted": (("n", "m"), pred), "divergence_simulated": (("n", "m"), sim),
         "divergence_se": (("n", "m"), np.sqrt(sim * (1 - sim) / 4096)),
         "mp_best_k": (("n", "m"), best), "mp_turns_up": (("n", "m"), np.zeros((2, 2), bool)), "mp_edge": (("n", "m"), np.ones((2, 2))),
         "scale_mean": (fmx._SCALE, mp_scale * 1.1), "scale_stderr": (fmx._SCALE, mp_scale * 0.01),
         "scale_median": (fmx._SCALE, med_scale), "scale_mp": (fmx._SCALE, mp_scale),
         "scale_mp_best_k": (("d", "p"), np.array([[K, 7], [K, 7], [K, 7 if mp_k is None else mp_k]]))},
        coords={"n": ns, "m": ms, "k": k, "d": ds_, "p": ps},
        attrs={"prompts": 4096, "divergence_prompts": 4096, "dim": 10})


def test_finite_m_claims_hold_on_a_constructed_case():
    ds = _finite_m_ds()
    got = {c.name: c.verdict for c in fmx.claims_finite_m(ds)}
    assert got == {"mean_overthinking_median_falls": HOLDS, "exact_tracks_mean": HOLDS, "mp_tracks_median": HOLDS,
                   "divergence_probability": HOLDS, "mp_best_k": HOLDS}, got


def test_finite_m_claims_fail_when_the_data_contradict_them():
    assert fmx.claim_mean_overthinking(_finite_m_ds(mean_up=False)).verdict == FAILS  # no mean blow-up where P(div) > 0
    assert fmx.claim_mean_overthinking(_finite_m_ds(median_up=True)).verdict != HOLDS  # the median turns up too
    assert fmx.claim_exact_tracks_mean(_finite_m_ds(exact_shift=6.0)).verdict == FAILS  # 6 s.e. off everywhere
    assert fmx.claim_mp_tracks_median(_finite_m_ds(gap_power=0.0)).verdict == FAILS  # gap does not shrink with d
    assert fmx.claim_mp_tracks_median(_finite_m_ds(gap_power=3.0)).verdict != HOLDS  # shrinks, but not like 1/d
    bad = np.array([[0.0, 0.0], [0.05, 0.0]])  # simulated 0.05 vs predicted 0.2
    assert fmx.claim_divergence(_finite_m_ds(sim_div=bad)).verdict != HOLDS
    assert fmx.claim_mp_best_k(_finite_m_ds(mp_k=3)).verdict != HOLDS  # predicted 3, the median's argmin is 7


def test_finite_m_exact_claim_tolerates_heavy_tails_only_from_below():
    ds = _finite_m_ds()
    ds["exact_error"].loc[dict(n=30.0, m=20.0)] = ds["mean"].sel(n=30.0, m=20.0) * 0.1  # the mean far *above* exact
    assert fmx.claim_exact_tracks_mean(ds).verdict != HOLDS


@pytest.mark.full  # ~15–25 s on 2 cores (compiles a sweep and two samplers); the claim logic above is the fast part
def test_finite_m_compute_tiny_matches_schema():
    cfg = fmx.FiniteMConfig(ns=(10, 30), ms=(20,), k_max=6, prompts=256, divergence_prompts=512, scale_ds=(6,),
                            scale_prompts=128)
    ds = fmx.compute_finite_m(cfg)
    assert fmx.SCHEMA.problems(ds) == []
    # the closed forms in the Dataset are the core's (k = 0 is d for every cell)
    np.testing.assert_allclose(ds["exact_error"].sel(k=0).values, 10.0)
    np.testing.assert_allclose(ds["mp_error"].sel(k=0).values, 10.0, rtol=1e-9)
    assert len(fmx.claims_finite_m(ds)) == 5
    with pytest.raises(ValueError, match="k_max"):
        fmx.compute_finite_m(dataclasses.replace(cfg, k_max=30))


# ============================================================================ adaptive
def _adaptive_ds(*, rule_factor=1.1, passes=10.0, blow_up=True):
    """Settings: (40, 0, overthinking), (100, 0.5, noise); n = (30,); K = 30."""
    K = 30
    k = np.arange(K + 1)
    fixed = 4.0 * 0.7 ** k + (1e-2 * 2.0 ** k if blow_up else 0.0)
    S_, N_ = 2, 1
    curve = lambda v: np.broadcast_to(v, (S_, N_, K + 1)).copy()  # noqa: E731
    kb = int(np.argmin(fixed[1:])) + 1
    oracle = 0.8 * fixed[kb]
    rule = np.full(K + 1, oracle * rule_factor)
    cell = lambda v: np.full((S_, N_), float(v))  # noqa: E731
    data = {"fixed_mean": curve(fixed), "fixed_stderr": curve(0.01 * fixed), "fixed_median": curve(0.5 * fixed),
            "rule_mean": curve(rule), "rule_passes": curve(np.minimum(k, passes)), "argmin_mean": curve(rule),
            "oracle_mean": curve(np.full(K + 1, oracle)),
            "rule_stderr_K": cell(0.01), "argmin_stderr_K": cell(0.01), "oracle_stderr_K": cell(0.01),
            "best_fixed_k": cell(kb).astype(int), "theory_best_k": cell(K).astype(int),
            "rule_minus_best_mean": cell(rule[K] - fixed[kb]), "rule_minus_best_stderr": cell(0.01),
            "rule_over_oracle_stderr": cell(0.01)}
    return xr.Dataset({k_: (ad._CURVE if v.ndim == 3 else ad._CELL, v) for k_, v in data.items()},
                      coords={"setting": [0, 1], "n": [30.0], "k": k, "m": ("setting", [40.0, 100.0]),
                              "noise": ("setting", [0.0, 0.5]), "kind": ("setting", ["overthinking", "noise"]),
                              "label": ("setting", ["m = 40, σ = 0", "m = 100, σ = 0.5 (noise)"])},
                      attrs={"prompts": 2048, "factor": 2.0})


def test_adaptive_claims_hold_and_fail():
    good = {c.name: c.verdict for c in ad.claims_adaptive(_adaptive_ds())}
    assert good == {"adaptive_removes_blow_up": HOLDS, "adaptive_noise": HOLDS}
    assert ad.claims_adaptive(_adaptive_ds(rule_factor=3.0))[0].verdict == FAILS  # 3× the oracle (and worse than best k)
    assert ad.claims_adaptive(_adaptive_ds(passes=25.0))[0].verdict == FAILS  # no compute saved despite a blow-up
    # without a blow-up, running to K is right: the compute criterion is not applied
    assert ad.claims_adaptive(_adaptive_ds(passes=30.0, blow_up=False, rule_factor=1.0))[0].verdict == HOLDS


def test_adaptive_compute_tiny_matches_schema():
    cfg = ad.AdaptiveConfig(d=6, ns=(30,), settings=((12, 0.0, "overthinking"), (3, 0.0, "m<d")), k_max=8, prompts=128)
    ds = ad.compute_adaptive(cfg)
    assert ad.SCHEMA.problems(ds) == []
    # the oracle never loses to a fixed k or the rule (it knows w), prompt by prompt hence in the mean
    K = 8
    assert np.all(ds["oracle_mean"].sel(k=K).values <= ds["rule_mean"].sel(k=K).values + 1e-9)
    assert np.all(ds["oracle_mean"].sel(k=K).values <= ds["fixed_mean"].min("k").values + 1e-9)
    assert [c.name for c in ad.claims_adaptive(ds)] == ["adaptive_removes_blow_up", "adaptive_m_below_d"]


# ============================================================================ gd_vs_newton
def _gd_ds(gd_power=1.0, pn_power=1.0, sim_shift=0.0):
    alpha = np.linspace(0.5, 2.5, 6)
    cond = 10.0 ** alpha
    hard = 1.3 * cond + 10
    gd = np.ceil(2.3 * cond ** gd_power)
    pn = np.stack([np.ceil(4 * hard ** pn_power / 20), np.ceil(4 * hard ** pn_power / 40)])
    K = 16
    k = np.arange(K + 1)
    lim = np.stack([np.stack([10 * 0.5 ** k, 10 * 0.3 ** k]) for _ in range(2)])  # [alpha_sim, solver, k]
    se = 0.01 * lim
    mean = np.stack([lim + sim_shift * se, lim * 1.01], 2)  # m = inf, m = 1000
    steps = np.array([[np.nonzero(lim[a, s] <= 1e-3)[0][0] for s in range(2)] for a in range(2)], float)
    return xr.Dataset(
        {"hardness": ("alpha", hard), "condition": ("alpha", cond), "pn_steps": (("n", "alpha"), pn),
         "gd_optimal_steps": ("alpha", gd), "gd_minimax_steps": ("alpha", gd + 1),
         "sim_mean": (("alpha_sim", "solver", "m", "k"), mean),
         "sim_stderr": (("alpha_sim", "solver", "m", "k"), np.stack([se, se], 2)),
         "sim_limit": (("alpha_sim", "solver", "k"), lim), "sim_eta": ("alpha_sim", [0.5, 0.3]),
         "sim_steps": (("alpha_sim", "solver"), steps)},
        coords={"alpha": alpha, "n": [20.0, 40.0], "alpha_sim": [0.5, 1.0], "solver": ["gd", "pseudo_newton"],
                "m": [math.inf, 1000.0], "k": k},
        attrs={"target": 1e-3, "prompts": 1024, "n_sim": 20.0})


def test_gd_vs_newton_claims_hold_and_fail():
    assert [c.verdict for c in gvn.claims_gd_vs_newton(_gd_ds())] == [HOLDS, HOLDS]
    assert gvn.claim_steps_scaling(_gd_ds(gd_power=2.0)).verdict != HOLDS  # GD quadratic in κ
    assert gvn.claim_steps_scaling(_gd_ds(gd_power=0.3, pn_power=0.2)).verdict == FAILS
    assert gvn.claim_sweep_matches(_gd_ds(sim_shift=8.0)).verdict in (FAILS, PARTLY)  # 8 s.e. off the closed form
    assert gvn.fitted_slope([1, 10, 100], [3, 30, 300]) == pytest.approx(1.0)
    assert math.isnan(gvn.fitted_slope([1], [1]))


def test_gd_vs_newton_compute_tiny_matches_schema():
    cfg = gvn.GDvsNewtonConfig(d=6, alphas=(0.0, 1.0, 2.0), ns=(20, 40), k_max=400, sim_alphas=(0.5,),
                               sim_ms=(math.inf, 500.0), prompts=256)
    ds = gvn.compute_gd_vs_newton(cfg)
    assert gvn.SCHEMA.problems(ds) == []
    # the sweep at m = ∞ is the closed form within Monte-Carlo error (w is the only randomness)
    cur = ds.sel(m=math.inf).isel(k=slice(1, None))
    z = np.abs(cur["sim_mean"] - ds["sim_limit"].isel(k=slice(1, None))) / cur["sim_stderr"]
    assert float(z.max()) < 5
    assert ds["gd_optimal_steps"].sel(alpha=0.0) == 1  # Σ = I: η = 1 is exact in one step
    assert len(gvn.claims_gd_vs_newton(ds)) == 2
