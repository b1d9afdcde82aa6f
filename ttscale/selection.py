"""Task selection for multi-task training (docs/science.md §7, Proposition 4.3 of arXiv 2510.03605).

A **task pool** is a :class:`ttscale.tasks.TaskMixture` of ``L`` training tasks, task ``ℓ`` with
covariance ``Λ_ℓ`` and prompt length ``n_ℓ`` (its ``probs`` are what the criteria choose; they ignore the
pool's own). This module is the pure core — pools, targets, the QPs, the exact objective, solvers, baselines;
the studies over many pools live in :mod:`ttscale.experiments.task_selection`. Training on the mixture ``π`` (one task per prompt, task ``ℓ`` with probability ``π_ℓ``)
learns the preconditioner (docs/science.md §7, :func:`ttscale.theory.mixture_preconditioner`)

    P(π) = Λ̄ Q⁻¹,   Λ̄ = Σ_ℓ π_ℓ Λ_ℓ,   Q = Σ_ℓ π_ℓ Γ(Λ_ℓ, n_ℓ) Λ_ℓ.

Three criteria pick ``π`` on the simplex ``Δ_L`` for a target covariance ``Σ``:

* ``"qp"`` — the paper's convex QP  ``min_π ||I − Σ⁻¹ Σ_ℓ π_ℓ Λ_ℓ||_F²`` (ignores ``n_ℓ``);
* ``"qp-length"`` — the same with ``Γ(Λ_ℓ, n_ℓ) = (1 + 1/n_ℓ)Λ_ℓ + (tr Λ_ℓ/n_ℓ) I`` in place of ``Λ_ℓ``;
* ``"exact"`` — the ``m → ∞`` test error of ``P(π)`` itself,
  ``E_k(π) = ||(I − P(π)Σ)^k||_F²`` (:func:`ttscale.theory.limit_error`), at one ``k`` or summed
  over ``k = 1..K``; non-convex, minimised by projected gradient (``jax.grad``) from the uniform
  mixture.

Both QPs are written ``f(π) = d − 2 bᵀπ + πᵀ H π`` with ``A_ℓ = Σ⁻¹ M_ℓ``, ``H_ℓm = ⟨A_ℓ, A_m⟩_F``,
``b_ℓ = tr A_ℓ`` and solved by accelerated projected gradient (FISTA with adaptive restart,
step ``1/(2 λ_max(H))``, ``optax.projections.projection_simplex``) for a fixed number of
iterations in one ``lax.scan``. Every solver is a pure function of arrays: ``jit`` it, and
``vmap`` it over a stack of pools and targets (see :func:`random_pools`).

**Two readings of the paper's pool** (replaceable generators): four task types ``(α, B)`` — Easy-Short
(0.2, 20), Hard-Short (0.8, 20), Easy-Long (0.2, 100), Hard-Long (0.8, 100) — with ``α`` the power-law
exponent of the spectrum (``λ_i ∝ i^{-α}``, ``tr Λ = d``). :func:`paper_pool` reads ``B`` as the training
prompt length ``n``; :func:`dataset_pool` reads it as the *number of training prompts* (the companion paper's
notation, arXiv 2603.01293): ``B`` prompts of one common length ``n``, so each task's covariance is the
empirical covariance of its ``B·n`` sampled ``x`` (:func:`empirical_covariance`). Both are readings of a
generator the paper does not publish; every function that builds pools takes the generator as an argument.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from optax.projections import projection_simplex

from ttscale import _checks, theory
from ttscale.spectra import Covariance, as_covariance, check_covariance, power_law
from ttscale.tasks import TaskMixture, check_mixture, mixture_preconditioner, task_mixture

CRITERIA = ("qp", "qp-length", "exact")
BASELINES = ("uniform", "easy-only", "relevant-only", "hard-only")
AGGREGATES = ("sum", "at")

#: Our reading of the paper's four task types: ``(name, α = power-law exponent, B = prompt length n)``.
PAPER_TASK_TYPES: tuple[tuple[str, float, int], ...] = (
    ("Easy-Short", 0.2, 20),
    ("Hard-Short", 0.8, 20),
    ("Easy-Long", 0.2, 100),
    ("Hard-Long", 0.8, 100),
)
#: The ranking by mean selected probability reported in the paper (first = most selected).
PAPER_RANKING: tuple[str, ...] = ("Hard-Long", "Hard-Short", "Easy-Long", "Easy-Short")


# ============================================================================ task pools
def __getattr__(name):
    if name == "TaskPool":
        warnings.warn("ttscale.selection.TaskMixture is deprecated; a pool is a ttscale.TaskMixture (ttscale.task_mixture)",
                      DeprecationWarning, stacklevel=2)
        return TaskMixture
    raise AttributeError(f"module 'ttscale.selection' has no attribute {name!r}")


def task_pool(covs, ns, kinds=None, kind_names: Sequence[str] = (), dtype=None) -> TaskMixture:
    """Deprecated: :func:`ttscale.tasks.task_mixture` (``labels`` name the tasks; equal labels form one type).

    ``kinds [L]`` (ints into ``kind_names``, ``-1`` = none) become the labels ``kind_names[kinds[ℓ]]``
    (``task{ℓ}`` for ``-1``)."""
    warnings.warn("ttscale.selection.task_pool is deprecated; use ttscale.task_mixture(covariances, lengths, labels=...)",
                  DeprecationWarning, stacklevel=2)
    kind_names = tuple(str(k) for k in kind_names)
    labels = None
    if kinds is not None:
        kinds_np = np.asarray(kinds)
        if kinds_np.dtype.kind not in "iu":
            raise TypeError(f"kinds must be integer labels, got dtype {kinds_np.dtype}")
        if kind_names and (kinds_np.min() < -1 or kinds_np.max() >= len(kind_names)):
            raise ValueError(f"kinds must lie in -1..{len(kind_names) - 1} (one of kind_names), got {kinds_np}")
        labels = [kind_names[k] if 0 <= k < len(kind_names) else f"task{i}" for i, k in enumerate(kinds_np.tolist())]
    return task_mixture(covs, ns, labels=labels, dtype=dtype)


def _small_rotation(key, d: int, angle, dtype) -> jax.Array:
    """A random rotation near ``I``: the Cayley transform ``(I − A)⁻¹(I + A)``, ``A = (angle/2) K``,
    ``K`` a random skew-symmetric matrix scaled so that ``||K||_F = √2`` (a plane rotation by
    ``angle`` radians when ``d = 2``); ``≈ exp(angle · K)`` for small angles, exactly orthogonal."""
    G = jax.random.normal(key, (d, d), dtype=dtype)
    K = (G - G.T) / 2
    K = K / jnp.maximum(jnp.sqrt(jnp.sum(K * K) / 2), 1e-30)
    A = (angle / 2) * K
    eye = jnp.eye(d, dtype=dtype)
    return jnp.linalg.solve(eye - A, eye + A)


def paper_pool(key, d: int = 10, per_type: int = 1, alpha_jitter: float = 0.05, rotation: float = 0.2,
               types: Sequence[tuple[str, float, int]] = PAPER_TASK_TYPES, dtype=jnp.float32) -> TaskMixture:
    """Our reading of the paper's pool: ``per_type`` tasks of each type ``(name, α, B)``.

    Task ``ℓ`` of type ``(α, B)`` has spectrum ``λ_i ∝ i^{-(α + δ_ℓ)}`` (``tr = d``,
    ``δ_ℓ ~ U[−alpha_jitter, alpha_jitter]``), eigenbasis ``≈ exp(rotation · K_ℓ)`` (a random
    rotation of angle ≈ ``rotation`` radians away from the coordinate axes, Cayley transform; 0 = axes) and
    prompt length ``n_ℓ = B``; uniform ``probs``. Traceable in ``key`` (``vmap`` it for many pools). Tasks are
    ordered type by type and labelled with the type's name.
    """
    _checks.check_prng_key("key", key)
    d = _checks.static_int("d", d, minimum=1)
    per_type = _checks.static_int("per_type", per_type, minimum=1)
    types = tuple((str(name), float(a), float(B)) for name, a, B in types)
    if not types:
        raise ValueError("types must list at least one (name, alpha, B) task type")
    return _paper_pool_core(key, jnp.asarray(alpha_jitter, dtype), jnp.asarray(rotation, dtype), d, per_type,
                            types, jnp.dtype(dtype))


def _population_covariances(key, alpha_jitter, rotation, d, per_type, types, dtype) -> Covariance:
    """The pool's population covariances ``[L, d]``: type ``(α, ·)`` → ``λ_i ∝ i^{-(α + δ_ℓ)}`` (``tr = d``), rotated."""
    L = len(types) * per_type
    alphas = jnp.repeat(jnp.asarray([a for _, a, _ in types], dtype), per_type)
    k_alpha, k_rot = jax.random.split(key)
    alphas = alphas + alpha_jitter * jax.random.uniform(k_alpha, (L,), dtype, -1.0, 1.0)
    eig = power_law(d, alphas, dtype=dtype).eigenvalues
    basis = jax.vmap(lambda k: _small_rotation(k, d, rotation, dtype))(jax.random.split(k_rot, L))
    return Covariance(eig, basis)


