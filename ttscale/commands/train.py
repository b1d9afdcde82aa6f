"""``ttscale train``: train the one-layer LSA with Optax and compare it with the Theorem 3.1 optimum.

Examples::

    ttscale train --spectrum power_law:alpha=1 --n 20 --steps 400 --out runs/pl1
    ttscale train --spectrum identity --spectrum power_law:alpha=1 --n 10,40 --probs 0.3,0.7 --out runs/mix

Writes ``OUT/config.json``, ``OUT/checkpoint.npz`` (after every chunk; rerunning the same command
resumes), ``OUT/params.npz`` (``W``, ``V``, config, losses), ``OUT/losses.csv`` and ``OUT/loss.png``.
"""

from __future__ import annotations

import os
import time

HELP = "train the LSA with Optax (SGD/Adam; task mixtures), save params + loss curve, compare with Γ⁻¹"


def parse_spectrum(d: int, text: str):
    """``identity`` | ``power_law:alpha=A`` (or ``power_law:A``) → :class:`~ttscale.spectra.Covariance` (tr = d)."""
    from ttscale import spectra

    text = str(text).strip()
    if text == "identity":
        return spectra.identity(d)
    if text.startswith("power_law:"):
        arg = text[len("power_law:"):]
        if arg.startswith("alpha="):
            arg = arg[len("alpha="):]
        try:
            alpha = float(arg)
        except ValueError:
            raise ValueError(f"--spectrum {text!r}: expected power_law:alpha=A with a number A") from None
        return spectra.power_law(d, alpha)
    raise ValueError(f"--spectrum {text!r}: expected identity or power_law:alpha=A")


def _numbers(name: str, text: str, kind=float) -> list:
    out = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(kind(item))
        except ValueError:
            raise ValueError(f"--{name}: {item!r} is not a valid {kind.__name__}") from None
    if not out:
        raise ValueError(f"--{name} must list at least one value")
    return out


def add_arguments(p):
    p.add_argument("--d", type=int, default=10, help="feature dimension (default 10)")
    p.add_argument("--spectrum", action="append", default=None,
                   help="training covariance: identity | power_law:alpha=A; repeat for a task mixture (default identity)")
    p.add_argument("--n", type=str, default="20", help="prompt length per task, comma list (default 20)")
    p.add_argument("--probs", type=str, default=None, help="task probabilities, comma list (default uniform)")
    p.add_argument("--steps", type=int, default=400, help="optimisation steps (default 400)")
    p.add_argument("--batch", type=int, default=2048, help="prompts per step (default 2048)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: auto, the optimal per-block SGD step)")
    p.add_argument("--schedule", choices=("constant", "cosine", "linear"), default="cosine")
    p.add_argument("--w-mode", choices=("frozen", "tied", "free"), default="frozen")
    p.add_argument("--v-mode", choices=("full", "block"), default="full")
    p.add_argument("--c", type=float, default=1.0, help="scale of the paper W (default 1)")
    p.add_argument("--noise", type=float, default=0.0, help="label-noise std (default 0)")
    p.add_argument("--chunk", type=int, default=100, help="steps per compiled chunk / checkpoint (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory (rerun with the same OUT to resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_config(args):
    from ttscale import training

    specs = args.spectrum or ["identity"]
    covs = [parse_spectrum(args.d, s) for s in specs]
    ns = _numbers("n", args.n, int)
    if len(ns) == 1 and len(covs) > 1:
        ns = ns * len(covs)
    if len(covs) == 1 and len(ns) > 1:
        covs = covs * len(ns)
    if len(ns) != len(covs):
        raise ValueError(f"--n lists {len(ns)} lengths but {len(covs)} --spectrum tasks were given")
    probs = None if args.probs is None else tuple(_numbers("probs", args.probs))
    tasks = tuple(training.Task(cov, n) for cov, n in zip(covs, ns))
    return training.TrainConfig(
        d=args.d, tasks=tasks, probs=probs, steps=args.steps, batch=args.batch, optimizer=args.optimizer,
        learning_rate=args.lr, schedule=args.schedule, c=args.c, w_mode=args.w_mode, v_mode=args.v_mode,
        noise=args.noise,
    )


def check_size(config) -> None:
    """Refuse (``ValueError`` naming ``--d`` / ``--batch``) a run whose arrays cannot fit in memory.

    Training holds ``V [D, D]`` (``D = 2d + 2``) about six times (parameters, gradient, update, step
    sizes, Adam's two moments) and a batch of ``--batch`` embedded prompts ``[D, n_max + 1]`` about four
    times (prompts, forward, backward).
    """
    from ttscale.commands import check_fits

    D = 2 * config.d + 2
    item = 8 if config.dtype == "float64" else 4
    check_fits(item * (6 * D * D + 4 * config.batch * D * (config.n_max + 1)),
               f"--d {config.d} with --batch {config.batch} and n = {config.n_max} (V [{D}, {D}], "
               f"prompts [{config.batch}, {D}, {config.n_max + 1}])",
               "lower --d or --batch")


def run(args) -> int:
    import jax
    import numpy as np

    from ttscale import training
    from ttscale.commands import cli_names, prepare_out_dir

    options = {"d": "--d", "steps": "--steps", "batch": "--batch", "learning_rate": "--lr", "c": "--c",
               "noise": "--noise", "chunk": "--chunk", "probs": "--probs", "Task.n": "--n", "out": "--out"}
    with cli_names(**options):
        config = build_config(args)  # validates everything before any compute
        check_size(config)
        prepare_out_dir("--out", args.out)
        start = time.perf_counter()
        result = training.fit(config, jax.random.key(args.seed), out=args.out, chunk=args.chunk,
                              progress=not args.no_progress)
    wall = time.perf_counter() - start
    losses = np.asarray(result.losses)
    steps = np.arange(1, len(losses) + 1)
    np.savetxt(os.path.join(args.out, "losses.csv"), np.column_stack([steps, losses]), delimiter=",",
               header="step,loss", comments="", fmt=["%d", "%.8g"])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    P_star = np.asarray(training.optimal_preconditioner(config.task_arrays(), config.noise))
    P = np.asarray(result.preconditioner)
    rel = float(np.linalg.norm(P - P_star) / np.linalg.norm(P_star))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(steps, losses, lw=0.8, label="training loss (one batch)")
    best = float(training.optimal_loss(config.task_arrays(), config.noise))
    ax.axhline(best, color="k", ls="--", lw=0.8, label=f"optimum (closed form) {best:.4g}")
    ax.legend(fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss ½||f(E)[:, -1] − target||²")
    ax.set_yscale("log")
    ax.set_title(f"LSA training: rel. error of P vs Λ̄Q⁻¹ = {rel:.3g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "loss.png"), dpi=120)
    plt.close(fig)

    print(f"ttscale train: {config.steps} steps x {config.batch} prompts, optimizer={config.optimizer}, "
          f"w_mode={config.w_mode}, v_mode={config.v_mode} ({wall:.1f} s)")
    print(f"  final loss {losses[-1]:.5g} (mean of last 10: {losses[-10:].mean():.5g}; closed-form optimum {best:.5g})")
    print(f"  learned P = -c V[w,x], c = {float(result.c):.5g}: ||P - P*||_F / ||P*||_F = {rel:.4g}")
    print(f"  wrote {args.out}/params.npz, config.json, losses.csv, loss.png")
    return 0
