"""GPT-2 tokens/s: ``ttscale.gpt2`` (Flax NNX, jit) vs a vectorised NumPy forward with the same weights.

    python benchmarks/gpt2_tokens.py [--quick] [--preset paper] [--d 10] [--n 40] [--k-max 8] [--batch 32]

Two workloads on one randomly initialised model in the ``pair`` input format (the one the NumPy
forward implements; ``garg`` has ``2n`` context tokens instead of ``n``, the same blocks) (``preset`` ``paper`` = width 256, 12 layers,
8 heads, ≈ 9.5M parameters):

* **forward** — teacher-forced pass over ``n`` example tokens + ``k_max`` estimate tokens
  (``ttscale.gpt2.forward``) vs :func:`numpy_baselines.gpt2_forward`; tokens/s counts every
  token of the sequence;
* **CoT** — ``k_max`` test-time steps from ``ŵ_0 = 0`` (``cot_estimates``, ``method="cache"``
  and ``"buffer"``) vs :func:`numpy_baselines.gpt2_cot_estimates` (a full forward per step, as
  a NumPy user would write it); tokens/s counts generated estimate tokens.

The inputs are identical, so agreement is exact up to float32 round-off (relative max error).
FLOPs: matmuls of one causal forward (attention counted in full), ``gpt2_forward_flops``; for
CoT the NumPy row and ``buffer`` count ``k`` full forwards, ``cache`` a prefill plus ``k − 1``
one-token steps (attention to the cache not counted), so its GFLOP/s is a lower bound.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import bench_common as bc  # noqa: E402
import numpy_baselines as nb  # noqa: E402


def numpy_params(model) -> dict:
    """``nnx.state(model, nnx.Param)`` as a nested dict of float32 NumPy arrays."""
    import jax
    from flax import nnx

    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", type=str, default="paper")
    p.add_argument("--d", type=int, default=10)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--k-max", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tol", type=float, default=2e-3, help="relative max-error tolerance (float32)")
    bc.common_arguments(p)
    args = p.parse_args(argv)
    bc.setup_devices(args)
    if args.quick:
        args.preset, args.d, args.n, args.k_max, args.batch = "tiny", 3, 8, 3, 8
        args.repeats = min(args.repeats, 2)
    try:
        from ttscale import gpt2
    except ImportError as exc:  # pragma: no cover - gpt2.py is optional for the other benchmarks
        print(f"# gpt2-tokens: skipped (ttscale.gpt2 not importable: {exc})")
        return {"name": "gpt2-tokens", "skipped": str(exc)}
    import jax
    import jax.numpy as jnp

    import ttscale as tts

    d, n, k, b = args.d, args.n, args.k_max, args.batch
    # the NumPy baseline implements the pair input format ([x; y] example tokens + typed estimate tokens)
    config = gpt2.gpt2_config(args.preset, d=d, max_len=n + k, format="pair")
    model = gpt2.init_gpt2(0, config)
    params = numpy_params(model)
    prompts = tts.sample_prompts(jax.random.key(1), tts.identity(d), n, b)
    estimates = jax.random.normal(jax.random.key(2), (b, k, d), jnp.float32)
    examples_np = np.asarray(gpt2.examples_from_prompts(prompts))
    est_np = np.asarray(estimates)
    n_params = gpt2.count_parameters(model)

    info = bc.machine_info()
    print(f"# gpt2-tokens: preset={args.preset} (width {config.width}, {config.layers} layers, {config.heads} heads, "
          f"{n_params / 1e6:.2f}M params), d={d}, n={n}, k_max={k}, batch={b}, repeats={args.repeats}")
    bc.print_machine(info)
    pk = None if args.no_peak else bc.peaks(1024 if args.quick else 2048)
    peak = pk["peak_gflops"] if pk else float("nan")
    if pk:
        print(f"# float32 matmul peak: NumPy {pk['numpy_gflops']:.1f} GFLOP/s, JAX {pk['jax_gflops']:.1f} GFLOP/s")

    fwd_flops = nb.gpt2_forward_flops(config.width, config.layers, n + k, d, config.mlp_ratio) * b
    # a full-forward CoT runs step t over n + t + 1 tokens
    cot_full_flops = sum(nb.gpt2_forward_flops(config.width, config.layers, n + t + 1, d, config.mlp_ratio)
                         for t in range(k)) * b
    rows = []
    print(f"{'workload':<30} {'first s':>8} {'compile s':>9} {'median s':>9} {'tokens/s':>10} {'GFLOP/s':>8} "
          f"{'% peak':>7} {'× NumPy':>8} {'rel err':>9}")

    def report(label, tt, base, tokens, flops, err):
        r_tt, r_np = tokens / tt["median_s"], tokens / base["median_s"]
        ok = err <= args.tol
        print(f"{label:<30} {tt['first_s']:>8.2f} {tt['compile_s']:>9.2f} {tt['median_s']:>9.4f} {bc.fmt_rate(r_tt):>10} "
              f"{flops / tt['median_s'] / 1e9:>8.2f} {100 * flops / tt['median_s'] / 1e9 / peak:>6.1f}% "
              f"{r_tt / r_np:>7.1f}× {err:>9.2e} {'OK' if ok else 'CHECK'}")
        print(f"{'  NumPy baseline':<30} {'':>8} {'':>9} {base['median_s']:>9.4f} {bc.fmt_rate(r_np):>10} "
              f"{flops / base['median_s'] / 1e9:>8.2f} {100 * flops / base['median_s'] / 1e9 / peak:>6.1f}%")
        rows.append({"workload": label, "ttscale": tt, "numpy": base, "tokens": tokens, "rate_ttscale": r_tt,
                     "rate_numpy": r_np, "speedup": r_tt / r_np, "rel_err": err, "ok": ok})

    tt = bc.time_call(lambda: np.asarray(gpt2.forward(model, prompts, estimates)), repeats=args.repeats)
    base = bc.time_numpy(lambda: nb.gpt2_forward(params, examples_np, est_np, config.heads, config.layers),
                         repeats=args.repeats)
    report("forward (teacher-forced)", tt, base, b * (n + k), fwd_flops, rel_err(tt.pop("result"), base.pop("result")))

    base = bc.time_numpy(lambda: nb.gpt2_cot_estimates(params, examples_np, k, d, config.heads, config.layers),
                         repeats=args.repeats)
    ref = base.pop("result")
    for method in (("cache",) if args.quick else ("cache", "buffer")):
        tt = bc.time_call(lambda: np.asarray(gpt2.cot_estimates(model, prompts, k, method=method)), repeats=args.repeats)
        # the KV-cache rollout does less work: a prefill over n + k_max tokens, then k − 1 one-token steps
        flops = cot_full_flops if method == "buffer" else (
            nb.gpt2_forward_flops(config.width, config.layers, n + k, d, config.mlp_ratio)
            + (k - 1) * nb.gpt2_forward_flops(config.width, config.layers, 1, d, config.mlp_ratio)) * b
        report(f"CoT k={k} ({method})", tt, dict(base), b * k, flops, rel_err(tt.pop("result"), ref))
    out = {"name": "gpt2-tokens", "machine": info, "peaks": pk, "args": vars(args), "n_params": n_params, "rows": rows}
    bc.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
