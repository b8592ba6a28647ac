"""`select` as a Triton kernel: which candidates of each batch row keep their sample.

The function is `fastremask.sampler.reference.select` (docs/numerics.md §8). One program per batch row
ranks its candidates by (non-deferred first, higher confidence, lower position): the rank of
candidate `i` is the number of candidates that come before it, counted by comparing all pairs
in tiles of `[BLOCK_C, BLOCK_J]`. The order is strict and total, so ranks are `0 .. n-1` and
no sort, `nonzero` or host sync is needed: schedule mode keeps rank `< k`, threshold mode keeps
the non-deferred candidates `>= threshold`, or rank 0 when there is none. Optionally the kept
`x0` are written into the sequence `x` in the same kernel.
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl

from fastremask.sampler.contract import check_select_args
from fastremask.sampler.numerics import round_f32

from .numerics import LAUNCH_OPTIONS, interpreting

__all__ = ["select"]

_PAIRS = 4096   # elements of one [BLOCK_C, BLOCK_J] comparison tile


@triton.jit(do_not_specialize=["x_start"])   # the block start changes every block
def _select_kernel(
    p_conf, p_cand, p_def, p_k, p_keep, p_x, p_x0,
    C, stride_conf, stride_cand, stride_def, stride_keep, stride_x, stride_x0, x_start, threshold,
    BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr, THRESHOLD: tl.constexpr, WRITE_X: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    o_i = tl.arange(0, BLOCK_C)
    m_i = o_i < C
    b_conf_i = tl.load(p_conf + i_b * stride_conf + o_i, mask=m_i, other=0.0)      # [BLOCK_C]
    b_cand_i = tl.load(p_cand + i_b * stride_cand + o_i, mask=m_i, other=0) != 0
    b_def_i = (tl.load(p_def + i_b * stride_def + o_i, mask=m_i, other=0) != 0).to(tl.int32)
    rank = tl.zeros((BLOCK_C,), dtype=tl.int32)
    j0 = 0
    while j0 < C:      # not range(0, C, ...): triton 3.6's interpreter cannot take tensor bounds
        o_j = j0 + tl.arange(0, BLOCK_J)
        m_j = o_j < C
        b_conf_j = tl.load(p_conf + i_b * stride_conf + o_j, mask=m_j, other=0.0)  # [BLOCK_J]
        b_cand_j = tl.load(p_cand + i_b * stride_cand + o_j, mask=m_j, other=0) != 0
        b_def_j = (tl.load(p_def + i_b * stride_def + o_j, mask=m_j, other=0) != 0).to(tl.int32)
        d_i, d_j = b_def_i[:, None], b_def_j[None, :]                                # [BLOCK_C, BLOCK_J]
        c_i, c_j = b_conf_i[:, None], b_conf_j[None, :]
        before = (d_j < d_i) | ((d_j == d_i) & ((c_j > c_i) | ((c_j == c_i) & (o_j[None, :] < o_i[:, None]))))
        before = before & b_cand_j[None, :]
        rank += tl.sum(before.to(tl.int32), 1)
        j0 += BLOCK_J
    if THRESHOLD:
        keep = b_cand_i & (b_def_i == 0) & (b_conf_i >= threshold)
        none = tl.max(keep.to(tl.int32), 0) == 0
        keep = (keep | (b_cand_i & (rank == 0) & none)) != 0   # none above: the first by the ranking
    else:
        keep = b_cand_i & (rank.to(tl.int64) < tl.load(p_k + i_b))
    tl.store(p_keep + i_b * stride_keep + o_i, keep, mask=m_i)
    if WRITE_X:
        b_x0 = tl.load(p_x0 + i_b * stride_x0 + o_i, mask=m_i & keep, other=0)
        tl.store(p_x + i_b * stride_x + x_start + o_i, b_x0, mask=m_i & keep)


def select(confidence: torch.Tensor, candidate: torch.Tensor, deferred: torch.Tensor,
           k: torch.Tensor | None, threshold: float | None = None, *, rule: str = "fixed",
           x: torch.Tensor | None = None, x0: torch.Tensor | None = None, start: int = 0,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """Positions of each batch row that keep their sample, bit-equal to `reference.select`.

    Parameters
    ----------
    confidence : fp32 [B, C]
        Confidence of each position of the current block (any value where not a candidate).
    candidate : bool [B, C]
        Still-masked positions of the block.
    deferred : bool [B, C]
        Candidates whose `x0` is a deferred token: ranked after all others.
    k : int64 [B]
        Schedule mode: how many to keep per row (capped at the candidates). Ignored when
        `threshold` is given (may be None then).
    threshold : float, optional
        Threshold mode: the rule's parameter. ``'fixed'``: keep every non-deferred candidate
        with confidence `>= threshold` (compared in fp32); when there is none, the first by the
        ranking.
    rule : {"fixed", "factor", "eb"}
        How `threshold` picks (`reference.select`). Schedule mode and ``'fixed'`` run the kernel;
        ``'factor'`` and ``'eb'`` run as torch ops on the same device (`fastremask.sampler.rules`:
        one sort, an int64 prefix sum, no host sync).
    x : int64 [B, L], optional
        When given with `x0` (int64 [B, C]), the kept `x0[b, i]` are written to `x[b, start + i]`
        **in place** (by the kernel, in the same launch).
    start : int
        Column of `x` where the block begins.
    out : bool [B, C], optional
        Preallocated result.

    Returns
    -------
    keep : bool [B, C]
    """
    check_select_args(confidence, candidate, deferred, k, threshold, rule=rule, x=x, x0=x0, start=start,
                      out=out)                    # the same checks and messages on every backend
    if confidence.device.type != "cuda" and not interpreting():     # this backend's own limit
        raise ValueError(f"the triton backend needs CUDA tensors, got confidence on {confidence.device}")
    if threshold is None and k is not None:
        k = k.contiguous()                  # e.g. a column of the schedule's [B, S] table
    if x0 is not None and x0.stride(1) != 1:
        x0 = x0.contiguous()
    confidence = confidence if confidence.stride(1) == 1 else confidence.contiguous()
    candidate = candidate if candidate.stride(1) == 1 else candidate.contiguous()
    deferred = deferred if deferred.stride(1) == 1 else deferred.contiguous()
    return _select_rules(confidence, candidate, deferred, k, threshold, rule=rule, x=x, x0=x0, start=int(start),
                         out=out)


def _select_rules(confidence, candidate, deferred, k, threshold=None, *, rule="fixed", x=None, x0=None, start=0,
                  out=None):
    """The backend's `select` without its checks (the loop's call): the kernel for schedule mode
    and ``'fixed'``, `fastremask.sampler.rules.select_rule` for ``'factor'`` and ``'eb'``."""
    if threshold is not None and rule != "fixed":
        from fastremask.sampler.rules import select_rule
        return select_rule(confidence, candidate, deferred, threshold, rule, x=x, x0=x0, start=start, out=out)
    return _select(confidence, candidate, deferred, k, threshold, x=x, x0=x0, start=start, out=out)


def _select(confidence, candidate, deferred, k, threshold=None, *, x=None, x0=None, start=0, out=None):
    """The launcher: allocates and launches, checks nothing (`select` checks; the loop calls this
    with what it built: ``[B, C]`` tensors with unit last stride, ``k`` contiguous)."""
    b, c = confidence.shape
    if out is None:
        out = torch.empty((b, c), dtype=torch.bool, device=confidence.device)
    if b == 0 or c == 0:
        return out
    threshold_mode = threshold is not None
    write_x = x is not None
    block_c, block_j, warps = _launch_config(c)
    _select_kernel[(b,)](
        confidence, candidate, deferred, k if not threshold_mode else confidence, out,
        x if write_x else out, x0 if write_x else out,
        c, confidence.stride(0), candidate.stride(0), deferred.stride(0), out.stride(0),
        x.stride(0) if write_x else 0, x0.stride(0) if write_x else 0, start if write_x else 0,
        round_f32(float(threshold)) if threshold_mode else 0.0,
        BLOCK_C=block_c, BLOCK_J=block_j, THRESHOLD=threshold_mode, WRITE_X=write_x,
        num_warps=warps, **LAUNCH_OPTIONS)
    return out


def _launch_config(c: int) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_J, warps) for a block of ``c`` positions: a performance choice only."""
    block_c = max(2, triton.next_power_of_2(c))
    block_j = max(2, min(block_c, _PAIRS // block_c))
    return block_c, block_j, 4 if block_c * block_j >= 2048 else 1
