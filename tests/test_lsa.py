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
    cov = tts.rotated(tts.power_law(5, 1.0, dtype=dtype), jax.random.key(4))
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
