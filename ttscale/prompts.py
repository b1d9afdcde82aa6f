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
(their sufficient statistics) and the sweep engine all draw through :func:`draw_normals`.

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
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import _checks
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
    Z, w, eps = draw_normals(key, start, batch, d, length, dtype, noisy=True)
    return Normals(Z, w, eps)


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
    """
    if not isinstance(cov, Covariance):
        raise TypeError(f"cov must be a Covariance, got {type(cov).__name__}")
    return prompts_from_normals(sample_normals(key, cov.d, length, batch, cov.dtype, start), cov, noise)


_sample_prompts_jit = jax.jit(sample_prompts, static_argnums=(2, 3))  # one wrapper: its compiled programs are reused


def prompts_at(key, idx, cov: Covariance, m: int, noise: float = 0.0) -> Prompts:
    """The prompts with indices ``idx`` (any order) of ``key``, as :func:`sample_prompts` and the sweep draw them.

    Draws the span ``min(idx) .. max(idx)`` in one call, so ask for compact index sets.
    """
    idx = np.asarray(idx, np.int64).reshape(-1)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= 2**32:
        raise ValueError("idx must be a non-empty array of prompt indices in [0, 2^32)")
    lo, hi = int(idx.min()), int(idx.max())
    m = _checks.static_int("m", m, minimum=1)
    whole = _sample_prompts_jit(key, cov, m, hi - lo + 1, noise, np.uint32(lo))
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


def sample_statistics(key, cov: Covariance, length, batch: int, noise=0.0, start=0) -> Statistics:
    """Sufficient statistics of the prompts :func:`sample_prompts` draws (same key, same prompts).

    ``length`` may be ``inf`` (``S = Σ`` exactly: only ``w`` is drawn). A concrete ``noise = 0``
    gives ``g = εᵀε/m = None`` (ε is not drawn); a traced ``noise`` always draws ε.
    """
    cov = check_covariance("cov", cov)
    _checks.check_prng_key("key", key)
    _checks.positive_count("length", length, allow_inf=True)
    batch = _checks.static_int("batch", batch, minimum=1)
    m = None if math.isinf(float(length)) else _checks.static_int("length", length, minimum=1)
    if m is not None:
        _check_sizes(batch, cov.d, m, cov.dtype)
    zero = isinstance(noise, (int, float, np.number)) and float(noise) == 0.0  # static: ε is not drawn
    noise = _check_noise(noise, cov.dtype)
    noisy = not (zero or (_checks.is_concrete(noise) and float(noise) == 0.0))
    Z, w, eps = draw_normals(key, start, batch, cov.d, m, cov.dtype, noisy)
    return whitened_statistics(Z, w, eps, cov.root(), noise, m)
