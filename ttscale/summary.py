"""Per-prompt Monte-Carlo summaries in bounded memory: exact medians, mean and standard error.

For one test length the sweep engine produces squared errors ``e[r, p] = ||ŵ_k − w||²``
laid out ``[rows, prompts]`` (``rows = cells × (k_max + 1)``), chunk by chunk over the
prompt axis. Every row is summarised by

* the mean ``ē = Σ_p e_p / N`` and the standard error ``√(s² / N)`` with
  ``s² = Σ_p (e_p − ē)² / (N − 1)``; these are *streamable*: per-chunk moments
  ``(count, mean, M2 = Σ (e − ē)²)`` merge exactly (Chan et al.), see :func:`combine`;
* the **exact** median (average of the two middle order statistics for even ``N``, like
  ``np.median``); an exact median is *not* streamable — it needs every per-prompt error.

So :class:`PromptErrors` keeps all of them. Up to ``budget_bytes`` they live in a NumPy
array; above it they spill to a file (``pwrite``/``pread``, not a memmap), and :meth:`PromptErrors.median` /
:meth:`PromptErrors.moments` reduce it slab by slab (a few rows at a time), so host RAM is
bounded by the budget plus one chunk, not by the number of prompts.

Conventions (shared with :func:`ttscale.cot.error_curve`): errors are ``>= 0``; a divergent
prompt gives ``+inf`` and ``nan`` counts as ``+inf``. A row holding any ``inf`` has mean and
standard error ``inf``; its median stays finite while fewer than half the prompts are
``inf`` (``inf`` sorts last).

Everything here is NumPy on the host, next to the device work, except :func:`chunk_moments`, the
device half of the merge (each chunk's moments, computed where its errors are).
"""

from __future__ import annotations

import bisect
import numbers
import os
import shutil
import tempfile
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Optional

import numpy as np

__all__ = ["median_rows", "Moments", "moments_of", "combine", "finish", "PromptErrors", "chunk_moments"]

#: Float dtypes accepted, with the unsigned integer type of the same width used for sorting.
_UINT = {np.dtype(np.float16): np.dtype(np.uint16),
         np.dtype(np.float32): np.dtype(np.uint32),
         np.dtype(np.float64): np.dtype(np.uint64)}
_BLOCK_BYTES = 2**19          # rows copied and partitioned at a time: ~512 KiB (stays in cache)
_THREAD_MIN_ELEMENTS = 2**20  # below rows·n = 1 Mi elements one thread is as fast
_MAX_THREADS = 8


