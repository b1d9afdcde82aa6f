"""The one spectrum syntax (ttscale.families): parsing, grids, files, d inference, the hard family, a family
registered from outside the package, and every command that takes spectra (sweep, train, select)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from ttscale import families
from ttscale.cli import main
from ttscale.families import parse_spectra
from ttscale.sweep import SweepSpec, run_sweep

TINY = dict(ns=(4.0,), ms=(8.0,), k_max=2, prompts=16, chunk=16)  # one compiled shape per (d, S)
TINY_CLI = ["--n", "4", "--m", "8", "--k-max", "2", "--prompts", "16", "--chunk", "16", "--no-progress"]


def eig(grid, s=0):
    return np.asarray(grid.covariances[s].eigenvalues)


# ----------------------------------------------------------------------------- parsing
def test_families_grids_and_labels_round_trip():
    i = np.arange(1, 6, dtype=np.float64)
    g = parse_spectra("power_law:alpha=0:2:5", d=5)
    np.testing.assert_array_equal(g.coords["alpha"], np.linspace(0, 2, 5))
    np.testing.assert_array_equal(g.coords["trace"], np.full(5, 5.0))
    assert g.labels[0] == "power_law:alpha=0" and g.labels[1] == "power_law:alpha=0.5"
    for s, a in enumerate(np.linspace(0, 2, 5)):
        np.testing.assert_allclose(eig(g, s), 5 * i**-a / np.sum(i**-a), rtol=1e-15)
        assert eig(g, s).dtype == np.float64
    # the canonical labels parse back to the same spectra (floats print exactly: 1/3 steps, 0.1, ...)
    h = parse_spectra(list(g.labels) + ["power_law:alpha=0.1", "power_law:alpha=0:1:4"], d=5)
    again = parse_spectra(list(h.labels), d=5)
    assert again.labels == h.labels
    for s in range(len(h)):
        np.testing.assert_array_equal(eig(again, s), eig(h, s))
    # lists, positional shorthand, products (first parameter slowest), defaults omitted from labels
    g = parse_spectra(["power_law:0.8", "power_law:alpha=[0,1],trace=[5,10]", "identity", "eig:3,2,1,0.5,0.5"])
    assert g.d == 5
    assert g.labels == ("power_law:alpha=0.8", "power_law:alpha=0", "power_law:alpha=0,trace=10", "power_law:alpha=1",
                        "power_law:alpha=1,trace=10", "identity", "eig:3,2,1,0.5,0.5")
    assert g.family == ("power_law",) * 5 + ("identity", "eig")
    np.testing.assert_array_equal(g.coords["trace"][:5], [5, 5, 10, 5, 10])
    assert np.isnan(g.coords["alpha"][5]) and np.isnan(g.coords["trace"][6])
    np.testing.assert_allclose(eig(g, 2), 10 * np.ones(5) / 5, rtol=1e-15)
    np.testing.assert_array_equal(eig(g, 5), np.ones(5))
    np.testing.assert_array_equal(eig(g, 6), [3, 2, 1, 0.5, 0.5])
    np.testing.assert_allclose(g.hardness(), [np.sum(eig(g, s)) / np.min(eig(g, s)) for s in range(len(g))], rtol=1e-14)


@pytest.mark.parametrize("text, d, expected", [
    ("power_law", 5, ["power_law needs alpha", "power_law:alpha=ALPHA"]),
    ("power_law:alph=1", 5, ["no parameter 'alph'", "parameters: alpha, trace"]),
    ("power_law:alpha=0,1", 5, ["'1' needs a name", "[a,b,c]"]),
    ("power_law:alpha=x", 5, ["'x' is not a number", "a:b:N"]),
    ("power_law:alpha=0:1", 5, ["start:stop:count"]),
    ("power_law:alpha=[0,1", 5, ["a list is [a,b,c]"]),
    ("power_law:alpha=1,alpha=2", 5, ["given twice"]),
    ("power_law:alpha=1,trace=-1", 5, ["trace must be > 0"]),
    ("gaussian:1", 5, ["neither a spectrum family", "power_law:alpha=", "hard:H=", ".npy/.txt/.csv/.json"]),
    ("hard:H=3", 5, ["H must be >= d = 5"]),
    ("eig:", None, ["eig needs eigenvalues", "eig:3,2,1"]),
    ("eig:1,-1", None, ["non-negative"]),
    ("eig:1,x", None, ["'x' is not a number"]),
    ("identity", None, ["dimension d is not fixed", "--d", "eig:"]),
    ("missing.txt", 5, ["missing.txt", "no such file"]),
    ("x.xlsx", 5, ["x.xlsx", "nor a .npy/.txt/.csv/.json file"]),
])
def test_parse_errors_say_what_was_expected(text, d, expected):
    with pytest.raises(ValueError) as exc:
        parse_spectra(text, d=d, name="--spectrum")
    msg = str(exc.value)
    assert msg.startswith("--spectrum"), msg
    for word in expected:
        assert word in msg, msg


def test_dimension_is_inferred_and_conflicts_are_refused():
    assert parse_spectra(["eig:1,2,3", "power_law:alpha=1"]).d == 3
    assert parse_spectra("identity", default_d=7).d == 7
    assert parse_spectra("eig:1,2", default_d=7).d == 2  # a spectrum that fixes d beats the default
    with pytest.raises(ValueError, match="disagree on the dimension: eig:1,2 has d=2; eig:1,2,3 has d=3"):
        parse_spectra(["eig:1,2", "eig:1,2,3"])
    with pytest.raises(ValueError, match="eig:1,2 has d=2; --d 3 was given"):
        parse_spectra("eig:1,2", d=3, name="--spectrum", d_name="--d")
    with pytest.raises(TypeError, match="ambiguous"):
        parse_spectra([3.0, 2.0, 1.0])


def test_hard_family_gives_exactly_the_requested_hardness():
    for d in (2, 5, 20, 200):
        Hs = [d, d * 1.0001, 2 * d, 10 * d, 1e3 * d]
        g = parse_spectra(f"hard:H=[{','.join(repr(float(h)) for h in Hs)}]", d=d)
        for s, H in enumerate(Hs):
            lam = eig(g, s)
            hard = np.sum(lam) / np.min(lam)  # Hard(Λ) = tr Λ / λ_min, in NumPy
            assert hard == pytest.approx(H, rel=1e-9)
            assert np.sum(lam) == pytest.approx(d, rel=1e-12)  # tr Λ = d
            a = g.coords["alpha"][s]  # the solved exponent: λ_i ∝ i^{-α}
            i = np.arange(1, d + 1)
            np.testing.assert_allclose(lam, d * i**-a / np.sum(i**-a), rtol=1e-12)
    assert parse_spectra("hard:H=10", d=5).coords["alpha"][0] > parse_spectra("hard:H=8", d=5).coords["alpha"][0] > 0
    g = parse_spectra("hard:H=40,trace=2", d=5)
    assert np.sum(eig(g)) == pytest.approx(2.0, rel=1e-12) and np.sum(eig(g)) / np.min(eig(g)) == pytest.approx(40, rel=1e-9)
    with pytest.raises(ValueError, match="H must be >= d = 5"):
        parse_spectra("hard:H=4.999", d=5)


# ----------------------------------------------------------------------------- files
@pytest.fixture
def files(tmp_path):
    lam = np.array([3.0, 2.0, 1.0, 0.5])
    rows = np.array([[4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 1.0, 1.0], [5.0, 1.0, 1.0, 1.0]])  # S = d = 4
    A = np.array([[2.0, 0.5, 0.0, 0.0], [0.5, 1.0, 0.2, 0.0], [0.0, 0.2, 1.0, 0.1], [0.0, 0.0, 0.1, 0.5]])
    out = {"lam": lam, "rows": rows, "matrix": A}
    (tmp_path / "eig.txt").write_text("# eigenvalues, one row\n3 2 1 0.5\n")
    (tmp_path / "col.txt").write_text("3\n2\n1\n0.5\n")
    (tmp_path / "eig.csv").write_text("3,2,1,0.5\n")
    (tmp_path / "rows.csv").write_text("\n".join(",".join(f"{v:g}" for v in r) for r in rows) + "\n")
    np.save(tmp_path / "eig.npy", lam)
    np.save(tmp_path / "matrix.npy", A)
    np.savetxt(tmp_path / "matrix.txt", A)
    np.save(tmp_path / "mats.npy", np.stack([A, np.eye(4)]))
    (tmp_path / "eig.json").write_text(json.dumps(lam.tolist()))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "bad.txt").write_text("1 2 x\n")
    out.update({k: str(tmp_path / k) for k in ("eig.txt", "col.txt", "eig.csv", "rows.csv", "eig.npy", "matrix.npy",
                                               "matrix.txt", "mats.npy", "eig.json", "objects.npy", "bad.txt")})
    return out


def test_files_of_eigenvalues_and_matrices(files):
    lam = files["lam"]
    for key in ("eig.txt", "col.txt", "eig.csv", "eig.npy", "eig.json"):
        g = parse_spectra(files[key])
        assert g.d == 4 and len(g) == 1 and g.family == ("file",) and g.labels == (files[key],)
        np.testing.assert_array_equal(eig(g), lam)
    rows = parse_spectra(files["rows.csv"])  # square but not symmetric: S = d = 4 eigenvalue rows, not a matrix
    assert len(rows) == 4 and rows.labels[2] == files["rows.csv"] + "[2]"
    for s in range(4):
        np.testing.assert_array_equal(eig(rows, s), files["rows"][s])
    for key in ("matrix.npy", "matrix.txt"):  # symmetric PSD: one matrix
        g = parse_spectra(files[key])
        assert len(g) == 1
        c = g.covariances[0]
        dense = np.asarray(c.basis) @ np.diag(c.eigenvalues) @ np.asarray(c.basis).T
        np.testing.assert_allclose(dense, files["matrix"], atol=1e-14)
        np.testing.assert_allclose(np.sort(c.eigenvalues), np.linalg.eigvalsh(files["matrix"]), rtol=1e-13)
    forced = parse_spectra("eig:" + files["matrix.txt"])  # eig:FILE reads rows, never a matrix
    assert len(forced) == 4
    np.testing.assert_array_equal(eig(forced, 1), files["matrix"][1])
    assert len(parse_spectra(files["mats.npy"])) == 2
    with pytest.raises(ValueError, match="not a readable .npy file"):  # never the pickle error
        parse_spectra(files["objects.npy"], name="--spectrum")
    with pytest.raises(ValueError, match=r"bad.txt: not a readable .txt file of numbers"):
        parse_spectra(files["bad.txt"], name="--spectrum")
    neg = files["rows"].copy()
    neg[0, 0] = -1
    with pytest.raises(ValueError, match="symmetric positive semi-definite matrix or rows of non-negative eigenvalues"):
        parse_spectra(neg)


def test_sweep_api_and_cli_with_eigenvalue_files(files, tmp_path, capsys):
    """The same spectrum as .txt, .csv, .npy and inline gives the same sweep (d inferred from the file)."""
    ref = run_sweep(SweepSpec(spectra="eig:3,2,1,0.5", **TINY), progress=False)
    assert ref.sizes["spectrum"] == 1
    assert float(ref["hardness"][0]) == 6.5 / 0.5 and str(ref["spectrum_label"].values[0]) == "eig:3,2,1,0.5"
    spec = SweepSpec(spectra=files["eig.txt"], **TINY)
    assert spec.d == 4
    ds = run_sweep(spec, progress=False)
    np.testing.assert_array_equal(ds["mean"], ref["mean"])
    assert SweepSpec.from_json(ds.attrs["spec"]) == spec
    for key in ("eig.csv", "eig.npy"):
        out = tmp_path / f"{key}.nc"
        assert main(["sweep", "--spectrum", files[key], "--out", str(out), *TINY_CLI]) == 0
        from ttscale import store

        disk = store.read_dataset(str(out))
        np.testing.assert_array_equal(disk["mean"], ref["mean"])
        assert str(disk["spectrum_label"].values[0]) == files[key] and disk["spectrum_family"].values[0] == "file"
    capsys.readouterr()
    # a matrix file and an [S, d] = [4, 4] test file (one test covariance per spectrum)
    assert main(["sweep", "--spectrum", files["matrix.npy"], "--test", "identity", *TINY_CLI]) == 0
    assert main(["sweep", "--spectrum", files["rows.csv"], "--test", files["rows.csv"], *TINY_CLI]) == 0
    assert "4 spectra" in capsys.readouterr().out


def test_spec_round_trips_float64_explicit_spectra():
    M = np.array([[2.0, 1e-9, 0.0], [1e-9, 1.0 + 1e-12, 0.0], [0.0, 0.0, 1.0 / 3.0]])
    spec = SweepSpec(spectra=[M, "eig:0.1,0.2,0.30000000000000004"], test="power_law:alpha=0.3", **TINY)
    back = SweepSpec.from_json(spec.to_json())
    assert back == spec and back.identity() == spec.identity()
    for a, b in zip(spec.spectra.covariances, back.spectra.covariances):
        assert b.eigenvalues.dtype == np.float64
        np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)
    np.testing.assert_array_equal(eig(back.spectra, 1), [0.1, 0.2, 0.30000000000000004])
    c = back.spectra.covariances[0]
    np.testing.assert_allclose(np.asarray(c.basis) @ np.diag(c.eigenvalues) @ np.asarray(c.basis).T, M, atol=1e-15)
    # the shorthand and the syntax are one spec
    assert SweepSpec(d=3, alphas=(0.0, 1.0), trace=2.0, **TINY) == SweepSpec(
        d=3, spectra="power_law:alpha=[0,1],trace=2", **TINY)


def test_shorthands_and_the_deprecated_explicit_family():
    spec = SweepSpec(d=3, alphas=(0.5, 1.0), **TINY)
    assert spec.alphas == (0.5, 1.0) and spec.spectra.labels == ("power_law:alpha=0.5", "power_law:alpha=1")
    assert spec.replace(alphas=(2.0,)).spectra.labels == ("power_law:alpha=2",)
    assert spec.replace(spectra="hard:H=[3,30]").alphas == pytest.approx(tuple(
        parse_spectra("hard:H=[3,30]", d=3).coords["alpha"]))
    assert spec.replace(spectra="eig:1,2,3").alphas == ()
    with pytest.raises(ValueError, match="both given"):
        SweepSpec(spectra="identity", alphas=(1.0,), d=3, **TINY)
    with pytest.warns(DeprecationWarning, match="spectra="):
        old = SweepSpec(d=3, family="explicit", covariances=[np.diag([3.0, 2.0, 1.0])], **TINY)
    assert old == SweepSpec(spectra=[np.diag([3.0, 2.0, 1.0])], **TINY)
    with pytest.raises(ValueError, match="needs covariances"):
        SweepSpec(d=3, family="explicit", **TINY)
    with pytest.raises(ValueError, match="test gives 2 covariances but there are 3 training spectra"):
        SweepSpec(d=3, spectra="power_law:alpha=[0,1,2]", test="power_law:alpha=[0,1]", **TINY)


# ----------------------------------------------------------------------------- a family from outside
def _spiked(d, spike, width):
    """λ = spike on the first ``width`` coordinates, 1 elsewhere."""
    lam = np.ones(d)
    lam[: int(width)] = spike
    return lam


def test_a_family_registered_outside_the_package_sweeps_with_its_coordinate(tmp_path):
    families.register_family("spiked_test", _spiked, params=("spike", "width"), defaults={"width": 1})
    try:
        spec = SweepSpec(d=4, spectra=["spiked_test:spike=[2,5],width=2", "identity"], **TINY)
        assert spec.spectra.labels == ("spiked_test:spike=2,width=2", "spiked_test:spike=5,width=2", "identity")
        ds = run_sweep(spec, progress=False)
        np.testing.assert_array_equal(ds["spike"], [2.0, 5.0, np.nan])
        np.testing.assert_array_equal(ds["width"], [2.0, 2.0, np.nan])
        np.testing.assert_allclose(ds["hardness"], [6.0, 12.0, 4.0], rtol=1e-14)  # tr Λ / λ_min of [2,2,1,1], [5,5,1,1], I
        assert SweepSpec.from_json(ds.attrs["spec"]) == spec  # the label re-parses through the registry
        # the CLI parser knows it too, and its coordinate lands in the written Dataset
        out = tmp_path / "spiked.nc"
        assert main(["sweep", "--d", "4", "--spectrum", "spiked_test:5", "--out", str(out), *TINY_CLI]) == 0
        from ttscale import store

        disk = store.read_dataset(str(out))
        assert float(disk["spike"][0]) == 5.0 and float(disk["width"][0]) == 1.0
        assert str(disk["spectrum_label"].values[0]) == "spiked_test:spike=5"
        with pytest.raises(ValueError, match="already registered"):
            families.register_family("spiked_test", lambda d, spike, width: np.ones(d), params=("spike", "width"))
        with pytest.raises(ValueError, match="reserved"):
            families.register_family("bad_family", _spiked, params=("n",))
    finally:
        families.unregister_family("spiked_test")


# ----------------------------------------------------------------------------- commands
def test_sweep_cli_refuses_alpha_beside_spectrum(capsys):
    assert main(["sweep", "--alpha", "0,1", "--spectrum", "identity", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--alpha and --spectrum were both given" in err and len(err.strip().splitlines()) == 1
    assert main(["sweep", "--trace", "3", "--spectrum", "identity", "--no-progress"]) == 2
    assert "--trace goes with --alpha" in capsys.readouterr().err
    assert main(["sweep", "--spectrum", "eig:1,2", "--d", "3", "--no-progress"]) == 2
    assert "--spectrum: the spectra disagree on the dimension: eig:1,2 has d=2; --d 3 was given" in capsys.readouterr().err
    assert main(["sweep", "--spectrum", "eig:1,2", "--test", "eig:1,2,3", "--no-progress"]) == 2
    assert "--test" in capsys.readouterr().err


def test_sweep_help_gives_every_default_and_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--spectrum hard:H=" in out
    from ttscale.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command in ("sweep", "train"):
        for action in sub[command]._actions:
            if action.option_strings and action.nargs != 0 and action.help not in (None, "==SUPPRESS=="):
                assert "default" in action.help or action.required, (command, action.dest, action.help)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for words in ("frozen (fixed at the paper's W", "tied (W = paper W(c)", "block (only V[w, x]", "cosine or linear"):
        assert words in out


def test_train_and_select_take_eigenvalue_files(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--spectrum", files["eig.txt"], "--n", "8", "--steps", "2", "--batch", "8", "--chunk", "2",
                 "--no-progress", "--out", str(out)]) == 0
    text = (out / "config.json").read_text()
    assert json.loads(text)["d"] == 4 and "3.0, 2.0, 1.0, 0.5" in text  # the file's eigenvalues are the task
    capsys.readouterr()
    target = tmp_path / "target.txt"
    target.write_text("\n".join(["1", "0.5"] + ["0.25"] * 8) + "\n")  # d = 10, the paper pool's
    assert main(["select", "--target", str(target), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert abs(sum(result["mixtures"]["qp"]["probs"]) - 1) < 1e-5
    assert main(["select", "--target", files["eig.txt"]]) == 2  # d = 4 against the pool's 10
    assert "the pool's d=10" in capsys.readouterr().err
    pool = tmp_path / "pool.json"
    (tmp_path / "easy.txt").write_text("1 1 1 1\n")
    pool.write_text(json.dumps({"tasks": [{"spectrum": "easy.txt", "n": 20, "name": "easy"},
                                          {"spectrum": "power_law:alpha=1", "n": 20, "name": "hard"}]}))
    assert main(["select", "--pool", str(pool), "--target", "eig:1,0.5,0.5,0.25", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in result["tasks"]] == ["easy", "hard"]
    assert result["tasks"][0]["lambda_min"] == pytest.approx(1.0)
    i = np.arange(1, 5)
    assert result["tasks"][1]["lambda_min"] == pytest.approx(4 * 4.0**-1 / np.sum(1 / i), rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert families.one_spectrum("power_law:1", d=4).d == 4


def test_the_docs_family_example_runs():
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "spectra.md").read_text()
    code = re.search(r"## A new family\n.*?```python\n(.*?)```", text, re.S).group(1)
    try:
        exec(compile(code, "docs/spectra.md", "exec"), {})
        g = parse_spectra("spiked:spike=1:10:5", d=10)
        assert len(g) == 5 and g.labels[-1] == "spiked:spike=10"
        np.testing.assert_array_equal(eig(g, 4), [10.0] + [1.0] * 9)
    finally:
        families.unregister_family("spiked")


def test_specs_written_before_spectra_still_load():
    """JSON of the old fields (family/alphas/covariances/trace) reads back, without a deprecation warning."""
    new = SweepSpec(d=3, alphas=(0.0, 1.0), trace=2.0, **TINY)
    old = {k: v for k, v in new.to_dict().items() if k != "spectra"}
    old.update(family="power_law", alphas=[0.0, 1.0], covariances=None, trace=2.0)
    assert SweepSpec.from_dict(old) == new
    explicit = dict(old, family="explicit", alphas=[], trace=None,
                    covariances=[{"eigenvalues": [3.0, 2.0, 1.0], "basis": None}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = SweepSpec.from_dict(explicit)
    np.testing.assert_array_equal(eig(back.spectra), [3.0, 2.0, 1.0])
    assert back.spectra.family == ("explicit",)
