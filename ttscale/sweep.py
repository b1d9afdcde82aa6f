"""Sweep engine: CoT error over a grid of spectra × training lengths n × test lengths m × steps k.

    spec = SweepSpec(d=20, alphas=np.linspace(0, 2, 16), ns=(5, 10, 20, 40, 80), ms=(40,),
                     k_max=32, prompts=4096)
    ds = run_sweep(spec, out="sweepA.nc")        # xarray.Dataset, dims spectrum, n, m, k

For every cell (spectrum s, training length n, test length m) the engine draws ``prompts``
test prompts ``X = Σ_s^{1/2} Z`` (``Z`` standard normal ``[d, m]``), ``w ~ N(0, I_d)``,
``y = Xᵀw + σ ε`` and runs k = 0..k_max CoT steps from ``ŵ_0 = 0`` with the learned
preconditioner ``P = Γ(Λ_s, n)⁻¹`` (``model="pseudo_newton"``), the literal LSA forward with
the Theorem 3.1 optimum (``model="lsa"``) or given trained parameters (``model="trained"``).
The Dataset holds the mean, standard error and median of ``||ŵ_k − w||²`` over prompts and
the closed forms of :mod:`ttscale.theory` on the same grid (names: ``docs`` of
:func:`run_sweep`).

How the work is organised (all of it is exact; none of it changes the numbers):

* **Sufficient statistics.** Every path needs a prompt only through
  ``S_Z = Z Zᵀ/m``, ``g = Z ε/m``, ``εᵀε/m`` and ``w``: with ``A = U diag(√λ)`` (so ``X = A Z``)
  ``S_m = A S_Z Aᵀ`` and ``X y/m = A (S_Z Aᵀ w + σ g)``. Pseudo-Newton iterates the error
  ``e_{k+1} = e_k − P (S_m e_k − σ A g)``, ``e_0 = −w`` (``S_m`` applied as ``A (S_Z (Aᵀ e))``,
  never formed per cell). The LSA path uses the exact low-rank form of the Gram-matrix
  recursion (:func:`lsa_errors_from_stats`), equal to :func:`ttscale.cot.lsa_errors`.
* **Randomness.** Prompt ``p`` of cell ``(s, i_n, i_m)`` uses the key
  ``fold_in(fold_in(fold_in(fold_in(key(seed), i_m), s), i_n), p)`` and
  one normal vector per prompt (:func:`prompt_stats`); so results do not depend on the
  chunk size, the number or order of devices, or the order in which cells run. With
  ``common_random_numbers=True`` the key is ``fold_in(fold_in(key(seed), i_m), p)``: every
  spectrum and every ``n`` of one ``m`` sees the *same* base normals, transformed by its own
  ``Σ^{1/2}`` (and ``S_Z`` is computed once per prompt, shared by all cells). Each cell's
  marginal distribution, mean and standard error are unchanged, but cells become positively
  correlated: *differences* between cells (n vs n, α vs α, smooth curves along a grid axis)
  have far smaller variance, while the cells are no longer independent samples (do not pool
  them as if they were). ``m = ∞`` draws only ``w`` (``S_m = Σ`` exactly, ``σ g → 0``).
* **Compilation.** One ``jax.jit`` program per test length ``m`` (a shape), taking the
  prompt indices of a chunk, the seed and the per-cell covariances / preconditioners /
  parameters as traced arguments: every chunk and every cell of that shape reuses it.
  Within a chunk, cells are ``vmap``-ed in groups (``lax.map`` with a ``batch_size`` chosen
  so the peak memory stays ∝ the chunk size).
* **Devices.** The prompt axis of a chunk is sharded over every device
  (``Mesh`` + ``NamedSharding``; multi-host after ``jax.distributed.initialize()``, where the
  mesh spans all processes' devices and process 0 writes the files).
* **Resumption.** With ``out`` each finished chunk is saved atomically (see
  :mod:`ttscale.store`); the median needs every per-prompt error of a cell, so those are kept
  (host memory ``spectra · n · prompts · (k_max+1)`` floats per ``m``, on disk when ``out`` is
  given); mean and standard error are exact sums over the same array.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import _checks
from ttscale import lsa as lsa_mod
from ttscale import spectra as spectra_mod
from ttscale.spectra import Covariance

FAMILIES = ("power_law", "explicit")
TESTS = ("aligned", "identity")
MODELS = ("pseudo_newton", "lsa", "trained")
DTYPES = ("float32", "float64")
_MEMORY_BUDGET = 128 * 2**20  # bytes of per-cell working memory per chunk (sets the cell group size)

#: Number of times a chunk program has been traced (a test asserts it does not grow per chunk).
TRACE_COUNT = 0


# ============================================================================ the spec
def _float_tuple(name: str, values, *, allow_inf: bool = False, minimum=None, integer=False) -> tuple:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got a string {values!r}")
    if isinstance(values, numbers.Number) or (hasattr(values, "ndim") and np.ndim(values) == 0):
        values = [values]
    try:
        out = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.floating, np.integer)) and not (
                hasattr(v, "ndim") and np.ndim(v) == 0
            ):
                raise TypeError(f"{name} must contain numbers, got {type(v).__name__} {v!r}")
            out.append(float(v))
    except TypeError as exc:
        if str(exc).startswith(name):
            raise
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from None
    if not out:
        raise ValueError(f"{name} must not be empty")
    for v in out:
        if math.isnan(v):
            raise ValueError(f"{name} must not contain nan")
        if math.isinf(v) and not (allow_inf and v > 0):
            raise ValueError(f"{name} must be finite{' (or +inf)' if allow_inf else ''}, got {v}")
        if minimum is not None and v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {v:g}")
        if integer and math.isfinite(v) and not float(v).is_integer():
            raise ValueError(f"{name} must hold whole numbers (prompt lengths), got {v:g}")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not contain duplicates, got {out}")
    return tuple(out)


def _scalar_float(name: str, value, minimum=None) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _numpy_cov(name: str, value, d: int) -> Covariance:
    cov = spectra_mod.as_covariance(name, value, d)
    eig = np.asarray(cov.eigenvalues, dtype=np.float64)
    basis = None if cov.basis is None else np.asarray(cov.basis, dtype=np.float64)
    if eig.ndim != 1:
        raise ValueError(f"{name} must be one covariance with eigenvalues [d], got shape {eig.shape}")
    return Covariance(eig, basis)


def _cov_json(cov: Covariance) -> dict:
    return {
        "eigenvalues": np.asarray(cov.eigenvalues, np.float64).tolist(),
        "basis": None if cov.basis is None else np.asarray(cov.basis, np.float64).tolist(),
    }


def _cov_from_json(obj) -> Covariance:
    basis = obj.get("basis")
    return Covariance(np.asarray(obj["eigenvalues"], np.float64), None if basis is None else np.asarray(basis, np.float64))


@dataclasses.dataclass(frozen=True, eq=False)
class SweepSpec:
    """A sweep: training spectra × training lengths ``ns`` × test lengths ``ms`` × steps ``k = 0..k_max``.

    Fields (all validated on construction; bad input raises ``ValueError``/``TypeError``
    naming the field before any compute starts):

    * ``d`` — feature dimension.
    * ``family`` — ``"power_law"`` (training spectra ``λ_i ∝ i^{-α}``, ``tr Λ = trace`` (default
      ``d``), one per entry of ``alphas``) or ``"explicit"`` (``covariances``: a list of
      :class:`~ttscale.spectra.Covariance` or dense ``[d, d]`` matrices).
    * ``test`` — the test covariance ``Σ`` per spectrum: ``"aligned"`` (``Σ = Λ``),
      ``"identity"`` (``Σ = I``), one covariance for every spectrum, or a list of one per spectrum.
    * ``ns`` — training prompt lengths (``≥ 1``, ``inf`` allowed); ``ms`` — test prompt lengths
      (whole numbers ``≥ 1`` or ``inf``).
    * ``k_max`` (``≥ 0``), ``prompts`` per cell (``≥ 2``), ``chunk`` prompts per compiled call.
    * ``noise`` — label-noise standard deviation ``σ``.
    * ``model`` — ``"pseudo_newton"`` (``P = Γ⁻¹``), ``"lsa"`` (literal LSA forward with the
      Theorem 3.1 optimum, scale ``c``) or ``"trained"`` (literal LSA with ``params``: an
      :class:`~ttscale.lsa.LSAParams` of ``[D, D]`` or ``[spectra, len(ns), D, D]`` arrays).
    * ``seed``, ``dtype`` (``"float32"``/``"float64"``), ``common_random_numbers``.

    The PRNG is threefry (``jax.random.key``): ``"rbg"``/``"unsafe_rbg"`` were measured slower
    on CPU here and their bits change under ``vmap``, which would break the chunk-size and
    device-count invariance.
    """

    d: int = 10
    family: str = "power_law"
    alphas: Sequence[float] = (0.0,)
    covariances: Optional[Sequence[Any]] = None
    test: Any = "aligned"
    ns: Sequence[float] = (10.0,)
    ms: Sequence[float] = (200.0,)
    k_max: int = 10
    prompts: int = 4096
    chunk: int = 4096
    noise: float = 0.0
    model: str = "pseudo_newton"
    params: Optional[lsa_mod.LSAParams] = None
    c: float = 1.0
    trace: Optional[float] = None
    seed: int = 0
    dtype: str = "float32"
    common_random_numbers: bool = False

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        d = _checks.static_int("d", self.d, minimum=1)
        set_("d", d)
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.family == "power_law":
            set_("alphas", _float_tuple("alphas", self.alphas))
            if self.covariances is not None:
                raise ValueError('covariances is only used with family="explicit"; leave it None for "power_law"')
            if self.trace is not None:
                set_("trace", _scalar_float("trace", self.trace))
                if self.trace <= 0:
                    raise ValueError(f"trace must be > 0, got {self.trace}")
        else:
            if self.covariances is None or isinstance(self.covariances, (str, bytes, Covariance)):
                raise ValueError('family="explicit" needs covariances: a non-empty list of Covariance or [d, d] matrices')
            covs = tuple(_numpy_cov(f"covariances[{i}]", c, d) for i, c in enumerate(self.covariances))
            if not covs:
                raise ValueError("covariances must not be empty")
            set_("covariances", covs)
            set_("alphas", ())
            if self.trace is not None:
                raise ValueError('trace is only used with family="power_law"')
        n_spectra = len(self.alphas) if self.family == "power_law" else len(self.covariances)
        if isinstance(self.test, str):
            if self.test not in TESTS:
                raise ValueError(f"test must be one of {TESTS}, a Covariance or a list of them, got {self.test!r}")
        elif isinstance(self.test, (list, tuple)) and self.test and not isinstance(self.test[0], numbers.Number) and (
            isinstance(self.test[0], Covariance) or np.ndim(self.test[0]) == 2
        ):
            tests = tuple(_numpy_cov(f"test[{i}]", t, d) for i, t in enumerate(self.test))
            if len(tests) != n_spectra:
                raise ValueError(f"test lists {len(tests)} covariances but there are {n_spectra} spectra")
            set_("test", tests)
        else:
            set_("test", _numpy_cov("test", self.test, d))
        set_("ns", _float_tuple("ns", self.ns, allow_inf=True, minimum=1))
        set_("ms", _float_tuple("ms", self.ms, allow_inf=True, minimum=1, integer=True))
        set_("k_max", _checks.static_int("k_max", self.k_max, minimum=0))
        set_("prompts", _checks.static_int("prompts", self.prompts, minimum=2))
        set_("chunk", _checks.static_int("chunk", self.chunk, minimum=1))
        set_("noise", _scalar_float("noise", self.noise, minimum=0.0))
        set_("c", _scalar_float("c", self.c))
        if self.c == 0:
            raise ValueError("c must be non-zero (the LSA score scale)")
        seed = _checks.static_int("seed", self.seed, minimum=0)
        if seed >= 2**32:
            raise ValueError(f"seed must be < 2**32, got {seed}")
        set_("seed", seed)
        dtype = self.dtype if isinstance(self.dtype, str) else np.dtype(self.dtype).name
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        set_("dtype", dtype)
        if not isinstance(self.common_random_numbers, (bool, np.bool_)):
            raise TypeError(f"common_random_numbers must be a bool, got {type(self.common_random_numbers).__name__}")
        set_("common_random_numbers", bool(self.common_random_numbers))
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.model in ("lsa", "trained") and any(math.isinf(m) for m in self.ms):
            raise ValueError(
                f'ms contains inf, but model="{self.model}" runs the literal LSA forward, which needs a finite '
                'prompt length (ρ = m); use model="pseudo_newton" for m = inf'
            )
        if self.model == "trained":
            if not isinstance(self.params, lsa_mod.LSAParams):
                raise TypeError(f'model="trained" needs params: an LSAParams, got {type(self.params).__name__}')
            D = lsa_mod.embed_dim(d)
            W = np.asarray(self.params.W, np.float64)
            V = np.asarray(self.params.V, np.float64)
            shape = (n_spectra, len(self.ns), D, D)
            if W.shape == (D, D) and V.shape == (D, D):
                W = np.broadcast_to(W, shape).copy()
                V = np.broadcast_to(V, shape).copy()
            if W.shape != shape or V.shape != shape:
                raise ValueError(
                    f"params.W and params.V must be [{D}, {D}] or [spectra={n_spectra}, n={len(self.ns)}, {D}, {D}], "
                    f"got {W.shape} and {V.shape}"
                )
            if not (np.all(np.isfinite(W)) and np.all(np.isfinite(V))):
                raise ValueError("params has non-finite entries")
            set_("params", lsa_mod.LSAParams(W, V))
        elif self.params is not None:
            raise ValueError(f'params is only used with model="trained", got model={self.model!r}')

    # ------------------------------------------------------------------ derived
    @property
    def n_spectra(self) -> int:
        return len(self.alphas) if self.family == "power_law" else len(self.covariances)

    @property
    def jnp_dtype(self):
        return jnp.dtype(self.dtype)

    def training_covariances(self) -> Covariance:
        """Stacked training covariances ``Λ_s`` (eigenvalues ``[S, d]``) in ``dtype``."""
        if self.family == "power_law":
            alphas = np.asarray(self.alphas, np.float64)
            t = float(self.d if self.trace is None else self.trace)
            i = np.arange(1, self.d + 1, dtype=np.float64)
            raw = i[None, :] ** (-alphas[:, None])
            eig = t * raw / raw.sum(axis=1, keepdims=True)
            return Covariance(jnp.asarray(eig, self.jnp_dtype))
        return _stack(self.covariances, self.jnp_dtype)

    def test_covariances(self) -> Covariance:
        """Stacked test covariances ``Σ_s`` (one per spectrum) in ``dtype``."""
        if isinstance(self.test, str):
            if self.test == "aligned":
                return self.training_covariances()
            return Covariance(jnp.ones((self.n_spectra, self.d), self.jnp_dtype))
        if isinstance(self.test, Covariance):
            return _stack([self.test] * self.n_spectra, self.jnp_dtype)
        return _stack(self.test, self.jnp_dtype)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """JSON-ready dict of every field (arrays as nested lists)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "covariances" and v is not None:
                v = [_cov_json(c) for c in v]
            elif f.name == "test" and not isinstance(v, str):
                v = _cov_json(v) if isinstance(v, Covariance) else [_cov_json(c) for c in v]
            elif f.name == "params" and v is not None:
                v = {"W": np.asarray(v.W).tolist(), "V": np.asarray(v.V).tolist()}
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def identity(self) -> str:
        """JSON of the fields that determine the numbers (everything except ``chunk``)."""
        d = self.to_dict()
        d.pop("chunk")
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_dict(cls, obj: dict) -> "SweepSpec":
        obj = dict(obj)
        if obj.get("covariances") is not None:
            obj["covariances"] = [_cov_from_json(c) for c in obj["covariances"]]
        t = obj.get("test")
        if isinstance(t, dict):
            obj["test"] = _cov_from_json(t)
        elif isinstance(t, list):
            obj["test"] = [_cov_from_json(c) for c in t]
        if obj.get("params") is not None:
            obj["params"] = lsa_mod.LSAParams(np.asarray(obj["params"]["W"]), np.asarray(obj["params"]["V"]))
        return cls(**obj)

    @classmethod
    def from_json(cls, text: str) -> "SweepSpec":
        """Inverse of :meth:`to_json` (e.g. ``SweepSpec.from_json(ds.attrs["spec"])`` to re-run a sweep)."""
        return cls.from_dict(json.loads(text))

    def replace(self, **changes) -> "SweepSpec":
        return dataclasses.replace(self, **changes)

    def __eq__(self, other):
        return isinstance(other, SweepSpec) and self.to_json() == other.to_json()

    def __hash__(self):
        return hash(self.to_json())


