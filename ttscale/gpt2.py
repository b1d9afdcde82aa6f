"""A GPT-2 that predicts the task vector ``w`` in context, with test-time chain of thought (docs/science.md §8).

**Input formats** (``GPT2Config.format``; a prompt of ``m`` examples, ``j`` estimate tokens):

``"garg"`` (default; Garg et al.'s layout, as in the authors' GPT-2 setup) — separate x and y
tokens, the label zero-padded to ``d``, then the estimates, all in the *same* ``R^d`` token space
through one shared linear read-in ``A: R^d → R^width``::

    position   0     1              2     3             …  2m−2   2m−1           2m    2m+1  …  2m+j−1
    token      x_1   [y_1,0,…,0]    x_2   [y_2,0,…,0]   …  x_m    [y_m,0,…,0]    ŵ_0   ŵ_1   …  ŵ_{j−1}
    h_t = A token_t + pos[t]                                                      (ŵ_0 = 0: h = bias + pos)

so ``T = 2m + j`` tokens; the read-out at estimate token ``ŵ_t`` (position ``2m + t``) is ``ŵ_{t+1}``.

``"pair"`` (this project's first guess) — one token per example and a typed estimate token::

    h_i     = A [x_i; y_i] + type[0] + pos[i]       i = 0..m−1      (A: R^{d+1} → R^width)
    h_{m+t} = B ŵ_t        + type[1] + pos[m + t]   t = 0..j−1      (B: R^d → R^width)

``T = m + j``. Either way ``pos`` is a learned table of ``max_len`` rows (``context + k ≤ max_len``).
The decoder is GPT-2 style: pre-LayerNorm blocks ``h ← h + Attn(LN(h))``, ``h ← h + MLP(LN(h))``
with causal multi-head attention and a GELU MLP, then a final LayerNorm and a linear read-out
``R^width → R^d`` at every estimate position.

**Test-time CoT** (``k`` passes from ``ŵ_0 = 0``; ``k = 1`` is direct in-context prediction):
``ŵ_{t+1}`` = read-out at estimate token ``t``, appended as estimate token ``t + 1``. One
``lax.scan`` (``method="cache"``: a KV cache, one new token per step; ``"buffer"``: a fixed
buffer of ``context + k_max`` tokens and a full causal forward per step). Both equal an explicit
Python loop of forward passes (tests).

**CoT training** (:func:`train_gpt2`): Adam on ``mean_{t=1..K} E ||ŵ_t − w||²`` — every estimate
position of a rollout of ``K = k_train`` steps supervised with ``w`` — on prompts from
:func:`ttscale.prompts.sample_prompts` with data key ``fold_in(key, step)``, a ``lax.scan`` over
the steps of a jitted chunk, a checkpoint per chunk. Protocols:

* ``"self_rollout"`` — the model's own rollout ``ŵ_1..ŵ_K`` from ``ŵ_0 = 0``. With
  ``stop_gradient=True`` the fed-back estimates are constants (a stop-gradient rollout, then one
  teacher-forced pass over ``[ŵ_0, sg(ŵ_1), …, sg(ŵ_{K−1})]``); with ``False`` the gradient flows
  through them (back-propagation through the whole rollout). Same loss value, different gradients.
* ``"single_step"`` — one estimate token ``ŵ_0 = 0``: training only at ``k = 1`` (the LSA
  theory's protocol, docs/science.md §3).

Optional **curriculum** (:class:`Curriculum`, Garg et al.): the active dimension ``d_t`` and number
of examples ``n_t`` grow from ``(d_start, n_start)`` to ``(d, n)`` over the first ``steps`` steps,
implemented by zero-masking (``x_i``, ``w_i`` of inactive dims and whole inactive examples are 0,
labels recomputed, so a masked example carries no information) — shapes never change.

**Sweeps**: :mod:`ttscale.models.gpt2` registers a trained network as the model
``gpt2:params=DIR`` (``reads = "prompts"``), so ``run_sweep(SweepSpec(model=...))`` evaluates it
like any model.

**The study and its figure** are not here: :mod:`ttscale.experiments.gpt2` holds
:class:`~ttscale.experiments.gpt2.GPT2Experiment`, ``EXPERIMENT_SIZES``, the scenarios,
:func:`~ttscale.experiments.gpt2.sweep_with_reference` (a model beside the pseudo-Newton reference on
the same prompts) and :func:`~ttscale.experiments.gpt2.gpt2_experiment`; the figure is
:func:`ttscale.plots.plot_gpt2`. The old names ``ttscale.gpt2.gpt2_experiment``, ``ttscale.gpt2.plot_gpt2``,
… still work (a lazy module ``__getattr__``, no warning); new code should import from the new homes.

Flax NNX only in this module. Models are ``nnx.Module`` objects; every jitted function takes the
``nnx.split`` pair ``(graphdef, state)`` so nothing depends on NNX's own transforms.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
import warnings
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ttscale import _checks, store
from ttscale.cot import squared_errors
from ttscale.prompts import Prompts, sample_prompts
from ttscale.spectra import Covariance, check_covariance

PROTOCOLS = ("self_rollout", "single_step")
FORMATS = ("garg", "pair")
COT_METHODS = ("cache", "buffer")
DEFAULT_PROTOCOL = "self_rollout"
DEFAULT_FORMAT = "garg"

#: width / layers / heads of the named model sizes (``paper``: the ≈9.5M-parameter ICL GPT-2).
PRESETS = {
    "paper": dict(width=256, layers=12, heads=8),
    "small": dict(width=32, layers=2, heads=2),
    "tiny": dict(width=16, layers=1, heads=2),
}


# ============================================================================= configuration
def context_length(format: str, m: int) -> int:
    """Tokens before the first estimate token for ``m`` examples: ``2m`` (``garg``) or ``m`` (``pair``)."""
    return 2 * m if format == "garg" else m


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Shape-defining model settings (hashable, static).

    ``d`` task dimension; ``max_len`` rows of the position table (a prompt of ``m`` examples
    with ``k`` CoT steps needs ``context_length(format, m) + max(k, 1) ≤ max_len``); ``width``;
    ``layers`` blocks; ``heads`` attention heads (``width % heads == 0``); ``mlp_ratio`` MLP hidden
    width / width; ``format`` ``"garg"`` | ``"pair"`` (module docstring).
    """

    d: int
    max_len: int
    width: int = 256
    layers: int = 12
    heads: int = 8
    mlp_ratio: int = 4
    format: str = DEFAULT_FORMAT

    def __post_init__(self):
        for name in ("d", "max_len", "width", "layers", "heads", "mlp_ratio"):
            _checks.static_int(name, getattr(self, name), minimum=1)
        if self.width % self.heads:
            raise ValueError(f"width={self.width} must be divisible by heads={self.heads}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> "GPT2Config":
        """Inverse of :meth:`to_dict`; files written before ``format`` existed are ``pair``."""
        return cls(**{"format": "pair", **obj})


def gpt2_config(preset: str = "paper", *, d: int, max_len: int, **overrides) -> GPT2Config:
    """A :class:`GPT2Config` from a named size in :data:`PRESETS` (``paper`` | ``small`` | ``tiny``)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    return GPT2Config(d=d, max_len=max_len, **{**PRESETS[preset], **overrides})


# ============================================================================= model
def _causal_attention(q, k, v, mask):
    """``softmax(q kᵀ/√dh + mask) v`` per head; ``q [b,Tq,h,dh]``, ``k, v [b,Tk,h,dh]``, ``mask [Tq,Tk]`` bool."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


class Block(nnx.Module):
    """Pre-LayerNorm transformer block: ``h + Attn(LN₁ h)``, then ``h + W₂ gelu(W₁ LN₂ h)``."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.ln_attn = nnx.LayerNorm(width, rngs=rngs)
        self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
        self.attn_out = nnx.Linear(width, width, rngs=rngs)
        self.ln_mlp = nnx.LayerNorm(width, rngs=rngs)
        self.mlp_in = nnx.Linear(width, mlp_ratio * width, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_ratio * width, width, rngs=rngs)

    def _qkv(self, h):
        b, t, w = h.shape
        q, k, v = jnp.split(self.qkv(self.ln_attn(h)), 3, axis=-1)
        shape = (b, t, self.heads, w // self.heads)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

    def _finish(self, h, attended):
        b, t = attended.shape[:2]
        h = h + self.attn_out(attended.reshape(b, t, -1))
        return h + self.mlp_out(jax.nn.gelu(self.mlp_in(self.ln_mlp(h))))

    def __call__(self, h, mask):
        """Full pass over ``h [b, T, width]`` with ``mask [T, T]``; returns ``h`` and the keys/values ``[b, T, heads, dh]``."""
        q, k, v = self._qkv(h)
        return self._finish(h, _causal_attention(q, k, v, mask)), (k, v)

    def decode(self, h_t, cache, position):
        """One new token ``h_t [b, 1, width]`` at ``position`` against the KV ``cache`` (written in place)."""
        q, k, v = self._qkv(h_t)
        k_cache = jax.lax.dynamic_update_slice_in_dim(cache[0], k, position, axis=1)
        v_cache = jax.lax.dynamic_update_slice_in_dim(cache[1], v, position, axis=1)
        mask = (jnp.arange(k_cache.shape[1]) <= position)[None, :]
        return self._finish(h_t, _causal_attention(q, k_cache, v_cache, mask)), (k_cache, v_cache)


class GPT2(nnx.Module):
    """GPT-2 decoder reading context tokens and estimate tokens, predicting ``w`` (module docstring).

    ``model(context, estimates)``: ``context`` = :func:`context_tokens` of the prompts (``[b, 2m, d]``
    for ``garg``, ``[b, m, d+1]`` for ``pair``), ``estimates [b, j, d]`` rows ``ŵ_0..ŵ_{j−1}`` →
    predictions ``[b, j, d]`` (row ``t`` is ``ŵ_{t+1}``).
    """

    def __init__(self, config: GPT2Config, *, rngs: nnx.Rngs):
        if not isinstance(config, GPT2Config):
            raise TypeError(f"config must be a GPT2Config, got {type(config).__name__}")
        c = config
        self.config = c
        if c.format == "garg":
            self.read_in = nnx.Linear(c.d, c.width, rngs=rngs)  # shared by x, y and ŵ tokens
        else:
            self.read_example = nnx.Linear(c.d + 1, c.width, rngs=rngs)
            self.read_estimate = nnx.Linear(c.d, c.width, rngs=rngs)
            self.type_embed = nnx.Embed(2, c.width, rngs=rngs)
        self.position = nnx.Embed(c.max_len, c.width, rngs=rngs)
        for i in range(c.layers):  # attributes, not a list: stable across NNX versions
            setattr(self, f"block_{i}", Block(c.width, c.heads, c.mlp_ratio, rngs=rngs))
        self.ln_final = nnx.LayerNorm(c.width, rngs=rngs)
        self.read_out = nnx.Linear(c.width, c.d, rngs=rngs)

    def blocks(self):
        return [getattr(self, f"block_{i}") for i in range(self.config.layers)]

    def embed_context(self, context):
        """Read-in of the context tokens (no position) → ``[b, L, width]``."""
        if self.config.format == "garg":
            return self.read_in(context)
        return self.read_example(context) + self.type_embed(jnp.zeros((), jnp.int32))

    def embed_estimates(self, estimates):
        """Read-in of estimate tokens ``[..., d]`` (no position) → ``[..., width]``."""
        if self.config.format == "garg":
            return self.read_in(estimates)
        return self.read_estimate(estimates) + self.type_embed(jnp.ones((), jnp.int32))

    def embed(self, context, estimates):
        """Token embeddings ``[b, L + j, width]`` (read-in + position)."""
        L, j = context.shape[1], estimates.shape[1]
        h = jnp.concatenate([self.embed_context(context), self.embed_estimates(estimates)], axis=1)
        return h + self.position(jnp.arange(L + j))

    def read(self, h):
        """Linear read-out of ``w`` from final hidden states ``[..., width]`` → ``[..., d]``."""
        return self.read_out(self.ln_final(h))

    def hidden(self, h):
        """Causal pass of all blocks over ``h [b, T, width]`` → final hidden states and per-layer KV."""
        T = h.shape[1]
        mask = jnp.tril(jnp.ones((T, T), dtype=bool))
        caches = []
        for block in self.blocks():
            h, kv = block(h, mask)
            caches.append(kv)
        return h, caches

    def __call__(self, context, estimates):
        L = context.shape[1]
        h, _ = self.hidden(self.embed(context, estimates))
        return self.read(h[:, L:])


def count_parameters(model_or_config) -> int:
    """Number of trainable scalars (``nnx.Param``) of a model or of a config's model."""
    if isinstance(model_or_config, GPT2Config):
        model = nnx.eval_shape(lambda: GPT2(model_or_config, rngs=nnx.Rngs(0)))
    else:
        model = model_or_config
    state = nnx.state(model, nnx.Param)
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(state)))


