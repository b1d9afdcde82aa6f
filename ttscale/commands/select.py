"""``ttscale select``: choose a training-task mixture for a target covariance (SPEC §7)."""

from __future__ import annotations

import argparse
import json
import os

HELP = "optimal training mixture π for a target Σ (paper QP, length-aware QP, or exact test error)"

POOL_FORMAT = """\
POOL FILE FORMATS
  JSON:  {"tasks": [{"eigenvalues": [λ_1..λ_d], "n": 20, "name": "Easy-Short",
                     "basis": [[...d×d, columns = eigenvectors...]]   (optional)
                    }, ...]}
         or a task may give "matrix": [[...d×d covariance...]] instead of eigenvalues/basis,
         or "alpha": 0.8 for a power law λ_i ∝ i^-α with tr Λ = d (then "d" is required at the top
         level or in the task). "name" is optional; tasks with the same name form one type.
  .npz:  arrays eigenvalues [L, d], n [L], optional basis [L, d, d], optional names [L] (str).
  "paper": our reading of the paper's pool, one task per type (α, B) ∈ {Easy-Short (0.2, 20),
         Hard-Short (0.8, 20), Easy-Long (0.2, 100), Hard-Long (0.8, 100)}; α = power-law exponent,
         B = prompt length; --seed draws the jitter/rotation (--no-jitter for the exact types).
TARGET
  power_law:ALPHA (λ_i ∝ i^-α, tr = d; default power_law:0.8), identity, or a file: .json holding a
  d×d matrix or an eigenvalue list, or .npy holding either.
"""


def add_arguments(p):
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = POOL_FORMAT
    p.add_argument("--pool", default="paper", help='task pool: "paper" or a .json/.npz file (format below)')
    p.add_argument("--target", default="power_law:0.8", help="target covariance Σ (see below)")
    p.add_argument("--criterion", default="qp", choices=("qp", "qp-length", "exact", "all"),
                   help="qp: paper's QP ||I − Σ⁻¹Σπ_ℓΛ_ℓ||²; qp-length: Γ(Λ_ℓ, n_ℓ) for Λ_ℓ; "
                        "exact: m→∞ test error of P(π) = Λ̄Q⁻¹; all: the three")
    p.add_argument("--k", type=int, default=10, help="exact criterion: CoT steps k (default 10)")
    p.add_argument("--aggregate", default="sum", choices=("sum", "at"),
                   help="exact criterion: sum of errors over k=1..K (default) or the error at k=K")
    p.add_argument("--d", type=int, default=10, help="dimension for --pool paper / power-law targets (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the paper pool's jitter and rotations")
    p.add_argument("--no-jitter", action="store_true", help="paper pool: exact α, coordinate axes")
    p.add_argument("--baselines", action="store_true", help="also list uniform/easy/relevant/hard-only mixtures")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of bars")


def _power_law(d, alpha):
    from ttscale.spectra import power_law

    return power_law(d, float(alpha))


def load_pool(spec: str, d: int = 10, seed: int = 0, jitter: bool = True):
    """A :class:`~ttscale.selection.TaskPool` from ``"paper"`` or a JSON/npz file (formats in ``--help``)."""
    import jax
    import numpy as np

    from ttscale import selection as sel
    from ttscale.spectra import Covariance, from_eigenvalues

    if spec == "paper":
        kw = {} if jitter else dict(alpha_jitter=0.0, rotation=0.0)
        return sel.paper_pool(jax.random.key(seed), d, **kw)
    if not os.path.exists(spec):
        raise ValueError(f"--pool: no such file {spec!r} (give 'paper' or a .json/.npz file)")
    names = None
    if spec.endswith(".npz"):
        data = np.load(spec, allow_pickle=False)
        for key in ("eigenvalues", "n"):
            if key not in data:
                raise ValueError(f"--pool {spec}: missing array {key!r} (need eigenvalues [L, d] and n [L])")
        eig = np.asarray(data["eigenvalues"], np.float32)
        if eig.ndim != 2:
            raise ValueError(f"--pool {spec}: eigenvalues must be [L, d], got shape {eig.shape}")
        basis = data["basis"] if "basis" in data else None
        covs = [from_eigenvalues(eig[i], None if basis is None else basis[i]) for i in range(eig.shape[0])]
        ns = np.asarray(data["n"], np.float32)
        names = [str(s) for s in data["names"]] if "names" in data else None
    elif spec.endswith(".json"):
        with open(spec) as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise ValueError(f"--pool {spec}: not valid JSON ({exc})") from None
        tasks = data.get("tasks") if isinstance(data, dict) else None
        if not isinstance(tasks, list):
            raise ValueError(f"--pool {spec}: expected an object with a list 'tasks'")
        covs, ns, names = [], [], []
        for i, t in enumerate(tasks):
            if not isinstance(t, dict) or "n" not in t:
                raise ValueError(f"--pool {spec}: tasks[{i}] must be an object with 'n'")
            if "matrix" in t:
                covs.append(np.asarray(t["matrix"], np.float32))
            elif "eigenvalues" in t:
                covs.append(from_eigenvalues(np.asarray(t["eigenvalues"], np.float32),
                                             None if t.get("basis") is None else np.asarray(t["basis"], np.float32)))
            elif "alpha" in t:
                covs.append(_power_law(int(t.get("d", data.get("d", d))), t["alpha"]))
            else:
                raise ValueError(f"--pool {spec}: tasks[{i}] needs 'eigenvalues', 'matrix' or 'alpha'")
            ns.append(float(t["n"]))
            names.append(str(t.get("name", f"task{i}")))
    else:
        raise ValueError(f"--pool {spec}: unknown format (use .json or .npz)")
    kinds, kind_names = None, ()
    if names is not None:
        kind_names = tuple(dict.fromkeys(names))
        kinds = np.asarray([kind_names.index(n) for n in names], np.int32)
    return sel.task_pool(covs, ns, kinds, kind_names)


