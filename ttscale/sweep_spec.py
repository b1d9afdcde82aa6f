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

from ttscale import _checks, families, models
from ttscale import spectra as spectra_mod
from ttscale.families import SpectrumGrid
from ttscale.spectra import Covariance

#: Values of the legacy ``family`` field (``spectra=`` is the way to give training spectra).
FAMILIES = ("power_law", "explicit")
#: Fields that are shorthands for ``spectra`` (normalised into it; not serialised).
SPECTRUM_SHORTHANDS = ("family", "alphas", "covariances", "trace")
TESTS = ("aligned", "identity")
DTYPES = ("float32", "float64")

#: Version of the random-number scheme (part of :meth:`SweepSpec.identity`: results of an older
#: scheme are never mixed with, or mistaken for, this one's).
SAMPLER = "rbg-threefry-counter/1"
#: Version of the statistics sampler (Bartlett, :func:`ttscale.prompts.draw_statistics`): the identity's
#: ``"sampler"`` when any test length of a spec draws statistics directly, :data:`SAMPLER` otherwise.
STATISTICS_SAMPLER = "bartlett-threefry-counter/1"
SAMPLERS = ("auto", "statistics", "prompts")



# ============================================================================ the spec
@dataclasses.dataclass(frozen=True, eq=False)
class SweepSpec:
    """A sweep: training spectra × training lengths ``ns`` × test lengths ``ms`` × steps ``k = 0..k_max``.

    Fields (all validated on construction; bad input raises ``ValueError``/``TypeError``
    naming the field before any compute starts):

    * ``d`` — feature dimension; ``None`` (default): fixed by the spectra when they fix it
      (``eig:...``, a file), else 10.
    * ``spectra`` — the training spectra ``Λ_s``, in the one spectrum syntax of :mod:`ttscale.families`:
      ``"power_law:alpha=0:2:16"``, ``"hard:H=[10,40,100]"``, ``"eig:3,2,1"``, ``"eig.txt"``, a
      registered family, a :class:`~ttscale.spectra.Covariance`, an array, a
      :class:`~ttscale.families.SpectrumGrid`, or a list of these (concatenated). Normalised to a
      ``SpectrumGrid`` (float64 eigenvalues; labels and per-family coordinates go into the Dataset).
    * ``alphas`` (and ``trace``) — shorthand for ``spectra="power_law:alpha=[...],trace=T"``; with no
      spectra at all the default is ``alphas=(0.0,)``. After construction ``alphas`` holds the
      spectra's ``alpha`` coordinate (``()`` when some spectrum has none). ``family="explicit"`` with
      ``covariances=`` is a deprecated spelling of ``spectra=[...]``.
    * ``test`` — the test covariance ``Σ`` per spectrum: ``"aligned"`` (``Σ = Λ``),
      ``"identity"`` (``Σ = I``), or spectra in the same syntax (one for every spectrum, or one per
      spectrum): a text, a covariance, or a list of one per spectrum.
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
    * ``sampler`` — ``"statistics"``: a statistics-reading model gets ``S_Z``, ``g``, ``εᵀε/m`` drawn
      directly (Bartlett, :func:`ttscale.prompts.draw_statistics`; same law, cost independent of ``m``)
      for every finite ``m ≥ d``, the prompt route otherwise; ``"prompts"``: statistics of drawn prompts
      (:func:`ttscale.prompts.draw_normals`; every prompt the one :func:`ttscale.prompts.sample_prompts`
      draws); ``"auto"`` (default): ``"statistics"`` when the model reads statistics, else ``"prompts"``.
      A model with ``reads="prompts"`` refuses ``"statistics"``. See :meth:`draws_statistics`.

    The PRNG is threefry (``jax.random.key``): ``"rbg"``/``"unsafe_rbg"`` were measured slower
    on CPU here and their bits change under ``vmap``, which would break the chunk-size and
    device-count invariance.
    """

    d: Optional[int] = None
    spectra: Any = None
    family: Optional[str] = None
    alphas: Optional[Sequence[float]] = None
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
    sampler: str = "auto"

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        if self.d is not None:
            set_("d", _checks.static_int("d", self.d, minimum=1))
        grid = _training_spectra(self)
        d = grid.d
        set_("d", d)
        set_("spectra", grid)
        set_("alphas", _alphas_of(grid))
        for name in ("family", "covariances", "trace"):
            set_(name, None)
        set_("test", _test_spectra(self.test, d, len(grid)))
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
        if not isinstance(self.sampler, str) or self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.sampler == "statistics" and model.reads != "statistics":
            raise ValueError(f'sampler="statistics" needs a model that reads statistics, but {model.name!r} reads '
                             f'{model.reads}; use sampler="auto" or "prompts"')

    # ------------------------------------------------------------------ derived
    @property
    def n_spectra(self) -> int:
        return len(self.spectra)

    @property
    def jnp_dtype(self):
        return jnp.dtype(self.dtype)

    def draws_statistics(self, m) -> bool:
        """Whether test length ``m`` draws the statistics directly (Bartlett) rather than prompts.

        True iff the sampler is not ``"prompts"``, the model reads statistics and ``d ≤ m < ∞``.
        """
        return (self.sampler != "prompts" and self._model.reads == "statistics"
                and math.isfinite(m) and int(m) >= self.d)

    @property
    def model_object(self) -> models.Model:
        """The :class:`ttscale.models.Model` that runs (``model`` resolved through the registry)."""
        return self._model

    def training_covariances(self, dtype=None) -> Covariance:
        """Stacked training covariances ``Λ_s`` (eigenvalues ``[S, d]``) in ``dtype`` (default the spec's;
        ``float64`` needs ``jax_enable_x64``)."""
        dtype = self.jnp_dtype if dtype is None else jnp.dtype(dtype)
        return self.spectra.stacked(dtype)

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
            if f.name in SPECTRUM_SHORTHANDS:
                continue  # normalised into spectra
            if f.name == "spectra":
                v = v.to_json()
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
        """JSON of what determines the numbers: every field except ``chunk``, plus the sampler version.

        ``"sampler"`` is the version of the sampler that actually runs — :data:`STATISTICS_SAMPLER` if
        any ``m`` draws statistics directly (:meth:`draws_statistics`), else :data:`SAMPLER` — so
        results of the two samplers are never mixed, and ``"auto"`` and the sampler it resolves to share
        one identity.
        """
        d = self.to_dict()
        d.pop("chunk")
        d["model"] = self._model.name  # canonical: options sorted, parameter files by content
        d.pop("sampler")
        d["sampler"] = STATISTICS_SAMPLER if any(self.draws_statistics(m) for m in self.ms) else SAMPLER
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_dict(cls, obj: dict) -> "SweepSpec":
        obj = dict(obj)
        if obj.get("spectra") is not None:
            obj["spectra"] = SpectrumGrid.from_json(obj["spectra"], d=obj.get("d"))
        elif obj.get("covariances") is not None:  # files written before spectra=: family="explicit"
            obj["spectra"] = [spectra_mod.from_json(c) for c in obj.pop("covariances")]
            obj.pop("family", None)
            obj.pop("alphas", None)
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
        """A copy with ``changes``; a shorthand (``alphas``, ``trace``, ...) replaces ``spectra`` and vice versa."""
        if "spectra" in changes:
            changes = {**{k: None for k in SPECTRUM_SHORTHANDS}, **changes}
        elif any(k in changes for k in SPECTRUM_SHORTHANDS):
            changes = {"spectra": None, **changes}
            if "alphas" not in changes and "covariances" not in changes:
                changes["alphas"] = self.alphas or None
        return dataclasses.replace(self, **changes)

    def __eq__(self, other):
        return isinstance(other, SweepSpec) and self.to_json() == other.to_json()

    def __hash__(self):
        return hash(self.to_json())


