"""Every `fastntk` command form in the README's bash blocks runs (issue 17, item 24).

The forms are read from README.md itself: each is run twice, bare (every optional `[...]`
part left out) and full (every optional part in, the first of `a | b` alternatives and of
`cpu|cuda` values), with its sizes shrunk by the table ``TINY`` below and its placeholders
(X.npy, K.zarr, DIR, ...) replaced by files of a temporary folder.  A form the table cannot
shrink, or a placeholder left in a command, fails the test, so a new README form needs an
entry here before it can pass.  `--device cuda` runs on the CPU where no GPU is present (the
CUDA tiles are tested in tests/test_contract.py); the `sbatch` forms are run by
tests/test_slurm.py.  Every run must exit 0, and its numbers are checked where a form
computes one against an independent reference (dense LAPACK on the kernel).
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

from fastntk import NTK, uniform_sphere
from fastntk.cli.app import main

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"

#: (option, README value) -> tiny value.  Every size in a README form must be listed.
TINY = {
    ("-k", "600"): "30", ("-k", "50"): "20", ("--data", "digits"): "sphere:n=120,d=6,seed=1",
    ("--empirical-width", "500"): "30", ("--fit-range", "100:500"): "5:30",
    ("--kmax", "2000"): "40", ("--sample", "10000"): "600", ("--chunk", "4096"): "40",
    ("--workers", "N"): "2", ("--part", "k/K"): "1/1", ("--smallest", "5"): "5",
    ("--n", "5000"): "200", ("--d", "784"): "8",
    ("--empirical-width", "512"): "30", ("--empirical-seeds", "4"): "2",
    ("--ridge", "R"): "1e-3",
}
#: sizes small enough as they are
AS_IS = {("-T", "50"), ("--hidden-layers", "3"), ("-L", "1"), ("-d", "3"),
         ("--gamma-b", "0.5"), ("--activation", "relu"), ("--device", "cpu"),
         ("--t", "1,10,100,inf"), ("--test-fraction", "0.2"), ("-k", "20"),
         ("--solver", "krylov")}


def readme_commands() -> list[str]:
    """The `fastntk ...` commands of the README's bash blocks (continuations joined,
    comments dropped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in line.split("&&"):
                part = " ".join(part.split())
                if part.startswith("fastntk "):
                    out.append(part)
    return out


def _expand(form: str, full: bool) -> str:
    """The form with its optional [...] parts left out, or all put in (innermost first),
    taking the first of 'a | b' alternatives."""
    pattern = re.compile(r"\[([^\[\]]*)\]")
    while pattern.search(form):
        form = pattern.sub(lambda m: m.group(1).split(" | ")[0] if full else "", form)
    return " ".join(form.split())


def tiny_argv(form: str, full: bool, paths: dict) -> list[str]:
    words = _expand(form, full).split()[1:]  # drop "fastntk"
    argv = []
    for i, w in enumerate(words):
        prev = words[i - 1] if i else ""
        if "|" in w:
            w = w.split("|")[0]  # a value alternative, e.g. cpu|cuda
        if prev == "--device" and w == "cuda":
            from fastntk.tiles.gpu import cuda_available

            w = "cuda" if cuda_available() else "cpu"
        if words[0] == "predict" and (prev, w) == ("--data", "digits"):
            pass  # digits with its own labels (1,797 rows: the dense path, seconds)
        elif (prev, w) in TINY:
            w = TINY[prev, w]
        elif w in paths:
            w = paths[w]
        elif w.startswith("-") or not prev.startswith("-") or (prev, w) in AS_IS:
            pass
        else:
            raise AssertionError(f"README form {form!r}: no tiny value for {prev} {w}: "
                                 "add it to TINY or AS_IS")
        argv.append(w)
    left = [w for w in argv if re.fullmatch(r"[A-Z]+|[A-Z]\.\w+", w)]
    assert not left, f"placeholders {left} left in {argv}"
    return argv


class TinyPaper:
    """`fastntk paper` at a size for CI: the same parts, smaller runs."""

    def __init__(self, quick: bool = False) -> None:
        self.quick = quick
        self.rho_points, self.networks, self.width, self.n_fig2 = 21, 2, 20, 40
        self.kmax, self.sample, self.index_range = 30, 300, (20, 200)


def test_readme_lists_the_forms_this_test_knows():
    forms = readme_commands()
    commands = {f.split()[1] for f in forms}
    assert commands >= {"coeffs", "table1", "matrix", "spectrum", "sphere", "paper",
                        "bench", "predict"}, forms


@pytest.mark.slow
def test_every_readme_command_form_runs(tmp_path, monkeypatch, capsys):
    import fastntk.analysis.paper as paper

    monkeypatch.setattr(paper, "PaperSettings", TinyPaper)
    X = uniform_sphere(80, 5, seed=3)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", np.sign(X[:, 0]))
    np.save(tmp_path / "Xt.npy", uniform_sphere(20, 5, seed=4))
    np.save(tmp_path / "yt.npy", np.sign(uniform_sphere(20, 5, seed=4)[:, 0]))
    store = None
    runs, seen = 0, set()
    for n, form in enumerate(readme_commands()):
        for full in (False, True):
            run = tmp_path / f"run{n}-{int(full)}"
            run.mkdir()
            paths = {"X.npy": str(tmp_path / "X.npy"), "K.zarr": str(run / "K.zarr"),
                     "y.npy": str(tmp_path / "y.npy"), "Xt.npy": str(tmp_path / "Xt.npy"),
                     "yt.npy": str(tmp_path / "yt.npy"),
                     "results/": str(run / "results"), "DIR": str(run / "ck"),
                     "sph/": str(run / "sph"), "paper-figures": str(run / "paper")}
            argv = tiny_argv(form, full, paths)
            if _expand(form, full) in seen:  # a form without optional parts: run once
                continue
            seen.add(_expand(form, full))
            if argv[0] == "spectrum" and "--matrix" in argv:
                assert store is not None, "the README shows `matrix` before `--matrix`"
                argv[argv.index("--matrix") + 1] = store
            rc = main(argv)
            out, err = capsys.readouterr()
            assert rc == 0, (form, argv, err[-2000:])
            runs += 1
            if argv[0] == "matrix":
                store = paths["K.zarr"]
            if argv[0] == "spectrum" and "--matrix" not in argv:
                _check_top_eigenvalue(argv, out)
            if "--out" in argv and argv[0] != "matrix":
                folder = pathlib.Path(argv[argv.index("--out") + 1])
                assert any(folder.glob("*.json")) and any(folder.glob("*.png")), argv
    assert runs == len(seen) >= len(readme_commands())


def _check_top_eigenvalue(argv: list[str], out: str) -> None:
    """lambda_1 printed equals dense LAPACK on the kernel of the same data (1e-9); the
    spectrum forms use the default network."""
    from fastntk.data.loader import load_data

    assert not {"-a", "--activation", "-L", "--hidden-layers"} & set(argv), argv
    data = argv[argv.index("--data") + 1] if "--data" in argv else "digits"
    X = load_data(data, normalize=True)
    K = NTK("relu", 1).kernel(X) / len(X)
    ref = np.linalg.eigvalsh(K)[-1]
    row = next(ln for ln in out.splitlines() if ln.split()[:1] == ["1"])
    assert float(row.split()[1]) == pytest.approx(ref, rel=1e-9)
