"""Persistence for sweeps: atomic per-chunk files, resumption, netCDF output (netCDF4, the Unidata library).

Layout for an output path ``out`` (e.g. ``sweepA.nc``)::

    sweepA.nc                     the finished xarray.Dataset (written last, atomically)
    sweepA.nc.partial/spec.json   the identity of the sweep that owns the partial results
    sweepA.nc.partial/m002_p0000004096_0000008192.npz
                                  per-prompt squared errors ``errors [cells, k, prompts]``
                                  of test length index 2, prompts [4096, 8192), with their
                                  moments ``count``, ``mean``, ``m2 [cells, k]``

Every file is written to a temporary name in the same directory and moved into place with
``os.replace``, so a run killed at any instant (even ``SIGKILL``) leaves only complete chunk
files; re-running the same spec with the same ``out`` loads them and computes only what is
missing. The identity excludes settings that cannot change the numbers (the chunk size), so
a resumed run may even use another chunk size: finished chunks of the old grid that do not
line up with the new grid are simply recomputed. A *different* spec with the same ``out`` is
refused with :class:`SpecMismatchError` rather than mixed.

Every chunk file carries a SHA-256 of its arrays (names, dtypes, shapes and bytes); a chunk that
is truncated, empty, bit-flipped or altered fails :meth:`PartialStore.load` with
:class:`CorruptChunkError` (naming the file), and :meth:`PartialStore.discard` deletes it so the
engine can recompute it. :func:`lock` (``<out>.lock``, ``flock``) keeps two runs from writing the
same ``out`` at once. Finished files get the permissions the umask gives (``0o666 & ~umask``),
not ``mkstemp``'s ``0600``.

Only the process with ``jax.process_index() == 0`` writes (the caller decides that).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading

import numpy as np

PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"
SPEC_FILE = "spec.json"
_CHUNK_RE = re.compile(r"^m(\d{3})_p(\d{10})_(\d{10})\.npz$")
_CHUNK_ARRAYS = ("errors", "count", "mean", "m2")
_CHECKSUM_KEY = "sha256"


class SpecMismatchError(ValueError):
    """``out`` already holds (partial) results of a different sweep."""


class CorruptChunkError(ValueError):
    """A finished chunk file cannot be read or fails its checksum; ``path`` names it.

    The engine should :meth:`PartialStore.discard` the chunk and recompute it.
    """

    def __init__(self, path: str, reason: str = "unreadable or altered"):
        self.path = path
        self.reason = reason
        super().__init__(f"corrupt chunk file {path}: {reason}; discard it and recompute the chunk")


class LockedError(ValueError):
    """Another process holds the lock of an output path (:func:`lock`); ``path`` and ``pid`` name it."""

    def __init__(self, path: str, pid: int | None):
        self.path = path
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process (PID not yet written)"
        super().__init__(f"{path} is locked by {holder}: another run is writing the same output. "
                         "Wait for it, or use another out path.")


def partial_dir(out: str) -> str:
    """The directory next to ``out`` that holds finished chunks: ``<out>.partial``."""
    return os.fspath(out) + PARTIAL_SUFFIX


def check_writable(out) -> str:
    """Validate an output path before any compute starts; returns it as an absolute ``str``.

    Refuses a directory, a path whose parent cannot be created, or a parent that is not
    writable. Creates missing parent directories.
    """
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path (str or os.PathLike), got {type(out).__name__}")
    path = os.path.abspath(os.fspath(out))
    if os.path.isdir(path):
        raise ValueError(f"out: {path} is a directory; give a file path such as sweep.nc")
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"out: cannot create the directory {parent}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"out: the directory {parent} is not writable")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"out: {path} exists and is not writable")
    return path


def _diff_fields(a: str, b: str) -> list[str]:
    try:
        da, db = json.loads(a), json.loads(b)
    except (TypeError, ValueError):
        return ["<unreadable spec>"]
    if not isinstance(da, dict) or not isinstance(db, dict):
        return ["<spec>"]
    return sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))


def _mismatch(where: str, stored: str, wanted: str) -> SpecMismatchError:
    fields = ", ".join(_diff_fields(stored, wanted)) or "?"
    return SpecMismatchError(
        f"{where} holds results of a different sweep (fields that differ: {fields}); "
        "refusing to mix them. Use another out path, or delete the old results to recompute."
    )


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where possible (``/proc/self/status`` on Linux ≥ 4.7);
    elsewhere set and restored at once under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - filesystems that refuse it
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yield a temporary path beside ``path`` to write; on success fsync it, give it the mode
    ``0o666 & ~umask`` and ``os.replace`` it onto ``path`` (the one atomic writer of this module).

    A crash at any point leaves either the old file or the new one, never a partial one; on an
    exception the temporary is removed.
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
            os.fchmod(fd, 0o666 & ~_umask())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


@contextlib.contextmanager
def atomic_file(path: str, suffix: str = ""):
    """Open a temporary file beside ``path`` for binary writing; on success fsync it and ``os.replace`` it onto ``path``.

    A crash at any point leaves either the old file or the new one, never a partial one. See
    :func:`atomic_path` (the final file honours the umask).
    """
    with atomic_path(path, suffix) as tmp:
        with open(tmp, "wb") as fh:
            yield fh


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as fh:
        fh.write(data)


def lock_path(out) -> str:
    """The lock file of an output path: ``<out>.lock``."""
    return os.path.abspath(os.fspath(out)) + LOCK_SUFFIX


def _holder_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def lock(out):
    """Hold an exclusive lock on ``out`` for the ``with`` block: ``fcntl.flock`` on ``<out>.lock``, which holds the PID.

    A second holder (another process, or another ``lock`` of the same ``out`` in this one) gets
    :class:`LockedError` naming the path and the holder's PID at once (no waiting). The lock is
    released, and the lock file removed, on exit; if the process dies the OS releases the
    ``flock`` and the next run takes over the stale file.
    """
    path = lock_path(out)
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _holder_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockedError(path, pid) from None
            raise
        # The holder before us may have unlinked the file between our open and our flock:
        # then we locked an orphan inode; start again on the current file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:  # pragma: no cover - a pathological race
        raise LockedError(path, None)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        os.fsync(fd)
        yield path
    finally:
        try:
            os.unlink(path)  # while still holding the flock: nobody can lock this inode in between
        except FileNotFoundError:  # pragma: no cover
            pass
        os.close(fd)


def _checksum(arrays: dict) -> str:
    """SHA-256 over the chunk arrays' names, dtypes, shapes and C-order bytes."""
    h = hashlib.sha256()
    for name in _CHUNK_ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode("ascii"))
        h.update(a.tobytes())
    return h.hexdigest()


