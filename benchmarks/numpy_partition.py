"""NumPy's ``partition`` on the CPU it runs on: the kernel under ``ttscale.summary.median_rows`` (the sweep's
exact medians over prompts).

    python benchmarks/numpy_partition.py [--repeats 9]
    NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" python benchmarks/numpy_partition.py

NumPy ≥ 1.26 sends a one-``kth`` ``partition`` of 32/64-bit numbers to x86-simd-sort, on AVX-512 CPUs to its
AVX-512 kernel. That kernel stores with the memory form of ``vpcompress``, which AMD Zen 4 (family 25 with AVX-512;
Zen 3 has none) runs in microcode, so there it can be slower than the AVX2 kernel the
environment variable above falls back to (NumPy reads it at import; NumPy < 2.4 names the features
``AVX512F AVX512_SKX …`` instead). Each line: best of ``--repeats`` on a fresh copy, rows of 4096
non-negative float32 (sweep-A's prompts per cell) as their bit patterns, as ``median_rows`` partitions them; the
last line is ``median_rows`` itself on sweep-A's 2640 rows (16 spectra × 5 n × 33 k) of ``--prompts`` prompts, its
default threads. ``ttscale`` itself imports NumPy without those kernels on Zen 4 (:mod:`ttscale.numpy_dispatch`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402
from ttscale.summary import median_rows  # noqa: E402


def best(f, arr, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        b = arr.copy()
        t0 = time.perf_counter()
        f(b)
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--rows", type=int, default=256, help="rows of the partition lines (default 256)")
    p.add_argument("--prompts", type=int, default=4096, help="columns of the median_rows line (default 4096)")
    args = p.parse_args(argv)
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    bc.print_machine(bc.machine_info())
    print(f"# NPY_DISABLE_CPU_FEATURES={os.environ.get('NPY_DISABLE_CPU_FEATURES', '')!r}")
    print(f"# dispatch targets on: {[f for f in __cpu_dispatch__ if __cpu_features__.get(f)]}")
    n, h = 4096, 2048
    x = np.random.default_rng(0).standard_exponential((args.rows, n)).astype(np.float32)
    u = x.view(np.uint32)
    lines = [
        ("partition(kth=h), uint32 bit patterns", u, lambda b: b.partition(h, axis=-1)),
        ("partition(kth=h), float32", x, lambda b: b.partition(h, axis=-1)),
        ("partition(kth=h), float64", x.astype(np.float64), lambda b: b.partition(h, axis=-1)),
        ("partition(kth=[h-1, h]), uint32 (no SIMD)", u, lambda b: b.partition([h - 1, h], axis=-1)),
        ("sort, uint32", u, lambda b: b.sort(axis=-1)),
    ]
    for name, arr, f in lines:
        t = best(f, arr, args.repeats)
        print(f"{name:44s} {1e3 * t:8.2f} ms  ({1e6 * t / args.rows:.1f} µs per row of {n})")
    big = np.random.default_rng(1).standard_exponential((2640, args.prompts)).astype(np.float32)
    t = best(median_rows, big, args.repeats)
    print(f"{f'median_rows, 2640 x {args.prompts} (sweep-A)':44s} {1e3 * t:8.2f} ms")


if __name__ == "__main__":
    main()
