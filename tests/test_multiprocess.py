"""Multi-process sweeps: two processes on localhost (one CPU device each, gloo collectives) give the
single-process dataset exactly.

Each job is a set of fresh interpreters (``tests/multiprocess_worker.py``, or the ``ttscale sweep
--distributed`` command line with ``TTSCALE_COORDINATOR`` / ``TTSCALE_NUM_PROCESSES`` /
``TTSCALE_PROCESS_ID``), all started together and bounded by a timeout, so a hung collective fails the
test with both processes' stderr instead of hanging CI.

What "exactly" means, and why:

* against one process with **two** CPU devices the dataset is **bit-identical** (every variable): the
  global mesh has the same two devices in the same order, each device draws the same prompts (the
  counter-based sampler depends on the prompt index only), computes the same per-device moments, and
  the host merges them in the same order;
* against one process with **one** device only ``median`` and the closed forms would be bit-identical
  (the same per-prompt errors); ``mean`` and ``stderr`` would agree to round-off (measured 1.7e-7
  relative), because the host merges per-device moments and the merge order differs. Two devices in
  one process is therefore the reference.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "multiprocess_worker.py"
TIMEOUT = 240  # seconds for every job together (≈ 20 s on a quiet 2-core machine); a hung collective ends here
VARIABLES = ("mean", "stderr", "median", "limit_error", "one_step_error", "scaling_law_error", "best_k")
# the worker's spec() as command-line flags
CLI_SWEEP = ["sweep", "--d", "4", "--alpha", "0,1.5", "--n", "5,20", "--m", "12", "--k-max", "6",
             "--prompts", "200", "--chunk", "80", "--noise", "0.1", "--seed", "3", "--no-progress", "--distributed"]
# what a machine without working CPU collectives says (the test is then skipped with that text)
_NO_COLLECTIVES = re.compile(r"(gloo|collectives?)[^\n]*(not (supported|available|implemented)|UNIMPLEMENTED)",
                             re.IGNORECASE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", TTSCALE_NO_CACHE="1", **extra)
    for name in ("JAX_NUM_CPU_DEVICES", "JAX_COORDINATOR_ADDRESS", "TTSCALE_COORDINATOR",
                 "TTSCALE_NUM_PROCESSES", "TTSCALE_PROCESS_ID"):
        if name not in extra:
            env.pop(name, None)
    return env


def _run_jobs(out):
    """Start every job at once, wait for all (bounded); ``{name: (returncode, stdout, stderr)}``.

    One test runs them all: a module-scoped fixture shared by two tests would run the five interpreters once per
    pytest-xdist worker that takes one of those tests (the suite's ``--dist worksteal`` keeps no module together)."""
    worker_port, cli_port = _free_port(), _free_port()
    worker = [sys.executable, str(WORKER)]
    commands = {
        "two:0": (worker + ["--out", str(out / "two.nc"), "--port", str(worker_port), "--process-id", "0"], _env()),
        "two:1": (worker + ["--out", str(out / "two.nc"), "--port", str(worker_port), "--process-id", "1"], _env()),
        "single2": (worker + ["--out", str(out / "single2.nc"), "--processes", "1", "--devices", "2"], _env()),
    }
    for i in (0, 1):
        commands[f"cli:{i}"] = (
            [sys.executable, "-c", "import sys; from ttscale.cli import main; sys.exit(main(sys.argv[1:]))",
             "--cpu-devices", "1", *CLI_SWEEP, "--out", str(out / "cli.nc")],
            _env(TTSCALE_COORDINATOR=f"127.0.0.1:{cli_port}", TTSCALE_NUM_PROCESSES="2", TTSCALE_PROCESS_ID=str(i)))
    procs = {name: subprocess.Popen(cmd, env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (cmd, env) in commands.items()}
    results = {}
    try:
        for name, proc in procs.items():
            try:
                stdout, stderr = proc.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                for other in procs.values():
                    other.kill()
                report = "\n".join(f"--- {n} stderr:\n{(p.communicate()[1] or '')[-3000:]}" for n, p in procs.items())
                pytest.fail(f"{name} did not finish within {TIMEOUT} s (a hung collective?)\n{report}")
            results[name] = (proc.returncode, stdout, stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def _check(results, *names):
    failed = [n for n in names if results[n][0] != 0]
    if not failed:
        return
    text = "\n".join(f"--- {n} (exit {results[n][0]}) stderr:\n{results[n][2][-4000:]}" for n in names)
    match = _NO_COLLECTIVES.search(text)
    if match and not os.environ.get("CI"):  # CI's machine has gloo: there this is a failure, never a skip
        pytest.skip(f"CPU collectives do not work here: {match.group(0)}")
    pytest.fail(f"{', '.join(failed)} failed:\n{text}")


def _report(results, name) -> dict:
    lines = [ln for ln in results[name][1].splitlines() if ln.startswith("REPORT ")]
    assert len(lines) == 1, results[name]
    return json.loads(lines[0][len("REPORT "):])


def _dataset(path):
    import xarray as xr

    with xr.open_dataset(path) as ds:
        return ds.load()


def test_two_processes_give_the_single_process_dataset_bit_for_bit(tmp_path):
    """Two workers (the README's localhost recipe), and ``ttscale --cpu-devices 1 sweep --distributed`` in two
    processes joining from the TTSCALE_* variables: each writes the dataset of one process with two devices."""
    out = tmp_path
    results = _run_jobs(out)
    _check(results, "two:0", "two:1", "single2")
    reports = [_report(results, f"two:{i}") for i in (0, 1)]
    assert [r["process_index"] for r in reports] == [0, 1]
    assert all(r["process_count"] == 2 and r["devices"] == 2 and r["local_devices"] == 1 for r in reports)
    assert _report(results, "single2")["devices"] == 2

    two, single2 = _dataset(out / "two.nc"), _dataset(out / "single2.nc")
    assert two.attrs["spec_identity"] == single2.attrs["spec_identity"]
    assert len(json.loads(two.attrs["devices"])) == 2
    # only process 0 wrote: one .nc, and no chunk directory left behind
    assert sorted(p.name for p in out.glob("two.nc*")) == ["two.nc", "two.nc.process0.npz", "two.nc.process1.npz"]
    for name in VARIABLES:
        np.testing.assert_array_equal(two[name].values, single2[name].values, err_msg=name)
    assert np.all(np.isfinite(two["mean"].values)) and np.all(two["stderr"].values > 0)
    # every process returns the same Dataset (process 1 from the gathered errors, without writing)
    for i in (0, 1):
        got = np.load(out / f"two.nc.process{i}.npz")
        for name in ("mean", "stderr", "median"):
            np.testing.assert_array_equal(got[name], two[name].values, err_msg=f"process {i}: {name}")

    # the command line joins a job from the environment: the same file
    _check(results, "cli:0", "cli:1", "single2")
    assert "wrote" in results["cli:0"][1] and "ttscale sweep:" not in results["cli:1"][1]  # process 1 prints no summary
    cli, single2 = _dataset(out / "cli.nc"), _dataset(out / "single2.nc")
    assert cli.attrs["spec_identity"] == single2.attrs["spec_identity"]
    for name in VARIABLES:
        np.testing.assert_array_equal(cli[name].values, single2[name].values, err_msg=name)


def test_use_distributed_rejects_bad_arguments(monkeypatch):
    from ttscale.devices import use_distributed

    with pytest.raises(ValueError, match="coordinator"):
        use_distributed("localhost", 2, 0)
    with pytest.raises(TypeError, match="num_processes"):
        use_distributed("127.0.0.1:1", 2.0, 0)
    with pytest.raises(ValueError, match="process_id"):
        use_distributed("127.0.0.1:1", 2, 2)
    with pytest.raises(ValueError, match="process_id"):
        use_distributed("127.0.0.1:1", 2, -1)
    monkeypatch.setenv("TTSCALE_COORDINATOR", "127.0.0.1:1")
    monkeypatch.delenv("TTSCALE_NUM_PROCESSES", raising=False)
    monkeypatch.delenv("TTSCALE_PROCESS_ID", raising=False)
    with pytest.raises(ValueError, match="TTSCALE_NUM_PROCESSES"):
        use_distributed()
    monkeypatch.setenv("TTSCALE_NUM_PROCESSES", "two")
    monkeypatch.setenv("TTSCALE_PROCESS_ID", "0")
    with pytest.raises(ValueError, match="integers"):
        use_distributed()
