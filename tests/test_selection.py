"""Tests of ttscale.selection: simplex QPs against SciPy, KKT, vmap, exact-criterion gradients, bad input."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from ttscale import selection as sel
from ttscale import theory
from ttscale.spectra import Covariance, from_eigenvalues, identity, power_law, random_orthogonal

from .conftest import x64_context


def _random_pool(seed: int, d: int = 4, L: int = 3, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    covs = []
    for _ in range(L):
        eig = rng.uniform(0.2, 2.0, d)
        Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        covs.append(from_eigenvalues(jnp.asarray(eig, dtype), jnp.asarray(Q, dtype)))
    ns = rng.integers(5, 50, L).astype(float)
    return sel.task_pool(covs, ns)


def _random_target(seed: int, d: int = 4, dtype=jnp.float64):
    rng = np.random.default_rng(seed + 1000)
    eig = rng.uniform(0.3, 1.5, d)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return from_eigenvalues(jnp.asarray(eig, dtype), jnp.asarray(Q, dtype))


def _scipy_simplex(fun, L):
    best = None
    for start in [np.full(L, 1.0 / L)] + [np.eye(L)[i] * 0.9 + 0.1 / L for i in range(L)]:
        res = minimize(fun, start, method="SLSQP", bounds=[(0, 1)] * L,
                       constraints=[{"type": "eq", "fun": lambda p: np.sum(p) - 1}],
                       options={"ftol": 1e-15, "maxiter": 1000})
        if best is None or res.fun < best.fun:
            best = res
    return best.x


def _qp_numpy(pool, Sigma, length_aware):
    S = np.asarray(Sigma.matrix())
    M = np.asarray(pool.gammas() if length_aware else pool.matrices())
    Sinv = np.linalg.inv(S)
    d = S.shape[0]
    return lambda p: float(np.sum((np.eye(d) - Sinv @ np.einsum("l,lij->ij", p, M)) ** 2))


@pytest.mark.parametrize("criterion", ["qp", "qp-length"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_qp_matches_scipy_and_kkt(criterion, seed):
    with x64_context(jnp.float64):
        pool, Sigma = _random_pool(seed), _random_target(seed)
        s = sel.select_mixture(pool, Sigma, criterion)
        p = np.asarray(s.probs)
        ref = _scipy_simplex(_qp_numpy(pool, Sigma, criterion == "qp-length"), pool.size)
        np.testing.assert_allclose(p, ref, atol=1e-4)
        # on the simplex
        assert np.all(p >= 0) and abs(p.sum() - 1) < 1e-12
        # objective agrees with the direct formula
        np.testing.assert_allclose(float(s.objective), _qp_numpy(pool, Sigma, criterion == "qp-length")(p), rtol=1e-10)
        # KKT: ∇f_ℓ = ν on the support, ≥ ν off it (explicit multiplier, independent of kkt_violation)
        qp = sel.qp_design(pool, Sigma, length_aware=criterion == "qp-length")
        g = 2 * (np.asarray(qp.H) @ p - np.asarray(qp.b))
        scale = np.max(np.abs(g)) + 1.0
        support = p > 1e-8
        nu = np.mean(g[support])
        assert np.max(np.abs(g[support] - nu)) < 1e-6 * scale
        assert np.all(g[~support] - nu > -1e-6 * scale)
        assert float(s.kkt) < 1e-8


def test_qp_two_tasks_closed_form(dtype):
    # L = 2: f(π, 1−π) is a 1-D quadratic; its clipped vertex is the optimum.
    pool = sel.task_pool([power_law(3, 0.2, dtype=dtype), power_law(3, 1.5, dtype=dtype)], [20, 100])
    Sigma = power_law(3, 0.8, dtype=dtype)
    qp = sel.qp_design(pool, Sigma)
    H, b = np.asarray(qp.H, np.float64), np.asarray(qp.b, np.float64)
    # f(t) = const − 2(b1 t + b2 (1−t)) + H11 t² + 2 H12 t(1−t) + H22 (1−t)²
    a = H[0, 0] - 2 * H[0, 1] + H[1, 1]
    lin = -2 * (b[0] - b[1]) + 2 * H[0, 1] - 2 * H[1, 1]
    t = np.clip(-lin / (2 * a), 0, 1)
    p = np.asarray(sel.select_mixture(pool, Sigma, "qp").probs)
    tol = 1e-4 if dtype == jnp.float32 else 1e-9
    np.testing.assert_allclose(p, [t, 1 - t], atol=tol)
    assert 0 < t < 1  # an interior optimum: the test exercises the equality part of KKT


def _paper(seed, dtype=jnp.float32, **kw):
    """Every test uses this one pool shape (d = 6, two tasks per type), so compilations are shared."""
    return sel.paper_pool(jax.random.key(seed), d=6, per_type=2, dtype=dtype, **kw)


def test_qp_design_identity(dtype):
    pool = _paper(3, dtype)
    Sigma = power_law(6, 0.7, dtype=dtype)
    probs = jnp.asarray(np.arange(1, 9) / 36.0, dtype)
    for la in (False, True):
        qp = sel.qp_design(pool, Sigma, la)
        via_design = qp.const - 2 * qp.b @ probs + probs @ qp.H @ probs
        direct = sel.qp_objective(pool, Sigma, probs, la)
        np.testing.assert_allclose(via_design, direct, rtol=1e-4 if dtype == jnp.float32 else 1e-10)


def _mixture_preconditioner_numpy(pool, probs):
    """``P(π) = Λ̄ Q⁻¹``, ``Q = Σ π_ℓ Γ(Λ_ℓ, n_ℓ) Λ_ℓ``, ``Γ = (1 + 1/n) Λ + (tr Λ / n) I``, written out in NumPy."""
    mats, ns, p = np.asarray(pool.matrices(), np.float64), np.asarray(pool.ns, np.float64), np.asarray(probs, np.float64)
    d = mats.shape[-1]
    gammas = [(1 + 1 / n) * L + (np.trace(L) / n) * np.eye(d) for L, n in zip(mats, ns)]
    Lbar = np.einsum("l,lij->ij", p, mats)
    Q = sum(pl * G @ L for pl, G, L in zip(p, gammas, mats))
    return Lbar @ np.linalg.inv(Q)


def test_exact_helpers_match_theory():
    """The exact criterion is theory.limit_error of P(π) = theory.mixture_preconditioner(pool.covs, pool.ns, π)."""
    with x64_context(jnp.float64):
        dtype = jnp.float64
        pool = _paper(4, dtype)
        Sigma = sel.power_law_target(jax.random.key(5), d=6, alpha=0.8, dtype=dtype)
        probs = jnp.asarray(np.arange(8, 0, -1) / 36.0, dtype)
        P_ref = _mixture_preconditioner_numpy(pool, probs)
        rtol = 1e-10
        np.testing.assert_allclose(theory.mixture_preconditioner(pool.covs, pool.ns, probs), P_ref, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(pool.gammas(), jax.vmap(theory.gamma)(pool.matrices(), pool.ns), rtol=rtol)
        lim = np.asarray(theory.limit_error(jnp.asarray(P_ref), Sigma, 6))
        np.testing.assert_allclose(sel.exact_errors(pool, Sigma, probs, 6), lim, rtol=10 * rtol)
        np.testing.assert_allclose(sel.exact_objective(pool, Sigma, probs, 6, "sum"), np.sum(lim[1:]), rtol=10 * rtol)
        np.testing.assert_allclose(sel.exact_objective(pool, Sigma, probs, 6, "at"), lim[6], rtol=10 * rtol)
        # one task: P = Γ⁻¹
        cov = power_law(6, 0.5, dtype=dtype)
        one = sel.task_pool([cov], [30.0])
        np.testing.assert_allclose(sel.exact_errors(one, Sigma, jnp.ones((1,), dtype), 6),
                                   theory.limit_error(theory.gamma_inverse(cov, 30.0), Sigma, 6), rtol=10 * rtol)


def test_exact_gradient_matches_finite_differences():
    with x64_context(jnp.float64):
        pool, Sigma = _random_pool(7, L=3), _random_target(7)
        probs = jnp.asarray([0.5, 0.3, 0.2])
        for aggregate in ("sum", "at"):
            f = lambda p: sel.exact_objective(pool, Sigma, p, 4, aggregate)
            g = np.asarray(jax.grad(f)(probs))
            h = 1e-6
            for i, j in [(0, 1), (1, 2), (0, 2)]:
                v = np.zeros(3)
                v[i], v[j] = 1.0, -1.0
                fd = (float(f(probs + h * v)) - float(f(probs - h * v))) / (2 * h)
                np.testing.assert_allclose(g @ v, fd, rtol=1e-6, atol=1e-9)


def test_exact_optimum_beats_grid_and_is_kkt():
    with x64_context(jnp.float64):
        pool, Sigma = _random_pool(11, L=3), _random_target(11)
        s = sel.select_mixture(pool, Sigma, "exact", k=3, aggregate="sum", iters=300)
        p = np.asarray(s.probs)
        assert np.all(p >= 0) and abs(p.sum() - 1) < 1e-12
        assert float(s.kkt) < 1e-6
        f = jax.jit(jax.vmap(lambda q: sel.exact_objective(pool, Sigma, q, 3, "sum")))
        t = np.linspace(0, 1, 61)
        grid = np.array([(a, b, 1 - a - b) for a in t for b in t if a + b <= 1 + 1e-12])
        grid = np.clip(grid, 0, None)
        best = float(jnp.min(f(jnp.asarray(grid))))
        assert float(s.objective) <= best + 1e-9
        # and matches SciPy from several starts to 1e-4
        ref = _scipy_simplex(lambda q: float(sel.exact_objective(pool, Sigma, jnp.asarray(q), 3, "sum")), 3)
        np.testing.assert_allclose(p, ref, atol=1e-4)


def test_vmapped_pools_equal_single_pools():
    with x64_context(jnp.float64):
        stack = lambda items: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *items)
        pools = stack([_random_pool(s) for s in range(3)])
        targets = stack([_random_target(s) for s in range(3)])
        for criterion, it in (("qp", 3000), ("exact", 300)):
            many = jax.vmap(lambda p, S: sel.select_mixture(p, S, criterion, k=3, iters=it))(pools, targets)
            for i in range(3):
                one = sel.select_mixture(_random_pool(i), _random_target(i), criterion, k=3, iters=it)
                np.testing.assert_allclose(many.probs[i], one.probs, atol=1e-6)
                np.testing.assert_allclose(many.objective[i], one.objective, rtol=1e-8)
                assert float(one.kkt) < 1e-6


def test_paper_pool_and_baselines():
    pool = _paper(0)
    assert pool.size == 8 and pool.kind_names == tuple(t[0] for t in sel.PAPER_TASK_TYPES)
    np.testing.assert_array_equal(pool.ns, [20, 20, 20, 20, 100, 100, 100, 100])
    np.testing.assert_allclose(pool.covs.trace(), 6.0, rtol=1e-5)
    # the hard tasks (σ_min below the median) are exactly the α = 0.8 types
    hard = np.asarray(sel.hard_mask(pool))
    np.testing.assert_array_equal(hard, np.isin(np.asarray(pool.kinds), [1, 3]))
    # bases are orthonormal
    U = np.asarray(pool.covs.basis)
    np.testing.assert_allclose(np.einsum("lji,ljk->lik", U, U), np.broadcast_to(np.eye(6), U.shape), atol=1e-5)
    Sigma = sel.power_law_target(jax.random.key(1), 6, 0.8)
    base = sel.baseline_mixtures(pool, Sigma)
    np.testing.assert_allclose(base["easy-only"], np.where(hard, 0, 0.25))
    np.testing.assert_allclose(base["hard-only"], np.where(hard, 0.25, 0))
    assert hard[int(np.argmax(base["relevant-only"]))]
    probs = jnp.asarray(np.arange(1, 9) / 36.0, jnp.float32)
    np.testing.assert_allclose(sel.type_mass(pool, probs), [3 / 36, 7 / 36, 11 / 36, 15 / 36], rtol=1e-6)
    np.testing.assert_allclose(sel.hard_mass(pool, probs), (3 + 4 + 7 + 8) / 36, rtol=1e-6)


def test_no_jitter_pool_qp_ignores_length():
    # without jitter Hard-Short and Hard-Long have identical Λ: the paper QP cannot tell them apart
    pool = _paper(0, alpha_jitter=0.0, rotation=0.0)
    s = sel.select_mixture(pool, power_law(6, 0.8), "qp")
    np.testing.assert_allclose(s.probs, [0, 0, 0.25, 0.25, 0, 0, 0.25, 0.25], atol=1e-5)  # Σ = Λ_hard: exact fit, split by symmetry
    assert float(s.objective) < 1e-8


def test_selection_study_prop43_small():
    ds = sel.selection_study(jax.random.key(0), num_pools=4, criteria=("qp",), d=6, progress=False,
                             generator_kwargs=dict(per_type=2))
    assert set(ds["mixture"].values) == {"qp", *sel.BASELINES}
    np.testing.assert_allclose(ds["probs"].sum("task"), 1.0, atol=1e-5)
    np.testing.assert_allclose(ds["type_mass"].sum("type"), 1.0, atol=1e-5)
    # Proposition 4.3 on hard targets: at least half of the mass on hard tasks
    assert float(ds["hard_mass"].sel(mixture="qp").min()) >= 0.5
    assert float(ds["kkt"].sel(mixture="qp").max()) < 1e-3
    tab = sel.selection_table(ds)
    np.testing.assert_allclose(tab["mean_type_mass"].sel(mixture="uniform"), 0.25, atol=1e-6)
    assert tab["ranking"].sel(mixture="easy-only").item().startswith("Easy")
    fig = sel.plot_selection(ds)
    assert len(fig.axes) == 2


# ----------------------------------------------------------------------------- bad input
def test_bad_input_errors():
    good = power_law(4, 0.5)
    with pytest.raises(ValueError, match="empty"):
        sel.task_pool([], [])
    with pytest.raises(ValueError, match="dimension d"):
        sel.task_pool([power_law(4, 0.5), power_law(5, 0.5)], [10, 10])
    with pytest.raises(ValueError, match="positive semi-definite"):
        sel.task_pool([good, np.diag([1.0, 1.0, -0.5, 1.0])], [10, 10])
    with pytest.raises(ValueError, match="positive semi-definite"):
        sel.task_pool([good, np.array([[1.0, 2.0, 0, 0], [2.0, 1.0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])], [10, 10])
    with pytest.raises(ValueError, match=r"covs\[0\]"):
        sel.task_pool(Covariance(jnp.asarray([[1.0, -1.0]])), [10])
    with pytest.raises(ValueError, match="ns"):
        sel.task_pool([good, good], [10, 0])
    with pytest.raises(ValueError, match="ns"):
        sel.task_pool([good, good], [10, 10, 10])
    pool = sel.task_pool([good, power_law(4, 1.0)], [10, 20])
    with pytest.raises(ValueError, match="singular"):
        sel.select_mixture(pool, from_eigenvalues(jnp.asarray([1.0, 1.0, 1.0, 0.0])), "qp")
    with pytest.raises(ValueError, match="singular"):
        sel.exact_errors(pool, np.diag([1.0, 1.0, 0.0, 1.0]), jnp.asarray([0.5, 0.5]), 3)
    with pytest.raises(ValueError, match="Sigma has dimension"):
        sel.select_mixture(pool, identity(5), "qp")
    with pytest.raises(ValueError, match="criterion"):
        sel.select_mixture(pool, identity(4), "bogus")
    with pytest.raises(ValueError, match="aggregate"):
        sel.select_mixture(pool, identity(4), "exact", aggregate="max")
    with pytest.raises(ValueError, match="probs"):
        sel.qp_objective(pool, identity(4), jnp.ones(3) / 3)
    with pytest.raises(TypeError, match="pool"):
        sel.select_mixture([good], identity(4))


# ----------------------------------------------------------------------------- CLI
def test_cli_select(tmp_path, capsys):
    from ttscale.cli import main

    pool_file = tmp_path / "pool.json"
    pool_file.write_text(json.dumps({"d": 4, "tasks": [
        {"alpha": 0.2, "n": 20, "name": "easy"}, {"alpha": 1.0, "n": 20, "name": "hard"},
        {"eigenvalues": [1.0, 1.0, 1.0, 1.0], "n": 50, "name": "iso"}]}))
    assert main(["select", "--pool", str(pool_file), "--target", "power_law:1.0", "--criterion", "qp", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    p = np.asarray(out["mixtures"]["qp"]["probs"])
    np.testing.assert_allclose(p, [0, 1, 0], atol=1e-4)  # Σ equals the hard task: exact fit
    assert main(["select", "--pool", str(pool_file), "--target", "identity", "--criterion", "qp", "--d", "4"]) == 0
    text = capsys.readouterr().out
    assert "█" in text and "iso" in text
    npz = tmp_path / "pool.npz"
    np.savez(npz, eigenvalues=np.ones((2, 4)), n=np.array([10, 20]))
    assert main(["select", "--pool", str(npz), "--target", "identity", "--json"]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tasks": [{"matrix": [[1, 2], [2, 1]], "n": 10}]}))
    assert main(["select", "--pool", str(bad), "--target", "identity", "--d", "2"]) == 2
    assert "positive semi-definite" in capsys.readouterr().err
    assert main(["select", "--pool", "nope.json"]) == 2


# ----------------------------------------------------------------------------- training (heavy)
@pytest.mark.full
def test_report_quick_trained_mixtures(tmp_path):
    rep = sel.selection_report(str(tmp_path), quick=True, progress=False)
    for name in ("study.nc", "comparison.nc", "selection.png", "comparison.png", "summary.md", "table.csv", "comparison.csv"):
        assert (tmp_path / name).exists()
    cmp = rep["comparison"]
    # the trained LSA tracks the exact P(π) it should learn
    assert float(cmp["preconditioner_error"].max()) < 0.2
    # the exact criterion's mixture beats easy-only on the hard target at k = 5 (beyond 4 s.e.)
    a, b = cmp.sel(mixture="exact", k=5), cmp.sel(mixture="easy-only", k=5)
    assert float(a["mean"] + 4 * a["stderr"]) < float(b["mean"] - 4 * b["stderr"])


# ----------------------------------------------------------------------------- reliability: no NaN answers, checked covariances
def test_select_mixture_refuses_a_non_finite_objective():
    """CoT diverges on a very tilted target for every mixture, so ||(I − P(π)Σ)^k||² overflows at k = 300: an
    error saying so, not the uniform start reported as the selected mixture with objective inf/nan."""
    pool = sel.task_pool([power_law(4, 0.2), power_law(4, 0.8)], [20, 20])
    with pytest.raises(FloatingPointError, match=r"criterion 'exact' is not finite at k=300.*no mixture was selected"):
        sel.select_mixture(pool, power_law(4, 6.0), "exact", k=300, iters=5)
    # under vmap (selection_study) the caller reads the values: no concrete check there
    out = jax.vmap(lambda S: sel.select_mixture(pool, S, "exact", k=300, iters=5))(power_law(4, jnp.asarray([6.0])))
    assert not np.all(np.isfinite(np.asarray(out.objective)))


def test_directly_built_covariances_are_checked_in_pools_and_targets():
    """Covariance(...) built directly (complex, NaN basis, non-orthonormal basis) is refused by task_pool and by
    every target entry point, naming the argument."""
    good = power_law(3, 0.5)
    complex_cov = Covariance(jnp.ones(3) + 0j)
    skewed = Covariance(jnp.ones(3), jnp.ones((3, 3)))
    with pytest.raises(TypeError, match=r"covs\[1\]\.eigenvalues must be a real"):
        sel.task_pool([good, complex_cov], [5, 5])
    with pytest.raises(ValueError, match=r"covs\[0\]\.basis must be orthonormal"):
        sel.task_pool([skewed, good], [5, 5])
    with pytest.raises(ValueError, match=r"covs\[0\]\.basis has non-finite"):
        sel.task_pool([Covariance(jnp.ones(3), jnp.full((3, 3), jnp.nan))], [5])
    with pytest.raises(ValueError, match=r"covs\.basis must be orthonormal"):
        sel.task_pool(Covariance(jnp.ones((2, 3)), jnp.ones((2, 3, 3))), [5, 5])
    with pytest.raises(TypeError, match=r"covs\.eigenvalues must be a real"):
        sel.task_pool(Covariance(jnp.ones((2, 3)) + 0j), [5, 5])
    pool = sel.task_pool([good, power_law(3, 1.0)], [5, 10])
    with pytest.raises(TypeError, match=r"Sigma\.eigenvalues must be a real"):
        sel.select_mixture(pool, complex_cov)
    with pytest.raises(ValueError, match=r"Sigma\.basis must be orthonormal"):
        sel.exact_errors(pool, skewed, jnp.asarray([0.5, 0.5]), 3)


def test_cli_select_names_the_file_for_bad_covariance_files(tmp_path, capsys):
    from ttscale.cli import main

    d = 4
    cases = {
        "complex.npy": (np.ones(d) + 1j, "holds complex numbers"),
        "complex_matrix.npy": (np.eye(d) + 1j * np.eye(d), "holds complex numbers"),
        "nan.npy": (np.r_[np.ones(d - 1), np.nan], "non-finite"),
        "zero.npy": (np.zeros(d), "singular"),
        "neg_matrix.npy": (-np.eye(d), "positive semi-definite"),
    }
    for name, (arr, text) in cases.items():
        np.save(tmp_path / name, arr)
        assert main(["select", "--d", str(d), "--target", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"--target {tmp_path / name}" in err and text in err, err
    np.savez(tmp_path / "pool.npz", eigenvalues=np.ones((2, d)), basis=np.ones((2, d, d)), n=np.array([20, 20]))
    assert main(["select", "--pool", str(tmp_path / "pool.npz"), "--target", "identity"]) == 2
    err = capsys.readouterr().err
    assert f"--pool {tmp_path / 'pool.npz'}: tasks[0]: basis must be orthonormal" in err
