"""ttscale.rng: counter-based Threefry normals (exact layout, chunk/vmap invariance, distribution).

Exact checks compare against Python big integers, the documented word layout and per-call
results; statistical checks use bounds of 5 Monte-Carlo standard errors (a false alarm has
probability ~6e-7 per check, and the draws are deterministic, so a pass is reproducible).
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from ttscale import rng, spectra, sweep
from ttscale.prompts import prompts_at, sample_statistics, statistics_of

KEY = jax.random.key(20251003)
U32 = 2**32


def _pn(key, start, count, width, dtype=jnp.float32, stream=0):
    """Eager call (concrete Python-int ``start``)."""
    return np.asarray(rng.prompt_normals(key, start, count, width, dtype, stream))


def _x64(dtype):
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


# ----------------------------------------------------------------------------- _mul_wide
_EDGES = [0, 1, 2, 3, 0xFFFF, 0x10000, 0x10001, 0x1FFFF, 0xFFFF0000, 0xFFFF0001, 0x7FFFFFFF, 0x80000000,
          0x80000001, 0xFFFEFFFF, 0xFFFFFFFE, 0xFFFFFFFF]


def _wide(lo, hi):
    return [int(h) * U32 + int(l) for l, h in zip(np.asarray(lo).ravel(), np.asarray(hi).ravel())]


def test_mul_wide_equals_python_big_int_product():
    rs = np.random.default_rng(0)
    ea, eb = np.meshgrid(np.array(_EDGES, np.uint32), np.array(_EDGES, np.uint32))
    a = np.concatenate([ea.ravel(), rs.integers(0, U32, 4000, dtype=np.uint64).astype(np.uint32)])
    b = np.concatenate([eb.ravel(), rs.integers(0, U32, 4000, dtype=np.uint64).astype(np.uint32)])
    want = [int(x) * int(y) for x, y in zip(a, b)]
    assert max(want) == (U32 - 1) ** 2  # the extreme product is among the cases

    @jax.jit
    def both(a, b):  # traced a and b, vmapped; and a traced ``a`` against a static Python int, as prompt_normals has it
        return jax.vmap(rng._mul_wide)(a, b), jax.vmap(lambda x: rng._mul_wide(x, 0xFFFFFFFF))(a)

    (lo, hi), (lo_max, hi_max) = both(jnp.asarray(a), jnp.asarray(b))
    assert lo.dtype == jnp.uint32 and hi.dtype == jnp.uint32
    assert _wide(lo, hi) == want
    assert _wide(lo_max, hi_max) == [int(x) * 0xFFFFFFFF for x in a]


# ----------------------------------------------------------------------------- layout and chunk invariance
# Every request uses w = 1000 words per prompt (float32 width 999: odd, one padding word; float64
# width 500: two words per normal), so prompt p starts at counter 500·p, and 1000 prompts of it
# are ~10^6 normals: the exact and the statistical tests share a handful of compiled shapes.
_CASES = [("float32", 999), ("float64", 500)]
_COUNT = 1000
_HALF_W = 500
_CARRY = U32 // _HALF_W  # the 64-bit counter passes 2^32 inside this prompt
_STARTS = [0, 2**31 + 1, _CARRY - 400, U32 - _COUNT]  # the last chunk ends at prompt 2^32 - 1 (c_hi = 499)
_PICK = [0, 1, 399, 400, 401, 998, 999]  # rows compared one by one (400: the carry prompt of _CARRY - 400)

# static args: count, width, dtype, stream; ``start`` is traced (np.uint32, so values >= 2^31 fit)
_pn_jit = jax.jit(rng.prompt_normals, static_argnums=(2, 3, 4, 5))


def _draw(start, dtype, width, stream=0, key=KEY):
    """``_COUNT`` prompts: float32 eagerly with a concrete ``start``, float64 under jit (one compile)."""
    if np.dtype(dtype) == np.float32:
        return _pn(key, start, _COUNT, width, dtype, stream)
    return np.asarray(_pn_jit(key, np.uint32(start), _COUNT, width, dtype, stream))


def test_the_cases_cover_what_they_claim():
    assert all(rng.words_per_prompt(w, dt) == 2 * _HALF_W for dt, w in _CASES)
    assert _HALF_W * _CARRY < U32 < _HALF_W * (_CARRY + 1)
    assert (_HALF_W * (U32 - 1)) // U32 == _HALF_W - 1


def _words_to_normal64_numpy(words):
    """The documented float64 map in NumPy/SciPy: b = (w₀ >> 6)·2^26 + (w₁ >> 6), √2·erfinv((2b + 1)·2^{-52} − 1)."""
    words = np.asarray(words, np.uint32)
    b = (words[..., 0::2].astype(np.int64) >> 6) * 2**26 + (words[..., 1::2].astype(np.int64) >> 6)
    return np.sqrt(2.0) * special.erfinv((2 * b + 1).astype(np.float64) * 2.0**-52 - 1.0)


@pytest.mark.parametrize("dtype,width", _CASES)
def test_prompt_normals_follow_the_documented_word_layout(dtype, width):
    """Prompt p reads words [p·w, (p+1)·w) of stream (key, stream): counter p·w/2 = c_lo + 2^32 c_hi."""
    for start in (5, _CARRY - 1, U32 - _COUNT):
        c = start * _HALF_W
        words = rng.stream_words(rng.stream_state(KEY, 0, c % U32, c // U32), _COUNT * 2 * _HALF_W)
        words = np.asarray(words).reshape(_COUNT, 2 * _HALF_W)
        with _x64(dtype):
            got = _draw(start, dtype, width)
        assert got.shape == (_COUNT, width) and got.dtype == np.dtype(dtype)
        if dtype == "float32":
            np.testing.assert_array_equal(got, np.asarray(rng.words_to_normal(jnp.asarray(words), dtype))[:, :width])
        else:  # words 2j, 2j + 1 make normal j; checked against an independent (SciPy) erfinv
            np.testing.assert_allclose(got, _words_to_normal64_numpy(words), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype,width", _CASES)
@pytest.mark.parametrize("start", _STARTS)
def test_chunk_invariance(start, dtype, width):
    """A chunk equals its prompts drawn one at a time with a traced start (float32 chunk: concrete start)."""
    with _x64(dtype):
        big = _draw(start, dtype, width)
        assert big.shape == (_COUNT, width) and big.dtype == np.dtype(dtype) and np.all(np.isfinite(big))
        for i in _PICK:
            one = np.asarray(_pn_jit(KEY, np.uint32(start + i), 1, width, dtype, 0))
            np.testing.assert_array_equal(one, big[i : i + 1])
        if start == _CARRY - 400:  # the rows either side of the carry are fresh words, not a repeat
            assert not np.any(big[399] == big[401][:width]) and not np.any(big[0] == big[400])


def test_counter_high_word_is_used():
    """q = p + ⌈2^32/500⌉ starts at counter 500p + 204 + 2^32: with c_hi dropped it would reuse p's words."""
    p, q = 100, 100 + U32 // _HALF_W + 1
    assert (_HALF_W * q) % U32 == _HALF_W * p + 204
    a = np.asarray(_pn_jit(KEY, np.uint32(p), 1, 999, "float32", 0))[0]
    b = np.asarray(_pn_jit(KEY, np.uint32(q), 1, 999, "float32", 0))[0]
    assert np.mean(b[: 999 - 408] == a[408:]) < 0.01