@functools.partial(jax.jit, static_argnames=("d", "per_type", "types", "dtype"))
def _paper_pool_core(key, alpha_jitter, rotation, d, per_type, types, dtype) -> TaskMixture:
    L = len(types) * per_type
    ns = jnp.repeat(jnp.asarray([B for _, _, B in types], dtype), per_type)
    cov = _population_covariances(key, alpha_jitter, rotation, d, per_type, types, dtype)
    labels = tuple(name for name, _, _ in types for _ in range(per_type))
    return TaskMixture(cov, ns, jnp.full((L,), 1.0 / L, dtype), labels)


def empirical_covariance(key, cov: Covariance, samples: int) -> Covariance:
    """The empirical (uncentred, the mean is known to be 0) covariance of ``samples`` draws ``x ~ N(0, Λ)``:

        Λ̂ = (1/N) Σ_{j=1..N} x_j x_jᵀ = A (Z Zᵀ / N) Aᵀ,   x_j = A z_j,  A Aᵀ = Λ  (:meth:`Covariance.root`),

    ``Z [d, N]`` standard normals from ``key``, ``N = samples`` (static). ``cov``: one covariance
    (eigenvalues ``[d]``). Returns ``Λ̂`` eigendecomposed (``eigh``; round-off negatives clipped to 0, so it
    is PSD; rank ``min(N, d)``), ``E Λ̂ = Λ`` and ``Λ̂ → Λ`` as ``N → ∞`` (relative error ``O(√(d/N))``).
    Traceable in ``key`` and ``cov``; ``vmap`` it over tasks.
    """
    _checks.check_prng_key("key", key)
    samples = _checks.static_int("samples", samples, minimum=1)
    if not isinstance(cov, Covariance):
        raise TypeError(f"cov must be a ttscale.Covariance, got {type(cov).__name__}")
    if cov.eigenvalues.ndim != 1:
        raise ValueError(f"cov must be one covariance (vmap for many), got eigenvalues of shape {cov.eigenvalues.shape}")
    return _empirical_covariance_core(key, cov, samples)


