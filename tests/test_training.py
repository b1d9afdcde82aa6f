"""Training of the one-layer LSA (docs/science.md §3, §7): convergence to the Theorem 3.1 / mixture optimum,
vmapped training == separate runs, save/load, chunked resume, the free-W drift, bad input."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttscale as tts
from ttscale import lsa as lsa_mod
from ttscale import training as T
from ttscale import training

D_FEAT, N = 10, 20


def _numpy_prompts(cov, m, batch, seed):
    """Prompts for a diagonal covariance drawn with NumPy (no threefry compile in an eager test)."""
    rng = np.random.default_rng(seed)
    lam = np.asarray(cov.eigenvalues)
    X = (np.sqrt(lam)[None, :, None] * rng.standard_normal((batch, lam.size, m))).astype(np.float32)
    w = rng.standard_normal((batch, lam.size)).astype(np.float32)
    return tts.Prompts(jnp.asarray(X), jnp.asarray(np.einsum("bdm,bd->bm", X, w)), jnp.asarray(w))


def _one_task(cov, n, filler):
    """A one-task model written as a 2-task mixture with probabilities (1, 0), so single tasks and
    mixtures share one compiled (vmapped) train function."""
    return tts.task_mixture([cov, filler], [n, n], [1.0, 0.0])


@pytest.fixture(scope="module")
def trained():
    """Four LSAs trained in one vmapped call: Λ = I (n=20), Λ = power law α=1 (n=20), and two mixtures."""
    d = D_FEAT
    ident, tilted = tts.identity(d), tts.power_law(d, 1.0)
    config = T.TrainConfig(d=d, tasks=tts.task_mixture([ident, tilted], [10, N]), steps=200, batch=256)
    rows = [
        _one_task(ident, N, ident),
        _one_task(tilted, N, ident),
        tts.task_mixture([ident, tilted], [10, 20], [0.3, 0.7]),
        tts.task_mixture([tts.power_law(d, 2.0), ident], [20, 10], [0.5, 0.5]),
    ]
    tasks = tts.stack_mixtures(rows)
    keys = jax.random.split(jax.random.key(0), len(rows))
    result = jax.device_get(T.make_train_batched(config)(keys, tasks))
    return config, rows, tasks, keys, result


def test_single_task_converges_to_gamma_inverse(trained):
    """V[ŵ, x] → −Γ⁻¹/c within 5% (Frobenius), other blocks of V ~ 0 (only V[ŵ, y] moves at all)."""
    config, rows, _, keys, result = trained
    b = lsa_mod.blocks(D_FEAT)
    for i, cov in enumerate([tts.identity(D_FEAT), tts.power_law(D_FEAT, 1.0)]):
        V = result.params.V[i]
        target = -tts.gamma_inverse(cov, N) / config.c
        err = float(T.relative_error(V[b["w"], b["x"]], target))
        assert err < 0.05, (i, err)
        others = V.copy()
        others[b["w"], b["x"]] = 0.0
        others[b["w"], b["y"]] = 0.0
        # rows other than ŵ never get a gradient from V = 0 (exactly 0); V[ŵ, y] has mean-zero gradient
        assert np.max(np.abs(others)) == 0.0
        assert np.max(np.abs(V[b["w"], b["y"]])) < 5e-3
        assert np.isfinite(np.asarray(result.losses[i])).all()
        # loss at V = 0 is ½ mean_b ||w_b||² of step 0's batch (E = d/2): checked exactly on the same prompts;
        # at the optimum it is ½ one_step_error(Γ⁻¹, Λ, m = n)
        losses = np.asarray(result.losses[i])
        w0 = np.asarray(T.sample_batch(jax.random.fold_in(keys[i], 0), rows[i], config.n_max, config.batch).w, np.float64)
        np.testing.assert_allclose(losses[0], 0.5 * np.mean(np.sum(w0**2, -1)), rtol=1e-5)
        optimum = float(T.optimal_loss(rows[i]))
        np.testing.assert_allclose(optimum, 0.5 * float(tts.one_step_error(tts.gamma_inverse(cov, N), cov, N)), rtol=1e-5)
        tail = losses[-100:]
        assert abs(tail.mean() - optimum) < 4 * tail.std() / np.sqrt(len(tail)) + 0.01 * optimum, (tail.mean(), optimum)


def test_mixture_converges_to_mixture_preconditioner(trained):
    """A mixture of tasks of different n in one batch converges to P = Λ̄ Q⁻¹ (theory.mixture_preconditioner)."""
    _, rows, _, _, result = trained
    for i in (2, 3):
        t = rows[i]
        P_star = tts.mixture_preconditioner(t.covariances, t.lengths, t.probs)
        np.testing.assert_allclose(T.optimal_preconditioner(t), P_star, rtol=2e-5, atol=1e-6)
        err = float(T.relative_error(result.preconditioner[i], P_star))
        assert err < 0.05, (i, err)
        tail = np.asarray(result.losses[i, -100:])
        optimum = float(T.optimal_loss(t))
        assert abs(tail.mean() - optimum) < 4 * tail.std() / np.sqrt(len(tail)) + 0.01 * optimum, (tail.mean(), optimum)
        # and it is measurably NOT the one-task Γ⁻¹ of either component
        for cov, n in zip(tts.unstack(t.covariances), t.lengths):
            assert float(T.relative_error(tts.gamma_inverse(cov, n), P_star)) > 0.1


def test_vmapped_training_equals_separate_runs(trained):
    config, rows, _, keys, result = trained
    train = T.make_train(config)
    for i, row in enumerate(rows):
        single = train(keys[i], row)
        np.testing.assert_allclose(single.params.V, result.params.V[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(single.losses, result.losses[i], rtol=1e-5, atol=1e-6)


def test_trained_cot_matches_closed_form_optimum(trained):
    """Test-time CoT of the trained LSA (literal forward with feedback) vs the closed-form optimum:
    Monte Carlo on the same prompts within 4 s.e., and the m → ∞ limit_error within 5%."""
    _, _, _, _, result = trained
    cov = tts.power_law(D_FEAT, 1.0)
    params = jax.tree_util.tree_map(lambda a: a[1], result.params)
    P_star = tts.gamma_inverse(cov, N)
    k_max = 6
    prompts = _numpy_prompts(cov, 100, 1024, seed=7)
    errors = jax.jit(
        lambda params, P, prompts: (tts.lsa_errors(params, prompts, k_max), tts.pseudo_newton_errors(P, prompts, k_max))
    )
    trained_curve, optimum_curve = (tts.error_curve(e) for e in jax.device_get(errors(params, P_star, prompts)))
    gap = np.abs(trained_curve.mean - optimum_curve.mean)
    assert np.all(gap[1:] <= 4 * optimum_curve.stderr[1:]), (gap, optimum_curve.stderr)
    # m → ∞: the relative gap grows with k (the slowest-learned, smallest-λ direction dominates late k)
    lim_trained = tts.limit_error(result.preconditioner[1], cov, 4)
    lim_star = tts.limit_error(P_star, cov, 4)
    np.testing.assert_allclose(lim_trained, lim_star, rtol=0.05)


def test_gradient_and_curvature_closed_forms(dtype):
    """Per-prompt gradients at V = 0 average to E[∂ℓ/∂V[ŵ, x]] = c Λ (x block), 0 elsewhere; at V* to 0
    (exactly 0 outside the ŵ rows' x, y columns); the Gram of u matches curvature() — all within 5
    Monte-Carlo standard errors (the conftest `dtype` fixture enables x64 for float64)."""
    d, n, c, B = 4, 8, 1.5, 4096
    cov = tts.power_law(d, 1.0, dtype=dtype)
    tasks = tts.task_mixture([cov], [n], dtype=dtype)
    b = lsa_mod.blocks(d)

    @jax.jit
    def samples(key, tasks, params0, params_star):
        batch = T.sample_batch(key, tasks, n, B)

        def grads(params):
            def one(X, y, w, rho):
                single = T.TrainBatch(X[None], y[None], w[None], rho[None], jnp.zeros((1,), jnp.int32))
                return jax.grad(T.lsa_loss)(params, single).V

            return jax.vmap(one)(batch.X, batch.y, batch.w, batch.rho)  # [B, D, D]

        u = -c * jnp.concatenate([jnp.einsum("bdn,bn->bd", batch.X, batch.y), jnp.sum(batch.y**2, -1)[:, None]], -1) / n
        both = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), params0, params_star)
        g = jax.vmap(grads)(both)  # one trace for both parameter sets
        return g[0], g[1], jnp.einsum("bi,bj->bij", u, u), T.curvature(tasks, c)

    g0, g_star, outer, (H_x, h_y) = jax.device_get(
        samples(jax.random.key(3), tasks, lsa_mod.paper_init(d, c, dtype), lsa_mod.optimal_params(tts.gamma(cov, n), c))
    )
    assert g0.dtype == dtype

    def check_mean(x, expected):
        x = np.asarray(x, np.float64)
        mean, se = x.mean(0), x.std(0) / np.sqrt(x.shape[0])
        assert np.all(np.abs(mean - expected) <= 5 * se + 1e-6), (mean - expected) / (se + 1e-12)

    expected0 = np.zeros(g0.shape[1:])
    expected0[b["w"], b["x"]] = c * np.asarray(cov.matrix())
    check_mean(g0, expected0)
    check_mean(g_star, np.zeros(g0.shape[1:]))
    rest = np.array(g_star)
    rest[:, b["w"], b["x"]] = 0.0
    rest[:, b["w"], b["y"]] = 0.0
    assert np.max(np.abs(rest)) == 0.0
    expected = np.zeros((d + 1, d + 1))
    expected[:d, :d] = H_x
    expected[d, d] = h_y
    check_mean(outer, expected)


def test_last_column_matches_lsa_forward(dtype):
    """The training forward (matrix-vector form, zero-padded prompt, ρ = own n) equals lsa.forward's last column."""
    d, n, pad = 3, 5, 4
    D = lsa_mod.embed_dim(d)
    rng = np.random.default_rng(0)
    params = tts.LSAParams(*(jnp.asarray(rng.standard_normal((D, D)), dtype) for _ in range(2)))
    X, y = jnp.asarray(rng.standard_normal((d, n)), dtype), jnp.asarray(rng.standard_normal(n), dtype)

    @jax.jit
    def both(params, X, y):
        expected = lsa_mod.forward(params, lsa_mod.embed(X, y), n)[:, -1]
        Xp = jnp.concatenate([X, jnp.zeros((d, pad), dtype)], 1)
        yp = jnp.concatenate([y, jnp.zeros((pad,), dtype)])
        return T.last_column(params, Xp, yp, n), expected

    got, expected = both(params, X, y)
    np.testing.assert_allclose(got, expected, rtol=1e-4 if dtype == jnp.float32 else 1e-10)


def test_save_load_round_trip_is_exact(tmp_path, trained):
    config, _, _, _, result = trained
    params = jax.tree_util.tree_map(lambda a: a[3], result.params)
    path = str(tmp_path / "p.npz")
    T.save_params(path, params, config, losses=result.losses[3])
    back = T.load_params(path)
    assert isinstance(back, tts.LSAParams)
    np.testing.assert_array_equal(back.W, params.W)
    np.testing.assert_array_equal(back.V, params.V)
    assert back.V.dtype == params.V.dtype
    cfg = T.load_config(path)
    assert cfg == config and hash(cfg) == hash(config)
    np.testing.assert_array_equal(cfg.tasks.covariances.eigenvalues[1], config.tasks.covariances.eigenvalues[1])
    np.testing.assert_array_equal(T.load_array(path, "losses"), result.losses[3])
    # a rotated float64 task survives the JSON round trip bit-exactly
    with jax.enable_x64(True):
        rot = tts.rotated(jax.random.key(1), tts.power_law(3, 1.0, dtype=jnp.float64))
        cfg64 = T.TrainConfig(d=3, tasks=tts.task_mixture([rot], [5]), dtype="float64", probs=(1.0,))
        again = T.TrainConfig.from_json(cfg64.to_json())
        assert again == cfg64
        np.testing.assert_array_equal(again.tasks.covariances.basis[0], rot.basis)


def _small_mixture_config() -> T.TrainConfig:
    """The config the CLI builds from ``CLI_ARGS`` (so both tests share one compiled chunk function):
    a 2-task mixture of different n, Adam, tied W."""
    pl = tts.from_eigenvalues(tts.spectra.power_law_eigenvalues(3, 1.0).astype(np.float32))  # the CLI parses in float64
    tasks = tts.task_mixture([pl, tts.identity(3)], [4, 6])
    return T.TrainConfig(d=3, tasks=tasks, probs=(0.25, 0.75), steps=7, batch=8, optimizer="adam", w_mode="tied")


CLI_ARGS = ["--d", "3", "--spectrum", "power_law:alpha=1", "--spectrum", "identity", "--n", "4,6", "--probs",
            "0.25,0.75", "--steps", "7", "--batch", "8", "--optimizer", "adam", "--w-mode", "tied", "--chunk", "2"]


def test_fit_resumes_exactly(tmp_path):
    """Interrupt after 2 of 4 chunks, rerun with the same out: identical to an uninterrupted run,
    and equal (to round-off) to the single-scan make_train."""
    config = _small_mixture_config()
    key = jax.random.key(11)
    full = T.fit(config, key, out=str(tmp_path / "a"), chunk=2, progress=False)

    class Interrupt(Exception):
        pass

    def stop_at_4(step, losses):
        if step >= 4:
            raise Interrupt

    out = str(tmp_path / "b")
    with pytest.raises(Interrupt):
        T.fit(config, key, out=out, chunk=2, progress=False, callback=stop_at_4)
    seen = []
    resumed = T.fit(config, key, out=out, chunk=2, progress=False, callback=lambda s, l: seen.append(s))
    assert seen == [6, 7]  # resumed from step 4, the last chunk partial
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(full)):
        np.testing.assert_array_equal(a, b)
    assert resumed.losses.shape == (7,)
    assert float(resumed.c) != config.c  # tied: c is trained (and saved in the Adam state)
    saved = T.load_params(str(tmp_path / "b" / T.PARAMS))
    np.testing.assert_array_equal(saved.V, full.params.V)
    np.testing.assert_array_equal(saved.W, full.params.W)
    single = T.make_train(config)(key)
    np.testing.assert_allclose(single.params.V, full.params.V, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(single.losses, full.losses, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="different config"):
        T.fit(config.replace(steps=8), key, out=out, progress=False)
    with pytest.raises(ValueError, match="different key"):
        T.fit(config, jax.random.key(12), out=out, progress=False)


@pytest.fixture(scope="module")
def free_trained():
    """One LSA with a free W (Λ = I, d = 4, n = 10), shared by the free-W tests."""
    d, n = 4, 10
    cov = tts.identity(d)
    config = T.TrainConfig(d=d, tasks=tts.task_mixture([cov], [n]), steps=100, batch=256, w_mode="free")
    return config, cov, jax.device_get(T.make_train(config)(jax.random.key(0)))


def test_free_W_drifts(free_trained):
    """docs/science.md §3 pitfall. free W: W[x, ŵ] gets exactly zero gradient, W[y, 1] drifts to c' ≠ c, and the CoT
    fixed point is (c'/c) w: the error plateaus at (1 − c'/c)² ||w||² instead of → 0, although the
    one-step map (P = −c' V[ŵ, x] ≈ Γ⁻¹) is learned. (tied W: see test_tied_W_converges.)"""
    config, cov, free = free_trained
    d, n = config.d, int(config.tasks.lengths[0])
    P_star = tts.gamma_inverse(cov, n)
    b = lsa_mod.blocks(d)
    np.testing.assert_array_equal(free.params.W[b["x"], b["w"]], np.eye(d))  # zero gradient: stays at init
    ratio = float(free.c) / config.c
    assert abs(ratio - 1) > 0.1, ratio  # W[y, 1] drifted
    assert float(T.relative_error(free.preconditioner, P_star)) < 0.1  # one-step map still learned
    prompts = _numpy_prompts(cov, 200, 256, seed=1)
    errs = np.asarray(jax.jit(lambda params, prompts: tts.lsa_errors(params, prompts, 40)[:, -1])(free.params, prompts))
    plateau = (1 - ratio) ** 2 * np.sum(np.asarray(prompts.w) ** 2, -1)
    np.testing.assert_allclose(errs.mean(), plateau.mean(), rtol=0.1)
    assert errs.mean() > 0.05  # the frozen/tied models reach ~1e-3 here (Λ = I, k = 40)


def test_free_W_one_step_prediction_is_effective_preconditioner_times_b(free_trained):
    """What pins ``c = −W[y, 1]`` and ``P = −c V[ŵ, x]`` (lsa.effective_c / effective_preconditioner): with
    ŵ_0 = 0 the LSA's one-step prediction on a prompt is, exactly,

        ŵ_1 = P b + V[ŵ, x] S W[x, 1] + V[ŵ, y] (bᵀ W[x, 1] + W[y, 1] yᵀy/m) + V[ŵ, 1] W[1, 1],

    ``b = X y / m``, ``S = X Xᵀ / m``: every other block of V multiplies a zero row of the embedding's Gram
    (the ŵ rows, ŵ_0 = 0) or is itself zero (V has only its ŵ rows nonzero after training). Checked to
    round-off on real prompts after free-W training, where W[y, 1] has drifted away from W[x, ŵ] = c I —
    so the coefficient of b is −W[y, 1] V[ŵ, x], not −c V[ŵ, x] with the init's c."""
    config, cov, free = free_trained
    params = jax.tree_util.tree_map(jnp.asarray, free.params)
    d = config.d
    b = lsa_mod.blocks(d)
    x, y_, w_, one = b["x"], b["y"].start, b["w"], b["one"].start
    V, W = np.asarray(params.V, np.float64), np.asarray(params.W, np.float64)
    # V: only the ŵ rows were ever trained (every other row starts at 0 with exactly zero gradient)
    rest = V.copy()
    rest[w_] = 0.0
    assert np.max(np.abs(rest)) == 0.0
    c = float(lsa_mod.effective_c(params))
    assert c == -float(params.W[y_, one]) and abs(c - config.c) > 0.1  # drifted
    P = np.asarray(lsa_mod.effective_preconditioner(params), np.float64)
    np.testing.assert_allclose(P, -c * V[w_, x], rtol=1e-6)
    np.testing.assert_array_equal(P, np.asarray(free.preconditioner))  # what training reports

    prompts = _numpy_prompts(cov, 30, 64, seed=5)
    m = prompts.length
    pred = np.asarray(jax.jit(jax.vmap(lambda X, y: lsa_mod.predict(params, X, y)))(prompts.X, prompts.y), np.float64)
    X, yv = np.asarray(prompts.X, np.float64), np.asarray(prompts.y, np.float64)
    bvec = np.einsum("bdm,bm->bd", X, yv) / m
    S = np.einsum("bim,bjm->bij", X, X) / m
    yy = np.sum(yv * yv, -1) / m
    a = W[x, one]
    others = (np.einsum("ij,bjk,k->bi", V[w_, x], S, a)
              + V[w_, y_][None, :] * (bvec @ a + W[y_, one] * yy)[:, None]
              + V[w_, one] * W[one, one])
    main = bvec @ P.T
    scale = np.max(np.abs(pred))
    np.testing.assert_allclose(pred, main + others, rtol=0, atol=1e-5 * scale)
    # the other blocks barely contribute (V[ŵ, y] ~ 0, W[x, 1] ~ 0), while the init's c misses the drift
    assert np.max(np.abs(others)) < 0.05 * scale, np.max(np.abs(others)) / scale
    wrong = bvec @ (-config.c * V[w_, x]).T + others
    assert np.max(np.abs(pred - wrong)) > 0.05 * scale


@pytest.mark.full
def test_tied_W_converges():
    """tied W (one trainable c): c drifts too, but W[x, ŵ] moves with it, so P = −c V[ŵ, x] → Γ⁻¹ and the
    CoT converges to w. (Behind `full` only to keep CI fast: ~4 s of compile.)"""
    d, n = 4, 10
    cov = tts.identity(d)
    config = T.TrainConfig(d=d, tasks=tts.task_mixture([cov], [n]), steps=100, batch=256, w_mode="tied")
    tied = jax.device_get(T.make_train(config)(jax.random.key(0)))
    assert abs(float(tied.c) - config.c) > 0.1
    assert float(T.relative_error(tied.preconditioner, tts.gamma_inverse(cov, n))) < 0.05
    prompts = tts.sample_prompts(jax.random.key(1), cov, 200, 256)
    errs = np.asarray(jax.jit(lambda params, prompts: tts.lsa_errors(params, prompts, 40)[:, -1])(tied.params, prompts))
    assert errs.mean() < 0.02


def test_bad_input():
    cov = tts.identity(3)
    task = tts.task_mixture([cov], [5])
    two = tts.task_mixture([cov, cov], [5, 5])
    with pytest.raises(ValueError, match="empty mixture"):
        T.TrainConfig(d=3, tasks=())
    with pytest.raises(ValueError, match="sum to 1"):
        T.TrainConfig(d=3, tasks=two, probs=(0.5, 0.6))
    with pytest.raises(ValueError, match="non-negative"):
        T.TrainConfig(d=3, tasks=two, probs=(-0.5, 1.5))
    with pytest.raises(ValueError, match="one probability per task"):
        T.TrainConfig(d=3, tasks=two, probs=(1.0,))
    with pytest.raises(ValueError, match=r"tasks have dimension d=4"):
        T.TrainConfig(d=3, tasks=tts.task_mixture([tts.identity(4)], [5]))
    with pytest.raises(ValueError, match=r"lengths must be whole"):
        T.TrainConfig(d=3, tasks=tts.task_mixture([cov], [5.5]))
    for steps in (0, -3):
        with pytest.raises(ValueError, match="steps must be >= 1"):
            T.TrainConfig(d=3, tasks=task, steps=steps)
    with pytest.raises(TypeError, match="steps must be an int"):
        T.TrainConfig(d=3, tasks=task, steps=2.5)
    with pytest.raises(ValueError, match="optimizer"):
        T.TrainConfig(d=3, tasks=task, optimizer="lbfgs")
    with pytest.raises(ValueError, match="w_mode"):
        T.TrainConfig(d=3, tasks=task, w_mode="loose")
    with pytest.raises(ValueError, match="learning_rate"):
        T.TrainConfig(d=3, tasks=task, learning_rate=-1.0)
    with pytest.raises(ValueError, match="noise"):
        T.TrainConfig(d=3, tasks=task, noise=-0.1)
    with pytest.raises(ValueError, match="n_max"):
        T.TrainConfig(d=3, tasks=task, n_max=4)
    with pytest.raises(TypeError, match="Task.cov"), pytest.warns(DeprecationWarning):
        T.Task(np.eye(3), 5)
    with pytest.raises(ValueError, match="Task.n"), pytest.warns(DeprecationWarning):
        T.Task(cov, 0)
    with pytest.raises(TypeError, match="tasks\\[0\\] must be a Task"):
        T.TrainConfig(d=3, tasks=((cov, 5),))
    with pytest.raises(ValueError, match="mixture is empty"):
        tts.task_mixture([], [])
    with pytest.raises(ValueError, match="share one dimension"):
        tts.task_mixture([cov, tts.identity(4)], [5, 5])
    config = T.TrainConfig(d=3, tasks=task, steps=2, batch=4)
    train = T.make_train(config)
    with pytest.raises(TypeError, match="key"):
        train(0)
    with pytest.raises(ValueError, match="n_max"):
        train(jax.random.key(0), tts.task_mixture([cov], [9]))
    with pytest.raises(ValueError, match="tasks.covariances.eigenvalues must have shape"):
        train(jax.random.key(0), tts.task_mixture([cov, cov], [5, 5]))
    bad = dataclasses.replace(tts.task_mixture([cov], [5]), probs=jnp.asarray([0.5]))
    with pytest.raises(ValueError, match="sum to 1"):
        train(jax.random.key(0), bad)
    with pytest.raises(ValueError, match="chunk"):
        T.fit(config, jax.random.key(0), chunk=0, progress=False)


def test_cli_train_writes_params_config_and_loss_curve(tmp_path, capsys):
    from ttscale import cli

    out = tmp_path / "run"
    argv = ["train", *CLI_ARGS, "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "||P - P*||_F" in capsys.readouterr().out
    for name in ("params.npz", "config.json", "checkpoint.npz", "losses.csv", "loss.png"):
        assert (out / name).stat().st_size > 0, name
    assert T.load_config(str(out / "params.npz")) == _small_mixture_config()
    curve = np.loadtxt(out / "losses.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(curve[:, 1], T.load_array(str(out / "params.npz"), "losses"), rtol=1e-6)
    assert cli.main(argv) == 0  # a finished run: resumes at its end
    assert cli.main(["train", "--spectrum", "power_law:alpha=x", "--out", str(tmp_path / "bad")]) == 2
    assert "--spectrum" in capsys.readouterr().err
    assert cli.main(["train", "--n", "4,6", "--spectrum", "identity", "--spectrum", "identity",
                     "--spectrum", "identity", "--out", str(tmp_path / "bad")]) == 2
    assert "--n" in capsys.readouterr().err
    assert cli.main(["train", "--steps", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "steps" in capsys.readouterr().err
    assert cli.main(["train", "--probs", "0.5,0.6", "--spectrum", "identity", "--spectrum", "identity",
                     "--out", str(tmp_path / "bad")]) == 2
    assert "sum to 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- any model through the protocol
def _adam(steps):
    import optax

    return optax.adam(optax.cosine_decay_schedule(0.05, steps))


@pytest.mark.parametrize("name, rotated", [("gd:eta=0.1", False), ("pseudo_newton", True), ("lsa", False)])
def test_make_model_train_reaches_the_theorem_3_1_preconditioner(name, rotated):
    """Training any registered model by the protocol (no model code in training.py) lands on Γ(Λ, n)⁻¹:
    gd's step vector becomes diag Γ⁻¹ (diagonal Λ), a dense pseudo-Newton P becomes the dense Γ⁻¹ of a
    rotated Λ, and a freely trained LSA's effective preconditioner −c V[ŵ, x] becomes Γ⁻¹. The optimum
    is the closed form of theory (measured relative errors 0.3-0.5 % at 400 steps × 1024 prompts)."""
    from ttscale import models, theory

    lam = tts.power_law(4, 1.0)
    if rotated:
        lam = tts.rotated(jax.random.key(2), lam)
    model = models.get(name)
    if name == "pseudo_newton":
        params0 = models.pseudo_newton.PseudoNewtonParams(jnp.zeros((4, 4)))
    elif name == "lsa":
        params0 = tts.paper_init(4, c=0.8)
    else:
        params0 = model.init(lam, 20.0)
    train = training.make_model_train(model, tts.task_mixture([lam], [20]), steps=400, batch=1024, optimizer=_adam(400))
    res = train(jax.random.key(0), params0)
    target = theory.gamma_inverse(lam, 20.0)
    learned = model.preconditioner(res.params)
    assert float(training.relative_error(learned, target)) < 0.02
    # and not a nearby wrong answer: Γ⁻¹ at n = ∞ (Λ⁻¹) is > 10 % away
    assert float(training.relative_error(jnp.linalg.inv(lam.matrix()), target)) > 0.1
    assert np.all(np.isfinite(np.asarray(res.losses))) and float(res.losses[-20:].mean()) < float(res.losses[0])


def test_make_model_train_mixture_loss_is_the_probability_weighted_one_step_error():
    """At fixed parameters the stratified loss estimates Σ π_ℓ ½ one_step_error(P, Λ_ℓ, n_ℓ) (closed form)."""
    import optax

    from ttscale import models, theory

    tasks = [(tts.power_law(3, 0.0), 10, 0.25), (tts.power_law(3, 1.5), 40, 0.75)]
    model = models.get("gd:eta=0.2")
    params = model.init(tasks[0][0], 1.0)
    frozen = optax.set_to_zero()  # losses of 200 independent batches at fixed parameters
    mixture = tts.task_mixture([c for c, _, _ in tasks], [n for _, n, _ in tasks], [p for _, _, p in tasks])
    train = training.make_model_train(model, mixture, steps=200, batch=4000, optimizer=frozen)
    losses = np.asarray(train(jax.random.key(3), params).losses, np.float64)
    exact = sum(p * 0.5 * float(theory.one_step_error(0.2 * jnp.eye(3), c, n)) for c, n, p in tasks)
    z = (losses.mean() - exact) / (losses.std(ddof=1) / np.sqrt(len(losses)))
    assert abs(z) < 4, (losses.mean(), exact, z)


def test_make_model_train_refuses_bad_input():
    from ttscale import models

    model = models.get("gd")
    lam = tts.identity(3)
    adam = _adam(10)
    one = tts.task_mixture([lam], [10])
    with pytest.raises(TypeError, match="tasks"):
        training.make_model_train(model, "tasks", 10, 8, adam)
    with pytest.raises((TypeError, ValueError), match=r"tasks\.lengths\[0\]"):
        training.make_model_train(model, tts.task_mixture([lam], [2.5]), 10, 8, adam)
    with pytest.raises(TypeError, match="optimizer"):
        training.make_model_train(model, one, 10, 8, "adam")
    with pytest.raises(TypeError, match="model"):
        training.make_model_train("gd", one, 10, 8, adam)
    # the deprecated list of (covariance, n, probability) triples still works, with a warning
    with pytest.warns(DeprecationWarning, match="task_mixture"):
        training.make_model_train(model, [(lam, 10, 1.0)], 10, 8, adam)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="sum to 1"):
        training.make_model_train(model, [(lam, 10, 0.5)], 10, 8, adam)


# ----------------------------------------------------------------------------- the optimiser's step sizes, exactly
def _first_update(config, tasks):
    """The optimiser's first update for an all-ones gradient (constant schedule: ``−step`` per entry)."""
    theta = T.init_trainable(config)
    opt = T.make_optimizer(config, tasks, theta)
    grads = jax.tree_util.tree_map(jnp.ones_like, theta)
    updates, _ = opt.update(grads, opt.init(theta), theta)
    return jax.tree_util.tree_map(lambda u: np.asarray(u, np.float64), updates)


def test_auto_sgd_step_sizes_are_the_closed_forms():
    """SGD's auto steps (module docstring): ``2 / (λ_max + λ_min)`` of ``c² Q`` on the x columns of V, ``1 / h_y`` on
    its y column, ``Q = Σ π (Γ Λ + σ² Λ / n)``, ``h_y = c² Σ π (1 + 2/n)((tr Λ + σ²)² + 2 tr Λ²)`` — written out
    here in NumPy for a rotated 2-task mixture with label noise; tied c (c = 1) gets ``1 / tr(P Q Pᵀ)``,
    ``P = Λ̄ Q⁻¹``; Adam's auto step is 5e-2. (A 10 % error in any of them fails at rtol = 1e-4.)"""
    d = 3
    covs = [tts.rotated(jax.random.key(4), tts.power_law(d, 1.0)), tts.power_law(d, 0.3)]
    ns, probs, noise = (5, 12), (0.4, 0.6), 0.5
    mats = [np.asarray(c.matrix(), np.float64) for c in covs]
    Q = sum(p * (((1 + 1 / n) * L + np.trace(L) / n * np.eye(d)) @ L + noise**2 * L / n)
            for p, L, n in zip(probs, mats, ns))
    h_y1 = sum(p * (1 + 2 / n) * ((np.trace(L) + noise**2) ** 2 + 2 * np.trace(L @ L)) for p, L, n in zip(probs, mats, ns))
    b = lsa_mod.blocks(d)
    tasks = tts.task_mixture(covs, list(ns))
    for c in (1.0, 0.7):
        config = T.TrainConfig(d=d, tasks=tasks, probs=probs, noise=noise, c=c, schedule="constant", steps=10, batch=4)
        ev = np.linalg.eigvalsh(c**2 * Q)
        lr_x, lr_y = 2 / (ev[-1] + ev[0]), 1 / (c**2 * h_y1)
        step = -_first_update(config, config.mixture())["V"]
        expected = np.full(step.shape, lr_x)
        expected[:, b["y"]] = lr_y
        np.testing.assert_allclose(step, expected, rtol=1e-4)
        if c == 1.0:
            block = -_first_update(config.replace(v_mode="block"), config.mixture())["V"]
            np.testing.assert_allclose(block, np.full((d, d), lr_x), rtol=1e-4)
    tied = T.TrainConfig(d=d, tasks=tasks, probs=probs, noise=noise, schedule="constant", steps=10, batch=4, w_mode="tied")
    P = sum(p * L for p, L in zip(probs, mats)) @ np.linalg.inv(Q)
    np.testing.assert_allclose(-_first_update(tied, tied.mixture())["c"], 1 / np.trace(P @ Q @ P.T), rtol=1e-4)
    adam = tied.replace(optimizer="adam")
    for leaf in jax.tree_util.tree_leaves(_first_update(adam, adam.mixture())):
        np.testing.assert_allclose(leaf, -5e-2, rtol=1e-5)  # Adam's first step: lr · g / |g|


# ----------------------------------------------------------------------------- reliability: divergence, validation, resume
def _diverging_config(**changes) -> T.TrainConfig:
    """SGD at learning rate 1e6 on Λ = I: the loss is inf by step 4."""
    return T.TrainConfig(d=3, tasks=tts.task_mixture([tts.identity(3)], [5]), steps=6, batch=8, learning_rate=1e6, **changes)


def test_fit_and_make_train_refuse_to_return_a_diverged_run(tmp_path):
    """A run whose loss or parameters stop being finite stops with FloatingPointError naming the step and what to
    change; fit writes no params.npz and no checkpoint beyond the last finite one."""
    config = _diverging_config()
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"training diverged at step \d of 6 \(loss inf.*lower learning_rate"):
        T.fit(config, jax.random.key(0), out=str(out), chunk=2, progress=False)
    assert not (out / T.PARAMS).exists()
    if (out / T.CHECKPOINT).exists():  # the chunks before the divergence, all finite
        with np.load(out / T.CHECKPOINT) as data:
            assert all(np.all(np.isfinite(data[k])) for k in data.files if k.startswith("leaf_") or k == "losses")
    with pytest.raises(FloatingPointError, match=r"training diverged at step \d of 6"):
        T.make_train(config)(jax.random.key(0))
    tasks = tts.stack_mixtures([config.mixture()] * 2)
    with pytest.raises(FloatingPointError, match=r"model 0 \(2 of 2 models diverged\)"):
        T.make_train_batched(config)(jax.random.split(jax.random.key(0), 2), tasks)


def test_cli_train_divergence_is_an_error_and_writes_no_params(tmp_path, capsys):
    from ttscale import cli

    out = tmp_path / "run"
    argv = ["train", "--d", "3", "--n", "5", "--steps", "6", "--batch", "8", "--lr", "1e6", "--no-progress",
            "--chunk", "2", "--out", str(out)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("ttscale train: error: training diverged at step")
    assert "--lr" in err and "fresh out directory" in err
    assert not (out / T.PARAMS).exists() and not (out / "losses.csv").exists()


def test_directly_built_covariances_are_validated():
    """A Covariance(...) built directly skips the constructors' checks: task_mixture (and so TrainConfig, fit and
    make_train) runs check_covariance and names the argument."""
    bad = {
        "negative": (ValueError, tts.Covariance(jnp.array([1.0, -1.0, 1.0])), "non-negative"),
        "nan": (ValueError, tts.Covariance(jnp.array([1.0, jnp.nan, 1.0])), "non-finite"),
        "complex": (TypeError, tts.Covariance(jnp.array([1.0, 1.0, 1.0]) + 0j), "real floating"),
        "basis": (ValueError, tts.Covariance(jnp.ones(3), jnp.ones((3, 3))), "orthonormal"),
    }
    for kind, (error, cov, text) in bad.items():
        with pytest.raises(error, match=rf"covariances\[0\].*({text}|negative eigenvalue)"):
            tts.task_mixture([cov], [5])


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    """config.json deleted: the config stored inside checkpoint.npz still refuses another config, naming the
    directory and the differing fields; the original config resumes (and config.json is written again)."""
    config = T.TrainConfig(d=3, tasks=tts.task_mixture([tts.identity(3)], [5]), steps=6, batch=8)
    key = jax.random.key(3)
    out = tmp_path / "run"

    def stop(step, losses):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        T.fit(config, key, out=str(out), chunk=2, progress=False, callback=stop)
    (out / T.CONFIG).unlink()
    with pytest.raises(ValueError, match=rf"{out} holds a training run with a different config.*batch \(8 → 16\)"):
        T.fit(config.replace(batch=16), key, out=str(out), chunk=2, progress=False)
    other = T.TrainConfig(d=3, tasks=tts.task_mixture([tts.power_law(3, 1.0)], [7]), steps=6, batch=8)
    with pytest.raises(ValueError, match=r"tasks\[0\]\.eigenvalues, tasks\[0\]\.n \(5 → 7\)"):
        T.fit(other, key, out=str(out), chunk=2, progress=False)
    seen = []
    T.fit(config, key, out=str(out), chunk=2, progress=False, callback=lambda s, l: seen.append(s))
    assert seen == [4, 6] and (out / T.CONFIG).exists()
    # a checkpoint without a stored config (older ttscale) and no config.json cannot be checked: refused
    with np.load(out / T.CHECKPOINT) as data:
        legacy = {k: data[k] for k in data.files if k != "config_json"}
    np.savez(out / T.CHECKPOINT, **legacy)
    with pytest.raises(ValueError, match="different config"):
        T.fit(config.replace(batch=16), key, out=str(out), progress=False)  # config.json still guards it
    (out / T.CONFIG).unlink()
    with pytest.raises(ValueError, match="holds no config"):
        T.fit(config, key, out=str(out), progress=False)
    (out / T.CHECKPOINT).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="checkpoint.npz cannot be read"):
        T.fit(config, key, out=str(out), progress=False)


def test_fit_refuses_an_out_that_is_a_file(tmp_path):
    config = T.TrainConfig(d=3, tasks=tts.task_mixture([tts.identity(3)], [5]), steps=2, batch=4)
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        T.fit(config, jax.random.key(0), out=str(path), progress=False)
    with pytest.raises(ValueError, match="cannot create the directory"):
        T.fit(config, jax.random.key(0), out=str(path / "sub"), progress=False)


# ----------------------------------------------------------------------------- the deprecated task forms
def test_deprecated_task_forms_warn_and_still_train_the_same_model():
    """Task, TaskArrays, make_task_arrays, stack_task_arrays and TrainConfig.task_arrays() warn (one release)
    and give the same TaskMixture as the new API, so old code trains the identical model."""
    cov = tts.power_law(3, 1.0)
    new = T.TrainConfig(d=3, tasks=tts.task_mixture([cov, tts.identity(3)], [4, 6], [0.25, 0.75]), steps=3, batch=8)
    with pytest.warns(DeprecationWarning, match="task_mixture"):
        old_tasks = (T.Task(cov, 4), T.Task(tts.identity(3), 6))
    old = T.TrainConfig(d=3, tasks=old_tasks, probs=(0.25, 0.75), steps=3, batch=8)
    assert old == new
    with pytest.warns(DeprecationWarning, match="task_mixture"):
        arrays = T.make_task_arrays([cov, tts.identity(3)], [4, 6], [0.25, 0.75])
    with pytest.warns(DeprecationWarning, match="stack_mixtures"):
        stacked = T.stack_task_arrays([arrays, arrays])
    with pytest.warns(DeprecationWarning, match="TaskMixture"):
        assert T.TaskArrays is tts.TaskMixture
    with pytest.warns(DeprecationWarning, match="mixture"):
        np.testing.assert_array_equal(new.task_arrays().probs, [0.25, 0.75])
    assert stacked.lengths.shape == (2, 2)
    a = T.make_train(new)(jax.random.key(0), arrays)
    b = T.make_train(new)(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(a.losses), np.asarray(b.losses))
