"""One-call GPU run of the GPT-2 test-time-CoT experiment (both claims, paper-size model).

    python benchmarks/gpu_gpt2.py                      # paper: the ≈9.5M-param GPT-2, d=10, garg format,
                                                       # n ∈ {20,30,40}, k ≤ 20, K_train = 8, aligned + tilted
    python benchmarks/gpu_gpt2.py --size cpu           # the CPU size committed under results/gpt2
    python benchmarks/gpu_gpt2.py --size tiny          # a one-minute run of the whole experiment
    python benchmarks/gpu_gpt2.py --smoke              # seconds: this script end to end (CI)

Claims checked (docs/science.md §8): (1) more CoT steps k compensate a shorter training length n
(aligned data Λ = Σ = I); (2) overthinking — error rising with k — under a tilted training
spectrum (λ_i ∝ 1/i, tr Λ = d) tested on Σ = I. Each trained network is evaluated through the
sweep engine (model ``gpt2:params=…``) beside the pseudo-Newton reference on the same prompts.
Writes, under ``--out``: per-cell resumable checkpoints, ``gpt2_<label>.nc`` / ``.npz`` / ``.png``
and ``timings.json`` (wall time per trained model and in total, devices, parameter count, and the
training throughput in tokens/s). Re-running the same command resumes.
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


def smoke_experiment():
    """A seconds-scale experiment: this script's whole path, nothing learnt."""
    from ttscale.experiments import gpt2 as study

    return study.GPT2Experiment("tiny", d=2, ns=(4,), k_max=2, steps=2, batch=4, learning_rate=1e-3, chunk=2,
                                eval_prompts=16, k_train=2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="paper", choices=("tiny", "cpu", "paper"))
    parser.add_argument("--smoke", action="store_true", help="seconds-scale end-to-end check (one scenario, one protocol)")
    parser.add_argument("--protocol", default="both", choices=("self_rollout", "single_step", "both"))
    parser.add_argument("--format", default=None, choices=("garg", "pair"))
    parser.add_argument("--out", default="runs/gpu_gpt2")
    parser.add_argument("--steps", type=int, default=None, help="override training steps per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    import dataclasses

    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ttscale import gpt2, plots
    from ttscale.commands.gpt2 import summary_lines
    from ttscale.experiments import gpt2 as study

    exp = smoke_experiment() if args.smoke else study.resolve_size(args.size)
    if args.steps is not None:
        exp = dataclasses.replace(exp, steps=args.steps)
    if args.format is not None:
        exp = dataclasses.replace(exp, format=args.format)
    scenarios = ("aligned",) if args.smoke else study.SCENARIOS
    protocols = ("self_rollout",) if args.smoke else (gpt2.PROTOCOLS if args.protocol == "both" else (args.protocol,))
    os.makedirs(args.out, exist_ok=True)
    print(f"devices: {jax.devices()}  jax {jax.__version__}")
    print(f"experiment: {exp}")
    timings = {"devices": str(jax.devices()), "experiment": dataclasses.asdict(exp), "protocols": {}}
    total = time.perf_counter()
    for protocol in protocols:
        start = time.perf_counter()
        ds = study.gpt2_experiment(exp, out=args.out, protocol=protocol, seed=args.seed, progress=not args.no_progress,
                                   scenarios=scenarios)
        wall = time.perf_counter() - start
        label = ds.attrs["label"]
        print("\n".join(summary_lines(ds)))
        print(f"wall time ({label}): {wall:.1f} s")
        dataset_to_npz(ds, os.path.join(args.out, f"gpt2_{label}.npz"))
        fig = plots.plot_gpt2(ds)
        fig.savefig(os.path.join(args.out, f"gpt2_{label}.png"), dpi=120)
        plt.close(fig)
        # training tokens per model: steps × batch × (context + estimate tokens); compile included in train_s
        k_train = int(ds.attrs["k_train"])
        tokens = {f"{s}_n{int(n)}": exp.steps * exp.batch * (gpt2.context_length(exp.format, int(n)) + k_train)
                  for s in ds.scenario.values for n in ds.n.values}
        train_s = {f"{s}_n{int(n)}": float(ds.train_seconds.sel(scenario=s, n=n)) for s in ds.scenario.values for n in ds.n.values}
        timings["parameters"] = int(ds.attrs["parameters"])
        timings["protocols"][label] = {
            "wall_s": wall,
            "train_s": train_s,
            "train_tokens_per_s": {c: tokens[c] / train_s[c] for c in tokens},
            "k1_ratio": {f"{s}_n{int(n)}": float(ds.k1_ratio.sel(scenario=s, n=n)) for s in ds.scenario.values for n in ds.n.values},
        }
    timings["total_wall_s"] = time.perf_counter() - total
    with open(os.path.join(args.out, "timings.json"), "w") as fh:
        json.dump(timings, fh, indent=2)
    print(f"total wall time {timings['total_wall_s']:.1f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
