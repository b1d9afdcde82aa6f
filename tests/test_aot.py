"""ttscale.aot: compiled executables kept on disk, keyed by everything that determines them.

The cross-process path (a second ``ttscale sweep`` traces no chunk program and writes the same
numbers) is tests/test_devices.py::test_the_cli_keeps_compiled_programs_across_processes.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttscale import aot, sweep, theory
from ttscale.models import pseudo_newton
from ttscale.sweep_spec import SweepSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def cache(tmp_path):
    aot.enable(str(tmp_path / "aot"))
    aot._loaded.clear()
    yield tmp_path / "aot"
    aot.disable()
    aot._loaded.clear()


def test_stable_names_only_for_ttscale_module_functions():
    assert aot.stable_name(theory.on_grid) == "ttscale.theory.on_grid"
    assert aot.stable_name(pseudo_newton.errors) == "ttscale.models.pseudo_newton.errors"
    assert aot.stable_name(functools.partial(pseudo_newton.errors, unroll=4)) == (
        "ttscale.models.pseudo_newton.errors()[('unroll', 4)]")
    assert aot.stable_name(functools.partial(pseudo_newton.errors, unroll=np.ones(3))) is None  # not a plain value

    def closure(x):
        return x

    assert aot.stable_name(closure) is None  # a closure: its name does not identify its captured values
    assert aot.stable_name(np.sum) is None  # not ttscale's code: the source digest does not cover it
    assert aot.stable_name(pseudo_newton.make(np.ones(3)).init) is None  # captures a P


def test_keys_change_with_everything_that_shapes_the_program():
    x = np.ones((3, 4), np.float32)
    base = aot.key("f", (x,), {"k": 1})
    assert aot.key("f", (np.zeros((3, 4), np.float32),), {"k": 1}) == base  # values are not part of it
    assert aot.key("g", (x,), {"k": 1}) != base
    assert aot.key("f", (x,), {"k": 2}) != base
    assert aot.key("f", (np.ones((3, 5), np.float32),), {"k": 1}) != base
    assert aot.key("f", (np.ones((3, 4), np.int32),), {"k": 1}) != base
    assert aot.key("f", ((x, x),), {"k": 1}) != base  # pytree structure
    with jax.enable_x64(True):
        assert aot.key("f", (x,), {"k": 1}) != base  # x64 mode is part of the environment
    assert aot.key("f", (x,), {"k": 1}) == base


def _spec(**kw):
    return SweepSpec(d=4, alphas=(0.0, 1.0), ns=(5, 20), ms=(12,), k_max=6, prompts=64, **kw)


def test_sweep_through_kept_executables_equals_the_plain_one(cache):
    """With the cache on, run_sweep stores its programs; after forgetting them in memory it loads them from
    the files: both datasets equal the cache-off run bit for bit."""
    spec = _spec(noise=0.3)
    aot.disable()
    plain = sweep.run_sweep(spec, progress=False)
    aot.enable(str(cache))
    stored = sweep.run_sweep(spec, progress=False)
    files = sorted(os.listdir(cache))
    assert len(files) >= 4  # grid map, preconditioners, closed forms, keys, chunk program
    aot._loaded.clear()
    loaded = sweep.run_sweep(spec, progress=False)
    assert sorted(os.listdir(cache)) == files
    for name in plain.data_vars:
        np.testing.assert_array_equal(stored[name].values, plain[name].values, err_msg=name)
        np.testing.assert_array_equal(loaded[name].values, plain[name].values, err_msg=name)


def test_a_damaged_file_is_recompiled_and_replaced(cache):
    spec = _spec()
    first = sweep.theory_on_grid(spec)
    files = sorted(cache.iterdir())
    assert files
    for path in files:
        path.write_bytes(b"not an executable")
    aot._loaded.clear()
    again = sweep.theory_on_grid(spec)
    for name in first:
        np.testing.assert_array_equal(again[name], first[name], err_msg=name)
    assert all(path.stat().st_size > 100 for path in files)  # rewritten with a real executable


def test_code_outside_ttscale_is_never_kept(cache):
    """A model defined outside the package (a closure here) compiles as usual: no file names its chunk program."""
    from ttscale import models

    def init(train, n):
        return pseudo_newton.learned_preconditioner(train, n)

    def errors(params, stats, k_max):
        return pseudo_newton.errors(params, stats, k_max)

    mine = models.Model("mine", init, errors, "statistics", pseudo_newton.preconditioner)
    spec = SweepSpec(d=4, alphas=(0.0,), ns=(5,), ms=(12,), k_max=4, prompts=16, model=mine)
    engine = sweep._Engine(spec)
    assert engine.program_name(0, engine.padded(16)) is None
    ds = sweep.run_sweep(spec, progress=False)
    # what was kept (this cache is the test's own) are ttscale's own programs (the preconditioners of cells, closed
    # forms, keys, hardness, test roots: 5), not the model's chunk program (nor its init, a closure)
    assert len(os.listdir(cache)) == 5 and np.all(np.isfinite(ds["mean"].values))


_LAPACK_PROBE = """
import sys, numpy as np
import ttscale
ttscale.use_cpu_cores(2)
from ttscale import aot, sweep
from ttscale.sweep_spec import SweepSpec
aot.enable(sys.argv[1])
spec = SweepSpec(d=4, spectra="eig:3,2,1,0.5", test="power_law:alpha=1", ns=(5, 20), ms=(12,), k_max=5, prompts=32)
if sys.argv[2:] == ["background"]:  # as run_sweep does: the loaded closed forms must wait for this set-up
    aot.set_up_lapack(background=True)
