"""Input validation shared by the functional core.

Every check runs only on concrete (non-traced) values, so the same functions stay
``jit``/``vmap``-compatible: under a trace the checks are skipped and the math runs.
Errors name the offending argument.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds a value now (not a tracer inside ``jit``/``vmap``/``grad``)."""
    leaves = jax.tree_util.tree_leaves(x)
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)


def float_array(name: str, x, dtype=None) -> jax.Array:
    """Convert ``x`` to a floating JAX array, raising ``TypeError`` for other kinds.

    Python numbers, lists and integer arrays are promoted to the default float dtype;
    complex, boolean, string and object inputs are refused.
    """
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a real floating-point array, got {type(x).__name__}")
    if isinstance(x, jax.Array) or isinstance(x, np.ndarray):
        kind = np.dtype(x.dtype).kind
    else:
        try:
            kind = np.asarray(x).dtype.kind
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise TypeError(f"{name} must be a real floating-point array, got {type(x).__name__}") from exc
    if kind in "fiu":
        if dtype is None and kind != "f":
            dtype = jnp.result_type(float)
        if isinstance(x, (jax.Array, np.ndarray)) and not isinstance(x, jax.core.Tracer):
            # a host array is cast there and transferred, a device array of the dtype asked is kept: jnp.asarray
            # would compile a small program per shape to stage it. The dtype is jnp.asarray's (canonical, not weak).
            target = jax.dtypes.canonicalize_dtype(x.dtype if dtype is None else dtype)
            if isinstance(x, np.ndarray):
                # a copy of our own: on CPU the (asynchronous) transfer may alias or read the caller's buffer late
                return jax.device_put(np.array(x, target, copy=True))
            if x.dtype == target:
                return x
        elif dtype is not None and not isinstance(x, jax.Array):
            # Python numbers and lists cast to a dtype asked for (strongly typed, as jnp.asarray makes them): staged
            # from the host, where jnp.asarray would compile a conversion per shape. Without a dtype they stay weak.
            return jax.device_put(np.array(x, jax.dtypes.canonicalize_dtype(dtype), copy=True))
        return jnp.asarray(x, dtype=dtype)
    raise TypeError(f"{name} must be a real floating-point array, got dtype kind {kind!r}")


def check_finite(name: str, x) -> None:
    """Raise ``ValueError`` if a concrete array has non-finite entries."""
    if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} has non-finite entries (nan or inf)")


def real_number(name: str, value, *, minimum=None, exclusive: bool = False, nonzero: bool = False,
                allow_inf: bool = False):
    """Validate a concrete real number (or array of them): not ``nan``, finite unless ``allow_inf``,
    ``>= minimum`` (``> minimum`` when ``exclusive``) and ``!= 0`` when ``nonzero``.

    Booleans, strings, ``None`` and complex values raise ``TypeError``; traced values pass
    through untouched. Returns the value as given.
    """
    if not is_concrete(value):
        return value
    if isinstance(value, bool) or isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from exc
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real number, got dtype {arr.dtype}")
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} must not be nan")
    if not allow_inf and np.any(np.isinf(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None:
        if exclusive and np.any(arr <= minimum):
            raise ValueError(f"{name} must be > {minimum}, got {value!r}")
        if not exclusive and np.any(arr < minimum):
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if nonzero and np.any(arr == 0):
        raise ValueError(f"{name} must be nonzero, got {value!r}")
    return value


def positive_count(name: str, value, allow_inf: bool = False, minimum: int = 1):
    """Validate a prompt length / count ``value >= minimum`` (or ``inf`` when allowed).

    Traced values pass through untouched. Returns the value (floats kept as given).
    """
    return real_number(name, value, minimum=minimum, allow_inf=allow_inf)


def static_int(name: str, value, minimum: int = 0) -> int:
    """Validate a shape-defining integer (``k_max``, ``batch``, ``length``) and return it."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            value = int(value)
        else:
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_prng_key(name: str, key) -> None:
    """Raise ``TypeError`` unless ``key`` looks like a JAX PRNG key."""
    if isinstance(key, (int, np.integer)):
        raise TypeError(f"{name} must be a jax.random key (jax.random.key(seed)), got int {key}")
    if not hasattr(key, "dtype"):
        raise TypeError(f"{name} must be a jax.random key, got {type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return
    if key.dtype == jnp.uint32 and key.shape[-1:] == (2,):
        return
    raise TypeError(f"{name} must be a jax.random key, got array of dtype {key.dtype} shape {key.shape}")


def square_matrix(name: str, M, d: int | None = None) -> jax.Array:
    """Validate a square real matrix (optionally of size ``d``), finite when concrete."""
    M = float_array(name, M)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {M.shape}")
    if d is not None and M.shape[0] != d:
        raise ValueError(f"{name} must be {d}x{d} to match d={d}, got shape {M.shape}")
    check_finite(name, M)
    return M


def number_tuple(name: str, values, *, allow_inf: bool = False, minimum=None, integer=False) -> tuple:
    """A non-empty tuple of distinct floats (not nan; ``+inf`` only with ``allow_inf``; ``>= minimum``; whole
    numbers if ``integer``) from a number or a sequence of numbers; errors name ``name``."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got a string {values!r}")
    if isinstance(values, numbers.Number) or (hasattr(values, "ndim") and np.ndim(values) == 0):
        values = [values]
    try:
        out = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.floating, np.integer)) and not (
                hasattr(v, "ndim") and np.ndim(v) == 0
            ):
                raise TypeError(f"{name} must contain numbers, got {type(v).__name__} {v!r}")
            out.append(float(v))
    except TypeError as exc:
        if str(exc).startswith(name):
            raise
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from None
    if not out:
        raise ValueError(f"{name} must not be empty")
    for v in out:
        if math.isnan(v):
            raise ValueError(f"{name} must not contain nan")
        if math.isinf(v) and not (allow_inf and v > 0):
            raise ValueError(f"{name} must be finite{' (or +inf)' if allow_inf else ''}, got {v}")
        if minimum is not None and v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {v:g}")
        if integer and math.isfinite(v) and not float(v).is_integer():
            raise ValueError(f"{name} must hold whole numbers (prompt lengths), got {v:g}")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not contain duplicates, got {out}")
    return tuple(out)


