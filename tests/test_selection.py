"""Tests of ttscale.selection: simplex QPs against SciPy, KKT, vmap, exact-criterion gradients, bad input; the task
mixture pytree (ttscale.tasks) it works on; the studies of the task_selection preset."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from ttscale import selection as sel
from ttscale import theory
from ttscale.experiments import task_selection as ts
from ttscale.tasks import TaskMixture, task_mixture
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
    return task_mixture(covs, ns)


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
    pool = task_mixture([power_law(3, 0.2, dtype=dtype), power_law(3, 1.5, dtype=dtype)], [20, 100])
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
    mats, ns, p = np.asarray(pool.matrices(), np.float64), np.asarray(pool.lengths, np.float64), np.asarray(probs, np.float64)
    d = mats.shape[-1]
    gammas = [(1 + 1 / n) * L + (np.trace(L) / n) * np.eye(d) for L, n in zip(mats, ns)]
    Lbar = np.einsum("l,lij->ij", p, mats)
    Q = sum(pl * G @ L for pl, G, L in zip(p, gammas, mats))
    return Lbar @ np.linalg.inv(Q)


def test_exact_helpers_match_theory():
    """The exact criterion is theory.limit_error of P(π) = theory.mixture_preconditioner(pool.covariances, pool.lengths, π)."""
    with x64_context(jnp.float64):
        dtype = jnp.float64
        pool = _paper(4, dtype)
        Sigma = sel.power_law_target(jax.random.key(5), d=6, alpha=0.8, dtype=dtype)
        probs = jnp.asarray(np.arange(8, 0, -1) / 36.0, dtype)
        P_ref = _mixture_preconditioner_numpy(pool, probs)
        rtol = 1e-10
        np.testing.assert_allclose(theory.mixture_preconditioner(pool.covariances, pool.lengths, probs), P_ref, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(pool.gammas(), jax.vmap(theory.gamma)(pool.matrices(), pool.lengths), rtol=rtol)
        lim = np.asarray(theory.limit_error(jnp.asarray(P_ref), Sigma, 6))
        np.testing.assert_allclose(sel.exact_errors(pool, Sigma, probs, 6), lim, rtol=10 * rtol)
        np.testing.assert_allclose(sel.exact_objective(pool, Sigma, probs, 6, "sum"), np.sum(lim[1:]), rtol=10 * rtol)
        np.testing.assert_allclose(sel.exact_objective(pool, Sigma, probs, 6, "at"), lim[6], rtol=10 * rtol)
        # one task: P = Γ⁻¹
        cov = power_law(6, 0.5, dtype=dtype)
        one = task_mixture([cov], [30.0])
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
    assert pool.size == 8 and pool.types == tuple(t[0] for t in sel.PAPER_TASK_TYPES)
    assert pool.labels == tuple(t[0] for t in sel.PAPER_TASK_TYPES for _ in range(2))
    np.testing.assert_array_equal(pool.lengths, [20, 20, 20, 20, 100, 100, 100, 100])
    np.testing.assert_allclose(pool.covariances.trace(), 6.0, rtol=1e-5)
    # the hard tasks (σ_min below the median) are exactly the α = 0.8 types
    hard = np.asarray(sel.hard_mask(pool))
    np.testing.assert_array_equal(hard, np.isin(np.asarray(pool.kinds), [1, 3]))
    # bases are orthonormal
    U = np.asarray(pool.covariances.basis)
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
    assert float(s.objective) < 1e-8  # an exact fit: far below float32 round-off of the expanded form's constant d = 6
    # and it is the formula's value at those probabilities (NumPy, float64 mixture), not the expanded form's round-off
    exact_fit = _qp_numpy(pool, power_law(6, 0.8), False)(np.asarray(s.probs, np.float64))
    np.testing.assert_allclose(float(s.objective), exact_fit, atol=1e-12)


def test_selection_study_prop43_small():
    ds = ts.selection_study(jax.random.key(0), num_pools=4, criteria=("qp",), d=6, progress=False,
                             generator_kwargs=dict(per_type=2))
    assert set(ds["mixture"].values) == {"qp", *sel.BASELINES}
    np.testing.assert_allclose(ds["probs"].sum("task"), 1.0, atol=1e-5)
    np.testing.assert_allclose(ds["type_mass"].sum("type"), 1.0, atol=1e-5)
    # Proposition 4.3 on hard targets: at least half of the mass on hard tasks
    assert float(ds["hard_mass"].sel(mixture="qp").min()) >= 0.5
    assert float(ds["kkt"].sel(mixture="qp").max()) < 1e-3
    tab = ts.selection_table(ds)
    np.testing.assert_allclose(tab["mean_type_mass"].sel(mixture="uniform"), 0.25, atol=1e-6)
    # easy-only puts exactly ½ on each easy type in every pool: a tie above a tie (tie-aware ranking)
    assert tab["ranking"].sel(mixture="easy-only").item() == "{Easy-Short ≈ Easy-Long} > {Hard-Short ≈ Hard-Long}"
    assert tab["ranking"].sel(mixture="uniform").item() == "{Easy-Short ≈ Hard-Short ≈ Easy-Long ≈ Hard-Long}"
    from ttscale import plots

    fig = plots.plot_selection(ds, tab)
    assert len(fig.axes) == 2


# ----------------------------------------------------------------------------- the other reading: B = number of prompts
def test_empirical_covariance_equals_numpy_on_the_same_draws():
    """Λ̂ = A Z Zᵀ Aᵀ / N for the normals Z the key gives (an independent NumPy computation), PSD, of rank min(N, d)."""
    cov = sel.power_law_target(jax.random.key(3), 5, 0.8)
    key = jax.random.key(7)
    for N in (3, 40):
        emp = sel.empirical_covariance(key, cov, N)
        Z = np.asarray(jax.random.normal(key, (5, N), jnp.float32), np.float64)
        A = np.asarray(cov.basis, np.float64) * np.sqrt(np.asarray(cov.eigenvalues, np.float64))
        ref = A @ Z @ Z.T @ A.T / N
        np.testing.assert_allclose(np.asarray(emp.matrix(), np.float64), ref, rtol=2e-4, atol=2e-5)
        eig = np.asarray(emp.eigenvalues)
        assert eig.min() >= 0.0 and np.sum(eig > 1e-5 * eig.max()) == min(N, 5)
    with pytest.raises(TypeError, match="cov"):
        sel.empirical_covariance(key, np.eye(5), 10)
    with pytest.raises(ValueError, match="samples"):
        sel.empirical_covariance(key, cov, 0)


def test_dataset_pool_reading():
    """B training prompts of one length n: population = paper_pool's (same key split), lengths n, PSD empirical
    covariances; E||Λ̂ − Λ||_F² = (tr(Λ)² + tr(Λ²)) / (B n) (Gaussian x) over many keys; deterministic in the key."""
    types = (("Easy-Short", 0.2, 2), ("Hard-Long", 0.8, 50))
    keys = jax.random.split(jax.random.key(5), 400)
    many = sel.random_pools(jax.random.key(5), 400, sel.dataset_pool, d=4, n=5, types=types)
    again = sel.random_pools(jax.random.key(5), 400, sel.dataset_pool, d=4, n=5, types=types)
    np.testing.assert_array_equal(many.matrices(), again.matrices())  # deterministic given the key
    assert many.labels == ("Easy-Short", "Hard-Long")
    np.testing.assert_array_equal(many.lengths, 5.0)
    assert np.all(np.asarray(many.covariances.eigenvalues) >= 0)  # PSD
    M = np.asarray(many.matrices(), np.float64)
    np.testing.assert_allclose(M, np.swapaxes(M, -1, -2), atol=1e-6)
    assert not np.allclose(M[0], M[1])  # different keys, different datasets
    # the population is paper_pool's on the first half of each key (else the closed form below would not match)
    pops = jax.vmap(lambda k: sel.paper_pool(jax.random.split(k)[0], d=4, types=types))(keys)
    L = np.asarray(pops.matrices(), np.float64)
    err2 = np.sum((M - L) ** 2, axis=(-1, -2))  # [pools, task]
    tr = np.trace(L, axis1=-2, axis2=-1)
    expect = (tr ** 2 + np.sum(L * L, axis=(-1, -2))) / (np.array([2, 50]) * 5)
    ratio = err2 / expect
    se = ratio.std(axis=0, ddof=1) / np.sqrt(400)
    np.testing.assert_array_less(np.abs(ratio.mean(axis=0) - 1.0), 4 * se)
    # converges to the population as B grows: the relative error shrinks like 1/√(B n) (here √(250/10) = 5×)
    rel = np.sqrt(err2.mean(axis=0) / np.sum(L * L, axis=(-1, -2)).mean(axis=0))
    assert 3.5 < rel[0] / rel[1] < 7
    # with B n = 10 draws in d = 4 the easy task's σ_min shrinks well below its population value (Marchenko–Pastur)
    lmin, lmin_pop = np.asarray(many.lambda_min())[:, 0], np.asarray(pops.lambda_min())[:, 0]
    assert np.mean(lmin < 0.5 * lmin_pop) > 0.5
    with pytest.raises(ValueError, match="number of training prompts"):
        sel.dataset_pool(jax.random.key(0), d=4, types=(("x", 0.2, 2.5),))


def test_dataset_pools_eigendecompose_every_task_in_one_lapack_call():
    """``random_pools(..., dataset_pool)`` makes one batched ``eigh`` of all tasks, not one per task type. XLA's CPU
    runtime runs independent custom calls concurrently, and jaxlib's batched LAPACK kernels wait on the thread pool
    that runs them: with four per-type calls, 1024 pools on 2 cores hung with every pool thread waiting (jax 0.10.2;
    the values are tested in test_dataset_pool_reading)."""
    compiled = jax.jit(lambda k: sel.random_pools(k, 8, sel.dataset_pool, d=4, n=5).covariances.eigenvalues).lower(
        jax.random.key(11)).compile()
    calls = re.findall(r'custom_call_target="lapack_\w*syevd\w*"', compiled.as_text())  # 4 before: one per task type
    assert len(calls) == 1, calls


# ----------------------------------------------------------------------------- bad input
def test_bad_input_errors():
    good = power_law(4, 0.5)
    with pytest.raises(ValueError, match="empty"):
        task_mixture([], [])
    with pytest.raises(ValueError, match="dimension d"):
        task_mixture([power_law(4, 0.5), power_law(5, 0.5)], [10, 10])
    with pytest.raises(ValueError, match="positive semi-definite"):
        task_mixture([good, np.diag([1.0, 1.0, -0.5, 1.0])], [10, 10])
    with pytest.raises(ValueError, match="positive semi-definite"):
        task_mixture([good, np.array([[1.0, 2.0, 0, 0], [2.0, 1.0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])], [10, 10])
    with pytest.raises(ValueError, match=r"covariances\[0\]"):
        task_mixture(Covariance(jnp.asarray([[1.0, -1.0]])), [10])
    with pytest.raises(ValueError, match="lengths"):
        task_mixture([good, good], [10, 0])
    with pytest.raises(ValueError, match="lengths"):
        task_mixture([good, good], [10, 10, 10])
    with pytest.raises(ValueError, match="probs"):
        task_mixture([good, good], [10, 10], [0.7, 0.7])
    with pytest.raises(ValueError, match="probs"):
        task_mixture([good, good], [10, 10], [1.5, -0.5])
    with pytest.raises(ValueError, match="probs"):
        task_mixture([good, good], [10, 10], [1.0])
    with pytest.raises(ValueError, match="labels"):
        task_mixture([good, good], [10, 10], labels=["a"])
    pool = task_mixture([good, power_law(4, 1.0)], [10, 20])
    with pytest.raises(ValueError, match="singular"):
        sel.select_mixture(pool, from_eigenvalues(jnp.asarray([1.0, 1.0, 1.0, 0.0])), "qp")
    with pytest.raises(ValueError, match="singular"):
        sel.exact_errors(pool, np.diag([1.0, 1.0, 0.0, 1.0]), jnp.asarray([0.5, 0.5]), 3)
    with pytest.raises(ValueError, match="test has dimension"):
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
def test_preset_tables_quick_trained_mixtures(tmp_path):
    """The task_selection preset at a small size writes its data, figure and tables; the trained LSAs track P(π)."""
    from ttscale import experiments as ex

    cfg = ts.SelectionConfig(num_pools=16, steps=200, batch=64, prompts=256, m=200, k_max=10)
    res = ex.run_preset("task_selection", config=cfg, out=tmp_path, progress=False)
    for name in ("summary.md", "table.csv", "comparison.csv"):
        assert (tmp_path / "task_selection" / name).exists()
    assert (tmp_path / "figures" / "task_selection.png").exists()
    cmp = ts.unprefix(res.dataset, "cmp")
    assert float(cmp["preconditioner_error"].max()) < 0.2
    a, b = cmp.sel(mixture="exact", k=5), cmp.sel(mixture="easy-only", k=5)
    assert float(a["mean"] + 4 * a["stderr"]) < float(b["mean"] - 4 * b["stderr"])


def test_selection_summary_and_tables_from_a_small_study(tmp_path):
    """report.selection_summary / the preset's table writer on a tiny study and a hand-made comparison: every mixture
    gets a row, the regeneration command is the CLI's, the CSVs hold the numbers."""
    import xarray as xr

    from ttscale import report, store

    study = ts.selection_study(jax.random.key(1), num_pools=3, criteria=("qp",), d=4, progress=False)
    tab = ts.selection_table(study)
    ks = np.arange(4)
    mix = ["qp", "uniform"]
    cmp = xr.Dataset({"mean": (("mixture", "k"), np.outer([1.0, 2.0], 0.5 ** ks)),
                      "stderr": (("mixture", "k"), np.full((2, 4), 1e-3)),
                      "exact_mc_mean": (("mixture", "k"), np.ones((2, 4))), "limit_error": (("mixture", "k"), np.ones((2, 4))),
                      "trained_limit_error": (("mixture", "k"), np.ones((2, 4))), "median": (("mixture", "k"), np.ones((2, 4))),
                      "probs": (("mixture", "task"), np.full((2, 4), 0.25)), "preconditioner_error": ("mixture", [0.01, 0.02])},
                     coords={"mixture": mix, "k": ks, "task": np.arange(4), "type_name": ("task", list(study["type"].values))},
                     attrs={"m": 50, "prompts": 10, "steps": 5, "batch": 4})
    md = report.selection_summary(study, tab, cmp, "ttscale reproduce task_selection --quick --out X")
    assert "`ttscale reproduce task_selection --quick --out X`" in md
    assert all(f"| {m} |" in md for m in study["mixture"].values)
    assert "`qp` vs `uniform`: lower error (beyond 2 s.e.) at k = [1, 2, 3]" in md
    # the other reading at the same shapes (the compiled solver is reused): its study joins the Dataset
    count = ts.selection_study(jax.random.key(1), num_pools=3, criteria=("qp",), d=4, progress=False,
                               generator=sel.dataset_pool, generator_kwargs=dict(n=6))
    assert count.attrs["generator"] == "dataset_pool" and np.all(count["n"].values == 6)
    np.testing.assert_allclose(count["type_mass"].sum("type"), 1.0, atol=1e-5)
    assert float(count["hard_mass"].sel(mixture="qp").min()) >= 0.5
    ds = xr.Dataset()
    for name, src in (("study", study), ("table", tab), ("study_count", count), ("cmp", cmp)):
        ds = ds.merge(src.rename({v: f"{name}__{v}" for v in src.data_vars}).rename(
            {c: f"{name}__{c}" for c in list(src.dims) + [c for c in src.coords if c not in src.dims]}), compat="override")
        ds.attrs.update({f"{name}__{k}": v for k, v in src.attrs.items()})
    paths = ts.write_selection_tables(ds, tmp_path / "task_selection")
    assert [p.name for p in paths] == ["summary.md", "table.csv", "comparison.csv"]
    summary = (tmp_path / "task_selection" / "summary.md").read_text()
    assert "## The paper's ranking, pair by pair, under each reading of (α, B)" in summary
    assert "| length | qp |" in summary and "| count | qp |" in summary and "does not publish" in summary
    table = (tmp_path / "task_selection" / "table.csv").read_text().splitlines()
    assert table[0].startswith("mixture,") and len(table) == 1 + study.sizes["mixture"]
    assert store.load_dataset  # the writer went through ttscale.store (atomic files)