# ----------------------------------------------------------------------------- vmap exactness
def test_vmap_over_keys_and_starts_is_exact():
    keys = jax.random.split(jax.random.key(5), 3)
    starts = np.array([3, 2**31 + 11, _CARRY], np.uint32)
    ref = np.stack([[np.asarray(_pn_jit(k, s, 1, 999, "float32", 0)) for s in starts] for k in keys])
    assert np.mean(ref[0, 0] == ref[1, 0]) < 0.01 and np.mean(ref[0, 0] == ref[0, 1]) < 0.01
    diag = np.stack([ref[i, i] for i in range(3)])
    state = rng.stream_state(KEY, 0, 7, 1)

    def one(k, s):
        return rng.prompt_normals(k, s, 1, 999)

    @jax.jit
    def batched(keys, starts):
        return (
            jax.vmap(one)(keys, starts),  # the plain case: rng_bit_generator's own rule would use keys[0]
            jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None))(keys, starts),  # nested: keys × starts
            # a batched input that does not reach the state: the same words for every member
            jax.vmap(lambda x: rng.stream_words(state, 6) + x)(jnp.arange(3, dtype=jnp.uint32)),
        )

    both_axes, nested, unbatched = batched(keys, starts)
    np.testing.assert_array_equal(both_axes, diag)
    np.testing.assert_array_equal(nested, ref)
    words = np.asarray(rng.stream_words(state, 6))
    np.testing.assert_array_equal(unbatched, words[None] + np.arange(3, dtype=np.uint32)[:, None])


