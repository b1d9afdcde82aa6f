"""GPT-2 with estimate tokens (ttscale.gpt2): token layouts, causality, CoT rollout, training, sweep model, I/O, errors;
the study around it (ttscale.experiments.gpt2) and its figure (ttscale.plots.plot_gpt2).

Tiny models on CPU; prompts built with NumPy and few distinct shapes, to keep compiles few.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttscale as tts
from ttscale import gpt2 as G
from ttscale import plots
from ttscale.experiments import gpt2 as study

D, N, K = 2, 4, 3
FMTS = G.FORMATS


def max_len(fmt, n=N, k=K):
    return G.context_length(fmt, n) + k


@pytest.fixture(scope="module")
def models():
    return {f: G.init_gpt2(0, G.gpt2_config("tiny", d=D, max_len=max_len(f), format=f)) for f in FMTS}


@pytest.fixture(scope="module")
def model(models):
    return models["garg"]


def numpy_prompts(seed, d=D, n=N, batch=8):
    """Gaussian prompts built with NumPy (no PRNG compile in the tests)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, d, n)).astype(np.float32)
    w = rng.standard_normal((batch, d)).astype(np.float32)
    return tts.Prompts(jnp.asarray(X), jnp.asarray(np.einsum("bdn,bd->bn", X, w)), jnp.asarray(w))


@pytest.fixture(scope="module")
def prompts():
    return numpy_prompts(3)


def loop_rollout(model, prompts, k):
    """Reference CoT: k explicit forward passes over a growing sequence (a Python loop, no scan)."""
    estimates = jnp.zeros((prompts.batch, 1, D))
    out = []
    for _ in range(k):
        w_next = G.forward(model, prompts, estimates)[:, -1]
        out.append(w_next)
        estimates = jnp.concatenate([estimates, w_next[:, None]], axis=1)
    return jnp.stack(out, axis=1)


def numpy_sq_errors(est, w):
    est, w = np.asarray(est, np.float64), np.asarray(w, np.float64)
    e0 = np.sum(w**2, axis=1, keepdims=True)
    return np.concatenate([e0, np.sum((est - w[:, None]) ** 2, axis=-1)], axis=1)


def expected_parameter_count(d, max_len, width, layers, heads, mlp_ratio=4, fmt="garg"):
    block = 2 * 2 * width + (3 * width * width + 3 * width) + (width * width + width)
    block += (mlp_ratio * width * width + mlp_ratio * width) + (mlp_ratio * width * width + width)
    if fmt == "garg":
        embed = d * width + width + max_len * width  # one shared read-in
    else:
        embed = (d + 1) * width + width + d * width + width + 2 * width + max_len * width
    return layers * block + embed + 2 * width + width * d + d


@pytest.mark.parametrize("fmt", FMTS)
def test_parameter_count_paper_preset(fmt):
    cfg = G.gpt2_config("paper", d=10, max_len=60, format=fmt)
    n_params = G.count_parameters(cfg)
    assert n_params == expected_parameter_count(10, 60, 256, 12, 8, fmt=fmt)
    assert 9.4e6 < n_params < 9.6e6  # the ≈9.5M ICL GPT-2


def test_garg_token_layout(prompts):
    tokens = np.asarray(G.garg_tokens(prompts))
    X, y = np.asarray(prompts.X), np.asarray(prompts.y)
    b, d, m = X.shape
    assert tokens.shape == (b, 2 * m, d)
    for i in range(m):
        np.testing.assert_array_equal(tokens[:, 2 * i], X[:, :, i])  # x_{i+1}
        np.testing.assert_array_equal(tokens[:, 2 * i + 1, 0], y[:, i])  # [y_{i+1}, 0, …, 0]
        np.testing.assert_array_equal(tokens[:, 2 * i + 1, 1:], 0.0)
    pair = np.asarray(G.context_tokens(prompts, "pair"))
    assert pair.shape == (b, m, d + 1)
    np.testing.assert_array_equal(pair[:, :, :d], np.swapaxes(X, 1, 2))
    np.testing.assert_array_equal(pair[:, :, d], y)


