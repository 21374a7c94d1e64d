"""Data loading (fastntk.data.loader): .npy (memory-mapped), .zarr, .h5/.hdf5, sphere:..."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from fastntk.data import uniform_sphere as sphere
from fastntk.data.loader import load_data, parse_sphere


@pytest.fixture
def X():
    return sphere(12, 4, 0)


def test_npy_is_memory_mapped(tmp_path, X):
    np.save(tmp_path / "X.npy", X)
    got = load_data(str(tmp_path / "X.npy"))
    assert isinstance(got, np.memmap) and np.array_equal(got, X)
    np.save(tmp_path / "f32.npy", X.astype(np.float32))
    got = load_data(tmp_path / "f32.npy")
    assert got.dtype == np.float64 and np.allclose(got, X, atol=1e-7)
    np.save(tmp_path / "v.npy", X[0])
    with pytest.raises(ValueError, match="2-D"):
        load_data(str(tmp_path / "v.npy"))
    with pytest.raises(ValueError, match="drop"):
        load_data(str(tmp_path / "X.npy") + ":x")


def test_zarr_array_and_group(tmp_path, X):
    zarr.save_array(str(tmp_path / "a.zarr"), X)
    assert np.array_equal(load_data(str(tmp_path / "a.zarr")), X)
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("train", data=X)
    assert np.array_equal(load_data(str(tmp_path / "g.zarr")), X)      # the only array
    g.create_array("test", data=X[:3])
    assert np.array_equal(load_data(str(tmp_path / "g.zarr") + ":test"), X[:3])
    with pytest.raises(ValueError, match="2 arrays"):
        load_data(str(tmp_path / "g.zarr"))
    with pytest.raises(ValueError, match="no array"):
        load_data(str(tmp_path / "g.zarr") + ":nope")


def test_hdf5(tmp_path, X):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["grp/X"] = X
    assert np.array_equal(load_data(str(tmp_path / "d.h5")), X)
    assert np.array_equal(load_data(str(tmp_path / "d.h5") + ":grp/X"), X)
    with h5py.File(tmp_path / "two.hdf5", "w") as f:
        f["a"] = X
        f["b"] = X[:2]
    with pytest.raises(ValueError, match="2 datasets"):
        load_data(str(tmp_path / "two.hdf5"))
    assert load_data(str(tmp_path / "two.hdf5") + ":b").shape == (2, 4)
    with pytest.raises(ValueError, match="no dataset"):
        load_data(str(tmp_path / "two.hdf5") + ":c")


def test_sphere_spec():
    X = load_data("sphere:n=50,d=3,seed=4")
    assert X.shape == (50, 3) and np.array_equal(X, sphere(50, 3, 4))
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0)
    assert parse_sphere("sphere:d=2,n=5") == {"n": 5, "d": 2, "seed": 0}
    for bad, msg in [("sphere:n=5", "missing d"), ("sphere:n=5,d=x", "integer"),
                     ("sphere:n=5,d=2,k=1", "item"), ("sphere:n=0,d=2", ">= 1")]:
        with pytest.raises(ValueError, match=msg):
            load_data(bad)


def test_errors_and_normalize(tmp_path, X):
    with pytest.raises(FileNotFoundError):
        load_data(str(tmp_path / "missing.npy"))
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="unknown data format"):
        load_data(str(tmp_path / "x.csv"))
    Y = 3.0 * X
    Y[2, 1] = np.nan
    np.save(tmp_path / "bad.npy", Y)
    assert load_data(str(tmp_path / "bad.npy")).shape == (12, 4)   # validation is the caller's
    with pytest.raises(ValueError, match="row 2"):
        load_data(str(tmp_path / "bad.npy"), normalize=True)
    np.save(tmp_path / "s.npy", 3.0 * X)
    assert np.allclose(load_data(str(tmp_path / "s.npy"), normalize=True), X, atol=1e-15)
