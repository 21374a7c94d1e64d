"""Stored kernel matrices are first-class (issue 9): `fastntk spectrum --matrix`, the data
loader refusing stores, incomplete stores, the documented layout, and one data loader for
every command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from fastntk import NTK, load_data, top_eigenvalues
from fastntk.cli.app import main
from fastntk.data import uniform_sphere
from fastntk.scale.store import ARRAY, ATTR, BOUND, DONE, LOCKS, StoreError, open_matrix

DATA = "sphere:n=600,d=8,seed=3"
NET = ["-a", "relu", "-L", "2", "--gamma-b", "0.5", "--gamma-w", "0.8660254037844386"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("s") / "K.zarr")
    assert main(["matrix", "--data", DATA, *NET, "--out", path, "--chunk", "128",
                 "--no-progress"]) == 0
    return path


def test_spectrum_of_a_stored_matrix_equals_the_data_spectrum(store, capsys):
    capsys.readouterr()
    assert main(["spectrum", "--matrix", store, "-k", "6", "--tol", "1e-12", "--centered",
                 "--json", "--no-progress"]) == 0
    got = json.loads(capsys.readouterr().out)
    net = NTK("relu", 2, gamma_b=0.5, gamma_w=0.8660254037844386)
    X = load_data(DATA)
    ref = top_eigenvalues(net, X, 6, tol=1e-12)
    np.testing.assert_allclose(got["ntk"]["eigenvalues"], ref.eigenvalues, rtol=1e-10)
    assert got["ntk"]["effective_rank"] == pytest.approx(ref.effective_rank, rel=1e-10)
    assert got["ntk"]["effective_rank"] <= got["ntk"]["theorem3_bound"]
    assert got["network"] == net.to_dict() and got["n"] == 600
    ref_c = top_eigenvalues(net, X, 6, tol=1e-12, centered=True)
    np.testing.assert_allclose(got["centered"]["eigenvalues"], ref_c.eigenvalues, rtol=1e-10)
    assert main(["spectrum", "--matrix", store, "-k", "3", "--no-progress"]) == 0
    assert "Theorem 3" in capsys.readouterr().out


def test_data_option_refuses_a_store(store, capsys):
    for spec in (store, store + ":kernel", store + ":done"):
        assert main(["spectrum", "--data", spec, "-k", "3", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "kernel-matrix store" in err and "--matrix" in err
    with pytest.raises(ValueError, match="--matrix"):
        load_data(store)


def test_matrix_options_that_do_not_apply_are_refused(store, capsys):
    assert main(["spectrum", "--matrix", store, "--data", "digits", "-k", "3"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["spectrum", "--matrix", store, "--compare-gram", "-k", "3"]) == 2
    assert "--compare-gram" in capsys.readouterr().err
    assert main(["spectrum", "--matrix", store, "-a", "tanh", "-k", "3"]) == 2
    assert "holds the kernel of" in capsys.readouterr().err


def test_incomplete_store_is_refused_with_the_missing_count(store, tmp_path, capsys):
    import shutil

    broken = str(tmp_path / "broken.zarr")
    shutil.copytree(store, broken)
    done = zarr.open_array(store=broken, path=DONE, mode="r+")
    done[0, 1] = 0
    done[2, 3] = 0
    assert main(["spectrum", "--matrix", broken, "-k", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "incomplete: 2 of 15 blocks are missing" in err and "rerun" in err
    with pytest.raises(StoreError, match="2 of 15"):
        open_matrix(broken)
    assert open_matrix(broken, require_complete=False).shape == (600, 600)
    assert main(["spectrum", "--matrix", str(tmp_path / "none.zarr"), "-k", "3"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_store_layout_is_as_documented(store):
    """The layout of fastntk.scale.store's docstring and the README, read with plain tools."""
    import warnings

    import dask.array as da

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no foreign files in the zarr hierarchy
        group = zarr.open_group(store, mode="r")
        assert set(group.array_keys()) == {ARRAY, DONE, BOUND}
        assert set(group.group_keys()) == {LOCKS}
    meta = dict(group.attrs)[ATTR]
    assert meta["complete"] is True and meta["network"]["activation"] == "relu"
    assert meta["shape"] == [600, 600] and meta["chunk"] == 128 and meta["symmetric"]
    K = da.from_zarr(store, component=ARRAY).compute()
    net = NTK("relu", 2, gamma_b=0.5, gamma_w=0.8660254037844386)
    assert np.array_equal(K, net.kernel(load_data(DATA)))
    assert group[DONE].shape == (5, 5) and group[DONE][:].sum() == 15  # upper triangle
    done = group[DONE][:].astype(bool)  # each written block's certified bound: exact tiles
    assert np.all(group[BOUND][:][done] == 0.0) and np.all(np.isnan(group[BOUND][:][~done]))


def test_one_loader_for_every_command(tmp_path, capsys):
    out = str(tmp_path / "D.zarr")
    assert main(["matrix", "--data", "digits", "-L", "1", "--out", out, "--chunk", "1024",
                 "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [1797, 1797]
    for spec in ("digits", "sphere:n=7,d=3,seed=1"):
        X = load_data(spec)
        assert X.ndim == 2 and np.allclose(np.linalg.norm(X, axis=1), 1.0)
    np.testing.assert_array_equal(load_data("sphere:n=7,d=3,seed=1"), uniform_sphere(7, 3, 1))