@functools.lru_cache(maxsize=32)
def _initialiser(config: GPT2Config):
    """``(graphdef, jit(key → state))``: one compiled initialiser per config (eager init compiles every op)."""
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: GPT2(config, rngs=nnx.Rngs(0))))
    return graphdef, jax.jit(lambda key: nnx.split(GPT2(config, rngs=nnx.Rngs(params=key)))[1])


def _key_first(fn: str, key, config):
    """Accept the deprecated ``fn(config, key)`` order (issue: the key comes first) with a DeprecationWarning."""
    if isinstance(key, GPT2Config) or isinstance(key, GPT2TrainConfig):
        warnings.warn(f"{fn}(config, ..., key) is deprecated: pass the key first, {fn}(key, config, ...)",
                      DeprecationWarning, stacklevel=3)
        return config, key
    return key, config


def init_gpt2(key, config: GPT2Config) -> GPT2:
    """A freshly initialised :class:`GPT2` (``key``: a ``jax.random`` key or an int seed)."""
    key, config = _key_first("init_gpt2", key, config)
    if not isinstance(config, GPT2Config):
        raise TypeError(f"config must be a GPT2Config, got {type(config).__name__}")
    key = _as_key("key", key)
    graphdef, init = _initialiser(config)
    return nnx.merge(graphdef, init(key))


