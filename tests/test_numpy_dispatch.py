"""ttscale.numpy_dispatch: NumPy imported without its AVX-512 sorts on AMD Zen 4, and only there."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ttscale import numpy_dispatch
from ttscale.numpy_dispatch import AVX512_TARGETS, VARIABLE, first_cpu, numpy_version, slow_avx512_sort

#: NumPy >= 2.4 names its AVX-512 targets as AVX512_TARGETS does; earlier NumPy is imported as it is
NEW_NAMES = np.lib.NumpyVersion(np.__version__) >= "2.4.0"
#: NumPy's CPU features in a child interpreter (numpy._core from NumPy 2, numpy.core before)
FEATURES = """
try:
    from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_features__ as f
except ImportError:
    from numpy.core._multiarray_umath import __cpu_baseline__, __cpu_features__ as f
"""


def cpuinfo(vendor="AuthenticAMD", family=25, flags="fpu sse2 avx2 fma avx512f avx512bw"):
    one = (f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: 17\n"
           f"model name\t: AMD EPYC\nflags\t\t: {flags}\n")
    return one + "\n" + one.replace("processor\t: 0", "processor\t: 1")


def test_zen4_is_amd_family_25_with_avx512f_and_nothing_else_is():
    assert slow_avx512_sort(cpuinfo())
    assert not slow_avx512_sort(cpuinfo(flags="fpu sse2 avx2 fma"))  # Zen 3: family 25, no AVX-512
    assert not slow_avx512_sort(cpuinfo(family=26))  # Zen 5
    assert not slow_avx512_sort(cpuinfo(vendor="GenuineIntel", family=6))  # Intel AVX-512: fast compress-store
    assert not slow_avx512_sort(cpuinfo(flags="fpu avx512fp16 avx2"))  # a flag that merely starts with avx512f
    assert not slow_avx512_sort("")
    assert first_cpu(cpuinfo(family=26))["cpu family"] == "26" and first_cpu("") == {}


def test_numpy_version_is_read_without_importing_it():
    major, minor = (int(v) for v in np.__version__.split(".")[:2])
    assert numpy_version() == (major, minor)


def _child(code: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-W", "error::ImportWarning", "-c", code], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


CHILD = """
import json, os, sys
from ttscale.numpy_dispatch import import_numpy
set_to = import_numpy(cpuinfo={info!r}, cache_dir={cache!r})
""" + FEATURES.replace("{", "{{").replace("}", "}}") + """
print(json.dumps({{"set_to": set_to, "left": os.environ.get("{var}"), "x86_v4": bool(f.get("X86_V4")),
                  "avx512_icl": bool(f.get("AVX512_ICL"))}}))
"""


def _plain(env: dict) -> dict:
    """NumPy's AVX-512 targets when imported as it is."""
    return _child("import json" + FEATURES + "print(json.dumps({'x86_v4': bool(f.get('X86_V4')), "
                  "'avx512_icl': bool(f.get('AVX512_ICL'))}))", env)


def test_on_zen4_numpy_loses_exactly_its_avx512_targets_and_the_variable_does_not_leak(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    got = _child(CHILD.format(info=cpuinfo(), var=VARIABLE, cache=str(tmp_path)), env)
    if NEW_NAMES:
        # NumPy parsed the names without an ImportWarning (raised as an error in the child), the variable is gone,
        # and the AVX-512 targets are off whatever this CPU has.
        assert got == {"set_to": AVX512_TARGETS, "left": None, "x86_v4": False, "avx512_icl": False}
    else:  # older NumPy: imported as it is, nothing probed
        assert got == {"set_to": None, "left": None, **_plain(env)} and not (tmp_path / "numpy").exists()


def test_elsewhere_or_when_the_user_chose_numpy_is_imported_as_it_would_be(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    plain = _plain(env)["x86_v4"]
    cache = str(tmp_path)
    intel = _child(CHILD.format(info=cpuinfo(vendor="GenuineIntel", family=6), var=VARIABLE, cache=cache), env)
    assert intel == {"set_to": None, "left": None, "x86_v4": plain, "avx512_icl": intel["avx512_icl"]}
    mine = _child(CHILD.format(info=cpuinfo(), var=VARIABLE, cache=cache), {**env, VARIABLE: ""})
    assert mine["set_to"] is None and mine["left"] == "" and mine["x86_v4"] == plain
    uncached = _child(CHILD.format(info=cpuinfo(), var=VARIABLE, cache=None), env)  # no cache: no probe, no change
    assert uncached["set_to"] is None and uncached["x86_v4"] == plain
    assert not (tmp_path / "numpy").exists()  # no Zen 4 with a cache above: nothing probed


def test_the_child_probe_runs_once_and_a_failed_one_keeps_numpys_kernels(tmp_path, monkeypatch):
    cache = str(tmp_path)
    # NumPy >= 2.4 accepts the variable (a child said so); earlier NumPy warns of unknown names, an error under -W error
    assert numpy_dispatch._imports_cleanly(cache) == NEW_NAMES
    (record,) = (tmp_path / "numpy").iterdir()
    assert record.read_text() == ("ok\n" if NEW_NAMES else "fails\n")
    record.write_text("ok\n")

    def no_child(*a, **k):
        raise AssertionError("probed again")

    monkeypatch.setattr(numpy_dispatch.subprocess, "run", no_child)
    assert numpy_dispatch._imports_cleanly(cache)  # remembered
    record.write_text("fails\n")  # as for a NumPy built to require AVX-512 (its import would raise)
    assert not numpy_dispatch._imports_cleanly(cache)
    monkeypatch.undo()
    # a real refusal: NumPy will not disable a feature of its baseline (X86_V2 on x86-64 wheels of NumPy >= 2.4)
    if "X86_V2" in _child("import json" + FEATURES + "print(json.dumps(__cpu_baseline__))", os.environ):
        monkeypatch.setattr(numpy_dispatch, "AVX512_TARGETS", "X86_V2")
        refused = tmp_path / "refused"
        assert not numpy_dispatch._imports_cleanly(str(refused))
        assert [p.read_text() for p in (refused / "numpy").iterdir()] == ["fails\n"]
        monkeypatch.undo()
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    got = _child(CHILD.format(info=cpuinfo(), var=VARIABLE, cache=cache), env)
    assert got["set_to"] is None and got["left"] is None


def test_the_command_line_imports_numpy_through_it_before_anything_else(tmp_path):
    code = f"""
import json, ttscale.numpy_dispatch as nd
nd.slow_avx512_sort = lambda cpuinfo=None: True  # as on Zen 4
calls, first = [], nd.import_numpy
nd.import_numpy = lambda **kw: calls.append(first(**kw))  # what it returned: None had NumPy been imported already
from ttscale import cli
rc = cli.main(["sweep", "--d", "0", "--out", {str(tmp_path / "x.nc")!r}])  # rejected after the imports
""" + FEATURES + """
print(json.dumps([rc, calls, bool(f.get("X86_V4"))]))
"""
    env = {k: v for k, v in os.environ.items() if k not in (VARIABLE, "TTSCALE_NO_CACHE")}
    env["TTSCALE_CACHE_DIR"] = str(tmp_path / "cache")
    if NEW_NAMES:  # called once, before anything imported NumPy, and NumPy lost its AVX-512 targets
        assert _child(code, env) == [2, [AVX512_TARGETS], False]
    else:  # called once; older NumPy is imported as it is
        assert _child(code, env) == [2, [None], _plain(env)["x86_v4"]]
