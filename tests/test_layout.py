"""The repository's layout is safe to run from its root (docs/architecture.md).

The Triton kernels live in the top-level ``kernels/`` folder, installed as
``fastremask.kernels``. From the root (``python -m pytest``, ``python -c``, a script there) the
root is on ``sys.path``, so a plain ``import kernels`` (transformers imports the PyPI
distribution of that name) finds the folder first; the folder hands the name back. Each case
runs in a fresh interpreter started in the root, as a user would.
"""
from __future__ import annotations

import importlib.metadata
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _from_root(code: str, *args: str) -> str:
    r = subprocess.run([sys.executable, *args, "-c", textwrap.dedent(code)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"from the repository root:\n{code}\n--- stderr\n{r.stderr[-3000:]}"
    return r.stdout


def _kernels_distribution():
    try:
        return importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        return None


def test_transformers_imports_from_the_root():
    # transformers >= 5 imports the PyPI `kernels` in modeling_utils (hub_kernels)
    _from_root("import transformers.modeling_utils")


def test_plain_kernels_is_the_distribution_from_the_root():
    dist = _kernels_distribution()
    if dist is None:
        pytest.skip("the PyPI distribution 'kernels' is not installed here")
    out = _from_root("""
        import sys, kernels
        assert sys.path[0] == ''                      # the root is on the path, first
        print(kernels.__file__)
    """)
    found = pathlib.Path(out.strip()).resolve()
    assert ROOT not in found.parents, f"`import kernels` from the root found the repository's folder: {found}"
    assert found == pathlib.Path(dist.locate_file("kernels/__init__.py")).resolve()


def test_without_another_kernels_the_name_is_an_empty_namespace():
    # what Python gives for a folder without __init__.py: no __file__, nothing to import from it
    out = _from_root("""
        import sys
        sys.path[:] = [''] + [p for p in sys.path[1:] if 'site-packages' not in p and 'dist-packages' not in p]
        import kernels
        print(getattr(kernels, '__file__', None), hasattr(kernels, 'sample_rows'), 'kernels.sample' in sys.modules)
    """)
    assert out.split() == ["None", "False", "False"]


def test_fastremask_kernels_from_the_root_and_elsewhere(tmp_path):
    check = """
        import fastremask.kernels as k, fastremask.kernels.sample as s
        assert k.__name__ == 'fastremask.kernels' and callable(k.select) and s.sample_rows is k.sample_rows
        print(k.__file__)
    """
    from_root = _from_root(check)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(check)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert from_root == r.stdout


def test_module_entry_point_from_the_root():
    # `python -m fastremask.kernels.cost` is how the docs run the cost report; -m puts the root first too
    r = subprocess.run([sys.executable, "-m", "fastremask.kernels.cost", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "usage" in r.stdout, r.stderr[-3000:]


def test_two_checkouts_on_the_path(tmp_path):
    # a copy of the checkout first on the path (tests/test_docs.py runs examples that way) and
    # this one behind it: the hand-over skips both instead of bouncing between them
    import shutil
    copy = shutil.copytree(ROOT, tmp_path / "repo",
                           ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".venv"))
    code = f"""
        import sys
        sys.path[:0] = [{str(copy)!r}, {str(ROOT)!r}]
        import kernels
        print(getattr(kernels, '__file__', None))
    """
    out = _from_root(code).strip()
    # as paths, not string prefixes: a venv beside the checkout (ROOT + "venv") is not inside it
    inside = out != "None" and any(pathlib.Path(out).resolve().is_relative_to(pathlib.Path(d).resolve()) for d in (copy, ROOT))
    assert not inside, out
