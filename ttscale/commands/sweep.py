"""``ttscale sweep``: CoT error over spectra × n × m × k, written to a netCDF file (resumable).

Examples (the first is the canonical "sweep-A")::

    ttscale sweep --d 20 --spectrum power_law:alpha=0:2:16 --n 5,10,20,40,80 --m 40 --k-max 32 --prompts 4096 --out sweepA.nc
    ttscale sweep --d 20 --spectrum hard:H=20:400:8 --n 10,40 --m 40,inf --out hard.nc     # a sweep over Hard(Λ)
    ttscale sweep --spectrum my_eigenvalues.txt --test identity --n 20 --m 40              # d from the file

Spectra (``--spectrum``, repeatable; ``--test``) use the one syntax of ``ttscale.families``:
``identity``, ``power_law:alpha=A[,trace=T]``, ``hard:H=H[,trace=T]``, ``eig:3,2,1``, or a .npy/.txt/.csv/.json
file of eigenvalues [d] / [S, d] or matrices [d, d] / [S, d, d]; any parameter may be a grid ``a:b:N``
(linspace) or a list ``[a,b,c]`` (quote it in the shell). ``--alpha 0:2:16`` is shorthand for
``--spectrum power_law:alpha=0:2:16``. Grids of ``--n``/``--m``: ``a:b:N`` or ``a,b,c``; ``inf`` allowed.
Re-running the same command resumes / returns the finished file; a different spec with the same
``--out`` is refused.
"""

from __future__ import annotations

import sys
import time

HELP = "Monte-Carlo CoT error over spectra x n x m x k with closed forms, written to .nc (resumable)"


def parse_grid(name: str, text: str) -> tuple[float, ...]:
    """``"a:b:N"`` → ``linspace(a, b, N)``; ``"a,b,c"`` → list; ``inf`` allowed. Raises ``ValueError``."""
    import numpy as np

    text = str(text).strip()
    if not text:
        raise ValueError(f"--{name} must not be empty")
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"--{name}: a range is start:stop:count, got {text!r}")
        try:
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"--{name}: a range is start:stop:count (count an integer), got {text!r}") from None
        if count < 1:
            raise ValueError(f"--{name}: the count of a range must be >= 1, got {count}")
        return tuple(float(v) for v in np.linspace(start, stop, count))
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            values.append(float(item))
        except ValueError:
            raise ValueError(f"--{name}: {item!r} is not a number") from None
    if not values:
        raise ValueError(f"--{name} must list at least one value")
    return tuple(values)


