"""``ttscale train``: train the one-layer LSA with Optax and compare it with the Theorem 3.1 optimum.

Examples::

    ttscale train --spectrum power_law:alpha=1 --n 20 --steps 400 --out runs/pl1
    ttscale train --spectrum identity --spectrum power_law:alpha=1 --n 10,40 --probs 0.3,0.7 --out runs/mix
    ttscale train --spectrum my_eigenvalues.txt --n 20 --out runs/mine      # d from the file

``--spectrum`` takes the one spectrum syntax of ``ttscale.families`` (as ``ttscale sweep``): identity,
power_law:alpha=A[,trace=T], hard:H=H, eig:3,2,1, a .npy/.txt/.csv/.json file, grids a:b:N or [a,b,c];
each spectrum is one task of the mixture.

Writes ``OUT/config.json``, ``OUT/checkpoint.npz`` (after every chunk; rerunning the same command
resumes), ``OUT/params.npz`` (``W``, ``V``, config, losses), ``OUT/losses.csv`` and ``OUT/loss.png``.
"""

from __future__ import annotations

import os
import time

HELP = "train the LSA with Optax (SGD/Adam; task mixtures), save params + loss curve, compare with Γ⁻¹"


def parse_spectrum(d, text: str):
    """One ``--spectrum`` text (the syntax of :mod:`ttscale.families`) → one float64 :class:`~ttscale.spectra.Covariance`."""
    from ttscale.families import one_spectrum

    return one_spectrum(text, d=d, name="--spectrum", d_name="--d")


def task_spectra(args):
    """The tasks' :class:`~ttscale.families.SpectrumGrid` of every ``--spectrum`` (default identity); ``d`` from
    ``--d``, else from the spectra when they fix it, else 10."""
    from ttscale.families import parse_spectra

    return parse_spectra(args.spectrum or ["identity"], d=args.d, name="--spectrum", default_d=10, d_name="--d")


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


EPILOG = """\
examples:
  ttscale train --spectrum power_law:alpha=1 --n 20 --steps 400 --out runs/pl1
  ttscale train --spectrum identity --spectrum power_law:alpha=1 --n 10,40 --probs 0.3,0.7 --out runs/mix
  ttscale train --spectrum my_eigenvalues.txt --n 20 --out runs/mine       (d from the file)
writes OUT/config.json, OUT/checkpoint.npz (rerun the same command to resume), OUT/params.npz,
OUT/losses.csv and OUT/loss.png.
"""


def add_arguments(p):
    import argparse

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--d", type=int, default=None,
                   help="feature dimension (default: fixed by the spectra when they fix it, e.g. a file; else 10)")
    p.add_argument("--spectrum", action="append", default=None, metavar="SPEC",
                   help="training covariance of a task: identity | power_law:alpha=A[,trace=T] | hard:H=H | eig:3,2,1 | "
                        "FILE.npy/.txt/.csv/.json; repeat (or give a grid a:b:N / [a,b,c]) for a task mixture "
                        "(default identity)")
    p.add_argument("--n", type=str, default="20", help="prompt length per task, comma list (default 20)")
    p.add_argument("--probs", type=str, default=None, help="task probabilities, comma list (default uniform)")
    p.add_argument("--steps", type=int, default=400, help="optimisation steps (default 400)")
    p.add_argument("--batch", type=int, default=2048, help="prompts per step (default 2048)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="optimizer (default sgd)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: auto: SGD the optimal constant step per column block of V, Adam 0.05)")
    p.add_argument("--schedule", choices=("constant", "cosine", "linear"), default="cosine",
                   help="learning-rate multiplier over the steps: constant (1 throughout), cosine or linear "
                        "(decay from 1 to 0 at the last step; the late small steps average out gradient noise) "
                        "(default cosine)")
    p.add_argument("--w-mode", choices=("frozen", "tied", "free"), default="frozen",
                   help="the LSA's W: frozen (fixed at the paper's W with scale --c; default), tied (W = paper W(c) "
                        "with the scalar c trained), free (every entry of W trained; W[x, w] gets no gradient and "
                        "the CoT fixed point becomes a scaled w, see docs/science.md)")
    p.add_argument("--v-mode", choices=("full", "block"), default="full",
                   help="the LSA's V: full (all of V trained; default) or block (only V[w, x], the block that "
                        "holds the preconditioner P = -c V[w, x])")
    p.add_argument("--c", type=float, default=1.0, help="scale of the paper W (default 1)")
    p.add_argument("--noise", type=float, default=0.0, help="label-noise std (default 0)")
    p.add_argument("--chunk", type=int, default=100, help="steps per compiled chunk / checkpoint (default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the training prompts, 0..2**32-1 (default 0)")
    p.add_argument("--out", required=True, help="output directory (required; rerun with the same OUT to resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: a bar on stderr)")


def build_config(args):
    from ttscale import training

    grid = task_spectra(args)
    covs = [cov.astype("float32") for cov in grid.covariances]  # the training dtype (the grid holds float64)
    ns = _numbers("n", args.n, int)
    if len(ns) == 1 and len(covs) > 1:
        ns = ns * len(covs)
    if len(covs) == 1 and len(ns) > 1:
        covs = covs * len(ns)
    if len(ns) != len(covs):
        raise ValueError(f"--n lists {len(ns)} lengths but {len(covs)} --spectrum tasks were given")
    probs = None if args.probs is None else tuple(_numbers("probs", args.probs))
    tasks = training.task_mixture(covs, [float(n) for n in ns])
    return training.TrainConfig(
        d=grid.d, tasks=tasks, probs=probs, steps=args.steps, batch=args.batch, optimizer=args.optimizer,
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

    P_star = np.asarray(training.optimal_preconditioner(config.mixture(), config.noise))
    P = np.asarray(result.preconditioner)
    rel = float(np.linalg.norm(P - P_star) / np.linalg.norm(P_star))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(steps, losses, lw=0.8, label="training loss (one batch)")
    best = float(training.optimal_loss(config.mixture(), config.noise))
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