# ============================================================================= tokens and checks
def _as_key(name: str, key):
    """A ``jax.random`` key from a key or an int seed in ``0 .. 2**32 - 1`` (JAX keys hold 32 bits)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        seed = int(key)
        if not 0 <= seed < 2**32:
            raise ValueError(f"{name}: an int seed must lie in 0..2**32 - 1, got {seed}")
        return jax.random.key(seed)
    _checks.check_prng_key(name, key)
    return key


def examples_from_prompts(prompts: Prompts) -> jax.Array:
    """``pair`` context tokens ``[b, m, d+1]``: rows ``[x_i; y_i]`` from ``X [b, d, m]``, ``y [b, m]``."""
    return jnp.concatenate([jnp.swapaxes(prompts.X, 1, 2), prompts.y[..., None]], axis=-1)


def garg_tokens(prompts: Prompts) -> jax.Array:
    """``garg`` context tokens ``[b, 2m, d]``: row ``2i`` is ``x_{i+1}``, row ``2i+1`` is ``[y_{i+1}, 0, …, 0]``."""
    xs = jnp.swapaxes(prompts.X, 1, 2)  # [b, m, d]
    ys = jnp.zeros_like(xs).at[..., 0].set(prompts.y)
    b, m, d = xs.shape
    return jnp.stack([xs, ys], axis=2).reshape(b, 2 * m, d)


def context_tokens(prompts: Prompts, format: str = DEFAULT_FORMAT) -> jax.Array:
    """The context tokens of ``prompts`` in ``format`` (:func:`garg_tokens` or :func:`examples_from_prompts`)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    return garg_tokens(prompts) if format == "garg" else examples_from_prompts(prompts)