class PartialStore:
    """Finished chunks of one sweep in ``<out>.partial`` (see the module docstring)."""

    def __init__(self, out: str, identity: str):
        self.out = os.path.abspath(os.fspath(out))
        self.directory = partial_dir(self.out)
        self.identity = identity
        spec_path = os.path.join(self.directory, SPEC_FILE)
        if os.path.exists(spec_path):
            with open(spec_path, encoding="utf-8") as fh:
                stored = fh.read()
            if stored != identity:
                raise _mismatch(self.directory, stored, identity)
        else:
            os.makedirs(self.directory, exist_ok=True)
            atomic_write_bytes(spec_path, identity.encode("utf-8"))

    @staticmethod
    def chunk_name(m_index: int, start: int, stop: int) -> str:
        return f"m{m_index:03d}_p{start:010d}_{stop:010d}.npz"

    def finished(self) -> set[tuple[int, int, int]]:
        """``{(m_index, start, stop)}`` of the chunk files present."""
        done = set()
        for name in os.listdir(self.directory):
            match = _CHUNK_RE.match(name)
            if match:
                done.add(tuple(int(g) for g in match.groups()))
        return done

    def chunk_path(self, m_index: int, start: int, stop: int) -> str:
        return os.path.join(self.directory, self.chunk_name(m_index, start, stop))

    def save(self, m_index: int, start: int, stop: int, errors: np.ndarray, moments) -> None:
        """Atomically store one chunk: per-prompt errors ``[cells, k, stop − start]`` and their
        :class:`~ttscale.summary.Moments` (so a resumed run reproduces the uninterrupted one bit for bit),
        with the SHA-256 of the arrays (checked by :meth:`load`)."""
        arrays = {"errors": np.ascontiguousarray(errors), "count": np.asarray(moments.count),
                  "mean": np.asarray(moments.mean), "m2": np.asarray(moments.m2)}
        with atomic_file(self.chunk_path(m_index, start, stop), suffix=".npz") as fh:
            np.savez(fh, **arrays, **{_CHECKSUM_KEY: np.array(_checksum(arrays))})

    def load(self, m_index: int, start: int, stop: int):
        """``(errors [cells, k, stop − start], Moments)`` of a finished chunk.

        Raises :class:`CorruptChunkError` (naming the file) when the file cannot be read (truncated,
        empty, not a zip, a flipped bit caught by the zip CRC), lacks an array or its checksum, has
        arrays of the wrong shape, or fails the SHA-256 check (values altered). ``FileNotFoundError``
        for a chunk that is not there.
        """
        from ttscale.summary import Moments

        path = self.chunk_path(m_index, start, stop)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no chunk file {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in (*_CHUNK_ARRAYS, _CHECKSUM_KEY) if k not in z.files]
                if missing:
                    raise CorruptChunkError(path, f"missing {', '.join(missing)}")
                arrays = {k: z[k] for k in _CHUNK_ARRAYS}
                stored = str(z[_CHECKSUM_KEY][()])
        except (CorruptChunkError, PermissionError, MemoryError):
            raise
        except Exception as exc:  # BadZipFile, EOFError, ValueError, zlib.error, ...: whatever garbage raises
            raise CorruptChunkError(path, f"unreadable ({type(exc).__name__}: {exc})") from None
        if _checksum(arrays) != stored:
            raise CorruptChunkError(path, "checksum mismatch (the stored values were altered)")
        errors, count, mean, m2 = (arrays[k] for k in _CHUNK_ARRAYS)
        rows = int(np.prod(errors.shape[:-1])) if errors.ndim else -1
        if errors.ndim != 3 or errors.shape[-1] != stop - start or mean.shape != m2.shape or mean.size != rows \
                or count.shape not in ((), mean.shape):
            raise CorruptChunkError(path, f"unexpected shapes errors {errors.shape}, count {count.shape}, "
                                          f"mean {mean.shape}, m2 {m2.shape} for prompts [{start}, {stop})")
        return errors, Moments(count[()] if count.ndim == 0 else count, mean, m2)

    def discard(self, m_index: int, start: int, stop: int) -> None:
        """Delete one chunk file (e.g. after :class:`CorruptChunkError`) so it is recomputed; a missing one is fine."""
        try:
            os.unlink(self.chunk_path(m_index, start, stop))
        except FileNotFoundError:
            pass

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


