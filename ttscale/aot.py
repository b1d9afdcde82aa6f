"""Compiled programs kept across processes, so a rerun of the same shapes neither traces, lowers nor compiles.

JAX's persistent compilation cache (:func:`ttscale.use_compile_cache`) skips only XLA's compile: every
process still traces and lowers each program, which was most of a CLI sweep's fixed cost (sweep-A:
~0.5 s for the closed forms of :mod:`ttscale.theory`, ~0.4 s for the chunk program, on the 2-core CI
machine). This module keeps the *compiled executable* itself
(``jax.experimental.serialize_executable``) in a directory, one file per program:

    out = aot.call("theory.on_grid", jitted, args, static={"k_max": 32})   # = jitted(*args, k_max=32)

The file name is a SHA-256 of everything that determines the executable: the program's name and
static settings, the abstract signature of its arguments (pytree structure, shape, dtype, weak type
and sharding of every leaf), the jax/jaxlib versions, a digest of ttscale's own source files, the
``jax_enable_x64`` mode, ``XLA_FLAGS``, and the devices (platform, kind, ids) and process layout.
So an edited ttscale, another jax, other shapes or another device count get their own entries and a
stale executable is never loaded. Only programs whose functions are ttscale's own module-level
functions may be kept (:func:`stable_name`): a model defined elsewhere, or a closure, is compiled as
usual every run (the persistent compilation cache still applies).

Off until :func:`enable` is called; :func:`ttscale.use_compile_cache` (which the ``ttscale`` command calls;
``--no-cache`` or ``TTSCALE_NO_CACHE=1`` turn it off) enables it in ``$TTSCALE_CACHE_DIR/aot/<source digest>``
(default ``~/.cache/ttscale/aot/...``). Two jaxlib 0.10 pitfalls are handled here: a loaded CPU program
that calls LAPACK (``eigh``, ``solve``) needs LAPACK set up first or it crashes the process, and an
executable that JAX's own persistent cache loaded does not re-serialise correctly (so only executables
compiled in this process are kept: :func:`_fresh_compile`). A file that cannot be read back is recompiled
and replaced, one that loads but fails on its first run is deleted and the call made as a plain ``jit``
call (:func:`call`); an unwritable directory only means nothing is kept. Loading runs code from the cache
directory (pickle): point it only at a directory you own, as for any compilation cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import tempfile
import threading
from typing import Any, Callable, Optional

_directory: Optional[str] = None
_loaded: dict = {}  # key -> jax.stages.Compiled, this process
FORMAT = 3  # bumps when the file layout changes


def enable(directory: str) -> Optional[str]:
    """Keep compiled executables in ``directory`` (created); returns it, or ``None`` if it cannot be created."""
    global _directory
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        _directory = None
        return None
    _directory = str(directory)
    return _directory


def disable() -> None:
    """Stop keeping executables on disk (those already loaded in this process stay in use)."""
    global _directory
    _directory = None


def directory() -> Optional[str]:
    """The directory in use, or ``None`` when off."""
    return _directory


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 of ttscale's own ``.py`` files (paths and bytes, sorted): any edit gives new cache keys."""
    root = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                h.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()


def stable_name(fn: Callable) -> Optional[str]:
    """``module.qualname`` of a ttscale module-level function (or a ``functools.partial`` of one with plain
    arguments), else ``None``: only then does the name alone identify the code, through :func:`source_digest`."""
    if isinstance(fn, functools.partial):
        inner = stable_name(fn.func)
        plain = (bool, int, float, str, type(None))
        if inner is None or not all(isinstance(v, plain) for v in (*fn.args, *fn.keywords.values())):
            return None
        return f"{inner}{fn.args!r}{sorted(fn.keywords.items())!r}"
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", None) or ""
    if not (module == "ttscale" or module.startswith("ttscale.")) or not qualname or "<" in qualname:
        return None
    return f"{module}.{qualname}"


def _signature(args) -> str:
    import jax

    leaves, tree = jax.tree_util.tree_flatten(args)
    parts = [str(tree)]
    for leaf in leaves:
        aval = jax.api_util.shaped_abstractify(leaf)
        sharding = getattr(leaf, "sharding", None) if isinstance(leaf, jax.Array) else None
        parts.append(f"{aval.str_short()}:{getattr(aval, 'weak_type', False)}:{sharding!r}")
    return "|".join(parts)


def _environment() -> str:
    import jax
    import jaxlib

    devices = jax.devices()
    return repr((
        FORMAT, jax.__version__, getattr(jaxlib, "__version__", "?"), source_digest(),
        bool(jax.config.jax_enable_x64), os.environ.get("XLA_FLAGS", ""),
        [(d.platform, d.device_kind, d.id, d.process_index) for d in devices],
        jax.process_count(), jax.process_index(),
    ))


def key(name: str, args, static: Any = None) -> str:
    """The cache key (hex SHA-256) of program ``name`` with ``static`` settings on arguments ``args``."""
    text = "\n".join((name, repr(static), _signature(args), _environment()))
    return hashlib.sha256(text.encode()).hexdigest()


def compiled(name: Optional[str], jitted, args: tuple, static: Optional[dict] = None):
    """``jitted.lower(*args, **static).compile()``, loaded from the cache directory when kept there.

    ``name``: a stable identifier of the program's code (see :func:`stable_name`), or ``None`` to
    compile without the disk (still kept for this process). ``static``: the static keyword arguments
    (part of the key). Returns a ``jax.stages.Compiled``, called with the non-static arguments.
    """
    return _compiled(name, jitted, args, static)[1]


