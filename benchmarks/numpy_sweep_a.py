"""Sweep-A in plain NumPy as a whole process (the strong baseline), for `time` against the ttscale CLI.

    time python benchmarks/numpy_sweep_a.py --m 40 --out /tmp/numpy_sweepA.npz
    time ttscale sweep --d 20 --alpha 0:2:16 --n 5,10,20,40,80 --m 40 --k-max 32 --prompts 4096 --out /tmp/sweepA.nc

Same workload and defaults as that ``ttscale sweep`` command (d = 20, α ∈ linspace(0, 2, 16),
n ∈ 5..80, k = 0..32, 4096 prompts per cell, pseudo-Newton, Σ = Λ): imports NumPy only, runs
:func:`numpy_baselines.sweep_numpy_strong` and writes ``mean, stderr, median [S, N, k_max + 1]``
plus the settings to ``--out`` (``.npz``). ``--sampler wishart`` draws ``S_Z`` directly (the
end-to-end comparison against ttscale's statistics sampler); ``--crn`` shares one draw per prompt
block across cells.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=20)
    p.add_argument("--alpha", default="0:2:16", help="a:b:N (linspace) or a,b,c")
    p.add_argument("--n", default="5,10,20,40,80")
    p.add_argument("--m", type=int, default=40)
    p.add_argument("--k-max", type=int, default=32)
    p.add_argument("--prompts", type=int, default=4096)
    p.add_argument("--crn", action="store_true", help="common random numbers (one draw shared by every cell)")
    p.add_argument("--sampler", choices=("prompts", "wishart"), default="prompts")
    p.add_argument("--normals", choices=("box_muller", "generator"), default="box_muller")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the summary here (.npz)")
    args = p.parse_args(argv)

    import numpy as np

    import numpy_baselines as nb

    if ":" in args.alpha:
        a, b, c = args.alpha.split(":")
        alphas = np.linspace(float(a), float(b), int(c))
    else:
        alphas = np.array([float(x) for x in args.alpha.split(",")])
    ns = tuple(float(x) for x in args.n.split(","))
    t0 = time.perf_counter()
    res = nb.sweep_numpy_strong(args.d, alphas, ns, args.m, args.k_max, args.prompts,
                                scheme="crn" if args.crn else "independent", sampler=args.sampler, seed=args.seed,
                                block=args.block, threads=args.threads, method=args.normals)
    wall = time.perf_counter() - t0
    s = res.summary
    if args.out:
        np.savez(args.out, mean=s.mean, stderr=s.stderr, median=s.median, alpha=alphas, n=np.asarray(ns),
                 m=args.m, d=args.d, k=np.arange(args.k_max + 1), prompts=args.prompts, sampler=args.sampler,
                 scheme="crn" if args.crn else "independent", seconds=wall)
    print(f"numpy sweep-A: {len(alphas)} spectra x {len(ns)} n, m = {args.m}, k = 0..{args.k_max}, "
          f"{args.prompts} prompts/cell, {'crn' if args.crn else 'independent'}, sampler {args.sampler}, "
          f"{args.threads} threads: {wall:.2f} s" + (f"; wrote {args.out}" if args.out else ""))
    return {"seconds": wall, "summary": s}


if __name__ == "__main__":
    main()