def _check_model(model) -> GPT2Config:
    if not isinstance(model, GPT2):
        raise TypeError(f"model must be a ttscale.gpt2.GPT2, got {type(model).__name__}")
    return model.config


def _check_prompts(config: GPT2Config, prompts, k_max: int) -> None:
    if not isinstance(prompts, Prompts):
        raise TypeError(f"prompts must be ttscale.Prompts, got {type(prompts).__name__}")
    if prompts.X.ndim != 3:
        raise ValueError(f"prompts.X must be [batch, d, m], got shape {prompts.X.shape}")
    if prompts.d != config.d:
        raise ValueError(f"prompts have d={prompts.d} but the model has d={config.d}")
    need = context_length(config.format, prompts.length) + max(k_max, 1)
    if need > config.max_len:
        raise ValueError(
            f"prompts of length {prompts.length} with k_max={k_max} need {need} positions ({config.format} format) "
            f"but the model's position table has max_len={config.max_len}"
        )


# ============================================================================= forward / CoT
def _forward(graphdef, state, context, estimates):
    return nnx.merge(graphdef, state)(context, estimates)


_forward_jit = jax.jit(_forward, static_argnums=0)


def forward(model: GPT2, prompts: Prompts, estimates) -> jax.Array:
    """Predictions ``[b, j, d]`` at the estimate tokens ``estimates [b, j, d]`` (teacher forcing)."""
    config = _check_model(model)
    estimates = _checks.float_array("estimates", estimates)
    if not isinstance(prompts, Prompts):
        raise TypeError(f"prompts must be ttscale.Prompts, got {type(prompts).__name__}")
    if estimates.ndim != 3 or estimates.shape[-1] != config.d or estimates.shape[0] != prompts.batch:
        raise ValueError(f"estimates must be [batch={prompts.batch}, j, d={config.d}], got {estimates.shape}")
    _check_prompts(config, prompts, estimates.shape[1])
    graphdef, state = nnx.split(model)
    return _forward_jit(graphdef, state, context_tokens(prompts, config.format), estimates.astype(prompts.X.dtype))


