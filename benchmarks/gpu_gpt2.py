"""One-call GPU run of the GPT-2 test-time-CoT experiment (both claims, paper-size model).

    python benchmarks/gpu_gpt2.py                      # full: paper GPT-2 (≈9.5M params), d=10,
                                                       # n ∈ {20,30,40}, k ≤ 20, aligned + tilted
    python benchmarks/gpu_gpt2.py --size quick         # the CPU size committed under results/gpt2
    python benchmarks/gpu_gpt2.py --size tiny          # seconds-scale smoke test of this script

Claims checked (docs/science.md §8): (1) more CoT steps k compensate a shorter training length n
(aligned data Λ = Σ = I); (2) overthinking — error rising with k — under a tilted training
spectrum (λ_i ∝ 1/i, tr Λ = d) tested on Σ = I. Writes, under ``--out``: per-cell resumable
checkpoints, ``gpt2_<protocol>.nc`` / ``.npz`` / ``.png`` and ``timings.json`` (wall time per
trained model and in total, devices, parameter count). Re-running the same command resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def dataset_to_npz(ds, path: str) -> None:
    """Save every variable and coordinate of ``ds`` plus its attrs (JSON) to ``path``."""
    import numpy as np

    arrays = {f"coord_{k}": np.asarray(v.values) for k, v in ds.coords.items()}
    arrays.update({k: np.asarray(v.values) for k, v in ds.data_vars.items()})
    arrays["dims"] = np.asarray(json.dumps({k: list(v.dims) for k, v in ds.data_vars.items()}))
    arrays["attrs"] = np.asarray(json.dumps({k: str(v) for k, v in ds.attrs.items()}))
    np.savez(path, **arrays)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full", choices=("tiny", "quick", "full"))
    parser.add_argument("--protocol", default="both", choices=("self_rollout", "single_step", "both"))
    parser.add_argument("--out", default="runs/gpu_gpt2")
    parser.add_argument("--steps", type=int, default=None, help="override training steps per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    import dataclasses

    import jax
    import matplotlib

    matplotlib.use("Agg")
    from ttscale import gpt2
    from ttscale.commands.gpt2 import summary_lines

    exp = gpt2.EXPERIMENT_SIZES[args.size]
    if args.steps is not None:
        exp = dataclasses.replace(exp, steps=args.steps)
    os.makedirs(args.out, exist_ok=True)
    print(f"devices: {jax.devices()}  jax {jax.__version__}")
    print(f"experiment: {exp}")
    protocols = gpt2.PROTOCOLS if args.protocol == "both" else (args.protocol,)
    timings = {"devices": str(jax.devices()), "experiment": dataclasses.asdict(exp), "protocols": {}}
    total = time.perf_counter()
    for protocol in protocols:
        start = time.perf_counter()
        ds = gpt2.gpt2_experiment(exp, out=args.out, protocol=protocol, seed=args.seed, progress=not args.no_progress)
        wall = time.perf_counter() - start
        print("\n".join(summary_lines(ds)))
        print(f"wall time ({protocol}): {wall:.1f} s")
        dataset_to_npz(ds, os.path.join(args.out, f"gpt2_{protocol}.npz"))
        gpt2.plot_gpt2(ds).savefig(os.path.join(args.out, f"gpt2_{protocol}.png"), dpi=120)
        timings["parameters"] = int(ds.attrs["parameters"])
        timings["protocols"][protocol] = {
            "wall_s": wall,
            "train_s": {f"{s}_n{int(n)}": float(ds.train_seconds.sel(scenario=s, n=n)) for s in ds.scenario.values for n in ds.n.values},
            "k1_ratio": {f"{s}_n{int(n)}": float(ds.k1_ratio.sel(scenario=s, n=n)) for s in ds.scenario.values for n in ds.n.values},
        }
    timings["total_wall_s"] = time.perf_counter() - total
    with open(os.path.join(args.out, "timings.json"), "w") as fh:
        json.dump(timings, fh, indent=2)
    print(f"total wall time {timings['total_wall_s']:.1f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
