"""sweep-A on an accelerator at 10⁶ prompts per cell: steady-state time, FLOP/s and bytes/s vs a roofline.

    python benchmarks/gpu_sweep.py [--prompts 1000000] [--chunk 131072] [--cpu]   (run by benchmarks/gpu.sh)

The roofline uses peaks measured in the same run on the same device: float32 matmul
(``precision="highest"``, i.e. no TF32; also the default precision, for reference) and
memory bandwidth (a large ``x + 1`` pass: read + write). FLOPs are the minimal arithmetic of
sweep-A (``2 d² m + 2 d³ + k (2 d² + 2 d)`` per prompt per cell). Bytes are a stated model:
``compulsory`` = the per-prompt errors written (``cells · prompts · (k+1) · 4``) — the
engine keeps them for the median — and ``materialised`` adds one write + read of ``Z``
(``d m``) and ``S_Z`` (``d²``) per prompt per cell (per prompt only, with CRN).
``--cpu`` runs the same code on the CPU at a tiny size (a syntax/smoke check).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import bench_common as bc  # noqa: E402
import bench_sweep as bs  # noqa: E402


def device_peaks(size: int, repeats: int = 5) -> dict:
    import jax
    import jax.numpy as jnp

    A = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    B = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    out = {}
    for prec in ("highest", "default"):
        f = jax.jit(lambda a, b, prec=prec: jnp.matmul(a, b, precision=prec))
        f(A, B).block_until_ready()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(A, B).block_until_ready()
            ts.append(time.perf_counter() - t0)
        out[f"matmul_{prec}_gflops"] = 2 * size**3 / float(np.median(ts)) / 1e9
    n = 64 * size * size  # 256 MiB at size 2048; 4 GiB at 8192
    x = jnp.zeros((n,), jnp.float32)
    g = jax.jit(lambda v: v + 1.0)
    g(x).block_until_ready()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        g(x).block_until_ready()
        ts.append(time.perf_counter() - t0)
    out["bandwidth_gbs"] = 2 * 4 * n / float(np.median(ts)) / 1e9
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=20)
    p.add_argument("--alpha", type=str, default="0:2:16")
    p.add_argument("--n", type=str, default="5,10,20,40,80")
    p.add_argument("--m", type=int, default=40)
    p.add_argument("--k-max", type=int, default=32)
    p.add_argument("--prompts", type=int, default=1_000_000)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--schemes", type=str, default="crn,independent")
    p.add_argument("--cpu", action="store_true", help="tiny size on the CPU (smoke test)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=str, default=None)
    args = p.parse_args(argv)
    if args.cpu:
        args.d, args.alpha, args.n, args.m, args.k_max, args.prompts = 6, "0:2:3", "5,20", 12, 6, 256
        args.repeats = min(args.repeats, 2)
    import jax

    alphas = bs.parse_alphas(args.alpha)
    ns = [float(v) for v in args.n.split(",") if v]
    cells = len(alphas) * len(ns)
    d, m, k, P = args.d, args.m, args.k_max, args.prompts
    info = bc.machine_info()
    bc.print_machine(info)
    pk = device_peaks(512 if args.cpu else 8192)
    print(f"# device {jax.devices()[0].device_kind}: matmul f32 highest {pk['matmul_highest_gflops']:.0f} GFLOP/s, "
          f"default {pk['matmul_default_gflops']:.0f} GFLOP/s; bandwidth {pk['bandwidth_gbs']:.0f} GB/s")
    flops = bs.minimal_flops_per_prompt(d, m, k) * cells * P
    out = {"name": "gpu-sweep", "machine": info, "peaks": pk, "args": vars(args), "rows": []}
    print(f"# sweep-A at {P} prompts/cell: {cells} cells, {flops / 1e12:.2f} TFLOP minimal arithmetic")
    print(f"{'scheme':<12} {'first s':>8} {'compile s':>9} {'median s':>9} {'prompts·k/s':>12} {'TFLOP/s':>8} "
          f"{'% f32 peak':>10} {'GB/s (compulsory)':>18} {'GB/s (materialised)':>20} {'roofline %':>10}")
    for scheme in [s for s in args.schemes.split(",") if s]:
        fields = dict(d=d, family="power_law", alphas=tuple(float(a) for a in alphas), test="aligned",
                      ns=tuple(ns), ms=(float(m),), k_max=k, prompts=P, chunk=args.chunk, model="pseudo_newton",
                      seed=0, common_random_numbers=(scheme == "crn"))
        t = bc.time_call(lambda: bs.run_ttscale(fields), repeats=args.repeats)
        t.pop("result")
        s = t["median_s"]
        bytes_comp = cells * P * (k + 1) * 4
        per_prompt_mat = (d * m + d * d) * 4 * 2
        bytes_mat = bytes_comp + per_prompt_mat * P * (1 if scheme == "crn" else cells)
        ai = flops / bytes_mat
        attainable = min(pk["matmul_highest_gflops"], ai * pk["bandwidth_gbs"])
        frac = flops / s / 1e9 / attainable
        print(f"{scheme:<12} {t['first_s']:>8.2f} {t['compile_s']:>9.2f} {s:>9.3f} {bc.fmt_rate(cells * P * k / s):>12} "
              f"{flops / s / 1e12:>8.3f} {100 * flops / s / 1e9 / pk['matmul_highest_gflops']:>9.1f}% "
              f"{bytes_comp / s / 1e9:>18.1f} {bytes_mat / s / 1e9:>20.1f} {100 * frac:>9.1f}%")
        out["rows"].append({"scheme": scheme, "timing": t, "flops": flops, "bytes_compulsory": bytes_comp,
                            "bytes_materialised": bytes_mat, "roofline_fraction": frac,
                            "steady_recompiles": t["compiles_steady"]})
    bc.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
