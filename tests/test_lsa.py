import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttscale as tts
from ttscale import lsa
from tests.conftest import rtol_for


def test_embedding_layout(dtype):
    X = jnp.arange(6, dtype=dtype).reshape(2, 3)
    y = jnp.array([1.0, 2.0, 3.0], dtype)
    w_hat = jnp.array([7.0, 8.0], dtype)
    E = lsa.embed(X, y, w_hat)
    assert E.shape == (2 * 2 + 2, 3 + 1)
    np.testing.assert_array_equal(E[:2, :3], X)
    np.testing.assert_array_equal(E[2, :3], y)
    np.testing.assert_array_equal(E[3:, :3], 0.0)
    np.testing.assert_array_equal(E[:, 3], [0.0, 0.0, 0.0, 7.0, 8.0, 1.0])


def test_paper_init_scores_are_regression_residuals(dtype):
    key = jax.random.key(0)
    d, n, c = 3, 5, 0.7
    X = jax.random.normal(key, (d, n), dtype)
    y = jax.random.normal(jax.random.key(1), (n,), dtype)
    w_hat = jax.random.normal(jax.random.key(2), (d,), dtype)
    E = lsa.embed(X, y, w_hat)
    W = tts.paper_init(d, c, dtype).W
    scores = E.T @ W @ E[:, -1]
    np.testing.assert_allclose(scores[:n], c * (X.T @ w_hat - y), rtol=10 * rtol_for(dtype), atol=10 * rtol_for(dtype))
    assert float(scores[-1]) == 0.0


def test_last_column_forward_equals_full_forward(dtype):
    key = jax.random.key(3)
    d, n = 4, 9
    D = 2 * d + 2
    kW, kV, kE = jax.random.split(key, 3)
    params = tts.LSAParams(jax.random.normal(kW, (D, D), dtype), jax.random.normal(kV, (D, D), dtype))
    E = jax.random.normal(kE, (2, D, n + 1), dtype)
    full = tts.forward(params, E, rho=n)
    last = tts.forward_last_column(params, E, rho=n)
    np.testing.assert_allclose(last, full[..., -1], rtol=50 * rtol_for(dtype), atol=50 * rtol_for(dtype) * float(jnp.max(jnp.abs(full))))


def test_optimal_params_one_pass_is_preconditioned_step(dtype):
    cov = tts.rotated(jax.random.key(4), tts.power_law(5, 1.0, dtype=dtype))
    Gamma = tts.gamma(cov, 20)
    c = 1.3
    params = tts.optimal_params(Gamma, c)
    b = lsa.blocks(5)
    np.testing.assert_allclose(params.V[b["w"], b["x"]], -jnp.linalg.inv(Gamma) / c, rtol=10 * rtol_for(dtype), atol=10 * rtol_for(dtype))
    mask = jnp.ones_like(params.V).at[b["w"], b["x"]].set(0.0)
    assert float(jnp.max(jnp.abs(params.V * mask))) == 0.0
    np.testing.assert_allclose(tts.preconditioner_from_V(params.V, c), jnp.linalg.inv(Gamma), rtol=10 * rtol_for(dtype), atol=10 * rtol_for(dtype))
    p = tts.sample_prompts(jax.random.key(5), cov, 30, 1)
    X, y = p.X[0], p.y[0]
    w1 = tts.predict(params, X, y)
    expected = jnp.linalg.inv(Gamma) @ (X @ y) / 30
    np.testing.assert_allclose(w1, expected, rtol=50 * rtol_for(dtype), atol=50 * rtol_for(dtype))


def test_embed_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="y has length"):
        lsa.embed(jnp.zeros((2, 3)), jnp.zeros((4,)))
    with pytest.raises(ValueError, match="Gamma"):
        tts.optimal_params(jnp.ones((2, 3)))


def test_lsa_functions_name_bad_arguments():
    d, n = 3, 5
    X, y = jnp.ones((d, n)), jnp.ones((n,))
    params = tts.paper_init(d)
    wrong = tts.paper_init(4)                                   # D = 10, but X has d = 3 (D = 8)
    with pytest.raises(ValueError, match=r"params are \[10, 10\] \(d = 4\) but X has d = 3"):
        tts.predict(wrong, X, y)
    with pytest.raises(ValueError, match="E must have shape"):
        tts.forward(wrong, lsa.embed(X, y), rho=n)
    with pytest.raises(ValueError, match="E must have shape"):
        tts.forward_last_column(wrong, lsa.embed(X, y), rho=n)
    with pytest.raises(ValueError, match="params.W must be a"):
        tts.forward(tts.LSAParams(jnp.ones((7, 7)), jnp.ones((7, 7))), jnp.ones((7, 2)), rho=1.0)
    with pytest.raises(ValueError, match="params.V has shape"):
        tts.forward(tts.LSAParams(jnp.ones((8, 8)), jnp.ones((8, 6))), jnp.ones((8, 2)), rho=1.0)
    with pytest.raises(TypeError, match="params must be LSAParams"):
        tts.predict((jnp.ones((8, 8)), jnp.ones((8, 8))), X, y)
    with pytest.raises(ValueError, match="gram must have shape"):
        lsa.last_column_from_gram(params, jnp.ones((6, 6)), jnp.ones(8), 1.0)
    for rho in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rho must"):
            tts.predict(params, X, y, rho=rho)
        with pytest.raises(ValueError, match="rho must"):
            tts.forward(params, lsa.embed(X, y), rho)
    with pytest.raises(ValueError, match="rho must be > 0"):
        tts.predict(params, jnp.ones((d, 0)), jnp.ones((0,)))      # n = 0 prompts: ρ = n = 0
    for c in (0.0, float("nan"), float("inf")):
        for make in (lambda c: tts.paper_init(d, c), lambda c: tts.params_from_preconditioner(jnp.eye(d), c),
                     lambda c: tts.optimal_params(jnp.eye(d), c)):
            with pytest.raises(ValueError, match="c must"):
                make(c)
    with pytest.raises(ValueError, match="Gamma is singular"):
        tts.optimal_params(jnp.zeros((d, d)))
    with pytest.raises(ValueError, match="y has batch shape"):
        lsa.embed(jnp.ones((2, d, n)), jnp.ones((3, n)))
    with pytest.raises(ValueError, match="w_hat must have shape"):
        lsa.embed(X, y, jnp.ones(d + 1))
    with pytest.raises(ValueError, match="X must have shape"):
        lsa.embed(jnp.ones(n), y)
    with pytest.raises(TypeError, match="X must be a real"):
        lsa.embed(jnp.ones((d, n), jnp.complex64), y)
    # traced arguments skip the value checks, and valid calls still jit
    f = jax.jit(lambda c, rho: tts.predict(tts.paper_init(d, c), X, y, rho=rho))
    np.testing.assert_array_equal(f(1.0, 5.0), jnp.zeros(d))
