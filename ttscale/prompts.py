"""In-context linear-regression prompts, and their sufficient statistics.

A prompt of length ``m`` is ``(X, y)`` with columns ``x_j ~ N(0, Σ)``, a task vector
``w ~ N(0, I_d)`` and labels ``y_j = <w, x_j> + σ ε_j`` (``σ = noise``; the paper is
noiseless, ``σ = 0`` by default). With ``A`` a square root of ``Σ`` (``A = U diag(√λ)``,
:meth:`~ttscale.spectra.Covariance.root`) a prompt is ``X = A Z`` for standard normals
``Z [d, m]``.

**The one sampler.** Prompt ``p`` of a key reads its normals from three counter-based
streams of :mod:`ttscale.rng` — ``Z [d, m]`` (stream 0, row-major), ``ε [m]`` (stream 1) and
``w [d]`` (stream 2) — so its draws depend only on ``(key, p)``: not on how many prompts are
drawn together, on the device count, or on the order of calls; ``noise = 0`` skips ``ε`` and
leaves ``Z`` and ``w`` unchanged. :func:`sample_prompts` (raw prompts), :func:`sample_statistics`
(``method="prompts"``: their sufficient statistics) and the sweep engine's prompt route all draw
through :func:`draw_normals`.

**The statistics sampler.** For ``d ≤ m < ∞`` :func:`draw_statistics` draws the whitened statistics
below directly with their exact law (Bartlett: ``Z Zᵀ = L Lᵀ``, ``L_ii² ~ χ²_{m−i+1}``,
``L_ij ~ N(0, 1)``; ``Z ε = L h``, ``εᵀε = ||h||² + χ²_{m−d}``), from the same kind of counter-based
streams (``w`` is the very same draw), at a cost that does not grow with ``m``. It is the default of
:func:`sample_statistics` and of sweeps whose model reads statistics (``docs/science.md`` §9).

**Sufficient statistics.** Every model of the paper reads a prompt only through
``S = X Xᵀ/m``, ``b = X y/m`` and ``yᵀy/m``. :class:`Statistics` holds them in *whitened*
form — ``S_Z = Z Zᵀ/m``, ``g = Z ε/m``, ``εᵀε/m`` and the root ``A`` — so that

    S = A S_Z Aᵀ,   b = A (S_Z Aᵀ w + σ g),   yᵀy/m = tᵀ S_Z t + 2σ tᵀ g + σ² εᵀε/m,   t = Aᵀ w.

Many covariances can then share one ``S_Z`` (common random numbers), and a model that applies
``S`` as ``A (S_Z (Aᵀ v))`` (:meth:`Statistics.apply_S`) never forms ``S`` per covariance.
``m = ∞`` is ``S_Z = I`` exactly (``S = Σ``, ``b = Σ w``): stored as ``S_Z = None``.
The truth ``w`` travels with the statistics so an engine can score estimates; a model must
never read it (the tests check models against references that have no ``w``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import random as jex_random

from ttscale import _checks, _xla
from ttscale import rng as rng_mod
from ttscale.spectra import Covariance, apply_root, check_covariance


class Prompts(NamedTuple):
    """A batch of prompts: ``X [batch, d, length]``, ``y [batch, length]``, ``w [batch, d]``."""

    X: jax.Array
    y: jax.Array
    w: jax.Array

    @property
    def batch(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[-2]

    @property
    def length(self) -> int:
        return self.X.shape[-1]


class Normals(NamedTuple):
    """Isotropic base normals for a batch: ``Z [batch, d, length]``, ``w [batch, d]``, ``eps [batch, length]``.

    Reusing one ``Normals`` across covariances gives *common random numbers*: every
    covariance sees the same underlying draws, transformed by its own ``Σ^{1/2}``.
    """

    Z: jax.Array
    w: jax.Array
    eps: jax.Array


# ============================================================================ the sampler
def draw_normals(key, start, count: int, d: int, m: Optional[int], dtype=jnp.float32, noisy: bool = True):
    """Base normals of prompts ``start .. start + count − 1`` of ``key``: ``(Z, w, ε)``.

    ``Z [count, d, m]`` (stream 0), ``w [count, d]`` (stream 2), ``ε [count, m]`` (stream 1);
    ``Z`` is ``None`` for ``m = None`` (``m = ∞``) and ``ε`` is ``None`` unless ``noisy``.
    ``start`` may be traced; ``count``, ``d``, ``m`` are static. See :func:`ttscale.rng.prompt_normals`.
    """
    w = rng_mod.prompt_normals(key, start, count, d, dtype, stream=2)
    if m is None:
        return None, w, None
    Z = rng_mod.prompt_normals(key, start, count, d * m, dtype, stream=0).reshape(count, d, m)
    eps = rng_mod.prompt_normals(key, start, count, m, dtype, stream=1) if noisy else None
    return Z, w, eps


# ============================================================================ the statistics sampler
_STREAM_LOWER, _STREAM_H = 3, 4  # L_ij (i > j), row-major [d (d − 1)/2]; h [d] (noise only)
_STREAM_DIAG_ROUND, _STREAM_NOISE_ROUND = 1 << 20, 2 << 20  # χ² draws: attempt 0 (and + 1: the retries)


def _prompt_words(key, start, count: int, n_words: int, stream):
    """Raw uint32 words ``[count, n_words]`` of prompts ``start ..`` of stream ``(key, stream)`` (``stream`` may be traced).

    The layout of :func:`ttscale.rng.prompt_normals` (``n_words`` even: prompt ``p`` owns words
    ``[p·n_words, (p+1)·n_words)``), so a prompt's words depend only on ``(key, stream, p)``.
    """
    lo, hi = rng_mod._mul_wide(start, n_words // 2)
    return rng_mod.stream_words(rng_mod.stream_state(key, stream, lo, hi), count * n_words).reshape(count, n_words)


def _words_to_uniform(words, dtype):
    """Uniforms in ``(0, 1)`` from words ``[..., w]``: ``(2b + 1)·2^{-24}`` (float32, ``b`` the top 23 bits of a
    word) or ``(2b + 1)·2^{-53}`` (float64, ``b`` the top 26 bits of two words: ``[..., w/2]``), formed exactly."""
    if jnp.dtype(dtype) == jnp.float32:
        odd = jax.lax.bitcast_convert_type(((words >> 9) << 1) | jnp.uint32(1), jnp.int32)
        return odd.astype(jnp.float32) * np.float32(2.0**-24)
    pairs = words.reshape(words.shape[:-1] + (words.shape[-1] // 2, 2))
    b = (pairs[..., 0] >> 6).astype(jnp.float64) * 2.0**26 + (pairs[..., 1] >> 6).astype(jnp.float64)
    return (2.0 * b + 1.0) * 2.0**-53


def chi_squares(key, start, count: int, dofs, dtype=jnp.float32, stream: int = _STREAM_DIAG_ROUND):
    """Independent ``χ²_k`` draws ``[count, len(dofs)]`` (column ``j`` has ``k = dofs[j]``) of prompts ``start ..``.

    Exact in law: ``χ²_0 = 0``, ``χ²_1 = z²`` and, for ``k ≥ 2``, ``χ²_k = 2 Γ(k/2)`` by Marsaglia–Tsang
    rejection (``a = k/2``, ``δ = a − 1/3``, ``c = 1/√(9δ)``; a candidate ``(z, u)``, ``x = c z``,
    ``v = (1 + x)³``, is accepted iff ``x > −1`` and ``log u < z²/2 + δ − δ v + δ log v``; the draw is
    ``2 δ v``). The test is evaluated without cancellation as ``log u < 3δ h(x)``,
    ``h(x) = log(1 + x) − x + x²/2 − x³/3`` (by its series for ``|x| < 1/2``), so it stays exact in
    float32 for any ``k`` (the literal form loses all precision once ``δ`` is large).

    Counter-based: attempt 0 of every draw is read from stream ``stream`` at prompt ``p``'s counter
    (:func:`ttscale.rng.prompt_normals`' layout: ``k`` normals then ``k`` uniforms); attempt
    ``t ≥ 1`` of draw ``(p, j)`` is Threefry-2x32 of the counter ``(p, t·k + j)`` under
    ``fold_in(key, stream + 1)``. Each draw keeps its first accepted attempt, so it depends only on
    ``(key, p, j)`` — not on ``count``, ``start`` or which other draws were rejected. Rejected draws
    (each is accepted with probability ``> 0.95``; ~0.2 % at ``k ≈ 40``) are retried until all are
    accepted (``lax.while_loop``), a compacted batch of prompts per trip — every prompt with a rejected
    draw, up to ``max(16, count/16)`` of them (finding those among ``count`` rows is ``k`` times cheaper
    than finding rejected draws among ``count · k``: sweep-A's 327 680 prompts × 20 draws, one core,
    ``benchmarks/rng_transforms.py``: 0.115 s, against 0.199 s retrying compacted draws). ``dofs``: static whole numbers ``≥ 0``.
    """
    dofs = np.asarray(dofs, np.int64).reshape(-1)
    if dofs.size == 0 or np.any(dofs < 0):
        raise ValueError(f"dofs must be a non-empty list of whole numbers >= 0, got {dofs.tolist()}")
    dtype = jnp.dtype(dtype)
    k = dofs.size
    f32 = dtype == jnp.float32
    a = np.maximum(dofs, 2) / 2.0
    delta = jnp.asarray(a - 1.0 / 3.0, dtype)
    c = jnp.asarray(1.0 / np.sqrt(9.0 * (a - 1.0 / 3.0)), dtype)
    one, zero = jnp.asarray(dofs == 1), jnp.asarray(dofs == 0)

    def candidate(z, u, j):
        """Marsaglia–Tsang on normals ``z`` and uniforms ``u`` for columns ``j`` (an index array or ``slice``)."""
        x = c[j] * z
        positive = x > -1
        accept = positive & (jnp.log(u) < 3 * delta[j] * _log1p_remainder(jnp.where(positive, x, 0)))
        value = jnp.where(one[j], z * z, jnp.where(zero[j], 0, 2 * delta[j] * (1 + x) ** 3))
        return value.astype(dtype), accept | one[j] | zero[j]

    n_words = (2 if f32 else 4) * k  # attempt 0: k normals then k uniforms (even)
    words = _prompt_words(key, start, count, n_words, stream)
    half = n_words // 2
    value, done = candidate(rng_mod.words_to_normal(words[:, :half], dtype).astype(dtype),
                            _words_to_uniform(words[:, half:], dtype).astype(dtype), slice(None))

    rows_cap = int(min(count, max(16, count // 16)))  # prompts (rows of k draws) retried per loop trip
    retry_key = jax.random.key_data(jax.random.fold_in(key, stream + 1)).astype(jnp.uint32).reshape(-1)[:2]
    first = jnp.asarray(start, jnp.uint32)
    cols = jnp.arange(k, dtype=jnp.uint32)[None]

    def more(state):
        return ~jnp.all(state[1])

    def retry(state):
        value, done, attempts = state
        rows = jnp.nonzero(~jnp.all(done, axis=1), size=rows_cap, fill_value=count)[0]  # prompts with a rejected draw
        safe = jnp.minimum(rows, count - 1)
        was = done[safe]  # [R, k]
        p = jnp.broadcast_to((first + safe.astype(jnp.uint32))[:, None], was.shape).reshape(-1)
        tag = (attempts[safe] * jnp.uint32(k) + cols).reshape(-1)
        n = p.shape[0]
        if f32:
            pair = jex_random.threefry_2x32(retry_key, jnp.concatenate([p, tag]))
            z = rng_mod.words_to_normal(pair[:n, None], dtype)[:, 0]
            u = _words_to_uniform(pair[n:, None], dtype)[:, 0]
        else:  # two words per number: counters (p, 2·tag) and (p, 2·tag + 1)
            y0 = jex_random.threefry_2x32(retry_key, jnp.concatenate([p, 2 * tag]))
            y1 = jex_random.threefry_2x32(retry_key, jnp.concatenate([p, 2 * tag + 1]))
            z = rng_mod.words_to_normal(jnp.stack([y0[:n], y0[n:]], -1), dtype)[:, 0]
            u = _words_to_uniform(jnp.stack([y1[:n], y1[n:]], -1), dtype)[:, 0]
        new, ok = candidate(z.astype(dtype).reshape(was.shape), u.astype(dtype).reshape(was.shape), slice(None))
        value = value.at[rows].set(jnp.where(was | ~ok, value[safe], new), mode="drop")
        done = done.at[rows].set(was | ok, mode="drop")
        attempts = attempts.at[rows].add(jnp.where(was, jnp.uint32(0), jnp.uint32(1)), mode="drop")
        return value, done, attempts

    attempts = jnp.ones((count, k), jnp.uint32)
    value, _, _ = jax.lax.while_loop(more, retry, (value, done, attempts))
    return value


def _log1p_remainder(x):
    """``h(x) = log(1 + x) − x + x²/2 − x³/3 = Σ_{j ≥ 4} (−1)^{j+1} x^j / j`` for ``x > −1``, accurate to the dtype's
    precision *relative to h*: the series (to ``j = 30``, Horner) for ``|x| < 1/2``, the closed form beyond."""
    small = jnp.abs(x) < 0.5
    xs = jnp.where(small, x, 0)
    acc = jnp.zeros_like(x)
    for j in range(30, 3, -1):  # Σ_{j=4..30} (−1)^{j+1} x^{j−4}/j, then · x⁴
        acc = acc * xs + ((-1) ** (j + 1)) / j
    series = acc * xs**4
    xl = jnp.where(small, 1, x)
    direct = jnp.log1p(xl) - xl + xl * xl / 2 - xl**3 / 3
    return jnp.where(small, series, direct)


_LOWER_INDEX: dict = {}


def _lower_index(d: int) -> np.ndarray:
    """Gather map ``[d·d]`` from ``[offdiag (d (d − 1)/2, row-major), diag (d), 0]`` to the row-major ``L``."""
    if d not in _LOWER_INDEX:
        n_off = d * (d - 1) // 2
        idx = np.full((d, d), n_off + d, np.int32)
        rows, cols = np.tril_indices(d, -1)
        idx[rows, cols] = np.arange(n_off)
        idx[np.arange(d), np.arange(d)] = n_off + np.arange(d)
        _LOWER_INDEX[d] = idx.reshape(-1)
    return _LOWER_INDEX[d]


def draw_statistics(key, start, count: int, d: int, m: int, dtype=jnp.float32, noisy: bool = True):
    """Whitened statistics ``(S_Z, g, ee, w)`` of prompts ``start .. start + count − 1`` drawn directly (Bartlett).

    The law of :func:`whitened_statistics` of a prompt ``Z [d, m]``, ``ε [m]`` (standard normals),
    without drawing the prompt (``m ≥ d``): ``Z Zᵀ = L Lᵀ`` with ``L`` lower triangular,
    ``L_ii² ~ χ²_{m−i+1}`` (``i = 1..d``) and ``L_ij ~ N(0, 1)`` (``i > j``), all independent; with
    ``Z = L Q`` (``Q`` uniform with orthonormal rows, independent of ``L``), ``h = Q ε ~ N(0, I_d)``
    and ``||ε||² − ||h||² ~ χ²_{m−d}``, independent. So

        S_Z = L Lᵀ/m,   g = L h/m,   ee = (||h||² + χ²_{m−d})/m,   w ~ N(0, I_d).

    Shapes ``S_Z [count, d, d]``, ``g [count, d]``, ``ee [count]`` (``None`` unless ``noisy``),
    ``w [count, d]``. Streams (counter-based, as :func:`draw_normals`): ``w`` stream 2 (the very
    ``w`` of the prompt sampler), ``L_ij`` stream 3, ``h`` stream 4, the ``χ²`` draws of
    :func:`chi_squares` from streams ``2^20`` (+1; diagonal) and ``2^21`` (+1; noise). A prompt's draws depend
    only on ``(key, p)``, and ``noisy = False`` leaves ``S_Z`` and ``w`` unchanged. Cost per prompt:
    ``d (d − 1)/2 + d`` normals and ``d (+1)`` χ² draws instead of ``d m (+ m) + d`` normals, and
    ``O(d³)`` instead of ``O(d² m)`` arithmetic.
    """
    d = _checks.static_int("d", d, minimum=1)
    m = _checks.static_int("m", m, minimum=1)
    if m < d:
        raise ValueError(f"m must be >= d for the statistics sampler (Z Zᵀ is singular otherwise), got m={m}, d={d}")
    dtype = jnp.dtype(dtype)
    w = rng_mod.prompt_normals(key, start, count, d, dtype, stream=2)
    diag = jnp.sqrt(chi_squares(key, start, count, m - np.arange(d), dtype, _STREAM_DIAG_ROUND))  # [count, d]
    parts = [diag, jnp.zeros((count, 1), dtype)]
    if d > 1:
        parts.insert(0, rng_mod.prompt_normals(key, start, count, d * (d - 1) // 2, dtype, stream=_STREAM_LOWER))
    L = jnp.concatenate(parts, axis=1)[:, _lower_index(d)].reshape(count, d, d)
    # L Lᵀ/m as a batched dot: its bits do not depend on count (a fused multiply-reduce's do, at small d)
    S_Z = jnp.einsum("bik,bjk->bij", L, L) / m
    if not noisy:
        return S_Z, None, None, w
    h = rng_mod.prompt_normals(key, start, count, d, dtype, stream=_STREAM_H)
    g = jnp.einsum("bij,bj->bi", L, h) / m
    rest = chi_squares(key, start, count, [m - d], dtype, _STREAM_NOISE_ROUND)[:, 0]
    ee = (jnp.sum(h * h, axis=-1) + rest) / m
    return S_Z, g, ee, w


def _check_sizes(count: int, d: int, length: int, dtype) -> None:
    """Refuse sizes that cannot be drawn before XLA sees them (an impossible static shape aborts the process)."""
    if count > 2**32:
        raise ValueError(f"batch must be <= 2^32 (the prompt index is 32-bit), got {count}")
    nbytes = count * (d * length + length + d) * jnp.dtype(dtype).itemsize
    _checks.check_fits(nbytes, f"batch: {count} prompts of d = {d}, length = {length}", "draw fewer or shorter prompts per call")


def _check_noise(noise, dtype):
    noise = _checks.float_array("noise", noise, dtype)
    if _checks.is_concrete(noise):
        _checks.check_finite("noise", noise)
        if np.any(np.asarray(noise) < 0):
            raise ValueError(f"noise must be >= 0 (a standard deviation), got {noise}")
    return noise


def sample_normals(key, d: int, length: int, batch: int, dtype=jnp.float32, start=0) -> Normals:
    """The base normals behind :func:`sample_prompts` (same key → same numbers): prompts ``start ..``."""
    _checks.check_prng_key("key", key)
    d = _checks.static_int("d", d, minimum=1)
    length = _checks.static_int("length", length, minimum=1)
    batch = _checks.static_int("batch", batch, minimum=1)
    _check_sizes(batch, d, length, dtype)
    dtype = jnp.dtype(dtype)
    Z, w, eps = _draw_normals(key, _start(start, batch), batch, d, length, dtype, True)
    return Normals(Z, w, eps)


def _start(start, count: int):
    """A checked ``start`` (:func:`ttscale.rng.check_start`): a concrete one as ``uint32``, so ``0`` and
    ``np.uint32(0)`` share one compiled program; a traced one as it is."""
    rng_mod.check_start(start, count)
    return start if isinstance(start, jax.core.Tracer) else np.uint32(int(start))


#: The samplers' compiled entry points (``jit`` at the public boundary: one program per shape instead of
#: one small compile per operation when called outside ``jit``; inside a ``jit`` they are traced in place).
_draw_normals = jax.jit(draw_normals, static_argnums=(2, 3, 4, 5, 6))


def prompts_from_normals(normals: Normals, cov: Covariance, noise=0.0) -> Prompts:
    """``X = Σ^{1/2} Z``, ``y = Xᵀ w + noise · ε`` (see :meth:`Covariance.apply_sqrt`)."""
    cov = check_covariance("cov", cov)
    if normals.Z.shape[-2] != cov.d:
        raise ValueError(f"cov has d={cov.d} but the normals have d={normals.Z.shape[-2]}")
    noise = _check_noise(noise, normals.Z.dtype)
    return prompts_from_root(normals.Z, normals.w, normals.eps, cov.root(), noise)


def prompts_from_root(Z, w, eps, root, noise) -> Prompts:
    """``X = A Z``, ``y = Xᵀ w + σ ε`` for a root ``A`` (``[d]`` diagonal or ``[d, d]``); ``ε = None`` means noiseless."""
    X = apply_root(root, Z)
    y = jnp.einsum("bdm,bd->bm", X, w)
    return Prompts(X, y if eps is None else y + noise * eps, w)


def sample_prompts(key, cov: Covariance, length: int, batch: int, noise=0.0, start=0) -> Prompts:
    """Sample ``batch`` prompts of ``length`` examples from covariance ``cov`` (prompts ``start ..`` of ``key``).

    Returns :class:`Prompts` with ``X [batch, d, length]``, ``y [batch, length]``,
    ``w [batch, d]``; ``w ~ N(0, I_d)``, ``x_j ~ N(0, Σ)``, ``y_j = <w, x_j> + noise·ε_j``.
    ``cov`` may be traced (vmap over a stack of spectra); ``length`` and ``batch`` are static;
    ``start`` may be traced. Prompt ``p`` is the same whatever ``batch``/``start`` selects it.
    One compiled program per shape (the arguments are checked first, in Python).
    """
    if not isinstance(cov, Covariance):
        raise TypeError(f"cov must be a Covariance, got {type(cov).__name__}")
    cov = check_covariance("cov", cov)
    _checks.check_prng_key("key", key)
    length = _checks.static_int("length", length, minimum=1)
    batch = _checks.static_int("batch", batch, minimum=1)
    _check_sizes(batch, cov.d, length, cov.dtype)
    noise = _check_noise(noise, cov.dtype)
    return _sample_prompts(key, cov, length, batch, noise, _start(start, batch))


@functools.partial(_xla.cpu_jit, static_argnums=(2, 3))  # XLA's newer CPU emitters ran it 2.4-4× slower (ttscale._xla)
def _sample_prompts(key, cov: Covariance, length: int, batch: int, noise, start) -> Prompts:
    Z, w, eps = draw_normals(key, start, batch, cov.d, length, cov.dtype, noisy=True)
    return prompts_from_root(Z, w, eps, cov.root(), noise)


def prompts_at(key, idx, cov: Covariance, m: int, noise: float = 0.0) -> Prompts:
    """The prompts with indices ``idx`` (any order) of ``key``, as :func:`sample_prompts` and the sweep draw them.

    Draws the span ``min(idx) .. max(idx)`` in one call, so ask for compact index sets.
    """
    idx = np.asarray(idx, np.int64).reshape(-1)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= 2**32:
        raise ValueError("idx must be a non-empty array of prompt indices in [0, 2^32)")
    lo, hi = int(idx.min()), int(idx.max())
    m = _checks.static_int("m", m, minimum=1)
    whole = sample_prompts(key, cov, m, hi - lo + 1, noise, np.uint32(lo))
    return jax.tree_util.tree_map(lambda x: x[idx - lo], whole)


# ============================================================================ statistics
def _apply(A, v, transpose: bool = False):
    """``A v`` (or ``Aᵀ v``) for ``v [..., d]``; ``A`` diagonal ``[d]`` or dense ``[d, d]``."""
    if A.ndim == 1:
        return A * v
    return jnp.einsum("...ji,...j->...i" if transpose else "...ij,...j->...i", A, v)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Statistics:
    """Sufficient statistics of a batch of prompts ``X = A Z``, ``y = Xᵀw + σε`` (module docstring).

    ``S_Z [b, d, d]`` (``Z Zᵀ/m``; ``None`` for ``m = ∞``, meaning ``I``), ``g [b, d]`` (``Z ε/m``;
    ``None`` when noiseless or ``m = ∞``), ``ee [b]`` (``εᵀε/m``; ``None`` likewise), ``w [b, d]``
    (the truth, for scoring only), ``root`` ``A``: ``[d]`` (diagonal) or ``[d, d]``, ``noise`` ``σ``
    (scalar), ``m`` (static; ``inf`` allowed). Leaves may carry extra leading axes under ``vmap``.
    """

    S_Z: Optional[jax.Array]
    g: Optional[jax.Array]
    ee: Optional[jax.Array]
    w: jax.Array
    root: jax.Array
    noise: jax.Array
    m: float = dataclasses.field(default=math.inf, metadata=dict(static=True))

    @property
    def d(self) -> int:
        return self.w.shape[-1]

    @property
    def noisy(self) -> bool:
        return self.g is not None

    def apply_S(self, v: jax.Array) -> jax.Array:
        """``S v = A (S_Z (Aᵀ v))`` for ``v [b, d]``, without forming ``S``."""
        u = _apply(self.root, v, transpose=True)
        if self.S_Z is not None:
            u = jnp.einsum("bij,bj->bi", self.S_Z, u)
        return _apply(self.root, u)

    def noise_drift(self) -> Optional[jax.Array]:
        """``ξ = b − S w = σ A g`` (``[b, d]``), ``None`` without noise."""
        if self.g is None:
            return None
        return self.noise * _apply(self.root, self.g)

    def S(self) -> jax.Array:
        """``S = X Xᵀ/m = A S_Z Aᵀ`` → ``[b, d, d]``."""
        A = self.root
        if A.ndim == 1:
            if self.S_Z is None:
                return jnp.broadcast_to(jnp.diag(A * A), self.w.shape[:-1] + (self.d, self.d))
            return A[:, None] * self.S_Z * A[None, :]
        if self.S_Z is None:
            return jnp.broadcast_to(A @ A.T, self.w.shape[:-1] + (self.d, self.d))
        return jnp.einsum("ij,bjk,lk->bil", A, self.S_Z, A)

    def b(self) -> jax.Array:
        """``b = X y/m = S w + σ A g`` → ``[b, d]``."""
        out = self.apply_S(self.w)
        drift = self.noise_drift()
        return out if drift is None else out + drift

    def yy(self) -> jax.Array:
        """``yᵀy/m = tᵀ S_Z t + 2σ tᵀ g + σ² εᵀε/m``, ``t = Aᵀ w`` → ``[b]``."""
        t = _apply(self.root, self.w, transpose=True)
        St = t if self.S_Z is None else jnp.einsum("bij,bj->bi", self.S_Z, t)
        out = jnp.sum(t * St, axis=-1)
        if self.g is not None:
            out = out + 2 * self.noise * jnp.sum(t * self.g, axis=-1) + self.noise**2 * self.ee
        return out


def whitened_statistics(Z, w, eps, root, noise, m) -> Statistics:
    """:class:`Statistics` from base normals ``Z [b, d, m]`` (or ``None``: ``m = ∞``), ``w [b, d]``, ``ε [b, m]`` (or ``None``)."""
    dtype = w.dtype
    noise = jnp.asarray(noise, dtype)
    if Z is None:
        return Statistics(None, None, None, w, root, noise, math.inf)
    S_Z = jnp.sum(Z[:, :, None, :] * Z[:, None, :, :], axis=-1) / m  # a fused reduce: faster than XLA's CPU batched dot
    if eps is None:
        return Statistics(S_Z, None, None, w, root, noise, float(m))
    g = jnp.einsum("bim,bm->bi", Z, eps) / m
    ee = jnp.sum(eps * eps, axis=-1) / m
    return Statistics(S_Z, g, ee, w, root, noise, float(m))


def statistics_of(prompts: Prompts) -> Statistics:
    """The :class:`Statistics` of raw prompts: ``A = I``, ``S_Z = S = X Xᵀ/m``, ``σ g = X y/m − S w``.

    So ``b = X y/m`` and ``yᵀy/m`` are reproduced exactly (with ``σ = 1``, ``g`` the residual
    ``X(y − Xᵀw)/m`` and ``εᵀε/m = ||y − Xᵀw||²/m``).
    """
    if not isinstance(prompts, Prompts):
        raise TypeError(f"prompts must be ttscale.Prompts, got {type(prompts).__name__}")
    X, y, w = prompts.X, prompts.y, prompts.w
    if X.ndim != 3:
        raise ValueError(f"prompts.X must be [batch, d, m], got shape {X.shape}")
    m = X.shape[-1]
    S = jnp.einsum("bim,bjm->bij", X, X) / m
    resid = y - jnp.einsum("bim,bi->bm", X, w)
    g = jnp.einsum("bim,bm->bi", X, resid) / m
    ee = jnp.sum(resid * resid, axis=-1) / m
    one = jnp.ones((X.shape[-2],), X.dtype)
    return Statistics(S, g, ee, w, one, jnp.asarray(1.0, X.dtype), float(m))


METHODS = ("auto", "statistics", "prompts")


def sample_statistics(key, cov: Covariance, length, batch: int, noise=0.0, start=0, method: str = "auto") -> Statistics:
    """Sufficient statistics of ``batch`` prompts of ``length`` examples from ``cov`` (prompts ``start ..`` of ``key``).

    ``method``: ``"prompts"`` — the statistics of the very prompts :func:`sample_prompts` draws
    (same key, same prompts; :func:`whitened_statistics` of :func:`draw_normals`); ``"statistics"`` —
    the same law drawn directly by :func:`draw_statistics` (Bartlett; ``length ≥ d``), at a cost that
    does not grow with ``length``; ``"auto"`` (default) — ``"statistics"`` when ``d ≤ length < ∞``,
    else ``"prompts"``. ``length`` may be ``inf`` (``S = Σ`` exactly: only ``w`` is drawn; ``w`` is the
    same under every method). A concrete ``noise = 0`` gives ``g = εᵀε/m = None`` (ε is not drawn); a
    traced ``noise`` always draws ε.
    """
    cov = check_covariance("cov", cov)
    _checks.check_prng_key("key", key)
    _checks.positive_count("length", length, allow_inf=True)
    batch = _checks.static_int("batch", batch, minimum=1)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    m = None if math.isinf(float(length)) else _checks.static_int("length", length, minimum=1)
    if method == "statistics" and (m is None or m < cov.d):
        raise ValueError(f'method="statistics" needs a finite length >= d = {cov.d}, got {length}; use "auto" or "prompts"')
    bartlett = method != "prompts" and m is not None and m >= cov.d
    if m is not None:
        _check_sizes(batch, cov.d, cov.d if bartlett else m, cov.dtype)
    zero = isinstance(noise, (int, float, np.number)) and float(noise) == 0.0  # static: ε is not drawn
    noise = _check_noise(noise, cov.dtype)
    noisy = not (zero or (_checks.is_concrete(noise) and float(noise) == 0.0))
    return _sample_statistics(key, cov, noise, _start(start, batch), batch, m, bartlett, noisy)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _sample_statistics(key, cov: Covariance, noise, start, batch: int, m: Optional[int], bartlett: bool,
                       noisy: bool) -> Statistics:
    if bartlett:
        S_Z, g, ee, w = draw_statistics(key, start, batch, cov.d, m, cov.dtype, noisy)
        return Statistics(S_Z, g, ee, w, cov.root(), jnp.asarray(noise, w.dtype), float(m))
    Z, w, eps = draw_normals(key, start, batch, cov.d, m, cov.dtype, noisy)
    return whitened_statistics(Z, w, eps, cov.root(), noise, m)
