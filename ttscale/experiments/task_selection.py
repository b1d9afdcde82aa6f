"""Preset ``task_selection`` (Proposition 4.3): which training mixture the criteria select, and does it help?

The studies live here (the pure core — pools, QPs, the exact criterion, solvers, baselines — is
:mod:`ttscale.selection`): :func:`selection_study` solves every criterion for many random (pool, target)
pairs, :func:`selection_table` summarises it per task type, :func:`mixture_comparison` trains one LSA per
mixture and compares their test-time CoT on a hard target. Figures: :func:`ttscale.plots.plot_selection`,
:func:`ttscale.plots.plot_mixture_comparison`; the markdown summary: :func:`ttscale.report.selection_summary`.
``ttscale reproduce task_selection --full --out results/selection`` regenerates ``results/selection``.

The study runs for both readings of the paper's ``(α, B)`` (:data:`ttscale.selection.READINGS`): ``B`` = the
training prompt length (:func:`~ttscale.selection.paper_pool`, Dataset prefix ``study__``) and ``B`` = the number
of training prompts of one common length (:func:`~ttscale.selection.dataset_pool`, prefix ``study_count__``).
The paper's ranking of the task types is judged pair by pair and only beyond noise
(:func:`~ttscale.experiments.claims.tie_aware_ranking`, paired over pools).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from ttscale import _checks, theory
from ttscale import selection as sel
from ttscale.experiments.claims import (ORDER_HOLDS, Z, Claim, count_outcomes, fmt, order_outcome, outcome_counts_text,
                                        paired_difference, ranking_claim, tie_aware_ranking, verdict_from_counts,
                                        verdict_from_fraction, verdict_from_orders)
from ttscale.experiments.registry import Preset, Schema, register
from ttscale.tasks import TaskMixture, check_mixture, mixture_preconditioner

#: The two readings of ``(α, B)``: Dataset part names (study, table) and a label for the report.
READING_PARTS = {"length": ("study", "table"), "count": ("study_count", "table_count")}
READING_LABELS = {"length": "B = training prompt length n (paper_pool)",
                  "count": "B = number of training prompts of one length n (dataset_pool)"}


def _study_vars(study: str, table: str) -> dict:
    return {
        f"{study}__probs": (f"{study}__mixture", f"{study}__trial", f"{study}__task"),
        f"{study}__type_mass": (f"{study}__mixture", f"{study}__trial", f"{study}__type"),
        f"{study}__hard_mass": (f"{study}__mixture", f"{study}__trial"),
        f"{study}__exact_error": (f"{study}__mixture", f"{study}__trial", f"{study}__k"),
        f"{table}__hard_mass": (f"{table}__mixture",), f"{table}__hard_mass_at_least_half": (f"{table}__mixture",),
        f"{table}__ranking": (f"{table}__mixture",),
    }


SCHEMA = Schema(
    version=2,
    variables={
        **_study_vars("study", "table"), **_study_vars("study_count", "table_count"),
        "cmp__probs": ("cmp__mixture", "cmp__task"), "cmp__mean": ("cmp__mixture", "cmp__k"),
        "cmp__stderr": ("cmp__mixture", "cmp__k"), "cmp__limit_error": ("cmp__mixture", "cmp__k"),
        "cmp__final_error": ("cmp__mixture", "cmp__prompt"),
    },
    coords=("study__mixture", "study__type", "study_count__mixture", "study_count__type", "table__mixture",
            "table_count__mixture", "cmp__mixture", "cmp__k"),
)


# ============================================================================ studies
def selection_study(key, num_pools: int = 256, criteria: Sequence[str] = sel.CRITERIA, k: int = 10,
                    aggregate: str = "sum", d: int = 10, generator: Callable | None = None,
                    generator_kwargs: dict | None = None, target: Callable | None = None,
                    target_kwargs: dict | None = None, progress: bool = True):
    """Proposition 4.3 over ``num_pools`` random (pool, target) pairs, all criteria and baselines.

    Pools: ``generator(key, d=d, **generator_kwargs)`` (default :func:`paper_pool`), targets:
    ``target(key, d=d, **target_kwargs)`` (default :func:`hard_target`), both ``vmap``-ed over keys;
    each criterion is solved for all pairs in one ``jit(vmap(select_mixture))`` call.
    Returns an ``xarray.Dataset`` with dims ``mixture`` (criteria then baselines), ``trial``,
    ``task``, ``type``, ``k``:

    * ``probs [mixture, trial, task]``, ``type_mass [mixture, trial, type]`` (total π per type),
      ``hard_mass [mixture, trial]`` (:func:`hard_mass`);
    * ``objective``, ``kkt [mixture, trial]`` (nan for baselines);
    * ``exact_error [mixture, trial, k]`` — the ``m → ∞`` test error of ``P(π)`` (``k = 0..k``);
    * ``kinds [trial, task]``, ``lambda_min [trial, task]``, ``n [trial, task]``, ``target_lambda_min [trial]``.
    """
    from tqdm.auto import tqdm

    generator = sel.paper_pool if generator is None else generator
    target = sel.hard_target if target is None else target
    num_pools = _checks.static_int("num_pools", num_pools, minimum=1)
    k = _checks.static_int("k", k, minimum=1)
    for c in criteria:
        if c not in sel.CRITERIA:
            raise ValueError(f"criteria must be drawn from {sel.CRITERIA}, got {c!r}")
    k_pool, k_target = jax.random.split(key)
    pools = sel.random_pools(k_pool, num_pools, generator, d=d, **(generator_kwargs or {}))
    targets = jax.vmap(lambda kk: target(kk, d=d, **(target_kwargs or {})))(jax.random.split(k_target, num_pools))
    check_mixture("pools", pools)
    probs, objective, kkt = {}, {}, {}
    for c in tqdm(list(criteria), desc="selection criteria", disable=not progress):
        res = _batched_select(c, k, aggregate)(pools, targets)
        probs[c], objective[c], kkt[c] = np.asarray(res.probs), np.asarray(res.objective), np.asarray(res.kkt)
    base = jax.vmap(sel.baseline_mixtures)(pools, targets)
    for name in sel.BASELINES:
        p = base[name]
        probs[name] = np.asarray(p)
        objective[name] = np.full((num_pools,), np.nan)
        kkt[name] = np.full((num_pools,), np.nan)
    names = list(probs)
    P = np.stack([probs[n] for n in names])  # [M, trial, L]
    errs = _batched_exact_errors(k)(pools, targets, jnp.asarray(P))
    T = len(pools.types)
    tm = np.asarray(sel.type_mass(pools, jnp.asarray(P), T)) if T else np.zeros(P.shape[:2] + (0,))
    hm = np.asarray(sel.hard_mass(pools, jnp.asarray(P)))
    ds = xr.Dataset(
        {
            "probs": (("mixture", "trial", "task"), P),
            "type_mass": (("mixture", "trial", "type"), tm),
            "hard_mass": (("mixture", "trial"), hm),
            "objective": (("mixture", "trial"), np.stack([objective[n] for n in names])),
            "kkt": (("mixture", "trial"), np.stack([kkt[n] for n in names])),
            "exact_error": (("mixture", "trial", "k"), np.asarray(errs)),
            "kinds": (("trial", "task"), np.broadcast_to(pools.kinds, (num_pools, pools.size))),
            "lambda_min": (("trial", "task"), np.asarray(pools.lambda_min())),
            "n": (("trial", "task"), np.asarray(pools.lengths)),
            "target_lambda_min": (("trial",), np.asarray(targets.lambda_min())),
        },
        coords={"mixture": names, "trial": np.arange(num_pools), "task": np.arange(pools.size),
                "type": list(pools.types), "k": np.arange(k + 1)},
        attrs={"criteria": json.dumps(list(criteria)), "k": k, "aggregate": aggregate, "d": d,
               "generator": getattr(generator, "__name__", repr(generator)),
               "generator_kwargs": json.dumps(generator_kwargs or {}),
               "target": getattr(target, "__name__", repr(target)), "target_kwargs": json.dumps(target_kwargs or {}),
               "paper_ranking": json.dumps(list(sel.PAPER_RANKING))},
    )
    return ds


@functools.lru_cache(maxsize=None)
def _batched_select(criterion: str, k: int, aggregate: str):
    """``jit(vmap(select_mixture))`` for one criterion, built once per ``(criterion, k, aggregate)`` so that studies
    of the same shapes (both readings, repeated presets) reuse the compiled program."""
    return jax.jit(jax.vmap(lambda p, S: sel.select_mixture(p, S, criterion, k, aggregate)))


@functools.lru_cache(maxsize=None)
def _batched_exact_errors(k: int):
    """``exact_errors`` over ``[mixture, trial]`` (pools and targets shared by the mixtures), built once per ``k``."""
    return jax.jit(jax.vmap(jax.vmap(lambda pool, S, p: sel.exact_errors(pool, S, p, k), in_axes=(0, 0, 0)),
                            in_axes=(None, None, 0)))


def type_rankings(ds, z: float = Z) -> dict:
    """``{mixture: Ranking}``: the tie-aware ranking of the task types by selected mass, paired over the pools
    (:func:`~ttscale.experiments.claims.tie_aware_ranking` of ``type_mass [trial, type]``) for every mixture
    of a :func:`selection_study` Dataset."""
    types = [str(t) for t in ds["type"].values]
    return {str(m): tie_aware_ranking(ds["type_mass"].sel(mixture=m).transpose("trial", "type").values, types, z)
            for m in ds["mixture"].values}


def selection_table(ds):
    """Mean selected probability per task type ``[mixture, type]`` (mean over trials of the total π of
    each type), with ``hard_mass`` (mean), ``hard_mass_at_least_half`` (fraction of trials with ≥ 1/2 on
    hard tasks; Proposition 4.3) and ``ranking`` per mixture: the types from most to least selected, ties
    (exact, or within 2 s.e. of the paired difference over pools) shown as ``{A ≈ B}`` (:func:`type_rankings`)."""
    mean = ds["type_mass"].mean("trial")
    stderr = ds["type_mass"].std("trial", ddof=1) / np.sqrt(ds.sizes["trial"])
    rankings = type_rankings(ds)
    ranking = [rankings[str(m)].text() for m in ds["mixture"].values]
    return xr.Dataset({
        "mean_type_mass": mean,
        "stderr_type_mass": stderr,
        "hard_mass": ds["hard_mass"].mean("trial"),
        "hard_mass_at_least_half": (ds["hard_mass"] >= 0.5 - 1e-6).mean("trial"),
        "ranking": (("mixture",), np.asarray(ranking, dtype=object)),
    })


# ============================================================================ verification by training
def mixture_comparison(key, pool: TaskMixture | None = None, Sigma=None, mixtures: Sequence[str] | None = None,
                       k: int = 10, aggregate: str = "sum", steps: int = 3000, batch: int = 256,
                       m: int = 500, prompts: int = 2000, k_max: int = 20, d: int = 10, **train_kwargs):
    """Train one LSA per mixture (one vmapped call) and compare their test-time CoT on ``Σ``.

    Defaults: ``pool = paper_pool(key, d)`` (one task per type), ``Σ = power_law_target(key, d,
    α = 0.8)`` (hard), ``mixtures`` = the three criteria then the baselines. Training:
    :func:`ttscale.training.make_train_batched` with ``TrainConfig(steps, batch, **train_kwargs)``
    and the *same* key for every mixture. Test: ``prompts`` prompts of length ``m`` from ``Σ``,
    ``k = 0..k_max`` literal LSA passes (:func:`ttscale.cot.lsa_errors`).

    Returns an ``xarray.Dataset`` (dims ``mixture``, ``task``, ``k``): ``probs``; ``mean``,
    ``stderr``, ``median`` of the trained LSA's error; ``exact_mc_mean`` (pseudo-Newton with the
    exact ``P(π)`` on the same prompts); ``limit_error`` (``m → ∞`` of ``P(π)``);
    ``trained_limit_error`` (``m → ∞`` of the learned ``P``); ``preconditioner_error`` (relative
    Frobenius distance learned vs exact ``P(π)``); ``final_loss``; ``final_error [mixture, prompt]`` — the
    trained LSA's error on each test prompt at ``k = k_max`` (the same prompts for every mixture, so
    comparisons between mixtures can be paired over prompts).
    """
    from ttscale import training
    from ttscale.prompts import sample_prompts

    k_pool, k_target, k_train, k_test = jax.random.split(key, 4)
    pool = sel.paper_pool(k_pool, d) if pool is None else check_mixture("pool", pool)
    Sigma = sel.power_law_target(k_target, pool.d, 0.8) if Sigma is None else sel._as_target(Sigma, pool.d, pool.dtype)
    Sigma = sel._as_target(Sigma, pool.d, pool.dtype)
    if mixtures is None:
        mixtures = tuple(sel.CRITERIA) + ("uniform", "easy-only", "relevant-only", "hard-only")
    mixtures = tuple(mixtures)
    crit = [c for c in mixtures if c in sel.CRITERIA]
    allp = sel.selected_mixtures(pool, Sigma, crit, k, aggregate, baselines=True)
    unknown = [mname for mname in mixtures if mname not in allp]
    if unknown:
        raise ValueError(f"mixtures: unknown names {unknown}; choose from {list(allp)}")
    P = jnp.stack([allp[mname] for mname in mixtures]).astype(pool.dtype)
    P = P / jnp.sum(P, axis=-1, keepdims=True)
    M, L = P.shape
    ns = np.asarray(pool.lengths)
    if np.any(ns != np.round(ns)) or np.any(~np.isfinite(ns)):
        raise ValueError(f"pool.lengths must be whole prompt lengths to train on it, got {ns.tolist()}")
    config = training.TrainConfig(d=pool.d, tasks=pool, steps=steps, batch=batch, **train_kwargs)
    # one mixture per row: the pool's tasks broadcast over the M mixtures, each with its own π
    tasks = dataclasses.replace(jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (M,) + a.shape), pool.astype(P.dtype)),
                                probs=P)
    keys = jnp.stack([k_train] * M)
    result = training.make_train_batched(config)(keys, tasks)
    test = sample_prompts(k_test, Sigma, m, prompts)
    curve, exact_mc, lim, lim_trained, rel, final = _evaluate_mixtures(
        result.params, result.preconditioner, pool, P, test, Sigma.matrix(), k_max)
    losses = np.asarray(result.losses)
    tail = max(1, steps // 20)
    return xr.Dataset(
        {
            "probs": (("mixture", "task"), np.asarray(P)),
            "mean": (("mixture", "k"), np.asarray(curve.mean)),
            "stderr": (("mixture", "k"), np.asarray(curve.stderr)),
            "median": (("mixture", "k"), np.asarray(curve.median)),
            "exact_mc_mean": (("mixture", "k"), np.asarray(exact_mc)),
            "limit_error": (("mixture", "k"), np.asarray(lim)),
            "trained_limit_error": (("mixture", "k"), np.asarray(lim_trained)),
            "preconditioner_error": (("mixture",), np.asarray(rel)),
            "final_loss": (("mixture",), np.nanmean(losses[:, -tail:], axis=-1)),
            "final_error": (("mixture", "prompt"), final),
            "kinds": (("task",), np.asarray(pool.kinds)),
            "n": (("task",), ns),
            "lambda_min": (("task",), np.asarray(pool.lambda_min())),
        },
        coords={"mixture": list(mixtures), "task": np.arange(L), "k": np.arange(k_max + 1),
                "type_name": (("task",), list(pool.labels))},
        attrs={"m": m, "prompts": prompts, "steps": steps, "batch": batch, "k": k, "aggregate": aggregate,
               "target_eigenvalues": json.dumps(np.asarray(Sigma.eigenvalues, np.float64).tolist()),
               "train_config": config.to_json()},
    )


def _evaluate_mixtures(params, P_learned, pool, probs, test, S, k_max: int):
    """Test-time CoT of the trained LSAs (vmapped over the mixture axis) beside the exact ``P(π)``:
    per-prompt errors on the device (:func:`_mixture_errors`), summarised by :func:`ttscale.cot.error_curve`."""
    from ttscale import cot

    sq, sq_exact, lim, lim_trained, rel = _mixture_errors(params, P_learned, pool, probs, test, S, k_max)
    sq = np.asarray(sq)  # [mixture, prompts, k]
    curve = cot.error_curve(np.moveaxis(sq, 0, 1))  # [prompts, mixture, k] → [mixture, k]
    exact_mc = cot.error_curve(np.moveaxis(np.asarray(sq_exact), 0, 1)).mean
    return curve, exact_mc, lim, lim_trained, rel, sq[:, :, -1]


@functools.partial(jax.jit, static_argnames=("k_max",))
def _mixture_errors(params, P_learned, pool, probs, test, S, k_max: int):
    from ttscale import cot, training

    sq = jax.vmap(lambda prm: cot.lsa_errors(prm, test, k_max))(params)
    P_exact = jax.vmap(lambda p: mixture_preconditioner(pool.with_probs(p)))(probs)
    sq_exact = jax.vmap(lambda Pm: cot.pseudo_newton_errors(Pm, test, k_max))(P_exact)
    lim = jax.vmap(lambda Pm: theory.limit_error(Pm, S, k_max))(P_exact)
    lim_trained = jax.vmap(lambda Pm: theory.limit_error(Pm, S, k_max))(P_learned)
    rel = training.relative_error(P_learned, P_exact)
    return sq, sq_exact, lim, lim_trained, rel


# ============================================================================ the preset
@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """Task selection: ``selection_study`` over ``num_pools`` random pools for each reading of ``(α, B)`` in
    ``readings`` (``"length"``: :func:`~ttscale.selection.paper_pool`; ``"count"``:
    :func:`~ttscale.selection.dataset_pool` with common prompt length ``count_length``), then LSAs trained on
    each mixture of one ``"length"`` pool (``steps`` × ``batch``), tested on ``prompts`` prompts of length ``m``."""

    num_pools: int = 128
    readings: tuple = ("length", "count")
    count_length: int = 20
    steps: int = 200
    batch: int = 64
    prompts: int = 256
    m: int = 200
    k_max: int = 10
    seed: int = 0


def _reading_study(reading: str, key, config: SelectionConfig, progress=False) -> xr.Dataset:
    if reading not in sel.READINGS:
        raise ValueError(f"readings must be drawn from {tuple(sel.READINGS)}, got {reading!r}")
    kwargs = {"n": config.count_length} if reading == "count" else None
    ds = selection_study(key, config.num_pools, generator=sel.READINGS[reading], generator_kwargs=kwargs,
                         progress=progress)
    ds.attrs["reading"] = reading
    return ds


def compute_task_selection(config: SelectionConfig, progress=False) -> xr.Dataset:
    """:func:`selection_study` over random pools for each reading (the same pool and target keys: the readings
    share each pool's population covariances and targets), its :func:`selection_table` and a
    :func:`mixture_comparison` of trained LSAs, merged into one Dataset with the prefixes ``study__``/``table__``
    (``B`` = prompt length), ``study_count__``/``table_count__`` (``B`` = number of prompts) and ``cmp__``."""
    if "length" not in config.readings:
        raise ValueError(f"readings must include 'length' (the figure and hard_mass_half read it), got {config.readings}")
    k_study, k_cmp = jax.random.split(jax.random.key(config.seed))
    parts = []
    for reading in config.readings:
        study = _reading_study(reading, k_study, config, progress)
        s_name, t_name = READING_PARTS[reading]
        parts += [(s_name, study), (t_name, selection_table(study))]
    cmp = mixture_comparison(k_cmp, steps=config.steps, batch=config.batch, prompts=config.prompts,
                             m=config.m, k_max=config.k_max)
    parts.append(("cmp", cmp))
    ds = xr.Dataset()
    for name, src in parts:
        src = src if isinstance(src, xr.Dataset) else src.to_dataset()
        renamed = src.rename({v: f"{name}__{v}" for v in src.data_vars})
        renamed = renamed.rename({c: f"{name}__{c}" for c in renamed.dims})
        renamed = renamed.rename({c: f"{name}__{c}" for c in list(renamed.coords) if c in src.coords and c not in src.dims})
        ds = ds.merge(renamed, compat="override")
        ds.attrs.update({f"{name}__{k}": v for k, v in src.attrs.items()})
    return ds


def unprefix(ds: xr.Dataset, name: str) -> xr.Dataset:
    """The part ``name`` (``"study"``, ``"table"``, ``"study_count"``, ``"table_count"`` or ``"cmp"``) of a task-selection Dataset, prefixes removed."""
    pre = f"{name}__"
    keep = [v for v in ds.data_vars if v.startswith(pre)]
    sub = ds[keep]
    sub = sub.drop_vars([c for c in sub.coords if not c.startswith(pre)], errors="ignore")
    sub = sub.rename({v: v[len(pre):] for v in list(sub.variables) if v.startswith(pre)})
    sub = sub.rename_dims({d: d[len(pre):] for d in sub.dims if d.startswith(pre)}) if any(d.startswith(pre) for d in sub.dims) else sub
    sub.attrs = {k[len(pre):]: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in ds.attrs.items() if k.startswith(pre)}
    return sub


def plot_task_selection(ds: xr.Dataset):
    """The study and the trained-mixture comparison as one three-panel figure (:func:`ttscale.plots.plot_task_selection_panels`)."""
    from ttscale import plots

    study = unprefix(ds, "study")
    return plots.plot_task_selection_panels(study, selection_table(study), unprefix(ds, "cmp"))


def _readings_in(ds: xr.Dataset) -> list[str]:
    return [r for r, (study, _) in READING_PARTS.items() if f"{study}__type_mass" in ds.data_vars]


def claims_task_selection(ds: xr.Dataset, z: float = Z) -> list[Claim]:
    """Hard mass ≥ ½ (Proposition 4.3); the paper's type ranking, pair by pair and beyond noise, for each reading of
    ``(α, B)`` present; selected mixtures scale better than the uniform and easy-only baselines (paired over test prompts)."""
    table, cmp = unprefix(ds, "table"), unprefix(ds, "cmp")
    out = []
    crit = [c for c in table.mixture.values if c in sel.CRITERIA]
    rows = [f"{c}: mean hard mass {float(table['hard_mass'].sel(mixture=c)):.3f}, ≥ ½ in {100 * float(table['hard_mass_at_least_half'].sel(mixture=c)):.0f} % of pools" for c in crit]
    frac = float(np.mean([float(table["hard_mass_at_least_half"].sel(mixture=c)) for c in crit])) if crit else math.nan
    out.append(Claim(
        "hard_mass_half", "Proposition 4.3: the optimal task mixture puts at least half its mass on hard tasks (small σ_min).",
        "; ".join(rows), verdict_from_fraction(frac, 0.95, 0.5), value=frac,
        evidence="fraction of random (pool, target) pairs with hard mass ≥ 1/2, averaged over criteria (B = prompt length reading)"))
    paper = tuple(sel.PAPER_RANKING)
    for reading in _readings_in(ds):
        study = unprefix(ds, READING_PARTS[reading][0])
        rks = type_rankings(study, z)
        rks = {c: rks[c] for c in crit if c in rks}
        ntrial = study.sizes["trial"]
        name = "type_ranking" if reading == "length" else f"type_ranking_{reading}"
        out.append(ranking_claim(
            name,
            f"The paper's ranking of mean selected probability, {' > '.join(paper)}, under the reading "
            f"{READING_LABELS[reading]} — one of two readings of a pool generator the paper does not publish.",
            rks, paper,
            evidence=f"{ntrial} random (pool, target) pairs; docs/science.md §7"))
    out.append(_scales_better_claim(cmp, crit, z))
    return out


def _scales_better_claim(cmp: xr.Dataset, crit, z: float) -> Claim:
    """Selected mixture vs uniform / easy-only at ``k = K``: paired over the test prompts when ``final_error`` is
    present (the mean log-ratio of the two models' errors on the same prompts, ``± z`` s.e.), else the two means
    with ``hypot`` of their s.e."""
    kk = int(cmp.k.values[-1])
    mixes = [str(c) for c in cmp.mixture.values]
    sel_ = [c for c in mixes if c in crit]
    base = [b for b in ("uniform", "easy-only") if b in mixes]
    paired = "final_error" in cmp
    outcomes, rows = [], []
    for c in sel_:
        for b in base:
            a_, b_ = float(cmp["mean"].sel(mixture=c, k=kk)), float(cmp["mean"].sel(mixture=b, k=kk))
            if paired:
                ea = np.maximum(cmp["final_error"].sel(mixture=c).values.astype(np.float64), 1e-300)
                eb = np.maximum(cmp["final_error"].sel(mixture=b).values.astype(np.float64), 1e-300)
                d, se = paired_difference(np.log(eb), np.log(ea))  # > 0: the criterion's error is lower
                d, se = float(d), float(se)
                o = order_outcome(d, se, z)
                rows.append(f"{c} {fmt(a_)} vs {b} {fmt(b_)}: geometric-mean ratio {fmt(math.exp(-d))} "
                            f"(log {-d:+.3g} ± {se:.2g}) {o}")
            else:
                sa, sb = float(cmp["stderr"].sel(mixture=c, k=kk)), float(cmp["stderr"].sel(mixture=b, k=kk))
                o = order_outcome(b_ - a_, math.hypot(sa, sb), z)
                rows.append(f"{c} {fmt(a_)} ± {fmt(sa, 2)} vs {b} {fmt(b_)} ± {fmt(sb, 2)} {o}")
            outcomes.append(o)
    wins = sum(o == ORDER_HOLDS for o in outcomes)
    how = (f"paired over the {cmp.sizes.get('prompt', 0)} common test prompts: the mean of log(err_baseline / err_selected) "
           f"beyond {z:g} s.e. (robust to the heavy-tailed errors of the baselines that make the means' s.e. uninformative)"
           if paired else f"the difference of the means beyond {z:g} × hypot(s.e.)")
    return Claim(
        "selected_scales_better",
        f"A model trained on the selected mixture scales better with k on a hard target than uniform or easy-only mixtures (k = {kk}).",
        "; ".join(rows), verdict_from_counts(*count_outcomes(outcomes), holds_at=1.0, partly_at=1e-9),
        value=wins / max(len(outcomes), 1),
        evidence=f"lower error {how}: {outcome_counts_text(outcomes)} of {len(outcomes)} (criterion, baseline) pairs")


def ranking_rows(ds: xr.Dataset, z: float = Z) -> str:
    """Markdown: for each reading present and each criterion, the tie-aware ranking and every pairwise order of the
    paper's ranking (holds / reversed / not resolved, paired difference ± s.e. over pools)."""
    from ttscale.report import markdown_table

    paper = tuple(sel.PAPER_RANKING)
    pairs = [(a, b) for i, a in enumerate(paper) for b in paper[i + 1:]]
    rows = []
    for reading in _readings_in(ds):
        study = unprefix(ds, READING_PARTS[reading][0])
        rks = type_rankings(study, z)
        for c in [c for c in study.mixture.values if c in sel.CRITERIA]:
            rk = rks[str(c)]
            judged = {(a, b): (o, d, se) for a, b, o, d, se in rk.judge(paper)}
            rows.append([reading, str(c), rk.text()] + [f"{judged[p][0]} ({judged[p][1]:+.3f} ± {judged[p][2]:.2g})" for p in pairs]
                        + [verdict_from_orders([judged[p][0] for p in pairs])])
    header = ["reading", "criterion", "tie-aware ranking"] + [f"{a} > {b}" for a, b in pairs] + ["verdict"]
    return markdown_table(header, rows)


def write_selection_tables(ds: xr.Dataset, directory) -> list:
    """Write ``summary.md`` (:func:`ttscale.report.selection_summary`), ``table.csv`` (mean π per type, hard mass) and
    ``comparison.csv`` (the trained mixtures' errors for every k) into ``directory``, through :mod:`ttscale.store`."""
    from ttscale import report, store

    directory = Path(directory)
    study, cmp = unprefix(ds, "study"), unprefix(ds, "cmp")
    tab = selection_table(study)
    size = ds.attrs.get("size", "quick")
    command = f"ttscale reproduce task_selection --{size} --out {directory.parent}"
    summary = report.selection_summary(study, tab, cmp, command)
    readings = _readings_in(ds)
    if readings:
        summary += ("\n## The paper's ranking, pair by pair, under each reading of (α, B)\n"
                    "Readings: " + "; ".join(f"`{r}`: {READING_LABELS[r]}" for r in readings) + ". Both are readings of a "
                    "generator the paper does not publish. Each pairwise order of the paper's ranking is judged separately "
                    f"over the {study.sizes['trial']} pools: holds / reversed when the paired difference of the selected "
                    f"masses exceeds {Z:g} s.e., else not resolved; ties (exact or within noise) are shown as `≈`.\n\n"
                    + ranking_rows(ds) + "\n")
    store.write_text(directory / "summary.md", summary)
    tab_df = tab["mean_type_mass"].to_pandas()
    tab_df["hard_mass"] = tab["hard_mass"].to_pandas()
    tab_df["hard_mass_at_least_half"] = tab["hard_mass_at_least_half"].to_pandas()
    store.write_text(directory / "table.csv", tab_df.to_csv(float_format="%.6g"))
    cols = [c for c in ("mean", "stderr", "median", "exact_mc_mean", "limit_error", "trained_limit_error") if c in cmp]
    store.write_text(directory / "comparison.csv", cmp[cols].to_dataframe().to_csv(float_format="%.6g"))
    return [directory / "summary.md", directory / "table.csv", directory / "comparison.csv"]


register(Preset(
    "task_selection", "Task selection (Proposition 4.3)", "task_selection",
    {"quick": SelectionConfig(), "full": SelectionConfig(num_pools=1024, steps=3000, batch=256, prompts=2000, m=500, k_max=20)},
    compute_task_selection, plot_task_selection, claims_task_selection, module="ttscale.selection", schema=SCHEMA,
    write_tables=write_selection_tables,
))