# ----------------------------------------------------------------------------- streams and keys
def test_streams_keys_and_neighbouring_prompts_are_distinct_and_uncorrelated():
    base = _draw(0, "float32", 999).ravel()
    bound = 5.0 / math.sqrt(base.size)  # 5 standard errors of a sample correlation of independent normals
    others = {
        "stream 1": _draw(0, "float32", 999, stream=1).ravel(),
        "stream 2": _draw(0, "float32", 999, stream=2).ravel(),
        "another key": _draw(0, "float32", 999, key=jax.random.key(2)).ravel(),
        "fold_in(key, 0)": _draw(0, "float32", 999, key=jax.random.fold_in(KEY, 0)).ravel(),
        "next prompt": _draw(1, "float32", 999).ravel(),
    }
    for name, x in others.items():
        assert np.mean(base == x) < 1e-4, name  # chance ties of 2^23-level floats: ~1e-6
        r = np.corrcoef(base, x)[0, 1]
        assert abs(r) < bound, (name, r)
    assert abs(np.corrcoef(base[:-1], base[1:])[0, 1]) < bound  # lag 1 inside the stream
    assert abs(np.corrcoef(base**2, others["stream 1"] ** 2)[0, 1]) < bound  # beyond linear dependence


# ----------------------------------------------------------------------------- distribution
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normal_moments_tails_and_ks(dtype):
    width = dict(_CASES)[dtype]
    with _x64(dtype):
        z = _draw(10**6, dtype, width)
    assert z.dtype == np.dtype(dtype)
    z = z.astype(np.float64).ravel()
    assert np.all(np.isfinite(z))
    n, k = z.size, 5.0
    # E z = 0 (var 1), E z² = 1 (var 2), E z³ = 0 (var 15), E z⁴ = 3 (var 105 − 9 = 96)
    for power, mean, var in ((1, 0.0, 1.0), (2, 1.0, 2.0), (3, 0.0, 15.0), (4, 3.0, 96.0)):
        est = np.mean(z**power)
        assert abs(est - mean) < k * math.sqrt(var / n), (power, est)
    # two-sided tail P(|z| > 3) and one-sided P(z > 2)
    for frac, p in ((np.mean(np.abs(z) > 3), 2 * stats.norm.sf(3)), (np.mean(z > 2), stats.norm.sf(2))):
        assert abs(frac - p) < k * math.sqrt(p * (1 - p) / n), (frac, p)
    assert stats.kstest(z, "norm").pvalue > 1e-3


_EXTREME32 = np.array([0, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF], np.uint32)  # b = 0, 2^23 − 1, 2^22, 2^22 − 1
_EXTREME64 = np.array([[0, 0], [0xFFFFFFFF, 0xFFFFFFFF], [0x80000000, 0], [0x7FFFFFFF, 0xFFFFFFFF]], np.uint32)


def _check_extremes(z, t):
    """Words giving v = ∓(1 − 2^{1−t}) and v = ±2^{1−t}: finite, exact negatives, Φ⁻¹(2^{-t}) at the ends."""
    assert np.all(np.isfinite(z))
    assert z[0] == -z[1] and z[2] == -z[3]
    assert z[0] < 0 < z[2] < 1e-6
    np.testing.assert_allclose(z[0], special.ndtri(2.0**-t), rtol=1e-5)


