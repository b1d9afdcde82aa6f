"""Preset ``finite_m`` (docs/science.md §10): the finite-``m`` theory of isotropic CoT against the sweep.

At ``Λ = Σ = I`` the trained LSA is ``P = I/γ`` and the ``m → ∞`` error ``d (1 − 1/γ)^{2k}`` falls for ever,
yet at finite ``m`` a few prompts have ``λ_max(S/γ) > 2`` and diverge. Two blocks:

* the grid (``d = 10``, ``n × m × k``, float64 sweep): the sweep's mean against the exact finite-``(d, m)``
  mean :func:`ttscale.finite_m.exact_error`, its median against the Marchenko–Pastur value
  :func:`~ttscale.finite_m.mp_error`, the simulated divergence fraction (:func:`~ttscale.finite_m.divergence_fraction`
  on independently drawn statistics) against the Tracy–Widom prediction
  (:func:`~ttscale.finite_m.divergence_probability`), and the MP best ``k`` (:func:`~ttscale.finite_m.mp_best_k`);
* the ``d``-scaling (``q = d/m = ½``, steps ``p = ½`` and ``p = ¾`` via ``n = (d + 1) p/(1 − p)``): the median's
  relative gap to MP as ``d`` grows, and the MP best ``k`` of the typical prompt at ``p = ¾`` (where the MP
  bulk edge ``p λ₊ = 2.19 > 2``) against the argmin of the median.

Claims: mean overthinking while the median keeps falling; the exact value tracks the mean; the MP value tracks the
median (gap ∝ 1/d); the divergence law; the MP best-k predictor.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import xarray as xr

from ttscale import finite_m as fm
from ttscale import prompts, spectra
from ttscale.models import pseudo_newton
from ttscale.experiments.claims import FAILS, HOLDS, PARTLY, Claim, fmt, verdict_from_fraction
from ttscale.experiments.registry import Preset, Schema, register

_GRID = ("n", "m", "k")
_SCALE = ("d", "p", "k")
SCHEMA = Schema(version=1, variables={
    "mean": _GRID, "stderr": _GRID, "median": _GRID, "exact_error": _GRID, "mp_error": _GRID,
    "divergence_predicted": ("n", "m"), "divergence_simulated": ("n", "m"), "divergence_se": ("n", "m"),
    "mp_best_k": ("n", "m"), "mp_turns_up": ("n", "m"), "mp_edge": ("n", "m"),
    "scale_mean": _SCALE, "scale_stderr": _SCALE, "scale_median": _SCALE, "scale_mp": _SCALE,
    "scale_mp_best_k": ("d", "p"),
}, coords=("n", "m", "k", "d", "p"))

#: MP values below this fraction of the k = 0 value are quadrature round-off (``ε d max|f|``): "falls to round-off".
MP_FLOOR = 1e-11


@dataclasses.dataclass(frozen=True)
class FiniteMConfig:
    """The isotropic grid (``d``, ``ns``, ``ms``, ``k = 0..k_max``, ``prompts`` per cell) and the ``d``-scaling block
    (``scale_ds`` at ``m = 2d`` and steps ``scale_ps``, ``scale_prompts`` per cell); ``divergence_prompts`` per
    ``(n, m)`` for the simulated divergence fraction. ``k_max ≤ 24`` (the exact value's cap; its cost grows
    fast: 0.1 s per ``m`` at 16, ~1 s at 20, ~10 s at 24)."""

    d: int = 10
    ns: tuple = (10, 20, 30)
    ms: tuple = (20, 40, 100, 400)
    k_max: int = 16
    prompts: int = 8192
    divergence_prompts: int = 8192
    scale_ds: tuple = (10, 20, 40)
    scale_ps: tuple = (0.5, 0.75)
    scale_prompts: int = 1024
    seed: int = 5


def _sweep(d, ns, ms, k_max, prompts_, seed):
    from ttscale.sweep import SweepSpec, run_sweep

    spec = SweepSpec(d=d, alphas=(0.0,), test="identity", ns=tuple(float(n) for n in ns), ms=tuple(float(m) for m in ms),
                     k_max=k_max, prompts=prompts_, seed=seed, dtype="float64", common_random_numbers=True)
    return run_sweep(spec, out=None, progress=False).isel(spectrum=0, drop=True)


def compute_finite_m(config: FiniteMConfig, progress=False) -> xr.Dataset:
    """The float64 isotropic sweep, the finite-m closed forms per cell, the divergence fractions and the d-scaling block."""
    d, K = config.d, config.k_max
    if 2 * K > fm.EXACT_MAX_DEGREE:
        raise ValueError(f"k_max must be <= {fm.EXACT_MAX_DEGREE // 2} (exact_error's cap), got {K}")
    grid = _sweep(d, config.ns, config.ms, K, config.prompts, config.seed)
    nn, nm = len(config.ns), len(config.ms)
    exact, mp = np.zeros((nn, nm, K + 1)), np.zeros((nn, nm, K + 1))
    pred, sim, se = np.zeros((nn, nm)), np.zeros((nn, nm)), np.zeros((nn, nm))
    best, turns, edge = np.zeros((nn, nm), np.int64), np.zeros((nn, nm), bool), np.zeros((nn, nm))
    key = jax.random.key(config.seed + 1000)
    with jax.enable_x64(True):
        for j, m in enumerate(config.ms):
            stats = prompts.sample_statistics(jax.random.fold_in(key, j), spectra.identity(d, np.float64), int(m),
                                              config.divergence_prompts)
            for i, n in enumerate(config.ns):
                p = fm.isotropic_step(d, n)
                exact[i, j] = fm.exact_error(d, int(m), K, p)
                mp[i, j] = np.asarray(fm.mp_error(d, m, K, p))
                pred[i, j] = float(fm.divergence_probability(d, m, p))
                sim[i, j], se[i, j] = fm.divergence_fraction(p * np.eye(d), stats)
                b = fm.mp_best_k(d, m, K, p)
                floored = b.error < MP_FLOOR * mp[i, j, 0]
                best[i, j], turns[i, j], edge[i, j] = (K if floored else b.k), (b.turns_up and not floored), b.edge
    nd, npp = len(config.scale_ds), len(config.scale_ps)
    sc = {name: np.zeros((nd, npp, K + 1)) for name in ("mean", "stderr", "median", "mp")}
    sc_best = np.zeros((nd, npp), np.int64)
    with jax.enable_x64(True):
        for a, dd in enumerate(config.scale_ds):
            # the pseudo-Newton kernel on Bartlett-drawn statistics (the sweep's own sampler and model, without a grid)
            stats = prompts.sample_statistics(jax.random.fold_in(key, 100 + a), spectra.identity(dd, np.float64), 2 * dd,
                                              config.scale_prompts)
            for b_, p in enumerate(config.scale_ps):
                n = (dd + 1) * p / (1 - p)  # isotropic_step(dd, n) = p
                p = fm.isotropic_step(dd, n)
                errs = np.asarray(pseudo_newton.errors(pseudo_newton.PseudoNewtonParams(np.full(dd, p)), stats, K), np.float64)
                sc["mean"][a, b_], sc["median"][a, b_] = errs.mean(0), np.median(errs, 0)
                sc["stderr"][a, b_] = errs.std(0, ddof=1) / math.sqrt(errs.shape[0])
                sc["mp"][a, b_] = np.asarray(fm.mp_error(dd, 2 * dd, K, p))
                sc_best[a, b_] = fm.mp_best_k(dd, 2 * dd, K, p).k
    G, N2, S3 = _GRID, ("n", "m"), _SCALE
    ds = xr.Dataset(
        {"mean": (G, grid["mean"].values.astype(np.float64)), "stderr": (G, grid["stderr"].values.astype(np.float64)),
         "median": (G, grid["median"].values.astype(np.float64)), "exact_error": (G, exact), "mp_error": (G, mp),
         "divergence_predicted": (N2, pred), "divergence_simulated": (N2, sim), "divergence_se": (N2, se),
         "mp_best_k": (N2, best), "mp_turns_up": (N2, turns), "mp_edge": (N2, edge),
         "scale_mean": (S3, sc["mean"]), "scale_stderr": (S3, sc["stderr"]), "scale_median": (S3, sc["median"]),
         "scale_mp": (S3, sc["mp"]), "scale_mp_best_k": (("d", "p"), sc_best)},
        coords={"n": np.asarray(config.ns, float), "m": np.asarray(config.ms, float), "k": np.arange(K + 1),
                "d": np.asarray(config.scale_ds, int), "p": np.asarray(config.scale_ps, float)})
    ds.attrs.update(dim=d, prompts=config.prompts, divergence_prompts=config.divergence_prompts,
                    scale_prompts=config.scale_prompts, engine="ttscale.sweep.run_sweep (float64)")
    return ds


# ============================================================================ claims
def _cells(ds):
    return [(float(n), float(m)) for n in ds.n.values for m in ds.m.values]


def _prompts(ds) -> int:
    return int(ds.attrs.get("prompts", 1))


def claim_mean_overthinking(ds: xr.Dataset, at_risk: float = 3.0) -> Claim:
    """Where ``prompts × P(diverge) ≥ at_risk`` the mean turns up while the median keeps falling; where ``P = 0`` both fall."""
    K = int(ds.k.max())
    N = _prompts(ds)
    risky, safe, rows = [], [], []
    for n, m in _cells(ds):
        cur = ds.sel(n=n, m=m)
        mean, med = cur["mean"].values, cur["median"].values
        kmean = int(np.argmin(np.where(np.isfinite(mean[1:]), mean[1:], np.inf))) + 1
        mean_up = kmean < K and not (mean[K] <= 2 * mean[kmean])  # heavy tails: a doubling, not 2 s.e.
        med_falls = bool(med[K] <= np.min(med[1:]) * (1 + 1e-6))
        pdiv = float(cur["divergence_predicted"])
        if pdiv * N >= at_risk:
            risky.append(mean_up and med_falls)
            rows.append(f"n={n:g}, m={m:g} (P(div)={fmt(pdiv, 2)}): mean argmin k={kmean}, mean({K})/min={fmt(mean[K] / mean[kmean], 2)}, median falls: {med_falls}")
        elif pdiv <= 0:
            safe.append(not mean_up and med_falls)
    ok = sum(risky) + sum(safe)
    total = len(risky) + len(safe)
    r_frac = sum(risky) / max(len(risky), 1)
    if not risky or r_frac < 0.5:
        verdict = FAILS
    else:
        verdict = HOLDS if r_frac == 1 and all(safe) else PARTLY
    return Claim(
        "mean_overthinking_median_falls",
        "At Λ = Σ = I (no spectral mismatch; the m → ∞ error falls for ever) finite m makes the *mean* error "
        "turn up — a few prompts have λ_max(S/γ) > 2 — while the median keeps falling.",
        "; ".join(rows) + f"; control cells with P(div) = 0: both fall in {sum(safe)}/{len(safe)}",
        verdict, value=ok / max(total, 1),
        evidence=f"criterion: in every cell with prompts × P(div) ≥ {at_risk:g} (P from the Tracy–Widom law) the mean's "
                 f"argmin is < k_max = {K} and mean(k_max) > 2 × its minimum, and the median at k_max is its minimum; in "
                 f"every cell with P(div) = 0 the mean does not turn up; {N} prompts per cell; HOLDS if all, PARTLY if at least half "
                 f"of the at-risk cells show it, else DOES NOT HOLD",
    )


def claim_exact_tracks_mean(ds: xr.Dataset, z: float = 4.0, light: float = 0.01) -> Claim:
    """The exact mean within ``z`` s.e. of the sweep's mean at every ``k`` in light-tailed cells; never above it elsewhere."""
    N = _prompts(ds)
    light_z, heavy_z, rows = [], [], []
    for n, m in _cells(ds):
        cur = ds.sel(n=n, m=m)
        with np.errstate(divide="ignore", invalid="ignore"):
            zs = ((cur["mean"] - cur["exact_error"]) / cur["stderr"]).values[1:]
        zs = np.where(np.isfinite(zs), zs, 0.0)
        (light_z if float(cur["divergence_predicted"]) * N < light else heavy_z).append(zs)
        if float(cur["divergence_predicted"]) * N >= light:
            below = int(np.sum(zs < -z))
            rows.append(f"n={n:g}, m={m:g}: {below} k's with the mean > {z:g} s.e. below exact (max exact/mean = "
                        f"{fmt(float(np.max(cur['exact_error'].values / cur['mean'].values)), 2)})")
    lz = np.concatenate(light_z) if light_z else np.zeros(0)
    hz = np.concatenate(heavy_z) if heavy_z else np.zeros(0)
    frac = float(np.mean(np.abs(lz) <= z)) if lz.size else math.nan
    above = int(np.sum(hz > z))
    verdict = FAILS if not lz.size else (HOLDS if frac >= 1.0 and above == 0 else (PARTLY if frac >= 0.9 else FAILS))
    return Claim(
        "exact_tracks_mean",
        "The exact finite-(d, m) mean (Wishart moments, finite_m.exact_error) is the sweep's mean error.",
        f"light-tailed cells: {100 * frac:.1f} % of {lz.size} (n, m, k) within {z:g} s.e. (max |z| = "
        f"{fmt(float(np.max(np.abs(lz))) if lz.size else math.nan, 3)}); heavy-tailed cells: {above} k's with the mean "
        f"> {z:g} s.e. above exact; " + "; ".join(rows),
        verdict, value=frac,
        evidence=f"light-tailed = prompts × P(div) < {light:g} ({N} prompts); there every k ≥ 1 must be within {z:g} s.e. "
                 f"(HOLDS; PARTLY at ≥ 90 %). Where prompts diverge the true mean is carried by prompts rarer than 1/N, "
                 f"so the sample mean may only fall short of the exact value: a mean > {z:g} s.e. above it fails the claim.",
    )


