"""The sweep engine's tuning constants, measured: prompt-block size and the 512-bit vector option of the chunk program,
and where a warm ``run_sweep`` spends its time outside that program.

    python benchmarks/engine_settings.py [--rounds 3] [--repeats 7] [--workloads pseudo_newton,crn,gd,lsa] [--host]

Each (workload, setting) runs in a process of its own (the settings are read when the program is built), the
settings alternating within each round; each line gives the median of ``--repeats`` warm calls of sweep-A's chunk
program (all 80 cells × 4096 prompts, every device) and XLA's compile seconds for it (``jax.monitoring``'s
backend-compile event; extra ``XLA_FLAGS`` in the environment reach every child). Settings: ``sweep._PROMPT_BLOCK`` 16 (the engine's) vs 8;
the chunk program's ``xla_cpu_prefer_vector_width=512`` (``sweep._INDEPENDENT_CPU_OPTIONS``: independent prompts
only) vs XLA's default width (for CRN, the option forced vs the engine's default); and, for independent prompts,
XLA's legacy loop-fusion emitters (``sweep._LEGACY_EMITTERS``, the engine's choice on jaxlib 0.10) vs its newer
fusion emitters (XLA's default; for CRN, the legacy ones forced vs the engine's default). ``--host``: wrappers time the pieces of five warm ``run_sweep`` calls (``PromptErrors.put``,
the median, the closed forms, ...), per call.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: label -> (prompt block, compiler options: "engine" as sweep._compiler_options decides, "xla" the same without the
#: vector width, "512" the width forced (CRN), "new-emitters" the same without the legacy emitters, "legacy" those forced (CRN))
SETTINGS = {"engine": (16, "engine"), "block 8": (8, "engine"), "XLA's vector width": (16, "xla"), "512-bit forced": (16, "512"),
            "new fusion emitters": (16, "new-emitters"), "legacy emitters forced": (16, "legacy")}
#: settings that do not apply: the engine's CRN program has neither option (so each is forced there instead), its
#: independent programs have both
SKIP = {"crn": ("XLA's vector width", "new fusion emitters"), "other": ("512-bit forced", "legacy emitters forced")}


def _spec(workload: str, quick: bool):
    import numpy as np

    from ttscale.sweep_spec import SweepSpec

    spectra, prompts = (3, 256) if quick else (16, 4096)
    model = "pseudo_newton" if workload == "crn" else workload
    return SweepSpec(d=20, alphas=np.linspace(0, 2, spectra).tolist(), ns=(5, 10, 20, 40, 80), ms=(40,), k_max=32,
                     prompts=prompts, common_random_numbers=workload == "crn", model=model)


def child(block: int, width: str, workload: str, repeats: int, quick: bool) -> dict:
    import jax
    import numpy as np
    from jax import monitoring

    import ttscale
    from ttscale import sweep

    ttscale.use_cpu_cores()
    sweep._PROMPT_BLOCK = block
    engine_options = sweep._compiler_options

    def without(*names):
        def options(shape, mesh):
            kept = {k: v for k, v in (engine_options(shape, mesh) or {}).items() if k not in names}
            return kept or None
        return options

    if width == "xla":
        sweep._compiler_options = without("xla_cpu_prefer_vector_width")
    elif width == "512":
        sweep._compiler_options = lambda shape, mesh: {"xla_cpu_prefer_vector_width": 512}
    elif width == "new-emitters":
        sweep._compiler_options = without(*sweep._LEGACY_EMITTERS)
    elif width == "legacy":
        sweep._compiler_options = lambda shape, mesh: dict(sweep._LEGACY_EMITTERS)
    compiled = []

    def listen(event, duration, **kwargs):  # XLA's compile of the chunk program (named "jit(device_program)")
        if event == "/jax/core/compile/backend_compile_duration" and "device_program" in str(kwargs.get("fun_name")):
            compiled.append(duration)

    monitoring.register_event_duration_secs_listener(listen)
    spec = _spec(workload, quick)
    engine = sweep._Engine(spec)
    batch = engine.padded(spec.prompts)
    program = engine.program(0, batch)
    args = (engine.keys(0), engine.cells, np.uint32(0), np.int32(spec.prompts))
    jax.block_until_ready(program(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(program(*args))
        times.append(time.perf_counter() - t0)
    return {"min": min(times), "median": float(np.median(times)), "compile": sum(compiled)}


def host_parts(quick: bool, workload: str = "pseudo_newton") -> dict:
    import ttscale
    from ttscale import summary, sweep, sweep_spec

    ttscale.use_cpu_cores()
    spent: dict = {}
    originals = []

    def wrap(owner, name):
        fn = getattr(owner, name)
        originals.append((owner, name, fn))

        @functools.wraps(fn)
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        setattr(owner, name, timed)

    for name in ("theory_on_grid", "cell_parameters", "spectrum_coords"):
        wrap(sweep, name)
    wrap(sweep._Engine, "chunk")
    wrap(summary.PromptErrors, "put")
    wrap(summary.PromptErrors, "median")
    wrap(sweep_spec.SweepSpec, "training_covariances")
    wrap(sweep_spec.SweepSpec, "test_covariances")
    spec = _spec(workload, quick)
    try:
        for _ in range(3):
            sweep.run_sweep(spec, progress=False)
        spent.clear()
        calls, t0 = 5, time.perf_counter()
        for _ in range(calls):
            sweep.run_sweep(spec, progress=False)
        out = {"run_sweep": (time.perf_counter() - t0) / calls}
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
    out.update({k: v / calls for k, v in spent.items()})
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--workloads", default="pseudo_newton,crn,gd,lsa")
    p.add_argument("--host", action="store_true", help="time run_sweep's pieces outside the chunk program instead")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    p.add_argument("--compile-json", default=None, help="also write each setting's compile seconds here")
    p.add_argument("--child", nargs=3, metavar=("BLOCK", "WIDTH", "WORKLOAD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        block, width, workload = args.child
        print(json.dumps(child(int(block), width, workload, args.repeats, args.quick)))
        return {}
    if args.host:
        out = {}
        for workload in args.workloads.split(","):
            parts = host_parts(args.quick, workload)
            print(f"# warm run_sweep of sweep-A (m = 40, {workload}), per call over 5 calls")
            for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
                print(f"{name:24s} {1000 * seconds:8.1f} ms", flush=True)
            out[workload] = parts
        return out
    rows, compiles = {}, {}
    print(f"# sweep-A chunk program, median of {args.repeats} warm calls and XLA's compile of it (without JAX's"
          f" persistent cache unless JAX_COMPILATION_CACHE_DIR is set), one process per setting, {args.rounds} rounds")
    for workload in args.workloads.split(","):
        for _ in range(args.rounds):
            for label, (block, width) in SETTINGS.items():
                if label in SKIP["crn" if workload == "crn" else "other"]:
                    continue
                cmd = [sys.executable, __file__, "--child", str(block), width, workload,
                       "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                rows.setdefault((workload, label), []).append(r["median"])
                compiles.setdefault((workload, label), []).append(r["compile"])
                print(f"{workload:14s} {label:28s} median {r['median']:.3f} s  (min {r['min']:.3f});"
                      f" XLA compile {r['compile']:.2f} s", flush=True)
    if args.compile_json:
        import bench_common as bc

        bc.write_json(args.compile_json, {f"{w} | {s}": v for (w, s), v in compiles.items()})
    return {f"{w} | {s}": v for (w, s), v in rows.items()}


if __name__ == "__main__":
    main()
