"""The result cache of :func:`ttscale.experiments.run_preset`: one ``.nc`` per (preset, config, schema, version).

The key is a hash of the preset name, its config (as a JSON dict), the preset's declared
:class:`~ttscale.experiments.registry.Schema` and the ttscale package version, so a new config, a changed
schema (declared in the preset's own file) or a new release never reuses an old result, with no global
version number to bump. A file is reused only if its stored key matches and it still holds every declared
variable with its declared dims; anything else is recomputed. Files go through :mod:`ttscale.store`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Optional

from ttscale import store


def config_dict(config) -> dict:
    """A config (dataclass, dict or other) as a JSON-ready dict (``inf`` as the string ``"inf"``)."""
    if dataclasses.is_dataclass(config):
        raw = dataclasses.asdict(config)
    elif isinstance(config, dict):
        raw = dict(config)
    else:
        raw = {"size": str(config)}
    return json.loads(json.dumps(raw, default=str, allow_nan=True).replace("Infinity", '"inf"'))


def _sampler() -> str:
    from ttscale.sweep_spec import SAMPLER, STATISTICS_SAMPLER

    return f"{SAMPLER}+{STATISTICS_SAMPLER}"  # sweeps draw statistics directly by default (SweepSpec.sampler)


def package_version() -> str:
    """The installed ttscale version (part of every cache key)."""
    import ttscale

    return str(ttscale.__version__)


def cache_key(name: str, config, schema=None, version: Optional[str] = None) -> str:
    """Stable short hash of ``(name, config, schema, package version, sampler version)`` keying the cached ``.nc`` file.

    The sampler version (:data:`ttscale.sweep_spec.SAMPLER`) is in the key because a new random-number
    scheme changes every Monte-Carlo number without changing the schema or the config.
    """
    payload = json.dumps({"name": name, "config": config_dict(config),
                          "schema": None if schema is None else schema.to_dict(),
                          "version": package_version() if version is None else str(version),
                          "sampler": _sampler()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def cache_path(out, name: str, key: str) -> Path:
    """``out/data/<name>-<key>.nc``."""
    return Path(out) / "data" / f"{name}-{key}.nc"


def load_cached(path, key: str, schema=None):
    """The Dataset cached at ``path`` if it exists, was written under ``key`` and satisfies ``schema``; else ``None``
    (an unreadable file also gives ``None``: it is recomputed and overwritten)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        ds = store.load_dataset(path)
    except Exception:  # noqa: BLE001 - a damaged cache file is recomputed
        return None
    if ds.attrs.get("cache_key") != key:
        return None
    if schema is not None and schema.problems(ds):
        return None
    return ds


def save_result(ds, path, key: str, schema=None):
    """Stamp ``ds`` with ``key`` (and the schema), write it to ``path`` through :func:`ttscale.store.save_dataset` and
    return it as read back (so a fresh and a cached run see the same Dataset)."""
    ds = ds.copy()
    ds.attrs["cache_key"] = key
    ds.attrs["ttscale_version"] = package_version()
    if schema is not None:
        ds.attrs["schema"] = json.dumps(schema.to_dict())
    store.save_dataset(ds, path)
    return store.load_dataset(path)
