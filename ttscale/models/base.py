"""The model protocol: parameters as a pytree plus pure functions the rollout and the sweep call.

In the spirit of optax's ``GradientTransformation(init, update)``, a :class:`Model` is a small
record of pure functions:

* ``init(train, n) -> params`` — the parameters the model has after training on prompts of
  length ``n`` from the covariance ``train`` (:class:`~ttscale.spectra.Covariance`; may be traced:
  the sweep ``vmap``-s ``init`` over spectra × n in float64). A model whose parameters do not
  depend on the training task (e.g. gradient descent with a fixed step) ignores both.
* ``errors(params, data, k_max, **hints) -> [b, k_max + 1]`` — the squared errors
  ``||ŵ_k − w||²``, ``k = 0..k_max``, of ``k_max`` CoT steps from ``ŵ_0 = 0`` on a batch of
  prompts: ``data`` is a :class:`~ttscale.prompts.Statistics` (``reads = "statistics"``) or
  :class:`~ttscale.prompts.Prompts` (``reads = "prompts"``). It reads ``data.w`` only to score
  the estimates. ``nan`` (a divergent rollout) must be reported as ``inf``.
* ``preconditioner(params) -> P [d, d]`` (optional) — when the model's CoT is the pseudo-Newton
  map ``ŵ ← ŵ − P (S ŵ − b)``, the ``P`` it implements, so the closed forms of
  :mod:`ttscale.theory` apply (``limit_error(P, Σ, k)``, ``one_step_error(P, Σ, m)``, …). ``None``
  for a model that is not a fixed preconditioner: its sweeps carry no closed forms.
* ``hints(params) -> dict`` (optional) — static keyword arguments for ``errors`` decided once from
  the *concrete* parameters of every cell (e.g. "this LSA has the paper's structure, use the
  constant-map fast path"). Never changes the numbers, only which exact kernel runs.
* ``finite_m`` — the model needs a finite prompt length (the literal LSA divides by ``ρ = m``).
* ``groups`` — ``errors(..., group=True)`` takes a leading axis of ``G`` cells on the parameters and on
  ``stats.root``/``stats.noise`` (cells sharing ``S_Z``: common random numbers) and returns
  ``[G, b, k_max + 1]``, equal to ``G`` separate calls; a faster layout for the engine. Without it the
  engine ``vmap``-s over cells.

A model defined outside the package is just such a record; :func:`from_step` builds one from a
single CoT step ``step(params, stats, ŵ) -> ŵ_next``. :mod:`ttscale.models` holds a registry of
named factories (``"gd:eta=0.5"``), parsed by :func:`parse`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

READS = ("statistics", "prompts")


class Model(NamedTuple):
    """A CoT model (see the module docstring). ``name`` labels datasets and enters the sweep's identity."""

    name: str
    init: Callable[..., Any]
    errors: Callable[..., jax.Array]
    reads: str = "statistics"
    preconditioner: Optional[Callable[[Any], jax.Array]] = None
    hints: Optional[Callable[[Any], dict]] = None
    finite_m: bool = False
    groups: bool = False


def check_model(name: str, model) -> Model:
    """Validate a :class:`Model` (``TypeError``/``ValueError`` naming ``name``)."""
    if not isinstance(model, Model):
        raise TypeError(f"{name} must be a ttscale.models.Model or a registered name, got {type(model).__name__}")
    if not isinstance(model.name, str) or not model.name:
        raise ValueError(f"{name}.name must be a non-empty string, got {model.name!r}")
    for field in ("init", "errors"):
        if not callable(getattr(model, field)):
            raise TypeError(f"{name}.{field} must be callable, got {type(getattr(model, field)).__name__}")
    for field in ("preconditioner", "hints"):
        value = getattr(model, field)
        if value is not None and not callable(value):
            raise TypeError(f"{name}.{field} must be callable or None, got {type(value).__name__}")
    if model.reads not in READS:
        raise ValueError(f"{name}.reads must be one of {READS}, got {model.reads!r}")
    return model


def squared_errors_of(estimates: jax.Array, w: jax.Array) -> jax.Array:
    """``||ŵ_k − w||²`` for ``k = 0..k_max`` from ``estimates [b, k_max, d]`` (``ŵ_0 = 0`` prepended) → ``[b, k_max + 1]``.

    ``nan`` (``inf − inf`` in a divergent rollout) is reported as ``inf``.
    """
    e0 = jnp.sum(w * w, axis=-1, keepdims=True)
    ek = jnp.sum((estimates - w[..., None, :]) ** 2, axis=-1)
    errs = jnp.concatenate([e0, ek], axis=-1)
    return jnp.where(jnp.isnan(errs), jnp.inf, errs)


def rollout(step: Callable, state, k_max: int):
    """Run ``state, out = step(state)`` ``k_max`` times with ``lax.scan``; returns the stacked ``out [k_max, ...]``."""

    def body(carry, _):
        return step(carry)

    _, outs = jax.lax.scan(body, state, None, length=k_max)
    return outs


def from_step(name: str, init: Callable, step: Callable, reads: str = "statistics",
              preconditioner: Optional[Callable] = None, finite_m: bool = False) -> Model:
    """A :class:`Model` from one CoT step ``step(params, data, ŵ [b, d]) -> ŵ_next [b, d]``.

    Its ``errors`` runs ``k_max`` steps from ``ŵ_0 = 0`` with one ``lax.scan`` and scores them
    (:func:`squared_errors_of`). ``data`` is what the model reads (``reads``).
    """

    def errors(params, data, k_max: int):
        w = data.w

        def one(w_hat):
            w_next = step(params, data, w_hat)
            return w_next, w_next

        est = rollout(one, jnp.zeros_like(w), k_max)  # [k_max, b, d]
        return squared_errors_of(jnp.moveaxis(est, 0, -2), w)

    return check_model("model", Model(name, init, errors, reads, preconditioner, None, finite_m, False))


def format_options(options: dict) -> str:
    """``{"eta": 0.5}`` → ``"eta=0.5"`` (sorted), the canonical option string of a model name."""
    parts = []
    for key in sorted(options):
        value = options[key]
        if isinstance(value, float):
            value = repr(value) if math.isfinite(value) else str(value)
        parts.append(f"{key}={value}")
    return ",".join(parts)
