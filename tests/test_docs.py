"""Every ```python example in README.md and docs/ runs as written (a copied example that fails
is a bug). Each block runs in a fresh namespace, in a temporary working directory; a block
whose first line is ``# needs: cuda`` is skipped (with that reason) where there is no GPU."""
import pathlib
import re

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
EXAMPLES = [(f, i, code) for f in FILES for i, code in enumerate(BLOCK.findall(f.read_text()))]


@pytest.mark.parametrize("path,index,code", EXAMPLES,
                         ids=[f"{f.relative_to(ROOT)}#{i}" for f, i, _ in EXAMPLES])
def test_example_runs(path, index, code, tmp_path, monkeypatch):
    if code.startswith("# needs: cuda"):
        if not torch.cuda.is_available():
            pytest.skip("the example needs a CUDA device")
        monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    else:
        monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{path.name} example {index}", "exec"), {"__name__": "__doc_example__"})


def test_examples_are_found():
    assert len(EXAMPLES) >= 5
