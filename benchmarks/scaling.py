"""Scaling table: how ttscale's sweep cost grows with d, prompts and k_max (ttscale only).

    python benchmarks/scaling.py [--quick] [--d 10,20,50,100] [--prompts 1000,10000,100000] [--k-max 8,32,128]

One cell per configuration: ``Λ = Σ = power_law(d, α = 1)`` (tr = d), ``n = 20``,
``m = 40`` (sweep-A's test length; ``--m 0`` uses ``m = 2d``), pseudo-Newton, independent
prompts (with one cell the two sampling schemes cost the same). Reports the first call (with its compile seconds), the median of
``--repeats`` warm calls, prompts·k/s and GFLOP/s for the minimal arithmetic
``2 d² m + 2 d³ + k (2 d² + 2 d)`` per prompt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402
import bench_sweep as bs  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=str, default="10,20,50,100")
    p.add_argument("--prompts", type=str, default="1000,10000,100000")
    p.add_argument("--k-max", type=str, default="8,32,128")
    p.add_argument("--m", type=int, default=40, help="test prompt length (default 40; 0 means 2d)")
    p.add_argument("--n", type=float, default=20.0)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--crn", action="store_true", help="common random numbers (irrelevant for one cell)")
    bc.common_arguments(p)
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    bc.setup_devices(args)
    if args.quick:
        args.d, args.prompts, args.k_max = "4", "100", "4"
        args.repeats = min(args.repeats, 2)
    ds_ = [int(v) for v in args.d.split(",") if v]
    ps = [int(v) for v in args.prompts.split(",") if v]
    ks = [int(v) for v in args.k_max.split(",") if v]
    info = bc.machine_info()
    print(f"# scaling: one cell, Λ = Σ = power_law(d, 1), n = {args.n:g}, m = {args.m or '2d'}, "
          f"pseudo-Newton, repeats={args.repeats}")
    bc.print_machine(info)
    pk = None if args.no_peak else bc.peaks(1024 if args.quick else 2048)
    peak = pk["peak_gflops"] if pk else float("nan")
    if pk:
        print(f"# float32 matmul peak: NumPy {pk['numpy_gflops']:.1f} GFLOP/s, JAX {pk['jax_gflops']:.1f} GFLOP/s")
    print(f"{'d':>4} {'m':>4} {'prompts':>8} {'k_max':>6} {'first s':>8} {'compile s':>9} {'median s':>9} "
          f"{'prompts·k/s':>12} {'GFLOP/s':>8} {'% peak':>7}")
    rows = []
    for d in ds_:
        m = args.m or 2 * d
        for P in ps:
            for k in ks:
                fields = dict(d=d, family="power_law", alphas=(1.0,), test="aligned", ns=(args.n,), ms=(float(m),),
                              k_max=k, prompts=P, chunk=args.chunk, model="pseudo_newton", seed=0,
                              common_random_numbers=bool(args.crn))
                t = bc.time_call(lambda: bs.run_ttscale(fields), repeats=args.repeats)
                t.pop("result")
                fl = bs.minimal_flops_per_prompt(d, m, k) * P
                row = {"d": d, "m": m, "prompts": P, "k_max": k, "first_s": t["first_s"], "compile_s": t["compile_s"],
                       "median_s": t["median_s"], "rate": P * k / t["median_s"], "gflops": fl / t["median_s"] / 1e9,
                       "compiles_steady": t["compiles_steady"]}
                rows.append(row)
                print(f"{d:>4} {m:>4} {P:>8} {k:>6} {row['first_s']:>8.2f} {row['compile_s']:>9.2f} {row['median_s']:>9.4f} "
                      f"{bc.fmt_rate(row['rate']):>12} {row['gflops']:>8.2f} {100 * row['gflops'] / peak:>6.1f}%", flush=True)
    out = {"name": "scaling", "machine": info, "peaks": pk, "args": vars(args), "rows": rows}
    bc.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