@pytest.mark.parametrize("fmt", FMTS)
def test_shapes_and_causal_mask(models, prompts, fmt):
    """The hidden state at position t is independent of every token at positions > t (context and estimates)."""
    model = models[fmt]
    est = jnp.asarray(np.random.default_rng(1).standard_normal((prompts.batch, K, D)), jnp.float32)
    assert G.forward(model, prompts, est).shape == (prompts.batch, K, D)
    errs = G.cot_errors(model, prompts, K)
    assert errs.shape == (prompts.batch, K + 1)
    np.testing.assert_allclose(errs[:, 0], jnp.sum(prompts.w**2, axis=1), rtol=1e-6)
    context = G.context_tokens(prompts, fmt)
    L = context.shape[1]
    tokens = np.concatenate([np.asarray(context), np.zeros((prompts.batch, K, context.shape[2]))], axis=1)

    def hidden(tok):
        tok = jnp.asarray(tok, jnp.float32)
        if fmt == "garg":
            h = model.embed(tok[:, :L], tok[:, L:])
        else:  # pair estimate tokens are d-dimensional
            h = model.embed(tok[:, :L], tok[:, L:, :D])
        return np.asarray(model.hidden(h)[0])

    tokens[:, L:, :D] = np.asarray(est)
    base = hidden(tokens)
    T = tokens.shape[1]
    for p in (1, L - 1, L + 1, T - 1):
        moved = tokens.copy()
        moved[:, p:, :D] += 3.0  # change every token at positions >= p
        h = hidden(moved)
        np.testing.assert_allclose(h[:, :p], base[:, :p], atol=1e-5)
        assert np.max(np.abs(h[:, p] - base[:, p])) > 1e-3


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("method", G.COT_METHODS)
def test_cot_rollout_equals_python_loop(models, prompts, fmt, method):
    reference = loop_rollout(models[fmt], prompts, K)
    np.testing.assert_allclose(G.cot_estimates(models[fmt], prompts, K, method), reference, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("fmt", FMTS)
def test_cot_training_loss_is_mean_rollout_error(models, prompts, fmt):
    """Every supervised position: the loss is the mean over k = 1..K of the rollout's errors (NumPy, from the
    Python-loop rollout), for both stop-gradient settings; single-step is the k = 1 error alone. The two
    self-rollout settings share the loss value but not the gradient."""
    from flax import nnx

    model = models[fmt]
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    errs = numpy_sq_errors(loop_rollout(model, prompts, K), prompts.w)
    grads = {}
    for protocol, sg, expected in (("self_rollout", True, errs[:, 1:].mean()), ("self_rollout", False, errs[:, 1:].mean()),
                                   ("single_step", True, errs[:, 1].mean())):
        cfg = G.GPT2TrainConfig(model=model.config, n=N, protocol=protocol, k_train=K, steps=1, stop_gradient=sg)
        loss_fn = jax.jit(jax.value_and_grad(lambda p, pr: G.training_loss(nnx.merge(graphdef, p, rest), pr, cfg)))
        loss, g = loss_fn(params, prompts)
        np.testing.assert_allclose(loss, expected, rtol=1e-4)
        grads[(protocol, sg)] = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)])
    a, b = grads[("self_rollout", True)], grads[("self_rollout", False)]
    assert np.max(np.abs(a - b)) > 1e-4 * np.max(np.abs(a))


def test_curriculum_mask():
    p = numpy_prompts(5, d=3, n=5, batch=4)
    noisy = p._replace(y=p.y + 0.1)
    masked = G.mask_prompts(noisy, 2, 3)
    X, w = np.asarray(p.X).copy(), np.asarray(p.w).copy()
    X[:, 2:, :] = 0.0
    X[:, :, 3:] = 0.0
    w[:, 2:] = 0.0
    y = np.einsum("bdn,bd->bn", X, w) + 0.1
    y[:, 3:] = 0.0
    np.testing.assert_allclose(masked.X, X)
    np.testing.assert_allclose(masked.w, w)
    np.testing.assert_allclose(masked.y, y, atol=1e-5)
    c = G.Curriculum(d_start=1, n_start=2, steps=10)
    assert [tuple(int(v) for v in c.active(s, 3, 6)) for s in (0, 5, 10, 50)] == [(1, 2), (2, 4), (3, 6), (3, 6)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("gpt2_run"))
    # the pair format: a 1-layer model learns it in 300 steps (garg needs attention to pair x with y tokens)
    cfg = G.GPT2TrainConfig(model=G.gpt2_config("tiny", d=D, max_len=max_len("pair"), format="pair"), n=N, protocol="single_step",
                            steps=300, batch=32, learning_rate=3e-3, chunk=150)
    return cfg, out, G.train_gpt2(0, cfg, tts.identity(D), out=out, progress=False)


