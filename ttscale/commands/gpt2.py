"""``ttscale gpt2``: train GPT-2s for both claims and compare their test-time CoT with the optimal LSA."""

from __future__ import annotations

import dataclasses
import os
import time

HELP = "train GPT-2 (Flax NNX) with test-time CoT on aligned and tilted data; error vs k beside the LSA"


def add_arguments(p):
    p.add_argument("--size", default="quick", choices=("tiny", "quick", "full"),
                   help="tiny (smoke test), quick (CPU minutes, d=5, 2-layer width-32 model), full (paper GPT-2, GPU)")
    p.add_argument("--protocol", default="self_rollout", choices=("self_rollout", "single_step", "both"),
                   help="training protocol (default self_rollout); 'both' runs one after the other")
    p.add_argument("--out", default=None, help="output folder: checkpoints (resumable), gpt2_<protocol>.nc and .png")
    p.add_argument("--steps", type=int, default=None, help="override the size's training steps")
    p.add_argument("--scenarios", default="aligned,tilted", help="comma list of aligned,tilted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")


def summary_lines(ds) -> list[str]:
    """Human-readable table: mean and median error at a few k, GPT-2 vs LSA, and the k = 1 anchor."""
    import numpy as np

    ks = [k for k in (0, 1, 2, 3, 5, 8, 10, 15, 20) if k <= int(ds.k.max())]
    lines = [f"protocol={ds.attrs['protocol']}  parameters={ds.attrs['parameters']}  test length m = n"]
    for scenario in ds.scenario.values:
        for n in ds.n.values:
            cell = ds.sel(scenario=scenario, n=n)
            for stat in ("mean", "median"):
                g = " ".join(f"{float(cell[f'gpt2_{stat}'].sel(k=k)):.3g}" for k in ks)
                l = " ".join(f"{float(cell[f'lsa_{stat}'].sel(k=k)):.3g}" for k in ks)
                lines.append(f"{scenario:>8} n={int(n):>3} {stat:>6}  gpt2: {g}  |  lsa: {l}")
            lines.append(
                f"{scenario:>8} n={int(n):>3} k=1 in-distribution gpt2/lsa = {float(cell['k1_ratio']):.3f}"
                f"  (train {float(cell['train_seconds']):.0f} s, final loss {float(np.nanmean(cell['train_loss'].values[-50:])):.3g})"
            )
    lines.insert(1, "k = " + " ".join(str(k) for k in ks))
    return lines


def parse_scenarios(text: str) -> tuple[str, ...]:
    """``--scenarios``: a non-empty comma list of distinct names from ``ttscale.gpt2.SCENARIOS``."""
    from ttscale.gpt2 import SCENARIOS

    names = tuple(s.strip() for s in str(text).split(",") if s.strip())
    if not names:
        raise ValueError(f"--scenarios must list at least one of {','.join(SCENARIOS)}, got {text!r}")
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"--scenarios: unknown scenario(s) {', '.join(unknown)}; choose from {','.join(SCENARIOS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--scenarios lists a scenario twice: {text!r}")
    return names


def run(args) -> int:
    from ttscale import gpt2
    from ttscale.commands import prepare_out_dir

    exp = gpt2.EXPERIMENT_SIZES[args.size]
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        exp = dataclasses.replace(exp, steps=args.steps)
    scenarios = parse_scenarios(args.scenarios)
    if args.out is not None:
        prepare_out_dir("--out", args.out)
    protocols = gpt2.PROTOCOLS if args.protocol == "both" else (args.protocol,)
    for protocol in protocols:
        start = time.perf_counter()
        ds = gpt2.gpt2_experiment(exp, out=args.out, protocol=protocol, seed=args.seed,
                                  progress=not args.no_progress, scenarios=scenarios)
        wall = time.perf_counter() - start
        print("\n".join(summary_lines(ds)))
        print(f"wall time ({protocol}): {wall:.1f} s")
        if args.out is not None:
            fig = gpt2.plot_gpt2(ds)
            path = os.path.join(args.out, f"gpt2_{protocol}.png")
            fig.savefig(path, dpi=120)
            print(f"wrote {path} and {os.path.join(args.out, f'gpt2_{protocol}.nc')}")
    return 0
