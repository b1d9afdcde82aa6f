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


def _band(ax, k, mean, se, colour, label=None, style="-", alpha=0.18, marker=None, lw=1.6, ms=3, band=True):
    """Curve ``mean`` vs ``k`` (non-positive/non-finite points left out) with a ±``se`` band (skipped where not finite)."""
    mean = np.asarray(mean, float)
    finite = np.isfinite(mean)
    ax.plot(k, _positive(np.where(finite, mean, np.nan)), style, color=colour, label=label, lw=lw, marker=marker, ms=ms)
    if band:
        se = np.asarray(se, float)
        se = np.where(np.isfinite(se) & finite, se, 0.0)
        m0 = np.where(finite, mean, np.nan)
        lo = np.clip(m0 - se, m0 * 1e-3, None)
        ax.fill_between(k, _positive(lo), _positive(m0 + se), color=colour, alpha=alpha, lw=0)


def _spectrum_title(ds, s) -> str:
    if "label" in ds.coords:
        return str(ds.label.sel(spectrum=s).values)
    h = float(ds.hardness.sel(spectrum=s))
    a = float(ds.alpha.sel(spectrum=s)) if "alpha" in ds.coords else float("nan")
    if np.isfinite(a):
        tag = "Λ = I" if a == 0.0 else f"λ_i ∝ i^-{a:g}"
    else:
        names = _spec_spectra(ds)
        tag = names[int(s)] if names and 0 <= int(s) < len(names) else f"spectrum {int(s)}"
    return f"{tag} (Hard = {h:.3g})"


def _spec_spectra(ds):
    """The spectra as the sweep spec names them (``attrs["spec"]["spectra"]``, a list of strings), or ``None``."""
    import json

    try:
        names = json.loads(ds.attrs.get("spec", "{}")).get("spectra")
    except (TypeError, ValueError, AttributeError):
        return None
    return [str(x) for x in names] if isinstance(names, list) and all(isinstance(x, str) for x in names) else None


def _legend_n(ax, ns, extra=()):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=n_colour(n), lw=2, label=f"n = {n:g}") for n in ns]
    handles += list(extra)
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.8)


def _figure_legend(fig, ns, extra=()):
    """The n colours and the line styles in one legend to the right of the panels (covering no data)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=n_colour(n), lw=2, label=f"n = {n:g}") for n in ns] + list(extra)
    return fig.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


#: x label of every error-vs-k axis: k = 0 is the initial estimate ŵ_0 = 0, k = 1 one forward pass.
K_LABEL = "steps k (k = 1: one forward pass; k ≥ 2: CoT)"
#: legend text of the Corollary 3.5 scaling law (an m → ∞ statement, not a finite-m bound).
SCALING_LAW_LABEL = "scaling-law error, m → ∞ theory (Cor. 3.5)"
#: a curve that rises this far above its panel's starting error (k = 0) leaves the plot, marked ▲.
CEILING = 1e4


def scaling_law_var(ds):
    """Name of the Cor. 3.5 scaling-law variable in ``ds`` (``scaling_law_error`` or the older ``cor35_bound``), or ``None``."""
    for name in ("scaling_law_error", "cor35_bound"):
        if name in ds:
            return name
    return None


def model_name(ds) -> str:
    """The model that produced ``ds``: the ``model`` coordinate (one entry), else ``attrs["model"]``, else the spec JSON's ``model``."""
    import json

    if "model" in ds.coords and ds["model"].size == 1:
        return str(ds["model"].values.reshape(-1)[0])
    name = ds.attrs.get("model")
    if name:
        return str(name)
    try:
        spec = json.loads(ds.attrs.get("spec", "{}"))
    except (TypeError, ValueError):
        spec = {}
    return str(spec.get("model", "?")) if isinstance(spec, dict) else "?"


