"""Ahead-of-time compile of every kernel specialisation `generate` can launch, without a GPU.

`triton.compile` with a `GPUTarget` needs no device: it runs the Triton pipeline down to PTX and
calls the `ptxas` shipped in the triton wheel. For each specialisation and architecture this
module

* scans the PTX for instructions that would break the numerics contract (docs/numerics.md):
  contracted multiply-adds (`fma.rn.f32`, any fp32/fp64 `fma`/`mad`) and the approximate
  transcendentals and divisions (`ex2.approx`, `lg2.approx`, `div.full`, `div.approx`,
  `rcp.approx`, `sqrt.approx`);
* reads the cubin's resource usage (`cuobjdump --dump-resource-usage`, from the same wheel):
  registers per thread, local memory (spills) and stack.

Run ``python -m fastremask.kernels.aot`` (all specialisations, sm_80 and sm_90; exit status 1
on any violation) or ``--quick`` for the cover set the tests use.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastremask.sampler.numerics import CHUNK

from .sample import _ENTROPY, _LOW_CONFIDENCE, _MARGIN, _RANDOM, _sample_rows_kernel
from .sample import _block_c, _launch_config as _row_launch_config, max_mode
from .select import _launch_config as _select_launch_config
from .select import _select_kernel

__all__ = ["ARCHS", "FORBIDDEN", "Spec", "Result", "specialisations", "compile_spec", "check", "main"]

ARCHS = (80, 90)
# Regexes over PTX instruction text. Any of these lowers a contract operation to something that
# is not one IEEE rounding (fma contraction) or not correctly rounded (the .approx family).
FORBIDDEN = {
    "fma.rn.f32": r"\bfma\.rn(\.ftz)?(\.sat)?\.f32\b",
    "fma/mad f32/f64": r"\b(fma|mad)(\.\w+)*\.f(32|64)\b",
    "ex2.approx": r"\bex2\.approx\b",
    "lg2.approx": r"\blg2\.approx\b",
    "div.full": r"\bdiv\.full\b",
    "div.approx": r"\bdiv\.approx\b",
    "rcp.approx": r"\brcp\.approx\b",
    "sqrt.approx": r"\bsqrt\.approx\b",
}
_LOGIT_TYPES = {"fp32": "*fp32", "bf16": "*bf16", "fp16": "*fp16"}
_RULES = {"low_confidence": _LOW_CONFIDENCE, "margin": _MARGIN, "entropy": _ENTROPY,
          "random": _RANDOM}


@dataclass(frozen=True)
class Spec:
    """One compiled variant: kernel, argument types, constexpr values, launch options."""

    name: str
    fn: object
    signature: dict
    constexprs: dict
    num_warps: int
    aligned: tuple = ()          # arguments that get the divisibility-by-16 hint (as at run time)


@dataclass
class Result:
    spec: Spec
    arch: int
    forbidden: dict = field(default_factory=dict)   # name -> count
    registers: int = -1
    local_bytes: int = -1
    stack_bytes: int = -1
    seconds: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.forbidden and self.local_bytes == 0


def _row_spec(dtype: str, cfg: bool, noise, rule: str, active: bool = True, n_chunks: int = 62,
              trunc: bool = False, sampled: bool = False) -> Spec:
    """The row kernel as `generate` launches it (LLaDA's 62 chunks); `noise` is a bool (True: T = 1)
    or the temperature (T != 1 is the tempered variant, a second exp per entry); `trunc`: with
    top-k / top-p / min-p (numerics.md §4a; at T > 0, or with `sampled` at T = 0 too); `sampled`:
    the confidence on the tempered, truncated distribution (§6a: ``confidence='dream'``, or
    ``'llada2'`` at T > 0)."""
    temperature = float(noise)                       # True is 1.0, False 0.0
    noise, tempered = temperature != 0.0, temperature not in (0.0, 1.0)
    sig = {
        "p_logits": _LOGIT_TYPES[dtype], "p_uncond": _LOGIT_TYPES[dtype], "p_rows": "*i64",
        "p_seeds": "*i64", "p_pos": "*i64", "p_steps": "*i64", "p_active": "*i1", "p_suppress": "*i64",
        "p_pf": "*fp32", "p_pi": "*i64", "p_count": "*i32", "p_x0": "*i64", "p_conf": "*fp32",
        "p_invalid": "*i1", "p_lcut": "*fp32", "p_icut": "*i64", "stride_l": "i32", "stride_u": "i32", "V": "i32",
        "n_chunks": "i32", "chunks_per_prog": "i32", "n_suppress": "i32",
        "tau": "fp32", "c_t": "fp32", "cfg_s1": "fp32",
    }
    const = {"CHUNK": CHUNK, "HAS_CFG": cfg, "HAS_ACTIVE": active, "NOISE": noise, "TEMPERED": tempered,
             "RULE": _RULES[rule],
             "BLOCK_C": _block_c(n_chunks), "MAX_MODE": max_mode(), "TRUNC": bool(trunc) and (noise or sampled)}
    if sampled:                                      # absent otherwise: the earlier variants unchanged
        const["SAMPLED"] = True
    name = (f"sample_rows[{dtype},cfg={int(cfg)},noise={int(noise) + int(tempered)},{rule}"
            f"{',trunc' if trunc else ''}{',sampled' if sampled else ''}]")
    aligned = tuple(k for k in sig if k.startswith("p_")) + ("stride_l", "stride_u", "V")
    warps = _row_launch_config(1, n_chunks, None, None)[2]   # the warps generate launches with
    return Spec(name, _sample_rows_kernel, sig, const, warps, aligned)


def row_logits_per_iter(spec: Spec) -> int:
    """Vocab entries one iteration of the row kernel's chunk loop handles (kernels/cost.py)."""
    return CHUNK


def _select_spec(threshold: bool, write_x: bool, block_c: int = 32) -> Spec:
    sig = {"p_conf": "*fp32", "p_cand": "*i1", "p_def": "*i1", "p_k": "*i64", "p_keep": "*i1",
           "p_x": "*i64", "p_x0": "*i64", "C": "i32", "stride_conf": "i32", "stride_cand": "i32",
           "stride_def": "i32", "stride_keep": "i32", "stride_x": "i32", "stride_x0": "i32",
           "x_start": "i32", "threshold": "fp32"}
    block_c, block_j, warps = _select_launch_config(block_c)
    const = {"BLOCK_C": block_c, "BLOCK_J": block_j, "THRESHOLD": threshold, "WRITE_X": write_x}
    aligned = tuple(k for k in sig if k.startswith("p_"))
    return Spec(f"select[threshold={int(threshold)},write_x={int(write_x)},C={block_c}]",
                _select_kernel, sig, const, warps, aligned)


def specialisations(quick: bool = False) -> list[Spec]:
    """Every variant `generate` can launch (`active` always given), or a cover set (`quick`):
    each constexpr value at least once, the heaviest row kernel (bf16, CFG, noise, entropy) included."""
    if quick:
        rows = [_row_spec("bf16", True, 0.7, "entropy"), _row_spec("fp32", False, False, "low_confidence"),
                _row_spec("fp16", True, False, "margin"), _row_spec("bf16", False, True, "random"),
                _row_spec("bf16", False, False, "entropy"), _row_spec("bf16", False, 0.7, "low_confidence", trunc=True),
                _row_spec("bf16", True, 0.7, "entropy", trunc=True, sampled=True),
                _row_spec("fp32", False, False, "margin", trunc=True, sampled=True)]
        selects = [_select_spec(True, True), _select_spec(False, False, block_c=512)]
        return rows + selects
    rows = [_row_spec(d, c, n, r) for d, c, n, r in
            itertools.product(_LOGIT_TYPES, (False, True), (False, True, 0.7), _RULES)]
    rows += [_row_spec(d, False, n, r, trunc=True) for d, n, r in
             itertools.product(_LOGIT_TYPES, (True, 0.7), ("low_confidence", "random"))]
    # the §6a confidences (confidence='dream' / 'llada2'), with truncation: the heaviest of them
    rows += [_row_spec(d, False, n, r, trunc=True, sampled=True) for d, n, r in
             itertools.product(_LOGIT_TYPES, (False, True, 0.7), ("low_confidence", "margin", "entropy"))]
    selects = [_select_spec(t, w, c) for t, w in itertools.product((False, True), repeat=2)
               for c in (32, 512)]
    return rows + selects


def _bin(tool: str) -> str:
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", tool)
    if os.path.exists(path):
        return path
    found = shutil.which(tool)
    if not found:
        raise FileNotFoundError(f"{tool} not found in the triton wheel nor on PATH")
    return found


def _resource_usage(cubin: bytes, arch: int) -> tuple[int, int, int]:
    """(registers, local bytes, stack bytes) of the one kernel in `cubin`, from cuobjdump."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        out = subprocess.run([_bin("cuobjdump"), "--dump-resource-usage", path], check=True,
                             capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    m = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:\d+\s+LOCAL:(\d+)", out)
    if not m:
        raise RuntimeError(f"unexpected cuobjdump output for sm_{arch}:\n{out}")
    return int(m.group(1)), int(m.group(3)), int(m.group(2))


def scan_ptx(ptx: str) -> dict:
    """{forbidden name: count} over the PTX instruction lines (comments stripped)."""
    body = "\n".join(line.split("//")[0] for line in ptx.splitlines())
    found = {}
    for name, pattern in FORBIDDEN.items():
        n = len(re.findall(pattern, body))
        if n:
            found[name] = n
    return found


def compile_spec(spec: Spec, arch: int) -> Result:
    """Compile one variant for `sm_<arch>` (no GPU needed) and check it."""
    t0 = time.time()
    res = Result(spec, arch)
    try:
        names = list(spec.fn.arg_names)
        signature = {k: spec.signature.get(k, "constexpr") for k in names}
        attrs = {(names.index(k),): [["tt.divisibility", 16]] for k in spec.aligned}
        src = ASTSource(spec.fn, signature, constexprs=dict(spec.constexprs), attrs=attrs)
        kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                options={"num_warps": spec.num_warps, "enable_fp_fusion": False})
        res.forbidden = scan_ptx(kernel.asm["ptx"])
        res.registers, res.local_bytes, res.stack_bytes = _resource_usage(kernel.asm["cubin"], arch)
    except Exception as e:  # noqa: BLE001 - reported, and fails the check
        res.error = f"{type(e).__name__}: {e}"
    res.seconds = time.time() - t0
    return res


@triton.jit
def _control_kernel(p_x, p_y):
    # What the scan must catch: a * b + c contracts to fma.rn.f32 when fusion is on, and
    # tl.exp lowers to ex2.approx.
    o = tl.arange(0, 128)
    b_x = tl.load(p_x + o)
    tl.store(p_y + o, tl.exp(b_x * b_x + 1.0))


def control(arch: int = 90) -> dict:
    """Scan of a kernel that breaks the contract on purpose (fusion on, `tl.exp`): shows that
    `scan_ptx` sees what it looks for. Returns its {forbidden name: count}."""
    src = ASTSource(_control_kernel, {"p_x": "*fp32", "p_y": "*fp32"}, constexprs={}, attrs={})
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": 4, "enable_fp_fusion": True})
    return scan_ptx(kernel.asm["ptx"])


def check(quick: bool = False, archs=ARCHS, log=None) -> list[Result]:
    results = []
    for spec in specialisations(quick):
        for arch in archs:
            r = compile_spec(spec, arch)
            results.append(r)
            if log:
                log(_line(r))
    return results


def _line(r: Result) -> str:
    status = "ok" if r.ok else "FAIL"
    extra = f" forbidden={r.forbidden}" if r.forbidden else ""
    extra += f" error={r.error}" if r.error else ""
    return (f"{status:4} sm_{r.arch} {r.spec.name:58} warps={r.spec.num_warps} reg={r.registers:3} "
            f"local={r.local_bytes} stack={r.stack_bytes} {r.seconds:5.1f}s{extra}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the cover set only (as the tests)")
    ap.add_argument("--arch", type=int, action="append", help="80, 90 (default both)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    archs = tuple(args.arch or ARCHS)
    results = check(args.quick, archs, log=lambda s: print(s, flush=True))
    ctrl = control(archs[-1])
    ctrl_ok = "fma.rn.f32" in ctrl and "ex2.approx" in ctrl
    print(f"control (fusion on, tl.exp): {ctrl} -> scanner {'sees them' if ctrl_ok else 'MISSES them'}")
    bad = [r for r in results if not r.ok]
    print(f"{len(results) - len(bad)}/{len(results)} ok (triton {triton.__version__})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"triton": triton.__version__, "control": ctrl, "results": [
                {"name": r.spec.name, "arch": r.arch, "num_warps": r.spec.num_warps,
                 "registers": r.registers, "local_bytes": r.local_bytes, "stack_bytes": r.stack_bytes,
                 "forbidden": r.forbidden, "error": r.error, "ok": r.ok, "seconds": round(r.seconds, 2)}
                for r in results]}, f, indent=1)
    return 1 if bad or not ctrl_ok else 0


if __name__ == "__main__":
    sys.exit(main())
