"""In-context linear-regression prompts.

A prompt of length ``n`` is ``(X, y)`` with columns ``x_j ~ N(0, Λ)``, a task vector
``w ~ N(0, I_d)`` and labels ``y_j = <w, x_j> + ε_j`` where ``ε_j ~ N(0, σ²)``
(``σ = noise``; the paper is noiseless, ``σ = 0`` by default).

Keys: the one key is split into independent streams for features, tasks and noise, so
changing ``noise`` never changes ``X`` or ``w``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import _checks
from ttscale.spectra import Covariance


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
    covariance sees the same underlying draws, transformed by its own ``Λ^{1/2}``.
    """

    Z: jax.Array
    w: jax.Array
    eps: jax.Array


def sample_normals(key, d: int, length: int, batch: int, dtype=jnp.float32) -> Normals:
    """Draw the base normals used by :func:`sample_prompts` (same key → same numbers)."""
    _checks.check_prng_key("key", key)
    d = _checks.static_int("d", d, minimum=1)
    length = _checks.static_int("length", length, minimum=1)
    batch = _checks.static_int("batch", batch, minimum=1)
    kx, kw, ke = jax.random.split(key, 3)
    Z = jax.random.normal(kx, (batch, d, length), dtype=dtype)
    w = jax.random.normal(kw, (batch, d), dtype=dtype)
    eps = jax.random.normal(ke, (batch, length), dtype=dtype)
    return Normals(Z, w, eps)


def prompts_from_normals(normals: Normals, cov: Covariance, noise=0.0) -> Prompts:
    """``X = Λ^{1/2} Z``, ``y = Xᵀ w + noise · ε`` (see :meth:`Covariance.apply_sqrt`)."""
    if not isinstance(cov, Covariance):
        raise TypeError(f"cov must be a Covariance, got {type(cov).__name__}")
    if normals.Z.shape[-2] != cov.d:
        raise ValueError(f"cov has d={cov.d} but the normals have d={normals.Z.shape[-2]}")
    noise = _checks.float_array("noise", noise, normals.Z.dtype)
    if _checks.is_concrete(noise):
        _checks.check_finite("noise", noise)
        if np.any(np.asarray(noise) < 0):
            raise ValueError(f"noise must be >= 0 (a standard deviation), got {noise}")
    X = cov.apply_sqrt(normals.Z)
    y = jnp.einsum("bdn,bd->bn", X, normals.w) + noise * normals.eps
    return Prompts(X, y, normals.w)


def sample_prompts(key, cov: Covariance, length: int, batch: int, noise=0.0) -> Prompts:
    """Sample ``batch`` prompts of ``length`` examples from covariance ``cov``.

    Returns :class:`Prompts` with ``X [batch, d, length]``, ``y [batch, length]``,
    ``w [batch, d]``; ``w ~ N(0, I_d)``, ``x_j ~ N(0, Λ)``, ``y_j = <w, x_j> + noise·ε_j``.
    ``cov`` may be traced (vmap over a stack of spectra); ``length`` and ``batch`` are static.
    """
    if not isinstance(cov, Covariance):
        raise TypeError(f"cov must be a Covariance, got {type(cov).__name__}")
    normals = sample_normals(key, cov.d, length, batch, cov.dtype)
    return prompts_from_normals(normals, cov, noise)
