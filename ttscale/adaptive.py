"""Adaptive test-time compute: stop CoT from what the prompt shows, without ``Σ`` or ``w`` (docs/science.md §10).

Along a pseudo-Newton rollout ``ŵ_{k+1} = ŵ_k − P g_k``, ``g_k = S ŵ_k − b`` (any fixed ``P``: the
trained ``Γ⁻¹``, gradient descent's ``η I``), the in-context residual

    r_k = ||y − Xᵀ ŵ_k||²/m = yᵀy/m − 2 bᵀŵ_k + ŵ_kᵀ S ŵ_k

is computable from the prompt's sufficient statistics ``S``, ``b``, ``yᵀy/m`` alone. Its increments are
exact and free of cancellation: with ``Δ_k = ŵ_{k+1} − ŵ_k = −P g_k`` and ``g_{k+1} = g_k + S Δ_k``
(``r`` is quadratic with gradient ``2g``),

    δ_k = r_{k+1} − r_k = Δ_kᵀ (g_k + g_{k+1}),   g_0 = −b,   r_0 = yᵀy/m,

so the kernel iterates ``g`` (which shrinks like the error does: converged iterates keep their relative
accuracy) and never forms ``r_k`` as a difference of ``O(1)`` terms. Two rules, for every budget
``K = 0..k_max`` (at most ``K`` CoT passes):

* ``first_increase`` (rule A): keep ``ŵ_k`` at the first ``k`` with ``r_{k+1} ≥ r_k`` (``δ_k ≥ 0``), or
  ``ŵ_K`` if the residual falls throughout; it spends ``min(k + 1, K)`` passes (pass ``k + 1`` reveals
  the rise).
* ``argmin``: keep ``argmin_{k ≤ K} r_k`` (the first on ties); it spends ``K`` passes. The running
  argmin compares ``r_k`` with the best so far through the sum of the ``δ`` since the best, so it too
  never cancels.

The per-prompt **oracle** (knows ``w``) keeps ``argmin_{k ≤ K} ||ŵ_k − w||²``. :func:`stopping_steps`
computes the steps from ``(P, S, b)`` only — its signature has no ``w`` and no ``Σ``;
:func:`rollout_summary` adds the errors (the scoring, which reads ``w``) of the rules, the oracle and
fixed ``k``. The registered model ``adaptive`` (:mod:`ttscale.models.adaptive`) runs the rules in sweeps.

When it fails (by construction): with label noise the residual keeps falling as the iterate fits the
noise, so rule A does not stop; with ``m < d`` the residual falls to 0 (interpolation) while the error
stalls at the unidentifiable part — neither is a blow-up, and the rule is then no better than ``k = K``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ttscale import _checks
from ttscale.models import pseudo_newton
from ttscale.prompts import Statistics, _apply

RULES = ("first_increase", "argmin")


class Steps(NamedTuple):
    """Per prompt and budget ``K = 0..k_max`` (each ``[b, k_max + 1]``): the kept step and the passes spent."""

    steps: jax.Array
    passes: jax.Array


class Rule(NamedTuple):
    """A stopping rule's outcome per prompt and budget: ``steps``, ``passes`` (int32) and ``errors`` (``||ŵ_steps − w||²``), each ``[b, k_max + 1]``."""

    steps: jax.Array
    passes: jax.Array
    errors: jax.Array


class Summary(NamedTuple):
    """:func:`rollout_summary`: ``fixed [b, k_max + 1]`` (``||ŵ_k − w||²``), ``residuals [b, k_max + 1]``
    (``r_k``), and :class:`Rule` results ``first_increase``, ``argmin`` (from the statistics only) and
    ``oracle`` (knows ``w``)."""

    fixed: jax.Array
    residuals: jax.Array
    first_increase: Rule
    argmin: Rule
    oracle: Rule


def _check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return rule


