"""Variants of sweep-A's independent-prompt chunk program, measured inside the engine: ablations of the Bartlett
sampler, other layouts of ``L Lᵀ`` and of the kernel, and XLA CPU options.

    python benchmarks/sampler_variants.py [--rounds 3] [--repeats 5] [--variants engine,factor,...] [--quick]
        [--model gd|lsa|...] [--m 200] [--crn]     (the XLA-option variants only)

Each variant swaps ``sweep.draw_statistics`` (the ``factor`` variant also pseudo-Newton's prompts-minor kernel) or
the chunk program's compiler options, then builds and times the engine's own program (all 80 cells × 4096 prompts,
every device, best of ``--repeats`` warm calls). The variants alternate within each round in one process, so drift
falls on all alike. Variants that compute the same quantity also print the largest relative difference of their
per-prompt errors from the engine's. Ablations (``no ...``) compute wrong numbers on purpose: they show what a
piece costs. Assumes sweep-A's noiseless prompts and ``m ≥ d``.

- ``engine``: the engine as it is.
- ``no LLt``: ``L`` itself handed on as ``S_Z``. ``no chi2``: the diagonal taken from ``w``. ``no chi2 test``: each
  χ² draw's first Marsaglia–Tsang candidate kept as it is (no acceptance test, no retry loop). ``no erfinv``: the
  off-diagonal words cast to floats. ``none``: all three.
- ``factor``: ``S_Z`` never formed; pseudo-Newton steps with ``S_Z u = L (Lᵀ u)/m``, two triangular passes of
  prompts-minor ``[b]`` slabs (``d (d + 1)`` multiply-adds per step against ``d²``).
- ``lower``: ``L Lᵀ`` from its lower triangle as prompts-minor slabs that skip ``L``'s zeros (1 540 multiply-adds per
  prompt at ``d = 20`` against the batched dot's 8 000), mirrored.
- ``slices``: ``L`` assembled from static slices instead of one gather.
- ``blocked``: ``L Lᵀ`` from ``L``'s 2×2 blocks, skipping its upper-right zero block: ``[S₁₁; S₂₁] = [L₁₁; L₂₁] L₁₁ᵀ``
  and ``S₂₂ = [L₂₁ L₂₂][L₂₁ L₂₂]ᵀ`` (two batched dots of 4 000 multiply-adds per prompt at ``d = 20``, not one of 8 000).
- ``minor einsum``, ``minor sum``: ``L`` gathered prompts-minor (``[d, d, b]``) and ``S_Z[i, j] = Σ_k L[i, k] L[j, k]``
  as an ``einsum`` with the prompts as batch dimension, or as a broadcast multiply and sum over ``k``.
- ``xnnpack``, ``scheduler``, ``new emitters``, ``region analysis``, ``no ynn``: the XLA CPU options ``xla_cpu_use_xnnpack``,
  ``xla_cpu_enable_concurrency_optimized_scheduler``, ``xla_cpu_use_fusion_emitters=True`` (XLA's default, which
  the engine turns off on jaxlib 0.10: ``sweep._LEGACY_EMITTERS``) and ``xla_cpu_copy_insertion_use_region_analysis``,
  on top of the engine's own options; ``legacy emitters`` forces ``xla_cpu_use_fusion_emitters=False`` (for
  ``--crn``, whose program the engine leaves at XLA's default); ``no ynn`` turns off XLA's YNNPACK fusions (by
  default the batched dots, ``L Lᵀ`` and CRN's steps, run through YNNPACK). ``--model``, ``--m`` and ``--crn`` measure these
  option variants on another model, test length or scheme; the sampler and kernel variants assume sweep-A itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402

ABLATIONS = ("no LLt", "no chi2", "no chi2 test", "no erfinv", "none")
LAYOUTS = ("factor", "lower", "slices", "blocked", "minor einsum", "minor sum")
OPTIONS = {"xnnpack": {"xla_cpu_use_xnnpack": True},
           "scheduler": {"xla_cpu_enable_concurrency_optimized_scheduler": True},
           "new emitters": {"xla_cpu_use_fusion_emitters": True},
           "legacy emitters": {"xla_cpu_use_fusion_emitters": False},
           "region analysis": {"xla_cpu_copy_insertion_use_region_analysis": True},
           "no ynn": {"xla_cpu_experimental_ynn_fusion_type": ""}}
VARIANTS = ("engine",) + ABLATIONS + LAYOUTS + tuple(OPTIONS)


def _draw(variant: str):
    """A stand-in for ``prompts.draw_statistics`` (sweep-A: noiseless, ``m ≥ d``), the streams of the real one."""
    import jax.numpy as jnp
    import numpy as np

    from ttscale import prompts, rng

    no_product = variant in ("no LLt", "none", "factor")
    no_chi = variant in ("no chi2", "none")
    no_erfinv = variant in ("no erfinv", "none")

    def lower_product(off, diag, m):
        d = diag.shape[1]
        offt, diagt = off.T, diag.T  # prompts-minor: [n_off, b], [d, b]
        L = lambda i, k: diagt[i] if i == k else offt[i * (i - 1) // 2 + k]  # noqa: E731
        S = {}
        for i in range(d):
            for j in range(i + 1):
                acc = L(i, 0) * L(j, 0)
                for k in range(1, j + 1):
                    acc = acc + L(i, k) * L(j, k)
                S[i, j] = acc / m
        St = jnp.stack([jnp.stack([S[max(i, j), min(i, j)] for j in range(d)]) for i in range(d)])  # [d, d, b]
        return jnp.transpose(St, (2, 0, 1))

    def assemble(off, diag, d):
        count = off.shape[0]
        if variant != "slices":
            return jnp.concatenate([off, diag, jnp.zeros((count, 1), off.dtype)], axis=1)[
                :, prompts._lower_index(d)].reshape(count, d, d)
        rows = []
        for i in range(d):
            s = i * (i - 1) // 2
            parts = ([off[:, s:s + i]] if i else []) + [diag[:, i:i + 1]]
            if d - i - 1:
                parts.append(jnp.zeros((count, d - i - 1), off.dtype))
            rows.append(jnp.concatenate(parts, axis=1))
        return jnp.stack(rows, axis=1)

    def draw(key, start, count, d, m, dtype=jnp.float32, noisy=True):
        if noisy:
            raise SystemExit("the variants assume sweep-A's noiseless prompts")
        w = rng.prompt_normals(key, start, count, d, dtype, stream=2)
        if no_chi:
            diag = jnp.ones((count, d), dtype) * w[:, :1]
        elif variant == "no chi2 test":  # every attempt-0 candidate 2δ(1 + c z)³ kept: no acceptance test, no retries
            a = (m - np.arange(d)) / 2.0
            delta, c = np.float32(a - 1 / 3), np.float32(1 / np.sqrt(9 * (a - 1 / 3)))
            z = rng.words_to_normal(prompts._prompt_words(key, start, count, 2 * d, prompts._STREAM_DIAG_ROUND)[:, :d], dtype)
            diag = jnp.sqrt(2 * delta * (1 + c * z) ** 3)
        else:
            diag = jnp.sqrt(prompts.chi_squares(key, start, count, m - np.arange(d), dtype))
        n_off = d * (d - 1) // 2
        if no_erfinv:
            off = prompts._prompt_words(key, start, count, n_off + n_off % 2, prompts._STREAM_LOWER)[:, :n_off]
            off = off.astype(dtype) * np.float32(1e-9)
        else:
            off = rng.prompt_normals(key, start, count, n_off, dtype, stream=prompts._STREAM_LOWER)
        if variant == "lower":
            return lower_product(off, diag, m), None, None, w
        if variant.startswith("minor"):  # Lt[i, k, p] = L[p, i, k]
            flat = jnp.concatenate([off.T, diag.T, jnp.zeros((1, count), off.dtype)], axis=0)
            Lt = flat[prompts._lower_index(d)].reshape(d, d, count)
            St = (jnp.einsum("ikp,jkp->ijp", Lt, Lt) if variant == "minor einsum"
                  else jnp.sum(Lt[:, None, :, :] * Lt[None, :, :, :], axis=2))
            return jnp.transpose(St / m, (2, 0, 1)), None, None, w
        L = assemble(off, diag, d)
        if variant == "blocked":
            h = d // 2
            left = jnp.einsum("bik,bjk->bij", L[:, :, :h], L[:, :h, :h])  # [b, d, h]: S₁₁ over S₂₁
            S22 = jnp.einsum("bik,bjk->bij", L[:, h:, :], L[:, h:, :])  # [b, d − h, d − h]
            top = jnp.concatenate([left[:, :h], jnp.swapaxes(left[:, h:], 1, 2)], axis=2)
            return jnp.concatenate([top, jnp.concatenate([left[:, h:], S22], axis=2)], axis=1) / m, None, None, w
        if variant == "factor":
            return L / np.float32(np.sqrt(m)), None, None, w  # L/√m: S_Z = (L/√m)(L/√m)ᵀ
        return (L if no_product else jnp.einsum("bik,bjk->bij", L, L) / m), None, None, w

    return draw


def _factor_kernel(q, a, w, L, drift, k_max: int):
    """pseudo_newton._diagonal_unrolled with ``S_Z u = L (Lᵀ u)``, ``L`` lower triangular ``[b, d, d]``."""
    import jax
    import jax.numpy as jnp

    if drift is not None:
        raise SystemExit("the factor variant assumes noiseless prompts")
    d = w.shape[-1]
    Lt = jnp.transpose(L, (1, 2, 0))[:, :, None, :]  # Lt[i, j, 0, p] = L[p, i, j]
    cells = lambda v: v.T[:, :, None]  # noqa: E731
    positive = a > 0
    inv_a2 = cells(jnp.where(positive, 1.0 / jnp.where(positive, a * a, 1.0), 0.0))
    wt = w.T[:, None, :]
    fixed = jnp.sum(jnp.where(cells(positive), 0.0, wt * wt), axis=0)
    qc = cells(q)

    def step(u, _):
        v = []
        for j in range(d):  # v = Lᵀ u
            acc = Lt[j, j] * u[j]
            for i in range(j + 1, d):
                acc = acc + Lt[i, j] * u[i]
            v.append(acc)
        r = []
        for i in range(d):  # r = L v
            acc = Lt[i, 0] * v[0]
            for j in range(1, i + 1):
                acc = acc + Lt[i, j] * v[j]
            r.append(acc)
        u = u - qc * jnp.stack(r)
        return u, jnp.sum(u * u * inv_a2, axis=0) + fixed

    _, errs = jax.lax.scan(step, -wt * cells(a), None, length=k_max)
    e0 = jnp.broadcast_to(jnp.sum(wt * wt, axis=0), errs.shape[1:])[None]
    errs = jnp.transpose(jnp.concatenate([e0, errs], axis=0), (1, 2, 0))
    return jnp.where(jnp.isnan(errs), jnp.inf, errs)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--model", default="pseudo_newton", help="registered model (XLA-option variants only otherwise)")
    p.add_argument("--m", type=float, default=40.0, help="test length (default 40)")
    p.add_argument("--crn", action="store_true", help="common random numbers (XLA-option variants only)")
    bc.common_arguments(p)
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    swapped = [v for v in variants if v in ABLATIONS or v in LAYOUTS]
    if swapped and (args.model != "pseudo_newton" or args.crn):
        p.error(f"variants {swapped} swap pseudo-Newton's independent-prompt sampler or kernel: drop --model/--crn")
    bc.setup_devices(args)
    import jax
    import numpy as np

    from ttscale import sweep
    from ttscale.models import pseudo_newton
    from ttscale.sweep_spec import SweepSpec

    spectra, n_prompts = (3, 256) if args.quick else (16, 4096)
    spec = SweepSpec(d=20, alphas=np.linspace(0, 2, spectra).tolist(), ns=(5, 10, 20, 40, 80), ms=(args.m,), k_max=32,
                     prompts=n_prompts, model=args.model, common_random_numbers=args.crn)
    real = (sweep.draw_statistics, pseudo_newton._diagonal_unrolled, sweep._compiler_options)

    def run(variant):
        sweep.draw_statistics, pseudo_newton._diagonal_unrolled, sweep._compiler_options = real
        if variant in ABLATIONS or variant in LAYOUTS:
            sweep.draw_statistics = _draw(variant)
        if variant == "factor":
            pseudo_newton._diagonal_unrolled = _factor_kernel
        if variant in OPTIONS:
            engine_options = real[2]
            sweep._compiler_options = lambda shape, mesh: dict(engine_options(shape, mesh) or {}, **OPTIONS[variant])
        sweep._chunk_program.cache_clear()
        try:
            engine = sweep._Engine(spec)
            program = engine.program(0, engine.padded(spec.prompts))
            call_args = (engine.keys(0), engine.cells, np.uint32(0), np.int32(spec.prompts))
            best = bc.best_warm_seconds(lambda: program(*call_args), args.repeats)
            return best, np.asarray(jax.block_until_ready(program(*call_args))[0]), ""
        finally:
            sweep.draw_statistics, pseudo_newton._diagonal_unrolled, sweep._compiler_options = real
            sweep._chunk_program.cache_clear()

    print(f"# sweep-A chunk program, {args.model}, m = {args.m:g}, {'CRN' if args.crn else 'independent prompts'}, "
          f"{jax.device_count()} devices, best of {args.repeats}, "
          f"{args.rounds} rounds, variants alternating in one process")
    return bc.alternate_variants(variants, run, args.rounds, compared=lambda v: v not in ABLATIONS)


if __name__ == "__main__":
    main()