def test_training_beats_trivial_predictor(trained):
    cfg, _, result = trained
    assert result.losses.shape == (300,) and np.all(np.isfinite(result.losses))
    # the trivial ŵ = 0 scores E||w||² = d; 50 batches of 32 prompts: s.e. ≈ sqrt(2d/1600) ≈ 0.05
    assert np.mean(result.losses[-50:]) < D - 0.5
    fresh = numpy_prompts(99, batch=2000)
    err1 = G.cot_errors(result.model, fresh, 1)[:, 1]
    se = float(jnp.std(err1) / np.sqrt(err1.shape[0]))
    assert float(jnp.mean(err1)) < D - 4 * max(se, 0.05)
    # and it really trains at its learning rate: measured (CPU, seeds 0-2) tail loss 0.34-0.38 and fresh k = 1
    # error 0.35-0.39 (s.e. 0.015) at lr = 3e-3, but 0.67-0.78 at lr = 3e-4 (Adam at a tenth of its step)
    assert np.mean(result.losses[-50:]) < 0.55
    assert float(jnp.mean(err1)) < 0.55


def test_optimizer_is_adam_at_the_configured_learning_rate():
    """Adam's first update is ``−lr · g / (|g| + ε)`` per entry: magnitude exactly ``lr`` whatever the gradient's
    scale (with and without the global-norm clip), so the configured learning rate is the step actually taken."""
    cfg = G.GPT2TrainConfig(model=G.gpt2_config("tiny", d=D, max_len=max_len("garg")), n=N, protocol="single_step", learning_rate=3e-3)
    params = {"a": jnp.zeros((3,)), "b": jnp.zeros((2, 2))}
    grads = {"a": jnp.array([0.2, -7.0, 0.1]), "b": jnp.array([[5.0, -0.5], [0.05, -30.0]])}
    for clip in (1.0, 0.0):
        tx = G.make_optimizer(dataclasses.replace(cfg, clip=clip))
        updates, _ = tx.update(grads, tx.init(params), params)
        for u, g in zip(jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(grads)):
            np.testing.assert_allclose(np.asarray(u), -3e-3 * np.sign(np.asarray(g)), rtol=1e-4)


def test_save_load_round_trip(trained, tmp_path, prompts):
    _, _, result = trained
    path = str(tmp_path / "model.npz")
    G.save_model(path, result.model)
    loaded = G.load_model(path)
    assert loaded.config == result.model.config
    np.testing.assert_array_equal(G.cot_estimates(loaded, prompts, K), G.cot_estimates(result.model, prompts, K))


def test_resume_skips_finished_run_and_refuses_other_config(trained, prompts):
    cfg, out, result = trained
    again = G.train_gpt2(0, cfg, tts.identity(D), out=out, progress=False)
    np.testing.assert_array_equal(again.losses, result.losses)
    np.testing.assert_array_equal(G.cot_estimates(again.model, prompts, 1), G.cot_estimates(result.model, prompts, 1))
    for other, key, cov in ((dataclasses.replace(cfg, learning_rate=1e-2), 0, tts.identity(D)),
                            (dataclasses.replace(cfg, curriculum=G.Curriculum(1, 2, 10)), 0, tts.identity(D)),
                            (cfg, 1, tts.identity(D)), (cfg, 0, tts.power_law(D, 1.0))):
        with pytest.raises(ValueError, match="different training config"):
            G.train_gpt2(key, other, cov, out=out, progress=False)
    loaded = G.load_model(os.path.join(out, "checkpoint.npz"))  # a checkpoint is also a model file
    np.testing.assert_array_equal(G.cot_estimates(loaded, prompts, 1), G.cot_estimates(result.model, prompts, 1))