@functools.partial(jax.jit, static_argnames=("samples",))
def _empirical_covariance_core(key, cov: Covariance, samples: int) -> Covariance:
    return _eigendecomposed(_empirical_moment(key, cov, samples))


def _empirical_moment(key, cov: Covariance, samples: int) -> jax.Array:
    """``Λ̂ = X Xᵀ / N [d, d]`` (symmetrised), ``X = A Z``, ``Z [d, N]`` standard normals from ``key``."""
    d, dtype = cov.d, cov.dtype
    X = cov.apply_sqrt(jax.random.normal(key, (d, samples), dtype))  # [d, N], columns ~ N(0, Λ)
    M = (X @ X.T) / samples
    return (M + M.T) / 2


def _eigendecomposed(M) -> Covariance:
    """``Λ̂ [..., d, d]`` as a :class:`Covariance` (``eigh``; round-off negatives clipped to 0)."""
    eig, U = jnp.linalg.eigh(M)
    return Covariance(jnp.clip(eig, 0.0, None), U)


def dataset_pool(key, d: int = 10, per_type: int = 1, n: int = 20, alpha_jitter: float = 0.05, rotation: float = 0.2,
                 types: Sequence[tuple[str, float, int]] = PAPER_TASK_TYPES, dtype=jnp.float32) -> TaskMixture:
    """The other reading of the paper's pool: ``B`` is the **number of training prompts**, ``n`` their common length.

    Task ``ℓ`` of type ``(α, B)`` has the population covariance of :func:`paper_pool` (``λ_i ∝ i^{-(α + δ_ℓ)}``,
    ``tr = d``, ``δ_ℓ ~ U[−alpha_jitter, alpha_jitter]``, basis rotated by ≈ ``rotation`` rad) and a finite
    training set of ``B`` prompts of length ``n``: its covariance is the empirical covariance
    ``Λ̂_ℓ = (1/(B n)) Σ_j x_j x_jᵀ`` of its ``B·n`` sampled ``x`` (:func:`empirical_covariance`), which the
    selection criteria see and training samples from; prompt length ``n_ℓ = n`` for every task; uniform
    ``probs``. So "Short" (small ``B``) tasks carry a noisier covariance, not a shorter prompt. Traceable in
    ``key`` (``vmap`` it for many pools); deterministic given ``key``. Tasks are ordered type by type and
    labelled with the type's name. Like :func:`paper_pool` this is a reading of a generator the paper does not
    publish (docs/science.md §7).
    """
    _checks.check_prng_key("key", key)
    d = _checks.static_int("d", d, minimum=1)
    per_type = _checks.static_int("per_type", per_type, minimum=1)
    n = _checks.static_int("n", n, minimum=1)
    types = tuple((str(name), float(a), float(B)) for name, a, B in types)
    if not types:
        raise ValueError("types must list at least one (name, alpha, B) task type")
    for name, _, B in types:
        if B != round(B) or B < 1:
            raise ValueError(f"types: B (the number of training prompts) must be a whole number ≥ 1, got {B:g} for {name!r}")
    return _dataset_pool_core(key, jnp.asarray(alpha_jitter, dtype), jnp.asarray(rotation, dtype), d, per_type, n,
                              types, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames=("d", "per_type", "n", "types", "dtype"))
