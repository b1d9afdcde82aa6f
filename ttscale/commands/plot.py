"""``ttscale plot FILE.nc``: error-vs-k curves per n and an iso-error map over (n, k) for a sweep dataset.

Examples::

    ttscale plot sweep.nc                               # every m; iso-error map at the largest finite m
    ttscale plot sweep.nc --m inf --levels 1 0.1 0.01   # one test length, chosen iso-error levels
    ttscale plot optimum.nc --compare trained.nc        # overlay: line style per file, legend names each model
    ttscale plot sweep.nc --var median                  # the median over prompts instead of the mean
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

HELP = "plot a sweep dataset (.nc): error vs k per n (theory dashed) and iso-error contours over (n, k)"


def _m_value(text: str) -> float:
    """``--m``: a test length (a number, or ``inf`` for m → ∞)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a test length (a number, or inf), got {text!r}") from None
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive test length (or inf), got {text!r}")
    return value


def _level(text: str) -> float:
    """``--levels``: a positive finite error level."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive error level, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite error level, got {text!r}")
    return value


def add_arguments(p):
    p.description = (
        "For each sweep dataset FILE.nc write FILE_curves.png (error vs steps k per training length n, one panel per "
        "(spectrum, m); the m → ∞ closed form dashed) and FILE_iso_error.png (iso-error contours over (n, k) at one "
        "test length m, beside the m → ∞ scaling law of Cor. 3.5 dashed). With --compare, the other file's curves and "
        "contours are overlaid with another line style (trained vs optimum, say) and the legend names each file's model."
    )
    p.epilog = ("examples: ttscale plot sweep.nc --m 200 --levels 1 0.1 0.01 | ttscale plot optimum.nc --compare trained.nc "
                "| ttscale plot sweep.nc --var median")
    p.add_argument("files", nargs="+", metavar="FILE.nc", help="sweep datasets (contract schema: dims spectrum, n, m, k)")
    p.add_argument("--out", default=None, help="directory for the PNGs (default: next to each file)")
    p.add_argument("--var", choices=("mean", "median"), default="mean",
                   help="statistic over prompts for the curves and the contours (default mean; the mean has a ±1 s.e. band)")
    p.add_argument("--stat", choices=("mean", "median"), dest="var", help=argparse.SUPPRESS)  # older name of --var
    p.add_argument("--m", type=_m_value, default=None, metavar="M",
                   help="test length to show (a value of the dataset's m, or inf); default: every m in the curves, "
                        "the largest finite m in the iso-error map")
    p.add_argument("--levels", type=_level, nargs="+", default=None, metavar="ERR",
                   help="iso-error levels, e.g. --levels 1 0.1 0.01 (default: the decades in range, at most 6)")
    p.add_argument("--compare", action="append", default=[], metavar="OTHER.nc",
                   help="overlay this dataset on each FILE (dotted; repeat for more), e.g. a trained model beside the optimum")
    p.add_argument("--pdf", action="store_true", help="also write PDFs")


def _read(option: str, name: str):
    from ttscale.experiments import load_dataset

    path = Path(name)
    if not path.exists():
        raise ValueError(f"{option}: no such file {name!r}")
    if not path.is_file():
        raise ValueError(f"{option} {name!r}: not a regular file")
    try:
        ds = load_dataset(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a netCDF dataset"
        raise ValueError(f"{option} {name!r}: not a readable netCDF dataset ({type(exc).__name__}: {exc})") from None
    missing = [v for v in ("mean", "stderr", "median") if v not in ds] + [d for d in ("spectrum", "n", "m", "k") if d not in ds.dims]
    if missing:
        raise ValueError(f"{option} {name!r}: not a sweep dataset (missing {', '.join(missing)})")
    return path, ds


def _split_models(path, ds):
    """A dataset with a ``model`` dimension (e.g. optimum and trained) → one ``(label, dataset)`` per model."""
    if "model" not in ds.dims:
        return [(path.stem, ds)]
    return [(f"{path.stem} [{name}]", ds.sel(model=name)) for name in ds.model.values]


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:g}"


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ttscale import plots
    from ttscale.commands import prepare_out_dir

    if args.out:
        prepare_out_dir("--out", args.out)
    # read and check every file before drawing any figure
    datasets = [_read("FILE.nc", name) for name in args.files]
    others = [_read("--compare", name) for name in args.compare]
    for path, ds in datasets + others:
        if args.m is not None and not np.any(ds.m.values == args.m):
            raise ValueError(f"--m {_fmt(args.m)}: {path.name} has no such test length (its m: "
                             f"{', '.join(_fmt(v) for v in ds.m.values)})")
    for path, ds in datasets:
        for opath, other in others:
            if other.sizes["spectrum"] != ds.sizes["spectrum"]:
                raise ValueError(f"--compare {opath.name}: {other.sizes['spectrum']} spectra, but {path.name} has "
                                 f"{ds.sizes['spectrum']}; overlaid files need the same spectra")
    for path, ds in datasets:
        parts = _split_models(path, ds) + [part for opath, other in others for part in _split_models(opath, other)]
        labels = [label for label, _ in parts]
        main, rest = parts[0][1], [d for _, d in parts[1:]]
        stem = path.stem + "".join(f"_vs_{opath.stem}" for opath, _ in others)
        figures = (
            ("curves", plots.plot_error_curves(main, stat=args.var, m=args.m, compare=rest, labels=labels)),
            ("iso_error", plots.plot_iso_error(main, m=args.m, levels=args.levels, stat=args.var, compare=rest, labels=labels)),
        )
        out = Path(args.out) if args.out else path.parent
        for suffix, fig in figures:
            for ext in ("png", "pdf") if args.pdf else ("png",):
                target = out / f"{stem}_{suffix}.{ext}"
                fig.savefig(target, dpi=130, bbox_inches="tight")
                print(target)
            plt.close(fig)
    return 0
