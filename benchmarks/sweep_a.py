"""sweep-A: ttscale ``run_sweep`` (pseudo-Newton) vs a vectorised NumPy baseline, both sampling schemes.

    python benchmarks/sweep_a.py [--quick] [--repeats 3] [--memory] [--json out.json]

Workload (the defaults): ``ttscale sweep --d 20 --alpha 0:2:16 --n 5,10,20,40,80 --m 40
--k-max 32 --prompts 4096``: d = 20, 16 power-law spectra (tr Λ = d), Σ = Λ, m = 40, k = 1..32,
4096 prompts per cell; ``--schemes crn,independent`` times common random numbers and fresh
prompts per cell, each against the NumPy baseline using the same scheme.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_sweep  # noqa: E402


def main(argv=None) -> dict:
    return bench_sweep.main(argv, model="pseudo_newton", name="sweep-A")


if __name__ == "__main__":
    main()