def add_arguments(p):
    import argparse

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--d", type=int, default=None,
                   help="feature dimension (default: fixed by the spectra when they fix it, e.g. a file; else 10)")
    p.add_argument("--spectrum", action="append", default=None, metavar="SPEC",
                   help="training spectra, repeatable (they concatenate): identity | power_law:alpha=A[,trace=T] | "
                        "hard:H=H[,trace=T] | eig:3,2,1 | FILE.npy/.txt/.csv/.json; a parameter may be a grid a:b:N "
                        "or [a,b,c] (default power_law:alpha=0)")
    p.add_argument("--alpha", default=None,
                   help="shorthand for --spectrum power_law:alpha=...: a:b:N (linspace) or a,b,c "
                        "(default 0 when no --spectrum is given)")
    p.add_argument("--trace", type=float, default=None, help="tr Λ of the --alpha spectra (default d)")
    p.add_argument("--covariances", default=None, metavar="FILE",
                   help="same as --spectrum FILE (kept for old scripts; default none)")
    p.add_argument("--family", choices=("power_law", "explicit"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--test", default="aligned",
                   help="test covariance Σ: aligned (Σ = Λ, default), identity, or spectra in the --spectrum syntax: "
                        "one for every training spectrum or one per spectrum (e.g. a file of [S, d] eigenvalue rows)")
    p.add_argument("--n", default="10", help="training prompt lengths n, a:b:N or a,b,c, inf allowed (default 10)")
    p.add_argument("--m", default="200", help="test prompt lengths m, a:b:N or a,b,c, inf allowed (default 200)")
    p.add_argument("--k-max", type=int, default=10, help="CoT steps k = 0..k_max (default 10)")
    p.add_argument("--prompts", type=int, default=4096, help="Monte-Carlo prompts per cell (default 4096)")
    p.add_argument("--chunk", type=int, default=4096,
                   help="prompts per compiled call; the results do not depend on it (default 4096)")
    p.add_argument("--noise", type=float, default=0.0, help="label-noise standard deviation σ (default 0)")
    p.add_argument("--model", default="pseudo_newton",
                   help="model under CoT, NAME[:key=value,...]: pseudo_newton (P = Γ(Λ, n)⁻¹, default), "
                        "lsa (literal LSA forward: the optimum, lsa:c=0.7, or lsa:params=FILE.npz), "
                        "gd:eta=0.5 (gradient descent); see ttscale.models")
    p.add_argument("--params", default=None,
                   help="per-cell LSA parameters: .npz with W and V of shape [S, N, D, D] (with --model lsa; default none)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed, 0..2**32-1: cell (s, n, m) draws from fold_in(key(seed), m, s, n) (default 0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="precision of the simulation; closed forms are always float64 (default float32)")
    p.add_argument("--crn", "--common-random-numbers", dest="crn", action="store_true",
                   help="common random numbers: every cell of one m reuses the same base normals (default off)")
    p.add_argument("--sampler", choices=("auto", "statistics", "prompts"), default="auto",
                   help="statistics: draw S, b, y'y/m directly (Bartlett; same law, cost independent of m) for "
                        "m >= d; prompts: draw every prompt; auto (default): statistics when the model reads them")
    p.add_argument("--out", default=None, help="output .nc (resumable); default: none, print a summary only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: a bar on stderr)")
    p.add_argument("--distributed", action="store_true",
                   help="join a multi-process job first (jax.distributed.initialize: SLURM / TPU pods auto-detected, "
                        "or TTSCALE_COORDINATOR, TTSCALE_NUM_PROCESSES, TTSCALE_PROCESS_ID); process 0 writes --out")


EPILOG = """\
examples:
  ttscale sweep --d 20 --spectrum power_law:alpha=0:2:16 --n 5,10,20,40,80 --m 40 --k-max 32 --out sweepA.nc
  ttscale sweep --d 20 --spectrum hard:H=20:400:8 --n 10,40 --m 40,inf --out hard.nc
  ttscale sweep --spectrum eig.txt --spectrum 'power_law:alpha=[0.5,1]' --test identity --n 20 --m 40
spectra: identity | power_law:alpha=A[,trace=T] | hard:H=H[,trace=T] (the power law with Hard(Λ) = H >= d) |
  eig:λ1,λ2,... | a .npy/.txt/.csv/.json file: eigenvalues [d] or rows [S, d], a symmetric PSD matrix [d, d]
  or matrices [S, d, d] (.npy); a square array that is not a symmetric PSD matrix is read as eigenvalue
  rows (eig:FILE forces rows). Grids: a:b:N (linspace) or [a,b,c]; several grids give their product.
"""


def training_spectra(args):
    """The :class:`~ttscale.families.SpectrumGrid` of ``--spectrum`` / ``--alpha`` / ``--covariances`` (one of them).

    ``--alpha`` beside ``--spectrum`` or ``--covariances`` is refused (not silently ignored), as is
    ``--trace`` without ``--alpha``.
    """
    from ttscale.families import fmt, parse_spectra

    texts = list(args.spectrum or [])
    if getattr(args, "covariances", None) is not None:
        texts.append(args.covariances)
    family = getattr(args, "family", None)
    if family == "explicit" and not texts:
        raise ValueError("--family explicit needs --covariances FILE (or give the file as --spectrum FILE)")
    if args.alpha is not None and texts:
        given = "--spectrum" if args.spectrum else "--covariances"
        raise ValueError(f"--alpha and {given} were both given: --alpha A is shorthand for --spectrum power_law:alpha=A; "
                         "give the training spectra one way (several --spectrum flags concatenate)")
    if args.trace is not None:
        if texts:
            raise ValueError("--trace goes with --alpha; with --spectrum write the trace into the spectrum, "
                             "e.g. power_law:alpha=1,trace=20")
        if not args.trace > 0:
            raise ValueError(f"--trace must be > 0, got {args.trace:g}")
    if not texts:
        trace = "" if args.trace is None else f",trace={fmt(args.trace)}"
        texts = [f"power_law:alpha={fmt(a)}{trace}" for a in parse_grid("alpha", "0" if args.alpha is None else args.alpha)]
        name = "--alpha"
    else:
        name = "--spectrum" if args.spectrum else "--covariances"
    return parse_spectra(texts, d=args.d, name=name, default_d=10, d_name="--d")


def spec_from_args(args):
    """Build the :class:`~ttscale.sweep.SweepSpec` of parsed arguments."""
    from ttscale.sweep import SweepSpec

    spectra = training_spectra(args)
    test = args.test
    if str(test).strip() not in ("aligned", "identity"):
        from ttscale.families import parse_spectra

        test = parse_spectra(test, d=spectra.d, name="--test", d_name="the training spectra's d")
    params = None
    if args.params is not None:
        from ttscale.models import lsa

        params = lsa.load(args.params)
    return SweepSpec(
        d=spectra.d,
        spectra=spectra,
        test=test,
        ns=parse_grid("n", args.n),
        ms=parse_grid("m", args.m),
        k_max=args.k_max,
        prompts=args.prompts,
        chunk=args.chunk,
        noise=args.noise,
        model=args.model,
        params=params,
        seed=args.seed,
        dtype=args.dtype,
        common_random_numbers=args.crn,
        sampler=getattr(args, "sampler", "auto"),
    )


def run(args) -> int:
    rank = 0
    if getattr(args, "distributed", False):  # before any JAX operation
        from ttscale.devices import use_distributed

        rank = use_distributed()[0]
    from ttscale.sweep import run_sweep

    from ttscale.commands import cli_names

    with cli_names(test="--test", spectra="--spectrum"):
        spec = spec_from_args(args)
    start = time.perf_counter()
    ds = run_sweep(spec, out=args.out, progress=not args.no_progress and rank == 0)
    if rank != 0:
        return 0
    wall = time.perf_counter() - start
    S, N, M, K = (ds.sizes[k] for k in ("spectrum", "n", "m", "k"))
    print(f"ttscale sweep: {S} spectra x {N} n x {M} m x k = 0..{K - 1}, {spec.prompts} prompts per cell, "
          f"model {spec.model_object.name}, {'common random numbers' if spec.common_random_numbers else 'independent prompts'}, "
          f"{wall:.2f} s")
    labels = [str(x) for x in ds["spectrum_label"].values]
    print(f"  spectra (d = {spec.d}): {', '.join(labels[:6])}{', ...' if len(labels) > 6 else ''}")
    mean = ds["mean"].isel(k=-1)
    print(f"  final-k error: min {float(mean.min()):.4g}, max {float(mean.max()):.4g} (mean over prompts)")
    if args.out:
        print(f"  wrote {args.out}")
    sys.stdout.flush()
    return 0
