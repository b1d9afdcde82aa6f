"""``ttscale demo``: simulated CoT error beside the closed forms for a default setting."""

from __future__ import annotations

import time

HELP = "simulated test-time CoT error vs limit_error and the Cor 3.5 bound (d=10, Λ=Σ=I)"


def add_arguments(p):
    p.add_argument("--d", type=int, default=10, help="feature dimension (default 10)")
    p.add_argument("--n", type=str, default="10,20,30", help="training prompt lengths, comma list")
    p.add_argument("--m", type=int, default=200, help="test prompt length (default 200)")
    p.add_argument("--k-max", type=int, default=10, help="CoT steps k = 1..k_max (default 10)")
    p.add_argument("--prompts", type=int, default=8192, help="prompts per n (default 8192)")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    import jax
    import jax.numpy as jnp

    import ttscale as tts

    from ttscale.commands import check_fits

    start = time.perf_counter()
    try:
        ns = [int(v) for v in args.n.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--n must be a comma list of whole prompt lengths, got {args.n!r}") from None
    if not ns:
        raise ValueError("--n must list at least one prompt length")
    for name, value, low in (("--d", args.d, 1), ("--m", args.m, 1), ("--k-max", args.k_max, 1),
                             ("--prompts", args.prompts, 1), ("--n", min(ns), 1)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    # the prompts X [prompts, d, m] (and their copy in the rollout) and S = X Xᵀ / m per prompt
    check_fits(4 * args.prompts * args.d * (2 * args.m + args.d),
               f"--prompts {args.prompts} of --d {args.d}, --m {args.m} (X [{args.prompts}, {args.d}, {args.m}])",
               "lower --prompts, --m or --d")
    cov = tts.identity(args.d)
    prompts = tts.sample_prompts(jax.random.key(args.seed), cov, args.m, args.prompts)

    @jax.jit
    def curves(n, prompts):
        P = tts.gamma_inverse(cov, n)
        errs = tts.pseudo_newton_errors(P, prompts, args.k_max)
        return errs, tts.limit_error(P, cov, args.k_max), tts.scaling_law_error(cov, n, jnp.arange(args.k_max + 1))

    print(f"ttscale demo: d={args.d}, Λ = Σ = I, m={args.m}, {args.prompts} prompts, pseudo-Newton = optimal LSA")
    print(f"{'n':>4} {'k':>3} {'simulated E||w_k - w||^2':>28} {'limit_error (m=inf)':>20} {'Cor 3.5':>12}")
    for n in ns:
        errs, lim, cor = jax.device_get(curves(jnp.float32(n), prompts))
        sim = tts.error_curve(errs)  # mean, s.e., median on the host (ttscale.summary)
        for k in range(1, args.k_max + 1):
            print(f"{n:>4} {k:>3} {sim.mean[k]:>16.5g} ± {sim.stderr[k]:<9.2g} {lim[k]:>20.5g} {cor[k]:>12.5g}")
    print(f"(finite m={args.m} adds a O(1/m) excess over the m→∞ limit; {time.perf_counter() - start:.1f} s)")
    return 0
