"""Persistence helpers: atomic writes, chunk bookkeeping, spec identity, netCDF round trip."""

from __future__ import annotations

import json
import os

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
