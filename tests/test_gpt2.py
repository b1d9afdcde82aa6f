"""GPT-2 with estimate tokens (ttscale.gpt2): shapes, causality, CoT rollout, training, I/O, errors.

Tiny models on CPU; prompts built with NumPy and few distinct shapes, to keep compiles few.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttscale as tts
from ttscale import gpt2 as G

D, N, K = 2, 4, 3


@pytest.fixture(scope="module")
def model():
    return G.init_gpt2(G.gpt2_config("tiny", d=D, max_len=N + K), 0)


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


def expected_parameter_count(d, max_len, width, layers, heads, mlp_ratio=4):
    block = 2 * 2 * width + (3 * width * width + 3 * width) + (width * width + width)
    block += (mlp_ratio * width * width + mlp_ratio * width) + (mlp_ratio * width * width + width)
    embed = (d + 1) * width + width + d * width + width + 2 * width + max_len * width
    return layers * block + embed + 2 * width + width * d + d


def test_parameter_count_paper_preset():
    cfg = G.gpt2_config("paper", d=10, max_len=60)
    n_params = G.count_parameters(cfg)
    assert n_params == expected_parameter_count(10, 60, 256, 12, 8)
    assert 9.4e6 < n_params < 9.6e6  # the ≈9.5M ICL GPT-2


def test_shapes(model, prompts):
    est = jnp.zeros((prompts.batch, K, D))
    assert G.forward(model, prompts, est).shape == (prompts.batch, K, D)
    assert G.cot_estimates(model, prompts, K).shape == (prompts.batch, K, D)
    errs = G.cot_errors(model, prompts, K)
    assert errs.shape == (prompts.batch, K + 1)
    np.testing.assert_allclose(errs[:, 0], jnp.sum(prompts.w**2, axis=1), rtol=1e-6)
    assert G.cot_estimates(model, prompts, 0).shape == (prompts.batch, 0, D)


def test_causal_mask(model, prompts):
    est = jnp.asarray(np.random.default_rng(1).standard_normal((prompts.batch, K, D)), jnp.float32)
    base = G.forward(model, prompts, est)
    changed = G.forward(model, prompts, est.at[:, 2].add(5.0))  # perturb the last estimate token
    np.testing.assert_allclose(changed[:, :2], base[:, :2], atol=1e-6)
    assert float(jnp.max(jnp.abs(changed[:, 2] - base[:, 2]))) > 1e-3  # it does see its own token
    # an example token is earlier than every estimate: changing it changes every prediction
    moved = G.forward(model, prompts._replace(y=prompts.y.at[:, -1].add(1.0)), est)
    assert float(jnp.min(jnp.max(jnp.abs(moved - base), axis=(0, 2)))) > 1e-4


@pytest.mark.parametrize("method", G.COT_METHODS)
def test_cot_rollout_equals_python_loop(model, prompts, method):
    reference = loop_rollout(model, prompts, K)
    np.testing.assert_allclose(G.cot_estimates(model, prompts, K, method), reference, atol=2e-5, rtol=1e-4)


def test_self_rollout_loss_is_rollout_error(model, prompts):
    """Teacher forcing with the model's own estimates gives exactly the rollout's errors at k = 1..K."""
    from flax import nnx

    graphdef, state = nnx.split(model)
    errs = G.squared_errors(loop_rollout(model, prompts, K), prompts.w)
    for protocol, expected in (("self_rollout", jnp.mean(errs[:, 1:])), ("single_step", jnp.mean(errs[:, 1]))):
        cfg = G.GPT2TrainConfig(model=model.config, n=N, protocol=protocol, k_train=K, steps=1)
        loss = jax.jit(lambda st, pr: G.training_loss(nnx.merge(graphdef, st), pr, cfg))(state, prompts)
        np.testing.assert_allclose(loss, expected, rtol=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("gpt2_run"))
    cfg = G.GPT2TrainConfig(model=G.gpt2_config("tiny", d=D, max_len=N + K), n=N, protocol="single_step",
                            steps=300, batch=32, learning_rate=3e-3, chunk=150)
    return cfg, out, G.train_gpt2(cfg, tts.identity(D), 0, out=out, progress=False)


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
    cfg = G.GPT2TrainConfig(model=G.gpt2_config("tiny", d=D, max_len=N + K), n=N, protocol="single_step", learning_rate=3e-3)
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
    again = G.train_gpt2(cfg, tts.identity(D), 0, out=out, progress=False)
    np.testing.assert_array_equal(again.losses, result.losses)
    np.testing.assert_array_equal(G.cot_estimates(again.model, prompts, 1), G.cot_estimates(result.model, prompts, 1))
    import dataclasses

    with pytest.raises(ValueError, match="different training config"):
        G.train_gpt2(dataclasses.replace(cfg, learning_rate=1e-2), tts.identity(D), 0, out=out, progress=False)
    loaded = G.load_model(os.path.join(out, "checkpoint.npz"))  # a checkpoint is also a model file
    np.testing.assert_array_equal(G.cot_estimates(loaded, prompts, 1), G.cot_estimates(result.model, prompts, 1))


def test_bad_inputs(model, prompts):
    wrong_d = numpy_prompts(0, d=D + 1, batch=4)
    with pytest.raises(ValueError, match="d=3 but the model has d=2"):
        G.cot_estimates(model, wrong_d, 2)
    with pytest.raises(ValueError, match="k_max must be >= 0"):
        G.cot_estimates(model, prompts, -1)
    with pytest.raises(TypeError, match="k_max must be an int"):
        G.cot_errors(model, prompts, 1.5)
    too_long = numpy_prompts(0, n=N + K, batch=4)
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
    with pytest.raises(ValueError, match="preset"):
        G.gpt2_config("huge", d=2, max_len=8)
    with pytest.raises(ValueError, match="protocol"):
        G.GPT2TrainConfig(model=model.config, n=N, protocol="teacher")
    with pytest.raises(ValueError, match="max_len"):
        G.GPT2TrainConfig(model=model.config, n=N, protocol="self_rollout", k_train=K + 1)
    cfg = G.GPT2TrainConfig(model=model.config, n=N, protocol="single_step", steps=1)
    with pytest.raises(ValueError, match="cov has d=3"):
        G.train_gpt2(cfg, tts.identity(D + 1), 0, progress=False)
    with pytest.raises(ValueError, match="estimates must be"):
        G.forward(model, prompts, jnp.zeros((prompts.batch, 1, D + 1)))
    with pytest.raises(ValueError, match="size"):
        G.gpt2_experiment("enormous")
    with pytest.raises(ValueError, match="scenario"):
        G.gpt2_experiment("tiny", scenarios=("sideways",))


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
    return xr.Dataset(data, coords={"scenario": list(G.SCENARIOS), "n": ns, "k": ks, "step": np.arange(60)},
                      attrs={"protocol": "self_rollout", "parameters": 1})


def test_plot_and_summary_from_dataset():
    from ttscale.commands.gpt2 import summary_lines

    ds = _fake_dataset()
    fig = G.plot_gpt2(ds)
    assert len(fig.axes) == 4 and len(fig.axes[0].lines) == 4  # GPT-2 + LSA per n
    # axes are (scenario row, statistic column); lines alternate GPT-2 (solid), LSA (dashed) per n
    for r, scenario in enumerate(G.SCENARIOS):
        for c, stat in enumerate(("mean", "median")):
            lines = fig.axes[2 * r + c].lines
            for j, n in enumerate(ds.n.values):
                for line, model in zip(lines[2 * j: 2 * j + 2], ("gpt2", "lsa")):
                    expected = ds[f"{model}_{stat}"].sel(scenario=scenario, n=n).values
                    np.testing.assert_allclose(line.get_ydata(), expected)
    text = summary_lines(ds)
    for scenario, ratios in zip(G.SCENARIOS, ([1.25, 0.8], [1.5, 2.0])):
        for n, ratio in zip((4, 6), ratios):
            assert any(line.split()[:3] == [scenario, "n=", str(n)] and f"gpt2/lsa = {ratio:.3f}" in line for line in text), (scenario, n)
    mean_row = " ".join(next(line for line in text if line.split()[:4] == ["tilted", "n=", "6", "mean"]).split())
    assert "gpt2: 1.5 0.75 0.375 0.188 | lsa: 3 1.5 0.75 0.375" in mean_row  # 1.5 · 0.5^k, and 2× that for the LSA


@pytest.mark.full
def test_experiment_and_gpu_script_tiny(tmp_path):
    """The one-call benchmark script at its tiny size (minutes on a shared CPU: behind --run-full)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "gpu_gpt2.py"), "--size", "tiny",
                           "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("gpt2_self_rollout.npz", "gpt2_single_step.png", "timings.json"):
        assert (out / name).exists()


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
            G.train_gpt2(cfg, cov, 0, progress=False)
    with pytest.raises(ValueError, match=r"key: an int seed must lie in 0\.\.2\*\*32 - 1"):
        G.train_gpt2(cfg, tts.identity(D), 10**20, progress=False)
    with pytest.raises(ValueError, match="key: an int seed"):
        G.init_gpt2(model.config, -1)
    with pytest.raises(ValueError, match="scenarios must list at least one"):
        G.gpt2_experiment("tiny", scenarios=())
    with pytest.raises(TypeError, match="scenarios must be a tuple"):
        G.gpt2_experiment("tiny", scenarios="aligned")
    with pytest.raises(ValueError, match="must not repeat"):
        G.gpt2_experiment("tiny", scenarios=("aligned", "aligned"))
    with pytest.raises(ValueError, match="seed must be < 2"):
        G.gpt2_experiment("tiny", seed=2**40)
