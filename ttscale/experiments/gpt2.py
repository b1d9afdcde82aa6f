"""The GPT-2 study and preset ``gpt2``: a small GPT-2 trained on the LSA's prompts — does k still compensate n, does it overthink?

The study (docs/science.md §8): :class:`GPT2Experiment` (one experiment's settings; the named sizes in
:data:`EXPERIMENT_SIZES`), the two scenarios (:data:`SCENARIOS`, :func:`scenario_covariances`),
:func:`sweep_with_reference` (a swept model beside the pseudo-Newton reference on the same prompts) and
:func:`gpt2_experiment` (train one GPT-2 per scenario × n, sweep it beside the optimal LSA). The model itself —
network, input formats, rollout, training, checkpoints — is :mod:`ttscale.gpt2`, imported only when a study
function runs (so importing :mod:`ttscale.experiments` needs no Flax; without Flax the preset is SKIPPED); the
figure is :func:`ttscale.plots.plot_gpt2`. These names were formerly in :mod:`ttscale.gpt2` and are still
reachable there.

The preset: the data come from :func:`gpt2_experiment`, the figure from :func:`ttscale.plots.plot_gpt2`. Claims:
k compensates n (:func:`~ttscale.experiments.claims.k_compensates_n` between the smallest and largest n of the
aligned scenario), overthinking in the tilted scenario, and the in-distribution accuracy against the optimal LSA.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Optional

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from ttscale import _checks, store
from ttscale.experiments.claims import (FAILS, HOLDS, PARTLY, Claim, crossing_k, fmt, k_compensates_n,
                                        rises_after_argmin, verdict_from_fraction)
from ttscale.experiments.registry import Preset, Schema, plots_function, register
from ttscale.spectra import identity, power_law

if TYPE_CHECKING:
    from ttscale.gpt2 import Curriculum

#: ``ttscale.gpt2.DEFAULT_FORMAT`` / ``DEFAULT_PROTOCOL``, kept here so that importing the presets needs no
#: Flax (a test checks they agree).
_DEFAULT_FORMAT = "garg"
_DEFAULT_PROTOCOL = "self_rollout"


# ============================================================================= sweeps (the study)
def _stat_names():
    return ("mean", "stderr", "median")


def sweep_with_reference(spec, reference="pseudo_newton", progress: bool = False):
    """Run ``spec`` (e.g. ``model="gpt2:params=DIR"``) and ``spec.replace(model=reference)`` — the *same*
    prompts (the sweep's prompts depend only on the seed and the grid indices; the reference runs with
    ``sampler="prompts"``, so it reads the statistics of those very prompts) — and combine them.

    Returns an ``xarray.Dataset``: ``mean``, ``stderr``, ``median [model, spectrum, n, m, k]`` with
    ``model = [<spec's model>, <reference>]`` (the registered names without options, e.g.
    ``["gpt2", "pseudo_newton"]``) and the reference's closed forms (``limit_error``, …) without the
    ``model`` dim; attrs ``spec`` / ``reference_spec`` (JSON) and ``model_names``.
    """
    from ttscale.sweep import SweepSpec, run_sweep

    if not isinstance(spec, SweepSpec):
        raise TypeError(f"spec must be a SweepSpec, got {type(spec).__name__}")
    ref_spec = spec.replace(model=reference)
    if any(ref_spec.draws_statistics(m) for m in ref_spec.ms):
        # a statistics-reading reference would draw S_Z directly (same law, other numbers): draw the prompts
        ref_spec = ref_spec.replace(sampler="prompts")
    runs = [run_sweep(spec, progress=progress), run_sweep(ref_spec, progress=progress)]
    names = [s.model_object.name for s in (spec, ref_spec)]
    labels = [name.partition(":")[0] for name in names]
    if labels[0] == labels[1]:
        labels = ["model", "reference"]
    stats = list(_stat_names())
    combined = xr.concat([r[stats] for r in runs], dim="model", coords="minimal", compat="override")
    combined = combined.assign_coords(model=labels)
    extra = runs[1].drop_vars(stats)
    out = xr.merge([combined, extra], compat="override")
    out.attrs = dict(runs[0].attrs)
    out.attrs.update(spec=spec.to_json(), reference_spec=ref_spec.to_json(), model_names=json.dumps(names))
    return out


# ============================================================================= experiment
@dataclasses.dataclass(frozen=True)
class GPT2Experiment:
    """One experiment: model ``preset`` and ``format``, ``d``, training lengths ``ns``, CoT steps ``k_max`` evaluated,
    training (``steps`` × ``batch`` at ``learning_rate``, ``chunk`` steps per compiled call, horizon ``k_train``,
    ``stop_gradient``, label ``noise``, ``curriculum``) and evaluation (``eval_prompts`` per cell, test length
    ``m`` — ``None``: ``m = n``). ``alpha``: the tilted training spectrum ``λ_i ∝ i^-alpha``, ``tr Λ = d``."""

    preset: str
    d: int
    ns: tuple
    k_max: int
    steps: int
    batch: int
    learning_rate: float
    chunk: int
    eval_prompts: int
    alpha: float = 1.0
    spectrum: Optional[str] = None  # the tilted scenario's training spectrum in the one syntax (docs/spectra.md); default power_law:alpha=<alpha>
    format: str = _DEFAULT_FORMAT  # ttscale.gpt2.FORMATS
    k_train: int = 8
    stop_gradient: bool = True
    noise: float = 0.0
    m: Optional[int] = None
    curriculum: Optional[Curriculum] = None

    def __post_init__(self):
        if self.format != _DEFAULT_FORMAT:  # the default needs no check (nor the Flax import)
            from ttscale.gpt2 import FORMATS

            if self.format not in FORMATS:
                raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.m is not None:
            _checks.static_int("m", self.m, minimum=1)

    def test_length(self, n: int) -> int:
        return int(n) if self.m is None else int(self.m)


#: Named experiment sizes; one word, one size (``ttscale gpt2 --size``). Rough wall times: :data:`SIZE_TIMES`.
EXPERIMENT_SIZES = {
    "tiny": GPT2Experiment("tiny", d=3, ns=(6, 8), k_max=3, steps=20, batch=16, learning_rate=1e-3, chunk=10,
                           eval_prompts=64, k_train=2),
    "cpu": GPT2Experiment("small", d=5, ns=(20, 30, 40), k_max=12, steps=1250, batch=32, learning_rate=1e-3,
                          chunk=250, eval_prompts=2000),
    "paper": GPT2Experiment("paper", d=10, ns=(20, 30, 40), k_max=20, steps=20_000, batch=64, learning_rate=1e-4,
                            chunk=1000, eval_prompts=10_000),
}

#: Rough wall time of one protocol at each size (both scenarios), for ``--help``.
SIZE_TIMES = {"tiny": "~1 min on a CPU (smoke test)", "cpu": "~30 min on 2 CPU cores",
              "paper": "GPU hours (the ≈9.5M-parameter paper model)"}

_RENAMED = {"quick": "cpu", "full": "paper"}

SCENARIOS = ("aligned", "tilted")


def scenario_covariances(scenario: str, d: int, alpha: float = 1.0, spectrum: Optional[str] = None):
    """``(train, test)`` covariances: ``aligned`` Λ = Σ = I; ``tilted`` Λ = power_law(α, tr = d) — or
    ``spectrum`` in the one spectrum syntax (:func:`ttscale.families.one_spectrum`, e.g. ``hard:H=40``) — and Σ = I."""
    if scenario == "aligned":
        return identity(d), identity(d)
    if scenario == "tilted":
        if spectrum is None:
            return power_law(d, alpha), identity(d)
        from ttscale import families

        cov = families.one_spectrum(spectrum, d, name="spectrum")
        return cov.astype(jnp.float32), identity(d)
    raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")


def _scenario_grid(scenario: str, alpha: float, spectrum: Optional[str] = None) -> dict:
    """The sweep grid of a scenario (the same covariances as :func:`scenario_covariances`)."""
    if scenario == "aligned":
        return dict(alphas=(0.0,), test="aligned")
    return dict(spectra=spectrum, test="identity") if spectrum is not None else dict(alphas=(float(alpha),), test="identity")


def experiment_label(exp: GPT2Experiment, protocol: str) -> str:
    """``<format>_<protocol>`` (``_through``: gradients through the fed-back estimates) — file and folder names."""
    label = f"{exp.format}_{protocol}"
    if protocol == "self_rollout" and not exp.stop_gradient:
        label += "_through"
    return label


def resolve_size(size) -> GPT2Experiment:
    """A :class:`GPT2Experiment` from a name in :data:`EXPERIMENT_SIZES` or itself."""
    if isinstance(size, GPT2Experiment):
        return size
    if isinstance(size, str) and size in _RENAMED:
        raise ValueError(f"size {size!r} was renamed {_RENAMED[size]!r} (one word, one size: "
                         f"choose from {tuple(EXPERIMENT_SIZES)})")
    if isinstance(size, str) and size in EXPERIMENT_SIZES:
        return EXPERIMENT_SIZES[size]
    raise ValueError(f"size must be one of {tuple(EXPERIMENT_SIZES)} or a GPT2Experiment, got {size!r}")


def gpt2_experiment(size="cpu", out: str | None = None, protocol: str = _DEFAULT_PROTOCOL, seed: int = 0,
                    progress: bool = True, scenarios=SCENARIOS):
    """GPT-2 test-time CoT error vs ``k`` beside the optimal LSA, through the sweep engine.

    For each scenario (``aligned``: train Λ = test Σ = I; ``tilted``: Λ ∝ i^-α, tr Λ = d, Σ = I) and
    each training length ``n`` a GPT-2 is trained (``protocol``, horizon ``k_train``) and swept as the
    model ``gpt2`` (:mod:`ttscale.models.gpt2`) on ``eval_prompts`` test prompts of length ``m``
    (``m = n`` unless ``exp.m``), beside the pseudo-Newton ``P = Γ(Λ, n)⁻¹`` (the optimal LSA's CoT) on
    the *same* prompts (:func:`sweep_with_reference`; sweep seed ``seed + 1``). ``size``: a name in
    :data:`EXPERIMENT_SIZES` (``tiny`` | ``cpu`` | ``paper``) or a :class:`GPT2Experiment`.

    Returns an ``xarray.Dataset`` with dims ``(scenario, n, k)``: ``gpt2_mean, gpt2_stderr,
    gpt2_median, lsa_mean, lsa_stderr, lsa_median``; ``lsa_limit_error`` (the m → ∞ closed form
    ``||(I − PΣ)^k||_F²``); ``k1_gpt2, k1_lsa, k1_ratio [scenario, n]`` (mean error at ``k = 1`` on
    prompts from the *training* covariance, GPT-2 / LSA: the in-distribution anchor); ``train_loss
    [scenario, n, step]``; ``train_seconds [scenario, n]`` (training wall time, summed over resumed calls). With ``out`` each model checkpoints under
    ``out/<label>/<scenario>/n<n>/`` (:func:`experiment_label`; re-running resumes / skips; the
    folder ``out/<label>/<scenario>`` is a ``gpt2:params=`` model) and the Dataset is written to
    ``out/gpt2_<label>.nc``.
    """
    from ttscale.gpt2 import PROTOCOLS, GPT2TrainConfig, context_length, count_parameters, gpt2_config, train_gpt2
    from ttscale.models import gpt2 as gpt2_model
    from ttscale.sweep import SweepSpec

    exp = resolve_size(size)
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
    k_train = exp.k_train if protocol == "self_rollout" else 1
    max_m = max(exp.test_length(n) for n in exp.ns)
    max_len = max(max(context_length(exp.format, n) + k_train for n in exp.ns),
                  context_length(exp.format, max_m) + max(exp.k_max, 1))
    model_config = gpt2_config(exp.preset, d=exp.d, max_len=max_len, format=exp.format)
    label = experiment_label(exp, protocol)
    ks = np.arange(exp.k_max + 1)
    shape = (len(scenarios), len(exp.ns))
    vars_ = {name: np.full(shape + (len(ks),), np.nan) for name in
             ("gpt2_mean", "gpt2_stderr", "gpt2_median", "lsa_mean", "lsa_stderr", "lsa_median", "lsa_limit_error")}
    k1 = {name: np.full(shape, np.nan) for name in ("k1_gpt2", "k1_lsa")}
    seconds = np.full(shape, np.nan)
    losses = np.full(shape + (-(-exp.steps // exp.chunk) * exp.chunk,), np.nan)
    root = jax.random.key(seed)
    for i, scenario in enumerate(scenarios):
        train_cov, _ = scenario_covariances(scenario, exp.d, exp.alpha, exp.spectrum)
        grid = _scenario_grid(scenario, exp.alpha, exp.spectrum)
        for j, n in enumerate(exp.ns):
            train_config = GPT2TrainConfig(
                model=model_config, n=n, protocol=protocol, k_train=exp.k_train, steps=exp.steps,
                batch=exp.batch, learning_rate=exp.learning_rate, chunk=exp.chunk, noise=exp.noise,
                stop_gradient=exp.stop_gradient, curriculum=exp.curriculum,
            )
            cell_out = None if out is None else os.path.join(out, label, scenario, f"n{n}")
            result = train_gpt2(jax.random.fold_in(root, 1000 * i + j), train_config, train_cov, cell_out, progress)
            seconds[i, j] = result.total_seconds
            losses[i, j, : len(result.losses)] = result.losses
            spec = SweepSpec(d=exp.d, ns=(float(n),), ms=(float(exp.test_length(n)),), k_max=exp.k_max,
                             prompts=exp.eval_prompts, noise=exp.noise, model=gpt2_model.make(params=result.model),
                             seed=seed + 1, **grid)
            both = sweep_with_reference(spec)
            cell = both.isel(spectrum=0, n=0, m=0)
            for stat in _stat_names():
                vars_[f"gpt2_{stat}"][i, j] = cell[stat].sel(model="gpt2").values
                vars_[f"lsa_{stat}"][i, j] = cell[stat].sel(model="pseudo_newton").values
            vars_["lsa_limit_error"][i, j] = cell["limit_error"].values
            # in-distribution anchor: the same sweep on test prompts from the training covariance
            indist = cell if grid["test"] == "aligned" else sweep_with_reference(spec.replace(test="aligned")).isel(
                spectrum=0, n=0, m=0)
            k1["k1_gpt2"][i, j] = float(indist["mean"].sel(model="gpt2", k=1))
            k1["k1_lsa"][i, j] = float(indist["mean"].sel(model="pseudo_newton", k=1))
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
            "format": exp.format,
            "k_train": k_train,
            "stop_gradient": int(bool(exp.stop_gradient)),
            "label": label,
            "test_length": "m = n" if exp.m is None else f"m = {exp.m}",
            "jax_version": jax.__version__,
            "devices": str(jax.devices()),
        },
    )
    if out is not None:
        os.makedirs(out, exist_ok=True)
        store.write_dataset(ds, os.path.join(out, f"gpt2_{label}.nc"))
    return ds


# ============================================================================= preset
SCHEMA = Schema(
    version=1,
    variables={name: ("scenario", "n", "k") for name in ("gpt2_mean", "gpt2_stderr", "lsa_mean")},
    coords=("scenario", "n", "k"),
)


@dataclasses.dataclass(frozen=True)
class GPT2PresetConfig:
    """GPT-2: ``size`` names an entry of :data:`EXPERIMENT_SIZES`; ``seed`` keys training and evaluation."""

    size: str = "tiny"
    seed: int = 0


def compute_gpt2(config: GPT2PresetConfig, progress=False) -> xr.Dataset:
    """:func:`gpt2_experiment` at ``config.size`` (dims ``scenario, n, k``)."""
    return gpt2_experiment(config.size, out=None, seed=config.seed, progress=progress)


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
    compute_gpt2, plots_function("plot_gpt2"), claims_gpt2, module="ttscale.gpt2", quick_by_default=False, schema=SCHEMA,
))
