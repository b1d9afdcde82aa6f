"""``ttscale reproduce``: run the paper's presets, write figures, data and a claims report.

Presets are listed and run in the order of :data:`ttscale.experiments.REGISTRY`; results are cached in
``DIR/data`` (keyed by config, dataset schema and package version), so a rerun recomputes only what changed.
Some presets also write tables (``DIR/<preset>/``): ``ttscale reproduce task_selection --full --out
results/selection`` regenerates ``results/selection``.
"""

from __future__ import annotations

import time

HELP = "reproduce the paper: run presets (all by default), write figures, .nc data and DIR/report.md/.html"


def add_arguments(p):
    p.add_argument("names", nargs="*", metavar="NAME", help="presets to run (default: all; see --list)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick", help="quick size (default; minutes on a CPU)")
    size.add_argument("--full", dest="size", action="store_const", const="full", help="publication size (GPU-friendly)")
    p.set_defaults(size="quick")
    p.add_argument("--out", default="reproduce", help="output directory (default ./reproduce); reruns reuse finished sweeps")
    p.add_argument("--list", action="store_true", help="list the presets and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from ttscale import experiments
    from ttscale.commands import prepare_out_dir

    if args.list:
        for name, preset in experiments.REGISTRY.items():
            extra = f"  (needs {preset.module})" if preset.module else ""
            print(f"{name:20s} {preset.title}{extra}")
        return 0
    prepare_out_dir("--out", args.out)
    start = time.perf_counter()
    results = experiments.reproduce(args.names or None, size=args.size, out=args.out, progress=not args.no_progress)
    wall = time.perf_counter() - start
    for r in results:
        if r.skipped:
            print(f"[{r.name}] SKIPPED: {r.skipped}")
            continue
        print(f"[{r.name}] {'cached' if r.cached else 'computed'} in {r.seconds:.1f} s")
        for c in r.claims:
            print(f"  {c.verdict:14s} {c.name}: {c.measurement[:160]}")
        for path in r.tables:
            print(f"  table: {path}")
    print(f"report: {args.out}/report.md and {args.out}/report.html ({wall:.1f} s)")
    return 0
