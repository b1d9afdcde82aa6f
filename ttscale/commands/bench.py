"""``ttscale bench [NAME ...] [--quick]``: run the canonical benchmarks in ``benchmarks/``.

Each benchmark is a script in the repository's ``benchmarks/`` folder that times ttscale and a
vectorised NumPy baseline in the same run (see ``benchmarks/RESULTS.md``). They run one after
another, each in its own Python process (so peak-memory and compile figures are per benchmark).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HELP = "run the canonical benchmarks (sweep-A, sweep-A-lsa, train-lsa, gpt2-tokens, scaling) vs NumPy"

#: name → (script, extra arguments, one-line description)
BENCHMARKS = {
    "sweep-a": ("sweep_a.py", [], "sweep-A: pseudo-Newton sweep, CRN and independent, vs NumPy"),
    "sweep-a-lsa": ("sweep_a_lsa.py", [], "sweep-A through the literal LSA forward vs literal NumPy"),
    "train-lsa": ("train_lsa.py", [], "LSA SGD training throughput vs NumPy SGD"),
    "gpt2-tokens": ("gpt2_tokens.py", [], "GPT-2 forward / CoT tokens/s vs a NumPy forward"),
    "scaling": ("scaling.py", [], "cost vs d, prompts, k_max (ttscale only)"),
    "profile": ("profile_sweep.py", [], "where sweep-A's time goes (engine pieces in isolation)"),
    "parts": ("sweep_parts.py", [], "sweep-A's chunk program with its sampler or kernel ablated"),
    "variants": ("sampler_variants.py", [], "sweep-A's chunk program with other sampler/kernel layouts and XLA options"),
    "crn-kernel": ("crn_kernel.py", [], "sweep-A's CRN chunk program with other groups, blocks, layouts and YNNPACK fusions"),
    "crn-ceiling": ("crn_ceiling.py", [], "sweep-A's CRN kernel against a hand-tiled AVX2 C kernel (needs a C compiler)"),
    "netcdf": ("netcdf_engines.py", [], "writing a sweep's Dataset with each installed netCDF engine"),
    "first-calls": ("first_calls.py", [], "first (compiling) and warm calls of the functional API outside jit"),
    "numpy-partition": ("numpy_partition.py", [], "NumPy's partition (the exact medians' kernel) on this CPU's kernels"),
}
DEFAULT = ("sweep-a", "sweep-a-lsa", "train-lsa", "gpt2-tokens", "scaling")


def benchmarks_dir() -> Path:
    """``benchmarks/`` next to the ``ttscale`` package (an editable install or a source checkout)."""
    env = os.environ.get("TTSCALE_BENCHMARKS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "benchmarks"


def add_arguments(p):
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"benchmarks to run (default: {' '.join(DEFAULT)}; also: profile); 'list' lists them")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test that every benchmark runs")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (median; default 3)")
    p.add_argument("--json-dir", type=str, default=None, help="write one <name>.json per benchmark here")


def run(args) -> int:
    names = [n.lower() for n in args.names] or list(DEFAULT)
    if names == ["list"]:
        wide = max(map(len, BENCHMARKS)), max(len(script) for script, _, _ in BENCHMARKS.values())
        for name, (script, _, desc) in BENCHMARKS.items():
            print(f"{name:<{wide[0]}} benchmarks/{script:<{wide[1]}} {desc}")
        return 0
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    if args.repeats is not None and args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    folder = benchmarks_dir()
    if not folder.is_dir():
        raise ValueError(f"benchmarks folder not found at {folder} (set TTSCALE_BENCHMARKS to a checkout's benchmarks/)")
    if args.json_dir:
        from ttscale.commands import prepare_out_dir

        prepare_out_dir("--json-dir", args.json_dir)
    failed = []
    for name in names:
        script, extra, desc = BENCHMARKS[name]
        cmd = [sys.executable, str(folder / script), *extra]
        if args.quick:
            cmd.append("--quick")
        if args.repeats is not None:
            cmd += ["--repeats", str(args.repeats)]
        if args.json_dir:
            cmd += ["--json", str(Path(args.json_dir) / f"{name}.json")]
        print(f"=== {name}: {desc}\n$ {' '.join(cmd)}", flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            failed.append(name)
            print(f"=== {name} failed (exit {rc})", file=sys.stderr)
    return 1 if failed else 0
