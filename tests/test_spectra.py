import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttscale as tts
from tests.conftest import rtol_for


def test_power_law_normalisation_and_hardness(dtype):
    cov = tts.power_law(10, 1.0, dtype=dtype)
    lam = np.asarray(cov.eigenvalues)
    i = np.arange(1, 11)
    expected = 10 * i**-1.0 / np.sum(i**-1.0)
    np.testing.assert_allclose(lam, expected, rtol=rtol_for(dtype))
    assert float(cov.trace()) == pytest.approx(10.0, rel=rtol_for(dtype))
    assert float(tts.hardness(cov)) == pytest.approx(10.0 / expected[-1], rel=rtol_for(dtype))
    assert float(tts.hardness(tts.identity(7, dtype))) == pytest.approx(7.0)
    assert float(tts.power_law(5, 0.0, trace=3.0).trace()) == pytest.approx(3.0)


def test_power_law_vmaps_over_alpha_without_python_loop():
    alphas = jnp.linspace(0.0, 2.0, 8)
    batched = tts.power_law(6, alphas)
    via_vmap = jax.vmap(lambda a: tts.power_law(6, a).eigenvalues)(alphas)
    single = jnp.stack([tts.power_law(6, float(a)).eigenvalues for a in alphas])
    np.testing.assert_allclose(batched.eigenvalues, single, rtol=1e-6)
    np.testing.assert_allclose(via_vmap, single, rtol=1e-6)
    np.testing.assert_allclose(tts.hardness(batched), [float(tts.hardness(tts.power_law(6, float(a)))) for a in alphas], rtol=1e-5)


def test_rotated_and_from_matrix_round_trip(dtype):
    key = jax.random.key(1)
    cov = tts.rotated(key, tts.power_law(5, 0.7, dtype=dtype))
    M = cov.matrix()
    np.testing.assert_allclose(M, M.T, atol=10 * rtol_for(dtype))
    back = tts.from_matrix(M)
    np.testing.assert_allclose(back.matrix(), M, atol=10 * rtol_for(dtype))
    np.testing.assert_allclose(np.sort(back.eigenvalues), np.sort(cov.eigenvalues), rtol=10 * rtol_for(dtype))
    R = cov.sqrt_matrix()
    np.testing.assert_allclose(R @ R, M, atol=10 * rtol_for(dtype))
    A = cov.apply_sqrt(jnp.eye(5, dtype=dtype))  # the linear map Z -> X
    np.testing.assert_allclose(A @ A.T, M, atol=10 * rtol_for(dtype))


def test_diagonal_matrix_keeps_cheap_path():
    cov = tts.from_matrix(jnp.diag(jnp.array([3.0, 1.0, 2.0])))
    assert cov.is_diagonal
    np.testing.assert_allclose(cov.eigenvalues, [3.0, 1.0, 2.0])


def test_covariance_is_a_pytree_stack_and_unstack():
    covs = [tts.power_law(4, a) for a in (0.0, 1.0)] + [tts.rotated(jax.random.key(0), tts.identity(4))]
    stacked = tts.stack(covs)
    assert stacked.eigenvalues.shape == (3, 4) and stacked.basis.shape == (3, 4, 4)
    mats = jax.vmap(lambda c: c.matrix())(stacked)
    for mat, cov in zip(mats, covs):
        np.testing.assert_allclose(mat, cov.matrix(), atol=1e-6)
    assert len(tts.unstack(stacked)) == 3


@pytest.mark.parametrize(
    "matrix, err, word",
    [
        ([[1.0, 0.5], [0.0, 1.0]], ValueError, "symmetric"),
        ([[1.0, 2.0], [2.0, 1.0]], ValueError, "positive semi-definite"),
        ([[1.0, np.nan], [np.nan, 1.0]], ValueError, "non-finite"),
        ([[1.0, 0.0, 0.0]], ValueError, "square"),
        ("not a matrix", TypeError, "matrix"),
        (np.eye(2, dtype=complex), TypeError, "matrix"),
    ],
)
def test_from_matrix_rejects_bad_input(matrix, err, word):
    with pytest.raises(err, match=word):
        tts.from_matrix(matrix)


