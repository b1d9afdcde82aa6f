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
* **Randomness.** Cell ``(s, i_n, i_m)`` has the key ``fold_in(fold_in(fold_in(key(seed),
  i_m), s), i_n)``; prompt ``p`` reads ``Z [d, m]``, ``ε [m]`` and ``w [d]`` at position ``p`` of
  three counter-based Threefry streams of that key (:mod:`ttscale.rng`, :func:`prompt_stats`),
  so results do not depend on the chunk size, the number or order of devices, or the order in
  which cells run. (XLA's ``RngBitGenerator`` makes these normals ≈ 4× faster than
  ``jax.random.normal`` on CPU, ``benchmarks/profile_sweep.py``; the scheme is versioned by :data:`SAMPLER`, part of
  :meth:`SweepSpec.identity`.) With ``common_random_numbers=True`` the key is
  ``fold_in(key(seed), i_m)``: every spectrum and every ``n`` of one ``m`` sees the *same*
  base normals, transformed by its own ``Σ^{1/2}`` (and ``S_Z`` is computed once per prompt,
  shared by all cells). Each cell's marginal distribution, mean and standard error are
  unchanged, but cells become positively correlated: *differences* between cells (n vs n,
  α vs α, smooth curves along a grid axis) have smaller spread, while the cells are no longer
  independent samples (do not pool them as if they were). ``m = ∞`` draws only ``w``
  (``S_m = Σ`` exactly, ``σ g → 0``).
* **Kernels.** Pseudo-Newton runs all ``k_max`` steps on cache-resident blocks of
  ``_PROMPT_BLOCK`` prompts; with common random numbers a group of cells shares ``S_Z`` and each
  step is one small GEMM per prompt (:func:`pseudo_newton_group_errors`); for diagonal
  ``A > 0`` and ``P`` the state is ``u = A e`` (one elementwise product per step). Every fast
  form is tested equal to the plain one.
* **Compilation.** One ``jax.jit`` program per test length ``m`` (a shape), taking the
  chunk's first prompt index, the seed and the per-cell covariances / preconditioners /
  parameters as traced arguments: every chunk and every cell of that shape reuses it.
  Within a chunk, cells are ``vmap``-ed in groups (``lax.map`` with a ``batch_size`` chosen
  so the peak memory stays ∝ the chunk size).
* **Devices.** The prompts of a chunk are split over every device with ``shard_map`` (no
  communication: each device draws and iterates its own prompts and returns their errors and
  moments); multi-host after ``jax.distributed.initialize()``, where the mesh spans all
  processes' devices and process 0 writes the files. On a CPU, call
  :func:`ttscale.use_cpu_cores` first to get one device per core (the CLI does).
* **Statistics in bounded memory.** Each chunk returns, per cell and ``k``, the mean and sum
  of squared deviations of its prompts (computed on the device) and the per-prompt errors;
  the host merges moments exactly (Chan et al.; :mod:`ttscale.summary`) and keeps the
  per-prompt errors only for the exact median: in RAM up to :data:`HOST_MEMORY` bytes per
  ``m``, beyond that in a file (``<out>.partial`` or a temporary directory, ``pwrite``/``pread``)
  reduced slab by slab. Host memory is therefore bounded by ``HOST_MEMORY`` plus a few chunks,
  device memory by the chunk, whatever the number of prompts.
* **Resumption.** With ``out`` each finished chunk (errors and moments) is saved atomically
  (see :mod:`ttscale.store`); a rerun loads finished chunks and computes only the rest, and
  gives the uninterrupted run's numbers bit for bit.
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
from ttscale import rng as rng_mod
from ttscale import spectra as spectra_mod
from ttscale.spectra import Covariance

FAMILIES = ("power_law", "explicit")
TESTS = ("aligned", "identity")
MODELS = ("pseudo_newton", "lsa", "trained")
DTYPES = ("float32", "float64")
_MEMORY_BUDGET = 128 * 2**20  # bytes of per-cell working memory per chunk (sets the cell group size)
_INDEPENDENT_GROUP = 4  # at most this many cells vmapped together when each draws its own prompts

