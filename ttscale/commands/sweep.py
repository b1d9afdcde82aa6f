"""``ttscale sweep``: CoT error over spectra × n × m × k, written to a netCDF file (resumable).

Example (the canonical "sweep-A")::

    ttscale sweep --d 20 --alpha 0:2:16 --n 5,10,20,40,80 --m 40 --k-max 32 --prompts 4096 --out sweepA.nc

Grids: ``a:b:N`` is ``linspace(a, b, N)``; ``a,b,c`` is a list; ``inf`` is allowed in ``--m``
(and ``--n``). Re-running the same command resumes / returns the finished file; a different
spec with the same ``--out`` is refused.
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


def _load_covariances(name: str, path: str):
    """``.npy``: eigenvalues ``[S, d]`` (diagonal) or matrices ``[S, d, d]``."""
    import numpy as np

    from ttscale.spectra import Covariance

    try:
        arr = np.load(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--{name}: cannot read {path} as a .npy array: {exc}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise ValueError(f"--{name}: {path} must hold real numbers, got dtype {getattr(arr, 'dtype', type(arr).__name__)}")
    if arr.ndim == 2:
        return [Covariance(np.asarray(row, np.float64)) for row in arr]
    if arr.ndim == 3:
        return [np.asarray(mat, np.float64) for mat in arr]
    raise ValueError(f"--{name}: {path} must hold eigenvalues [S, d] or matrices [S, d, d], got shape {arr.shape}")


def add_arguments(p):
    p.add_argument("--d", type=int, default=10, help="feature dimension (default 10)")
    p.add_argument("--family", choices=("power_law", "explicit"), default="power_law",
                   help="training spectra: power law λ_i ∝ i^-α (default) or explicit (--covariances)")
    p.add_argument("--alpha", default="0", help="power-law exponents: a:b:N (linspace) or a,b,c (default 0)")
    p.add_argument("--trace", type=float, default=None, help="tr Λ of the power-law spectra (default d)")
    p.add_argument("--covariances", default=None,
                   help="explicit training spectra: .npy of eigenvalues [S, d] or matrices [S, d, d] (sets --family explicit)")
    p.add_argument("--test", default="aligned",
                   help="test covariance Σ: aligned (Σ = Λ, default), identity, or a .npy [d] / [d, d] / [S, d] / [S, d, d]")
    p.add_argument("--n", default="10", help="training prompt lengths, e.g. 5,10,20,40,80")
    p.add_argument("--m", default="200", help="test prompt lengths, e.g. 40,inf")
    p.add_argument("--k-max", type=int, default=10, help="CoT steps k = 0..k_max (default 10)")
    p.add_argument("--prompts", type=int, default=4096, help="prompts per cell (default 4096)")
    p.add_argument("--chunk", type=int, default=4096, help="prompts per compiled call (default 4096)")
    p.add_argument("--noise", type=float, default=0.0, help="label-noise standard deviation σ (default 0)")
    p.add_argument("--model", default="pseudo_newton",
                   help="model under CoT, NAME[:key=value,...]: pseudo_newton (P = Γ(Λ, n)⁻¹, default), "
                        "lsa (literal LSA forward: the optimum, lsa:c=0.7, or lsa:params=FILE.npz), "
                        "gd:eta=0.5 (gradient descent); see ttscale.models")
    p.add_argument("--params", default=None,
                   help="per-cell LSA parameters: .npz with W and V of shape [S, N, D, D] (with --model lsa)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--crn", "--common-random-numbers", dest="crn", action="store_true",
                   help="common random numbers: every cell of one m reuses the same base normals")
    p.add_argument("--out", default=None, help="output .nc (resumable); omitted: print a summary only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def spec_from_args(args):
    """Build the :class:`~ttscale.sweep.SweepSpec` of parsed arguments."""
    import numpy as np

    from ttscale.sweep import SweepSpec

    family = args.family
    covariances = None
    if args.covariances is not None:
        family = "explicit"
        covariances = _load_covariances("covariances", args.covariances)
    elif family == "explicit":
        raise ValueError("--family explicit needs --covariances FILE.npy")
    test = args.test
    if test not in ("aligned", "identity"):
        try:
            arr = np.load(test)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--test: expected aligned, identity or a .npy file; cannot read {test!r}: {exc}") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
            raise ValueError(f"--test: {test} must hold real numbers, got dtype {getattr(arr, 'dtype', type(arr).__name__)}")
        from ttscale.spectra import Covariance

        if arr.ndim == 1:
            test = Covariance(arr.astype(np.float64))
        elif arr.ndim == 2 and arr.shape[0] == arr.shape[1] == args.d:
            test = arr
        else:
            test = _load_covariances("test", test)
    params = None
    if args.params is not None:
        from ttscale.models import lsa

        params = lsa.load(args.params)
    return SweepSpec(
        d=args.d,
        family=family,
        alphas=parse_grid("alpha", args.alpha) if family == "power_law" else (),
        covariances=covariances,
        test=test,
        ns=parse_grid("n", args.n),
        ms=parse_grid("m", args.m),
        k_max=args.k_max,
        prompts=args.prompts,
        chunk=args.chunk,
        noise=args.noise,
        model=args.model,
        params=params,
        trace=args.trace,
        seed=args.seed,
        dtype=args.dtype,
        common_random_numbers=args.crn,
    )


def run(args) -> int:
    from ttscale.sweep import run_sweep

    spec = spec_from_args(args)
    start = time.perf_counter()
    ds = run_sweep(spec, out=args.out, progress=not args.no_progress)
    wall = time.perf_counter() - start
    S, N, M, K = (ds.sizes[k] for k in ("spectrum", "n", "m", "k"))
    print(f"ttscale sweep: {S} spectra x {N} n x {M} m x k = 0..{K - 1}, {spec.prompts} prompts per cell, "
          f"model {spec.model_object.name}, {'common random numbers' if spec.common_random_numbers else 'independent prompts'}, "
          f"{wall:.2f} s")
    mean = ds["mean"].isel(k=-1)
    print(f"  final-k error: min {float(mean.min()):.4g}, max {float(mean.max()):.4g} (mean over prompts)")
    if args.out:
        print(f"  wrote {args.out}")
    sys.stdout.flush()
    return 0
