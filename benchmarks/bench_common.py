"""Shared helpers for the benchmark scripts: timing, compile accounting, peaks, machine, agreement.

Conventions used by every script:

* wall times are medians of ``repeats`` (≥ 3) steady-state runs; the first call of a jitted
  path is timed separately and its XLA compile seconds are read from ``jax.monitoring``
  (``/jax/core/compile/backend_compile_duration`` events), so compile is never hidden in a
  median and never counted twice;
* "achieved GFLOP/s" divides a stated FLOP count (the minimal arithmetic of the workload, see
  each script) by the median wall time; "% of peak" is against a float32 matmul measured in
  the same run (NumPy and JAX);
* statistical agreement between two Monte-Carlo estimates of the same mean uses
  ``z = |a − b| / sqrt(se_a² + se_b²)``; cells where both estimates are finite are compared.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


# ----------------------------------------------------------------------------- compile accounting
class CompileCounter:
    """Counts XLA backend compiles and their seconds while active (a context manager)."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0
        self.seconds = 0.0

    def _listener(self, event, duration_secs, **kwargs):
        if event == self.EVENT:
            self.count += 1
            self.seconds += float(duration_secs)

    def __enter__(self):
        from jax import monitoring

        monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        from jax import monitoring

        monitoring.unregister_event_duration_listener(self._listener)
        return False


# ----------------------------------------------------------------------------- timing
def time_call(fn: Callable, repeats: int = 3, warmup: bool = True) -> dict:
    """Time ``fn()``: a first (cold) call with compile accounting, then ``repeats`` warm calls.

    Returns ``{"first_s", "compile_s", "compiles_first", "compiles_steady", "times_s",
    "median_s", "result"}``; ``result`` is the value of the last call. ``compiles_steady > 0``
    means something recompiled on a warm call (a bug the lead wants to know about).
    """
    out = {}
    if warmup:
        with CompileCounter() as cc:
            t0 = time.perf_counter()
            result = fn()
            out["first_s"] = time.perf_counter() - t0
        out["compile_s"] = cc.seconds
        out["compiles_first"] = cc.count
    times = []
    with CompileCounter() as cc:
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
    out["compiles_steady"] = cc.count
    out["times_s"] = times
    out["median_s"] = float(np.median(times))
    out["result"] = result
    return out


def warm_seconds(fn: Callable, repeats: int = 3) -> list:
    """Seconds of each of ``repeats`` warm calls of ``fn()`` (one call first to compile), each waited for with
    ``jax.block_until_ready``."""
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return times


def best_warm_seconds(fn: Callable, repeats: int = 3) -> float:
    """Best of ``repeats`` warm calls of ``fn()`` (:func:`warm_seconds`): the figure of the micro-benchmarks
    (kernel layouts, RNG options, ablations)."""
    return min(warm_seconds(fn, repeats))


def alternate_variants(variants, run: Callable, rounds: int, compared: Callable = lambda variant: True,
                       width: int = 16) -> dict:
    """Time ``variants`` in ``rounds`` alternating rounds in one process, printing a line per timing.

    ``run(variant) -> (seconds, errors, label)``; ``"engine"`` is the reference, and each variant for which
    ``compared(variant)`` holds also gets the largest relative difference of its ``errors`` from the engine's (over
    the engine's finite, positive errors). Returns ``{"seconds": {variant: [s per round]},
    "max_relative_difference": {variant: largest over rounds}}``.
    """
    reference = None
    times: dict = {}
    differences: dict = {}
    for _ in range(rounds):
        for variant in variants:
            best, errs, label = run(variant)
            times.setdefault(variant, []).append(best)
            note = ""
            if variant == "engine":
                reference = errs
            elif reference is not None and compared(variant):
                finite = np.isfinite(reference) & (reference > 0)
                rel = float(np.max(np.abs(errs[finite] - reference[finite]) / reference[finite]))
                differences[variant] = max(rel, differences.get(variant, 0.0))
                note = f"  max relative difference from the engine {rel:.1e}"
            print(f"{variant:{width}s} {best:.3f} s{label}{note}", flush=True)
    print("# best of each round: " + "; ".join(f"{v} {', '.join(f'{t:.3f}' for t in ts)}" for v, ts in times.items()))
    return {"seconds": times, "max_relative_difference": differences}


