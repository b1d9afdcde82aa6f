"""Import NumPy without its AVX-512 sort kernels on AMD Zen 4, where they are slower than its AVX2 ones.

The sweep's exact medians (:func:`ttscale.summary.median_rows`) are one ``partition`` per row of per-prompt
errors. NumPy (≥ 1.26) runs a one-``kth`` partition of 32/64-bit numbers through x86-simd-sort, on an
AVX-512 CPU through its AVX-512 kernel. That kernel stores with the memory form of ``vpcompress``, which
Zen 4 (AMD family 25 with AVX-512; Zen 3, the same family, has no AVX-512, and Zen 5 is family 26)
executes in microcode. Measured on a 2-core Zen 4 VM (``python benchmarks/numpy_partition.py``, with and
without the variable, ``benchmarks/RESULTS.md``): 21.9 µs against 2.1 µs per row of 4096, and sweep-A's
2640 medians of 4096 prompts 32.1 ms against 7.6 ms.

NumPy chooses its kernels once, when it is imported, from ``NPY_DISABLE_CPU_FEATURES``.
:func:`import_numpy` sets that variable for the import alone (so child processes and the rest of the
environment never see it) and only where all of these hold: Linux says the CPU is AMD family 25 with
``avx512f``; NumPy is ≥ 2.4 (earlier releases name their AVX-512 targets differently); NumPy is not yet
imported; the user has not set ``NPY_DISABLE_CPU_FEATURES`` themselves (set it to an empty string to
keep every kernel); and a child interpreter, run once per NumPy installation, imported NumPy with the variable
set without an error or a warning (a NumPy built to require AVX-512 refuses it, and a failed import cannot
be retried). That answer is kept in ttscale's cache directory (``numpy/``); with no cache, nothing changes. Everything else NumPy does keeps its AVX2 (``X86_V3``) kernels; Zen 4 executes 512-bit
instructions as two 256-bit halves anyway.

The ``ttscale`` command calls it first thing; a script can too, as its first import:
``from ttscale.devices import cache_root; from ttscale.numpy_dispatch import import_numpy;
import_numpy(cache_dir=cache_root())``. This module imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import warnings

VARIABLE = "NPY_DISABLE_CPU_FEATURES"
#: NumPy ≥ 2.4's names of its AVX-512 dispatch targets (``numpy._core._multiarray_umath.__cpu_dispatch__``).
AVX512_TARGETS = "X86_V4 AVX512_ICL AVX512_SPR"


def first_cpu(cpuinfo: str | None = None) -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (``vendor_id``, ``cpu family``, ``model``, ``model name``,
    ``flags``, ...), stripped; ``cpuinfo`` is that file's text (read when ``None``; ``{}`` where it cannot be read)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
                cpuinfo = f.read(1 << 16)
        except OSError:
            return {}
    block = cpuinfo.split("\n\n", 1)[0]
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in block.splitlines() if ":" in line)}


def slow_avx512_sort(cpuinfo: str | None = None) -> bool:
    """Whether the CPU is AMD Zen 4: ``vendor_id`` AuthenticAMD, ``cpu family`` 25 and ``avx512f`` in ``flags``
    (:func:`first_cpu` of ``cpuinfo``; ``False`` where ``/proc/cpuinfo`` cannot be read)."""
    cpu = first_cpu(cpuinfo)
    return (cpu.get("vendor_id") == "AuthenticAMD" and cpu.get("cpu family") == "25"
            and "avx512f" in cpu.get("flags", "").split())


def numpy_version() -> tuple[int, int] | None:
    """NumPy's ``(major, minor)`` read from ``numpy/version.py`` without importing it (``None`` if not found)."""
    spec = importlib.util.find_spec("numpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        try:
            with open(os.path.join(folder, "version.py"), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        found = re.search(r"""^(?:full_)?version\s*(?::\s*str\s*)?=\s*['"](\d+)\.(\d+)""", text, re.M)
        if found:
            return int(found.group(1)), int(found.group(2))
    return None


def _probe_key(cache_dir: str) -> str:
    """The file that records whether this interpreter's NumPy imports with :data:`AVX512_TARGETS` off."""
    spec = importlib.util.find_spec("numpy")
    folders = list(spec.submodule_search_locations or []) if spec else []
    stamps = []
    for folder in folders:
        try:
            stamps.append(os.stat(os.path.join(folder, "version.py")).st_mtime_ns)
        except OSError:
            pass
    text = "\0".join([sys.executable, *folders, *map(str, stamps), AVX512_TARGETS])
    return os.path.join(cache_dir, "numpy", hashlib.sha256(text.encode()).hexdigest()[:16])


def _imports_cleanly(cache_dir: str) -> bool:
    """Whether NumPy imports with the variable set, without an error or a warning (``-W error``), checked once
    in a child interpreter and remembered under ``cache_dir``.

    A failed ``import numpy`` cannot be retried in the same process, and NumPy fails it (``RuntimeError``)
    when asked to disable a feature its build requires, e.g. one built for ``x86-64-v4``.
    """
    path = _probe_key(cache_dir)
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip() == "ok"
    except OSError:
        pass
    env = {**os.environ, VARIABLE: AVX512_TARGETS}
    try:
        ok = subprocess.run([sys.executable, "-W", "error", "-c", "import numpy"], env=env, timeout=120,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write("ok\n" if ok else "fails\n")
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache: probe again next time
    return ok


def import_numpy(*, cache_dir: str | None = None, cpuinfo: str | None = None) -> str | None:
    """Import NumPy, on Zen 4 without its AVX-512 kernels (conditions in the module docstring).

    ``cache_dir`` (ttscale's cache directory; ``None``: NumPy imported as it would be) keeps the result of a
    one-off check, in a child interpreter, that this NumPy accepts the variable. Returns the value
    ``NPY_DISABLE_CPU_FEATURES`` had during the import when this function set it, else ``None``. The variable
    is removed again afterwards.
    """
    if ("numpy" in sys.modules or VARIABLE in os.environ or cache_dir is None or not slow_avx512_sort(cpuinfo)
            or (numpy_version() or (0, 0)) < (2, 4) or not _imports_cleanly(cache_dir)):
        import numpy  # noqa: F401
        return None
    os.environ[VARIABLE] = AVX512_TARGETS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportWarning)
            import numpy  # noqa: F401
    finally:
        del os.environ[VARIABLE]
    return AVX512_TARGETS
