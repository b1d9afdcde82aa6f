"""Where does sweep-A's time go?  Times the pieces of ``ttscale.sweep`` in isolation.

    python benchmarks/profile_sweep.py [--quick] [--prompts 4096]

Pieces (each jitted, compiled before timing, median of ``--repeats``; one device):

1. ``sample_statistics`` — drawing one cell's normals (:mod:`ttscale.rng`) and forming
   ``S_Z = Z Zᵀ/m``; the draw alone; ``jax.random.normal`` of the same size for contrast;
2. the ``pseudo_newton`` model's kernel for one cell (general form with dense ``A``, ``P`` and the
   diagonal ``u = A e`` form);
3. the same kernel ``vmap``-ed over all cells sharing ``S_Z`` (common random numbers);
4. ``chunk_moments`` (device), ``theory_on_grid`` and the exact median (host) per ``run_sweep``;
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
    bc.common_arguments(p)
    args = p.parse_args(argv)
    bc.setup_devices(args)
    if args.quick:
        args.d, args.m, args.k_max, args.prompts, args.spectra, args.ns = 6, 12, 6, 256, 3, "5,20"
        args.repeats = min(args.repeats, 2)
    import jax
    import jax.numpy as jnp

    from ttscale import models, rng, spectra, summary
    from ttscale import sweep as sw
    from ttscale.prompts import Statistics, sample_statistics

    d, m, k, b = args.d, args.m, args.k_max, args.prompts
    ns = tuple(float(v) for v in args.ns.split(","))
    cells = args.spectra * len(ns)
    info = bc.machine_info()
    print(f"# profile sweep: d={d}, m={m}, k={k}, {b} prompts/cell, {cells} cells")
    bc.print_machine(info)
    key = jax.random.key(0)
    rows = {}

    lam = jnp.asarray(np.linspace(0.5, 1.5, d), jnp.float32)
    cov = spectra.from_eigenvalues(lam)
    stats_fn = jax.jit(lambda key: sample_statistics(key, cov, m, b))
    rows["sample_statistics: draw + S_Z (1 cell)"] = _median_time(lambda: stats_fn(key), args.repeats)
    draw_fn = jax.jit(lambda key: rng.prompt_normals(key, 0, b, d * m + d))
    rows["ttscale.rng draw alone, d·m + d normals (1 cell)"] = _median_time(lambda: draw_fn(key), args.repeats)
    jr_fn = jax.jit(lambda key: jax.random.normal(key, (b, d * m + d)))
    rows["jax.random.normal, same count (1 cell)"] = _median_time(lambda: jr_fn(key), args.repeats)
    Z = draw_fn(key)[:, : d * m].reshape(b, d, m)
    gram_fn = jax.jit(lambda Z: jnp.sum(Z[:, :, None, :] * Z[:, None, :, :], axis=-1) / m)
    rows["S_Z = Z Zᵀ/m only (1 cell)"] = _median_time(lambda: gram_fn(Z), args.repeats)

    stats = stats_fn(key)
    pn = models.pseudo_newton
    P = 1.0 / (1.05 * lam + d / 20.0)
    dense = Statistics(stats.S_Z, None, None, stats.w, jnp.diag(stats.root), stats.noise, stats.m)
    for label, st, p in (("general form, dense A and P", dense, jnp.diag(P)), ("diagonal u = A e", stats, P)):
        it_fn = jax.jit(lambda st, p: pn.errors(pn.PseudoNewtonParams(p), st, k))
        rows[f"iteration, {label} (1 cell)"] = _median_time(lambda: it_fn(st, p), args.repeats)
    roots = jnp.broadcast_to(stats.root, (cells, d))
    Ps = jnp.broadcast_to(P, (cells, d))

    def crn(stats, roots, Ps):
        one = lambda r, p: pn.errors(pn.PseudoNewtonParams(p), Statistics(stats.S_Z, None, None, stats.w, r,  # noqa: E731
                                                                          stats.noise, stats.m), k)
        return jax.vmap(one)(roots, Ps)

    grp_fn = jax.jit(crn)
    rows[f"CRN iteration over all {cells} cells (vmap, shared S_Z, unblocked)"] = _median_time(
        lambda: grp_fn(stats, roots, Ps), args.repeats)

    import bench_sweep as bs

    spec = bs.make_spec(d=d, alphas=tuple(np.linspace(0, 2, args.spectra)), ns=ns, ms=(float(m),), k_max=k,
                        prompts=b)
    t0 = time.perf_counter()
    sw.theory_on_grid(spec)
    rows["theory_on_grid (first call, with compile)"] = time.perf_counter() - t0
    with bc.CompileCounter() as cc:
        rows["theory_on_grid (second call)"] = _median_time(lambda: sw.theory_on_grid(spec)["limit_error"], 1)
    rows["theory_on_grid compiles on a warm call"] = cc.count
    errs = np.abs(np.random.default_rng(0).standard_normal((cells, k + 1, b), dtype=np.float32))
    mom_fn = jax.jit(summary.chunk_moments)
    errs_dev = jnp.asarray(errs)
    rows["chunk_moments (device mean/M2, all cells)"] = _median_time(lambda: mom_fn(errs_dev, b), args.repeats)
    rows["exact median (host, all cells)"] = _median_time(lambda: summary.median_rows(errs.reshape(-1, b)),
                                                          args.repeats)
    rows["np.median, same rows (for contrast)"] = _median_time(lambda: np.median(errs.reshape(-1, b), axis=-1),
                                                               args.repeats)
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
