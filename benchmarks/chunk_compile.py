"""XLA compile seconds of the sweep's chunk program at the test suite's sizes, under each CPU compile option.

    python benchmarks/chunk_compile.py [--rounds 2] [--settings "engine,XLA's vector width,new fusion emitters"]

Each (round, setting) is a fresh process that runs ``prompt_errors`` for three small sweeps (d = 3 with m = 12 and
m = ∞, d = 3 with the statistics sampler and label noise, d = 12 with m = 40) and reports the backend-compile seconds
of each ``device_program`` (``jax.monitoring``'s ``/jax/core/compile/backend_compile_duration``). Settings:
``engine`` (the options :func:`ttscale.sweep._compiler_options` picks), ``XLA's vector width`` (without
``xla_cpu_prefer_vector_width=512``), ``new fusion emitters`` (without the legacy emitters), ``neither``. Extra
``XLA_FLAGS`` in the environment reach every child. The settings alternate within each round, as the machine drifts.
Returns ``{setting: [[seconds per program] per round]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402

SETTINGS = ("engine", "XLA's vector width", "new fusion emitters", "neither")
_INF = float("inf")
SHAPES = (
    dict(d=3, alphas=(0.0, 1.0), ns=(4.0, 16.0), ms=(12.0, _INF), k_max=4, prompts=600, chunk=256),
    dict(d=3, alphas=(0.0, 1.0), ns=(4.0, 16.0), ms=(12.0,), k_max=4, prompts=600, chunk=256, sampler="statistics",
         noise=0.2),
    dict(d=12, alphas=(0.0, 1.0), ns=(4.0, 16.0), ms=(40.0,), k_max=8, prompts=256, chunk=256, noise=0.3),
)


def child(setting: str) -> list:
    from jax import monitoring

    from ttscale import sweep
    from ttscale.sweep import SweepSpec, prompt_errors

    if setting in ("XLA's vector width", "neither"):
        sweep._INDEPENDENT_CPU_OPTIONS = {}
    if setting in ("new fusion emitters", "neither"):
        sweep._LEGACY_EMITTERS = {}
    seconds = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration" and kwargs.get("fun_name") in ("device_program", "jit(device_program)"):
            seconds.append(duration)

    monitoring.register_event_duration_secs_listener(listen)
    for shape in SHAPES:
        prompt_errors(SweepSpec(**shape))
    return seconds


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of: {', '.join(SETTINGS)}")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print("RESULT " + json.dumps(child(args.child)))
        return {}
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    bc.print_machine(bc.machine_info())
    env = dict(os.environ, TTSCALE_NO_CACHE="1")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # every compile is a real one
    out = {s: [] for s in settings}
    for r in range(args.rounds):
        for setting in settings:
            run = subprocess.run([sys.executable, __file__, "--child", setting], env=env, capture_output=True,
                                 text=True, check=True)
            seconds = json.loads([ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
            out[setting].append(seconds)
            print(f"round {r + 1}  {setting:<21} " + "  ".join(f"{s:.2f} s" for s in seconds), flush=True)
    bc.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