def _fit_slope(x, y) -> float:
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 and np.all(np.isfinite(y)) else math.nan


def claim_mp_tracks_median(ds: xr.Dataset, k: int = 8, p: float = 0.5) -> Claim:
    """The median's relative gap to MP at ``(q = ½, p, k)`` shrinks like 1/d (fitted log–log slope in [−1.4, −0.6])."""
    k = min(k, int(ds.k.max()))
    cur = ds.sel(p=p, k=k)
    gaps = np.abs(cur["scale_median"].values / cur["scale_mp"].values - 1)
    mgap = np.abs(cur["scale_mean"].values / cur["scale_mp"].values - 1)
    slope = _fit_slope(ds.d.values, gaps)
    shrinking = bool(np.all(np.diff(gaps) < 0))
    g10 = ds.sel(k=k)
    grid_ratio = (g10["median"] / g10["mp_error"]).values
    if not np.isfinite(slope):
        verdict = FAILS
    elif -1.4 <= slope <= -0.6 and shrinking:
        verdict = HOLDS
    elif slope < -0.3:
        verdict = PARTLY
    else:
        verdict = FAILS
    return Claim(
        "mp_tracks_median",
        "The Marchenko–Pastur value d ∫ (1 − pλ)^{2k} dMP_q is the typical (median) prompt's error: the median's "
        "relative gap to it shrinks like 1/d.",
        f"q = ½, p = {p:g}, k = {k}: |median/MP − 1| = " + ", ".join(f"{fmt(float(g), 2)} (d={int(d)})" for d, g in zip(ds.d.values, gaps))
        + f", fitted slope {slope:.2f} in log d (mean: " + ", ".join(fmt(float(g), 2) for g in mgap)
        + f"); at d = {ds.attrs.get('dim', '?')} on the grid median/MP at k = {k} ranges {fmt(float(np.min(grid_ratio)), 2)}–{fmt(float(np.max(grid_ratio)), 2)}",
        verdict, value=slope,
        evidence="criterion: the gap falls at every step in d and its log–log slope lies in [−1.4, −0.6] (1/d: −1) → HOLDS; "
                 "slope < −0.3 → PARTLY; the median sits below MP at small d (the finite-d spectrum's edges lie inside the MP support)",
    )


