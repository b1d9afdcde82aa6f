"""Figures: one function per paper figure, ``Dataset`` in, matplotlib ``Figure`` out.

Conventions: Agg backend (no display needed); errors on a log scale; simulation as solid
lines with a ±1 standard-error band, theory dashed beside it; one colour per training
length ``n`` across every figure (:func:`n_colour`). Saving is the caller's business::

    fig = plots.plot_error_curves(ds)
    fig.savefig("curves.png")

The datasets are those of :mod:`ttscale.experiments` / :mod:`ttscale.sweep` (dims
``spectrum, n, m, k``; ``mean, stderr, median, limit_error, ...``).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt  # the backend is matplotlib's choice: Agg when headless, inline in notebooks
import numpy as np
import xarray as xr

N_RANGE = (8.0, 50.0)
_CMAP = "plasma"


def n_colour(n: float):
    """Fixed colour for training length ``n`` (log-scaled on ``[8, 50]``; the same in every figure)."""
    lo, hi = N_RANGE
    t = (math.log(max(min(float(n), hi), lo)) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return plt.get_cmap(_CMAP)(0.82 * t)


def _fmt_m(m: float) -> str:
    return "m → ∞" if not np.isfinite(m) else f"m = {m:g}"


def _positive(values):
    v = np.asarray(values, dtype=float)
    return np.where(v > 0, v, np.nan)


def _band(ax, k, mean, se, colour, label=None, style="-", alpha=0.18, marker=None):
    mean = np.asarray(mean, float)
    se = np.nan_to_num(np.asarray(se, float), nan=0.0, posinf=0.0)
    ax.plot(k, _positive(mean), style, color=colour, label=label, lw=1.6, marker=marker, ms=3)
    lo = np.clip(mean - se, mean * 1e-3, None)
    ax.fill_between(k, _positive(lo), _positive(mean + se), color=colour, alpha=alpha, lw=0)


def _spectrum_title(ds, s) -> str:
    if "label" in ds.coords:
        return str(ds.label.sel(spectrum=s).values)
    h = float(ds.hardness.sel(spectrum=s))
    a = float(ds.alpha.sel(spectrum=s)) if "alpha" in ds.coords else float("nan")
    tag = "Λ = I" if a == 0.0 else (f"λ_i ∝ i^-{a:g}" if np.isfinite(a) else f"spectrum {int(s)}")
    return f"{tag} (Hard = {h:.3g})"


def _legend_n(ax, ns, extra=()):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=n_colour(n), lw=2, label=f"n = {n:g}") for n in ns]
    handles += list(extra)
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.8)


# ============================================================================ generic sweep plots
def _error_vs_k_grid(ds, title, ylabel, stat="mean", panel_size=(3.6, 2.9), per_curve=None, per_panel=None):
    """Grid of error-vs-k panels, rows = spectrum, columns = m; returns ``(fig, axes)``.

    In each panel, per ``n`` (colour :func:`n_colour`): the simulated ``stat`` (band ±1 s.e. for
    the mean) and ``limit_error`` dashed. ``per_curve(ax, s, n, m, colour)`` and
    ``per_panel(ax, s, m)`` add figure-specific marks; ``title(s, m)`` names a panel.
    """
    S, M = ds.sizes["spectrum"], ds.sizes["m"]
    fig, axes = plt.subplots(S, M, figsize=(panel_size[0] * M, panel_size[1] * S), squeeze=False, sharex=True)
    k = ds.k.values
    for i, s in enumerate(ds.spectrum.values):
        for j, m in enumerate(ds.m.values):
            ax = axes[i, j]
            for n in ds.n.values:
                c = n_colour(n)
                cur = ds.sel(spectrum=s, n=n, m=m)
                se = cur["stderr"].values if stat == "mean" else np.zeros(len(k))
                _band(ax, k, cur[stat].values, se, c)
                if "limit_error" in ds:
                    ax.plot(k, _positive(ds["limit_error"].sel(spectrum=s, n=n).values), "--", color=c, lw=1)
                if per_curve is not None:
                    per_curve(ax, s, n, m, c)
            if per_panel is not None:
                per_panel(ax, s, m)
            ax.set_yscale("log")
            ax.set_title(title(s, m), fontsize=8)
            ax.grid(alpha=0.3, which="both", lw=0.4)
            if i == S - 1:
                ax.set_xlabel("CoT steps k")
            if j == 0:
                ax.set_ylabel(ylabel)
    return fig, axes


def plot_error_curves(ds: xr.Dataset, stat: str = "mean") -> plt.Figure:
    """Error vs ``k`` per ``n`` (log scale), one panel per ``(spectrum, m)``; ``limit_error`` dashed.

    ``stat``: ``"mean"`` (band ±1 s.e.) or ``"median"``. Works for any contract-schema sweep.
    """
    from matplotlib.lines import Line2D

    if stat not in ("mean", "median"):
        raise ValueError(f"stat must be 'mean' or 'median', got {stat!r}")
    if "model" in ds.dims:
        ds = ds.isel(model=0)
    fig, axes = _error_vs_k_grid(ds, lambda s, m: f"{_spectrum_title(ds, s)}, {_fmt_m(float(m))}",
                                 f"{stat} ||ŵ_k − w||²", stat=stat)
    extra = [Line2D([], [], color="k", lw=1.6, label=f"simulation ({stat})"), Line2D([], [], color="k", ls="--", lw=1, label="theory m → ∞")]
    _legend_n(axes[0, 0], ds.n.values, extra)
    fig.tight_layout()
    return fig


def plot_iso_error(ds: xr.Dataset, m=None, levels=None, theory: str = "cor35_bound") -> plt.Figure:
    """Iso-error contours of the simulated mean error over ``(n, k)``, one panel per spectrum.

    ``m``: test length to show (default: the largest finite one, else ∞). ``theory``: a
    ``[spectrum, n, k]`` variable drawn dashed with the same levels (``None`` to omit).
    """
    from matplotlib.lines import Line2D

    if "model" in ds.dims:
        ds = ds.isel(model=0)
    ms = ds.m.values
    if m is None:
        finite = [v for v in ms if np.isfinite(v)]
        m = max(finite) if finite else ms[-1]
    sub = ds.sel(m=m)
    if levels is None:
        lo = np.nanmin(_positive(sub["mean"].values))
        levels = 10.0 ** np.arange(math.floor(math.log10(max(lo, 1e-8))) + 1, 1)
        levels = levels[-6:]
    levels = np.sort(np.asarray(levels, float))
    S = ds.sizes["spectrum"]
    fig, axes = plt.subplots(1, S, figsize=(3.6 * S, 3.2), squeeze=False, sharey=True)
    ns, k = ds.n.values, ds.k.values
    cmap = plt.get_cmap("magma")
    colours = [cmap(0.15 + 0.7 * i / max(len(levels) - 1, 1)) for i in range(len(levels))]
    for i, s in enumerate(ds.spectrum.values):
        ax = axes[0, i]
        z = np.log10(_positive(sub["mean"].sel(spectrum=s).transpose("n", "k").values))
        if len(ns) > 1:
            cs = ax.contour(k, ns, z, levels=np.log10(levels), colors=colours, linewidths=1.6)
            ax.clabel(cs, fmt={lv: f"{10 ** lv:g}" for lv in cs.levels}, fontsize=6)
            if theory and theory in ds:
                zt = np.log10(_positive(ds[theory].sel(spectrum=s).transpose("n", "k").values))
                ax.contour(k, ns, zt, levels=np.log10(levels), colors=colours, linewidths=1.0, linestyles="--")
        ax.set_yscale("log")
        ax.set_title(_spectrum_title(ds, s), fontsize=8)
        ax.set_xlabel("CoT steps k")
        ax.grid(alpha=0.3, lw=0.4)
    axes[0, 0].set_ylabel("training length n")
    handles = [Line2D([], [], color="k", lw=1.6, label=f"simulation ({_fmt_m(float(m))})")]
    if theory and theory in ds:
        handles.append(Line2D([], [], color="k", lw=1.0, ls="--", label=theory.replace("_", " ")))
    axes[0, -1].legend(handles=handles, fontsize=7, loc="upper right")
    fig.suptitle("iso-error contours of E||ŵ_k − w||² over (n, k)", fontsize=9)
    fig.tight_layout()
    return fig


# ============================================================================ paper figures
def plot_test_time_scaling(ds: xr.Dataset) -> plt.Figure:
    """Figure 1: error vs k per n; rows = spectrum, columns = m; optimum (solid, band) and trained LSA (dots).

    Dashed: ``limit_error`` (m → ∞ closed form). Dotted grey: the level of ``n = 30`` at ``k = 1``
    (where ``n = 10`` crossing it is the matching ``k``).
    """
    from matplotlib.lines import Line2D

    models = list(ds.model.values) if "model" in ds.dims else [None]
    opt = ds.sel(model="optimum") if "model" in ds.dims else ds
    k = ds.k.values

    def trained_dots(ax, s, n, m, c):
        if "trained" in models:
            ax.plot(k, _positive(ds.sel(model="trained", spectrum=s, n=n, m=m)["mean"].values), "o", color=c, ms=2.8, mfc="none", mew=0.8)

    def n30_level(ax, s, m):
        if 30.0 in opt.n.values:
            ax.axhline(float(opt["mean"].sel(spectrum=s, n=30.0, m=m, k=1)), color="0.4", ls=":", lw=1)
        ax.set_ylim(bottom=max(np.nanmin(_positive(opt["mean"].sel(spectrum=s, m=m).values)), 1e-6))

    fig, axes = _error_vs_k_grid(opt, lambda s, m: f"Λ = Σ: {_spectrum_title(ds, s)}, {_fmt_m(float(m))}", "E||ŵ_k − w||²",
                                 panel_size=(3.8, 3.0), per_curve=trained_dots, per_panel=n30_level)
    extra = [
        Line2D([], [], color="k", lw=1.6, label="optimum Γ⁻¹ (sim., ±s.e.)"),
        Line2D([], [], color="k", ls="--", lw=1, label="theory m → ∞"),
        Line2D([], [], color="0.4", ls=":", lw=1, label="n = 30 at k = 1"),
    ]
    if "trained" in models:
        extra.append(Line2D([], [], color="k", marker="o", ls="", mfc="none", ms=4, label="trained LSA"))
    _legend_n(axes[0, 0], ds.n.values, extra)
    fig.suptitle("Test-time scaling: more CoT steps compensate a shorter training context", fontsize=9)
    fig.tight_layout()
    return fig


def plot_scaling_law(ds: xr.Dataset) -> plt.Figure:
    """Figure 2: iso-error contours over (n, k) per Hard(Λ): simulation (solid) vs Cor 3.5 (dashed)."""
    levels = ds.attrs.get("levels")
    if isinstance(levels, (int, float)):
        levels = [levels]
    return plot_iso_error(ds, levels=levels, theory="cor35_bound")


def plot_theorem33(ds: xr.Dataset) -> plt.Figure:
    """Figure 3: one-step error vs Hard(Λ): exact (line), Theorem 3.3 bound (dashed), Monte Carlo (points ±2 s.e.)."""
    from matplotlib.lines import Line2D

    ns = ds.n.values
    fig, axes = plt.subplots(1, len(ns), figsize=(4.2 * len(ns), 3.4), squeeze=False, sharey=True)
    order = np.argsort(ds.hardness.values)
    hard = ds.hardness.values[order]
    cmap = plt.get_cmap("plasma")
    ms = ds.m.values
    mcol = {m: cmap(0.1 + 0.75 * i / max(len(ms) - 1, 1)) for i, m in enumerate(ms)}
    for j, n in enumerate(ns):
        ax = axes[0, j]
        for m in ms:
            c = mcol[m]
            exact = ds["one_step_error"].sel(n=n, m=m).values[order]
            ax.plot(hard, exact, "-", color=c, lw=1.4)
            ax.plot(hard, ds["thm33_bound"].sel(n=n, m=m).values[order], "--", color=c, lw=1)
            mc = ds["mean"].sel(n=n, m=m, k=1).values[order]
            se = ds["stderr"].sel(n=n, m=m, k=1).values[order]
            ax.errorbar(hard, mc, yerr=2 * se, fmt="o", color=c, ms=3, capsize=2, lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Hard(Λ) = tr Λ / λ_min")
        ax.set_title(f"k = 1, Σ = Λ, n = {n:g}", fontsize=9)
        ax.grid(alpha=0.3, which="both", lw=0.4)
    axes[0, 0].set_ylabel("E||ŵ_1 − w||²")
    handles = [Line2D([], [], color=mcol[m], lw=2, label=_fmt_m(float(m))) for m in ms]
    handles += [Line2D([], [], color="k", lw=1.4, label="exact"), Line2D([], [], color="k", ls="--", lw=1, label="Thm 3.3 bound"),
                Line2D([], [], color="k", marker="o", ls="", ms=3, label="Monte Carlo ±2 s.e.")]
    axes[0, -1].legend(handles=handles, fontsize=6.5, loc="upper left", ncol=2)
    fig.tight_layout()
    return fig


def plot_overthinking(ds: xr.Dataset) -> plt.Figure:
    """Figure 4: error vs k per n; rows = training spectrum, columns = m; mean (solid, band), median (dotted), m → ∞ theory dashed."""
    from matplotlib.lines import Line2D

    k = ds.k.values

    def median_and_argmin(ax, s, n, m, c):
        cur = ds.sel(spectrum=s, n=n, m=m)
        ax.plot(k, _positive(cur["median"].values), ":", color=c, lw=1.3)
        mean = cur["mean"].values[1:]
        kstar = int(np.nanargmin(np.where(np.isfinite(mean), mean, np.inf))) + 1
        ax.plot([kstar], [float(cur["mean"].sel(k=kstar))], "v", color=c, ms=5)

    fig, axes = _error_vs_k_grid(ds, lambda s, m: f"train {_spectrum_title(ds, s)}, Σ = I, {_fmt_m(float(m))}", "||ŵ_k − w||²",
                                 panel_size=(3.6, 2.8), per_curve=median_and_argmin)
    extra = [Line2D([], [], color="k", lw=1.6, label="mean ±s.e."), Line2D([], [], color="k", ls=":", lw=1.3, label="median"),
             Line2D([], [], color="k", ls="--", lw=0.9, label="theory m → ∞"), Line2D([], [], color="k", marker="v", ls="", label="argmin of mean")]
    _legend_n(axes[0, 0], ds.n.values, extra)
    fig.suptitle("Overthinking: tilted training spectrum, isotropic test", fontsize=9)
    fig.tight_layout()
    return fig


def plot_best_k(ds: xr.Dataset) -> plt.Figure:
    """Figure 5: predicted best k (theory.best_k) vs the measured argmin per m; and the overthinking term vs limit_error."""
    from matplotlib.lines import Line2D

    ms = ds.m.values
    fig, axes = plt.subplots(1, len(ms) + 1, figsize=(3.6 * (len(ms) + 1), 3.3), squeeze=False)
    kmax = int(ds.k.max())
    rng = np.random.default_rng(0)
    for j, m in enumerate(ms):
        ax = axes[0, j]
        for n in ds.n.values:
            pred, meas, lo, hi = [], [], [], []
            for s in ds.spectrum.values:
                cur = ds.sel(spectrum=s, n=n, m=m)
                mean = np.where(np.isfinite(cur["mean"].values[1:]), cur["mean"].values[1:], np.inf).astype(np.float64)
                kstar = int(np.argmin(mean)) + 1
                se = np.nan_to_num(cur["stderr"].values[1:].astype(np.float64), nan=np.inf)
                tol = 2 * np.sqrt(se**2 + se[kstar - 1] ** 2)
                near = np.nonzero(mean <= mean[kstar - 1] + np.where(np.isfinite(tol), tol, 0))[0] + 1
                pred.append(int(ds["best_k"].sel(spectrum=s, n=n)))
                meas.append(kstar)
                lo.append(kstar - near.min())
                hi.append(near.max() - kstar)
            jit = rng.uniform(-0.15, 0.15, len(pred))
            ax.errorbar(np.asarray(pred) + jit, meas, yerr=[lo, hi], fmt="o", color=n_colour(n), ms=4, capsize=2, lw=0.8, alpha=0.85)
        ax.plot([0.5, kmax + 0.5], [0.5, kmax + 0.5], "k--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("predicted best k (m → ∞ theory)")
        ax.set_ylabel("measured argmin k")
        ax.set_title(f"{_fmt_m(float(m))} (k ≤ {kmax})", fontsize=9)
        ax.grid(alpha=0.3, which="both", lw=0.4)
    _legend_n(axes[0, 0], ds.n.values, [Line2D([], [], color="k", ls="--", lw=0.8, label="y = x")])
    ax = axes[0, -1]
    scales = ds.scale.values if "scale" in ds.coords else ds.spectrum.values
    pick = [0, len(scales) // 2, len(scales) - 1]
    n_show = ds.n.values[-1]
    k = ds.k.values
    for idx, s in enumerate(np.asarray(ds.spectrum.values)[pick]):
        ls = ["-", "--", ":"][idx]
        ax.plot(k, _positive(ds["limit_error"].sel(spectrum=s, n=n_show).values), ls, color="C0", lw=1.5, label=f"limit, s = {float(scales[pick[idx]]):g}")
        ax.plot(k, _positive(ds["overthinking_term"].sel(spectrum=s, n=n_show).values), ls, color="C3", lw=0.9, label=f"tr(M^2k), s = {float(scales[pick[idx]]):g}")
    ax.set_yscale("log")
    ax.set_xlabel("k")
    ax.set_title(f"overthinking term vs exact limit (n = {n_show:g}, λ_i = s/i)", fontsize=8)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3, which="both", lw=0.4)
    fig.tight_layout()
    return fig


__all__ = [
    "n_colour", "plot_error_curves", "plot_iso_error", "plot_test_time_scaling", "plot_scaling_law",
    "plot_theorem33", "plot_overthinking", "plot_best_k",
]
