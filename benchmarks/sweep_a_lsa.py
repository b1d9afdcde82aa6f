"""sweep-A-lsa: sweep-A through the literal LSA forward (``model="lsa"``) vs the literal NumPy forward.

    python benchmarks/sweep_a_lsa.py [--quick] [--baseline-prompts 1024] [--m 200] [--sampler prompts] [--json out.json]

The NumPy baseline is the literal layer ``f(E) = E + V E (Eᵀ W E)/ρ`` on every column of the
growing ``E``, fed back ``k`` times, vectorised over prompts (about 5 minutes per repeat at
4096 prompts per cell on 2 cores, so by default it runs on ``--baseline-prompts 1024`` and
throughputs are compared per prompt·step — the cost is linear in prompts).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_sweep  # noqa: E402
from sweep_a import with_sampler  # noqa: E402  (--sampler, as in sweep_a.py)


def main(argv=None) -> dict:
    argv = with_sampler(argv)
    if not any(a.startswith("--baseline-prompts") for a in argv):
        argv += ["--baseline-prompts", "1024"]
    return bench_sweep.main(argv, model="lsa", name="sweep-A-lsa")


if __name__ == "__main__":
    main()