#: Version of the random-number scheme (part of :meth:`SweepSpec.identity`: results of an older
#: scheme are never mixed with, or mistaken for, this one's).
SAMPLER = "rbg-threefry-counter/1"

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
        """JSON of what determines the numbers: every field except ``chunk``, plus the sampler version."""
        d = self.to_dict()
        d.pop("chunk")
        d["sampler"] = SAMPLER
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
def prompt_stats(key, start, count: int, d: int, m: Optional[int], dtype, noisy: bool = True):
    """Sufficient statistics of prompts ``start .. start + count − 1`` drawn from ``key``: ``(S_Z, g, εᵀε/m, w)``.

    Prompt ``p`` reads its normals from three streams of ``key`` (:func:`ttscale.rng.prompt_normals`):
    ``Z [d, m]`` (stream 0, row-major), ``ε [m]`` (stream 1) and ``w [d]`` (stream 2); so
    ``noisy=False`` (which skips ``ε``) leaves ``Z`` and ``w`` unchanged, and a prompt's draws
    depend on ``(key, p)`` only, not on ``start``/``count``. Returns ``S_Z = Z Zᵀ/m [count, d, d]``,
    ``g = Z ε/m [count, d]``, ``εᵀε/m [count]`` (zeros when not ``noisy``), ``w [count, d]``.
    For ``m = None`` (``m = ∞``) only ``w`` is drawn and ``S_Z``, ``g``, ``εᵀε/m`` are ``None``
    (``S_Z → I``, ``g → 0``). ``start`` may be traced.
    """
    Z, w, eps = _draws(key, start, count, d, m, dtype, noisy)
    if m is None:
        return None, None, None, w
    S_Z = jnp.sum(Z[:, :, None, :] * Z[:, None, :, :], axis=-1) / m  # a fused reduce: faster than XLA's CPU batched dot
    if noisy:
        g, ee = jnp.einsum("bim,bm->bi", Z, eps) / m, jnp.sum(eps * eps, axis=-1) / m
    else:
        g, ee = jnp.zeros((count, d), dtype), jnp.zeros((count,), dtype)
    return S_Z, g, ee, w


def _draws(key, start, count: int, d: int, m: Optional[int], dtype, noisy: bool):
    """``Z [count, d, m]`` (stream 0), ``w [count, d]`` (stream 2), ``ε [count, m]`` (stream 1) of prompts
    ``start ..``; ``Z`` is ``None`` for ``m = None`` and ``ε`` is ``None`` unless ``noisy``."""
    w = rng_mod.prompt_normals(key, start, count, d, dtype, stream=2)
    if m is None:
        return None, w, None
    Z = rng_mod.prompt_normals(key, start, count, d * m, dtype, stream=0).reshape(count, d, m)
    eps = rng_mod.prompt_normals(key, start, count, m, dtype, stream=1) if noisy else None
    return Z, w, eps


@functools.partial(jax.jit, static_argnames=("count", "m", "noise"))
def _prompts_range(key, start, cov: Covariance, count: int, m: int, noise: float):
    from ttscale.prompts import Prompts

    Z, w, eps = _draws(key, start, count, cov.d, m, cov.dtype, noise > 0)
    X = jax.vmap(cov.apply_sqrt)(Z)
    y = jnp.einsum("bdm,bd->bm", X, w)
    if eps is not None:
        y = y + noise * eps
    return Prompts(X, y, w)


def prompts_for(key, idx, cov: Covariance, m: int, noise: float = 0.0):
    """The prompts behind :func:`prompt_stats` as :class:`~ttscale.prompts.Prompts` (for checks and reuse).

    ``idx``: concrete prompt indices (any order); ``X = U diag(√λ) Z``, ``y = Xᵀ w + σ ε`` with
    the same per-prompt draws as the sweep engine. Draws the whole span ``min(idx)..max(idx)``
    (one compiled program per span length), so ask for compact index sets.
    """
    idx = np.asarray(idx, np.int64).reshape(-1)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= 2**32:
        raise ValueError("idx must be a non-empty array of prompt indices in [0, 2^32)")
    lo, hi = int(idx.min()), int(idx.max())
    whole = _prompts_range(key, np.uint32(lo), cov, hi - lo + 1, int(m), float(noise))
    return jax.tree_util.tree_map(lambda x: x[idx - lo], whole)