def test_constructors_reject_bad_input():
    with pytest.raises(ValueError, match="eigenvalues"):
        tts.from_eigenvalues([1.0, -1.0])
    with pytest.raises(ValueError, match="eigenvalues"):
        tts.from_eigenvalues([1.0, np.inf])
    with pytest.raises(ValueError, match="basis"):
        tts.from_eigenvalues([1.0, 2.0], basis=[[1.0, 1.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="basis"):
        tts.from_eigenvalues([1.0, 2.0], basis=np.eye(3))
    with pytest.raises(ValueError, match="d must be >= 1"):
        tts.identity(0)
    with pytest.raises(TypeError, match="d must be an int"):
        tts.power_law(2.5, 1.0)
    with pytest.raises(ValueError, match="trace"):
        tts.power_law(3, 1.0, trace=-1.0)
    with pytest.raises(TypeError, match="key"):
        tts.rotated(0, tts.identity(3))
    with pytest.raises(TypeError, match="cov must be a Covariance"):
        tts.rotated(jax.random.key(0), np.eye(3))
    with pytest.raises(ValueError, match="share one dimension"):
        tts.stack([tts.identity(2), tts.identity(3)])
    with pytest.raises(ValueError, match="expected d=3"):
        tts.as_covariance("Sigma", tts.identity(2), d=3)


def test_check_covariance_validates_directly_built_instances():
    good = tts.rotated(jax.random.key(0), tts.power_law(3, 1.0))
    assert tts.spectra.check_covariance("cov", good).d == 3
    stacked = tts.stack([good, tts.identity(3)])
    assert tts.spectra.check_covariance("covs", stacked).eigenvalues.shape == (2, 3)
    ints = tts.spectra.check_covariance("cov", tts.Covariance(jnp.array([1, 2])))
    assert jnp.issubdtype(ints.dtype, jnp.floating)
    cases = [
        (tts.Covariance(jnp.array([1.0, -0.5])), ValueError, r"cov\.eigenvalues must be non-negative"),
        (tts.Covariance(jnp.array([1.0, jnp.inf])), ValueError, r"cov\.eigenvalues has non-finite"),
        (tts.Covariance(jnp.array([1.0, 2.0], jnp.complex64)), TypeError, r"cov\.eigenvalues must be a real"),
        (tts.Covariance(jnp.array([1.0, 2.0]), jnp.array([[1.0, 1.0], [0.0, 1.0]])), ValueError, r"cov\.basis must be orthonormal"),
        (tts.Covariance(jnp.array([1.0, 2.0]), jnp.eye(3)), ValueError, r"cov\.basis must have shape"),
        (tts.Covariance(jnp.array([1.0, 2.0]), jnp.array([[1.0, jnp.nan], [0.0, 1.0]])), ValueError, r"cov\.basis has non-finite"),
        (tts.Covariance(jnp.array([1.0, 2.0]), jnp.eye(2, dtype=jnp.complex64)), TypeError, r"cov\.basis must be a real"),
        (tts.Covariance(jnp.zeros((0,))), ValueError, r"cov\.eigenvalues must have shape"),
        (np.eye(2), TypeError, "cov must be a Covariance"),
    ]
    for cov, err, pattern in cases:
        with pytest.raises(err, match=pattern):
            tts.spectra.check_covariance("cov", cov)
    # under a trace only the static checks run
    out = jax.jit(lambda e: tts.spectra.check_covariance("cov", tts.Covariance(e)).eigenvalues)(jnp.array([-1.0, 1.0]))
    np.testing.assert_array_equal(out, [-1.0, 1.0])


def test_hardness_of_singular_covariance_is_inf():
    assert float(tts.hardness(tts.from_eigenvalues([2.0, 0.0]))) == np.inf
    assert float(tts.hardness(tts.from_eigenvalues([0.0, 0.0]))) == np.inf
    np.testing.assert_array_equal(tts.hardness(tts.from_eigenvalues([[1.0, 1.0], [1.0, 0.0]])), [2.0, np.inf])
    # the diagonal dense form selects instead of multiplying by I: no 0 · inf = nan
    np.testing.assert_array_equal(tts.from_eigenvalues([1.0, 0.0]).inverse_matrix(), [[1.0, 0.0], [0.0, np.inf]])


def test_rotated_takes_the_key_first_and_the_old_order_warns():
    key = jax.random.key(5)
    cov = tts.power_law(4, 1.0)
    new = tts.rotated(key, cov)
    with pytest.warns(DeprecationWarning, match="key comes first"):
        old = tts.rotated(cov, key)
    np.testing.assert_array_equal(new.basis, old.basis)
    Q = np.asarray(new.basis, np.float64)
    np.testing.assert_allclose(Q.T @ Q, np.eye(4), atol=1e-5)  # orthonormal, same spectrum
    np.testing.assert_array_equal(new.eigenvalues, cov.eigenvalues)


def test_power_law_eigenvalues_is_float64_numpy_and_matches_the_formula():
    i = np.arange(1, 8, dtype=np.float64)
    for alpha, trace in ((0.0, None), (1.3, None), (0.7, 2.5)):
        lam = tts.spectra.power_law_eigenvalues(7, alpha, trace)
        ref = (7.0 if trace is None else trace) * i**-alpha / np.sum(i**-alpha)
        assert isinstance(lam, np.ndarray) and lam.dtype == np.float64
        np.testing.assert_allclose(lam, ref, rtol=1e-15)
    np.testing.assert_allclose(tts.spectra.power_law_eigenvalues(7, [0.0, 1.0]),
                               np.stack([np.ones(7), 7 * i**-1 / np.sum(i**-1)]), rtol=1e-15)
    with pytest.raises(ValueError, match="trace"):
        tts.spectra.power_law_eigenvalues(3, 1.0, trace=0.0)


def test_one_covariance_keeps_float64():
    """A dense matrix is eigendecomposed in float64 (it used to go through float32)."""
    M = np.array([[2.0, 1e-9], [1e-9, 1.0 + 1e-12]])
    cov = tts.spectra.one_covariance("c", M)
    assert cov.eigenvalues.dtype == np.float64
    back = np.asarray(cov.basis) @ np.diag(cov.eigenvalues) @ np.asarray(cov.basis).T
    np.testing.assert_allclose(back, M, rtol=0, atol=1e-15)


def test_stack_of_concrete_covariances_equals_the_traced_stack():
    """``stack`` stacks concrete covariances on the host: the same values and dtypes as inside ``jit``."""
    covs = [tts.power_law(4, a) for a in (0.0, 1.5)] + [tts.rotated(jax.random.key(1), tts.power_law(4, 0.5))]
    for dtype in (None, jnp.float32, jnp.bfloat16):
        host = tts.stack(covs, dtype)
        traced = jax.jit(lambda *cs: tts.stack(list(cs), dtype))(*covs)
        for a, b in ((host.eigenvalues, traced.eigenvalues), (host.basis, traced.basis)):
            assert isinstance(a, jax.Array) and a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))
    np.testing.assert_array_equal(host.basis[0], np.eye(4))  # the diagonal ones get an explicit identity basis
