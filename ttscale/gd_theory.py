"""Gradient-descent CoT against pseudo-Newton CoT at ``m → ∞`` (docs/science.md §10).

Gradient descent with step ``η`` is pseudo-Newton with ``P = η I`` (:mod:`ttscale.models.gd`), so its
exact ``m → ∞`` error is :func:`ttscale.theory.limit_error` ``(η I, Σ, k)``:

    E_GD(k, η) = Σ_i (1 − η s_i)^{2k}   over the eigenvalues ``s_i`` of ``Σ``,

against the trained LSA's ``||(I − Γ(Λ, n)⁻¹ Σ)^k||_F²`` (for ``Σ = Λ``: ``Σ_i ((λ_i + tr Λ)/(n g_i))^{2k}``,
``g_i = (1 + 1/n) λ_i + tr Λ/n``).

**The step.** ``E_GD(k, ·)`` is a sum of even powers of affine functions of ``η``, hence convex, with its
minimiser ``η*(k)`` in ``[1/s_max, 1/s_min]`` (there every ``1 − η s_i`` has one sign at the ends).
:func:`optimal_eta` finds it to round-off by bisection on the sign of ``dE/dη`` (evaluated in log scale, so
no overflow). It is the best *fixed* step for a budget of ``k`` steps, chosen with knowledge of ``Σ`` —
the fair counterpart of the pseudo-Newton ``P`` which knows ``Λ``. ``k = 1`` gives ``Σ s_i / Σ s_i²``; as
``k → ∞`` the largest ``|1 − η s_i|`` dominates and ``η*(k) → 2/(s_min + s_max)`` (:func:`minimax_eta`,
the classic step, rate ``(κ − 1)/(κ + 1)``, ``κ = s_max/s_min``). Steps to a target ``ε``: GD needs about
``(κ/4) log(d/ε)``; pseudo-Newton with ``Σ = Λ`` about ``log(d/ε) / (2 log(1/r))`` with the Corollary 3.5
rate ``r = (1 + Hard)/(n + 1 + Hard)`` (≈ ``Hard/(2n) · log(d/ε)`` for ``Hard ≫ n``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import _checks, theory
from ttscale.spectra import Covariance, as_covariance, hardness


def _spectrum(name: str, test) -> jax.Array:
    cov = as_covariance(name, test) if not isinstance(test, Covariance) else test
    s = cov.eigenvalues
    if s.ndim != 1:
        raise ValueError(f"{name} must be one covariance (eigenvalues [d]), got shape {s.shape}; jax.vmap instead")
    if _checks.is_concrete(s) and not np.any(np.asarray(s) > 0):
        raise ValueError(f"{name} must have a positive eigenvalue (gradient descent does nothing on Σ = 0)")
    return s


@_checks.renamed_argument("Sigma", "test")
def minimax_eta(test) -> jax.Array:
    """``η = 2/(s_min + s_max)`` over the positive eigenvalues of ``Σ``: minimises ``max_i |1 − η s_i|`` (``k → ∞``)."""
    s = _spectrum("test", test)
    pos = s > 0
    return 2 / (jnp.min(jnp.where(pos, s, jnp.inf)) + jnp.max(s))


@_checks.renamed_argument("Sigma", "test")
def optimal_eta(test, k, iterations: int = 200) -> jax.Array:
    """``η*(k) = argmin_η Σ_i (1 − η s_i)^{2k}`` (module docstring) for ``k >= 1`` (scalar; may be traced).

    Bisection on the sign of ``dE/dη ∝ −Σ_i s_i (1 − η s_i)^{2k−1}`` over ``[1/s_max, 1/s_min]`` (positive
    eigenvalues; a zero eigenvalue adds a constant 1 to the error and nothing to the derivative),
    ``iterations`` halvings (static). ``jax.vmap`` over ``k`` or a stack of spectra.
    """
    _checks.real_number("k", k, minimum=1)
    iterations = _checks.static_int("iterations", iterations, minimum=1)
    s = _spectrum("test", test)
    pos = s > 0
    lo = 1 / jnp.max(s)
    hi = 1 / jnp.min(jnp.where(pos, s, jnp.inf))
    k = jnp.asarray(k, s.dtype)

    def rising(eta):  # dE/dη > 0
        u = 1 - eta * s
        au = jnp.abs(u)
        logs = jnp.where(pos & (au > 0), (2 * k - 1) * jnp.log(jnp.where(au > 0, au, 1.0)), -jnp.inf)
        top = jnp.max(logs)
        return -jnp.sum(jnp.where(pos, s * jnp.sign(u) * jnp.exp(logs - top), 0.0)) > 0

    def body(_, bounds):
        a, b = bounds
        mid = (a + b) / 2
        up = rising(mid)
        return jnp.where(up, a, mid), jnp.where(up, mid, b)

    a, b = jax.lax.fori_loop(0, iterations, body, (lo, hi))
    return (a + b) / 2


@_checks.renamed_argument("Sigma", "test")
def steps_to_target(P, test, target, k_max: int) -> jax.Array:
    """The first ``k ∈ 0..k_max`` with :func:`ttscale.theory.limit_error` ``(P, Σ, k) <= target``; ``inf`` if none.

    ``P [d, d]`` (pseudo-Newton's ``Γ⁻¹``, gradient descent's ``η I``, any), ``Σ`` a covariance or dense
    matrix, ``target > 0``. Returns a float scalar (jit/vmap-able in ``P``, ``target``).
    """
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    _checks.real_number("target", target, minimum=0, exclusive=True)
    return _steps_to_target(P, test, target, k_max=k_max)


@functools.partial(jax.jit, static_argnames=("k_max",))
def _steps_to_target(P, test, target, *, k_max: int):
    return _first_below(theory.limit_error(P, test, k_max), target)


def _first_below(err: jax.Array, target) -> jax.Array:
    hit = err <= jnp.asarray(target, err.dtype)
    return jnp.where(jnp.any(hit), jnp.argmax(hit).astype(err.dtype), jnp.inf)


@_checks.renamed_argument("Sigma", "test")
def gd_best_error(test, k_max: int) -> tuple[jax.Array, jax.Array]:
    """``(η*(k), E_GD(k, η*(k)))`` for ``k = 1..k_max`` → two ``[k_max]`` arrays: the best fixed step for each budget."""
    k_max = _checks.static_int("k_max", k_max, minimum=1)
    s = _spectrum("test", test)
    ks = jnp.arange(1, k_max + 1, dtype=s.dtype)
    etas = jax.vmap(lambda k: optimal_eta(test, k))(ks)
    # P = η I commutes with Σ, so limit_error(η I, Σ, k) = Σ_i |1 − η s_i|^{2k} (evaluated in log scale)
    u = jnp.abs(1 - etas[:, None] * s[None, :])
    err = jnp.sum(jnp.where(u > 0, jnp.exp(2 * ks[:, None] * jnp.log(jnp.where(u > 0, u, 1.0))), 0.0), axis=-1)
    return etas, err


@_checks.renamed_argument("Sigma", "test")
def gd_steps_to_target(test, target, k_max: int, eta="optimal") -> jax.Array:
    """Steps gradient descent needs to reach ``target`` at ``m → ∞``; ``inf`` if more than ``k_max``.

    ``eta="optimal"``: the best fixed step for each budget (the first ``k`` with ``E_GD(k, η*(k)) <= target``);
    ``"minimax"``: ``η = 2/(s_min + s_max)``; a number: that step.
    """
    k_max = _checks.static_int("k_max", k_max, minimum=1)
    _checks.real_number("target", target, minimum=0, exclusive=True)
    s = _spectrum("test", test)
    d = s.shape[-1]
    if isinstance(eta, str):
        if eta == "optimal":
            _, err = gd_best_error(test, k_max)
            err = jnp.concatenate([jnp.full((1,), float(d), err.dtype), err])
            return _first_below(err, target)
        if eta != "minimax":
            raise ValueError(f"eta must be 'optimal', 'minimax' or a step size, got {eta!r}")
        eta = minimax_eta(test)
    else:
        _checks.real_number("eta", eta, minimum=0, exclusive=True)
    return steps_to_target(jnp.asarray(eta, s.dtype) * jnp.eye(d, dtype=s.dtype), test, target, k_max)


class StepsComparison(NamedTuple):
    """:func:`compare_steps`: ``hardness`` (``Hard(Λ)``), ``condition`` (``κ = s_max/s_min``), steps to the target
    of ``pseudo_newton`` (``P = Γ(Λ, n)⁻¹``), ``gd_optimal`` (``η*(k)``) and ``gd_minimax`` (``2/(s_min + s_max)``)."""

    hardness: float
    condition: float
    pseudo_newton: float
    gd_optimal: float
    gd_minimax: float


def compare_steps(train: Covariance, n, target, k_max: int, test=None) -> StepsComparison:
    """Steps each method needs to reach ``target`` at ``m → ∞`` on ``Σ = test`` (default ``Λ = train``)."""
    test = train if test is None else test
    s = np.asarray(_spectrum("test", test), np.float64)
    pos = s[s > 0]
    P = theory.gamma_inverse(train, n)
    return StepsComparison(
        float(hardness(train)), float(pos.max() / pos.min()),
        float(steps_to_target(P, test, target, k_max)),
        float(gd_steps_to_target(test, target, k_max, "optimal")),
        float(gd_steps_to_target(test, target, k_max, "minimax")))


__all__ = ["minimax_eta", "optimal_eta", "steps_to_target", "gd_best_error", "gd_steps_to_target", "compare_steps",
           "StepsComparison"]
