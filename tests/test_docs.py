"""Every example in README.md and docs/ runs as written: a copied example that fails is a bug.

Every block runs where the README leaves a user, the repository root: in a fresh temporary
copy of it (`root_copy`, without .git and caches), so that a name the root shadows (its
``kernels/`` folder against the PyPI ``kernels`` that transformers imports) fails here as it
would for the user, and files the examples write do not land in the checkout.

Python (```python blocks): each block runs in a fresh namespace, with the copy as the working
directory and first on ``sys.path`` (as ``python -`` there); a block whose first line is
``# needs: cuda`` is skipped (with that reason) where there is no GPU.

Shell (```bash, ```sh, ```shell and ```console blocks; in ```console only the ``$ `` lines):
each block runs as one ``bash -euo pipefail`` script in the copy, with this
environment's ``python`` and ``fastremask`` first on ``PATH`` and ``$REPO`` set to the
copy; it must exit 0 with no ``Traceback`` and no ``fastremask: error`` on stderr, within
``SHELL_TIMEOUT`` seconds. A block that cannot run that way says so with a marker: an HTML
comment on the lines right above its opening fence (blank lines between are fine; several
markers may be stacked), invisible in the rendered page:

    <!-- test: skip (REASON) -->              not run; reported as skipped with REASON
    <!-- test: needs cuda -->                 run as written where CUDA is available, else
                                              skipped; other names (``needs cuda, nsys``)
                                              are commands that must be on PATH
    <!-- test: quick (REASON): COMMANDS -->   run COMMANDS (bash, may span lines) instead of
                                              the block: the short variant of a long one
    <!-- test: before: COMMANDS -->           run COMMANDS first (set-up the block needs,
                                              e.g. the checkpoint it names), then the block
    <!-- test: see tests/FILE.py::TEST -->    the block is run by that test (checked to exist)

Nothing is skipped silently: a skip needs a reason, an unknown ``<!-- test ... -->`` comment
is an error, and a block without a marker that cannot run here (``pip install``, a model id
of the hub, ``nsys``/``ncu``, CUDA, ``accelerate launch``) fails, naming the marker to add.
An unlabeled fence whose lines look like commands fails too (label it ```bash, or ```text
for a synopsis). docs/testing.md describes this for contributors.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
EXAMPLES = [(f, i, code) for f in FILES for i, code in enumerate(BLOCK.findall(f.read_text()))]
_NOT_COPIED = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis",
                                     ".benchmarks", "build", "dist")


@pytest.fixture
def root_copy(tmp_path) -> pathlib.Path:
    """A fresh copy of the repository root (where the README leaves a user), without .git."""
    return pathlib.Path(shutil.copytree(ROOT, tmp_path / "repo", ignore=_NOT_COPIED))


@pytest.mark.parametrize("path,index,code", EXAMPLES,
                         ids=[f"{f.relative_to(ROOT)}#{i}" for f, i, _ in EXAMPLES])
def test_example_runs(path, index, code, root_copy, monkeypatch):
    if code.startswith("# needs: cuda"):
        if not torch.cuda.is_available():
            pytest.skip("the example needs a CUDA device")
        monkeypatch.syspath_prepend(str(root_copy / "benchmarks"))
    monkeypatch.chdir(root_copy)
    monkeypatch.syspath_prepend(str(root_copy))
    exec(compile(code, f"{path.name} example {index}", "exec"), {"__name__": "__doc_example__"})


def test_examples_are_found():
    assert len(EXAMPLES) >= 5


# ----------------------------------------------------------------------------- shell blocks

SHELL_LANGS = {"bash", "sh", "shell", "console"}
SHELL_TIMEOUT = 180
# Pages whose shell blocks have no markers yet; an unmarked block there that cannot run here
# is skipped with the reason `cannot_run_here` gives instead of failing (blocks that can run
# still run). Each entry must still be needed: `test_unmarked_files_still_need_it`.
UNMARKED_FILES: dict = {}


@dataclasses.dataclass
class Fence:
    path: pathlib.Path
    line: int                # 1-based line of the opening fence
    lang: str
    body: str
    markers: list            # the text after "test:" of each marker above the fence, top first

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def fences(path: pathlib.Path) -> list[Fence]:
    """The fenced blocks of a Markdown file, with the ``<!-- test: ... -->`` markers above each."""
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^( {0,3})(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m.group(1)), m.group(2), m.group(3).lower()
        j = i + 1
        while j < len(lines) and not re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[j]):
            j += 1
        body = "\n".join(ln[indent:] if ln[:indent].isspace() else ln for ln in lines[i + 1:j]) + "\n"
        out.append(Fence(path, i + 1, lang, body, _markers_above(lines, i)))
        i = j + 1
    return out


def _markers_above(lines: list[str], fence_index: int) -> list[str]:
    """The test markers (HTML comments starting ``<!-- test``) directly above a fence."""
    markers, k = [], fence_index - 1
    while k >= 0:
        while k >= 0 and not lines[k].strip():
            k -= 1
        if k < 0 or not lines[k].rstrip().endswith("-->"):
            break
        start = k
        while start >= 0 and "<!--" not in lines[start]:
            start -= 1
        if start < 0:
            break
        comment = "\n".join(lines[start:k + 1]).strip()
        if not re.match(r"<!--\s*test\b", comment):
            break
        markers.insert(0, re.sub(r"^<!--\s*test\s*:?\s*|\s*-->$", "", comment, flags=re.S))
        k = start - 1
    return markers


SHELL_BLOCKS = [f for path in FILES for f in fences(path) if f.lang in SHELL_LANGS]


def commands(block: Fence) -> str:
    """The script a block stands for: the body; for ```console, the ``$ `` lines (and their
    continuation lines) without the prompt."""
    if block.lang != "console":
        return block.body
    script, cont = [], False
    for ln in block.body.splitlines():
        if ln.startswith("$ ") or cont:
            script.append(ln[2:] if ln.startswith("$ ") and not cont else ln)
            cont = ln.rstrip().endswith("\\")
    return "\n".join(script) + "\n"


@dataclasses.dataclass
class Plan:
    skip: str | None = None             # a reason: not run here
    see: str | None = None              # the test that runs the block
    needs: tuple = ()
    script: str = ""                    # what runs (the block, or its quick variant)
    quick: bool = False


def plan(block: Fence) -> Plan:
    """What the test does with a block, from its markers (ValueError for a bad marker)."""
    p = Plan(script=commands(block))
    before = ""
    for text in block.markers:
        if m := re.fullmatch(r"skip\s*\((.*)\)", text, re.S):
            if not m.group(1).strip():
                raise ValueError(f"{block.name}: 'skip' needs a reason: <!-- test: skip (why) -->")
            p.skip = " ".join(m.group(1).split())
        elif m := re.fullmatch(r"needs\s+(.+)", text, re.S):
            p.needs += tuple(n.strip() for n in m.group(1).split(",") if n.strip())
        elif m := re.fullmatch(r"quick\s*\((.*?)\)\s*:(.+)", text, re.S):
            if not m.group(1).strip():
                raise ValueError(f"{block.name}: 'quick' needs a reason: <!-- test: quick (why): commands -->")
            p.script, p.quick = m.group(2).strip() + "\n", True
        elif m := re.fullmatch(r"before\s*:(.+)", text, re.S):
            before += m.group(1).strip() + "\n"
        elif m := re.fullmatch(r"see\s+(\S+)", text, re.S):
            p.see = m.group(1)
        else:
            raise ValueError(f"{block.name}: unknown marker <!-- test: {text} --> (see tests/test_docs.py's docstring)")
    if (p.skip or p.see) and (p.needs or p.quick or before):
        raise ValueError(f"{block.name}: 'skip' and 'see' stand alone (no needs/quick/before with them)")
    if p.skip and p.see:
        raise ValueError(f"{block.name}: 'skip' or 'see', not both")
    p.script = before + p.script
    return p


_HUB_ID = r"[A-Za-z0-9][\w.-]*/[\w.-]+"


def cannot_run_here(script: str, cuda_marked: bool = False) -> str | None:
    """Why a script cannot run in the test suite (CI: no network, no GPU), or None. What it
    finds in an unmarked block must be marked; the first two count even with ``needs cuda``."""
    code = "\n".join(ln for ln in script.replace("\\\n", " ").splitlines() if not ln.lstrip().startswith("#"))
    code = re.sub(r"\s#.*", "", code)                          # trailing comments
    if re.search(r"\bpip3?\s+install\b", code):
        return "installs packages (pip install)"
    hub = re.search(rf"(?:--model[= ]|pretrained=)[\"']?({_HUB_ID})\b", code)
    if hub and not hub.group(1).startswith("."):
        return f"downloads the model {hub.group(1)} from the hub (network, a GPU)"
    if cuda_marked:
        return None
    for pattern, why in ((r"\bnsys\b", "needs NVIDIA Nsight Systems (nsys) and a GPU"),
                         (r"\bncu\b", "needs NVIDIA Nsight Compute (ncu) and a GPU"),
                         (r"\baccelerate\s+launch\b", "needs accelerate and a device per process"),
                         (r"gpu_check\.sh|--device[= ]cuda|--backend[= ]triton|--model[= ]llada-8b",
                          "needs a CUDA device")):
        if re.search(pattern, code):
            return why
    return None


def _missing(needs) -> str | None:
    for name in needs:
        if name == "cuda":
            if not torch.cuda.is_available():
                return "needs a CUDA device"
        elif shutil.which(name) is None:
            return f"needs {name} on PATH"
    return None


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[b.name for b in SHELL_BLOCKS])
def test_shell_block_runs(block, root_copy):
    try:
        p = plan(block)
    except ValueError as e:
        pytest.fail(str(e))
    if p.skip:
        pytest.skip(p.skip)
    if p.see:
        file, _, test = p.see.partition("::")
        target = ROOT / file
        assert target.is_file() and re.search(rf"^def {re.escape(test)}\(", target.read_text(), re.M), \
            f"{block.name}: <!-- test: see {p.see} --> names no test function"
        pytest.skip(f"run by {p.see}")
    why = cannot_run_here(p.script, cuda_marked="cuda" in p.needs)
    rel = block.path.relative_to(ROOT).as_posix()
    if why:
        if not block.markers and rel in UNMARKED_FILES:
            pytest.skip(why)
        pytest.fail(f"{block.name} {why}: it cannot run in the test suite; put "
                    f"<!-- test: skip ({why}) --> or <!-- test: quick (why): a short variant --> "
                    "above it (tests/test_docs.py)")
    if missing := _missing(p.needs):
        pytest.skip(missing)
    env = dict(os.environ, REPO=str(root_copy), MPLBACKEND="Agg", FASTREMASK_DEBUG="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    try:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", p.script], cwd=root_copy, env=env,
                           capture_output=True, text=True, timeout=SHELL_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.name} ran over {SHELL_TIMEOUT} s: give it <!-- test: quick (why): ... -->")
    what = "its quick variant" if p.quick else "the block"
    tail = f"\n--- script\n{p.script}--- stdout\n{r.stdout[-2000:]}\n--- stderr\n{r.stderr[-4000:]}"
    assert r.returncode == 0, f"{block.name}: {what} exited with status {r.returncode}{tail}"
    assert "Traceback" not in r.stderr and "fastremask: error" not in r.stderr, \
        f"{block.name}: {what} printed an error{tail}"


_COMMAND_LINE = re.compile(
    r"^\s*(\$\s+)?(?:[A-Z_][A-Z0-9_]*=\S*\s*)*"
    r"(?:(?:fastremask|python3?|pip3?|bash|sh|nsys|ncu|accelerate|pytest|git|cd|export)\s|[A-Z_][A-Z0-9_]*=)")


def test_unlabeled_fences_hold_no_commands():
    """A shell example in an unlabeled fence would escape the test above: label it."""
    bad = [b.name for path in FILES for b in fences(path)
           if not b.lang and path.relative_to(ROOT).as_posix() not in UNMARKED_FILES
           and any(_COMMAND_LINE.match(ln) for ln in b.body.splitlines())]
    assert not bad, f"fences that hold commands but no language (```bash runs them, ```text does not): {bad}"


def test_unmarked_files_still_need_it():
    """An UNMARKED_FILES entry whose page now marks its blocks (and labels its fences) is stale."""
    for rel in UNMARKED_FILES:
        blocks = fences(ROOT / rel)
        needed = any(not b.markers and b.lang in SHELL_LANGS and cannot_run_here(commands(b)) for b in blocks) \
            or any(not b.lang and any(_COMMAND_LINE.match(ln) for ln in b.body.splitlines()) for b in blocks)
        assert needed, f"{rel} needs no entry in tests/test_docs.py's UNMARKED_FILES any more: remove it"


def test_markers():
    """The marker parser on made-up pages (a typo in a marker is an error, not a run)."""
    page = ROOT / "docs" / "x.md"

    def one(text):
        lines = text.splitlines()
        i = next(k for k, ln in enumerate(lines) if ln.startswith("```bash"))
        return plan(Fence(page, i + 1, "bash", "echo body\n", _markers_above(lines, i)))

    assert one("text\n```bash\n```") == Plan(script="echo body\n")
    assert one("<!-- test: skip (needs the hub) -->\n\n```bash\n```").skip == "needs the hub"
    p = one("<!-- test: needs cuda, nsys -->\n<!-- test: quick (long):\n  echo a\n  echo b\n-->\n```bash\n```")
    assert p.needs == ("cuda", "nsys") and p.quick and p.script == "echo a\n  echo b\n"
    assert one("<!-- test: before: mkdir d -->\n```bash\n```").script == "mkdir d\necho body\n"
    assert one("<!-- an ordinary comment -->\n```bash\n```").script == "echo body\n"
    for bad in ("<!-- test: skip -->", "<!-- test: skip () -->", "<!-- test: quick: x -->", "<!-- test: sikp (x) -->",
                "<!-- test: skip (x) -->\n<!-- test: needs cuda -->"):
        with pytest.raises(ValueError):
            one(bad + "\n```bash\n```")
    assert cannot_run_here("pip install -e .") and cannot_run_here("fastremask generate --model GSAI-ML/LLaDA-8B-Instruct")
    assert cannot_run_here("nsys profile x") and not cannot_run_here("nsys profile x", cuda_marked=True)
    assert cannot_run_here("fastremask generate --model ./my-mdlm --prompt a") is None
    assert commands(Fence(page, 1, "console", "$ echo a \\\n  b\nout\n$ ls\n", [])) == "echo a \\\n  b\nls\n"


def test_shell_blocks_are_found():
    assert len(SHELL_BLOCKS) >= 10
    assert sum(1 for b in SHELL_BLOCKS if not plan(b).skip and not plan(b).see) >= 5   # some really run
