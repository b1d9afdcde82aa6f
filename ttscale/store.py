"""Persistence for sweeps: atomic per-chunk files, resumption, netCDF (h5netcdf) output.

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

Only the process with ``jax.process_index() == 0`` writes (the caller decides that).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile

import numpy as np

PARTIAL_SUFFIX = ".partial"
SPEC_FILE = "spec.json"
_CHUNK_RE = re.compile(r"^m(\d{3})_p(\d{10})_(\d{10})\.npz$")


class SpecMismatchError(ValueError):
    """``out`` already holds (partial) results of a different sweep."""


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


@contextlib.contextmanager
def atomic_file(path: str, suffix: str = ""):
    """Open a temporary file beside ``path`` for binary writing; on success fsync it and ``os.replace`` it onto ``path``.

    A crash at any point leaves either the old file or the new one, never a partial one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as fh:
        fh.write(data)


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

    def save(self, m_index: int, start: int, stop: int, errors: np.ndarray, moments) -> None:
        """Atomically store one chunk: per-prompt errors ``[cells, k, stop − start]`` and their
        :class:`~ttscale.summary.Moments` (so a resumed run reproduces the uninterrupted one bit for bit)."""
        path = os.path.join(self.directory, self.chunk_name(m_index, start, stop))
        with atomic_file(path, suffix=".npz") as fh:
            np.savez(fh, errors=np.ascontiguousarray(errors), count=np.asarray(moments.count),
                     mean=np.asarray(moments.mean), m2=np.asarray(moments.m2))

    def load(self, m_index: int, start: int, stop: int):
        """``(errors [cells, k, stop − start], Moments)`` of a finished chunk."""
        from ttscale.summary import Moments

        with np.load(os.path.join(self.directory, self.chunk_name(m_index, start, stop))) as z:
            return z["errors"], Moments(z["count"][()] if z["count"].ndim == 0 else z["count"], z["mean"], z["m2"])

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def read_dataset(path: str):
    """Load a finished sweep ``.nc`` fully into memory (the file is closed afterwards)."""
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def write_dataset(ds, path: str) -> None:
    """Write ``ds`` to ``path`` (netCDF4 via h5netcdf) atomically: temporary file, then ``os.replace``."""
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".nc", dir=directory)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
