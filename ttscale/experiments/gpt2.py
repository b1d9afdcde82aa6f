"""Preset ``gpt2``: a small GPT-2 trained on the LSA's prompts — does k still compensate n, does it overthink?

The data come from :func:`ttscale.gpt2.gpt2_experiment` and the figure from :func:`ttscale.gpt2.plot_gpt2`
(imported only when the preset runs; without Flax the preset is SKIPPED). Claims: k compensates n
(:func:`~ttscale.experiments.claims.k_compensates_n` between the smallest and largest n of the aligned
scenario), overthinking in the tilted scenario, and the in-distribution accuracy against the optimal LSA.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from ttscale.experiments.claims import (FAILS, HOLDS, PARTLY, Claim, crossing_k, fmt, k_compensates_n,
                                        rises_after_argmin, verdict_from_fraction)
from ttscale.experiments.registry import Preset, Schema, register

SCHEMA = Schema(
    version=1,
    variables={name: ("scenario", "n", "k") for name in ("gpt2_mean", "gpt2_stderr", "lsa_mean")},
    coords=("scenario", "n", "k"),
)


@dataclasses.dataclass(frozen=True)
class GPT2PresetConfig:
    """GPT-2: ``size`` names an entry of ``ttscale.gpt2.EXPERIMENT_SIZES``; ``seed`` keys training and evaluation."""

    size: str = "tiny"
    seed: int = 0


def compute_gpt2(config: GPT2PresetConfig, progress=False) -> xr.Dataset:
    """:func:`ttscale.gpt2.gpt2_experiment` at ``config.size`` (dims ``scenario, n, k``)."""
    from ttscale import gpt2

    return gpt2.gpt2_experiment(config.size, out=None, seed=config.seed, progress=progress)


def plot_gpt2(ds: xr.Dataset):
    """:func:`ttscale.gpt2.plot_gpt2`."""
    from ttscale import gpt2

    return gpt2.plot_gpt2(ds)


def claims_gpt2(ds: xr.Dataset) -> list[Claim]:
    """k compensates n (aligned), overthinking (tilted), GPT-2 ≈ optimal LSA at k = 1 in distribution."""
    out = []
    ns = list(ds.n.values)
    kmax = int(ds.k.max())
    if "aligned" in ds.scenario.values and len(ns) >= 2:
        cur = ds.sel(scenario="aligned")
        short, long_ = ns[0], ns[-1]
        k_lsa = crossing_k(cur["lsa_mean"].sel(n=short).values, float(cur["lsa_mean"].sel(n=long_, k=1)))
        claim, _ = k_compensates_n(cur, short, long_, mean="gpt2_mean", stderr="gpt2_stderr", name="gpt2_k_compensates_n",
                                   subject="GPT-2: ", extra=f"optimal LSA on the same prompts: k = {fmt(k_lsa)}")
        out.append(claim)
    if "tilted" in ds.scenario.values:
        rows, n_ok = [], 0
        for n in ns:
            cur = ds.sel(scenario="tilted", n=n)
            k_star, lo, hi, rises = rises_after_argmin(cur["gpt2_mean"].values, cur["gpt2_stderr"].values)
            n_ok += rises
            rows.append(f"n={n:g}: argmin k={k_star} [{lo},{hi}], err({kmax})={fmt(float(cur['gpt2_mean'].sel(k=kmax)))}")
        out.append(Claim(
            "gpt2_overthinking", "GPT-2 overthinking: tilted training, Σ = I, the error rises for large k.",
            "; ".join(rows), verdict_from_fraction(n_ok / len(ns), 1.0, 1e-9), value=n_ok / len(ns)))
    if "k1_ratio" in ds:
        r = ds["k1_ratio"].values
        out.append(Claim(
            "gpt2_in_distribution", "Sanity: the trained GPT-2 is about as accurate as the optimal LSA at k = 1 in distribution.",
            "GPT-2/LSA mean error at k = 1: " + ", ".join(fmt(float(v)) for v in r.ravel()),
            HOLDS if np.all(r <= 1.25) else (PARTLY if np.any(r <= 1.25) else FAILS), value=float(np.nanmax(r)),
            evidence="HOLDS if every ratio ≤ 1.25; the quick size trains tiny models for seconds, so expect FAILS there"))
    return out


register(Preset(
    "gpt2", "GPT-2: k compensates n and overthinking", "gpt2",
    {"quick": GPT2PresetConfig("tiny"), "full": GPT2PresetConfig("paper")},
    compute_gpt2, plot_gpt2, claims_gpt2, module="ttscale.gpt2", quick_by_default=False, schema=SCHEMA,
))
