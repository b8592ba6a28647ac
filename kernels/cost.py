"""Static cost of the kernels, without a GPU: SASS instructions per logit on the main loop's path.

Every specialisation of the row kernel that `generate` can launch (logits dtype x temperature 0 /
1 / other x remasking rule x CFG) is compiled for sm_90 and sm_80 exactly as `kernels/aot.py`
does (`triton.compile` with a `GPUTarget`, fusion off), its cubin disassembled with the
`nvdisasm` shipped in the triton wheel, and

* the **main loop** found: the first outermost natural loop of the kernel's control-flow graph
  that contains a global load (for the row kernel: the loop over the program's 2048-entry chunks,
  which comes before the finish);
* the **path one iteration executes** taken as the cheapest path from the loop head to its
  back edge through the loop body, inner loops not entered (their back edges removed). For the
  row kernel that is the common case: no suppressed token (the suppression loop is skipped), the
  fast path of every correctly rounded division (`FCHK` passes; the slow-path subroutine is not
  called). Every conditional branch on the loop body is listed in the report with the way the
  path goes, and every inner loop with its cost per iteration, so the assumption can be checked;
* that path's instructions counted (each SASS instruction issued once per warp, predicated off
  or not; uniform-datapath instructions count as any other) and scaled to **thread-instructions
  per logit**: `path x 32 x num_warps / logits per iteration` (2048 for the row kernel); by class
  (FP32, INT, MEM, CONV, CONTROL, other), with registers, spills (local memory) and stack from
  `cuobjdump --dump-resource-usage`.

The time model (docs/kernels.md, calibrated on the H200 against 32 measured cases at 256 and 1024
rows within 1-3 %): the row kernel is issue-bound, time = thread-instructions /
(0.71 x peak issue), peak issue = 132 SMs x 4 schedulers x 32 lanes x 1.98 GHz = 33.45e12 per s.
Predicted for 1024 rows of LLaDA's vocabulary (126,464), and as the fraction of the H200's
measured copy bandwidth (4155 GB/s) at which the logits would then be read. Where the issue time
falls below the time to read the bytes, the memory time is reported as the bound (outside the
calibrated range).

Run ``python -m fastremask.kernels.cost [--json PATH] [--md PATH] [--arch 90,80]``;
``--check kernels/cost_ceilings.json`` exits 1 when a specialisation exceeds its committed
ceiling (tests/test_kernel_cost.py does the same for a subset).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastremask.sampler.numerics import CHUNK

from . import aot

__all__ = ["PEAK_ISSUE", "EFFICIENCY", "COPY_BW", "Case", "Cost", "cases", "parse_sass", "loop_cost",
           "measure", "main"]

# The calibrated model (docs/kernels.md).
PEAK_ISSUE = 132 * 4 * 32 * 1.98e9      # thread-instructions per second, H200 at boost clock
EFFICIENCY = 0.71                       # fitted: measured issue rate / peak, 32 cases within 1-3 %
COPY_BW = 4155e9                        # B/s, device-to-device copy measured on the same H200
MODEL_ROWS, MODEL_VOCAB = 1024, 126_464  # the workload the predicted time is for (LLaDA's vocab)
_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
TEMPERATURES = (0.0, 1.0, 0.7)           # 0: argmax; 1 and another value (the kernel may specialise T == 1)
RULES = ("low_confidence", "margin", "entropy", "random")


# ---------------------------------------------------------------------------------------------
# what is compiled
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One launchable configuration and the compiled variant (`aot.Spec`) it runs."""

    name: str
    kernel: str                  # sample_rows, combine, select
    spec: aot.Spec
    dtype: str | None = None
    temperature: float | None = None
    rule: str | None = None
    cfg: bool | None = None
    logits_per_iter: int | None = None   # vocab entries one main-loop iteration handles


def _row_case(dtype: str, temperature: float, rule: str, cfg: bool, trunc: bool = False,
              sampled: bool = False) -> Case:
    spec = aot._row_spec(dtype, cfg, temperature, rule, trunc=trunc, sampled=sampled)
    t = "0" if temperature == 0 else ("1" if temperature == 1 else "other")
    name = f"sample_rows[{dtype},T={t},{rule},cfg={int(cfg)}{',trunc' if trunc else ''}{',sampled' if sampled else ''}]"
    return Case(name, "sample_rows", spec, dtype, temperature, rule, cfg, aot.row_logits_per_iter(spec))


