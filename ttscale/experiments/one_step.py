"""Preset ``theorem33`` (Figure 3): the exact one-step error vs its upper bound vs Monte Carlo, over Hard(Λ) and m.

The preset keeps its registered name ``theorem33`` (CLI compatibility); this module is named for the math.
Claims: the exact finite-m one-step error ``d − 2 tr(PΣ) + tr(P E[S_m²] Pᵀ)`` (the engine's ``one_step_error``)
matches Monte Carlo (:func:`~ttscale.experiments.claims.matches_closed_form`); it stays below
``(d/n²)(1 + Hard)² + (d/m)(1 + Hard)`` (:func:`ttscale.theory.one_step_error_bound`,
:func:`~ttscale.experiments.claims.upper_bound_holds`); it grows with Hard.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from ttscale import theory
from ttscale.experiments.claims import Claim, matches_closed_form, nondecreasing_fraction, upper_bound_holds, verdict_from_fraction
from ttscale.experiments.registry import Preset, Schema, plots_function, register
from ttscale.experiments.sweeps import INF, SWEEP_VARIABLES, sweep, tilted

SCHEMA = Schema(version=1, variables={**SWEEP_VARIABLES, "one_step_error_bound": ("spectrum", "n", "m")},
                coords=("spectrum", "hardness", "alpha", "n", "m", "k"))


@dataclasses.dataclass(frozen=True)
class OneStepConfig:
    """Figure 3: exact one-step error vs the Theorem 3.3 bound vs Monte Carlo over Hard(Λ) and m."""

    d: int = 10
    alphas: tuple = (0.0, 0.5, 1.0, 1.5, 2.0)
    ns: tuple = (10, 40)
    ms: tuple = (20.0, 50.0, 100.0, 200.0, INF)
    prompts: int = 2048
    seed: int = 2


#: The config's former name (the preset is still registered as ``theorem33``).
Theorem33Config = OneStepConfig


def compute_one_step(config: OneStepConfig, progress=False) -> xr.Dataset:
    """An aligned sweep with ``k ≤ 1`` plus ``one_step_error_bound [spectrum, n, m]`` (:func:`ttscale.theory.one_step_error_bound`)."""
    covs = [tilted(config.d, a) for a in config.alphas]
    ds = sweep(covs, "aligned", config.ns, config.ms, 1, config.prompts, config.seed, chunk=2048,
               alphas=config.alphas, progress=progress, desc="theorem 3.3")
    bound = np.array([[[float(theory.one_step_error_bound(c, n, m)) for m in config.ms] for n in config.ns] for c in covs])
    ds["one_step_error_bound"] = (("spectrum", "n", "m"), bound)
    return ds


def claims_one_step(ds: xr.Dataset) -> list[Claim]:
    """Exact one-step error vs Monte Carlo, the Theorem 3.3 bound, monotonicity in Hard."""
    finite_m = np.isfinite(ds.m.values)
    fin = ds.isel(m=np.nonzero(finite_m)[0])
    out = [matches_closed_form(
        "exact_one_step", "The exact finite-m one-step error d − 2 tr(PΣ) + tr(P E[S_m²] Pᵀ) matches Monte Carlo.",
        fin["mean"].sel(k=1), fin["one_step_error"], fin["stderr"].sel(k=1), cells="(Hard, n, m) cells")]
    out.append(upper_bound_holds(
        "thm33_bound_holds", "Theorem 3.3: the one-step error is at most (d/n²)(1 + Hard)² + (d/m)(1 + Hard).",
        ds["one_step_error"].values, ds["one_step_error_bound"].values, evidence="the bound is valid but loose; its looseness grows with Hard"))
    order = np.argsort(ds.hardness.values)
    e = ds["one_step_error"].isel(spectrum=order).values
    ok, pairs = nondecreasing_fraction(e, axis=0, tol=1e-6)
    frac_mono = ok / max(pairs, 1)
    out.append(Claim(
        "harder_larger_one_step",
        "Harder tasks have larger one-step error (the bound grows with Hard).",
        f"exact one-step error non-decreasing in Hard in {100 * frac_mono:.0f} % of adjacent (n, m) pairs",
        verdict_from_fraction(frac_mono, 1.0, 0.75), value=frac_mono,
    ))
    return out


#: The former names of the compute and claims functions.
compute_theorem33, claims_theorem33 = compute_one_step, claims_one_step

register(Preset(
    "theorem33", "Theorem 3.3: one-step error, bound and Monte Carlo", "theorem33",
    {"quick": OneStepConfig(prompts=2048), "full": OneStepConfig(prompts=262144, ms=(10.0, 20.0, 50.0, 100.0, 200.0, 500.0, INF))},
    compute_one_step, plots_function("plot_theorem33"), claims_one_step, schema=SCHEMA,
))
