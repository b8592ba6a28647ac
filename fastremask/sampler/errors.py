"""Invalid logits (NaN, ``+inf``, nothing finite): found on the device, reported in one message.

The loop never lets a bad row choose a token: `sample_rows` marks it invalid, the loop keeps
the first one of a block on the device (`FirstInvalid`, no host sync per step) and raises the
same ValueError, naming the step, the batch row and the position, for every backend.
"""
from __future__ import annotations


import torch

from fastremask.sampler.reference import prepare_logits

__all__ = ["describe_invalid", "invalid_error", "checker_for", "ImmediateCheck", "FirstInvalid"]

_NO_ROW = torch.iinfo(torch.int64).max


def describe_invalid(l: torch.Tensor) -> str:
    """What is wrong with one invalid prepared row ``l`` ``[V]``."""
    if torch.isnan(l).any():
        return f"NaN logits ({int(torch.isnan(l).sum())} of {l.numel()})"
    if (l == float("inf")).any():
        return f"+inf logits ({int((l == float('inf')).sum())} of {l.numel()})"
    return f"no finite logit (all {l.numel()} are -inf after suppress_tokens)"


def invalid_error(row, uncond_row, *, step: int, batch_row: int, position: int, prompt_length: int,
                  n_invalid: int, cfg_scale, suppress_tokens) -> ValueError:
    """The ValueError for an invalid sampled row.

    ``row``/``uncond_row``: the model's logits ``[V]`` at (``batch_row``, ``position``), the
    latter None without CFG; ``position`` indexes ``x``; ``n_invalid``: how many sampled rows
    of that step were invalid.
    """
    l = prepare_logits(row, cfg_scale=cfg_scale, uncond_logits=uncond_row, suppress_tokens=suppress_tokens)
    more = f" ({n_invalid - 1} more position(s) in this step)" if n_invalid > 1 else ""
    cfg = " after classifier-free guidance" if uncond_row is not None else ""
    return ValueError(
        f"model produced {describe_invalid(l)}{cfg} at step {step}, batch row {batch_row}, "
        f"position {position} (position {position - prompt_length} of the generated answer){more}"
    )


def _row(logits, r):
    """Row ``r`` ``[V]`` of the flat logits (None without them)."""
    return None if logits is None else logits.reshape(-1, logits.shape[-1])[r]


class ImmediateCheck:
    """Invalid rows on a CPU, where reading a flag from the device costs nothing: `note`
    raises at the step itself, while its logits are at hand."""

    def __init__(self, prompt_length: int, cfg_scale: float):
        self.P, self.cfg_scale, self.suppress = prompt_length, cfg_scale, None

    def note(self, invalid, cand, blk, step: int, logits, uncond):
        """Raise for the step's first invalid row (lowest batch row, then position); else
        return the candidates ``select`` may keep (``cand``)."""
        if bool(invalid.any()):
            bad = invalid.nonzero().flatten()         # rows are in (batch row, position) order
            r = int(bad[0])
            raise invalid_error(
                _row(logits, blk.rows[r]), _row(uncond, blk.rows[r]), step=step,
                batch_row=int(blk.bi[r]), position=blk.origin + r % cand.shape[1],
                prompt_length=self.P, n_invalid=bad.numel(), cfg_scale=self.cfg_scale,
                suppress_tokens=self.suppress)
        return cand

    def block_done(self, busy) -> bool:
        """Threshold mode, before a step: no row has a masked position left in the block."""
        return not bool(busy.any())

    def check(self) -> None:
        pass


class FirstInvalid:
    """Invalid rows on an accelerator: the first one of a block is kept on the device.

    `note` runs inside every step; while no invalid row is recorded for the block it records
    the step's first invalid row (lowest batch row, then position) in place: ``rec`` ``[4]``
    int64 = (step, batch row, index in ``x``, number of invalid rows in the step; 0: none) and
    that row's logits (both halves with CFG), all the message needs once the logits are gone.
    The buffers are allocated once and then only written in place, so a captured CUDA graph
    (`fastremask.sampler.graphs`) can hold the step. `note` returns the candidates without the
    invalid rows, so a bad row never writes ``x``. `check` (end of block) and `block_done`
    (threshold mode's per-step sync) read ``rec``; `check` clears it.
    """

    def __init__(self, prompt_length: int, cfg_scale: float):
        self.P, self.cfg_scale, self.suppress = prompt_length, cfg_scale, None
        self.rec = self.row = self.urow = None

    def note(self, invalid, cand, blk, step, logits, uncond):
        """``step``: an int, or a ``[1]`` int64 device tensor (what a captured graph reads)."""
        device, C = invalid.device, cand.shape[1]
        flat = logits.reshape(-1, logits.shape[-1])
        uflat = None if uncond is None else uncond.reshape(-1, uncond.shape[-1])
        if self.rec is None:
            self.rec = torch.zeros(4, dtype=torch.int64, device=device)
            self.row = torch.zeros(1, flat.shape[1], dtype=flat.dtype, device=device)
            self.urow = None if uflat is None else torch.zeros_like(self.row)
        if not torch.is_tensor(step):
            step = torch.full((1,), step, dtype=torch.int64, device=device)
        n = invalid.sum()
        i = torch.where(invalid, torch.arange(invalid.numel(), device=device), _NO_ROW).argmin().view(1)
        r = blk.rows.gather(0, i)
        rec = torch.cat([step, blk.bi.gather(0, i), i % C + blk.origin, n.view(1)])
        take = self.rec[3] == 0                     # an earlier step of the block comes first
        self.rec.copy_(torch.where(take, rec, self.rec))
        self.row.copy_(torch.where(take, flat.index_select(0, r), self.row))
        if uflat is not None:
            self.urow.copy_(torch.where(take, uflat.index_select(0, r), self.urow))
        return cand & ~invalid.view_as(cand)

    def reset(self, suppress) -> "FirstInvalid":
        """Ready for a new `generate` call (a cached graph's checker is reused)."""
        self.suppress = suppress
        if self.rec is not None:
            self.rec.zero_()
        return self

    def block_done(self, busy) -> bool:
        left, n_bad = torch.stack([busy.sum(), self._count(busy.device)]).tolist()   # one sync
        if n_bad:
            self.check()
        return left == 0

    def _count(self, device) -> torch.Tensor:
        return torch.zeros((), dtype=torch.int64, device=device) if self.rec is None else self.rec[3]

    def check(self) -> None:
        if self.rec is None:
            return
        step, b, p, n = self.rec.tolist()                                         # the sync
        if n:
            raise invalid_error(
                self.row[0], None if self.urow is None else self.urow[0], step=step, batch_row=b,
                position=p, prompt_length=self.P, n_invalid=n, cfg_scale=self.cfg_scale,
                suppress_tokens=self.suppress)
        self.rec.zero_()


def checker_for(device: torch.device) -> type:
    """`ImmediateCheck` on a CPU (a sync is free there), `FirstInvalid` elsewhere."""
    return ImmediateCheck if device.type == "cpu" else FirstInvalid