def test_float32_words_to_normal_is_the_quantile_map_and_antisymmetric():
    """√2·erfinv(v) = Φ⁻¹((v + 1)/2), v = (2b + 1)·2^{-23} − 1 with b the top 23 bits of the word.

    Checked on every 29th b and the 2^16 values at each end; b and 2^23 − 1 − b give exact negatives.
    """
    half = np.unique(np.concatenate([np.arange(0, 2**22, 29), np.arange(2**16)]))
    b = np.concatenate([half, 2**23 - 1 - half[::-1]]).astype(np.uint32)  # mirror-symmetric
    low = np.random.default_rng(2).integers(0, 2**9, b.size).astype(np.uint32)  # unused low bits
    z = np.asarray(jax.jit(rng.words_to_normal, static_argnums=1)(jnp.asarray((b << 9) | low), "float32"))
    assert z.dtype == np.float32 and np.all(np.isfinite(z))
    want = special.ndtri((2 * b.astype(np.float64) + 1) * 2.0**-24)
    np.testing.assert_allclose(z, want, rtol=1e-5, atol=0)
    np.testing.assert_array_equal(z[::-1], -z)
    assert np.all(np.diff(z) > 0)  # strictly increasing in b
    _check_extremes(np.asarray(jax.jit(rng.words_to_normal, static_argnums=1)(_EXTREME32, "float32")), 24)
    # eagerly too, inside a [prompts, words] block of the shape prompt_normals uses above
    block = np.zeros((_COUNT, 2 * _HALF_W), np.uint32)
    block[0, :4] = _EXTREME32
    _check_extremes(np.asarray(rng.words_to_normal(jnp.asarray(block), "float32"))[0, :4], 24)


