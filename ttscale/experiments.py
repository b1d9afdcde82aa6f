"""Named presets, one per paper figure: config → Dataset → figure → claim check.

Each :class:`Preset` holds two frozen configs (``quick``: minutes on a laptop CPU; ``full``:
publication size, GPU-friendly), a ``compute(config, progress)`` returning an
:class:`xarray.Dataset`, a ``plot(ds)`` returning a matplotlib Figure (see
:mod:`ttscale.plots`) and a ``claims(ds)`` returning :class:`Claim` rows computed **only
from the Dataset** (never typed in)::

    from ttscale import experiments as ex
    result = ex.run_preset("overthinking", size="quick", out="runs/")
    for claim in result.claims:
        print(claim.verdict, claim.statement, claim.measurement)

Sweep datasets come from the project's one engine, :func:`ttscale.sweep.run_sweep` (through
:func:`sweep`, with common random numbers across spectra and ``n``): dims ``spectrum, n, m,
k``; ``mean, stderr, median`` over prompts; closed forms ``limit_error, one_step_error,
cor35_bound, overthinking_term, best_k, turns_up, spectral_radius``. ``m = inf`` is
simulated with ``S_m = Σ`` (only ``w`` is drawn), so its per-prompt median is real.

Presets that live in other modules (task selection, GPT-2) are registered as lazy entries:
their module is imported only when the preset runs, and a missing module skips cleanly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
import xarray as xr

from ttscale import lsa, spectra, store, theory

CACHE_VERSION = 4  # 4: the sweep engine draws with the counter-based sampler (new random numbers)
SIZES = ("quick", "full")
HOLDS, FAILS, PARTLY, SKIPPED = "HOLDS", "DOES NOT HOLD", "PARTLY", "SKIPPED"
INF = math.inf


# ============================================================================ claims
@dataclasses.dataclass(frozen=True)
class Claim:
    """One row of the claims report.

    ``statement``: what the paper (or docs/science.md) says; ``measurement``: what our data shows,
    with its uncertainty, as text; ``value``/``uncertainty``: the headline number;
    ``verdict``: ``HOLDS`` / ``DOES NOT HOLD`` / ``PARTLY`` / ``SKIPPED``; ``evidence``:
    the numbers the verdict rests on.
    """

    name: str
    statement: str
    measurement: str
    verdict: str
    value: float = math.nan
    uncertainty: float = math.nan
    evidence: str = ""
    preset: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def verdict_from_fraction(fraction: float, holds_at: float = 1.0, partly_at: float = 0.5) -> str:
    """``HOLDS`` if ``fraction ≥ holds_at``, ``PARTLY`` if ``≥ partly_at``, else ``DOES NOT HOLD``."""
    if fraction >= holds_at - 1e-12:
        return HOLDS
    if fraction >= partly_at:
        return PARTLY
    return FAILS


# ============================================================================ measurement helpers
def crossing_k(curve, target: float) -> float:
    """First (fractional) ``k`` at which ``curve[k]`` falls to ``target``, interpolating ``log error`` linearly.

    ``curve [K+1]`` indexed by ``k = 0..K``; returns ``nan`` if it never reaches ``target``.
    """
    curve = np.asarray(curve, dtype=float)
    if not np.isfinite(target) or target <= 0:
        return math.nan
    below = np.nonzero(np.isfinite(curve) & (curve <= target))[0]
    if below.size == 0:
        return math.nan
    j = int(below[0])
    if j == 0:
        return 0.0
    a, b = curve[j - 1], curve[j]
    if not (np.isfinite(a) and a > 0 and b > 0) or a == b:
        return float(j)
    t = (math.log(a) - math.log(target)) / (math.log(a) - math.log(b))
    return float(j - 1 + min(max(t, 0.0), 1.0))


def matching_k_interval(curve, stderr, target, target_stderr, z: float = 2.0) -> tuple[float, float, float]:
    """``crossing_k`` at the means and its ``±z`` s.e. interval (curve and target moved in opposite directions)."""
    curve = np.asarray(curve, float)
    stderr = np.nan_to_num(np.asarray(stderr, float), nan=0.0, posinf=0.0)
    k = crossing_k(curve, target)
    lo = crossing_k(curve - z * stderr, target + z * target_stderr)
    hi = crossing_k(curve + z * stderr, max(target - z * target_stderr, 1e-300))
    return k, lo, hi


def argmin_set(mean, stderr, z: float = 2.0, k_min: int = 1) -> tuple[int, int, int]:
    """Argmin of ``mean[k_min:]`` (as a ``k``) and the range of ``k`` whose mean is within ``z`` s.e. of the minimum."""
    mean = np.asarray(mean, np.float64)[k_min:]
    se = np.nan_to_num(np.asarray(stderr, np.float64)[k_min:], nan=np.inf)
    finite = np.where(np.isfinite(mean), mean, np.inf)
    j = int(np.argmin(finite))
    tol = z * np.sqrt(se**2 + se[j] ** 2)
    near = np.nonzero(finite <= finite[j] + np.where(np.isfinite(tol), tol, 0.0))[0]
    return j + k_min, int(near.min()) + k_min, int(near.max()) + k_min


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}g}"


# ============================================================================ sweeps
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
    closed forms ``limit_error, one_step_error, cor35_bound, overthinking_term, best_k,
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
        d=train[0].d, family="explicit", covariances=tuple(train), test=test if isinstance(test, str) else tuple(test),
        ns=tuple(ns), ms=tuple(ms), k_max=k_max, prompts=prompts, chunk=chunk, seed=seed,
        model="pseudo_newton" if params is None else "trained", params=params, common_random_numbers=True,
    )
    ds = run_sweep(spec, out=None, progress=progress)
    if alphas is not None:
        ds = ds.assign_coords(alpha=("spectrum", np.asarray(alphas, float)))
    ds.attrs["prompts"] = spec.prompts
    ds.attrs["engine"] = "ttscale.sweep.run_sweep"
    ds.attrs["description"] = desc
    return ds


# ============================================================================ presets: configs
def _tilted(d: int, alpha: float = 1.0, scale: Optional[float] = None) -> spectra.Covariance:
    """:func:`ttscale.spectra.power_law`: ``λ_i ∝ i^{-α}`` with ``tr = d`` (``scale=None``) or ``λ_i = scale · i^{-α}``
    (the trace ``scale · Σ_j j^{-α}``, read off ``λ_1 = 1 / Σ_j j^{-α}`` of the unit-trace law)."""
    if scale is None:
        return spectra.power_law(d, alpha)
    return spectra.power_law(d, alpha, trace=scale / float(spectra.power_law(d, alpha, trace=1.0).eigenvalues[0]))


@dataclasses.dataclass(frozen=True)
class TestTimeScalingConfig:
    """Figure 1: error vs k, Λ = Σ ∈ {I, λ_i ∝ i^{-α} (tr = d)}, optimum and trained LSA."""

    d: int = 10
    alphas: tuple = (0.0, 1.0)
    ns: tuple = (10, 20, 30)
    ms: tuple = (200.0, INF)
    k_max: int = 20
    prompts: int = 1024
    seed: int = 0
    train: bool = True
    train_steps: int = 2000
    train_batch: int = 256
    paper_matching_k: float = 20.0  # the summary's "n = 10 at k = 20 matches n = 30 at k = 1"


@dataclasses.dataclass(frozen=True)
class ScalingLawConfig:
    """Figure 2: iso-error contours over (n, k) for several Hard(Λ), Σ = Λ."""

    d: int = 10
    alphas: tuple = (0.0, 0.5, 1.0, 1.5)
    ns: tuple = (5, 10, 15, 20, 30, 40, 60)
    ms: tuple = (200.0, INF)
    k_max: int = 20
    prompts: int = 512
    seed: int = 1
    levels: tuple = (1.0, 0.1, 0.01)


@dataclasses.dataclass(frozen=True)
class Theorem33Config:
    """Figure 3: exact one-step error vs the Theorem 3.3 bound vs Monte Carlo over Hard(Λ) and m."""

    d: int = 10
    alphas: tuple = (0.0, 0.5, 1.0, 1.5, 2.0)
    ns: tuple = (10, 40)
    ms: tuple = (20.0, 50.0, 100.0, 200.0, INF)
    prompts: int = 2048
    seed: int = 2


@dataclasses.dataclass(frozen=True)
class OverthinkingConfig:
    """Figure 4: tilted training spectra, Σ = I: error falls then rises, larger n worse.

    ``spectra`` names training spectra: ``("power", α)`` is ``λ_i ∝ i^{-α}`` with ``tr = d``;
    ``("scaled", α, s)`` is ``λ_i = s · i^{-α}`` (docs/science.md §6's normalisation caveat). The claims
    are checked on the first spectrum. ``test_alpha`` tilts Σ (0 = identity, the paper's).
    """

    d: int = 10
    spectra: tuple = (("power", 1.0), ("scaled", 1.0, 1.0), ("scaled", 1.0, 2.0))
    test_alpha: float = 0.0
    ns: tuple = (10, 20, 30)
    ms: tuple = (40.0, 100.0, INF)
    k_max: int = 20
    prompts: int = 2048
    seed: int = 3


@dataclasses.dataclass(frozen=True)
class BestKConfig:
    """Figure 5: theory.best_k vs the measured argmin over mismatches ``λ_i = s/i`` (Σ = I)."""

    d: int = 10
    scales: tuple = (1.6, 1.8, 2.0, 2.2, 2.5, 2.8)
    ns: tuple = (10, 20, 30, 40)
    ms: tuple = (400.0, INF)
    k_max: int = 25
    prompts: int = 1024
    seed: int = 4


def _spectrum_from_spec(d, spec) -> spectra.Covariance:
    kind = spec[0]
    if kind == "power":
        return _tilted(d, float(spec[1]))
    if kind == "scaled":
        return _tilted(d, float(spec[1]), float(spec[2]))
    raise ValueError(f"unknown spectrum spec {spec!r}; use ('power', α) or ('scaled', α, s)")


def spectrum_label(spec) -> str:
    if spec[0] == "power":
        return f"λ_i ∝ i^-{spec[1]:g}, tr = d"
    return f"λ_i = {spec[2]:g}/i^{spec[1]:g}"


# ============================================================================ presets: compute
def _train_lsa(config: TestTimeScalingConfig, covs, progress=False):
    """Trained LSA parameters ``[S, N]`` (one vmapped :func:`ttscale.training.make_train_batched` call), or ``None`` and a note."""
    try:
        from ttscale import training
    except Exception as exc:  # noqa: BLE001 - engine not ready: skip the trained panel, say why
        return None, f"training engine unavailable ({type(exc).__name__}: {exc})"
    try:
        n_max = int(max(config.ns))
        cfg = training.TrainConfig(
            d=config.d, tasks=(training.Task(covs[0], n_max),), steps=config.train_steps,
            batch=config.train_batch, n_max=n_max,
        )
        tasks = training.stack_task_arrays([training.make_task_arrays([c], [float(n)]) for c in covs for n in config.ns])
        keys = jax.random.split(jax.random.key(config.seed + 100), len(covs) * len(config.ns))
        res = training.make_train_batched(cfg)(keys, tasks)
        S, N = len(covs), len(config.ns)
        params = jax.tree_util.tree_map(lambda a: a.reshape((S, N) + a.shape[1:]), res.params)
        return lsa.LSAParams(*params), f"trained: {config.train_steps} steps × {config.train_batch} prompts, {cfg.optimizer}, W frozen"
    except Exception as exc:  # noqa: BLE001 - report, don't crash the whole reproduction
        return None, f"training failed ({type(exc).__name__}: {exc})"


def compute_test_time_scaling(config: TestTimeScalingConfig, progress=False) -> xr.Dataset:
    covs = [_tilted(config.d, a) for a in config.alphas]
    kw = dict(ns=config.ns, ms=config.ms, k_max=config.k_max, prompts=config.prompts, seed=config.seed,
              alphas=config.alphas, progress=progress)
    opt = sweep(covs, "aligned", desc="optimum", **kw)
    models = [opt.expand_dims(model=["optimum"])]
    note = ""
    if config.train:
        params, note = _train_lsa(config, covs, progress)
        m_fin = tuple(m for m in config.ms if math.isfinite(m))
        if params is not None and m_fin:  # the literal LSA needs a finite prompt length: no m = inf column
            kw.update(prompts=max(256, config.prompts // 4), ms=m_fin)  # the literal LSA rollout is slower
            trained = sweep(covs, "aligned", params=params, desc="trained LSA", **kw)
            models.append(trained.expand_dims(model=["trained"]))
    ds = xr.concat(models, dim="model", data_vars="all", coords="minimal", compat="override", join="outer")
    ds.attrs.update(opt.attrs)
    ds.attrs["training_note"] = note or ""
    ds["matching_k_cor35"] = ("spectrum", np.array([float(theory.matching_k(c, 10, 30)) for c in covs]))
    return ds


def compute_scaling_law(config: ScalingLawConfig, progress=False) -> xr.Dataset:
    covs = [_tilted(config.d, a) for a in config.alphas]
    ds = sweep(covs, "aligned", config.ns, config.ms, config.k_max, config.prompts, config.seed,
               alphas=config.alphas, progress=progress, desc="scaling law")
    ds.attrs["levels"] = list(config.levels)
    return ds


def compute_theorem33(config: Theorem33Config, progress=False) -> xr.Dataset:
    covs = [_tilted(config.d, a) for a in config.alphas]
    ds = sweep(covs, "aligned", config.ns, config.ms, 1, config.prompts, config.seed, chunk=2048,
               alphas=config.alphas, progress=progress, desc="theorem 3.3")
    bound = np.array([[[float(theory.thm33_bound(c, n, m)) for m in config.ms] for n in config.ns] for c in covs])
    ds["thm33_bound"] = (("spectrum", "n", "m"), bound)
    return ds


def compute_overthinking(config: OverthinkingConfig, progress=False) -> xr.Dataset:
    covs = [_spectrum_from_spec(config.d, s) for s in config.spectra]
    test = _tilted(config.d, config.test_alpha) if config.test_alpha else spectra.identity(config.d)
    ds = sweep(covs, [test] * len(covs), config.ns, config.ms, config.k_max, config.prompts, config.seed,
               progress=progress, desc="overthinking")
    ds = ds.assign_coords(label=("spectrum", [spectrum_label(s) for s in config.spectra]))
    return ds


def compute_best_k(config: BestKConfig, progress=False) -> xr.Dataset:
    covs = [_tilted(config.d, 1.0, s) for s in config.scales]
    ds = sweep(covs, "identity", config.ns, config.ms, config.k_max, config.prompts, config.seed,
               progress=progress, desc="best k")
    return ds.assign_coords(scale=("spectrum", np.asarray(config.scales, float)))


# ============================================================================ presets: claims
def _sel(ds, **kw):
    return ds.sel({k: v for k, v in kw.items() if k in ds.dims or k in ds.coords})


def claims_test_time_scaling(ds: xr.Dataset) -> list[Claim]:
    out = []
    opt = ds.sel(model="optimum")
    spectra_idx = list(ds.spectrum.values)
    m_fin = [m for m in ds.m.values if np.isfinite(m)]
    rows, ok = [], 0
    meas = {}
    for s in spectra_idx:
        for m in ds.m.values:
            cur = opt.sel(spectrum=s, m=m)
            target = float(cur["mean"].sel(n=30, k=1))
            tse = float(cur["stderr"].sel(n=30, k=1))
            k, lo, hi = matching_k_interval(cur["mean"].sel(n=10).values, cur["stderr"].sel(n=10).values, target, tse)
            pred_exact = crossing_k(opt["limit_error"].sel(spectrum=s, n=10).values, float(opt["limit_error"].sel(spectrum=s, n=30, k=1)))
            meas[(s, m)] = (k, lo, hi, pred_exact)
            ok += np.isfinite(k)
            rows.append(f"Hard={float(ds.hardness.sel(spectrum=s)):.3g}, m={_fmt(float(m))}: k = {_fmt(k)} [{_fmt(lo)}, {_fmt(hi)}]")
    out.append(Claim(
        "k_compensates_n",
        "More test-time steps compensate a shorter training context: n = 10 reaches the error of n = 30 at k = 1 after finitely many CoT steps (Cor 3.5).",
        "; ".join(rows),
        verdict_from_fraction(ok / len(meas), 1.0, 0.5),
        evidence=f"crossing found in {ok}/{len(meas)} (spectrum, m) cells within k ≤ {int(ds.k.max())}",
    ))
    s_id = spectra_idx[0]
    m_ref = m_fin[0] if m_fin else float(ds.m.values[0])
    k, lo, hi, pred_exact = meas[(s_id, m_ref)]
    paper_k = float(ds.attrs.get("paper_matching_k", 20.0))
    inside = np.isfinite(lo) and np.isfinite(hi) and lo - 0.5 <= paper_k <= hi + 0.5
    cor = float(ds["matching_k_cor35"].sel(spectrum=s_id))
    out.append(Claim(
        "paper_summary_k20",
        f"A summary of the paper: n = 10 needs k = {paper_k:g} CoT steps to match n = 30 at k = 1 (LSA, Λ = Σ = I).",
        f"simulated (Hard={float(ds.hardness.sel(spectrum=s_id)):.3g}, m={_fmt(m_ref)}): k = {_fmt(k)} (±2 s.e.: [{_fmt(lo)}, {_fmt(hi)}]); theory: Cor 3.5 matching_k = {cor:.3g}, exact m→∞ = {_fmt(pred_exact)}",
        HOLDS if inside else FAILS,
        value=k, uncertainty=(hi - lo) / 2 if np.isfinite(hi) and np.isfinite(lo) else math.nan,
        evidence=_summary_evidence(opt.sel(spectrum=s_id, m=m_ref), paper_k, k, cor),
    ))
    rows, agree = [], 0
    for s in spectra_idx:
        k, lo, hi, pred_exact = meas[(s, m_ref)]
        cor = float(ds["matching_k_cor35"].sel(spectrum=s))
        tol = max(0.15 * pred_exact, 0.25)
        good = np.isfinite(k) and abs(k - pred_exact) <= tol + max(hi - k, k - lo, 0)
        agree += good
        rows.append(f"Hard={float(ds.hardness.sel(spectrum=s)):.3g}: measured {_fmt(k)} [{_fmt(lo)}, {_fmt(hi)}] vs exact m→∞ {_fmt(pred_exact)} vs Cor 3.5 {cor:.3g}")
    out.append(Claim(
        "matching_k_theory",
        f"The matching k is predicted by the theory (theory.matching_k from Cor 3.5; exact limit_error for m → ∞); measured at m = {_fmt(m_ref)}.",
        "; ".join(rows),
        verdict_from_fraction(agree / len(spectra_idx), 1.0, 0.5),
        evidence="agreement: |measured − exact| ≤ max(15 %, 0.25) plus the 2 s.e. interval; Cor 3.5 is exact only for Λ ∝ I",
    ))
    if "trained" in ds.model.values:
        tr, op = ds.sel(model="trained"), ds.sel(model="optimum")
        ks = slice(1, min(5, int(ds.k.max())))
        rel = (np.abs(tr["mean"] - op["mean"]) / op["mean"]).sel(k=ks).sel(m=m_fin) if m_fin else None
        worst = float(rel.max()) if rel is not None else math.nan
        out.append(Claim(
            "trained_matches_optimum",
            "Training the LSA by gradient descent reaches the Theorem 3.1 optimum, so the trained model's CoT errors match the closed-form optimum's.",
            f"largest relative gap of the mean error over k = 1..{ks.stop}, all n, spectra, finite m: {worst:.3g}",
            HOLDS if worst <= 0.1 else (PARTLY if worst <= 0.3 else FAILS), value=worst,
            evidence="HOLDS if ≤ 10 %, PARTLY if ≤ 30 %",
        ))
    else:
        out.append(Claim("trained_matches_optimum", "Trained LSA matches the closed-form optimum.",
                         ds.attrs.get("training_note", "not run"), SKIPPED))
    return out


def _summary_evidence(cur, paper_k, k, cor) -> str:
    """Numbers behind the paper-summary row: the n = 10 error at the summary's k vs the n = 30, k = 1 level."""
    target = float(cur["mean"].sel(n=30, k=1))
    kk = int(min(round(paper_k), int(cur.k.max())))
    at = float(cur["mean"].sel(n=10, k=kk))
    verdict = "agrees with the theory, not with the summary" if np.isfinite(k) and abs(k - cor) < abs(k - paper_k) else "see the numbers"
    where = f"{target / at:.3g}× lower: far past the match" if at < target else f"{at / target:.3g}× higher: not matched yet"
    return (f"n = 30 at k = 1: {target:.3g}; n = 10 at k = {kk}: {at:.3g} ({where}). "
            f"The measured crossing k = {_fmt(k)} {verdict} (Cor 3.5: {cor:.3g}); we report the disagreement rather than tune it away.")


def claims_scaling_law(ds: xr.Dataset) -> list[Claim]:
    out = []
    m_fin = [m for m in ds.m.values if np.isfinite(m)]
    m_ref = m_fin[0] if m_fin else INF
    level = float(ds.attrs.get("levels", [0.1])[1] if len(ds.attrs.get("levels", [])) > 1 else 0.1)
    # k needed to reach `level` at each (spectrum, n), simulated at m_ref
    need = np.array([[crossing_k(ds["mean"].sel(spectrum=s, n=n, m=m_ref).values, level) for n in ds.n.values] for s in ds.spectrum.values])
    order = np.argsort(ds.hardness.values)
    need = need[order]
    pairs = mono = 0
    for j in range(need.shape[1]):
        col = need[:, j]
        col = np.where(np.isnan(col), np.inf, col)
        for a in range(len(col) - 1):
            if np.isinf(col[a]) and np.isinf(col[a + 1]):
                continue
            pairs += 1
            mono += col[a + 1] >= col[a] - 1e-9
    frac = mono / max(pairs, 1)
    hard = ds.hardness.values[order]
    nref = float(ds.n.values[len(ds.n) // 2])
    jref = list(ds.n.values).index(nref)
    out.append(Claim(
        "harder_needs_more_k",
        "Harder tasks (larger Hard(Λ) = tr Λ / λ_min) need more test-time steps k to reach the same error at the same n (Cor 3.5).",
        f"k to reach error {level:g} at m = {_fmt(m_ref)}, n = {nref:g}: " + ", ".join(f"Hard={h:.3g}: {_fmt(v)}" for h, v in zip(hard, need[:, jref])),
        verdict_from_fraction(frac, 1.0, 0.75), value=frac,
        evidence=f"non-decreasing in Hard for {mono}/{pairs} adjacent pairs over all n",
    ))
    lim = ds["limit_error"].sel(k=slice(1, None))
    cor = ds["cor35_bound"].sel(k=slice(1, None))
    viol = float(((lim - cor) / cor).max())
    d = float(ds["limit_error"].sel(k=0).max())  # ||I||_F² = d
    ident = [s for s in ds.spectrum.values if abs(float(ds.hardness.sel(spectrum=s)) - d) < 1e-3 * d or float(ds.alpha.sel(spectrum=s)) == 0.0]
    tight = float((np.abs(lim - cor) / cor).sel(spectrum=ident).max()) if ident else math.nan
    ok = viol <= 1e-3 and (not ident or tight <= 1e-3)
    out.append(Claim(
        "cor35_bound",
        "Cor 3.5: the m → ∞ error is at most d (1 + n/(1 + Hard))^{-2k}, with equality for Λ ∝ I.",
        f"max relative excess of the exact m→∞ error over the bound: {viol:.2g}; largest relative gap at Λ = I: {_fmt(tight)}",
        HOLDS if ok else FAILS, value=viol,
    ))
    if m_fin:
        sim = ds["mean"].sel(m=INF) if INF in ds.m.values else None
        if sim is not None:
            z = ((sim - ds["limit_error"]) / ds["stderr"].sel(m=INF)).sel(k=slice(1, None))
            z = z.where(np.isfinite(z))
            frac4 = float((np.abs(z) <= 4).mean())
            out.append(Claim(
                "simulation_matches_limit",
                "Simulated m → ∞ errors equal the closed form tr((I − PΣ)^k (I − PΣ)^kᵀ).",
                f"{100 * frac4:.1f} % of (spectrum, n, k) cells within 4 s.e.",
                verdict_from_fraction(frac4, 0.99, 0.9), value=frac4,
            ))
    return out


def claims_theorem33(ds: xr.Dataset) -> list[Claim]:
    mc = ds["mean"].sel(k=1)
    se = ds["stderr"].sel(k=1)
    exact = ds["one_step_error"]
    finite_m = np.isfinite(ds.m.values)
    z = ((mc - exact) / se).values[..., finite_m]
    frac = float(np.mean(np.abs(z) <= 4))
    out = [Claim(
        "exact_one_step",
        "The exact finite-m one-step error d − 2 tr(PΣ) + tr(P E[S_m²] Pᵀ) matches Monte Carlo.",
        f"{100 * frac:.1f} % of {z.size} (Hard, n, m) cells within 4 s.e.; max |z| = {np.nanmax(np.abs(z)):.2f}",
        verdict_from_fraction(frac, 0.99, 0.9), value=frac,
    )]
    bound = ds["thm33_bound"]
    margin = float((bound - exact).min())
    ratio = (bound / exact)
    out.append(Claim(
        "thm33_bound_holds",
        "Theorem 3.3: the one-step error is at most (d/n²)(1 + Hard)² + (d/m)(1 + Hard).",
        f"min(bound − exact) = {margin:.3g} over all cells; bound/exact ranges {float(ratio.min()):.3g}–{float(ratio.max()):.3g}",
        HOLDS if margin >= -1e-4 else FAILS, value=margin,
        evidence="the bound is valid but loose; its looseness grows with Hard",
    ))
    order = np.argsort(ds.hardness.values)
    e = exact.isel(spectrum=order).values
    frac_mono = float(np.mean(np.diff(e, axis=0) >= -1e-6))
    out.append(Claim(
        "harder_larger_one_step",
        "Harder tasks have larger one-step error (the bound grows with Hard).",
        f"exact one-step error non-decreasing in Hard in {100 * frac_mono:.0f} % of adjacent (n, m) pairs",
        verdict_from_fraction(frac_mono, 1.0, 0.75), value=frac_mono,
    ))
    return out


def claims_overthinking(ds: xr.Dataset) -> list[Claim]:
    out = []
    s0 = int(ds.spectrum.values[0])
    label = str(ds.label.values[0]) if "label" in ds.coords else f"spectrum {s0}"
    m_fin = [m for m in ds.m.values if np.isfinite(m)]
    kmax = int(ds.k.max())
    rows, n_ok, argmins = [], 0, {}
    for m in m_fin:
        for n in ds.n.values:
            cur = ds.sel(spectrum=s0, m=m, n=n)
            k_star, lo, hi = argmin_set(cur["mean"].values, cur["stderr"].values)
            med_star = int(np.argmin(cur["median"].values[1:])) + 1
            end, se_end = float(cur["mean"].sel(k=kmax)), float(cur["stderr"].sel(k=kmax))
            best, se_best = float(cur["mean"].sel(k=k_star)), float(cur["stderr"].sel(k=k_star))
            med = cur["median"].values
            rises = k_star < kmax and (end > best + 2 * math.hypot(se_end, se_best) or end > 2 * best or med[kmax] > 1.1 * med[k_star])
            falls = k_star > 1 and float(cur["mean"].sel(k=1)) > best
            n_ok += rises and falls
            argmins[(m, n)] = (k_star, lo, hi, med_star)
            rows.append(f"m={m:g}, n={n:g}: argmin k={k_star} [{lo},{hi}] (median argmin {med_star}), err(1)={_fmt(float(cur['mean'].sel(k=1)))}, min={_fmt(best)}, err({kmax})={_fmt(end)}")
    total = len(m_fin) * ds.sizes["n"]
    out.append(Claim(
        "falls_then_rises",
        f"Overthinking: training on a tilted spectrum ({label}) and testing on Σ = I, the error first falls then rises with k.",
        "; ".join(rows),
        verdict_from_fraction(n_ok / max(total, 1), 1.0, 1e-9), value=n_ok / max(total, 1),
        evidence=f"falls (argmin of the mean > 1) and rises (mean at k_max > min + 2 s.e. or > 2 × min — heavy tails make the s.e. unreliable — or median at k_max > 1.1 × median at the argmin) in {n_ok}/{total} finite-m cells",
    ))
    moves, pairs, rows = 0, 0, []
    for m in m_fin:
        ks = [argmins[(m, n)] for n in ds.n.values]
        for a, b in zip(ks[:-1], ks[1:]):
            pairs += 1
            moves += b[0] <= a[0]  # point estimates (the 2 s.e. sets are wide under heavy tails)
        rows.append(f"m={m:g}: " + " → ".join(f"{k[0]}" for k in ks))
    out.append(Claim(
        "argmin_earlier_with_n",
        "The minimising k moves earlier as the training length n grows.",
        "argmin k for n = " + ", ".join(f"{n:g}" for n in ds.n.values) + ": " + "; ".join(rows),
        verdict_from_fraction(moves / max(pairs, 1), 1.0, 0.5), value=moves / max(pairs, 1),
        evidence=f"argmin of the mean non-increasing in n in {moves}/{pairs} adjacent pairs",
    ))
    worse, pairs, rows = 0, 0, []
    for m in m_fin:
        cur = ds.sel(spectrum=s0, m=m, k=kmax)
        means, meds = cur["mean"].values, cur["median"].values
        for a in range(len(means) - 1):
            pairs += 1
            worse += means[a + 1] > means[a] and meds[a + 1] > meds[a]
        rows.append(f"m={m:g}: " + ", ".join(f"n={n:g}: mean {_fmt(float(v))}, median {_fmt(float(w))}" for n, v, w in zip(ds.n.values, means, meds)))
    if INF in ds.m.values:
        lim = ds["limit_error"].sel(spectrum=s0, k=kmax).values
        rows.append("m=inf (closed form): " + ", ".join(f"n={n:g}: {_fmt(float(v))}" for n, v in zip(ds.n.values, lim)))
    out.append(Claim(
        "larger_n_worse_late",
        f"At large k (k = {kmax}) larger n is worse.",
        "; ".join(rows),
        verdict_from_fraction(worse / max(pairs, 1), 1.0, 0.5), value=worse / max(pairs, 1),
        evidence=f"both the mean and the median at k = {kmax} increase with n in {worse}/{pairs} adjacent finite-m pairs (heavy tails: the mean's s.e. is unreliable, so both statistics must agree)",
    ))
    if INF in ds.m.values:
        rows = []
        for s in ds.spectrum.values:
            lab = str(ds.label.sel(spectrum=s).values) if "label" in ds.coords else f"spectrum {s}"
            parts = []
            for n in ds.n.values:
                bk = int(ds["best_k"].sel(spectrum=s, n=n))
                rho = float(ds["spectral_radius"].sel(spectrum=s, n=n))
                lim = ds["limit_error"].sel(spectrum=s, n=n).values
                shape = "rises from k=1" if bk == 1 and rho > 1 else ("falls then rises" if rho > 1 else "falls")
                parts.append(f"n={n:g}: {shape} (ρ={rho:.3g}, best k={bk}, err({kmax})={_fmt(float(lim[-1]))})")
            rows.append(f"{lab}: " + ", ".join(parts))
        shapes = {str(ds.label.sel(spectrum=s).values) if "label" in ds.coords else s: [float(ds["spectral_radius"].sel(spectrum=s, n=n)) for n in ds.n.values] for s in ds.spectrum.values}
        out.append(Claim(
            "normalisation_caveat",
            "docs/science.md §6: the normalisation matters — with λ_i = 1/i the m → ∞ error rises from k = 1; with λ_i = 2/i it diverges at m → ∞ for n = 30; with tr Λ = d the m → ∞ error keeps falling (overthinking then comes from finite m).",
            " | ".join(rows),
            _verdict_normalisation(ds),
            evidence="deterministic case m → ∞ (closed form limit_error, spectral radius of I − PΣ)",
        ))
    return out


def _verdict_normalisation(ds) -> str:
    if "label" not in ds.coords:
        return SKIPPED
    checks = []
    for s in ds.spectrum.values:
        lab = str(ds.label.sel(spectrum=s).values)
        rho = {float(n): float(ds["spectral_radius"].sel(spectrum=s, n=n)) for n in ds.n.values}
        bk = {float(n): int(ds["best_k"].sel(spectrum=s, n=n)) for n in ds.n.values}
        if lab.startswith("λ_i ∝") and "tr = d" in lab:
            checks.append(all(r <= 1 for r in rho.values()))
        elif lab.startswith("λ_i = 1/"):
            checks.append(all(bk[n] == 1 and rho[n] > 1 for n in rho if n >= 20) if rho else False)
        elif lab.startswith("λ_i = 2/") and 30.0 in rho:
            checks.append(rho[30.0] > 1)
    if not checks:
        return SKIPPED
    return verdict_from_fraction(sum(checks) / len(checks), 1.0, 0.5)


def claims_best_k(ds: xr.Dataset) -> list[Claim]:
    out = []
    kmax = int(ds.k.max())
    for m in ds.m.values:
        hit, total, rows = 0, 0, []
        for s in ds.spectrum.values:
            for n in ds.n.values:
                cur = ds.sel(spectrum=s, n=n, m=m)
                k_star, lo, hi = argmin_set(cur["mean"].values, cur["stderr"].values)
                pred = int(ds["best_k"].sel(spectrum=s, n=n))
                total += 1
                ok = abs(k_star - pred) <= max(1, 0.1 * pred)  # point estimate: heavy tails make the 2 s.e. set uninformative
                hit += ok
                if not ok:
                    rows.append(f"s={float(ds.scale.sel(spectrum=s)):g}, n={n:g}: predicted {pred}, measured {k_star} (2 s.e. set [{lo},{hi}])")
        frac = hit / max(total, 1)
        holds_at = 0.9 if not np.isfinite(m) else 0.75
        out.append(Claim(
            f"best_k_m{_fmt(float(m))}",
            "theory.best_k (the argmin of the m → ∞ error, Remark 4.1) predicts the best number of CoT steps" + (" at m → ∞." if not np.isfinite(m) else f", measured here at finite m = {m:g}."),
            f"measured argmin of the mean within max(1, 10 %) of the predicted k in {hit}/{total} cells ({100 * frac:.0f} %)" + (("; misses: " + "; ".join(rows[:6])) if rows else ""),
            verdict_from_fraction(frac, holds_at, 0.5), value=frac,
            evidence=f"grid: λ_i = s/i, s ∈ {list(map(float, ds.scale.values))}, n ∈ {list(map(float, ds.n.values))}, Σ = I, k ≤ {kmax}"
                     + ("" if not np.isfinite(m) else "; at finite m a few prompts with λ_max(Γ⁻¹S_m) > 2 make the mean turn up earlier than the m → ∞ theory predicts (docs/science.md §6, cause b)"),
        ))
    ov = ds["overthinking_term"].sel(k=slice(1, None))
    lim = ds["limit_error"].sel(k=slice(1, None))
    rel = float((np.abs(ov - lim) / np.maximum(lim, 1e-30)).max())
    out.append(Claim(
        "overthinking_term_exact_diagonal",
        "Remark 4.1: for commuting Γ and Σ the overthinking term tr(M^{2k}) is the exact m → ∞ error.",
        f"max relative gap over the grid (diagonal Λ, Σ = I): {rel:.2g}",
        HOLDS if rel <= 1e-3 else FAILS, value=rel,
    ))
    return out


# ============================================================================ registry
@dataclasses.dataclass(frozen=True)
class Preset:
    """A named reproduction: configs per size, ``compute(config, progress) → Dataset``, ``plot``, ``claims``.

    ``module`` (optional) names a module to import lazily; the callables may then be given as
    attribute names (strings) of that module. ``figure`` is the file stem of the figure.
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

    def config(self, size: str = "quick"):
        if size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {size!r}")
        return self.configs[size]

    def resolve(self, attr: str) -> Callable:
        """Return the callable for ``compute``/``plot``/``claims`` (imports ``module`` if needed)."""
        value = getattr(self, attr)
        if isinstance(value, str):
            mod = importlib.import_module(self.module or "ttscale.experiments")
            return getattr(mod, value)
        return value


def _plots(name):
    def plot(ds):
        from ttscale import plots

        return getattr(plots, name)(ds)

    plot.__name__ = name
    return plot


REGISTRY: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    """Add (or replace) a preset in :data:`REGISTRY`."""
    REGISTRY[preset.name] = preset
    return preset


register(Preset(
    "test_time_scaling", "Test-time scaling, LSA: k compensates n", "test_time_scaling",
    {"quick": TestTimeScalingConfig(prompts=1024, train_steps=600),
     "full": TestTimeScalingConfig(prompts=65536, train_steps=20000, train_batch=1024)},
    compute_test_time_scaling, _plots("plot_test_time_scaling"), claims_test_time_scaling,
))
register(Preset(
    "scaling_law", "The scaling law: iso-error contours over (n, k)", "scaling_law",
    {"quick": ScalingLawConfig(prompts=512), "full": ScalingLawConfig(prompts=32768, ns=tuple(range(4, 101, 4)), alphas=(0.0, 0.25, 0.5, 0.75, 1.0, 1.5))},
    compute_scaling_law, _plots("plot_scaling_law"), claims_scaling_law,
))
register(Preset(
    "theorem33", "Theorem 3.3: one-step error, bound and Monte Carlo", "theorem33",
    {"quick": Theorem33Config(prompts=2048), "full": Theorem33Config(prompts=262144, ms=(10.0, 20.0, 50.0, 100.0, 200.0, 500.0, INF))},
    compute_theorem33, _plots("plot_theorem33"), claims_theorem33,
))
register(Preset(
    "overthinking", "Overthinking, LSA: tilted training, Σ = I", "overthinking",
    {"quick": OverthinkingConfig(prompts=2048), "full": OverthinkingConfig(prompts=65536, k_max=30)},
    compute_overthinking, _plots("plot_overthinking"), claims_overthinking,
))
register(Preset(
    "best_k", "The overthinking term and the best k", "best_k",
    {"quick": BestKConfig(prompts=512), "full": BestKConfig(prompts=32768, scales=tuple(np.round(np.linspace(1.5, 3.0, 16), 3)), ns=(10, 15, 20, 25, 30, 35, 40))},
    compute_best_k, _plots("plot_best_k"), claims_best_k,
))
# ---------------------------------------------------------------------------- external presets
# Task selection (ttscale.selection) and GPT-2 (ttscale.gpt2) are imported lazily: a missing
# or broken module makes the preset SKIPPED with the reason, never a crash.
@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """Task selection: ``selection_study`` over random pools, then LSAs trained on each mixture."""

    num_pools: int = 8
    steps: int = 200
    batch: int = 64
    prompts: int = 256
    m: int = 200
    k_max: int = 10
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class GPT2PresetConfig:
    """GPT-2: ``size`` names an entry of ``ttscale.gpt2.EXPERIMENT_SIZES`` (``tiny`` | ``quick`` | ``full``)."""

    size: str = "tiny"
    seed: int = 0


def compute_task_selection(config: SelectionConfig, progress=False) -> xr.Dataset:
    from ttscale import selection

    k_study, k_cmp = jax.random.split(jax.random.key(config.seed))
    study = selection.selection_study(k_study, config.num_pools, progress=progress)
    table = selection.selection_table(study)
    cmp = selection.mixture_comparison(k_cmp, steps=config.steps, batch=config.batch, prompts=config.prompts,
                                       m=config.m, k_max=config.k_max)
    ds = xr.Dataset()
    for name, src in (("study", study), ("table", table), ("cmp", cmp)):
        src = src if isinstance(src, xr.Dataset) else src.to_dataset()
        renamed = src.rename({v: f"{name}__{v}" for v in src.data_vars})
        renamed = renamed.rename({c: f"{name}__{c}" for c in renamed.dims})
        renamed = renamed.rename({c: f"{name}__{c}" for c in list(renamed.coords) if c in src.coords and c not in src.dims})
        ds = ds.merge(renamed, compat="override")
        ds.attrs.update({f"{name}__{k}": v for k, v in src.attrs.items()})
    return ds


def _unprefix(ds: xr.Dataset, name: str) -> xr.Dataset:
    pre = f"{name}__"
    keep = [v for v in ds.data_vars if v.startswith(pre)]
    sub = ds[keep]
    sub = sub.drop_vars([c for c in sub.coords if not c.startswith(pre)], errors="ignore")
    sub = sub.rename({v: v[len(pre):] for v in list(sub.variables) if v.startswith(pre)})
    sub = sub.rename_dims({d: d[len(pre):] for d in sub.dims if d.startswith(pre)}) if any(d.startswith(pre) for d in sub.dims) else sub
    sub.attrs = {k[len(pre):]: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in ds.attrs.items() if k.startswith(pre)}
    return sub


def plot_task_selection(ds: xr.Dataset):
    import matplotlib.pyplot as plt
    from ttscale import selection

    f1 = selection.plot_selection(_unprefix(ds, "study"))
    f2 = selection.plot_mixture_comparison(_unprefix(ds, "cmp"))
    fig = plt.figure(figsize=(11, 8.5))
    for i, f in enumerate((f1, f2)):
        f.canvas.draw()
        img = np.asarray(f.canvas.buffer_rgba())
        ax = fig.add_subplot(2, 1, i + 1)
        ax.imshow(img)
        ax.axis("off")
        plt.close(f)
    fig.tight_layout()
    return fig


def claims_task_selection(ds: xr.Dataset) -> list[Claim]:
    table, cmp = _unprefix(ds, "table"), _unprefix(ds, "cmp")
    out = []
    crit = [c for c in table.mixture.values if c in ("qp", "qp-length", "exact")]
    rows = [f"{c}: mean hard mass {float(table['hard_mass'].sel(mixture=c)):.3f}, ≥ ½ in {100 * float(table['hard_mass_at_least_half'].sel(mixture=c)):.0f} % of pools" for c in crit]
    frac = float(np.mean([float(table["hard_mass_at_least_half"].sel(mixture=c)) for c in crit])) if crit else math.nan
    out.append(Claim(
        "hard_mass_half", "Proposition 4.3: the optimal task mixture puts at least half its mass on hard tasks (small σ_min).",
        "; ".join(rows), verdict_from_fraction(frac, 0.95, 0.5), value=frac,
        evidence="fraction of random (pool, target) pairs with hard mass ≥ 1/2, averaged over criteria"))
    rk = {c: str(table["ranking"].sel(mixture=c).values) for c in crit}
    paper = "Hard-Long > Hard-Short > Easy-Long > Easy-Short"
    n_match = sum(r.replace(" ", "") == paper.replace(" ", "") for r in rk.values())
    out.append(Claim(
        "type_ranking", f"The paper's ranking of mean selected probability: {paper}.",
        "; ".join(f"{c}: {r}" for c, r in rk.items()),
        verdict_from_fraction(n_match / max(len(rk), 1), 1.0, 1e-9),
        evidence="docs/science.md §7: what α and B are is not public; our reading may not reproduce the middle of the ranking"))
    ks = cmp.k.values
    kk = int(ks[-1])
    sel = [c for c in cmp.mixture.values if c in crit]
    base = [b for b in ("uniform", "easy-only") if b in cmp.mixture.values]
    wins, total, rows = 0, 0, []
    for c in sel:
        for b in base:
            a_, b_ = cmp["mean"].sel(mixture=c, k=kk), cmp["mean"].sel(mixture=b, k=kk)
            sa, sb = cmp["stderr"].sel(mixture=c, k=kk), cmp["stderr"].sel(mixture=b, k=kk)
            total += 1
            win = float(a_) + 2 * float(sa) < float(b_) - 2 * float(sb)
            wins += win
            rows.append(f"{c} {_fmt(float(a_))} vs {b} {_fmt(float(b_))}")
    out.append(Claim(
        "selected_scales_better", f"A model trained on the selected mixture scales better with k on a hard target than uniform or easy-only mixtures (k = {kk}).",
        "; ".join(rows), verdict_from_fraction(wins / max(total, 1), 1.0, 1e-9), value=wins / max(total, 1),
        evidence=f"lower mean error beyond 2 s.e. in {wins}/{total} (criterion, baseline) pairs"))
    return out


def compute_gpt2(config: GPT2PresetConfig, progress=False) -> xr.Dataset:
    from ttscale import gpt2

    return gpt2.gpt2_experiment(config.size, out=None, seed=config.seed, progress=progress)


def plot_gpt2(ds: xr.Dataset):
    from ttscale import gpt2

    return gpt2.plot_gpt2(ds)


def claims_gpt2(ds: xr.Dataset) -> list[Claim]:
    out = []
    ns = list(ds.n.values)
    kmax = int(ds.k.max())
    if "aligned" in ds.scenario.values and len(ns) >= 2:
        cur = ds.sel(scenario="aligned")
        short, long_ = ns[0], ns[-1]
        target = float(cur["gpt2_mean"].sel(n=long_, k=1))
        k, lo, hi = matching_k_interval(cur["gpt2_mean"].sel(n=short).values, cur["gpt2_stderr"].sel(n=short).values,
                                        target, float(cur["gpt2_stderr"].sel(n=long_, k=1)))
        k_lsa = crossing_k(cur["lsa_mean"].sel(n=short).values, float(cur["lsa_mean"].sel(n=long_, k=1)))
        out.append(Claim(
            "gpt2_k_compensates_n", f"GPT-2: more CoT steps compensate a shorter training context (n = {short:g} reaches n = {long_:g} at k = 1).",
            f"GPT-2: k = {_fmt(k)} [{_fmt(lo)}, {_fmt(hi)}]; optimal LSA on the same prompts: k = {_fmt(k_lsa)}",
            HOLDS if np.isfinite(k) else FAILS, value=k))
    if "tilted" in ds.scenario.values:
        rows, n_ok = [], 0
        for n in ns:
            cur = ds.sel(scenario="tilted", n=n)
            k_star, lo, hi = argmin_set(cur["gpt2_mean"].values, cur["gpt2_stderr"].values)
            rises = k_star < kmax and float(cur["gpt2_mean"].sel(k=kmax)) > float(cur["gpt2_mean"].sel(k=k_star)) + 2 * math.hypot(
                float(cur["gpt2_stderr"].sel(k=kmax)), float(cur["gpt2_stderr"].sel(k=k_star)))
            n_ok += rises
            rows.append(f"n={n:g}: argmin k={k_star} [{lo},{hi}], err({kmax})={_fmt(float(cur['gpt2_mean'].sel(k=kmax)))}")
        out.append(Claim(
            "gpt2_overthinking", "GPT-2 overthinking: tilted training, Σ = I, the error rises for large k.",
            "; ".join(rows), verdict_from_fraction(n_ok / len(ns), 1.0, 1e-9), value=n_ok / len(ns)))
    if "k1_ratio" in ds:
        r = ds["k1_ratio"].values
        out.append(Claim(
            "gpt2_in_distribution", "Sanity: the trained GPT-2 is about as accurate as the optimal LSA at k = 1 in distribution.",
            "GPT-2/LSA mean error at k = 1: " + ", ".join(_fmt(float(v)) for v in r.ravel()),
            HOLDS if np.all(r <= 1.25) else (PARTLY if np.any(r <= 1.25) else FAILS), value=float(np.nanmax(r)),
            evidence="HOLDS if every ratio ≤ 1.25; the quick size trains tiny models for seconds, so expect FAILS there"))
    return out


register(Preset(
    "task_selection", "Task selection (Proposition 4.3)", "task_selection",
    {"quick": SelectionConfig(), "full": SelectionConfig(num_pools=256, steps=3000, batch=256, prompts=2000, m=500, k_max=20)},
    compute_task_selection, plot_task_selection, claims_task_selection, module="ttscale.selection",
))
register(Preset(
    "gpt2", "GPT-2: k compensates n and overthinking", "gpt2",
    {"quick": GPT2PresetConfig("tiny"), "full": GPT2PresetConfig("full")},
    compute_gpt2, plot_gpt2, claims_gpt2, module="ttscale.gpt2", quick_by_default=False,
))


# ============================================================================ running
def config_dict(config) -> dict:
    if dataclasses.is_dataclass(config):
        raw = dataclasses.asdict(config)
    elif isinstance(config, dict):
        raw = dict(config)
    else:
        raw = {"size": str(config)}
    return json.loads(json.dumps(raw, default=str, allow_nan=True).replace("Infinity", '"inf"'))


def config_hash(name: str, config) -> str:
    """Stable short hash of ``(name, config, CACHE_VERSION)`` keying the cached ``.nc`` file."""
    payload = json.dumps({"name": name, "config": config_dict(config), "v": CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclasses.dataclass
class PresetResult:
    """Outcome of :func:`run_preset`: the data, figure files, claims, timing and cache status."""

    name: str
    title: str
    size: str
    config: Any
    dataset: Optional[xr.Dataset] = None
    figures: list = dataclasses.field(default_factory=list)
    claims: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    cached: bool = False
    skipped: Optional[str] = None
    path: Optional[Path] = None


def _save_nc(ds: xr.Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy()
    for key, val in list(ds.attrs.items()):
        if isinstance(val, (list, tuple, dict, bool)) or val is None:
            ds.attrs[key] = json.dumps(val, default=str)
    for name in list(ds.variables):
        if ds[name].dtype == bool:
            ds[name] = ds[name].astype("int8")
            ds[name].attrs["bool"] = 1
    store.write_dataset(ds, path)


def load_dataset(path) -> xr.Dataset:
    """Load a preset/sweep ``.nc`` written by :func:`run_preset` (JSON attrs decoded)."""
    ds = store.read_dataset(path)
    for name in list(ds.variables):
        if ds[name].attrs.get("bool"):
            attrs = {k: v for k, v in ds[name].attrs.items() if k != "bool"}
            ds[name] = ds[name].astype(bool)
            ds[name].attrs = attrs
    for key, val in list(ds.attrs.items()):
        if isinstance(val, str) and val[:1] in "[{" or val in ("true", "false", "null"):
            try:
                ds.attrs[key] = json.loads(val)
            except (json.JSONDecodeError, TypeError):
                pass
    return ds


def run_preset(name, size: str = "quick", out=None, progress: bool = True, config=None, save_figures: bool = True) -> PresetResult:
    """Run one preset: compute (or load the cached ``.nc``), plot, check claims.

    ``out``: directory for ``data/<name>-<hash>.nc`` and ``figures/<figure>.{png,pdf}``
    (``None``: nothing written, no cache). ``config`` overrides the preset's config for
    ``size`` (e.g. ``dataclasses.replace(preset.config('quick'), prompts=256)``).
    """
    preset = REGISTRY[name] if isinstance(name, str) else name
    if not isinstance(preset, Preset):
        raise TypeError(f"name must be a preset name or Preset, got {type(name).__name__}")
    if isinstance(name, str) and name not in REGISTRY:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(REGISTRY)}")
    config = preset.config(size) if config is None else config
    result = PresetResult(preset.name, preset.title, size, config)
    start = time.perf_counter()
    try:
        if preset.module:
            importlib.import_module(preset.module)
        compute = preset.resolve("compute")
        plot = preset.resolve("plot")
        claims = preset.resolve("claims")
    except Exception as exc:  # noqa: BLE001 - a missing/broken optional module skips this preset
        result.skipped = f"{preset.module or 'module'} not available ({type(exc).__name__}: {exc})"
        return result
    out = None if out is None else Path(out)
    path = None if out is None else out / "data" / f"{preset.name}-{config_hash(preset.name, config)}.nc"
    result.path = path
    if path is not None and path.exists():
        ds = load_dataset(path)
        result.cached = True
    else:
        try:
            ds = compute(config, progress=progress)
        except Exception as exc:  # noqa: BLE001
            if not preset.module:
                raise
            result.skipped = f"{preset.module} failed ({type(exc).__name__}: {exc})"
            return result
        ds.attrs["preset"] = preset.name
        ds.attrs["config"] = json.dumps(config_dict(config))
        ds.attrs["size"] = size
        if isinstance(config, TestTimeScalingConfig):
            ds.attrs["paper_matching_k"] = config.paper_matching_k
        if path is not None:
            _save_nc(ds, path)
            ds = load_dataset(path)
    result.dataset = ds
    try:
        result.claims = [dataclasses.replace(c, preset=preset.name) for c in claims(ds)]
    except Exception as exc:  # noqa: BLE001
        if not preset.module:
            raise
        result.claims = [Claim("claims", f"claims of {preset.name}", f"could not be computed: {type(exc).__name__}: {exc}", SKIPPED, preset=preset.name)]
    fig = None
    if out is not None and save_figures:
        import matplotlib.pyplot as plt

        try:
            fig = plot(ds)
        except Exception as exc:  # noqa: BLE001
            if not preset.module:
                raise
            fig = None
            result.skipped = None
            result.claims.append(Claim("figure", f"figure of {preset.name}", f"plot failed: {type(exc).__name__}: {exc}", SKIPPED, preset=preset.name))
    if out is not None and save_figures and fig is not None:
        import matplotlib.pyplot as plt

        (out / "figures").mkdir(parents=True, exist_ok=True)
        for ext in ("png", "pdf"):
            fpath = out / "figures" / f"{preset.figure}.{ext}"
            fig.savefig(fpath, dpi=130, bbox_inches="tight")
            result.figures.append(fpath)
        plt.close(fig)
    result.seconds = time.perf_counter() - start
    return result


def reproduce(names: Optional[Sequence[str]] = None, size: str = "quick", out="reproduce", progress: bool = True) -> list[PresetResult]:
    """Run presets (all by default), then write ``out/report.md`` and ``out/report.html``."""
    from tqdm.auto import tqdm

    from ttscale import report

    explicit = bool(names)
    names = list(REGISTRY) if not names else list(names)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown preset(s) {unknown}; choose from {sorted(REGISTRY)}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    start = time.perf_counter()
    bar = tqdm(names, desc="reproduce", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        preset = REGISTRY[name]
        if size == "quick" and not explicit and not preset.quick_by_default:
            results.append(PresetResult(name, preset.title, size, preset.config(size), skipped=(
                f"not run by a plain --quick (its quick size trains toy models whose claims mean nothing); "
                f"run `ttscale reproduce {name} --quick` to smoke-test it or `--full` for the real experiment")))
            continue
        results.append(run_preset(name, size=size, out=out, progress=progress))
    report.write_report(results, out, seconds=time.perf_counter() - start)
    return results


__all__ = [
    "Claim", "Preset", "PresetResult", "REGISTRY", "register", "run_preset", "reproduce", "load_dataset",
    "sweep", "crossing_k", "matching_k_interval", "argmin_set", "config_hash",
    "TestTimeScalingConfig", "ScalingLawConfig", "Theorem33Config", "OverthinkingConfig", "BestKConfig",
    "HOLDS", "FAILS", "PARTLY", "SKIPPED",
]