def _dataset_pool_core(key, alpha_jitter, rotation, d, per_type, n, types, dtype) -> TaskMixture:
    L = len(types) * per_type
    k_pop, k_x = jax.random.split(key)
    pop = _population_covariances(k_pop, alpha_jitter, rotation, d, per_type, types, dtype)
    keys = jax.random.split(k_x, L)
    moments = []
    for t, (_, _, B) in enumerate(types):  # one sample size per type (static): vmap the tasks of that type
        sl = slice(t * per_type, (t + 1) * per_type)
        part = jax.tree_util.tree_map(lambda a: a[sl], pop)
        moments.append(jax.vmap(lambda k, c: _empirical_moment(k, c, int(B) * n))(keys[sl], part))
    # One eigh of all L tasks, not one per type: XLA's CPU runtime runs independent custom calls concurrently, and
    # jaxlib's batched LAPACK kernels then wait on the same intra-op thread pool that runs them. With several
    # large batches at once (``random_pools`` of 1024 pools on 2 cores) every pool thread waited and the program
    # never finished. The same numbers: each matrix's eigh does not depend on the batch it is in.
    emp = _eigendecomposed(jnp.concatenate(moments))
    labels = tuple(name for name, _, _ in types for _ in range(per_type))
    return TaskMixture(emp, jnp.full((L,), float(n), dtype), jnp.full((L,), 1.0 / L, dtype), labels)


#: The pool generators for the two readings of ``(α, B)``: ``B`` = prompt length (:func:`paper_pool`) or
#: ``B`` = number of training prompts (:func:`dataset_pool`).
READINGS = {"length": paper_pool, "count": dataset_pool}


def power_law_target(key, d: int = 10, alpha=0.8, rotation: float = 0.2, dtype=jnp.float32) -> Covariance:
    """A target ``Σ``: power law ``λ_i ∝ i^{-alpha}`` (``tr = d``) in a basis rotated by ≈ ``rotation`` rad.

    ``alpha`` may be traced (``vmap`` over random exponents for many targets).
    """
    _checks.check_prng_key("key", key)
    d = _checks.static_int("d", d, minimum=1)
    return _power_law_target_core(key, jnp.asarray(alpha, dtype), jnp.asarray(rotation, dtype), d, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames=("d", "dtype"))
def _power_law_target_core(key, alpha, rotation, d, dtype) -> Covariance:
    eig = power_law(d, alpha, dtype=dtype).eigenvalues
    return Covariance(eig, _small_rotation(key, d, rotation, dtype))


def random_pools(key, num: int, generator: Callable = paper_pool, **kwargs) -> TaskMixture:
    """``num`` pools stacked on a leading axis: ``jax.vmap(lambda k: generator(k, **kwargs))``."""
    num = _checks.static_int("num", num, minimum=1)
    return jax.vmap(lambda k: generator(k, **kwargs))(jax.random.split(key, num))


# ============================================================================ the target
def _as_target(test, d: int, dtype) -> Covariance:
    """Validate ``Σ`` (a :class:`Covariance` or dense matrix) with NumPy only (safe inside traces).

    ``ValueError`` if ``Σ`` has the wrong ``d``, is not PSD, or is singular (the criteria need ``Σ⁻¹``).
    """
    if not isinstance(test, Covariance):
        test = as_covariance("test", test)
    check_covariance("test", test)  # real dtype, finite values, orthonormal basis (however it was built)
    if test.d != d:
        raise ValueError(f"test has dimension d={test.d} but the pool's tasks have d={d}")
    if test.eigenvalues.ndim != 1:
        raise ValueError(f"test must be one covariance (vmap for many), got eigenvalues of shape {test.eigenvalues.shape}")
    if _checks.is_concrete(test.eigenvalues):
        eig = np.asarray(test.eigenvalues, dtype=np.float64)
        if not np.all(np.isfinite(eig)):
            raise ValueError("test has non-finite eigenvalues (nan or inf)")
        lmin, lmax = float(eig.min()), float(eig.max())
        if lmin < 0:
            raise ValueError(f"test must be positive semi-definite, min eigenvalue {lmin:.3e}")
        eps = float(np.finfo(np.dtype(dtype)).eps)
        if lmax <= 0 or lmin <= 100 * eps * lmax:
            raise ValueError(f"test is singular (λ_min = {lmin:.3e}, λ_max = {lmax:.3e}): "
                             "the selection criteria need Σ⁻¹")
    return test.astype(dtype)


