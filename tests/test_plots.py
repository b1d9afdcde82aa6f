"""Figures: Dataset in, Figure out (Agg), log-scale errors, theory dashed, consistent colours; ``ttscale plot``."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

import ttscale as tts  # noqa: E402
from ttscale import experiments as ex  # noqa: E402
from ttscale import plots  # noqa: E402


@pytest.fixture(scope="module")
def sweep_ds():
    """A contract-schema sweep Dataset (dims spectrum, n, m, k) of made-up smooth numbers: the figures are under
    test here, not the simulation, so no Monte Carlo runs. ``mean`` at m → ∞ equals ``limit_error``."""
    import json

    d, ns, ms, k = 5, np.array([6.0, 12.0, 24.0]), np.array([40.0, math.inf]), np.arange(6)
    hard = np.array([5.0, 11.4])
    rate = 1.0 / (1.0 + ns[None, :] / (1.0 + hard[:, None]))  # [S, N]
    limit = d * rate[..., None] ** (2 * k)  # [S, N, K+1]
    mean = limit[:, :, None, :] * (1.0 + 5.0 * k / ms[:, None])  # [S, N, M, K+1]
    dims4, dims3 = ("spectrum", "n", "m", "k"), ("spectrum", "n", "k")
    return xr.Dataset(
        {"mean": (dims4, mean.astype(np.float32)), "stderr": (dims4, (0.05 * mean).astype(np.float32)),
         "median": (dims4, (0.9 * mean).astype(np.float32)), "limit_error": (dims3, limit.astype(np.float32)),
         "scaling_law_error": (dims3, (d * (1.0 + ns[None, :, None] / (1.0 + hard[:, None, None])) ** (-2.0 * k)).astype(np.float32)),
         "overthinking_term": (dims3, limit.astype(np.float32)),
         "one_step_error": (("spectrum", "n", "m"), mean[..., 1].astype(np.float32)),
         "best_k": (("spectrum", "n"), np.full((2, 3), 5))},
        coords={"spectrum": [0, 1], "alpha": ("spectrum", [0.0, 1.0]), "hardness": ("spectrum", hard), "n": ns, "m": ms, "k": k},
        attrs={"model": "pseudo_newton", "spec": json.dumps({"model": "pseudo_newton", "d": d})},
    )


def _lines(ax):
    return [ln for ln in ax.get_lines() if len(ln.get_xdata())]


def test_error_curves_log_scale_theory_dashed_colours(sweep_ds):
    fig = plots.plot_error_curves(sweep_ds)
    axes = fig.get_axes()
    assert len(axes) == sweep_ds.sizes["spectrum"] * sweep_ds.sizes["m"]
    ax = axes[0]
    assert ax.get_yscale() == "log"
    lines = _lines(ax)
    dashed = [ln for ln in lines if ln.get_linestyle() == "--"]
    solid = [ln for ln in lines if ln.get_linestyle() == "-"]
    assert len(dashed) == len(solid) == sweep_ds.sizes["n"]
    # the same n has the same colour for simulation and theory, and it is n_colour(n)
    for n, s, d in zip(sweep_ds.n.values, solid, dashed):
        assert matplotlib.colors.same_color(s.get_color(), plots.n_colour(n))
        assert matplotlib.colors.same_color(d.get_color(), plots.n_colour(n))
    # theory line is limit_error exactly, from k = 1 (one forward pass; k = 0 is the initial estimate ŵ_0 = 0)
    np.testing.assert_array_equal(dashed[0].get_xdata(), np.arange(1, sweep_ds.sizes["k"]))
    np.testing.assert_allclose(dashed[0].get_ydata(), sweep_ds["limit_error"].sel(spectrum=0, n=6).values[1:], rtol=1e-6)
    assert "k = 1: one forward pass" in axes[-1].get_xlabel()
    assert "model pseudo_newton" in fig._suptitle.get_text()
    plt.close(fig)


def test_n_colour_is_consistent_and_distinct():
    assert plots.n_colour(20) == plots.n_colour(20.0)
    assert plots.n_colour(10) != plots.n_colour(30)


def test_iso_error_and_paper_figures(sweep_ds):
    fig = plots.plot_iso_error(sweep_ds, levels=[1.0, 0.1])
    assert all(ax.get_yscale() == "log" for ax in fig.get_axes())
    plt.close(fig)
    for fn in (plots.plot_overthinking, plots.plot_scaling_law):
        fig = fn(sweep_ds)
        assert isinstance(fig, matplotlib.figure.Figure)
        plt.close(fig)
    fig = plots.plot_test_time_scaling(sweep_ds.expand_dims(model=["optimum"]))
    assert fig.get_axes()[0].get_yscale() == "log"
    plt.close(fig)
    with pytest.raises(ValueError, match="stat"):
        plots.plot_error_curves(sweep_ds, stat="mode")


def test_theorem33_and_best_k_figures(sweep_ds):
    from ttscale import theory

    ds = sweep_ds.copy()
    covs = [tts.identity(5), tts.power_law(5, 1.0)]
    ds["one_step_error_bound"] = (("spectrum", "n", "m"), np.array(
        [[[float(theory.one_step_error_bound(c, n, m)) for m in ds.m.values] for n in ds.n.values] for c in covs]))
    fig = plots.plot_theorem33(ds)
    assert fig.get_axes()[0].get_xscale() == "log"
    # exact one-step error is drawn solid, the bound dashed, for every m
    lines = _lines(fig.get_axes()[0])
    assert sum(ln.get_linestyle() == "--" for ln in lines) == ds.sizes["m"]
    plt.close(fig)
    fig = plots.plot_best_k(ds.assign_coords(scale=("spectrum", [1.0, 2.0])))
    assert len(fig.get_axes()) == ds.sizes["m"] + 1
    plt.close(fig)


def test_plot_command_writes_pngs(sweep_ds, tmp_path):
    from ttscale import cli

    path = tmp_path / "sweep.nc"
    ex._save_nc(sweep_ds, path)
    assert cli.main(["plot", str(path)]) == 0
    assert (tmp_path / "sweep_curves.png").stat().st_size > 1000
    assert (tmp_path / "sweep_iso_error.png").stat().st_size > 1000
    out = tmp_path / "figs"
    assert cli.main(["plot", str(path), "--out", str(out), "--stat", "median"]) == 0
    assert (out / "sweep_curves.png").exists()
    assert cli.main(["plot", str(tmp_path / "missing.nc")]) == 2


def test_plot_command_bad_files_and_full_disk_are_one_line(sweep_ds, tmp_path, capsys, monkeypatch):
    """Not a netCDF file, a missing file, a directory: exit 2 naming the file; ENOSPC while saving: exit 1."""
    import errno

    from matplotlib.figure import Figure

    from ttscale import cli

    garbage = tmp_path / "garbage.nc"
    garbage.write_text("not netCDF\n")
    for target, text in ((garbage, "not a readable netCDF dataset"), (tmp_path / "missing.nc", "no such file"),
                         (tmp_path, "not a regular file")):
        assert cli.main(["plot", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("ttscale plot: error: FILE.nc") and text in err, err
    path = tmp_path / "sweep.nc"
    ex._save_nc(sweep_ds, path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    assert cli.main(["plot", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no space left on the device" in err


# ---------------------------------------------------------------------------- iso-error map, overlays, ttscale plot options
def _contour_sets(ax):
    from matplotlib.contour import ContourSet

    return [c for c in ax.get_children() if isinstance(c, ContourSet)]


def test_iso_error_levels_labels_and_plain_n_ticks(sweep_ds):
    fig = plots.plot_iso_error(sweep_ds, m=40.0, levels=[1.0, 0.1])
    ax = fig.get_axes()[0]
    sets = _contour_sets(ax)
    assert len(sets) == 2  # simulation (solid) and the scaling law (dashed), both at the requested levels
    for cs in sets:
        np.testing.assert_allclose(np.sort(cs.levels), np.log10([0.1, 1.0]))
    # plain tick labels at the n values (not 6×10^0)
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["6", "12", "24"]
    # the legend says which m was simulated and that the dashed law is the m → ∞ theory of Cor. 3.5
    texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any("m = 40" in t for t in texts) and plots.SCALING_LAW_LABEL in texts
    assert not any(t == "cor35 bound" for t in texts)
    assert "m = 40" in fig._suptitle.get_text() and "pseudo_newton" in fig._suptitle.get_text()
    # contour labels are readable
    assert min(t.get_fontsize() for t in ax.texts) >= 8
    plt.close(fig)
    with pytest.raises(ValueError, match="m = 7 is not in this dataset"):
        plots.plot_iso_error(sweep_ds, m=7.0)
    with pytest.raises(ValueError, match="levels"):
        plots.plot_iso_error(sweep_ds, levels=[0.0])


def test_scaling_law_variable_may_have_either_name(sweep_ds):
    renamed = sweep_ds.rename({"scaling_law_error": "cor35_bound"})
    assert plots.scaling_law_var(sweep_ds) == "scaling_law_error" and plots.scaling_law_var(renamed) == "cor35_bound"
    assert plots.scaling_law_var(sweep_ds.drop_vars("scaling_law_error")) is None
    fig = plots.plot_scaling_law(renamed)
    assert len(_contour_sets(fig.get_axes()[0])) == 2
    plt.close(fig)


def test_scaling_law_four_spectra_is_a_grid(sweep_ds):
    four = xr.concat([sweep_ds.assign_coords(spectrum=[2 * i, 2 * i + 1]) for i in range(2)], "spectrum")
    fig = plots.plot_scaling_law(four)
    visible = [ax for ax in fig.get_axes() if ax.get_visible()]
    assert len(visible) == 4
    rows = {round(ax.get_position().y0, 3) for ax in visible}
    cols = {round(ax.get_position().x0, 3) for ax in visible}
    assert len(rows) == 2 and len(cols) == 2
    w, h = fig.get_size_inches()
    assert w / h < 2  # not one long strip
    plt.close(fig)


def test_iso_error_of_one_n_has_no_empty_panel(sweep_ds):
    one = sweep_ds.isel(n=[1])
    fig = plots.plot_iso_error(one)
    for ax in (a for a in fig.get_axes() if a.get_visible()):
        assert ax.has_data() and _lines(ax), "an empty panel"
        assert any("only one n" in t.get_text() for t in ax.texts)  # says why there are no contours
    plt.close(fig)


def test_overlay_of_two_datasets_by_line_style(sweep_ds):
    other = sweep_ds.copy()
    other["mean"] = other["mean"] * 2.0
    other.attrs["model"] = "gd:eta=0.5"
    fig = plots.plot_error_curves(sweep_ds, compare=[other], labels=["opt", "gd"], m=40.0)
    axes = fig.get_axes()
    assert len(axes) == sweep_ds.sizes["spectrum"]  # one column: the chosen m
    lines = _lines(axes[0])
    dotted = [ln for ln in lines if ln.get_linestyle() == ":"]
    assert len(dotted) == sweep_ds.sizes["n"]
    np.testing.assert_allclose(dotted[0].get_ydata(), 2.0 * sweep_ds["mean"].sel(spectrum=0, n=6, m=40.0).values[1:], rtol=1e-6)
    texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any("opt: model pseudo_newton" in t for t in texts) and any("gd: model gd:eta=0.5" in t for t in texts)
    plt.close(fig)
    fig = plots.plot_iso_error(sweep_ds, compare=[other], labels=["opt", "gd"], levels=[0.1])
    assert len(_contour_sets(fig.get_axes()[0])) == 3  # opt, gd, scaling law
    plt.close(fig)


def test_diverging_curve_is_marked_where_it_leaves_the_plot(sweep_ds):
    ds = sweep_ds.copy(deep=True)
    k = ds.k.values
    grow = (10.0 ** (3.0 * k)).astype(np.float32)  # overflows float32 (inf) beyond k = 12
    ds["mean"].loc[dict(spectrum=0, n=24.0, m=40.0)] = np.where(np.isfinite(grow), grow, np.inf)
    fig = plots.plot_overthinking(ds)
    ax = fig.get_axes()[0]
    ups = [ln for ln in ax.get_lines() if ln.get_marker() == "^"]
    assert ups, "no ▲ where the curve leaves the plot"
    top = ax.get_ylim()[1]
    assert all(np.isclose(ln.get_ydata()[0], top) for ln in ups)
    assert top < 1e30  # the axis is not stretched to the overflow
    texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any("diverges" in t for t in texts)
    plt.close(fig)


def test_plot_command_one_n_m_levels_var_and_compare(sweep_ds, tmp_path, capsys):
    from ttscale import cli

    one = tmp_path / "one_n.nc"
    ex._save_nc(sweep_ds.isel(n=[0]), one)
    assert cli.main(["plot", str(one), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "one_n_iso_error.png").stat().st_size > 1000
    full = tmp_path / "full.nc"
    ex._save_nc(sweep_ds, full)
    other = sweep_ds.copy()
    other["mean"] = other["mean"] * 3.0
    other.attrs["model"] = "lsa"
    trained = tmp_path / "trained.nc"
    ex._save_nc(other, trained)
    args = ["plot", str(full), "--compare", str(trained), "--m", "inf", "--levels", "1", "0.1", "--var", "median", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out.split()
    assert str(tmp_path / "full_vs_trained_curves.png") in out and str(tmp_path / "full_vs_trained_iso_error.png") in out
    assert cli.main(["plot", str(full), "--m", "7"]) == 2
    assert "--m 7: full.nc has no such test length" in capsys.readouterr().err
    for bad, text in ((["--levels", "-1"], "positive finite error level"), (["--var", "mode"], "invalid choice"),
                      (["--m", "soon"], "expected a test length")):
        with pytest.raises(SystemExit) as exc:  # argparse refuses these itself: exit 2, one line
            cli.main(["plot", str(full), *bad])
        assert exc.value.code == 2 and text in capsys.readouterr().err


def test_mixture_comparison_draws_identical_curves_once_and_names_both():
    k = np.arange(6)
    base = 2.0 * 0.5 ** k
    means = {"qp": 1.5 * base, "qp-length": base, "exact": base.copy(), "uniform": 1.5 * base * (1 + 1e-3)}
    ds = xr.Dataset(
        {"mean": (("mixture", "k"), np.stack(list(means.values()))), "stderr": (("mixture", "k"), np.full((4, 6), 1e-3)),
         "limit_error": (("mixture", "k"), np.stack(list(means.values())) * 0.5)},
        coords={"mixture": list(means), "k": k}, attrs={"m": 200})
    fig = plots.plot_mixture_comparison(ds)
    ax = fig.get_axes()[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["qp (trained LSA)", "qp-length = exact (identical; trained LSA)", "uniform (trained LSA)"]
    # near-identical curves (qp, uniform) get different markers and a sideways offset, so neither hides the other
    data = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and ln.get_marker() not in ("None", "", None)]
    assert len({ln.get_marker() for ln in data}) == len(data) == 3
    assert len({float(ln.get_xdata()[0]) for ln in data}) == 3 and min(float(ln.get_xdata()[0]) for ln in data) < 1 < max(
        float(ln.get_xdata()[0]) for ln in data)
    plt.close(fig)