#: xarray's engine for every ``.nc`` file: the netCDF4 library (Unidata's C library). It reads and writes the same
#: netCDF-4 (HDF5) files as h5netcdf, which ttscale used before (``tests/data`` holds files it wrote), and writes
#: sweep-A's Dataset (10 variables, 9 coordinates) in 13 ms against h5netcdf's 74 ms (best of 7,
#: ``python benchmarks/netcdf_engines.py --repeats 7``). With h5py's import gone too, the CLI's fixed
#: cost fell from 1.12 s to 0.97 s (``bash benchmarks/compare_fixed_cost.sh`` against the h5netcdf commit, 12 runs
#: each, 2026-12-02; ``benchmarks/RESULTS.md``).
NETCDF_ENGINE = "netcdf4"


def read_dataset(path: str):
    """Load a finished sweep ``.nc`` fully into memory (the file is closed afterwards)."""
    import xarray as xr

    with xr.open_dataset(path, engine=NETCDF_ENGINE) as ds:
        return ds.load()


def write_dataset(ds, path: str) -> None:
    """Write ``ds`` to ``path`` (netCDF-4, through :data:`NETCDF_ENGINE`) atomically, through :func:`atomic_path`."""
    with atomic_path(path, suffix=".nc") as tmp:
        ds.to_netcdf(tmp, engine=NETCDF_ENGINE)


