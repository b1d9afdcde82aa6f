"""sweep-A: ttscale ``run_sweep`` (pseudo-Newton) vs a vectorised NumPy baseline, both sampling schemes.

    python benchmarks/sweep_a.py [--quick] [--repeats 3] [--m 200] [--sampler prompts] [--memory] [--json out.json]

Workload (the defaults): ``ttscale sweep --d 20 --alpha 0:2:16 --n 5,10,20,40,80 --m 40
--k-max 32 --prompts 4096``: d = 20, 16 power-law spectra (tr Λ = d), Σ = Λ, m = 40, k = 1..32,
4096 prompts per cell; ``--schemes crn,independent`` times common random numbers and fresh
prompts per cell, each against the NumPy baseline using the same scheme. ``--m 200`` is the long-prompt
case; ``--sampler`` is ttscale's ``SweepSpec.sampler`` (default ``auto``: the statistics are drawn
directly, Bartlett; ``prompts``: every prompt is drawn, like for like with a NumPy baseline drawing prompts).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_sweep  # noqa: E402


def with_sampler(argv):
    """Remove ``--sampler X`` from ``argv`` and make the benchmark's specs use it; returns the rest of ``argv``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sampler = "auto"
    for i, a in enumerate(argv):
        if a == "--sampler" and i + 1 < len(argv):
            sampler = argv[i + 1]
            del argv[i:i + 2]
            break
        if a.startswith("--sampler="):
            sampler = a.split("=", 1)[1]
            del argv[i]
            break
    if sampler not in ("auto", "statistics", "prompts"):
        raise SystemExit(f"--sampler must be auto, statistics or prompts, got {sampler!r}")
    if sampler != "auto" and not getattr(bench_sweep.spec_fields, "_sampler", None):
        fields = bench_sweep.spec_fields

        def spec_fields(*args, **kwargs):
            return dict(fields(*args, **kwargs), sampler=sampler)

        spec_fields._sampler = sampler
        bench_sweep.spec_fields = spec_fields
    print(f"# ttscale sampler: {sampler}")
    return argv


def main(argv=None) -> dict:
    return bench_sweep.main(with_sampler(argv), model="pseudo_newton", name="sweep-A")


if __name__ == "__main__":
    main()
