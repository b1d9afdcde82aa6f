"""``ttscale plot FILE.nc``: error-vs-k curves per n and an iso-error map over (n, k) for a sweep dataset."""

from __future__ import annotations

from pathlib import Path

HELP = "plot a sweep dataset (.nc): error vs k per n (theory dashed) and iso-error contours over (n, k)"


def add_arguments(p):
    p.add_argument("files", nargs="+", metavar="FILE.nc", help="sweep datasets (contract schema: dims spectrum, n, m, k)")
    p.add_argument("--out", default=None, help="directory for the PNGs (default: next to each file)")
    p.add_argument("--stat", choices=("mean", "median"), default="mean", help="statistic for the curves (default mean)")
    p.add_argument("--pdf", action="store_true", help="also write PDFs")


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ttscale import plots
    from ttscale.commands import prepare_out_dir
    from ttscale.experiments import load_dataset

    if args.out:
        prepare_out_dir("--out", args.out)
    datasets = []
    for name in args.files:  # read and check every file before drawing any figure
        path = Path(name)
        if not path.exists():
            raise ValueError(f"FILE.nc: no such file {name!r}")
        if not path.is_file():
            raise ValueError(f"FILE.nc {name!r}: not a regular file")
        try:
            ds = load_dataset(path)
        except Exception as exc:  # noqa: BLE001 - any reader failure means "not a netCDF dataset"
            raise ValueError(f"FILE.nc {name!r}: not a readable netCDF dataset ({type(exc).__name__}: {exc})") from None
        missing = [v for v in ("mean", "stderr", "median") if v not in ds] + [d for d in ("spectrum", "n", "m", "k") if d not in ds.dims]
        if missing:
            raise ValueError(f"FILE.nc {name!r}: not a sweep dataset (missing {', '.join(missing)})")
        datasets.append((path, ds))
    for path, ds in datasets:
        out = Path(args.out) if args.out else path.parent
        for suffix, fig in (("curves", plots.plot_error_curves(ds, stat=args.stat)), ("iso_error", plots.plot_iso_error(ds))):
            for ext in ("png", "pdf") if args.pdf else ("png",):
                target = out / f"{path.stem}_{suffix}.{ext}"
                fig.savefig(target, dpi=130, bbox_inches="tight")
                print(target)
            plt.close(fig)
    return 0
