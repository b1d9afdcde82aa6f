import re

import numpy as np
import pytest

import ttscale as tts
from ttscale import cli


def test_demo_prints_simulation_beside_theory(capsys):
    assert cli.main(["demo", "--n", "10,30", "--k-max", "3", "--prompts", "2000", "--m", "400"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s+\d+\s+\d+\s", line)]
    assert len(rows) == 6
    for n, k, mean, _pm, se, limit, cor in rows:
        # simulated error at m = 400 sits above the m → ∞ limit by O(1/m), never below it by > 4 s.e.
        assert float(mean) > float(limit) - 4 * float(se)
        assert float(limit) == pytest.approx(float(cor), rel=1e-3)  # Λ = I: Cor 3.5 is exact
        r = 11 / (int(n) + 11)
        assert float(limit) == pytest.approx(10 * r ** (2 * int(k)), rel=1e-3)


def test_cli_reports_bad_input_cleanly(capsys):
    assert cli.main(["demo", "--n", ",", "--k-max", "2"]) == 2
    assert "--n" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])


# ----------------------------------------------------------------------------- one-line errors, exit codes
import errno  # noqa: E402
import json  # noqa: E402

from ttscale import store  # noqa: E402


def _one_error_line(capsys, command: str) -> str:
    """The single stderr line of a failed command: ``ttscale <command>: error: ...`` (no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"ttscale {command}: "), err
    assert "Traceback" not in err
    return lines[0]


def test_help_has_no_rst_markup(capsys):
    """``ttscale --help`` and every ``ttscale <cmd> --help``: plain text, no ``literal`` or :role:`x` markup."""
    for argv in [["--help"]] + [[name, "--help"] for name in cli._available()]:
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "usage: ttscale" in out
        assert "``" not in out and ":func:" not in out and ":class:" not in out, (argv, out)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "The ttscale command line: ttscale demo | sweep" in capsys.readouterr().out
    assert cli.plain("``a`` and :func:`~ttscale.training.fit` and :class:`Task`") == "a and ttscale.training.fit and Task"


@pytest.fixture
def bad_files(tmp_path):
    """Bad input files: a regular file where a directory belongs, complex / negative / garbage arrays, a bad pool."""
    d = 4
    files = {"file": tmp_path / "a_file", "garbage_nc": tmp_path / "garbage.nc", "garbage_npy": tmp_path / "garbage.npy",
             "complex_npy": tmp_path / "complex.npy", "neg_npy": tmp_path / "neg.npy",
             "complex_npz": tmp_path / "complex.npz", "badn_json": tmp_path / "badn.json"}
    files["file"].write_text("x")
    files["garbage_nc"].write_text("not a netCDF file\n")
    files["garbage_npy"].write_text("not npy\n")
    np.save(files["complex_npy"], np.ones(d) + 1j * np.ones(d))
    np.save(files["neg_npy"], np.r_[np.ones(d - 1), -1.0])
    np.savez(files["complex_npz"], eigenvalues=np.ones((2, d)) + 1j, n=np.array([20, 20]))
    files["badn_json"].write_text(json.dumps({"tasks": [{"eigenvalues": [1.0] * d, "n": -3}]}))
    return {k: str(v) for k, v in files.items()}


BAD_INPUTS = [  # argv (with {placeholders} from bad_files / tmp), what the message must name
    (["train", "--out", "{file}", "--no-progress"], ["--out", "not a directory"]),
    (["train", "--out", "{file}/sub", "--no-progress"], ["--out", "cannot create"]),
    (["train", "--d", "100000", "--out", "{tmp}/big", "--no-progress"], ["--d 100000", "GiB"]),
    (["train", "--batch", "1000000000", "--out", "{tmp}/big", "--no-progress"], ["--batch 1000000000", "GiB"]),
    (["demo", "--d", "100000"], ["--d 100000", "GiB"]),
    (["select", "--d", "100000"], ["--d 100000", "GiB"]),
    (["gpt2", "--scenarios", ",", "--size", "tiny"], ["--scenarios", "at least one"]),
    (["gpt2", "--scenarios", "aligned,sideways", "--size", "tiny"], ["--scenarios", "sideways"]),
    (["gpt2", "--size", "tiny", "--out", "{file}/sub"], ["--out", "cannot create"]),
    (["plot", "{garbage_nc}"], ["garbage.nc", "not a readable netCDF"]),
    (["plot", "{tmp}/missing.nc"], ["missing.nc", "no such file"]),
    (["plot", "{tmp}"], ["not a regular file"]),
    (["reproduce", "--out", "{file}/sub", "test_time_scaling"], ["--out", "cannot create"]),
    (["bench", "--json-dir", "{file}/sub", "--quick", "sweep-a"], ["--json-dir", "cannot create"]),
    (["select", "--target", "{complex_npy}"], ["--target", "complex.npy", "complex numbers"]),
    (["select", "--target", "{neg_npy}"], ["--target", "neg.npy", "non-negative"]),
    (["select", "--target", "{garbage_npy}"], ["--target", "garbage.npy", "not a readable"]),
    (["select", "--pool", "{complex_npz}"], ["--pool", "complex.npz", "complex numbers"]),
    (["select", "--pool", "{badn_json}"], ["--pool", "tasks[0].n", ">= 1"]),
]


@pytest.mark.parametrize("argv, names", BAD_INPUTS, ids=[" ".join(a[:3]) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(argv, names, bad_files, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, **bad_files) for a in argv]
    assert cli.main(argv) == 2
    line = _one_error_line(capsys, argv[0])
    for name in names:
        assert name in line, line


@pytest.mark.parametrize("command, extra", [("demo", []), ("sweep", []), ("train", ["--out", "x"]),
                                            ("select", []), ("gpt2", [])])
@pytest.mark.parametrize("seed", [str(10**20), "-1", "1.5"])
def test_seed_out_of_range_is_one_line(command, extra, seed, capsys):
    """Every command taking --seed refuses seeds outside 0..2**32 - 1 (JAX keys hold 32 bits) while parsing."""
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--seed", seed, *extra])
    assert exc.value.code == 2
    line = _one_error_line(capsys, command)
    assert "--seed" in line and "2**32 - 1" in line


def test_read_only_out_directory(tmp_path, monkeypatch, capsys):
    """A directory that refuses files (read-only; simulated, since root ignores permission bits)."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    assert cli.main(["train", "--out", str(tmp_path / "ro"), "--no-progress"]) == 2
    line = _one_error_line(capsys, "train")
    assert "--out" in line and "not writable" in line and "Permission denied" in line


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    """ENOSPC from the atomic writer (every .npz/.nc/.json of train and sweep goes through it)."""
    monkeypatch.setattr(store, "atomic_path", _disk_full)
    out = tmp_path / "run"
    assert cli.main(["train", "--d", "3", "--steps", "2", "--batch", "4", "--no-progress", "--out", str(out)]) == 1
    line = _one_error_line(capsys, "train")
    assert "no space left" in line and str(out) in line and "rerun the same command to resume" in line
    assert not (out / "params.npz").exists()
    nc = tmp_path / "s.nc"
    assert cli.main(["sweep", "--d", "3", "--prompts", "16", "--chunk", "16", "--k-max", "2", "--m", "8",
                     "--n", "4", "--no-progress", "--out", str(nc)]) == 1
    assert "no space left" in _one_error_line(capsys, "sweep")