def test_float64_words_to_normal_is_the_quantile_map():
    """v = (2b + 1)·2^{-52} − 1, b = (top 26 bits of word 0)·2^26 + (top 26 bits of word 1)."""
    rs = np.random.default_rng(1)
    words = np.concatenate([_EXTREME64, rs.integers(0, U32, (20000, 2), dtype=np.uint64).astype(np.uint32)])
    b = (words[:, 0].astype(np.int64) >> 6) * 2**26 + (words[:, 1].astype(np.int64) >> 6)  # < 2^52, exact
    want = special.ndtri((2 * b + 1).astype(np.float64) * 2.0**-53)
    with jax.enable_x64(True):
        fn = jax.jit(rng.words_to_normal, static_argnums=1)
        z = np.asarray(fn(jnp.asarray(words), "float64"))
        z_low = np.asarray(fn(jnp.asarray(words ^ np.uint32(0x3F)), "float64"))  # flip the unused low bits
        z_swap = np.asarray(fn(jnp.asarray(words[:, ::-1].copy()), "float64"))
    assert z.shape == (words.shape[0], 1) and z.dtype == np.float64
    np.testing.assert_allclose(z[:, 0], want, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(z_low, z)
    assert np.mean(z_swap == z) < 0.01  # word order matters: the first word holds the high bits
    _check_extremes(z[:4, 0], 53)


# ----------------------------------------------------------------------------- sizes and validation
def test_words_per_prompt():
    for width in list(range(1, 12)) + [1000, 1001]:
        w = rng.words_per_prompt(width, jnp.float32)
        assert w % 2 == 0 and width <= w <= width + 1
        assert rng.words_per_prompt(width, jnp.float64) == 2 * width
        assert rng.words_per_prompt(width, "float64") == 2 * width


@pytest.mark.parametrize("bad", [jnp.float16, jnp.bfloat16, jnp.int32, jnp.uint32, jnp.complex64, "int8"])
def test_bad_dtype_raises_type_error(bad):
    with pytest.raises(TypeError, match="dtype"):
        rng.prompt_normals(KEY, 0, 2, 3, bad)


# ----------------------------------------------------------------------------- the sweep's use of it
_D, _M, _P = 4, 5, 8  # every prompts_for / prompt_stats call below has this shape: one compile each
assert _D * _M != 2 * _HALF_W - 1
_COV = spectra.power_law(_D, 1.3)


def test_prompts_for_non_contiguous_indices_match_contiguous_ranges():
    idx = np.array([9, 2, 5, 2, 8, 4, 3, 9])  # unordered, repeated; spans 2..9 (8 prompts, like the ranges)
    got = prompts_at(KEY, idx, _COV, _M, noise=1.0)
    low = prompts_at(KEY, np.arange(0, _P), _COV, _M, noise=1.0)  # prompts 0..7
    high = prompts_at(KEY, np.arange(5, 5 + _P), _COV, _M, noise=1.0)  # prompts 5..12
    for field in ("X", "y", "w"):
        g, lo, hi = (np.asarray(getattr(p, field)) for p in (got, low, high))
        assert g.shape[0] == idx.size
        for j, p in enumerate(idx):
            np.testing.assert_array_equal(g[j], lo[p] if p < _P else hi[p - 5])
        np.testing.assert_array_equal(lo[5:], hi[:3])
    assert not np.array_equal(np.asarray(got.w)[0], np.asarray(got.w)[1])


@jax.jit
def _stats_all(key, start):
    noisy = sample_statistics(key, _COV, _M, _P, 1.0, start, method="prompts")  # the very prompts, summarised
    quiet = sample_statistics(key, _COV, _M, _P, 0.0, start, method="prompts")
    infinite = sample_statistics(key, _COV, math.inf, _P, 1.0, start)
    eps = rng.prompt_normals(key, start, _P, _M, jnp.float32, 1)
    return noisy, quiet, infinite, eps


@pytest.mark.parametrize("start", [0, 6, U32 - _P])
def test_statistics_match_the_prompts_they_summarise(start):
    lam = np.asarray(_COV.eigenvalues, np.float64)
    pr = prompts_at(KEY, np.arange(start, start + _P), _COV, _M, noise=1.0)
    X, y, w = (np.asarray(a, np.float64) for a in (pr.X, pr.y, pr.w))
    assert X.shape == (_P, _D, _M) and w.shape == (_P, _D)
    Z = X / np.sqrt(lam)[:, None]  # X = sqrt(λ)[:, None] · Z for the diagonal covariance

    noisy, quiet, infinite, eps = _stats_all(KEY, np.uint32(start))
    S_Z, g, ee, w_s = (np.asarray(a) for a in (noisy.S_Z, noisy.g, noisy.ee, noisy.w))
    eps = np.asarray(eps, np.float64)
    np.testing.assert_allclose(y - np.einsum("bdm,bd->bm", X, w), eps, rtol=0, atol=2e-5)  # noise = 1
    assert S_Z.dtype == np.float32 and S_Z.shape == (_P, _D, _D) and g.shape == (_P, _D) and ee.shape == (_P,)
    np.testing.assert_array_equal(w_s, np.asarray(pr.w))
    np.testing.assert_allclose(S_Z, np.einsum("bim,bjm->bij", Z, Z) / _M, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g, np.einsum("bim,bm->bi", Z, eps) / _M, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ee, np.sum(eps**2, axis=-1) / _M, rtol=1e-5, atol=1e-6)
    # the statistics in prompt space are the prompts' own: S = XXᵀ/m, b = Xy/m, yᵀy/m
    np.testing.assert_allclose(noisy.S(), np.einsum("bim,bjm->bij", X, X) / _M, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(noisy.b(), np.einsum("bim,bm->bi", X, y) / _M, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(noisy.yy(), np.sum(y * y, -1) / _M, rtol=1e-5, atol=1e-5)
    raw = statistics_of(pr)
    for f in ("S", "b", "yy"):
        np.testing.assert_allclose(getattr(raw, f)(), getattr(noisy, f)(), rtol=1e-5, atol=1e-5)
    # noise = 0 draws the same Z and w (only ε is skipped); m = inf draws the same w
    np.testing.assert_allclose(quiet.S_Z, S_Z, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(quiet.w, w_s)
    assert quiet.g is None and quiet.ee is None
    assert infinite.S_Z is None and infinite.g is None
    np.testing.assert_array_equal(infinite.w, w_s)
    np.testing.assert_allclose(infinite.S()[0], np.diag(lam), rtol=1e-6)  # S = Σ exactly at m = ∞
