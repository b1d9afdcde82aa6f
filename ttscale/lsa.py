"""One-layer linear self-attention (LSA) on the paper's prompt embedding (docs/science.md §2).

Embedding ``E ∈ R^{(2d+2) × (n+1)}`` with row blocks ``[x (d); y (1); ŵ (d); 1 (1)]``:
data columns ``[x_j; y_j; 0; 0]`` and a last (query) column ``[0; 0; ŵ_0; 1]``.

    f(E) = E + V E (Eᵀ W E) / ρ,        W, V ∈ R^{(2d+2) × (2d+2)},

and the prediction is the ``ŵ`` block of the last column. Only that column is ever read,
so :func:`forward_last_column` computes ``e_q + V (E Eᵀ) W e_q / ρ`` — the same function
with ``O(D²(n + D))`` instead of ``O(D n²)`` flops (``D = 2d + 2``).

Paper initialisation (scale ``c``): ``W[x, ŵ] = c I_d``, ``W[y, 1] = −c``, zero elsewhere,
so data column ``j`` scores ``c (x_jᵀ ŵ − y_j)`` against the query; ``V = 0``.
The Theorem 3.1 optimum has ``V[ŵ, x] = −Γ⁻¹ / c`` and zero elsewhere.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ttscale import _checks


class LSAParams(NamedTuple):
    """LSA parameters ``W [D, D]`` and ``V [D, D]`` with ``D = 2d + 2``."""

    W: jax.Array
    V: jax.Array

    @property
    def d(self) -> int:
        return (self.W.shape[-1] - 2) // 2


def embed_dim(d: int) -> int:
    """``D = 2d + 2``."""
    return 2 * d + 2


def blocks(d: int) -> dict[str, slice]:
    """Row/column slices of the embedding blocks ``x``, ``y``, ``w`` (ŵ) and ``one``."""
    return {
        "x": slice(0, d),
        "y": slice(d, d + 1),
        "w": slice(d + 1, 2 * d + 1),
        "one": slice(2 * d + 1, 2 * d + 2),
    }


def _check_params(params, d: int | None = None, what: str = "") -> LSAParams:
    """``params`` as :class:`LSAParams` of float ``[D, D]`` matrices, ``D = 2d + 2`` (``d >= 1``; the given ``d`` if any).

    Only shapes and dtypes are checked (static under a trace), with errors naming ``params.W`` /
    ``params.V`` instead of einsum's label errors.
    """
    if not (hasattr(params, "W") and hasattr(params, "V")):
        raise TypeError(f"params must be LSAParams(W, V), got {type(params).__name__}")
    W = _checks.float_array("params.W", params.W)
    V = _checks.float_array("params.V", params.V)
    D = W.shape[-1] if W.ndim else 0
    if W.ndim != 2 or W.shape[0] != D or D < 4 or D % 2:
        raise ValueError(f"params.W must be a [D, D] matrix with D = 2d + 2 (d >= 1), got shape {W.shape}")
    if V.shape != W.shape:
        raise ValueError(f"params.V has shape {V.shape} but params.W has shape {W.shape}")
    if d is not None and D != embed_dim(d):
        raise ValueError(f"params are [{D}, {D}] (d = {(D - 2) // 2}) but {what} has d = {d}: need D = 2d + 2 = {embed_dim(d)}")
    return LSAParams(W, V)


def _check_c(name: str, c, nonzero: bool = True):
    """The score scale ``c``: finite and (by default) nonzero when concrete."""
    return _checks.real_number(name, c, nonzero=nonzero)


def _check_rho(rho):
    """The attention normaliser ``ρ``: finite and ``> 0`` when concrete."""
    return _checks.real_number("rho", rho, minimum=0, exclusive=True)


def _check_embedding(E, D: int) -> jax.Array:
    E = _checks.float_array("E", E)
    if E.ndim < 2 or E.shape[-2] != D:
        raise ValueError(f"E must have shape [..., D, N] with D = {D} rows (D = 2d + 2 of params), got shape {E.shape}")
    return E


def query_column(w_hat: jax.Array) -> jax.Array:
    """``[0_d; 0; ŵ; 1]`` for ``w_hat [..., d]`` → ``[..., D]``."""
    zeros = jnp.zeros(w_hat.shape[:-1] + (w_hat.shape[-1] + 1,), w_hat.dtype)
    one = jnp.ones(w_hat.shape[:-1] + (1,), w_hat.dtype)
    return jnp.concatenate([zeros, w_hat, one], axis=-1)


def embed(X: jax.Array, y: jax.Array, w_hat: jax.Array | None = None) -> jax.Array:
    """Prompt embedding ``E [..., D, n + 1]`` from ``X [..., d, n]``, ``y [..., n]``, ``ŵ [..., d]``.

    ``ŵ`` defaults to ``0`` (the paper's ``ŵ_0``).
    """
    X = _checks.float_array("X", X)
    if X.ndim < 2 or X.shape[-2] < 1:
        raise ValueError(f"X must have shape [..., d, n] with d >= 1, got shape {X.shape}")
    d, n = X.shape[-2], X.shape[-1]
    y = _checks.float_array("y", y)
    if y.ndim < 1 or y.shape[-1] != n:
        raise ValueError(f"y has length {y.shape[-1] if y.ndim else 'scalar'} but X has {n} columns")
    if y.shape[:-1] != X.shape[:-2]:
        raise ValueError(f"y has batch shape {y.shape[:-1]} but X has batch shape {X.shape[:-2]} (y must be X.shape[:-2] + (n,))")
    if w_hat is not None:
        w_hat = _checks.float_array("w_hat", w_hat)
        if w_hat.shape != X.shape[:-2] + (d,):
            raise ValueError(f"w_hat must have shape {X.shape[:-2] + (d,)} (X's batch shape + (d,)), got {w_hat.shape}")
    if w_hat is None:
        w_hat = jnp.zeros(X.shape[:-2] + (d,), X.dtype)
    data = jnp.concatenate([X, y[..., None, :], jnp.zeros(X.shape[:-2] + (d + 1, n), X.dtype)], axis=-2)
    return jnp.concatenate([data, query_column(w_hat)[..., :, None]], axis=-1)


def paper_W(d: int, c=1.0, dtype=jnp.float32) -> jax.Array:
    """``W`` with ``W[x, ŵ] = c I_d``, ``W[y, 1] = −c``, zero elsewhere (``[D, D]``); ``c`` may be traced."""
    d = _checks.static_int("d", d, minimum=1)
    _check_c("c", c, nonzero=False)
    D = embed_dim(d)
    b = blocks(d)
    c = jnp.asarray(c, dtype)
    W = jnp.zeros((D, D), dtype)
    W = W.at[b["x"], b["w"]].set(c * jnp.eye(d, dtype=dtype))
    return W.at[b["y"], b["one"]].set(-c)


def paper_init(d: int, c=1.0, dtype=jnp.float32) -> LSAParams:
    """The paper's initialisation: structured ``W`` (scale ``c``: finite, nonzero), ``V = 0``."""
    d = _checks.static_int("d", d, minimum=1)
    _check_c("c", c)
    D = embed_dim(d)
    return LSAParams(paper_W(d, c, dtype), jnp.zeros((D, D), dtype))


def V_from_preconditioner(P: jax.Array, c=1.0) -> jax.Array:
    """``V`` with ``V[ŵ, x] = −P / c``, zero elsewhere; ``P [d, d]``, ``c`` finite and nonzero."""
    P = _checks.square_matrix("P", P)
    _check_c("c", c)
    d = P.shape[-1]
    D = embed_dim(d)
    b = blocks(d)
    V = jnp.zeros((D, D), P.dtype)
    return V.at[b["w"], b["x"]].set(-P / jnp.asarray(c, P.dtype))


def preconditioner_from_V(V: jax.Array, c=1.0) -> jax.Array:
    """Read the learned preconditioner ``P = −c V[ŵ, x]`` back out of ``V [D, D]``."""
    d = (V.shape[-1] - 2) // 2
    b = blocks(d)
    return -jnp.asarray(c, V.dtype) * V[..., b["w"], b["x"]]



def effective_c(params: LSAParams) -> jax.Array:
    """The LSA's effective score scale ``c = −W[y, 1]`` (``= c`` for the paper's ``W``).

    With ``ŵ_0 = 0`` the query scores data column ``j`` by ``y_j W[y, 1]`` (plus ``x_jᵀ W[x, 1]``), so the
    one-step prediction is ``ŵ_1 = −c V[ŵ, x] b + …`` with ``b = X y / m``: ``c`` sets how the read-out
    ``V`` scales ``b``. This is the one definition of ``c`` (training reports it; the sweep's closed forms
    use ``P = −c V[ŵ, x]``, :func:`effective_preconditioner`). For a free ``W`` whose ``W[x, ŵ]`` differs from
    ``c I`` the CoT map is not a pseudo-Newton step and the closed forms are those of the ``k = 1`` map only.
    """
    b = blocks(params.d)
    return -params.W[..., b["y"].start, b["one"].start]


def effective_preconditioner(params: LSAParams) -> jax.Array:
    """``P = −c V[ŵ, x]`` with ``c`` = :func:`effective_c`: the pseudo-Newton map the parameters implement → ``[..., d, d]``."""
    return preconditioner_from_V(params.V, effective_c(params)[..., None, None])


def optimal_params(Gamma: jax.Array, c=1.0) -> LSAParams:
    """Theorem 3.1 optimum: paper ``W`` (scale ``c``) and ``V[ŵ, x] = −Γ⁻¹ / c``.

    ``Gamma [d, d]`` (see :func:`ttscale.theory.gamma`) may be traced; a concrete one must be
    invertible (``ValueError`` naming ``Gamma``), ``c`` finite and nonzero. For a task mixture
    pass the preconditioner through :func:`params_from_preconditioner` instead.
    """
    Gamma = _checks.square_matrix("Gamma", Gamma)
    _check_c("c", c)
    P = jnp.linalg.inv(Gamma)
    if _checks.is_concrete(P) and not bool(jnp.all(jnp.isfinite(P))):
        raise ValueError(f"Gamma is singular (no inverse); Gamma = {Gamma}")
    return params_from_preconditioner(P, c)


def params_from_preconditioner(P: jax.Array, c=1.0) -> LSAParams:
    """LSA parameters whose CoT is pseudo-Newton with preconditioner ``P [d, d]`` (``c`` finite, nonzero)."""
    P = _checks.square_matrix("P", P)
    _check_c("c", c)
    return _params_from_preconditioner(P, jnp.asarray(c, P.dtype))


@jax.jit  # one program per shape, not one compile per operation
def _params_from_preconditioner(P: jax.Array, c) -> LSAParams:
    return LSAParams(paper_W(P.shape[-1], c, P.dtype), V_from_preconditioner(P, c))


def forward(params: LSAParams, E: jax.Array, rho) -> jax.Array:
    """Full LSA layer ``f(E) = E + V E (Eᵀ W E) / ρ`` for ``E [..., D, N]`` → ``[..., D, N]`` (``ρ > 0``)."""
    params = _check_params(params)
    E = _check_embedding(E, params.W.shape[-1])
    _check_rho(rho)
    scores = jnp.einsum("...di,de,...ej->...ij", E, params.W, E)
    return E + jnp.einsum("de,...ei,...ij->...dj", params.V, E, scores) / rho


def forward_last_column(params: LSAParams, E: jax.Array, rho) -> jax.Array:
    """Last column of :func:`forward`: ``e_q + V E (Eᵀ (W e_q)) / ρ`` → ``[..., D]``.

    Matrix–vector form, ``O(D N + D²)`` per prompt (never forms ``E Eᵀ``); the training loss uses it.
    """
    params = _check_params(params)
    E = _check_embedding(E, params.W.shape[-1])
    _check_rho(rho)
    e_q = E[..., :, -1]
    Wq = jnp.einsum("de,...e->...d", params.W, e_q)
    scores = jnp.einsum("...dn,...d->...n", E, Wq)
    return e_q + jnp.einsum("de,...en,...n->...d", params.V, E, scores) / rho


def last_column_from_gram(params: LSAParams, gram: jax.Array, e_q: jax.Array, rho) -> jax.Array:
    """``e_q + V G W e_q / ρ`` with the Gram matrix ``G = E Eᵀ [..., D, D]`` and query ``e_q [..., D]``."""
    params = _check_params(params)
    D = params.W.shape[-1]
    if gram.ndim < 2 or gram.shape[-2:] != (D, D):
        raise ValueError(f"gram must have shape [..., {D}, {D}] to match params, got {gram.shape}")
    if e_q.ndim < 1 or e_q.shape[-1] != D:
        raise ValueError(f"e_q must have shape [..., {D}] to match params, got {e_q.shape}")
    _check_rho(rho)
    Wq = jnp.einsum("de,...e->...d", params.W, e_q)
    return e_q + jnp.einsum("de,...ef,...f->...d", params.V, gram, Wq) / rho


def read_estimate(column: jax.Array) -> jax.Array:
    """The ``ŵ`` block of an embedding column ``[..., D]`` → ``[..., d]``."""
    d = (column.shape[-1] - 2) // 2
    return column[..., blocks(d)["w"]]


def predict(params: LSAParams, X: jax.Array, y: jax.Array, w_hat: jax.Array | None = None, rho=None) -> jax.Array:
    """One LSA pass: ``ŵ`` block of the last column of ``f(embed(X, y, ŵ))``; ``ρ > 0`` defaults to ``n``."""
    E = embed(X, y, w_hat)
    params = _check_params(params, (E.shape[-2] - 2) // 2, "X")
    rho = E.shape[-1] - 1 if rho is None else rho
    return read_estimate(forward_last_column(params, E, rho))
