"""Static kernel cost (kernels/cost.py): no specialisation exceeds its committed ceiling.

`python -m fastremask.kernels.cost --quick` runs in a subprocess without TRITON_INTERPRET (the
test process may run under the interpreter): it compiles a subset of the row-kernel
specialisations for sm_90 and sm_80 (no GPU needed), counts the SASS instructions per logit on
the main loop's path and reads registers and spills. Each must stay within
`kernels/cost_ceilings.json` (measured + a small margin, per triton major.minor), so a change
that makes a kernel slower on the GPU fails here, on a machine without one. The counter itself
is checked on a hand-written disassembly.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]
CEILINGS = ROOT / "kernels" / "cost_ceilings.json"


def _cost_module():
    try:
        from fastremask.kernels import cost
    except Exception as e:  # noqa: BLE001 - no CUDA backend in this triton build, etc.
        pytest.skip(f"fastremask.kernels.cost does not import: {e}")
    return cost


# A kernel in nvdisasm's syntax: set-up, an outer loop with a skippable inner loop (taken only
# when a counter is non-zero), a division whose slow path is a call, and the back edge.
_SASS = """
_k:
.text._k:
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/              @!P0 EXIT ;
.L_x_0:
        /*0020*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0030*/                   FADD R6, R4, R5 ;
        /*0040*/               @P1 BRA `(.L_x_1) ;
.L_x_2:
        /*0050*/                   LDG.E.64 R8, desc[UR4][R10.64] ;
        /*0060*/                   ISETP.NE.AND P2, PT, R8, R6, PT ;
        /*0070*/               @P2 BRA `(.L_x_2) ;
.L_x_1:
        /*0080*/                   BSSY B0, `(.L_x_3) ;
        /*0090*/                   FCHK P3, R6, R7 ;
        /*00a0*/              @!P3 BRA `(.L_x_4) ;
        /*00b0*/                   CALL.REL.NOINC `($_slow) ;
.L_x_4:
        /*00c0*/                   BSYNC B0 ;
.L_x_3:
        /*00d0*/                   F2I.S64.TRUNC R12, R6 ;
        /*00e0*/                   STG.E desc[UR4][R2.64], R6 ;
        /*00f0*/                   UIADD3 UR5, UR5, 0x1, URZ ;
        /*0100*/              @!P4 EXIT ;
        /*0110*/                   BRA `(.L_x_0) ;
.L_x_5:
        /*0120*/                   BRA `(.L_x_5);
$_slow:
        /*0130*/                   FADD R6, R6, R7 ;
        /*0140*/                   RET.REL.NODEC R2 `(_k) ;
"""


def test_counter_on_a_known_disassembly():
    cost = _cost_module()
    insts, labels = cost.parse_sass(_SASS, "_k")
    assert len(insts) == 19 and labels[".L_x_0"] == 0x20     # the subroutine is not part of _k
    lc = cost.loop_cost(insts, labels)
    assert (lc.head_addr, lc.end_addr) == (0x20, 0x110)
    # path: 0x20-0x40, then the skip to 0x80, the fast division path (0xa0 -> 0xc0), 0xc0-0x110
    assert [i.addr for i in lc.path] == [0x20, 0x30, 0x40, 0x80, 0x90, 0xa0, 0xc0, 0xd0, 0xe0, 0xf0, 0x100, 0x110]
    assert lc.inner == [(0x50, 3)]
    ways = {a: (w, slow) for a, w, _, slow in lc.branches}
    assert ways == {0x40: ("taken", False), 0xa0: ("taken", True), 0x100: ("not taken", False)}
    assert [s[2:] for s in lc.skipped] == [(3, False), (1, True)]   # the inner loop, the call
    classes = [cost._classify(i) for i in lc.path]
    assert classes.count("MEM") == 2 and classes.count("CONV") == 1 and classes.count("INT") == 1


_SASS_DIV = """
_k:
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   LDG.E R4, desc[UR4][R2.64] ;
        /*0020*/                   BRA.DIV ~URZ, `(.L_x_2) ;
        /*0030*/                   SHFL.BFLY PT, R5, R4, 0x1, 0x1f ;
.L_x_1:
        /*0040*/                   FADD R4, R4, R5 ;
        /*0050*/               @P0 BRA `(.L_x_0) ;
        /*0060*/                   EXIT ;
.L_x_2:
        /*0070*/                   WARPSYNC.ALL ;
        /*0080*/                   BRA `(.L_x_1) ;
"""


def test_divergent_slow_paths_are_not_loops():
    """BRA.DIV (taken only in a divergent warp) leads to a stub after the exit that jumps back:
    not a loop, and not on the path."""
    cost = _cost_module()
    insts, labels = cost.parse_sass(_SASS_DIV, "_k")
    lc = cost.loop_cost(insts, labels)
    assert (lc.head_addr, lc.end_addr) == (0x10, 0x50)
    assert [i.addr for i in lc.path] == [0x10, 0x20, 0x30, 0x40, 0x50]


def test_model_reproduces_the_calibration():
    """53.2 instructions per bf16 logit (the issue's starting point) -> ~290 us for 1024 rows of
    126,464 on the H200 (measured 292.4) and 0.21 of the copy bandwidth (measured 0.21)."""
    cost = _cost_module()
    from fastremask.kernels import aot
    case = cost._row_case("bf16", 0.0, "low_confidence", False)
    p = cost.Cost(case, 90, instructions_per_logit=53.2).predicted()
    assert abs(p["predicted_us"] - 292.4) / 292.4 < 0.03
    assert round(p["fraction_of_copy"], 2) in (0.21, 0.22)
    assert aot.row_logits_per_iter(case.spec) > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    cost = _cost_module()
    try:
        from fastremask.kernels import aot
        aot._bin("nvdisasm")
        aot._bin("cuobjdump")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    ceilings = json.loads(CEILINGS.read_text()).get(cost.version_key())
    if ceilings is None:
        pytest.skip(f"no ceilings for triton {cost.version_key()} in {CEILINGS.name}; measure them with "
                    "python -m fastremask.kernels.cost --write-ceilings kernels/cost_ceilings.json")
    path = tmp_path_factory.mktemp("cost") / "cost.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "fastremask.kernels.cost", "--quick", "--arch", "90,80",
                           "--json", str(path)], env=env, capture_output=True, text=True, timeout=600)
    if not path.exists():
        pytest.fail(f"the cost report did not run:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(path.read_text()), ceilings, proc


def test_every_case_compiles_and_has_a_path(report):
    rep, _, proc = report
    errors = [(r["name"], r["arch"], r["error"]) for r in rep["results"] if r["error"]]
    assert not errors, proc.stdout
    assert {r["arch"] for r in rep["results"]} == {80, 90}
    assert all(r["instructions_per_logit"] and r["instructions_per_logit"] > 0 for r in rep["results"])


def test_no_case_exceeds_its_ceiling(report):
    rep, ceilings, proc = report
    over = []
    for r in rep["results"]:
        key = f"{r['name']}@sm_{r['arch']}"
        lim = ceilings.get(key)
        if lim is None:
            over.append(f"{key}: no ceiling")
            continue
        if r["instructions_per_logit"] > lim["instructions_per_logit"]:
            over.append(f"{key}: {r['instructions_per_logit']} per logit > {lim['instructions_per_logit']}")
        if r["registers"] > lim["registers"]:
            over.append(f"{key}: {r['registers']} registers > {lim['registers']}")
        if r["spills"]:
            over.append(f"{key}: {r['spills']} bytes of local memory")
    assert not over, "\n".join(over) + "\n" + proc.stdout
