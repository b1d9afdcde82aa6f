"""Where does sweep-A's time go?  Times the pieces of ``ttscale.sweep`` in isolation.

    python benchmarks/profile_sweep.py [--quick] [--prompts 4096] [--prng threefry2x32]

Pieces (each jitted, compiled before timing, median of ``--repeats``):

1. ``prompt_stats`` — drawing one cell's normals and forming ``S_Z = Z Zᵀ/m`` (per-prompt keys);
   the same with the draw alone (``sample_normals`` for the whole chunk, one key) for contrast;
2. ``pseudo_newton_errors_from_stats`` for one cell (the k-step iteration, ``einsum`` matvecs);
3. for common random numbers, the engine's grouped iteration (one batched matrix–matrix product
   over all cells per step, ``S_Z [b, d, d] @ U [b, d, cells]``);
4. ``closed_forms(spec)`` and ``summarize`` (host-side mean/s.e./median) per ``run_sweep`` call;
5. a whole ``run_sweep`` call, and the number of XLA compiles on a warm call.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import bench_common as bc  # noqa: E402


def _median_time(fn, repeats):
    import jax

    jax.block_until_ready(fn())
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=20)
    p.add_argument("--m", type=int, default=40)
    p.add_argument("--k-max", type=int, default=32)
    p.add_argument("--prompts", type=int, default=4096)
    p.add_argument("--spectra", type=int, default=16)
    p.add_argument("--ns", type=str, default="5,10,20,40,80")
    p.add_argument("--prng", type=str, default="threefry2x32")
    bc.common_arguments(p)
    args = p.parse_args(argv)
    bc.setup_devices(args)
    if args.quick:
        args.d, args.m, args.k_max, args.prompts, args.spectra, args.ns = 6, 12, 6, 256, 3, "5,20"
        args.repeats = min(args.repeats, 2)
    import jax
    import jax.numpy as jnp

    from ttscale import sweep as sw
    from ttscale.prompts import sample_normals

    d, m, k, b = args.d, args.m, args.k_max, args.prompts
    ns = tuple(float(v) for v in args.ns.split(","))
    cells = args.spectra * len(ns)
    info = bc.machine_info()
    print(f"# profile sweep: d={d}, m={m}, k={k}, {b} prompts/cell, {cells} cells, prng={args.prng}")
    bc.print_machine(info)
    key = jax.random.key(0, impl=args.prng)
    idx = jnp.arange(b, dtype=jnp.int32)
    rows = {}

    stats_fn = jax.jit(lambda key: sw.prompt_stats(key, idx, d, m, jnp.float32))
    rows["prompt_stats, per-prompt keys (1 cell)"] = _median_time(lambda: stats_fn(key), args.repeats)
    draw_fn = jax.jit(lambda key: sample_normals(key, d, m, b))
    rows["sample_normals, one key, no S_Z (1 cell)"] = _median_time(lambda: draw_fn(key), args.repeats)
    gram_fn = jax.jit(lambda Z: jnp.einsum("bim,bjm->bij", Z, Z) / m)
    Z = draw_fn(key).Z
    rows["S_Z = Z Zᵀ/m only (1 cell)"] = _median_time(lambda: gram_fn(Z), args.repeats)

    stats = stats_fn(key)
    lam = jnp.asarray(np.linspace(0.5, 1.5, d), jnp.float32)
    A = jnp.sqrt(lam)
    P = 1.0 / (1.05 * lam + d / 20.0)
    it_fn = jax.jit(lambda stats, A, P: sw.pseudo_newton_errors_from_stats(stats, A, P, None, k, True, True))
    rows["iteration, engine einsum (1 cell)"] = _median_time(lambda: it_fn(stats, A, P), args.repeats)

    As = jnp.broadcast_to(A, (cells, d))
    Ps = jnp.broadcast_to(P, (cells, d))
    if hasattr(sw, "pseudo_newton_group_errors"):
        grp_fn = jax.jit(lambda stats, As, Ps: sw.pseudo_newton_group_errors(stats, As, Ps, None, k, True, True))
        rows[f"CRN iteration, engine GEMM over all {cells} cells"] = _median_time(lambda: grp_fn(stats, As, Ps), args.repeats)

    import bench_sweep as bs

    spec = bs.make_spec(d=d, alphas=tuple(np.linspace(0, 2, args.spectra)), ns=ns, ms=(float(m),), k_max=k,
                        prompts=b, prng=args.prng)
    t0 = time.perf_counter()
    sw.closed_forms(spec)
    rows["closed_forms (first call, with compile)"] = time.perf_counter() - t0
    with bc.CompileCounter() as cc:
        rows["closed_forms (second call)"] = _median_time(lambda: sw.closed_forms(spec)["limit_error"], 1)
    rows["closed_forms compiles on a warm call"] = cc.count
    errs = np.abs(np.random.default_rng(0).standard_normal((args.spectra, len(ns), 1, b, k + 1), dtype=np.float32))
    t0 = time.perf_counter()
    sw.summarize(errs)
    rows["summarize (host mean/se/median, all cells)"] = time.perf_counter() - t0
    for crn in (True, False):
        s = spec.replace(common_random_numbers=crn)
        sw.run_sweep(s, progress=False)
        with bc.CompileCounter() as cc:
            t0 = time.perf_counter()
            sw.run_sweep(s, progress=False)
            rows[f"run_sweep warm ({'crn' if crn else 'independent'})"] = time.perf_counter() - t0
        rows[f"run_sweep warm compiles ({'crn' if crn else 'independent'})"] = cc.count
    print(f"{'piece':<52} {'seconds':>9} {'× cells':>9}")
    for name, v in rows.items():
        scaled = v * cells if "(1 cell)" in name else None
        if "compiles" in name:
            print(f"{name:<52} {int(v):>9d}")
        else:
            print(f"{name:<52} {v:>9.4f} {'' if scaled is None else f'{scaled:9.3f}'}")
    out = {"name": "profile-sweep", "machine": info, "args": vars(args), "rows": rows}
    bc.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
