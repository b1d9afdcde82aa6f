"""Test-time chain of thought: k passes from ``ŵ_0 = 0``, each feeding its estimate back.

The rollout of any model is :func:`ttscale.models.rollout` (one ``lax.scan`` over steps) and its
errors are ``model.errors`` (:mod:`ttscale.models`). This module gives the paper's two steppers
on raw prompts, which compute the same iterates when ``V = V*`` (Proposition 3.2):

* **LSA with feedback** — ``E_0 = embed(X, y, 0)``; pass ``i`` reads ``ŵ_{i+1}`` from the last
  column of ``f(E_i)`` and appends the column ``[0; 0; ŵ_{i+1}; 1]``; ``ρ = m`` throughout.
* **pseudo-Newton** — ``ŵ_{i+1} = ŵ_i − P (S_m ŵ_i − X y / m)``, ``S_m = X Xᵀ / m``
  (``X y / m = S_m w`` without label noise), so ``w_k = (I − (I − P S_m)^k) w``.

Each rollout is one ``lax.scan`` over steps. Per-prompt functions take ``X [d, m]``,
``y [m]``; the ``*_errors`` wrappers take a :class:`~ttscale.prompts.Prompts` batch and
``vmap`` over it, returning squared errors ``||ŵ_k − w||² [batch, k_max + 1]`` (``k = 0``
included, where ``ŵ_0 = 0`` gives ``||w||²``).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import _checks, models
from ttscale import lsa as lsa_mod
from ttscale.models import pseudo_newton
from ttscale.prompts import Prompts, statistics_of

LSA_METHODS = ("gram", "last_column", "full")


def rollout(step: Callable, state, k_max: int):
    """Run ``state, out = step(state)`` ``k_max`` times with ``lax.scan``; returns stacked ``out [k_max, ...]``."""
    return models.rollout(step, state, _checks.static_int("k_max", k_max, minimum=0))


# ----------------------------------------------------------------------------- pseudo-Newton
def pseudo_newton_estimates(P: jax.Array, X: jax.Array, y: jax.Array, k_max: int, w0=None) -> jax.Array:
    """Iterates ``ŵ_1..ŵ_k`` of ``ŵ ← ŵ − P (S ŵ − X y / m)`` for one prompt → ``[k_max, d]``.

    ``P [d, d]``, ``X [d, m]``, ``y [m]``; ``w0`` defaults to ``0``. Forms ``B = I − P S`` and
    ``c = P X y / m`` once, then iterates ``ŵ ← B ŵ + c``.
    """
    d, m = X.shape
    S = X @ X.T / m
    B = jnp.eye(d, dtype=X.dtype) - P @ S
    c = P @ (X @ y) / m
    w0 = jnp.zeros((d,), X.dtype) if w0 is None else w0

    def step(w_hat):
        w_next = B @ w_hat + c
        return w_next, w_next

    return rollout(step, w0, k_max)


def squared_errors(estimates: jax.Array, w: jax.Array) -> jax.Array:
    """``||ŵ_k − w||²`` for ``k = 0..k_max`` from ``estimates [..., k_max, d]`` and ``w [..., d]`` (``ŵ_0 = 0``) → ``[..., k_max + 1]``.

    ``nan`` (from ``inf − inf`` in a divergent rollout) is reported as ``inf``.
    """
    return models.squared_errors_of(estimates, w)


def _check_prompts(prompts: Prompts, d: int | None = None) -> None:
    if not isinstance(prompts, Prompts):
        raise TypeError(f"prompts must be ttscale.Prompts, got {type(prompts).__name__}")
    if prompts.X.ndim != 3:
        raise ValueError(f"prompts.X must be [batch, d, m], got shape {prompts.X.shape}")
    if d is not None and prompts.d != d:
        raise ValueError(f"prompts have d={prompts.d} but the model/preconditioner has d={d}")


def pseudo_newton_errors(P: jax.Array, prompts: Prompts, k_max: int) -> jax.Array:
    """Squared errors ``[batch, k_max + 1]`` of the pseudo-Newton rollout with preconditioner ``P [d, d]``.

    The ``pseudo_newton`` model's kernel (:func:`ttscale.models.pseudo_newton.errors`) on the
    statistics of ``prompts`` (:func:`ttscale.prompts.statistics_of`).
    """
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    _check_prompts(prompts)
    P = _checks.square_matrix("P", P, prompts.d)
    return _pseudo_newton_errors(P.astype(prompts.X.dtype), prompts, k_max)


@functools.partial(jax.jit, static_argnums=2)  # one program per shape, not one compile per operation
def _pseudo_newton_errors(P: jax.Array, prompts: Prompts, k_max: int) -> jax.Array:
    return pseudo_newton.errors(pseudo_newton.PseudoNewtonParams(P), statistics_of(prompts), k_max)


# ----------------------------------------------------------------------------- literal LSA
def lsa_estimates(params, X: jax.Array, y: jax.Array, k_max: int, rho=None, method: str = "gram") -> jax.Array:
    """Literal LSA CoT for one prompt: ``k_max`` passes with feedback → ``ŵ_1..ŵ_k [k_max, d]``.

    ``rho`` defaults to ``m`` (appended estimate columns are not counted). ``method``:

    * ``"full"``: the whole layer ``f(E)`` on a fixed buffer ``[D, m + 1 + k_max]`` (unused
      columns are zero and contribute nothing), reading the current query column;
    * ``"last_column"``: ``e_q + V (E Eᵀ) W e_q / ρ`` from the same buffer;
    * ``"gram"`` (default): the same with ``G = E Eᵀ`` kept up to date by rank-one updates
      ``G ← G + e eᵀ`` as columns are appended — ``O(D²)`` per step.

    All three are the same function of ``(params, X, y)``; the tests check they agree.
    """
    if method not in LSA_METHODS:
        raise ValueError(f"method must be one of {LSA_METHODS}, got {method!r}")
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    d, m = X.shape
    rho = m if rho is None else rho
    E0 = lsa_mod.embed(X, y)
    if method == "gram":
        gram0 = E0 @ E0.T
        e_q0 = E0[:, -1]

        def step(state):
            gram, e_q = state
            col = lsa_mod.last_column_from_gram(params, gram, e_q, rho)
            w_hat = lsa_mod.read_estimate(col)
            e_new = lsa_mod.query_column(w_hat)
            return (gram + jnp.outer(e_new, e_new), e_new), w_hat

        return rollout(step, (gram0, e_q0), k_max)

    D = E0.shape[0]
    buffer = jnp.concatenate([E0, jnp.zeros((D, k_max), E0.dtype)], axis=1)

    def step(state):
        E, i = state
        q = m + i
        if method == "full":
            col = jax.lax.dynamic_index_in_dim(lsa_mod.forward(params, E, rho), q, axis=1, keepdims=False)
        else:
            e_q = jax.lax.dynamic_index_in_dim(E, q, axis=1, keepdims=False)
            col = lsa_mod.last_column_from_gram(params, E @ E.T, e_q, rho)
        w_hat = lsa_mod.read_estimate(col)
        E = jax.lax.dynamic_update_index_in_dim(E, lsa_mod.query_column(w_hat), q + 1, axis=1)
        return (E, i + 1), w_hat

    return rollout(step, (buffer, jnp.asarray(0)), k_max)


def lsa_errors(params, prompts: Prompts, k_max: int, rho=None, method: str = "gram") -> jax.Array:
    """Squared errors ``[batch, k_max + 1]`` of the literal LSA CoT (``vmap`` of :func:`lsa_estimates`)."""
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    _check_prompts(prompts, params.d)
    if rho is not None:
        _checks.positive_count("rho", rho)
    return _lsa_errors(params, prompts, k_max, rho, method)  # lsa_estimates checks `method` while tracing


@functools.partial(jax.jit, static_argnums=(2, 4))  # one program per shape, not one compile per operation
def _lsa_errors(params, prompts: Prompts, k_max: int, rho, method: str) -> jax.Array:
    est = jax.vmap(lambda X, y: lsa_estimates(params, X, y, k_max, rho, method))(prompts.X, prompts.y)
    return squared_errors(est, prompts.w)


# ----------------------------------------------------------------------------- statistics
class ErrorCurve(NamedTuple):
    """Mean, standard error of the mean and median of ``||ŵ_k − w||²`` over prompts, each ``[..., k_max + 1]`` (NumPy)."""

    mean: np.ndarray
    stderr: np.ndarray
    median: np.ndarray


def error_curve(sq_errors) -> ErrorCurve:
    """Summarise per-prompt squared errors ``[batch, k]`` over the batch axis (:mod:`ttscale.summary`, on the host).

    Divergent prompts give ``inf`` (never an exception): the mean and standard error become
    ``inf`` while the median stays finite as long as fewer than half the prompts diverge.
    """
    from ttscale import summary

    errs = np.asarray(sq_errors)
    if errs.ndim < 1 or errs.shape[0] < 2:
        raise ValueError(f"need at least 2 prompts for a standard error, got shape {errs.shape}")
    rows = np.moveaxis(errs, 0, -1).reshape(-1, errs.shape[0])  # [(k...), prompts]
    mean, stderr = summary.finish(summary.moments_of(rows))
    median = summary.median_rows(rows)
    shape = errs.shape[1:]
    return ErrorCurve(*(np.asarray(x).reshape(shape).astype(errs.dtype) for x in (mean, stderr, median)))