def claim_divergence(ds: xr.Dataset, rel: float = 0.25, z: float = 3.0) -> Claim:
    """Simulated divergence fraction vs the Tracy–Widom prediction: ``|sim − pred| ≤ z s.e.(pred) + rel · pred`` per cell."""
    N = int(ds.attrs.get("divergence_prompts", 1))
    ok, rows = 0, []
    cells = _cells(ds)
    for n, m in cells:
        cur = ds.sel(n=n, m=m)
        pred, sim = float(cur["divergence_predicted"]), float(cur["divergence_simulated"])
        tol = z * math.sqrt(max(pred * (1 - pred), 1 / N) / N) + rel * pred
        good = abs(sim - pred) <= tol
        ok += good
        if pred > 0 or sim > 0:
            rows.append(f"n={n:g}, m={m:g}: simulated {fmt(sim, 3)} ± {fmt(float(cur['divergence_se']), 2)} vs predicted {fmt(pred, 3)}" + ("" if good else " ✗"))
    frac = ok / max(len(cells), 1)
    return Claim(
        "divergence_probability",
        "The probability that CoT diverges on a prompt, P(λ_max(S/γ) > 2), follows the Tracy–Widom law of λ_max "
        "(finite_m.divergence_probability).",
        "; ".join(rows) + f"; {ok}/{len(cells)} cells agree",
        verdict_from_fraction(frac, 1.0, 0.75), value=frac,
        evidence=f"criterion per (n, m) cell: |simulated − predicted| ≤ {z:g} binomial s.e. + {rel:g} × predicted (the "
                 f"gamma approximation of TW₁ and d = {ds.attrs.get('dim', '?')} finite-size corrections); {N} prompts "
                 f"per cell, eigenvalues of S/γ per prompt; HOLDS at all cells, PARTLY at ≥ 75 %",
    )