# ============================================================================ QP criteria
class QP(NamedTuple):
    """``f(π) = const − 2 bᵀπ + πᵀ H π`` with ``H [..., L, L]``, ``b [..., L]``, ``const = d``."""

    H: jax.Array
    b: jax.Array
    const: jax.Array


@_checks.renamed_argument("Sigma", "test")
def qp_design(pool: TaskMixture, test, length_aware: bool = False) -> QP:
    """The QP of ``||I − Σ⁻¹ Σ_ℓ π_ℓ M_ℓ||_F²`` with ``M_ℓ = Λ_ℓ`` (or ``Γ(Λ_ℓ, n_ℓ)`` if ``length_aware``).

    ``A_ℓ = Σ⁻¹ M_ℓ``, ``H_ℓm = tr(A_ℓᵀ A_m)``, ``b_ℓ = tr A_ℓ``, ``const = d``.
    """
    pool = check_mixture("pool", pool)
    return _qp_design_core(pool, _as_target(test, pool.d, pool.dtype), bool(length_aware))


def _qp_terms(pool: TaskMixture, test: Covariance, length_aware: bool) -> QP:
    Sinv = test.inverse_matrix()
    M = pool.gammas() if length_aware else pool.matrices()
    A = jnp.einsum("ij,ljk->lik", Sinv, M)
    H = jnp.einsum("lij,mij->lm", A, A)
    b = jnp.trace(A, axis1=-2, axis2=-1)
    return QP(H, b, jnp.asarray(pool.d, pool.dtype))


_qp_design_core = jax.jit(_qp_terms, static_argnames=("length_aware",))


@_checks.renamed_argument("Sigma", "test")
def qp_objective(pool: TaskMixture, test, probs, length_aware: bool = False) -> jax.Array:
    """``||I − Σ⁻¹ Σ_ℓ π_ℓ M_ℓ||_F²`` evaluated directly (``M_ℓ = Λ_ℓ`` or ``Γ_ℓ``); scalar."""
    pool = check_mixture("pool", pool)
    test = _as_target(test, pool.d, pool.dtype)
    return _qp_objective_core(pool, test, _check_probs(probs, pool), bool(length_aware))


@functools.partial(jax.jit, static_argnames=("length_aware",))
def _qp_objective_core(pool: TaskMixture, test: Covariance, probs, length_aware: bool) -> jax.Array:
    M = pool.gammas() if length_aware else pool.matrices()
    R = jnp.eye(pool.d, dtype=pool.dtype) - test.inverse_matrix() @ jnp.einsum("l,lij->ij", probs, M)
    return jnp.sum(R * R)


def _check_probs(probs, pool: TaskMixture) -> jax.Array:
    probs = _checks.float_array("probs", probs, pool.dtype)
    if probs.shape != (pool.size,):
        raise ValueError(f"probs must hold one probability per task ({pool.size}), got shape {probs.shape}")
    return probs


def solve_simplex_qp(H, b, iters: int = 3000, init=None) -> jax.Array:
    """``argmin_{π ∈ Δ_L} πᵀHπ − 2bᵀπ`` by FISTA with adaptive (gradient) restart.

    ``H [L, L]`` symmetric PSD, ``b [L]``; step ``1/(2 λ_max(H))``; ``iters`` iterations in one
    ``lax.scan`` (restart makes the rate linear when ``H`` is positive definite on the face).
    ``init`` defaults to the uniform mixture. Returns ``π [L]`` on the simplex.
    """
    iters = _checks.static_int("iters", iters, minimum=1)
    H = jnp.asarray(H)
    b = jnp.asarray(b, H.dtype)
    L = b.shape[-1]
    x0 = jnp.full((L,), 1.0 / L, H.dtype) if init is None else projection_simplex(jnp.asarray(init, H.dtype))
    lip = 2 * jnp.linalg.eigvalsh((H + H.T) / 2)[-1]
    step = 1.0 / jnp.maximum(lip, jnp.finfo(H.dtype).tiny)

    def body(carry, _):
        x, y, t = carry
        x_new = projection_simplex(y - step * 2 * (H @ y - b))
        restart = jnp.dot(y - x_new, x_new - x) > 0
        t_new = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
        y_new = x_new + ((t - 1) / t_new) * (x_new - x)
        t_new = jnp.where(restart, jnp.ones_like(t), t_new)
        y_new = jnp.where(restart, x_new, y_new)
        return (x_new, y_new, t_new), None

    (x, _, _), _ = jax.lax.scan(body, (x0, x0, jnp.ones((), H.dtype)), None, length=iters)
    return x