def residual_increments(P, apply_S: Callable, b, k_max: int) -> jax.Array:
    """``δ_k = r_{k+1} − r_k`` for ``k = 0..k_max − 1`` → ``[bsz, k_max]`` (module docstring).

    ``P [d, d]`` or ``[d]`` (diagonal), ``apply_S(v [bsz, d]) -> S v``, ``b [bsz, d]``. One ``lax.scan``.
    """
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    P = jnp.asarray(P, b.dtype)
    if P.ndim not in (1, 2) or P.shape[-1] != b.shape[-1]:
        raise ValueError(f"P must be [d] or [d, d] with d={b.shape[-1]}, got shape {P.shape}")

    def step(g, _):
        delta = -_apply(P, g) if P.ndim == 2 else -(P * g)
        g_next = g + apply_S(delta)
        return g_next, jnp.sum(delta * (g + g_next), axis=-1)

    _, deltas = jax.lax.scan(step, -b, None, length=k_max)
    return deltas.T


def _running_argmin(deltas: jax.Array) -> jax.Array:
    """``argmin_{k ≤ K} r_k`` for every ``K`` from the increments ``[bsz, k_max]`` → ``[bsz, k_max + 1]`` (first on ties).

    Carries ``D = r_k − r_best`` as the sum of the increments since the best, so no large term cancels.
    """
    bsz = deltas.shape[0]

    def step(carry, x):
        best, D, k = carry
        D = D + x
        better = D < 0
        best = jnp.where(better, k + 1, best)
        D = jnp.where(better, jnp.zeros_like(D), D)
        return (best, D, k + 1), best

    init = (jnp.zeros((bsz,), jnp.int32), jnp.zeros((bsz,), deltas.dtype), jnp.zeros((), jnp.int32))
    _, best = jax.lax.scan(step, init, deltas.T)
    return jnp.concatenate([jnp.zeros((1, bsz), jnp.int32), best], axis=0).T


def _first_increase(deltas: jax.Array) -> Steps:
    """Rule A for every budget from the increments ``[bsz, k_max]``."""
    bsz, k_max = deltas.shape
    ks = jnp.arange(k_max, dtype=jnp.int32)
    rise = jnp.where(jnp.isnan(deltas) | (deltas >= 0), ks, k_max)  # δ_k ≥ 0 (or nan: divergence) stops at k
    first = jnp.min(rise, axis=-1, initial=k_max)  # [bsz]
    budgets = jnp.arange(k_max + 1, dtype=jnp.int32)
    steps = jnp.minimum(first[:, None], budgets[None, :])
    passes = jnp.minimum(steps + 1, budgets[None, :])
    return Steps(steps, passes)


def stopping_steps(P, S, b, k_max: int, rule: str = "first_increase") -> Steps:
    """The steps a rule keeps, from what a prompt gives: ``P [d, d]`` (or ``[d]``), ``S [bsz, d, d]`` (or a
    function ``v ↦ S v``), ``b = X y/m [bsz, d]`` → :class:`Steps` ``[bsz, k_max + 1]`` (entry ``K``: budget ``K``).

    Takes no ``w`` and no ``Σ``; ``yᵀy/m`` is not needed either (the rules compare residuals, whose
    differences :func:`residual_increments` gives exactly).
    """
    _check_rule(rule)
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    b = jnp.asarray(b)
    if b.ndim != 2:
        raise ValueError(f"b must be [batch, d], got shape {b.shape}")
    if callable(S):
        apply_S = S
    else:
        S = jnp.asarray(S, b.dtype)
        if S.shape != b.shape + b.shape[-1:]:
            raise ValueError(f"S must be [batch, d, d] = {b.shape + b.shape[-1:]}, got shape {S.shape}")
        apply_S = lambda v: jnp.einsum("bij,bj->bi", S, v)  # noqa: E731
    deltas = residual_increments(P, apply_S, b, k_max)
    if rule == "first_increase":
        return _first_increase(deltas)
    steps = _running_argmin(deltas)
    budgets = jnp.broadcast_to(jnp.arange(k_max + 1, dtype=jnp.int32), steps.shape)
    return Steps(steps, budgets)