def cases(subset: str = "all") -> list[Case]:
    """`all`: every row-kernel configuration plus the combine and select variants of aot;
    `quick`: the subset tests/test_kernel_cost.py recompiles."""
    if subset == "quick":
        rows = [_row_case("bf16", t, r, False) for t in (0.0, 1.0) for r in RULES]
        rows += [_row_case("bf16", 0.0, "low_confidence", True), _row_case("fp32", 0.0, "low_confidence", False),
                 _row_case("fp16", 0.0, "margin", True), _row_case("bf16", 0.7, "entropy", True),
                 _row_case("bf16", 0.7, "entropy", False, trunc=True, sampled=True)]
        return rows
    rows = [_row_case(d, t, r, c) for d in ("bf16", "fp16", "fp32") for t in TEMPERATURES for r in RULES
            for c in (False, True)]
    # top-k / top-p / min-p (numerics.md §4a): the kernel's share (the cut is computed before the
    # launch by torch ops: `kernels.sample.truncation_cut`, not counted here)
    rows += [_row_case(d, t, r, False, trunc=True) for d in ("bf16", "fp32") for t in (1.0, 0.7)
             for r in ("low_confidence", "random")]
    # the confidences on the tempered, truncated distribution (numerics.md §6a: confidence='dream',
    # 'llada2' at T > 0): the SAMPLED flag, with truncation (at T = 0 too, as Dream cuts there)
    rows += [_row_case(d, t, r, False, trunc=True, sampled=True) for d in ("bf16", "fp32") for t in TEMPERATURES
             for r in ("low_confidence", "margin", "entropy")]
    others = [Case(s.name, s.name.split("[")[0], s) for s in aot.specialisations()
              if not s.name.startswith("sample_rows")]
    return rows + others


# ---------------------------------------------------------------------------------------------
# SASS: parse, control flow, loops, the executed path
# ---------------------------------------------------------------------------------------------

_INST = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(?:(@!?U?P[T0-9]+)\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?)\s*;")
_LABEL = re.compile(r"^(\S+):\s*$")
_TARGET = re.compile(r"`\(([^)]+)\)")


@dataclass
class Inst:
    addr: int
    pred: str            # '' when unconditional
    op: str              # opcode with modifiers, e.g. LDG.E.128
    args: str

    @property
    def base(self) -> str:
        return self.op.split(".")[0]

    def __str__(self) -> str:
        return f"{self.addr:#06x} {self.pred + ' ' if self.pred else ''}{self.op} {self.args}".rstrip()


def parse_sass(text: str, function: str) -> tuple[list[Inst], dict[str, int]]:
    """Instructions and local labels (name -> address) of `function` in nvdisasm output."""
    insts, labels, inside, pending = [], {}, False, []
    for line in text.splitlines():
        m = _LABEL.match(line)
        if m and not line.startswith((" ", "\t")):
            name = m.group(1)
            if name.startswith(".L"):
                if inside:
                    pending.append(name)
            elif name.startswith("."):
                continue                      # section names (.text.<fn>:)
            else:
                inside = name == function
            continue
        m = _INST.match(line)
        if m and inside:
            inst = Inst(int(m.group(1), 16), m.group(2) or "", m.group(3), m.group(4))
            for name in pending:
                labels[name] = inst.addr
            pending = []
            insts.append(inst)
    if not insts:
        raise ValueError(f"no instructions of {function!r} in the disassembly")
    return insts, labels