def check_finished(out: str, identity: str):
    """If ``out`` exists: return its Dataset when it was produced by ``identity``, else raise.

    Returns ``None`` when ``out`` does not exist yet.
    """
    if not os.path.exists(out):
        return None
    try:
        ds = read_dataset(out)
    except Exception as exc:  # not a netCDF file we can read
        raise SpecMismatchError(f"out: {out} exists but is not a readable sweep file ({exc}); refusing to overwrite") from None
    stored = ds.attrs.get("spec_identity")
    if stored != identity:
        raise _mismatch(out, str(stored), identity)
    return ds


def prepare_out_dir(arg: str, path: str) -> str:
    """Create the output directory ``path`` of option ``arg`` (e.g. ``"--out"``) and check that it is writable.

    ``ValueError`` naming ``arg`` and ``path`` when ``path`` is an existing non-directory, cannot be
    created (a parent is a regular file, permission denied, read-only filesystem) or refuses a file.
    The CLI's commands and :func:`ttscale.training.fit` use it for their output directories.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{arg} {path}: exists and is not a directory; give a directory path")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{arg} {path}: cannot create the directory ({exc.strerror or exc})") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ValueError(f"{arg} {path}: the directory is not writable ({exc.strerror or exc})") from None
    return path


# ============================================================================ preset results: netCDF with JSON attrs, text, figures
def save_dataset(ds, path) -> None:
    """Write a preset/sweep Dataset to ``path`` (netCDF, atomically, creating the directory), encoding what netCDF
    cannot hold: list/tuple/dict/bool/None attributes as JSON text, boolean variables as ``int8`` (marked
    ``bool = 1``). :func:`load_dataset` undoes both."""
    import json

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ds = ds.copy()
    for key, val in list(ds.attrs.items()):
        if isinstance(val, (list, tuple, dict, bool)) or val is None:
            ds.attrs[key] = json.dumps(val, default=str)
    for name in list(ds.variables):
        if ds[name].dtype == bool:
            ds[name] = ds[name].astype("int8")
            ds[name].attrs["bool"] = 1
    write_dataset(ds, path)


def load_dataset(path):
    """Load a Dataset written by :func:`save_dataset` (or :func:`write_dataset`): JSON attributes decoded,
    ``int8`` variables marked ``bool`` turned back into booleans."""
    import json

    ds = read_dataset(os.fspath(path))
    for name in list(ds.variables):
        if ds[name].attrs.get("bool"):
            attrs = {k: v for k, v in ds[name].attrs.items() if k != "bool"}
            ds[name] = ds[name].astype(bool)
            ds[name].attrs = attrs
    for key, val in list(ds.attrs.items()):
        if isinstance(val, str) and val[:1] in "[{" or val in ("true", "false", "null"):
            try:
                ds.attrs[key] = json.loads(val)
            except (json.JSONDecodeError, TypeError):
                pass
    return ds


def save_npz(path, **arrays) -> None:
    """``np.savez(path, **arrays)`` written atomically (:func:`atomic_file`), creating the directory.

    The one writer of ``.npz`` files (trained parameters, training and GPT-2 checkpoints).
    """
    import numpy as np

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_file(str(path), suffix=".npz") as fh:
        np.savez(fh, **arrays)


def write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating the directory."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))


def write_figure(fig, stem, formats=("png", "pdf"), dpi: int = 130) -> list:
    """Save a matplotlib figure as ``stem.<format>`` for each format (atomically, creating the directory) and
    return the paths."""
    stem = os.fspath(stem)
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    paths = []
    for ext in formats:
        path = f"{stem}.{ext}"
        with atomic_path(path, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=ext)
        paths.append(path)
    return paths
