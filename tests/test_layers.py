"""The package's layers import downwards only (docs/architecture.md, "Layers").

``fastremask.sampler`` (with ``kernels/``, installed as ``fastremask.kernels``, a backend of the
sampler layer) < ``fastremask.models`` < ``fastremask.evaluation`` < ``fastremask.tools``. Every
``import`` and ``from ... import`` statement of every module is read with `ast`, those inside
functions included (the lazy ones are where upward imports used to hide), relative imports
resolved. The test fails on an import of a higher layer, and on a cycle between modules.
"""
from __future__ import annotations

import ast
import functools
import os
from collections import defaultdict

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {"sampler": 0, "kernels": 0, "models": 1, "evaluation": 2, "tools": 3}
NAMES = ("sampler", "models", "evaluation", "tools")

# Known upward imports still in the tree, each asserted to exist, so that the list can only
# shrink: none (the last, evaluation.evaluate -> tools.cli, went with `eval`'s argument half
# moving to tools/eval_command.py).
KNOWN_UPWARD: set = set()


def _modules() -> dict:
    """``{module name: file}`` for fastremask/ and kernels/ (as fastremask.kernels)."""
    out = {}
    for top, prefix in (("fastremask", "fastremask"), ("kernels", "fastremask.kernels")):
        base = os.path.join(ROOT, top)
        for dirpath, _, files in os.walk(base):
            for f in files:
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), base)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join([prefix, *rel])] = os.path.join(dirpath, f)
    return out


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].endswith("__init__.py")


@functools.lru_cache(maxsize=None)
def _parse(path: str) -> ast.Module:
    return ast.parse(open(path, encoding="utf-8").read(), path)


def _imports(module: str) -> list:
    """``[(imported module, line)]`` of ``module``: every import statement, at any depth."""
    tree = _parse(MODULES[module])
    package = module if _is_package(module) else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for a in node.names:           # `from fastremask import models` imports a module
                sub = f"{target}.{a.name}"
                found.append((sub if sub in MODULES else target, node.lineno))
    return [(t, line) for t, line in found if t == "fastremask" or t.startswith("fastremask.")]


def _layer(module: str):
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None     # the root package: no layer


def _edges() -> list:
    edges = []
    for m in MODULES:
        for t, line in _imports(m):
            while t not in MODULES and "." in t:      # `import fastremask.models.tiny.X`: the module
                t = t.rsplit(".", 1)[0]
            edges.append((m, t, line))
    return edges


def _upward() -> set:
    out = set()
    for m, t, line in _edges():
        a, b = _layer(m), _layer(t)
        if a is not None and b is not None and b > a:
            out.add((m, t))
    return out


def test_the_walk_sees_the_package():
    assert {"fastremask.sampler.loop", "fastremask.models.loading", "fastremask.kernels.sample",
            "fastremask.tools.cli", "fastremask.evaluation.evaluate"} <= set(MODULES)
    imports = dict(((m, t), line) for m, t, line in _edges())
    # a function-level import and a relative one are seen
    assert ("fastremask.models.loading", "fastremask.models.native") in imports
    assert ("fastremask.kernels.sample", "fastremask.kernels.numerics") in imports


def test_layers_import_downwards_only():
    upward = _upward()
    new = sorted(upward - KNOWN_UPWARD)
    assert not new, "upward imports (a lower layer importing a higher one): " + "; ".join(f"{m} -> {t}" for m, t in new)
    fixed = sorted(KNOWN_UPWARD - upward)
    assert not fixed, f"fixed, so remove from KNOWN_UPWARD: {fixed}"


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    """The test can fail: a sampler module importing the models (inside a function) is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from fastremask.models import load\n    return load\n")
    monkeypatch.setitem(MODULES, "fastremask.sampler._bad", str(bad))
    assert ("fastremask.sampler._bad", "fastremask.models") in _upward()


def _cycles() -> list:
    graph = defaultdict(set)
    for m, t, _ in _edges():
        if t != m and t in MODULES and t != "fastremask":
            graph[m].add(t)
    # Tarjan's strongly connected components
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(MODULES):
        if v not in index:
            visit(v)
    return out


# Cycles between modules of one layer that remain (a package's face importing its parts, which
# import each other's names through it, is one). Each asserted to exist, like KNOWN_UPWARD.
KNOWN_CYCLES: list = []


def test_no_import_cycles():
    cycles = _cycles()
    new = [c for c in cycles if c not in KNOWN_CYCLES]
    assert not new, f"import cycles: {new}"
    fixed = [c for c in KNOWN_CYCLES if c not in cycles]
    assert not fixed, f"fixed, so remove from KNOWN_CYCLES: {fixed}"


@pytest.mark.parametrize("layer", NAMES)
def test_every_module_has_a_layer(layer):
    assert any(m.startswith(f"fastremask.{layer}") for m in MODULES)
