"""A GPT-2 that predicts the task vector ``w`` in context, with test-time chain of thought (docs/science.md §8).

Tokens (one per row of the sequence, ``T = n + j`` tokens in all)::

    h_i     = A [x_i; y_i] + type[0] + pos[i]           i = 0..n-1     (in-context examples)
    h_{n+t} = B ŵ_t        + type[1] + pos[n + t]       t = 0..j-1     (estimate tokens)

``A: R^{d+1} → R^width`` and ``B: R^d → R^width`` are linear read-ins, ``type`` a learned
2-row embedding, ``pos`` a learned position table of ``max_len`` rows. The decoder is GPT-2
style: pre-LayerNorm blocks ``h ← h + Attn(LN(h))``, ``h ← h + MLP(LN(h))`` with causal
multi-head attention and a GELU MLP, then a final LayerNorm and a linear read-out
``R^width → R^d`` that predicts ``w`` at every estimate position: the prediction at estimate
token ``t`` is ``ŵ_{t+1}``.

Test-time CoT (``k`` passes from ``ŵ_0 = 0``; ``k = 1`` is direct in-context prediction):
``ŵ_{t+1}`` = read-out at estimate token ``t``, appended as estimate token ``t + 1``. The rollout
is one ``lax.scan`` (``method="cache"``: a KV cache, one new token per step; ``method="buffer"``:
a fixed buffer of ``n + k_max`` tokens and a full causal forward per step — the causal mask makes
the unused tail irrelevant). Both equal an explicit Python loop of forward passes (tests).

Training (:func:`train_gpt2`): Adam on ``E ||ŵ_{t+1} − w||²`` averaged over the supervised
estimate positions, prompts from :func:`ttscale.prompts.sample_prompts` with data key
``fold_in(key, step)``, a ``lax.scan`` over the steps of a jitted chunk, a checkpoint per chunk.
Two protocols:

* ``"single_step"`` — one estimate token ``ŵ_0 = 0`` (as the LSA theory, docs/science.md §3);
* ``"self_rollout"`` — estimate tokens ``ŵ_0 = 0, ŵ_1..ŵ_{K−1}`` from the model's own
  stop-gradient rollout, every estimate position supervised with ``w`` (``K = k_train``).

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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ttscale import _checks, store
from ttscale.cot import error_curve, pseudo_newton_errors, squared_errors
from ttscale.prompts import Prompts, sample_prompts
from ttscale.spectra import Covariance, check_covariance, identity, power_law
from ttscale.theory import gamma_inverse

PROTOCOLS = ("self_rollout", "single_step")
COT_METHODS = ("cache", "buffer")
DEFAULT_PROTOCOL = "self_rollout"

#: width / layers / heads of the named model sizes (``paper``: the ≈9.5M-parameter ICL GPT-2).
PRESETS = {
    "paper": dict(width=256, layers=12, heads=8),
    "small": dict(width=32, layers=2, heads=2),
    "tiny": dict(width=16, layers=1, heads=2),
}


# ============================================================================= configuration
@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Shape-defining model settings (hashable, static).

    ``d`` task dimension; ``max_len`` rows of the position table (a prompt of ``n`` examples
    with ``k`` CoT steps needs ``n + max(k, 1) ≤ max_len``); ``width`` model width;
    ``layers`` blocks; ``heads`` attention heads (``width % heads == 0``); ``mlp_ratio`` MLP
    hidden width / width.
    """

    d: int
    max_len: int
    width: int = 256
    layers: int = 12
    heads: int = 8
    mlp_ratio: int = 4

    def __post_init__(self):
        for name in ("d", "max_len", "width", "layers", "heads", "mlp_ratio"):
            _checks.static_int(name, getattr(self, name), minimum=1)
        if self.width % self.heads:
            raise ValueError(f"width={self.width} must be divisible by heads={self.heads}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    """GPT-2 decoder reading in-context examples and estimate tokens, predicting ``w`` (module docstring).

    ``model(examples, estimates)``: ``examples [b, n, d+1]`` rows ``[x_i; y_i]``, ``estimates
    [b, j, d]`` rows ``ŵ_0..ŵ_{j−1}`` → predictions ``[b, j, d]`` (row ``t`` is ``ŵ_{t+1}``).
    """

    def __init__(self, config: GPT2Config, *, rngs: nnx.Rngs):
        if not isinstance(config, GPT2Config):
            raise TypeError(f"config must be a GPT2Config, got {type(config).__name__}")
        c = config
        self.config = c
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

    def embed(self, examples, estimates):
        """Token embeddings ``[b, n + j, width]`` (read-in + type + position)."""
        n, j = examples.shape[1], estimates.shape[1]
        h_ex = self.read_example(examples) + self.type_embed(jnp.zeros((), jnp.int32))
        h_est = self.read_estimate(estimates) + self.type_embed(jnp.ones((), jnp.int32))
        return jnp.concatenate([h_ex, h_est], axis=1) + self.position(jnp.arange(n + j))

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

    def __call__(self, examples, estimates):
        n = examples.shape[1]
        h, _ = self.hidden(self.embed(examples, estimates))
        return self.read(h[:, n:])


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


def init_gpt2(config: GPT2Config, key) -> GPT2:
    """A freshly initialised :class:`GPT2` (``key``: a ``jax.random`` key or an int seed)."""
    if not isinstance(config, GPT2Config):
        raise TypeError(f"config must be a GPT2Config, got {type(config).__name__}")
    key = _as_key("key", key)
    graphdef, init = _initialiser(config)
    return nnx.merge(graphdef, init(key))


# ============================================================================= input checks
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
    """Example tokens ``[b, n, d+1]``: rows ``[x_i; y_i]`` from ``X [b, d, n]``, ``y [b, n]``."""
    return jnp.concatenate([jnp.swapaxes(prompts.X, 1, 2), prompts.y[..., None]], axis=-1)


def _check_model(model) -> GPT2Config:
    if not isinstance(model, GPT2):
        raise TypeError(f"model must be a ttscale.gpt2.GPT2, got {type(model).__name__}")
    return model.config


def _check_prompts(config: GPT2Config, prompts, k_max: int) -> None:
    if not isinstance(prompts, Prompts):
        raise TypeError(f"prompts must be ttscale.Prompts, got {type(prompts).__name__}")
    if prompts.X.ndim != 3:
        raise ValueError(f"prompts.X must be [batch, d, n], got shape {prompts.X.shape}")
    if prompts.d != config.d:
        raise ValueError(f"prompts have d={prompts.d} but the model has d={config.d}")
    need = prompts.length + max(k_max, 1)
    if need > config.max_len:
        raise ValueError(
            f"prompts of length {prompts.length} with k_max={k_max} need {need} positions but the "
            f"model's position table has max_len={config.max_len}"
        )


# ============================================================================= forward / CoT
def _forward(graphdef, state, examples, estimates):
    return nnx.merge(graphdef, state)(examples, estimates)


_forward_jit = jax.jit(_forward, static_argnums=0)


def forward(model: GPT2, prompts: Prompts, estimates) -> jax.Array:
    """Predictions ``[b, j, d]`` at the estimate tokens ``estimates [b, j, d]`` (teacher forcing)."""
    config = _check_model(model)
    estimates = _checks.float_array("estimates", estimates)
    if estimates.ndim != 3 or estimates.shape[-1] != config.d or estimates.shape[0] != prompts.batch:
        raise ValueError(f"estimates must be [batch={prompts.batch}, j, d={config.d}], got {estimates.shape}")
    _check_prompts(config, prompts, estimates.shape[1])
    graphdef, state = nnx.split(model)
    return _forward_jit(graphdef, state, examples_from_prompts(prompts), estimates.astype(prompts.X.dtype))


def _cot_cache(model: GPT2, examples, k_max: int):
    """KV-cache rollout: prefill ``[examples, ŵ_0 = 0, 0…]`` (``n + k_max`` tokens), then one token per step."""
    b, n, _ = examples.shape
    d = model.config.d
    buffer = jnp.zeros((b, k_max, d), examples.dtype)
    h, caches = model.hidden(model.embed(examples, buffer))
    w_first = model.read(h[:, n])
    type_est = model.type_embed(jnp.ones((), jnp.int32))

    def step(carry, t):
        caches, w_hat = carry
        position = n + t
        h_t = (model.read_estimate(w_hat) + type_est + model.position(position))[:, None, :]
        new = []
        for block, cache in zip(model.blocks(), caches):
            h_t, cache = block.decode(h_t, cache, position)
            new.append(cache)
        w_next = model.read(h_t[:, 0])
        return (new, w_next), w_next

    _, rest = jax.lax.scan(step, (caches, w_first), jnp.arange(1, k_max))
    return jnp.concatenate([w_first[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)


def _cot_buffer(model: GPT2, examples, k_max: int):
    """Fixed-buffer rollout: a full causal forward over ``n + k_max`` tokens per step."""
    b, _, _ = examples.shape
    buffer = jnp.zeros((b, k_max, model.config.d), examples.dtype)

    def step(buffer, t):
        w_next = jax.lax.dynamic_index_in_dim(model(examples, buffer), t, axis=1, keepdims=False)
        # ŵ_{t+1} becomes estimate token t + 1 (the last step's write is clipped and never read)
        buffer = jax.lax.dynamic_update_index_in_dim(buffer, w_next, jnp.minimum(t + 1, k_max - 1), axis=1)
        return buffer, w_next

    _, est = jax.lax.scan(step, buffer, jnp.arange(k_max))
    return jnp.swapaxes(est, 0, 1)


def _cot_estimates(graphdef, state, examples, k_max: int, method: str):
    model = nnx.merge(graphdef, state)
    if k_max == 0:
        return jnp.zeros((examples.shape[0], 0, model.config.d), examples.dtype)
    return (_cot_cache if method == "cache" else _cot_buffer)(model, examples, k_max)


_cot_estimates_jit = jax.jit(_cot_estimates, static_argnums=(0, 3, 4))


def cot_estimates(model: GPT2, prompts: Prompts, k_max: int, method: str = "cache") -> jax.Array:
    """Test-time CoT from ``ŵ_0 = 0``: estimates ``ŵ_1..ŵ_{k_max}`` ``[batch, k_max, d]`` (one compiled scan)."""
    config = _check_model(model)
    k_max = _checks.static_int("k_max", k_max, minimum=0)
    if method not in COT_METHODS:
        raise ValueError(f"method must be one of {COT_METHODS}, got {method!r}")
    _check_prompts(config, prompts, k_max)
    graphdef, state = nnx.split(model)
    return _cot_estimates_jit(graphdef, state, examples_from_prompts(prompts), k_max, method)


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


def _atomic_savez(path: str, arrays: dict) -> None:
    with store.atomic_file(path, suffix=".npz") as fh:
        np.savez(fh, **arrays)


def save_model(path: str, model: GPT2) -> None:
    """Write the config and parameters of ``model`` to ``path`` (``.npz``, written atomically)."""
    config = _check_model(model)
    arrays = {f"param_{i:04d}": a for i, a in enumerate(_leaves(nnx.state(model, nnx.Param)))}
    arrays["config"] = np.asarray(json.dumps(config.to_dict()))
    _atomic_savez(path, arrays)


def _model_from_arrays(data) -> GPT2:
    config = GPT2Config(**json.loads(str(data["config"])))
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
class GPT2TrainConfig:
    """Static training settings.

    ``n`` training prompt length; ``protocol`` ``"self_rollout"`` | ``"single_step"``;
    ``k_train`` estimate positions supervised by self-rollout (ignored by single-step, which
    uses one); ``steps`` Adam steps of ``batch`` prompts at ``learning_rate``; ``chunk`` steps
    per jitted ``lax.scan`` (a checkpoint after each); ``clip`` global-norm gradient clip
    (``0`` disables); ``noise`` label noise σ.
    """

    model: GPT2Config
    n: int
    protocol: str = DEFAULT_PROTOCOL
    k_train: int = 10
    steps: int = 10_000
    batch: int = 64
    learning_rate: float = 1e-4
    chunk: int = 100
    clip: float = 1.0
    noise: float = 0.0

    def __post_init__(self):
        if not isinstance(self.model, GPT2Config):
            raise TypeError(f"model must be a GPT2Config, got {type(self.model).__name__}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        for name in ("n", "k_train", "steps", "batch", "chunk"):
            _checks.static_int(name, getattr(self, name), minimum=1)
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if self.clip < 0 or self.noise < 0:
            raise ValueError("clip and noise must be >= 0")
        if self.n + self.estimate_tokens > self.model.max_len:
            raise ValueError(
                f"n={self.n} plus {self.estimate_tokens} estimate tokens exceeds the model's max_len={self.model.max_len}"
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
    """A trained model, its per-step losses ``[steps]`` and the wall time of this call (s)."""

    model: GPT2
    losses: np.ndarray
    seconds: float


def make_optimizer(config: GPT2TrainConfig) -> optax.GradientTransformation:
    """Adam at ``learning_rate`` after global-norm clipping (``clip = 0``: none)."""
    adam = optax.adam(config.learning_rate)
    return optax.chain(optax.clip_by_global_norm(config.clip), adam) if config.clip > 0 else adam


def _training_inputs(model: GPT2, examples, config: GPT2TrainConfig):
    """Estimate tokens ``[b, K, d]`` of one training prompt batch: ``ŵ_0 = 0`` then the model's stop-gradient rollout."""
    b = examples.shape[0]
    zero = jnp.zeros((b, 1, config.model.d), examples.dtype)
    if config.protocol == "single_step" or config.k_train == 1:
        return zero
    rollout = jax.lax.stop_gradient(_cot_cache(model, examples, config.k_train - 1))
    return jnp.concatenate([zero, rollout], axis=1)


def training_loss(model: GPT2, prompts: Prompts, config: GPT2TrainConfig) -> jax.Array:
    """``mean_{b,t} ||ŵ_{t+1} − w||²`` over the supervised estimate positions (the trivial ``ŵ = 0`` scores ``≈ d``)."""
    examples = examples_from_prompts(prompts)
    estimates = _training_inputs(model, examples, config)
    preds = model(examples, estimates)
    return jnp.mean(jnp.sum((preds - prompts.w[:, None, :]) ** 2, axis=-1))


def make_train_chunk(config: GPT2TrainConfig, graphdef):
    """``chunk(params, opt_state, key, step0, cov) → (params, opt_state, losses [chunk])``, jitted.

    Step ``s`` draws its prompts with ``fold_in(key, s)``; the ``chunk`` steps run in one
    ``lax.scan``. ``cov`` (the training :class:`~ttscale.spectra.Covariance`) is traced.
    """
    tx = make_optimizer(config)

    def loss_fn(params, rest, prompts):
        return training_loss(nnx.merge(graphdef, params, rest), prompts, config)

    def one_step(carry, step):
        params, rest, opt_state, key, cov = carry
        prompts = sample_prompts(jax.random.fold_in(key, step), cov, config.n, config.batch, config.noise)
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


def train_gpt2(config: GPT2TrainConfig, cov: Covariance, key, out: str | None = None, progress: bool = True) -> GPT2TrainResult:
    """Train a :class:`GPT2` on prompts of length ``config.n`` from ``cov`` (module docstring).

    ``key``: ``jax.random`` key or int seed (``fold_in(key, 0)`` initialises, ``fold_in(key, 1)``
    seeds the data). With ``out`` a checkpoint ``out/checkpoint.npz`` (parameters, Adam state,
    losses so far, config) is written after every chunk and a run with the same config resumes
    from it; a finished run returns at once. ``steps`` is rounded up to whole chunks.
    """
    if not isinstance(config, GPT2TrainConfig):
        raise TypeError(f"config must be a GPT2TrainConfig, got {type(config).__name__}")
    check_covariance("cov", cov)  # a Covariance(...) built directly skips the constructors' checks
    if cov.eigenvalues.ndim != 1:
        raise ValueError(f"cov must be one covariance (eigenvalues [d]), got shape {cov.eigenvalues.shape}")
    if cov.d != config.model.d:
        raise ValueError(f"cov has d={cov.d} but the model has d={config.model.d}")
    key = _as_key("key", key)
    start = time.perf_counter()
    model = init_gpt2(config.model, jax.random.fold_in(key, 0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    chunk_fn, tx = make_train_chunk(config, graphdef)
    opt_state = tx.init(params)
    n_chunks = -(-config.steps // config.chunk)
    losses = np.zeros((0,), np.float32)
    meta = json.dumps(config.to_dict(), sort_keys=True)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        path = _checkpoint_path(out)
        if os.path.exists(path):
            with np.load(path) as data:
                if str(data["train_config"]) != meta:
                    raise ValueError(f"{path} was written by a different training config; use another out dir")
                params = _restore_leaves(params, [data[k] for k in sorted(f for f in data.files if f.startswith("param_"))], "parameters")
                opt_state = _restore_leaves(opt_state, [data[k] for k in sorted(f for f in data.files if f.startswith("opt_"))], "optimizer state")
                losses = np.asarray(data["losses"])
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
            arrays.update(config=np.asarray(json.dumps(config.model.to_dict())), train_config=np.asarray(meta), losses=losses)
            _atomic_savez(_checkpoint_path(out), arrays)
        if bar is not None:
            bar.update(config.chunk)
            bar.set_postfix(loss=f"{float(np.mean(chunk_losses)):.3g}")
    if bar is not None:
        bar.close()
    return GPT2TrainResult(nnx.merge(graphdef, params, rest), losses, time.perf_counter() - start)


# ============================================================================= experiment
@dataclasses.dataclass(frozen=True)
class GPT2Experiment:
    """One experiment size: model preset, ``d``, training lengths ``ns``, CoT steps ``k_max``, training and evaluation sizes."""

    preset: str
    d: int
    ns: tuple
    k_max: int
    steps: int
    batch: int
    learning_rate: float
    chunk: int
    eval_prompts: int
    alpha: float = 1.0  # tilted training spectrum λ_i ∝ i^-alpha, tr Λ = d


EXPERIMENT_SIZES = {
    "tiny": GPT2Experiment("tiny", d=3, ns=(6, 8), k_max=3, steps=20, batch=16, learning_rate=1e-3, chunk=10, eval_prompts=64),
    "quick": GPT2Experiment("small", d=5, ns=(20, 30, 40), k_max=10, steps=1250, batch=32, learning_rate=1e-3, chunk=250, eval_prompts=2000),
    "full": GPT2Experiment("paper", d=10, ns=(20, 30, 40), k_max=20, steps=20_000, batch=64, learning_rate=1e-4, chunk=1000, eval_prompts=10_000),
}

SCENARIOS = ("aligned", "tilted")


def scenario_covariances(scenario: str, d: int, alpha: float = 1.0):
    """``(train, test)`` covariances: ``aligned`` Λ = Σ = I; ``tilted`` Λ = power_law(α, tr = d), Σ = I."""
    if scenario == "aligned":
        return identity(d), identity(d)
    if scenario == "tilted":
        return power_law(d, alpha), identity(d)
    raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")


def gpt2_experiment(size="quick", out: str | None = None, protocol: str = DEFAULT_PROTOCOL, seed: int = 0, progress: bool = True, scenarios=SCENARIOS):
    """GPT-2 test-time CoT error vs ``k`` beside the optimal LSA (``P = Γ(Λ, n)⁻¹`` pseudo-Newton).

    For each scenario (``aligned``: train Λ = test Σ = I; ``tilted``: Λ ∝ i^-α, tr Λ = d,
    Σ = I) and each training length ``n`` a GPT-2 is trained (``protocol``, ``k_train = k_max``)
    and evaluated on ``eval_prompts`` test prompts of length ``m = n`` from Σ; the LSA reference
    uses the same prompts. ``size``: ``"tiny" | "quick" | "full"`` or a :class:`GPT2Experiment`.

    Returns an ``xarray.Dataset`` with dims ``(scenario, n, k)`` (``k = 0..k_max``) and data
    variables ``gpt2_mean, gpt2_stderr, gpt2_median, lsa_mean, lsa_stderr, lsa_median``;
    ``k1_ratio [scenario, n]`` = GPT-2 / LSA mean error at ``k = 1`` on prompts from the
    *training* covariance (the in-distribution sanity anchor; ≤ 1 means at least as accurate);
    ``train_loss [scenario, n, step]``; ``train_seconds [scenario, n]``. With ``out`` each model
    checkpoints under ``out/<protocol>/<scenario>_n<n>/`` (re-running resumes / skips).
    """
    import xarray as xr

    exp = EXPERIMENT_SIZES[size] if isinstance(size, str) and size in EXPERIMENT_SIZES else size
    if not isinstance(exp, GPT2Experiment):
        raise ValueError(f"size must be one of {tuple(EXPERIMENT_SIZES)} or a GPT2Experiment, got {size!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if isinstance(scenarios, str) or not isinstance(scenarios, (list, tuple)):
        raise TypeError(f"scenarios must be a tuple of names from {SCENARIOS}, got {type(scenarios).__name__} {scenarios!r}")
    scenarios = tuple(scenarios)
    if not scenarios:
        raise ValueError(f"scenarios must list at least one of {SCENARIOS} (an empty tuple runs nothing)")
    if len(set(scenarios)) != len(scenarios):
        raise ValueError(f"scenarios must not repeat a scenario, got {scenarios}")
    for s in scenarios:
        scenario_covariances(s, 1)
    seed = _checks.static_int("seed", seed, minimum=0)
    if seed >= 2**32 - 1:  # seed + 1 keys the evaluation prompts
        raise ValueError(f"seed must be < 2**32 - 1, got {seed}")
    model_config = gpt2_config(exp.preset, d=exp.d, max_len=max(exp.ns) + exp.k_max)
    ks = np.arange(exp.k_max + 1)
    shape = (len(scenarios), len(exp.ns))
    vars_ = {name: np.full(shape + (len(ks),), np.nan) for name in ("gpt2_mean", "gpt2_stderr", "gpt2_median", "lsa_mean", "lsa_stderr", "lsa_median")}
    k1 = {name: np.full(shape, np.nan) for name in ("k1_gpt2", "k1_lsa")}
    seconds = np.full(shape, np.nan)
    losses = np.full(shape + (-(-exp.steps // exp.chunk) * exp.chunk,), np.nan)
    root = jax.random.key(seed)
    for i, scenario in enumerate(scenarios):
        train_cov, test_cov = scenario_covariances(scenario, exp.d, exp.alpha)
        for j, n in enumerate(exp.ns):
            train_config = GPT2TrainConfig(
                model=model_config, n=n, protocol=protocol, k_train=exp.k_max, steps=exp.steps,
                batch=exp.batch, learning_rate=exp.learning_rate, chunk=exp.chunk,
            )
            cell_out = None if out is None else os.path.join(out, protocol, f"{scenario}_n{n}")
            result = train_gpt2(train_config, train_cov, jax.random.fold_in(root, 1000 * i + j), cell_out, progress)
            seconds[i, j] = result.seconds
            losses[i, j, : len(result.losses)] = result.losses
            eval_key = jax.random.fold_in(jax.random.key(seed + 1), n)
            prompts = sample_prompts(eval_key, test_cov, n, exp.eval_prompts)
            P = gamma_inverse(train_cov, n)
            g = error_curve(cot_errors(result.model, prompts, exp.k_max))
            l = error_curve(pseudo_newton_errors(P, prompts, exp.k_max))
            for stat in ("mean", "stderr", "median"):
                vars_[f"gpt2_{stat}"][i, j] = np.asarray(getattr(g, stat))
                vars_[f"lsa_{stat}"][i, j] = np.asarray(getattr(l, stat))
            indist = sample_prompts(jax.random.fold_in(eval_key, 1), train_cov, n, exp.eval_prompts)
            # same shapes as the test rollout: no new compile for the k = 1 anchor
            k1["k1_gpt2"][i, j] = float(error_curve(cot_errors(result.model, indist, exp.k_max)).mean[1])
            k1["k1_lsa"][i, j] = float(error_curve(pseudo_newton_errors(P, indist, exp.k_max)).mean[1])
    dims = ("scenario", "n", "k")
    data = {name: (dims, v) for name, v in vars_.items()}
    data.update({name: (dims[:2], v) for name, v in k1.items()})
    data["k1_ratio"] = (dims[:2], k1["k1_gpt2"] / k1["k1_lsa"])
    data["train_seconds"] = (dims[:2], seconds)
    data["train_loss"] = (("scenario", "n", "step"), losses)
    ds = xr.Dataset(
        data,
        coords={"scenario": list(scenarios), "n": np.asarray(exp.ns, float), "k": ks, "step": np.arange(losses.shape[-1])},
        attrs={
            "experiment": json.dumps(dataclasses.asdict(exp)),
            "model": json.dumps(model_config.to_dict()),
            "parameters": count_parameters(model_config),
            "protocol": protocol,
            "test_length": "m = n",
            "jax_version": jax.__version__,
            "devices": str(jax.devices()),
        },
    )
    if out is not None:
        os.makedirs(out, exist_ok=True)
        store.write_dataset(ds, os.path.join(out, f"gpt2_{protocol}.nc"))
    return ds


def plot_gpt2(ds):
    """Error vs ``k`` per scenario (rows) — mean ± s.e. (left) and median (right), log scale; GPT-2 solid, LSA dashed."""
    import matplotlib.pyplot as plt

    scenarios = list(ds.scenario.values)
    fig, axes = plt.subplots(len(scenarios), 2, figsize=(10, 3.6 * len(scenarios)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    k = ds.k.values
    titles = {"aligned": "aligned: train Λ = I, test Σ = I", "tilted": "tilted train λ_i ∝ 1/i, test Σ = I"}
    for r, scenario in enumerate(scenarios):
        cell = ds.sel(scenario=scenario)
        for c, stat in enumerate(("mean", "median")):
            ax = axes[r, c]
            for j, n in enumerate(ds.n.values):
                color = colors[j % len(colors)]
                g = cell[f"gpt2_{stat}"].sel(n=n).values
                l = cell[f"lsa_{stat}"].sel(n=n).values
                ax.plot(k, g, "-o", color=color, ms=3, label=f"GPT-2 n={int(n)}")
                if stat == "mean":
                    s = cell["gpt2_stderr"].sel(n=n).values
                    ax.fill_between(k, np.maximum(g - s, 1e-12), g + s, color=color, alpha=0.2)
                ax.plot(k, l, "--", color=color, label=f"LSA Γ⁻¹ n={int(n)}")
            ax.set_yscale("log")
            ax.set_xlabel("CoT steps k")
            ax.set_ylabel(f"{stat} ||ŵ_k − w||²")
            ax.set_title(f"{titles.get(scenario, scenario)} ({stat})", fontsize=9)
            finite = np.concatenate([cell[f"gpt2_{stat}"].values.ravel(), cell[f"lsa_{stat}"].values.ravel()])
            finite = finite[np.isfinite(finite) & (finite > 0)]
            if finite.size:
                ax.set_ylim(max(finite.min() * 0.5, 1e-6), min(finite.max() * 2, 1e4))
            ax.grid(alpha=0.3)
        axes[r, 0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"GPT-2 test-time CoT ({ds.attrs.get('protocol', '?')} training) vs optimal LSA, m = n")
    fig.tight_layout()
    return fig