def _stack(covs, dtype) -> Covariance:
    eig = jnp.asarray(np.stack([np.asarray(c.eigenvalues) for c in covs]), dtype)
    if all(c.basis is None for c in covs):
        return Covariance(eig)
    d = eig.shape[-1]
    bases = [np.eye(d) if c.basis is None else np.asarray(c.basis) for c in covs]
    return Covariance(eig, jnp.asarray(np.stack(bases), dtype))


# ============================================================================ per-cell inputs
def _numpy_covariances(covs: Covariance):
    eig = np.asarray(covs.eigenvalues, np.float64)
    basis = None if covs.basis is None else np.asarray(covs.basis, np.float64)
    return eig, basis


def preconditioners(spec: SweepSpec, float64: bool = False):
    """The preconditioner ``P [S, N, d, d]`` of every (spectrum, n) cell (computed in float64, cast to ``dtype``
    unless ``float64``, which returns the float64 NumPy array).

    ``Γ(Λ_s, n)⁻¹ = U diag(1 / ((1 + 1/n) λ + tr Λ / n)) Uᵀ`` for ``"pseudo_newton"`` and
    ``"lsa"``; for ``"trained"`` the effective ``P = −c V[ŵ, x]`` with ``c = tr W[x, ŵ] / d``
    (the pseudo-Newton map the parameters implement when they have the paper's structure;
    the closed forms use it).
    """
    d = spec.d
    if spec.model == "trained":
        b = lsa_mod.blocks(d)
        W = np.asarray(spec.params.W, np.float64)
        V = np.asarray(spec.params.V, np.float64)
        c = np.trace(W[..., b["x"], b["w"]], axis1=-2, axis2=-1) / d
        P = -c[..., None, None] * V[..., b["w"], b["x"]]
        return P if float64 else jnp.asarray(P, spec.jnp_dtype)
    eig, basis = _numpy_covariances(spec.training_covariances())
    if spec.dtype == "float32" and spec.family == "power_law":  # recompute in float64
        alphas = np.asarray(spec.alphas, np.float64)
        t = float(d if spec.trace is None else spec.trace)
        raw = np.arange(1, d + 1, dtype=np.float64)[None, :] ** (-alphas[:, None])
        eig = t * raw / raw.sum(axis=1, keepdims=True)
    ns = np.asarray(spec.ns, np.float64)
    with np.errstate(divide="ignore"):
        inv_n = np.where(np.isinf(ns), 0.0, 1.0 / ns)
    g = (1 + inv_n)[None, :, None] * eig[:, None, :] + (eig.sum(-1)[:, None, None] * inv_n[None, :, None])  # [S, N, d]
    ginv = 1.0 / g
    if basis is None:
        P = ginv[..., :, None] * np.eye(d)
    else:
        P = np.einsum("sij,snj,skj->snik", basis, ginv, basis)
    return P if float64 else jnp.asarray(P, spec.jnp_dtype)


