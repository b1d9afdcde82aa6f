"""Try bad input on the public API and the command line, as a hostile user would, and count the outcomes.

    python tools/hostile_inputs.py [--verbose]

Every call gets one bad argument (nan, inf, negative, zero, wrong type, wrong shape, impossible size,
a non-PSD or complex covariance, a corrupt file, ...) and is classified:

* ``clear``   — ``ValueError``/``TypeError``/``FloatingPointError`` (a divergence) — or a CLI exit code != 0
  with one line on stderr — whose message names the offending argument;
* ``unclear`` — any other exception, a message that does not name the argument, or a traceback on stderr;
* ``nan``     — it returned (exit 0) with a ``nan`` in a result;
* ``accepted`` — it returned finite results (for calls where the input is valid-but-odd this is right; the
  list marks which calls must be refused and counts an accepted refusal-case as ``silent``).

A crash (the process dying) stops the run; the last call printed is the culprit.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile

import numpy as np

NAN, INF = float("nan"), float("inf")


def _finite_tree(x) -> bool:
    import jax

    leaves = jax.tree_util.tree_leaves(x)
    for leaf in leaves:
        try:
            a = np.asarray(leaf)
        except Exception:  # noqa: BLE001 - non-array leaves
            continue
        if a.dtype.kind in "fc" and np.any(np.isnan(a)):
            return False
    return True


def api_cases():
    """(label, callable, words that a clear message contains) — every call must be refused."""
    import jax
    import jax.numpy as jnp

    import ttscale as tts
    from ttscale import theory, training

    if os.path.isdir(os.path.join(os.path.dirname(tts.__file__), "models")):
        from ttscale import models
    else:  # an older tree: its model calls count as "absent"
        models = None

    key = jax.random.key(0)
    I3 = tts.identity(3)
    P3 = jnp.eye(3) * 0.5
    bad_cov = tts.Covariance(jnp.array([1.0, -1.0, 1.0]))
    nan_cov = tts.Covariance(jnp.array([1.0, NAN, 1.0]))
    prompts = tts.sample_prompts(key, I3, 5, 4)
    cases = []
    add = lambda label, fn, *words: cases.append((label, fn, words))  # noqa: E731

    # spectra
    for d in (0, -1, 2.5, "3", None):
        add(f"identity(d={d!r})", lambda d=d: tts.identity(d), "d")
    for a in (NAN, INF, "a", None):
        add(f"power_law(3, alpha={a!r})", lambda a=a: tts.power_law(3, a), "alpha")
    for t in (0.0, -1.0, NAN, INF):
        add(f"power_law(3, 1, trace={t!r})", lambda t=t: tts.power_law(3, 1.0, trace=t), "trace")
    for e in ([NAN, 1.0], [-1.0, 1.0], [], [1j, 1.0], [[1.0, 2.0], [3.0]], "x", None):
        add(f"from_eigenvalues({e!r})", lambda e=e: tts.from_eigenvalues(e), "eigenvalues")
    for M in ([[1.0, 2.0], [0.0, 1.0]], [[1.0, 0.0]], [[NAN, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]],
              [[1j, 0.0], [0.0, 1.0]], [1.0, 2.0]):
        add(f"from_matrix({M!r})", lambda M=M: tts.from_matrix(M), "matrix")
    add("rotated(cov, key=0)", lambda: tts.rotated(I3, 0), "key")
    add("rotated('x', key)", lambda: tts.rotated("x", key), "cov")
    # prompts
    for name, kw in (("length", dict(length=0)), ("length", dict(length=2.5)), ("batch", dict(batch=0)),
                     ("batch", dict(batch=2**40)), ("noise", dict(noise=-1.0)), ("noise", dict(noise=NAN)),
                     ("batch", dict(length=2**40, batch=2**20))):
        args = dict(length=5, batch=4)
        args.update(kw)
        add(f"sample_prompts({kw})", lambda args=args: tts.sample_prompts(key, I3, **args), name)
    add("sample_prompts(key=0)", lambda: tts.sample_prompts(0, I3, 5, 4), "key")
    add("sample_prompts(cov=matrix)", lambda: tts.sample_prompts(key, np.eye(3), 5, 4), "cov")
    add("sample_prompts(cov with negative eigenvalue)", lambda: tts.sample_prompts(key, bad_cov, 5, 4), "cov")
    for kw in (dict(length=-1), dict(batch=0), dict(noise=-2.0)):
        args = dict(length=5, batch=4)
        args.update(kw)
        add(f"sample_statistics({kw})", lambda args=args: tts.sample_statistics(key, I3, **args), *kw)
    # theory
    for n in (0, -1, NAN, "x"):
        add(f"gamma(I, n={n!r})", lambda n=n: theory.gamma(I3, n), "n")
        add(f"gamma_inverse(I, n={n!r})", lambda n=n: theory.gamma_inverse(I3, n), "n")
    add("gamma_inverse(zeros, inf)", lambda: theory.gamma_inverse(tts.from_eigenvalues([0.0, 0.0]), INF), "cov")
    add("gamma(cov with negative eigenvalue)", lambda: theory.gamma(bad_cov, 10), "cov")
    add("gamma(cov with nan)", lambda: theory.gamma(nan_cov, 10), "cov")
    for k in (-1, 2.5, NAN):
        add(f"limit_error(k_max={k!r})", lambda k=k: theory.limit_error(P3, I3, k), "k_max")
    add("limit_error(P 2x2, Sigma 3x3)", lambda: theory.limit_error(jnp.eye(2), I3, 3), "P")
    add("limit_error(P nan)", lambda: theory.limit_error(jnp.full((3, 3), NAN), I3, 3), "P")
    add("limit_error(Sigma negative)", lambda: theory.limit_error(P3, bad_cov, 3), "test")
    for m in (0, -1, NAN):
        add(f"one_step_error(m={m!r})", lambda m=m: theory.one_step_error(P3, I3, m), "m")
    for s in (NAN, -1.0, "x"):
        add(f"one_step_error(noise={s!r})", lambda s=s: theory.one_step_error(P3, I3, 10, s), "noise")
    add("best_k(k_max=0)", lambda: theory.best_k(P3, I3, 0), "k_max")
    for k in (NAN, -1.0):
        add(f"scaling_law_error(k={k!r})", lambda k=k: theory.scaling_law_error(I3, 10, k), "k")
    for kl in (NAN, -1.0):
        add(f"matching_k(k_long={kl!r})", lambda kl=kl: theory.matching_k(I3, 10, 30, kl), "k_long")
    add("one_step_error_bound(n=0)", lambda: theory.one_step_error_bound(I3, 0, 10), "n")
    add("overthinking_term(Gamma non-PSD)", lambda: theory.overthinking_term(-jnp.eye(3), I3, 3), "Gamma")
    add("overthinking_term(Gamma singular)", lambda: theory.overthinking_term(jnp.zeros((3, 3)), I3, 3), "Gamma")
    add("mixture_preconditioner(probs not simplex)",
        lambda: theory.mixture_preconditioner([I3, I3], [10, 20], [0.7, 0.7]), "probs")
    add("mixture_preconditioner(ns shape)", lambda: theory.mixture_preconditioner([I3, I3], [10, 20, 30], [0.5, 0.5]), "ns")
    # lsa
    add("paper_init(d=0)", lambda: tts.paper_init(0), "d")
    add("paper_init(c=nan)", lambda: tts.paper_init(3, c=NAN), "c")
    add("params_from_preconditioner(nan)", lambda: tts.params_from_preconditioner(jnp.full((3, 3), NAN)), "P")
    add("optimal_params(singular)", lambda: tts.optimal_params(jnp.zeros((3, 3))), "Gamma")
    params = tts.paper_init(4)
    add("predict(params d=4, X d=3)", lambda: tts.predict(params, prompts.X[0], prompts.y[0]), "d")
    add("predict(rho=0)", lambda: tts.predict(tts.paper_init(3), prompts.X[0], prompts.y[0], rho=0.0), "rho")
    add("embed(y wrong length)", lambda: tts.embed(prompts.X[0], prompts.y[0][:2]), "y")
    # cot
    add("pseudo_newton_errors(P 4x4)", lambda: tts.pseudo_newton_errors(jnp.eye(4), prompts, 3), "P")
    add("pseudo_newton_errors(k_max=-1)", lambda: tts.pseudo_newton_errors(P3, prompts, -1), "k_max")
    add("pseudo_newton_errors(prompts=tuple)", lambda: tts.pseudo_newton_errors(P3, tuple(prompts), 3), "prompts")
    add("lsa_errors(params d=4)", lambda: tts.lsa_errors(params, prompts, 3), "d")
    add("error_curve(one prompt)", lambda: tts.error_curve(np.ones((1, 3))), "prompts")
    # models
    for text in ("magic", "gd:eta=nan", "gd:eta=-1", "gd:eta", "lsa:c=0", "lsa:params=/nonexistent.npz",
                 "pseudo_newton:P=/nonexistent.npy"):
        add(f"models.get({text!r})", lambda text=text: models.get(text), "model", "eta", "c", "params", "P")
    add("models.get(42)", lambda: models.get(42), "model")
    # sweep spec
    base = dict(d=3, alphas=(0.0,), ns=(4.0,), ms=(12.0,), k_max=2, prompts=8)
    for field, value in (("d", 0), ("alphas", ()), ("alphas", (NAN,)), ("ns", (0.0,)), ("ns", ("x",)),
                         ("ms", (2.5,)), ("ms", (-INF,)), ("k_max", -1), ("prompts", 1), ("prompts", 2**33),
                         ("chunk", 0), ("noise", -1.0), ("noise", NAN), ("seed", -1), ("seed", 10**20),
                         ("dtype", "float16"), ("test", "rotated"), ("family", "gaussian"), ("model", "magic"),
                         ("trace", -1.0), ("common_random_numbers", "yes"), ("covariances", [np.eye(3)]),
                         ("test", np.eye(4)), ("params", (1, 2))):
        add(f"SweepSpec({field}={value!r})", lambda field=field, value=value: tts.SweepSpec(**dict(base, **{field: value})),
            field)
    spec = tts.SweepSpec(**base)
    add("run_sweep(out=a directory)", lambda: tts.run_sweep(spec, out=tempfile.gettempdir(), progress=False), "out")
    add("run_sweep(progress='yes')", lambda: tts.run_sweep(spec, progress="yes"), "progress")
    add("run_sweep(chunk too large for memory)",
        lambda: tts.run_sweep(tts.SweepSpec(**dict(base, ms=(3e7,), prompts=4096)), progress=False), "chunk")
    add("prompt_errors(m_index=5)", lambda: tts.prompt_errors(spec, m_index=5), "m_index")
    # training
    task = training.Task(I3, 10)
    for field, value in (("steps", 0), ("batch", 0), ("optimizer", "lbfgs"), ("learning_rate", -1.0),
                         ("learning_rate", NAN), ("w_mode", "x"), ("noise", -1.0), ("probs", (0.5,)),
                         ("tasks", ()), ("d", 4)):
        kw = dict(d=3, tasks=(task,), steps=2, batch=4)
        kw[field] = value
        add(f"TrainConfig({field}={value!r})", lambda kw=kw: training.TrainConfig(**kw), field)
    add("Task(n=0)", lambda: training.Task(I3, 0), "n")
    add("Task(cov negative eigenvalue)", lambda: training.Task(bad_cov, 10), "cov")
    add("fit(cov negative eigenvalue)",
        lambda: training.fit(training.TrainConfig(d=3, tasks=(training.Task(bad_cov, 10),), steps=2, batch=4), key,
                             progress=False), "cov")
    add("fit(lr=1e6: diverges)",
        lambda: training.fit(training.TrainConfig(d=3, tasks=(task,), steps=20, batch=16, learning_rate=1e6), key,
                             progress=False), "diverged", "learning_rate", "lr")
    add("make_model_train(tasks=[])",
        lambda: training.make_model_train(models.get("gd"), [], 2, 4, __import__("optax").sgd(0.1)), "tasks")
    # selection
    add("select_mixture(criterion='best')",
        lambda: tts.select_mixture(tts.paper_pool(key), tts.power_law(10, 0.8), criterion="best"), "criterion")
    add("select_mixture(k=-1)", lambda: tts.select_mixture(tts.paper_pool(key), tts.power_law(10, 0.8), k=-1), "k")
    add("select_mixture(exact, k=300, power_law:3: overflow)",
        lambda: tts.select_mixture(tts.paper_pool(key), tts.power_law(10, 3.0), criterion="exact", k=300),
        "diverged", "overflow", "k", "non-finite")
    add("task_pool(covs with negative eigenvalue)", lambda: tts.task_pool([bad_cov, I3], [10, 20]), "cov")
    add("task_pool(ns length mismatch)", lambda: tts.task_pool([I3, I3], [10]), "ns")
    return cases


def cli_cases(tmp: str):
    """(label, argv, words) — every command line must fail with one clear line on stderr."""
    garbage = os.path.join(tmp, "garbage.nc")
    with open(garbage, "w") as fh:
        fh.write("not a netcdf file")
    complex_file = os.path.join(tmp, "complex.npy")
    np.save(complex_file, np.array([[1 + 1j, 2.0, 3.0]]))
    afile = os.path.join(tmp, "a_file")
    with open(afile, "w") as fh:
        fh.write("")
    cases = [
        ("sweep --k-max -1", ["sweep", "--k-max", "-1", "--no-progress"], "k"),
        ("sweep --prompts 1", ["sweep", "--prompts", "1", "--no-progress"], "prompts"),
        ("sweep --prompts 5e9", ["sweep", "--d", "3", "--n", "10", "--m", "10", "--k-max", "2", "--prompts",
                                 "5000000000", "--chunk", "16", "--no-progress"], "prompts"),
        ("sweep --m 3e7", ["sweep", "--d", "3", "--m", "30000000", "--no-progress"], "chunk", "m"),
        ("sweep --m 1e12", ["sweep", "--d", "3", "--m", "1e12", "--no-progress"], "chunk", "m"),
        ("sweep --d 100000", ["sweep", "--d", "100000", "--prompts", "2", "--chunk", "1", "--no-progress"], "d", "chunk"),
        ("sweep --n 0", ["sweep", "--n", "0", "--no-progress"], "n"),
        ("sweep --n x", ["sweep", "--n", "x", "--no-progress"], "n"),
        ("sweep --alpha nan", ["sweep", "--alpha", "nan", "--no-progress"], "alpha"),
        ("sweep --noise -1", ["sweep", "--noise", "-1", "--no-progress"], "noise"),
        ("sweep --seed 10**20", ["sweep", "--seed", str(10**20), "--no-progress"], "seed"),
        ("sweep --model magic", ["sweep", "--model", "magic", "--no-progress"], "model"),
        ("sweep --model gd:eta=-1", ["sweep", "--model", "gd:eta=-1", "--no-progress"], "eta"),
        ("sweep --model lsa --m inf", ["sweep", "--model", "lsa", "--m", "inf", "--no-progress"], "inf", "m"),
        ("sweep --covariances garbage.nc", ["sweep", "--covariances", garbage, "--no-progress"], "covariances"),
        ("sweep --covariances complex.npy", ["sweep", "--covariances", complex_file, "--no-progress"], "covariances", "complex"),
        ("sweep --out a_file/x.nc", ["sweep", "--out", os.path.join(afile, "x.nc"), "--no-progress"], "out"),
        ("sweep --test x.npy missing", ["sweep", "--test", os.path.join(tmp, "missing.npy"), "--no-progress"], "test"),
        ("plot garbage.nc", ["plot", garbage], "garbage"),
        ("plot missing.nc", ["plot", os.path.join(tmp, "missing.nc")], "missing"),
        ("train --steps 0", ["train", "--steps", "0", "--out", os.path.join(tmp, "t0"), "--no-progress"], "steps"),
        ("train --lr 1e6", ["train", "--lr", "1e6", "--steps", "20", "--batch", "16", "--out", os.path.join(tmp, "t1"),
                            "--no-progress"], "diverged", "lr"),
        ("train --out a_file", ["train", "--out", afile, "--steps", "2", "--no-progress"], "out"),
        ("train --seed 10**20", ["train", "--seed", str(10**20), "--steps", "2", "--out", os.path.join(tmp, "t2"),
                                 "--no-progress"], "seed"),
        ("train --spectrum nonsense", ["train", "--spectrum", "nonsense", "--out", os.path.join(tmp, "t3"),
                                       "--no-progress"], "spectrum"),
        ("train --batch 10**9", ["train", "--batch", str(10**9), "--out", os.path.join(tmp, "t4"), "--no-progress"],
         "batch"),
        ("select --criterion best", ["select", "--criterion", "best"], "criterion"),
        ("select --k 300 --criterion exact --target power_law:3",
         ["select", "--k", "300", "--criterion", "exact", "--target", "power_law:3"], "diverged", "overflow", "non-finite", "k"),
        ("gpt2 --scenarios ,", ["gpt2", "--scenarios", ",", "--size", "tiny"], "scenarios"),
        ("bench nonexistent", ["bench", "nonexistent"], "nonexistent", "benchmark"),
        ("reproduce nonexistent", ["reproduce", "nonexistent", "--out", os.path.join(tmp, "r")], "nonexistent", "preset"),
    ]
    return cases


def _named(message: str, words) -> bool:
    low = message.lower()
    return any(w.lower() in low for w in words)


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def run_api(verbose: bool, skip=()):
    import signal

    signal.signal(signal.SIGALRM, _alarm)
    counts = dict(clear=0, unclear=0, nan=0, silent=0, absent=0, crash=0, hang=0)
    for label, fn, words in api_cases():
        if label in skip:
            counts["crash" if "sample_prompts" in label else "hang"] += 1
            print(f"  [{'crash' if 'sample_prompts' in label else 'hang'}] {label}: skipped (kills the process or runs away)")
            continue
        if verbose:
            print("api:", label, flush=True)
        signal.alarm(60)
        try:
            out = fn()
        except _Hang:
            kind, detail = "hang", "no answer within 60 s"
        except (ValueError, TypeError, FloatingPointError) as exc:
            kind = "clear" if _named(str(exc), words) else "unclear"
            detail = f"{type(exc).__name__}: {exc}"
        except AttributeError as exc:  # the API does not exist in this version (e.g. when run on an older tree)
            kind, detail = "absent", f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - classification
            kind, detail = "unclear", f"{type(exc).__name__}: {exc}"
        else:
            kind = "nan" if not _finite_tree(out) else "silent"
            detail = "returned"
        finally:
            signal.alarm(0)
        counts[kind] += 1
        if kind != "clear" or verbose:
            print(f"  [{kind}] {label}: {detail[:200]}")
    return counts


def run_cli(verbose: bool, tmp: str, skip=()):
    from ttscale.cli import main

    counts = dict(clear=0, unclear=0, nan=0, silent=0, absent=0, crash=0, hang=0)
    for label, argv, *words in cli_cases(tmp):
        if label in skip:
            counts["hang"] += 1
            print(f"  [hang] ttscale {label}: skipped (runs away: no answer, memory grows)")
            continue
        if verbose:
            print("cli:", label, flush=True)
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse
                rc = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:  # noqa: BLE001 - classification
                rc, _ = None, err.write(f"Traceback (uncaught {type(exc).__name__}: {exc})\n")
        text = err.getvalue().strip()
        lines = [ln for ln in text.splitlines() if ln.strip() and "it/s" not in ln and "%|" not in ln]
        if rc == 0:
            kind = "nan" if "nan" in out.getvalue().lower() else "silent"
        elif rc is None or "Traceback" in text or len(lines) != 1 or not _named(text, words):
            kind = "unclear"
        else:
            kind = "clear"
        counts[kind] += 1
        if kind != "clear" or verbose:
            print(f"  [{kind}] ttscale {label} (exit {rc}): {' | '.join(lines)[:240]}")
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--skip", action="append", default=[], help="label of a call that kills the process (counted as a crash)")
    args = p.parse_args(argv)
    import ttscale

    ttscale.use_cpu_cores()
    api = run_api(args.verbose, set(args.skip))
    with tempfile.TemporaryDirectory() as tmp:
        cli = run_cli(args.verbose, tmp, set(args.skip))
    for name, c in (("API", api), ("CLI", cli)):
        total = sum(c.values())
        print(f"{name}: {total} bad inputs tried: {c['clear']} clear error, {c['unclear']} unclear, "
              f"{c['nan']} nan result, {c['silent']} silently accepted, {c['crash']} crash, {c['hang']} hang"
              + (f", {c['absent']} API absent in this version" if c["absent"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
