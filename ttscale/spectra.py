"""Covariance spectra for in-context linear regression.

A covariance is an eigenvalue vector ``λ [d]`` plus an optional orthonormal basis
``U [d, d]`` (columns are eigenvectors; ``None`` means the coordinate axes):

    Λ = U diag(λ) Uᵀ.

:class:`Covariance` is a pytree, so a stack of covariances (``eigenvalues [S, d]``) can be
passed through ``jax.vmap`` and a sweep never recompiles per spectrum. Constructors
validate concrete inputs and raise ``ValueError``/``TypeError`` naming the argument.

Task hardness (docs/science.md §1): ``Hard(Λ) = tr Λ / λ_min(Λ)``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import _checks


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Covariance:
    """``Λ = U diag(λ) Uᵀ`` with ``eigenvalues λ [..., d]`` and ``basis U [..., d, d]`` or ``None``.

    ``basis=None`` means ``U = I`` and every operation stays ``O(d)`` per vector.
    Build instances with :func:`identity`, :func:`power_law`, :func:`from_eigenvalues`,
    :func:`rotated` or :func:`from_matrix`, which validate their inputs.
    """

    eigenvalues: jax.Array
    basis: Optional[jax.Array] = None

    @property
    def d(self) -> int:
        """Feature dimension ``d``."""
        return self.eigenvalues.shape[-1]

    @property
    def dtype(self):
        return self.eigenvalues.dtype

    @property
    def is_diagonal(self) -> bool:
        """True when the basis is the coordinate axes (no dense matrices needed)."""
        return self.basis is None

    def trace(self) -> jax.Array:
        """``tr Λ = Σ_i λ_i``, shape ``[...]``."""
        return jnp.sum(self.eigenvalues, axis=-1)

    def lambda_min(self) -> jax.Array:
        """Smallest eigenvalue ``λ_min(Λ)``, shape ``[...]``."""
        return jnp.min(self.eigenvalues, axis=-1)

    def _dense(self, values: jax.Array) -> jax.Array:
        """``U diag(values) Uᵀ`` as a dense ``[..., d, d]`` matrix."""
        if self.basis is None:  # a select, not a product with I: an inf eigenvalue gives no 0·inf = nan
            return jnp.where(jnp.eye(self.d, dtype=bool), values[..., :, None], jnp.zeros((), values.dtype))
        U = self.basis
        return jnp.einsum("...ij,...j,...kj->...ik", U, values, U)

    def matrix(self) -> jax.Array:
        """Dense ``Λ [..., d, d]``."""
        return self._dense(self.eigenvalues)

    def sqrt_matrix(self) -> jax.Array:
        """Dense symmetric square root ``Λ^{1/2} [..., d, d]``."""
        return self._dense(jnp.sqrt(self.eigenvalues))

    def inverse_matrix(self) -> jax.Array:
        """Dense ``Λ⁻¹ [..., d, d]`` (infinite entries if singular)."""
        return self._dense(1.0 / self.eigenvalues)

    def root(self) -> jax.Array:
        """A square root ``A`` with ``A Aᵀ = Λ``: ``√λ [..., d]`` when diagonal, else ``U diag(√λ) [..., d, d]``."""
        r = jnp.sqrt(self.eigenvalues)
        return r if self.basis is None else self.basis * r[..., None, :]

    def apply_sqrt(self, Z: jax.Array) -> jax.Array:
        """Map isotropic normals to this covariance: ``X = U diag(√λ) Z``.

        ``Z [..., d, n]`` (one covariance, any leading batch dims) → ``X [..., d, n]`` with
        ``Cov(X[:, j]) = Λ``. With ``basis=None`` this is an elementwise scale, no matmul.
        """
        return apply_root(self.root(), Z)

    def apply(self, v: jax.Array) -> jax.Array:
        """``Λ v`` for ``v [..., d]`` (one covariance)."""
        if self.basis is None:
            return self.eigenvalues * v
        U = self.basis
        return jnp.einsum("ij,j,kj,...k->...i", U, self.eigenvalues, U, v)

    def astype(self, dtype) -> "Covariance":
        basis = None if self.basis is None else self.basis.astype(dtype)
        return Covariance(self.eigenvalues.astype(dtype), basis)


def apply_root(root: jax.Array, Z: jax.Array) -> jax.Array:
    """``X = A Z`` for a root ``A`` (:meth:`Covariance.root`: ``[d]`` diagonal or ``[d, d]``) and ``Z [..., d, n]``."""
    if root.ndim == 1:
        return root[:, None] * Z
    return jnp.einsum("ij,...jn->...in", root, Z)


def hardness(cov: Covariance) -> jax.Array:
    """Task hardness ``Hard(Λ) = tr Λ / λ_min(Λ)`` (``≥ d``, equality iff ``Λ ∝ I``); shape ``[...]``.

    A singular ``Λ`` (``λ_min = 0``, ``Λ = 0`` included) has ``Hard = inf``, never ``nan``.
    """
    lmin = cov.lambda_min()
    safe = jnp.where(lmin > 0, lmin, 1)
    return jnp.where(lmin > 0, cov.trace() / safe, jnp.inf)


def _check_eigenvalues(name: str, eigenvalues, dtype=None) -> jax.Array:
    eig = _checks.float_array(name, eigenvalues, dtype)
    if eig.ndim < 1 or eig.shape[-1] < 1:
        raise ValueError(f"{name} must have shape [..., d] with d >= 1, got {eig.shape}")
    if _checks.is_concrete(eig):
        _checks.check_finite(name, eig)
        if np.any(np.asarray(eig) < 0):
            raise ValueError(f"{name} must be non-negative (a covariance is PSD), got min {float(np.min(np.asarray(eig)))}")
    return eig


def _check_basis(basis, d: int, dtype, atol: float | None = None, name: str = "basis") -> jax.Array:
    U = _checks.float_array(name, basis, dtype)
    if U.ndim < 2 or U.shape[-2:] != (d, d):
        raise ValueError(f"{name} must have shape [..., {d}, {d}] to match the eigenvalues, got {U.shape}")
    if _checks.is_concrete(U):
        _checks.check_finite(name, U)
        tol = atol if atol is not None else (1e-4 if U.dtype == jnp.float32 else 1e-8) * max(d, 1)
        Un = np.asarray(U, dtype=np.float64)
        gram = np.einsum("...ji,...jk->...ik", Un, Un)
        err = float(np.max(np.abs(gram - np.eye(d))))
        if err > tol:
            raise ValueError(f"{name} must be orthonormal (UᵀU = I); max |UᵀU − I| = {err:.2e}")
    return U


def check_covariance(name: str, cov) -> Covariance:
    """Validate a :class:`Covariance` however it was built (``Covariance(...)`` directly skips the constructors' checks).

    Shapes and dtypes are checked always: ``eigenvalues [..., d]`` real floating (integers are
    promoted; complex, boolean and object arrays raise ``TypeError``), ``basis`` ``None`` or
    ``[..., d, d]``. Concrete values must be finite, the eigenvalues non-negative and the basis
    orthonormal (``ValueError``). Errors name ``<name>.eigenvalues`` / ``<name>.basis``. Under a
    trace only the static checks run. Returns the (dtype-normalised) covariance.
    """
    if not isinstance(cov, Covariance):
        raise TypeError(f"{name} must be a Covariance, got {type(cov).__name__}")
    eig = _check_eigenvalues(f"{name}.eigenvalues", cov.eigenvalues)
    U = None if cov.basis is None else _check_basis(cov.basis, eig.shape[-1], eig.dtype, name=f"{name}.basis")
    return Covariance(eig, U)


def from_eigenvalues(eigenvalues, basis=None, dtype=None) -> Covariance:
    """``Λ = U diag(eigenvalues) Uᵀ``; ``eigenvalues [..., d] ≥ 0``, ``basis [..., d, d]`` orthonormal or ``None``."""
    eig = _check_eigenvalues("eigenvalues", eigenvalues, dtype)
    U = None if basis is None else _check_basis(basis, eig.shape[-1], eig.dtype)
    return Covariance(eig, U)


def identity(d: int, dtype=jnp.float32) -> Covariance:
    """``Λ = I_d``: the isotropic task, ``Hard = d``."""
    d = _checks.static_int("d", d, minimum=1)
    return Covariance(jnp.ones((d,), dtype=dtype))


def _power_law_formula(xp, d: int, alpha, t, dtype):
    """``λ_i = t · i^{-α} / Σ_j j^{-α}``, ``i = 1..d``: the one implementation, for ``xp`` = NumPy or ``jax.numpy``."""
    i = xp.arange(1, d + 1, dtype=dtype)
    raw = i ** (-alpha[..., None])
    return t[..., None] * raw / xp.sum(raw, axis=-1, keepdims=True)


def power_law(d: int, alpha, trace=None, dtype=jnp.float32) -> Covariance:
    """Power-law spectrum ``λ_i = t · i^{-α} / Σ_j j^{-α}``, ``i = 1..d``.

    ``trace`` ``t`` defaults to ``d`` (docs/science.md §1: same signal power as ``I_d``). ``alpha``
    may be traced (e.g. ``jax.vmap(lambda a: power_law(d, a))(alphas)``) and may be an
    array ``[S]`` to build a stack of ``S`` spectra at once. ``Hard = t / λ_d``.
    """
    d = _checks.static_int("d", d, minimum=1)
    alpha = _checks.float_array("alpha", alpha, dtype)
    _checks.check_finite("alpha", alpha)
    t = jnp.asarray(d if trace is None else trace, dtype=dtype)
    if _checks.is_concrete(t):
        _checks.check_finite("trace", t)
        if np.any(np.asarray(t) <= 0):
            raise ValueError(f"trace must be > 0, got {trace}")
    return Covariance(_power_law_jnp(d, alpha, t, jnp.dtype(dtype)))


@functools.partial(jax.jit, static_argnums=(0, 3))  # one program per shape, not one compile per operation
def _power_law_jnp(d: int, alpha, t, dtype) -> jax.Array:
    return _power_law_formula(jnp, d, alpha, t, dtype)


def power_law_eigenvalues(d: int, alpha, trace=None) -> np.ndarray:
    """The eigenvalues of :func:`power_law` in float64 NumPy (``[d]``, or ``[S, d]`` for ``alpha [S]``), no JAX.

    The same formula (one implementation), for parsers and closed forms that need exact float64.
    """
    d = _checks.static_int("d", d, minimum=1)
    alpha = np.asarray(_checks.real_number("alpha", alpha), np.float64)
    t = np.asarray(float(d) if trace is None else _checks.real_number("trace", trace, minimum=0, exclusive=True),
                   np.float64)
    return _power_law_formula(np, d, alpha, t, np.float64)


def random_orthogonal(key, d: int, dtype=jnp.float32) -> jax.Array:
    """A Haar-random orthogonal ``[d, d]`` matrix (QR of a Gaussian, signs fixed)."""
    _checks.check_prng_key("key", key)
    d = _checks.static_int("d", d, minimum=1)
    return _random_orthogonal(key, d, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2))  # one program per shape, not one compile per operation
def _random_orthogonal(key, d: int, dtype) -> jax.Array:
    A = jax.random.normal(key, (d, d), dtype=dtype)
    Q, R = jnp.linalg.qr(A)
    return Q * jnp.sign(jnp.diagonal(R))[None, :]


def rotated(key, cov: Covariance) -> Covariance:
    """The same spectrum in a Haar-random orthonormal basis: ``Λ' = Q U diag(λ) Uᵀ Qᵀ``, ``Q`` from ``key``.

    The key comes first, as in every function that takes one. The old order ``rotated(cov, key)`` still
    works for one release, with a ``DeprecationWarning``.
    """
    if isinstance(key, Covariance) and not isinstance(cov, Covariance):
        import warnings

        warnings.warn("rotated(cov, key) is deprecated: the key comes first, rotated(key, cov)",
                      DeprecationWarning, stacklevel=2)
        key, cov = cov, key
    if not isinstance(cov, Covariance):
        raise TypeError(f"cov must be a Covariance, got {type(cov).__name__}")
    _checks.check_prng_key("key", key)
    return _rotated(key, cov)


@jax.jit
def _rotated(key, cov: Covariance) -> Covariance:
    Q = _random_orthogonal(key, cov.d, cov.dtype)
    return Covariance(cov.eigenvalues, Q if cov.basis is None else Q @ cov.basis)


def from_matrix(matrix, atol: float | None = None, dtype=None) -> Covariance:
    """Eigendecompose a symmetric PSD matrix ``[d, d]`` into a :class:`Covariance`.

    Raises ``ValueError`` if the matrix is not square, not symmetric (relative tolerance
    ``atol``), has non-finite entries or a negative eigenvalue beyond round-off. Tiny
    negative eigenvalues from round-off are clipped to 0. A diagonal input keeps
    ``basis=None`` (the cheap path); eigenvalues are not reordered then.
    """
    M = _checks.square_matrix("matrix", matrix)
    if dtype is not None:
        M = M.astype(dtype)
    d = M.shape[0]
    eps = float(jnp.finfo(M.dtype).eps)
    scale = float(np.max(np.abs(np.asarray(M)))) if _checks.is_concrete(M) else 1.0
    tol = atol if atol is not None else 100 * eps * max(scale, 1e-30) * d
    if _checks.is_concrete(M):
        Mn = np.asarray(M)
        asym = float(np.max(np.abs(Mn - Mn.T)))
        if asym > tol:
            raise ValueError(f"matrix must be symmetric; max |M − Mᵀ| = {asym:.3e}")
        off = Mn - np.diag(np.diagonal(Mn))
        if float(np.max(np.abs(off))) == 0.0:
            diag = np.diagonal(Mn)
            if np.any(diag < 0):
                raise ValueError(f"matrix must be positive semi-definite; min eigenvalue {float(np.min(diag)):.3e}")
            return Covariance(jnp.asarray(diag))
        ev = np.linalg.eigvalsh((Mn + Mn.T) / 2)
        if float(np.min(ev)) < -tol:
            raise ValueError(f"matrix must be positive semi-definite; min eigenvalue {float(np.min(ev)):.3e}")
    eig, U = jnp.linalg.eigh((M + M.T) / 2)
    return Covariance(jnp.clip(eig, 0.0, None), U)


def stack(covs, dtype=None) -> Covariance:
    """Stack a list of covariances of one ``d`` into one batched :class:`Covariance` (``[S, d]``), cast to ``dtype`` if given.

    Mixed diagonal / rotated inputs are stacked with explicit identity bases.
    """
    covs = list(covs)
    if not covs:
        raise ValueError("covs must be a non-empty list of Covariance")
    for i, c in enumerate(covs):
        if not isinstance(c, Covariance):
            raise TypeError(f"covs[{i}] must be a Covariance, got {type(c).__name__}")
    ds = {c.d for c in covs}
    if len(ds) != 1:
        raise ValueError(f"covs must share one dimension d, got {sorted(ds)}")
    # concrete inputs are stacked on the host (exact; op by op, jnp.stack would compile a small program per call)
    xp = np if _checks.is_concrete(covs) else jnp
    dtype = None if dtype is None else jnp.dtype(dtype)
    put = jax.device_put if xp is np else jnp.asarray
    eig = put(xp.stack([xp.asarray(c.eigenvalues, dtype) for c in covs]))
    if all(c.basis is None for c in covs):
        return Covariance(eig)
    d = ds.pop()
    bases = [xp.eye(d, dtype=eig.dtype) if c.basis is None else xp.asarray(c.basis, eig.dtype) for c in covs]
    return Covariance(eig, put(xp.stack(bases)))


def unstack(covs: Covariance) -> list[Covariance]:
    """Inverse of :func:`stack`."""
    n = covs.eigenvalues.shape[0]
    return [jax.tree_util.tree_map(lambda a: a[i], covs) for i in range(n)]


def as_covariance(name: str, value, d: int | None = None) -> Covariance:
    """Accept a :class:`Covariance` or a dense symmetric PSD matrix; check ``d`` if given."""
    if isinstance(value, Covariance):
        cov = value
    elif isinstance(value, (jax.Array, np.ndarray, list, tuple)):
        try:
            cov = from_matrix(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        except TypeError as exc:
            raise TypeError(f"{name}: {exc}") from None
    else:
        raise TypeError(f"{name} must be a Covariance or a [d, d] matrix, got {type(value).__name__}")
    if d is not None and cov.d != d:
        raise ValueError(f"{name} has dimension d={cov.d}, expected d={d}")
    return cov


def one_covariance(name: str, value, d: int | None = None) -> Covariance:
    """:func:`as_covariance` of one covariance (eigenvalues ``[d]``), held as float64 NumPy arrays (exact in JSON)."""
    with jax.enable_x64(True):  # a matrix is eigendecomposed, and the values kept, in float64
        cov = check_covariance(name, as_covariance(name, value, d))
        eig = np.asarray(cov.eigenvalues, dtype=np.float64)
        basis = None if cov.basis is None else np.asarray(cov.basis, dtype=np.float64)
    if eig.ndim != 1:
        raise ValueError(f"{name} must be one covariance with eigenvalues [d], got shape {eig.shape}")
    return Covariance(eig, basis)


def to_json(cov: Covariance) -> dict:
    """``{"eigenvalues": [...], "basis": [[...]] | None}`` (float64 lists) of one covariance."""
    return {
        "eigenvalues": np.asarray(cov.eigenvalues, np.float64).tolist(),
        "basis": None if cov.basis is None else np.asarray(cov.basis, np.float64).tolist(),
    }


def from_json(obj) -> Covariance:
    """Inverse of :func:`to_json`."""
    basis = obj.get("basis")
    return Covariance(np.asarray(obj["eigenvalues"], np.float64), None if basis is None else np.asarray(basis, np.float64))