def _classify(inst: Inst) -> str:
    b = inst.base
    if b.startswith("U") and b not in ("UNDEF",):
        b = b[1:] if b[1:] else b                 # uniform datapath: classed by its operation
    if b in ("BRA", "BRX", "JMP", "JMX", "EXIT", "RET", "CALL", "BSSY", "BSYNC", "BAR", "WARPSYNC",
             "BMOV", "NOP", "YIELD", "BPT", "DEPBAR", "KILL", "NANOSLEEP", "ERRBAR", "MEMBAR", "CCTL",
             "WARPGROUP", "ELECT", "ACQBULK"):
        return "CONTROL"
    if b in ("F2I", "I2F", "F2F", "FRND", "I2I", "F2FP", "I2FP", "I2IP", "DRND"):
        return "CONV"
    if b in ("LDG", "STG", "LDS", "STS", "LDC", "LDL", "STL", "LD", "ST", "ATOM", "ATOMG", "ATOMS", "RED",
             "LDGSTS", "LDSM", "SHFL", "LDGDEPBAR", "MATCH", "REDUX"):
        return "MEM"
    if b in ("FADD", "FMUL", "FFMA", "FMNMX", "FSEL", "FSETP", "FSET", "FCHK", "FSWZADD", "FMNMX3"):
        return "FP32"
    if b in ("IADD3", "IADD", "IMAD", "IMUL", "LOP3", "LOP", "SHF", "SHL", "SHR", "LEA", "SEL", "ISETP", "ISET",
             "IMNMX", "PRMT", "IABS", "POPC", "FLO", "BREV", "BMSK", "SGXT", "VIADD", "VIADDMNMX", "VIMNMX",
             "VIMNMX3", "IDP", "IADD32I", "IMUL32I", "LOP32I", "ISCADD", "BFE", "BFI", "IMADSP", "VABSDIFF",
             "VABSDIFF4", "LEPC"):
        return "INT"
    return "other"                                  # MOV, CS2R, S2R, MUFU, PLOP3, P2R, R2UR, VOTE, DADD ...


CLASSES = ("FP32", "INT", "MEM", "CONV", "CONTROL", "other")


@dataclass
class Block:
    start: int                       # index into the instruction list
    end: int                         # one past the last
    succ: list = field(default_factory=list)   # block indices


def _blocks(insts: list[Inst], labels: dict[str, int]) -> list[Block]:
    index = {inst.addr: i for i, inst in enumerate(insts)}
    starts = {0} | {index[a] for a in labels.values() if a in index}
    for i, inst in enumerate(insts):
        if inst.base in ("BRA", "BRX", "JMP", "EXIT", "RET") and i + 1 < len(insts):
            starts.add(i + 1)
    starts = sorted(starts)
    blocks = [Block(s, e) for s, e in zip(starts, starts[1:] + [len(insts)])]
    first = {b.start: k for k, b in enumerate(blocks)}
    for k, b in enumerate(blocks):
        last = insts[b.end - 1]
        conditional = bool(last.pred) and last.pred not in ("@PT",)
        falls = k + 1 < len(blocks)
        if last.op.startswith("BRA.DIV"):
            # Taken only when the warp is divergent (to a slow path at the end of the function
            # that jumps back): these kernels reach it converged, so only the fall-through.
            if falls:
                b.succ.append(k + 1)
        elif last.base in ("BRA", "JMP"):
            t = _TARGET.search(last.args)
            if t and t.group(1) in labels and labels[t.group(1)] in index:
                b.succ.append(first[index[labels[t.group(1)]]])
            if conditional and falls:
                b.succ.append(k + 1)
        elif last.base in ("EXIT", "RET", "BRX"):
            if conditional and falls:
                b.succ.append(k + 1)
        elif falls:
            b.succ.append(k + 1)
    return blocks


def _loops(blocks: list[Block]) -> list[tuple[int, int, set]]:
    """Natural loops as (head, latch, body) for every back edge latch -> head (head at or before
    the latch: the disassembly is in layout order and these kernels' loops are reducible)."""
    reach = _reach([0], blocks, set(range(len(blocks))))            # from the entry
    pred = {k: [] for k in range(len(blocks))}
    for k, b in enumerate(blocks):
        for s in b.succ:
            if k in reach:
                pred[s].append(k)
    loops = []
    for k, b in enumerate(blocks):
        if k not in reach:
            continue
        for h in b.succ:
            if h <= k:
                body, stack = {h, k}, ([k] if k != h else [])
                while stack:
                    n = stack.pop()
                    for p in pred[n]:
                        if p not in body:
                            body.add(p)
                            stack.append(p)
                loops.append((h, k, body))
    return loops


