"""The sweep workloads (sweep-A, sweep-A-lsa): ttscale's ``run_sweep`` vs a vectorised NumPy baseline.

sweep-A: ``d = 20``; 16 power-law spectra ``α ∈ linspace(0, 2, 16)``, ``tr Λ = d``; ``Σ = Λ``;
``n ∈ {5, 10, 20, 40, 80}``; ``m = 40``; ``k = 1..32``; 4096 prompts per cell. The CLI form is
``ttscale sweep --d 20 --alpha 0:2:16 --n 5,10,20,40,80 --m 40 --k-max 32 --prompts 4096``.

FLOP count used for GFLOP/s (the *minimal* arithmetic of one prompt in one cell, as in the
issue: ≈ 75 kFLOP at sweep-A size): ``S_m = X Xᵀ/m`` → ``2 d² m``; ``B = I − P S_m`` →
``2 d³``; ``k_max`` steps ``e ← B e`` and ``||e||²`` → ``k_max (2 d² + 2 d)``.
For sweep-A-lsa the same minimal count is the "useful work"; the literal forward on
``N = m + 1 + i`` columns at step ``i`` costs ``4 D² N + 4 D N²`` (``D = 2d + 2``: ``W E``,
``Eᵀ(W E)``, ``V E``, ``(V E)·scores``), reported as ``literal_flops``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

import bench_common as bc
import numpy_baselines as nb

SCHEMES = ("crn", "independent")


def minimal_flops_per_prompt(d: int, m: int, k_max: int) -> float:
    """``2 d² m + 2 d³ + k_max (2 d² + 2 d)`` (≈ 75 kFLOP for d = 20, m = 40, k = 32)."""
    return 2 * d * d * m + 2 * d**3 + k_max * (2 * d * d + 2 * d)


def literal_lsa_flops_per_prompt(d: int, m: int, k_max: int) -> float:
    """``Σ_{i<k_max} 4 D² N_i + 4 D N_i²``, ``N_i = m + 1 + i``, ``D = 2d + 2``."""
    D = 2 * d + 2
    return float(sum(4 * D * D * (m + 1 + i) + 4 * D * (m + 1 + i) ** 2 for i in range(k_max)))


def parse_alphas(text: str) -> np.ndarray:
    """``"a:b:c"`` → ``linspace(a, b, c)``; otherwise a comma list."""
    if ":" in text:
        a, b, c = text.split(":")
        return np.linspace(float(a), float(b), int(c))
    return np.array([float(v) for v in text.split(",") if v])


def make_spec(**fields):
    """``SweepSpec`` from the fields it actually has (unknown ones are dropped, and listed)."""
    from ttscale.sweep import SweepSpec

    known = {f.name for f in dataclasses.fields(SweepSpec)}
    unknown = sorted(set(fields) - known)
    if unknown:
        print(f"# note: SweepSpec has no field(s) {unknown}; ignored")
    return SweepSpec(**{k: v for k, v in fields.items() if k in known and v is not None})


def spec_fields(args, alphas, ns, scheme: str, model: str, prompts: int | None = None, chunk=None) -> dict:
    return dict(d=args.d, family="power_law", alphas=tuple(float(a) for a in alphas), test="aligned",
                ns=tuple(float(n) for n in ns), ms=(float(args.m),), k_max=args.k_max,
                prompts=prompts or args.prompts, chunk=chunk if chunk is not None else args.chunk,
                model=model, seed=args.seed, common_random_numbers=(scheme == "crn"))


def run_ttscale(fields: dict):
    from ttscale.sweep import run_sweep

    ds = run_sweep(make_spec(**fields), progress=False)
    sel = ds.isel(m=0)
    return (np.asarray(sel["mean"].values), np.asarray(sel["stderr"].values), np.asarray(sel["median"].values))


def rng_seconds_jax(cells: int, prompts: int, d: int, m: int, chunk: int | None, repeats: int) -> float:
    """Seconds ttscale's sampler takes to draw the independent scheme's normals alone.

    ``cells × prompts × (d m + d)`` normals with :func:`ttscale.rng.prompt_normals` (the engine's
    streams: ``Z`` and ``w``), one compiled call per chunk, prompts sharded over the devices as
    in the engine; each cell's draws are reduced to a sum so they are computed but not stored.
    """
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec

    from ttscale import devices, rng, sweep

    n_dev = jax.device_count()
    chunk = min(chunk or 4096, prompts)
    batch = -(-chunk // n_dev) * n_dev
    local = batch // n_dev
    mesh = devices.prompt_mesh(n_dev)

    def device(keys, start):
        first = start + (jax.lax.axis_index("prompts") * local).astype(jnp.uint32)

        def one(k):
            key = jax.random.wrap_key_data(k)
            z = rng.prompt_normals(key, first, local, d * m, jnp.float32, stream=0)
            w = rng.prompt_normals(key, first, local, d, jnp.float32, stream=2)
            return jnp.sum(z) + jnp.sum(w)

        return jax.lax.map(one, keys)[None]

    draw = jax.jit(devices.shard_map(device, mesh, in_specs=(PartitionSpec(), PartitionSpec()),
                                    out_specs=PartitionSpec("prompts")))
    keys = jax.random.key_data(jax.random.split(jax.random.key(0), cells))
    starts = range(0, prompts, chunk)
    jax.block_until_ready(draw(keys, jnp.uint32(0)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for st in starts:
            jax.block_until_ready(draw(keys, jnp.uint32(st)))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def memory_probe(args, alphas, ns, model: str, configs, host_memory_mib: int | None = None) -> list[dict]:
    """Max RSS of ``run_sweep`` in a fresh subprocess per ``(prompts, chunk)`` (CRN scheme: the
    cheaper one, same memory layout); plus an import-only floor.

    ``host_memory_mib`` sets ``ttscale.sweep.HOST_MEMORY`` in the child (the budget for
    per-prompt errors beyond which they spill to disk), so the bound shows at small sizes.
    """
    setup = "import ttscale\nttscale.use_cpu_cores()\nimport ttscale.sweep as sw\n"
    if host_memory_mib is not None:
        setup += f"sw.HOST_MEMORY = {int(host_memory_mib)} * 2**20\n"
    rows = []
    floor = bc.peak_rss_mib_of(setup + "import jax, numpy; jax.numpy.zeros(1).block_until_ready()")
    rows.append({"prompts": 0, "chunk": 0, "maxrss_mib": floor["maxrss_mib"], "note": "imports only"})
    for prompts, chunk in configs:
        fields = spec_fields(args, alphas, ns, "crn", model, prompts=prompts, chunk=chunk)
        code = setup + "import bench_sweep as bs\n" + f"bs.run_ttscale({fields!r})\n"
        res = bc.peak_rss_mib_of(code)
        per_prompt_mib = len(alphas) * len(ns) * (args.k_max + 1) * 4 * prompts / 2**20
        rows.append({"prompts": prompts, "chunk": chunk, "maxrss_mib": res["maxrss_mib"],
                     "per_prompt_errors_mib": per_prompt_mib})
    return rows


def build_parser(model: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] + f" (model={model})")
    p.add_argument("--d", type=int, default=20)
    p.add_argument("--alpha", type=str, default="0:2:16", help="a:b:count (linspace) or a comma list")
    p.add_argument("--n", type=str, default="5,10,20,40,80")
    p.add_argument("--m", type=int, default=40)
    p.add_argument("--k-max", type=int, default=32)
    p.add_argument("--prompts", type=int, default=4096, help="prompts per cell for ttscale")
    p.add_argument("--baseline-prompts", type=int, default=None,
                   help="prompts per cell for the NumPy baseline (default: same; throughput is per prompt)")
    p.add_argument("--chunk", type=int, default=None, help="SweepSpec.chunk (default: the engine's)")
    p.add_argument("--schemes", type=str, default="crn,independent")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory", action="store_true", help="probe peak RSS per (prompts, chunk) in subprocesses")
    p.add_argument("--host-memory-mib", type=int, default=64,
                   help="sweep.HOST_MEMORY in the memory probe (MiB; default 64 so the bound shows at these sizes)")
    bc.common_arguments(p)
    return p


def main(argv=None, model: str = "pseudo_newton", name: str = "sweep-A") -> dict:
    args = build_parser(model).parse_args(argv)
    bc.setup_devices(args)
    if args.quick:
        args.d, args.alpha, args.n, args.m, args.k_max = 6, "0:2:3", "5,20", 12, 6
        args.prompts = min(args.prompts, 256)
        args.baseline_prompts = min(args.baseline_prompts or args.prompts, 256)
        args.repeats = min(args.repeats, 2)
    alphas = parse_alphas(args.alpha)
    ns = [float(v) for v in args.n.split(",") if v]
    schemes = [s for s in args.schemes.split(",") if s]
    for s in schemes:
        if s not in SCHEMES:
            raise SystemExit(f"--schemes: unknown scheme {s!r} (choose from {SCHEMES})")
    bprompts = args.baseline_prompts or args.prompts
    cells = len(alphas) * len(ns)
    d, m, k = args.d, args.m, args.k_max
    fl_min = minimal_flops_per_prompt(d, m, k)
    fl_lit = literal_lsa_flops_per_prompt(d, m, k)

    info = bc.machine_info()
    print(f"# {name}: d={d}, {len(alphas)} spectra α∈[{alphas[0]:g},{alphas[-1]:g}], n={ns}, m={m}, k=1..{k}, "
          f"{args.prompts} prompts/cell (NumPy baseline {bprompts}), model={model}, repeats={args.repeats}")
    bc.print_machine(info)
    pk = None if args.no_peak else bc.peaks(1024 if args.quick else 2048)
    if pk:
        print(f"# float32 matmul peak ({pk['matmul_size']}²): NumPy {pk['numpy_gflops']:.1f} GFLOP/s, "
              f"JAX {pk['jax_gflops']:.1f} GFLOP/s")
    print(f"# minimal arithmetic {fl_min / 1e3:.1f} kFLOP/prompt/cell, total {fl_min * cells * args.prompts / 1e9:.2f} GFLOP"
          + (f"; literal LSA forward {fl_lit / 1e6:.2f} MFLOP/prompt/cell ({fl_lit / fl_min:.0f}×)" if model == "lsa" else ""))

    results = {"name": name, "model": model, "machine": info, "peaks": pk, "args": vars(args),
               "minimal_flops_per_prompt": fl_min, "literal_flops_per_prompt": fl_lit, "rows": []}
    header = (f"{'path':<22} {'scheme':<12} {'first s':>8} {'compile s':>9} {'median s':>9} {'prompts·k/s':>12} "
              f"{'GFLOP/s':>8} {'% peak':>7} {'× NumPy':>8}")
    print(header)
    for scheme in schemes:
        fields = spec_fields(args, alphas, ns, scheme, model)
        tt = bc.time_call(lambda: run_ttscale(fields), repeats=args.repeats)
        base = bc.time_numpy(lambda: nb.sweep_numpy(d, alphas, ns, m, k, bprompts, scheme=scheme, model=model,
                                                   seed=args.seed + 1), repeats=args.repeats)
        tt_mean, tt_se, _ = tt.pop("result")
        bres = base.pop("result")
        agree = bc.agreement(tt_mean, tt_se, bres.summary.mean, bres.summary.stderr, skip_k0=False)
        rate_tt = cells * args.prompts * k / tt["median_s"]
        rate_np = cells * bprompts * k / base["median_s"]
        gf_tt = fl_min * cells * args.prompts / tt["median_s"] / 1e9
        gf_np = (fl_lit if model == "lsa" else fl_min) * cells * bprompts / base["median_s"] / 1e9
        speedup = rate_tt / rate_np
        peak = pk["peak_gflops"] if pk else float("nan")
        print(f"{'ttscale run_sweep':<22} {scheme:<12} {tt['first_s']:>8.2f} {tt['compile_s']:>9.2f} {tt['median_s']:>9.3f} "
              f"{bc.fmt_rate(rate_tt):>12} {gf_tt:>8.2f} {100 * gf_tt / peak:>6.1f}% {speedup:>7.1f}×")
        print(f"{'NumPy baseline':<22} {scheme:<12} {'':>8} {'':>9} {base['median_s']:>9.3f} "
              f"{bc.fmt_rate(rate_np):>12} {gf_np:>8.2f} {100 * gf_np / peak:>6.1f}% {1.0:>7.1f}×"
              + ("  (GFLOP/s of the literal forward)" if model == "lsa" else ""))
        strong = None
        if model == "pseudo_newton":  # the strong baseline (float32 Box–Muller, blocks, threads): ratios against it
            strong = bc.strong_numpy(d, alphas, ns, m, k, bprompts, scheme, tt["median_s"], repeats=args.repeats,
                                     seed=args.seed + 2, ttscale_prompts=args.prompts, mean=tt_mean, stderr=tt_se)
        extra = ""
        if scheme == "independent":
            share_np = bres.rng_seconds / base["median_s"]
            rng_jax = rng_seconds_jax(cells, args.prompts, d, m, args.chunk, args.repeats)
            share_tt = rng_jax / tt["median_s"]
            extra = (f"  RNG share (independent): NumPy {100 * share_np:.0f}% ({bres.rng_seconds:.2f} s of the last run); "
                     f"ttscale's prompt sampler (draw_normals) drawing the same d·m-per-prompt normals alone {rng_jax:.2f} s = "
                     f"{100 * share_tt:.0f}% of ttscale's median (its default statistics sampler draws d(d+1)/2 + d per prompt)")
            results.setdefault("rng", {}).update(numpy_s=bres.rng_seconds, numpy_share=share_np, jax_s=rng_jax,
                                                 jax_share=share_tt)
        print(f"  agreement ({scheme}): max z = {agree['max_z']:.2f} over {agree['compared']} cells×k, "
              f"{100 * agree['frac_within']:.1f}% within {agree['z_max']:g} s.e. -> {'OK' if agree['ok'] else 'CHECK'};"
              f" steady-state recompiles: {tt['compiles_steady']} (first call {tt['compiles_first']} compiles)")
        if extra:
            print(extra)
        results["rows"].append({"scheme": scheme, "ttscale": tt, "numpy": base, "agreement": agree,
                                "rate_ttscale": rate_tt, "rate_numpy": rate_np, "gflops_ttscale": gf_tt,
                                "gflops_numpy": gf_np, "speedup": speedup, "numpy_strong": strong})
    if args.memory:
        P = args.prompts
        configs = [(P, max(P // 4, 1)), (4 * P, max(P // 4, 1)), (16 * P, max(P // 4, 1)), (16 * P, P)]
        rows = memory_probe(args, alphas, ns, model, configs, host_memory_mib=args.host_memory_mib)
        budget = args.host_memory_mib if args.host_memory_mib is not None else "default"
        print(f"# peak memory: max RSS of a fresh process running one run_sweep (CRN scheme), "
              f"sweep.HOST_MEMORY = {budget} MiB; per-prompt errors above it spill to disk")
        print(f"{'prompts/cell':>12} {'chunk':>8} {'max RSS MiB':>12} {'all errors MiB':>15}")
        for r in rows:
            print(f"{r['prompts']:>12} {r['chunk']:>8} {r['maxrss_mib']:>12.0f} "
                  f"{r.get('per_prompt_errors_mib', 0):>15.0f} {r.get('note', '')}")
        results["memory"] = rows
    bc.write_json(args.json, results)
    return results
