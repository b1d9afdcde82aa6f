"""GD vs pseudo-Newton at m → ∞ (ttscale.gd_theory): best step, steps to a target, the gd sweep vs its closed forms."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttscale import finite_m, gd_theory, spectra, theory


def test_optimal_eta_closed_forms():
    with jax.enable_x64(True):
        s = jnp.array([0.5, 2.0])
        cov = spectra.from_eigenvalues(s)
        for k in (1, 2, 5, 50):
            c = (0.5 / 2.0) ** (1 / (2 * k - 1))  # two eigenvalues a < b: a u_a^{2k−1} = −b u_b^{2k−1}
            assert float(gd_theory.optimal_eta(cov, k)) == pytest.approx((1 + c) / (2.0 + 0.5 * c), rel=1e-12)
        s3 = jnp.array([0.2, 1.0, 3.0])
        assert float(gd_theory.optimal_eta(spectra.from_eigenvalues(s3), 1)) == pytest.approx(4.2 / 10.04, rel=1e-12)
        assert float(gd_theory.minimax_eta(spectra.from_eigenvalues(s3))) == pytest.approx(2 / 3.2)


def test_steps_to_target_by_hand():
    with jax.enable_x64(True):
        one = jnp.array([[1.0]])
        assert float(gd_theory.steps_to_target(jnp.array([[0.5]]), one, 0.01, 20)) == 4  # 0.25^3 > 0.01 >= 0.25^4
        assert float(gd_theory.steps_to_target(jnp.array([[0.5]]), one, 0.01, 3)) == math.inf  # beyond the horizon
        assert float(gd_theory.steps_to_target(jnp.array([[2.5]]), one, 0.01, 50)) == math.inf  # |1 − 2.5| > 1
        assert float(gd_theory.steps_to_target(jnp.array([[0.5]]), one, 2.0, 5)) == 0  # err(0) = d = 1 <= 2
        # GD with the best step on Σ = I reaches 0 in one step (η = 1)
        assert float(gd_theory.gd_steps_to_target(spectra.identity(4, jnp.float64), 1e-9, 5)) == 1


def test_gd_best_error_is_the_limit_error_at_the_best_step():
    with jax.enable_x64(True):
        cov = spectra.power_law(5, 1.0, dtype=jnp.float64)
        etas, err = gd_theory.gd_best_error(cov, 4)
        lim = [np.asarray(theory.limit_error(float(etas[k - 1]) * jnp.eye(5), cov, 4))[k] for k in range(1, 5)]
        np.testing.assert_allclose(np.asarray(err), lim, rtol=1e-10)
        s = np.asarray(cov.eigenvalues)
        for k in range(1, 5):  # a minimum: a grid of other steps does no better
            grid = np.linspace(0.5, 1.5, 201) * float(etas[k - 1])
            assert lim[k - 1] <= np.min(np.sum((1 - grid[:, None] * s) ** (2 * k), axis=1)) * (1 + 1e-12)


def test_pseudo_newton_beats_gd_as_hardness_grows():
    with jax.enable_x64(True):
        rows = [gd_theory.compare_steps(spectra.power_law(10, a, dtype=jnp.float64), 20, 1e-3, 300)
                for a in (1.0, 2.0)]
    assert rows[0].hardness < rows[1].hardness
    assert rows[0].pseudo_newton < rows[0].gd_optimal <= rows[0].gd_minimax
    assert rows[1].gd_optimal / rows[1].pseudo_newton > rows[0].gd_optimal / rows[0].pseudo_newton


def test_gd_sweep_matches_closed_forms():
    import ttscale as tts

    eta = 0.3
    ds = tts.run_sweep(tts.SweepSpec(d=10, alphas=(0.0, 1.0), ns=(20.0,), ms=(math.inf, 1000.0), k_max=6,
                                     model=f"gd:eta={eta}", prompts=2048), progress=False)
    mean, se = ds["mean"].values, ds["stderr"].values  # [spectrum, n, m, k]
    for s, alpha in enumerate((0.0, 1.0)):
        with jax.enable_x64(True):
            lim = np.asarray(theory.limit_error(eta * jnp.eye(10), spectra.power_law(10, alpha, dtype=jnp.float64), 6))
        np.testing.assert_array_less(np.abs(mean[s, 0, 0, 1:] - lim[1:]), 4 * se[s, 0, 0, 1:] + 1e-6)
    exact = finite_m.exact_error(10, 1000, 6, eta)  # Σ = I at finite m: the exact Wishart value
    np.testing.assert_array_less(np.abs(mean[0, 0, 1, 1:] - exact[1:]), 4 * se[0, 0, 1, 1:])


def test_validation_names_the_argument():
    with pytest.raises(ValueError, match="target"):
        gd_theory.steps_to_target(jnp.eye(2), jnp.eye(2), -1.0, 5)
    with pytest.raises(ValueError, match="eta"):
        gd_theory.gd_steps_to_target(spectra.identity(2), 0.1, 5, eta="best")
    with pytest.raises(ValueError, match="k"):
        gd_theory.optimal_eta(spectra.identity(2), 0)
