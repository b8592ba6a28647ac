"""The threshold rules of `fastremask.sampler.reference.select` as device-agnostic torch ops.

`reference.select` states the rules (``'fixed'``, ``'factor'``, ``'eb'``; docs/decoding.md) on
whole ``[B, C, C]`` comparisons, written to be read. Here the same results come from one sort
per row and a prefix sum, with no host synchronisation and no tensor built from a host value
(so a CUDA graph can capture them):

* `ranks`: each position's place in the row's ranking, from one ``argsort`` of an int64 key
  (not-a-candidate, deferred, the confidence as an order-reversing integer, the position);
* `rule_keep`: ``'factor'`` and ``'eb'`` on those ranks. Both conditions hold on a prefix of
  the ranking (shown in docs/decoding.md), so "the largest ``n`` that holds" is "every
  position whose own ``n`` holds": ``'factor'`` is element-wise, ``'eb'`` needs the sum of
  the entropies ranked ahead, an exclusive int64 ``cumsum`` in rank order (exact, so its order
  of additions does not matter).

Used by the ``torch`` backend's `select` (`fastremask.sampler.fast`) and, for the rules its
kernel does not have, by the ``triton`` backend (`select_rule`, from `fastremask.kernels.select`), on the
device's tensors.
"""
from __future__ import annotations

import torch

from fastremask.sampler.contract import check_rule, write_kept
from fastremask.sampler.reference import EB_GAMMA_LIMIT, RULE_BITS, eb_bound, factor_bound

__all__ = ["ranks", "rule_keep", "select_rule", "check_rule"]

_SCALE = float(1 << RULE_BITS)


def select_rule(confidence, candidate, deferred, threshold, rule: str, *, x=None, x0=None, start: int = 0,
                out=None) -> torch.Tensor:
    """``select`` for the ``'factor'`` and ``'eb'`` rules (what the ``triton`` backend runs for
    them: its kernel has schedule mode and ``'fixed'``), with `select`'s write into ``x`` and
    ``out``; unchecked. Same bits as `fastremask.sampler.reference.select` with ``rule=``."""
    rank = ranks(confidence, candidate, deferred)
    return write_kept(rule_keep(confidence, candidate, deferred, rank, threshold, rule), x, x0, start, out)


def ranks(confidence: torch.Tensor, candidate: torch.Tensor, deferred: torch.Tensor) -> torch.Tensor:
    """``[B, C]`` int64: each position's rank in its row, a permutation of ``0 .. C-1``.

    Key (ascending = first): not-a-candidate (bit 62), deferred (bit 61; a non-candidate's bit
    only reorders the non-candidates, so ``deferred`` need not be masked by ``candidate``),
    the confidence mapped to an order-reversing 32-bit integer (bits 28..60; ``-0.0`` as
    ``+0.0``), the position (bits 0..27). Candidates take ranks ``0 .. n-1``, the non-deferred
    first, as `reference.select` ranks them.
    """
    B, C = confidence.shape
    if C >= 1 << 28:
        raise ValueError(f"block_length must be < 2**28, got {C}")
    c = confidence + 0.0                                # -0.0 -> +0.0: they compare equal
    bits = c.view(torch.int32).to(torch.int64)
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)     # monotone in the fp32 value
    desc = (2**31 - 1) - ordered                                  # in [0, 2**32)
    pos = torch.arange(C, device=confidence.device)
    key = ((~candidate).to(torch.int64) << 62) | (deferred.to(torch.int64) << 61) | (desc << 28) | pos
    order = key.argsort(dim=-1)
    return torch.empty_like(order).scatter_(-1, order, pos.expand(B, C))


def _factor_error(c: torch.Tensor) -> torch.Tensor:
    """int64 ``2**30 - floor(clamp(c, 0, 1) * 2**30)``: ``1 - c`` on the grid, rounded up."""
    c = torch.where(c > 0, c, 0.0)                     # NaN, negatives, -0.0, -inf -> 0
    c = torch.where(c < 1, c, 1.0)
    return (1 << RULE_BITS) - torch.floor(c * _SCALE).to(torch.int64)


def _entropy(c: torch.Tensor) -> torch.Tensor:
    """int64 ``ceil(clamp(-c, 0, 32) * 2**30)``: the entropy on the grid, rounded up."""
    h = -c
    h = torch.where(h < EB_GAMMA_LIMIT, h, EB_GAMMA_LIMIT)   # NaN, +inf -> 32
    h = torch.where(h > 0, h, 0.0)
    return torch.ceil(h * _SCALE).to(torch.int64)


def rule_keep(confidence: torch.Tensor, candidate: torch.Tensor, deferred: torch.Tensor,
              rank: torch.Tensor, threshold: float, rule: str) -> torch.Tensor:
    """``keep`` ``[B, C]`` bool for ``rule`` in ``('factor', 'eb')`` (`reference.select`), given
    `ranks`; at least one per row with a candidate (its rank 0)."""
    plain = candidate & ~deferred
    if rule == "factor":
        bound = factor_bound(threshold)                 # a Python int: a kernel argument
        holds = plain & ((rank + 2) * _factor_error(confidence) < bound)      # (n + 1) * E < F
    elif rule == "eb":
        bound = eb_bound(threshold)
        h = torch.where(plain, _entropy(confidence), 0)
        in_order = torch.zeros_like(h).scatter_(-1, rank, h)               # h by rank
        ahead = (in_order.cumsum(-1) - in_order).gather(-1, rank)          # sum of h ranked ahead
        holds = plain & (ahead <= bound)
    else:
        raise ValueError(f"rule_keep takes 'factor' or 'eb', got {rule!r}")
    return holds | (~holds.any(-1, keepdim=True) & candidate & (rank == 0))