out = sweep.theory_on_grid(spec)
print(repr(float(out["overthinking_term"].sum())), repr(float(out["spectral_radius"].sum())))
"""


def test_a_loaded_program_that_calls_lapack_runs_in_a_fresh_process(tmp_path):
    """The closed forms call LAPACK (eigh): a process that only loads them must set those kernels up first
    (before that fix, the second process died with a segmentation fault)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")

    def run(*extra):
        out = subprocess.run([sys.executable, "-c", _LAPACK_PROBE, str(tmp_path / "aot"), *extra], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
        return out.stdout.strip().splitlines()[-1]

    first = run()
    assert any(tmp_path.joinpath("aot").iterdir())
    assert run() == first
    assert run("background") == first  # LAPACK set up in a thread while the program loads


_XLA_PROBE = """
import sys
import ttscale
from ttscale import aot, sweep
from ttscale.devices import use_compile_cache
from ttscale.sweep_spec import SweepSpec
use_compile_cache(sys.argv[1])
mode = sys.argv[2]
if mode == "xla-only":
    aot.disable()
if mode == "poison":  # the unguarded store: executables that JAX's persistent cache loaded are kept as they are
    aot._fresh_compile = lambda lowered: lowered.compile()
spec = SweepSpec(d=4, alphas=(0.0, 1.0), ns=(5, 20), ms=(12,), k_max=6, prompts=64, noise=0.2)
ds = sweep.run_sweep(spec, progress=False)
print("RESULT", repr(float(ds["mean"].sum())), repr(float(ds["limit_error"].sum())), repr(float(ds["median"].sum())))
"""


def test_programs_first_met_in_jaxs_persistent_cache_are_kept_correctly(tmp_path):
    """jaxlib cannot re-serialise an executable that JAX's persistent compilation cache loaded (the file loads,
    then running it fails with "Function ... not found"). A run after an aot-less run (JAX's cache already
    holds every program) must keep freshly compiled executables that the next process can run; and a file
    made the unguarded way is deleted when it fails, the call falling back to jit with the same numbers."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("TTSCALE_NO_CACHE", None)  # tests/conftest.py sets it for the suite

    def run(cache, mode):
        out = subprocess.run([sys.executable, "-c", _XLA_PROBE, str(cache), mode], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (mode, out.stderr[-2000:])
        return [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")][-1]

    cache = tmp_path / "a"
    reference = run(cache, "xla-only")  # fills JAX's cache only
    poisoned = tmp_path / "b"
    shutil.copytree(cache, poisoned)  # the same start (JAX's cache only) for the unguarded store below
    assert run(cache, "both") == reference  # JAX's cache hits: recompiled under a key of its own, then kept
    kept = sorted(p.name for p in (cache / "aot").rglob("*.bin"))
    assert len(kept) >= 4
    assert run(cache, "both") == reference  # loads what was kept: it runs
    assert sorted(p.name for p in (cache / "aot").rglob("*.bin")) == kept

    assert not list((poisoned / "aot").rglob("*.bin"))
    assert run(poisoned, "poison") == reference  # keeps broken re-serialised executables
    assert run(poisoned, "both") == reference  # they fail to run: deleted, the calls fall back to jit
    assert run(poisoned, "both") == reference