def test_old_argument_order_warns(model):
    cfg = G.GPT2TrainConfig(model=model.config, n=N, protocol="single_step", steps=1, chunk=1, batch=2)
    with pytest.warns(DeprecationWarning, match="key first"):
        old = G.init_gpt2(model.config, 0)
    np.testing.assert_array_equal(np.asarray(old.read_out.kernel[...]), np.asarray(model.read_out.kernel[...]))
    with pytest.warns(DeprecationWarning, match="key first"):
        G.train_gpt2(cfg, tts.identity(D), 0, progress=False)


# ----------------------------------------------------------------------------- the sweep model
def _cell_prompts(spec, s, i_n, i_m, idx):
    """The prompts of cell (s, i_n, i_m) as the sweep's documented key scheme and the public sampler draw them."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.key(spec.seed), i_m), s), i_n)
    cov = tts.Covariance(jnp.asarray(spec.test_covariances().eigenvalues[s]))
    return tts.prompts.prompts_at(key, idx, cov, int(spec.ms[i_m]), spec.noise)


def test_gpt2_sweep_is_its_own_rollout_on_the_same_prompts(tmp_path):
    """``gpt2:params=DIR`` with one network per training length (DIR/n<N>/): every cell of the sweep is that
    network's own rollout (cot_errors) on the very prompts the sweep draws, and the pseudo-Newton reference of
    sweep_with_reference is ``(I − P S)`` on the same prompts (NumPy)."""
    from ttscale.models import gpt2 as gm
    from ttscale.sweep import SweepSpec, prompt_errors

    cfg = G.gpt2_config("tiny", d=D, max_len=max_len("garg", n=6))
    nets = {}
    for n, seed in ((4, 1), (6, 2)):
        nets[n] = G.init_gpt2(seed, cfg)
        os.makedirs(tmp_path / f"n{n}")
        G.save_model(str(tmp_path / f"n{n}" / "model.npz"), nets[n])
    spec = SweepSpec(d=D, alphas=(1.0,), test="identity", ns=(4.0, 6.0), ms=(5.0,), k_max=K, prompts=16, chunk=16,
                     model=f"gpt2:params={tmp_path}", seed=3)
    per_prompt = prompt_errors(spec)  # [S, N, P, K+1]
    assert per_prompt.shape == (1, 2, 16, K + 1)
    idx = np.arange(16)
    for i_n, n in enumerate((4, 6)):
        pr = _cell_prompts(spec, 0, i_n, 0, idx)
        np.testing.assert_allclose(per_prompt[0, i_n], G.cot_errors(nets[n], pr, K), rtol=2e-5, atol=1e-6)
    both = study.sweep_with_reference(spec)
    assert list(both.model.values) == ["gpt2", "pseudo_newton"]
    np.testing.assert_allclose(both["mean"].sel(model="gpt2").values[0, :, 0], per_prompt[0].mean(axis=1), rtol=1e-5)
    lam = np.asarray(tts.power_law(D, 1.0).eigenvalues, np.float64)
    for i_n, n in enumerate((4, 6)):
        pr = _cell_prompts(spec, 0, i_n, 0, idx)
        X, w = np.asarray(pr.X, np.float64), np.asarray(pr.w, np.float64)
        # Γ(Λ, n) = (1 + 1/n) Λ + tr(Λ)/n I for diagonal Λ (docs/science.md §3)
        P = np.diag(1.0 / ((1 + 1 / n) * lam + lam.sum() / n))
        S = np.einsum("bim,bjm->bij", X, X) / X.shape[-1]
        e, errs = -w, [np.sum(w**2, axis=1)]
        for _ in range(K):
            e = e - np.einsum("ij,bj->bi", P, np.einsum("bij,bj->bi", S, e))
            errs.append(np.sum(e**2, axis=1))
        np.testing.assert_allclose(both["mean"].sel(model="pseudo_newton").values[0, i_n, 0], np.mean(errs, axis=1), rtol=1e-4)
    assert "limit_error" in both and "model" not in both["limit_error"].dims
    # a training length without a network: inf, not another network's numbers
    missing = study.sweep_with_reference(spec.replace(ns=(5.0,)))
    assert np.all(np.isinf(missing["mean"].sel(model="gpt2").values[..., 1:]))


def test_gpt2_model_name_follows_the_weights_and_bad_params(tmp_path, model):
    from ttscale.models import gpt2 as gm

    G.save_model(str(tmp_path / "a.npz"), model)
    name = tts.models.get(f"gpt2:params={tmp_path / 'a.npz'}").name
    assert name == gm.make(params=model).name and name.startswith("gpt2:params=sha256:")
    assert gm.make(params=G.init_gpt2(7, model.config)).name != name
    with pytest.raises(ValueError, match="needs params"):
        tts.models.get("gpt2")
    with pytest.raises(ValueError, match="neither a model file nor a folder"):
        tts.models.get(f"gpt2:params={tmp_path / 'missing'}")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="no checkpoint.npz"):
        tts.models.get(f"gpt2:params={tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="m = inf|inf"):
        tts.SweepSpec(d=D, ns=(4.0,), ms=(float("inf"),), model=gm.make(params=model))


def test_bad_inputs(model, prompts):
    wrong_d = numpy_prompts(0, d=D + 1, batch=4)
    with pytest.raises(ValueError, match="d=3 but the model has d=2"):
        G.cot_estimates(model, wrong_d, 2)
    with pytest.raises(ValueError, match="k_max must be >= 0"):
        G.cot_estimates(model, prompts, -1)
    with pytest.raises(TypeError, match="k_max must be an int"):
        G.cot_errors(model, prompts, 1.5)
    too_long = numpy_prompts(0, n=N + 2, batch=4)
    with pytest.raises(ValueError, match="max_len"):
        G.cot_estimates(model, too_long, 1)
    with pytest.raises(ValueError, match="max_len"):
        G.cot_estimates(model, prompts, K + 1)
    with pytest.raises(TypeError, match="prompts must be"):
        G.cot_estimates(model, (prompts.X, prompts.y), 1)
    with pytest.raises(TypeError, match="model must be"):
        G.cot_estimates("gpt2", prompts, 1)
    with pytest.raises(ValueError, match="method"):
        G.cot_estimates(model, prompts, 1, method="beam")
    with pytest.raises(ValueError, match="divisible"):
        G.GPT2Config(d=2, max_len=8, width=10, heads=3)
    with pytest.raises(ValueError, match="format"):
        G.GPT2Config(d=2, max_len=8, width=4, heads=2, format="interleaved")
    with pytest.raises(ValueError, match="preset"):
        G.gpt2_config("huge", d=2, max_len=8)
    with pytest.raises(ValueError, match="protocol"):
        G.GPT2TrainConfig(model=model.config, n=N, protocol="teacher")
    with pytest.raises(ValueError, match="max_len"):
        G.GPT2TrainConfig(model=model.config, n=N, protocol="self_rollout", k_train=K + 1)
    with pytest.raises(ValueError, match="curriculum starts"):
        G.GPT2TrainConfig(model=model.config, n=N, k_train=K, curriculum=G.Curriculum(D + 1, 1, 10))
    with pytest.raises(TypeError, match="stop_gradient"):
        G.GPT2TrainConfig(model=model.config, n=N, k_train=K, stop_gradient="no")
    cfg = G.GPT2TrainConfig(model=model.config, n=N, protocol="single_step", steps=1)
    with pytest.raises(ValueError, match="cov has d=3"):
        G.train_gpt2(0, cfg, tts.identity(D + 1), progress=False)
    with pytest.raises(ValueError, match="estimates must be"):
        G.forward(model, prompts, jnp.zeros((prompts.batch, 1, D + 1)))
    with pytest.raises(ValueError, match="size"):
        study.gpt2_experiment("enormous")
    for old, new in (("quick", "cpu"), ("full", "paper")):
        with pytest.raises(ValueError, match=f"renamed '{new}'"):
            study.gpt2_experiment(old)
    with pytest.raises(ValueError, match="scenario"):
        study.gpt2_experiment("tiny", scenarios=("sideways",))


def test_sizes_one_word_one_size_and_help_lists_times():
    from ttscale.commands import gpt2 as cmd

    assert tuple(cmd.SIZES) == tuple(study.EXPERIMENT_SIZES) == tuple(study.SIZE_TIMES)
    assert "quick" not in study.EXPERIMENT_SIZES
    import argparse

    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    text = p.format_help()
    for name in study.EXPERIMENT_SIZES:
        assert any(line.split()[:1] == [name] and ("min" in line or "hour" in line) for line in text.splitlines()), name


def _fake_dataset():
    """Every cell different (GPT-2 vs LSA, scenario, n, k), so the plot and the summary must read the right one."""
    import xarray as xr

    ks, ns = np.arange(4), np.array([4.0, 6.0])
    scale = np.array([1.0, 3.0])[:, None, None] * np.array([1.0, 0.5])[None, :, None]  # [scenario, n, 1]
    data = {}
    for i, m in enumerate(("gpt2", "lsa")):
        for j, s in enumerate(("mean", "stderr", "median")):
            data[f"{m}_{s}"] = (("scenario", "n", "k"), (1.0 + i + 0.1 * j) * scale * 0.5 ** ks)
    data["k1_ratio"] = (("scenario", "n"), np.array([[1.25, 0.8], [1.5, 2.0]]))
    data.update({v: (("scenario", "n"), np.ones((2, 2))) for v in ("k1_gpt2", "k1_lsa", "train_seconds")})
    data["train_loss"] = (("scenario", "n", "step"), np.ones((2, 2, 60)))
    return xr.Dataset(data, coords={"scenario": list(study.SCENARIOS), "n": ns, "k": ks, "step": np.arange(60)},
                      attrs={"protocol": "self_rollout", "parameters": 1})


def test_plot_and_summary_from_dataset():
    from ttscale.commands.gpt2 import summary_lines

    ds = _fake_dataset()
    fig = plots.plot_gpt2(ds)
    assert len(fig.axes) == 4 and len(fig.axes[0].lines) == 4  # GPT-2 + LSA per n
    # axes are (scenario row, statistic column); lines alternate GPT-2 (solid), LSA (dashed) per n
    for r, scenario in enumerate(study.SCENARIOS):
        for c, stat in enumerate(("mean", "median")):
            lines = fig.axes[2 * r + c].lines
            for j, n in enumerate(ds.n.values):
                for line, model in zip(lines[2 * j: 2 * j + 2], ("gpt2", "lsa")):
                    expected = ds[f"{model}_{stat}"].sel(scenario=scenario, n=n).values
                    np.testing.assert_allclose(line.get_ydata(), expected)
    text = summary_lines(ds)
    for scenario, ratios in zip(study.SCENARIOS, ([1.25, 0.8], [1.5, 2.0])):
        for n, ratio in zip((4, 6), ratios):
            assert any(line.split()[:3] == [scenario, "n=", str(n)] and f"gpt2/lsa = {ratio:.3f}" in line for line in text), (scenario, n)
    mean_row = " ".join(next(line for line in text if line.split()[:4] == ["tilted", "n=", "6", "mean"]).split())
    assert "gpt2: 1.5 0.75 0.375 0.188 | lsa: 3 1.5 0.75 0.375" in mean_row  # 1.5 · 0.5^k, and 2× that for the LSA


def test_gpu_script_smoke_mode(tmp_path):
    """benchmarks/gpu_gpt2.py --smoke: the one-call GPU script end to end at a seconds-scale size (in process)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "benchmarks"))
    try:
        import gpu_gpt2
    finally:
        sys.path.pop(0)
    out = tmp_path / "bench"
    assert gpu_gpt2.main(["--smoke", "--out", str(out), "--no-progress"]) == 0
    for name in ("gpt2_garg_self_rollout.npz", "gpt2_garg_self_rollout.png", "timings.json"):
        assert (out / name).exists(), name