def _k_ticks(k):
    """Integer ticks for steps ``k``: the first k (1 where present) and round multiples up to the last."""
    k = np.asarray(k)
    lo, hi = int(k.min()), int(k.max())
    step = next((st for st in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000) if (hi - lo) / st <= 6), max(1, (hi - lo) // 6))
    ticks = [t for t in range(0, hi + 1, step) if t >= lo]
    if lo not in ticks and (not ticks or ticks[0] - lo >= step / 2):
        ticks = [lo] + ticks
    elif lo not in ticks:
        ticks = [lo] + ticks[1:]
    return ticks


def _k_axis(ax, label: bool = True, k=None):
    from matplotlib.ticker import FixedLocator, MaxNLocator

    ax.xaxis.set_major_locator(FixedLocator(_k_ticks(k)) if k is not None and len(k) else MaxNLocator(integer=True))
    if label:
        ax.set_xlabel(K_LABEL, fontsize=9)


def _n_axis(ax, ns):
    """Log axis over training lengths with plain tick labels at the n values (at most ~8 of them)."""
    from matplotlib.ticker import NullFormatter

    ax.set_yscale("log")
    _plain_ticks_at(ax.yaxis, ns)
    ax.yaxis.set_minor_formatter(NullFormatter())


def _plain_log_ticks(axis, vmax):
    """Plain labels (1, 2, 5, 10, 20, …, up to ``vmax``) on a log axis instead of 10^x / 6×10^1."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if t <= vmax]
    if ticks and vmax / ticks[-1] < 1.5:
        ticks = ticks[:-1]
    ticks.append(vmax)  # k_max: where the argmin sits when the error still falls at the last step
    axis.set_major_locator(FixedLocator(sorted(set(ticks))))
    axis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(NullLocator())


def _plain_ticks_at(axis, values, most: int = 8):
    """Ticks of a log axis at ``values`` (at most ``most`` of them), labelled plainly (``29.3``, not ``3×10^1``)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    values = np.unique(np.asarray(values, float))
    if len(values) > most:
        values = values[np.unique(np.linspace(0, len(values) - 1, most).round().astype(int))]
    axis.set_major_locator(FixedLocator(values))
    axis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_locator(NullLocator())


def _mark_exits(ax, k, y, top, colour):
    """Mark where a curve leaves the plot: ▲ on the top edge where it crosses ``top``; × at the last finite
    point where it overflows (inf/nan) below ``top``. Returns the set of marks drawn (``{"up", "overflow"}``)."""
    k = np.asarray(k, float)
    y = np.asarray(y, float)
    drawn = set()
    for i in range(1, len(y)):
        prev, cur = y[i - 1], y[i]
        if not (np.isfinite(prev) and prev > 0 and prev <= top):
            continue
        if np.isfinite(cur) and cur > top:
            t = (math.log(top) - math.log(prev)) / (math.log(cur) - math.log(prev))
            ax.plot([k[i - 1] + t * (k[i] - k[i - 1])], [top], "^", color=colour, ms=6, clip_on=False, zorder=5)
            drawn.add("up")
        elif np.isinf(cur):  # overflow (inf); nan is a cell that was not run, not a divergence
            ax.plot([k[i - 1]], [prev], "x", color=colour, ms=7, mew=1.8, clip_on=False, zorder=5)
            drawn.add("overflow")
    return drawn


def _exit_handles(marks):
    from matplotlib.lines import Line2D

    out = []
    if "up" in marks:
        out.append(Line2D([], [], color="k", marker="^", ls="", ms=5, label="leaves the plot (diverges)"))
    if "overflow" in marks:
        out.append(Line2D([], [], color="k", marker="x", ls="", ms=6, mew=1.6, label="last finite value (then overflows)"))
    return out


# ============================================================================ generic sweep plots
#: line styles of the datasets overlaid by :func:`plot_error_curves` / :func:`plot_iso_error` (the first is solid)
OVERLAY_STYLES = ({"ls": "-", "marker": None}, {"ls": ":", "marker": "o"}, {"ls": "-.", "marker": "s"})


def _error_vs_k_grid(ds, title, ylabel, stat="mean", panel_size=(3.6, 2.9), per_curve=None, per_panel=None,
                     k_min=1, ms=None, overlays=(), theory=True):
    """Grid of error-vs-k panels, rows = spectrum, columns = m; returns ``(fig, axes, marks)``.

    In each panel, per ``n`` (colour :func:`n_colour`), from ``k = k_min``: the simulated ``stat``
    (band ±1 s.e. for the mean) and ``limit_error`` dashed. ``per_curve(ax, s, n, m, colour)`` and
    ``per_panel(ax, s, m)`` add figure-specific marks; ``title(s, m)`` names a panel. ``ms``: the
    test lengths to show (default all). ``overlays``: further datasets drawn with the line styles
    :data:`OVERLAY_STYLES` ``[1:]`` where they have the panel's spectrum, n and m. A curve that rises
    more than :data:`CEILING` × the panel's starting error leaves the plot at the top, marked ▲
    (× where it overflows first); ``marks`` is the set of such marks drawn.
    """
    ms = ds.m.values if ms is None else np.asarray(ms, float)
    S, M = ds.sizes["spectrum"], len(ms)
    fig, axes = plt.subplots(S, M, figsize=(panel_size[0] * M, panel_size[1] * S), squeeze=False, sharex=True)
    kmask = ds.k.values >= k_min
    k = ds.k.values[kmask]
    marks = set()
    for i, s in enumerate(ds.spectrum.values):
        for j, m in enumerate(ms):
            ax = axes[i, j]
            curves = []  # (k, y, colour) of every line drawn, for the ceiling
            for n in ds.n.values:
                c = n_colour(n)
                cur = ds.sel(spectrum=s, n=n, m=m)
                se = cur["stderr"].values[kmask] if stat == "mean" else np.zeros(len(k))
                y = cur[stat].values[kmask]
                _band(ax, k, y, se, c)
                curves.append((k, y, c, cur[stat].values[0]))
                if theory and "limit_error" in ds:
                    yt = ds["limit_error"].sel(spectrum=s, n=n).values[kmask]
                    ax.plot(k, _positive(yt), "--", color=c, lw=1)
                    curves.append((k, yt, c, np.nan))
                for o, other in enumerate(overlays):
                    if s in other.spectrum.values and n in other.n.values and m in other.m.values:
                        st = OVERLAY_STYLES[1 + o % (len(OVERLAY_STYLES) - 1)]
                        ko = other.k.values[other.k.values >= k_min]
                        yo = other[stat].sel(spectrum=s, n=n, m=m).sel(k=ko).values
                        _band(ax, ko, yo, None, c, style=st["ls"], marker=st["marker"], lw=1.2, ms=3, band=False)
                        curves.append((ko, yo, c, np.nan))
                if per_curve is not None:
                    per_curve(ax, s, n, m, c)
            if per_panel is not None:
                per_panel(ax, s, m)
            ax.set_yscale("log")
            start = np.nanmax([abs(float(c0)) for *_, c0 in curves] + [np.nan]) if curves else np.nan
            if np.isfinite(start) and start > 0:
                top = CEILING * start
                if any(np.any(np.isinf(np.asarray(y, float))) or np.nanmax(np.asarray(y, float), initial=0) > top
                       for _, y, _, _ in curves):
                    for kk, y, c, _ in curves:
                        marks |= _mark_exits(ax, kk, y, top, c)
                    ax.set_ylim(top=top)
            ax.set_title(title(s, m), fontsize=8)
            ax.grid(alpha=0.3, which="both", lw=0.4)
            _k_axis(ax, label=i == S - 1, k=k)
            if j == 0:
                ax.set_ylabel(ylabel)
    return fig, axes, marks


def _check_stat(stat):
    if stat not in ("mean", "median"):
        raise ValueError(f"stat must be 'mean' or 'median', got {stat!r}")


def _select_ms(ds, m):
    """``ds.m`` values to show: all (``m=None``), or the one(s) given (each must be in ``ds.m``)."""
    if m is None:
        return ds.m.values
    want = np.atleast_1d(np.asarray(m, float))
    have = ds.m.values
    for v in want:
        if not np.any(have == v):
            raise ValueError(f"m = {v:g} is not in this dataset (its test lengths m: {', '.join(f'{x:g}' for x in have)})")
    return want


def _one_model(ds):
    return ds.isel(model=0) if "model" in ds.dims else ds


def _dataset_name(ds, label=None) -> str:
    """``"<label>: model <name>"`` (just the label when it already names the model, e.g. ``"f.nc[trained]"``)."""
    name = model_name(ds)
    if not label:
        return f"model {name}"
    return str(label) if str(label).endswith(f"[{name}]") else f"{label}: model {name}"


def plot_error_curves(ds: xr.Dataset, stat: str = "mean", m=None, compare=(), labels=None) -> plt.Figure:
    """Error vs ``k`` per ``n`` (log scale), one panel per ``(spectrum, m)``; ``limit_error`` dashed.

    ``stat``: ``"mean"`` (band ±1 s.e.) or ``"median"``. ``m``: the test length(s) to show (default
    all). ``compare``: further datasets (e.g. a trained model beside the optimum) overlaid with the
    line styles :data:`OVERLAY_STYLES`; ``labels``: one name per dataset (``[ds, *compare]``) for
    the legend, beside each one's model (:func:`model_name`). Works for any contract-schema sweep.
    """
    from matplotlib.lines import Line2D

    _check_stat(stat)
    ds, compare, labels = _with_overlays(ds, compare, labels)
    ms = _select_ms(ds, m)
    fig, axes, marks = _error_vs_k_grid(ds, lambda s, mm: f"{_spectrum_title(ds, s)}, {_fmt_m(float(mm))}",
                                        f"{stat} ||ŵ_k − w||²", stat=stat, ms=ms, overlays=compare)
    if compare:
        extra = [Line2D([], [], color="k", lw=1.6, label=f"{_dataset_name(ds, labels[0])} ({stat})")]
        for o, (other, lab) in enumerate(zip(compare, labels[1:])):
            st = OVERLAY_STYLES[1 + o % (len(OVERLAY_STYLES) - 1)]
            extra.append(Line2D([], [], color="k", ls=st["ls"], marker=st["marker"], ms=3, lw=1.2,
                                label=f"{_dataset_name(other, lab)} ({stat})"))
    else:
        extra = [Line2D([], [], color="k", lw=1.6, label=f"simulation ({stat})")]
    if "limit_error" in ds:
        extra.append(Line2D([], [], color="k", ls="--", lw=1, label="theory m → ∞" + (f" ({model_name(ds)})" if compare else "")))
    names = " vs ".join(_dataset_name(x, lab) for x, lab in zip([ds, *compare], labels))
    fig.suptitle(f"{stat} error vs steps k — {names}", fontsize=9)
    fig.tight_layout()
    _figure_legend(fig, ds.n.values, extra + _exit_handles(marks))
    return fig


def _with_overlays(ds, compare, labels):
    """``(ds, compare, labels)`` with one model per dataset (:func:`_one_model`) and one label per dataset."""
    ds = _one_model(ds)
    compare = [_one_model(o) for o in compare]
    labels = list(labels) if labels is not None else [None] * (1 + len(compare))
    if len(labels) != 1 + len(compare):
        raise ValueError(f"labels: need {1 + len(compare)} names (one per dataset), got {len(labels)}")
    return ds, compare, labels


def _default_levels(z):
    lo = np.nanmin(_positive(z)) if np.any(np.asarray(z) > 0) else 1e-8
    levels = 10.0 ** np.arange(math.floor(math.log10(max(lo, 1e-8))) + 1, 1)
    return levels[-6:]


def _iso_columns(S: int) -> int:
    return 2 if S == 4 else min(S, 3)


def plot_iso_error(ds: xr.Dataset, m=None, levels=None, theory="auto", stat: str = "mean", compare=(), labels=None) -> plt.Figure:
    """Iso-error contours of the simulated ``stat`` over ``(n, k)``, one panel per spectrum (a grid of ≤ 3 columns).

    ``m``: test length to show (default: the largest finite one, else ∞); it is named in the title
    and legend. ``levels``: error levels (default: the decades in range, at most 6). ``theory``: a
    ``[spectrum, n, k]`` variable drawn dashed with the same levels — ``"auto"`` is the Cor. 3.5
    scaling-law error (:func:`scaling_law_var`, an m → ∞ law), ``None`` omits it. ``compare``:
    further datasets whose contours are drawn dotted (:data:`OVERLAY_STYLES`), ``labels`` their
    names. With a single ``n`` (or a single ``k ≥ 1``) no contour exists: the panel shows the
    error against the other axis with the levels as horizontal lines, and says so.
    """
    from matplotlib.lines import Line2D

    _check_stat(stat)
    ds, compare, labels = _with_overlays(ds, compare, labels)
    if m is None:
        finite = [v for v in ds.m.values if np.isfinite(v)]
        m = max(finite) if finite else ds.m.values[-1]
    m = float(_select_ms(ds, m)[0])
    if theory == "auto":
        theory = scaling_law_var(ds)
    elif theory is not None and theory not in ds:
        raise ValueError(f"theory: no variable {theory!r} in the dataset")
    kmask = ds.k.values >= 1
    sub = ds.sel(m=m).isel(k=kmask)
    levels = _default_levels(sub[stat].values) if levels is None else levels
    levels = np.sort(np.atleast_1d(np.asarray(levels, float)))
    if not levels.size or np.any(~np.isfinite(levels)) or np.any(levels <= 0):
        raise ValueError(f"levels must be positive finite errors, got {levels.tolist()}")
    S = ds.sizes["spectrum"]
    cols = _iso_columns(S)
    rows = -(-S // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows), squeeze=False)
    ns, k = ds.n.values, ds.k.values[kmask]
    cmap = plt.get_cmap("magma")
    colours = [cmap(0.1 + 0.62 * i / max(len(levels) - 1, 1)) for i in range(len(levels))]
    fmt = {float(np.log10(lv)): f"{lv:g}" for lv in levels}
    contour_ok = len(ns) > 1 and len(k) > 1
    thy = ds[theory].isel(k=kmask) if theory else None
    for i, s in enumerate(ds.spectrum.values):
        ax = axes.flat[i]
        z = sub[stat].sel(spectrum=s).transpose("n", "k").values
        if contour_ok:
            cs = ax.contour(k, ns, np.log10(_positive(z)), levels=np.log10(levels), colors=colours, linewidths=1.6)
            ax.clabel(cs, fmt=lambda v: fmt.get(float(v), f"{10 ** v:.2g}"), fontsize=9, inline=True)
            for o, other in enumerate(compare):
                if s in other.spectrum.values and m in other.m.values:
                    st = OVERLAY_STYLES[1 + o % (len(OVERLAY_STYLES) - 1)]
                    osub = other.sel(spectrum=s, m=m)
                    ko = other.k.values[other.k.values >= 1]
                    zo = osub[stat].sel(k=ko).transpose("n", "k").values
                    if other.sizes["n"] > 1 and len(ko) > 1:
                        ax.contour(ko, other.n.values, np.log10(_positive(zo)), levels=np.log10(levels), colors=colours,
                                   linewidths=1.3, linestyles=st["ls"])
            if thy is not None:
                zt = thy.sel(spectrum=s).transpose("n", "k").values
                ax.contour(k, ns, np.log10(_positive(zt)), levels=np.log10(levels), colors=colours, linewidths=1.0, linestyles="--")
            _n_axis(ax, ns)
            _k_axis(ax, k=k)
            ax.set_ylabel("training length n")
        else:
            # one n (or one k): no (n, k) plane to draw contours in; show the error along the other axis
            along_k = len(k) > 1
            x = k if along_k else ns
            for n in (ns if along_k else ns[:0]):
                ax.plot(k, _positive(sub[stat].sel(spectrum=s, n=n).values), "-", color=n_colour(n), lw=1.6, label=f"n = {n:g}")
                if thy is not None:
                    ax.plot(k, _positive(thy.sel(spectrum=s, n=n).values), "--", color=n_colour(n), lw=1.0)
            if not along_k:
                ax.plot(ns, _positive(z[:, 0]), "o-", color="k", lw=1.6)
                ax.set_xscale("log")
                ax.set_xlabel("training length n")
            else:
                _k_axis(ax, k=k)
            for lv, c in zip(levels, colours):
                ax.axhline(lv, color=c, ls=":", lw=1.2)
                ax.text(x[-1], lv, f"{lv:g} ", color=c, fontsize=8, va="bottom", ha="right")
            ax.set_yscale("log")
            ax.set_ylabel(f"{stat} ||ŵ_k − w||²")
            why = (f"only one n ({ns[0]:g}) in this sweep: no (n, k) contours;\nerror vs k, iso-error levels dotted"
                   if along_k else "only one k ≥ 1 in this sweep: no (n, k) contours;\nerror vs n, levels dotted")
            ax.text(0.02, 0.02, why, transform=ax.transAxes, fontsize=7, va="bottom", color="0.25")
        ax.set_title(_spectrum_title(ds, s), fontsize=9)
        ax.grid(alpha=0.3, lw=0.4)
    for ax in list(axes.flat)[S:]:
        ax.set_visible(False)
    names = [_dataset_name(x, lab) for x, lab in zip([ds, *compare], labels)]
    handles = [Line2D([], [], color="k", lw=1.6, label=f"simulation, {_fmt_m(m)} ({stat}; {names[0]})" if compare
                      else f"simulation, {_fmt_m(m)} ({stat})")]
    for o, name in enumerate(names[1:]):
        st = OVERLAY_STYLES[1 + o % (len(OVERLAY_STYLES) - 1)]
        handles.append(Line2D([], [], color="k", lw=1.3, ls=st["ls"], label=f"simulation, {_fmt_m(m)} ({stat}; {name})"))
    if thy is not None:
        handles.append(Line2D([], [], color="k", lw=1.0, ls="--", label=SCALING_LAW_LABEL))
    what = "E||ŵ_k − w||²" if stat == "mean" else "median ||ŵ_k − w||²"
    fig.suptitle(f"iso-error contours of {what} over (n, k) at {_fmt_m(m)} — {' vs '.join(names)}"
                 + ("\ndashed: the m → ∞ scaling law (Cor. 3.5), not a finite-m bound" if thy is not None else ""), fontsize=9)
    fig.tight_layout()
    ncol = 1 if max(len(h.get_label()) for h in handles) > 50 else min(len(handles), 3)
    fig.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False)
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
    k = ds.k.values[ds.k.values >= 1]

    def trained_dots(ax, s, n, m, c):
        if "trained" in models:
            ax.plot(k, _positive(ds.sel(model="trained", spectrum=s, n=n, m=m, k=k)["mean"].values), "o", color=c, ms=2.8, mfc="none", mew=0.8)

    def n30_level(ax, s, m):
        if 30.0 in opt.n.values:
            ax.axhline(float(opt["mean"].sel(spectrum=s, n=30.0, m=m, k=1)), color="0.4", ls=":", lw=1)
        ax.set_ylim(bottom=max(np.nanmin(_positive(opt["mean"].sel(spectrum=s, m=m).values)), 1e-6))

    def title(s, m):
        notes = []
        if not np.isfinite(m):
            notes.append("sim. = theory, dashed hidden")
        if "trained" in models and not np.any(np.isfinite(ds["mean"].sel(model="trained", spectrum=s, m=m).values)):
            notes.append("no trained-LSA run")
        return f"Λ = Σ: {_spectrum_title(ds, s)}, {_fmt_m(float(m))}" + (f"\n({'; '.join(notes)})" if notes else "")

    fig, axes, marks = _error_vs_k_grid(opt, title, "E||ŵ_k − w||²",
                                        panel_size=(3.8, 3.0), per_curve=trained_dots, per_panel=n30_level)
    extra = [
        Line2D([], [], color="k", lw=1.6, label="optimum Γ⁻¹ (sim., ±s.e.)"),
        Line2D([], [], color="k", ls="--", lw=1, label="theory m → ∞"),
        Line2D([], [], color="0.4", ls=":", lw=1, label="n = 30 at k = 1"),
    ]
    if "trained" in models:
        extra.append(Line2D([], [], color="k", marker="o", ls="", mfc="none", ms=4, label="trained LSA"))
    fig.suptitle("Test-time scaling: more CoT steps compensate a shorter training context", fontsize=9)
    fig.tight_layout()
    _figure_legend(fig, ds.n.values, extra + _exit_handles(marks))
    return fig


def plot_scaling_law(ds: xr.Dataset) -> plt.Figure:
    """Figure 2: iso-error contours over (n, k) per Hard(Λ): simulation at the largest finite m (solid) vs the
    m → ∞ scaling-law error of Cor 3.5 (dashed); a 2 × 2 grid for four spectra."""
    levels = ds.attrs.get("levels")
    if isinstance(levels, str):
        import json

        levels = json.loads(levels)
    if isinstance(levels, (int, float)):
        levels = [levels]
    return plot_iso_error(ds, levels=levels, theory="auto")


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
            ax.plot(hard, ds["one_step_error_bound" if "one_step_error_bound" in ds else "thm33_bound"].sel(n=n, m=m).values[order], "--", color=c, lw=1)
            mc = ds["mean"].sel(n=n, m=m, k=1).values[order]
            se = ds["stderr"].sel(n=n, m=m, k=1).values[order]
            ax.errorbar(hard, mc, yerr=2 * se, fmt="o", color=c, ms=3, capsize=2, lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_ticks_at(ax.xaxis, hard)
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

    k = ds.k.values[ds.k.values >= 1]

    def median_and_argmin(ax, s, n, m, c):
        cur = ds.sel(spectrum=s, n=n, m=m)
        ax.plot(k, _positive(cur["median"].sel(k=k).values), ":", color=c, lw=1.3)
        mean = cur["mean"].values[1:]
        kstar = int(np.nanargmin(np.where(np.isfinite(mean), mean, np.inf))) + 1
        ax.plot([kstar], [float(cur["mean"].sel(k=kstar))], "v", color=c, ms=5)

    fig, axes, marks = _error_vs_k_grid(ds, lambda s, m: f"train {_spectrum_title(ds, s)}, Σ = I, {_fmt_m(float(m))}", "||ŵ_k − w||²",
                                        panel_size=(3.8, 3.0), per_curve=median_and_argmin)
    extra = [Line2D([], [], color="k", lw=1.6, label="mean ±s.e."), Line2D([], [], color="k", ls=":", lw=1.3, label="median"),
             Line2D([], [], color="k", ls="--", lw=0.9, label="theory m → ∞"), Line2D([], [], color="k", marker="v", ls="", label="argmin of mean")]
    fig.suptitle("Overthinking: tilted training spectrum, isotropic test", fontsize=9)
    fig.tight_layout()
    _figure_legend(fig, ds.n.values, extra + _exit_handles(marks))
    return fig


def plot_best_k(ds: xr.Dataset) -> plt.Figure:
    """Figure 5: predicted best k (theory.best_k) vs the measured argmin per m; and the overthinking term vs limit_error."""
    from matplotlib.lines import Line2D

    ms = ds.m.values
    fig, axes = plt.subplots(1, len(ms) + 1, figsize=(4.0 * (len(ms) + 1), 3.6), squeeze=False)
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
        _plain_log_ticks(ax.xaxis, kmax)
        _plain_log_ticks(ax.yaxis, kmax)
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
    every = max(1, len(k) // 10)
    for idx, s in enumerate(np.asarray(ds.spectrum.values)[pick]):
        c = f"C{idx}"
        sc = float(scales[pick[idx]])
        ax.plot(k, _positive(ds["limit_error"].sel(spectrum=s, n=n_show).values), "-", color=c, lw=1.5, label=f"exact limit, s = {sc:g}")
        ax.plot(k, _positive(ds["overthinking_term"].sel(spectrum=s, n=n_show).values), "o", color=c, ms=4.5, mfc="none", mew=1.0,
                markevery=every, label=f"tr(M^2k), s = {sc:g}")
    ax.set_yscale("log")
    _k_axis(ax, k=k)
    ax.set_ylabel("m → ∞ error")
    ax.set_title(f"Remark 4.1: tr(M^2k) (markers) = exact limit (lines)\nn = {n_show:g}, λ_i = s/i, Σ = I", fontsize=8)
    ax.legend(fontsize=6.5, ncol=1)
    ax.grid(alpha=0.3, which="both", lw=0.4)
    fig.tight_layout()
    return fig


__all__ = [
    "n_colour", "plot_error_curves", "plot_iso_error", "plot_test_time_scaling", "plot_scaling_law",
    "plot_theorem33", "plot_overthinking", "plot_best_k",
]


# ============================================================================ task selection (moved from ttscale.selection)
_SELECTION_COLORS = {"qp": "C0", "qp-length": "C1", "exact": "C2", "uniform": "C7", "easy-only": "C4",
           "relevant-only": "C5", "hard-only": "C3"}


def _same_groups(names, key):
    """Group ``names`` whose ``key(name)`` arrays are identical (to round-off): ``[[name, ...], ...]`` in first-seen order.

    Two criteria that select the same mixture give the same curve; drawn separately, the later one hides
    the earlier one although both stay in the legend. Grouped, they are drawn once and named together."""
    groups: list = []
    for name in names:
        value = np.asarray(key(name), float)
        for g in groups:
            ref = np.asarray(key(g[0]), float)
            if ref.shape == value.shape and np.allclose(ref, value, rtol=1e-6, atol=0.0, equal_nan=True):
                g.append(name)
                break
        else:
            groups.append([name])
    return groups


def _group_label(group, what=""):
    notes = (["identical"] if len(group) > 1 else []) + ([what] if what else [])
    return " = ".join(map(str, group)) + (f" ({'; '.join(notes)})" if notes else "")


def plot_selection(ds, table=None, axes=None):
    """Figure: mean selected probability per task type for each criterion (bars, ±1 s.e. over trials),
    and the distribution of the mass on hard tasks (Proposition 4.3: ``≥ 1/2``). ``ds`` from
    :func:`ttscale.experiments.task_selection.selection_study`; ``table`` its ``selection_table`` (computed if ``None``).
    ``axes``: two axes to draw into (default: a new figure). Criteria with identical histograms are drawn once,
    named together ("qp-length = exact (identical)")."""
    import json

    from ttscale.selection import PAPER_RANKING

    criteria = ds.attrs.get("criteria", "[]")
    criteria = json.loads(criteria) if isinstance(criteria, str) else list(criteria)
    crit = [c for c in criteria if c in list(ds["mixture"].values)]
    crit = crit or list(ds["mixture"].values)
    if table is None:
        from ttscale.experiments.task_selection import selection_table

        table = selection_table(ds)
    tab = table.sel(mixture=crit)
    types = list(ds["type"].values)
    if axes is None:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    else:
        ax1, ax2 = axes
        fig = ax1.figure
    width = 0.8 / max(len(crit), 1)
    x = np.arange(len(types))
    for i, c in enumerate(crit):
        ax1.bar(x + (i - (len(crit) - 1) / 2) * width, tab["mean_type_mass"].sel(mixture=c).values, width,
                yerr=tab["stderr_type_mass"].sel(mixture=c).values, label=c, color=_SELECTION_COLORS.get(c), capsize=2)
    ax1.set_xticks(x, types)
    ax1.set_ylabel("mean selected probability")
    ax1.set_title(f"selected mixture per task type ({ds.sizes['trial']} random pools)\n"
                  f"paper: {' > '.join(PAPER_RANKING)}", fontsize=9)
    ax1.legend(fontsize=8)
    bins = np.linspace(0, 1, 21)
    counts = {c: np.histogram(ds["hard_mass"].sel(mixture=c).values, bins=bins)[0] for c in crit}
    for g, group in enumerate(_same_groups(crit, counts.get)):
        # identical histograms: one step line named by all; distinct ones a little apart so that none hides another
        shift = 0.004 * (g - 1)
        ax2.stairs(counts[group[0]], bins + shift, lw=1.8 if len(group) > 1 else 1.5, label=_group_label(group),
                   color=_SELECTION_COLORS.get(group[-1]), ls="-" if len(group) == 1 else "--")
    ax2.axvline(0.5, color="k", ls=":", lw=1)
    ax2.set_xlabel("mass on hard tasks (σ_min below pool median)")
    ax2.set_ylabel("pools")
    ax2.set_title("Proposition 4.3: hard mass ≥ 1/2", fontsize=9)
    ax2.legend(fontsize=8, loc="upper left")
    if axes is None:
        fig.tight_layout()
    return fig


_SELECTION_MARKERS = "osD^vP*X"


def plot_mixture_comparison(ds, ax=None):
    """Figure: test error vs steps ``k`` on the hard target for LSAs trained on each mixture
    (markers ±1 s.e.: Monte Carlo of the trained LSA at finite ``m``; dashed: ``m → ∞`` limit of the exact
    ``P(π)``); log scale, from ``k = 1``. ``ds`` from :func:`ttscale.experiments.task_selection.mixture_comparison`.
    Mixtures with identical results are drawn once and named together; the others get their own marker and
    a small sideways offset so that no curve hides another."""
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
    else:
        fig = ax.figure
    k = ds["k"].values
    sel = k >= 1
    names = [str(v) for v in ds["mixture"].values]
    key = lambda name: np.concatenate([ds["mean"].sel(mixture=name).values, ds["limit_error"].sel(mixture=name).values])  # noqa: E731
    groups = _same_groups(names, key)
    width = 0.3
    for g, group in enumerate(groups):
        c = _SELECTION_COLORS.get(group[-1])
        sub = ds.sel(mixture=group[0])
        dx = (g - (len(groups) - 1) / 2) * width / max(len(groups) - 1, 1)
        ax.errorbar(k[sel] + dx, _positive(sub["mean"].values[sel]), yerr=sub["stderr"].values[sel],
                    marker=_SELECTION_MARKERS[g % len(_SELECTION_MARKERS)], ms=4, lw=1, capsize=1.5, color=c,
                    label=_group_label(group, "trained LSA"))
        ax.plot(k[sel], _positive(sub["limit_error"].values[sel]), ls="--", lw=1, color=c)
    ax.set_yscale("log")
    _k_axis(ax, k=k[sel])
    ax.set_ylabel("E||ŵ_k − w||²")
    ax.set_title(f"hard target: trained LSA per mixture at m = {ds.attrs.get('m')} (markers ±1 s.e., offset sideways);\n"
                 "dashed: m → ∞ limit of the exact P(π)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    if own:
        fig.tight_layout()
    return fig


def plot_task_selection_panels(study, table, cmp) -> plt.Figure:
    """Both task-selection figures in one (vector, not a bitmap of two figures): the selected mixture per
    task type and the hard-mass histogram on top (:func:`plot_selection`), the error of each trained
    mixture on the hard target below (:func:`plot_mixture_comparison`)."""
    fig = plt.figure(figsize=(11.5, 9.0))
    gs = fig.add_gridspec(2, 5, height_ratios=[1, 1.15])
    plot_selection(study, table, axes=(fig.add_subplot(gs[0, :3]), fig.add_subplot(gs[0, 3:])))
    plot_mixture_comparison(cmp, ax=fig.add_subplot(gs[1, 1:4]))
    fig.tight_layout()
    return fig


def plot_gpt2(ds: xr.Dataset) -> plt.Figure:
    """Error vs ``k`` per scenario (rows) — mean ± s.e. (left) and median (right), log scale; GPT-2 solid, LSA dashed.

    ``ds``: the Dataset of :func:`ttscale.experiments.gpt2.gpt2_experiment` (dims ``scenario, n, k``; ``gpt2_mean,
    gpt2_stderr, gpt2_median, lsa_mean, lsa_median``)."""
    scenarios = list(ds.scenario.values)
    fig, axes = plt.subplots(len(scenarios), 2, figsize=(10, 3.6 * len(scenarios)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    k = ds.k.values
    titles = {"aligned": "aligned: train Λ = I, test Σ = I", "tilted": "tilted train λ_i ∝ i^-α, test Σ = I"}
    for r, scenario in enumerate(scenarios):
        cell = ds.sel(scenario=scenario)
        for c, stat in enumerate(("mean", "median")):
            ax = axes[r, c]
            for j, n in enumerate(ds.n.values):
                color = colors[j % len(colors)]
                g = cell[f"gpt2_{stat}"].sel(n=n).values
                l = cell[f"lsa_{stat}"].sel(n=n).values
                ax.plot(k, g, "-o", color=color, ms=3, label=f"GPT-2 n={int(n)}")
                if stat == "mean":
                    s = cell["gpt2_stderr"].sel(n=n).values
                    ax.fill_between(k, np.maximum(g - s, 1e-12), g + s, color=color, alpha=0.2)
                ax.plot(k, l, "--", color=color, label=f"LSA Γ⁻¹ n={int(n)}")
            if "k_train" in ds.attrs and ds.attrs.get("protocol") == "self_rollout":
                ax.axvline(float(ds.attrs["k_train"]), color="0.5", ls=":", lw=1,
                           label="training horizon K_train" if j == len(ds.n.values) - 1 else None)
            ax.set_yscale("log")
            ax.set_xlabel("steps k (k = 1: one forward pass; k ≥ 2: CoT)")
            ax.set_ylabel(f"{stat} ||ŵ_k − w||²")
            ax.set_title(f"{titles.get(scenario, scenario)} ({stat})", fontsize=9)
            finite = np.concatenate([cell[f"gpt2_{stat}"].values.ravel(), cell[f"lsa_{stat}"].values.ravel()])
            finite = finite[np.isfinite(finite) & (finite > 0)]
            if finite.size:
                ax.set_ylim(max(finite.min() * 0.5, 1e-6), min(finite.max() * 2, 1e4))
            ax.grid(alpha=0.3)
        axes[r, 0].legend(fontsize=7, ncol=2)
    what = ds.attrs.get("label", ds.attrs.get("protocol", "?"))
    fig.suptitle(f"GPT-2 test-time CoT ({what} training) vs optimal LSA, {ds.attrs.get('test_length', 'm = n')}")
    fig.tight_layout()
    return fig
