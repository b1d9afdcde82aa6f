"""Writing a sweep's Dataset with each netCDF engine xarray has here, and each engine's import in a fresh process.

    python benchmarks/netcdf_engines.py [--repeats 5] [--quick]

The Dataset is sweep-A's (``ttscale sweep --d 20 --alpha 0:2:16 --n 5,10,20,40,80 --m 40 --k-max 32``; its size does
not depend on the prompts, so it is run at 64 per cell): 10 variables and 9 coordinates. Each installed engine of
``netcdf4`` (ttscale's, :data:`ttscale.store.NETCDF_ENGINE`), ``h5netcdf`` (ttscale's before; ``pip install
h5netcdf`` to time it) and ``scipy`` (netCDF-3, another file format: for scale only) writes it ``--repeats`` times
(best and median reported, after one untimed write), and every file is read back and checked against the Dataset.
The import time is ``python -c "import xarray, <engine module>"`` minus ``python -c "import xarray"``, medians of
``--repeats`` fresh processes. Returns ``{engine: {"write_best", "write_median", "import"}}`` (seconds).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402

ENGINES = {"netcdf4": "netCDF4", "h5netcdf": "h5netcdf", "scipy": "scipy.io"}


def _import_seconds(module: str, repeats: int) -> float:
    def one(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t

    base = statistics.median(one("import xarray") for _ in range(repeats))
    return statistics.median(one(f"import xarray, {module}") for _ in range(repeats)) - base


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bc.common_arguments(p, repeats=5)
    args = p.parse_args(argv)
    bc.setup_devices(args)
    import numpy as np
    import xarray as xr

    from ttscale import store, sweep
    from ttscale.sweep_spec import SweepSpec

    spectra, prompts = (3, 16) if args.quick else (16, 64)
    spec = SweepSpec(d=20, alphas=np.linspace(0, 2, spectra).tolist(), ns=(5, 10, 20, 40, 80), ms=(40,), k_max=32,
                     prompts=prompts)
    ds = sweep.run_sweep(spec, progress=False)
    print(f"# sweep-A's Dataset: {len(ds.data_vars)} variables, {len(ds.coords)} coordinates, {ds.nbytes / 1e3:.0f} kB;"
          f" ttscale writes with {store.NETCDF_ENGINE!r}; best and median of {args.repeats}")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine, module in ENGINES.items():
            if importlib.util.find_spec(module.split(".")[0]) is None:
                print(f"{engine:<9} not installed")
                continue
            path = f"{tmp}/{engine}.nc"
            ds.to_netcdf(path, engine=engine)  # untimed: the engine's first write
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                ds.to_netcdf(path, engine=engine)
                times.append(time.perf_counter() - t)
            with xr.open_dataset(path, engine=engine) as back:
                for name in ds.data_vars:
                    np.testing.assert_array_equal(back[name].values, ds[name].values, err_msg=f"{engine}: {name}")
            imported = _import_seconds(module, 1 if args.quick else args.repeats)
            out[engine] = {"write_best": min(times), "write_median": statistics.median(times), "import": imported}
            print(f"{engine:<9} write {min(times) * 1e3:6.1f} ms best, {statistics.median(times) * 1e3:6.1f} ms median;"
                  f" import beside xarray {imported:.2f} s")
    bc.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
