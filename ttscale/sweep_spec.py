"""What a sweep runs: :class:`SweepSpec` — the grid, the model, the sampler settings — validated and serialisable.

:func:`ttscale.sweep.run_sweep` runs a spec; :meth:`SweepSpec.identity` is what determines its numbers
(every field but the chunk size, plus the sampler version), so results of different specs are never
mixed and a resumed run continues only its own results.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import _checks, models
from ttscale import spectra as spectra_mod
from ttscale.spectra import Covariance

FAMILIES = ("power_law", "explicit")
TESTS = ("aligned", "identity")
DTYPES = ("float32", "float64")

#: Version of the random-number scheme (part of :meth:`SweepSpec.identity`: results of an older
#: scheme are never mixed with, or mistaken for, this one's).
SAMPLER = "rbg-threefry-counter/1"



# ============================================================================ the spec
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
    * ``model`` — a :class:`ttscale.models.Model` (any, including one defined outside the package)
      or a registered name with options: ``"pseudo_newton"`` (``P = Γ(Λ, n)⁻¹``), ``"lsa"`` /
      ``"lsa:c=0.7"`` / ``"lsa:params=FILE.npz"`` (the literal LSA forward), ``"gd:eta=0.5"``
      (gradient descent) — see :mod:`ttscale.models`. ``"trained"`` is a deprecated alias of ``"lsa"``
      with ``params``.
    * ``params`` — optional per-cell parameters that replace ``model.init``: a pytree shaped like
      ``model.init``'s output, each leaf either that shape (every cell) or ``[spectra, len(ns), ...]``.
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
    model: Any = "pseudo_newton"
    params: Any = None
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
            set_("alphas", _checks.number_tuple("alphas", self.alphas))
            if self.covariances is not None:
                raise ValueError('covariances is only used with family="explicit"; leave it None for "power_law"')
            if self.trace is not None:
                set_("trace", float(_checks.real_number("trace", self.trace, minimum=0, exclusive=True)))
        else:
            if self.covariances is None or isinstance(self.covariances, (str, bytes, Covariance)):
                raise ValueError('family="explicit" needs covariances: a non-empty list of Covariance or [d, d] matrices')
            covs = tuple(spectra_mod.one_covariance(f"covariances[{i}]", c, d) for i, c in enumerate(self.covariances))
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
            tests = tuple(spectra_mod.one_covariance(f"test[{i}]", t, d) for i, t in enumerate(self.test))
            if len(tests) != n_spectra:
                raise ValueError(f"test lists {len(tests)} covariances but there are {n_spectra} spectra")
            set_("test", tests)
        else:
            set_("test", spectra_mod.one_covariance("test", self.test, d))
        set_("ns", _checks.number_tuple("ns", self.ns, allow_inf=True, minimum=1))
        set_("ms", _checks.number_tuple("ms", self.ms, allow_inf=True, minimum=1, integer=True))
        set_("k_max", _checks.static_int("k_max", self.k_max, minimum=0))
        set_("prompts", _checks.static_int("prompts", self.prompts, minimum=2))
        if self.prompts > 2**32:
            raise ValueError(f"prompts must be <= 2**32 (the prompt index is 32-bit), got {self.prompts}")
        set_("chunk", _checks.static_int("chunk", self.chunk, minimum=1))
        set_("noise", float(_checks.real_number("noise", self.noise, minimum=0.0)))
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
        if isinstance(self.model, str) and self.model.strip() == "trained":  # deprecated alias
            if self.params is None:
                raise TypeError('model="trained" needs params: an LSAParams of [D, D] or [spectra, n, D, D] arrays')
            set_("model", "lsa")
        model = models.get(self.model)
        set_("_model", model)
        if model.finite_m and any(math.isinf(m) for m in self.ms):
            raise ValueError(
                f"ms contains inf, but model {model.name!r} needs a finite prompt length (the literal LSA divides by "
                "ρ = m); use model=\"pseudo_newton\" for m = inf"
            )
        if self.params is not None:
            set_("params", _check_params(self, model, self.params))

    # ------------------------------------------------------------------ derived
    @property
    def n_spectra(self) -> int:
        return len(self.alphas) if self.family == "power_law" else len(self.covariances)

    @property
    def jnp_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def model_object(self) -> models.Model:
        """The :class:`ttscale.models.Model` that runs (``model`` resolved through the registry)."""
        return self._model

    def training_covariances(self, dtype=None) -> Covariance:
        """Stacked training covariances ``Λ_s`` (eigenvalues ``[S, d]``) in ``dtype`` (default the spec's;
        ``float64`` needs ``jax_enable_x64``)."""
        dtype = self.jnp_dtype if dtype is None else jnp.dtype(dtype)
        if self.family == "power_law":
            return spectra_mod.power_law(self.d, np.asarray(self.alphas), trace=self.trace, dtype=dtype)
        return spectra_mod.stack(self.covariances, dtype)

    def test_covariances(self, dtype=None) -> Covariance:
        """Stacked test covariances ``Σ_s`` (one per spectrum) in ``dtype`` (default the spec's)."""
        dtype = self.jnp_dtype if dtype is None else jnp.dtype(dtype)
        if isinstance(self.test, str):
            if self.test == "aligned":
                return self.training_covariances(dtype)
            return Covariance(jnp.ones((self.n_spectra, self.d), dtype))
        if isinstance(self.test, Covariance):
            return spectra_mod.stack([self.test] * self.n_spectra, dtype)
        return spectra_mod.stack(self.test, dtype)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """JSON-ready dict of every field (arrays as nested lists)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "covariances" and v is not None:
                v = [spectra_mod.to_json(c) for c in v]
            elif f.name == "test" and not isinstance(v, str):
                v = spectra_mod.to_json(v) if isinstance(v, Covariance) else [spectra_mod.to_json(c) for c in v]
            elif f.name == "model":
                v = v if isinstance(v, str) else v.name
            elif f.name == "params" and v is not None:
                v = {"treedef": str(jax.tree_util.tree_structure(v)),
                     "leaves": [np.asarray(x).tolist() for x in jax.tree_util.tree_leaves(v)]}
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
        d["model"] = self._model.name  # canonical: options sorted, parameter files by content
        d["sampler"] = SAMPLER
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_dict(cls, obj: dict) -> "SweepSpec":
        obj = dict(obj)
        if obj.get("covariances") is not None:
            obj["covariances"] = [spectra_mod.from_json(c) for c in obj["covariances"]]
        t = obj.get("test")
        if isinstance(t, dict):
            obj["test"] = spectra_mod.from_json(t)
        elif isinstance(t, list):
            obj["test"] = [spectra_mod.from_json(c) for c in t]
        if obj.get("params") is not None:
            template = models.get(obj["model"]).init(spectra_mod.identity(int(obj["d"])), 1.0)
            treedef = jax.tree_util.tree_structure(template)
            obj["params"] = jax.tree_util.tree_unflatten(treedef, [np.asarray(x) for x in obj["params"]["leaves"]])
        obj.pop("c", None)  # files written before models had options
        return cls(**obj)

    @classmethod
    def from_json(cls, text: str) -> "SweepSpec":
        """Inverse of :meth:`to_json` (e.g. ``SweepSpec.from_json(ds.attrs["spec"])`` to re-run a sweep).

        A model given as a :class:`~ttscale.models.Model` object is stored by name: only registered
        names can be rebuilt from JSON."""
        return cls.from_dict(json.loads(text))

    def replace(self, **changes) -> "SweepSpec":
        return dataclasses.replace(self, **changes)

    def __eq__(self, other):
        return isinstance(other, SweepSpec) and self.to_json() == other.to_json()

    def __hash__(self):
        return hash(self.to_json())


def _check_params(spec: SweepSpec, model: models.Model, params):
    """Per-cell parameters: each leaf shaped like ``model.init``'s (every cell) or ``[spectra, n, ...]``."""
    first = jax.tree_util.tree_map(lambda x: x[0], spec.training_covariances(jnp.float32))
    template = model.init(first, 1.0)
    t_leaves, treedef = jax.tree_util.tree_flatten(template)
    leaves, got = jax.tree_util.tree_flatten(params)
    if got != treedef:
        raise TypeError(f"params must be shaped like {model.name}'s parameters ({treedef}), got {got}")
    lead = (spec.n_spectra, len(spec.ns))
    out = []
    for t, x in zip(t_leaves, leaves):
        x = np.asarray(x, np.float64)
        if x.shape == t.shape:
            x = np.broadcast_to(x, lead + t.shape).copy()
        if x.shape != lead + t.shape:
            raise ValueError(f"params leaves must be {tuple(t.shape)} or [spectra={lead[0]}, n={lead[1]}, ...] = "
                             f"{lead + tuple(t.shape)}, got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("params has non-finite entries")
        out.append(x)
    return jax.tree_util.tree_unflatten(treedef, out)
