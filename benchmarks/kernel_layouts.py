"""The pseudo-Newton diagonal kernel in its two layouts, one CPU core: why ``UNROLLED_MAX_D`` is 28.

    python benchmarks/kernel_layouts.py [--d 10,20,28,32,40] [--repeats 5]

For each ``d``: 2048 prompts (Bartlett statistics, m = 2d) of one cell, 32 steps, in blocks of 8 prompts
(the engine's ``_PROMPT_BLOCK``), timed for 80 cells (the time of one cell × 80), with the batched
matrix-vector layout (``einsum("bij,bj->bi")``, the kernel for ``d > UNROLLED_MAX_D``) and the prompts-minor
layout (:func:`ttscale.models.pseudo_newton._diagonal_unrolled`), and their largest relative difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402
from ttscale import prompts
from ttscale.models import pseudo_newton as pn


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", default="10,20,28,32,40")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    count, cells, k_max, block = 2048, 80, 32, 8
    print(f"# one core, {count} prompts x {k_max} steps per cell, blocks of {block}; seconds for {cells} cells")
    for d in (int(x) for x in args.d.split(",")):
        S_Z, _, _, w = prompts.draw_statistics(jax.random.key(0), 0, count, d, 2 * d, jnp.float32, False)
        a = jnp.linspace(0.5, 1.0, d)
        P = 0.3 / (a * a)

        def layout(maxd):
            @jax.jit
            def run(S_Z, w):
                def one(x):
                    st = prompts.Statistics(x[0], None, None, x[1], a, jnp.float32(0), float(2 * d))
                    saved, pn.UNROLLED_MAX_D = pn.UNROLLED_MAX_D, maxd
                    try:
                        return pn.errors(pn.PseudoNewtonParams(P), st, k_max)
                    finally:
                        pn.UNROLLED_MAX_D = saved
                return jax.lax.map(one, (S_Z.reshape(-1, block, d, d), w.reshape(-1, block, d)))
            return run

        batched, minor = layout(0), layout(10**6)
        tb = bc.best_warm_seconds(lambda: batched(S_Z, w), args.repeats) * cells
        tm = bc.best_warm_seconds(lambda: minor(S_Z, w), args.repeats) * cells
        eb, em = np.asarray(batched(S_Z, w)), np.asarray(minor(S_Z, w))
        rel = np.max(np.abs(eb - em) / np.maximum(eb, 1e-30))
        print(f"d = {d:3d}: batched dot {tb:.3f} s, prompts-minor {tm:.3f} s, max rel. difference {rel:.1e}")


if __name__ == "__main__":
    main()
