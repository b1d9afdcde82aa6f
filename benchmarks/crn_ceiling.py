"""How far is the engine's common-random-numbers kernel from what this CPU can do?  Against a hand-tiled C kernel.

    python benchmarks/crn_ceiling.py [--repeats 5] [--rounds 2] [--quick] [--no-peak]

With common random numbers every cell of sweep-A reads the same ``S_Z``, and each CoT step of the pseudo-Newton kernel
is one small product ``S_Z [d, d] @ U [d, G]`` per prompt (``pseudo_newton.errors(..., group=True)``): 80 cells × 4096
prompts × 32 steps × d² = 4.2·10⁹ multiply-adds at sweep-A size. XLA's CPU backend runs them as small batched dots.
This script times, on the same ``S_Z`` (drawn by the engine's own sampler for sweep-A's 80 cells):

- the engine's kernel as its chunk program calls it (``sweep._block_errors`` over cache-resident blocks), jitted on one
  XLA CPU device for its share of the prompts (half of them on 2 cores), and on every device at once for all of them;
- ``benchmarks/crn_ceiling.c``: the same iteration as a C kernel with the product tiled by hand for AVX2 and FMA
  (5 rows × 16 cells per tile; the state stays in L1), built with the system C compiler (``$CC`` or ``cc``,
  ``-O3 -march=native``) and called through ``ctypes`` on one thread for the same share, and on one thread per device
  for all prompts;

each the best of ``--repeats`` warm calls, alternating in ``--rounds`` rounds. The C kernel's errors are checked
against the engine's (largest relative difference; they differ by round-off, another summation order) and both rates
are given in GFLOP/s of the minimal arithmetic (2 · prompts · cells · steps · d²) and as a share of the float32 matmul
peak measured in the same run. The C kernel is a measurement, not part of ttscale: the package runs only what JAX
compiles. Without a C compiler, or on a CPU without AVX2 and FMA, the script says so and times nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402

SOURCE = Path(__file__).resolve().parent / "crn_ceiling.c"


def build_kernel(directory: str):
    """Compile ``crn_ceiling.c`` into ``directory`` and load it: ``(library, None)``, or ``(None, why not)``."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None, f"the C kernel needs an x86-64 CPU with AVX2 and FMA; this one is {platform.machine()}"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if flags and not (" avx2" in flags and " fma" in flags):
        return None, "the C kernel needs AVX2 and FMA; /proc/cpuinfo lists neither both"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler ($CC, cc or gcc) on PATH"
    library = Path(directory) / "crn_ceiling.so"
    command = [compiler, "-O3", "-march=native", "-mavx2", "-mfma", "-shared", "-fPIC", "-o", str(library), str(SOURCE)]
    built = subprocess.run(command, capture_output=True, text=True)
    if built.returncode != 0:
        return None, f"{' '.join(command)} failed: {built.stderr.strip()[-500:]}"
    lib = ctypes.CDLL(str(library))
    lib.crn_errors.restype = None
    lib.crn_errors.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 6
    return lib, None