@dataclass
class LoopCost:
    head_addr: int
    end_addr: int
    path: list                      # Inst on the path of one iteration
    body_instructions: int          # all instructions of the loop body
    branches: list                  # (addr, 'taken' | 'not taken', text, skips a call) of conditional branches on the path
    skipped: list                   # (first addr, last addr, instructions, has a call) of body blocks off the path
    inner: list                     # (head addr, instructions per iteration) of inner loops


def _cheapest_path(blocks, insts, head, latch, body, back_edges):
    """Cheapest block path head -> latch inside `body`, no back edge taken (a DAG in layout order)."""
    cost = {k: blocks[k].end - blocks[k].start for k in body}
    best = {head: (cost[head], None)}
    for k in sorted(body):
        if k not in best:
            continue
        for s in blocks[k].succ:
            if s not in body or (k, s) in back_edges or s <= k:
                continue
            c = best[k][0] + cost[s]
            if s not in best or c < best[s][0]:
                best[s] = (c, k)
    if latch not in best:
        raise ValueError("no path from the loop head to its back edge")
    path, k = [], latch
    while k is not None:
        path.append(k)
        k = best[k][1]
    return path[::-1]


def _reach(starts, blocks, allowed) -> set:
    seen, stack = set(), [s for s in starts if s in allowed]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(s for s in blocks[n].succ if s in allowed and s not in seen)
    return seen


def loop_cost(insts: list[Inst], labels: dict[str, int], need: str = "LDG") -> LoopCost | None:
    """The first outermost loop that contains an instruction with opcode `need`, and its path."""
    blocks = _blocks(insts, labels)
    loops = _loops(blocks)
    has = lambda body: any(insts[i].base == need for k in body for i in range(blocks[k].start, blocks[k].end))  # noqa: E731
    cands = [lp for lp in loops if has(lp[2])]
    if not cands:
        return None
    # Outermost (in no other candidate's body), then the first in layout order: the row kernel's
    # chunk loop comes before the finish's loops (suppression, recomputed chunks).
    outer = [lp for lp in cands if not any(lp[2] < other[2] for other in cands)]
    head, latch, body = min(outer, key=lambda lp: lp[0])
    back = {(k, h) for h, k, _ in loops}
    path = _cheapest_path(blocks, insts, head, latch, body, back)
    on = set(path)
    path_insts = [insts[i] for k in path for i in range(blocks[k].start, blocks[k].end)]
    calls = lambda k: any(insts[i].base == "CALL" for i in range(blocks[k].start, blocks[k].end))  # noqa: E731
    branches = []
    for n, k in enumerate(path):
        last = insts[blocks[k].end - 1]
        if last.base in ("BRA", "EXIT") and last.pred and k != latch:
            nxt = path[n + 1] if n + 1 < len(path) else None
            taken = nxt is not None and nxt != k + 1
            off = _reach([s for s in blocks[k].succ if s != nxt and s in body and s not in on], blocks, body - on)
            slow = any(calls(q) for q in off)
            heads = sorted(insts[blocks[h].start].addr for h, _, _ in loops if h in off)
            text = str(last) + (" (around the inner loop" + "s" * (len(heads) > 1) + " at "
                                + ", ".join(f"{h:#x}" for h in heads) + ")" if heads else "")
            branches.append((last.addr, "taken" if taken else "not taken", text, slow))
    skipped = []
    for k in sorted(body - on):
        b = blocks[k]
        if skipped and skipped[-1][3] == k - 1:
            s = skipped[-1]
            skipped[-1] = (s[0], insts[b.end - 1].addr, s[2] + b.end - b.start, k, s[4] or calls(k))
        else:
            skipped.append((insts[b.start].addr, insts[b.end - 1].addr, b.end - b.start, k, calls(k)))
    inner = []
    for h, k, bd in loops:
        if (h, k) != (head, latch) and bd <= body:
            p = _cheapest_path(blocks, insts, h, k, bd, back)
            inner.append((insts[blocks[h].start].addr, sum(blocks[q].end - blocks[q].start for q in p)))
    return LoopCost(insts[blocks[head].start].addr, insts[blocks[latch].end - 1].addr, path_insts,
                    sum(blocks[k].end - blocks[k].start for k in body), branches,
                    [s[:3] + s[4:] for s in skipped], sorted(inner))