def statistics_steps(P, statistics: Statistics, k_max: int, rule: str = "first_increase") -> Steps:
    """:func:`stopping_steps` on a :class:`~ttscale.prompts.Statistics` batch: ``S`` is applied as
    ``A (S_Z (Aᵀ v))`` and ``b = statistics.b()`` — the only things passed on (``w`` stays behind)."""
    if not isinstance(statistics, Statistics):
        raise TypeError(f"statistics must be ttscale.prompts.Statistics, got {type(statistics).__name__}")
    return stopping_steps(P, statistics.apply_S, statistics.b(), k_max, rule)


def _gather(errors: jax.Array, steps: jax.Array) -> jax.Array:
    return jnp.take_along_axis(errors, steps, axis=-1)


def _oracle(errors: jax.Array) -> jax.Array:
    """``argmin_{k ≤ K} errors[:, k]`` for every ``K`` (first on ties; ``inf``/``nan`` never win)."""
    e = jnp.where(jnp.isnan(errors), jnp.inf, errors)

    def step(carry, x):
        best, val, k = carry
        better = x < val
        return (jnp.where(better, k, best), jnp.where(better, x, val), k + 1), jnp.where(better, k, best)

    bsz = e.shape[0]
    init = (jnp.zeros((bsz,), jnp.int32), jnp.full((bsz,), jnp.inf, e.dtype), jnp.zeros((), jnp.int32))
    _, best = jax.lax.scan(step, init, e.T)
    return best.T


def rule_errors(P, statistics: Statistics, k_max: int, rule: str = "first_increase") -> jax.Array:
    """``[b, k_max + 1]``: entry ``K`` is ``||ŵ_s − w||²`` at the step ``s`` the rule keeps under budget ``K``
    (the sweep's layout: what the ``adaptive`` model returns). Fixed-``k`` errors come from
    :func:`ttscale.models.pseudo_newton.errors` (the scoring reads ``w``; the steps do not)."""
    fixed = pseudo_newton.errors(pseudo_newton.PseudoNewtonParams(jnp.asarray(P, statistics.w.dtype)), statistics, k_max)
    return _gather(fixed, statistics_steps(P, statistics, k_max, rule).steps)


def rollout_summary(P, statistics: Statistics, k_max: int) -> Summary:
    """Everything a study of the rules needs, per prompt and budget ``K = 0..k_max`` (:class:`Summary`).

    ``P [d, d]`` (or ``[d]``), a :class:`~ttscale.prompts.Statistics` batch. ``residuals`` are
    ``r_0 + Σ_{j<k} δ_j`` (``r_0 = yᵀy/m``; for display: round-off ``ε yᵀy/m`` absolute). The mean of
    ``first_increase.passes[:, K]`` over prompts is the compute the rule spends under budget ``K``.
    """
    if not isinstance(statistics, Statistics):
        raise TypeError(f"statistics must be ttscale.prompts.Statistics, got {type(statistics).__name__}")
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    P = jnp.asarray(P, statistics.w.dtype)
    fixed = pseudo_newton.errors(pseudo_newton.PseudoNewtonParams(P), statistics, k_max)
    deltas = residual_increments(P, statistics.apply_S, statistics.b(), k_max)
    residuals = jnp.concatenate([statistics.yy()[:, None], statistics.yy()[:, None] + jnp.cumsum(deltas, axis=-1)], -1)
    budgets = jnp.broadcast_to(jnp.arange(k_max + 1, dtype=jnp.int32), fixed.shape)
    a = _first_increase(deltas)
    b_steps = _running_argmin(deltas)
    o_steps = _oracle(fixed)
    return Summary(fixed, residuals,
                   Rule(a.steps, a.passes, _gather(fixed, a.steps)),
                   Rule(b_steps, budgets, _gather(fixed, b_steps)),
                   Rule(o_steps, budgets, _gather(fixed, o_steps)))