def _cot_cache(model: GPT2, context, k_max: int):
    """KV-cache rollout: prefill ``[context, ŵ_0 = 0, 0…]`` (``L + k_max`` tokens), then one token per step."""
    b, L, _ = context.shape
    d = model.config.d
    buffer = jnp.zeros((b, k_max, d), context.dtype)
    h, caches = model.hidden(model.embed(context, buffer))
    w_first = model.read(h[:, L])

    def step(carry, t):
        caches, w_hat = carry
        position = L + t
        h_t = (model.embed_estimates(w_hat) + model.position(position))[:, None, :]
        new = []
        for block, cache in zip(model.blocks(), caches):
            h_t, cache = block.decode(h_t, cache, position)
            new.append(cache)
        w_next = model.read(h_t[:, 0])
        return (new, w_next), w_next

    _, rest = jax.lax.scan(step, (caches, w_first), jnp.arange(1, k_max))
    return jnp.concatenate([w_first[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)


def _cot_buffer(model: GPT2, context, k_max: int):
    """Fixed-buffer rollout: a full causal forward over ``L + k_max`` tokens per step."""
    b = context.shape[0]
    buffer = jnp.zeros((b, k_max, model.config.d), context.dtype)

    def step(buffer, t):
        w_next = jax.lax.dynamic_index_in_dim(model(context, buffer), t, axis=1, keepdims=False)
        # ŵ_{t+1} becomes estimate token t + 1 (the last step's write is clipped and never read)
        buffer = jax.lax.dynamic_update_index_in_dim(buffer, w_next, jnp.minimum(t + 1, k_max - 1), axis=1)
        return buffer, w_next

    _, est = jax.lax.scan(step, buffer, jnp.arange(k_max))
    return jnp.swapaxes(est, 0, 1)


def rollout(model: GPT2, context, k_max: int, method: str = "cache"):
    """``ŵ_1..ŵ_{k_max}`` ``[b, k_max, d]`` of the test-time CoT on context tokens (traceable; no checks)."""
    if k_max == 0:
        return jnp.zeros((context.shape[0], 0, model.config.d), context.dtype)
    return (_cot_cache if method == "cache" else _cot_buffer)(model, context, k_max)


def _cot_estimates(graphdef, state, context, k_max: int, method: str):
    return rollout(nnx.merge(graphdef, state), context, k_max, method)


_cot_estimates_jit = jax.jit(_cot_estimates, static_argnums=(0, 3, 4))


def cot_estimates(model: GPT2, prompts: Prompts, k_max: int, method: str = "cache") -> jax.Array:
    """Test-time CoT from ``ŵ_0 = 0``: estimates ``ŵ_1..ŵ_{k_max}`` ``[batch, k_max, d]`` (one compiled scan)."""
    config = _check_model(model)
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    if method not in COT_METHODS:
        raise ValueError(f"method must be one of {COT_METHODS}, got {method!r}")
    _check_prompts(config, prompts, k_max)
    graphdef, state = nnx.split(model)
    return _cot_estimates_jit(graphdef, state, context_tokens(prompts, config.format), k_max, method)


def cot_errors(model: GPT2, prompts: Prompts, k_max: int, method: str = "cache", chunk: int = 4096) -> jax.Array:
    """Squared errors ``||ŵ_k − w||²`` ``[batch, k_max + 1]`` (``k = 0`` is ``ŵ_0 = 0``), evaluated in batches of ``chunk``."""
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    chunk = _checks.static_int("chunk", chunk, minimum=1)
    _check_prompts(_check_model(model), prompts, k_max)
    out = []
    for lo in range(0, prompts.batch, chunk):
        part = Prompts(*(a[lo : lo + chunk] for a in prompts))
        out.append(squared_errors(cot_estimates(model, part, k_max, method), part.w))
    return jnp.concatenate(out, axis=0)


# ============================================================================= save / load
def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _restore_leaves(template, arrays, what: str):
    leaves, treedef = jax.tree_util.tree_flatten(template)
    if len(leaves) != len(arrays):
        raise ValueError(f"{what}: checkpoint has {len(arrays)} arrays, the model needs {len(leaves)}")
    for i, (a, b) in enumerate(zip(leaves, arrays)):
        if tuple(np.shape(a)) != tuple(b.shape):
            raise ValueError(f"{what}: array {i} has shape {b.shape}, expected {np.shape(a)}")
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(b, dtype=a.dtype) for a, b in zip(leaves, arrays)])


def save_model(path: str, model: GPT2) -> None:
    """Write the config and parameters of ``model`` to ``path`` (``.npz``, written atomically)."""
    config = _check_model(model)
    arrays = {f"param_{i:04d}": a for i, a in enumerate(_leaves(nnx.state(model, nnx.Param)))}
    arrays["config"] = np.asarray(json.dumps(config.to_dict()))
    store.save_npz(path, **arrays)