def _apply(M, v, diag: bool, transpose: bool = False):
    """``M v`` (or ``Mᵀ v``) for ``v [b, d]``; ``M`` is a diagonal ``[d]`` or dense ``[d, d]``."""
    if diag:
        return M * v
    return jnp.einsum("ji,bj->bi" if transpose else "ij,bj->bi", M, v)


def pseudo_newton_errors_from_stats(stats, sqrt_cov, P, noise, k_max: int, diag_cov: bool, diag_P: bool,
                                    scaled: bool = False):
    """Squared errors ``[b, k_max + 1]`` of pseudo-Newton CoT from prompt statistics.

    ``e_0 = −w``, ``e_{k+1} = e_k − P (A S_Z Aᵀ e_k − σ A g)``, with ``A = sqrt_cov``
    (``U diag(√λ)`` dense ``[d, d]``, or ``√λ [d]`` when ``diag_cov``) and ``P`` dense or
    diagonal. Identical in exact arithmetic to :func:`ttscale.cot.pseudo_newton_errors` on
    the prompts ``X = A Z``, ``y = Xᵀ w + σ ε``. ``nan`` is reported as ``inf``.
    The single-cell case of :func:`pseudo_newton_group_errors`, with the state ``[b, d]``
    (no cell axis: one batched matrix-vector product per step) and the same prompt blocking.
    """
    steps = _blocked_steps(stats, sqrt_cov[None], P[None], noise, k_max, diag_cov, diag_P, scaled, single=True)
    return _assemble(steps, stats[3], 1)[0]