def _compiled(name, jitted, args, static):
    """``(key, program)`` of :func:`compiled`."""
    static = dict(static or {})
    k = key(name or f"<unnamed {id(jitted)}>", args, sorted(static.items()))
    hit = _loaded.get(k)
    if hit is not None:
        return k, hit
    path = os.path.join(_directory, f"{k}.bin") if (_directory is not None and name is not None) else None
    program = _load(path) if path is not None else None
    if program is not None:
        _unverified.add(k)
    else:
        lowered = jitted.lower(*args, **static)
        if path is None:
            program = lowered.compile()
        else:
            program = _fresh_compile(lowered)
            if program is not None:
                _store(path, program)
            else:
                program = lowered.compile()
    _loaded[k] = program
    return k, program


def call(name: Optional[str], jitted, args: tuple, static: Optional[dict] = None):
    """``jitted(*args, **static)`` through :func:`compiled`. A kept executable that fails to run is a damaged or
    foreign file: it is deleted and the call is made as a plain ``jit`` call instead (nothing is lost)."""
    import jax

    k, program = _compiled(name, jitted, args, static)
    try:
        out = program(*args)
        if k in _unverified:  # the first run of a loaded file: wait for it, so that a failure surfaces here
            jax.block_until_ready(out)
            _unverified.discard(k)
        return out
    except Exception:  # noqa: BLE001 - e.g. JaxRuntimeError "Function ... not found"
        if k not in _unverified or _loaded.get(k) is not program:
            raise
        _unverified.discard(k)
        del _loaded[k]
        if _directory is not None:
            try:
                os.unlink(os.path.join(_directory, f"{k}.bin"))
            except OSError:
                pass
        return jitted(*args, **(static or {}))


_unverified: set = set()  # keys of executables loaded from files that have not run yet, this process
_xla_cache_hits = threading.local()  # .count: hits of JAX's persistent cache in this thread (compiles report in the compiling thread)


def _count_xla_cache_hits(event: str, **kwargs) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _xla_cache_hits.count = getattr(_xla_cache_hits, "count", 0) + 1


@functools.lru_cache(maxsize=1)
def _listen() -> None:
    import jax

    jax.monitoring.register_event_listener(_count_xla_cache_hits)


#: A compile option set to its default value (fast math is off by default): it changes nothing in the executable
#: (tests/test_aot.py checks the numbers) but gives the compile a key
#: of its own in JAX's persistent compilation cache (:func:`_fresh_compile`).
_OWN_KEY = {"xla_cpu_enable_fast_math": False}


def _fresh_compile(lowered):
    """``lowered.compile()``, made by XLA in this process (``None`` if that cannot be had).

    An executable that JAX's persistent compilation cache loaded does not serialise correctly (jaxlib 0.10:
    the file loads, then running it fails with ``Function <name> not found``), so a compile that was a hit
    of that cache is redone under a key of its own there (:data:`_OWN_KEY`); if that is a hit too (an older
    entry of this module), ``None``: the program is then compiled each run and never kept here.
    """
    _listen()
    for options in (None, _OWN_KEY):
        before = getattr(_xla_cache_hits, "count", 0)
        program = lowered.compile() if options is None else lowered.compile(compiler_options=options)
        if getattr(_xla_cache_hits, "count", 0) == before:  # per thread: another thread's hit is not this compile's
            return program
    return None


def _load(path: str):
    try:
        with open(path, "rb") as fh:
            device_ids, lapack, payload, in_tree, out_tree = pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError):
        return None
    import jax
    from jax.experimental import serialize_executable

    try:
        if lapack:
            _initialize_custom_calls()
        by_id = {d.id: d for d in jax.devices()}
        devices = [by_id[i] for i in device_ids]  # the program's own devices (the default is all of them)
        return serialize_executable.deserialize_and_load(payload, in_tree, out_tree, backend=devices[0].client,
                                                         execution_devices=devices)
    except Exception:  # noqa: BLE001 - a file from another build or a damaged one: recompile it
        return None


def _initialize_custom_calls() -> None:
    """Set up the LAPACK kernels a loaded CPU executable calls (eigh, solve, ...), as ``jax.export`` does before
    running a deserialised module: they are otherwise set up only while lowering, and a loaded program that
    reaches one uninitialised crashes the process. Once per process; waits for a set-up in progress."""
    with _lapack_lock:
        if not _lapack_ready:
            from jax._src.lax import linalg

            linalg.initialize_lapack()
            _lapack_ready.append(True)


_lapack_lock = threading.Lock()
_lapack_ready: list = []


def set_up_lapack(background: bool = False) -> None:
    """Set up LAPACK for loaded programs now (:func:`_initialize_custom_calls`), or in a daemon thread.

    The set-up is mostly Python (``scipy.linalg``'s import: ~0.15 s on 2 cores), so in the background it
    overlaps with C++ work that releases the GIL, such as loading other executables; a program that needs
    LAPACK waits for it when loaded.
    """
    if _lapack_ready:
        return
    if background:
        threading.Thread(target=_initialize_custom_calls, name="ttscale-lapack", daemon=True).start()
    else:
        _initialize_custom_calls()


def _store(path: str, program) -> None:
    from jax.experimental import serialize_executable

    try:
        device_ids = [d.id for d in program.runtime_executable().local_devices()]
        lapack = "lapack_" in program.as_text()  # calls LAPACK kernels (custom calls): set them up before loading
        blob = pickle.dumps((device_ids, lapack, *serialize_executable.serialize(program)),
                            protocol=pickle.HIGHEST_PROTOCOL)
    except (ValueError, NotImplementedError, TypeError, pickle.PicklingError):
        return  # this executable cannot be serialised (e.g. it closes over constants): compile it each run
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, path)  # atomic: a reader sees the whole file or none
    except OSError:
        try:
            os.unlink(tmp)
        except (OSError, UnboundLocalError):
            pass