def _model_from_arrays(data) -> GPT2:
    config = GPT2Config.from_dict(json.loads(str(data["config"])))
    model = nnx.eval_shape(lambda: GPT2(config, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    names = sorted(k for k in data.files if k.startswith("param_"))
    params = _restore_leaves(params, [data[k] for k in names], "parameters")
    return nnx.merge(graphdef, params, rest)


def load_model(path: str) -> GPT2:
    """Read a model written by :func:`save_model` (or a training checkpoint)."""
    with np.load(path) as data:
        return _model_from_arrays(data)


# ============================================================================= training
@dataclasses.dataclass(frozen=True)
class Curriculum:
    """Garg-style curriculum: active dims ``d_t`` and examples ``n_t`` grow linearly (in whole steps) from
    ``(d_start, n_start)`` to the full ``(d, n)`` over the first ``steps`` training steps::

        f = min(1, s / steps),   d_t = d_start + ⌊f (d − d_start)⌋,   n_t = n_start + ⌊f (n − n_start)⌋.
    """

    d_start: int
    n_start: int
    steps: int

    def __post_init__(self):
        for name in ("d_start", "n_start", "steps"):
            _checks.static_int(name, getattr(self, name), minimum=1)

    def active(self, step, d: int, n: int):
        """``(d_t, n_t)`` at training step ``step`` (may be traced)."""
        f = jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / self.steps)
        d_t = self.d_start + jnp.floor(f * (d - self.d_start)).astype(jnp.int32)
        n_t = self.n_start + jnp.floor(f * (n - self.n_start)).astype(jnp.int32)
        return d_t, n_t


def mask_prompts(prompts: Prompts, d_active, n_active) -> Prompts:
    """Zero-mask dims ``≥ d_active`` (of every ``x_j`` and of ``w``) and examples ``≥ n_active``.

    ``y_j = <w', x'_j> + (y_j − <w, x_j>)`` for active examples (the label noise kept), ``0`` for masked
    ones: a masked example is ``(0, 0)``, consistent with every ``w``. Shapes are unchanged.
    """
    dim = (jnp.arange(prompts.d) < d_active).astype(prompts.X.dtype)
    ex = (jnp.arange(prompts.length) < n_active).astype(prompts.X.dtype)
    noise = prompts.y - jnp.einsum("bdm,bd->bm", prompts.X, prompts.w)
    X = prompts.X * dim[None, :, None] * ex[None, None, :]
    w = prompts.w * dim[None, :]
    y = (jnp.einsum("bdm,bd->bm", X, w) + noise) * ex[None, :]
    return Prompts(X, y, w)


@dataclasses.dataclass(frozen=True)
class GPT2TrainConfig:
    """Static training settings.

    ``n`` training prompt length; ``protocol`` ``"self_rollout"`` | ``"single_step"``; ``k_train``
    supervised estimate positions of the self-rollout (``K``; single-step uses one); ``stop_gradient``
    (self-rollout) — the fed-back estimates are constants (``True``) or carry the gradient
    (``False``); ``steps`` Adam steps of ``batch`` prompts at ``learning_rate``; ``chunk`` steps per
    jitted ``lax.scan`` (a checkpoint after each); ``clip`` global-norm gradient clip (``0``: none);
    ``noise`` label noise σ; ``curriculum`` a :class:`Curriculum` or ``None``.
    """

    model: GPT2Config
    n: int
    protocol: str = DEFAULT_PROTOCOL
    k_train: int = 8
    steps: int = 10_000
    batch: int = 64
    learning_rate: float = 1e-4
    chunk: int = 100
    clip: float = 1.0
    noise: float = 0.0
    stop_gradient: bool = True
    curriculum: Optional[Curriculum] = None

    def __post_init__(self):
        if not isinstance(self.model, GPT2Config):
            raise TypeError(f"model must be a GPT2Config, got {type(self.model).__name__}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        for name in ("n", "k_train", "steps", "batch", "chunk"):
            _checks.static_int(name, getattr(self, name), minimum=1)
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if not (self.clip >= 0 and self.noise >= 0):
            raise ValueError("clip and noise must be >= 0")
        if not isinstance(self.stop_gradient, (bool, np.bool_)):
            raise TypeError(f"stop_gradient must be a bool, got {type(self.stop_gradient).__name__}")
        if self.curriculum is not None:
            if not isinstance(self.curriculum, Curriculum):
                raise TypeError(f"curriculum must be a Curriculum or None, got {type(self.curriculum).__name__}")
            if self.curriculum.d_start > self.model.d or self.curriculum.n_start > self.n:
                raise ValueError(f"curriculum starts at d={self.curriculum.d_start}, n={self.curriculum.n_start}: "
                                 f"must be <= d={self.model.d}, n={self.n}")
        need = context_length(self.model.format, self.n) + self.estimate_tokens
        if need > self.model.max_len:
            raise ValueError(
                f"n={self.n} ({self.model.format} format) plus {self.estimate_tokens} estimate tokens needs {need} "
                f"positions but the model's max_len={self.model.max_len}"
            )

    @property
    def estimate_tokens(self) -> int:
        """Estimate tokens per training prompt: ``k_train`` (self-rollout) or 1 (single-step)."""
        return self.k_train if self.protocol == "self_rollout" else 1

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_dict()
        return out


class GPT2TrainResult(NamedTuple):
    """A trained model, its per-step losses ``[steps]``, the wall time of this call (s) and the training wall
    time summed over every call that trained it (``total_seconds``: a resumed run counts its earlier calls)."""

    model: GPT2
    losses: np.ndarray
    seconds: float
    total_seconds: float = math.nan


def make_optimizer(config: GPT2TrainConfig) -> optax.GradientTransformation:
    """Adam at ``learning_rate`` after global-norm clipping (``clip = 0``: none)."""
    adam = optax.adam(config.learning_rate)
    return optax.chain(optax.clip_by_global_norm(config.clip), adam) if config.clip > 0 else adam


def training_predictions(model: GPT2, context, config: GPT2TrainConfig) -> jax.Array:
    """The supervised predictions ``ŵ_1..ŵ_K`` ``[b, K, d]`` of one batch (``K = estimate_tokens``).

    Single-step: one pass at ``ŵ_0 = 0``. Self-rollout with ``stop_gradient``: a stop-gradient
    rollout of ``K − 1`` steps, then one teacher-forced pass over ``[0, sg(ŵ_1), …, sg(ŵ_{K−1})]``
    (the same values as the rollout, the gradient only through each position's own pass); without:
    the KV-cache rollout itself, differentiated end to end.
    """
    b = context.shape[0]
    zero = jnp.zeros((b, 1, config.model.d), context.dtype)
    K = config.estimate_tokens
    if K == 1:
        return model(context, zero)
    if not config.stop_gradient:
        return _cot_cache(model, context, K)
    fed = jax.lax.stop_gradient(_cot_cache(model, context, K - 1))
    return model(context, jnp.concatenate([zero, fed], axis=1))


def training_loss(model: GPT2, prompts: Prompts, config: GPT2TrainConfig) -> jax.Array:
    """``mean_{b, t=1..K} ||ŵ_t − w||²`` over the supervised estimate positions (the trivial ``ŵ = 0`` scores ``≈ d``)."""
    preds = training_predictions(model, context_tokens(prompts, config.model.format), config)
    return jnp.mean(jnp.sum((preds - prompts.w[:, None, :]) ** 2, axis=-1))


def make_train_chunk(config: GPT2TrainConfig, graphdef):
    """``chunk(params, rest, opt_state, key, step0, cov) → (params, opt_state, losses [chunk])``, jitted.

    Step ``s`` draws its prompts with ``fold_in(key, s)`` (then the curriculum mask of step ``s``);
    the ``chunk`` steps run in one ``lax.scan``. ``cov`` (the training covariance) is traced.
    """
    tx = make_optimizer(config)

    def loss_fn(params, rest, prompts):
        return training_loss(nnx.merge(graphdef, params, rest), prompts, config)

    def one_step(carry, step):
        params, rest, opt_state, key, cov = carry
        prompts = sample_prompts(jax.random.fold_in(key, step), cov, config.n, config.batch, config.noise)
        if config.curriculum is not None:
            prompts = mask_prompts(prompts, *config.curriculum.active(step, config.model.d, config.n))
        loss, grads = jax.value_and_grad(loss_fn)(params, rest, prompts)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, rest, opt_state, key, cov), loss

    @jax.jit
    def chunk(params, rest, opt_state, key, step0, cov):
        steps = step0 + jnp.arange(config.chunk)
        (params, _, opt_state, _, _), losses = jax.lax.scan(one_step, (params, rest, opt_state, key, cov), steps)
        return params, opt_state, losses

    return chunk, tx


def _checkpoint_path(out: str) -> str:
    return os.path.join(out, "checkpoint.npz")


def train_gpt2(key, config: GPT2TrainConfig, cov: Covariance, out: str | None = None, progress: bool = True) -> GPT2TrainResult:
    """Train a :class:`GPT2` on prompts of length ``config.n`` from ``cov`` (module docstring).

    ``key``: ``jax.random`` key or int seed (``fold_in(key, 0)`` initialises, ``fold_in(key, 1)``
    seeds the data). With ``out`` a checkpoint ``out/checkpoint.npz`` (parameters, Adam state,
    losses so far, config and key) is written after every chunk and a run with the same config and
    key resumes from it (a different one is refused); a finished run returns at once. ``steps`` is
    rounded up to whole chunks. The old order ``train_gpt2(config, cov, key)`` still works, with a
    ``DeprecationWarning``.
    """
    if isinstance(key, GPT2TrainConfig):
        warnings.warn("train_gpt2(config, cov, key) is deprecated: pass the key first, train_gpt2(key, config, cov)",
                      DeprecationWarning, stacklevel=2)
        key, config, cov = cov, key, config
    if not isinstance(config, GPT2TrainConfig):
        raise TypeError(f"config must be a GPT2TrainConfig, got {type(config).__name__}")
    check_covariance("cov", cov)  # a Covariance(...) built directly skips the constructors' checks
    if cov.eigenvalues.ndim != 1:
        raise ValueError(f"cov must be one covariance (eigenvalues [d]), got shape {cov.eigenvalues.shape}")
    if cov.d != config.model.d:
        raise ValueError(f"cov has d={cov.d} but the model has d={config.model.d}")
    key = _as_key("key", key)
    start = time.perf_counter()
    model = init_gpt2(jax.random.fold_in(key, 0), config.model)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    chunk_fn, tx = make_train_chunk(config, graphdef)
    opt_state = tx.init(params)
    n_chunks = -(-config.steps // config.chunk)
    losses = np.zeros((0,), np.float32)
    earlier = 0.0
    meta = json.dumps({**config.to_dict(), "key": np.asarray(jax.random.key_data(key)).tolist(),
                       "cov": np.asarray(cov.eigenvalues, np.float64).tolist()}, sort_keys=True)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        path = _checkpoint_path(out)
        if os.path.exists(path):
            with np.load(path) as data:
                if str(data["train_config"]) != meta:
                    raise ValueError(f"{path} was written by a different training config (or key or covariance); "
                                     "use another out dir")
                params = _restore_leaves(params, [data[k] for k in sorted(f for f in data.files if f.startswith("param_"))], "parameters")
                opt_state = _restore_leaves(opt_state, [data[k] for k in sorted(f for f in data.files if f.startswith("opt_"))], "optimizer state")
                losses = np.asarray(data["losses"])
                earlier = float(data["train_seconds"]) if "train_seconds" in data.files else math.nan
    data_key = jax.random.fold_in(key, 1)
    done = len(losses) // config.chunk
    bar = None
    if progress and done < n_chunks:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_chunks * config.chunk, initial=done * config.chunk, desc=f"gpt2 n={config.n}", unit="step", leave=False)
    for c in range(done, n_chunks):
        params, opt_state, chunk_losses = chunk_fn(params, rest, opt_state, data_key, jnp.asarray(c * config.chunk), cov)
        losses = np.concatenate([losses, np.asarray(chunk_losses)])
        if out is not None:
            arrays = {f"param_{i:04d}": a for i, a in enumerate(_leaves(params))}
            arrays.update({f"opt_{i:04d}": a for i, a in enumerate(_leaves(opt_state))})
            arrays.update(config=np.asarray(json.dumps(config.model.to_dict())), train_config=np.asarray(meta), losses=losses,
                          train_seconds=np.asarray(earlier + time.perf_counter() - start))
            store.save_npz(_checkpoint_path(out), **arrays)
        if bar is not None:
            bar.update(config.chunk)
            bar.set_postfix(loss=f"{float(np.mean(chunk_losses)):.3g}")
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    return GPT2TrainResult(nnx.merge(graphdef, params, rest), losses, seconds, earlier + seconds if done < n_chunks else earlier)


# ============================================================================= moved names
#: The study and the figure live elsewhere now — :mod:`ttscale.experiments.gpt2` (``GPT2Experiment``,
#: ``EXPERIMENT_SIZES``, ``gpt2_experiment``, ``sweep_with_reference``, …) and :mod:`ttscale.plots`
#: (``plot_gpt2``); these names still resolve here (lazily, without a warning) for old code and notebooks.
_MOVED = {
    **dict.fromkeys(("GPT2Experiment", "EXPERIMENT_SIZES", "SIZE_TIMES", "SCENARIOS", "scenario_covariances",
                     "experiment_label", "resolve_size", "gpt2_experiment", "sweep_with_reference"),
                    "ttscale.experiments.gpt2"),
    "plot_gpt2": "ttscale.plots",
}


def __getattr__(name: str):
    """``ttscale.gpt2.<moved name>`` → the name from its new module (imported on first use: no import cycle)."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_MOVED))