# ----------------------------------------------------------------------------- reliability: argument validation
def test_directly_built_covariances_seeds_and_scenarios_are_validated(model):
    cfg = G.GPT2TrainConfig(model=model.config, n=N, protocol="single_step", steps=1)
    for cov, error, text in [
        (tts.Covariance(jnp.array([1.0, -1.0])), ValueError, r"cov\.eigenvalues must be non-negative"),
        (tts.Covariance(jnp.array([1.0, jnp.nan])), ValueError, r"cov\.eigenvalues has non-finite"),
        (tts.Covariance(jnp.ones(D) + 0j), TypeError, r"cov\.eigenvalues must be a real"),
        (tts.Covariance(jnp.ones(D), jnp.ones((D, D))), ValueError, r"cov\.basis must be orthonormal"),
    ]:
        with pytest.raises(error, match=text):
            G.train_gpt2(0, cfg, cov, progress=False)
    with pytest.raises(ValueError, match=r"key: an int seed must lie in 0\.\.2\*\*32 - 1"):
        G.train_gpt2(10**20, cfg, tts.identity(D), progress=False)
    with pytest.raises(ValueError, match="key: an int seed"):
        G.init_gpt2(-1, model.config)
    with pytest.raises(ValueError, match="scenarios must list at least one"):
        study.gpt2_experiment("tiny", scenarios=())
    with pytest.raises(TypeError, match="scenarios must be a tuple"):
        study.gpt2_experiment("tiny", scenarios="aligned")
    with pytest.raises(ValueError, match="must not repeat"):
        study.gpt2_experiment("tiny", scenarios=("aligned", "aligned"))
    with pytest.raises(ValueError, match="seed must be < 2"):
        study.gpt2_experiment("tiny", seed=2**40)


