import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttscale as tts


def test_shapes_and_noiseless_labels(dtype):
    cov = tts.power_law(4, 1.0, dtype=dtype)
    p = tts.sample_prompts(jax.random.key(0), cov, length=7, batch=5)
    assert p.X.shape == (5, 4, 7) and p.y.shape == (5, 7) and p.w.shape == (5, 4)
    assert p.X.dtype == dtype
    np.testing.assert_allclose(p.y, jnp.einsum("bdn,bd->bn", p.X, p.w), rtol=1e-5, atol=1e-5)


def test_feature_covariance_matches_within_monte_carlo_error():
    cov = tts.rotated(jax.random.key(3), tts.power_law(3, 1.0))
    p = tts.sample_prompts(jax.random.key(1), cov, length=50, batch=2000)
    x = np.asarray(p.X).transpose(0, 2, 1).reshape(-1, 3)
    outer = x[:, :, None] * x[:, None, :]
    mean = outer.mean(0)
    se = outer.std(0) / np.sqrt(len(x))
    assert np.all(np.abs(mean - np.asarray(cov.matrix())) < 4 * se + 1e-6)
    w = np.asarray(p.w)
    assert abs(w.mean()) < 4 * w.std() / np.sqrt(w.size)
    assert w.var() == pytest.approx(1.0, abs=4 * np.sqrt(2 / w.size))


def test_noise_is_independent_stream_and_has_right_variance():
    cov = tts.identity(5)
    key = jax.random.key(7)
    clean = tts.sample_prompts(key, cov, 64, 256)
    noisy = tts.sample_prompts(key, cov, 64, 256, noise=0.5)
    np.testing.assert_array_equal(clean.X, noisy.X)
    np.testing.assert_array_equal(clean.w, noisy.w)
    resid = np.asarray(noisy.y - clean.y).ravel()
    assert resid.var() == pytest.approx(0.25, abs=4 * 0.25 * np.sqrt(2 / resid.size))


def test_common_random_numbers_reuse_normals():
    normals = tts.sample_normals(jax.random.key(0), 3, 10, 4)
    a = tts.prompts_from_normals(normals, tts.identity(3))
    b = tts.prompts_from_normals(normals, tts.from_eigenvalues([4.0, 1.0, 1.0]))
    np.testing.assert_allclose(b.X[:, 0], 2 * a.X[:, 0], rtol=1e-6)
    np.testing.assert_array_equal(a.w, b.w)


def test_bad_input():
    cov = tts.identity(3)
    with pytest.raises(TypeError, match="key"):
        tts.sample_prompts(0, cov, 5, 2)
    with pytest.raises(ValueError, match="batch"):
        tts.sample_prompts(jax.random.key(0), cov, 5, 0)
    with pytest.raises(ValueError, match="length"):
        tts.sample_prompts(jax.random.key(0), cov, 0, 2)
    with pytest.raises(ValueError, match="noise"):
        tts.sample_prompts(jax.random.key(0), cov, 5, 2, noise=-1.0)
    with pytest.raises(TypeError, match="cov"):
        tts.sample_prompts(jax.random.key(0), np.eye(3), 5, 2)


def test_impossible_sizes_are_refused_before_xla_sees_them():
    """sample_prompts(key, identity(3), 2**40, 2**20) used to abort the process ("overflow in static extent product")."""
    with pytest.raises(ValueError, match=r"batch: 1048576 prompts of d = 3, length = 1099511627776 needs .* GiB"):
        tts.sample_prompts(jax.random.key(0), tts.identity(3), 2**40, 2**20)
    with pytest.raises(ValueError, match=r"2\^32"):
        tts.sample_statistics(jax.random.key(0), tts.identity(3), 10, 2**32 + 1)
    with pytest.raises(ValueError, match="GiB"):
        tts.sample_normals(jax.random.key(0), 1000, 10**6, 10**4)


def test_sample_statistics_draws_statistics_directly_when_m_is_at_least_d():
    """Default method: S_Z is not the drawn prompts' Z Zᵀ/m (another draw of the same law), w is the same;
    the cost does not grow with m, so m = 10⁹ is as cheap as m = 10 (S_Z = I to ~ 1/√m)."""
    key, cov = jax.random.key(4), tts.identity(3)
    direct = tts.sample_statistics(key, cov, 10, 4)
    drawn = tts.sample_statistics(key, cov, 10, 4, method="prompts")
    Z = np.asarray(tts.sample_normals(key, 3, 10, 4).Z, np.float64)
    np.testing.assert_allclose(drawn.S_Z, np.einsum("bim,bjm->bij", Z, Z) / 10, rtol=1e-5, atol=1e-6)
    assert not np.allclose(direct.S_Z, drawn.S_Z)
    np.testing.assert_array_equal(direct.w, drawn.w)
    huge = tts.sample_statistics(key, cov, 10**9, 4, noise=1.0)
    assert huge.m == 1e9
    np.testing.assert_allclose(huge.S_Z, np.broadcast_to(np.eye(3), (4, 3, 3)), atol=3e-4)
    np.testing.assert_allclose(huge.ee, 1.0, atol=3e-4)


def _lowered_programs(fn):
    """Names of the programs JAX lowers while ``fn()`` runs (one per compiled program, eager operations included)."""
    names = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            names.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        jax.block_until_ready(fn())
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return names


def test_the_samplers_compile_one_program_per_shape_outside_jit():
    """Called outside ``jit`` (a notebook), each sampler is one program, not one compile per JAX operation
    (that cost ~2.5 s on the first call of sample_prompts); a second call of the same shapes compiles nothing."""
    cov = tts.Covariance(jnp.asarray([1.0, 0.5, 0.25]), jnp.eye(3))  # a shape no other test of this file uses
    key = jax.random.key(5)
    calls = {  # the compiled program's name: each sampler's own kernel
        "sample_prompts": lambda: tts.sample_prompts(key, cov, 7, 5, noise=0.1, start=3),
        "sample_statistics": lambda: tts.sample_statistics(key, cov, 7, 5, noise=0.1, start=3),
        "draw_normals": lambda: tts.sample_normals(key, 3, 7, 5, start=3),
    }
    for name, call in calls.items():
        first = _lowered_programs(call)
        assert len(first) == 1 and name in first[0], (name, first)
        assert _lowered_programs(call) == [], name
    # still the same draws as the op-by-op definition: prompt p depends only on (key, p)
    a = tts.sample_prompts(key, cov, 7, 5, noise=0.1, start=3)
    b = jax.jit(lambda k: tts.sample_prompts(k, cov, 7, 9, noise=0.1, start=0))(key)
    np.testing.assert_array_equal(np.asarray(a.X), np.asarray(b.X)[3:8])