def claim_mp_best_k(ds: xr.Dataset) -> Claim:
    """MP best k (the typical prompt's) vs the argmin of the median: within max(1, 20 %) (or both ``k_max``)."""
    K = int(ds.k.max())
    rows, hits, total = [], 0, 0

    def close(pred, meas):
        return abs(pred - meas) <= max(1, 0.2 * pred)

    for n, m in _cells(ds):
        cur = ds.sel(n=n, m=m)
        meas = int(np.argmin(cur["median"].values[1:])) + 1
        pred = int(cur["mp_best_k"])
        total += 1
        hit = close(pred, meas)
        hits += hit
        if not hit or bool(cur["mp_turns_up"]):
            rows.append(f"d={ds.attrs.get('dim', '?')}, n={n:g}, m={m:g}: MP {pred} vs median argmin {meas}" + ("" if hit else " ✗"))
    grid_rows = list(rows)
    rows = []
    for d in ds.d.values:
        for p in ds.p.values:
            cur = ds.sel(d=d, p=p)
            meas = int(np.argmin(cur["scale_median"].values[1:])) + 1
            pred = int(cur["scale_mp_best_k"])
            rows.append(f"d={int(d)}, p={p:g}: MP {pred} vs median argmin {meas}")
    big = ds.d.values.max()
    large_hits = [close(int(ds["scale_mp_best_k"].sel(d=big, p=p)), int(np.argmin(ds["scale_median"].sel(d=big, p=p).values[1:])) + 1)
                  for p in ds.p.values]
    frac = hits / max(total, 1)
    if all(large_hits) and frac >= 0.999:
        verdict = HOLDS
    elif all(large_hits) or frac >= 0.75:
        verdict = PARTLY
    else:
        verdict = FAILS
    return Claim(
        "mp_best_k",
        "The finite-m best-k predictor (argmin of the MP error, finite_m.mp_best_k) gives the best k for the typical "
        "(median) prompt at each m.",
        f"grid: {hits}/{total} cells match (" + ("; ".join(grid_rows) or "all keep falling to k_max") + "); q = ½: " + "; ".join(rows),
        verdict, value=frac,
        evidence=f"match = |MP best k − argmin of the median| ≤ max(1, 20 %) (k ≤ {K}; an MP curve falling to quadrature "
                 f"round-off counts as k_max). HOLDS: every grid cell and the largest d of the q = ½ block; PARTLY: one of "
                 f"the two (the MP edge p λ₊ is a d → ∞ statement: at small d λ_max sits below it)",
    )