def test_moved_study_names_still_resolve_from_ttscale_gpt2():
    """The study and figure moved to ttscale.experiments.gpt2 / ttscale.plots; the old ttscale.gpt2 names are the
    very same objects (no warning), the mirrored defaults agree, and importing the presets imports no Flax."""
    import subprocess
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("GPT2Experiment", "EXPERIMENT_SIZES", "SIZE_TIMES", "SCENARIOS", "scenario_covariances",
                     "experiment_label", "resolve_size", "gpt2_experiment", "sweep_with_reference"):
            assert getattr(G, name) is getattr(study, name), name
            assert name in dir(G)
        assert G.plot_gpt2 is plots.plot_gpt2
        from ttscale.gpt2 import gpt2_experiment, plot_gpt2  # noqa: F401  (the from-import form too)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        G.no_such_name
    assert study.GPT2Experiment("tiny", 2, (4,), 1, 1, 1, 1e-3, 1, 1).format == G.DEFAULT_FORMAT
    assert inspect_default(study.gpt2_experiment, "protocol") == G.DEFAULT_PROTOCOL
    assert study.GPT2Experiment("tiny", 2, (4,), 1, 1, 1, 1e-3, 1, 1, format="pair").format == "pair"
    with pytest.raises(ValueError, match="format must be one of"):
        study.GPT2Experiment("tiny", 2, (4,), 1, 1, 1, 1e-3, 1, 1, format="interleaved")
    probe = "import sys, ttscale.experiments\nprint('FLAX_IMPORTED', 'flax' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "FLAX_IMPORTED False" in out.stdout, out.stdout[-500:]


