"""The trace of a `generate` call: what each step did, on the device, for every batch row.

`Trace` and `TraceStep` are what ``generate(..., return_trace=True)`` returns and what a
``callback`` receives; `fastremask.tools.trace` prints and draws them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

__all__ = ["Trace", "TraceStep"]


@dataclass
class TraceStep:
    """One step (one model call) of one block; tensors ``[B, C]`` over the block's positions.

    ``step``: the loop's step index (steps whose count is 0 for every row are skipped but
    counted); ``row_step`` ``[B]`` int64: each row's own step counter, the noise counter its
    draws used (equal to ``step`` in schedule mode; in threshold mode it counts only the steps
    in which the row still had masked positions, so a row's draws do not depend on the rest of
    the batch); ``block``: block index; ``start``: index in ``x`` of the block's first position;
    ``candidate``: masked before the step; ``x0``: sampled token (-1 where not a candidate);
    ``confidence``: its confidence (-inf where not a candidate); ``keep``: kept this step.
    Token editing (block-causal models, ``edit_threshold``): ``edit`` ``[B, C]`` bool, decoded
    positions replaced this step by their ``x0``; ``before`` ``[B, C]``: the block's tokens before
    the step. ``offset`` ``[B]`` int64 (block-causal models): the answer position of the block's
    first column, per row (each row's answer starts at its own column); None: ``start - P``.
    """

    step: int
    row_step: torch.Tensor
    block: int
    start: int
    candidate: torch.Tensor
    x0: torch.Tensor
    confidence: torch.Tensor
    keep: torch.Tensor
    edit: Optional[torch.Tensor] = None
    before: Optional[torch.Tensor] = None
    offset: Optional[torch.Tensor] = None


@dataclass
class Trace:
    """The per-step record of one `generate` call (``return_trace=True``)."""

    prompt_length: int
    gen_length: int
    block_length: int
    steps: list = field(default_factory=list)
    stops: list = field(default_factory=list)   # stop_at_eos: (block, done [B] bool) after each block
    model_calls: int = 0        # the model calls `run` made (`fastremask.sampler.model_call.ModelCall`)
    positions: int = 0          # the positions they computed, over all rows (a cache computes fewer)

    def kept(self, row: int = 0) -> list:
        """``[(step, position, token, confidence), ...]`` for batch row ``row``, in the order
        the tokens were kept; ``step`` is the row's own step counter, ``position`` counts
        within the generated answer."""
        out = []
        for s in self.steps:
            js = torch.nonzero(s.keep[row]).flatten().tolist()
            off = s.start - self.prompt_length if s.offset is None else int(s.offset[row])
            for j in js:
                out.append((int(s.row_step[row]), off + j, int(s.x0[row, j]), float(s.confidence[row, j])))
        return out

    def edits(self, row: int = 0) -> list:
        """Token editing: ``[(step, position, old token, new token), ...]`` for batch row ``row``,
        in order; ``step`` is the row's own step counter, ``position`` counts within the answer."""
        out = []
        for s in self.steps:
            if s.edit is None:
                continue
            off = s.start - self.prompt_length if s.offset is None else int(s.offset[row])
            for j in torch.nonzero(s.edit[row]).flatten().tolist():
                out.append((int(s.row_step[row]), off + j, int(s.before[row, j]), int(s.x0[row, j])))
        return out
