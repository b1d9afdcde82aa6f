"""Models under test-time CoT: one protocol (:class:`Model`), a registry of named factories.

    import ttscale as tts
    model = tts.models.get("gd:eta=0.5")            # or a Model defined anywhere
    ds = tts.run_sweep(tts.SweepSpec(d=10, ns=(20,), ms=(float("inf"),), k_max=6, model=model))

Registered (``name:key=value,...``):

* ``pseudo_newton`` — ``ŵ ← ŵ − P (S ŵ − b)``, ``P = Γ(Λ, n)⁻¹`` (or ``P=FILE.npy``);
* ``lsa`` — the literal one-layer LSA with feedback: the Theorem 3.1 optimum (``c=…``) or trained
  parameters (``params=FILE.npz``);
* ``gd`` — gradient descent ``ŵ ← ŵ − η (S ŵ − b)`` (``eta=…``).

A new model is one file with a ``make(**options) -> Model`` and one line in :data:`REGISTRY`; a
model defined outside the package needs neither (pass the :class:`Model` itself).
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from ttscale.models import adaptive, gd, lsa, pseudo_newton
from ttscale.models.base import Model, check_model, format_options, from_step, rollout, squared_errors_of

#: name → factory ``make(**options) -> Model``.
REGISTRY: dict[str, Callable[..., Model]] = {
    "pseudo_newton": pseudo_newton.make,
    "lsa": lsa.make,
    "gd": gd.make,
    "adaptive": adaptive.make,
    "gpt2": lambda **options: __import__("ttscale.models.gpt2", fromlist=["make"]).make(**options),  # Flax only when asked for
}

__all__ = ["Model", "REGISTRY", "get", "parse", "from_step", "rollout", "squared_errors_of", "check_model",
           "format_options", "register"]


def register(name: str, factory: Callable[..., Model]) -> None:
    """Add a factory to :data:`REGISTRY` (so ``--model name:...`` finds it)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    REGISTRY[name] = factory


_FILE_OPTIONS = ("params", "P")  # options naming files: read on every parse


def _value(key: str, text: str):
    if key in _FILE_OPTIONS:
        if key == "P":
            try:
                return np.load(text)
            except (OSError, ValueError) as exc:
                raise ValueError(f"model option P: cannot read {text!r} as a .npy array ({exc})") from None
        return text
    try:
        return float(text)
    except ValueError:
        return text


def parse(text: str) -> Model:
    """``"gd:eta=0.5"`` → ``REGISTRY["gd"](eta=0.5)``; ``"lsa:params=FILE.npz"``, ``"pseudo_newton"``, ….

    The same text gives the same :class:`Model` object (so compiled programs keyed by its functions are
    reused), except with file options, which are read again. Raises ``ValueError`` naming the model and
    listing what is registered.
    """
    if isinstance(text, str) and not any(f"{opt}=" in text for opt in _FILE_OPTIONS):
        return _parse_cached(text.strip(), tuple(sorted(REGISTRY.items(), key=lambda kv: kv[0])))
    return _parse(text)


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str, registry: tuple) -> Model:
    del registry  # part of the cache key: a re-registered name is parsed again
    return _parse(text)


def _parse(text: str) -> Model:
    if not isinstance(text, str):
        raise TypeError(f"model must be a name such as 'gd:eta=0.5', got {type(text).__name__}")
    name, _, rest = text.strip().partition(":")
    if name not in REGISTRY:
        raise ValueError(f"model: unknown model {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    options = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"model {name}: options are key=value, got {item!r}")
        options[key.strip()] = _value(key.strip(), value.strip())
    try:
        return check_model("model", REGISTRY[name](**options))
    except TypeError as exc:
        raise ValueError(f"model {name}: {exc}") from None


def get(model) -> Model:
    """A :class:`Model` from itself or a registered name (:func:`parse`)."""
    if isinstance(model, Model):
        return check_model("model", model)
    return parse(model)
