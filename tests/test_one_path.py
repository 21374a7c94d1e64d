"""One implementation of each idea (issue 9): the public paths go through the tile contract,
the network is immutable and value-keyed, the package has no import cycles, defaults are
named, dead code is gone, and user-facing text cites only files the project ships."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import pathlib
import re

import naive
import numpy as np
import pytest

import fastntk
from fastntk import NTK
from fastntk.data import uniform_sphere
from fastntk.tiles import cpu, gpu
from fastntk.tiles.dispatch import theta_tile, tile_spec

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fastntk"
KERNELS = ROOT / "kernels"


def test_kernel_is_the_symmetric_tile_and_exact_on_duplicates():
    net = NTK("relu", 3)
    X = uniform_sphere(40, 784, 0)
    X[7] = X[3]
    K = net.kernel(X)
    assert np.array_equal(K, theta_tile(net, X))
    assert K[3, 7] == K[7, 3] == net.theta_one  # exact: the old separate path was 2e-9 off
    ref = naive.tile_oracle("relu", X[[3, 7, 1]], X[[3, 7, 1]], 3, 1.0, 0.0, 1.0, None)
    assert np.max(np.abs(K[np.ix_([3, 7, 1], [3, 7, 1])] - ref)) <= 1e-15 * net.theta_one
    Y = uniform_sphere(5, 784, 1)
    assert np.array_equal(net.kernel(X, Y), theta_tile(net, X, Y))


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_float32_normalised_rows_work_on_every_path(name):
    """Rows normalised in float32 have norms 1 +- 6e-8; they are used as their projections."""
    from fastntk import spectrum_study, top_eigenvalues
    from fastntk.data import digits

    X32 = digits()[:200].astype(np.float32)
    X32 /= np.linalg.norm(X32, axis=1, keepdims=True)
    X = X32.astype(np.float64)
    P = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert np.abs(np.linalg.norm(X, axis=1) - 1).max() > 1e-8
    net = NTK(name, 3)
    one = net.theta_one
    tol = 1e-14 if net.has_exact else 2e-12  # tiles of different degree: within 2 x 1e-12
    assert np.max(np.abs(net.kernel(X) - net.kernel(P))) <= tol * one
    study = spectrum_study(net, X, k=5, dense_below=1000, compare_gram=False)
    ref = top_eigenvalues(net, P, 5, tol=1e-12)
    np.testing.assert_allclose(study.ntk.eigenvalues, ref.eigenvalues, rtol=1e-10)
    assert np.max(np.abs(net.matrix(X, chunks=64).compute() - net.kernel(P))) <= tol * one


def test_backends_implement_one_signature():
    for name in ("tile", "tile_matvec"):
        a, b = inspect.signature(getattr(cpu, name)), inspect.signature(getattr(gpu, name))
        assert list(a.parameters)[:4] == list(b.parameters)[:4]
        assert list(a.parameters)[0] == "spec"


def test_ntk_is_frozen_and_keyed_by_value():
    a, b = NTK("relu", 3, gamma_b=0.5), NTK("relu", 3, gamma_b=0.5)
    assert a == b and hash(a) == hash(b) and a is not b
    assert a != NTK("relu", 3) and NTK("leaky_relu:0.1", 2) != NTK("leaky_relu:0.1000001", 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.hidden_layers = 4
    ca, cb = a.coefficients(30), b.coefficients(30)
    assert ca is cb  # one cache entry for equal networks
    for arr in (ca.ntk, ca.nngp, ca.layers[-1].kappa, a.variances, tile_spec(a, "series").coeffs):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 1.0
    assert tile_spec(a) is tile_spec(b)
    assert NTK.from_dict(a.to_dict()) == a


# Import cycles and the direction of imports between stages: tests/test_layout.py.


def test_defaults_are_named_not_literal():
    """Tolerances and caps in public signatures come from fastntk.common.defaults."""
    literals = {1e-12, 1e-10, 1e-17, 2048, 4096}
    offenders = []
    for f in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for default in [*node.args.defaults, *node.args.kw_defaults]:
                    if isinstance(default, ast.Constant) and default.value in literals and \
                            not isinstance(default.value, bool):
                        offenders.append(f"{f.name}:{node.name}={default.value}")
    assert not offenders, offenders


def test_public_api_and_module_map():
    for name in ("top_eigenvalues", "top_eigenvalues_stored", "spectrum_study",
                 "sphere_eigenvalues", "empirical_ntk", "get_client", "load_data",
                 "uniform_sphere", "tile_spec"):
        assert callable(getattr(fastntk, name)), name
        assert name in fastntk.__all__
    doc = fastntk.__doc__
    for f in PACKAGE.rglob("*.py"):
        if f.stem not in ("__init__", "__main__"):
            assert re.search(rf"\b{f.stem}\b", doc), f"{f.stem} is missing from the module map"
    arch = (ROOT / "docs" / "architecture.md").read_text()
    for f in [*PACKAGE.rglob("*.py"), *KERNELS.glob("*.py")]:
        if f.stem not in ("__init__", "__main__"):
            assert f"`{f.stem}`" in arch or f"`kernels/{f.stem}`" in arch, f.stem


def test_dead_code_is_gone():
    from fastntk.kernels import series_cpu

    from fastntk.network import series
    from fastntk.spectrum import checkpoint, operators

    assert not hasattr(series, "power_table") and not hasattr(series_cpu, "power_table")
    assert not hasattr(operators, "block_sizes")
    assert not hasattr(operators.DenseOperator, "dense")
    assert not hasattr(checkpoint.Checkpoint, "passes")
    assert "info" not in {f.name for f in dataclasses.fields(fastntk.Coefficients)}


def _user_facing_files():
    files = [*PACKAGE.rglob("*.py"), *KERNELS.glob("*.py"), ROOT / "README.md",
             *(ROOT / "slurm").iterdir(), *(ROOT / "bench").glob("*.py"),
             *(ROOT / "bench").glob("*.sh"), *(ROOT / "docs").glob("*.md")]
    return [f for f in files if f.is_file()]


def test_user_facing_text_cites_only_shipped_files():
    math = (ROOT / "docs" / "math.md").read_text()
    sections = {int(m) for m in re.findall(r"^## (\d+)\. ", math, re.M)}
    assert sections == set(range(1, 12))
    for f in _user_facing_files():
        text = f.read_text()
        assert "MATH.md" not in text and "shared/design" not in text, f
        for n in re.findall(r"docs/math\.md\s+sections?\s+(\d+)", text):
            assert int(n) in sections, f"{f.name} cites docs/math.md section {n}"


def test_cli_help_cites_docs():
    from fastntk.cli.app import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "MATH.md" not in text, name
    assert "docs/math.md section 1" in sub.choices["spectrum"].format_help()
