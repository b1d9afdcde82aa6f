"""LSA training throughput: ``ttscale.training.make_train`` vs a vectorised NumPy SGD baseline.

    python benchmarks/train_lsa.py [--quick] [--d 10] [--n 20] [--steps 400] [--batch 2048]

Both train ``V`` (all of it, ``W`` frozen at the paper's init, ``c = 1``) by plain SGD with the
same constant step on ``½ mean_b ||f(E_b)[:, -1] − (0, 0, w_b, 1)||²`` over fresh prompts from
``Λ = power_law(d, α)`` each step (docs/science.md §3). Throughput is prompts·steps/s. Agreement: the mean
loss over the last quarter of the steps (z-score with the s.e. of the per-step losses) and the
relative Frobenius gap of the learned preconditioners ``P = −c V[ŵ, x]`` against each other and
against the closed-form fixed point ``Γ⁻¹``.
Minimal FLOPs per prompt·step: ``y = Xᵀw`` and ``X y`` (``4 d n``), ``|y|²`` (``2 n``), ``V a``
and the outer-product gradient (``4 D²``), ``D = 2d + 2``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import bench_common as bc  # noqa: E402
import numpy_baselines as nb  # noqa: E402


def flops_per_prompt_step(d: int, n: int) -> float:
    D = 2 * d + 2
    return 4 * d * n + 2 * n + 4 * D * D


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=10)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--learning-rate", type=float, default=None,
                   help="constant SGD step (default 0.5 / h_y, h_y = (1 + 2/n)((tr Λ)² + 2 tr Λ²): stable for every block)")
    p.add_argument("--seed", type=int, default=0)
    bc.common_arguments(p)
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    bc.setup_devices(args)
    if args.quick:
        args.d, args.n, args.steps, args.batch = 4, 8, 12, 64
        args.repeats = min(args.repeats, 2)
    import jax

    import ttscale as tts
    from ttscale.tasks import task_mixture
    from ttscale.training import TrainConfig, make_train

    d, n = args.d, args.n
    lam = nb.power_law_eigenvalues(d, [args.alpha])[0]
    h_y = (1 + 2 / n) * (lam.sum() ** 2 + 2 * (lam**2).sum())
    lr = float(args.learning_rate or 0.5 / h_y)
    cov = tts.power_law(d, args.alpha)
    config = TrainConfig(d=d, tasks=task_mixture([cov], [n]), steps=args.steps, batch=args.batch, optimizer="sgd",
                         learning_rate=lr, schedule="constant", w_mode="frozen", v_mode="full")
    train = make_train(config)
    key = jax.random.key(args.seed)

    info = bc.machine_info()
    print(f"# train-lsa: d={d}, n={n}, Λ = power_law(α={args.alpha}), SGD lr={lr:.4g} constant, "
          f"{args.steps} steps × {args.batch} prompts, repeats={args.repeats}")
    bc.print_machine(info)
    pk = None if args.no_peak else bc.peaks(1024 if args.quick else 2048)
    if pk:
        print(f"# float32 matmul peak: NumPy {pk['numpy_gflops']:.1f} GFLOP/s, JAX {pk['jax_gflops']:.1f} GFLOP/s")

    def run_tt():
        res = train(key)
        return jax.device_get((res.losses, res.preconditioner))

    tt = bc.time_call(run_tt, repeats=args.repeats)
    base = bc.time_numpy(lambda: nb.lsa_sgd_train(d, lam, n, args.steps, args.batch, lr, seed=args.seed + 1),
                         repeats=args.repeats)
    losses_tt, P_tt = tt.pop("result")
    V_np, losses_np = base.pop("result")
    P_np = -V_np[d + 1:2 * d + 1, :d]
    P_star = np.diag(nb.gamma_inverse_diagonal(lam, n))
    tail = slice(3 * args.steps // 4, None)
    la, lb = np.asarray(losses_tt)[tail], losses_np[tail]
    se = np.sqrt(la.var(ddof=1) / la.size + lb.var(ddof=1) / lb.size) if la.size > 1 else float("inf")
    z = abs(la.mean() - lb.mean()) / se
    rel = lambda A, B: float(np.linalg.norm(A - B) / np.linalg.norm(B))  # noqa: E731
    work = args.steps * args.batch
    fl = flops_per_prompt_step(d, n) * work
    peak = pk["peak_gflops"] if pk else float("nan")
    print(f"{'path':<26} {'first s':>8} {'compile s':>9} {'median s':>9} {'prompts·steps/s':>16} {'GFLOP/s':>8} {'% peak':>7} {'× NumPy':>8}")
    r_tt, r_np = work / tt["median_s"], work / base["median_s"]
    print(f"{'ttscale make_train':<26} {tt['first_s']:>8.2f} {tt['compile_s']:>9.2f} {tt['median_s']:>9.3f} "
          f"{bc.fmt_rate(r_tt):>16} {fl / tt['median_s'] / 1e9:>8.2f} {100 * fl / tt['median_s'] / 1e9 / peak:>6.2f}% {r_tt / r_np:>7.1f}×")
    print(f"{'NumPy SGD baseline':<26} {'':>8} {'':>9} {base['median_s']:>9.3f} "
          f"{bc.fmt_rate(r_np):>16} {fl / base['median_s'] / 1e9:>8.2f} {100 * fl / base['median_s'] / 1e9 / peak:>6.2f}% {1.0:>7.1f}×")
    ok = z <= 5.0
    print(f"  agreement: tail loss ttscale {la.mean():.4g} vs NumPy {lb.mean():.4g} (z = {z:.2f}) -> {'OK' if ok else 'CHECK'}; "
          f"|P_tt − P_np|/|P_np| = {rel(P_tt, P_np):.3g}; vs Γ⁻¹: ttscale {rel(P_tt, P_star):.3g}, NumPy {rel(P_np, P_star):.3g}; "
          f"steady-state recompiles: {tt['compiles_steady']}")
    out = {"name": "train-lsa", "machine": info, "peaks": pk, "args": vars(args), "learning_rate": lr,
           "ttscale": tt, "numpy": base, "rate_ttscale": r_tt, "rate_numpy": r_np, "speedup": r_tt / r_np,
           "tail_loss": [float(la.mean()), float(lb.mean())], "z": float(z), "ok": bool(ok),
           "P_rel_gap": rel(P_tt, P_np)}
    bc.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