def c_inputs(S_Z, w, root, P):
    """The C kernel's padded float32 arrays from the engine's statistics: ``S [B, D, D]``, ``u0 [B, D, G]``, ``q``,
    ``inv_a2 [D, G]``, ``fixed [B, G]`` with ``D = d`` rounded up to 5 and ``G`` (cells) to 16 (zeros, which stay zero)."""
    import numpy as np

    B, d = w.shape
    G = root.shape[0]
    D, Gp = -(-d // 5) * 5, -(-G // 16) * 16
    S = np.zeros((B, D, D), np.float32)
    S[:, :d, :d] = S_Z
    positive = root > 0  # [G, d]
    u0 = np.zeros((B, D, Gp), np.float32)
    u0[:, :d, :G] = -(w[:, :, None] * root.T[None])  # u = A e, e_0 = -w
    q = np.zeros((D, Gp), np.float32)
    q[:d, :G] = (root * root * P).T
    inv_a2 = np.zeros((D, Gp), np.float32)
    inv_a2[:d, :G] = np.where(positive, 1.0 / np.where(positive, root * root, 1.0), 0.0).T
    fixed = np.zeros((B, Gp), np.float32)
    fixed[:, :G] = np.einsum("bi,gi->bg", w * w, (~positive).astype(np.float64))
    return S, u0, q, inv_a2, fixed


def c_errors(lib, arrays, k_max: int, threads: int, pool=None):
    """Run the C kernel over all prompts, split into ``threads`` contiguous ranges run by ``pool`` (a
    ``ThreadPoolExecutor``; ``ctypes`` releases the GIL) → errors ``[B, k_max, G]`` of steps 1..k_max."""
    import numpy as np

    S, u0, q, inv_a2, fixed = arrays
    B, D, Gp = u0.shape
    err = np.empty((B, k_max, Gp), np.float32)
    bounds = np.linspace(0, B, threads + 1).astype(int)

    def run(lo, hi):
        ptr = lambda a, row: int(a.ctypes.data + row * a.strides[0])  # noqa: E731
        lib.crn_errors(int(hi - lo), D, Gp, k_max, ptr(S, lo), ptr(u0, lo), q.ctypes.data, inv_a2.ctypes.data,
                       ptr(fixed, lo), ptr(err, lo))

    if threads == 1:
        run(0, B)
    else:
        list(pool.map(run, bounds[:-1], bounds[1:]))
    return err


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    bc.common_arguments(p, repeats=5)
    args = p.parse_args(argv)
    n_devices = bc.setup_devices(args)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ttscale import sweep
    from ttscale.sweep_spec import SweepSpec

    bc.print_machine(bc.machine_info())
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(n_devices) as pool:
        lib, why = build_kernel(tmp)
        if lib is None:
            print(f"# not measured: {why}")
            return {"skipped": why}
        spectra, prompts = (2, 64) if args.quick else (16, 4096)
        spec = SweepSpec(d=20, alphas=np.linspace(0, 2, spectra).tolist(), ns=(5, 10, 20, 40, 80), ms=(40,), k_max=32,
                         prompts=prompts, model="pseudo_newton", common_random_numbers=True)
        engine = sweep._Engine(spec)
        shape = engine.shape(0, engine.padded(prompts))
        if shape.cell_group != shape.cells or shape.noisy:
            raise SystemExit("the comparison assumes one group of noiseless cells (sweep-A)")
        base = jax.jit(lambda key: sweep._draw(key, jnp.uint32(0), shape, count=prompts))(engine.keys(0))
        base = tuple(None if x is None else np.asarray(x) for x in base)
        S_Z, w = base[0], base[-1]
        cells = engine.cells
        P, root = np.asarray(cells["params"].P), np.asarray(cells["root"])
        if P.ndim != 2 or root.ndim != 2:
            raise SystemExit("the comparison assumes diagonal preconditioners and roots (sweep-A's power laws)")
        kernel = jax.jit(lambda base, cells: sweep._block_errors(base, cells, shape, vmapped=True))  # [G, K+1, b]
        devices = jax.devices()[:n_devices]
        halves = np.array_split(np.arange(prompts), n_devices)
        placed = [(jax.device_put(tuple(None if x is None else x[idx] for x in base), dv), jax.device_put(cells, dv))
                  for idx, dv in zip(halves, devices)]

        def engine_all():
            return jax.block_until_ready([kernel(b, c) for b, c in placed])

        reference = np.concatenate([np.asarray(e) for e in engine_all()], axis=-1)  # [G, K+1, prompts]
        arrays = c_inputs(S_Z, w, root, P)
        h = len(halves[0])
        one = (arrays[0][:h], arrays[1][:h], arrays[2], arrays[3], arrays[4][:h])  # S, u0, q, inv_a2, fixed
        got = c_errors(lib, arrays, spec.k_max, n_devices, pool)[:, :, :shape.cells]  # [prompts, K, G]
        ref = np.transpose(reference[:, 1:, :], (2, 1, 0))
        finite = np.isfinite(ref) & (ref > 0)
        rel = float(np.max(np.abs(got[finite] - ref[finite]) / ref[finite]))

        flops = 2.0 * prompts * shape.cells * spec.k_max * spec.d ** 2
        print(f"# sweep-A CRN kernel: {shape.cells} cells × {prompts} prompts × {spec.k_max} steps, d = {spec.d}: "
              f"{flops / 1e9:.2f} GFLOP; {n_devices} devices / threads; best of {args.repeats}, {args.rounds} rounds")
        print(f"# C kernel against the engine's errors: largest relative difference {rel:.1e}")
        share = f"1/{n_devices} of the prompts"
        variants = {
            f"engine, one device ({share})": lambda: kernel(*placed[0]),
            f"C, one thread ({share})": lambda: c_errors(lib, one, spec.k_max, 1),
            "engine, every device": engine_all,
            f"C, {n_devices} threads": lambda: c_errors(lib, arrays, spec.k_max, n_devices, pool),
        }
        seconds: dict = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, fn in variants.items():
                seconds[name].append(bc.best_warm_seconds(fn, args.repeats))
        peak = None if args.no_peak else bc.peaks()["peak_gflops"]
        rates = {}
        for name, ts in seconds.items():
            work = flops * (h / prompts if share in name else 1.0)
            rates[name] = work / min(ts) / 1e9
            of_peak = "" if peak is None else f", {100 * rates[name] / peak:.0f} % of the matmul peak"
            print(f"{name:40s} {', '.join(f'{t:.3f}' for t in ts)} s  ({rates[name]:.1f} GFLOP/s{of_peak})")
        if peak is not None:
            print(f"# float32 matmul peak (2048², NumPy and JAX, the larger): {peak:.1f} GFLOP/s")
        ratio = min(seconds["engine, every device"]) / min(seconds[f"C, {n_devices} threads"])
        print(f"# every core: the C kernel is {ratio:.2f}× the engine's kernel")
        out = {"seconds": seconds, "gflops": rates, "peak_gflops": peak, "max_relative_difference": rel,
               "flops": flops, "c_over_engine": ratio}
        bc.write_json(args.json, out)
        return out


if __name__ == "__main__":
    main()