# ----------------------------------------------------------------------------- the task mixture pytree (ttscale.tasks)
def test_task_mixture_passes_through_jit_and_vmap():
    """Labels are static aux data: a mixture crosses jit (labels intact) and a stack of mixtures vmaps; the mixture
    optimum equals the closed form Λ̄ Q⁻¹ computed in NumPy."""
    from ttscale import tasks

    covs = [power_law(3, 0.5, dtype=jnp.float32), identity(3)]
    a = task_mixture(covs, [5, 20], [0.25, 0.75], labels=["hard", "easy"])
    b = task_mixture(covs, [8, 8], [0.5, 0.5], labels=["hard", "easy"])
    out = jax.jit(lambda m: m)(a)
    assert isinstance(out, TaskMixture) and out.labels == ("hard", "easy")
    assert [leaf.shape for leaf in jax.tree_util.tree_leaves(a)] == [(2, 3), (2,), (2,)]  # labels are not leaves
    stacked = tasks.stack_mixtures([a, b])
    P = jax.jit(jax.vmap(tasks.mixture_preconditioner))(stacked)
    for i, (ns, ps) in enumerate((([5, 20], [0.25, 0.75]), ([8, 8], [0.5, 0.5]))):
        mats = [np.diag(np.asarray(c.eigenvalues, np.float64)) for c in covs]
        Q = sum(p * ((1 + 1 / n) * L + np.trace(L) / n * np.eye(3)) @ L for p, L, n in zip(ps, mats, ns))
        np.testing.assert_allclose(P[i], sum(p * L for p, L in zip(ps, mats)) @ np.linalg.inv(Q), rtol=2e-5)
    np.testing.assert_array_equal(a.kinds, [0, 1])
    assert a.types == ("hard", "easy")
    with pytest.raises(ValueError, match="share one structure"):
        tasks.stack_mixtures([a, task_mixture(covs, [5, 20])])  # other labels


