"""A trained GPT-2 (:mod:`ttscale.gpt2`) as a sweep model: ``gpt2:params=DIR``.

``reads = "prompts"``: the engine hands it raw prompts ``(X, y)``; ``errors(params, prompts, k_max)``
builds the context tokens of the network's input format, runs its test-time CoT rollout from
``ŵ_0 = 0`` (the KV-cache ``lax.scan`` of :func:`ttscale.gpt2.rollout`) and returns
``||ŵ_k − w||² [b, k_max + 1]`` — the same numbers as :func:`ttscale.gpt2.cot_errors` on the same
prompts (tests). ``init(train, n)`` ignores the training spectrum (the network was trained before the
sweep) and returns the network's parameters as a tuple of arrays.

``params`` (model option) is one of

* a model file (``.npz`` written by :func:`ttscale.gpt2.save_model`, or a training checkpoint);
* a training folder holding ``checkpoint.npz`` (``train_gpt2(..., out=DIR)``) or ``model.npz``;
* a folder of per-training-length models ``DIR/n<N>/`` (as :func:`ttscale.experiments.gpt2.gpt2_experiment`
  writes under ``out/<label>/<scenario>/``): the cell with training length ``n`` uses ``n<n>``; a cell
  whose ``n`` has no model gets ``nan`` parameters, so its errors are ``inf``;
* a :class:`ttscale.gpt2.GPT2` object (Python only).

The model's name is ``gpt2:params=sha256:<digest>`` of the configs and weights, so a sweep's
identity follows the network, not the path. ``m = ∞`` is refused (``finite_m``): a GPT-2 reads a
finite prompt, and ``2m + k_max`` (``garg``) or ``m + k_max`` (``pair``) tokens must fit its
position table.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from ttscale.models.base import Model, format_options, squared_errors_of

_MODEL_FILES = ("checkpoint.npz", "model.npz")


def _load_one(path: str):
    from ttscale import gpt2

    try:
        return gpt2.load_model(path)
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"params: cannot read a GPT-2 model from {path!r} ({exc})") from None


def load(params) -> list:
    """``[(n or None, GPT2), ...]`` from a model, a file, a training folder or a folder of ``n<N>/`` folders."""
    from ttscale import gpt2

    if isinstance(params, gpt2.GPT2):
        return [(None, params)]
    if not isinstance(params, (str, os.PathLike)):
        raise TypeError(f"params must be a path or a ttscale.gpt2.GPT2, got {type(params).__name__}")
    path = os.fspath(params)
    if os.path.isfile(path):
        return [(None, _load_one(path))]
    if not os.path.isdir(path):
        raise ValueError(f"params: {path!r} is neither a model file nor a folder")
    for name in _MODEL_FILES:
        if os.path.isfile(os.path.join(path, name)):
            return [(None, _load_one(os.path.join(path, name)))]
    found = []
    for entry in sorted(os.listdir(path)):
        match = re.fullmatch(r"n(\d+(?:\.\d+)?)", entry)
        if not match:
            continue
        for name in _MODEL_FILES:
            file = os.path.join(path, entry, name)
            if os.path.isfile(file):
                found.append((float(match.group(1)), _load_one(file)))
                break
    if not found:
        raise ValueError(f"params: {path!r} holds no {' or '.join(_MODEL_FILES)} and no n<N>/ folders with one")
    configs = {m.config for _, m in found}
    if len(configs) != 1:
        raise ValueError(f"params: the models under {path!r} have different configs: {sorted(map(str, configs))}")
    return sorted(found, key=lambda t: t[0])


def _digest(models) -> str:
    h = hashlib.sha256()
    for n, model in models:
        h.update(json.dumps([n, model.config.to_dict()], sort_keys=True).encode())
        for leaf in _state_leaves(model):
            a = np.ascontiguousarray(leaf, np.float32)
            h.update(str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:16]


def _state_leaves(model):
    from flax import nnx

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(nnx.state(model))]


def make(params=None, method: str = "cache") -> Model:
    """The model ``gpt2:params=...`` (module docstring); ``method`` the rollout kernel (``cache`` | ``buffer``)."""
    from ttscale import gpt2

    if params is None:
        raise ValueError("model gpt2 needs params=DIR (a trained GPT-2: a model file, a training folder or a folder of n<N>/)")
    if method not in gpt2.COT_METHODS:
        raise ValueError(f"method must be one of {gpt2.COT_METHODS}, got {method!r}")
    loaded = load(params)
    config = loaded[0][1].config
    stacked = [np.stack(leaves) for leaves in zip(*(_state_leaves(m) for _, m in loaded))]  # [models, ...]
    model_ns = np.asarray([np.nan if n is None else n for n, _ in loaded], np.float64)
    single = len(loaded) == 1 and loaded[0][0] is None

    def init(train, n):
        dtype = train.dtype
        if single:
            return tuple(jnp.asarray(x[0], dtype) for x in stacked)
        hit = jnp.asarray(model_ns, dtype) == n
        idx = jnp.argmax(hit)
        found = jnp.any(hit)
        return tuple(jnp.where(found, jnp.asarray(x, dtype)[idx], jnp.nan) for x in stacked)

    options = {"params": f"sha256:{_digest(loaded)}"}
    if method != "cache":
        options["method"] = method
    return Model(f"gpt2:{format_options(options)}", init, errors_function(config, method), "prompts", None, None,
                 finite_m=True, groups=False)


@functools.lru_cache(maxsize=32)
def errors_function(config, method: str = "cache"):
    """``errors(params, prompts, k_max) -> [b, k_max + 1]`` for every network of ``config`` (the weights are
    the traced ``params``), one function per config: the sweep's compiled programs are shared by all of them."""
    from flax import nnx

    from ttscale import gpt2

    graphdef, state = nnx.split(nnx.eval_shape(lambda: gpt2.GPT2(config, rngs=nnx.Rngs(0))))
    treedef = jax.tree_util.tree_structure(state)

    def errors(params, prompts, k_max: int):
        if prompts.d != config.d:
            raise ValueError(f"model gpt2: the prompts have d={prompts.d} but the network has d={config.d}")
        need = gpt2.context_length(config.format, prompts.length) + max(k_max, 1)
        if need > config.max_len:
            raise ValueError(f"model gpt2: prompts of length m={prompts.length} with k_max={k_max} need {need} "
                             f"positions ({config.format} format) but the network's max_len={config.max_len}")
        dtype = prompts.X.dtype
        net = nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, [p.astype(dtype) for p in params]))
        est = gpt2.rollout(net, gpt2.context_tokens(prompts, config.format), k_max, method)
        return squared_errors_of(est, prompts.w)

    return errors
