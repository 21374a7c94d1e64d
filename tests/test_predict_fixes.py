"""A fresh user's findings on the training-dynamics path (issue 19): an interrupt inside
compiled code, 1-D and non-numeric training rows, and the checkpoint refusal for dropped
test points.  Gradient descent's large steps are in tests/test_predict_dense_fast.py."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from fastntk import NTK, predict, uniform_sphere
from fastntk.cli.app import main
from fastntk.scale.cluster import sigterm_as_interrupt

# the module (fastntk.learning.predict the attribute is the function of that name)
predict_module = importlib.import_module("fastntk.learning.predict")


def _system_error_from_interrupt(*args, **kwargs):
    """What Numba raises when Ctrl-C lands inside a compiled call."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise SystemError("CPUDispatcher(<function exact_tile>) returned a result with an "
                          "exception set") from None


def test_interrupt_inside_compiled_code_is_an_interrupt():
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        _system_error_from_interrupt()
    with pytest.raises(SystemError, match="not an interrupt"), sigterm_as_interrupt():
        raise SystemError("not an interrupt")


def test_cli_interrupt_inside_compiled_code_exits_130(tmp_path, monkeypatch, capsys):
    X = uniform_sphere(40, 4, seed=0)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", X[:, 0])
    monkeypatch.setattr(predict_module, "dense_parts", _system_error_from_interrupt)
    code = main(["predict", "--data", str(tmp_path / "X.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--t", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err and "SystemError" not in err


def test_one_dimensional_and_non_numeric_training_rows():
    net = NTK("relu", 1)
    X = uniform_sphere(30, 3, seed=0)
    with pytest.raises(ValueError, match=r"X_train must be a 2-D array .* shape \(30,\)"):
        predict(net, X[:, 0], X[:, 1], t=1.0)
    with pytest.raises(ValueError, match="X_train must be numbers"):
        predict(net, [["a", "b"], ["c", "d"]], [1.0, 2.0], t=1.0)
    p = predict(net, X, X[:, 1], X[0], t=1.0)  # one test point given as a vector is fine
    assert p.test.shape == (1,)


def test_checkpoint_refusal_names_the_test_points(tmp_path):
    net = NTK("relu", 1)
    X = uniform_sphere(60, 3, seed=0)
    y = X[:, 0]
    ck = str(tmp_path / "ck")
    predict(net, X, y, X[:5], t=1.0, solver="krylov", checkpoint=ck)
    with pytest.raises(ValueError, match="test_points") as info:
        predict(net, X, y, t=1.0, solver="krylov", checkpoint=ck)
    assert "alpha" not in str(info.value)