def test_deprecated_pool_names_warn():
    good = power_law(3, 0.5)
    with pytest.warns(DeprecationWarning, match="task_mixture"):
        pool = sel.task_pool([good, identity(3)], [5, 10], np.array([1, 0]), ("a", "b"))
    assert pool.labels == ("b", "a")
    with pytest.warns(DeprecationWarning, match="TaskMixture"):
        assert sel.TaskPool is TaskMixture


# ----------------------------------------------------------------------------- reliability: no NaN answers, checked covariances
def test_select_mixture_refuses_a_non_finite_objective():
    """CoT diverges on a very tilted target for every mixture, so ||(I − P(π)Σ)^k||² overflows at k = 300: an
    error saying so, not the uniform start reported as the selected mixture with objective inf/nan."""
    pool = task_mixture([power_law(4, 0.2), power_law(4, 0.8)], [20, 20])
    with pytest.raises(FloatingPointError, match=r"criterion 'exact' is not finite at k=300.*no mixture was selected"):
        sel.select_mixture(pool, power_law(4, 6.0), "exact", k=300, iters=5)
    # under vmap (selection_study) the caller reads the values: no concrete check there
    out = jax.vmap(lambda S: sel.select_mixture(pool, S, "exact", k=300, iters=5))(power_law(4, jnp.asarray([6.0])))
    assert not np.all(np.isfinite(np.asarray(out.objective)))


