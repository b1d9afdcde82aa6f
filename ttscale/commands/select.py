"""``ttscale select``: choose a training-task mixture for a target covariance (docs/science.md §7)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os

HELP = "optimal training mixture π for a target Σ (paper QP, length-aware QP, or exact test error)"

POOL_FORMAT = """\
POOL FILE FORMATS
  JSON:  {"tasks": [{"eigenvalues": [λ_1..λ_d], "n": 20, "name": "Easy-Short",
                     "basis": [[...d×d, columns = eigenvectors...]]   (optional)
                    }, ...]}
         or a task may give "matrix": [[...d×d covariance...]] instead of eigenvalues/basis,
         or "spectrum": "power_law:alpha=0.8" (the --spectrum syntax of ttscale sweep: identity,
         power_law:alpha=A[,trace=T], hard:H=H, eig:3,2,1, or a file, relative to the pool file),
         or "alpha": 0.8 for a power law λ_i ∝ i^-α with tr Λ = d. d: the task's "d", else the top
         level "d", else fixed by the spectrum, else --d. "name" is optional; tasks with the same
         name form one type.
  .npz:  arrays eigenvalues [L, d], n [L], optional basis [L, d, d], optional names [L] (str).
  "paper": our reading of the paper's pool, one task per type (α, B) ∈ {Easy-Short (0.2, 20),
         Hard-Short (0.8, 20), Easy-Long (0.2, 100), Hard-Long (0.8, 100)}; α = power-law exponent,
         B = prompt length; --seed draws the jitter/rotation (--no-jitter for the exact types).
TARGET
  one spectrum in the --spectrum syntax of ttscale sweep, of the pool's dimension d: identity,
  power_law:alpha=A (λ_i ∝ i^-α, tr = d; power_law:A for short; default power_law:0.8),
  power_law:alpha=A,trace=T, hard:H=H, eig:λ1,...,λd, or a .npy/.txt/.csv/.json file holding
  eigenvalues [d] or a symmetric PSD matrix [d, d].
EXAMPLES
  ttscale select --target power_law:alpha=1 --criterion all --baselines
  ttscale select --pool my_pool.json --target my_target_eigenvalues.txt
"""


def add_arguments(p):
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = POOL_FORMAT
    p.add_argument("--pool", default="paper", help='task pool: "paper" or a .json/.npz file (format below)')
    p.add_argument("--target", default="power_law:0.8",
                   help="target covariance Σ, one spectrum in the --spectrum syntax (see below; default power_law:0.8)")
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


@contextlib.contextmanager
def _about(where: str):
    """Prefix a ``ValueError``/``TypeError`` raised in the block with ``where`` (``"--pool FILE: tasks[2]"``)."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        if str(exc).startswith("--"):  # already names its option and file
            raise ValueError(str(exc)) from None
        raise ValueError(f"{where}: {exc}") from None


def _real(where: str, value):
    """``value`` as a float32 array; refuses complex, boolean, string or object data (``ValueError`` naming ``where``)."""
    import numpy as np

    with _about(where):
        arr = np.asarray(value)
    if np.iscomplexobj(arr):
        raise ValueError(f"{where}: holds complex numbers (dtype {arr.dtype}); a covariance must be real")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{where}: must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float32)


