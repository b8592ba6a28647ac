"""The ``torch`` backend: `reference.sample_rows` and `reference.select`, same bits, less work.

* `sample_rows` reads only the requested rows and walks the vocabulary in pieces of whole
  ``CHUNK``s (numerics.md §5), so the temporaries stay near ``PIECE_ELEMENTS`` elements
  whatever the vocabulary; per piece it keeps a running argmax of the noised scores, the
  logit at that argmax, the top-2 logits (for ``margin``) and the per-chunk fixed-point sums.
  Because the sums are fixed per chunk and the running argmax keeps the earlier (lower) index
  on ties, the result does not depend on the piece width.
* `select` ranks by one sort of an int64 key per position instead of the reference's
  pairwise comparison.

No Python loop over rows or positions, and no host synchronisation.
"""
from __future__ import annotations

from typing import Optional

import torch

from fastremask import numerics as nx
from fastremask.reference import (
    REMASKING, RowSample, _check_sample_args, invalid_rows, prepare_logits,
)

__all__ = ["sample_rows", "select", "PIECE_ELEMENTS"]

# Target size of one piece's [R, width] temporaries (the Philox words are int64, so a piece
# costs about 10 x 8 bytes per element at its peak): 2**21 elements ~ 160 MiB.
PIECE_ELEMENTS = 1 << 21
NEG_INF = float("-inf")


