"""Spectrum families and the one spectrum syntax, used by the API (:class:`~ttscale.sweep.SweepSpec`), every command and preset.

A *spectrum* is a training or test covariance ``Λ`` (:class:`ttscale.spectra.Covariance`). Text forms::

    identity                       Λ = I_d
    power_law:alpha=1              λ_i ∝ i^{-α}, tr Λ = d        (shorthand: power_law:1)
    power_law:alpha=1,trace=20     ... with tr Λ = 20
    hard:H=40                      the power law with Hard(Λ) = tr Λ / λ_min = 40 (α solved; H ≥ d)
    eig:3,2,1                      eigenvalues given inline (fixes d = 3)
    spectra.txt | .csv | .npy | .json
                                   a file: eigenvalues [d], a symmetric PSD matrix [d, d], a stack
                                   of eigenvalue rows [S, d] or of matrices [S, d, d] (.npy only)
    eig:rows.txt                   a file read as eigenvalue rows, never as a matrix

**Grids.** Any numeric parameter may be a grid: ``a:b:N`` is ``linspace(a, b, N)`` and ``[a,b,c]`` a list
(``power_law:alpha=0:2:16``, ``hard:H=[10,40,100]``, ``power_law:alpha=[0,1],trace=[5,10]`` — several
grids give their Cartesian product, the first parameter varying slowest). Options are separated by
commas, so a list is always in brackets (quote it in a shell: ``--spectrum 'power_law:alpha=[0,1]'``).
Several texts (``--spectrum`` repeated, or a list in the API) concatenate.

**Files.** ``.txt``/``.csv`` are read with ``np.loadtxt`` (comma or whitespace separated, ``#``
comments), ``.npy`` with ``np.load`` (no pickles), ``.json`` as a nested list. A file with one row or
one column is the eigenvalues of one spectrum. A square ``[d, d]`` array is a matrix when it is
symmetric positive semi-definite, otherwise (every entry ``≥ 0``) ``d`` rows of eigenvalues; prefix
``eig:`` to force rows.

**Dimension.** ``identity``, ``power_law`` and ``hard`` need ``d``; ``eig:`` and files fix it. ``d`` is
inferred where a spectrum fixes it; conflicting dimensions, or none at all, are a ``ValueError``.

**New families.** One function and one line, and the family works everywhere (SweepSpec, the CLI's
``--spectrum``, the sweep Dataset, where each parameter becomes a coordinate on ``spectrum``)::

    def spiked(d, spike, width):              # -> eigenvalues [d] (or a [d, d] matrix, or a Covariance)
        lam = np.ones(d); lam[: int(width)] = spike
        return lam

    register_family("spiked", spiked, params=("spike", "width"), defaults={"width": 1})
    SweepSpec(d=10, spectra="spiked:spike=1:10:5", ...)

``build(d, **params)`` gets every parameter as a float (defaults filled in; a default may be a
function of ``d``) and returns eigenvalues ``[d]``, a ``[d, d]`` matrix or a Covariance, or a pair
``(value, {"name": number})`` whose dict adds derived coordinates (``hard`` adds its solved ``alpha``).

:func:`parse_spectra` returns a :class:`SpectrumGrid`. Covariances are float64 NumPy arrays (exact in
JSON). This module imports only NumPy at import time (JAX when a spectrum is built).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
from typing import Any, Callable, Mapping, Optional

import numpy as np

#: Text forms, quoted in every parse error.
SYNTAX = ("identity | power_law:alpha=A[,trace=T] | hard:H=H[,trace=T] | eig:λ1,λ2,... | a .npy/.txt/.csv/.json "
          "file of eigenvalues [d] or [S, d] or matrices [d, d] or [S, d, d]; a parameter may be a grid a:b:N "
          "(linspace) or a list [a,b,c]")
FILE_SUFFIXES = (".npy", ".txt", ".csv", ".json")
#: Names a family parameter may not take: they are dims, coordinates or variables of the sweep Dataset.
RESERVED = frozenset({
    "spectrum", "n", "m", "k", "d", "hardness", "spectrum_label", "spectrum_family", "mean", "stderr", "median",
    "limit_error", "one_step_error", "cor35_bound", "scaling_law_error", "one_step_error_bound", "overthinking_term", "best_k", "turns_up",
    "spectral_radius",
})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclasses.dataclass(frozen=True)
class Family:
    """A registered spectrum family: ``build(d, **params)`` with numeric ``params`` (see :func:`register_family`)."""

    name: str
    build: Callable
    params: tuple
    defaults: Mapping[str, Any]
    fixes_d: bool = False
    doc: str = ""

    def signature(self) -> str:
        """``name:p1=P1[,p2=P2]`` for messages."""
        req = [f"{p}={p.upper()}" for p in self.params if p not in self.defaults]
        opt = [f"{p}={p.upper()}" for p in self.params if p in self.defaults]
        if not req and not opt:
            return self.name
        if not req:
            return f"{self.name}[:{','.join(opt)}]"
        return f"{self.name}:{','.join(req)}" + "".join(f"[,{o}]" for o in opt)


#: The registry: family name -> :class:`Family`.
FAMILIES: dict[str, Family] = {}


def register_family(name: str, build: Callable, params=(), defaults: Optional[Mapping[str, Any]] = None,
                    fixes_d: bool = False, doc: str = "", replace: bool = False) -> Family:
    """Register a spectrum family usable as ``name:p=value,...`` everywhere a spectrum is accepted.

    ``build(d, **params)`` → eigenvalues ``[d]`` (float, ``≥ 0``), a symmetric PSD ``[d, d]`` matrix, a
    :class:`~ttscale.spectra.Covariance`, or ``(value, {"coord": number, ...})`` adding derived
    coordinates. ``params``: parameter names in order (the first may be given positionally,
    ``name:VALUE``); each becomes a coordinate of the sweep Dataset. ``defaults``: values of optional
    parameters, numbers or functions of ``d``. ``fixes_d``: the family decides ``d`` itself (``build``
    gets ``d=None`` when none is given; the length of what it returns is ``d``). Re-registering a
    name with another function needs ``replace=True``.
    """
    if not isinstance(name, str) or not _NAME.match(name) or name in ("eig", "aligned"):
        raise ValueError(f"name must be an identifier other than 'eig' and 'aligned', got {name!r}")
    if not callable(build):
        raise TypeError(f"build must be callable, got {type(build).__name__}")
    if isinstance(params, str):
        params = (params,)
    params = tuple(params)
    for p in params:
        if not isinstance(p, str) or not _NAME.match(p):
            raise ValueError(f"params must be identifiers, got {p!r}")
        if p in RESERVED:
            raise ValueError(f"params: {p!r} is a name of the sweep Dataset (reserved: {', '.join(sorted(RESERVED))})")
    if len(set(params)) != len(params):
        raise ValueError(f"params must be distinct, got {params}")
    defaults = dict(defaults or {})
    for key in defaults:
        if key not in params:
            raise ValueError(f"defaults: {key!r} is not one of params {params}")
    old = FAMILIES.get(name)
    if old is not None and old.build is not build and not replace:
        raise ValueError(f"a family {name!r} is already registered; pass replace=True to replace it")
    family = Family(name, build, params, defaults, bool(fixes_d), doc)
    FAMILIES[name] = family
    return family


def unregister_family(name: str) -> None:
    """Remove a registered family (e.g. one a test registered)."""
    FAMILIES.pop(name, None)


# ============================================================================ built-in families
def _identity(d):
    return np.ones(d)


def _power_law(d, alpha, trace):
    from ttscale import spectra

    return spectra.power_law_eigenvalues(d, alpha, trace)


def _hard(d, H, trace):
    alpha = hard_alpha(d, H)
    return _power_law(d, alpha, trace), {"alpha": alpha}


def hard_alpha(d: int, H: float) -> float:
    """The power-law exponent ``α ≥ 0`` whose spectrum ``λ_i ∝ i^{-α}`` has ``Hard(Λ) = tr Λ / λ_min = H``.

    ``Hard(α) = Σ_j (d/j)^α`` (independent of the trace) rises strictly from ``d`` at ``α = 0``, so
    ``H ≥ d`` is required and the root is unique; it lies in ``[log(H/d)/log d, log H/log d]``
    (``d^α ≤ Hard ≤ d^{α+1}``) and is found by Brent's method in float64 on ``log Hard``
    of the eigenvalues of :func:`ttscale.spectra.power_law_eigenvalues`.
    """
    from scipy.optimize import brentq

    from ttscale import spectra

    H = float(H)
    if not math.isfinite(H):
        raise ValueError(f"H must be a finite hardness >= d = {d}, got {H}")
    if d == 1:
        if H != 1.0:
            raise ValueError(f"H must be 1 for d = 1 (every 1-d spectrum has Hard = 1), got {H:g}")
        return 0.0
    if H < d:
        raise ValueError(f"H must be >= d = {d}: Hard(Λ) = tr Λ / λ_min >= d, with equality only for Λ ∝ I; got {H:g}")
    if H == d:
        return 0.0

    def log_hard(alpha):
        lam = spectra.power_law_eigenvalues(d, alpha)
        return math.log(np.sum(lam) / np.min(lam)) - math.log(H)  # Hard(Λ) = tr Λ / λ_min

    lo, hi = math.log(H / d) / math.log(d), math.log(H) / math.log(d)
    if log_hard(lo) >= 0:
        return lo
    if log_hard(hi) <= 0:
        return hi
    return float(brentq(log_hard, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200))


register_family("identity", _identity, (), doc="Λ = I_d (Hard = d)")
register_family("power_law", _power_law, ("alpha", "trace"), {"trace": lambda d: float(d)},
                doc="λ_i ∝ i^{-alpha}, tr Λ = trace (default d)")
register_family("hard", _hard, ("H", "trace"), {"trace": lambda d: float(d)},
                doc="the power law with Hard(Λ) = H (H >= d; its alpha is solved), tr Λ = trace (default d)")


# ============================================================================ the grid
@dataclasses.dataclass(frozen=True, eq=False)
class SpectrumGrid:
    """``S`` spectra of one dimension ``d``, what :func:`parse_spectra` returns.

    * ``covariances`` — tuple of ``S`` :class:`~ttscale.spectra.Covariance` (eigenvalues ``[d]``,
      basis ``[d, d]`` or ``None``; float64 NumPy).
    * ``labels`` — canonical text of each spectrum (``power_law:alpha=0.5``, ``eig:3,2,1``, a file
      name, ``file.txt[2]`` for row 2 of a stack, ``explicit[i]`` for an object given in the API).
    * ``family`` — the family of each (``identity``, ``power_law``, ``hard``, ..., ``eig``, ``file``,
      ``explicit``).
    * ``coords`` — name → float64 ``[S]``: every parameter of the families present (defaults filled
      in) and derived coordinates, ``nan`` where a spectrum's family lacks it.
    """

    covariances: tuple
    d: int
    labels: tuple
    family: tuple
    coords: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.covariances)

    def stacked(self, dtype=None):
        """One batched :class:`~ttscale.spectra.Covariance` (eigenvalues ``[S, d]``) in ``dtype``
        (``float64`` needs ``jax_enable_x64``)."""
        from ttscale import spectra

        return spectra.stack(self.covariances, dtype)

    def hardness(self) -> np.ndarray:
        """``Hard(Λ_s) = tr Λ_s / λ_min(Λ_s)`` per spectrum, float64 ``[S]`` (``inf`` when singular)."""
        from ttscale import spectra

        with _x64():
            return np.asarray(spectra.hardness(self.stacked(np.float64)), np.float64)

    def to_json(self) -> list:
        """JSON-ready list: the label of each spectrum of a registered family (rebuilt by parsing it),
        ``{"label", "family", "eigenvalues", "basis"}`` (float64) for files, inline lists and objects."""
        from ttscale import spectra

        out = []
        for cov, label, fam in zip(self.covariances, self.labels, self.family):
            if fam in FAMILIES:
                out.append(label)
            else:
                out.append(dict(spectra.to_json(cov), label=label, family=fam))
        return out

    @classmethod
    def from_json(cls, obj, d: Optional[int] = None) -> "SpectrumGrid":
        """Inverse of :meth:`to_json` (families named in it must be registered)."""
        from ttscale import spectra

        items = []
        for entry in obj:
            if isinstance(entry, str):
                items.append(entry)
            else:
                items.append(_Given(spectra.from_json(entry), entry.get("label", "explicit"), entry.get("family", "explicit")))
        return parse_spectra(items, d=d)

    def __eq__(self, other):
        return isinstance(other, SpectrumGrid) and json.dumps(self.to_json()) == json.dumps(other.to_json())

    def __hash__(self):
        return hash(json.dumps(self.to_json()))

    def __repr__(self):
        shown = ", ".join(self.labels[:4]) + (", ..." if len(self) > 4 else "")
        return f"SpectrumGrid(d={self.d}, S={len(self)}: {shown})"


@dataclasses.dataclass(frozen=True)
class _Item:
    cov: Any
    label: str
    family: str
    coords: dict


@dataclasses.dataclass(frozen=True)
class _Given:
    """A covariance given as an object, with the label and family it carries (from JSON)."""

    cov: Any
    label: str
    family: str


def _x64():
    import jax

    return jax.enable_x64(True)


def fmt(x: float) -> str:
    """Shortest text that reads back as the same float64: ``1`` for 1.0, ``0.5``, ``0.13333333333333333``."""
    x = float(x)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


# ----------------------------------------------------------------------------- values and arrays
def _covariance(where: str, value):
    """A float64 NumPy :class:`~ttscale.spectra.Covariance` from a Covariance, eigenvalues ``[d]`` or a matrix ``[d, d]``."""
    from ttscale import spectra

    with _x64():
        try:
            if isinstance(value, spectra.Covariance):
                cov = spectra.check_covariance("cov", value)
            else:
                arr = _real_array(None, value)
                if arr.ndim == 1:
                    cov = spectra.from_eigenvalues(arr)
                elif arr.ndim == 2:
                    cov = spectra.from_matrix(arr)
                else:
                    raise ValueError(f"expected eigenvalues [d] or a matrix [d, d], got shape {arr.shape}")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        eig = np.asarray(cov.eigenvalues, np.float64)
        if eig.ndim != 1:
            raise ValueError(f"{where}: expected one covariance (eigenvalues [d]), got shape {eig.shape}")
        basis = None if cov.basis is None else np.asarray(cov.basis, np.float64)
    return spectra.Covariance(eig, basis)


def _real_array(where, value) -> np.ndarray:
    """``value`` as a float64 array; complex or non-numeric input is a ``ValueError`` (prefixed ``where: ``)."""
    arr = np.asarray(value)
    prefix = f"{where}: " if where else ""
    if arr.dtype.kind == "c":
        raise ValueError(f"{prefix}holds complex numbers (dtype {arr.dtype}); a covariance must be real")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{prefix}must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _is_psd_matrix(arr: np.ndarray) -> bool:
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or not np.all(np.isfinite(arr)):
        return False
    scale = max(float(np.max(np.abs(arr))), 1e-300)
    tol = 100 * np.finfo(np.float64).eps * scale * arr.shape[0]
    if float(np.max(np.abs(arr - arr.T))) > tol:
        return False
    return float(np.min(np.linalg.eigvalsh((arr + arr.T) / 2))) >= -tol


def _from_array(where: str, arr, rows: bool = False) -> list:
    """Covariances from an array: ``[d]`` eigenvalues; ``[1, d]``/``[d, 1]`` eigenvalues; ``[d, d]`` a matrix if
    symmetric PSD (unless ``rows``), else eigenvalue rows; ``[S, d]`` rows; ``[S, d, d]`` matrices."""
    arr = _real_array(where, arr)
    if arr.size == 0:
        raise ValueError(f"{where}: is empty; expected eigenvalues [d] or [S, d], or matrices [d, d] or [S, d, d]")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: has non-finite entries (nan or inf)")
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim == 1:
        return [_covariance(where, arr)]
    if arr.ndim == 2:
        if not rows and _is_psd_matrix(arr):
            return [_covariance(where, arr)]
        if np.all(arr >= 0):
            return [_covariance(f"{where}[{i}]", row) for i, row in enumerate(arr)]
        square = arr.shape[0] == arr.shape[1]
        raise ValueError(
            f"{where}: a {'square' if square else ''} [{arr.shape[0]}, {arr.shape[1]}] array must be "
            f"{'a symmetric positive semi-definite matrix or ' if square and not rows else ''}rows of non-negative "
            f"eigenvalues (one spectrum per row); it has a negative entry {float(arr.min()):.4g}"
            f"{' and is not a symmetric PSD matrix' if square and not rows else ''}")
    if arr.ndim == 3 and not rows:
        if arr.shape[1] != arr.shape[2]:
            raise ValueError(f"{where}: a 3-d array must be matrices [S, d, d], got shape {arr.shape}")
        return [_covariance(f"{where}[{i}]", mat) for i, mat in enumerate(arr)]
    raise ValueError(f"{where}: expected eigenvalues [d] or [S, d]{'' if rows else ', or matrices [d, d] or [S, d, d]'}, "
                     f"got shape {arr.shape}")


def read_array(where: str, path: str) -> np.ndarray:
    """The numbers in a ``.npy`` (no pickles), ``.txt``/``.csv`` (``np.loadtxt``, comma or whitespace) or ``.json`` file."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FILE_SUFFIXES:
        raise ValueError(f"{where} {path}: unknown file type {ext!r} (use .npy, .txt, .csv or .json)")
    if os.path.isdir(path):
        raise ValueError(f"{where} {path}: is a directory, not a file")
    if not os.path.exists(path):
        raise ValueError(f"{where} {path}: no such file")
    try:
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
            if not isinstance(arr, np.ndarray):
                raise ValueError("not a single array")
        elif ext == ".json":
            with open(path) as fh:
                arr = np.asarray(json.load(fh))
        else:
            with open(path) as fh:
                text = fh.read()
            body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
            arr = np.loadtxt(path, delimiter="," if "," in body else None, ndmin=1)
    except (OSError, ValueError, EOFError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where} {path}: not a readable {ext} file of numbers ({exc})") from None
    return arr