def claims_finite_m(ds: xr.Dataset) -> list[Claim]:
    """The five finite-m claims (module docstring)."""
    return [claim_mean_overthinking(ds), claim_exact_tracks_mean(ds), claim_mp_tracks_median(ds), claim_divergence(ds),
            claim_mp_best_k(ds)]


# ============================================================================ figure
def plot_finite_m(ds: xr.Dataset):
    """Top row: error vs k per m (mean ± s.e., exact mean, median, MP) for each n; bottom: divergence, the d-scaling
    of the median's gap to MP, and the MP best k vs the median's argmin."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from ttscale.plots import _band, _k_axis, n_colour

    ms = ds.m.values
    ncol = max(len(ms), 3)
    fig, axes = plt.subplots(2, ncol, figsize=(3.7 * ncol, 6.6), squeeze=False)
    k = ds.k.values[1:]
    top = 1e3
    for j, m in enumerate(ms):
        ax = axes[0, j]
        for n in ds.n.values:
            cur = ds.sel(n=n, m=m)
            c = n_colour(n)
            _band(ax, k, cur["mean"].values[1:], cur["stderr"].values[1:], c, lw=1.5)
            ax.plot(k, cur["exact_error"].values[1:], "--", color=c, lw=1.0)
            ax.plot(k, cur["median"].values[1:], ":", color=c, lw=1.5)
            mp = cur["mp_error"].values[1:]
            ax.plot(k, np.where(mp > MP_FLOOR * float(cur["mp_error"].values[0]), mp, np.nan), "-.", color=c, lw=0.8, alpha=0.7)
        ax.set_yscale("log")
        ax.set_ylim(max(float(ds["median"].sel(m=m).min()) / 10, 1e-30), top)
        ax.set_title(f"Λ = Σ = I, d = {ds.attrs.get('dim', '?')}, m = {m:g}  (P(div) ≤ {fmt(float(ds['divergence_predicted'].sel(m=m).max()), 2)})", fontsize=8)
        _k_axis(ax, label=True, k=k)
        ax.set_ylabel("||ŵ_k − w||²" if j == 0 else "")
        ax.grid(alpha=0.3, lw=0.4)
    handles = [Line2D([], [], color=n_colour(n), lw=2, label=f"n = {n:g}") for n in ds.n.values]
    handles += [Line2D([], [], color="k", lw=1.5, label="sweep mean ± s.e."), Line2D([], [], color="k", ls="--", lw=1, label="exact mean (Wishart)"),
                Line2D([], [], color="k", ls=":", lw=1.5, label="sweep median"), Line2D([], [], color="k", ls="-.", lw=0.8, label="Marchenko–Pastur")]
    legend_ax = axes[1, 3] if ncol > 3 else axes[0, 0]
    for j in range(len(ms), ncol):
        axes[0, j].axis("off")
    # divergence: simulated vs predicted
    ax = axes[1, 0]
    for n in ds.n.values:
        cur = ds.sel(n=n)
        ax.errorbar(cur["divergence_predicted"].values, cur["divergence_simulated"].values, yerr=2 * cur["divergence_se"].values,
                    fmt="o", color=n_colour(n), ms=4, capsize=2, lw=0.8)
    lim = [1e-5, 1.0]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_xscale("symlog", linthresh=1e-4)
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_xlim(-1e-5, 1.0)
    ax.set_ylim(-1e-5, 1.0)
    ax.set_xlabel("predicted P(diverge) (Tracy–Widom)", fontsize=8)
    ax.set_ylabel("simulated fraction ± 2 s.e.", fontsize=8)
    ax.set_title("divergence per (n, m) cell; y = x dashed", fontsize=8)
    ax.grid(alpha=0.3, lw=0.4)
    # d-scaling of the median's relative gap
    ax = axes[1, 1]
    kk = min(8, int(ds.k.max()))
    p0 = float(ds.p.values[0])
    cur = ds.sel(p=p0, k=kk)
    ax.plot(ds.d.values, np.abs(cur["scale_median"].values / cur["scale_mp"].values - 1), "o-", color="C0", label="|median/MP − 1|")
    ax.plot(ds.d.values, np.abs(cur["scale_mean"].values / cur["scale_mp"].values - 1), "s-", color="C3", alpha=0.5, lw=0.9,
            label="|mean/MP − 1| (heavy tails: noisy)")
    g0 = float(np.abs(cur["scale_median"].values[0] / cur["scale_mp"].values[0] - 1))
    ax.plot(ds.d.values, g0 * ds.d.values[0] / ds.d.values, "k--", lw=0.8, label="∝ 1/d")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ds.d.values)
    ax.set_xticklabels([f"{int(v)}" for v in ds.d.values])
    ax.minorticks_off()
    ax.set_xlabel("dimension d (m = 2d)", fontsize=8)
    ax.set_title(f"relative gap to MP, q = ½, p = {p0:g}, k = {kk}", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, lw=0.4)
    # MP best k vs the median's argmin at the larger step
    ax = axes[1, 2]
    p1 = float(ds.p.values[-1])
    cmap = plt.get_cmap("viridis")
    for a, d in enumerate(ds.d.values):
        cur = ds.sel(d=d, p=p1)
        col = cmap(a / max(len(ds.d) - 1, 1))
        ax.plot(k, cur["scale_median"].values[1:] / cur["scale_median"].values[1], "-", color=col, lw=1.3, label=f"median, d = {int(d)}")
        kstar = int(np.argmin(cur["scale_median"].values[1:])) + 1
        ax.plot([kstar], [float(cur["scale_median"].values[kstar] / cur["scale_median"].values[1])], "v", color=col, ms=6)
    mp = ds["scale_mp"].sel(d=ds.d.values[-1], p=p1).values
    ax.plot(k, mp[1:] / mp[1], "k-.", lw=1.0, label="MP (any d)")
    kb = int(ds["scale_mp_best_k"].sel(d=ds.d.values[-1], p=p1))
    ax.axvline(kb, color="k", lw=0.8, ls="--")
    ax.text(kb + 0.3, 0.95, f"MP best k = {kb}", transform=ax.get_xaxis_transform(), fontsize=7, va="top")
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 1e2)
    _k_axis(ax, label=True, k=k)
    ax.set_ylabel("error / error at k = 1", fontsize=8)
    ax.set_title(f"typical prompt's best k: q = ½, p = {p1:g} (p λ₊ = {p1 * (1 + math.sqrt(0.5)) ** 2:.2f}); ▼ argmin", fontsize=8)
    ax.legend(fontsize=6.5, loc="lower left")
    ax.grid(alpha=0.3, lw=0.4)
    for j in range(3, ncol):
        axes[1, j].axis("off")
    legend_ax.legend(handles=handles, fontsize=8, loc="center", frameon=False, title="top row", title_fontsize=8)
    fig.suptitle("Finite m at Λ = Σ = I: the mean blows up through rare diverging prompts, the median follows Marchenko–Pastur", fontsize=10)
    fig.tight_layout()
    return fig


register(Preset(
    "finite_m", "Finite-m theory: exact mean, Marchenko–Pastur median, divergence", "finite_m",
    {"quick": FiniteMConfig(),
     "full": FiniteMConfig(k_max=24, prompts=65536, divergence_prompts=65536, scale_ds=(50, 100, 200), scale_prompts=4096)},
    compute_finite_m, plot_finite_m, claims_finite_m, schema=SCHEMA,
))
