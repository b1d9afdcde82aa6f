"""Persistence helpers: atomic writes, chunk bookkeeping, spec identity, netCDF round trip."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from ttscale import store, summary


def test_check_writable(tmp_path):
    path = store.check_writable(tmp_path / "a" / "b" / "out.nc")  # creates parents
    assert os.path.isdir(tmp_path / "a" / "b") and path.endswith("out.nc")
    with pytest.raises(ValueError, match="is a directory"):
        store.check_writable(tmp_path)
    with pytest.raises(TypeError, match="out must be a path"):
        store.check_writable(3)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot create"):
        store.check_writable(blocker / "sub" / "out.nc")


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "f.bin"
    store.atomic_write_bytes(str(target), b"one")
    store.atomic_write_bytes(str(target), b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_partial_store_saves_lists_loads_and_refuses_other_specs(tmp_path):
    out = str(tmp_path / "s.nc")
    ident = json.dumps({"d": 3, "k_max": 4})
    ps = store.PartialStore(out, ident)
    assert ps.finished() == set()
    errs = np.arange(6 * 4 * 5, dtype=np.float32).reshape(6, 4, 5)  # [cells, k, prompts]
    moments = summary.moments_of(errs.reshape(24, 5))
    ps.save(1, 10, 15, errs, moments)
    ps.save(0, 0, 10, errs, moments)
    assert ps.finished() == {(1, 10, 15), (0, 0, 10)}
    got, got_moments = ps.load(1, 10, 15)
    np.testing.assert_array_equal(got, errs)
    for a, b in zip(got_moments, moments):
        np.testing.assert_array_equal(a, b)
    # a temporary left behind by a killed writer is ignored
    (tmp_path / "s.nc.partial" / ".tmp-abc.npz").write_bytes(b"garbage")
    assert store.PartialStore(out, ident).finished() == {(1, 10, 15), (0, 0, 10)}
    with pytest.raises(store.SpecMismatchError, match="k_max"):
        store.PartialStore(out, json.dumps({"d": 3, "k_max": 5}))
    ps.remove()
    assert not os.path.exists(store.partial_dir(out))


def test_dataset_round_trip_and_finished_check(tmp_path):
    out = str(tmp_path / "d.nc")
    ds = xr.Dataset({"mean": (("m", "k"), np.array([[1.0, np.inf], [2.0, 3.0]], np.float32))},
                    coords={"m": [40.0, np.inf], "k": [0, 1]}, attrs={"spec_identity": "A", "spec": "{}"})
    assert store.check_finished(out, "A") is None
    store.write_dataset(ds, out)
    back = store.check_finished(out, "A")
    xr.testing.assert_identical(back, ds)
    assert back["mean"].dtype == np.float32
    with pytest.raises(store.SpecMismatchError, match="different sweep"):
        store.check_finished(out, "B")
    bad = tmp_path / "bad.nc"
    bad.write_text("not netcdf")
    with pytest.raises(store.SpecMismatchError, match="not a readable sweep"):
        store.check_finished(str(bad), "A")


# ============================================================================ corrupt chunks
def _saved_chunk(tmp_path):
    ps = store.PartialStore(str(tmp_path / "s.nc"), json.dumps({"d": 3}))
    errs = np.random.default_rng(0).lognormal(size=(2, 3, 4)).astype(np.float32)
    moments = summary.moments_of(errs.reshape(6, 4))
    ps.save(0, 0, 4, errs, moments)
    return ps, errs, moments, ps.chunk_path(0, 0, 4)


def _expect_corrupt(ps, path):
    with pytest.raises(store.CorruptChunkError, match=re.escape(path)) as info:
        ps.load(0, 0, 4)
    assert info.value.path == path and isinstance(info.value, ValueError)


def test_corrupt_chunks_raise_corrupt_chunk_error_naming_the_file(tmp_path):
    ps, errs, moments, path = _saved_chunk(tmp_path)
    good = open(path, "rb").read()
    # truncated, empty
    for data in (good[: len(good) // 2], good[:10], b""):
        with open(path, "wb") as fh:
            fh.write(data)
        _expect_corrupt(ps, path)
    # one flipped byte in the array data (caught by the zip CRC or the checksum)
    flipped = bytearray(good)
    flipped[good.index(errs.tobytes()) + 5] ^= 0x10
    with open(path, "wb") as fh:
        fh.write(bytes(flipped))
    _expect_corrupt(ps, path)
    # a valid zip with one value altered, the old checksum kept
    with np.load(io.BytesIO(good)) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["mean"] = arrays["mean"].copy()
    arrays["mean"][2] += 1.0
    np.savez(path, **arrays)
    _expect_corrupt(ps, path)
    # an old-format chunk without a checksum
    del arrays["sha256"]
    np.savez(path, **arrays)
    with pytest.raises(store.CorruptChunkError, match="missing sha256"):
        ps.load(0, 0, 4)
    # the engine's recovery: discard, recompute, save, load
    ps.discard(0, 0, 4)
    assert ps.finished() == set()
    ps.discard(0, 0, 4)                                  # discarding a missing chunk is fine
    ps.save(0, 0, 4, errs, moments)
    got, got_moments = ps.load(0, 0, 4)
    np.testing.assert_array_equal(got, errs)
    with pytest.raises(FileNotFoundError):
        ps.load(1, 0, 4)


def test_every_single_byte_flip_is_caught_or_harmless(tmp_path):
    """Flipping any one byte either raises CorruptChunkError or leaves the arrays intact (zip metadata)."""
    ps, errs, moments, path = _saved_chunk(tmp_path)
    good = open(path, "rb").read()
    for i in range(len(good)):
        flipped = bytearray(good)
        flipped[i] ^= 0xFF
        with open(path, "wb") as fh:
            fh.write(bytes(flipped))
        try:
            got, got_moments = ps.load(0, 0, 4)
        except store.CorruptChunkError as exc:
            assert path in str(exc)
            continue
        np.testing.assert_array_equal(got, errs)
        for a, b in zip(got_moments, moments):
            np.testing.assert_array_equal(a, b)


# ============================================================================ locking
def test_lock_refuses_a_second_holder_naming_path_and_pid(tmp_path):
    out = str(tmp_path / "run.nc")
    with store.lock(out) as lock_file:
        assert lock_file == out + ".lock"
        assert open(lock_file).read().strip() == str(os.getpid())
        with pytest.raises(store.LockedError, match=rf"{re.escape(lock_file)} is locked by process {os.getpid()}") as info:
            with store.lock(out):
                pass
        assert info.value.pid == os.getpid() and isinstance(info.value, ValueError)
        # another process sees the lock too
        code = ("import sys; from ttscale import store\n"
                "try:\n    store.lock(sys.argv[1]).__enter__()\n"
                "except store.LockedError as e:\n    print(e.pid); sys.exit(3)\n")
        child = subprocess.run([sys.executable, "-c", code, out], capture_output=True, text=True, timeout=120)
        assert child.returncode == 3 and child.stdout.strip() == str(os.getpid()), child.stderr
    assert not os.path.exists(out + ".lock")
    with store.lock(out):                                # released on exit: can be taken again
        pass


def test_lock_is_released_when_the_holder_dies(tmp_path):
    out = str(tmp_path / "run.nc")
    code = ("import os, sys; from ttscale import store\n"
            "held = store.lock(sys.argv[1]); held.__enter__(); print('locked', flush=True); os._exit(0)\n")
    child = subprocess.run([sys.executable, "-c", code, out], capture_output=True, text=True, timeout=120)
    assert child.stdout.strip() == "locked", child.stderr
    assert os.path.exists(out + ".lock")                 # the stale file stays ...
    with store.lock(out):                                # ... but the OS released the flock
        assert open(out + ".lock").read().strip() == str(os.getpid())


# ============================================================================ permissions
def test_written_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        store.atomic_write_bytes(str(tmp_path / "a.bin"), b"x")
        ps = store.PartialStore(str(tmp_path / "s.nc"), "{}")
        errs = np.ones((1, 1, 2), np.float32)
        ps.save(0, 0, 2, errs, summary.moments_of(errs.reshape(1, 2)))
        ds = xr.Dataset({"v": ("x", np.arange(3.0))})
        store.write_dataset(ds, str(tmp_path / "d.nc"))
        for f in (tmp_path / "a.bin", tmp_path / "s.nc.partial" / "spec.json",
                  tmp_path / "s.nc.partial" / ps.chunk_name(0, 0, 2), tmp_path / "d.nc"):
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o644, f
        os.umask(0o077)
        store.atomic_write_bytes(str(tmp_path / "b.bin"), b"x")
        assert stat.S_IMODE(os.stat(tmp_path / "b.bin").st_mode) == 0o600
        assert store._umask() == 0o077
    finally:
        os.umask(old)
    # a failing writer leaves neither the target nor a temporary
    with pytest.raises(RuntimeError):
        with store.atomic_path(str(tmp_path / "c.nc")) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("killed")
    assert not any(name.startswith(".tmp-") or name == "c.nc" for name in os.listdir(tmp_path))


def test_save_dataset_round_trips_json_attrs_and_booleans(tmp_path):
    """store.save_dataset / load_dataset (the preset cache's codec): list/dict/bool/None attributes and boolean
    variables survive netCDF; the directory is created; write_text is atomic and UTF-8."""
    import numpy as np
    import xarray as xr

    from ttscale import store

    ds = xr.Dataset({"flag": ("a", np.array([True, False, True])), "x": ("a", np.arange(3.0))},
                    attrs={"levels": [1.0, 0.1], "cfg": {"k": 2}, "on": True, "none": None, "name": "plain"})
    path = tmp_path / "deep" / "dir" / "d.nc"
    store.save_dataset(ds, path)
    back = store.load_dataset(path)
    assert back["flag"].dtype == bool and back["flag"].values.tolist() == [True, False, True]
    assert back.attrs["levels"] == [1.0, 0.1] and back.attrs["cfg"] == {"k": 2}
    assert back.attrs["on"] is True and back.attrs["none"] is None and back.attrs["name"] == "plain"
    store.write_text(tmp_path / "t" / "s.md", "λ ≥ ½\n")
    assert (tmp_path / "t" / "s.md").read_text(encoding="utf-8") == "λ ≥ ½\n"
    assert not [p for p in (tmp_path / "t").iterdir() if p.name.startswith(".tmp-")]


_DATA = os.path.join(os.path.dirname(__file__), "data")


def test_sweep_files_written_by_h5netcdf_still_load_and_are_reused(tmp_path, monkeypatch):
    """``tests/data/sweep_written_by_h5netcdf.nc`` was written by ttscale when its netCDF engine was h5netcdf (one CPU
    device, the spec below). The netCDF4 engine reads it back as the same sweep: the numbers agree with a fresh
    in-memory run, booleans and strings keep their types, and ``run_sweep(spec, out=...)`` returns the stored file
    as finished (its identity matches) instead of recomputing it."""
    import shutil

    import numpy as np

    from ttscale import store, sweep
    from ttscale.sweep_spec import SweepSpec

    spec = SweepSpec(d=4, alphas=[0.0, 1.0], ns=(5, 10), ms=(8, float("inf")), k_max=3, prompts=32, noise=0.1)
    old = store.read_dataset(os.path.join(_DATA, "sweep_written_by_h5netcdf.nc"))
    fresh = sweep.run_sweep(spec, progress=False)
    assert set(old.data_vars) == set(fresh.data_vars) and old.attrs["spec_identity"] == spec.identity()
    for name in fresh.variables:
        assert old[name].dtype == fresh[name].dtype, name
        if np.issubdtype(fresh[name].dtype, np.number):
            np.testing.assert_allclose(old[name].values, fresh[name].values, rtol=1e-6, err_msg=name)
        else:
            assert old[name].values.tolist() == fresh[name].values.tolist(), name
    out = tmp_path / "old.nc"
    shutil.copy(os.path.join(_DATA, "sweep_written_by_h5netcdf.nc"), out)
    def no_compute(*args, **kwargs):
        raise AssertionError("run_sweep recomputed a sweep whose finished file was there")

    monkeypatch.setattr(sweep, "_run", no_compute)
    reused = sweep.run_sweep(spec, out=str(out), progress=False)
    assert reused.attrs["devices"] == old.attrs["devices"] == '["cpu:0"]'  # the stored file
    assert not os.path.exists(str(out) + ".partial")


def test_preset_files_written_by_h5netcdf_still_load_and_new_files_are_netcdf4(tmp_path):
    """The preset codec on a file written with h5netcdf (``tests/data/preset_written_by_h5netcdf.nc``: the
    Dataset of the round-trip test above, with a non-ASCII name); files written now are netCDF-4 (HDF5 signature),
    not netCDF-3 classic."""
    import numpy as np
    import xarray as xr

    from ttscale import store

    back = store.load_dataset(os.path.join(_DATA, "preset_written_by_h5netcdf.nc"))
    assert back["flag"].dtype == bool and back["flag"].values.tolist() == [True, False, True]
    np.testing.assert_array_equal(back["x"].values, np.arange(3.0))
    assert back.attrs["levels"] == [1.0, 0.1] and back.attrs["cfg"] == {"k": 2}
    assert back.attrs["on"] is True and back.attrs["none"] is None and back.attrs["name"] == "plain λ"
    path = tmp_path / "new.nc"
    store.write_dataset(xr.Dataset({"x": ("a", np.arange(3.0))}), str(path))
    assert path.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"
