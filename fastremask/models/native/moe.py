"""What the native mixture-of-experts forwards share (LLaDA2, SDAR-MoE): the experts under the
published names ``mlp.experts.E.{gate,up,down}_proj.weight``, their grouped dispatch, and the
check of a checkpoint's expert count against its config.

**The dispatch without a Python loop per expert per token.** Each (token, chosen expert) pair
is one row: the rows are sorted by expert (``argsort``, stable), the tokens gathered in that
order, and the three projections run as grouped matrix products over the experts' contiguous
row ranges (`torch.nn.functional.grouped_mm` with the experts' weights stacked ``[E, out, in]``,
offsets from a ``bincount``: no host synchronisation) where torch supports it (CPU in any float
dtype, CUDA in bf16 on sm80+, row strides multiples of 16 bytes); elsewhere one loop over the
experts that received rows (as the published ``moe_infer`` / the Qwen3-MoE expert loop). The
stacks are built once after loading, and the experts' published parameters become views of
them (no second copy). What each family does with the outputs (its router's weights, the
order and dtype of the sum) is its own.
"""
from __future__ import annotations

import re
import warnings
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastremask.models.native.common import NativeConfig, SwiGLU, _error

__all__ = ["ExpertBank", "MoEModel", "MLP_NAMES", "check_experts", "grouped_ok"]

MLP_NAMES = ("gate_proj", "up_proj", "down_proj")

_EXPERT = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.")


def check_experts(config: NativeConfig, names) -> None:
    """The experts the checkpoint's weight names hold must be those ``num_experts`` describes
    (``0 .. num_experts - 1`` in each layer of ``config.moe_layers``, none elsewhere); a
    `ModelLoadError` naming the field otherwise, before any tensor is read. ``config.dense_why``
    names the fields that make a layer dense (for the message)."""
    found: dict = {}
    for n in names:
        m = _EXPERT.match(n)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    want = set(range(config.n_experts)) if config.moe_layers else set()
    for layer in range(config.n_layers):
        got = found.get(layer, set())
        moe_layer = layer in config.moe_layers
        if moe_layer and got != want:
            raise _error(f"{config.path}: field 'num_experts' is {config.n_experts}, but layer {layer} of the "
                         f"checkpoint has {len(got)} experts (indices {min(got, default=None)} .. "
                         f"{max(got, default=None)})")
        if not moe_layer and got:
            raise _error(f"{config.path}: layer {layer} of the checkpoint has experts, but the config makes it dense "
                         f"({config.dense_why})")


def grouped_ok(x: torch.Tensor, *sizes: int) -> bool:
    """Whether `F.grouped_mm` runs here: CPU (any float dtype), CUDA bf16 on sm80+; every row
    stride a multiple of 16 bytes."""
    if not hasattr(F, "grouped_mm"):
        return False
    if x.device.type == "cuda":
        if x.dtype != torch.bfloat16 or torch.cuda.get_device_capability(x.device)[0] < 8:
            return False
    elif x.device.type != "cpu":
        return False
    return all(n * x.element_size() % 16 == 0 for n in sizes)


class ExpertBank(nn.Module):
    """``experts.E.{gate,up,down}_proj`` (SwiGLU experts of ``hidden``) and their dispatch.

    ``use_grouped``: None = decide per call (`grouped_ok`), True / False = force the grouped
    products or the loop over experts. Subclasses add their router under its published name.
    """

    def __init__(self, d: int, hidden: int, n_experts: int, device):
        super().__init__()
        self.experts = nn.ModuleList(SwiGLU(d, hidden, bias=False, names=MLP_NAMES, device=device)
                                     for _ in range(n_experts))
        self._stacks: Optional[tuple] = None
        self.use_grouped: Optional[bool] = None

    def stack(self) -> tuple:
        """The experts' weights stacked ``[E, out, in]`` (gate, up, down); built once, after which
        each expert's parameters are views of the stacks (no second copy of the weights)."""
        w0 = self.experts[0].gate_proj.weight
        st = self._stacks
        if st is not None and st[0].data_ptr() == w0.data_ptr() and st[0].dtype == w0.dtype:
            return st
        with torch.no_grad():
            st = tuple(torch.stack([getattr(e, n).weight for e in self.experts]) for n in MLP_NAMES)
            for i, e in enumerate(self.experts):
                for n, s in zip(MLP_NAMES, st):
                    getattr(e, n).weight.data = s[i]
        self._stacks = st
        return st

    def expert_outputs(self, x2: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """``[T, K, d]``: expert ``experts[t, k]`` applied to token ``x2[t]``, in ``x2``'s dtype."""
        T, K = experts.shape
        flat = experts.reshape(-1)                                                # [T K]
        order = flat.argsort(stable=True)
        rows = x2.index_select(0, order // K)                                     # [T K, d] by expert
        counts = torch.bincount(flat, minlength=len(self.experts))
        gate, up, down = self.stack()
        grouped = self.use_grouped
        if grouped is None:
            grouped = grouped_ok(x2, gate.shape[1], gate.shape[2])
        out = None
        if grouped:
            offs = counts.cumsum(0).to(torch.int32)
            try:
                h = F.silu(F.grouped_mm(rows, gate.transpose(1, 2), offs=offs)) * \
                    F.grouped_mm(rows, up.transpose(1, 2), offs=offs)
                out = F.grouped_mm(h, down.transpose(1, 2), offs=offs)            # [T K, d]
            except RuntimeError as e:
                if self.use_grouped:                                              # forced: say so
                    raise
                # a device / dtype / layout this torch's grouped_mm does not take: the loop, from now on
                warnings.warn(f"MoE: torch's grouped_mm failed here ({str(e).splitlines()[0]}); "
                              "using one loop over the experts instead", RuntimeWarning, stacklevel=3)
                self.use_grouped = False
        if out is None:
            out = torch.empty_like(rows)
            s = 0
            for e, n in enumerate(counts.tolist()):                               # one loop over experts
                if n:
                    out[s:s + n] = self.experts[e](rows[s:s + n])
                    s += n
        y = torch.empty_like(out)
        y[order] = out                                                            # back to (token, k)
        return y.view(T, K, -1)


class MoEModel:
    """A mixin for a `NativeModel` whose layers' ``mlp`` may be an `ExpertBank`: the experts are
    stacked once after loading (`prepare`), and `moe_layers` lists them."""

    def prepare(self) -> None:
        for moe in self.moe_layers():
            moe.stack()

    def moe_layers(self) -> list:
        """The mixture-of-experts MLPs (``use_grouped`` on each: None = decide per call, True /
        False = force the grouped products or the loop over experts)."""
        return [layer.mlp for layer in self._layers() if isinstance(getattr(layer, "mlp", None), ExpertBank)]