def _cell_params(spec: SweepSpec, P) -> lsa_mod.LSAParams:
    """LSA parameters ``[S, N, D, D]`` (numpy) used by the literal LSA paths."""
    if spec.model == "trained":
        return lsa_mod.LSAParams(np.asarray(spec.params.W), np.asarray(spec.params.V))
    d = spec.d
    D = lsa_mod.embed_dim(d)
    b = lsa_mod.blocks(d)
    P = np.asarray(P, np.float64)
    W = np.zeros((D, D))
    W[b["x"], b["w"]] = spec.c * np.eye(d)
    W[b["y"], b["one"]] = -spec.c
    V = np.zeros(P.shape[:-2] + (D, D))
    V[..., b["w"], b["x"]] = -P / spec.c
    return lsa_mod.LSAParams(np.broadcast_to(W, V.shape), V)


# ============================================================================ closed forms
def _dense(eig: np.ndarray, basis) -> np.ndarray:
    if basis is None:
        return eig[..., :, None] * np.eye(eig.shape[-1])
    return np.einsum("...ij,...j,...kj->...ik", basis, eig, basis)


def _inv_sqrt_psd(M: np.ndarray) -> np.ndarray:
    eig, U = np.linalg.eigh((M + np.swapaxes(M, -1, -2)) / 2)
    return np.einsum("...ij,...j,...kj->...ik", U, 1.0 / np.sqrt(eig), U)