def _blocked_steps(stats, sqrt_cov, P, noise, k_max, diag_cov, diag_P, scaled, single):
    """:func:`_group_errors_block` over blocks of ``_PROMPT_BLOCK`` prompts → ``[k_max, b(, G)]``.

    Running all ``k_max`` steps on a small block of prompts before moving on keeps ``S_Z`` and
    the state in cache (loop tiling); the arithmetic is unchanged, so the result equals the
    unblocked iteration exactly.
    """
    b = stats[3].shape[0]
    block = max(size for size in range(1, min(_PROMPT_BLOCK, b) + 1) if b % size == 0)

    def run(st):
        return _group_errors_block(st, sqrt_cov, P, noise, k_max, diag_cov, diag_P, scaled, single)

    if block == b:
        return run(stats)
    blocked = jax.tree_util.tree_map(lambda x: x.reshape((b // block, block) + x.shape[1:]), stats)
    out = jax.lax.map(run, blocked)  # [nb, k_max, block(, G)]
    out = jnp.moveaxis(out, 0, 1)
    return out.reshape((k_max, b) + out.shape[3:])


_PROMPT_BLOCK = 8  # prompts per cache-resident block of the grouped iteration (measured: 8 beat 4096 by ~2-4x on CPU)
_UNROLL = 2  # CoT steps per loop trip of the grouped kernel: XLA's per-trip overhead dominates it on CPU


def pseudo_newton_group_errors(stats, sqrt_cov, P, noise, k_max: int, diag_cov: bool, diag_P: bool,
                               scaled: bool = False):
    """Squared errors ``[G, b, k_max + 1]`` of ``G`` cells on shared prompts (common random numbers).

    :func:`_group_errors_block` over cache-resident blocks of ``_PROMPT_BLOCK`` prompts
    (:func:`_blocked_steps`), then :func:`_assemble`. Same map as
    :func:`pseudo_newton_errors_from_stats` per cell.
    """
    steps = _blocked_steps(stats, sqrt_cov, P, noise, k_max, diag_cov, diag_P, scaled, single=False)
    return _assemble(steps, stats[3], sqrt_cov.shape[0])


def _group_errors_block(stats, sqrt_cov, P, noise, k_max: int, diag_cov: bool, diag_P: bool, scaled: bool = False,
                        single: bool = False):
    """Step errors ``||e_k||²``, ``k = 1..k_max``, of ``G`` cells sharing one set of prompts → ``[k_max, b, G]``
    (``[k_max, b]`` when ``single``); :func:`_assemble` adds ``k = 0`` and lays them out ``[G, b, k_max + 1]``.

    Common random numbers: ``S_Z [b, d, d]`` is shared, so the state is laid out
    ``e [b, d, G]`` and each step is one batched GEMM ``S_Z [d, d] @ [d, G]`` per prompt
    instead of ``G`` matrix-vector products. ``sqrt_cov``: ``[G, d]`` (diagonal) or
    ``[G, d, d]``; ``P``: ``[G, d]`` (diagonal) or ``[G, d, d]``; ``noise`` scalar or ``None``.
    ``single=True`` (``G = 1``) drops the cell axis of the state: ``e [b, d]``, one batched
    matrix-vector product per step (faster on CPU than a ``[b, d, 1]`` state).

    ``scaled=True`` (only for diagonal ``A = diag(a)``, ``P = diag(p)`` with every ``a > 0``)
    iterates ``u = A e`` instead: ``u_{k+1} = u_k − q ∘ (S_Z u_k) + σ q ∘ g`` with
    ``q = a² p``, and ``||e_k||² = Σ u_k² / a²`` — the same map with one elementwise product per
    step instead of three (equal to round-off; timed by ``benchmarks/profile_sweep.py``, "plain" vs
    "scaled").
    """
    S_Z, g, _, w = stats
    b, d = w.shape
    G = sqrt_cov.shape[0]
    if single and G != 1:
        raise ValueError(f"single=True needs one cell, got {G}")
    if scaled and not (diag_cov and diag_P):
        raise ValueError("scaled=True needs diagonal sqrt_cov and P")
    if single:
        # state [b, d]; cell parameters [d] / [d, d]
        cell = lambda M: M[0]  # noqa: E731
        col = lambda v: v  # noqa: E731  per-coordinate vectors broadcast over b as [d]
        matvec = lambda S, v: jnp.einsum("bij,bj->bi", S, v)  # noqa: E731

        def apply(M, v, diag, transpose=False):
            if diag:
                return M * v
            return jnp.einsum("ji,bj->bi" if transpose else "ij,bj->bi", M, v)

        w_state = -w
    else:
        cell = lambda M: M  # noqa: E731
        col = lambda v: v.T[None]  # noqa: E731  [G, d] -> [1, d, G]
        matvec = lambda S, v: jnp.einsum("bij,bjg->big", S, v)  # noqa: E731

        def apply(M, v, diag, transpose=False):  # v [b, d, G]
            if diag:
                return M.T[None] * v
            return jnp.einsum("gji,bjg->big" if transpose else "gij,bjg->big", M, v)

        w_state = jnp.broadcast_to(-w[:, :, None], (b, d, G))
    g_state = None if S_Z is None else (g if single else jnp.broadcast_to(g[:, :, None], (b, d, G)))

    if scaled:
        a = col(cell(sqrt_cov))
        q = col(cell(sqrt_cov * sqrt_cov * P))
        inv_a2 = 1.0 / (a * a)
        drift = None if S_Z is None or noise is None else noise * q * g_state

        def step(u, _):
            v = u if S_Z is None else matvec(S_Z, u)
            u = u - q * v
            if drift is not None:
                u = u + drift
            return u, jnp.sum(u * u * inv_a2, axis=1)

        state0 = w_state * a
    else:
        A, Pc = cell(sqrt_cov), cell(P)
        xi = None
        if S_Z is not None and noise is not None:
            xi = noise * apply(A, g_state, diag_cov)

        def step(e, _):
            u = apply(A, e, diag_cov, transpose=True)
            v = u if S_Z is None else matvec(S_Z, u)
            r = apply(A, v, diag_cov)
            if xi is not None:
                r = r - xi
            e = e - apply(Pc, r, diag_P)
            return e, jnp.sum(e * e, axis=1)

        state0 = w_state
    _, errs = jax.lax.scan(step, state0, None, length=k_max, unroll=1 if single else _UNROLL)
    return errs  # [k_max, b] (single) or [k_max, b, G]


def _assemble(steps, w, G: int):
    """``[k_max, b(, G)]`` step errors of :func:`_group_errors_block` and ``||w||²`` → ``[G, b, k_max + 1]`` (nan → inf)."""
    b = w.shape[0]
    if steps.ndim == 2:
        steps = steps[:, :, None]
    e0sq = jnp.broadcast_to(jnp.sum(w * w, axis=-1)[None, :, None], (1, b, G))
    errs = jnp.transpose(jnp.concatenate([e0sq, steps], axis=0), (2, 1, 0))
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
    scaled: bool  # diagonal A > 0 and diagonal P: iterate u = A e (see _group_errors_block)
    noisy: bool
    dtype: str
    n_devices: int


def _cell_group(shape_wo_group: dict) -> int:
    d, m = shape_wo_group["d"], shape_wo_group["m"] or 0
    b = shape_wo_group["batch"] // shape_wo_group["n_devices"]  # prompts per device
    k_max = shape_wo_group["k_max"]
    per_prompt = k_max + 1 + 4 * d
    if shape_wo_group["crn"] and not shape_wo_group["lsa"]:
        per_prompt = 2 * (k_max + 1)  # prompt-blocked iteration: only the outputs scale with the chunk
    if not shape_wo_group["crn"]:
        per_prompt += d * m + d * d + m + 2 * d
    if shape_wo_group["lsa"]:
        per_prompt += 3 * d * (d + 1) + (d + 1) ** 2
    itemsize = jnp.dtype(shape_wo_group["dtype"]).itemsize
    group = int(max(1, min(_MEMORY_BUDGET // max(1, per_prompt * b * itemsize), shape_wo_group["cells"])))
    if not shape_wo_group["crn"]:
        # fresh prompts per cell: small groups keep each cell's draws and S_Z in cache (chosen by
        # timing sweep-A on 2 CPU devices: groups of 2-5 cells beat 8-16 by ~15 %)
        group = min(group, _INDEPENDENT_GROUP)
    while shape_wo_group["cells"] % group:  # a divisor: lax.map then compiles no remainder pass
        group -= 1
    return group


def _mesh(n_devices: int):
    from jax.sharding import Mesh

    devices = jax.devices()
    return Mesh(np.asarray(devices[:n_devices]), ("prompts",))


def _shard_map(f, mesh, in_specs, out_specs):
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map  # pragma: no cover - older jax

    return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)  # pragma: no cover


def chunk_moments(errors, count):
    """Scaled mean and sum of squared deviations over the first ``count`` prompts of ``errors [rows, K, b]``.

    ``count`` (traced int, ``0 ≤ count ≤ b``): the real prompts lead, padding follows and is
    ignored. Errors are ``≥ 0`` or ``inf``. With ``c = max e`` per row (``1`` if that is ``0``),
    two passes over ``x = e / c ∈ [0, 1]`` in the working dtype: ``μ = Σ x / n``,
    ``M₂ = Σ (x − μ)²``; the caller forms ``mean = c μ`` and ``m2 = c² M₂`` in float64. The
    scaling matters: squared deviations of errors ≈ 1e-20 (a converged CoT) underflow float32,
    and an unscaled ``M₂`` made standard errors 14× too small. A row with an ``inf`` among its
    real prompts gets ``c = μ = M₂ = inf``; ``count = 0`` gives ``1, 0, 0``. The unpadded case
    skips the masks (``lax.cond``; masking costs XLA's CPU reductions ~5×).
    Returns ``(c, μ, M₂) [rows, K]``.
    """
    b = errors.shape[-1]
    inf = jnp.asarray(jnp.inf, errors.dtype)

    def moments(x, n, mask):
        top = jnp.max(x, axis=-1)
        finite = top < jnp.inf  # errors are >= 0: the max is inf iff one is
        scale = jnp.where(finite & (top > 0), top, 1.0)
        y = x / scale[..., None]
        mean = jnp.sum(y, axis=-1) / jnp.maximum(n, 1).astype(x.dtype)
        dev = y - mean[..., None]
        if mask is not None:
            dev = jnp.where(mask, dev, 0.0)
        m2 = jnp.sum(dev * dev, axis=-1)
        return jnp.where(finite, scale, inf), jnp.where(finite, mean, inf), jnp.where(finite, m2, inf)

    def full(x, n):
        return moments(x, n, None)

    def padded(x, n):
        mask = jnp.arange(b) < n
        return moments(jnp.where(mask, x, 0.0), n, mask)

    count = jnp.asarray(count, jnp.int32)
    return jax.lax.cond(count == b, full, padded, errors, count)


@functools.lru_cache(maxsize=32)
def _chunk_program(shape: _Shape):
    """``program(keys, cells, start, valid) -> (errors [cells, k_max + 1, batch], scale, mean, m2 [devices, cells, k_max + 1])``.

    ``keys``: raw threefry key data, ``[2]`` (common random numbers: one key for every cell)
    or ``[cells, 2]`` (one key per cell); ``cells``: per-cell arrays (see :func:`_cells`);
    ``start``: global index of the chunk's first prompt; ``valid``: how many of the ``batch``
    prompts are real (the rest is padding, excluded from the moments). Jitted and
    ``shard_map``-ped: each device runs prompts ``start + i·batch/devices ..`` on its own
    (no communication) and returns its per-prompt errors and its :func:`chunk_moments`.
    """
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = _mesh(shape.n_devices)
    local = shape.batch // shape.n_devices
    dtype = jnp.dtype(shape.dtype)

    def device_program(keys, cells, start, valid):
        global TRACE_COUNT
        TRACE_COUNT += 1
        dev = jax.lax.axis_index("prompts")
        offset = (dev * local).astype(jnp.uint32)
        first = start + offset
        in_chunk = jnp.clip(valid - offset.astype(jnp.int32), 0, local)  # real prompts on this device
        if shape.crn:
            shared = prompt_stats(jax.random.wrap_key_data(keys), first, local, shape.d, shape.m, dtype, shape.noisy)
        if shape.crn and not shape.lsa:
            # one GEMM per prompt and step for a whole group of cells (see pseudo_newton_group_errors)
            groups = jax.tree_util.tree_map(
                lambda x: x.reshape((shape.cells // shape.cell_group, shape.cell_group) + x.shape[1:]), cells
            )
            noise = groups["noise"][0, 0] if shape.noisy else None

            def per_group(grp):
                out = pseudo_newton_group_errors(shared, grp["A"], grp["P"], noise, shape.k_max, shape.diag_cov,
                                                 shape.diag_P, shape.scaled)
                return jnp.swapaxes(out, 1, 2)  # [G, K+1, b]

            errs = jax.lax.map(per_group, groups)
            errs = errs.reshape((shape.cells,) + errs.shape[2:])
        else:
            xs = cells if shape.crn else dict(cells, key=keys)

            def per_cell(cell):
                if shape.crn:
                    stats = shared
                else:
                    stats = prompt_stats(jax.random.wrap_key_data(cell["key"]), first, local, shape.d, shape.m, dtype,
                                         shape.noisy)
                noise = cell["noise"] if shape.noisy else None
                if shape.lsa:
                    params = lsa_mod.LSAParams(cell["W"], cell["V"])
                    out = lsa_errors_from_stats(stats, cell["A"], params, shape.m, cell["noise"], shape.k_max,
                                                shape.diag_cov, shape.lsa_constant_M)
                else:
                    out = pseudo_newton_errors_from_stats(stats, cell["A"], cell["P"], noise, shape.k_max,
                                                          shape.diag_cov, shape.diag_P, shape.scaled)
                return out.T  # [K+1, b]

            errs = jax.lax.map(per_cell, xs, batch_size=shape.cell_group)
        scale, mean, m2 = chunk_moments(errs, in_chunk)
        return errs, scale[None], mean[None], m2[None]

    P = PartitionSpec
    program = _shard_map(
        device_program, mesh,
        in_specs=(P(), P(), P(), P()),
        out_specs=(P(None, None, "prompts"), P("prompts"), P("prompts"), P("prompts")),
    )
    replicated = NamedSharding(mesh, P())
    return jax.jit(program, in_shardings=(replicated, replicated, replicated, replicated))


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
    than half of the prompts diverge. The helpers of :mod:`ttscale.summary` that
    :func:`run_sweep` uses (float64 two-pass moments, exact median).
    """
    from ttscale import summary

    errors = np.asarray(errors)
    rows = np.swapaxes(errors, -1, -2).reshape(-1, errors.shape[-2])  # [(..., k), prompts]
    mean, stderr = summary.finish(summary.moments_of(rows))
    median = summary.median_rows(rows)
    shape = errors.shape[:-2] + errors.shape[-1:]
    dtype = errors.dtype
    return tuple(np.asarray(x).reshape(shape).astype(dtype) for x in (mean, stderr, median))


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
            scaled=self.diag_cov and self.diag_P and bool(np.all(self.cells["A"] > 0)),
            n_devices=self.n_devices,
        )
        return _chunk_program(_Shape(cell_group=_cell_group(fields), **fields))

    def chunk(self, m_index: int, start: int, stop: int, batch: Optional[int] = None):
        """Prompts ``start..stop−1``: errors ``[cells, k_max + 1, stop − start]`` and their :class:`~ttscale.summary.Moments`."""
        from ttscale import summary

        valid = stop - start
        batch = self.padded(valid) if batch is None else batch
        program = self.program(m_index, batch)
        errs, scale, mean, m2 = program(self.keys(m_index), self.cells, np.uint32(start), np.int32(valid))
        errs = _fetch(errs)  # [C, K1, batch]
        scale, mean, m2 = (_fetch(x).astype(np.float64) for x in (scale, mean, m2))  # [devices, C, K1]
        local = batch // self.n_devices
        counts = np.clip(valid - local * np.arange(self.n_devices), 0, local)
        moments = None
        for dev in np.flatnonzero(counts):
            with np.errstate(invalid="ignore", over="ignore"):  # inf rows: inf · inf stays inf
                part = summary.Moments(int(counts[dev]), scale[dev] * mean[dev], scale[dev] ** 2 * m2[dev])
            moments = part if moments is None else summary.combine(moments, part)
        return errs[:, :, :valid], moments


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
        parts = [engine.chunk(m_index, st, min(st + chunk, stop), batch)[0] for st in range(start, stop, chunk)]
        errs = np.concatenate(parts, axis=2)  # [C, K1, P]
        S, N, K1 = spec.n_spectra, len(spec.ns), spec.k_max + 1
        return np.ascontiguousarray(np.swapaxes(errs.reshape(S, N, K1, -1), -1, -2))


#: Host memory (bytes) for the per-prompt errors of one test length; beyond it they spill to disk
#: (``<out>.partial`` or a temporary directory) and the exact median is computed slab by slab.
HOST_MEMORY = 256 * 2**20


def _run(spec: SweepSpec, out_path, progress: bool, identity: str):
    import xarray as xr

    from ttscale import store, summary

    writer = jax.process_index() == 0
    # Every process reads the finished chunks (``out`` must be on a filesystem all hosts see);
    # only process 0 writes.
    partial = store.PartialStore(out_path, identity) if out_path is not None else None
    finished = partial.finished() if partial is not None else set()

    S, N, M, K1 = spec.n_spectra, len(spec.ns), len(spec.ms), spec.k_max + 1
    C = S * N
    forms = closed_forms(spec)
    engine = _Engine(spec)
    chunk = min(spec.chunk, spec.prompts)
    starts = list(range(0, spec.prompts, chunk))
    np_dtype = np.dtype(spec.dtype)

    total = M * C * spec.prompts
    already = sum(
        C * (min(st + chunk, spec.prompts) - st)
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
    spill_dir = partial.directory if partial is not None and writer else None
    try:
        for mi, m in enumerate(spec.ms):
            moments = None
            with summary.PromptErrors(C * K1, spec.prompts, np_dtype, budget_bytes=HOST_MEMORY,
                                      directory=spill_dir) as per_prompt:
                for st in starts:
                    stop = min(st + chunk, spec.prompts)
                    if (mi, st, stop) in finished:
                        errs, part = partial.load(mi, st, stop)
                    else:
                        errs, part = engine.chunk(mi, st, stop, batch=engine.padded(chunk))
                        if partial is not None and writer:
                            partial.save(mi, st, stop, errs, part)
                        if bar is not None:
                            bar.update(C * (stop - st))
                            bar.set_postfix(cells=f"{mi * C}/{M * C}", refresh=False)
                    moments = part if moments is None else summary.combine(moments, part)
                    per_prompt.put(st, stop, errs.reshape(C * K1, stop - st))
                med = per_prompt.median()
            mu, se = summary.finish(moments)
            mean[:, :, mi] = mu.reshape(S, N, K1)
            stderr[:, :, mi] = se.reshape(S, N, K1)
            median[:, :, mi] = med.reshape(S, N, K1)
            if bar is not None:
                bar.set_postfix(cells=f"{(mi + 1) * C}/{M * C}")
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
