"""Use every CPU core: split the host CPU into several XLA devices so sweeps shard over them.

XLA runs one CPU program on one thread except inside large single operations, so a sweep,
whose work is many small per-prompt loops, uses one core of a multi-core machine. The sweep
engine shards the prompts of every chunk over all devices (:func:`ttscale.sweep.run_sweep`);
with the CPU split into one device per core it uses every core. Measured on the 2-core CI
machine on 2026-12-02 (``python benchmarks/sweep_parts.py --cpu-devices 1`` vs the default 2): sweep-A's
chunk program (independent prompts) takes 1.098 s on one device and 0.556 s on two
(``benchmarks/RESULTS.md``). Code that does not shard still runs on device 0, and large
operations keep using every core there, so nothing else slows down.

JAX reads the setting when it initialises its backends, i.e. at the first JAX operation:
call :func:`use_cpu_cores` right after ``import ttscale`` (the ``ttscale`` command line does).
"""

from __future__ import annotations

import os
import re
import warnings

_FLAG = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def usable_cores() -> int:
    """Cores this process may run on (``sched_getaffinity``, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def use_cpu_cores(n=None, *, warn: bool = True) -> int:
    """Expose the host CPU as ``n`` XLA devices (default :func:`usable_cores`); returns the count in effect.

    Sets ``jax_num_cpu_devices``. An explicit ``XLA_FLAGS=--xla_force_host_platform_device_count=K``
    wins (``K`` is returned). If JAX has already initialised its backends the setting can no
    longer change: the current CPU device count is returned, with a warning unless ``warn=False``.
    Affects only the CPU backend (GPU/TPU devices are untouched).
    """
    import jax

    if n is None:
        n = usable_cores()
    import numpy as np  # not at the top: the command line chooses how NumPy is imported (ttscale.numpy_dispatch)

    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    forced = _FLAG.search(os.environ.get("XLA_FLAGS", ""))
    if forced:
        return int(forced.group(1))
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        current = len(jax.devices("cpu"))
        if warn and current != n:
            warnings.warn(f"JAX is already initialised with {current} CPU device(s); call use_cpu_cores() "
                          f"before any JAX operation to use {n}", stacklevel=2)
        return current
    return n


_DISTRIBUTED_ENV = ("TTSCALE_COORDINATOR", "TTSCALE_NUM_PROCESSES", "TTSCALE_PROCESS_ID")


def use_distributed(coordinator: str | None = None, num_processes: int | None = None,
                    process_id: int | None = None, *, timeout: int = 300) -> tuple[int, int]:
    """Join a multi-process JAX job (``jax.distributed.initialize``); returns ``(process_index, process_count)``.

    Call it in every process, before any JAX operation (and after :func:`use_cpu_cores`, which only sets
    a config value). With no arguments the three settings come from ``TTSCALE_COORDINATOR``
    (``host:port`` of process 0), ``TTSCALE_NUM_PROCESSES`` and ``TTSCALE_PROCESS_ID`` when those are set
    (all three or none); otherwise JAX detects them itself on SLURM (``srun``, one task per node), Cloud
    TPU pods, Open MPI and Kubernetes jobs (``JAX_COORDINATOR_ADDRESS`` is honoured by JAX). On a CPU
    the processes talk over gloo (``jax_cpu_collectives_implementation``). :func:`ttscale.sweep.run_sweep`
    then shards each chunk's prompts over the devices of all processes and process 0 writes ``out``
    (``ttscale sweep --distributed``; ``tests/test_multiprocess.py`` runs two processes on localhost).
    ``timeout`` (seconds) bounds the wait for the other processes.
    """
    env = {name: os.environ.get(name, "").strip() for name in _DISTRIBUTED_ENV}
    if coordinator is None and num_processes is None and process_id is None and any(env.values()):
        missing = [name for name, value in env.items() if not value]
        if missing:
            raise ValueError(f"{', '.join(missing)}: set all of {', '.join(_DISTRIBUTED_ENV)} or none of them")
        coordinator = env["TTSCALE_COORDINATOR"]
        try:
            num_processes, process_id = int(env["TTSCALE_NUM_PROCESSES"]), int(env["TTSCALE_PROCESS_ID"])
        except ValueError:
            raise ValueError(f"TTSCALE_NUM_PROCESSES and TTSCALE_PROCESS_ID must be integers, got "
                             f"{env['TTSCALE_NUM_PROCESSES']!r} and {env['TTSCALE_PROCESS_ID']!r}") from None
    if coordinator is not None and (not isinstance(coordinator, str) or ":" not in coordinator):
        raise ValueError(f"coordinator must be 'host:port', got {coordinator!r}")
    for name, value, low in (("num_processes", num_processes, 1), ("process_id", process_id, 0)):
        if value is None:
            continue
        import numpy as np

        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise ValueError(f"process_id must be < num_processes = {num_processes}, got {process_id}")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives (affects only the CPU)
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=int(timeout))
    return jax.process_index(), jax.process_count()


def prompt_mesh(n_devices: int):
    """A one-axis mesh ``("prompts",)`` over the first ``n_devices`` devices (of every process)."""
    import jax
    from jax.sharding import Mesh

    import numpy as np

    return Mesh(np.asarray(jax.devices()[:n_devices]), ("prompts",))


def shard_map(f, mesh, in_specs, out_specs):
    """``jax.shard_map`` without replication checks (``jax.experimental.shard_map`` on older jax)."""
    import jax

    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map  # pragma: no cover - older jax

    return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)  # pragma: no cover


def cache_root() -> str | None:
    """ttscale's cache directory: ``$TTSCALE_CACHE_DIR``, else ``$XDG_CACHE_HOME/ttscale`` (``~/.cache/ttscale``);
    ``None`` when ``TTSCALE_NO_CACHE`` is set (to anything but ``0``). Nothing is created."""
    if os.environ.get("TTSCALE_NO_CACHE", "").strip() not in ("", "0"):
        return None
    return os.environ.get("TTSCALE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "ttscale")


def use_compile_cache(directory: str | None = None) -> str | None:
    """Keep compiled programs across processes; returns the cache directory (``None``: off).

    Two caches under ``directory`` (default ``$TTSCALE_CACHE_DIR``, else ``$XDG_CACHE_HOME/ttscale``,
    i.e. ``~/.cache/ttscale``), each in a subdirectory named by the digest of ttscale's source
    (:func:`ttscale.aot.source_digest`): ``xla/<digest>/``, JAX's persistent compilation cache (every
    compiled program, so a second run of the same shapes skips XLA's compile), and ``aot/<digest>/``, the
    sweep engine's own compiled executables (:mod:`ttscale.aot`: a second run of the same shapes also skips
    tracing and lowering them). Per-source directories because jaxlib cannot re-serialise an executable that
    JAX's cache loaded, so the engine's programs must be compiled afresh once per ttscale source; the
    directories of other sources are removed. ``TTSCALE_NO_CACHE=1`` turns both caches off. Call before the
    first compile; the ``ttscale`` command does (``ttscale --no-cache`` to skip). Sweep-A's whole-process
    times are in ``benchmarks/RESULTS.md``.
    """
    if directory is None:
        directory = cache_root()
    if directory is None or os.environ.get("TTSCALE_NO_CACHE", "").strip() not in ("", "0"):
        return None
    from ttscale import aot

    digest = aot.source_digest()[:16]
    xla = os.path.join(directory, "xla", digest)
    try:
        os.makedirs(xla, exist_ok=True)
    except OSError:
        return None  # an unwritable cache is no reason to fail a run
    for kind in ("xla", "aot"):
        _remove_other_entries(os.path.join(directory, kind), keep=digest)
    import jax

    jax.config.update("jax_compilation_cache_dir", xla)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    aot.enable(os.path.join(directory, "aot", digest))
    return directory


def _remove_other_entries(folder: str, keep: str) -> None:
    """Delete what ``folder`` holds besides ``keep`` (caches of other ttscale sources, files of older layouts)."""
    import shutil

    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name == keep:
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