# ---------------------------------------------------------------------------------------------
# measure
# ---------------------------------------------------------------------------------------------

@dataclass
class Cost:
    case: Case
    arch: int
    registers: int = -1
    spills: int = -1                 # local memory bytes per thread
    stack: int = -1
    static_instructions: int = 0
    loop_instructions: int | None = None       # per thread, one iteration of the main loop
    instructions_per_logit: float | None = None
    by_class: dict = field(default_factory=dict)   # class -> thread-instructions per logit
    assumptions: list = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    def predicted(self) -> dict:
        """The calibrated model for MODEL_ROWS x MODEL_VOCAB (docs/kernels.md)."""
        c = self.case
        if self.instructions_per_logit is None or c.dtype is None:
            return {}
        logits = MODEL_ROWS * MODEL_VOCAB
        issue_s = logits * self.instructions_per_logit / (EFFICIENCY * PEAK_ISSUE)
        nbytes = logits * _BYTES[c.dtype] * (2 if c.cfg else 1)
        mem_s = nbytes / COPY_BW
        return {"issue_us": round(issue_s * 1e6, 2), "memory_us": round(mem_s * 1e6, 2),
                "predicted_us": round(max(issue_s, mem_s) * 1e6, 2),
                "fraction_of_copy": round(mem_s / max(issue_s, mem_s), 3),
                "bound": "issue" if issue_s >= mem_s else "memory"}

    def to_json(self) -> dict:
        c = self.case
        d = {"name": c.name, "kernel": c.kernel, "variant": c.spec.name, "arch": self.arch, "dtype": c.dtype,
             "temperature": c.temperature, "rule": c.rule, "cfg": c.cfg, "num_warps": c.spec.num_warps,
             "instructions_per_logit": None if self.instructions_per_logit is None
             else round(self.instructions_per_logit, 2),
             "by_class": {k: round(v, 2) for k, v in self.by_class.items()},
             "registers": self.registers, "spills": self.spills, "stack": self.stack,
             "loop_instructions": self.loop_instructions, "logits_per_iteration": c.logits_per_iter,
             "static_instructions": self.static_instructions, "assumptions": self.assumptions,
             "error": self.error}
        d.update(self.predicted())
        return d