def physical_memory() -> int:
    """Bytes of physical memory of this machine (``sysconf``)."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_limit() -> tuple[int, str]:
    """``(bytes, description)`` of the memory a run may use: the accelerator's limit when JAX reports one,
    else half of this machine's physical memory (the rest is for the OS, Python and XLA's copies)."""
    import jax

    device = jax.local_devices()[0]  # this process's device (multi-host: jax.devices()[0] is process 0's)
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"]), f"the {device.platform.upper()}'s {stats['bytes_limit'] / 2**30:.3g} GiB"
    total = physical_memory()
    return total // 2, f"half of this machine's {total / 2**30:.3g} GiB"


def check_fits(nbytes: float, what: str, hint: str) -> None:
    """``ValueError`` ``"<what> needs ≈ X GiB, more than <limit>; <hint>"`` when ``nbytes`` exceeds :func:`memory_limit`.

    ``what`` names the arguments and their values (the sizes behind ``nbytes``); ``hint`` says which to lower.
    """
    limit, where = memory_limit()
    if nbytes > limit:
        raise ValueError(f"{what} needs ≈ {nbytes / 2**30:.3g} GiB of memory, more than {where}; {hint}")


def renamed_argument(old: str, new: str):
    """Decorator: keyword ``old=`` still works for one release, with a ``DeprecationWarning``, as ``new=``.

    Used where an argument was renamed to say its role (``Sigma`` → ``test``: the test covariance).
    """
    import functools
    import warnings

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{fn.__name__}() got both {old}= (deprecated) and {new}=")
                warnings.warn(f"{fn.__name__}({old}=...) is deprecated; the argument is now called {new}",
                              DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def simplex(name: str, probs, size: int | None = None, atol: float = 1e-6, negative_atol: float = 0.0) -> None:
    """Raise ``ValueError`` naming ``name`` unless concrete ``probs [..., L]`` is a point of the simplex.

    Finite, ``≥ −negative_atol``, summing to 1 within ``atol · max(1, L)`` along the last axis; with ``size``,
    ``L`` must equal it. Traced values are not checked (the caller validated them before ``jit``).
    """
    if not is_concrete(probs):
        return
    probs = np.asarray(probs, np.float64)
    if size is not None and probs.shape[-1:] != (size,):
        raise ValueError(f"{name} must hold one probability per task ({size}), got shape {probs.shape}")
    if probs.ndim < 1 or probs.shape[-1] == 0:
        raise ValueError(f"{name} must be a non-empty vector of probabilities")
    if not np.all(np.isfinite(probs)):
        raise ValueError(f"{name} has non-finite entries")
    if np.any(probs < -negative_atol):
        raise ValueError(f"{name} must be non-negative (a point of the simplex), got {probs.tolist()}")
    total = probs.sum(axis=-1)
    if np.any(np.abs(total - 1.0) > atol * max(1, probs.shape[-1])):
        raise ValueError(f"{name} must sum to 1 (a point of the simplex), got sum {np.asarray(total).tolist()}")
