"""The logits shift of a family whose output at ``i - 1`` scores the token at ``i`` (Dream).

Written once, used by the native models (on hidden states, before the output head) and by the
`transformers`-path adapter (on the logits): the rows whose outputs are the logits of positions
``o0:o1``, with ``shift`` the family's ``logits_shift`` (`fastremask.models.family.Family`).
Position 0 has no output before it and keeps its own, as Dream's ``generation_utils`` does.
"""
from __future__ import annotations

import torch

__all__ = ["source_span", "shifted_rows"]


def source_span(o0: int, o1: int, shift: int) -> tuple[int, int]:
    """``(lo, hi)``: the contiguous positions whose outputs `shifted_rows` reads for ``o0:o1``
    (as many as ``o1 - o0``; from 0 when the window starts at position 0)."""
    lo = o0 - shift if o0 >= shift else 0
    return lo, lo + (o1 - o0)


def shifted_rows(t: torch.Tensor, t0: int, o0: int, o1: int, shift: int) -> torch.Tensor:
    """The rows of ``t`` ``[B, n, ...]`` (holding positions ``t0, t0 + 1, ..``) whose outputs
    score positions ``o0:o1``: position ``i``'s row is ``i - shift`` (0 for ``i < shift``)."""
    if not shift or o0 >= shift:
        return t[:, o0 - shift - t0:o1 - shift - t0]
    return torch.cat([t[:, :1], t[:, :o1 - 1 - t0]], dim=1)