# ============================================================================ exact criterion
def _exact_value(pool: TaskMixture, S: jax.Array, probs: jax.Array, k: int, aggregate: str) -> jax.Array:
    errs = theory.limit_error(mixture_preconditioner(pool.with_probs(probs)), S, k)
    return jnp.sum(errs[1:]) if aggregate == "sum" else errs[k]


@_checks.renamed_argument("Sigma", "test")
def exact_errors(pool: TaskMixture, test, probs, k_max: int) -> jax.Array:
    """``m → ∞`` test error ``||(I − P(π)Σ)^k||_F²`` for ``k = 0..k_max`` → ``[k_max + 1]``
    (:func:`ttscale.theory.limit_error` of ``P(π)`` = :func:`ttscale.theory.mixture_preconditioner`).
    ``probs`` is not checked to lie on the simplex here, so that finite differences may leave it."""
    pool = check_mixture("pool", pool)
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    test = _as_target(test, pool.d, pool.dtype)
    return _exact_errors_core(pool, test, _check_probs(probs, pool), k_max)


@functools.partial(jax.jit, static_argnames=("k_max",))
def _exact_errors_core(pool: TaskMixture, test: Covariance, probs, k_max: int) -> jax.Array:
    return theory.limit_error(mixture_preconditioner(pool.with_probs(probs)), test.matrix(), k_max)


@_checks.renamed_argument("Sigma", "test")
def exact_objective(pool: TaskMixture, test, probs, k: int = 10, aggregate: str = "sum") -> jax.Array:
    """The exact criterion: ``Σ_{j=1..k} E_j(π)`` (``aggregate="sum"``) or ``E_k(π)`` (``"at"``),
    ``E_j(π) = ||(I − P(π)Σ)^j||_F²``; scalar."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    k = _checks.static_int("k", k, minimum=1)
    pool = check_mixture("pool", pool)
    test = _as_target(test, pool.d, pool.dtype)
    errs = _exact_errors_core(pool, test, _check_probs(probs, pool), k)
    return jnp.sum(errs[1:]) if aggregate == "sum" else errs[k]


def projected_gradient(fun: Callable, x0, iters: int = 300, step0: float = 1.0, step_max: float = 1e6) -> jax.Array:
    """``min_{x ∈ Δ_L} fun(x)`` by projected gradient with backtracking (``jax.value_and_grad``).

    Each of the ``iters`` scan steps tries ``x⁺ = Π_Δ(x − t ∇f(x))`` and halves ``t`` (at most 50
    times, one ``lax.while_loop``) until ``f(x⁺) ≤ f(x) + ∇f·(x⁺ − x) + ||x⁺ − x||²/(2t)`` or the
    move is at round-off level; the step is doubled after each accepted move (up to ``step_max``). A step that finds no decrease leaves ``x``
    unchanged. Works for non-convex ``fun`` (converges to a KKT point).
    """
    iters = _checks.static_int("iters", iters, minimum=1)
    x0 = projection_simplex(jnp.asarray(x0))
    vg = jax.value_and_grad(fun)
    f0, g0 = vg(x0)

    def body(carry, _):
        x, fx, g, t = carry

        def trial(t):
            xn = projection_simplex(x - t * g)
            return xn, fun(xn)

        def insufficient(s):
            t, xn, fn, i = s
            dx = xn - x
            ok = fn <= fx + jnp.dot(g, dx) + jnp.dot(dx, dx) / (2 * t)
            tiny = jnp.max(jnp.abs(dx)) <= 10 * jnp.finfo(dx.dtype).eps
            return jnp.logical_not(ok | tiny) & (i < 50)

        def halve(s):
            t, _, _, i = s
            xn, fn = trial(t / 2)
            return t / 2, xn, fn, i + 1

        xn, fn = trial(t)
        t, xn, fn, _ = jax.lax.while_loop(insufficient, halve, (t, xn, fn, 0))
        accept = fn <= fx
        x_new = jnp.where(accept, xn, x)
        f_new, g_new = vg(x_new)
        return (x_new, f_new, g_new, jnp.minimum(jnp.where(accept, 2 * t, t), step_max)), None

    (x, _, _, _), _ = jax.lax.scan(body, (x0, f0, g0, jnp.asarray(step0, x0.dtype)), None, length=iters)
    return x


# ============================================================================ selection
@_checks.renamed_argument("Sigma", "test")
def criterion_objective(pool: TaskMixture, test, probs, criterion: str = "qp", k: int = 10, aggregate: str = "sum"):
    """The value of ``criterion`` (``"qp" | "qp-length" | "exact"``) at ``probs``; scalar."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if criterion == "exact":
        return exact_objective(pool, test, probs, k, aggregate)
    return qp_objective(pool, test, probs, length_aware=criterion == "qp-length")


