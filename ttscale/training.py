"""Optax training of the one-layer LSA on in-context regression prompts (docs/science.md §3, §7).

Loss (docs/science.md §3), per prompt of length ``n`` with ``ŵ_0 = 0`` and no CoT:

    ℓ(W, V) = ½ || f(E)[:, -1] − (0_d, 0, w, 1) ||²,   f(E)[:, -1] = e_q + V E (Eᵀ W e_q) / ρ,  ρ = n,

averaged over a batch of fresh prompts each step (``fold_in(key, step)``).

**The math that sets the defaults.** With the paper's ``W`` and ``ŵ_0 = 0``, ``W e_q = −c e_y`` so
the last column is ``e_q + V u`` with ``u = −c [X y / n; |y|² / n; 0_d; 0]``: the loss is a least-squares
problem in ``V``. Only the ``ŵ`` rows of ``V`` ever receive a gradient (all other rows start at 0, where
their residual and hence their gradient is exactly 0). Its Hessian is ``E[u uᵀ]`` (the same for every
row), block-diagonal by the symmetry ``(w, ε) → −(w, ε)``:

* ``x`` columns: ``c² Q``, ``Q = Σ_ℓ π_ℓ (Γ_ℓ Λ_ℓ + σ² Λ_ℓ / n_ℓ)`` (``E[S²] = ΓΛ``, Isserlis);
* ``y`` column:  ``h_y = c² Σ_ℓ π_ℓ (1 + 2/n_ℓ) ((tr Λ_ℓ + σ²)² + 2 tr Λ_ℓ²)``  (``|y|²/n = (wᵀΛw + σ²) χ²_n / n``).

The minimiser is ``V[ŵ, x] = −P / c`` with ``P = Λ̄ Q⁻¹`` (``Γ⁻¹`` for one noiseless task;
:func:`optimal_preconditioner`), ``V[ŵ, y] = 0``, every other block 0. The default optimiser is
SGD with the *optimal constant step for each column block*: ``2 / (λ_max + λ_min)`` of ``c² Q`` on the
``x`` columns and ``1 / h_y`` on the ``y`` column (a fixed diagonal preconditioner; with one scalar step the
``y`` column, ``h_y ≈ d²``, would force a step ``~1/d²`` and slow the ``x`` block by ``κ ≈ 100``). With a
``cosine`` schedule the late small steps average out the gradient noise, so the relative error of the
learned ``P`` falls like ``1/sqrt(#prompts seen)`` once the bias (rate ``(κ−1)/(κ+1)`` per step,
``κ = cond(Q)``: 1 for ``Λ = I``, ≈ 47 for ``power_law(10, 1)``, ``n = 20``) has decayed.
Trainable ``c`` / ``W`` (tied/free) get the step ``1 / tr(P Q Pᵀ)``, the curvature in ``c`` at the optimum.
Adam's default step is ``5e-2``.

Options: ``w_mode="frozen"`` (``W`` fixed at the paper init), ``"tied"`` (``W = paper_W(c)`` with ``c``
trainable), ``"free"`` (all of ``W`` trainable: docs/science.md §3 pitfall — ``W[x, ŵ]`` gets exactly zero gradient
while ``W[y, 1]`` drifts, so the CoT fixed point becomes a scaled ``w``; see ``tests/test_training.py``).
``v_mode="full"`` trains all of ``V``; ``"block"`` only ``V[ŵ, x]``.

**Task mixtures.** Each prompt draws its task ``ℓ ~ Categorical(π)``; every prompt is padded to ``n_max``
columns with zero columns (they add nothing to ``E Eᵀ``) and uses its own ``ρ = n_ℓ``, so one compiled
step serves any mix of lengths. The tasks are a :class:`ttscale.tasks.TaskMixture` pytree (covariances,
lengths, probabilities; traced inside ``train``), so ``jax.vmap(train)(keys, stack_mixtures([...]))``
trains many models (spectra × n × π × seeds) in one call.

**Engines.** :func:`make_train` returns a pure ``train(key, tasks=None) -> TrainResult`` whose whole loop
is one ``lax.scan``. :func:`fit` runs the same step in chunks of one compiled function with a tqdm bar,
checkpointing to ``out`` after each chunk; rerunning with the same ``out`` resumes exactly.

Files are ``.npz`` (arrays, bit-exact) + JSON (config): the parameters are a few ``[D, D]`` arrays, so
orbax's async/sharded machinery buys nothing, and ``npz`` + ``json`` is readable from any NumPy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import warnings
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ttscale import _checks
from ttscale import lsa as lsa_mod
from ttscale import prompts as prompts_mod
from ttscale import store, theory
from ttscale.lsa import LSAParams
from ttscale.spectra import Covariance, check_covariance
from ttscale.tasks import TaskMixture, mixture_preconditioner, stack_mixtures, task_mixture

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "linear")
W_MODES = ("frozen", "tied", "free")
V_MODES = ("full", "block")
DTYPES = ("float32", "float64")
FORMAT_VERSION = 1


# ============================================================================ configuration
@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """Deprecated: one training task (``x ~ N(0, cov)``, prompts of ``n`` examples).

    Use :func:`ttscale.tasks.task_mixture` (``TrainConfig(tasks=task_mixture([cov], [n]))``); a tuple of
    ``Task`` given as ``TrainConfig.tasks`` is converted to a :class:`~ttscale.tasks.TaskMixture`.
    """

    cov: Covariance
    n: int

    def __post_init__(self):
        warnings.warn("ttscale.training.Task is deprecated; describe the tasks with ttscale.task_mixture(covariances, "
                      "lengths, probs)", DeprecationWarning, stacklevel=3)
        if not isinstance(self.cov, Covariance):
            raise TypeError(f"Task.cov must be a ttscale.Covariance, got {type(self.cov).__name__}")
        if self.cov.eigenvalues.ndim != 1:
            raise ValueError(f"Task.cov must be one covariance (eigenvalues [d]), got shape {self.cov.eigenvalues.shape}")
        check_covariance("Task.cov", self.cov)  # a Covariance(...) built directly skips the constructors' checks
        object.__setattr__(self, "n", _checks.static_int("Task.n", self.n, minimum=1))


@dataclasses.dataclass(frozen=True, eq=False)
class TrainConfig:
    """Training settings. Shape-defining fields are static; task arrays are traced inside ``train``.

    d: feature dimension.  tasks: a :class:`~ttscale.tasks.TaskMixture` (dimension ``d``, whole prompt
    lengths; the deprecated tuple of :class:`Task` is converted).  probs: task probabilities π (default:
    the mixture's; given, they replace them).  steps, batch: optimisation steps, prompts per step.
    optimizer: ``"sgd"`` | ``"adam"``.  learning_rate: ``None`` = auto (SGD: optimal per-block step,
    see the module docstring; Adam: 5e-2) or a float (one scalar step).  schedule: ``"constant"`` |
    ``"cosine"`` | ``"linear"`` multiplier decaying to ``final_lr_fraction``.  c: scale of the paper ``W``
    (initial value when tied/free).  w_mode: ``"frozen"`` | ``"tied"`` | ``"free"``.  v_mode: ``"full"`` |
    ``"block"``.  noise: label-noise std σ.  n_max: padded prompt length (default ``max n``; set it
    larger to vmap over longer ``n``).  dtype: ``"float32"`` | ``"float64"``.

    Equality and hashing go through :meth:`to_json`.
    """

    d: int
    tasks: tuple
    probs: Optional[tuple] = None
    steps: int = 400
    batch: int = 2048
    optimizer: str = "sgd"
    learning_rate: Optional[float] = None
    schedule: str = "cosine"
    final_lr_fraction: float = 0.0
    c: float = 1.0
    w_mode: str = "frozen"
    v_mode: str = "full"
    noise: float = 0.0
    n_max: Optional[int] = None
    dtype: str = "float32"

    def __post_init__(self):
        d = _checks.static_int("d", self.d, minimum=1)
        object.__setattr__(self, "d", d)
        tasks = _as_mixture(self.tasks)
        if tasks.covariances.eigenvalues.ndim != 2:
            raise ValueError(f"tasks must be one mixture (eigenvalues [L, d]), got shape {tasks.covariances.eigenvalues.shape}")
        if tasks.d != d:
            raise ValueError(f"tasks have dimension d={tasks.d}, expected d={d}")
        lengths = np.asarray(tasks.lengths, np.float64)
        if np.any(~np.isfinite(lengths)) or np.any(lengths != np.round(lengths)):
            raise ValueError(f"tasks: training prompt lengths must be whole numbers, got {lengths.tolist()}")
        if self.probs is not None:
            probs = np.asarray(self.probs, dtype=np.float64)
            if probs.shape != (tasks.size,):
                raise ValueError(f"probs must have one probability per task ({tasks.size}), got shape {probs.shape}")
            _check_simplex("probs", probs)
            tasks = tasks.with_probs(probs)
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "probs", tuple(float(p) for p in np.asarray(tasks.probs, np.float64)))
        object.__setattr__(self, "steps", _checks.static_int("steps", self.steps, minimum=1))
        object.__setattr__(self, "batch", _checks.static_int("batch", self.batch, minimum=1))
        for name, value, allowed in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("w_mode", self.w_mode, W_MODES),
            ("v_mode", self.v_mode, V_MODES),
            ("dtype", self.dtype, DTYPES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.learning_rate is not None:
            lr = _finite_float("learning_rate", self.learning_rate)
            if lr <= 0:
                raise ValueError(f"learning_rate must be > 0, got {lr}")
            object.__setattr__(self, "learning_rate", lr)
        frac = _finite_float("final_lr_fraction", self.final_lr_fraction)
        if not 0.0 <= frac <= 1.0:
            raise ValueError(f"final_lr_fraction must be in [0, 1], got {frac}")
        object.__setattr__(self, "final_lr_fraction", frac)
        c = _finite_float("c", self.c)
        if c == 0.0:
            raise ValueError("c must be non-zero (W = 0 makes the LSA output constant)")
        object.__setattr__(self, "c", c)
        noise = _finite_float("noise", self.noise)
        if noise < 0:
            raise ValueError(f"noise must be >= 0 (a standard deviation), got {noise}")
        object.__setattr__(self, "noise", noise)
        n_big = int(lengths.max())
        if self.n_max is None:
            object.__setattr__(self, "n_max", n_big)
        else:
            n_max = _checks.static_int("n_max", self.n_max, minimum=1)
            if n_max < n_big:
                raise ValueError(f"n_max={n_max} is shorter than the longest task prompt n={n_big}")
            object.__setattr__(self, "n_max", n_max)

    # -- derived -----------------------------------------------------------------------------
    @property
    def jnp_dtype(self):
        return jnp.float64 if self.dtype == "float64" else jnp.float32

    @property
    def num_tasks(self) -> int:
        """Number of tasks ``L``."""
        return self.tasks.size

    def mixture(self) -> TaskMixture:
        """:attr:`tasks` in the training dtype (what ``train`` uses when no tasks are passed)."""
        return self.tasks.astype(self.jnp_dtype)

    def task_arrays(self) -> TaskMixture:
        """Deprecated: :meth:`mixture`."""
        warnings.warn("TrainConfig.task_arrays() is deprecated; use TrainConfig.mixture()", DeprecationWarning, stacklevel=2)
        return self.mixture()

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "tasks"}
        out["probs"] = list(self.probs)
        eig = np.asarray(self.tasks.covariances.eigenvalues, np.float64)
        basis = self.tasks.covariances.basis
        basis = None if basis is None else np.asarray(basis, np.float64)
        out["tasks"] = [
            {
                "n": int(n),
                "eigenvalues": [float(v) for v in eig[i]],
                "basis": None if basis is None else basis[i].tolist(),
            }
            for i, n in enumerate(np.asarray(self.tasks.lengths, np.float64))
        ]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        dtype = jnp.float64 if data.get("dtype") == "float64" else jnp.float32
        covs, ns = [], []
        for t in data.pop("tasks"):
            eig = jnp.asarray(np.asarray(t["eigenvalues"]), dtype)
            basis = None if t.get("basis") is None else jnp.asarray(np.asarray(t["basis"]), dtype)
            covs.append(Covariance(eig, basis))
            ns.append(int(t["n"]))
        if data.get("probs") is not None:
            data["probs"] = tuple(data["probs"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields in saved config: {sorted(unknown)}")
        return cls(tasks=task_mixture(covs, ns, data.get("probs")), **data)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def __eq__(self, other):
        return isinstance(other, TrainConfig) and self.to_json() == other.to_json()

    def __hash__(self):
        return hash(self.to_json())


def _finite_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_simplex(name: str, probs, atol: float = 1e-6) -> None:
    _checks.simplex(name, probs, atol=atol)


# ============================================================================ task mixtures (and their deprecated forms)
def _as_mixture(tasks) -> TaskMixture:
    """``tasks`` as a :class:`TaskMixture`: a mixture itself, or a (deprecated) ``Task`` / tuple of ``Task``."""
    if isinstance(tasks, TaskMixture):
        return tasks
    if isinstance(tasks, Task):
        tasks = (tasks,)
    if not isinstance(tasks, (list, tuple)):
        raise TypeError(f"tasks must be a ttscale.TaskMixture (ttscale.task_mixture), got {type(tasks).__name__}")
    if len(tasks) == 0:
        raise ValueError("tasks must hold at least one task (empty mixture)")
    for i, t in enumerate(tasks):
        if not isinstance(t, Task):
            raise TypeError(f"tasks[{i}] must be a Task, got {type(t).__name__}; pass a ttscale.task_mixture(...)")
    ds = {t.cov.d for t in tasks}
    if len(ds) != 1:
        raise ValueError(f"tasks: every task must share one dimension d, got {sorted(ds)}")
    return task_mixture([t.cov for t in tasks], [float(t.n) for t in tasks])


def make_task_arrays(covs, ns, probs=None, dtype=jnp.float32) -> TaskMixture:
    """Deprecated: :func:`ttscale.tasks.task_mixture` (``covs`` a list of covariances, ``ns`` their lengths)."""
    warnings.warn("ttscale.training.make_task_arrays is deprecated; use ttscale.task_mixture(covariances, lengths, probs)",
                  DeprecationWarning, stacklevel=2)
    covs = list(covs) if isinstance(covs, (list, tuple)) else [covs]
    for i, c in enumerate(covs):
        if not isinstance(c, Covariance) or c.eigenvalues.ndim != 1:
            raise TypeError(f"covs[{i}] must be one ttscale.Covariance")
    return task_mixture(covs, np.asarray(ns, np.float64) if np.ndim(ns) else float(ns), probs, dtype=dtype)


def stack_task_arrays(items) -> TaskMixture:
    """Deprecated: :func:`ttscale.tasks.stack_mixtures`."""
    warnings.warn("ttscale.training.stack_task_arrays is deprecated; use ttscale.stack_mixtures", DeprecationWarning,
                  stacklevel=2)
    return stack_mixtures(items)


def __getattr__(name):
    if name == "TaskArrays":
        warnings.warn("ttscale.training.TaskArrays is deprecated; use ttscale.TaskMixture", DeprecationWarning, stacklevel=2)
        return TaskMixture
    raise AttributeError(f"module 'ttscale.training' has no attribute {name!r}")


def _validate_tasks(tasks: TaskMixture, config: TrainConfig, batched: bool) -> None:
    """Concrete checks of a (traced) task mixture against the static config (skipped under a trace)."""
    if not isinstance(tasks, TaskMixture):
        raise TypeError(f"tasks must be a ttscale.TaskMixture (ttscale.task_mixture), got {type(tasks).__name__}")
    if not _checks.is_concrete(tasks):
        return
    lead = 1 if batched else 0
    eig = tasks.covariances.eigenvalues
    if eig.ndim != 2 + lead or eig.shape[-2:] != (config.num_tasks, config.d):
        raise ValueError(
            f"tasks.covariances.eigenvalues must have shape {'[models, ' if batched else '['}{config.num_tasks}, {config.d}]"
            f" (num_tasks and d are static in the config), got {eig.shape}"
        )
    if not bool(jnp.all(jnp.isfinite(eig))) or bool(jnp.any(eig < 0)):
        raise ValueError("tasks.covariances.eigenvalues must be finite and non-negative")
    for name in ("lengths", "probs"):
        a = getattr(tasks, name)
        if a.shape != eig.shape[:-1]:
            raise ValueError(f"tasks.{name} must have shape {eig.shape[:-1]}, got {a.shape}")
    n = np.asarray(tasks.lengths)
    if np.any(~np.isfinite(n)) or np.any(n < 1) or np.any(n != np.round(n)):
        raise ValueError(f"tasks.lengths must hold whole prompt lengths >= 1, got {n.tolist()}")
    if np.any(n > config.n_max):
        raise ValueError(f"tasks.lengths has a length {n.max():g} > n_max={config.n_max}; raise TrainConfig.n_max")
    _check_simplex("tasks.probs", np.asarray(tasks.probs))


# ============================================================================ closed forms
def _task_matrices(tasks: TaskMixture) -> jax.Array:
    return tasks.covariances.matrix()  # [L, d, d]


def _label_moments(tasks: TaskMixture, noise) -> jax.Array:
    """``E[b bᵀ]`` of each task, ``b = X y / n``: ``E[S_n²] + σ² Λ / n`` (:func:`ttscale.theory.second_moment`) → ``[L, d, d]``."""
    mats = _task_matrices(tasks)
    noise = jnp.asarray(noise, mats.dtype)
    return jax.vmap(theory.second_moment)(mats, tasks.lengths) + (noise**2 / tasks.lengths)[:, None, None] * mats


def optimal_preconditioner(tasks: TaskMixture, noise=0.0) -> jax.Array:
    """The training optimum's preconditioner ``P = Λ̄ Q⁻¹`` → ``[d, d]`` (so ``V*[ŵ, x] = −P / c``).

    ``Λ̄ = Σ π_ℓ Λ_ℓ``, ``Q = Σ π_ℓ (Γ(Λ_ℓ, n_ℓ) Λ_ℓ + σ² Λ_ℓ / n_ℓ)``: :func:`ttscale.theory.mixture_preconditioner`
    (``Γ⁻¹`` for one noiseless task).
    """
    return mixture_preconditioner(tasks, noise)


def optimal_loss(tasks: TaskMixture, noise=0.0) -> jax.Array:
    """Training loss at the optimum: ``½ Σ_ℓ π_ℓ one_step_error(P, Λ_ℓ, m = n_ℓ, σ)`` with ``P`` = :func:`optimal_preconditioner`.

    (:func:`ttscale.theory.one_step_error`: ``d − 2 tr(PΛ_ℓ) + tr(P E[S²] Pᵀ) + σ² tr(P Λ_ℓ Pᵀ)/n_ℓ``.)
    For one task this is ``½ one_step_error(Γ⁻¹, Λ, m = n)``; at ``V = 0`` the loss is ``d / 2``.
    """
    P = optimal_preconditioner(tasks, noise)
    per_task = jax.vmap(lambda L, n: theory.one_step_error(P, L, n, noise))(_task_matrices(tasks), tasks.lengths)
    return 0.5 * jnp.sum(tasks.probs * per_task)


def curvature(tasks: TaskMixture, c=1.0, noise=0.0):
    """Hessian blocks of the loss in one row of ``V[ŵ, :]`` (module docstring).

    Returns ``(H_x [d, d], h_y)``: ``H_x = c² Q`` on the ``x`` columns and
    ``h_y = c² Σ π_ℓ (1 + 2/n_ℓ) ((tr Λ_ℓ + σ²)² + 2 tr Λ_ℓ²)`` on the ``y`` column.
    """
    mats = _task_matrices(tasks)
    Q = jnp.einsum("l,lij->ij", tasks.probs, _label_moments(tasks, noise))
    tr = jnp.trace(mats, axis1=-2, axis2=-1)
    tr_sq = jnp.sum(mats * mats, axis=(-2, -1))
    h_y = jnp.sum(tasks.probs * (1 + 2 / tasks.lengths) * ((tr + noise**2) ** 2 + 2 * tr_sq))
    c2 = jnp.asarray(c, Q.dtype) ** 2
    return c2 * Q, c2 * h_y


# ============================================================================ data and loss
class TrainBatch(NamedTuple):
    """Padded prompts: ``X [B, d, n_max]``, ``y [B, n_max]`` (zero beyond each ``n``), ``w [B, d]``,
    ``rho [B]`` (each prompt's own ``n``), ``task [B]`` (task index)."""

    X: jax.Array
    y: jax.Array
    w: jax.Array
    rho: jax.Array
    task: jax.Array


def sample_batch(key, tasks: TaskMixture, n_max: int, batch: int, noise=0.0) -> TrainBatch:
    """Draw ``batch`` prompts: task ``ℓ ~ Categorical(π)``, ``x_j ~ N(0, Λ_ℓ)`` for ``j < n_ℓ`` (zero columns
    after), ``w ~ N(0, I)``, ``y_j = <w, x_j> + σ ε_j``.

    ``key`` is split in two: the task draw (``jax.random.categorical``) and the normals, which are
    prompts ``0 .. batch − 1`` of :func:`ttscale.prompts.draw_normals` (the one counter-based sampler;
    ``noise = 0`` draws no ``ε``). The training loop passes ``key = fold_in(key, step)``.
    """
    k_task, k_data = jax.random.split(key)
    d = tasks.d
    dtype = tasks.dtype
    noisy = not (_checks.is_concrete(noise) and float(noise) == 0.0)
    Z, w, eps = prompts_mod.draw_normals(k_data, 0, batch, d, n_max, dtype, noisy)
    task = jax.random.categorical(k_task, jnp.log(tasks.probs), shape=(batch,))
    rho = tasks.lengths[task]
    mask = (jnp.arange(n_max, dtype=dtype)[None, :] < rho[:, None]).astype(dtype)  # [B, n_max]
    covs = jax.tree_util.tree_map(lambda a: a[task], tasks.covariances)
    X = jax.vmap(lambda cov, Z: cov.apply_sqrt(Z))(covs, Z) * mask[:, None, :]
    y = jnp.einsum("bdn,bd->bn", X, w)
    if eps is not None:
        y = (y + noise * eps) * mask
    return TrainBatch(X, y, w, rho, task)


def last_column(params: LSAParams, X: jax.Array, y: jax.Array, rho) -> jax.Array:
    """``f(E)[:, -1]`` for one prompt ``X [d, n]``, ``y [n]``, ``ŵ_0 = 0`` → ``[D]`` (:func:`ttscale.lsa.forward_last_column`)."""
    return lsa_mod.forward_last_column(params, lsa_mod.embed(X, y), rho)


def lsa_loss(params: LSAParams, batch: TrainBatch) -> jax.Array:
    """``mean_b ½ || f(E_b)[:, -1] − (0_d, 0, w_b, 1) ||²`` (docs/science.md §3), ``ρ_b`` = the prompt's ``n``."""
    cols = jax.vmap(last_column, in_axes=(None, 0, 0, 0))(params, batch.X, batch.y, batch.rho)
    target = lsa_mod.query_column(batch.w)
    return 0.5 * jnp.mean(jnp.sum((cols - target) ** 2, axis=-1))


# ============================================================================ parametrisation
def init_trainable(config: TrainConfig) -> dict:
    """Trainable pytree at the paper's initialisation: ``{"V": ...}`` plus ``"c"`` (tied) or ``"W"`` (free)."""
    dtype = config.jnp_dtype
    d, D = config.d, lsa_mod.embed_dim(config.d)
    theta = {"V": jnp.zeros((d, d) if config.v_mode == "block" else (D, D), dtype)}
    if config.w_mode == "tied":
        theta["c"] = jnp.asarray(config.c, dtype)
    elif config.w_mode == "free":
        theta["W"] = lsa_mod.paper_W(d, config.c, dtype)
    return theta


def params_from_trainable(theta: dict, config: TrainConfig) -> LSAParams:
    """Assemble :class:`~ttscale.lsa.LSAParams` from the trainable pytree."""
    d = config.d
    dtype = theta["V"].dtype
    if config.w_mode == "tied":
        W = lsa_mod.paper_W(d, theta["c"], dtype)
    elif config.w_mode == "free":
        W = theta["W"]
    else:
        W = lsa_mod.paper_W(d, config.c, dtype)
    if config.v_mode == "block":
        b = lsa_mod.blocks(d)
        V = jnp.zeros((lsa_mod.embed_dim(d),) * 2, dtype).at[b["w"], b["x"]].set(theta["V"])
    else:
        V = theta["V"]
    return LSAParams(W, V)


def _step_sizes(theta: dict, config: TrainConfig, tasks: TaskMixture):
    """Per-leaf step sizes for SGD (auto) or a scalar (user learning rate / Adam)."""
    if config.learning_rate is not None:
        return jax.tree_util.tree_map(lambda a: jnp.asarray(config.learning_rate, a.dtype), theta)
    if config.optimizer == "adam":
        return jax.tree_util.tree_map(lambda a: jnp.asarray(5e-2, a.dtype), theta)
    H_x, h_y = curvature(tasks, config.c, config.noise)
    eig = jnp.linalg.eigvalsh(H_x)
    lr_x = 2.0 / (eig[-1] + eig[0])
    lr_y = 1.0 / h_y
    steps = {}
    d, D = config.d, lsa_mod.embed_dim(config.d)
    if config.v_mode == "block":
        steps["V"] = lr_x
    else:
        b = lsa_mod.blocks(d)
        steps["V"] = jnp.full((D, D), lr_x).at[:, b["y"]].set(lr_y)
    if "c" in theta or "W" in theta:
        # curvature in c at the optimum: tr(P Q Pᵀ) / c² ... = c² H_x / c² seen through V* = −P/c
        P = optimal_preconditioner(tasks, config.noise)
        h_c = jnp.trace(P @ (H_x / config.c**2) @ P.T) / config.c**2
        lr_c = 1.0 / h_c
        if "c" in theta:
            steps["c"] = lr_c
        else:
            steps["W"] = jnp.full((D, D), lr_c)
    return jax.tree_util.tree_map(lambda s, a: jnp.asarray(s, a.dtype), steps, theta)


def _schedule(config: TrainConfig) -> Callable:
    total = config.steps
    end = config.final_lr_fraction
    if config.schedule == "constant":
        return lambda count: jnp.ones((), jnp.float32)
    if config.schedule == "linear":
        return optax.linear_schedule(1.0, end, total)
    return optax.cosine_decay_schedule(1.0, total, alpha=end)


def _scale_by_tree(tree) -> optax.GradientTransformation:
    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda g, s: g * s, updates, tree), state

    return optax.GradientTransformation(init, update)


def make_optimizer(config: TrainConfig, tasks: TaskMixture, theta: dict) -> optax.GradientTransformation:
    """The Optax transformation: ``sgd``: ``−lr ⊙ schedule(t) g``; ``adam``: ``−lr schedule(t) adam(g)``.

    ``lr`` is a pytree of step sizes (see :func:`_step_sizes`), computed from the traced ``tasks``.
    The state's structure does not depend on ``tasks``.
    """
    steps = _step_sizes(theta, config, tasks)
    parts = []
    if config.optimizer == "adam":
        parts.append(optax.scale_by_adam())
    parts += [_scale_by_tree(steps), optax.scale_by_schedule(_schedule(config)), optax.scale(-1.0)]
    return optax.chain(*parts)


# ============================================================================ the training loop
class TrainState(NamedTuple):
    """``theta`` (trainable pytree), ``opt_state`` (Optax), ``step`` (int32 scalar)."""

    theta: dict
    opt_state: object
    step: jax.Array


class TrainResult(NamedTuple):
    """``params``: trained :class:`~ttscale.lsa.LSAParams`; ``losses [steps]``: training loss per step;
    ``c``: effective scale ``−W[y, 1]`` (:func:`ttscale.lsa.effective_c`); ``preconditioner [d, d]``:
    ``P = −c V[ŵ, x]`` (:func:`ttscale.lsa.effective_preconditioner`).
    Under ``vmap`` every field gets a leading model axis."""

    params: LSAParams
    losses: jax.Array
    c: jax.Array
    preconditioner: jax.Array


def init_state(config: TrainConfig, tasks: TaskMixture | None = None) -> TrainState:
    tasks = config.mixture() if tasks is None else tasks
    theta = init_trainable(config)
    opt = make_optimizer(config, tasks, theta)
    return TrainState(theta, opt.init(theta), jnp.zeros((), jnp.int32))


def _run_steps(config: TrainConfig, state: TrainState, key, tasks: TaskMixture, length: int):
    """``length`` steps of SGD/Adam from ``state`` with one ``lax.scan``; steps ``≥ config.steps`` are no-ops
    (their loss is ``nan``), so one compiled chunk length serves a final partial chunk."""
    opt = make_optimizer(config, tasks, state.theta)
    grad_fn = jax.value_and_grad(lambda theta, batch: lsa_loss(params_from_trainable(theta, config), batch))

    def body(st: TrainState, _):
        batch = sample_batch(jax.random.fold_in(key, st.step), tasks, config.n_max, config.batch, config.noise)
        loss, grads = grad_fn(st.theta, batch)
        updates, opt_state = opt.update(grads, st.opt_state, st.theta)
        theta = optax.apply_updates(st.theta, updates)
        active = st.step < config.steps
        keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
        new = TrainState(
            jax.tree_util.tree_map(keep, theta, st.theta),
            jax.tree_util.tree_map(keep, opt_state, st.opt_state),
            st.step + active.astype(st.step.dtype),
        )
        return new, jnp.where(active, loss, jnp.nan)

    return jax.lax.scan(body, state, None, length=length)


def _result(config: TrainConfig, theta: dict, losses: jax.Array) -> TrainResult:
    params = params_from_trainable(theta, config)
    return TrainResult(params, losses, lsa_mod.effective_c(params), lsa_mod.effective_preconditioner(params))


def make_train(config: TrainConfig) -> Callable:
    """``train(key, tasks=None) -> TrainResult``: the whole run as one jit-compiled ``lax.scan``.

    ``tasks`` (:class:`~ttscale.tasks.TaskMixture`, default ``config.mixture()``) is traced, so
    ``jax.jit(jax.vmap(train))(keys, stack_mixtures([...]))`` trains one model per (key, tasks) row in a
    single compiled call, identical to separate runs. Step ``t`` uses prompts from ``fold_in(key, t)``.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    default_tasks = config.mixture()

    @jax.jit
    def _train(key, tasks):
        state = init_state(config, tasks)
        state, losses = _run_steps(config, state, key, tasks, config.steps)
        return _result(config, state.theta, losses)

    def train(key, tasks: TaskMixture | None = None) -> TrainResult:
        _checks.check_prng_key("key", key)
        tasks = default_tasks if tasks is None else tasks
        _validate_tasks(tasks, config, batched=False)
        result = _train(key, tasks)
        if _checks.is_concrete(result):  # under jit/vmap the caller checks (make_train_batched does)
            check_finite_result(config, result)
        return result

    train.config = config
    return train


def make_train_batched(config: TrainConfig) -> Callable:
    """``train_many(keys [M], tasks [M, ...]) -> TrainResult`` with a leading model axis: ``jit(vmap(train))``
    with the concrete checks done once up front."""
    train = make_train(config)
    batched = jax.jit(jax.vmap(train))

    def train_many(keys, tasks: TaskMixture) -> TrainResult:
        _validate_tasks(tasks, config, batched=True)
        if keys.shape[:1] != tasks.lengths.shape[:1]:
            raise ValueError(f"keys has {keys.shape[:1]} models but tasks has {tasks.lengths.shape[:1]}")
        result = batched(keys, tasks)
        if _checks.is_concrete(result):
            check_finite_result(config, result)
        return result

    return train_many


# ============================================================================ divergence
@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def _divergence(config: TrainConfig, step: int, loss: float, what: str = "training",
                out: str | None = None) -> FloatingPointError:
    """The error for a run whose loss (or, with a finite ``loss``, whose parameters) stopped being finite at
    ``step`` (1-based)."""
    lr = "auto, the optimal SGD step" if config.learning_rate is None else f"{config.learning_rate:g}"
    seen = f"loss {loss:.3g}" if not np.isfinite(loss) else f"loss {loss:.3g}, parameters not finite"
    kept = "" if out is None else f"; nothing non-finite was written to {out}: rerun with a lower rate and a fresh out directory"
    return FloatingPointError(
        f"{what} diverged at step {step} of {config.steps} ({seen}): lower learning_rate "
        f"(now {lr}; ttscale train --lr){kept}")


def check_finite_result(config: TrainConfig, result: TrainResult) -> None:
    """Raise ``FloatingPointError`` (saying at which step, and what to change) if a concrete :class:`TrainResult`
    of ``config`` (one model, or a leading model axis) holds a non-finite loss or parameter."""
    if bool(_all_finite((result.losses, result.params))):
        return
    losses = np.asarray(result.losses, np.float64).reshape(-1, config.steps)
    M = losses.shape[0]
    params_ok = np.ones(M, bool)
    for leaf in jax.tree_util.tree_leaves(result.params):
        params_ok &= np.all(np.isfinite(np.asarray(leaf).reshape(M, -1)), axis=1)
    bad_loss = ~np.isfinite(losses)
    bad = bad_loss.any(axis=1) | ~params_ok
    m = int(np.argmax(bad))
    step = int(np.argmax(bad_loss[m])) + 1 if bad_loss[m].any() else config.steps
    what = "training" if result.losses.ndim == 1 else f"training of model {m} ({int(bad.sum())} of {M} models diverged)"
    raise _divergence(config, step, float(losses[m, step - 1]), what)


# ============================================================================ files
def save_params(path: str, params: LSAParams, config: TrainConfig | None = None, **extra) -> None:
    """Write ``W``, ``V`` (bit-exact) and the config JSON to one ``.npz`` file, atomically.

    ``extra`` arrays (e.g. ``losses``) are stored beside them.
    """
    if not isinstance(params, LSAParams):
        raise TypeError(f"params must be ttscale.LSAParams, got {type(params).__name__}")
    arrays = {"W": np.asarray(params.W), "V": np.asarray(params.V), "format_version": np.asarray(FORMAT_VERSION)}
    if config is not None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        arrays["config_json"] = np.asarray(config.to_json())
    for name, value in extra.items():
        arrays[name] = np.asarray(value)
    store.save_npz(path, **arrays)


def load_params(path: str) -> LSAParams:
    """Read the :class:`~ttscale.lsa.LSAParams` written by :func:`save_params`."""
    with np.load(path) as data:
        if "W" not in data or "V" not in data:
            raise ValueError(f"{path} is not a ttscale parameter file (no W/V arrays)")
        return LSAParams(jnp.asarray(data["W"]), jnp.asarray(data["V"]))


def load_config(path: str) -> TrainConfig | None:
    """The :class:`TrainConfig` stored by :func:`save_params` (``None`` if none was stored)."""
    with np.load(path) as data:
        if "config_json" not in data:
            return None
        return TrainConfig.from_json(str(data["config_json"]))


def load_array(path: str, name: str) -> np.ndarray:
    """An extra array stored by :func:`save_params` (e.g. ``"losses"``)."""
    with np.load(path) as data:
        return np.asarray(data[name])


CHECKPOINT = "checkpoint.npz"
PARAMS = "params.npz"
CONFIG = "config.json"


def _save_checkpoint(path: str, state: TrainState, losses: np.ndarray, key, config: TrainConfig) -> None:
    """Parameters, optimiser state, step, losses, key and the config JSON (checked on resume) to ``path``, atomically."""
    leaves = jax.tree_util.tree_leaves((state.theta, state.opt_state))
    arrays = {f"leaf_{i}": np.asarray(a) for i, a in enumerate(leaves)}
    store.save_npz(
        path,
        step=np.asarray(state.step),
        losses=np.asarray(losses),
        key_data=np.asarray(jax.random.key_data(key)),
        config_json=np.asarray(config.to_json()),
        format_version=np.asarray(FORMAT_VERSION),
        **arrays,
    )


def _config_diff(saved: dict, current: dict) -> list[str]:
    """The fields in which two :meth:`TrainConfig.to_dict` dicts differ, as ``"name (saved → current)"``."""
    out = []
    for name in sorted(set(saved) | set(current)):
        a, b = saved.get(name, "<absent>"), current.get(name, "<absent>")
        if a == b:
            continue
        if name == "tasks" and isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (ta, tb) in enumerate(zip(a, b)):
                out += [f"tasks[{i}].{f}" + (f" ({ta.get(f)!r} → {tb.get(f)!r})" if f == "n" else "")
                        for f in sorted(set(ta) | set(tb)) if ta.get(f) != tb.get(f)]
        elif name == "tasks":
            out.append(f"tasks ({len(a) if isinstance(a, list) else a} → {len(b) if isinstance(b, list) else b} tasks)")
        else:
            out.append(f"{name} ({a!r} → {b!r})")
    return out


def _check_same_config(out: str, source: str, saved_json: str, config: TrainConfig) -> None:
    """``ValueError`` naming ``out`` and the differing fields unless ``saved_json`` (from ``source``) is ``config``'s."""
    try:
        saved = json.loads(saved_json)
    except (json.JSONDecodeError, TypeError):
        raise ValueError(f"{out}: {source} holds an unreadable config; use a fresh out directory") from None
    current = json.loads(config.to_json())
    if saved == current:
        return
    try:  # an older file (fields added since take their defaults) or float32-rounded eigenvalues
        if TrainConfig.from_dict(saved) == config:
            return
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    fields = ", ".join(_config_diff(saved, current) if isinstance(saved, dict) else ["the whole config"])
    raise ValueError(f"{out} holds a training run with a different config ({source}; differing fields: {fields}); "
                     "use a fresh out directory, or rerun with the original settings to resume")


def _load_checkpoint(out: str, template: TrainState, key, config: TrainConfig, config_checked: bool):
    """The :class:`TrainState` and losses of ``out/checkpoint.npz``, refused (``ValueError`` naming ``out``) when it
    was written under another config or key, holds non-finite values (a diverged run) or cannot be read.
    A checkpoint from before configs were stored in it is accepted only when ``out/config.json`` matched
    (``config_checked``)."""
    path = os.path.join(out, CHECKPOINT)
    try:
        with np.load(path) as data:
            arrays = {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError, EOFError, KeyError) as exc:
        raise ValueError(f"{out}: {CHECKPOINT} cannot be read ({exc}); delete it to restart the run") from None
    if "config_json" in arrays:
        _check_same_config(out, CHECKPOINT, str(arrays["config_json"]), config)
    elif not config_checked:
        raise ValueError(f"{out}: {CHECKPOINT} holds no config (an older ttscale wrote it) and {CONFIG} is missing, "
                         "so it cannot be checked against this run; use a fresh out directory")
    if "key_data" not in arrays or not np.array_equal(arrays["key_data"], np.asarray(jax.random.key_data(key))):
        raise ValueError(f"{path} was written with a different key/seed; use a fresh out directory")
    treedef = jax.tree_util.tree_structure((template.theta, template.opt_state))
    try:
        leaves = [jnp.asarray(arrays[f"leaf_{i}"]) for i in range(treedef.num_leaves)]
        step, losses = arrays["step"], arrays["losses"]
    except KeyError as exc:
        raise ValueError(f"{out}: {CHECKPOINT} is incomplete (no {exc}); delete it to restart the run") from None
    if not (all(np.all(np.isfinite(np.asarray(a))) for a in leaves) and np.all(np.isfinite(losses))):
        raise ValueError(f"{out}: {CHECKPOINT} holds non-finite values (a diverged run); use a fresh out directory")
    theta, opt_state = jax.tree_util.tree_unflatten(treedef, leaves)
    return TrainState(theta, opt_state, jnp.asarray(step, jnp.int32)), losses


@functools.lru_cache(maxsize=32)
def _chunk_runner(config: TrainConfig, chunk: int) -> Callable:
    """One compiled ``chunk``-step function per (config, chunk), reused across chunks and across
    :func:`fit` calls (the config hashes through its JSON)."""
    return jax.jit(lambda st, k, t: _run_steps(config, st, k, t, chunk))


def fit(
    config: TrainConfig,
    key,
    out: str | None = None,
    chunk: int = 100,
    progress: bool = True,
    callback: Callable | None = None,
) -> TrainResult:
    """Train in chunks of ``chunk`` steps (one compiled chunk function reused), with a tqdm bar.

    With ``out``: writes ``out/config.json``; after each chunk an atomic ``out/checkpoint.npz``
    (parameters, optimiser state, step, losses); at the end ``out/params.npz`` (:func:`save_params`, with
    ``losses``). Rerunning with the same ``out``, config and key resumes from the last checkpoint and
    gives bit-identical results to an uninterrupted run. ``callback(step, losses_so_far)`` runs after each
    chunk (after the checkpoint). The result equals ``make_train(config)(key)`` up to XLA round-off.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    _checks.check_prng_key("key", key)
    chunk = _checks.static_int("chunk", chunk, minimum=1)
    chunk = min(chunk, config.steps)
    tasks = config.mixture()
    _validate_tasks(tasks, config, batched=False)
    state = init_state(config, tasks)
    losses = np.zeros((0,), np.dtype(config.dtype))
    if out is not None:

        out = store.prepare_out_dir("out", os.fspath(out))
        cfg_path = os.path.join(out, CONFIG)
        has_config = os.path.exists(cfg_path)
        if has_config:
            with open(cfg_path) as fh:
                _check_same_config(out, CONFIG, fh.read(), config)
        if os.path.exists(os.path.join(out, CHECKPOINT)):
            state, losses = _load_checkpoint(out, state, key, config, config_checked=has_config)
        if not has_config:
            with store.atomic_file(cfg_path) as fh:
                fh.write(config.to_json().encode())

    run_chunk = _chunk_runner(config, chunk)
    start = int(state.step)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start, desc="train", unit="step")
    try:
        while int(state.step) < config.steps:
            state, chunk_losses = run_chunk(state, key, tasks)
            done = int(state.step)
            chunk_losses = np.asarray(chunk_losses)[: done - len(losses)]
            bad = ~np.isfinite(chunk_losses)
            if bad.any() or not bool(_all_finite(state.theta)):  # never checkpoint or return a diverged state
                i = int(np.argmax(bad)) if bad.any() else len(chunk_losses) - 1
                raise _divergence(config, len(losses) + i + 1, float(chunk_losses[i]), out=out)
            losses = np.concatenate([losses, chunk_losses])
            if out is not None:
                _save_checkpoint(os.path.join(out, CHECKPOINT), state, losses, key, config)
            if bar is not None:
                bar.update(len(chunk_losses))
                bar.set_postfix(loss=f"{losses[-1]:.4g}")
            if callback is not None:
                callback(done, losses)
    finally:
        if bar is not None:
            bar.close()
    result = _result(config, state.theta, jnp.asarray(losses))
    if out is not None:
        save_params(os.path.join(out, PARAMS), result.params, config, losses=losses, c=np.asarray(result.c))
    return result


def relative_error(P_learned, P_target) -> jax.Array:
    """``||P_learned − P_target||_F / ||P_target||_F`` (over the last two axes)."""
    diff = jnp.sqrt(jnp.sum((P_learned - P_target) ** 2, axis=(-2, -1)))
    return diff / jnp.sqrt(jnp.sum(P_target**2, axis=(-2, -1)))


# ============================================================================ any model, through the protocol
class ModelTrainResult(NamedTuple):
    """``params``: the trained parameter pytree; ``losses [steps]``: the training loss per step."""

    params: object
    losses: jax.Array


def make_model_train(model, tasks, steps: int, batch: int, optimizer: optax.GradientTransformation,
                     k: int = 1, noise: float = 0.0) -> Callable:
    """``train(key, params0) -> ModelTrainResult``: Optax training of any statistics-reading model of :mod:`ttscale.models`.

    The loss is the CoT error after ``k`` steps on fresh training prompts (``k = 1``: the paper's
    no-CoT training, ``½ E ||ŵ_1 − w||²``; larger ``k`` trains through the rollout):

        L(θ) = Σ_ℓ π_ℓ · ½ mean_b ||ŵ_k(θ; prompt_b) − w_b||²,   prompts of task ℓ: length n_ℓ, x ~ N(0, Λ_ℓ),

    computed with ``model.errors(θ, stats, k)[:, k]`` on :func:`ttscale.prompts.sample_statistics`,
    so a new model trains with no code here. Each step draws ``round(batch · π_ℓ)`` prompts of
    task ``ℓ`` (stratified: an unbiased loss with no variance from the task draw) from
    ``fold_in(fold_in(key, step), ℓ)``. ``tasks``: a concrete :class:`~ttscale.tasks.TaskMixture`
    (whole lengths; a list of ``(covariance, n, π)`` triples is deprecated). Every leaf of ``params0`` is trained (wrap the model to freeze some).
    The whole run is one ``jit``-compiled ``lax.scan``; ``vmap`` over keys trains many seeds.
    """
    from ttscale.models import check_model

    model = check_model("model", model)
    if model.reads != "statistics":
        raise ValueError(f"model {model.name!r} reads raw prompts; make_model_train trains statistics-reading models")
    steps = _checks.static_int("steps", steps, minimum=1)
    batch = _checks.static_int("batch", batch, minimum=1)
    k = _checks.static_int("k", k, minimum=1)
    noise = _finite_float("noise", noise)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    if isinstance(tasks, (list, tuple)):
        warnings.warn("make_model_train(tasks=[(cov, n, prob), ...]) is deprecated; pass ttscale.task_mixture(covs, ns, probs)",
                      DeprecationWarning, stacklevel=2)
        if not tasks:
            raise ValueError("tasks must hold at least one task")
        for i, task in enumerate(tasks):
            if not isinstance(task, (list, tuple)) or len(task) != 3:
                raise TypeError(f"tasks[{i}] must be a (covariance, n, probability) triple, got {task!r}")
            if not isinstance(task[0], Covariance) or task[0].eigenvalues.ndim != 1:
                raise TypeError(f"tasks[{i}][0] must be one ttscale.Covariance")
        tasks = task_mixture([t[0] for t in tasks], [_checks.static_int(f"tasks[{i}] n", t[1], minimum=1)
                                                     for i, t in enumerate(tasks)], [t[2] for t in tasks])
    if not isinstance(tasks, TaskMixture):
        raise TypeError(f"tasks must be a ttscale.TaskMixture (ttscale.task_mixture), got {type(tasks).__name__}")
    if not _checks.is_concrete(tasks) or tasks.covariances.eigenvalues.ndim != 2:
        raise ValueError("tasks must be one concrete TaskMixture (eigenvalues [L, d]): the per-task batch sizes are static")
    lengths, probs_np = np.asarray(tasks.lengths, np.float64), np.asarray(tasks.probs, np.float64)
    parsed = [(tasks.task(i), _checks.static_int(f"tasks.lengths[{i}]", float(lengths[i]), minimum=1), float(probs_np[i]))
              for i in range(tasks.size)]
    counts = [max(1, int(round(batch * p))) for _, _, p in parsed if p > 0]
    parsed = [t for t in parsed if t[2] > 0]

    def loss_fn(params, key):
        total = 0.0
        for ell, ((cov, n, prob), count) in enumerate(zip(parsed, counts)):
            stats = prompts_mod.sample_statistics(jax.random.fold_in(key, ell), cov, n, count, noise)
            total = total + prob * 0.5 * jnp.mean(model.errors(params, stats, k)[:, k])
        return total

    grad_fn = jax.value_and_grad(loss_fn)

    @jax.jit
    def train(key, params0) -> ModelTrainResult:
        def body(carry, step):
            params, opt_state = carry
            loss, grads = grad_fn(params, jax.random.fold_in(key, step))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(body, (params0, optimizer.init(params0)), jnp.arange(steps))
        return ModelTrainResult(params, losses)

    return train