def _length(where: str, value) -> float:
    """A task's prompt length: a number >= 1 (``inf`` allowed: infinitely long prompts)."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{where} must be a prompt length (a number >= 1), got {value!r}")
    if not float(value) >= 1:
        raise ValueError(f"{where} must be a prompt length >= 1, got {float(value):g}")
    return float(value)


def _read(arg: str, path: str):
    """The contents of a .npy/.npz (``np.load``, no pickles) or .json file, read errors naming ``arg`` and ``path``."""
    import numpy as np

    if os.path.isdir(path):
        raise ValueError(f"{arg} {path}: is a directory, not a file")
    try:
        if path.endswith(".json"):
            with open(path) as fh:
                return json.load(fh)
        return np.load(path, allow_pickle=False)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{arg} {path}: not valid JSON ({exc})") from None
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{arg} {path}: not a readable {os.path.splitext(path)[1]} file ({exc})") from None


def pool_size_check(L: int, d: int) -> None:
    """Refuse a pool whose dense ``[L, d, d]`` matrices (tasks, bases, Γ, Σ⁻¹Λ, gradients: ≈ 8 copies) cannot fit in memory."""
    from ttscale.commands import check_fits

    check_fits(4 * 8 * (L + 4) * d * d, f"a pool of {L} tasks of --d {d} (matrices [{L}, {d}, {d}])", "lower --d")


def load_pool(spec: str, d: int = 10, seed: int = 0, jitter: bool = True):
    """A :class:`~ttscale.tasks.TaskMixture` from ``"paper"`` or a JSON/npz file (formats in ``--help``).

    Every error is a ``ValueError`` naming ``--pool`` and the file (and the task, where there is one).
    """
    import jax
    import numpy as np

    from ttscale import selection as sel
    from ttscale.spectra import from_eigenvalues

    if spec == "paper":
        if d < 1:
            raise ValueError(f"--d must be >= 1, got {d}")
        pool_size_check(len(sel.PAPER_TASK_TYPES), d)
        kw = {} if jitter else dict(alpha_jitter=0.0, rotation=0.0)
        return sel.paper_pool(jax.random.key(seed), d, **kw)
    if not os.path.exists(spec):
        raise ValueError(f"--pool: no such file {spec!r} (give 'paper' or a .json/.npz file)")
    where = f"--pool {spec}"
    names = None
    if spec.endswith(".npz"):
        with _read("--pool", spec) as data, _about(where):
            arrays = {key: data[key] for key in data.files}
        for key in ("eigenvalues", "n"):
            if key not in arrays:
                raise ValueError(f"{where}: missing array {key!r} (need eigenvalues [L, d] and n [L])")
        eig = _real(f"{where}: eigenvalues", arrays["eigenvalues"])
        if eig.ndim != 2:
            raise ValueError(f"{where}: eigenvalues must be [L, d], got shape {eig.shape}")
        basis = _real(f"{where}: basis", arrays["basis"]) if "basis" in arrays else None
        if basis is not None and basis.shape != eig.shape + eig.shape[-1:]:
            raise ValueError(f"{where}: basis must be [L, d, d] = {list(eig.shape + eig.shape[-1:])}, got shape {basis.shape}")
        covs = []
        for i in range(eig.shape[0]):
            with _about(f"{where}: tasks[{i}]"):
                covs.append(from_eigenvalues(eig[i], None if basis is None else basis[i]))
        ns = [_length(f"{where}: n[{i}]", v) for i, v in enumerate(_real(f"{where}: n", arrays["n"]).ravel())]
        names = [str(s) for s in arrays["names"]] if "names" in arrays else None
    elif spec.endswith(".json"):
        data = _read("--pool", spec)
        tasks = data.get("tasks") if isinstance(data, dict) else None
        if not isinstance(tasks, list):
            raise ValueError(f"{where}: expected an object with a list 'tasks'")
        covs, ns, names = [], [], []
        for i, t in enumerate(tasks):
            if not isinstance(t, dict) or "n" not in t:
                raise ValueError(f"{where}: tasks[{i}] must be an object with 'n'")
            here = f"{where}: tasks[{i}]"
            with _about(here):
                if "matrix" in t:
                    covs.append(_real(f"{here}.matrix", t["matrix"]))
                elif "eigenvalues" in t:
                    basis = None if t.get("basis") is None else _real(f"{here}.basis", t["basis"])
                    covs.append(from_eigenvalues(_real(f"{here}.eigenvalues", t["eigenvalues"]), basis))
                elif "spectrum" in t:
                    covs.append(_task_spectrum(f"{here}.spectrum", t["spectrum"], t.get("d", data.get("d")),
                                               _pool_d(tasks, d, os.path.dirname(spec)), os.path.dirname(spec)))
                elif "alpha" in t:
                    covs.append(_power_law(int(t.get("d", data.get("d", d))), t["alpha"]))
                else:
                    raise ValueError("needs 'eigenvalues', 'matrix', 'spectrum' or 'alpha'")
                ns.append(_length(f"{here}.n", t["n"]))
            names.append(str(t.get("name", f"task{i}")))
    else:
        raise ValueError(f"{where}: unknown format (use .json or .npz)")
    if covs:
        first = covs[0]
        pool_size_check(len(covs), int(first.d if hasattr(first, "d") else np.shape(first)[-1]))
    from ttscale.tasks import task_mixture

    with _about(where):
        return task_mixture(covs, ns, labels=names)


def _task_spectrum(where: str, text, d, fallback_d: int, base: str):
    """A pool task's ``"spectrum"``: one spectrum of dimension ``d`` (else fixed by it, else ``fallback_d``);
    a relative file name is looked up next to the pool file first."""
    from ttscale.families import one_spectrum

    if not isinstance(text, str):
        raise ValueError(f"{where} must be a string in the --spectrum syntax, got {type(text).__name__}")
    head = text.split(":", 1)[1] if text.startswith("eig:") else text
    local = os.path.join(base, head)
    if base and not os.path.isabs(head) and not os.path.exists(head) and os.path.exists(local):
        text = text.replace(head, local, 1)
    return one_spectrum(text, d=None if d is None else int(d), name=where, default_d=fallback_d).astype("float32")


def _pool_d(tasks: list, d: int, base: str) -> int:
    """The dimension for pool tasks whose spectrum does not fix it: that of the first task that does
    (eigenvalues, a matrix, or a spectrum such as a file), else ``--d``."""
    for t in tasks:
        if not isinstance(t, dict):
            continue
        for key in ("eigenvalues", "matrix"):
            if isinstance(t.get(key), list):
                return len(t[key])
        if isinstance(t.get("spectrum"), str) and t.get("d") is None:
            try:
                return _task_spectrum("spectrum", t["spectrum"], None, None, base).d
            except (ValueError, TypeError):
                continue
    return d


def load_target(spec: str, d: int):
    """The target ``Σ``: one spectrum in the syntax of :mod:`ttscale.families` (``power_law:0.8``,
    ``identity``, ``eig:...``, a .npy/.txt/.csv/.json file of eigenvalues or a matrix) of dimension ``d``.

    Every error is a ``ValueError`` naming ``--target`` (and the file).
    """
    from ttscale.families import one_spectrum

    # float32 like the pool (the spectrum is parsed and checked in float64)
    return one_spectrum(spec, d=d, name="--target", d_name="the pool's d").astype("float32")


def _bar(p: float, width: int = 40) -> str:
    full = int(round(p * width))
    return "█" * full + "·" * (width - full)


def run(args) -> int:
    import numpy as np

    from ttscale import selection as sel

    from ttscale.commands import cli_names

    pool = load_pool(args.pool, args.d, args.seed, jitter=not args.no_jitter)
    Sigma = load_target(args.target, pool.d)
    criteria = sel.CRITERIA if args.criterion == "all" else (args.criterion,)
    results = {}
    with cli_names(test=f"--target {args.target}", k="--k"):
        for c in criteria:
            results[c] = sel.select_mixture(pool, Sigma, c, k=args.k, aggregate=args.aggregate)
    mixtures = {c: np.asarray(s.probs) for c, s in results.items()}
    if args.baselines:
        mixtures.update({n: np.asarray(p) for n, p in sel.baseline_mixtures(pool, Sigma).items()})
    errs = {n: np.asarray(sel.exact_errors(pool, Sigma, p, args.k)) for n, p in mixtures.items()}
    labels = list(pool.labels)
    ns = np.asarray(pool.lengths)
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
