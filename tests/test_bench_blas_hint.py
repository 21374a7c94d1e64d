"""``fastntk.analysis.benchmark.blas_hint`` on synthetic ``machine_info`` dicts: a note where
OpenBLAS runs kernels narrower than the CPU's (AVX2 kernels on an AVX-512 CPU, OpenBLAS issue
#6029 on AMD Zen 5), None otherwise.  No timing."""

from __future__ import annotations

import re

import pytest

from fastntk.analysis.benchmark import blas_hint

AVX512 = ["sse4_2", "avx", "avx2", "fma", "avx512f"]
AVX2 = ["sse4_2", "avx", "avx2", "fma"]


def _lib(internal_api: str = "openblas", architecture: str | None = "Haswell",
         version: str | None = "0.3.31") -> dict:
    return {"user_api": "blas", "internal_api": internal_api, "version": version,
            "num_threads": 2, "threading_layer": "pthreads", "architecture": architecture,
            "filepath": f"/lib/lib{internal_api}.so"}


def _machine(flags: list[str], *libs: dict) -> dict:
    return {"cpu_flags": flags, "blas": list(libs)}


@pytest.fixture(autouse=True)
def _no_coretype(monkeypatch):
    """The hint names OPENBLAS_CORETYPE where it is set: start from an environment without."""
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)


@pytest.mark.parametrize("arch, width", [("Haswell", "AVX2"), ("Zen", "AVX2"),
                                         ("HASWELL", "AVX2"), ("Sandybridge", "AVX"),
                                         ("Prescott", "SSE")])
def test_hint_for_narrow_openblas_kernels_on_an_avx512_cpu(arch, width):
    note = blas_hint(_machine(AVX512, _lib(architecture=arch)))
    assert note is not None and "\n" not in note
    assert f"{arch} ({width})" in note and "OpenBLAS 0.3.31" in note
    assert "AVX-512" in note and "OPENBLAS_CORETYPE=SkylakeX" in note
    assert "before Python starts" in note and "measure both" in note and "#6029" in note
    # no speed-up figure is claimed
    assert not re.search(r"\d\s*(x|%)|faster|speed", note, re.IGNORECASE)


def test_hint_names_every_openblas_once():
    """numpy's and scipy's OpenBLAS side by side, both on Haswell kernels."""
    note = blas_hint(_machine(AVX512, _lib(version="0.3.31.188.0"), _lib(version="0.3.30"),
                              _lib("openmp", None, None)))
    assert note is not None
    assert "OpenBLAS 0.3.30 and 0.3.31.188.0 run their Haswell" in note
    assert note.count("Haswell") == 1
    swapped = blas_hint(_machine(AVX512, _lib(version="0.3.30"), _lib(version="0.3.31.188.0")))
    assert swapped == note  # the same words whatever order the libraries were loaded in


@pytest.mark.parametrize("arch", ["SkylakeX", "Cooperlake", "SapphireRapids", "skylakex"])
def test_no_hint_when_openblas_already_runs_avx512_kernels(arch):
    assert blas_hint(_machine(AVX512, _lib(architecture=arch))) is None


@pytest.mark.parametrize("arch", [None, "", "Zen5", "NewCoreOfTheFuture"])
def test_no_hint_for_an_unknown_or_missing_core_type(arch):
    assert blas_hint(_machine(AVX512, _lib(architecture=arch))) is None


@pytest.mark.parametrize("flags", [AVX2, [], None])
def test_no_hint_without_avx512(flags):
    assert blas_hint({"cpu_flags": flags, "blas": [_lib()]}) is None


@pytest.mark.parametrize("lib", [_lib("mkl", "SkylakeX"), _lib("mkl", "Haswell"),
                                 _lib("blis", "haswell"), _lib("openmp", None, None)],
                         ids=["mkl", "mkl-haswell-name", "blis", "openmp"])
def test_no_hint_for_other_blas_libraries(lib):
    assert blas_hint(_machine(AVX512, lib)) is None
    assert blas_hint(_machine(AVX512)) is None  # no BLAS found at all


def test_hint_names_openblas_coretype_when_it_chose_the_narrow_kernels(monkeypatch):
    """OPENBLAS_CORETYPE=Haswell in the environment (as on the AMD EPYC VM of
    bench/RESULTS.md): the note says the setting chose the AVX2 kernels."""
    machine = _machine(AVX512, _lib())
    assert "#6029" in blas_hint(machine)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    note = blas_hint(machine)
    assert "OPENBLAS_CORETYPE=Haswell in the environment" in note and "#6029" not in note
    monkeypatch.setenv("OPENBLAS_CORETYPE", "SkylakeX")  # OpenBLAS then reports SkylakeX
    assert blas_hint(_machine(AVX512, _lib(architecture="SkylakeX"))) is None
