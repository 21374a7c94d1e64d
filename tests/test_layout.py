"""The tree shows the pipeline: imports run one way, stage by stage, with no cycle.

Stages (docs/architecture.md, "Stages"): common and kernels, then data, network, tiles, scale,
spectrum, sphere, analysis, learning, and the CLI last.  A module may import its own stage and
earlier ones at module level; a later stage only through a named door (``DOORS``), such as the
network stage's ``fastntk.network.ntk._later_stages``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

import fastntk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "fastntk")
KERNELS = os.path.join(ROOT, "kernels")
STAGES = ["common", "kernels", "data", "network", "tiles", "scale", "spectrum", "sphere",
          "analysis", "learning", "cli"]
RANK = {"common": 0, "kernels": 0, **{s: i for i, s in enumerate(STAGES) if i > 1}}


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for fastntk and fastntk.kernels."""
    found = {}
    for base, prefix in ((PKG, "fastntk"), (KERNELS, "fastntk.kernels")):
        for dirpath, _, files in os.walk(base):
            if "__pycache__" in dirpath:
                continue
            rel = os.path.relpath(dirpath, base)
            parts = [] if rel == "." else rel.split(os.sep)
            for f in files:
                if f.endswith(".py"):
                    name = f[:-3]
                    dotted = ".".join([prefix, *parts] + ([] if name == "__init__" else [name]))
                    found[dotted] = os.path.join(dirpath, f)
    return found


MODULES = _modules()


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def _imports(module: str, path: str):
    """(target module, at module level?, enclosing function) for every fastntk import."""
    tree = ast.parse(open(path).read(), path)
    is_pkg = path.endswith("__init__.py")
    package = module if is_pkg else module.rpartition(".")[0]
    out = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            f = func
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                f = child.name
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("fastntk"):
                    for alias in child.names:
                        sub = f"{target}.{alias.name}"
                        out.append((sub if sub in MODULES else target, func is None, func))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("fastntk"):
                        out.append((alias.name, func is None, func))
            visit(child, f)

    visit(tree, None)
    return out


def test_every_module_belongs_to_a_stage():
    loose = [m for m in MODULES if m.count(".") == 1 and m.split(".")[1] not in RANK
             and m not in ("fastntk.__main__",)]
    assert loose == [], f"modules outside the stage subpackages: {loose}"


def test_no_module_imports_a_later_stage_at_module_level():
    bad = []
    for module, path in MODULES.items():
        src = _stage(module)
        if src is None:
            continue  # the package root and __main__ see everything
        for target, top, _ in _imports(module, path):
            dst = _stage(target)
            if dst is not None and top and RANK[dst] > RANK[src]:
                bad.append(f"{module} imports {target}")
    assert bad == [], "imports against the pipeline:\n" + "\n".join(bad)


#: The only functions that import a later stage (lazily): NTK's conveniences, and the data
#: loader's check that a path is a kernel-matrix store rather than data.
DOORS = {"fastntk.network.ntk._later_stages", "fastntk.data.loader.load_data"}


def test_later_stages_are_reached_only_through_named_doors():
    doors = set()
    for module, path in MODULES.items():
        src = _stage(module)
        if src is None:
            continue
        for target, _, func in _imports(module, path):
            dst = _stage(target)
            if dst is not None and RANK[dst] > RANK[src]:
                doors.add(f"{module}.{func}")
    assert doors == DOORS


def test_no_module_level_import_cycle():
    graph = {m: {t if t in MODULES else t.rpartition(".")[0] for t, top, _ in _imports(m, p)
                 if top} & set(MODULES) for m, p in MODULES.items()}
    # a package's __init__ importing its own submodules is not a cycle of the pipeline
    for m in graph:
        graph[m] = {t for t in graph[m] if not (MODULES[m].endswith("__init__.py")
                                               and t.startswith(m + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if t.startswith(m + ".") or m.startswith(t + "."):
                continue  # a submodule and its own package
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                dfs(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "kernels"])
def test_each_stage_imports_on_its_own(stage):
    """Importing a stage first, in a fresh interpreter, works (no hidden cycle)."""
    code = f"import fastntk.{stage}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_the_tree_lists_the_stages():
    names = sorted(e for e in os.listdir(PKG) if not e.startswith(("_", ".")))
    assert names == sorted(s for s in STAGES if s != "kernels"), names
    assert all(f"    {s}" in fastntk.__doc__ for s in STAGES)


def test_every_stage_is_installed():
    """A regular (non-editable) install ships every subpackage: pyproject lists them all."""
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        listed = set(tomllib.load(fh)["tool"]["setuptools"]["packages"])
    assert listed == {"fastntk"} | {f"fastntk.{s}" for s in STAGES}, listed
