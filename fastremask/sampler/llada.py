"""LLaDA's own sampler, restated in PyTorch: the baseline fastremask is compared against.

This is our statement of the algorithm of LLaDA's ``generate.py`` (GSAI-ML/LLaDA), not a copy
of its code; the algorithm and its constants are what it is faithful to:

* Gumbel noise in float64 over the whole ``[B, L, V]`` tensor: ``exp(l) / (-log u) ** T``
  with ``u`` from ``torch.rand`` (float64), argmax over the vocabulary;
* ``low_confidence``: the softmax of the logits *in their own dtype*, gathered at ``x0``;
  ``random``: ``torch.rand`` per position;
* confidence ``-inf`` beyond the current block and at positions that are not masked;
* per-row top-k in a Python loop, ``k`` from ``get_num_transfer_tokens`` (``n // steps`` each
  step, the remainder to the first steps);
* CFG: a second half with the prompt masked, ``u + (s + 1) * (c - u)`` in the logits' dtype;
* ``logits_eos_inf`` sets EOS's logit to ``-inf`` before the noise; ``confidence_eos_eot_inf``
  as LLaDA's code does it: after ``x0`` is drawn it sets EoT's *logit* (not EOS's) to
  ``-inf`` before the softmax, which changes the other probabilities slightly and does not
  defer anything (fastremask's ``defer_tokens`` does what the flag's name says).

Randomness comes from torch's global generator, as in LLaDA (seed it with ``torch.manual_seed``).
`llada_step` is one step on given logits, for the benchmarks.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from fastremask.sampler.names import LLADA_EOS, LLADA_EOT, LLADA_MASK   # re-exported: LLaDA's published ids

__all__ = ["add_gumbel_noise", "get_num_transfer_tokens", "llada_step", "generate"]


def add_gumbel_noise(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``exp(l) / (-log u) ** T`` in float64 (argmax-equivalent to ``l + T * Gumbel``)."""
    if temperature == 0:
        return logits
    l64 = logits.to(torch.float64)
    u = torch.rand_like(l64)
    return l64.exp() / (-torch.log(u)) ** temperature


def get_num_transfer_tokens(mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    """``[B, steps]`` int64: ``n // steps`` per step, the remainder one each to the first steps."""
    n = mask_index.sum(dim=1, keepdim=True)
    base, rem = n // steps, n % steps
    counts = base.expand(-1, steps).clone()
    for b in range(n.shape[0]):              # LLaDA loops over rows here
        counts[b, : int(rem[b])] += 1
    return counts


def llada_step(
    x: torch.Tensor,
    logits: torch.Tensor,
    k: torch.Tensor,
    *,
    block_end: int,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    mask_id: int = LLADA_MASK,
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
) -> torch.Tensor:
    """One LLaDA step: returns the new ``x`` (``[B, L]``); ``logits`` ``[B, L, V]`` (after CFG),
    ``k`` ``[B]`` tokens to keep per row, ``block_end`` the index in ``x`` where the block ends."""
    mask_index = x == mask_id
    if logits_eos_inf:
        logits = logits.clone()
        logits[:, :, LLADA_EOS] = float("-inf")
    noisy = add_gumbel_noise(logits, temperature)
    x0 = noisy.argmax(dim=-1)
    if confidence_eos_eot_inf:                # as LLaDA's code: EoT's logit, after x0 is drawn
        logits = logits.clone()
        logits[:, :, LLADA_EOT] = float("-inf")
    if remasking == "low_confidence":
        p = F.softmax(logits, dim=-1)          # in the logits' dtype
        x0_p = p.gather(-1, x0[..., None]).squeeze(-1)
    elif remasking == "random":
        x0_p = torch.rand(x0.shape, device=x0.device)
    else:
        raise NotImplementedError(remasking)
    x0_p[:, block_end:] = float("-inf")
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, float("-inf"))
    transfer = torch.zeros_like(x0, dtype=torch.bool)
    for b in range(confidence.shape[0]):       # top-k per row, in a Python loop
        _, idx = torch.topk(confidence[b], k=int(k[b]))
        transfer[b, idx] = True
    x = x.clone()
    x[transfer] = x0[transfer]
    return x


@torch.no_grad()
def generate(model, prompt, attention_mask=None, steps=128, gen_length=128, block_length=128,
             temperature=0.0, cfg_scale=0.0, remasking="low_confidence", mask_id=LLADA_MASK,
             logits_eos_inf=False, confidence_eos_eot_inf=False) -> torch.Tensor:
    """LLaDA's ``generate``: same signature, defaults and algorithm (see the module docstring)."""
    device = getattr(model, "device", prompt.device)
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long, device=device)
    x[:, :P] = prompt.clone()
    if attention_mask is not None:
        attention_mask = torch.cat(
            [attention_mask, torch.ones(B, gen_length, dtype=attention_mask.dtype, device=device)], dim=-1)
    prompt_index = x != mask_id
    if gen_length % block_length:
        raise ValueError("gen_length must be a multiple of block_length")
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        raise ValueError("steps must be a multiple of the number of blocks")
    steps = steps // num_blocks
    for nb in range(num_blocks):
        lo, hi = P + nb * block_length, P + (nb + 1) * block_length
        counts = get_num_transfer_tokens(x[:, lo:hi] == mask_id, steps)
        for i in range(steps):
            if cfg_scale > 0.0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                am = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
                both = _logits(model, torch.cat([x, un_x]), am)
                c, u = torch.chunk(both, 2, dim=0)
                logits = u + (cfg_scale + 1) * (c - u)
            else:
                logits = _logits(model, x, attention_mask)
            x = llada_step(x, logits, counts[:, i], block_end=hi, temperature=temperature,
                           remasking=remasking, mask_id=mask_id, logits_eos_inf=logits_eos_inf,
                           confidence_eos_eot_inf=confidence_eos_eot_inf)
    return x


def _logits(model, x: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    out = model(x, attention_mask=attention_mask)
    return out.logits if hasattr(out, "logits") else out