# ----------------------------------------------------------------------------- text
def _split_options(text: str) -> list:
    """Split on commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [o.strip() for o in out]


def _number(where: str, text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number (a value is a number, a grid a:b:N or a list [a,b,c])") from None
    if not math.isfinite(x):
        raise ValueError(f"{where}: {text!r} must be finite")
    return x


def parse_values(where: str, text: str) -> tuple:
    """``"1"`` → ``(1.0,)``; ``"a:b:N"`` → ``linspace(a, b, N)``; ``"[a,b,c]"`` → ``(a, b, c)``."""
    text = text.strip()
    if not text:
        raise ValueError(f"{where}: missing value (a number, a grid a:b:N or a list [a,b,c])")
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError(f"{where}: a list is [a,b,c], got {text!r}")
        items = [t.strip() for t in text[1:-1].split(",") if t.strip()]
        if not items:
            raise ValueError(f"{where}: the list {text!r} is empty")
        return tuple(_number(where, t) for t in items)
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"{where}: a grid is start:stop:count, got {text!r}")
        start, stop = _number(where, parts[0]), _number(where, parts[1])
        try:
            count = int(parts[2])
        except ValueError:
            raise ValueError(f"{where}: a grid is start:stop:count with an integer count, got {text!r}") from None
        if count < 1:
            raise ValueError(f"{where}: the count of a grid must be >= 1, got {count}")
        return tuple(float(v) for v in np.linspace(start, stop, count))
    return (_number(where, text),)


def _looks_like_file(text: str) -> bool:
    return text.lower().endswith(FILE_SUFFIXES) or os.path.sep in text or os.path.isfile(text)


def _family_grid(where: str, family: Family, body: Optional[str]) -> list:
    """``[{param: value}]`` (the Cartesian product of the grids, written values only)."""
    given: dict = {}
    if body is not None and body.strip():
        for i, opt in enumerate(_split_options(body)):
            if not opt:
                raise ValueError(f"{where}: empty option (options are separated by single commas; "
                                 f"a list of values is in brackets, e.g. {family.name}:{(family.params or ('x',))[0]}=[0,1])")
            if "=" in opt:
                key, value = (s.strip() for s in opt.split("=", 1))
            elif i == 0 and family.params:
                key, value = family.params[0], opt
            else:
                raise ValueError(f"{where}: {opt!r} needs a name (write key=value; only the first parameter may be "
                                 f"positional; a list of values is in brackets [a,b,c]); expected {family.signature()}")
            if key not in family.params:
                have = ", ".join(family.params) if family.params else "none"
                raise ValueError(f"{where}: {family.name} has no parameter {key!r} (parameters: {have}); "
                                 f"expected {family.signature()}")
            if key in given:
                raise ValueError(f"{where}: parameter {key!r} is given twice")
            given[key] = parse_values(f"{where}: {key}", value)
    missing = [p for p in family.params if p not in given and p not in family.defaults]
    if missing:
        raise ValueError(f"{where}: {family.name} needs {', '.join(missing)}; expected {family.signature()}")
    keys = [p for p in family.params if p in given]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(given[k] for k in keys))]


def _build(where: str, family: Family, d: Optional[int], values: dict) -> _Item:
    full = {}
    for p in family.params:
        if p in values:
            full[p] = float(values[p])
        else:
            default = family.defaults[p]
            full[p] = float(default(d) if callable(default) else default)
    label_parts = []
    for p in family.params:
        default = family.defaults.get(p, None)
        if p in family.defaults:
            dv = default(d) if callable(default) else default
            if dv is not None and float(dv) == full[p]:
                continue
        label_parts.append(f"{p}={fmt(full[p])}")
    label = family.name + (":" + ",".join(label_parts) if label_parts else "")
    try:
        out = family.build(d, **full)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: {label}: {exc}") from None
    extra = {}
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping):
        out, extra = out
    cov = _covariance(f"{where}: {label}", out)
    if d is not None and cov.d != d:
        raise ValueError(f"{where}: {label} built a spectrum of dimension {cov.d}, expected d={d}")
    coords = dict(full)
    coords.update({k: float(v) for k, v in extra.items()})
    return _Item(cov, label, family.name, coords)


def _describe(d_name: str, d) -> str:
    return f"{d_name} {d}" if d_name.startswith("--") else f"{d_name}={d}"


def parse_spectra(texts, d: Optional[int] = None, name: str = "spectra", default_d: Optional[int] = None,
                  d_name: str = "d") -> SpectrumGrid:
    """Parse one or several spectra (the syntax in this module's docstring) into a :class:`SpectrumGrid`.

    ``texts``: a string, a :class:`~ttscale.spectra.Covariance` (eigenvalues ``[d]`` or a stack
    ``[S, d]``), an array (the file rules), a :class:`SpectrumGrid`, or a list of these; they
    concatenate. ``d``: the dimension, checked against every spectrum that fixes it; inferred from
    those when ``None``; ``default_d`` is used when nothing fixes it (else a ``ValueError``).
    ``name`` starts every error message (``"--spectrum"`` on the command line); ``d_name`` names ``d``
    in them. Errors are ``ValueError``\\ s that say what was expected.
    """
    from ttscale import spectra

    if isinstance(texts, (str, SpectrumGrid, spectra.Covariance, _Given)) or isinstance(texts, np.ndarray) or (
            hasattr(texts, "shape") and hasattr(texts, "dtype")):
        texts = [texts]
    elif isinstance(texts, (list, tuple)):
        texts = list(texts)
        if texts and all(isinstance(t, (int, float, np.number)) and not isinstance(t, bool) for t in texts):
            raise TypeError(f"{name}: a flat list of numbers is ambiguous; give eigenvalues as an array "
                            f"(np.array([...])), a Covariance, or the text 'eig:{','.join(fmt(t) for t in texts)}'")
    else:
        raise TypeError(f"{name} must be a string ({SYNTAX}), a Covariance, an array, a SpectrumGrid or a list of "
                        f"these; got {type(texts).__name__}")
    if not texts:
        raise ValueError(f"{name} must give at least one spectrum ({SYNTAX})")
    d = None if d is None else _static_d(d_name, d)
    default_d = None if default_d is None else _static_d("default_d", default_d)

    # pass 1: what fixes d is built now; registry families that need d wait
    slots: list = []  # each: list of _Item, or (where, family, values) deferred
    for pos, t in enumerate(texts):
        where = name if len(texts) == 1 else f"{name}[{pos}]"
        if isinstance(t, SpectrumGrid):
            slots.append([_Item(c, lab, fam, {k: float(v[i]) for k, v in t.coords.items() if not np.isnan(v[i])})
                          for i, (c, lab, fam) in enumerate(zip(t.covariances, t.labels, t.family))])
        elif isinstance(t, _Given):
            slots.append([_Item(_covariance(f"{where}: {t.label}", t.cov), t.label, t.family, {})])
        elif isinstance(t, spectra.Covariance):
            if np.ndim(t.eigenvalues) == 2:
                slots.append([_Item(_covariance(f"{where}[{i}]", c), f"explicit[{pos}][{i}]", "explicit", {})
                              for i, c in enumerate(spectra.unstack(t))])
            else:
                slots.append([_Item(_covariance(where, t), f"explicit[{pos}]", "explicit", {})])
        elif isinstance(t, str):
            slots.extend(_parse_text(where, t.strip(), d))
        elif isinstance(t, (np.ndarray, list, tuple)) or (hasattr(t, "shape") and hasattr(t, "dtype")):
            covs = _from_array(where, np.asarray(t))
            lab = f"explicit[{pos}]"
            slots.append([_Item(c, lab if len(covs) == 1 else f"{lab}[{i}]", "explicit", {}) for i, c in enumerate(covs)])
        else:
            raise TypeError(f"{where} must be a string ({SYNTAX}), a Covariance or an array, got {type(t).__name__}")

    fixed = {}
    for slot in slots:
        if isinstance(slot, list):
            for item in slot:
                fixed.setdefault(item.cov.d, item.label)
    if len(fixed) > 1 or (d is not None and fixed and set(fixed) != {d}):
        parts = [f"{lab} has d={dd}" for dd, lab in fixed.items()]
        if d is not None:
            parts.append(f"{_describe(d_name, d)} was given")
        raise ValueError(f"{name}: the spectra disagree on the dimension: {'; '.join(parts)}")
    if d is None:
        d = next(iter(fixed)) if fixed else default_d
    if d is None:
        needs = [f"{slot[1].name}" for slot in slots if not isinstance(slot, list)]
        raise ValueError(f"{name}: the dimension d is not fixed by {', '.join(dict.fromkeys(needs))}; give "
                         f"{d_name} (on the command line --d) or a spectrum that fixes it (eig:λ1,..., or a file)")
    items = []
    for slot in slots:
        if isinstance(slot, list):
            items.extend(slot)
        else:
            where, family, values = slot
            items.append(_build(where, family, d, values))
    return _grid(items, d)


def _static_d(name: str, d) -> int:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(d).__name__}")
    if d < 1:
        raise ValueError(f"{name} must be >= 1, got {d}")
    return int(d)


def _parse_text(where: str, text: str, d: Optional[int]) -> list:
    """Slots of one text: built items (files, eig:, d-fixing families) or deferred (where, family, values)."""
    if not text:
        raise ValueError(f"{where}: empty spectrum; expected {SYNTAX}")
    head, sep, body = text.partition(":")
    head = head.strip()
    if head == "eig" and sep:
        body = body.strip()
        if _looks_like_file(body):
            covs = _from_array(f"{where} {body}", read_array(where, body), rows=True)
            return [[_Item(c, f"eig:{body}" if len(covs) == 1 else f"eig:{body}[{i}]", "file", {})
                     for i, c in enumerate(covs)]]
        values = [_number(f"{where}: eig", v) for v in body.split(",") if v.strip()] if body else []
        if not values:
            raise ValueError(f"{where}: eig needs eigenvalues, e.g. eig:3,2,1 (or eig:FILE for eigenvalue rows)")
        cov = _covariance(f"{where}", np.asarray(values))
        return [[_Item(cov, "eig:" + ",".join(fmt(v) for v in values), "eig", {})]]
    family = FAMILIES.get(head)
    if family is not None and not (_looks_like_file(text) and os.path.isfile(text)):
        grid = _family_grid(where, family, body if sep else None)
        if family.fixes_d:
            return [[_build(where, family, d, values) for values in grid]]
        return [(where, family, values) for values in grid]
    if _looks_like_file(text):
        covs = _from_array(f"{where} {text}", read_array(where, text))
        return [[_Item(c, text if len(covs) == 1 else f"{text}[{i}]", "file", {}) for i, c in enumerate(covs)]]
    known = ", ".join(f.signature() for f in FAMILIES.values())
    raise ValueError(f"{where}: {text!r} is neither a spectrum family ({known}, eig:λ1,λ2,...) nor a .npy/.txt/.csv/.json "
                     f"file; expected {SYNTAX}")


def _grid(items: list, d: int) -> SpectrumGrid:
    names: list = []
    for item in items:
        fam = FAMILIES.get(item.family)
        for key in (fam.params if fam is not None else ()):
            if key not in names:
                names.append(key)
        for key in item.coords:
            if key not in names:
                names.append(key)
    coords = {key: np.asarray([item.coords.get(key, np.nan) for item in items], np.float64) for key in names}
    return SpectrumGrid(tuple(i.cov for i in items), d, tuple(i.label for i in items), tuple(i.family for i in items),
                        coords)


def one_spectrum(text, d: Optional[int] = None, name: str = "spectrum", **kw):
    """:func:`parse_spectra` of exactly one spectrum; returns its :class:`~ttscale.spectra.Covariance` (float64 NumPy)."""
    grid = parse_spectra(text, d=d, name=name, **kw)
    if len(grid) != 1:
        raise ValueError(f"{name}: expected one spectrum, got {len(grid)} ({', '.join(grid.labels[:4])}"
                         f"{', ...' if len(grid) > 4 else ''})")
    return grid.covariances[0]