def test_directly_built_covariances_are_checked_in_pools_and_targets():
    """Covariance(...) built directly (complex, NaN basis, non-orthonormal basis) is refused by task_mixture and by
    every target entry point, naming the argument."""
    good = power_law(3, 0.5)
    complex_cov = Covariance(jnp.ones(3) + 0j)
    skewed = Covariance(jnp.ones(3), jnp.ones((3, 3)))
    with pytest.raises(TypeError, match=r"covariances\[1\]\.eigenvalues must be a real"):
        task_mixture([good, complex_cov], [5, 5])
    with pytest.raises(ValueError, match=r"covariances\[0\]\.basis must be orthonormal"):
        task_mixture([skewed, good], [5, 5])
    with pytest.raises(ValueError, match=r"covariances\[0\]\.basis has non-finite"):
        task_mixture([Covariance(jnp.ones(3), jnp.full((3, 3), jnp.nan))], [5])
    with pytest.raises(ValueError, match=r"covariances\.basis must be orthonormal"):
        task_mixture(Covariance(jnp.ones((2, 3)), jnp.ones((2, 3, 3))), [5, 5])
    with pytest.raises(TypeError, match=r"covariances\.eigenvalues must be a real"):
        task_mixture(Covariance(jnp.ones((2, 3)) + 0j), [5, 5])
    pool = task_mixture([good, power_law(3, 1.0)], [5, 10])
    with pytest.raises(TypeError, match=r"test\.eigenvalues must be a real"):
        sel.select_mixture(pool, complex_cov)
    with pytest.raises(ValueError, match=r"test\.basis must be orthonormal"):
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
