"""Task mixtures: the one description of "what to train on" for training and task selection (docs/science.md §7).

A **task mixture** holds ``L`` training tasks, task ``ℓ`` with covariance ``Λ_ℓ``, training prompt
length ``n_ℓ`` and probability ``π_ℓ`` (each training prompt draws its task from ``π``), plus a static
label per task::

    mix = task_mixture([identity(10), power_law(10, 1.0)], lengths=[20, 40], probs=[0.3, 0.7],
                       labels=["Easy", "Hard"])

It is a pytree whose leaves are arrays (``covariances.eigenvalues [..., L, d]``, ``covariances.basis
[..., L, d, d]`` or ``None``, ``lengths [..., L]``, ``probs [..., L]``) and whose ``labels`` (a tuple
of ``L`` strings) are static aux data, so a mixture passes through ``jit`` and a stack of mixtures
(leading axis on every leaf, :func:`stack_mixtures`) through ``vmap``. The mixture optimum
``P(π) = Λ̄ Q⁻¹`` is :func:`ttscale.theory.mixture_preconditioner`; :func:`mixture_preconditioner`
here is the same formula taking a mixture.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import _checks, theory
from ttscale.spectra import Covariance, as_covariance, check_covariance, stack

__all__ = ["TaskMixture", "task_mixture", "stack_mixtures", "mixture_preconditioner", "check_mixture"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TaskMixture:
    """``L`` training tasks and their probabilities (a pytree; build with :func:`task_mixture`).

    ``covariances``: a stacked :class:`~ttscale.spectra.Covariance` (eigenvalues ``[..., L, d]``);
    ``lengths [..., L]``: training prompt lengths ``n_ℓ`` (``inf`` allowed: infinitely long prompts);
    ``probs [..., L]``: probabilities ``π_ℓ`` on the simplex; ``labels``: static tuple of ``L`` task
    names (tasks sharing a name form one *type*, see :attr:`types` and :attr:`kinds`).
    """

    covariances: Covariance
    lengths: jax.Array
    probs: jax.Array
    labels: tuple = dataclasses.field(default=(), metadata=dict(static=True))

    @property
    def size(self) -> int:
        """Number of tasks ``L``."""
        return self.lengths.shape[-1]

    @property
    def d(self) -> int:
        """Feature dimension ``d``."""
        return self.covariances.d

    @property
    def dtype(self):
        """Floating dtype of the covariances."""
        return self.covariances.dtype

    @property
    def types(self) -> tuple:
        """The distinct labels in order of first appearance (the task *types*)."""
        return tuple(dict.fromkeys(self.labels))

    @property
    def kinds(self) -> np.ndarray:
        """Type index of each task ``[L]`` (static NumPy ints: position of its label in :attr:`types`)."""
        types = self.types
        return np.asarray([types.index(lab) for lab in self.labels], np.int32)

    def matrices(self) -> jax.Array:
        """Dense ``Λ_ℓ [..., L, d, d]``."""
        return self.covariances.matrix()

    def gammas(self) -> jax.Array:
        """Dense ``Γ(Λ_ℓ, n_ℓ)`` (:func:`ttscale.theory.gamma`) → ``[..., L, d, d]``."""
        return jnp.vectorize(theory.gamma, signature="(d,d),()->(d,d)")(self.matrices(), self.lengths)

    def lambda_min(self) -> jax.Array:
        """``σ_min(Λ_ℓ) [..., L]`` (small = rare skill = hard task)."""
        return self.covariances.lambda_min()

    def task(self, i: int) -> Covariance:
        """The covariance of task ``i`` (one unstacked :class:`~ttscale.spectra.Covariance`)."""
        eig = self.covariances.eigenvalues
        basis = self.covariances.basis
        return Covariance(eig[..., i, :], None if basis is None else basis[..., i, :, :])

    def with_probs(self, probs) -> "TaskMixture":
        """The same tasks with probabilities ``probs [..., L]`` (validated when concrete)."""
        probs = jnp.asarray(probs, self.dtype)
        if _checks.is_concrete(probs):
            _check_simplex("probs", np.asarray(probs), self.size)
        return dataclasses.replace(self, probs=probs)

    def astype(self, dtype) -> "TaskMixture":
        """Every floating leaf cast to ``dtype``."""
        return TaskMixture(self.covariances.astype(dtype), jnp.asarray(self.lengths, dtype),
                           jnp.asarray(self.probs, dtype), self.labels)


def _check_simplex(name: str, probs, L: int, atol: float = 1e-6) -> None:
    _checks.simplex(name, probs, size=L, atol=atol)


def _stack_covariances(covariances) -> Covariance:
    """A stacked :class:`Covariance` ``[L, d]`` from a list of covariances / dense matrices or a stack."""
    if isinstance(covariances, Covariance):
        if covariances.eigenvalues.ndim != 2:
            raise ValueError(f"covariances must be a stack [L, d], got eigenvalues of shape {covariances.eigenvalues.shape}")
        if covariances.eigenvalues.shape[0] == 0:
            raise ValueError("covariances: the mixture is empty (need at least one task)")
        eig = covariances.eigenvalues
        if _checks.is_concrete(eig) and np.isrealobj(eig) and bool(jnp.any(eig < 0)):
            bad = int(jnp.argmin(jnp.min(eig, axis=-1)))
            raise ValueError(f"covariances[{bad}] is not positive semi-definite (negative eigenvalue)")
        check_covariance("covariances", covariances)
        return covariances
    if isinstance(covariances, (list, tuple)):
        if len(covariances) == 0:
            raise ValueError("covariances: the mixture is empty (need at least one task)")
        items = []
        for i, c in enumerate(covariances):
            if isinstance(c, Covariance):
                if c.eigenvalues.ndim != 1:
                    raise ValueError(f"covariances[{i}] must be one covariance, got eigenvalues of shape {c.eigenvalues.shape}")
                if _checks.is_concrete(c.eigenvalues) and np.isrealobj(c.eigenvalues) and bool(jnp.any(c.eigenvalues < 0)):
                    raise ValueError(f"covariances[{i}] is not positive semi-definite (negative eigenvalue)")
                check_covariance(f"covariances[{i}]", c)
                items.append(c)
            else:
                M = np.asarray(c)
                if M.ndim != 2 or M.shape[0] != M.shape[1]:
                    raise ValueError(f"covariances[{i}] must be a square [d, d] matrix, got shape {M.shape}")
                items.append(as_covariance(f"covariances[{i}]", c))
        ds = [c.d for c in items]
        if len(set(ds)) != 1:
            raise ValueError(f"covariances: all tasks must share one dimension d, got d = {ds}")
        if len({c.basis is None for c in items}) > 1:  # mixed: give every task a basis
            d = ds[0]
            items = [c if c.basis is not None else Covariance(c.eigenvalues, jnp.eye(d, dtype=c.eigenvalues.dtype))
                     for c in items]
        dt = jax.dtypes.canonicalize_dtype(np.result_type(*[np.dtype(c.dtype) for c in items]))  # float64 input without x64: float32, no warning
        return stack([c.astype(dt) for c in items])
    raise TypeError("covariances must be a list of ttscale.Covariance / [d, d] matrices or a stacked Covariance, "
                    f"got {type(covariances).__name__}")


def task_mixture(covariances, lengths, probs=None, labels: Sequence[str] | None = None, dtype=None) -> TaskMixture:
    """Validate and build a :class:`TaskMixture`.

    ``covariances``: a list of ``L`` :class:`~ttscale.spectra.Covariance` or dense symmetric PSD
    ``[d, d]`` matrices, or a stacked ``Covariance [L, d]``; ``lengths``: one training prompt length
    ``n_ℓ ≥ 1`` per task (or one scalar for all; ``inf`` allowed); ``probs``: ``π [L]`` on the simplex
    (default uniform ``1/L``); ``labels``: ``L`` task names (default ``task0 .. task{L-1}``); ``dtype``:
    cast every leaf (default: the covariances' dtype).

    Raises ``ValueError`` naming the argument for an empty mixture, tasks of different ``d``
    (``covariances``), non-PSD or non-finite covariances, prompt lengths ``< 1`` or of the wrong shape
    (``lengths``), probabilities off the simplex (``probs``) or the wrong number of ``labels``.
    """
    stacked = _stack_covariances(covariances)
    if dtype is not None:
        stacked = stacked.astype(dtype)
    L = stacked.eigenvalues.shape[0]
    lengths_arr = _checks.float_array("lengths", lengths, stacked.dtype)
    if lengths_arr.ndim == 0:
        lengths_arr = jnp.broadcast_to(lengths_arr, (L,))
    if lengths_arr.shape != (L,):
        raise ValueError(f"lengths must hold one prompt length per task ({L}), got shape {lengths_arr.shape}")
    _checks.positive_count("lengths", np.asarray(lengths_arr), allow_inf=True)
    if probs is None:
        probs_arr = jnp.full((L,), 1.0 / L, stacked.dtype)
    else:
        probs_np = np.asarray(probs, np.float64)
        if probs_np.shape != (L,):
            raise ValueError(f"probs must hold one probability per task ({L}), got shape {probs_np.shape}")
        _check_simplex("probs", probs_np, L)
        probs_arr = jnp.asarray(probs_np, stacked.dtype)
    if labels is None:
        labels = tuple(f"task{i}" for i in range(L))
    if isinstance(labels, str):
        raise TypeError("labels must be a sequence of L strings, got one string")
    labels = tuple(str(lab) for lab in labels)
    if len(labels) != L:
        raise ValueError(f"labels must name every task ({L}), got {len(labels)} labels")
    return TaskMixture(stacked, lengths_arr, probs_arr, labels)


def check_mixture(name: str, mixture) -> TaskMixture:
    """``mixture`` itself if it is a non-empty :class:`TaskMixture`, else ``TypeError`` / ``ValueError`` naming ``name``."""
    if not isinstance(mixture, TaskMixture):
        raise TypeError(f"{name} must be a ttscale.TaskMixture (see ttscale.task_mixture), got {type(mixture).__name__}")
    if mixture.size == 0:
        raise ValueError(f"{name}: the mixture is empty (need at least one task)")
    return mixture


def stack_mixtures(items) -> TaskMixture:
    """Stack mixtures of one shape (same ``L``, ``d``, labels, all with or all without a basis) on a new
    leading axis, for ``vmap``."""
    items = [check_mixture(f"items[{i}]", m) for i, m in enumerate(items)]
    if not items:
        raise ValueError("items must hold at least one TaskMixture")
    structs = {jax.tree_util.tree_structure(m) for m in items}
    if len(structs) != 1:
        raise ValueError("items must share one structure (same labels; all with or all without a basis)")
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *items)


def mixture_preconditioner(mixture: TaskMixture, noise=0.0) -> jax.Array:
    """``P(π) = Λ̄ Q⁻¹`` of ``mixture`` → ``[..., d, d]``: :func:`ttscale.theory.mixture_preconditioner`
    (``Λ̄ = Σ π_ℓ Λ_ℓ``, ``Q = Σ π_ℓ (Γ(Λ_ℓ, n_ℓ) Λ_ℓ + σ² Λ_ℓ / n_ℓ)``) on its covariances, lengths and probs."""
    return theory.mixture_preconditioner(mixture.covariances, mixture.lengths, mixture.probs, noise=noise)