def time_numpy(fn: Callable, repeats: int = 3) -> dict:
    """Median of ``repeats`` calls of a NumPy function (no compile) → ``{"times_s", "median_s", "result"}``."""
    times = []
    result = None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return {"times_s": times, "median_s": float(np.median(times)), "result": result}


# ----------------------------------------------------------------------------- peaks
def jax_matmul_peak_gflops(size: int = 2048, repeats: int = 3) -> float:
    """Median float32 GFLOP/s of a jitted ``A @ B`` (``[size, size]``) on JAX's default device."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    A = jax.random.normal(ka, (size, size), jnp.float32)
    B = jax.random.normal(kb, (size, size), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(A, B).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(A, B).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / float(np.median(times)) / 1e9


def peaks(size: int = 2048, repeats: int = 3) -> dict:
    """``{"numpy_gflops", "jax_gflops", "peak_gflops"}`` measured now (peak = the larger)."""
    from numpy_baselines import matmul_peak_gflops

    np_peak = matmul_peak_gflops(size, repeats)
    jax_peak = jax_matmul_peak_gflops(size, repeats)
    return {"numpy_gflops": np_peak, "jax_gflops": jax_peak, "peak_gflops": max(np_peak, jax_peak),
            "matmul_size": size}


# ----------------------------------------------------------------------------- machine
def machine_info() -> dict:
    """nproc, CPU model (with its family and model numbers), load average, date (UTC), Python/NumPy/JAX versions,
    JAX devices."""
    from ttscale.numpy_dispatch import first_cpu

    cpu = first_cpu()
    model = cpu.get("model name", "unknown")
    if "cpu family" in cpu:
        model += f", family {cpu['cpu family']} model {cpu.get('model', '?')}"
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    with contextlib.suppress(Exception):
        import jax

        info["jax"] = jax.__version__
        info["devices"] = [str(dv) for dv in jax.devices()]
    return info


def print_machine(info: dict) -> None:
    la = ", ".join(f"{v:.2f}" for v in info["loadavg"])
    print(f"# machine: {info['nproc']} cores, {info['cpu_model']}; load average {la}; {info['date_utc']}")
    print(f"# python {info['python']}, numpy {info['numpy']}, jax {info.get('jax', '-')}, devices {info.get('devices', '-')}")


# ----------------------------------------------------------------------------- agreement
def agreement(mean_a, se_a, mean_b, se_b, z_max: float = 5.0, skip_k0: bool = False) -> dict:
    """Compare two Monte-Carlo mean arrays cell by cell.

    ``z = |a − b| / sqrt(se_a² + se_b²)`` over entries where all four numbers are finite and
    the combined s.e. is positive. Returns ``{"cells", "compared", "max_z", "frac_within",
    "ok"}``; ``ok`` when every compared cell has ``z ≤ z_max`` (with thousands of cells a
    threshold of 5 keeps the false-alarm rate ≈ 1e-3 for Gaussian errors). Heavy-tailed
    (overthinking) cells have unreliable standard errors; ``frac_within`` shows how many pass.
    """
    a, sa, b, sb = (np.asarray(v, np.float64) for v in (mean_a, se_a, mean_b, se_b))
    if skip_k0:
        a, sa, b, sb = (v[..., 1:] for v in (a, sa, b, sb))
    se = np.sqrt(sa**2 + sb**2)
    ok_mask = np.isfinite(a) & np.isfinite(b) & np.isfinite(se) & (se > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(a - b) / se
    zc = z[ok_mask]
    return {
        "cells": int(a.size),
        "compared": int(zc.size),
        "max_z": float(zc.max()) if zc.size else float("nan"),
        "frac_within": float(np.mean(zc <= z_max)) if zc.size else float("nan"),
        "z_max": z_max,
        "ok": bool(zc.size > 0 and np.all(zc <= z_max)),
    }


# ----------------------------------------------------------------------------- memory
def peak_rss_mib_of(code: str, timeout: float = 900) -> dict:
    """Run ``code`` in a fresh ``python -c`` subprocess (``benchmarks/`` on the path) → its max RSS (MiB).

    The child prints its peak RSS after ``code`` finishes: ``VmHWM`` from ``/proc/self/status``
    (the high-water mark of this process image; ``ru_maxrss`` is not used because after
    ``fork``+``exec`` Linux keeps the parent's figure when it is larger), falling back to
    ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` where ``/proc`` is missing. The child's stdout
    is returned as ``"stdout"``.
    """
    wrapper = (
        "import sys, resource\n"
        f"sys.path.insert(0, {str(BENCH_DIR)!r})\n"
        f"{code}\n"
        "kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    kib = int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
        "except Exception:\n"
        "    pass\n"
        "print('MAXRSS_KIB', kib)\n"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=timeout,
                          cwd=str(REPO_ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{proc.stderr[-2000:]}")
    kib = None
    for line in proc.stdout.splitlines():
        if line.startswith("MAXRSS_KIB"):
            kib = int(line.split()[1])
    return {"maxrss_mib": kib / 1024 if kib else float("nan"), "stdout": proc.stdout}


def self_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- output
def fmt_rate(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    def default(o):
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)
    Path(path).write_text(json.dumps(payload, indent=2, default=default))


def setup_devices(args) -> int:
    """``ttscale.use_cpu_cores(args.cpu_devices)`` before any JAX work (as the ``ttscale`` CLI does); prints the count."""
    from ttscale.devices import use_cpu_cores

    n = use_cpu_cores(args.cpu_devices, warn=args.cpu_devices is not None)
    print(f"# XLA CPU devices: {n} (ttscale.use_cpu_cores; --cpu-devices to change)")
    return n


def common_arguments(parser, repeats: int = 3) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, seconds)")
    parser.add_argument("--cpu-devices", type=int, default=None,
                        help="XLA CPU devices the sweeps shard over (default: one per usable core, as the ttscale CLI)")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed repeats, median reported (default {repeats})")
    parser.add_argument("--json", type=str, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--no-peak", action="store_true", help="skip the matmul-peak measurement")


# ----------------------------------------------------------------------------- strong NumPy baseline
def strong_numpy(d: int, alphas, ns, m: int, k_max: int, prompts: int, scheme: str, ttscale_s: float,
                 repeats: int = 3, seed: int = 1, threads: int = 2, ttscale_prompts: int | None = None,
                 mean=None, stderr=None) -> dict:
    """Time the strong NumPy baseline (``numpy_baselines.sweep_numpy_strong``) and print ttscale's ratio to it.

    Two rows: ``"prompts"`` (NumPy draws ``Z``: like-for-like against ttscale drawing prompts) and, when
    ``m ≥ d``, ``"wishart"`` (NumPy draws ``S_Z`` by Bartlett: end-to-end against ttscale's best sampler).
    The normal generator is the faster of Box–Muller and ``standard_normal`` measured now. Ratios are per
    prompt (``ttscale_prompts`` per cell on ttscale's side, default ``prompts``); with ``mean``/``stderr``
    (ttscale's) each row also reports :func:`agreement`. Returns ``{"method", "rows": {sampler: {...}},
    "strongest": sampler}``.
    """
    from numpy_baselines import sweep_numpy_strong, time_normal_methods

    method = time_normal_methods(size=1 << 21, repeats=3)["fastest"]
    tt_rate = (ttscale_prompts or prompts) / ttscale_s
    out = {"method": method, "rows": {}}
    for sampler in ("prompts", "wishart") if m >= d else ("prompts",):
        res = time_numpy(lambda: sweep_numpy_strong(d, alphas, ns, m, k_max, prompts, scheme=scheme, sampler=sampler,
                                                    seed=seed, threads=threads, method=method), repeats=repeats)
        summ = res.pop("result").summary
        res["ratio"] = tt_rate / (prompts / res["median_s"])
        if mean is not None:
            res["agreement"] = agreement(mean, stderr, summ.mean, summ.stderr)
        out["rows"][sampler] = res
        ok = "" if mean is None else f"  agreement max z {res['agreement']['max_z']:.2f} -> {'OK' if res['agreement']['ok'] else 'CHECK'}"
        print(f"{'NumPy strong (' + sampler + ')':<22} {scheme:<12} {'':>8} {'':>9} {res['median_s']:>9.3f} "
              f"{'':>12} {'':>8} {'':>7} {1.0:>7.1f}×  ttscale is {res['ratio']:.2f}× this "
              f"({method} normals, {threads} threads){ok}")
    out["strongest"] = min(out["rows"], key=lambda k: out["rows"][k]["median_s"])
    return out
