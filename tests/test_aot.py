"""Ahead-of-time compile of the kernels for sm_80 and sm_90, no GPU needed (kernels/aot.py).

Runs `python -m fastremask.kernels.aot --quick` in a subprocess without TRITON_INTERPRET (the
test process may run under the interpreter, where `triton.jit` gives interpreted functions):
every variant compiles, its PTX has no contracted fma and no approximate transcendental or
division, its cubin uses no local memory (no spills), and the scanner does flag a kernel that
breaks those rules on purpose.
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("aot") / "aot.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "fastremask.kernels.aot", "--quick", "--json", str(path)],
                          env=env, capture_output=True, text=True, timeout=900)
    if not path.exists():
        pytest.fail(f"aot did not run:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(path.read_text()), proc


def test_every_variant_compiles_for_sm80_and_sm90(report):
    rep, proc = report
    errors = [(r["name"], r["arch"], r["error"]) for r in rep["results"] if r["error"]]
    assert not errors, proc.stdout
    assert {r["arch"] for r in rep["results"]} == {80, 90}
    names = {r["name"].split("[")[0] for r in rep["results"]}
    assert names == {"sample_rows", "select"}


def test_ptx_has_no_forbidden_instruction(report):
    rep, proc = report
    bad = [(r["name"], r["arch"], r["forbidden"]) for r in rep["results"] if r["forbidden"]]
    assert not bad, proc.stdout


def test_no_spills(report):
    rep, proc = report
    spills = [(r["name"], r["arch"], r["local_bytes"]) for r in rep["results"] if r["local_bytes"] != 0]
    assert not spills, proc.stdout
    assert all(0 < r["registers"] <= 255 for r in rep["results"]), proc.stdout


def test_scanner_sees_a_broken_kernel(report):
    rep, _ = report
    assert rep["control"].get("fma.rn.f32", 0) > 0
    assert rep["control"].get("ex2.approx", 0) > 0
    assert proc_ok(report)


def proc_ok(report):
    return report[1].returncode == 0