def _piece_width(R: int, V: int) -> int:
    chunks = max(1, PIECE_ELEMENTS // (max(R, 1) * nx.CHUNK))
    return min(chunks * nx.CHUNK, -(-V // nx.CHUNK) * nx.CHUNK)


def sample_rows(
    logits: torch.Tensor,
    rows: torch.Tensor,
    seeds: torch.Tensor,
    positions: torch.Tensor,
    step: int,
    *,
    temperature: float,
    remasking: str,
    cfg_scale: float = 0.0,
    uncond_logits: Optional[torch.Tensor] = None,
    suppress_tokens: Optional[torch.Tensor] = None,
    active: Optional[torch.Tensor] = None,
    piece_width: Optional[int] = None,
) -> RowSample:
    """Same contract and result as `fastremask.reference.sample_rows`.

    ``piece_width`` (a multiple of ``CHUNK``; default from ``PIECE_ELEMENTS``) only bounds
    memory; it never changes a bit of the result (tested).
    """
    _check_sample_args(logits, rows, seeds, positions, step, temperature, remasking, uncond_logits)
    device = logits.device
    R, V = rows.numel(), logits.shape[1]
    rows, seeds, positions = (t.to(device=device, dtype=torch.int64) for t in (rows, seeds, positions))
    W = piece_width or _piece_width(R, V)
    if W % nx.CHUNK:
        raise ValueError(f"piece_width must be a multiple of CHUNK={nx.CHUNK}, got {W}")
    noisy = float(temperature) != 0.0
    T = torch.tensor(float(temperature), dtype=torch.float32, device=device)
    if suppress_tokens is not None:
        suppress_tokens = suppress_tokens.to(device=device, dtype=torch.int64)

    best_score = torch.full((R,), NEG_INF, device=device)       # running argmax of the scores
    best_index = torch.zeros(R, dtype=torch.int64, device=device)
    best_logit = torch.full((R,), NEG_INF, device=device)       # l at the running argmax
    top2 = torch.full((R, 2), NEG_INF, device=device)           # two largest logits so far
    bad = torch.zeros(R, dtype=torch.bool, device=device)
    any_finite = torch.zeros(R, dtype=torch.bool, device=device)
    m_c, s_c, a_c = [], [], []
    for v0 in range(0, V, W):
        v1 = min(v0 + W, V)
        sup = None
        if suppress_tokens is not None and suppress_tokens.numel():
            sup = suppress_tokens - v0       # out-of-piece ids are dropped below
            sup = sup[(sup >= 0) & (sup < v1 - v0)]
        l = prepare_logits(
            logits[rows, v0:v1], cfg_scale=cfg_scale,
            uncond_logits=None if uncond_logits is None else uncond_logits[rows, v0:v1],
            suppress_tokens=sup,
        )                                                           # [R, w] fp32
        bad |= torch.isnan(l).any(-1) | (l == float("inf")).any(-1)
        any_finite |= (l != NEG_INF).any(-1)
        mc, sc, ac = nx.chunk_sums(l)                               # [R, w / CHUNK]
        m_c.append(mc), s_c.append(sc), a_c.append(ac)
        vocab = torch.arange(v0, v1, device=device)
        score = l + T * nx.gumbel_noise(seeds, positions, step, vocab) if noisy else l
        p_best = score.amax(-1)                                     # [R]
        p_index = torch.where(score == p_best[:, None], vocab, V).amin(-1).clamp_max(V - 1)
        take = p_best > best_score       # strict: an equal score in a later piece has a higher id
        best_score = torch.where(take, p_best, best_score)
        best_index = torch.where(take, p_index, best_index)
        best_logit = torch.where(take, l.gather(-1, (p_index - v0).clamp(0, v1 - v0 - 1)[:, None]).squeeze(-1),
                                 best_logit)
        if remasking == "margin":
            k = min(2, v1 - v0)
            top2 = torch.cat([top2, l.topk(k, dim=-1).values], dim=-1).topk(2, dim=-1).values
        del l, score

    m, Z, B = nx.combine_chunks(torch.cat(m_c, -1), torch.cat(s_c, -1), torch.cat(a_c, -1))
    if remasking == "low_confidence":
        confidence = nx.fixed_ratio(nx.fixed_term(best_logit, m), Z)
    elif remasking == "margin":
        confidence = nx.fixed_ratio(nx.FIXED - nx.fixed_term(top2[:, 1], m), Z)
    elif remasking == "entropy":
        logZ = nx.log_(nx.to_f32(Z) * 2.0**-nx.FIXED_BITS)
        confidence = -(logZ + nx.fixed_ratio(B, Z))
    else:
        confidence = nx.remask_uniform(seeds, positions, step)

    invalid = bad | ~any_finite
    if active is not None:
        invalid &= active
        confidence = torch.where(active, confidence, NEG_INF)
        best_index = torch.where(active, best_index, -1)
    x0 = torch.where(invalid, -1, best_index)
    confidence = torch.where(invalid, float("nan"), confidence)
    return RowSample(x0, confidence.to(torch.float32), invalid)


def select(
    confidence: torch.Tensor,
    candidate: torch.Tensor,
    deferred: torch.Tensor,
    k: torch.Tensor,
    threshold: Optional[float] = None,
) -> torch.Tensor:
    """Same contract and result as `fastremask.reference.select`, by one sort per row.

    Key (ascending = kept first): not-a-candidate (bit 62), deferred (bit 61), the confidence
    mapped to an order-reversing 32-bit integer (bits 28..60), the position (bits 0..27).
    """
    B, C = confidence.shape
    if C >= 1 << 28:
        raise ValueError(f"block_length must be < 2**28, got {C}")
    deferred = deferred & candidate
    c = confidence + 0.0                                # -0.0 -> +0.0: they compare equal
    bits = c.view(torch.int32).to(torch.int64)
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)     # monotone in the fp32 value
    desc = (2**31 - 1) - ordered                                  # in [0, 2**32)
    pos = torch.arange(C, device=confidence.device)
    key = ((~candidate).to(torch.int64) << 62) | (deferred.to(torch.int64) << 61) | (desc << 28) | pos
    order = key.argsort(dim=-1)
    rank = torch.empty_like(order).scatter_(-1, order, pos.expand(B, C))
    if threshold is None:
        return candidate & (rank < k.to(rank.device)[:, None])
    t = torch.tensor(float(threshold), dtype=torch.float32, device=confidence.device)
    keep = candidate & ~deferred & (c >= t)
    return keep | (~keep.any(-1, keepdim=True) & candidate & (rank == 0))
