"""The preset registry: a :class:`Preset` is one registered reproduction (configs, compute, claims, figure).

Each preset lives in its own module of this package and ends with one ``register(Preset(...))`` line;
:data:`REGISTRY` lists them in the order they were registered (the order of the report).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping, Optional

SIZES = ("quick", "full")


@dataclasses.dataclass(frozen=True)
class Schema:
    """What a preset's Dataset must hold for its claims and figure: ``variables`` (name → dims) and ``coords``
    (names), with a ``version`` to bump when the *meaning* of the data changes without its shape (e.g. new
    random numbers). It is part of the cache key (:mod:`ttscale.experiments.cache`): a cached file whose schema
    differs, or that lacks a declared variable, is recomputed."""

    version: int
    variables: Mapping[str, tuple]
    coords: tuple = ()

    def to_dict(self) -> dict:
        """JSON-ready form (the part of the cache key)."""
        return {"version": int(self.version), "variables": {k: list(v) for k, v in sorted(self.variables.items())},
                "coords": sorted(self.coords)}

    def problems(self, ds) -> list[str]:
        """What ``ds`` lacks of this schema (missing variables or coords, variables with other dims); empty if none."""
        out = []
        for name, dims in self.variables.items():
            if name not in ds.data_vars:
                out.append(f"no variable {name!r}")
            elif set(ds[name].dims) != set(dims):
                out.append(f"{name!r} has dims {tuple(ds[name].dims)}, declared {tuple(dims)}")
        out += [f"no coordinate {c!r}" for c in self.coords if c not in ds.coords]
        return out


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named reproduction: configs per size, ``compute(config, progress) → Dataset``, ``plot(ds) → Figure``,
    ``claims(ds) → [Claim]`` and the ``schema`` of its Dataset.

    ``module`` (optional) names a module to import lazily before running (a missing one makes the preset
    ``SKIPPED``); the callables may then be attribute names (strings) of that module. ``figure`` is the
    file stem of the figure. ``write_tables(ds, directory)`` (optional) writes preset-specific tables
    (through :mod:`ttscale.store`) beside the report. ``quick_by_default=False`` leaves the preset out of a plain
    ``reproduce --quick``.
    """

    name: str
    title: str
    figure: str
    configs: dict
    compute: Any
    plot: Any
    claims: Any
    module: Optional[str] = None
    quick_by_default: bool = True
    schema: Optional[Schema] = None
    write_tables: Any = None

    def config(self, size: str = "quick"):
        """The frozen config of ``size`` (``"quick"`` or ``"full"``)."""
        if size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {size!r}")
        return self.configs[size]

    def resolve(self, attr: str) -> Callable:
        """Return the callable for ``compute``/``plot``/``claims``/``write_tables`` (imports ``module`` if needed)."""
        value = getattr(self, attr)
        if isinstance(value, str):
            mod = importlib.import_module(self.module or "ttscale.experiments")
            return getattr(mod, value)
        return value


REGISTRY: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    """Add (or replace) a preset in :data:`REGISTRY` and return it."""
    if not isinstance(preset, Preset):
        raise TypeError(f"preset must be a ttscale.experiments.Preset, got {type(preset).__name__}")
    REGISTRY[preset.name] = preset
    return preset


def plots_function(name: str) -> Callable:
    """A plot hook calling ``ttscale.plots.<name>(ds)`` (matplotlib imported only when a figure is drawn)."""

    def plot(ds):
        from ttscale import plots

        return getattr(plots, name)(ds)

    plot.__name__ = name
    return plot