# ============================================================================ validation
def _float_2d(name: str, x) -> np.ndarray:
    """``x`` as a 2-D native-byte-order float16/32/64 ndarray (no copy when it already is one)."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a floating-point array, got {type(x).__name__}")
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    if x.dtype not in _UINT:
        raise TypeError(f"{name} must be float16, float32 or float64, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, n], got shape {x.shape}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have n >= 1 entries per row, got shape {x.shape}")
    return x


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _default_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, _MAX_THREADS))


# ============================================================================ exact median
def _sanitise_bits(u: np.ndarray, dtype: np.dtype) -> None:
    """In place on the integer view ``u`` of non-negative floats: ``nan → +inf``, ``−0 → +0``.

    For ``x >= 0`` (``+inf`` included) the IEEE bit patterns, read as unsigned integers, are
    ordered like the floats; everything else has bits above those of ``+inf``: positive
    ``nan`` (just above), ``−0`` (the sign bit alone), negative numbers and negative ``nan``.
    Raises ``ValueError`` for negative numbers (``−inf`` included).
    """
    f = u.view(dtype)
    nan = np.isnan(f)
    if nan.any():
        f[nan] = np.inf
    low = f.min()
    if low < 0:
        raise ValueError(f"x must be non-negative, got min {low!r}")
    sign = u.dtype.type(1 << (8 * u.dtype.itemsize - 1))
    u[u == sign] = 0


def _median_block(x: np.ndarray, out_lo: np.ndarray, out_hi: np.ndarray) -> None:
    """Lower and upper middle order statistics of each row of ``x [r, n]`` as bit patterns.

    Rows are copied ``~_BLOCK_BYTES`` at a time into one reused buffer (the caller's array is
    never written), then ``partition(h)`` with ``h = n // 2`` on the unsigned view puts the
    ``h``-th smallest at column ``h`` and only smaller-or-equal values before it, so
    ``hi = u[h]`` and ``lo = max(u[:h])`` (the ``(h−1)``-th smallest; for even ``n``) exactly.
    """
    dtype = x.dtype
    utype = _UINT[dtype]
    inf_bits = np.array(np.inf, dtype).view(utype)[()]
    rows, n = x.shape
    h = n // 2
    step = max(1, _BLOCK_BYTES // (n * dtype.itemsize))
    buf = np.empty((min(step, rows), n), utype)
    src = x.view(utype)
    for i in range(0, rows, step):
        j = min(i + step, rows)
        b = buf[: j - i]
        np.copyto(b, src[i:j])
        if b.max() > inf_bits:  # nan, −0 or negative somewhere in the block: slow path
            _sanitise_bits(b, dtype)
        b.partition(h, axis=-1)
        out_hi[i:j] = b[:, h]
        if h > 0:
            np.max(b[:, :h], axis=1, out=out_lo[i:j])
        else:
            out_lo[i:j] = b[:, h]


def median_rows(x, *, threads: Optional[int] = None) -> np.ndarray:
    """Exact median over the last axis: ``x [rows, n] → [rows]`` float64, equal to ``np.median``.

    With ``x₍₀₎ <= … <= x₍ₙ₋₁₎`` the sorted row and ``h = n // 2``::

        median = x₍ₕ₎                       (n odd)
        median = (x₍ₕ₋₁₎ + x₍ₕ₎) / 2        (n even; the sum in x's dtype, like np.median)

    ``x`` must be float16/32/64 and ``>= 0``; ``nan`` counts as ``+inf`` and ``inf`` sorts
    last, so the median is finite while fewer than half the row is ``inf``. Instead of
    ``np.partition(x, [h−1, h])`` the row is partitioned once, at ``h``, as *unsigned
    integers* (non-negative IEEE floats sort like their bit patterns; compared with ``np.median`` in
    ``benchmarks/profile_sweep.py``), and
    ``x₍ₕ₋₁₎ = max(x[:h])`` after the partition. Rows are processed a cache-sized block at a
    time (extra memory ~``threads × 512 KiB``; ``x`` is never modified, ``np.memmap`` inputs
    are read block by block) and split over ``threads`` threads (NumPy releases the GIL in
    ``partition``); ``None`` uses up to 8 CPUs when ``rows · n >= 2²⁰``, else one.
    On AMD Zen 4 NumPy's AVX-512 partition is about 10× slower than its AVX2 one: import NumPy through
    :func:`ttscale.numpy_dispatch.import_numpy` (the ``ttscale`` command does) to get the latter.

    Raises ``TypeError`` for a non-float ``x``, ``ValueError`` if ``x`` is not 2-D, has no
    column or has a negative entry, or ``threads < 1``.
    """
    x = _float_2d("x", x)
    rows, n = x.shape
    if threads is None:
        threads = _default_threads() if rows * n >= _THREAD_MIN_ELEMENTS else 1
    else:
        threads = _int("threads", threads, 1)
    threads = min(threads, max(rows, 1))
    utype = _UINT[x.dtype]
    lo = np.empty(rows, utype)
    hi = np.empty(rows, utype)
    if threads == 1:
        _median_block(x, lo, hi)
    else:
        bounds = np.linspace(0, rows, threads + 1).astype(int)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            futures = [pool.submit(_median_block, x[a:b], lo[a:b], hi[a:b])
                       for a, b in zip(bounds[:-1], bounds[1:])]
            for future in futures:
                future.result()
    hi_f = hi.view(x.dtype)
    if n % 2:
        return hi_f.astype(np.float64)
    lo_f = lo.view(x.dtype)
    with np.errstate(over="ignore"):  # two values near the dtype's max overflow, as in np.median
        if x.dtype == np.float16:  # np.mean sums float16 in float32
            mid = ((lo_f.astype(np.float32) + hi_f.astype(np.float32)) / 2).astype(np.float16)
        else:
            mid = (lo_f + hi_f) / x.dtype.type(2)
    return mid.astype(np.float64)


# ============================================================================ moments
class Moments(NamedTuple):
    """Streamable moments of each row: ``count N``, ``mean ē = Σ e / N``, ``m2 = Σ (e − ē)²``.

    ``count`` is an int array ``[rows]`` or a scalar; ``mean`` and ``m2`` are ``[rows]``
    (any float dtype: chunk moments computed on a device in float32 are accepted). A row that
    saw an ``inf`` (or ``nan``) has ``mean = m2 = inf``. ``Moments(0, zeros, zeros)`` is the
    identity of :func:`combine`.
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray


def moments_of(x) -> Moments:
    """Moments of a chunk ``x [rows, b]`` over its last axis, two-pass in float64.

    ``N = b``, ``ē = Σ_j x_j / b``, ``m2 = Σ_j (x_j − ē)²`` (the mean is subtracted before
    squaring: no cancellation). ``nan`` counts as ``+inf``; a row with an ``inf`` gets
    ``ē = m2 = inf``. ``x`` must be float and ``>= 0`` (``TypeError`` / ``ValueError``).
    Extra memory: one float64 copy of ``x``.
    """
    x = _float_2d("x", x)
    rows, b = x.shape
    d = np.array(x, dtype=np.float64, copy=True)
    nan = np.isnan(d)
    if nan.any():
        d[nan] = np.inf
    del nan
    if d.size and d.min() < 0:
        raise ValueError(f"x must be non-negative, got min {d.min()!r}")
    mean = d.mean(axis=1)
    inf_row = ~np.isfinite(mean)
    with np.errstate(invalid="ignore", over="ignore"):
        d -= mean[:, None]
        np.square(d, out=d)
        m2 = d.sum(axis=1)
    m2[inf_row] = np.inf
    return Moments(np.full(rows, b, np.int64), mean, m2)


def _as_f64(name: str, value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    return np.where(np.isnan(arr), np.inf, arr)


def _count(name: str, value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must be an integer count, got dtype {arr.dtype}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0")
    return arr.astype(np.int64)


def combine(a: Moments, b: Moments) -> Moments:
    """Exact merge of the moments of two disjoint sets of prompts (Chan, Golub & LeVeque 1979).

    With ``N = N_a + N_b`` and ``δ = ē_b − ē_a``::

        ē  = ē_a + δ · N_b / N
        m2 = m2_a + m2_b + δ² · N_a · N_b / N

    computed in float64 whatever the inputs' dtype. ``inf``/``nan`` in either side's mean
    make the row ``ē = m2 = inf`` (no ``nan``, no warnings); an empty side (``N = 0``) leaves
    the other unchanged. Shapes broadcast (``[rows]`` with scalars).
    """
    na, nb = _count("a.count", a.count), _count("b.count", b.count)
    ma, mb = _as_f64("a.mean", a.mean), _as_f64("b.mean", b.mean)
    m2a, m2b = _as_f64("a.m2", a.m2), _as_f64("b.m2", b.m2)
    count = na + nb
    n = count.astype(np.float64)
    fa, fb = na.astype(np.float64), nb.astype(np.float64)
    inf_row = ((fa > 0) & np.isinf(ma)) | ((fb > 0) & np.isinf(mb))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        wb = np.where(n > 0, fb / np.where(n > 0, n, 1.0), 0.0)
        ma0 = np.where(fa > 0, ma, 0.0)   # an empty side's mean is irrelevant
        mb0 = np.where(fb > 0, mb, 0.0)
        delta = mb0 - ma0
        mean = ma0 + delta * wb
        m2 = (np.where(fa > 0, m2a, 0.0) + np.where(fb > 0, m2b, 0.0)
              + delta * delta * fa * wb)
    mean = np.where(inf_row, np.inf, mean)
    m2 = np.where(inf_row, np.inf, m2)
    return Moments(count, mean, m2)


def finish(m: Moments) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, stderr)`` float64 from moments: ``stderr = √(m2 / (N − 1) / N)``.

    That is ``√(s² / N)`` with the unbiased ``s² = m2 / (N − 1)`` (``np.var(ddof=1)``).
    Rows whose mean or ``m2`` is ``inf``/``nan`` give ``inf`` for both; a tiny negative ``m2``
    (device round-off) is clipped to 0. Needs ``N >= 2`` in every row (``ValueError``).
    """
    count = _count("m.count", m.count)
    if np.any(count < 2):
        raise ValueError(f"need at least 2 prompts for a standard error, got count {count.min()}")
    mean, m2 = _as_f64("m.mean", m.mean), _as_f64("m.m2", m.m2)
    n = count.astype(np.float64)
    bad = np.isinf(mean) | np.isinf(m2)
    with np.errstate(invalid="ignore"):
        stderr = np.sqrt(np.maximum(m2, 0.0) / (n - 1) / n)
    mean = np.where(bad, np.inf, mean)
    stderr = np.where(bad, np.inf, stderr)
    mean, stderr = np.broadcast_arrays(mean, stderr)
    return mean.copy(), stderr.copy()


# ============================================================================ storage
def _rows_per_slab(prompts: int, itemsize: int, budget_bytes: int) -> int:
    """Rows reduced at a time so one slab ``[rows_per_slab, prompts]`` fits the budget.

    ``max(1, budget_bytes // (prompts · itemsize))`` — at least one row, even when a single
    row exceeds the budget.
    """
    return max(1, int(budget_bytes) // (int(prompts) * int(itemsize)))


def _remove(path: str, tmpdir: Optional[str]) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    if tmpdir is not None:
        try:
            os.rmdir(tmpdir)
        except OSError:
            pass


def _close_and_remove(fd: int, path: str, tmpdir: Optional[str]) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
    _remove(path, tmpdir)


class _RowFile:
    """A ``[rows, prompts]`` row-major array in a file, read and written with ``pread``/``pwrite``.

    Not a ``np.memmap``: mapped file pages count towards the process's resident memory, so a
    memmap would make the host memory grow with the number of prompts after all. Here only the
    slab being reduced is in the process; the rest lives in the file (and the page cache).
    """

    def __init__(self, fd: int, rows: int, prompts: int, dtype: np.dtype):
        self.fd, self.rows, self.prompts, self.dtype = fd, rows, prompts, dtype

    def write_columns(self, start: int, block: np.ndarray) -> None:
        """``self[:, start:start + block.shape[1]] = block`` (one ``pwrite`` per row)."""
        block = np.ascontiguousarray(block, self.dtype)
        item = self.dtype.itemsize
        for r in range(self.rows):
            _pwrite_all(self.fd, memoryview(block[r]).cast("B"), (r * self.prompts + start) * item)

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        """A fresh array ``self[r0:r1]`` (one contiguous ``pread``)."""
        out = np.empty((r1 - r0, self.prompts), self.dtype)
        _pread_all(self.fd, memoryview(out).cast("B"), r0 * self.prompts * self.dtype.itemsize)
        return out


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _pread_all(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        n = os.preadv(fd, [view], offset)
        if n == 0:
            raise OSError("unexpected end of the prompt-errors file")
        view, offset = view[n:], offset + n


class PromptErrors:
    """Per-prompt errors ``e [rows, prompts]`` of one test length, in bounded host memory.

    ``PromptErrors(rows, prompts, dtype, budget_bytes=256 MiB, directory=None)``: when
    ``nbytes = rows · prompts · itemsize <= budget_bytes`` the errors are a NumPy array in RAM
    (:attr:`in_memory`); otherwise a file in ``directory`` (a fresh ``tempfile.mkdtemp()``
    when ``None``), unlinked as soon as it is opened (so no exit, not even ``SIGKILL``, leaves it
    behind), written and read with ``pwrite``/``pread`` (not a memmap, whose pages would count as
    resident memory) and released by :meth:`close` (or ``with`` / garbage collection). A file
    larger than the free space of ``directory`` is refused up front with the numbers. Chunks arrive through :meth:`put` in any order, each prompt exactly once;
    :meth:`median` and :meth:`moments` reduce ``_rows_per_slab`` rows at a time, so the
    extra memory stays about ``budget_bytes``.
    """

    def __init__(self, rows: int, prompts: int, dtype, budget_bytes: int = 256 * 2**20,
                 directory: Optional[str] = None):
        self.rows = _int("rows", rows, 1)
        self.prompts = _int("prompts", prompts, 1)
        self.budget_bytes = _int("budget_bytes", budget_bytes, 1)
        try:
            dt = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"dtype must be float16, float32 or float64, got {dtype!r}") from exc
        if dt not in _UINT:
            raise TypeError(f"dtype must be float16, float32 or float64, got {dt}")
        self.dtype = dt
        self._put: list[tuple[int, int]] = []  # sorted, disjoint [start, stop) ranges put so far (memory ∝ chunks, not prompts)
        self.path: Optional[str] = None
        self._finalizer = None
        if self.nbytes <= self.budget_bytes:
            self._data = np.empty((self.rows, self.prompts), dt)
        else:
            tmpdir = None
            if directory is None:
                directory = tmpdir = tempfile.mkdtemp(prefix="ttscale-errors-")
            elif not os.path.isdir(directory):
                raise ValueError(f"directory {directory!r} is not a directory")
            free = shutil.disk_usage(directory).free
            if self.nbytes > free:
                if tmpdir is not None:
                    os.rmdir(tmpdir)
                raise ValueError(
                    f"the per-prompt errors need {self.nbytes / 2**30:.3g} GiB on disk ({self.rows} rows × "
                    f"{self.prompts} prompts × {dt.itemsize} B) but {directory} has {free / 2**30:.3g} GiB free; "
                    "use fewer prompts, spectra, n or k, or free disk space"
                )
            fd, self.path = tempfile.mkstemp(prefix="prompt-errors-", suffix=f".{dt.name}.bin",
                                             dir=directory)
            # unlink at once: the open descriptor keeps the data, and no file is left behind by any exit,
            # SIGKILL included (the kernel frees the space when the process ends)
            _remove(self.path, tmpdir)
            os.ftruncate(fd, self.nbytes)
            self._finalizer = weakref.finalize(self, _close_and_remove, fd, self.path, None)
            self._data = _RowFile(fd, self.rows, self.prompts, dt)

    # ------------------------------------------------------------------ properties
    @property
    def nbytes(self) -> int:
        """Size of the full ``[rows, prompts]`` array in bytes."""
        return self.rows * self.prompts * self.dtype.itemsize

    @property
    def in_memory(self) -> bool:
        """``True`` when the errors are a RAM array, ``False`` when they live in a file."""
        return self.path is None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.prompts)

    @property
    def filled(self) -> int:
        """Number of prompts put so far."""
        return sum(stop - start for start, stop in self._put)

    @property
    def complete(self) -> bool:
        """``True`` once every prompt has been put."""
        return self.filled == self.prompts

    @property
    def closed(self) -> bool:
        return self._data is None

    # ------------------------------------------------------------------ writing
    def put(self, start: int, stop: int, errors) -> None:
        """Store ``errors [rows, stop − start]`` as prompts ``start .. stop − 1``.

        ``0 <= start < stop <= prompts``; each prompt may be put once (``ValueError``
        otherwise, naming the argument). ``errors`` is float, ``>= 0`` (``nan``/``inf``
        allowed) and cast to the store's dtype. An in-memory store given all its prompts in one
        C-contiguous array of its dtype keeps that array instead of a copy (a one-chunk sweep-A: 43 MB not
        copied into fresh pages, ~30 ms, ``benchmarks/engine_settings.py --host``); the caller must not modify it
        afterwards.
        """
        self._check_open()
        start = _int("start", start, 0)
        stop = _int("stop", stop, 0)
        if not start < stop <= self.prompts:
            raise ValueError(f"need 0 <= start < stop <= prompts = {self.prompts}, "
                             f"got start={start}, stop={stop}")
        errors = _float_2d("errors", errors)
        if errors.shape != (self.rows, stop - start):
            raise ValueError(f"errors must have shape [rows, stop - start] = "
                             f"{(self.rows, stop - start)}, got {errors.shape}")
        low = errors.min()
        if low < 0:  # nan compares False: allowed
            raise ValueError(f"errors must be non-negative, got min {low!r}")
        at = bisect.bisect_left(self._put, (start, stop))
        if (at > 0 and self._put[at - 1][1] > start) or (at < len(self._put) and self._put[at][0] < stop):
            raise ValueError(f"start..stop = {start}..{stop} overlaps prompts already put")
        if isinstance(self._data, _RowFile):
            self._data.write_columns(start, errors)
        elif (start, stop) == (0, self.prompts) and errors.dtype == self._data.dtype and errors.flags.c_contiguous:
            self._data = errors  # the whole store in one put: keep it (its pages were never touched)
        else:
            self._data[:, start:stop] = errors
        self._put.insert(at, (start, stop))

    # ------------------------------------------------------------------ reducing
    def _slabs(self, itemsize: int):
        self._check_open()
        if not self.complete:
            raise ValueError(f"only {self.filled} of {self.prompts} prompts have been put")
        step = _rows_per_slab(self.prompts, itemsize, self.budget_bytes)
        for r0 in range(0, self.rows, step):
            yield r0, min(r0 + step, self.rows)

    def median(self) -> np.ndarray:
        """Exact medians over prompts, ``[rows]`` float64 (:func:`median_rows` per slab).

        Slabs of ``_rows_per_slab(prompts, itemsize, budget_bytes)`` rows are read from the
        array or file; all prompts must have been put.
        """
        out = np.empty(self.rows, np.float64)
        for r0, r1 in self._slabs(self.dtype.itemsize):
            out[r0:r1] = median_rows(self._rows(r0, r1))
        return out

    def _rows(self, r0: int, r1: int) -> np.ndarray:
        if isinstance(self._data, _RowFile):
            return self._data.read_rows(r0, r1)
        return self._data[r0:r1]

    def moments(self) -> Moments:
        """:class:`Moments` over prompts, ``[rows]`` (:func:`moments_of` per slab).

        :func:`moments_of` works on a float64 copy, so slabs hold
        ``_rows_per_slab(prompts, 8, budget_bytes)`` rows (extra memory ≈ the budget).
        """
        parts = [moments_of(self._rows(r0, r1)) for r0, r1 in self._slabs(8)]
        return Moments(*(np.concatenate(field) for field in zip(*parts)))

    # ------------------------------------------------------------------ lifetime
    def _check_open(self) -> None:
        if self._data is None:
            raise ValueError("PromptErrors is closed")

    def close(self) -> None:
        """Drop the errors; a spill file (and the temporary directory it made) is deleted."""
        self._data = None  # the mapping goes with the last reference; the file is unlinked now
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> "PromptErrors":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "memory" if self.in_memory else self.path
        return (f"PromptErrors(rows={self.rows}, prompts={self.prompts}, dtype={self.dtype.name}, "
                f"filled={self.filled}, {where})")


def chunk_moments(errors, count):
    """(JAX, on the device.) Scaled mean and sum of squared deviations over the first ``count`` prompts of ``errors [rows, K, b]``.

    ``count`` (traced int, ``0 ≤ count ≤ b``): the real prompts lead, padding follows and is
    ignored. Errors are ``≥ 0`` or ``inf``. With ``c = max e`` per row (``1`` if that is ``0``),
    two passes over ``x = e / c ∈ [0, 1]`` in the working dtype: ``μ = Σ x / n``,
    ``M₂ = Σ (x − μ)²``; the caller forms ``mean = c μ`` and ``m2 = c² M₂`` in float64. The
    scaling matters: squared deviations of errors ≈ 1e-20 (a converged CoT) underflow float32,
    and an unscaled ``M₂`` made standard errors 14× too small. A row with an ``inf`` among its
    real prompts gets ``c = μ = M₂ = inf``; ``count = 0`` gives ``1, 0, 0``. The unpadded case
    skips the masks (``lax.cond``; masking costs XLA's CPU reductions ~5×).
    Returns ``(c, μ, M₂) [rows, K]``.
    """
    import jax
    import jax.numpy as jnp

    b = errors.shape[-1]
    inf = jnp.asarray(jnp.inf, errors.dtype)

    def moments(x, n, mask):
        top = jnp.max(x, axis=-1)
        finite = top < jnp.inf  # errors are >= 0: the max is inf iff one is
        scale = jnp.where(finite & (top > 0), top, 1.0)
        y = x / scale[..., None]
        mean = jnp.sum(y, axis=-1) / jnp.maximum(n, 1).astype(x.dtype)
        dev = y - mean[..., None]
        if mask is not None:
            dev = jnp.where(mask, dev, 0.0)
        m2 = jnp.sum(dev * dev, axis=-1)
        return jnp.where(finite, scale, inf), jnp.where(finite, mean, inf), jnp.where(finite, m2, inf)

    def full(x, n):
        return moments(x, n, None)

    def padded(x, n):
        mask = jnp.arange(b) < n
        return moments(jnp.where(mask, x, 0.0), n, mask)

    count = jnp.asarray(count, jnp.int32)
    return jax.lax.cond(count == b, full, padded, errors, count)
