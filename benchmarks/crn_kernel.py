"""Sweep-A's common-random-numbers chunk program under other settings: cells per group, prompts per block, CoT steps
per loop trip, the kernel's layout and XLA's YNNPACK fusions.

    python benchmarks/crn_kernel.py [--rounds 2] [--repeats 5] [--variants engine,unroll 1,...] [--quick]

With common random numbers every cell reads the same ``S_Z``, and the pseudo-Newton kernel of a group of ``G`` cells
(``pseudo_newton.errors(..., group=True)``) makes each CoT step one small product ``S_Z [d, d] @ U [d, G]`` per prompt:
80 cells × 4096 prompts × 32 steps × d² = 4.2·10⁹ multiply-adds at sweep-A size. Each variant rebuilds the engine's
own chunk program with one setting changed and times it (best of ``--repeats`` warm calls, all devices); the variants
alternate within each round in one process. Every variant computes the same errors up to round-off (another
summation order), and the largest relative difference of its per-prompt errors from the engine's is printed.

- ``engine``: the engine as it is (all cells in one group, ``sweep._PROMPT_BLOCK`` prompts per block, 2 steps per trip).
- ``unroll U``: ``U`` CoT steps per ``lax.scan`` trip (any ``U``, as any ``B`` and ``G`` below). ``block B``: ``B`` prompts per cache-resident block.
  ``group G``: ``G`` cells per group (``lax.map`` over ``80 / G`` groups).
- ``cells-minor``: the state ``[b, d, G]`` with ``(S_Z U)_i = Σ_j S_Z[:, i, j] U_j`` written as ``d`` broadcast
  multiply-adds (one loop fusion, vectorised over cells) instead of a batched dot.
- ``transposed``: the state ``[b, G, d]`` and the step ``U S_Z`` (``S_Z`` is symmetric) as a batched dot.
- ``prompts-minor``: the single-cell kernel ``pseudo_newton._diagonal_unrolled`` on the group (state ``[d, G, b]``).
- ``ynn dot``, ``ynn dot+eltwise``, ``ynn dot+eltwise+reduce``, ``no ynn``: the XLA CPU option
  ``xla_cpu_experimental_ynn_fusion_type`` (which operations XLA hands to YNNPACK; by default each dot alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402

_YNN = {"ynn dot": "LIBRARY_FUSION_TYPE_DOT",
        "ynn dot+eltwise": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE",
        "ynn dot+eltwise+reduce": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE",
        "no ynn": ""}
LAYOUTS = ("cells-minor", "transposed", "prompts-minor")
VARIANTS = (("engine", "unroll 1", "unroll 4", "unroll 8", "unroll 32", "block 8", "block 32", "block 64", "block 256",
             "group 40", "group 20", "group 10") + LAYOUTS + tuple(_YNN))


def _layout(name: str):
    """``pseudo_newton.errors`` with its group path (diagonal ``P`` and root, no noise) in another layout."""
    import jax
    import jax.numpy as jnp

    from ttscale.models import pseudo_newton

    def errors(params, stats, k_max, unroll=None, group=False):
        if not group:
            return pseudo_newton.errors(params, stats, k_max, unroll=unroll, group=group)
        if stats.g is not None:
            raise SystemExit("the layouts assume sweep-A's noiseless prompts")
        P, a, w, S = params.P, stats.root, stats.w, stats.S_Z  # P, a [G, d]; w [b, d]; S_Z [b, d, d]
        q = a * a * P
        if name == "prompts-minor":
            return pseudo_newton._diagonal_unrolled(q, a, w, S, None, k_max)
        positive = a > 0
        inv_a2 = jnp.where(positive, 1.0 / jnp.where(positive, a * a, 1.0), 0.0)  # [G, d]
        unroll = 2 if unroll is None else unroll
        if name == "cells-minor":  # state [b, d, G]
            qc, ic = q.T[None], inv_a2.T[None]
            fixed = jnp.sum(jnp.where(positive.T[None], 0.0, (w * w)[:, :, None]), axis=1)  # [b, G]

            def step(u, _):
                r = S[:, :, 0, None] * u[:, None, 0, :]
                for j in range(1, w.shape[-1]):
                    r = r + S[:, :, j, None] * u[:, None, j, :]
                u = u - qc * r
                return u, jnp.sum(u * u * ic, axis=1) + fixed

            u0 = -w[:, :, None] * a.T[None]
        else:  # transposed: state [b, G, d]
            fixed = jnp.sum(jnp.where(positive[None], 0.0, (w * w)[:, None, :]), axis=2)  # [b, G]

            def step(u, _):
                u = u - q[None] * jnp.einsum("bgj,bij->bgi", u, S)
                return u, jnp.sum(u * u * inv_a2[None], axis=2) + fixed

            u0 = -w[:, None, :] * a[None]
        _, errs = jax.lax.scan(step, u0, None, length=k_max, unroll=unroll)  # [K, b, G]
        e0 = jnp.broadcast_to(jnp.sum(w * w, axis=1)[None, :, None], (1,) + errs.shape[1:])
        errs = jnp.transpose(jnp.concatenate([e0, errs], axis=0), (2, 1, 0))  # [G, b, K + 1]
        return jnp.where(jnp.isnan(errs), jnp.inf, errs)

    return errors


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from: {', '.join(VARIANTS)}")
    bc.common_arguments(p, repeats=5)
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS and not re.fullmatch(r"(unroll|block|group) [1-9][0-9]*", v)]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    bc.setup_devices(args)
    import jax
    import numpy as np

    from ttscale import sweep
    from ttscale.sweep_spec import SweepSpec

    spectra, n_prompts = (2, 64) if args.quick else (16, 4096)
    spec = SweepSpec(d=20, alphas=np.linspace(0, 2, spectra).tolist(), ns=(5, 10, 20, 40, 80), ms=(40.0,), k_max=32,
                     prompts=n_prompts, model="pseudo_newton", common_random_numbers=True)
    real_block, real_options = sweep._PROMPT_BLOCK, sweep._compiler_options

    def run(variant):
        word, _, value = variant.rpartition(" ")
        sweep._PROMPT_BLOCK = int(value) if word == "block" else real_block
        if variant in _YNN:
            sweep._compiler_options = lambda shape, mesh: dict(real_options(shape, mesh) or {},
                                                               xla_cpu_experimental_ynn_fusion_type=_YNN[variant])
        sweep._chunk_program.cache_clear()
        try:
            engine = sweep._Engine(spec)
            shape = engine.shape(0, engine.padded(spec.prompts))
            if word == "unroll":
                shape = dataclasses.replace(shape, hints=tuple(sorted(dict(shape.hints, unroll=int(value)).items())))
            if word == "group":
                shape = dataclasses.replace(shape, cell_group=min(int(value), shape.cells))
            if variant in LAYOUTS:
                shape = dataclasses.replace(shape, errors=_layout(variant))
            program = sweep._chunk_program(shape)
            call_args = (engine.keys(0), engine.cells, np.uint32(0), np.int32(spec.prompts))
            best = bc.best_warm_seconds(lambda: program(*call_args), args.repeats)
            errs = np.asarray(jax.block_until_ready(program(*call_args))[0])[..., :spec.prompts]  # the real prompts
            return best, errs, f"  (group {shape.cell_group})"
        finally:
            sweep._PROMPT_BLOCK, sweep._compiler_options = real_block, real_options
            sweep._chunk_program.cache_clear()

    print(f"# sweep-A chunk program, pseudo_newton, common random numbers, {spec.n_spectra * len(spec.ns)} cells × "
          f"{n_prompts} prompts × 32 steps, {jax.device_count()} devices, best of {args.repeats}, {args.rounds} rounds, "
          f"variants alternating in one process")
    out = bc.alternate_variants(variants, run, args.rounds, width=24)
    bc.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