def inspect_default(fn, arg):
    import inspect

    return inspect.signature(fn).parameters[arg].default


def test_gpt2_command_takes_the_one_spectrum_syntax():
    """``ttscale gpt2 --spectrum hard:H=40`` trains the tilted scenario on a power law of exactly that hardness."""
    import argparse

    from ttscale.commands import gpt2 as cmd

    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    exp = cmd.experiment_from_args(p.parse_args(["--size", "tiny", "--d", "6", "--spectrum", "hard:H=40"]))
    train, test = study.scenario_covariances("tilted", exp.d, exp.alpha, exp.spectrum)
    lam = np.asarray(train.eigenvalues, np.float64)
    np.testing.assert_allclose(lam.sum() / lam.min(), 40.0, rtol=1e-5)  # Hard(Λ) = tr Λ / λ_min
    np.testing.assert_allclose(lam.sum(), 6.0, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(test.eigenvalues), np.ones(6))
    with pytest.raises(ValueError, match="--spectrum"):
        cmd.experiment_from_args(p.parse_args(["--d", "6", "--spectrum", "hard:H=2"]))  # H < d: no such power law
    with pytest.raises(ValueError, match="--alpha"):
        cmd.experiment_from_args(p.parse_args(["--alpha", "1", "--spectrum", "identity"]))
