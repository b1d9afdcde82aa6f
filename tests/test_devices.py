"""ttscale.devices: split the host CPU into XLA devices (use_cpu_cores, usable_cores) and the CLI flag.

JAX fixes its device count when its backends start, so every check of the effect runs in a fresh
interpreter. The three interpreters start together (they mostly wait on imports) and report JSON.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from ttscale import cli
from ttscale.devices import usable_cores, use_cpu_cores

ROOT = pathlib.Path(__file__).resolve().parents[1]

_REPORT = """
import json, sys, warnings
def report(**kw):
    print("REPORT " + json.dumps(kw))
def run_quietly(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [(w.category.__name__, str(w.message), w.filename) for w in rec]
"""

_SCRIPTS = {
    # before any JAX operation: use_cpu_cores() (default: usable cores), then the command line with
    # --cpu-devices 3 (its use_cpu_cores call is recorded) and a stub subcommand that reports the count
    "fresh": _REPORT + """
import types, jax
import ttscale.cli as cli
import ttscale.devices as devices
default, w_default = run_quietly(devices.use_cpu_cores)
calls, real = [], devices.use_cpu_cores
def recorded(*args, **kwargs):
    out, rec = run_quietly(real, *args, **kwargs)
    calls.append([list(args), kwargs, out, rec])
    return out
devices.use_cpu_cores = recorded
probe = types.ModuleType("probe")
probe.HELP = "report the device count"
probe.add_arguments = lambda parser: None
probe.run = lambda args: 40 + len(jax.devices())
cli._available = lambda: {"probe": probe}
rc = cli.main(["--cpu-devices", "3", "probe"])
report(default=default, usable=devices.usable_cores(), w_default=w_default, calls=calls, rc=rc,
       devices=len(jax.devices()), cpu=len(jax.devices("cpu")))
""",
    # a JAX operation first: the count can no longer change; the current count comes back, with a warning
    "late": _REPORT + """
import ttscale, jax, jax.numpy as jnp
jnp.ones(2).block_until_ready()
late, w_late = run_quietly(ttscale.use_cpu_cores, 3)
quiet, w_quiet = run_quietly(ttscale.use_cpu_cores, 4, warn=False)
same, w_same = run_quietly(ttscale.use_cpu_cores, 1)
report(late=late, w_late=w_late, quiet=quiet, w_quiet=w_quiet, same=same, w_same=w_same,
       devices=len(jax.devices()))
""",
    # an explicit XLA_FLAGS device count wins
    "forced": _REPORT + """
import ttscale, jax
five, w_five = run_quietly(ttscale.use_cpu_cores, 5)
default, w_default = run_quietly(ttscale.use_cpu_cores)
report(five=five, default=default, warnings=w_five + w_default, devices=len(jax.devices()))
""",
}
_FORCED_FLAGS = "--xla_force_host_platform_device_count=2"


@pytest.fixture(scope="module")
def reports():
    """Run every script in its own interpreter (concurrently); ``{name: report dict}``."""
    base = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    base.pop("JAX_NUM_CPU_DEVICES", None)  # would set the same option from the environment
    procs = {}
    for name, code in _SCRIPTS.items():
        env = dict(base, XLA_FLAGS=_FORCED_FLAGS) if name == "forced" else base
        procs[name] = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"{name} failed:\n{stderr}"
            lines = [line for line in stdout.splitlines() if line.startswith("REPORT ")]
            assert len(lines) == 1, f"{name}: no report in\n{stdout}\n{stderr}"
            out[name] = json.loads(lines[0][len("REPORT "):])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


# ----------------------------------------------------------------------------- in this process
def test_usable_cores():
    n = usable_cores()
    assert isinstance(n, int) and 1 <= n <= (os.cpu_count() or n)
    if hasattr(os, "sched_getaffinity"):
        assert n == len(os.sched_getaffinity(0))


def test_usable_cores_falls_back_to_cpu_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert usable_cores() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown
    assert usable_cores() == 1


@pytest.mark.parametrize("n", [0, -1, -8])
def test_use_cpu_cores_rejects_counts_below_one(n):
    with pytest.raises(ValueError, match=r"\bn\b"):
        use_cpu_cores(n)


@pytest.mark.parametrize("n", [1.5, 2.0, True, False, "2", [2]])
def test_use_cpu_cores_rejects_non_integers(n):
    with pytest.raises(TypeError, match=r"\bn\b"):
        use_cpu_cores(n)


def test_cli_parses_cpu_devices(capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["--cpu-devices", "2", "demo"]).cpu_devices == 2
    assert parser.parse_args(["demo"]).cpu_devices is None
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--cpu-devices", "two", "demo"])
    assert exc.value.code == 2
    assert "--cpu-devices" in capsys.readouterr().err
    # a bad count is reported by main as an error naming n (exit status 2), before the command runs
    assert cli.main(["--cpu-devices", "0", "demo"]) == 2
    err = capsys.readouterr().err
    assert "ttscale demo: error:" in err and "n must be >= 1" in err


# ----------------------------------------------------------------------------- fresh interpreters
def test_use_cpu_cores_before_jax_starts_sets_the_device_count(reports):
    r = reports["fresh"]
    assert r["default"] == r["usable"] >= 1 and r["w_default"] == []
    # the command line called use_cpu_cores(3, warn=True) once; it returned 3 without a warning
    assert r["calls"] == [[[3], {"warn": True}, 3, []]]
    assert r["devices"] == r["cpu"] == 3
    assert r["rc"] == 43  # the stub subcommand returned 40 + len(jax.devices()): the flag took effect first


def test_use_cpu_cores_after_jax_started_returns_the_current_count_and_warns(reports):
    r = reports["late"]
    assert r["devices"] == 1
    assert r["late"] == r["quiet"] == r["same"] == 1
    [(category, message, filename)] = r["w_late"]
    assert category == "UserWarning" and "use_cpu_cores" in message and "3" in message
    assert filename == "<string>"  # attributed to the caller (stacklevel=2), not to ttscale/devices.py
    assert r["w_quiet"] == []  # warn=False
    assert r["w_same"] == []  # asking for the count in effect is not a conflict


def test_xla_flags_device_count_wins(reports):
    r = reports["forced"]
    assert r["five"] == r["default"] == 2
    assert r["devices"] == 2
    assert r["warnings"] == []


_CACHE_PROBE = """
import sys, jax.monitoring
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if "cache_hits" in event else None)
from ttscale import sweep
traces = []
sweep._on_trace = lambda shape, start: traces.append(shape)  # called each time a chunk program is traced
from ttscale.cli import main
rc = main(sys.argv[1:])
print("HITS", len(hits), "TRACES", len(traces), "RC", rc)
"""


def test_the_cli_keeps_compiled_programs_across_processes(tmp_path):
    """Two processes run the same sweep: the first stores JAX's compiled programs (xla/) and the engine's
    executables (aot/); the second traces no chunk program, stores nothing new and writes the same numbers.
    --no-cache and TTSCALE_NO_CACHE=1 turn both off (the chunk program is traced again, nothing is stored)."""
    import xarray as xr

    from ttscale import aot

    cache = tmp_path / "cache"
    (cache / "xla" / "0123456789abcdef").mkdir(parents=True)  # another source's cache: removed
    (cache / "xla" / "0123456789abcdef" / "entry").write_bytes(b"x")
    env = dict(os.environ, TTSCALE_CACHE_DIR=str(cache), JAX_PLATFORMS="cpu")
    env.pop("TTSCALE_NO_CACHE", None)
    argv = ["sweep", "--d", "6", "--alpha", "0,1", "--n", "5,20", "--m", "30", "--k-max", "8", "--prompts", "512",
            "--no-progress"]

    def run(name, *extra, **more_env):
        out = subprocess.run([sys.executable, "-c", _CACHE_PROBE, *extra, *argv, "--out", str(tmp_path / name)],
                             env=dict(env, **more_env), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("HITS")][-1].split()
        compiled.extend(ln for ln in out.stderr.splitlines() if "Compiling " in ln)  # JAX_LOG_COMPILES=1 only
        return int(line[1]), int(line[3])

    compiled = []

    def files():
        return {p.relative_to(cache) for p in cache.rglob("*") if p.is_file()}

    _, traced = run("a.nc")
    first = files()
    assert traced == 1
    assert any(p.parts[0] == "xla" for p in first) and any(p.parts[0] == "aot" for p in first), first
    assert {p.parts[1] for p in first} == {aot.source_digest()[:16]}  # one directory per ttscale source
    _, traced = run("b.nc", JAX_LOG_COMPILES="1")
    assert traced == 0 and files() == first  # loaded, not traced; nothing new stored
    # nor any other program compiled: no eager jnp call on the host path either (each is a small program)
    assert not compiled, "\n".join(compiled)
    a, b = xr.load_dataset(tmp_path / "a.nc"), xr.load_dataset(tmp_path / "b.nc")
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert run("c.nc", "--no-cache")[1] == 1 and run("d.nc", TTSCALE_NO_CACHE="1")[1] == 1
    assert files() == first
