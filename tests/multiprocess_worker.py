"""One process of the multi-process sweep test (``tests/test_multiprocess.py``), the README's localhost recipe.

    python tests/multiprocess_worker.py --out DIR/sweep.nc --processes 2 --process-id I --port PORT
    python tests/multiprocess_worker.py --out DIR/single.nc --processes 1 --devices 2    # the reference

Every process of a job runs this same script. With ``--processes P > 1`` it joins the job first
(:func:`ttscale.devices.use_distributed`, i.e. ``jax.distributed.initialize`` with the coordinator
at ``127.0.0.1:PORT``, CPU collectives over gloo), with ``--devices`` CPU devices of its own; then
it runs ``run_sweep(spec(), out=...)``: each chunk's prompts are split over the devices of all
processes and process 0 writes ``out``. Each process also saves the Dataset it got back to
``<out>.process<I>.npz`` (``mean``, ``stderr``, ``median``) and prints one ``REPORT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def spec(crn: bool = False):
    """The small sweep of the test: pseudo-Newton with label noise, 3 chunks (the last one padded)."""
    from ttscale.sweep import SweepSpec

    return SweepSpec(d=4, alphas=(0.0, 1.5), ns=(5.0, 20.0), ms=(12.0,), k_max=6, prompts=200,
                     chunk=80, noise=0.1, model="pseudo_newton", seed=3, common_random_numbers=crn)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the sweep's .nc (process 0 writes it)")
    p.add_argument("--processes", type=int, default=2, help="processes in the job (1: no jax.distributed)")
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--port", type=int, default=0, help="coordinator port on 127.0.0.1 (process 0 listens)")
    p.add_argument("--devices", type=int, default=1, help="CPU devices of this process")
    p.add_argument("--crn", action="store_true", help="common random numbers")
    p.add_argument("--timeout", type=int, default=60, help="seconds to wait for the other processes")
    args = p.parse_args(argv)

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from ttscale.devices import use_cpu_cores, use_distributed

    use_cpu_cores(args.devices)
    if args.processes > 1:
        use_distributed(f"127.0.0.1:{args.port}", args.processes, args.process_id, timeout=args.timeout)
    import jax
    import numpy as np

    from ttscale.sweep import run_sweep

    ds = run_sweep(spec(args.crn), out=args.out, progress=False)
    index = jax.process_index()
    np.savez(f"{args.out}.process{index}.npz", **{name: ds[name].values for name in ("mean", "stderr", "median")})
    print("REPORT " + json.dumps({"process_index": index, "process_count": jax.process_count(),
                                  "devices": jax.device_count(), "local_devices": jax.local_device_count()}),
          flush=True)
    if args.processes > 1:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
