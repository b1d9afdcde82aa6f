"""Where does one sweep-A chunk program spend its time?  Ablations of the engine's own compiled program.

    python benchmarks/sweep_parts.py [--m 40] [--independent | --crn] [--repeats 3] [--cpu-devices N]

Times the engine's chunk program (``ttscale.sweep._chunk_program``, all 4096 prompts of all 80 cells of
sweep-A in one call, on every device) as it is, then with the draws replaced by constant statistics
("no sampling": the kernel and moments alone), with the model's kernel replaced by a sum of its inputs
("no kernel": the sampler and moments alone), and with both replaced (the program's fixed overhead).
Each figure is the best of ``--repeats`` warm calls, with their range beside it (how noisy the machine
is). The ablated programs compute wrong numbers on purpose; they only say what each part costs.
Independent prompts by default (``--crn`` for common random numbers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, default=40)
    p.add_argument("--crn", action="store_true", help="common random numbers (default: independent prompts)")
    p.add_argument("--independent", action="store_true", help="independent prompts (the default)")
    bc.common_arguments(p)
    args = p.parse_args(argv)
    bc.setup_devices(args)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ttscale import sweep
    from ttscale.sweep_spec import SweepSpec

    spectra, prompts = (3, 256) if args.quick else (16, 4096)  # --quick: a smoke test
    spec = SweepSpec(d=20, alphas=np.linspace(0, 2, spectra).tolist(), ns=(5, 10, 20, 40, 80), ms=(args.m,), k_max=32,
                     prompts=prompts, common_random_numbers=args.crn)

    def best_of(label):
        sweep._chunk_program.cache_clear()
        engine = sweep._Engine(spec)
        batch = engine.padded(spec.prompts)
        program = engine.program(0, batch)
        call_args = (engine.keys(0), engine.cells, np.uint32(0), np.int32(spec.prompts))
        times = bc.warm_seconds(lambda: program(*call_args), args.repeats)
        best = min(times)
        print(f"{label:<34} {best:.3f} s  (all {args.repeats}: {min(times):.3f}–{max(times):.3f} s)")
        return best

    real_draw, real_block = sweep._draw, sweep._block_errors

    def constant_draw(key_data, first, shape, count=None):
        local = shape.batch // shape.n_devices if count is None else count
        z = jnp.zeros((local, shape.d), shape.dtype) + first.astype(shape.dtype)
        S_Z = jnp.broadcast_to(jnp.eye(shape.d, dtype=shape.dtype), (local, shape.d, shape.d)) + z[:, :, None]
        if shape.reads != "statistics":
            raise SystemExit("the ablation assumes a statistics-reading model")
        return (S_Z, None, None, z)

    def summed_block(base, cells, shape, vmapped):
        b = base[-1].shape[0]
        s = jnp.sum(base[0], axis=(1, 2)) + jnp.sum(base[-1], axis=1)
        out = jnp.broadcast_to(s[None, :], (shape.k_max + 1, b))
        if not vmapped:
            return out
        group = jnp.sum(cells["noise"])  # [G] cells of a common-random-numbers group
        return out[None] + jnp.zeros((cells["noise"].shape[0], 1, 1), out.dtype) * group

    print(f"# sweep-A chunk program, m = {args.m}, {'common random numbers' if args.crn else 'independent prompts'}, "
          f"{jax.device_count()} devices, best of {args.repeats}")
    out = {"full": best_of("whole program")}
    try:
        sweep._draw = constant_draw
        out["kernel"] = best_of("no sampling (kernel + moments)")
        sweep._draw, sweep._block_errors = real_draw, summed_block
        out["sampling"] = best_of("no kernel (sampler + moments)")
        sweep._draw = constant_draw
        out["overhead"] = best_of("neither (overhead)")
    finally:
        sweep._draw, sweep._block_errors = real_draw, real_block
        sweep._chunk_program.cache_clear()
    return out


if __name__ == "__main__":
    main()
