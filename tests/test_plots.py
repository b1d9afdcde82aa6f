"""Figures: Dataset in, Figure out (Agg), log-scale errors, theory dashed, consistent colours; ``ttscale plot``."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ttscale as tts  # noqa: E402
from ttscale import experiments as ex  # noqa: E402
from ttscale import plots  # noqa: E402


@pytest.fixture(scope="module")
def sweep_ds():
    covs = [tts.identity(5), tts.power_law(5, 1.0)]
    return ex.sweep(covs, "aligned", (6, 12, 24), (40.0, math.inf), 5, 64, seed=0)


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
    # theory line is limit_error exactly
    np.testing.assert_allclose(dashed[0].get_ydata(), sweep_ds["limit_error"].sel(spectrum=0, n=6).values, rtol=1e-6)
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
    ds["thm33_bound"] = (("spectrum", "n", "m"), np.array(
        [[[float(theory.thm33_bound(c, n, m)) for m in ds.m.values] for n in ds.n.values] for c in covs]))
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
