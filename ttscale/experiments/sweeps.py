"""The sweeps the presets run, through the project's one engine :func:`ttscale.sweep.run_sweep`, and the spectra they use."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import xarray as xr

from ttscale import spectra

INF = math.inf


def _covariance_list(name: str, covs) -> list:
    if isinstance(covs, spectra.Covariance) or isinstance(covs, (str, bytes)) or not isinstance(covs, (list, tuple)):
        raise TypeError(f"{name} must be a non-empty list of ttscale.Covariance, got {type(covs).__name__}")
    if not covs:
        raise ValueError(f"{name} must not be empty")
    for i, c in enumerate(covs):
        if not isinstance(c, spectra.Covariance):
            raise TypeError(f"{name}[{i}] must be a ttscale.Covariance, got {type(c).__name__}")
    return list(covs)


def sweep(train, test, ns, ms, k_max, prompts, seed=0, chunk=4096, alphas=None, params=None, progress=False, desc="sweep") -> xr.Dataset:
    """One sweep of the preset grid through the project's engine :func:`ttscale.sweep.run_sweep`.

    ``train``: list of ``S`` training covariances ``Λ_s``; ``test``: ``"aligned"`` (``Σ_s = Λ_s``),
    ``"identity"`` or a list of ``S`` test covariances; ``ns [N]``; ``ms [M]`` (whole numbers or
    ``inf``); ``k = 0..k_max``; ``prompts`` per cell, ``chunk`` prompts per compiled call.
    The model is the optimum ``P = Γ(Λ_s, n)⁻¹`` run as pseudo-Newton, or, with ``params`` (an
    :class:`~ttscale.lsa.LSAParams` of ``[S, N, D, D]`` arrays), the literal LSA with those
    trained parameters (finite ``ms`` only). Prompts are common random numbers across spectra
    and ``n`` (``SweepSpec.common_random_numbers``), so differences between cells are smooth.

    Returns the engine's Dataset (dims ``spectrum, n, m, k``; ``mean, stderr, median`` and the
    closed forms ``limit_error, one_step_error, scaling_law_error, overthinking_term, best_k,
    turns_up, spectral_radius``), with the ``alpha`` coordinate set from ``alphas`` if given.
    """
    from ttscale.sweep import SweepSpec, run_sweep

    train = _covariance_list("train", train)
    if isinstance(test, str):
        if test not in ("aligned", "identity"):
            raise ValueError(f"test must be 'aligned', 'identity' or a list of Covariance, got {test!r}")
    else:
        test = _covariance_list("test", test)
    if alphas is not None and len(alphas) != len(train):
        raise ValueError(f"alphas must have one entry per training spectrum ({len(train)}), got {len(alphas)}")
    spec = SweepSpec(
        d=train[0].d, spectra=tuple(train), test=test if isinstance(test, str) else tuple(test),
        ns=tuple(ns), ms=tuple(ms), k_max=k_max, prompts=prompts, chunk=chunk, seed=seed,
        model="pseudo_newton" if params is None else "lsa", params=params, common_random_numbers=True,
    )
    ds = run_sweep(spec, out=None, progress=progress)
    if alphas is not None:
        ds = ds.assign_coords(alpha=("spectrum", np.asarray(alphas, float)))
    ds.attrs["prompts"] = spec.prompts
    ds.attrs["engine"] = "ttscale.sweep.run_sweep"
    ds.attrs["description"] = desc
    return ds


def tilted(d: int, alpha: float = 1.0, scale: Optional[float] = None) -> spectra.Covariance:
    """:func:`ttscale.spectra.power_law`: ``λ_i ∝ i^{-α}`` with ``tr = d`` (``scale=None``) or ``λ_i = scale · i^{-α}``
    (the trace ``scale · Σ_j j^{-α}``, read off ``λ_1 = 1 / Σ_j j^{-α}`` of the unit-trace law) → ``Covariance [d]``."""
    if scale is None:
        return spectra.power_law(d, alpha)
    return spectra.power_law(d, alpha, trace=scale / float(spectra.power_law(d, alpha, trace=1.0).eigenvalues[0]))


_CELL = ("spectrum", "n", "m", "k")
#: The engine's Dataset variables the sweep presets read, with their dims (the core of their schemas).
SWEEP_VARIABLES = {
    "mean": _CELL, "stderr": _CELL, "median": _CELL,
    "limit_error": ("spectrum", "n", "k"), "one_step_error": ("spectrum", "n", "m"),
    "scaling_law_error": ("spectrum", "n", "k"), "overthinking_term": ("spectrum", "n", "k"),
    "best_k": ("spectrum", "n"), "turns_up": ("spectrum", "n"), "spectral_radius": ("spectrum", "n"),
}
