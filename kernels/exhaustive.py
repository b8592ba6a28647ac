"""Exhaustive check of the kernels' fused fixed-point exponential (`numerics.fixed_exp`).

For every fp32 `d` in [-104, 0] (both zeros) and -inf, 1,120,927,746 inputs, the fused form

    x = max(d, -104);  p = exp's polynomial at x;  y = p * 2**(k + 40)
    S term = trunc(y),  A term = trunc(y * -x)

gives the same int64 as the contract's (docs/numerics.md §5) `trunc(exp(d) * 2**40)` and
`trunc((exp(d) * -d) * 2**40)` (0 where `exp(d) == 0`), computed with
`fastremask.sampler.numerics.exp`. The fused form is written here in PyTorch with the same
operations in the same order as the Triton function (tests/test_numerics_triton.py checks the
two against each other). `python -m fastremask.kernels.exhaustive` (a few minutes on 2 cores);
`--sample N` checks N random inputs of the range instead.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from fastremask.sampler import numerics as nx

_ROUNDER_BITS = 0x4B400000


def fused(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(S term, A term) int64 of fp32 `d <= 0` by the fused form."""
    x = d.clamp_min(nx.EXP_LO)
    t = (x * nx.LOG2E).add_(nx.ROUNDER)
    k = t - nx.ROUNDER
    r = (x - k * nx.LN2_HI).sub_(k * nx.LN2_LO)
    c2, c3, c4, c5, c6, c7 = nx.EXP_C
    q = (r * c7).add_(c6).mul_(r).add_(c5).mul_(r).add_(c4).mul_(r).add_(c3).mul_(r).add_(c2)
    p = q.mul_(r).mul_(r).add_(r).add_(1.0)
    scale = ((t.view(torch.int32) + (127 + 40 - _ROUNDER_BITS)) << 23).view(torch.float32)
    y = p.mul_(scale)
    return y.to(torch.int64), (y * x.neg()).to(torch.int64)


def contract(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(S term, A term) int64 as numerics.md §5 defines them (m_c = 0, l = d)."""
    e = nx.exp(d)
    s = (e * float(nx.FIXED)).to(torch.int64)
    t = torch.where(e == 0, 0.0, e * d.neg())
    return s, (t * float(nx.FIXED)).to(torch.int64)


def _check(d: torch.Tensor) -> int:
    s1, a1 = fused(d)
    s2, a2 = contract(d)
    bad = (s1 != s2) | (a1 != a2)
    n = int(bad.sum())
    if n:
        i = int(bad.nonzero()[0])
        print(f"MISMATCH at d = {d[i].item()!r}: fused ({s1[i].item()}, {a1[i].item()}) "
              f"contract ({s2[i].item()}, {a2[i].item()})")
    return n


def exhaustive(block: int = 1 << 24, log=print) -> tuple[int, int]:
    """(inputs checked, mismatches) over every fp32 in [-104, 0] and -inf."""
    lo, hi = 0x80000000, 0xC2D00000            # bits of -0.0 and of -104.0 (inclusive)
    checked = bad = 0
    t0 = time.time()
    for start in range(lo, hi + 1, block):
        stop = min(start + block, hi + 1)
        bits = torch.arange(start, stop, dtype=torch.int64).to(torch.int32)   # wraps to the int32 bits
        d = bits.view(torch.float32)
        bad += _check(d)
        checked += stop - start
        if log and (start - lo) // block % 16 == 0:
            log(f"{checked:,} checked, {bad} mismatches, {time.time() - t0:.0f} s")
    d = torch.tensor([float("-inf"), 0.0], dtype=torch.float32)   # -inf, and +0.0 (not in the range)
    bad += _check(d)
    checked += 1                                                  # +0.0 == -0.0 as an input here
    return checked, bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", type=int, help="check this many random inputs instead")
    args = ap.parse_args(argv)
    if args.sample:
        g = torch.Generator().manual_seed(0)
        bits = torch.randint(0x80000000, 0xC2D00001, (args.sample,), generator=g, dtype=torch.int64)
        n = _check(bits.to(torch.int32).view(torch.float32))
        print(f"{args.sample:,} sampled inputs, {n} mismatches")
        return 1 if n else 0
    checked, bad = exhaustive()
    print(f"{checked:,} inputs (every fp32 in [-104, 0] and -inf), {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