def kkt_violation(probs, grad, step=1.0) -> jax.Array:
    """KKT residual of ``min_{π ∈ Δ} f`` as a distance in ``π``: ``max_ℓ |π − Π_Δ(π − s ∇f)|_ℓ``.

    Zero iff ``∇f_ℓ = ν`` on the support of ``π`` and ``∇f_ℓ ≥ ν`` off it (for some ``ν``).
    ``s = step``: :func:`select_mixture` uses ``1/(2 λ_max(H))`` for the QPs and ``1`` for the
    exact criterion (whose ``grad`` is that of ``log E``, a relative change).
    """
    probs = jnp.asarray(probs)
    grad = jnp.asarray(grad, probs.dtype)
    return jnp.max(jnp.abs(probs - projection_simplex(probs - step * grad)))


class Selection(NamedTuple):
    """Result of :func:`select_mixture`: ``probs [L]`` on the simplex; ``objective``, the criterion's
    value at ``probs``; ``grad [L]``, the gradient of the minimised function (the QP objective, or
    ``log E`` for ``"exact"``); ``kkt``, :func:`kkt_violation` (0 at a KKT point)."""

    probs: jax.Array
    objective: jax.Array
    grad: jax.Array
    kkt: jax.Array


@_checks.renamed_argument("Sigma", "test")
def select_mixture(pool: TaskMixture, test, criterion: str = "qp", k: int = 10, aggregate: str = "sum",
                   iters: int | None = None) -> Selection:
    """Minimise ``criterion`` over the simplex for one pool and target ``Σ``.

    ``"qp"``/``"qp-length"``: :func:`solve_simplex_qp` (``iters`` default 3000);
    ``"exact"``: :func:`projected_gradient` on ``log E(π)`` (same minimiser, better scaled),
    ``E`` from :func:`exact_objective` with ``k``, ``aggregate`` (``iters`` default 300), started
    at the uniform mixture. Validates its inputs, then runs one jitted function; it is pure, so
    ``jax.vmap(lambda p, S: select_mixture(p, S, ...))(pools, targets)`` runs many pools at once.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    k = _checks.static_int("k", k, minimum=1)
    pool = check_mixture("pool", pool)
    if iters is None:
        iters = 300 if criterion == "exact" else 3000
    iters = _checks.static_int("iters", iters, minimum=1)
    test = _as_target(test, pool.d, pool.dtype)
    result = _select_jit(pool, test, criterion, k, aggregate, iters)
    if _checks.is_concrete(result):  # under jit/vmap (selection_study) the values are the caller's to read
        _check_selection(result, criterion, k, aggregate, pool.dtype)
    return result


def _check_selection(result: "Selection", criterion: str, k: int, aggregate: str, dtype) -> None:
    """``FloatingPointError`` when a concrete :class:`Selection` holds a non-finite mixture or objective: no answer."""
    probs, objective = np.asarray(result.probs), float(result.objective)
    if np.all(np.isfinite(probs)) and math.isfinite(objective):
        return
    if criterion == "exact":
        raise FloatingPointError(
            f"criterion 'exact' is not finite at k={k} (objective {objective:.3g}, aggregate={aggregate!r}): the m → ∞ "
            f"CoT error ||(I − P(π)Σ)^k||² overflows {jnp.dtype(dtype).name} at the uniform start mixture (test-time "
            f"CoT diverges on this target, geometrically in k), so no mixture was selected; use a smaller k or criterion 'qp'")
    raise FloatingPointError(f"criterion {criterion!r} is not finite (objective {objective:.3g}) for this pool and "
                             "test, so no mixture was selected; check test and the pool's covariances")


@functools.partial(jax.jit, static_argnames=("criterion", "k", "aggregate", "iters"))
def _select_jit(pool: TaskMixture, test: Covariance, criterion: str, k: int, aggregate: str, iters: int) -> Selection:
    S = test.matrix()
    L = pool.size
    x0 = jnp.full((L,), 1.0 / L, pool.dtype)
    if criterion == "exact":
        fun = lambda p: _exact_value(pool, S, p, k, aggregate)
        log_fun = lambda p: jnp.log(fun(p))
        probs = projected_gradient(log_fun, x0, iters)
        grad = jax.grad(log_fun)(probs)
        step = jnp.ones((), pool.dtype)
        value = fun(probs)
    else:
        H, b, const = _qp_terms(pool, test, criterion == "qp-length")
        probs = solve_simplex_qp(H, b, iters)
        grad = jax.grad(lambda p: const - 2 * jnp.dot(b, p) + p @ H @ p)(probs)
        step = 1.0 / jnp.maximum(2 * jnp.linalg.eigvalsh(H)[-1], jnp.finfo(H.dtype).tiny)
        # the value from ||I − Σ⁻¹ Σ_ℓ π_ℓ M_ℓ||_F² itself: the expanded form cancels ``const = d`` down to round-off of d
        # (2⁻²¹ in float32 at d = 6) where the fit is exact
        value = _qp_objective_core(pool, test, probs, criterion == "qp-length")
    return Selection(probs, value, grad, kkt_violation(probs, grad, step))


# ============================================================================ baselines and summaries
def _uniform_on(mask: jax.Array, dtype) -> jax.Array:
    mask = mask.astype(dtype)
    return mask / jnp.maximum(jnp.sum(mask), 1)


def hard_mask(pool: TaskMixture) -> jax.Array:
    """Hard tasks: ``σ_min(Λ_ℓ)`` strictly below the pool's median ``σ_min`` → bool ``[L]``.

    For :func:`paper_pool` these are exactly the ``α = 0.8`` tasks.
    """
    lmin = pool.lambda_min()
    return lmin < jnp.median(lmin, axis=-1, keepdims=True)


def hard_mass(pool: TaskMixture, probs) -> jax.Array:
    """Mass ``Σ_{ℓ hard} π_ℓ`` on the hard tasks (:func:`hard_mask`); Proposition 4.3 says ``≥ 1/2``."""
    return jnp.sum(jnp.where(hard_mask(pool), probs, 0.0), axis=-1)


def type_mass(pool: TaskMixture, probs, num_types: int | None = None) -> jax.Array:
    """Total probability per task type ``[..., T]`` (the types are ``pool.types``, ``T = len(pool.types)`` by default)."""
    T = len(pool.types) if num_types is None else num_types
    onehot = jnp.asarray(pool.kinds)[:, None] == jnp.arange(T)
    return jnp.sum(jnp.where(onehot, probs[..., :, None], 0.0), axis=-2)


@_checks.renamed_argument("Sigma", "test")
def relevant_task(pool: TaskMixture, test) -> jax.Array:
    """Index of the task whose sorted spectrum is closest (Euclidean) to that of ``Σ``."""
    if not isinstance(test, Covariance):
        test = as_covariance("test", test, pool.d)
    tasks = jnp.sort(pool.covariances.eigenvalues, axis=-1)
    target = jnp.sort(test.eigenvalues.astype(pool.dtype), axis=-1)
    return jnp.argmin(jnp.sum((tasks - target) ** 2, axis=-1))


@_checks.renamed_argument("Sigma", "test")
def baseline_mixtures(pool: TaskMixture, test) -> dict[str, jax.Array]:
    """Baseline mixtures ``[L]``: ``uniform``; ``easy-only`` / ``hard-only`` (uniform on the
    non-hard / hard tasks of :func:`hard_mask`); ``relevant-only`` (all mass on
    :func:`relevant_task`)."""
    pool = check_mixture("pool", pool)
    hard = hard_mask(pool)
    L, dt = pool.size, pool.dtype
    return {
        "uniform": jnp.full((L,), 1.0 / L, dt),
        "easy-only": _uniform_on(~hard, dt),
        "relevant-only": jax.nn.one_hot(relevant_task(pool, test), L, dtype=dt),
        "hard-only": _uniform_on(hard, dt),
    }


@_checks.renamed_argument("Sigma", "test")
def selected_mixtures(pool: TaskMixture, test, criteria: Sequence[str] = CRITERIA, k: int = 10,
                      aggregate: str = "sum", baselines: bool = True) -> dict[str, jax.Array]:
    """``{name: π [L]}``: the optimum of each criterion, then (if ``baselines``) :func:`baseline_mixtures`."""
    out = {c: select_mixture(pool, test, c, k, aggregate).probs for c in criteria}
    if baselines:
        out.update(baseline_mixtures(pool, test))
    return out


# ============================================================================ targets
def hard_target(key, d: int = 10, alpha_range: tuple[float, float] = (0.6, 1.0), rotation: float = 0.2,
                dtype=jnp.float32) -> Covariance:
    """A random hard target: :func:`power_law_target` with ``α ~ U(alpha_range)`` (traceable in ``key``)."""
    k_alpha, k_rot = jax.random.split(key)
    alpha = jax.random.uniform(k_alpha, (), dtype, alpha_range[0], alpha_range[1])
    return power_law_target(k_rot, d, alpha, rotation, dtype)