def _compile(spec: aot.Spec, arch: int):
    names = list(spec.fn.arg_names)
    signature = {k: spec.signature.get(k, "constexpr") for k in names}
    attrs = {(names.index(k),): [["tt.divisibility", 16]] for k in spec.aligned}
    src = ASTSource(spec.fn, signature, constexprs=dict(spec.constexprs), attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": spec.num_warps, "enable_fp_fusion": False})


def disassemble(cubin: bytes) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        return subprocess.run([aot._bin("nvdisasm"), "-c", path], check=True, capture_output=True,
                              text=True).stdout
    finally:
        os.unlink(path)


def _measure_compiled(case: Case, arch: int, kernel) -> Cost:
    cost = Cost(case, arch)
    cubin = kernel.asm["cubin"]
    cost.registers, cost.spills, cost.stack = aot._resource_usage(cubin, arch)
    fn = kernel.metadata.name
    insts, labels = parse_sass(disassemble(cubin), fn)
    cost.static_instructions = len(insts)
    lc = loop_cost(insts, labels)
    if lc is None:
        cost.assumptions.append("no loop with a global load: static count only")
        return cost
    cost.loop_instructions = len(lc.path)
    threads = 32 * case.spec.num_warps
    per = case.logits_per_iter
    if per:
        cost.instructions_per_logit = len(lc.path) * threads / per
        counts = dict.fromkeys(CLASSES, 0)
        for inst in lc.path:
            counts[_classify(inst)] += 1
        cost.by_class = {k: v * threads / per for k, v in counts.items()}
    a = cost.assumptions
    a.append(f"main loop {lc.head_addr:#x}-{lc.end_addr:#x}: {lc.body_instructions} instructions in its "
             f"body, {len(lc.path)} on the path of one iteration"
             + (f" ({per} logits, {threads} threads)" if per else ""))
    for addr, way, text, slow in lc.branches:
        if not slow:
            a.append(f"branch {way}: {text}")
    div = sum(1 for i in lc.path if i.op.startswith("BRA.DIV"))
    if div:
        a.append(f"{div} BRA.DIV not taken (the warp is converged there)")
    slow = [b for b in lc.branches if b[3]]
    if slow:
        a.append(f"{len(slow)} branches around a slow-path call (division: FCHK passes), the call not executed")
    for lo, hi, n, call in lc.skipped:
        if not call:
            a.append(f"not executed: {lo:#x}-{hi:#x} ({n} instructions)")
    calls = [s for s in lc.skipped if s[3]]
    if calls:
        a.append(f"not executed: {len(calls)} slow-path call sites ({sum(s[2] for s in calls)} instructions)")
    for h, n in lc.inner:
        extra = f" = {n * threads / per:.2f} per logit per iteration" if per else ""
        a.append(f"inner loop at {h:#x} not entered: {n} instructions per iteration{extra}")
    return cost


def measure(case: Case, arch: int) -> Cost:
    t0 = time.time()
    try:
        cost = _measure_compiled(case, arch, _compile(case.spec, arch))
    except Exception as e:  # noqa: BLE001 - reported
        cost = Cost(case, arch, error=f"{type(e).__name__}: {e}")
    cost.seconds = time.time() - t0
    return cost


def run(cases_: list[Case], archs, log=None) -> list[Cost]:
    """Measure each case for each arch; cases that compile to the same variant are compiled once."""
    out, done = [], {}
    for arch in archs:
        for case in cases_:
            key = (case.spec.name, arch)
            if key in done:
                prev = done[key]
                cost = dataclasses.replace(prev, case=case, seconds=0.0,
                                           assumptions=[f"same kernel as {prev.case.name}"] + prev.assumptions[:1])
                if prev.instructions_per_logit is not None and case.logits_per_iter != prev.case.logits_per_iter:
                    cost = measure(case, arch)
            else:
                cost = measure(case, arch)
                done[key] = cost
            out.append(cost)
            if log:
                log(_line(cost))
    return out


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

def _line(c: Cost) -> str:
    ipl = "-" if c.instructions_per_logit is None else f"{c.instructions_per_logit:6.2f}"
    p = c.predicted()
    pred = f" {p['predicted_us']:8.1f} us {p['fraction_of_copy']:5.2f}" if p else ""
    err = f" ERROR {c.error}" if c.error else ""
    return f"sm_{c.arch} {c.case.name:52} {ipl:>6} reg={c.registers:3} spill={c.spills}{pred}{err}"


def table(costs: list[Cost]) -> str:
    """Markdown table of the row-kernel cases, then the other kernels."""
    lines = ["| specialisation | arch | warps | per logit | FP32 | INT | MEM | CONV | CONTROL | other | registers "
             "| spills | predicted us (1024 x 126,464) | of copy bw |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in costs:
        if c.instructions_per_logit is None:
            continue
        p = c.predicted()
        cls = " | ".join(f"{c.by_class.get(k, 0):.1f}" for k in CLASSES)
        lines.append(f"| `{c.case.name}` | sm_{c.arch} | {c.case.spec.num_warps} | {c.instructions_per_logit:.2f} | {cls} "
                     f"| {c.registers} | {c.spills} | {p['predicted_us']:.1f} | {p['fraction_of_copy']:.2f} |")
    rest = [c for c in costs if c.instructions_per_logit is None]
    if rest:
        lines += ["", "| kernel | arch | warps | SASS instructions | main loop per iteration | registers | spills |",
                  "|---|---|---|---|---|---|---|"]
        for c in rest:
            lp = "-" if c.loop_instructions is None else str(c.loop_instructions)
            lines.append(f"| `{c.case.name}` | sm_{c.arch} | {c.case.spec.num_warps} | {c.static_instructions} | {lp} "
                         f"| {c.registers} | {c.spills} |")
    return "\n".join(lines)


def version_key(version: str | None = None) -> str:
    """The ceilings' key: triton's major.minor (ptxas and the code generator change between them)."""
    return ".".join((version or triton.__version__).split(".")[:2])


def check_ceilings(costs: list[Cost], ceilings: dict) -> list[str]:
    """Failures against `ceilings` ({name@sm_arch: {instructions_per_logit, registers}}): a case over
    its ceiling, with spills, or without a ceiling."""
    bad = []
    for c in costs:
        key = f"{c.case.name}@sm_{c.arch}"
        if c.error:
            bad.append(f"{key}: {c.error}")
            continue
        if c.spills:
            bad.append(f"{key}: {c.spills} bytes of local memory (spills)")
        lim = ceilings.get(key)
        if lim is None:
            if c.instructions_per_logit is not None:
                bad.append(f"{key}: no committed ceiling")
            continue
        if c.instructions_per_logit is not None and c.instructions_per_logit > lim["instructions_per_logit"]:
            bad.append(f"{key}: {c.instructions_per_logit:.2f} instructions per logit > ceiling "
                       f"{lim['instructions_per_logit']}")
        if c.registers > lim["registers"]:
            bad.append(f"{key}: {c.registers} registers > ceiling {lim['registers']}")
    return bad


def ceilings_from(costs: list[Cost], margin: float = 0.03, reg_margin: int = 4) -> dict:
    """Ceilings = measured + a small margin, for the row-kernel cases."""
    out = {}
    for c in costs:
        if c.instructions_per_logit is None or c.error:
            continue
        out[f"{c.case.name}@sm_{c.arch}"] = {
            "instructions_per_logit": round(c.instructions_per_logit * (1 + margin) + 0.05, 2),
            "registers": c.registers + reg_margin}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="90,80", help="comma-separated, e.g. 90,80 (default)")
    ap.add_argument("--quick", action="store_true", help="the subset tests/test_kernel_cost.py compiles")
    ap.add_argument("--json", help="write the results to this JSON file")
    ap.add_argument("--md", help="write the markdown table to this file")
    ap.add_argument("--check", metavar="CEILINGS", help="exit 1 when a case exceeds its ceiling in this file")
    ap.add_argument("--write-ceilings", metavar="CEILINGS",
                    help="set this triton version's ceilings in this file to measured + margin")
    ap.add_argument("--assumptions", action="store_true", help="print each case's path assumptions")
    args = ap.parse_args(argv)
    archs = tuple(int(a) for a in args.arch.split(","))
    print(f"triton {triton.__version__}; model: per logit / ({EFFICIENCY} x {PEAK_ISSUE / 1e12:.2f}e12/s), "
          f"copy {COPY_BW / 1e9:.0f} GB/s, {MODEL_ROWS} rows x {MODEL_VOCAB}", flush=True)
    costs = run(cases("quick" if args.quick else "all"), archs, log=lambda s: print(s, flush=True))
    if args.assumptions:
        for c in costs:
            print(f"\n{c.case.name} sm_{c.arch}:\n  " + "\n  ".join(c.assumptions))
    print()
    print(table(costs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"triton": triton.__version__, "model": {
                "peak_issue_per_s": PEAK_ISSUE, "efficiency": EFFICIENCY, "copy_bw_bytes_per_s": COPY_BW,
                "rows": MODEL_ROWS, "vocab": MODEL_VOCAB, "chunk": CHUNK},
                "results": [c.to_json() for c in costs]}, f, indent=1)
            f.write("\n")
    if args.md:
        with open(args.md, "w") as f:
            f.write(f"# Kernel cost, triton {triton.__version__}\n\n`python -m fastremask.kernels.cost`: SASS "
                    f"thread-instructions per logit on the main loop's path (docs/kernels.md); predicted time "
                    f"for {MODEL_ROWS} rows x {MODEL_VOCAB} = per logit x logits / ({EFFICIENCY} x 33.45e12/s).\n\n")
            f.write(table(costs) + "\n")
    rc = 1 if any(c.error for c in costs) else 0
    if args.write_ceilings:
        data = {}
        if os.path.exists(args.write_ceilings):
            with open(args.write_ceilings) as f:
                data = json.load(f)
        data[version_key()] = ceilings_from(costs)
        with open(args.write_ceilings, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
    if args.check:
        with open(args.check) as f:
            ceilings = json.load(f).get(version_key())
        if ceilings is None:
            print(f"no ceilings for triton {version_key()} in {args.check}")
            return 1
        bad = check_ceilings(costs, ceilings)
        for b in bad:
            print("OVER", b)
        rc = rc or (1 if bad else 0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