def _alphas_of(grid: SpectrumGrid) -> tuple:
    """The ``alpha`` coordinate of every spectrum, or ``()`` when some spectrum has none."""
    alpha = grid.coords.get("alpha")
    if alpha is None or np.any(np.isnan(alpha)):
        return ()
    return tuple(float(a) for a in alpha)


def _training_spectra(spec: SweepSpec) -> SpectrumGrid:
    """``spec.spectra``, or the shorthands ``alphas``/``trace`` and the deprecated ``family="explicit"``, as a grid."""
    shorthand = [name for name in SPECTRUM_SHORTHANDS if getattr(spec, name) is not None]
    if spec.spectra is not None:
        copy = (isinstance(spec.spectra, SpectrumGrid) and shorthand in ([], ["alphas"])
                and (spec.alphas is None or tuple(spec.alphas) == _alphas_of(spec.spectra)))
        if shorthand and not copy:
            raise ValueError(f"spectra and {', '.join(shorthand)} were both given; give the training spectra once: "
                             "spectra=... (e.g. \"power_law:alpha=0:2:16\") or the shorthand alphas= (with trace=)")
        return families.parse_spectra(spec.spectra, d=spec.d, name="spectra", default_d=10)
    family = spec.family
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES} (deprecated: use spectra=, e.g. "
                         f"spectra=\"power_law:alpha=1\"), got {family!r}")
    if family == "explicit" or spec.covariances is not None:
        if family != "explicit":
            raise ValueError('covariances is only used with family="explicit"; give spectra=[...] instead')
        if spec.covariances is None or isinstance(spec.covariances, (str, bytes, Covariance)):
            raise ValueError('family="explicit" needs covariances: a non-empty list of Covariance or [d, d] matrices '
                             '(deprecated: give them as spectra=[...])')
        if spec.trace is not None:
            raise ValueError('trace is only used with power-law spectra (alphas=)')
        if spec.alphas:
            raise ValueError('alphas is not used with family="explicit"')
        import warnings

        warnings.warn('SweepSpec(family="explicit", covariances=[...]) is deprecated: give spectra=[...] '
                      '(Covariance objects, arrays or text such as "eig:3,2,1")', DeprecationWarning, stacklevel=4)
        covs = [spectra_mod.one_covariance(f"covariances[{i}]", c, spec.d) for i, c in enumerate(spec.covariances)]
        if not covs:
            raise ValueError("covariances must not be empty")
        return families.parse_spectra(covs, d=spec.d, name="covariances")
    alphas = _checks.number_tuple("alphas", (0.0,) if spec.alphas is None else spec.alphas)
    trace = ""
    if spec.trace is not None:
        trace = ",trace=" + families.fmt(_checks.real_number("trace", spec.trace, minimum=0, exclusive=True))
    return families.parse_spectra([f"power_law:alpha={families.fmt(a)}{trace}" for a in alphas], d=spec.d,
                                  name="alphas", default_d=10)


def _test_spectra(test, d: int, n_spectra: int):
    """``"aligned"``/``"identity"``, one float64 Covariance for every spectrum, or a tuple of one per spectrum."""
    if isinstance(test, str) and test.strip() in TESTS:
        return test.strip()
    if isinstance(test, Covariance) and np.ndim(test.eigenvalues) == 1:
        return spectra_mod.one_covariance("test", test, d)
    if isinstance(test, (list, tuple)) and test and all(
            isinstance(t, Covariance) or (not isinstance(t, (str, numbers.Number)) and np.ndim(t) == 2) for t in test):
        tests = tuple(spectra_mod.one_covariance(f"test[{i}]", t, d) for i, t in enumerate(test))
    else:
        try:
            tests = families.parse_spectra(test, d=d, name="test").covariances
        except TypeError as exc:
            raise TypeError(f"{exc} (or test='aligned' / 'identity')") from None
        except ValueError as exc:
            raise ValueError(f"{exc} (or test='aligned' / 'identity')") from None
        if len(tests) == 1:
            return tests[0]
    if len(tests) != n_spectra:
        raise ValueError(f"test gives {len(tests)} covariances but there are {n_spectra} training spectra "
                         "(give one for every spectrum or one per spectrum)")
    return tests


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
