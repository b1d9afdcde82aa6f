"""``ttscale gpt2``: train GPT-2s for both claims and compare their test-time CoT with the optimal LSA."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

HELP = "train GPT-2 (Flax NNX) with test-time CoT on aligned and tilted data; error vs k beside the LSA"

#: ``--size`` choices and their rough wall time (kept here so ``--help`` needs no JAX import;
#: a test checks they match ttscale.experiments.gpt2.EXPERIMENT_SIZES / SIZE_TIMES).
SIZES = {
    "tiny": "tiny model, d=3, 20 steps: ~1 min on a CPU (smoke test)",
    "cpu": "2-layer width-32 model, d=5, n=20,30,40, k<=12: ~30 min on 2 CPU cores",
    "paper": "the ≈9.5M-parameter paper GPT-2, d=10, 20k steps: GPU hours",
}


def add_arguments(p):
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = "sizes (--size; rough wall time of one protocol, both scenarios):\n" + "\n".join(
        f"  {name:<6} {text}" for name, text in SIZES.items())
    p.add_argument("--size", default="cpu", choices=tuple(SIZES), help="experiment size (see below; default cpu)")
    p.add_argument("--protocol", default="self_rollout", choices=("self_rollout", "single_step", "both"),
                   help="training protocol (default self_rollout; single_step trains only at k = 1); 'both' runs one after the other")
    p.add_argument("--format", default=None, choices=("garg", "pair"),
                   help="input format: garg (x and y tokens, shared read-in; default) or pair ([x; y] tokens)")
    p.add_argument("--k-train", type=int, default=None, help="self-rollout training horizon K (default 8)")
    p.add_argument("--gradient-through", action="store_true",
                   help="back-propagate through the fed-back estimates (default: stop-gradient)")
    p.add_argument("--curriculum", default=None, metavar="D0,N0,STEPS",
                   help="Garg-style curriculum: d and n grow from D0, N0 to full over STEPS steps")
    p.add_argument("--noise", type=float, default=None, help="label noise σ (training and test)")
    p.add_argument("--alpha", type=float, default=None, help="tilted training spectrum λ_i ∝ i^-alpha (default 1); shorthand for --spectrum power_law:alpha=A")
    p.add_argument("--spectrum", default=None, metavar="SPEC",
                   help="the tilted scenario's training spectrum in the one syntax: power_law:alpha=1, hard:H=40, eig:3,2,1, FILE.txt (see docs/spectra.md)")
    p.add_argument("--d", type=int, default=None, help="override the size's dimension d")
    p.add_argument("--ns", default=None, help="comma list of training lengths n (override)")
    p.add_argument("--m", type=int, default=None, help="test prompt length (default m = n)")
    p.add_argument("--k-max", type=int, default=None, help="CoT steps evaluated (override)")
    p.add_argument("--out", default=None, help="output folder: checkpoints (resumable), gpt2_<label>.nc and .png")
    p.add_argument("--steps", type=int, default=None, help="override the size's training steps")
    p.add_argument("--scenarios", default="aligned,tilted", help="comma list of aligned,tilted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")


def summary_lines(ds) -> list[str]:
    """Human-readable table: mean and median error at a few k, GPT-2 vs LSA, and the k = 1 anchor."""
    import numpy as np

    ks = [k for k in (0, 1, 2, 3, 5, 8, 10, 12, 15, 20) if k <= int(ds.k.max())]
    label = ds.attrs.get("label", ds.attrs["protocol"])
    lines = [f"training={label}  parameters={ds.attrs['parameters']}  test length {ds.attrs.get('test_length', 'm = n')}"]
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
    """``--scenarios``: a non-empty comma list of distinct names from ``ttscale.experiments.gpt2.SCENARIOS``."""
    from ttscale.experiments.gpt2 import SCENARIOS

    names = tuple(s.strip() for s in str(text).split(",") if s.strip())
    if not names:
        raise ValueError(f"--scenarios must list at least one of {','.join(SCENARIOS)}, got {text!r}")
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"--scenarios: unknown scenario(s) {', '.join(unknown)}; choose from {','.join(SCENARIOS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--scenarios lists a scenario twice: {text!r}")
    return names


def _ints(flag: str, text: str, count=None) -> tuple:
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{flag} must be a comma list of integers, got {text!r}") from None
    if not values or (count is not None and len(values) != count) or min(values) < 1:
        raise ValueError(f"{flag} must be {count or 'some'} positive integers separated by commas, got {text!r}")
    return values


def experiment_from_args(args):
    """The size's :class:`ttscale.experiments.gpt2.GPT2Experiment` with the command line's overrides."""
    from ttscale import gpt2
    from ttscale.experiments import gpt2 as study

    exp = study.resolve_size(args.size)
    changes = {}
    for flag, field in (("steps", "steps"), ("k_train", "k_train"), ("d", "d"), ("k_max", "k_max"), ("m", "m")):
        value = getattr(args, flag)
        if value is not None:
            if value < 1:
                raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
            changes[field] = value
    if args.alpha is not None and args.spectrum is not None:
        raise ValueError("--alpha is a shorthand for --spectrum power_law:alpha=A: give one of them, not both")
    if args.spectrum is not None:
        from ttscale import families

        d = args.d if args.d is not None else exp.d
        families.one_spectrum(args.spectrum, d, name="--spectrum")  # refuse a bad spectrum before any training
    for flag in ("noise", "alpha", "format", "spectrum"):
        if getattr(args, flag) is not None:
            changes[flag] = getattr(args, flag)
    if args.noise is not None and args.noise < 0:
        raise ValueError(f"--noise must be >= 0, got {args.noise}")
    if args.ns is not None:
        changes["ns"] = _ints("--ns", args.ns)
    if args.gradient_through:
        changes["stop_gradient"] = False
    if args.curriculum is not None:
        d0, n0, steps = _ints("--curriculum", args.curriculum, 3)
        changes["curriculum"] = gpt2.Curriculum(d0, n0, steps)
    return dataclasses.replace(exp, **changes)


def run(args) -> int:
    from ttscale import gpt2, plots
    from ttscale.commands import prepare_out_dir
    from ttscale.experiments import gpt2 as study

    exp = experiment_from_args(args)
    scenarios = parse_scenarios(args.scenarios)
    if args.out is not None:
        prepare_out_dir("--out", args.out)
    protocols = gpt2.PROTOCOLS if args.protocol == "both" else (args.protocol,)
    for protocol in protocols:
        start = time.perf_counter()
        ds = study.gpt2_experiment(exp, out=args.out, protocol=protocol, seed=args.seed,
                                   progress=not args.no_progress, scenarios=scenarios)
        wall = time.perf_counter() - start
        print("\n".join(summary_lines(ds)))
        print(f"wall time ({ds.attrs['label']}): {wall:.1f} s")
        if args.out is not None:
            fig = plots.plot_gpt2(ds)
            label = ds.attrs["label"]
            path = os.path.join(args.out, f"gpt2_{label}.png")
            fig.savefig(path, dpi=120)
            print(f"wrote {path} and {os.path.join(args.out, f'gpt2_{label}.nc')}")
    return 0
