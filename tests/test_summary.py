"""ttscale.summary: exact row medians, streamable moments and the bounded-memory error store."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from ttscale import summary
from ttscale.summary import Moments, PromptErrors, combine, finish, median_rows, moments_of


def reference_median(x):
    """np.median over the last axis with nan → +inf (the module's convention), as float64."""
    x = np.asarray(x)
    return np.median(np.where(np.isnan(x), np.inf, x), axis=-1).astype(np.float64)


def lognormal(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).lognormal(size=shape).astype(dtype)


# ============================================================================ median_rows
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 101, 128])
@pytest.mark.parametrize("rows", [1, 13])
def test_median_rows_equals_np_median(dtype, n, rows):
    x = lognormal((rows, n), dtype, seed=n * 31 + rows)
    got = median_rows(x)
    assert got.dtype == np.float64 and got.shape == (rows,)
    assert_array_equal(got, reference_median(x))


@pytest.mark.parametrize("n", [1000, 2000, 4096])
def test_median_rows_long_rows(n):
    # Long even rows: after partition(h) the lower middle is generally *not* at column h − 1.
    x = lognormal((64, n), np.float32, seed=n)
    x[::3, : n // 3] = np.inf
    assert_array_equal(median_rows(x), reference_median(x))
    assert_array_equal(median_rows(x.astype(np.float64)), reference_median(x.astype(np.float64)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_rows_ties_and_zeros(dtype):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, size=(50, 10)).astype(dtype)   # many ties, many zeros
    x[3] = 0.0
    x[4] = -0.0                                          # −0 is not negative, sorts as 0
    x[5, :5] = -0.0
    assert_array_equal(median_rows(x), reference_median(x))
    assert median_rows(x)[4] == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [9, 10])
def test_median_rows_inf_and_nan(dtype, n):
    x = lognormal((6, n), dtype, seed=2)
    half = n // 2
    few = (n - 1) // 2                                   # fewer than half: median finite
    x[0, :few] = np.inf
    x[1, :few] = np.nan
    x[2, 1:few:2] = np.nan
    x[2, 0:few:2] = np.inf
    x[3, : half + 1] = np.inf                            # more than half: median inf
    x[4, : half + 1] = np.nan
    x[5, :] = np.inf
    got = median_rows(x)
    assert_array_equal(got, reference_median(x))
    assert np.all(np.isfinite(got[:3]))
    assert np.all(np.isposinf(got[3:]))
    assert not np.any(np.isnan(got))


def test_median_rows_exactly_half_inf_even_n():
    x = np.array([[1.0, 2.0, np.inf, np.inf], [1.0, np.inf, 3.0, np.nan]])
    assert_array_equal(median_rows(x), [np.inf, np.inf])
    x = np.array([[1.0, 2.0, 5.0, np.inf]])
    assert_array_equal(median_rows(x), [3.5])


def test_median_rows_does_not_mutate_input():
    x = lognormal((40, 33), np.float32, seed=3)
    x[0, :5] = np.nan
    x[1, 2] = -0.0
    before = x.copy()
    median_rows(x)
    assert_array_equal(x.view(np.uint32), before.view(np.uint32))  # bit for bit (nan, −0 kept)


@pytest.mark.parametrize("threads", [1, 2, 3, None])
def test_median_rows_threads_and_blocks_agree(threads, monkeypatch):
    # Small block and threshold so several blocks per thread and the thread path are exercised.
    monkeypatch.setattr(summary, "_BLOCK_BYTES", 3 * 64 * 4)
    monkeypatch.setattr(summary, "_THREAD_MIN_ELEMENTS", 1)
    x = lognormal((37, 64), np.float32, seed=4)
    x[::5, ::3] = np.inf
    x[7, 10] = np.nan
    assert_array_equal(median_rows(x, threads=threads), reference_median(x))


def test_median_rows_strided_and_memmap_inputs(tmp_path):
    x = lognormal((20, 31), np.float64, seed=5)
    assert_array_equal(median_rows(x.T.copy().T), reference_median(x))       # Fortran order
    assert_array_equal(median_rows(x[:, ::2]), reference_median(x[:, ::2]))  # strided
    big_endian = x.astype(">f8")
    assert_array_equal(median_rows(big_endian), reference_median(x))
    mm = np.memmap(tmp_path / "x.bin", dtype=np.float64, mode="w+", shape=x.shape)
    mm[:] = x
    assert_array_equal(median_rows(mm), reference_median(x))


def test_median_rows_validation():
    with pytest.raises(ValueError, match="x must be 2-D"):
        median_rows(np.ones(5))
    with pytest.raises(ValueError, match="x must be 2-D"):
        median_rows(np.ones((2, 3, 4)))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        median_rows(np.ones((2, 3), int))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        median_rows("abc")
    with pytest.raises(ValueError, match="x must have n >= 1"):
        median_rows(np.ones((2, 0)))
    x = np.ones((3, 4))
    x[2, 1] = -1e-30
    with pytest.raises(ValueError, match="x must be non-negative"):
        median_rows(x)
    x[2, 1] = -np.inf
    with pytest.raises(ValueError, match="x must be non-negative"):
        median_rows(x)
    with pytest.raises(ValueError, match="threads"):
        median_rows(np.ones((2, 2)), threads=0)
    assert median_rows(np.ones((0, 3))).shape == (0,)


# ============================================================================ moments
def reference_mean_stderr(x):
    x = np.asarray(x, np.float64)
    return x.mean(axis=1), np.sqrt(np.var(x, axis=1, ddof=1) / x.shape[1])


def float32_moment_tolerances(x):
    """Absolute tolerances on the combined mean and m2 when each chunk's mean and m2 were rounded to float32.

    With ``u = eps32 / 2`` a rounded chunk mean is off by ``|Δ_i| <= u · max|x|``. The merged
    ``m2 = Σ_i m2_i + Σ_i N_i (ē_i − ē)²`` moves by ``Σ_i 2 N_i |ē_i − ē| |Δ_i| <= 2u · n · max|x| · (max x − min x)``
    (first order; ``ē`` itself is stationary), plus ``u · m2`` from the rounded chunk ``m2_i``. The
    *difference* of two close means loses relative precision, so this is an absolute bound: relative
    to a tiny ``m2`` (two nearly equal values) it can be large. The merged mean is a weighted average
    of the rounded chunk means, off by ``<= u · max|x|``. Returned with a factor 2 to spare.
    """
    eps32 = float(np.finfo(np.float32).eps)            # = 2u
    n = x.shape[1]
    hi, lo = x.max(axis=1), x.min(axis=1)
    m2 = ((x - x.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    atol_mean = eps32 * hi
    atol_m2 = eps32 * (2 * n * hi * (hi - lo) + m2)
    return atol_mean, atol_m2


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       n=st.integers(2, 200),
       rows=st.integers(1, 6),
       cuts=st.lists(st.floats(0, 1), max_size=6),
       device_float32=st.booleans())
@example(seed=140408, n=2, rows=1, cuts=[0.5], device_float32=True)   # two close values: stderr rtol 8e-5
def test_moments_combine_over_random_chunks(seed, n, rows, cuts, device_float32):
    rng = np.random.default_rng(seed)
    x = rng.lognormal(mean=rng.uniform(-3, 3), sigma=rng.uniform(0.1, 2), size=(rows, n))
    edges = sorted({0, n, *(int(c * n) for c in cuts)})
    chunks = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    rng.shuffle(chunks)
    acc = Moments(0, np.zeros(rows), np.zeros(rows))          # identity of combine
    for a, b in chunks:
        m = moments_of(x[:, a:b])
        if device_float32:  # chunk moments as a device would hand them over
            m = Moments(b - a, m.mean.astype(np.float32), m.m2.astype(np.float32))
        acc = combine(acc, m)
    mean, stderr = finish(acc)
    ref_mean, ref_se = reference_mean_stderr(x)
    assert_array_equal(acc.count, np.full(rows, n))
    if device_float32:
        atol_mean, atol_m2 = float32_moment_tolerances(x)
        ref_m2 = ((x - x.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        assert np.all(np.abs(mean - ref_mean) <= atol_mean + 1e-12 * ref_mean)
        assert np.all(np.abs(acc.m2 - ref_m2) <= atol_m2 + 1e-12 * ref_m2)
        # stderr² = m2 / (n (n − 1)), and |√a − √b| <= |a − b| / √b
        atol_se = atol_m2 / (n * (n - 1)) / ref_se
        assert np.all(np.abs(stderr - ref_se) <= atol_se + 1e-12 * ref_se)
    else:
        assert_allclose(mean, ref_mean, rtol=1e-12)
        assert_allclose(stderr, ref_se, rtol=1e-12)


def test_moments_of_single_chunk_matches_numpy():
    x = lognormal((5, 1000), np.float32, seed=6)
    m = moments_of(x)
    assert m.mean.dtype == np.float64 and m.m2.dtype == np.float64
    mean, se = finish(m)
    ref_mean, ref_se = reference_mean_stderr(x)
    assert_allclose(mean, ref_mean, rtol=1e-12)
    assert_allclose(se, ref_se, rtol=1e-12)
    assert_allclose(m.m2, np.var(x.astype(np.float64), axis=1, ddof=0) * 1000, rtol=1e-12)


def test_combine_accepts_float32_device_moments():
    x = lognormal((4, 64), np.float64, seed=7)
    a, b = x[:, :40], x[:, 40:]
    def device(c):  # float32 mean and m2, as the engine computes them on the accelerator
        return c.mean(1).astype(np.float32), ((c - c.mean(1, keepdims=True)) ** 2).sum(1).astype(np.float32)

    ma = Moments(np.int64(40), *device(a))
    mb = Moments(24, *device(b))
    c = combine(ma, mb)
    assert c.mean.dtype == np.float64
    ref_mean, ref_se = reference_mean_stderr(x)
    mean, se = finish(c)
    assert_allclose(mean, ref_mean, rtol=1e-6)
    assert_allclose(se, ref_se, rtol=1e-5)


def test_moments_inf_rows_are_inf_without_warnings():
    x = lognormal((4, 10), np.float64, seed=8)
    x[1, 3] = np.inf
    x[2, 0] = np.nan
    with np.errstate(all="raise"):
        m1 = moments_of(x[:, :6])
        m2 = moments_of(x[:, 6:])
        m = combine(m1, m2)
        for part in (m1, m, moments_of(x)):             # the Moments contract: inf, never nan
            assert_array_equal(np.isposinf(part.mean), [False, True, True, False])
            assert_array_equal(np.isposinf(part.m2), [False, True, True, False])
        # A device chunk where inf − inf left nan in the mean / m2.
        dev = Moments(3, np.array([1.0, np.nan, 1.0, np.inf]), np.array([0.5, np.nan, 0.5, np.nan]))
        m_dev = combine(m, dev)
        mean, se = finish(m)
        mean_dev, se_dev = finish(m_dev)
    assert_array_equal(np.isposinf(mean), [False, True, True, False])
    assert_array_equal(np.isposinf(se), [False, True, True, False])
    assert_array_equal(np.isposinf(mean_dev), [False, True, True, True])
    assert_array_equal(np.isposinf(se_dev), [False, True, True, True])
    ref_mean, ref_se = reference_mean_stderr(x[[0, 3]])
    assert_allclose(mean[[0, 3]], ref_mean, rtol=1e-12)
    assert_allclose(se[[0, 3]], ref_se, rtol=1e-12)


def test_moments_validation():
    with pytest.raises(ValueError, match="x must be non-negative"):
        moments_of(-np.ones((2, 3)))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        moments_of(np.ones((2, 3), int))
    with pytest.raises(ValueError, match="at least 2 prompts"):
        finish(moments_of(np.ones((2, 1))))
    with pytest.raises(ValueError, match="a.count must be >= 0"):
        combine(Moments(-1, np.zeros(2), np.zeros(2)), moments_of(np.ones((2, 3))))


# ============================================================================ PromptErrors
def fill(store, x, chunk, seed=0):
    starts = list(range(0, x.shape[1], chunk))
    np.random.default_rng(seed).shuffle(starts)
    for s in starts:
        e = min(s + chunk, x.shape[1])
        store.put(s, e, x[:, s:e])


def make_errors(rows=12, prompts=203, dtype=np.float32, seed=9):
    x = lognormal((rows, prompts), dtype, seed=seed)
    x[2, ::7] = np.inf
    x[3, 5] = np.nan
    x[4, : prompts // 2 + 1] = np.inf
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prompt_errors_in_memory_matches_direct(dtype):
    x = make_errors(dtype=dtype)
    with PromptErrors(*x.shape, dtype) as store:
        assert store.in_memory and store.path is None
        assert store.nbytes == x.size * np.dtype(dtype).itemsize
        fill(store, x, chunk=37)
        assert store.complete
        assert_array_equal(store.median(), reference_median(x))
        m = store.moments()
    mean, se = finish(m)
    finite = [r for r in range(x.shape[0]) if np.all(np.isfinite(x[r]))]
    ref_mean, ref_se = reference_mean_stderr(x[finite])
    assert_allclose(mean[finite], ref_mean, rtol=1e-12)
    assert_allclose(se[finite], ref_se, rtol=1e-12)
    assert np.all(np.isposinf(mean[[2, 3, 4]])) and np.all(np.isposinf(se[[2, 3, 4]]))


def test_prompt_errors_spill_to_a_file_with_identical_results(tmp_path):
    x = make_errors()
    with PromptErrors(*x.shape, np.float32) as ram:
        fill(ram, x, chunk=50, seed=1)
        med_ram, mom_ram = ram.median(), ram.moments()
    budget = 3 * x.shape[1] * 4 + 5                     # 3 rows per median slab
    store = PromptErrors(*x.shape, np.float32, budget_bytes=budget, directory=str(tmp_path))
    assert not store.in_memory
    assert os.path.dirname(store.path) == str(tmp_path)
    # unlinked at once: nothing is left in the directory by any exit (a SIGKILL included)
    assert not os.path.exists(store.path) and os.listdir(tmp_path) == []
    assert os.fstat(store._data.fd).st_size == store.nbytes
    fill(store, x, chunk=29, seed=2)
    assert_array_equal(store.median(), med_ram)
    for got, ref in zip(store.moments(), mom_ram):
        assert_array_equal(got, ref)
    path = store.path
    store.close()
    assert not os.path.exists(path) and os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="closed"):
        store.median()


def test_prompt_errors_default_directory_is_removed():
    store = PromptErrors(4, 100, np.float64, budget_bytes=100)
    assert not store.in_memory
    directory = os.path.dirname(store.path)
    assert not os.path.exists(directory)  # the temporary directory is gone as soon as the file is open
    store.put(0, 100, np.ones((4, 100)))
    assert_array_equal(store.median(), np.ones(4))
    store.close()
    assert not os.path.exists(directory)


def test_rows_per_slab_bounds_memory(monkeypatch):
    assert summary._rows_per_slab(prompts=1000, itemsize=4, budget_bytes=12_000) == 3
    assert summary._rows_per_slab(prompts=1000, itemsize=4, budget_bytes=11_999) == 2
    assert summary._rows_per_slab(prompts=1000, itemsize=8, budget_bytes=100) == 1   # at least a row
    assert summary._rows_per_slab(prompts=1000, itemsize=4, budget_bytes=2**30) == 268435
    # The reductions really go slab by slab: every slab handed on stays within the budget.
    x = make_errors(rows=10, prompts=100)
    seen = {"median": [], "moments": []}
    real_median, real_moments = summary.median_rows, summary.moments_of
    monkeypatch.setattr(summary, "median_rows", lambda a: seen["median"].append(a.shape) or real_median(a))
    monkeypatch.setattr(summary, "moments_of", lambda a: seen["moments"].append(a.shape) or real_moments(a))
    budget = 3 * 100 * 4                                   # 3 float32 rows, 1 float64 row
    with PromptErrors(10, 100, np.float32, budget_bytes=budget) as store:
        fill(store, x, chunk=17)
        med, mom = store.median(), store.moments()
    assert seen["median"] == [(3, 100), (3, 100), (3, 100), (1, 100)]
    assert seen["moments"] == [(1, 100)] * 10
    assert all(r * 100 * 4 <= budget for r, _ in seen["median"])
    assert all(r * 100 * 8 <= budget for r, _ in seen["moments"])
    assert_array_equal(med, reference_median(x))
    assert_array_equal(mom.count, np.full(10, 100))


def test_prompt_errors_put_validation():
    with PromptErrors(3, 10, np.float32) as store:
        with pytest.raises(ValueError, match="errors must have shape"):
            store.put(0, 5, np.ones((3, 4), np.float32))
        with pytest.raises(ValueError, match="errors must have shape"):
            store.put(0, 5, np.ones((2, 5), np.float32))
        with pytest.raises(ValueError, match="errors must be 2-D"):
            store.put(0, 5, np.ones(5, np.float32))
        with pytest.raises(ValueError, match="start < stop"):
            store.put(5, 5, np.ones((3, 0), np.float32))
        with pytest.raises(ValueError, match="stop <= prompts"):
            store.put(8, 11, np.ones((3, 3), np.float32))
        with pytest.raises(ValueError, match="start must be >= 0"):
            store.put(-1, 2, np.ones((3, 3), np.float32))
        with pytest.raises(TypeError, match="errors must be a floating-point"):
            store.put(0, 2, np.ones((3, 2), int))
        with pytest.raises(ValueError, match="errors must be non-negative"):
            store.put(0, 2, -np.ones((3, 2), np.float32))
        store.put(0, 5, np.ones((3, 5), np.float32))
        with pytest.raises(ValueError, match="overlaps"):
            store.put(4, 6, np.ones((3, 2), np.float32))
        with pytest.raises(ValueError, match="5 of 10 prompts"):
            store.median()
        store.put(5, 10, np.full((3, 5), 2.0))              # float64 cast to the store's float32
        assert_array_equal(store.median(), [1.5, 1.5, 1.5])
    with pytest.raises(ValueError, match="prompts must be >= 1"):
        PromptErrors(3, 0, np.float32)
    with pytest.raises(TypeError, match="dtype"):
        PromptErrors(3, 4, np.int32)


@pytest.mark.parametrize("count", [0, 1, 7, 16])
@pytest.mark.parametrize("size", [1.0, 1e-20])  # 1e-20: squared deviations would underflow float32 unscaled
def test_chunk_moments_equal_float64_moments_of_the_real_prompts(count, size):
    rng = np.random.default_rng(count)
    errs = (size * rng.exponential(size=(3, 4, 16))).astype(np.float32)
    errs[1, 2, 3] = np.inf  # inside the real prompts when count > 3
    errs[2, 0, 12] = np.inf  # padding when count <= 12: must not leak
    scale, mean, m2 = (np.asarray(x, np.float64) for x in jax.jit(summary.chunk_moments)(jnp.asarray(errs), count))
    with np.errstate(invalid="ignore"):
        mean, m2 = scale * mean, scale**2 * m2
    if count == 0:
        np.testing.assert_array_equal(mean, 0.0)
        np.testing.assert_array_equal(m2, 0.0)
        return
    ref = summary.moments_of(errs[..., :count].reshape(12, count))
    np.testing.assert_array_equal(np.isinf(mean).ravel(), np.isinf(ref.mean))
    np.testing.assert_array_equal(np.isinf(m2).ravel(), np.isinf(ref.m2))
    fin = np.isfinite(ref.mean)
    np.testing.assert_allclose(mean.ravel()[fin], ref.mean[fin], rtol=1e-6)
    np.testing.assert_allclose(m2.ravel()[fin], ref.m2[fin], rtol=1e-5, atol=1e-6 * size**2)


def test_a_spill_larger_than_the_free_disk_is_refused_with_the_numbers(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(ValueError, match=r"GiB on disk .* GiB free"):
        PromptErrors(1000, 10**6, np.float32, budget_bytes=100, directory=str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("layout", ["kept", "fortran", "float64 into float32"])
def test_prompt_errors_one_whole_put_is_kept_or_copied_with_the_same_results(layout):
    """All prompts in one put: a C-contiguous array of the store's dtype is kept as it is (no copy), anything else is
    copied or cast; the median and moments are those of the data either way, and a second put is still refused."""
    x = make_errors(dtype=np.float64 if layout == "float64 into float32" else np.float32)
    given = np.asfortranarray(x) if layout == "fortran" else x
    with PromptErrors(*x.shape, np.float32) as store:
        store.put(0, x.shape[1], given)
        assert (store._data is given) == (layout == "kept")
        assert_array_equal(store.median(), reference_median(x.astype(np.float32)))
        mean, _ = finish(store.moments())
        with pytest.raises(ValueError, match="overlaps"):
            store.put(0, 1, x[:, :1].astype(np.float32))
    finite = [r for r in range(x.shape[0]) if np.all(np.isfinite(x[r]))]
    assert_allclose(mean[finite], reference_mean_stderr(x.astype(np.float32)[finite].astype(np.float64))[0], rtol=1e-6)