def test_interrupt_prints_one_line_and_exits_130(tmp_path, monkeypatch, capsys):
    """Ctrl-C mid-run: one line, exit 130, and (train: --out) rerunning the same command resumes and finishes."""
    from ttscale import training

    save = training._save_checkpoint
    calls = []

    def save_then_interrupt(*args, **kwargs):
        save(*args, **kwargs)
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_save_checkpoint", save_then_interrupt)
    out = tmp_path / "run"
    argv = ["train", "--d", "3", "--steps", "4", "--batch", "4", "--chunk", "2", "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 130
    line = _one_error_line(capsys, "train")
    assert "interrupted" in line and "rerun the same command to resume" in line and str(out) in line
    assert (out / "checkpoint.npz").exists() and not (out / "params.npz").exists()
    monkeypatch.setattr(training, "_save_checkpoint", save)
    assert cli.main(argv) == 0
    assert len(training.load_array(str(out / "params.npz"), "losses")) == 4

    def interrupt(args):
        raise KeyboardInterrupt

    demo = cli._available()["demo"]
    monkeypatch.setattr(demo, "run", interrupt)
    assert cli.main(["demo"]) == 130
    assert _one_error_line(capsys, "demo") == "ttscale demo: interrupted"


def test_unexpected_exception_is_one_line_exit_1(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("boom\nsecond line")

    demo = cli._available()["demo"]
    monkeypatch.setattr(demo, "run", boom)
    assert cli.main(["demo"]) == 1
    line = _one_error_line(capsys, "demo")
    assert "unexpected RuntimeError: boom second line" in line and "TTSCALE_TRACEBACK=1" in line
    monkeypatch.setenv("TTSCALE_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["demo"])


def test_argument_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--d", "x", "--out", "y"])
    assert exc.value.code == 2
    line = _one_error_line(capsys, "train")
    assert "argument --d" in line and "ttscale train --help" in line


def test_select_refuses_a_nan_objective(capsys):
    """The exact criterion overflowing (CoT diverges on the target) is an error, not 'selected: uniform'."""
    assert cli.main(["select", "--k", "300", "--criterion", "exact", "--target", "power_law:6", "--d", "4"]) == 1
    line = _one_error_line(capsys, "select")
    assert "not finite at k=300" in line and "no mixture was selected" in line
    assert "█" not in capsys.readouterr().out


def test_help_imports_no_jax():
    """``ttscale --help`` and ``ttscale <cmd> --help`` answer without importing JAX (``import ttscale`` is lazy)."""
    import subprocess
    import sys

    probe = ("import sys\nfrom ttscale.cli import main\nfor argv in (['--help'], ['sweep', '--help'], ['train', '--help']):\n"
             "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
             "print('JAX_IMPORTED', 'jax' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "JAX_IMPORTED False" in out.stdout, out.stdout[-500:]
    import ttscale

    assert set(ttscale.__all__) <= set(dir(ttscale)) and callable(ttscale.run_sweep) and ttscale.models.REGISTRY


def test_the_command_exits_fast_yet_keeps_its_output_exit_code_and_file(tmp_path):
    """``cli.console`` (the installed ``ttscale``) skips interpreter teardown with ``os._exit``: what it printed to a
    pipe (block-buffered), its exit code, its ``atexit`` handlers and the file it wrote must all survive that."""
    import os
    import subprocess
    import sys

    import xarray as xr

    probe = ("import atexit, sys\natexit.register(lambda: print('ATEXIT_RAN', file=sys.stderr))\n"
             "print('UNFLUSHED_LINE')\nfrom ttscale.cli import console\nconsole()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TTSCALE_NO_CACHE", "PYTHONUNBUFFERED")}  # a user's buffering
    run = lambda *argv: subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True,  # noqa: E731
                                       timeout=300, env=env)
    out = tmp_path / "s.nc"
    done = run("--no-cache", "sweep", "--d", "3", "--alpha", "0,1", "--n", "4", "--m", "8", "--k-max", "2", "--prompts", "16",
               "--no-progress", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "UNFLUSHED_LINE" in done.stdout and str(out) in done.stdout  # the pipe's buffer was flushed
    assert "ATEXIT_RAN" in done.stderr  # the atexit handler ran
    with xr.open_dataset(out) as ds:
        assert ds["mean"].shape == (2, 1, 1, 3) and bool(np.isfinite(ds["mean"]).all())
    bad = run("sweep", "--d", "0", "--out", str(tmp_path / "bad.nc"))
    assert bad.returncode == 2 and "--d must be >= 1" in bad.stderr and "ATEXIT_RAN" in bad.stderr
    usage = run("sweep", "--help")
    assert usage.returncode == 0 and "--prompts" in usage.stdout

