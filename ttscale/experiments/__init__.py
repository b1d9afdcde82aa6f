"""Named presets, one per paper figure: config → Dataset → figure → claim check.

A **preset** (:class:`Preset`) is one registered reproduction. Each lives in its own module of this
package — :mod:`~ttscale.experiments.test_time_scaling`, :mod:`~ttscale.experiments.scaling_law`,
:mod:`~ttscale.experiments.one_step` (registered as ``theorem33``), :mod:`~ttscale.experiments.overthinking`,
:mod:`~ttscale.experiments.best_k`, :mod:`~ttscale.experiments.finite_m`,
:mod:`~ttscale.experiments.adaptive`, :mod:`~ttscale.experiments.gd_vs_newton`, :mod:`~ttscale.experiments.task_selection`, :mod:`~ttscale.experiments.gpt2`
— holding its configs (``quick``: minutes on a laptop CPU; ``full``: publication size), a
``compute(config, progress)`` returning an :class:`xarray.Dataset`, the :class:`Schema` of that Dataset, a
``plot(ds)`` hook and ``claims(ds)`` returning :class:`Claim` rows computed **only from the Dataset**::

    from ttscale import experiments as ex
    result = ex.run_preset("overthinking", size="quick", out="runs/")
    for claim in result.claims:
        print(claim.verdict, claim.statement, claim.measurement)

Shared pieces: :mod:`~ttscale.experiments.claims` (verdict rules and claim builders such as
:func:`k_compensates_n`), :mod:`~ttscale.experiments.sweeps` (the sweep through :func:`ttscale.sweep.run_sweep`),
:mod:`~ttscale.experiments.cache` (results keyed by preset, config, schema and package version),
:mod:`~ttscale.experiments.runner` (:func:`run_preset`, :func:`reproduce`). Adding a claim with a closed form
costs the preset's file (compute the column, declare it in ``SCHEMA``, claim it) plus the formula in
:mod:`ttscale.theory`; the changed schema retires the old cache by itself.
"""

from __future__ import annotations

from ttscale import store as _store
from ttscale.experiments.cache import cache_key, config_dict
from ttscale.experiments.claims import (FAILS, HOLDS, INF, PARTLY, SKIPPED, Claim, argmin_set, crossing_k, fmt,
                                        k_compensates_n, matches_closed_form, matching_k_cells, matching_k_interval,
                                        nondecreasing_fraction, rises_after_argmin, upper_bound_holds,
                                        verdict_from_fraction, within_z)
from ttscale.experiments.registry import REGISTRY, SIZES, Preset, Schema, register
from ttscale.experiments.runner import PresetResult, reproduce, run_preset
from ttscale.experiments.sweeps import sweep, tilted

# The presets, in report order (each module ends with its register(...) line).
from ttscale.experiments.test_time_scaling import TestTimeScalingConfig, claims_test_time_scaling, compute_test_time_scaling  # noqa: E402
from ttscale.experiments.scaling_law import ScalingLawConfig, claims_scaling_law, compute_scaling_law  # noqa: E402
from ttscale.experiments.one_step import (OneStepConfig, Theorem33Config, claims_one_step, claims_theorem33,  # noqa: E402
                                          compute_one_step, compute_theorem33)
from ttscale.experiments.overthinking import (OverthinkingConfig, claims_overthinking, compute_overthinking,  # noqa: E402
                                              spectrum_label)
from ttscale.experiments.best_k import BestKConfig, claims_best_k, compute_best_k  # noqa: E402
from ttscale.experiments.finite_m import FiniteMConfig, claims_finite_m, compute_finite_m  # noqa: E402
from ttscale.experiments.adaptive import AdaptiveConfig, claims_adaptive, compute_adaptive  # noqa: E402
from ttscale.experiments.gd_vs_newton import GDvsNewtonConfig, claims_gd_vs_newton, compute_gd_vs_newton  # noqa: E402
from ttscale.experiments.task_selection import SelectionConfig, claims_task_selection, compute_task_selection  # noqa: E402
from ttscale.experiments.gpt2 import GPT2PresetConfig, claims_gpt2, compute_gpt2  # noqa: E402

#: :func:`ttscale.store.load_dataset`: read a preset/sweep ``.nc`` (JSON attributes decoded).
load_dataset = _store.load_dataset
_save_nc = _store.save_dataset  # the former private name (tests, notebooks)
_fmt = fmt


def config_hash(name: str, config) -> str:
    """The cache key of ``config`` for the registered preset ``name`` (:func:`ttscale.experiments.cache.cache_key`
    with the preset's schema and the package version)."""
    schema = REGISTRY[name].schema if name in REGISTRY else None
    return cache_key(name, config, schema)


__all__ = [
    "Claim", "Preset", "PresetResult", "Schema", "REGISTRY", "SIZES", "register", "run_preset", "reproduce",
    "load_dataset", "sweep", "tilted", "crossing_k", "matching_k_interval", "argmin_set", "config_hash", "config_dict",
    "verdict_from_fraction", "k_compensates_n", "matching_k_cells", "matches_closed_form", "upper_bound_holds",
    "within_z", "rises_after_argmin", "nondecreasing_fraction",
    "TestTimeScalingConfig", "ScalingLawConfig", "OneStepConfig", "Theorem33Config", "OverthinkingConfig",
    "BestKConfig", "FiniteMConfig", "AdaptiveConfig", "GDvsNewtonConfig", "SelectionConfig", "GPT2PresetConfig",
    "HOLDS", "FAILS", "PARTLY", "SKIPPED",
]