def load_target(spec: str, d: int):
    """The target ``Σ`` from ``power_law:ALPHA``, ``identity`` or a .json/.npy file (matrix or eigenvalues)."""
    import numpy as np

    from ttscale.spectra import as_covariance, from_eigenvalues, identity

    if spec == "identity":
        return identity(d)
    if spec.startswith("power_law:"):
        try:
            alpha = float(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--target {spec!r}: expected power_law:ALPHA with a number ALPHA") from None
        return _power_law(d, alpha)
    if not os.path.exists(spec):
        raise ValueError(f"--target: {spec!r} is neither identity, power_law:ALPHA nor an existing file")
    if spec.endswith(".npy"):
        arr = np.load(spec, allow_pickle=False)
    elif spec.endswith(".json"):
        with open(spec) as fh:
            arr = np.asarray(json.load(fh), np.float32)
    else:
        raise ValueError(f"--target {spec}: unknown format (use .json or .npy)")
    arr = np.asarray(arr, np.float32)
    if arr.ndim == 1:
        return from_eigenvalues(arr)
    return as_covariance("--target", arr)


def _bar(p: float, width: int = 40) -> str:
    full = int(round(p * width))
    return "█" * full + "·" * (width - full)


def run(args) -> int:
    import numpy as np

    from ttscale import selection as sel

    pool = load_pool(args.pool, args.d, args.seed, jitter=not args.no_jitter)
    Sigma = load_target(args.target, pool.d)
    criteria = sel.CRITERIA if args.criterion == "all" else (args.criterion,)
    results = {}
    for c in criteria:
        s = sel.select_mixture(pool, Sigma, c, k=args.k, aggregate=args.aggregate)
        results[c] = s
    mixtures = {c: np.asarray(s.probs) for c, s in results.items()}
    if args.baselines:
        mixtures.update({n: np.asarray(p) for n, p in sel.baseline_mixtures(pool, Sigma).items()})
    errs = {n: np.asarray(sel.exact_errors(pool, Sigma, p, args.k)) for n, p in mixtures.items()}
    labels = [pool.kind_names[i] if 0 <= i < len(pool.kind_names) else f"task{j}"
              for j, i in enumerate(np.asarray(pool.kinds))]
    ns = np.asarray(pool.ns)
    lmin = np.asarray(pool.lambda_min())
    if args.json:
        out = {"pool": args.pool, "target": args.target, "tasks": [
            {"name": labels[j], "n": float(ns[j]), "lambda_min": float(lmin[j])} for j in range(pool.size)],
            "mixtures": {n: {"probs": p.tolist(), f"exact_error_k{args.k}": float(errs[n][-1]),
                             **({"objective": float(results[n].objective), "kkt": float(results[n].kkt)}
                                if n in results else {})} for n, p in mixtures.items()}}
        print(json.dumps(out, indent=2))
        return 0
    w = max(len(s) for s in labels)
    print(f"pool: {args.pool} ({pool.size} tasks, d={pool.d}); target: {args.target}")
    for n, p in mixtures.items():
        extra = ""
        if n in results:
            extra = f"  objective={float(results[n].objective):.4g}  kkt={float(results[n].kkt):.1e}"
        print(f"\n{n}:{extra}  m→∞ error at k={args.k}: {errs[n][-1]:.4g}")
        for j in range(pool.size):
            print(f"  {labels[j]:<{w}}  n={ns[j]:<5g} σ_min={lmin[j]:.3f}  {_bar(float(p[j]))} {p[j]:.3f}")
    return 0
