"""Task selection for multi-task training (docs/science.md §7, Proposition 4.3 of arXiv 2510.03605).

A **task pool** holds ``L`` training tasks, task ``ℓ`` with covariance ``Λ_ℓ`` and prompt length
``n_ℓ``. Training on the mixture ``π`` (one task per prompt, task ``ℓ`` with probability ``π_ℓ``)
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

**Our reading of the paper's pool** (:func:`paper_pool`, replaceable): four task types
``(α, B)`` — Easy-Short (0.2, 20), Hard-Short (0.8, 20), Easy-Long (0.2, 100),
Hard-Long (0.8, 100) — with ``α`` the power-law exponent of the spectrum (``λ_i ∝ i^{-α}``,
``tr Λ = d``) and ``B`` the training prompt length ``n``. The paper's exact definitions are not
public; every function that builds pools takes the generator as an argument.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from optax.projections import projection_simplex

from ttscale import _checks
from ttscale import store, theory
from ttscale.spectra import Covariance, as_covariance, check_covariance, power_law, stack

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
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TaskPool:
    """``L`` training tasks: ``covs`` (stacked :class:`Covariance`, eigenvalues ``[..., L, d]``),
    prompt lengths ``ns [..., L]`` and integer type labels ``kinds [..., L]`` (``-1`` = none).

    ``kind_names`` (static) names the labels ``0..T-1``. A stack of pools (leading axis) is
    itself a ``TaskPool``, so a selection can be ``vmap``-ed over many pools at once.
    Build with :func:`task_pool` (validates) or :func:`paper_pool`.
    """

    covs: Covariance
    ns: jax.Array
    kinds: jax.Array
    kind_names: tuple = dataclasses.field(default=(), metadata=dict(static=True))

    @property
    def size(self) -> int:
        """Number of tasks ``L``."""
        return self.ns.shape[-1]

    @property
    def d(self) -> int:
        return self.covs.d

    @property
    def dtype(self):
        return self.covs.dtype

    def matrices(self) -> jax.Array:
        """Dense ``Λ_ℓ [..., L, d, d]``."""
        return self.covs.matrix()

    def gammas(self) -> jax.Array:
        """Dense ``Γ(Λ_ℓ, n_ℓ)`` (:func:`ttscale.theory.gamma`) → ``[..., L, d, d]``."""
        return jnp.vectorize(theory.gamma, signature="(d,d),()->(d,d)")(self.matrices(), self.ns)

    def lambda_min(self) -> jax.Array:
        """``σ_min(Λ_ℓ) [..., L]`` (small = rare skill = hard task)."""
        return self.covs.lambda_min()


def task_pool(covs, ns, kinds=None, kind_names: Sequence[str] = (), dtype=None) -> TaskPool:
    """Validate and build a :class:`TaskPool`.

    ``covs``: a list of :class:`Covariance` or dense symmetric PSD ``[d, d]`` matrices, or a
    stacked :class:`Covariance` ``[L, d]``; ``ns``: one prompt length per task (or a scalar,
    ``inf`` allowed = infinitely long prompts); ``kinds``: optional int labels ``[L]`` in
    ``0..len(kind_names)-1``. Raises ``ValueError`` for an empty pool, tasks of different ``d``,
    non-PSD or non-finite covariances, or prompt lengths ``< 1``.
    """
    if isinstance(covs, Covariance):
        if covs.eigenvalues.ndim != 2:
            raise ValueError(f"covs must be a stack of covariances [L, d], got eigenvalues of shape {covs.eigenvalues.shape}")
        if covs.eigenvalues.shape[0] == 0:
            raise ValueError("covs: the task pool is empty (need at least one task)")
        eig = covs.eigenvalues
        if _checks.is_concrete(eig) and np.isrealobj(eig) and bool(jnp.any(eig < 0)):
            bad = int(jnp.argmin(jnp.min(eig, axis=-1)))
            raise ValueError(f"covs[{bad}] is not positive semi-definite (negative eigenvalue)")
        check_covariance("covs", covs)  # dtype, finite values, orthonormal bases (a Covariance(...) built directly)
        stacked = covs
    elif isinstance(covs, (list, tuple)):
        if len(covs) == 0:
            raise ValueError("covs: the task pool is empty (need at least one task)")
        items = []
        for i, c in enumerate(covs):
            if isinstance(c, Covariance):
                if c.eigenvalues.ndim != 1:
                    raise ValueError(f"covs[{i}] must be one covariance, got eigenvalues of shape {c.eigenvalues.shape}")
                if _checks.is_concrete(c.eigenvalues) and np.isrealobj(c.eigenvalues) and bool(jnp.any(c.eigenvalues < 0)):
                    raise ValueError(f"covs[{i}] is not positive semi-definite (negative eigenvalue)")
                check_covariance(f"covs[{i}]", c)
                items.append(c)
            else:
                M = np.asarray(c)
                if M.ndim != 2 or M.shape[0] != M.shape[1]:
                    raise ValueError(f"covs[{i}] must be a square [d, d] matrix, got shape {M.shape}")
                items.append(as_covariance(f"covs[{i}]", c))
        ds = [c.d for c in items]
        if len(set(ds)) != 1:
            raise ValueError(f"covs: all tasks must share one dimension d, got d = {ds}")
        stacked = stack(items)
    else:
        raise TypeError(f"covs must be a list of Covariance / [d, d] matrices or a stacked Covariance, got {type(covs).__name__}")
    if dtype is not None:
        stacked = stacked.astype(dtype)
    L = stacked.eigenvalues.shape[0]
    ns_arr = _checks.float_array("ns", ns, stacked.dtype)
    if ns_arr.ndim == 0:
        ns_arr = jnp.broadcast_to(ns_arr, (L,))
    if ns_arr.shape != (L,):
        raise ValueError(f"ns must hold one prompt length per task ({L}), got shape {ns_arr.shape}")
    _checks.positive_count("ns", np.asarray(ns_arr), allow_inf=True)
    kind_names = tuple(str(k) for k in kind_names)
    if kinds is None:
        kinds_arr = jnp.full((L,), -1, dtype=jnp.int32)
    else:
        kinds_np = np.asarray(kinds)
        if kinds_np.dtype.kind not in "iu":
            raise TypeError(f"kinds must be integer labels, got dtype {kinds_np.dtype}")
        if kinds_np.shape != (L,):
            raise ValueError(f"kinds must hold one label per task ({L}), got shape {kinds_np.shape}")
        if kind_names and (kinds_np.min() < -1 or kinds_np.max() >= len(kind_names)):
            raise ValueError(f"kinds must lie in -1..{len(kind_names) - 1} (one of kind_names), got {kinds_np}")
        kinds_arr = jnp.asarray(kinds_np, jnp.int32)
    return TaskPool(stacked, ns_arr, kinds_arr, kind_names)


def _check_pool(pool) -> TaskPool:
    if not isinstance(pool, TaskPool):
        raise TypeError(f"pool must be a TaskPool (see task_pool, paper_pool), got {type(pool).__name__}")
    if pool.size == 0:
        raise ValueError("pool: the task pool is empty (need at least one task)")
    return pool


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
               types: Sequence[tuple[str, float, int]] = PAPER_TASK_TYPES, dtype=jnp.float32) -> TaskPool:
    """Our reading of the paper's pool: ``per_type`` tasks of each type ``(name, α, B)``.

    Task ``ℓ`` of type ``(α, B)`` has spectrum ``λ_i ∝ i^{-(α + δ_ℓ)}`` (``tr = d``,
    ``δ_ℓ ~ U[−alpha_jitter, alpha_jitter]``), eigenbasis ``≈ exp(rotation · K_ℓ)`` (a random
    rotation of angle ≈ ``rotation`` radians away from the coordinate axes, Cayley transform; 0 = axes) and
    prompt length ``n_ℓ = B``. Traceable in ``key`` (``vmap`` it for many pools). Tasks are
    ordered type by type; ``kinds`` are the type indices.
    """
    _checks.check_prng_key("key", key)
    d = _checks.static_int("d", d, minimum=1)
    per_type = _checks.static_int("per_type", per_type, minimum=1)
    types = tuple((str(name), float(a), float(B)) for name, a, B in types)
    if not types:
        raise ValueError("types must list at least one (name, alpha, B) task type")
    return _paper_pool_core(key, jnp.asarray(alpha_jitter, dtype), jnp.asarray(rotation, dtype), d, per_type,
                            types, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames=("d", "per_type", "types", "dtype"))
def _paper_pool_core(key, alpha_jitter, rotation, d, per_type, types, dtype) -> TaskPool:
    T = len(types)
    L = T * per_type
    alphas = jnp.repeat(jnp.asarray([a for _, a, _ in types], dtype), per_type)
    ns = jnp.repeat(jnp.asarray([B for _, _, B in types], dtype), per_type)
    kinds = jnp.repeat(jnp.arange(T, dtype=jnp.int32), per_type)
    k_alpha, k_rot = jax.random.split(key)
    alphas = alphas + alpha_jitter * jax.random.uniform(k_alpha, (L,), dtype, -1.0, 1.0)
    eig = power_law(d, alphas, dtype=dtype).eigenvalues
    basis = jax.vmap(lambda k: _small_rotation(k, d, rotation, dtype))(jax.random.split(k_rot, L))
    return TaskPool(Covariance(eig, basis), ns, kinds, tuple(name for name, _, _ in types))


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


def random_pools(key, num: int, generator: Callable = paper_pool, **kwargs) -> TaskPool:
    """``num`` pools stacked on a leading axis: ``jax.vmap(lambda k: generator(k, **kwargs))``."""
    num = _checks.static_int("num", num, minimum=1)
    return jax.vmap(lambda k: generator(k, **kwargs))(jax.random.split(key, num))


# ============================================================================ the target
def _as_target(Sigma, d: int, dtype) -> Covariance:
    """Validate ``Σ`` (a :class:`Covariance` or dense matrix) with NumPy only (safe inside traces).

    ``ValueError`` if ``Σ`` has the wrong ``d``, is not PSD, or is singular (the criteria need ``Σ⁻¹``).
    """
    if not isinstance(Sigma, Covariance):
        Sigma = as_covariance("Sigma", Sigma)
    check_covariance("Sigma", Sigma)  # real dtype, finite values, orthonormal basis (however it was built)
    if Sigma.d != d:
        raise ValueError(f"Sigma has dimension d={Sigma.d} but the pool's tasks have d={d}")
    if Sigma.eigenvalues.ndim != 1:
        raise ValueError(f"Sigma must be one covariance (vmap for many), got eigenvalues of shape {Sigma.eigenvalues.shape}")
    if _checks.is_concrete(Sigma.eigenvalues):
        eig = np.asarray(Sigma.eigenvalues, dtype=np.float64)
        if not np.all(np.isfinite(eig)):
            raise ValueError("Sigma has non-finite eigenvalues (nan or inf)")
        lmin, lmax = float(eig.min()), float(eig.max())
        if lmin < 0:
            raise ValueError(f"Sigma must be positive semi-definite, min eigenvalue {lmin:.3e}")
        eps = float(np.finfo(np.dtype(dtype)).eps)
        if lmax <= 0 or lmin <= 100 * eps * lmax:
            raise ValueError(f"Sigma is singular (λ_min = {lmin:.3e}, λ_max = {lmax:.3e}): "
                             "the selection criteria need Σ⁻¹")
    return Sigma.astype(dtype)


# ============================================================================ QP criteria
class QP(NamedTuple):
    """``f(π) = const − 2 bᵀπ + πᵀ H π`` with ``H [..., L, L]``, ``b [..., L]``, ``const = d``."""

    H: jax.Array
    b: jax.Array
    const: jax.Array


def qp_design(pool: TaskPool, Sigma, length_aware: bool = False) -> QP:
    """The QP of ``||I − Σ⁻¹ Σ_ℓ π_ℓ M_ℓ||_F²`` with ``M_ℓ = Λ_ℓ`` (or ``Γ(Λ_ℓ, n_ℓ)`` if ``length_aware``).

    ``A_ℓ = Σ⁻¹ M_ℓ``, ``H_ℓm = tr(A_ℓᵀ A_m)``, ``b_ℓ = tr A_ℓ``, ``const = d``.
    """
    pool = _check_pool(pool)
    return _qp_design_core(pool, _as_target(Sigma, pool.d, pool.dtype), bool(length_aware))


def _qp_terms(pool: TaskPool, Sigma: Covariance, length_aware: bool) -> QP:
    Sinv = Sigma.inverse_matrix()
    M = pool.gammas() if length_aware else pool.matrices()
    A = jnp.einsum("ij,ljk->lik", Sinv, M)
    H = jnp.einsum("lij,mij->lm", A, A)
    b = jnp.trace(A, axis1=-2, axis2=-1)
    return QP(H, b, jnp.asarray(pool.d, pool.dtype))


_qp_design_core = jax.jit(_qp_terms, static_argnames=("length_aware",))


def qp_objective(pool: TaskPool, Sigma, probs, length_aware: bool = False) -> jax.Array:
    """``||I − Σ⁻¹ Σ_ℓ π_ℓ M_ℓ||_F²`` evaluated directly (``M_ℓ = Λ_ℓ`` or ``Γ_ℓ``); scalar."""
    pool = _check_pool(pool)
    Sigma = _as_target(Sigma, pool.d, pool.dtype)
    return _qp_objective_core(pool, Sigma, _check_probs(probs, pool), bool(length_aware))


@functools.partial(jax.jit, static_argnames=("length_aware",))
def _qp_objective_core(pool: TaskPool, Sigma: Covariance, probs, length_aware: bool) -> jax.Array:
    M = pool.gammas() if length_aware else pool.matrices()
    R = jnp.eye(pool.d, dtype=pool.dtype) - Sigma.inverse_matrix() @ jnp.einsum("l,lij->ij", probs, M)
    return jnp.sum(R * R)


def _check_probs(probs, pool: TaskPool) -> jax.Array:
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
def _exact_value(pool: TaskPool, S: jax.Array, probs: jax.Array, k: int, aggregate: str) -> jax.Array:
    errs = theory.limit_error(theory.mixture_preconditioner(pool.covs, pool.ns, probs), S, k)
    return jnp.sum(errs[1:]) if aggregate == "sum" else errs[k]


def exact_errors(pool: TaskPool, Sigma, probs, k_max: int) -> jax.Array:
    """``m → ∞`` test error ``||(I − P(π)Σ)^k||_F²`` for ``k = 0..k_max`` → ``[k_max + 1]``
    (:func:`ttscale.theory.limit_error` of ``P(π)`` = :func:`ttscale.theory.mixture_preconditioner`).
    ``probs`` is not checked to lie on the simplex here, so that finite differences may leave it."""
    pool = _check_pool(pool)
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    Sigma = _as_target(Sigma, pool.d, pool.dtype)
    return _exact_errors_core(pool, Sigma, _check_probs(probs, pool), k_max)


@functools.partial(jax.jit, static_argnames=("k_max",))
def _exact_errors_core(pool: TaskPool, Sigma: Covariance, probs, k_max: int) -> jax.Array:
    return theory.limit_error(theory.mixture_preconditioner(pool.covs, pool.ns, probs), Sigma.matrix(), k_max)


def exact_objective(pool: TaskPool, Sigma, probs, k: int = 10, aggregate: str = "sum") -> jax.Array:
    """The exact criterion: ``Σ_{j=1..k} E_j(π)`` (``aggregate="sum"``) or ``E_k(π)`` (``"at"``),
    ``E_j(π) = ||(I − P(π)Σ)^j||_F²``; scalar."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    k = _checks.static_int("k", k, minimum=1)
    pool = _check_pool(pool)
    Sigma = _as_target(Sigma, pool.d, pool.dtype)
    errs = _exact_errors_core(pool, Sigma, _check_probs(probs, pool), k)
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
def criterion_objective(pool: TaskPool, Sigma, probs, criterion: str = "qp", k: int = 10, aggregate: str = "sum"):
    """The value of ``criterion`` (``"qp" | "qp-length" | "exact"``) at ``probs``; scalar."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if criterion == "exact":
        return exact_objective(pool, Sigma, probs, k, aggregate)
    return qp_objective(pool, Sigma, probs, length_aware=criterion == "qp-length")


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


def select_mixture(pool: TaskPool, Sigma, criterion: str = "qp", k: int = 10, aggregate: str = "sum",
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
    pool = _check_pool(pool)
    if iters is None:
        iters = 300 if criterion == "exact" else 3000
    iters = _checks.static_int("iters", iters, minimum=1)
    Sigma = _as_target(Sigma, pool.d, pool.dtype)
    result = _select_jit(pool, Sigma, criterion, k, aggregate, iters)
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
                             "Sigma, so no mixture was selected; check Sigma and the pool's covariances")


@functools.partial(jax.jit, static_argnames=("criterion", "k", "aggregate", "iters"))
def _select_jit(pool: TaskPool, Sigma: Covariance, criterion: str, k: int, aggregate: str, iters: int) -> Selection:
    S = Sigma.matrix()
    L = pool.size
    x0 = jnp.full((L,), 1.0 / L, pool.dtype)
    if criterion == "exact":
        fun = lambda p: _exact_value(pool, S, p, k, aggregate)
        log_fun = lambda p: jnp.log(fun(p))
        probs = projected_gradient(log_fun, x0, iters)
        grad = jax.grad(log_fun)(probs)
        step = jnp.ones((), pool.dtype)
    else:
        H, b, const = _qp_terms(pool, Sigma, criterion == "qp-length")
        probs = solve_simplex_qp(H, b, iters)
        fun = lambda p: const - 2 * jnp.dot(b, p) + p @ H @ p
        grad = jax.grad(fun)(probs)
        step = 1.0 / jnp.maximum(2 * jnp.linalg.eigvalsh(H)[-1], jnp.finfo(H.dtype).tiny)
    return Selection(probs, fun(probs), grad, kkt_violation(probs, grad, step))


# ============================================================================ baselines and summaries
def _uniform_on(mask: jax.Array, dtype) -> jax.Array:
    mask = mask.astype(dtype)
    return mask / jnp.maximum(jnp.sum(mask), 1)


def hard_mask(pool: TaskPool) -> jax.Array:
    """Hard tasks: ``σ_min(Λ_ℓ)`` strictly below the pool's median ``σ_min`` → bool ``[L]``.

    For :func:`paper_pool` these are exactly the ``α = 0.8`` tasks.
    """
    lmin = pool.lambda_min()
    return lmin < jnp.median(lmin, axis=-1, keepdims=True)


def hard_mass(pool: TaskPool, probs) -> jax.Array:
    """Mass ``Σ_{ℓ hard} π_ℓ`` on the hard tasks (:func:`hard_mask`); Proposition 4.3 says ``≥ 1/2``."""
    return jnp.sum(jnp.where(hard_mask(pool), probs, 0.0), axis=-1)


def type_mass(pool: TaskPool, probs, num_types: int | None = None) -> jax.Array:
    """Total probability per task type ``[T]`` (``T = len(pool.kind_names)`` by default)."""
    T = len(pool.kind_names) if num_types is None else num_types
    onehot = pool.kinds[..., :, None] == jnp.arange(T)
    return jnp.sum(jnp.where(onehot, probs[..., :, None], 0.0), axis=-2)


def relevant_task(pool: TaskPool, Sigma) -> jax.Array:
    """Index of the task whose sorted spectrum is closest (Euclidean) to that of ``Σ``."""
    if not isinstance(Sigma, Covariance):
        Sigma = as_covariance("Sigma", Sigma, pool.d)
    tasks = jnp.sort(pool.covs.eigenvalues, axis=-1)
    target = jnp.sort(Sigma.eigenvalues.astype(pool.dtype), axis=-1)
    return jnp.argmin(jnp.sum((tasks - target) ** 2, axis=-1))


def baseline_mixtures(pool: TaskPool, Sigma) -> dict[str, jax.Array]:
    """Baseline mixtures ``[L]``: ``uniform``; ``easy-only`` / ``hard-only`` (uniform on the
    non-hard / hard tasks of :func:`hard_mask`); ``relevant-only`` (all mass on
    :func:`relevant_task`)."""
    pool = _check_pool(pool)
    hard = hard_mask(pool)
    L, dt = pool.size, pool.dtype
    return {
        "uniform": jnp.full((L,), 1.0 / L, dt),
        "easy-only": _uniform_on(~hard, dt),
        "relevant-only": jax.nn.one_hot(relevant_task(pool, Sigma), L, dtype=dt),
        "hard-only": _uniform_on(hard, dt),
    }


def selected_mixtures(pool: TaskPool, Sigma, criteria: Sequence[str] = CRITERIA, k: int = 10,
                      aggregate: str = "sum", baselines: bool = True) -> dict[str, jax.Array]:
    """``{name: π [L]}``: the optimum of each criterion, then (if ``baselines``) :func:`baseline_mixtures`."""
    out = {c: select_mixture(pool, Sigma, c, k, aggregate).probs for c in criteria}
    if baselines:
        out.update(baseline_mixtures(pool, Sigma))
    return out


# ============================================================================ Proposition 4.3 over many pools
def hard_target(key, d: int = 10, alpha_range: tuple[float, float] = (0.6, 1.0), rotation: float = 0.2,
                dtype=jnp.float32) -> Covariance:
    """A random hard target: :func:`power_law_target` with ``α ~ U(alpha_range)`` (traceable in ``key``)."""
    k_alpha, k_rot = jax.random.split(key)
    alpha = jax.random.uniform(k_alpha, (), dtype, alpha_range[0], alpha_range[1])
    return power_law_target(k_rot, d, alpha, rotation, dtype)


def selection_study(key, num_pools: int = 256, criteria: Sequence[str] = CRITERIA, k: int = 10,
                    aggregate: str = "sum", d: int = 10, generator: Callable = paper_pool,
                    generator_kwargs: dict | None = None, target: Callable = hard_target,
                    target_kwargs: dict | None = None, progress: bool = True):
    """Proposition 4.3 over ``num_pools`` random (pool, target) pairs, all criteria and baselines.

    Pools: ``generator(key, d=d, **generator_kwargs)`` (default :func:`paper_pool`), targets:
    ``target(key, d=d, **target_kwargs)`` (default :func:`hard_target`), both ``vmap``-ed over keys;
    each criterion is solved for all pairs in one ``jit(vmap(select_mixture))`` call.
    Returns an ``xarray.Dataset`` with dims ``mixture`` (criteria then baselines), ``trial``,
    ``task``, ``type``, ``k``:

    * ``probs [mixture, trial, task]``, ``type_mass [mixture, trial, type]`` (total π per type),
      ``hard_mass [mixture, trial]`` (:func:`hard_mass`);
    * ``objective``, ``kkt [mixture, trial]`` (nan for baselines);
    * ``exact_error [mixture, trial, k]`` — the ``m → ∞`` test error of ``P(π)`` (``k = 0..k``);
    * ``kinds [trial, task]``, ``lambda_min [trial, task]``, ``n [trial, task]``, ``target_lambda_min [trial]``.
    """
    import xarray as xr
    from tqdm.auto import tqdm

    num_pools = _checks.static_int("num_pools", num_pools, minimum=1)
    k = _checks.static_int("k", k, minimum=1)
    for c in criteria:
        if c not in CRITERIA:
            raise ValueError(f"criteria must be drawn from {CRITERIA}, got {c!r}")
    k_pool, k_target = jax.random.split(key)
    pools = random_pools(k_pool, num_pools, generator, d=d, **(generator_kwargs or {}))
    targets = jax.vmap(lambda kk: target(kk, d=d, **(target_kwargs or {})))(jax.random.split(k_target, num_pools))
    _check_pool(pools)
    probs, objective, kkt = {}, {}, {}
    for c in tqdm(list(criteria), desc="selection criteria", disable=not progress):
        sel = jax.jit(jax.vmap(lambda p, S, c=c: select_mixture(p, S, c, k, aggregate)))(pools, targets)
        probs[c], objective[c], kkt[c] = np.asarray(sel.probs), np.asarray(sel.objective), np.asarray(sel.kkt)
    base = jax.vmap(baseline_mixtures)(pools, targets)
    for name in BASELINES:
        p = base[name]
        probs[name] = np.asarray(p)
        objective[name] = np.full((num_pools,), np.nan)
        kkt[name] = np.full((num_pools,), np.nan)
    names = list(probs)
    P = np.stack([probs[n] for n in names])  # [M, trial, L]
    errs = jax.jit(jax.vmap(jax.vmap(lambda pool, S, p: exact_errors(pool, S, p, k), in_axes=(0, 0, 0)),
                            in_axes=(None, None, 0)))(pools, targets, jnp.asarray(P))
    T = len(pools.kind_names)
    tm = np.asarray(type_mass(pools, jnp.asarray(P), T)) if T else np.zeros(P.shape[:2] + (0,))
    hm = np.asarray(hard_mass(pools, jnp.asarray(P)))
    ds = xr.Dataset(
        {
            "probs": (("mixture", "trial", "task"), P),
            "type_mass": (("mixture", "trial", "type"), tm),
            "hard_mass": (("mixture", "trial"), hm),
            "objective": (("mixture", "trial"), np.stack([objective[n] for n in names])),
            "kkt": (("mixture", "trial"), np.stack([kkt[n] for n in names])),
            "exact_error": (("mixture", "trial", "k"), np.asarray(errs)),
            "kinds": (("trial", "task"), np.asarray(pools.kinds)),
            "lambda_min": (("trial", "task"), np.asarray(pools.lambda_min())),
            "n": (("trial", "task"), np.asarray(pools.ns)),
            "target_lambda_min": (("trial",), np.asarray(targets.lambda_min())),
        },
        coords={"mixture": names, "trial": np.arange(num_pools), "task": np.arange(pools.size),
                "type": list(pools.kind_names), "k": np.arange(k + 1)},
        attrs={"criteria": json.dumps(list(criteria)), "k": k, "aggregate": aggregate, "d": d,
               "generator": getattr(generator, "__name__", repr(generator)),
               "generator_kwargs": json.dumps(generator_kwargs or {}),
               "target": getattr(target, "__name__", repr(target)), "target_kwargs": json.dumps(target_kwargs or {}),
               "paper_ranking": json.dumps(list(PAPER_RANKING))},
    )
    return ds


def selection_table(ds):
    """Mean selected probability per task type ``[mixture, type]`` (mean over trials of the total π of
    each type), with ``hard_mass`` (mean), ``hard_mass_at_least_half`` (fraction of trials with ≥ 1/2 on
    hard tasks; Proposition 4.3) and ``ranking`` (types from most to least selected) per mixture."""
    import xarray as xr

    mean = ds["type_mass"].mean("trial")
    stderr = ds["type_mass"].std("trial", ddof=1) / np.sqrt(ds.sizes["trial"])
    types = list(ds["type"].values)
    ranking = [" > ".join(types[i] for i in np.argsort(-mean.sel(mixture=m).values, kind="stable"))
               for m in ds["mixture"].values]
    return xr.Dataset({
        "mean_type_mass": mean,
        "stderr_type_mass": stderr,
        "hard_mass": ds["hard_mass"].mean("trial"),
        "hard_mass_at_least_half": (ds["hard_mass"] >= 0.5 - 1e-6).mean("trial"),
        "ranking": (("mixture",), np.asarray(ranking, dtype=object)),
    })


# ============================================================================ verification by training
def mixture_comparison(key, pool: TaskPool | None = None, Sigma=None, mixtures: Sequence[str] | None = None,
                       k: int = 10, aggregate: str = "sum", steps: int = 3000, batch: int = 256,
                       m: int = 500, prompts: int = 2000, k_max: int = 20, d: int = 10, **train_kwargs):
    """Train one LSA per mixture (one vmapped call) and compare their test-time CoT on ``Σ``.

    Defaults: ``pool = paper_pool(key, d)`` (one task per type), ``Σ = power_law_target(key, d,
    α = 0.8)`` (hard), ``mixtures`` = the three criteria then the baselines. Training:
    :func:`ttscale.training.make_train_batched` with ``TrainConfig(steps, batch, **train_kwargs)``
    and the *same* key for every mixture. Test: ``prompts`` prompts of length ``m`` from ``Σ``,
    ``k = 0..k_max`` literal LSA passes (:func:`ttscale.cot.lsa_errors`).

    Returns an ``xarray.Dataset`` (dims ``mixture``, ``task``, ``k``): ``probs``; ``mean``,
    ``stderr``, ``median`` of the trained LSA's error; ``exact_mc_mean`` (pseudo-Newton with the
    exact ``P(π)`` on the same prompts); ``limit_error`` (``m → ∞`` of ``P(π)``);
    ``trained_limit_error`` (``m → ∞`` of the learned ``P``); ``preconditioner_error`` (relative
    Frobenius distance learned vs exact ``P(π)``); ``final_loss``.
    """
    import xarray as xr

    from ttscale import cot, training
    from ttscale.prompts import sample_prompts

    k_pool, k_target, k_train, k_test = jax.random.split(key, 4)
    pool = paper_pool(k_pool, d) if pool is None else _check_pool(pool)
    Sigma = power_law_target(k_target, pool.d, 0.8) if Sigma is None else _as_target(Sigma, pool.d, pool.dtype)
    Sigma = _as_target(Sigma, pool.d, pool.dtype)
    if mixtures is None:
        mixtures = tuple(CRITERIA) + ("uniform", "easy-only", "relevant-only", "hard-only")
    mixtures = tuple(mixtures)
    crit = [c for c in mixtures if c in CRITERIA]
    allp = selected_mixtures(pool, Sigma, crit, k, aggregate, baselines=True)
    unknown = [mname for mname in mixtures if mname not in allp]
    if unknown:
        raise ValueError(f"mixtures: unknown names {unknown}; choose from {list(allp)}")
    P = jnp.stack([allp[mname] for mname in mixtures]).astype(pool.dtype)
    P = P / jnp.sum(P, axis=-1, keepdims=True)
    M, L = P.shape
    ns = np.asarray(pool.ns)
    if np.any(ns != np.round(ns)) or np.any(~np.isfinite(ns)):
        raise ValueError(f"pool.ns must be whole prompt lengths to train on it, got {ns.tolist()}")
    tasks_cfg = tuple(training.Task(jax.tree_util.tree_map(lambda a: a[i], pool.covs), int(ns[i])) for i in range(L))
    config = training.TrainConfig(d=pool.d, tasks=tasks_cfg, steps=steps, batch=batch, **train_kwargs)
    basis = pool.covs.basis
    tasks = training.TaskArrays(
        jnp.broadcast_to(pool.covs.eigenvalues, (M,) + pool.covs.eigenvalues.shape),
        None if basis is None else jnp.broadcast_to(basis, (M,) + basis.shape),
        jnp.broadcast_to(pool.ns, (M, L)),
        P,
    )
    keys = jnp.stack([k_train] * M)
    result = training.make_train_batched(config)(keys, tasks)
    test = sample_prompts(k_test, Sigma, m, prompts)
    curve, exact_mc, lim, lim_trained, rel = _evaluate_mixtures(
        result.params, result.preconditioner, pool, P, test, Sigma.matrix(), k_max)
    losses = np.asarray(result.losses)
    tail = max(1, steps // 20)
    return xr.Dataset(
        {
            "probs": (("mixture", "task"), np.asarray(P)),
            "mean": (("mixture", "k"), np.asarray(curve.mean)),
            "stderr": (("mixture", "k"), np.asarray(curve.stderr)),
            "median": (("mixture", "k"), np.asarray(curve.median)),
            "exact_mc_mean": (("mixture", "k"), np.asarray(exact_mc)),
            "limit_error": (("mixture", "k"), np.asarray(lim)),
            "trained_limit_error": (("mixture", "k"), np.asarray(lim_trained)),
            "preconditioner_error": (("mixture",), np.asarray(rel)),
            "final_loss": (("mixture",), np.nanmean(losses[:, -tail:], axis=-1)),
            "kinds": (("task",), np.asarray(pool.kinds)),
            "n": (("task",), ns),
            "lambda_min": (("task",), np.asarray(pool.lambda_min())),
        },
        coords={"mixture": list(mixtures), "task": np.arange(L), "k": np.arange(k_max + 1),
                "type_name": (("task",), [pool.kind_names[i] if 0 <= i < len(pool.kind_names) else "" for i in np.asarray(pool.kinds)])},
        attrs={"m": m, "prompts": prompts, "steps": steps, "batch": batch, "k": k, "aggregate": aggregate,
               "target_eigenvalues": json.dumps(np.asarray(Sigma.eigenvalues, np.float64).tolist()),
               "train_config": config.to_json()},
    )


def _evaluate_mixtures(params, P_learned, pool, probs, test, S, k_max: int):
    """Test-time CoT of the trained LSAs (vmapped over the mixture axis) beside the exact ``P(π)``:
    per-prompt errors on the device (:func:`_mixture_errors`), summarised by :func:`ttscale.cot.error_curve`."""
    from ttscale import cot

    sq, sq_exact, lim, lim_trained, rel = _mixture_errors(params, P_learned, pool, probs, test, S, k_max)
    curve = cot.error_curve(np.moveaxis(np.asarray(sq), 0, 1))  # [prompts, mixture, k] → [mixture, k]
    exact_mc = cot.error_curve(np.moveaxis(np.asarray(sq_exact), 0, 1)).mean
    return curve, exact_mc, lim, lim_trained, rel


@functools.partial(jax.jit, static_argnames=("k_max",))
def _mixture_errors(params, P_learned, pool, probs, test, S, k_max: int):
    from ttscale import cot, training

    sq = jax.vmap(lambda prm: cot.lsa_errors(prm, test, k_max))(params)
    P_exact = jax.vmap(lambda p: theory.mixture_preconditioner(pool.covs, pool.ns, p))(probs)
    sq_exact = jax.vmap(lambda Pm: cot.pseudo_newton_errors(Pm, test, k_max))(P_exact)
    lim = jax.vmap(lambda Pm: theory.limit_error(Pm, S, k_max))(P_exact)
    lim_trained = jax.vmap(lambda Pm: theory.limit_error(Pm, S, k_max))(P_learned)
    rel = training.relative_error(P_learned, P_exact)
    return sq, sq_exact, lim, lim_trained, rel


# ============================================================================ figures
_COLORS = {"qp": "C0", "qp-length": "C1", "exact": "C2", "uniform": "C7", "easy-only": "C4",
           "relevant-only": "C5", "hard-only": "C3"}


def plot_selection(ds):
    """Figure: mean selected probability per task type for each criterion (bars, ±1 s.e. over trials),
    and the distribution of the mass on hard tasks (Proposition 4.3: ``≥ 1/2``). ``ds`` from
    :func:`selection_study`."""
    import matplotlib.pyplot as plt

    crit = [c for c in json.loads(ds.attrs.get("criteria", "[]")) if c in list(ds["mixture"].values)]
    crit = crit or list(ds["mixture"].values)
    tab = selection_table(ds.sel(mixture=crit))
    types = list(ds["type"].values)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(len(crit), 1)
    x = np.arange(len(types))
    for i, c in enumerate(crit):
        ax1.bar(x + (i - (len(crit) - 1) / 2) * width, tab["mean_type_mass"].sel(mixture=c).values, width,
                yerr=tab["stderr_type_mass"].sel(mixture=c).values, label=c, color=_COLORS.get(c), capsize=2)
    ax1.set_xticks(x, types)
    ax1.set_ylabel("mean selected probability")
    ax1.set_title(f"selected mixture per task type ({ds.sizes['trial']} random pools)\n"
                  f"paper: {' > '.join(PAPER_RANKING)}", fontsize=9)
    ax1.legend(fontsize=8)
    bins = np.linspace(0, 1, 21)
    for c in crit:
        ax2.hist(ds["hard_mass"].sel(mixture=c).values, bins=bins, histtype="step", lw=1.5,
                 label=c, color=_COLORS.get(c))
    ax2.axvline(0.5, color="k", ls=":", lw=1)
    ax2.set_xlabel("mass on hard tasks (σ_min below pool median)")
    ax2.set_ylabel("pools")
    ax2.set_title("Proposition 4.3: hard mass ≥ 1/2", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_mixture_comparison(ds):
    """Figure: test error vs CoT steps ``k`` on the hard target for LSAs trained on each mixture
    (markers: Monte Carlo of the trained LSA at finite ``m``; dashed: ``m → ∞`` limit of the exact
    ``P(π)``); log scale. ``ds`` from :func:`mixture_comparison`."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    k = ds["k"].values
    for mname in ds["mixture"].values:
        c = _COLORS.get(str(mname))
        sub = ds.sel(mixture=mname)
        ax.errorbar(k[1:], sub["mean"].values[1:], yerr=sub["stderr"].values[1:], marker="o", ms=3, lw=1,
                    color=c, label=f"{mname} (trained LSA)")
        ax.plot(k[1:], sub["limit_error"].values[1:], ls="--", lw=1, color=c)
    ax.set_yscale("log")
    ax.set_xlabel("CoT steps k")
    ax.set_ylabel("E||w_k − w||²")
    ax.set_title(f"hard target, m={ds.attrs.get('m')} (markers), dashed: m→∞ limit of P(π)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ============================================================================ report
def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def selection_report(out: str = "results/selection", quick: bool = False, seed: int = 0,
                     overwrite: bool = False, progress: bool = True, steps: int | None = None,
                     batch: int | None = None) -> dict:
    """Run the selection study and the trained-mixture comparison, write data, figures and a summary.

    Writes ``out/study.nc``, ``out/comparison.nc`` (each skipped when present unless ``overwrite``,
    so an interrupted run loses nothing finished), ``out/selection.png``, ``out/comparison.png``,
    ``out/table.csv``, ``out/comparison.csv`` and ``out/summary.md``. ``quick`` shrinks everything (for tests). Returns
    ``{"study", "table", "comparison", "summary"}``. Command line: ``python -m ttscale.selection``.
    """
    os.makedirs(out, exist_ok=True)
    key = jax.random.key(seed)
    k_study, k_cmp = jax.random.split(key)
    sizes = dict(num_pools=16, steps=200, batch=64, prompts=256, m=200, k_max=10) if quick else \
        dict(num_pools=256, steps=1500, batch=128, prompts=2000, m=500, k_max=20)
    if steps is not None:
        sizes["steps"] = _checks.static_int("steps", steps, minimum=1)
    if batch is not None:
        sizes["batch"] = _checks.static_int("batch", batch, minimum=1)

    def cached(name, make):
        path = os.path.join(out, name)
        if os.path.exists(path) and not overwrite:
            return store.read_dataset(path)
        ds = make()
        store.write_dataset(ds, path)
        return ds

    study = cached("study.nc", lambda: selection_study(k_study, sizes["num_pools"], progress=progress))
    cmp = cached("comparison.nc", lambda: mixture_comparison(
        k_cmp, steps=sizes["steps"], batch=sizes["batch"], prompts=sizes["prompts"], m=sizes["m"],
        k_max=sizes["k_max"]))
    tab = selection_table(study)
    for name, fig in (("selection.png", plot_selection(study)), ("comparison.png", plot_mixture_comparison(cmp))):
        fig.savefig(os.path.join(out, name), dpi=120)
        import matplotlib.pyplot as plt

        plt.close(fig)

    types = list(study["type"].values)
    rows = []
    for mname in study["mixture"].values:
        r = [str(mname)] + [f"{tab['mean_type_mass'].sel(mixture=mname, type=t).item():.3f}" for t in types]
        r += [f"{tab['hard_mass'].sel(mixture=mname).item():.3f}",
              f"{tab['hard_mass_at_least_half'].sel(mixture=mname).item():.2f}",
              f"{study['exact_error'].sel(mixture=mname).isel(k=-1).median('trial').item():.3g}",
              str(tab['ranking'].sel(mixture=mname).item())]
        rows.append(r)
    kk = int(study.attrs["k"])
    t1 = _markdown_table(["mixture"] + types + ["hard mass", "P(hard ≥ ½)", f"median exact err k={kk}", "ranking"], rows)
    ks = [1, 2, 5, 10, int(cmp["k"].values[-1])]
    ks = sorted({k for k in ks if k <= int(cmp["k"].values[-1])})
    rows2 = []
    for mname in cmp["mixture"].values:
        sub = cmp.sel(mixture=mname)
        probs = ", ".join(f"{p:.2f}" for p in sub["probs"].values)
        r = [str(mname), probs] + [f"{sub['mean'].sel(k=k).item():.3g} ± {sub['stderr'].sel(k=k).item():.1g}"
                                   f" [{sub['exact_mc_mean'].sel(k=k).item():.3g}]"
                                   f" ({sub['limit_error'].sel(k=k).item():.3g})" for k in ks]
        r += [f"{sub['preconditioner_error'].item():.3f}"]
        rows2.append(r)
    t2 = _markdown_table(["mixture", "π (" + ", ".join(cmp["type_name"].values) + ")"] + [f"k={k}" for k in ks]
                         + ["‖P̂−P(π)‖/‖P(π)‖"], rows2)
    # honest verdicts
    verdicts = []
    for c in json.loads(study.attrs["criteria"]):
        if c not in cmp["mixture"].values:
            continue
        for base in ("uniform", "easy-only"):
            if base not in cmp["mixture"].values:
                continue
            a, b = cmp["mean"].sel(mixture=c), cmp["mean"].sel(mixture=base)
            sa, sb = cmp["stderr"].sel(mixture=c), cmp["stderr"].sel(mixture=base)
            better = [int(k) for k in cmp["k"].values[1:] if a.sel(k=k) + 2 * sa.sel(k=k) < b.sel(k=k) - 2 * sb.sel(k=k)]
            worse = [int(k) for k in cmp["k"].values[1:] if a.sel(k=k) - 2 * sa.sel(k=k) > b.sel(k=k) + 2 * sb.sel(k=k)]
            verdicts.append(f"- `{c}` vs `{base}`: lower error (beyond 2 s.e.) at k = {better or 'none'}; "
                            f"higher at k = {worse or 'none'}.")
    summary = f"""# Task selection (docs/science.md §7, Proposition 4.3)

Regenerate: `python -m ttscale.selection --out {out}{' --quick' if quick else ''} --seed {seed} --overwrite`.

Our reading of the pool (`paper_pool`): α = power-law exponent of the task spectrum (tr Λ = d = {study.attrs['d']}),
B = training prompt length n, α jittered by ±0.05, bases rotated ≈ 0.2 rad from the axes; targets Σ:
power law with α ~ U(0.6, 1.0), rotated ≈ 0.2 rad (`hard_target`). Exact criterion: Σ_{{j=1..{kk}}} of the
m → ∞ error of P(π) = Λ̄Q⁻¹. Hard tasks = σ_min below the pool median (= the α = 0.8 tasks).

## Mean selected probability per task type ({study.sizes['trial']} random pools and targets)
Paper: {' > '.join(PAPER_RANKING)}.

{t1}

## LSAs trained on each mixture, test-time CoT on a hard target (α = 0.8)
{cmp.attrs['steps']} SGD steps × {cmp.attrs['batch']} prompts per mixture; test: {cmp.attrs['prompts']} prompts of length
m = {cmp.attrs['m']}. Cells: trained-LSA mean error ± s.e. [pseudo-Newton with the exact P(π), same prompts]
(m → ∞ limit of the exact P(π)). Last column: relative distance of the learned preconditioner from P(π).
Data: `comparison.csv` (all k), figure `comparison.png`; study: `table.csv`, `selection.png`.

{t2}

{chr(10).join(verdicts)}
"""
    with open(os.path.join(out, "summary.md"), "w") as fh:
        fh.write(summary)
    # small, committable copies of the tables (the .nc files hold everything)
    tab_df = tab["mean_type_mass"].to_pandas()
    tab_df["hard_mass"] = tab["hard_mass"].to_pandas()
    tab_df["hard_mass_at_least_half"] = tab["hard_mass_at_least_half"].to_pandas()
    tab_df.to_csv(os.path.join(out, "table.csv"), float_format="%.6g")
    cmp[["mean", "stderr", "median", "exact_mc_mean", "limit_error", "trained_limit_error"]].to_dataframe() \
        .to_csv(os.path.join(out, "comparison.csv"), float_format="%.6g")
    return {"study": study, "table": tab, "comparison": cmp, "summary": summary}


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m ttscale.selection", description=selection_report.__doc__.splitlines()[0])
    p.add_argument("--out", default="results/selection")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="recompute even if out/*.nc exist")
    p.add_argument("--steps", type=int, default=None, help="training steps per mixture (default 1500; quick 200)")
    p.add_argument("--batch", type=int, default=None, help="prompts per training step (default 128; quick 64)")
    args = p.parse_args(argv)
    rep = selection_report(args.out, quick=args.quick, seed=args.seed, overwrite=args.overwrite,
                           steps=args.steps, batch=args.batch)
    print(rep["summary"])
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