def closed_forms(spec: SweepSpec) -> dict[str, np.ndarray]:
    """Closed forms of :mod:`ttscale.theory` on the sweep grid, in float64 NumPy (cast later to ``dtype``).

    ``limit_error [S, N, K+1]`` (``||(I − PΣ)^k||_F²``), ``one_step_error [S, N, M]``
    (``d − 2 tr(PΣ) + tr(P E[S_m²] Pᵀ) + σ² tr(PΣPᵀ)/m``), ``cor35_bound [S, N, K+1]``
    (``d (1 + n/(1 + Hard Λ))^{-2k}``), ``overthinking_term [S, N, K+1]`` (``tr M^{2k}``,
    ``M = I − Γ^{-1/2} Σ Γ^{-1/2}``; ``Γ = sym(P)⁻¹`` for trained parameters), ``best_k [S, N]``
    (argmin over ``k = 1..k_max`` of ``limit_error``; 0 if ``k_max = 0``), ``turns_up [S, N]``
    (``best_k < k_max``: the m → ∞ error has turned up within the horizon, as
    :func:`ttscale.theory.best_k`), ``spectral_radius [S, N]`` (``max |eig(I − PΣ)|``; > 1 means
    the m → ∞ error eventually diverges) and ``hardness [S]`` of the training spectra. The same formulas as :mod:`ttscale.theory` (tests compare them),
    evaluated on the host: a few milliseconds, no compilation.
    """
    d, k_max = spec.d, spec.k_max
    lam_eig, lam_basis = _numpy_covariances(spec.training_covariances())
    if spec.family == "power_law":  # exact float64 eigenvalues whatever the dtype
        alphas = np.asarray(spec.alphas, np.float64)
        t = float(d if spec.trace is None else spec.trace)
        raw = np.arange(1, d + 1, dtype=np.float64)[None, :] ** (-alphas[:, None])
        lam_eig = t * raw / raw.sum(axis=1, keepdims=True)
    sig_eig, sig_basis = _numpy_covariances(spec.test_covariances())
    if isinstance(spec.test, str) and spec.test == "aligned":
        sig_eig, sig_basis = lam_eig, lam_basis
    P = np.asarray(preconditioners(spec, float64=True))  # [S, N, d, d]
    Sig = _dense(sig_eig, sig_basis)[:, None]  # [S, 1, d, d]
    eye = np.eye(d)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        B = eye - P @ Sig
        A = np.broadcast_to(eye, B.shape).copy()
        limit = np.empty(B.shape[:2] + (k_max + 1,))
        for k in range(k_max + 1):
            limit[..., k] = np.sum(A * A, axis=(-2, -1))
            A = B @ A
        limit = np.where(np.isnan(limit), np.inf, limit)
        ms = np.asarray(spec.ms, np.float64)
        inv_m = np.where(np.isinf(ms), 0.0, 1.0 / ms)  # [M]
        trS = np.trace(Sig, axis1=-2, axis2=-1)[..., None]  # [S, 1, 1]
        PS = P @ Sig
        tr_PS = np.trace(PS, axis1=-2, axis2=-1)[..., None]
        tr_PSSP = np.einsum("snij,snji->sn", PS @ Sig, np.swapaxes(P, -1, -2))[..., None]
        tr_PSP = np.einsum("snij,snji->sn", PS, np.swapaxes(P, -1, -2))[..., None]
        one = d - 2 * tr_PS + (1 + inv_m) * tr_PSSP + inv_m * trS * tr_PSP + spec.noise**2 * tr_PSP * inv_m
        hard = lam_eig.sum(-1) / lam_eig.min(-1)
        ns = np.asarray(spec.ns, np.float64)
        inv_n = np.where(np.isinf(ns), 0.0, 1.0 / ns)
        ks = np.arange(k_max + 1)
        r = 1.0 / (1.0 + ns[None, :] / (1.0 + hard[:, None]))  # [S, N]
        cor = d * r[..., None] ** (2 * ks)
        if spec.model == "trained":
            G = np.linalg.inv((P + np.swapaxes(P, -1, -2)) / 2)
        else:
            Lam = _dense(lam_eig, lam_basis)[:, None]
            G = (1 + inv_n)[None, :, None, None] * Lam + (lam_eig.sum(-1)[:, None] * inv_n[None, :])[..., None, None] * eye
        R = _inv_sqrt_psd(G)
        mu = np.linalg.eigvalsh(eye - R @ Sig @ R)  # [S, N, d]
        over = np.sum(mu[..., None, :] ** (2 * ks[:, None]), axis=-1)
    if k_max >= 1:
        best = np.argmin(limit[..., 1:], axis=-1) + 1
    else:
        best = np.zeros(limit.shape[:-1], dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        finite_B = np.all(np.isfinite(B), axis=(-2, -1))
        eig_B = np.linalg.eigvals(np.where(finite_B[..., None, None], B, 0.0))
        radius = np.where(finite_B, np.max(np.abs(eig_B), axis=-1), np.inf)
    return {
        "limit_error": limit,
        "one_step_error": one,
        "cor35_bound": cor,
        "overthinking_term": over,
        "best_k": best.astype(np.int64),
        "turns_up": best < k_max,
        "spectral_radius": radius,
        "hardness": hard,
    }


# ============================================================================ per-prompt kernels
def prompt_stats(key, idx, d: int, m: Optional[int], dtype, noisy: bool = True):
    """Sufficient statistics of prompts ``idx [b]`` drawn from ``key``: ``(S_Z, g, εᵀε/m, w)``.

    Prompt ``p`` draws one standard-normal vector ``u = normal(fold_in(key, p), [d·m + d + m])``
    and reads ``Z = u[:d·m].reshape(d, m)``, ``w = u[d·m : d·m + d]``, ``ε = u[d·m + d:]`` (one
    PRNG call per prompt: XLA compiles threefry slowly, and threefry bits are
    prefix-consistent, so ``noisy=False``, which skips ``ε``, leaves ``Z`` and ``w`` unchanged).
    Returns ``S_Z = Z Zᵀ/m [b, d, d]``, ``g = Z ε/m [b, d]``, ``εᵀε/m [b]`` (zeros when not
    ``noisy``), ``w [b, d]``. For ``m = None`` (``m = ∞``) only ``w = u[:d]`` is drawn and
    ``S_Z``, ``g``, ``εᵀε/m`` are ``None`` (``S_Z → I``, ``g → 0``).
    """

    def one(p):
        k = jax.random.fold_in(key, p)
        if m is None:
            return jax.random.normal(k, (d,), dtype)
        u = jax.random.normal(k, (d * m + d + (m if noisy else 0),), dtype)
        Z, w = u[: d * m].reshape(d, m), u[d * m : d * m + d]
        if noisy:
            eps = u[d * m + d :]
            g, ee = Z @ eps / m, eps @ eps / m
        else:
            g, ee = jnp.zeros((d,), dtype), jnp.zeros((), dtype)
        return Z @ Z.T / m, g, ee, w

    out = jax.vmap(one)(idx)
    if m is None:
        return None, None, None, out
    return out


@functools.partial(jax.jit, static_argnames=("m", "noise"))
def prompts_for(key, idx, cov: Covariance, m: int, noise: float = 0.0):
    """The prompts behind :func:`prompt_stats` as :class:`~ttscale.prompts.Prompts` (for checks and reuse).

    ``X = U diag(√λ) Z``, ``y = Xᵀ w + σ ε`` with the same per-prompt draws.
    """
    from ttscale.prompts import Prompts

    dtype = cov.dtype
    d = cov.d
    noisy = noise > 0

    def one(p):
        u = jax.random.normal(jax.random.fold_in(key, p), (d * m + d + (m if noisy else 0),), dtype)
        Z, w = u[: d * m].reshape(d, m), u[d * m : d * m + d]
        X = cov.apply_sqrt(Z)
        y = X.T @ w
        if noisy:
            y = y + noise * u[d * m + d :]
        return X, y, w

    X, y, w = jax.vmap(one)(jnp.asarray(idx))
    return Prompts(X, y, w)


def _apply(M, v, diag: bool, transpose: bool = False):
    """``M v`` (or ``Mᵀ v``) for ``v [b, d]``; ``M`` is a diagonal ``[d]`` or dense ``[d, d]``."""
    if diag:
        return M * v
    return jnp.einsum("ji,bj->bi" if transpose else "ij,bj->bi", M, v)


def pseudo_newton_errors_from_stats(stats, sqrt_cov, P, noise, k_max: int, diag_cov: bool, diag_P: bool):
    """Squared errors ``[b, k_max + 1]`` of pseudo-Newton CoT from prompt statistics.

    ``e_0 = −w``, ``e_{k+1} = e_k − P (A S_Z Aᵀ e_k − σ A g)``, with ``A = sqrt_cov``
    (``U diag(√λ)`` dense ``[d, d]``, or ``√λ [d]`` when ``diag_cov``) and ``P`` dense or
    diagonal. Identical in exact arithmetic to :func:`ttscale.cot.pseudo_newton_errors` on
    the prompts ``X = A Z``, ``y = Xᵀ w + σ ε``. ``nan`` is reported as ``inf``.
    The single-cell case of :func:`pseudo_newton_group_errors` (``G = 1``).
    """
    return pseudo_newton_group_errors(stats, sqrt_cov[None], P[None], noise, k_max, diag_cov, diag_P)[0]


_PROMPT_BLOCK = 8  # prompts per cache-resident block of the grouped iteration (measured: 8 beat 4096 by ~2-4x on CPU)


def pseudo_newton_group_errors(stats, sqrt_cov, P, noise, k_max: int, diag_cov: bool, diag_P: bool):
    """:func:`_group_errors_block` over blocks of ``_PROMPT_BLOCK`` prompts → ``[G, b, k_max + 1]``.

    Running all ``k_max`` steps on a small block of prompts before moving on keeps ``S_Z`` and
    the ``[block, d, G]`` state in cache (loop tiling); the arithmetic is unchanged, so the
    result equals the unblocked iteration exactly.
    """
    b = stats[3].shape[0]
    block = max(size for size in range(1, min(_PROMPT_BLOCK, b) + 1) if b % size == 0)
    if block == b:
        return _group_errors_block(stats, sqrt_cov, P, noise, k_max, diag_cov, diag_P)
    blocked = jax.tree_util.tree_map(lambda x: x.reshape((b // block, block) + x.shape[1:]), stats)
    out = jax.lax.map(lambda st: _group_errors_block(st, sqrt_cov, P, noise, k_max, diag_cov, diag_P), blocked)
    G = out.shape[1]
    return jnp.moveaxis(out, 0, 1).reshape(G, b, k_max + 1)


def _group_errors_block(stats, sqrt_cov, P, noise, k_max: int, diag_cov: bool, diag_P: bool):
    """:func:`pseudo_newton_errors_from_stats` for ``G`` cells sharing one set of prompts → ``[G, b, k_max + 1]``.

    Common random numbers: ``S_Z [b, d, d]`` is shared, so the state is laid out
    ``e [b, d, G]`` and each step is one batched GEMM ``S_Z [d, d] @ [d, G]`` per prompt
    instead of ``G`` matrix-vector products. ``sqrt_cov``: ``[G, d]`` (diagonal) or
    ``[G, d, d]``; ``P``: ``[G, d]`` (diagonal) or ``[G, d, d]``; ``noise`` scalar or ``None``.
    """
    S_Z, g, _, w = stats
    b, d = w.shape
    G = sqrt_cov.shape[0]

    def apply(M, v, diag, transpose=False):  # v [b, d, G]
        if diag:
            return M.T[None] * v
        return jnp.einsum("gji,bjg->big" if transpose else "gij,bjg->big", M, v)

    xi = None
    if S_Z is not None and noise is not None:
        xi = noise * apply(sqrt_cov, jnp.broadcast_to(g[:, :, None], (b, d, G)), diag_cov)

    def step(e, _):
        u = apply(sqrt_cov, e, diag_cov, transpose=True)
        v = u if S_Z is None else jnp.einsum("bij,bjg->big", S_Z, u)
        r = apply(sqrt_cov, v, diag_cov)
        if xi is not None:
            r = r - xi
        e = e - apply(P, r, diag_P)
        return e, jnp.sum(e * e, axis=1)  # [b, G]

    e0 = jnp.broadcast_to(-w[:, :, None], (b, d, G))
    _, errs = jax.lax.scan(step, e0, None, length=k_max)  # [k_max, b, G]
    e0sq = jnp.broadcast_to(jnp.sum(w * w, axis=-1)[None, :, None], (1, b, G))
    errs = jnp.transpose(jnp.concatenate([e0sq, errs], axis=0), (2, 1, 0))
    return jnp.where(jnp.isnan(errs), jnp.inf, errs)


def lsa_errors_from_stats(
    stats, sqrt_cov, params: lsa_mod.LSAParams, m: int, noise, k_max: int, diag_cov: bool, constant_M: bool = False
):
    """Squared errors ``[b, k_max + 1]`` of the literal LSA CoT (any ``W``, ``V``) from prompt statistics.

    Exact rewrite of the Gram recursion of :func:`ttscale.cot.lsa_estimates` (``ρ = m``). Rows
    ``I = [x; y]`` carry the data, rows ``J = [ŵ; 1]`` the query columns ``q_k = [ŵ_k; 1]``, so
    ``G_k = E_k E_kᵀ`` is block diagonal: ``G_II = m C`` with
    ``C = [[A S_Z Aᵀ, A(S_Z Aᵀ w + σ g)], [·ᵀ, tᵀ S_Z t + 2σ tᵀ g + σ² εᵀε/m]]`` (``t = Aᵀ w``) and
    ``G_JJ = Σ_{i ≤ k} q_i q_iᵀ``. The ŵ block of the last column of ``f(E_k)`` is
    ``ŵ_{k+1} = ŵ_k + M_k q_k`` with ``M_k = V[ŵ, :] G_k W[:, J] / m``, updated by the rank one
    ``M_{k+1} = M_k + (V[ŵ, J] q_{k+1})(W[J, J]ᵀ q_{k+1})ᵀ / m`` — ``O(d²)`` per step instead
    of ``O(D²)`` with ``D = 2d + 2``. ``constant_M=True`` asserts ``V[ŵ, J] = 0`` (true of the
    paper's structure, e.g. :func:`ttscale.lsa.params_from_preconditioner`): the rank-one terms
    vanish, ``M_k = M_0`` and each step is one ``d × (d + 1)`` matrix-vector product.
    """
    S_Z, g, ee, w = stats
    b, d = w.shape
    dtype = w.dtype
    W, V = params.W, params.V
    Vw = V[d + 1 : 2 * d + 1]  # [d, D]
    VwI, VwJ = Vw[:, : d + 1], Vw[:, d + 1 :]
    WIJ, WJJ = W[: d + 1, d + 1 :], W[d + 1 :, d + 1 :]
    t = _apply(sqrt_cov, w, diag_cov, transpose=True)
    if diag_cov:
        SA = sqrt_cov[None, :, None] * S_Z * sqrt_cov[None, None, :]
    else:
        SA = jnp.einsum("ij,bjk,lk->bil", sqrt_cov, S_Z, sqrt_cov)
    SZt = jnp.einsum("bij,bj->bi", S_Z, t)
    inner = SZt + noise * g
    cxy = _apply(sqrt_cov, inner, diag_cov)
    cyy = jnp.sum(t * SZt, -1) + 2 * noise * jnp.sum(t * g, -1) + noise**2 * ee
    C = jnp.concatenate(
        [jnp.concatenate([SA, cxy[:, :, None]], axis=2), jnp.concatenate([cxy, cyy[:, None]], axis=1)[:, None, :]],
        axis=1,
    )  # [b, d+1, d+1]
    q0 = jnp.zeros((d + 1,), dtype).at[d].set(1.0)
    M0 = jnp.einsum("ik,bkl,lj->bij", VwI, C, WIJ) + jnp.outer(VwJ @ q0, WJJ.T @ q0)[None] / m

    if constant_M:
        M_w, M_one = M0[:, :, :d], M0[:, :, d]

        def constant_step(w_hat, _):
            w_next = w_hat + jnp.einsum("bij,bj->bi", M_w, w_hat) + M_one
            diff = w_next - w
            return w_next, jnp.sum(diff * diff, axis=-1)

        _, errs = jax.lax.scan(constant_step, jnp.zeros((b, d), dtype), None, length=k_max)
        errs = jnp.concatenate([jnp.sum(w * w, axis=-1)[None], errs], axis=0).T
        return jnp.where(jnp.isnan(errs), jnp.inf, errs)

    def step(state, _):
        M, w_hat = state
        q = jnp.concatenate([w_hat, jnp.ones((b, 1), dtype)], axis=1)
        w_next = w_hat + jnp.einsum("bij,bj->bi", M, q)
        q_next = jnp.concatenate([w_next, jnp.ones((b, 1), dtype)], axis=1)
        M = M + jnp.einsum("ij,bj,lk,bl->bik", VwJ, q_next, WJJ, q_next) / m
        diff = w_next - w
        return (M, w_next), jnp.sum(diff * diff, axis=-1)

    _, errs = jax.lax.scan(step, (M0, jnp.zeros((b, d), dtype)), None, length=k_max)
    errs = jnp.concatenate([jnp.sum(w * w, axis=-1)[None], errs], axis=0).T
    return jnp.where(jnp.isnan(errs), jnp.inf, errs)


# ============================================================================ compiled chunk program
@dataclasses.dataclass(frozen=True)
class _Shape:
    """Static (shape-defining) settings of one compiled chunk program."""

    d: int
    m: Optional[int]  # None = inf
    k_max: int
    batch: int  # prompts per call (padded chunk), divisible by the device count
    cells: int
    cell_group: int
    lsa: bool
    lsa_constant_M: bool
    crn: bool
    diag_cov: bool
    diag_P: bool
    noisy: bool
    dtype: str
    n_devices: int


def _cell_group(shape_wo_group: dict) -> int:
    d, m, b = shape_wo_group["d"], shape_wo_group["m"] or 0, shape_wo_group["batch"]
    k_max = shape_wo_group["k_max"]
    per_prompt = k_max + 1 + 4 * d
    if not shape_wo_group["crn"]:
        per_prompt += d * m + d * d + m + 2 * d
    if shape_wo_group["lsa"]:
        per_prompt += 3 * d * (d + 1) + (d + 1) ** 2
    itemsize = jnp.dtype(shape_wo_group["dtype"]).itemsize
    group = int(max(1, min(_MEMORY_BUDGET // max(1, per_prompt * b * itemsize), shape_wo_group["cells"])))
    while shape_wo_group["cells"] % group:  # a divisor: lax.map then compiles no remainder pass
        group -= 1
    return group


def _mesh(n_devices: int):
    from jax.sharding import Mesh

    devices = jax.devices()
    return Mesh(np.asarray(devices[:n_devices]), ("prompts",))


@functools.lru_cache(maxsize=32)
def _chunk_program(shape: _Shape):
    """``program(keys, cells, idx) -> errors [cells, batch, k_max + 1]`` (jit, prompts sharded over devices).

    ``keys``: raw threefry key data, ``[2]`` (common random numbers: one key for every cell)
    or ``[cells, 2]`` (one key per cell); ``cells``: per-cell arrays (see :func:`_cells`);
    ``idx [batch]``: global prompt indices of this chunk.
    """
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = _mesh(shape.n_devices)
    prompts_sharded = NamedSharding(mesh, PartitionSpec("prompts"))
    replicated = NamedSharding(mesh, PartitionSpec())
    out_sharding = NamedSharding(mesh, PartitionSpec(None, "prompts", None))
    dtype = jnp.dtype(shape.dtype)

    def program(keys, cells, idx):
        global TRACE_COUNT
        TRACE_COUNT += 1
        if shape.crn:
            shared = prompt_stats(jax.random.wrap_key_data(keys), idx, shape.d, shape.m, dtype, shape.noisy)
            if not shape.lsa:
                # one GEMM per prompt and step for a whole group of cells (see pseudo_newton_group_errors)
                groups = jax.tree_util.tree_map(
                    lambda x: x.reshape((shape.cells // shape.cell_group, shape.cell_group) + x.shape[1:]), cells
                )
                noise = groups["noise"][0, 0] if shape.noisy else None

                def per_group(grp):
                    return pseudo_newton_group_errors(
                        shared, grp["A"], grp["P"], noise, shape.k_max, shape.diag_cov, shape.diag_P
                    )

                out = jax.lax.map(per_group, groups)  # [groups, G, b, K+1]
                return out.reshape((shape.cells,) + out.shape[2:])
            xs = cells
        else:
            xs = dict(cells, key=keys)

        def per_cell(cell):
            if shape.crn:
                stats = shared
            else:
                stats = prompt_stats(jax.random.wrap_key_data(cell["key"]), idx, shape.d, shape.m, dtype, shape.noisy)
            noise = cell["noise"] if shape.noisy else None
            if shape.lsa:
                params = lsa_mod.LSAParams(cell["W"], cell["V"])
                return lsa_errors_from_stats(
                    stats, cell["A"], params, shape.m, cell["noise"], shape.k_max, shape.diag_cov, shape.lsa_constant_M
                )
            return pseudo_newton_errors_from_stats(stats, cell["A"], cell["P"], noise, shape.k_max, shape.diag_cov, shape.diag_P)

        return jax.lax.map(per_cell, xs, batch_size=shape.cell_group)

    return jax.jit(
        program,
        in_shardings=(replicated, replicated, prompts_sharded),
        out_shardings=out_sharding,
    ), prompts_sharded


@functools.partial(jax.jit, static_argnames=("S", "N", "crn"))
def _cell_key_data(seed, m_index, *, S: int, N: int, crn: bool):
    base = jax.random.fold_in(jax.random.key(seed), m_index)
    if crn:
        return jax.random.key_data(base)
    per_s = jax.vmap(lambda s: jax.vmap(lambda n: jax.random.fold_in(jax.random.fold_in(base, s), n))(jnp.arange(N)))
    return jax.random.key_data(per_s(jnp.arange(S))).reshape(S * N, -1)


def cell_keys(spec: SweepSpec, m_index: int) -> np.ndarray:
    """Raw key data of test length ``m_index``: ``[2]`` with common random numbers, else ``[S·N, 2]``.

    ``fold_in(key(seed), i_m)`` (common random numbers) or
    ``fold_in(fold_in(fold_in(key(seed), i_m), s), i_n)`` for cell ``c = s·N + i_n``.
    """
    return np.asarray(
        _cell_key_data(np.uint32(spec.seed), np.uint32(m_index), S=spec.n_spectra, N=len(spec.ns),
                       crn=spec.common_random_numbers)
    )


def _is_diag_P(spec: SweepSpec) -> bool:
    if spec.model == "trained":
        return False
    if spec.family == "power_law":
        return True
    return all(c.basis is None for c in spec.covariances)


def _cells(spec: SweepSpec, P, lsa: bool, diag_cov: bool, diag_P: bool) -> dict:
    """Per-cell traced inputs (numpy, in ``dtype``), flattened spectrum-major (``c = s · N + i_n``)."""
    S, N, d = spec.n_spectra, len(spec.ns), spec.d
    dtype = np.dtype(spec.dtype)
    eig, basis = _numpy_covariances(spec.test_covariances())
    root = np.sqrt(eig)  # [S, d]
    A = root if diag_cov else basis * root[:, None, :]  # U diag(√λ)
    cells = {
        "A": np.repeat(A, N, axis=0).astype(dtype),
        "noise": np.full((S * N,), spec.noise, dtype),
    }
    if lsa:
        params = _cell_params(spec, P)
        cells["W"] = np.asarray(params.W, dtype).reshape(S * N, *params.W.shape[2:])
        cells["V"] = np.asarray(params.V, dtype).reshape(S * N, *params.V.shape[2:])
    else:
        Pc = np.asarray(P).reshape(S * N, d, d)
        cells["P"] = np.ascontiguousarray(np.diagonal(Pc, axis1=-2, axis2=-1) if diag_P else Pc).astype(dtype)
    return cells


def _device_count() -> int:
    return jax.device_count()


def _fetch(x) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


# ============================================================================ statistics
def summarize(errors: np.ndarray):
    """Mean, standard error and median over axis ``-2`` (prompts) of ``errors [..., prompts, k]``.

    Same conventions as :func:`ttscale.cot.error_curve`: ``nan`` counts as ``inf``; a cell
    with any ``inf`` has mean and standard error ``inf``; the median stays finite while fewer
    than half of the prompts diverge. Sums accumulate in float64 (two-pass variance) without a
    float64 copy of the whole array; the median is a partition along a contiguous axis.
    """
    errs = np.ascontiguousarray(np.swapaxes(errors, -1, -2))  # [..., k, prompts], a private copy
    np.copyto(errs, np.inf, where=np.isnan(errs))
    n = errs.shape[-1]
    finite = np.isfinite(errs).all(axis=-1)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = errs.sum(axis=-1, dtype=np.float64) / n
        centre = np.where(finite, mean, 0.0)[..., None]
        ss = np.zeros(mean.shape)
        for lo in range(0, n, 1024):  # bounded float64 temporaries
            block = errs[..., lo:lo + 1024].astype(np.float64) - centre
            ss += np.einsum("...i,...i->...", block, block)
        var = ss / (n - 1)
    stderr = np.where(finite, np.sqrt(var / n), np.inf)
    half = n // 2
    if n % 2:
        errs.partition(half, axis=-1)
        median = errs[..., half].astype(np.float64)
    else:
        errs.partition([half - 1, half], axis=-1)
        median = 0.5 * (errs[..., half - 1].astype(np.float64) + errs[..., half])
    dtype = errors.dtype
    return mean.astype(dtype), stderr.astype(dtype), median.astype(dtype)


# ============================================================================ driver
def _devices_attr() -> str:
    return json.dumps([str(dev) for dev in jax.devices()])


def _version() -> str:
    try:
        from ttscale import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "unknown"


def run_sweep(spec: SweepSpec, out=None, progress: bool = True):
    """Run a sweep and return an ``xarray.Dataset``; with ``out`` write it (``.nc``) and resume.

    Dataset: dims ``spectrum, n, m, k`` (``k = 0..k_max``); coords ``spectrum`` (index),
    ``alpha`` and ``hardness`` (on ``spectrum``), ``n``, ``m`` (floats, ``inf`` allowed), ``k``;
    variables ``mean``, ``stderr``, ``median [spectrum, n, m, k]`` (Monte Carlo over
    ``spec.prompts`` prompts), ``limit_error``, ``cor35_bound``, ``overthinking_term
    [spectrum, n, k]``, ``one_step_error [spectrum, n, m]``, ``best_k``, ``turns_up``,
    ``spectral_radius [spectrum, n]``; attrs
    ``spec`` (``SweepSpec.to_json``), ``spec_identity``, ``ttscale_version``, ``jax_version``,
    ``devices``.

    ``m = ∞`` is *simulated* with ``S_m = Σ`` exactly: ``e_k = −(I − PΣ)^k w`` per prompt, so
    ``mean`` estimates ``limit_error`` with a real standard error and ``median`` is the median
    of ``||(I − PΣ)^k w||²`` (not the closed form).

    With ``out``: an existing finished file of the same spec is returned without compute; a
    different spec is refused (:class:`ttscale.store.SpecMismatchError`); finished chunks in
    ``<out>.partial`` are reused, so a killed run resumes where it stopped.
    """
    if not isinstance(spec, SweepSpec):
        raise TypeError(f"spec must be a SweepSpec, got {type(spec).__name__}")
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    from ttscale import store

    identity = spec.identity()
    out_path = None
    if out is not None:
        out_path = store.check_writable(out)
        done = store.check_finished(out_path, identity)
        if done is not None:
            return done
    ctx = jax.enable_x64(True) if spec.dtype == "float64" else _nullcontext()
    with ctx:
        return _run(spec, out_path, progress, identity)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class _Engine:
    """Per-spec state of a sweep: the per-cell traced inputs and the compiled chunk programs."""

    def __init__(self, spec: SweepSpec):
        self.spec = spec
        P = preconditioners(spec)
        self.lsa = spec.model in ("lsa", "trained")
        self.diag_cov = spec.test_covariances().basis is None
        self.diag_P = (not self.lsa) and _is_diag_P(spec)
        self.cells = _cells(spec, P, self.lsa, self.diag_cov, self.diag_P)
        d = spec.d
        # V[ŵ, (ŵ, 1)] = 0 in every cell: appended query columns do not move M (exact fast path)
        self.lsa_constant_M = self.lsa and not np.any(self.cells["V"][:, d + 1 : 2 * d + 1, d + 1 :])
        self.n_devices = _device_count()
        self._keys = {}

    def keys(self, m_index: int) -> np.ndarray:
        if m_index not in self._keys:
            self._keys[m_index] = cell_keys(self.spec, m_index)
        return self._keys[m_index]

    def padded(self, count: int) -> int:
        """``count`` rounded up to a multiple of the device count."""
        return -(-count // self.n_devices) * self.n_devices

    def program(self, m_index: int, batch: int):
        spec = self.spec
        m = spec.ms[m_index]
        fields = dict(
            d=spec.d, m=None if math.isinf(m) else int(m), k_max=spec.k_max, batch=batch,
            cells=spec.n_spectra * len(spec.ns), lsa=self.lsa, lsa_constant_M=self.lsa_constant_M,
            crn=spec.common_random_numbers,
            diag_cov=self.diag_cov, diag_P=self.diag_P, noisy=spec.noise > 0, dtype=spec.dtype,
            n_devices=self.n_devices,
        )
        return _chunk_program(_Shape(cell_group=_cell_group(fields), **fields))

    def errors(self, m_index: int, start: int, stop: int, batch: Optional[int] = None) -> np.ndarray:
        """Per-prompt squared errors ``[S, N, stop − start, k_max + 1]`` of prompts ``start..stop−1``."""
        spec = self.spec
        batch = self.padded(stop - start) if batch is None else batch
        program, idx_sharding = self.program(m_index, batch)
        host_idx = np.arange(start, start + batch, dtype=np.uint32)
        idx = jax.make_array_from_callback((batch,), idx_sharding, lambda index: host_idx[index])
        errs = _fetch(program(self.keys(m_index), self.cells, idx))  # [C, batch, K1]
        return errs[:, : stop - start].reshape(spec.n_spectra, len(spec.ns), stop - start, spec.k_max + 1)


def prompt_errors(spec: SweepSpec, m_index: int = 0, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
    """Per-prompt squared errors ``||ŵ_k − w||²`` ``[spectrum, n, stop − start, k_max + 1]`` of one test length.

    The very numbers :func:`run_sweep` summarises (prompts ``start..stop−1`` of
    ``spec.ms[m_index]``), e.g. for histograms of heavy tails.
    """
    if not isinstance(spec, SweepSpec):
        raise TypeError(f"spec must be a SweepSpec, got {type(spec).__name__}")
    m_index = _checks.static_int("m_index", m_index, minimum=0)
    if m_index >= len(spec.ms):
        raise ValueError(f"m_index must be < len(spec.ms) = {len(spec.ms)}, got {m_index}")
    stop = spec.prompts if stop is None else _checks.static_int("stop", stop, minimum=1)
    start = _checks.static_int("start", start, minimum=0)
    if not start < stop <= 2**32:
        raise ValueError(f"need 0 <= start < stop, got start={start}, stop={stop}")
    ctx = jax.enable_x64(True) if spec.dtype == "float64" else _nullcontext()
    with ctx:
        engine = _Engine(spec)
        chunk = min(spec.chunk, spec.prompts)
        batch = engine.padded(chunk)  # the run_sweep program of this spec: no new compile
        parts = [engine.errors(m_index, st, min(st + chunk, stop), batch) for st in range(start, stop, chunk)]
        return np.concatenate(parts, axis=2)


def _run(spec: SweepSpec, out_path, progress: bool, identity: str):
    import xarray as xr

    from ttscale import store

    writer = jax.process_index() == 0
    # Every process reads the finished chunks (``out`` must be on a filesystem all hosts see);
    # only process 0 writes.
    partial = store.PartialStore(out_path, identity) if out_path is not None else None
    finished = partial.finished() if partial is not None else set()

    S, N, M, K1 = spec.n_spectra, len(spec.ns), len(spec.ms), spec.k_max + 1
    forms = closed_forms(spec)
    engine = _Engine(spec)
    chunk = min(spec.chunk, spec.prompts)
    starts = list(range(0, spec.prompts, chunk))
    np_dtype = np.dtype(spec.dtype)

    total = M * S * N * spec.prompts
    already = sum(
        S * N * (min(st + chunk, spec.prompts) - st)
        for mi in range(M)
        for st in starts
        if (mi, st, min(st + chunk, spec.prompts)) in finished
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=already, unit="prompt", unit_scale=True, desc="sweep", smoothing=0.1)

    mean = np.empty((S, N, M, K1), np_dtype)
    stderr = np.empty_like(mean)
    median = np.empty_like(mean)
    try:
        for mi, m in enumerate(spec.ms):
            errs_m = np.empty((S, N, spec.prompts, K1), np_dtype)
            for st in starts:
                stop = min(st + chunk, spec.prompts)
                if (mi, st, stop) in finished:
                    errs_m[:, :, st:stop] = partial.load(mi, st, stop)
                    continue
                errs = engine.errors(mi, st, stop, batch=engine.padded(chunk))
                errs_m[:, :, st:stop] = errs
                if partial is not None and writer:
                    partial.save(mi, st, stop, errs)
                if bar is not None:
                    bar.update(S * N * (stop - st))
                    bar.set_postfix(cells=f"{mi * S * N}/{M * S * N}", refresh=False)
            mean[:, :, mi], stderr[:, :, mi], median[:, :, mi] = summarize(errs_m)
            if bar is not None:
                bar.set_postfix(cells=f"{(mi + 1) * S * N}/{M * S * N}")
    finally:
        if bar is not None:
            bar.close()

    alpha = np.asarray(spec.alphas, np.float64) if spec.family == "power_law" else np.full(S, np.nan)
    ks = np.arange(K1)
    ds = xr.Dataset(
        data_vars={
            "mean": (("spectrum", "n", "m", "k"), mean),
            "stderr": (("spectrum", "n", "m", "k"), stderr),
            "median": (("spectrum", "n", "m", "k"), median),
            "limit_error": (("spectrum", "n", "k"), forms["limit_error"].astype(np_dtype)),
            "one_step_error": (("spectrum", "n", "m"), forms["one_step_error"].astype(np_dtype)),
            "cor35_bound": (("spectrum", "n", "k"), forms["cor35_bound"].astype(np_dtype)),
            "overthinking_term": (("spectrum", "n", "k"), forms["overthinking_term"].astype(np_dtype)),
            "best_k": (("spectrum", "n"), forms["best_k"]),
            "turns_up": (("spectrum", "n"), forms["turns_up"]),
            "spectral_radius": (("spectrum", "n"), forms["spectral_radius"].astype(np_dtype)),
        },
        coords={
            "spectrum": np.arange(S),
            "alpha": ("spectrum", alpha),
            "hardness": ("spectrum", np.asarray(forms["hardness"], np.float64)),
            "n": np.asarray(spec.ns, np.float64),
            "m": np.asarray(spec.ms, np.float64),
            "k": ks,
        },
        attrs={
            "spec": spec.to_json(),
            "spec_identity": identity,
            "ttscale_version": _version(),
            "jax_version": jax.__version__,
            "devices": _devices_attr(),
        },
    )
    _describe(ds)
    if partial is not None and writer:
        store.write_dataset(ds, out_path)
        partial.remove()
    return ds


_DESCRIPTIONS = {
    "mean": "Monte-Carlo mean over prompts of ||w_k - w||^2",
    "stderr": "standard error of the mean (inf if any prompt diverged)",
    "median": "median over prompts of ||w_k - w||^2",
    "limit_error": "m -> inf closed form ||(I - P Sigma)^k||_F^2",
    "one_step_error": "exact finite-m error at k = 1",
    "cor35_bound": "Corollary 3.5: d (1 + n/(1 + Hard))^(-2k)",
    "overthinking_term": "Remark 4.1: tr(M^(2k)), M = I - Gamma^(-1/2) Sigma Gamma^(-1/2)",
    "best_k": "argmin over k = 1..k_max of limit_error",
    "turns_up": "best_k < k_max: the m -> inf error turns up within the horizon",
    "spectral_radius": "max |eig(I - P Sigma)| (> 1: the m -> inf error eventually diverges)",
}


def _describe(ds) -> None:
    for name, text in _DESCRIPTIONS.items():
        ds[name].attrs["long_name"] = text
    ds["alpha"].attrs["long_name"] = "power-law exponent of the training spectrum (nan for explicit)"
    ds["hardness"].attrs["long_name"] = "Hard(Lambda) = tr(Lambda) / lambda_min(Lambda) of the training spectrum"
