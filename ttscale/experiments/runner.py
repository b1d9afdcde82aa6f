"""Running presets: :func:`run_preset` (compute or load from the cache, claims, figure) and :func:`reproduce` (all of
them, then the report). Files are written only through :mod:`ttscale.store` and :mod:`ttscale.report`."""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import xarray as xr

from ttscale.experiments import cache
from ttscale.experiments.claims import SKIPPED, Claim
from ttscale.experiments.registry import REGISTRY, SIZES, Preset


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
    tables: list = dataclasses.field(default_factory=list)


def _preset(name) -> Preset:
    if isinstance(name, Preset):
        return name
    if not isinstance(name, str):
        raise TypeError(f"name must be a preset name or Preset, got {type(name).__name__}")
    if name not in REGISTRY:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(REGISTRY)}")
    return REGISTRY[name]


def run_preset(name, size: str = "quick", out=None, progress: bool = True, config=None, save_figures: bool = True) -> PresetResult:
    """Run one preset: compute (or load the cached ``.nc``), check its claims, draw its figure.

    ``out``: directory for ``data/<name>-<key>.nc`` (the cache, :mod:`ttscale.experiments.cache`),
    ``figures/<figure>.{png,pdf}`` and the preset's tables (``None``: nothing written, no cache). ``config``
    overrides the preset's config for ``size`` (e.g. ``dataclasses.replace(preset.config('quick'), prompts=256)``).
    A preset with a ``module`` that cannot be imported, or whose compute fails, is returned ``skipped``.
    """
    preset = _preset(name)
    config = preset.config(size) if config is None else config
    result = PresetResult(preset.name, preset.title, size, config)
    start = time.perf_counter()
    try:
        if preset.module:
            importlib.import_module(preset.module)
        compute, plot, claims = (preset.resolve(a) for a in ("compute", "plot", "claims"))
        write_tables = preset.resolve("write_tables") if preset.write_tables else None
    except Exception as exc:  # noqa: BLE001 - a missing/broken optional module skips this preset
        result.skipped = f"{preset.module or 'module'} not available ({type(exc).__name__}: {exc})"
        return result
    out = None if out is None else Path(out)
    key = cache.cache_key(preset.name, config, preset.schema)
    path = None if out is None else cache.cache_path(out, preset.name, key)
    result.path = path
    ds = None if path is None else cache.load_cached(path, key, preset.schema)
    if ds is not None:
        result.cached = True
    else:
        try:
            ds = compute(config, progress=progress)
        except Exception as exc:  # noqa: BLE001
            if not preset.module:
                raise
            result.skipped = f"{preset.module} failed ({type(exc).__name__}: {exc})"
            return result
        problems = preset.schema.problems(ds) if preset.schema is not None else []
        if problems:
            raise ValueError(f"preset {preset.name!r}: its compute returned a Dataset that does not match the schema "
                             f"declared in its file ({'; '.join(problems)}); update the preset's SCHEMA")
        ds.attrs["preset"] = preset.name
        ds.attrs["config"] = json.dumps(cache.config_dict(config))
        ds.attrs["size"] = size
        if path is not None:
            ds = cache.save_result(ds, path, key, preset.schema)
    result.dataset = ds
    try:
        result.claims = [dataclasses.replace(c, preset=preset.name) for c in claims(ds)]
    except Exception as exc:  # noqa: BLE001
        if not preset.module:
            raise
        result.claims = [Claim("claims", f"claims of {preset.name}", f"could not be computed: {type(exc).__name__}: {exc}", SKIPPED, preset=preset.name)]
    if out is not None and write_tables is not None:
        result.tables = list(write_tables(ds, out / preset.name))
    if out is not None and save_figures:
        _draw(preset, plot, ds, out, result)
    result.seconds = time.perf_counter() - start
    return result


def _draw(preset: Preset, plot, ds, out: Path, result: PresetResult) -> None:
    """Draw the preset's figure into ``out/figures`` (a failing plot of a lazy preset becomes a SKIPPED claim)."""
    from ttscale import store

    try:
        fig = plot(ds)
    except Exception as exc:  # noqa: BLE001
        if not preset.module:
            raise
        result.claims.append(Claim("figure", f"figure of {preset.name}", f"plot failed: {type(exc).__name__}: {exc}", SKIPPED, preset=preset.name))
        return
    if fig is None:
        return
    import matplotlib.pyplot as plt

    result.figures += [Path(p) for p in store.write_figure(fig, out / "figures" / preset.figure)]
    plt.close(fig)


def reproduce(names: Optional[Sequence[str]] = None, size: str = "quick", out="reproduce", progress: bool = True) -> list[PresetResult]:
    """Run presets (all by default, in registry order), then write ``out/report.md``, ``out/report.html`` and
    ``out/claims.json`` (:func:`ttscale.report.write_report`). A plain quick run leaves out presets with
    ``quick_by_default=False`` (listed as SKIPPED with the command that runs them)."""
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
